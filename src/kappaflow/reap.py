"""Reap: forces of the displaced supercells -> second- and third-order force constants.

Systematic sets use phono3py's finite-difference solver (``traditional``, then explicit symmetrisation,
which phono3py >= 4.9 no longer does by itself); random and imported sets use symfc's least-squares fit.
Force constants are produced as full arrays (``is_compact_fc=False``) in phonopy's supercell order,
eV/Å² and eV/Å³, and written as phono3py ``fc2.hdf5``/``fc3.hdf5`` and ShengBTE
``FORCE_CONSTANTS_2ND``/``FORCE_CONSTANTS_3RD``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from kappaflow.errors import KappaflowError
from kappaflow.qe.pwout import read_pw_output

log = logging.getLogger(__name__)


def expected_supercells(ph3):
    """``(role, index) -> Structure``: the supercell each manifest job must hold, from the Phono3py
    object loaded from phono3py_disp.yaml (displaced supercells with their displacements)."""
    from kappaflow.atom_map import Structure

    cache: dict = {}

    def cells(role):
        if role not in cache:
            if role == "fc3":
                cache[role] = ph3.supercells_with_displacements
            elif role == "fc2":
                cache[role] = ph3.phonon_supercells_with_displacements
            elif role == "base":
                cache[role] = [ph3.supercell]
            elif role == "fc2_base":
                cache[role] = [ph3.phonon_supercell]
            else:
                raise KappaflowError(f"manifest job role {role!r}: no reference supercell for it")
        return cache[role]

    def expected(role: str, index: int):
        cell = cells(role)[index]
        if cell is None:
            raise KappaflowError(f"manifest job {role} {index}: phono3py_disp.yaml has no supercell for it "
                                 "(beyond the pair cutoff): manifest and displacement file disagree")
        return Structure.from_phonopy(cell)

    return expected


def check_tolerance(manifest: dict, tolerance_ang: float) -> None:
    """A tolerance of half the displacement amplitude or more could let a wrong supercell through."""
    amplitude = manifest.get("amplitude_ang")
    if amplitude and tolerance_ang >= 0.5 * float(amplitude):
        raise KappaflowError(f"reap.atom_map_tolerance_ang = {tolerance_ang:g} Å is not below half the "
                             f"displacement amplitude ({float(amplitude):g} Å): the output of another "
                             "displacement could be mapped onto this one")


def load_forces(manifest: dict, store_dir, reader=None, expected=None,
                tolerance_ang: float | None = None) -> dict[str, dict[int, np.ndarray]]:
    """Forces (eV/Å) of every job of the manifest, by role and displacement index, in phonopy's order.

    With ``expected`` (``(role, index) -> Structure``, see :func:`expected_supercells`) every output is
    mapped atom by atom onto its expected (displaced) supercell by position
    (:func:`kappaflow.atom_map.map_pw_output`, periodic, ``tolerance_ang``) and its forces reordered, so
    the atom order of the file does not matter and the output of another structure fails naming the
    file and the atom.  Without it, outputs are taken in file order (imported thirdorder runs reordered
    by their BASE input's match).

    ``reader(key, n_atoms)`` returns the parsed run (:class:`~kappaflow.qe.pwout.PwRun`) or the forces
    of one stored run; the default reads ``store_dir/key/pw.out`` strictly (any unusable output raises,
    naming the file).  Forces alone cannot be mapped: with ``expected``, the reader must return runs."""
    from kappaflow.atom_map import DEFAULT_TOLERANCE_ANG, map_pw_output, to_reference_order

    tolerance_ang = DEFAULT_TOLERANCE_ANG if tolerance_ang is None else float(tolerance_ang)
    if expected is not None:
        check_tolerance(manifest, tolerance_ang)
    if reader is None:
        def reader(key, n_atoms):
            return read_pw_output(Path(store_dir) / key / "pw.out", expected_n_atoms=n_atoms)
    cache: dict[str, np.ndarray] = {}
    out: dict[str, dict[int, np.ndarray]] = {}
    for job in manifest["jobs"]:
        key = job["key"]
        if key not in cache:
            imported = "output" in job  # imported run: its own file, input atom order
            run = (read_pw_output(job["output"], expected_n_atoms=job["n_atoms"]) if imported
                   else reader(key, job["n_atoms"]))
            forces = run if isinstance(run, np.ndarray) else run.forces_ev_per_ang
            forces = np.asarray(forces, dtype=np.float64)
            if expected is not None:
                if isinstance(run, np.ndarray):
                    raise KappaflowError(f"supercell {key}: the reader returned forces only; atom mapping "
                                         "needs the parsed pw.x output")
                perm = map_pw_output(run, expected(job["role"], job["index"]), tolerance_ang,
                                     f"the expected {job['role']} supercell {job['index']} of the manifest")
                forces = to_reference_order(forces, perm)
            elif imported:
                from kappaflow.thirdorder_import import reorder_forces

                if "import" not in manifest:
                    raise KappaflowError(f"{job['output']}: an imported run is in its own atom order; pass "
                                         "expected=reap.expected_supercells(ph3) to map it (or the sow "
                                         "manifest with its 'import' section)")
                forces = reorder_forces(manifest, forces)
            cache[key] = forces
        out.setdefault(job["role"], {})[job["index"]] = cache[key]
    return out


def fc_calculator_for(strategy: str, requested: str = "auto") -> str:
    if requested != "auto":
        return requested
    return "traditional" if strategy == "systematic" else "symfc"


def produce_force_constants(ph3, manifest: dict, forces: dict, fc_calculator: str = "auto",
                            log_level: int = 0):
    """Attach forces to the Phono3py object (loaded from phono3py_disp.yaml) and produce fc2, fc3."""
    n_cells = manifest["n_supercells_total"]
    n_atoms = len(ph3.supercell)
    fc3_forces = np.zeros((n_cells, n_atoms, 3), dtype=np.float64)
    for index, f in forces.get("fc3", {}).items():
        fc3_forces[index] = f
    base = forces.get("base", {}).get(0)
    if base is not None:
        included = sorted(forces.get("fc3", {}))
        fc3_forces[included] -= base  # residual forces of the undisplaced supercell
    ph3.forces = fc3_forces
    if manifest.get("fc2_supercell_matrix") is not None:
        fc2 = forces.get("fc2", {})
        n2 = len(fc2)
        fc2_forces = np.array([fc2[i] for i in range(n2)], dtype=np.float64)
        if "fc2_base" in forces:
            fc2_forces -= forces["fc2_base"][0]
        ph3.phonon_forces = fc2_forces
    calc = fc_calculator_for(manifest["strategy"], fc_calculator)
    ph3.produce_fc3(fc_calculator=calc, is_compact_fc=False)
    if calc == "traditional":
        ph3.symmetrize_fc3()
        ph3.symmetrize_fc2() if manifest.get("fc2_supercell_matrix") is None else None
    if manifest.get("fc2_supercell_matrix") is not None:
        ph3.produce_fc2(fc_calculator=calc, is_compact_fc=False)
        if calc == "traditional":
            ph3.symmetrize_fc2()
    if not np.all(np.isfinite(ph3.fc3)) or not np.all(np.isfinite(ph3.fc2)):
        raise KappaflowError("force constants contain NaN or inf: check the forces")
    return ph3


def write_force_constants(ph3, out_dir, shengbte: bool = True) -> dict[str, Path]:
    from phono3py.file_IO import write_fc2_to_hdf5, write_fc3_to_hdf5

    out_dir = Path(out_dir)
    paths = {"fc2": out_dir / "fc2.hdf5", "fc3": out_dir / "fc3.hdf5"}
    write_fc3_to_hdf5(ph3.fc3, filename=str(paths["fc3"]))
    write_fc2_to_hdf5(ph3.fc2, filename=str(paths["fc2"]))
    if shengbte:
        from kappaflow import shengbte as sb

        paths["fc2_shengbte"] = out_dir / "FORCE_CONSTANTS_2ND"
        paths["fc3_shengbte"] = out_dir / "FORCE_CONSTANTS_3RD"
        sb.write_force_constants_2nd(paths["fc2_shengbte"], ph3.fc2)
        sb.write_force_constants_3rd(paths["fc3_shengbte"], ph3.fc3, ph3.supercell, ph3.primitive)
    return paths
