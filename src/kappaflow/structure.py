"""Crystal structures passed between rules, and conversions between ASE and phonopy objects.

pw.x species labels (``Fe1``, ``Fe2``) are kept: in the structure file, in every pw.x input, and for the
symmetry of phonopy/phono3py (:func:`to_phonopy`).

A structure file is JSON: cell (Å, rows), fractional positions, element symbols, pw.x species labels,
masses (amu) and where it came from.  JSON with full float64 ``repr`` round-trips bit for bit.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from ase import Atoms
from phonopy.structure.atoms import PhonopyAtoms

from kappaflow.errors import ConfigError, InputFileError


def labels_of(atoms: Atoms) -> list[str]:
    if "qe_labels" in atoms.arrays:
        return [str(s) for s in atoms.arrays["qe_labels"]]
    return atoms.get_chemical_symbols()


def write_structure(path, atoms: Atoms, source: str) -> None:
    data = {
        "cell_ang": np.asarray(atoms.cell, dtype=np.float64).tolist(),
        "scaled_positions": atoms.get_scaled_positions(wrap=False).tolist(),
        "symbols": atoms.get_chemical_symbols(),
        "labels": labels_of(atoms),
        "masses_amu": atoms.get_masses().tolist(),
        "source": source,
    }
    Path(path).write_text(json.dumps(data, indent=1))


def read_structure(path) -> Atoms:
    try:
        data = json.loads(Path(path).read_text())
        atoms = Atoms(symbols=data["symbols"], scaled_positions=data["scaled_positions"],
                      cell=data["cell_ang"], pbc=True)
    except (OSError, KeyError, ValueError) as exc:
        raise InputFileError(path, f"not a kappaflow structure file ({exc})") from None
    atoms.set_masses(data["masses_amu"])
    atoms.set_array("qe_labels", np.array(data["labels"], dtype=object))
    return atoms


def label_classes(atoms: Atoms) -> np.ndarray | None:
    """Per atom the index (1, 2, ...) of its pw.x species label, when some element carries more than one
    label (Fe1/Fe2: pw.x treats them as different species, so they are not symmetry equivalent); None
    when every element has one label (the symmetry is the elements')."""
    labels = labels_of(atoms)
    per_element: dict[str, set[str]] = {}
    for symbol, label in zip(atoms.get_chemical_symbols(), labels):
        per_element.setdefault(symbol, set()).add(label)
    if all(len(v) == 1 for v in per_element.values()):
        return None
    order = sorted(set(labels))
    return np.array([order.index(label) + 1 for label in labels], dtype=np.float64)


def to_phonopy(atoms: Atoms) -> PhonopyAtoms:
    """The structure for phonopy/phono3py: element symbols (isotope data, reports) and masses; species
    labels that split an element (Fe1/Fe2) become distinct collinear "magnetic moments" (1, 2, ...), the
    per-site tag phonopy 4.10 and phono3py pass to spglib's symmetry search (and symfc), so inequivalent
    sites stay inequivalent.  (phonopy's symbol suffixes "Fe1" would not: its symmetry search uses atomic
    numbers unless ``distinguish_symbol_index``, which phono3py 4.10 does not expose.)"""
    return PhonopyAtoms(symbols=atoms.get_chemical_symbols(), cell=np.asarray(atoms.cell, dtype=np.float64),
                        scaled_positions=atoms.get_scaled_positions(wrap=False), masses=atoms.get_masses(),
                        magnetic_moments=label_classes(atoms))


def from_phonopy(cell: PhonopyAtoms, labels: list[str] | None = None) -> Atoms:
    atoms = Atoms(symbols=cell.symbols, cell=cell.cell, scaled_positions=cell.scaled_positions, pbc=True)
    atoms.set_masses(cell.masses)
    if labels is not None:
        atoms.set_array("qe_labels", np.array(labels, dtype=object))
    return atoms


def supercell_matrix_3x3(value) -> np.ndarray:
    m = np.array(value, dtype=int)
    if m.shape == (3,):
        m = np.diag(m)
    if m.shape != (3, 3) or round(abs(np.linalg.det(m))) < 1:
        raise ConfigError(f"supercell must be 3 integers or a 3x3 integer matrix with det > 0, got {value}")
    return m
