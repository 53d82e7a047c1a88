"""Import an existing thirdorder set (``BASE.*``/``DISP.*`` pw.x inputs and their outputs) into reap.

Users who already ran ``thirdorder_espresso.py unitcell.in sow na nb nc cutoff template`` and pw.x on
every ``DISP.<template>.NNN`` bring that work along instead of recomputing it:

1. ``BASE.<template>`` (the undisplaced supercell) is matched atom by atom, by position, to phonopy's
   supercell of the unit cell (thirdorder orders atoms ``product(nc, nb, na, natoms)``, phonopy orders
   them unit-cell atom first; positions decide, so any order works).  The cells must agree.
2. Each ``DISP.*.NNN`` input is matched by position too (:func:`kappaflow.atom_map.map_atoms`), onto
   BASE's sites (atoms may move up to :data:`MAX_DISPLACEMENT_ANG`), so every file may list its atoms in
   its own order; its displacement field ``DISP − BASE`` (minimum image, Å) is stored in phonopy's atom
   order.  Any two-atom, one-atom or all-atom pattern is accepted; thirdorder's (+h, −h) runs on one atom
   have zero net displacement and are kept.
3. The FC3 cutoff of the fit (:func:`set_cutoff`) is the config's (``sow.neighbour_shells``, thirdorder's
   ``-n``, or ``sow.pair_cutoff_ang``; it must cover every displaced pair of the set) or, without one, read
   from the set: the midpoint between its largest displaced-pair distance and the next neighbour
   distance.  It is recorded in the manifest (``fc3_cutoff_ang``) and passed to symfc, which otherwise
   fits every triplet of the supercell, most of which a thirdorder set does not determine.
4. Forces are read from the pw.x outputs with the same strict parser as every other run, mapped by
   position onto their expected (displaced) supercells, and FC2 + FC3 are fitted by symfc (type-2
   dataset) under the determinacy checks of :mod:`kappaflow.reap`.

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
MAX_DISPLACEMENT_ANG = 0.5  # farthest a DISP atom may sit from its BASE site (thirdorder moves 0.01 Å)
DISPLACED_ANG = 1e-6  # an atom moved less than this is not displaced (text round-off is ~1e-14 Å)
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


def _labels(atoms: Atoms) -> list[str]:
    return [str(s) for s in atoms.arrays.get("qe_labels", atoms.get_chemical_symbols())]


def _check_species(path, atoms: Atoms, expected: list[str], perm: np.ndarray, where: str) -> None:
    labels = _labels(atoms)
    for a, p in enumerate(perm):
        if labels[a] != expected[p]:
            raise InputFileError(path, f"atom {a + 1} is {labels[a]} but sits on site {p + 1} of {where}, "
                                 f"which is {expected[p]}: the species do not match")


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


def displacement_field(path, atoms: Atoms, base_positions: np.ndarray, lattice: np.ndarray,
                       expected: list[str], base_name: str) -> tuple[np.ndarray, np.ndarray]:
    """``(u, perm)``: DISP − BASE in Å (minimum image) in phonopy's atom order, and perm[a] = the phonopy
    index of the a-th atom of the DISP input, found by position on BASE's sites (``base_positions``, Å,
    phonopy order) within :data:`MAX_DISPLACEMENT_ANG`."""
    from kappaflow.atom_map import Structure, map_atoms

    lattice = np.asarray(lattice, dtype=np.float64)
    if len(atoms) != len(base_positions):
        raise InputFileError(path, f"{len(atoms)} atoms, {base_name} has {len(base_positions)}")
    deviation = float(np.abs(np.asarray(atoms.cell, dtype=np.float64) - lattice).max())
    if deviation > CELL_TOLERANCE_ANG:
        raise InputFileError(path, f"cell vectors differ from those of {base_name} by {deviation:.4g} Å "
                             f"(tolerance {CELL_TOLERANCE_ANG} Å): not a displacement of the BASE supercell")
    positions = np.asarray(atoms.positions, dtype=np.float64)
    reference = Structure(lattice, np.asarray(base_positions, dtype=np.float64), list(expected))
    perm = map_atoms(path, reference, positions, tolerance_ang=MAX_DISPLACEMENT_ANG,
                     reference_name=f"the BASE supercell {base_name} (an atom of a DISP input may move at "
                                    f"most {MAX_DISPLACEMENT_ANG} Å from its site)")
    _check_species(path, atoms, expected, perm, f"the BASE supercell {base_name}")
    d = (positions - np.asarray(base_positions)[perm]) @ np.linalg.inv(lattice)
    d -= np.round(d)
    # a DISP atom exactly on BASE's site gives u = 0: thirdorder's (+h, -h) runs on one atom cancel out
    u = np.zeros_like(positions)
    u[perm] = d @ lattice
    return u, perm


def _pair_distance_ang(lattice: np.ndarray, positions: np.ndarray, a: int, b: int) -> float:
    """Minimum-image distance (Å) between supercell atoms a and b (27 neighbouring images)."""
    images = np.array([[i, j, k] for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)],
                      dtype=np.float64) @ lattice
    return float(np.linalg.norm(positions[b] + images - positions[a], axis=1).min())


def largest_displaced_pair(lattice, positions, displacements, names) -> tuple[float, str | None]:
    """The largest distance (Å) between the two atoms a run displaces, over the set, and the run that
    displaces it; a run moving more than two atoms is not a pair set: (nan, its name)."""
    largest, where = 0.0, None
    for u, name in zip(displacements, names):
        moved = np.flatnonzero(np.linalg.norm(u, axis=1) > DISPLACED_ANG)
        if len(moved) > 2:
            return float("nan"), name
        if len(moved) == 2:
            d = _pair_distance_ang(lattice, positions, int(moved[0]), int(moved[1]))
            if d > largest:
                largest, where = d, name
    return largest, where


def set_cutoff(unitcell: Atoms, settings, lattice, positions, displacements, names) -> dict:
    """The FC3 cutoff (Å) of an imported set and where it comes from.

    With ``sow.neighbour_shells`` (thirdorder's ``-n``: the same rule) or ``sow.pair_cutoff_ang`` the
    config decides; every displaced pair of the set must lie inside it.  Without, the set decides: the
    midpoint between its largest displaced-pair distance and the next neighbour distance of the crystal
    (thirdorder's own midpoint convention).  A thirdorder set determines every triplet within that cutoff
    (it lies at or below the cutoff the set was sown with); the cutoff it was sown with may be larger —
    thirdorder's force atoms reach beyond its displaced pairs (Si 3x3x3 at -3: pairs to 3.84 Å, cutoff
    4.97 Å) — so give it in the config when known."""
    from kappaflow.sow import SHELL_TOLERANCE_ANG, effective_pair_cutoff, min_image_distances

    d_max, where = largest_displaced_pair(lattice, positions, displacements, names)
    configured = effective_pair_cutoff(unitcell, settings)
    if configured is not None:
        source = (f"sow.neighbour_shells = {settings.neighbour_shells}" if settings.neighbour_shells is not None
                  else f"sow.pair_cutoff_ang = {settings.pair_cutoff_ang:g}")
        if d_max >= configured:
            raise ConfigError(f"sow.thirdorder_dir: {where} displaces two atoms {d_max:.4f} Å apart, beyond the "
                              f"FC3 cutoff {configured:.4f} Å of {source}: the set was sown with a larger "
                              "cutoff. Give the cutoff thirdorder was run with (its -n as sow.neighbour_shells, "
                              "a length in nm x 10 as sow.pair_cutoff_ang), or neither to take it from the set")
        return {"fc3_cutoff_ang": float(configured), "source": source, "largest_displaced_pair_ang": d_max}
    if np.isnan(d_max):
        raise ConfigError(f"sow.thirdorder_dir: {where} displaces more than two atoms, so the set's FC3 cutoff "
                          "cannot be read from its pairs: give sow.neighbour_shells (thirdorder's -n) or "
                          "sow.pair_cutoff_ang")
    distances = np.sort(min_image_distances(unitcell, settings.supercell_matrix).ravel())
    beyond = distances[distances > d_max + SHELL_TOLERANCE_ANG]
    cutoff = 0.5 * (d_max + beyond[0]) if len(beyond) else 1.1 * d_max
    return {"fc3_cutoff_ang": float(cutoff), "largest_displaced_pair_ang": d_max,
            "source": (f"the set: midpoint between its largest displaced pair ({d_max:.4f} Å, {where}) and the "
                       f"next neighbour distance")}


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
    base_pw = read_pw_input(base_run.input_path)
    base_pw.require_free_atoms("an imported thirdorder supercell")
    base = base_pw.atoms
    perm = match_atoms(base_run.input_path, base, lattice, frac_phonopy)
    _check_species(base_run.input_path, base, expected, perm, "phonopy's supercell of the unit cell")
    base_positions = np.empty((len(sc), 3), dtype=np.float64)  # BASE's atoms in phonopy's order (Å)
    base_positions[perm] = np.asarray(base.positions, dtype=np.float64)
    base_name = base_run.input_path.name
    displacements = np.zeros((len(disp_runs), len(sc), 3), dtype=np.float64)
    own_order: dict[int, list[int]] = {}  # DISP inputs whose atom order differs from BASE's
    for i, run in enumerate(disp_runs):
        disp_pw = read_pw_input(run.input_path)
        disp_pw.require_free_atoms("an imported thirdorder supercell")
        atoms = disp_pw.atoms
        displacements[i], perm_i = displacement_field(run.input_path, atoms, base_positions, lattice, expected,
                                                       base_name)
        if not np.array_equal(perm_i, perm):
            own_order[i] = perm_i.tolist()
        if progress and (i + 1) % 500 == 0:
            progress(f"sow: {i + 1}/{len(disp_runs)} thirdorder inputs read")
    cutoff = set_cutoff(unitcell, settings, lattice, base_positions, displacements,
                        [r.input_path.name for r in disp_runs])
    ph3.displacements = displacements
    if disp_yaml_path is not None:
        ph3.save(str(disp_yaml_path))

    def job(role, index, run):
        digest = hashlib.sha256(("imported\n" + run.input_path.read_text()).encode()).hexdigest()[:20]
        out = {"key": f"imported-{digest}", "role": role, "index": index, "n_atoms": len(sc),
               "output": str(run.output_path.resolve())}
        if role == "fc3" and index in own_order:
            out["phonopy_index_of_input_atom"] = own_order[index]
        return out

    jobs = [job("fc3", i, run) for i, run in enumerate(disp_runs)]
    if settings.subtract_residual_forces and base_run.output_path.is_file():
        jobs.insert(0, job("base", 0, base_run))
    amplitudes = np.linalg.norm(displacements, axis=2)
    return {
        "strategy": "thirdorder",
        "supercell_matrix": supercell_matrix_3x3(settings.supercell_matrix).tolist(),
        "fc2_supercell_matrix": None,
        "amplitude_ang": float(amplitudes[amplitudes > DISPLACED_ANG].min()),  # one-atom step (2h: same atom twice)
        "pair_cutoff_ang": cutoff["fc3_cutoff_ang"],
        "fc3_cutoff_ang": cutoff["fc3_cutoff_ang"],
        "n_supercells_total": len(disp_runs),
        "n_displaced_fc3": len(disp_runs),
        "n_displaced_fc2": 0,
        "engine": "imported",
        "import": {"format": "thirdorder", "dir": str(Path(directory).resolve()),
                   "output_pattern": output_pattern, "phonopy_index_of_input_atom": perm.tolist(),
                   "cutoff_source": cutoff["source"],
                   "largest_displaced_pair_ang": cutoff["largest_displaced_pair_ang"],
                   "base_forces_subtracted": any(j["role"] == "base" for j in jobs)},
        "jobs": jobs,
    }


def reorder_forces(manifest: dict, forces_input_order: np.ndarray, job: dict | None = None) -> np.ndarray:
    """Forces of an imported run (its input's atom order) in phonopy's atom order: the job's own position
    match when its input lists the atoms in another order than BASE, else BASE's."""
    own = (job or {}).get("phonopy_index_of_input_atom")
    perm = np.asarray(own if own is not None else manifest["import"]["phonopy_index_of_input_atom"])
    out = np.empty_like(forces_input_order)
    out[perm] = forces_input_order
    return out
