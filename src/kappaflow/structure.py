"""Crystal structures passed between rules, and conversions between ASE and phonopy objects.

A structure file is JSON: cell (Å, rows), fractional positions, element symbols, pw.x species labels,
masses (amu) and where it came from.  JSON with full float64 ``repr`` round-trips bit for bit.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from ase import Atoms
from phonopy.structure.atoms import PhonopyAtoms

from kappaflow.errors import InputFileError


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


def to_phonopy(atoms: Atoms) -> PhonopyAtoms:
    return PhonopyAtoms(symbols=atoms.get_chemical_symbols(), cell=np.asarray(atoms.cell, dtype=np.float64),
                        scaled_positions=atoms.get_scaled_positions(wrap=False), masses=atoms.get_masses())


def from_phonopy(cell: PhonopyAtoms, labels: list[str] | None = None) -> Atoms:
    atoms = Atoms(symbols=cell.symbols, cell=cell.cell, scaled_positions=cell.scaled_positions, pbc=True)
    atoms.set_masses(cell.masses)
    if labels is not None:
        atoms.set_array("qe_labels", np.array(labels, dtype=object))
    return atoms
