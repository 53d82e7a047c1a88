"""Training data for the ML force route: PANNA ``.example`` JSON files and extended XYZ.

One example is one configuration with its DFT energy and forces, in PANNA's ``.example`` layout::

    {"key": "<name>", "unit_of_length": "angstrom", "atomic_position_unit": "cartesian",
     "lattice_vectors": [[ax, ay, az], [bx, by, bz], [cx, cy, cz]],      # rows, Å
     "energy": [E, "eV"],
     "atoms": [[1, "Si", [x, y, z], [fx, fy, fz]], ...]}                 # 1-based index, Å, eV/Å

Examples written here are always in Å, cartesian and eV; :func:`read_example` also accepts PANNA's
``bohr`` lengths, ``crystal`` positions and ``Ry``/``Ha`` energies (forces are in energy unit per length
unit) and converts them with the constants of :mod:`kappaflow.units`.  Numbers are written with
Python's shortest round-tripping ``repr``, so a written example reads back bit for bit.

Structures of pw.x outputs
--------------------------
pw.x prints the starting structure only in its header, in units of ``alat`` and with 6 (cell) or 7
(positions) decimals.  :func:`example_from_pwout` therefore takes the starting structure (frame 0, and
the cell of every frame of a fixed-cell run) from the run's pw.x input when one is given, after checking
that it matches the header to print precision; later frames of relax/md runs use their
``ATOMIC_POSITIONS``/``CELL_PARAMETERS`` blocks (10 and 9 decimals) and the final scf of a vc-relax the
``Begin/End final coordinates`` block.

The PANNA key of an example is its file name up to the first dot (``<key>.example``); keys must not
contain whitespace or dots, because PANNA's evaluation files use them as a whitespace-separated column.
"""

from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path

import numpy as np
from ase import Atoms

from kappaflow import atomic
from kappaflow import units
from kappaflow.errors import InputFileError, KappaflowError
from kappaflow.qe.pwin import PwInput, read_pw_input
from kappaflow.qe.pwout import _floats, read_pw_output

#: length units PANNA knows -> factor to Å
LENGTH_TO_ANG = {"angstrom": 1.0, "bohr": units.BOHR_ANG}
#: energy units PANNA knows (case-insensitive) -> factor to eV
ENERGY_TO_EV = {"ev": 1.0, "ry": units.RY_EV, "ryd": units.RY_EV, "ha": units.HARTREE_EV}
POSITION_UNITS = ("cartesian", "crystal")
KEY_RE = re.compile(r"^[^\s.]+$")
log = logging.getLogger(__name__)

_CELLDM1 = re.compile(r"celldm\(1\)=\s*(\S+)")
_AXIS = re.compile(r"^\s*a\(([123])\) = \((.*)\)\s*$")
_TAU = re.compile(r"^\s*(\d+)\s+(\S+)\s+tau\(\s*(\d+)\) = \((.*)\)\s*$")
_ELEMENT = re.compile(r"[A-Z][a-z]?")
#: agreement demanded between a pw.x input and the header of its output, in units of alat
#: (the header prints the cell with 6 and positions with 7 decimals)
HEADER_TOLERANCE_ALAT = 2e-6


def check_key(key, where: str = "example") -> str:
    if not isinstance(key, str) or not KEY_RE.match(key):
        raise KappaflowError(f"{where}: key {key!r} must be a non-empty string without whitespace or dots")
    return key


def _element(label: str, path, what: str) -> str:
    m = _ELEMENT.match(label)
    if not m:
        raise InputFileError(path, f"cannot read an element from the species label {label!r} ({what})")
    return m.group(0)


# ------------------------------------------------------------------------------------------------
# pw.x output -> example
# ------------------------------------------------------------------------------------------------
def _three_numbers(text: str, width: int, path, lineno: int, what: str) -> np.ndarray:
    """Three numbers of a Fortran ``3f<width>.d`` field: split on blanks, or, when a wide negative
    number fills its field and touches its neighbour, cut at the fixed field width from the right."""
    tokens = text.split()
    if len(tokens) != 3:
        text = text.rstrip()
        start = len(text) - 3 * width
        tokens = [text[max(start, 0):start + width], text[start + width:start + 2 * width],
                  text[start + 2 * width:]]
    return _floats([t.strip() for t in tokens], path, lineno, what)


def read_header_structure(path, n_atoms: int, required: bool = True):
    """The starting structure printed in a pw.x output's header: species labels, cell (Å, rows),
    cartesian positions (Å) and alat (Å), at pw.x's print precision (cell 6, positions 7 decimals in
    units of alat).  A header without ``celldm(1)``, ``crystal axes`` or the ``site n.`` positions (such
    as kappaflow-mock-pw's) raises, or gives None when not ``required``; malformed lines always raise."""
    lines = Path(path).read_text(errors="replace").splitlines()
    alat_bohr = cell = None
    labels, tau = [], []
    i = 0
    while i < len(lines):
        s = lines[i]
        if alat_bohr is None and "celldm(1)=" in s:
            m = _CELLDM1.search(s)
            try:
                alat_bohr = float(m.group(1))
            except (AttributeError, ValueError):
                raise InputFileError(path, "cannot read celldm(1)", i + 1) from None
        elif cell is None and s.strip().startswith("crystal axes: (cart. coord. in units of alat)"):
            rows = []
            for k in (1, 2, 3):
                m = _AXIS.match(lines[i + k]) if i + k < len(lines) else None
                if not m or int(m.group(1)) != k:
                    raise InputFileError(path, f"expected the line a({k}) = ( ... ) of the crystal axes",
                                         i + 1 + k)
                rows.append(_three_numbers(m.group(2), 11, path, i + 1 + k, f"crystal axis a({k})"))
            cell = np.array(rows)
            i += 4
            continue
        elif not labels and "site n." in s and "positions (alat units)" in s:
            for k in range(1, n_atoms + 1):
                m = _TAU.match(lines[i + k]) if i + k < len(lines) else None
                if not m or int(m.group(1)) != k or int(m.group(3)) != k:
                    raise InputFileError(path, f"expected the position line of atom {k} "
                                         "(site n. ... tau( n) = ( ... ))", i + 1 + k)
                labels.append(m.group(2))
                tau.append(_three_numbers(m.group(4), 12, path, i + 1 + k, f"position of atom {k}"))
            break
        i += 1
    if alat_bohr is None or cell is None or not labels:
        if not required:
            return None
        missing = [n for n, v in (("celldm(1)", alat_bohr), ("crystal axes", cell), ("site n. positions",
                                                                                    labels or None))
                   if v is None]
        raise InputFileError(path, "the header lacks " + ", ".join(missing) + ": not a pw.x output?")
    alat_ang = float(units.bohr_to_ang(alat_bohr))
    return labels, cell * alat_ang, np.array(tau) * alat_ang, alat_ang


def check_output_against_input(pw: PwInput, path, n_atoms: int) -> bool:
    """The header of the pw.x output ``path`` must show the structure of ``pw`` (species labels in order,
    cell and positions to print precision); raises InputFileError naming the first difference.  Returns
    False, having checked nothing, when the header does not print the structure (kappaflow-mock-pw)."""
    header = read_header_structure(path, n_atoms, required=False)
    if header is None:
        log.warning("%s: the header does not print the structure; not compared with %s", path, pw.path)
        return False
    labels, cell, pos, alat = header
    pw_labels = [str(s) for s in pw.atoms.arrays.get("qe_labels", pw.atoms.get_chemical_symbols())]
    if labels != pw_labels:
        first = next(k for k, (a, b) in enumerate(zip(labels, pw_labels)) if a != b)
        raise InputFileError(path, f"species order differs from the pw.x input {pw.path}: atom {first + 1} "
                             f"is {labels[first]} in the output, {pw_labels[first]} in the input")
    tol = HEADER_TOLERANCE_ALAT * alat
    dcell = np.abs(np.asarray(pw.atoms.cell) - cell).max()
    if dcell > tol:
        raise InputFileError(path, f"cell differs from the pw.x input {pw.path} by {dcell:.2e} Å "
                             "(more than print precision): not the output of this input?")
    dpos = np.abs(pw.atoms.positions - pos).max(axis=1)
    worst = int(np.argmax(dpos))
    if dpos[worst] > tol:
        raise InputFileError(path, f"position of atom {worst + 1} differs from the pw.x input {pw.path} by "
                             f"{dpos[worst]:.2e} Å (more than print precision): not the output of this input?")
    return True


def example_from_pwout(path, key: str, frame: int = -1, pw_input=None,
                       expected_n_atoms: int | None = None) -> dict:
    """One PANNA example (Å, cartesian, eV, eV/Å) from a finished pw.x output.

    ``frame`` selects the ionic configuration of a relax/md run (default: the last; an scf run has
    one).  ``pw_input`` (a path or :class:`~kappaflow.qe.pwin.PwInput`) is the run's input: it gives the
    starting structure and a fixed cell at full precision; without it they come from the output's header
    at print precision.  The output is parsed strictly (:func:`~kappaflow.qe.pwout.read_pw_output`)."""
    check_key(key, str(path))
    if pw_input is not None and not isinstance(pw_input, PwInput):
        pw_input = read_pw_input(pw_input)
    if pw_input is not None:
        if expected_n_atoms is not None and expected_n_atoms != len(pw_input.atoms):
            raise InputFileError(pw_input.path, f"input has {len(pw_input.atoms)} atoms, expected "
                                 f"{expected_n_atoms}")
        expected_n_atoms = len(pw_input.atoms)
    run = read_pw_output(path, expected_n_atoms=expected_n_atoms, require_forces=False)
    n_frames = len(run.frames)
    if not -n_frames <= frame < n_frames:
        raise InputFileError(path, f"frame {frame} requested, the run has {n_frames} configuration(s)")
    index = frame % n_frames
    fr = run.frames[index]
    if fr.forces_ev_per_ang is None:
        raise InputFileError(path, f"configuration {index} has no forces block (tprnfor = .true.)")

    if pw_input is not None:
        check_output_against_input(pw_input, path, run.n_atoms)
        start_labels = [str(s) for s in pw_input.atoms.arrays.get("qe_labels",
                                                                   pw_input.atoms.get_chemical_symbols())]
        start_cell = np.asarray(pw_input.atoms.cell, dtype=np.float64)
        start_pos = np.asarray(pw_input.atoms.positions, dtype=np.float64)
    else:
        start_labels, start_cell, start_pos, _ = read_header_structure(path, run.n_atoms)

    if fr.positions_frac is not None:  # relax/md step: its own ATOMIC_POSITIONS (and CELL_PARAMETERS)
        cell = fr.cell_ang if fr.cell_ang is not None else start_cell
        labels, positions = list(fr.symbols), fr.positions_frac @ cell
    elif index == n_frames - 1 and run.final_positions_frac is not None:  # final scf of a vc-relax
        cell = run.final_cell_ang if run.final_cell_ang is not None else (
            fr.cell_ang if fr.cell_ang is not None else start_cell)
        labels, positions = list(run.final_symbols), run.final_positions_frac @ cell
    elif index == 0:
        labels, cell, positions = start_labels, start_cell, start_pos
    else:
        raise InputFileError(path, f"cannot tell the structure of configuration {index} (no ATOMIC_POSITIONS "
                             "block precedes it)")
    if len(labels) != run.n_atoms:
        raise InputFileError(path, f"configuration {index} lists {len(labels)} positions, expected {run.n_atoms}")
    symbols = [_element(lab, path, f"atom {k + 1}") for k, lab in enumerate(labels)]
    forces = np.asarray(fr.forces_ev_per_ang, dtype=np.float64)
    return make_example(key, symbols, cell, positions, fr.energy_ev, forces)


def make_example(key: str, symbols, cell_ang, positions_ang, energy_ev: float, forces_ev_per_ang) -> dict:
    """An example dict (Å, cartesian, eV, eV/Å) from arrays; values become Python floats."""
    check_key(key)
    cell = np.asarray(cell_ang, dtype=np.float64)
    pos = np.asarray(positions_ang, dtype=np.float64)
    forces = np.asarray(forces_ev_per_ang, dtype=np.float64)
    n = len(symbols)
    if cell.shape != (3, 3) or pos.shape != (n, 3) or forces.shape != (n, 3):
        raise KappaflowError(f"example {key}: shapes cell {cell.shape}, positions {pos.shape}, forces "
                             f"{forces.shape} do not fit {n} atoms")
    return {
        "key": key,
        "unit_of_length": "angstrom",
        "atomic_position_unit": "cartesian",
        "lattice_vectors": cell.tolist(),
        "energy": [float(energy_ev), "eV"],
        "atoms": [[k + 1, str(s), pos[k].tolist(), forces[k].tolist()] for k, s in enumerate(symbols)],
    }


# ------------------------------------------------------------------------------------------------
# validation and unit conversion
# ------------------------------------------------------------------------------------------------
def _number(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise KappaflowError(f"{what} must be a number, found {value!r}")
    if not math.isfinite(value):
        raise KappaflowError(f"{what} is {value}")
    return float(value)


def _vector(value, what: str) -> list[float]:
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise KappaflowError(f"{what} must be a list of 3 numbers, found {value!r}")
    return [_number(v, f"{what}[{c}]") for c, v in enumerate(value)]


def normalize_example(example: dict, expected_n_atoms: int | None = None, require_forces: bool = True,
                      default_key: str | None = None) -> dict:
    """A validated copy of ``example`` in Å, cartesian and eV (eV/Å).  Raises KappaflowError saying
    what is wrong (the caller adds the file name)."""
    if not isinstance(example, dict):
        raise KappaflowError("an example must be a JSON object")
    key = example.get("key", default_key)
    check_key(key)
    length_unit = example.get("unit_of_length")
    if not isinstance(length_unit, str) or length_unit.lower() not in LENGTH_TO_ANG:
        raise KappaflowError(f"unknown unit_of_length {length_unit!r} (expected one of "
                             f"{sorted(LENGTH_TO_ANG)})")
    to_ang = LENGTH_TO_ANG[length_unit.lower()]
    pos_unit = example.get("atomic_position_unit", example.get("atomic_coordinates"))
    if not isinstance(pos_unit, str) or pos_unit.lower() not in POSITION_UNITS:
        raise KappaflowError(f"unknown atomic_position_unit {pos_unit!r} (expected one of {POSITION_UNITS})")
    lattice = example.get("lattice_vectors")
    if not isinstance(lattice, (list, tuple)) or len(lattice) != 3:
        raise KappaflowError(f"lattice_vectors must be 3 vectors, found {lattice!r}")
    cell = np.array([_vector(v, f"lattice_vectors[{i}]") for i, v in enumerate(lattice)]) * to_ang
    if abs(np.linalg.det(cell)) < 1e-8:
        raise KappaflowError("lattice_vectors have zero volume (a periodic cell is required)")
    energy = example.get("energy")
    if not isinstance(energy, (list, tuple)) or len(energy) != 2 or not isinstance(energy[1], str):
        raise KappaflowError(f"energy must be [value, unit], found {energy!r}")
    if energy[1].lower() not in ENERGY_TO_EV:
        raise KappaflowError(f"unknown energy unit {energy[1]!r} (expected eV, Ry or Ha)")
    to_ev = ENERGY_TO_EV[energy[1].lower()]
    energy_ev = _number(energy[0], "energy") * to_ev
    atoms = example.get("atoms")
    if not isinstance(atoms, list) or not atoms:
        raise KappaflowError("atoms must be a non-empty list")
    if expected_n_atoms is not None and len(atoms) != expected_n_atoms:
        raise KappaflowError(f"atom count mismatch: {len(atoms)} atoms, expected {expected_n_atoms}")
    symbols, pos, forces = [], [], []
    for k, atom in enumerate(atoms):
        if not isinstance(atom, (list, tuple)) or len(atom) not in (3, 4):
            raise KappaflowError(f"atoms[{k}] must be [index, symbol, position, force], found {atom!r}")
        if isinstance(atom[0], bool) or not isinstance(atom[0], int) or atom[0] != k + 1:
            raise KappaflowError(f"atoms[{k}] has index {atom[0]!r}, expected {k + 1} (1-based, in order)")
        if not isinstance(atom[1], str) or not _ELEMENT.fullmatch(atom[1]):
            raise KappaflowError(f"atoms[{k}] has species {atom[1]!r}, expected an element symbol")
        symbols.append(atom[1])
        pos.append(_vector(atom[2], f"position of atom {k + 1}"))
        if len(atom) == 4:
            forces.append(_vector(atom[3], f"force on atom {k + 1}"))
        elif require_forces:
            raise KappaflowError(f"atom {k + 1} has no force")
    if forces and len(forces) != len(atoms):
        raise KappaflowError(f"{len(forces)} of {len(atoms)} atoms have forces")
    pos = np.array(pos) * to_ang if pos_unit.lower() == "cartesian" else np.array(pos) @ cell
    out = {k: v for k, v in example.items()
           if k not in ("key", "unit_of_length", "atomic_position_unit", "atomic_coordinates",
                        "lattice_vectors", "energy", "atoms")}
    if "per_atom_energy" in out:
        pae = out["per_atom_energy"]
        if not isinstance(pae, list) or len(pae) != len(atoms):
            raise KappaflowError(f"per_atom_energy must list {len(atoms)} numbers")
        out["per_atom_energy"] = [_number(v, f"per_atom_energy[{i}]") * to_ev for i, v in enumerate(pae)]
    if forces:
        normalized = make_example(key, symbols, cell, pos, energy_ev, np.array(forces) * (to_ev / to_ang))
    else:
        normalized = make_example(key, symbols, cell, pos, energy_ev, np.zeros((len(atoms), 3)))
        for atom in normalized["atoms"]:
            del atom[3]
    normalized.update(out)
    return normalized


# ------------------------------------------------------------------------------------------------
# files
# ------------------------------------------------------------------------------------------------
def example_to_text(example: dict) -> str:
    """JSON text of an example, one atom per line; floats as shortest round-tripping ``repr``."""
    dump = lambda v: json.dumps(v, allow_nan=False)  # noqa: E731
    head = [f"{dump(k)}: {dump(v)}" for k, v in example.items() if k != "atoms"]
    atoms = ",\n  ".join(dump(a) for a in example["atoms"])
    return "{" + ",\n ".join(head) + ',\n "atoms": [\n  ' + atoms + "\n ]}\n"


def write_example(path, example: dict) -> None:
    """Validate ``example`` and write it atomically to ``path``, whose name must be ``<key>.example``
    (PANNA takes the key from the file name)."""
    path = Path(path)
    try:
        normalize_example(example)
    except KappaflowError as exc:
        raise KappaflowError(f"{path}: refusing to write an invalid example: {exc}") from None
    stem = path.name.split(".")[0]
    if stem != example["key"]:
        raise KappaflowError(f"{path}: the file name gives PANNA the key {stem!r}, the example's key is "
                             f"{example['key']!r}; name the file {example['key']}.example")
    text = example_to_text(example)
    if json.loads(text) != example:
        raise KappaflowError(f"{path}: example does not survive a JSON round trip (non-JSON values?)")
    atomic.write_text(path, text)


def read_example(path, expected_n_atoms: int | None = None, require_forces: bool = True) -> dict:
    """Read and validate a PANNA example; return it in Å, cartesian and eV (eV/Å).

    Raises InputFileError naming the file and what is wrong: invalid JSON (with its line), unknown
    units, a key that differs from the file name, atom count or index mismatch, missing forces,
    non-finite numbers."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise InputFileError(path, f"cannot read example ({exc.strerror})") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputFileError(path, f"not valid JSON ({exc.msg})", exc.lineno) from None
    stem = path.name.split(".")[0]
    if isinstance(raw, dict) and "key" in raw and raw["key"] != stem:
        raise InputFileError(path, f"key {raw['key']!r} differs from the file name's key {stem!r} "
                             "(PANNA uses the file name)")
    try:
        return normalize_example(raw, expected_n_atoms, require_forces, default_key=stem)
    except KappaflowError as exc:
        raise InputFileError(path, str(exc)) from None


def example_to_atoms(example: dict) -> Atoms:
    """An ASE Atoms (periodic) with a single-point calculator carrying energy and forces."""
    from ase.calculators.singlepoint import SinglePointCalculator

    ex = normalize_example(example)
    atoms = Atoms(symbols=[a[1] for a in ex["atoms"]], positions=[a[2] for a in ex["atoms"]],
                  cell=ex["lattice_vectors"], pbc=True)
    atoms.info["key"] = ex["key"]
    atoms.info["uid"] = ex["key"]
    atoms.calc = SinglePointCalculator(atoms, energy=ex["energy"][0],
                                       forces=np.array([a[3] for a in ex["atoms"]], dtype=np.float64))
    return atoms


#: extxyz stores positions and forces with 8 decimals (ASE's ``%16.8f``); energies and cells exactly
EXTXYZ_DECIMALS = 8


def write_extxyz(path, examples) -> list[Atoms]:
    """All ``examples`` as one multi-frame extended XYZ file (energy, forces, pbc, cell; the key in
    ``info['key']`` and, because ASE turns number-like strings such as ``1234e5`` into numbers on
    reading, also in ``info['uid']``, which ASE never converts).  The file is read back with
    :func:`ase.io.read` and compared before it is renamed into place; returns the images read back."""
    import ase.io

    path = Path(path)
    images = [example_to_atoms(ex) for ex in examples]
    if not images:
        raise KappaflowError(f"{path}: no examples to write")
    with atomic.atomic_path(path) as tmp:
        ase.io.write(tmp, images, format="extxyz")
        back = ase.io.read(tmp, index=":", format="extxyz")
        tol = 0.5 * 10.0 ** -EXTXYZ_DECIMALS * (1 + 1e-6)
        if len(back) != len(images):
            raise KappaflowError(f"{path}: wrote {len(images)} frames, read back {len(back)}")
        for a, b in zip(images, back):
            k = a.info["uid"]
            def close(x, y):
                return np.abs(x - y).max() <= tol + 1e-15 * np.abs(y).max()

            same = (str(b.info.get("uid")) == k and b.get_chemical_symbols() == a.get_chemical_symbols()
                    and np.array_equal(b.cell.array, a.cell.array) and bool(np.all(b.pbc))
                    and b.get_potential_energy() == a.get_potential_energy()
                    and close(b.positions, a.positions) and close(b.get_forces(), a.get_forces()))
            if not same:
                raise KappaflowError(f"{path}: frame {k} does not read back as written")
    return back


