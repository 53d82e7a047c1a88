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


def load_forces(manifest: dict, store_dir, reader=None) -> dict[str, dict[int, np.ndarray]]:
    """Forces (eV/Å) of every job of the manifest, by role and displacement index.

    ``reader(key, n_atoms)`` returns the forces of one stored run; the default reads
    ``store_dir/key/pw.out`` strictly (any unusable output raises, naming the file)."""
    if reader is None:
        def reader(key, n_atoms):
            return read_pw_output(Path(store_dir) / key / "pw.out", expected_n_atoms=n_atoms).forces_ev_per_ang
    cache: dict[str, np.ndarray] = {}
    out: dict[str, dict[int, np.ndarray]] = {}
    for job in manifest["jobs"]:
        if job["key"] not in cache and "output" in job:  # imported run: its own file, input atom order
            from kappaflow.thirdorder_import import reorder_forces

            run = read_pw_output(job["output"], expected_n_atoms=job["n_atoms"])
            cache[job["key"]] = reorder_forces(manifest, np.asarray(run.forces_ev_per_ang, dtype=np.float64))
        elif job["key"] not in cache:
            cache[job["key"]] = np.asarray(reader(job["key"], job["n_atoms"]), dtype=np.float64)
        out.setdefault(job["role"], {})[job["index"]] = cache[job["key"]]
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
