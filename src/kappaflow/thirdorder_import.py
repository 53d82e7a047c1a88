"""Import an existing thirdorder set (``BASE.*``/``DISP.*`` pw.x inputs and their outputs) into reap.

Users who already ran ``thirdorder_espresso.py unitcell.in sow na nb nc cutoff template`` and pw.x on
every ``DISP.<template>.NNN`` bring that work along instead of recomputing it:

1. ``BASE.<template>`` (the undisplaced supercell) is matched atom by atom, by position, to phonopy's
   supercell of the unit cell (thirdorder orders atoms ``product(nc, nb, na, natoms)``, phonopy orders
   them unit-cell atom first; positions decide, so any order works).  The cells must agree.
2. Each ``DISP.*.NNN`` input gives a displacement field ``DISP − BASE`` (minimum image, Å) in
   phonopy's atom order; any two-atom, one-atom or all-atom displacement pattern is accepted.
3. Forces are read from the pw.x outputs with the same strict parser as every other run, reordered
   into phonopy's order, and FC2 + FC3 are fitted by symfc (type-2 dataset).

The output belonging to an input is found with a pattern (default ``{input}.out``: ``DISP.sc.in.001``
→ ``DISP.sc.in.001.out``); ``{number}`` is the run number.  The BASE run's output is optional: when
present and ``subtract_residual_forces`` is on, its forces are subtracted like kappaflow's own base run
(thirdorder itself never subtracts them).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms

from kappaflow.errors import ConfigError, InputFileError
from kappaflow.qe.pwin import read_pw_input

CELL_TOLERANCE_ANG = 2e-3
POSITION_TOLERANCE_ANG = 2e-3
MAX_DISPLACEMENT_ANG = 0.5
DISP_NAME = re.compile(r"^DISP\.(?P<template>.+)\.(?P<number>\d+)$")


@dataclass
class ImportedRun:
    number: int | None  # None for BASE
    input_path: Path
    output_path: Path


def output_for(input_path: Path, pattern: str, number: int | None) -> Path:
    name = pattern.format(input=input_path.name, number="" if number is None else number)
    return input_path.parent / name


def find_runs(directory, output_pattern: str = "{input}.out") -> tuple[ImportedRun, list[ImportedRun]]:
    """The BASE run and the DISP runs (in thirdorder's numeric order) of a thirdorder directory."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ConfigError(f"sow.thirdorder_dir: {directory} is not a directory")
    candidates = []
    for path in sorted(p for p in directory.iterdir() if p.is_file()):
        match = DISP_NAME.match(path.name)
        if match:
            candidates.append(ImportedRun(int(match["number"]), path,
                                          output_for(path, output_pattern, int(match["number"]))))
        elif path.name.startswith("BASE."):
            candidates.append(ImportedRun(None, path, output_for(path, output_pattern, None)))
    # a file that is the output of another candidate is not an input
    produced = {r.output_path.name for r in candidates}
    runs = [r for r in candidates if r.input_path.name not in produced]
    bases = [r for r in runs if r.number is None]
    disps = [r for r in runs if r.number is not None]
    if len(bases) != 1:
        raise ConfigError(f"sow.thirdorder_dir: {directory} must hold exactly one BASE.* pw.x input, "
                          f"found {len(bases)}: {[b.input_path.name for b in bases]}")
    if not disps:
        raise ConfigError(f"sow.thirdorder_dir: {directory} holds no DISP.<template>.NNN pw.x inputs")
    disps.sort(key=lambda r: r.number)
    numbers = [d.number for d in disps]
    if numbers != list(range(1, len(disps) + 1)):
        missing = sorted(set(range(1, max(numbers) + 1)) - set(numbers))
        raise ConfigError(f"sow.thirdorder_dir: {directory}: DISP inputs are not numbered 1..{len(disps)}"
                          f" (missing {missing[:10]})")
    for run in disps:
        if not run.output_path.is_file():
            raise InputFileError(run.output_path, f"pw.x output of {run.input_path.name} not found "
                                 f"(sow.thirdorder_outputs pattern {output_pattern!r})")
    return bases[0], disps


def _check_species(path, atoms: Atoms, expected: list[str], perm: np.ndarray) -> None:
    labels = [str(s) for s in atoms.arrays.get("qe_labels", atoms.get_chemical_symbols())]
    for a, p in enumerate(perm):
        if labels[a] != expected[p]:
            raise InputFileError(path, f"atom {a + 1} is {labels[a]} but sits where phonopy's supercell "
                                 f"has {expected[p]}: the unit cell or supercell does not match")


def match_atoms(base_path, base: Atoms, lattice: np.ndarray, frac_phonopy: np.ndarray) -> np.ndarray:
    """perm[a] = phonopy index of the a-th atom of the BASE input (by minimum-image position,
    :func:`kappaflow.atom_map.map_atoms`)."""
    from kappaflow.atom_map import Structure, map_atoms

    lattice = np.asarray(lattice, dtype=np.float64)
    cell_base = np.asarray(base.cell, dtype=np.float64)
    deviation = np.abs(cell_base - lattice).max()
    if deviation > CELL_TOLERANCE_ANG:
        raise InputFileError(base_path, f"supercell vectors differ from the unit cell x sow.supercell by "
                             f"{deviation:.4g} Å (tolerance {CELL_TOLERANCE_ANG} Å): expected\n{lattice}")
    if len(base) != len(frac_phonopy):
        raise InputFileError(base_path, f"{len(base)} atoms, but the unit cell x sow.supercell has "
                             f"{len(frac_phonopy)}")
    # species are checked afterwards by _check_species, on the labels of the unit cell
    reference = Structure(lattice, np.asarray(frac_phonopy, dtype=np.float64) @ lattice, ["?"] * len(frac_phonopy))
    return map_atoms(base_path, reference, np.asarray(base.positions, dtype=np.float64),
                     tolerance_ang=POSITION_TOLERANCE_ANG,
                     reference_name="phonopy's supercell of the unit cell (was the set sown from another "
                                    "unit cell?)")


def displacement_field(path, atoms: Atoms, base_frac: np.ndarray, lattice: np.ndarray,
                       perm: np.ndarray) -> np.ndarray:
    """DISP − BASE in Å, minimum image, reordered into phonopy's atom order."""
    if len(atoms) != len(base_frac):
        raise InputFileError(path, f"{len(atoms)} atoms, BASE has {len(base_frac)}")
    frac = np.asarray(atoms.get_scaled_positions(wrap=False)) @ (np.asarray(atoms.cell) @ np.linalg.inv(lattice))
    d = frac - base_frac
    d -= np.round(d)
    u = d @ lattice
    largest = np.linalg.norm(u, axis=1).max()
    if largest > MAX_DISPLACEMENT_ANG:
        raise InputFileError(path, f"an atom moved {largest:.3g} Å from BASE: not a small displacement")
    # largest == 0 is legitimate: thirdorder's (+h, -h) runs on the same atom cancel out
    out = np.zeros_like(u)
    out[perm] = u
    return out


def import_set(unitcell: Atoms, settings, directory, output_pattern: str, disp_yaml_path=None,
               progress=None) -> dict:
    """Build the displacement dataset from a thirdorder directory; return the sow manifest."""
    from kappaflow.sow import make_phono3py, supercell_matrix_3x3
    from kappaflow.structure import labels_of

    base_run, disp_runs = find_runs(directory, output_pattern)
    ph3 = make_phono3py(unitcell, settings)
    sc = ph3.supercell
    lattice = np.asarray(sc.cell, dtype=np.float64)
    frac_phonopy = np.asarray(sc.scaled_positions, dtype=np.float64)
    labels_unit = labels_of(unitcell)
    expected = [labels_unit[sc.u2u_map[s]] for s in sc.s2u_map]
    base = read_pw_input(base_run.input_path).atoms
    perm = match_atoms(base_run.input_path, base, lattice, frac_phonopy)
    _check_species(base_run.input_path, base, expected, perm)
    base_frac = np.asarray(base.get_scaled_positions(wrap=False)) @ (
        np.asarray(base.cell) @ np.linalg.inv(lattice))
    displacements = np.zeros((len(disp_runs), len(sc), 3), dtype=np.float64)
    for i, run in enumerate(disp_runs):
        atoms = read_pw_input(run.input_path).atoms
        _check_species(run.input_path, atoms, expected, perm)
        displacements[i] = displacement_field(run.input_path, atoms, base_frac, lattice, perm)
        if progress and (i + 1) % 500 == 0:
            progress(f"sow: {i + 1}/{len(disp_runs)} thirdorder inputs read")
    ph3.displacements = displacements
    if disp_yaml_path is not None:
        ph3.save(str(disp_yaml_path))

    def job(role, index, run):
        digest = hashlib.sha256(("imported\n" + run.input_path.read_text()).encode()).hexdigest()[:20]
        return {"key": f"imported-{digest}", "role": role, "index": index, "n_atoms": len(sc),
                "output": str(run.output_path.resolve())}

    jobs = [job("fc3", i, run) for i, run in enumerate(disp_runs)]
    if settings.subtract_residual_forces and base_run.output_path.is_file():
        jobs.insert(0, job("base", 0, base_run))
    amplitudes = np.linalg.norm(displacements, axis=2)
    return {
        "strategy": "thirdorder",
        "supercell_matrix": supercell_matrix_3x3(settings.supercell_matrix).tolist(),
        "fc2_supercell_matrix": None,
        "amplitude_ang": float(amplitudes[amplitudes > 1e-8].min()),  # one-atom step (2h: same atom twice)
        "pair_cutoff_ang": None,
        "n_supercells_total": len(disp_runs),
        "n_displaced_fc3": len(disp_runs),
        "n_displaced_fc2": 0,
        "engine": "imported",
        "import": {"format": "thirdorder", "dir": str(Path(directory).resolve()),
                   "output_pattern": output_pattern, "phonopy_index_of_input_atom": perm.tolist(),
                   "base_forces_subtracted": any(j["role"] == "base" for j in jobs)},
        "jobs": jobs,
    }


def reorder_forces(manifest: dict, forces_input_order: np.ndarray) -> np.ndarray:
    """Forces of an imported run (input atom order) in phonopy's atom order."""
    perm = np.asarray(manifest["import"]["phonopy_index_of_input_atom"])
    out = np.empty_like(forces_input_order)
    out[perm] = forces_input_order
    return out
