"""Which atom is which: a structure read from a file mapped onto a reference structure by position.

Force sets may come from any tool, in any atom order (thirdorder orders supercell atoms
``product(nc, nb, na, natoms)``, phonopy unit-cell atom first, other codes otherwise).  Positions decide:
every atom found in a file is matched to the reference site at the smallest periodic (minimum-image)
distance, and the match is asserted — the distance is within the tolerance, the species agree and no
two atoms land on the same site — or :class:`~kappaflow.errors.InputFileError` names the file, the line
of the offending atom (when known) and what was expected.

The reference of a displaced supercell is the displaced supercell itself (phono3py's
``supercells_with_displacements``), so the displaced atoms match as tightly as the others, and the
output of another supercell (another displacement, another sow) fails instead of being reaped.
Used by :mod:`kappaflow.reap` (every pw.x output before its forces are used) and
:mod:`kappaflow.thirdorder_import` (BASE inputs against phonopy's supercell).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from kappaflow.errors import InputFileError

DEFAULT_TOLERANCE_ANG = 2e-3  # the schema default of reap.atom_map_tolerance_ang
_ELEMENT = re.compile(r"^([A-Z][a-z]?)")
_CHUNK = 256  # atoms per block of the distance matrix (keeps memory at _CHUNK * n * 3 floats)


@dataclass
class Structure:
    """A periodic structure: cell rows and Cartesian positions in Å, and the species of each atom."""

    lattice_ang: np.ndarray
    positions_ang: np.ndarray
    symbols: list[str]

    @classmethod
    def from_phonopy(cls, cell) -> "Structure":
        return cls(np.asarray(cell.cell, dtype=np.float64), np.asarray(cell.positions, dtype=np.float64),
                   [str(s) for s in cell.symbols])

    @classmethod
    def from_ase(cls, atoms) -> "Structure":
        labels = atoms.arrays.get("qe_labels", atoms.get_chemical_symbols())
        return cls(np.asarray(atoms.cell, dtype=np.float64), np.asarray(atoms.positions, dtype=np.float64),
                   [str(s) for s in labels])


def element_of(label: str) -> str:
    """The chemical element of a species label (``Si``, ``Ge1``, ``Fe_up`` -> ``Si``, ``Ge``, ``Fe``)."""
    text = str(label).strip()
    m = _ELEMENT.match(text) or _ELEMENT.match(text.capitalize())
    return m.group(1) if m else text


def _fmt(xyz) -> str:
    return "[" + " ".join(f"{x:.6f}" for x in xyz) + "]"


def map_atoms(path, reference: Structure, positions_ang, symbols=None, cell_ang=None,
              tolerance_ang: float = DEFAULT_TOLERANCE_ANG, lines=None,
              reference_name: str = "the reference supercell") -> np.ndarray:
    """``perm[a]`` = the reference index of the ``a``-th atom found in ``path``.

    ``positions_ang`` (Cartesian Å, the file's order) are compared with the reference positions modulo
    the reference lattice (minimum image); ``cell_ang`` (the file's cell, when it has one) must equal the
    reference lattice within the tolerance; ``symbols`` (species labels) must name the element of the
    matched site; ``lines`` (1-based, per atom) locate the error message."""
    lattice = np.asarray(reference.lattice_ang, dtype=np.float64)
    ref_pos = np.asarray(reference.positions_ang, dtype=np.float64)
    found = np.asarray(positions_ang, dtype=np.float64)
    n = len(ref_pos)
    if found.ndim != 2 or found.shape[1] != 3:
        raise InputFileError(path, f"positions must be an (n, 3) array, got shape {found.shape}")
    if len(found) != n:
        raise InputFileError(path, f"{len(found)} atoms, but {reference_name} has {n}")
    if cell_ang is not None:
        deviation = float(np.abs(np.asarray(cell_ang, dtype=np.float64) - lattice).max())
        if deviation > tolerance_ang:
            raise InputFileError(path, f"cell vectors differ from those of {reference_name} by {deviation:.4g} Å "
                                 f"(tolerance {tolerance_ang:g} Å): expected {lattice.tolist()} Å")
    inv = np.linalg.inv(lattice)
    frac_found = found @ inv
    frac_ref = ref_pos @ inv
    perm = np.empty(n, dtype=np.int64)
    dist = np.empty(n, dtype=np.float64)
    for start in range(0, n, _CHUNK):
        d = frac_found[start:start + _CHUNK, None, :] - frac_ref[None, :, :]
        d -= np.round(d)
        r = np.linalg.norm(d @ lattice, axis=-1)
        perm[start:start + _CHUNK] = r.argmin(axis=1)
        dist[start:start + _CHUNK] = r[np.arange(len(r)), perm[start:start + _CHUNK]]

    def where(a):
        return lines[a] if lines is not None else None

    def name(a):
        return f"atom {a + 1}" + (f" ({symbols[a]})" if symbols is not None else "")

    bad = np.flatnonzero(dist > tolerance_ang)
    if bad.size:
        a = int(bad[0])
        p = int(perm[a])
        raise InputFileError(path, f"{name(a)} at {_fmt(found[a])} Å is {dist[a]:.4g} Å from the nearest site of "
                             f"{reference_name} (site {p + 1}, {reference.symbols[p]} at {_fmt(ref_pos[p])} Å; "
                             f"tolerance {tolerance_ang:g} Å; {bad.size} of {n} atoms unmatched): "
                             "the output of another structure?", where(a))
    if symbols is not None:
        for a, p in enumerate(perm):
            if element_of(symbols[a]) != element_of(reference.symbols[p]):
                raise InputFileError(path, f"{name(a)} sits on site {p + 1} of {reference_name}, which is "
                                     f"{reference.symbols[p]}: the species do not match", where(a))
    counts = np.bincount(perm, minlength=n)
    if counts.max() > 1:
        p = int(np.argmax(counts))
        twins = [int(a) + 1 for a in np.flatnonzero(perm == p)]
        raise InputFileError(path, f"atoms {twins} all map onto site {p + 1} of {reference_name} "
                             f"(tolerance {tolerance_ang:g} Å is too loose, or atoms overlap)",
                             where(twins[0] - 1))
    return perm


def to_reference_order(values, perm: np.ndarray) -> np.ndarray:
    """Per-atom rows in the file's order -> the reference order (``out[perm[a]] = values[a]``)."""
    values = np.asarray(values, dtype=np.float64)
    out = np.empty_like(values)
    out[np.asarray(perm)] = values
    return out


def map_pw_output(run, reference: Structure, tolerance_ang: float = DEFAULT_TOLERANCE_ANG,
                  reference_name: str = "the reference supercell") -> np.ndarray:
    """The mapping of a parsed pw.x output (:class:`kappaflow.qe.pwout.PwRun`): its header's starting
    structure (``crystal axes`` and ``site n. ... tau``), which is the structure the forces belong to."""
    if run.positions_ang is None:
        raise InputFileError(run.path, "no 'site n.  atom  positions (alat units)' block: cannot tell which "
                             "atom is which (is this a pw.x output?)")
    return map_atoms(run.path, reference, run.positions_ang, run.site_symbols, run.cell_ang, tolerance_ang,
                     run.site_lines, reference_name)
