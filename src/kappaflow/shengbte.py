"""ShengBTE interoperability: force-constant files, CONTROL, running it and reading κ back.

Formats follow ``shared/reference/formats.md`` §1–§3 (thirdorder's ``write_ifcs``, ShengBTE's
``Src/input.f90::read2fc/read3fc``, ``Src/config.f90`` and ``Src/ShengBTE.f90``).

Units: force constants are eV/Å² (2nd order) and eV/Å³ (3rd order), cell vectors in
FORCE_CONSTANTS_3RD are Cartesian Å, κ is W/(m·K), temperatures are K.  ShengBTE works in nm
internally; the only length conversion it needs is ``lfactor`` in CONTROL, taken from
:mod:`kappaflow.units`.

Conventions chosen here
-----------------------
* **CONTROL lengths**: ``lattvec`` is written in Å, exactly as the structure holds it, with
  ``lfactor = 0.1`` (nm per Å, ``units.ang_to_nm(1.0)``), so no number is rescaled on the way.
* **Periodic images in FORCE_CONSTANTS_3RD**: for a primitive atom ``i`` and supercell atoms
  ``j``, ``k``, the candidate images of ``j`` (and of ``k``) are those at the minimum-image
  distance from ``i`` (all of them when several are equally short, within ``tolerance_ang``).
  Among the candidate pairs, those with the shortest ``j``–``k`` distance are kept.  This is the
  candidate set of thirdorder's ``write_ifcs``; thirdorder then writes only the first pair it
  meets, whereas here the constant is shared out equally over *all* the tied pairs (weight
  ``1/multiplicity``).  The sum over the images equals the supercell constant, so ShengBTE's
  phase sum is exact on q-points commensurate with the supercell and, in between, does not
  depend on an arbitrary choice of one image (the interpolation keeps the crystal symmetry).
  Where no image is degenerate, the triplets and cell vectors are the ones thirdorder writes.
* Blocks whose 27 constants (before the image weighting) are all below a threshold are dropped.
"""

from __future__ import annotations

import itertools
import math
import os
import re
import shlex
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import numpy as np

from kappaflow.errors import InputFileError, KappaflowError
from kappaflow.units import ang_to_nm

FC2_FILENAME = "FORCE_CONSTANTS_2ND"
FC3_FILENAME = "FORCE_CONSTANTS_3RD"
CONTROL_FILENAME = "CONTROL"

#: ``lfactor`` written to CONTROL: lattice vectors are given in Å, 1 Å = 0.1 nm.
LFACTOR_NM_PER_ANG = float(ang_to_nm(1.0))

#: Keys of each CONTROL namelist documented by ShengBTE (formats.md §2); nothing else is written.
CONTROL_KEYS = {
    "allocations": ("nelements", "natoms", "ngrid", "norientations"),
    "crystal": (
        "lfactor", "lattvec", "types", "elements", "positions", "masses", "gfactors",
        "epsilon", "born", "scell", "orientations",
    ),
    "parameters": (
        "T", "T_min", "T_max", "T_step", "scalebroad", "omega_max", "rmin", "rmax", "dr",
        "maxiter", "nticks", "eps",
    ),
    "flags": (
        "nonanalytic", "convergence", "isotopes", "autoisotopes", "nanowires", "onlyharmonic",
        "espresso", "nthreads",
    ),
}


class ShengBTERunError(KappaflowError):
    """ShengBTE could not be started, exited with an error, or reported one in its log."""


class ForceConstants3rdBlocks(NamedTuple):
    """Contents of a FORCE_CONSTANTS_3RD file, one row per block.

    Attributes
    ----------
    r_j_ang, r_k_ang : ndarray, shape (n_blocks, 3), float64
        Cartesian lattice vectors (Å) of the cells of the second and third atoms.
    atom_i, atom_j, atom_k : ndarray, shape (n_blocks,), int
        **0-based** primitive-cell atom indices (the file holds them 1-based).
    phi_ev_per_ang3 : ndarray, shape (n_blocks, 3, 3, 3), float64
        ``phi[b, l, m, n]`` = ∂³E / ∂u_i^l ∂u_j^m ∂u_k^n in eV/Å³.
    """

    r_j_ang: np.ndarray
    r_k_ang: np.ndarray
    atom_i: np.ndarray
    atom_j: np.ndarray
    atom_k: np.ndarray
    phi_ev_per_ang3: np.ndarray


# ------------------------------------------------------------------------------------------------
# Fortran number parsing and line-by-line reading with line numbers
# ------------------------------------------------------------------------------------------------

_NO_E_EXPONENT = re.compile(r"([+-]?(?:\d+\.\d*|\.\d+|\d+))([+-]\d+)")


def _parse_fortran_real(token: str) -> float:
    """Parse a real as Fortran writes it.

    Handles ``0.12345E+03``, ``0.12345D+03`` and the form Fortran uses for three-digit exponents
    with an ``Ew.d`` edit descriptor, ``0.12345+103`` (the ``E`` is dropped).

    Raises
    ------
    ValueError
        If ``token`` is not a number (e.g. ``*******`` from a field overflow).
    """
    text = token.strip().replace("D", "E").replace("d", "e")
    try:
        value = float(text)
    except ValueError:
        match = _NO_E_EXPONENT.fullmatch(text)
        if match is None:
            raise ValueError(f"not a Fortran real: {token!r}") from None
        value = float(f"{match.group(1)}e{match.group(2)}")
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {token!r}")
    return value


class _LineCursor:
    """Walk the non-blank lines of a text file, remembering 1-based line numbers."""

    def __init__(self, path):
        self.path = Path(path)
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            raise InputFileError(self.path, "file does not exist") from None
        except UnicodeDecodeError:
            raise InputFileError(self.path, "not a text file") from None
        self._lines = [(n, line.split()) for n, line in enumerate(text.splitlines(), start=1)]
        self._lines = [(n, toks) for n, toks in self._lines if toks]
        self._pos = 0
        self.last_line = 0

    def next(self, what: str) -> list[str]:
        if self._pos >= len(self._lines):
            raise InputFileError(self.path, f"unexpected end of file while reading {what}",
                                 line=self.last_line + 1)
        self.last_line, tokens = self._lines[self._pos]
        self._pos += 1
        return tokens

    def remaining(self) -> int:
        return len(self._lines) - self._pos

    def error(self, reason: str) -> InputFileError:
        return InputFileError(self.path, reason, line=self.last_line)

    def ints(self, tokens: list[str], count: int, what: str) -> list[int]:
        if len(tokens) < count:
            raise self.error(f"expected {count} integers ({what}), found {len(tokens)} fields")
        try:
            return [int(t) for t in tokens[:count]]
        except ValueError:
            found = " ".join(tokens)
            raise self.error(f"expected {count} integers ({what}), found {found!r}") from None

    def reals(self, tokens: list[str], count: int, what: str) -> list[float]:
        if len(tokens) != count:
            raise self.error(f"expected {count} numbers ({what}), found {len(tokens)} fields")
        try:
            return [_parse_fortran_real(t) for t in tokens]
        except ValueError as exc:
            raise self.error(f"bad number in {what}: {exc}") from None


# ------------------------------------------------------------------------------------------------
# Structures: phonopy (Primitive / Supercell / PhonopyAtoms) or ASE Atoms
# ------------------------------------------------------------------------------------------------


def _structure_arrays(structure) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Return (cell rows in Å (3,3), fractional positions (n,3), symbols) of a phonopy/ASE cell."""
    if hasattr(structure, "get_scaled_positions"):  # ASE Atoms
        cell = np.asarray(structure.get_cell(), dtype=np.float64)
        frac = np.asarray(structure.get_scaled_positions(wrap=False), dtype=np.float64)
        symbols = list(structure.get_chemical_symbols())
    else:  # phonopy PhonopyAtoms / Primitive / Supercell
        cell = np.asarray(structure.cell, dtype=np.float64)
        frac = np.asarray(structure.scaled_positions, dtype=np.float64)
        symbols = list(structure.symbols)
    if cell.shape != (3, 3) or frac.ndim != 2 or frac.shape[1] != 3 or len(symbols) != len(frac):
        raise ValueError("structure must have a (3, 3) cell and (n, 3) fractional positions")
    return cell, frac, symbols


def _three_positive_ints(value, name: str) -> tuple[int, int, int]:
    arr = np.asarray(value)
    if arr.shape != (3,) or not np.all(np.equal(np.mod(arr, 1), 0)) or np.any(arr < 1):
        raise ValueError(f"{name} must be three positive integers, got {value!r}")
    return tuple(int(x) for x in arr)


def shengbte_scell(supercell, primitive, tolerance_ang: float = 1e-3) -> tuple[int, int, int]:
    """Check that a phonopy supercell can feed ShengBTE's FORCE_CONSTANTS_2ND and return ``scell``.

    ShengBTE decodes the atom indices of FORCE_CONSTANTS_2ND as phonopy's supercell ordering of a
    *diagonal* ``scell`` multiple of the CONTROL cell (``split_index``: x fastest, then y, z,
    atom slowest).  A supercell built on a conventional cell with a different primitive cell gives
    a file ShengBTE silently misreads, so this is checked atom by atom.

    Parameters
    ----------
    supercell, primitive : phonopy Supercell / Primitive (or anything with ``cell`` and
        ``scaled_positions``)
        The fc2 supercell and the primitive cell written to CONTROL.
    tolerance_ang : float
        Cartesian tolerance (Å) on lattice vectors and positions.

    Returns
    -------
    tuple of int
        ``scell``, the supercell multiples along the three primitive vectors.

    Raises
    ------
    ValueError
        If the supercell is not ``diag(scell)`` times the primitive cell, or its atoms are not in
        the order ShengBTE assumes.
    """
    sc_cell, sc_frac, _ = _structure_arrays(supercell)
    p_cell, p_frac, _ = _structure_arrays(primitive)
    multiples = sc_cell @ np.linalg.inv(p_cell)
    scell = np.rint(multiples)
    if np.abs((multiples - scell) @ p_cell).max() > tolerance_ang or not np.allclose(
        scell, np.diag(np.diag(scell))
    ):
        raise ValueError(
            "the fc2 supercell is not a diagonal multiple of the primitive cell; ShengBTE's "
            f"scell cannot describe it (supercell = {multiples.round(3).tolist()} x primitive)"
        )
    nx, ny, nz = (int(v) for v in np.diag(scell))
    if np.any(np.diag(scell) < 1):
        raise ValueError("the fc2 supercell must be a positive multiple of the primitive cell")
    n_prim = len(p_frac)
    if len(sc_frac) != nx * ny * nz * n_prim:
        expected_atoms = nx * ny * nz * n_prim
        raise ValueError(f"the supercell has {len(sc_frac)} atoms, expected {expected_atoms}")
    p_cart = p_frac @ p_cell
    inv_sc = np.linalg.inv(sc_cell)
    for index in range(len(sc_frac)):
        rest, ix = divmod(index, nx)
        rest, iy = divmod(rest, ny)
        iatom, iz = divmod(rest, nz)
        expected = (p_cart[iatom] + np.array([ix, iy, iz]) @ p_cell) @ inv_sc
        diff = sc_frac[index] - expected
        diff -= np.rint(diff)
        if np.linalg.norm(diff @ sc_cell) > tolerance_ang:
            raise ValueError(
                f"supercell atom {index + 1} is not where ShengBTE expects primitive atom "
                f"{iatom + 1} of cell ({ix}, {iy}, {iz}); the atom order is not phonopy's "
                "ordering of a supercell of this primitive cell"
            )
    return nx, ny, nz


# ------------------------------------------------------------------------------------------------
# FORCE_CONSTANTS_2ND (phonopy FORCE_CONSTANTS text format, full matrix)
# ------------------------------------------------------------------------------------------------


def write_force_constants_2nd(path, fc2_ev_per_ang2) -> Path:
    """Write a full second-order force-constant matrix as ShengBTE's FORCE_CONSTANTS_2ND.

    The format is phonopy's FORCE_CONSTANTS: a first line ``N N``, then for every pair ``i j``
    (1-based, ``j`` fastest) a line ``i j`` followed by the three rows of the 3×3 block.

    Parameters
    ----------
    path : str or Path
        Output file.
    fc2_ev_per_ang2 : array_like, shape (N, N, 3, 3)
        Full force constants in eV/Å², phonopy supercell ordering.

    Returns
    -------
    Path
        The file written.

    Raises
    ------
    ValueError
        For a compact ``(n_patom, N, 3, 3)`` array (ShengBTE reads ``N×N`` blocks and would fail)
        or any other shape.
    """
    fc2 = np.asarray(fc2_ev_per_ang2, dtype=np.float64)
    if fc2.ndim != 4 or fc2.shape[2:] != (3, 3):
        raise ValueError(f"fc2 must have shape (N, N, 3, 3), got {fc2.shape}")
    n_rows, n_atoms = fc2.shape[:2]
    if n_rows != n_atoms:
        raise ValueError(
            f"fc2 is compact (shape {fc2.shape}); ShengBTE needs the full (N, N, 3, 3) matrix: "
            "produce it with is_compact_fc=False (or expand it with "
            "phonopy.harmonic.force_constants.compact_fc_to_full_fc)"
        )
    if not np.all(np.isfinite(fc2)):
        raise ValueError("fc2 contains NaN or inf")
    lines = [f"{n_atoms:4d} {n_atoms:4d}"]
    for i in range(n_atoms):
        for j in range(n_atoms):
            lines.append(f"{i + 1} {j + 1}")
            for row in fc2[i, j]:
                lines.append("%22.15f %22.15f %22.15f" % tuple(row))
    path = Path(path)
    path.write_text("\n".join(lines) + "\n")
    return path


def read_force_constants_2nd(path) -> np.ndarray:
    """Read a phonopy/ShengBTE FORCE_CONSTANTS(_2ND) file.

    Parameters
    ----------
    path : str or Path
        File in phonopy's FORCE_CONSTANTS format (header ``N`` or ``N1 N2``).

    Returns
    -------
    ndarray, shape (N1, N2, 3, 3), float64
        Force constants in eV/Å².  ``N1 == N2`` for a full file; a compact file
        (``N1`` primitive atoms) is returned row by row in file order.

    Raises
    ------
    InputFileError
        Naming file and line, for a malformed or truncated file.
    """
    cursor = _LineCursor(path)
    header = cursor.next("the header (number of atoms)")
    if len(header) not in (1, 2):
        raise cursor.error(f"header must hold 1 or 2 integers, found {' '.join(header)!r}")
    dims = cursor.ints(header, len(header), "number of atoms")
    n_rows, n_cols = (dims[0], dims[0]) if len(dims) == 1 else dims
    if n_rows < 1 or n_cols < 1:
        raise cursor.error("the number of atoms must be positive")
    full = n_rows == n_cols
    fc2 = np.zeros((n_rows, n_cols, 3, 3), dtype=np.float64)
    for row in range(n_rows):
        for col in range(n_cols):
            atoms = cursor.ints(cursor.next(f"the atom pair of block ({row + 1}, {col + 1})"), 2,
                                "atom pair")
            if atoms[1] != col + 1 or (full and atoms[0] != row + 1):
                raise cursor.error(
                    f"atom pair {atoms[0]} {atoms[1]} found where "
                    f"{row + 1 if full else '<i>'} {col + 1} was expected"
                )
            for alpha in range(3):
                fc2[row, col, alpha] = cursor.reals(cursor.next("a force-constant row"), 3,
                                                    "a row of a 3x3 block")
    if cursor.remaining():
        cursor.next("")
        raise cursor.error(f"unexpected content after the {n_rows}x{n_cols} blocks")
    return fc2


# ------------------------------------------------------------------------------------------------
# FORCE_CONSTANTS_3RD
# ------------------------------------------------------------------------------------------------


def _images_from(origin_frac, frac_positions, sc_cell, tolerance_ang):
    """Minimum-image vectors (Å) from one atom to every atom of the supercell.

    Returns ``(dmin (N,), images list of (m_j, 3) arrays)``, all images within ``tolerance_ang``
    of the shortest one.
    """
    diff = frac_positions - origin_frac
    diff -= np.rint(diff)
    shifts = np.array(list(itertools.product(range(-2, 3), repeat=3)), dtype=np.float64)
    vectors = (diff[:, None, :] + shifts[None, :, :]) @ sc_cell  # (N, 125, 3)
    lengths = np.linalg.norm(vectors, axis=2)
    dmin = lengths.min(axis=1)
    images = [vectors[j, lengths[j] - dmin[j] < tolerance_ang] for j in range(len(frac_positions))]
    return dmin, images


def _build_fc3_blocks(fc3, supercell, primitive, cutoff_ang, tolerance_ang, threshold):
    fc3 = np.asarray(fc3, dtype=np.float64)
    sc_cell, sc_frac, _ = _structure_arrays(supercell)
    p_cell, p_frac, _ = _structure_arrays(primitive)
    n_atoms = len(sc_frac)
    if fc3.shape != (n_atoms,) * 3 + (3, 3, 3):
        if fc3.ndim == 6 and fc3.shape[0] != n_atoms and fc3.shape[1:3] == (n_atoms, n_atoms):
            raise ValueError(
                f"fc3 is compact (shape {fc3.shape}); pass the full (N, N, N, 3, 3, 3) array "
                "(produce_fc3(is_compact_fc=False))"
            )
        raise ValueError(f"fc3 must have shape {(n_atoms,) * 3 + (3, 3, 3)}, got {fc3.shape}")
    if not np.all(np.isfinite(fc3)):
        raise ValueError("fc3 contains NaN or inf")

    p2s = np.asarray(primitive.p2s_map, dtype=int)
    s2p = np.asarray(primitive.s2p_map, dtype=int)
    prim_index_of_sc = {int(s): a for a, s in enumerate(p2s)}
    try:
        prim_of = np.array([prim_index_of_sc[int(s)] for s in s2p], dtype=int)
    except KeyError:
        raise ValueError("primitive.s2p_map refers to atoms that are not in p2s_map") from None
    if len(prim_of) != n_atoms or len(p2s) != len(p_frac):
        raise ValueError("primitive.p2s_map / s2p_map do not match the supercell and primitive")

    sc_cart = sc_frac @ sc_cell
    tau_cart = p_frac @ p_cell
    inv_p_cell = np.linalg.inv(p_cell)
    # every supercell atom must sit on a primitive lattice vector from its primitive atom
    offsets = (sc_cart - tau_cart[prim_of]) @ inv_p_cell
    bad = np.linalg.norm((offsets - np.rint(offsets)) @ p_cell, axis=1) > tolerance_ang
    if np.any(bad):
        raise ValueError(
            f"supercell atom {int(np.argmax(bad)) + 1} is not a lattice translation of primitive "
            f"atom {prim_of[int(np.argmax(bad))] + 1}: supercell and primitive do not match"
        )

    def lattice_vector(vector_ang):
        return np.rint(vector_ang @ inv_p_cell) @ p_cell + 0.0  # + 0.0: no negative zeros

    cutoff = np.inf if cutoff_ang is None else float(cutoff_ang)
    # largest |Φ| of each (i, j, k) block, i over the primitive atoms only: (n_prim, N, N)
    block_max = np.abs(fc3[p2s]).max(axis=(3, 4, 5))
    out_rj, out_rk, out_i, out_j, out_k, out_phi = [], [], [], [], [], []
    for a, i_sc in enumerate(p2s):
        dmin, images = _images_from(sc_frac[i_sc], sc_frac, sc_cell, tolerance_ang)
        within = dmin < cutoff
        for j in np.flatnonzero(within):
            ks = np.flatnonzero(within & (block_max[a, j] >= threshold))
            images_j = images[j]
            for k in ks:
                images_k = images[k]
                d_jk = np.linalg.norm(images_j[:, None, :] - images_k[None, :, :], axis=2)
                d_jk_min = d_jk.min()
                if d_jk_min >= cutoff:
                    continue
                tied = np.argwhere(d_jk - d_jk_min < tolerance_ang)
                weight = 1.0 / len(tied)
                for p, q in tied:
                    out_rj.append(lattice_vector(tau_cart[a] + images_j[p] - tau_cart[prim_of[j]]))
                    out_rk.append(lattice_vector(tau_cart[a] + images_k[q] - tau_cart[prim_of[k]]))
                    out_i.append(a)
                    out_j.append(prim_of[j])
                    out_k.append(prim_of[k])
                    out_phi.append(weight * fc3[i_sc, j, k])
    n = len(out_i)
    return ForceConstants3rdBlocks(
        r_j_ang=np.array(out_rj, dtype=np.float64).reshape(n, 3),
        r_k_ang=np.array(out_rk, dtype=np.float64).reshape(n, 3),
        atom_i=np.array(out_i, dtype=int),
        atom_j=np.array(out_j, dtype=int),
        atom_k=np.array(out_k, dtype=int),
        phi_ev_per_ang3=np.array(out_phi, dtype=np.float64).reshape(n, 3, 3, 3),
    )


def _write_fc3_blocks(path, blocks: ForceConstants3rdBlocks) -> None:
    # l slowest, n fastest: the order in which read3fc fills Phi(l,m,n) (it ignores the tern)
    lmn = itertools.product(range(3), repeat=3)
    terns = [f"{l + 1:>2d} {m + 1:>2d} {n + 1:>2d}" for l, m, n in lmn]
    parts = [f"{len(blocks.atom_i):>5}\n"]
    for b in range(len(blocks.atom_i)):
        lines = [
            "",
            f"{b + 1:>5}",
            "%18.10f %18.10f %18.10f" % tuple(blocks.r_j_ang[b].tolist()),
            "%18.10f %18.10f %18.10f" % tuple(blocks.r_k_ang[b].tolist()),
            f"{blocks.atom_i[b] + 1:>6d} {blocks.atom_j[b] + 1:>6d} {blocks.atom_k[b] + 1:>6d}",
        ]
        lines.extend(f"{tern} {value:>22.12e}"
                     for tern, value in zip(terns, blocks.phi_ev_per_ang3[b].ravel().tolist()))
        parts.append("\n".join(lines) + "\n")
    Path(path).write_text("".join(parts))


def write_force_constants_3rd(
    path,
    fc3_ev_per_ang3,
    supercell,
    primitive,
    cutoff_ang: float | None = None,
    tolerance_ang: float = 1e-3,
    threshold_ev_per_ang3: float = 1e-8,
) -> int:
    """Write third-order force constants as ShengBTE's FORCE_CONSTANTS_3RD.

    Layout (formats.md §1): the number of blocks, then per block a blank line, the 1-based block
    index, ``R_j`` and ``R_k`` (Cartesian Å), the 1-based primitive indices ``i j k`` and 27 lines
    ``l m n Φ`` (``l`` slowest, ``n`` fastest) in eV/Å³.  Only primitive-cell atoms are first
    index.  Periodic images are chosen as described in the module docstring: minimum images of
    ``j`` and ``k`` seen from ``i``, then the shortest ``j``–``k`` pairs, the constant being
    divided equally among tied images (weight ``1/multiplicity``).

    Parameters
    ----------
    path : str or Path
        Output file.
    fc3_ev_per_ang3 : array_like, shape (N, N, N, 3, 3, 3)
        **Full** third-order force constants (eV/Å³) in phonopy supercell ordering.
    supercell : phonopy.structure.cells.Supercell
        The supercell fc3 refers to.
    primitive : phonopy.structure.cells.Primitive
        The primitive cell (``p2s_map``, ``s2p_map``); must be the cell written to CONTROL.
    cutoff_ang : float, optional
        Keep a triplet only if the distances i–j, i–k (minimum images) and j–k (between those
        images) are all below this (Å), as thirdorder does.  ``None`` keeps every triplet.
    tolerance_ang : float
        Distances equal within this (Å) are treated as degenerate images.
    threshold_ev_per_ang3 : float
        Triplets whose 27 constants are all below this in absolute value (eV/Å³) are dropped.

    Returns
    -------
    int
        The number of blocks written.

    Raises
    ------
    ValueError
        Compact or misshaped fc3, or supercell/primitive that do not match.
    """
    blocks = _build_fc3_blocks(fc3_ev_per_ang3, supercell, primitive, cutoff_ang, tolerance_ang,
                               threshold_ev_per_ang3)
    _write_fc3_blocks(path, blocks)
    return len(blocks.atom_i)


def read_force_constants_3rd(path) -> ForceConstants3rdBlocks:
    """Read a ShengBTE FORCE_CONSTANTS_3RD file.

    Blank lines are skipped, as Fortran list-directed input does.

    Parameters
    ----------
    path : str or Path
        The file.

    Returns
    -------
    ForceConstants3rdBlocks
        ``(r_j_ang, r_k_ang, atom_i, atom_j, atom_k, phi_ev_per_ang3)``; atom indices 0-based.

    Raises
    ------
    InputFileError
        Naming file and line: bad counts, non-numbers, block indices out of sequence, a
        ``l m n`` tern out of the order ShengBTE assumes, or a truncated file.
    """
    cursor = _LineCursor(path)
    (n_blocks,) = cursor.ints(cursor.next("the number of blocks"), 1, "number of blocks")
    if n_blocks < 0:
        raise cursor.error(f"negative number of blocks {n_blocks}")
    r_j = np.zeros((n_blocks, 3), dtype=np.float64)
    r_k = np.zeros((n_blocks, 3), dtype=np.float64)
    ijk = np.zeros((n_blocks, 3), dtype=int)
    phi_flat = np.zeros((n_blocks, 27), dtype=np.float64)
    lmn = itertools.product(range(3), repeat=3)
    terns = [[str(l + 1), str(m + 1), str(n + 1)] for l, m, n in lmn]
    for b in range(n_blocks):
        what = f"block {b + 1} of {n_blocks}"
        (index,) = cursor.ints(cursor.next(f"the index of {what}"), 1, f"index of {what}")
        if index != b + 1:
            raise cursor.error(f"block index {index} found where {b + 1} was expected")
        r_j[b] = cursor.reals(cursor.next(f"R_j of {what}"), 3, f"R_j of {what}")
        r_k[b] = cursor.reals(cursor.next(f"R_k of {what}"), 3, f"R_k of {what}")
        ijk[b] = cursor.ints(cursor.next(f"the atoms of {what}"), 3, f"atoms i j k of {what}")
        if np.any(ijk[b] < 1):
            raise cursor.error(f"atom indices must be >= 1, found {ijk[b].tolist()}")
        for c, expected in enumerate(terns):
            tokens = cursor.next(f"the constants of {what}")
            if len(tokens) != 4:
                raise cursor.error(f"expected 'l m n value' in {what}, found {len(tokens)} fields")
            if tokens[:3] != expected:  # slow path: "01" etc. are still the right integers
                tern = cursor.ints(tokens, 3, "Cartesian indices l m n")
                if tern != [int(t) for t in expected]:
                    raise cursor.error(
                        f"Cartesian indices {tern} found where {[int(t) for t in expected]} was "
                        "expected (ShengBTE reads the 27 values in order, n fastest)"
                    )
            try:
                value = float(tokens[3])
            except ValueError:
                value = cursor.reals(tokens[3:], 1, "a force constant")[0]
            if not math.isfinite(value):
                raise cursor.error(f"force constant {tokens[3]!r} is not finite")
            phi_flat[b, c] = value
    if cursor.remaining():
        cursor.next("")
        raise cursor.error(f"unexpected content after the {n_blocks} blocks the header declares")
    phi = phi_flat.reshape(n_blocks, 3, 3, 3)
    return ForceConstants3rdBlocks(r_j, r_k, ijk[:, 0] - 1, ijk[:, 1] - 1, ijk[:, 2] - 1, phi)


# ------------------------------------------------------------------------------------------------
# CONTROL
# ------------------------------------------------------------------------------------------------


def _fortran_real(value: float) -> str:
    text = repr(float(value))
    return text


def _fortran_bool(value: bool) -> str:
    return ".true." if value else ".false."


def _temperature_entries(temperatures_k) -> list[tuple[str, float]]:
    temps = np.atleast_1d(np.asarray(temperatures_k, dtype=np.float64))
    if temps.ndim != 1 or temps.size == 0:
        raise ValueError("temperatures_k must be one temperature or a 1-D list of them")
    if not np.all(np.isfinite(temps)) or np.any(temps <= 0):
        raise ValueError(f"temperatures must be finite and > 0 K, got {temps.tolist()}")
    if temps.size == 1:
        return [("T", float(temps[0]))]
    steps = np.diff(temps)
    if np.any(steps <= 0):
        raise ValueError(
            f"temperatures must be strictly increasing for T_min/T_max/T_step, got {temps.tolist()}"
        )
    if not np.allclose(steps, steps[0], rtol=1e-9, atol=1e-6):
        raise ValueError(
            "ShengBTE only takes one T or an evenly spaced range (T_min, T_max, T_step); "
            f"{temps.tolist()} is not evenly spaced: run it once per temperature instead"
        )
    if len(np.unique(np.rint(temps))) != temps.size:
        raise ValueError(
            f"temperatures {temps.tolist()} round to the same integer; ShengBTE names its output "
            "directories T<nint(T)>K, so they would overwrite each other"
        )
    return [("T_min", float(temps[0])), ("T_max", float(temps[-1])), ("T_step", float(steps[0]))]


def _masses_per_element(masses, elements: list[str], symbols: list[str]) -> list[float]:
    if isinstance(masses, Mapping):
        missing = [e for e in elements if e not in masses]
        if missing:
            raise ValueError(f"masses has no entry for {missing}")
        values = [float(masses[e]) for e in elements]
    else:
        values_in = [float(m) for m in masses]
        if len(values_in) == len(elements):
            values = values_in
        elif len(values_in) == len(symbols):
            values = []
            for element in elements:
                per_atom = {m for m, s in zip(values_in, symbols) if s == element}
                if len(per_atom) != 1:
                    raise ValueError(
                        f"atoms of {element} have different masses {sorted(per_atom)}; ShengBTE "
                        "takes one mass per element"
                    )
                values.append(per_atom.pop())
        else:
            raise ValueError(
                f"masses must have one value per element ({len(elements)}) or per atom "
                f"({len(symbols)}), got {len(values_in)}"
            )
    if any(not np.isfinite(m) or m <= 0 for m in values):
        raise ValueError(f"masses must be positive (g/mol), got {values}")
    return values


def write_control(
    path,
    *,
    primitive,
    scell,
    ngrid,
    temperatures_k,
    iterative: bool,
    isotopes: bool,
    nonanalytic: bool = False,
    nthreads: int = 1,
    scalebroad: float = 1.0,
    masses=None,
) -> Path:
    """Write ShengBTE's CONTROL file.

    Four namelists, each closed with ``&end``, using only keys documented by ShengBTE
    (:data:`CONTROL_KEYS`).  Lattice vectors are written in Å with ``lfactor=0.1`` (nm per Å).

    Parameters
    ----------
    path : str or Path
        Output file.
    primitive : phonopy Primitive / PhonopyAtoms or ase.Atoms
        The cell ShengBTE works in; must be the primitive cell the force constants refer to.
    scell : sequence of 3 int
        Supercell multiples of the **fc2** supercell (see :func:`shengbte_scell`).
    ngrid : sequence of 3 int
        q-point grid.
    temperatures_k : float or sequence of float
        One temperature gives ``T=``; an evenly spaced increasing list gives
        ``T_min``/``T_max``/``T_step``; anything else raises ``ValueError``.
    iterative : bool
        ``convergence`` flag: ``True`` solves the BTE iteratively, ``False`` stops at RTA.
    isotopes : bool
        Isotope scattering.
    nonanalytic : bool
        Non-analytic correction (ShengBTE's default is on; the Born charges and dielectric
        tensor are not written, so leave it off unless CONTROL is completed by hand).
    nthreads : int
        OpenMP threads per MPI rank; written only when not 1, because ShengBTE builds whose
        ``&flags`` lacks ``nthreads`` (e.g. 1.1.x) abort on unknown namelist keys.
    scalebroad : float
        Scale factor of the Gaussian smearing.
    masses : mapping or sequence, optional
        g/mol, per element (mapping or list in ``elements`` order) or per atom.  ``None`` lets
        ShengBTE compute masses and isotope g-factors from the element names.  When given,
        ``autoisotopes=.false.`` is written (otherwise ShengBTE overwrites them); ShengBTE then
        has no g-factors, so ``isotopes=True`` with explicit masses is refused.

    Returns
    -------
    Path
        The file written.
    """
    cell_ang, frac, symbols = _structure_arrays(primitive)
    scell = _three_positive_ints(scell, "scell")
    ngrid = _three_positive_ints(ngrid, "ngrid")
    temperature_entries = _temperature_entries(temperatures_k)
    if not (np.isfinite(scalebroad) and scalebroad > 0):
        raise ValueError(f"scalebroad must be > 0, got {scalebroad}")
    if int(nthreads) != nthreads or int(nthreads) == 0:
        raise ValueError(f"nthreads must be a non-zero integer (< 0: all), got {nthreads}")
    elements = list(dict.fromkeys(symbols))
    for element in elements:
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]{0,2}", element):
            raise ValueError(f"element name {element!r} does not fit ShengBTE's character(len=3)")
    types = [elements.index(s) + 1 for s in symbols]
    mass_values = None if masses is None else _masses_per_element(masses, elements, symbols)
    if mass_values is not None and isotopes:
        raise ValueError(
            "explicit masses need autoisotopes=.false., which leaves ShengBTE without isotope "
            "g-factors; use masses=None (automatic) or isotopes=False"
        )

    def vector(values) -> str:  # (no "-0.000000000000" for round-off noise)
        return " ".join(f"{(0.0 if abs(v) < 5e-13 else v):20.12f}" for v in values)

    lines = [
        "&allocations",
        f"  nelements={len(elements)}",
        f"  natoms={len(symbols)}",
        "  ngrid(:)=%d %d %d" % ngrid,
        "&end",
        "&crystal",
        f"  lfactor={_fortran_real(LFACTOR_NM_PER_ANG)}",
    ]
    lines += [f"  lattvec(:,{c + 1})={vector(cell_ang[c])}" for c in range(3)]
    lines.append("  elements=" + " ".join(f'"{e}"' for e in elements))
    lines.append("  types=" + " ".join(str(t) for t in types))
    lines += [f"  positions(:,{n + 1})={vector(frac[n])}" for n in range(len(symbols))]
    if mass_values is not None:
        lines.append("  masses=" + " ".join(_fortran_real(m) for m in mass_values))
    lines += ["  scell(:)=%d %d %d" % scell, "&end", "&parameters"]
    lines += [f"  {key}={_fortran_real(value)}" for key, value in temperature_entries]
    lines += [f"  scalebroad={_fortran_real(scalebroad)}", "&end", "&flags"]
    lines += [
        f"  nonanalytic={_fortran_bool(nonanalytic)}",
        f"  convergence={_fortran_bool(iterative)}",
        f"  isotopes={_fortran_bool(isotopes)}",
    ]
    if mass_values is not None:
        lines.append("  autoisotopes=.false.")
    if int(nthreads) != 1:
        lines.append(f"  nthreads={int(nthreads)}")
    lines.append("&end")
    path = Path(path)
    path.write_text("\n".join(lines) + "\n")
    return path


# ------------------------------------------------------------------------------------------------
# Thermal conductivity output
# ------------------------------------------------------------------------------------------------

_T_DIR = re.compile(r"T(\d+)K")


def _numbers_of_line(path: Path, line_no: int, line: str) -> list[float]:
    try:
        return [_parse_fortran_real(t) for t in line.split()]
    except ValueError as exc:
        raise InputFileError(path, f"unreadable number ({exc})", line=line_no) from None


def _tensor_from_fortran(values) -> np.ndarray:
    # Fortran writes the 3x3 array column by column
    return np.asarray(values, dtype=np.float64).reshape(3, 3, order="F")


def _read_kappa_vs_t_file(path: Path, iterative: bool):
    allowed = (11, 10) if iterative else (10,)
    temps, kappas = [], []
    for line_no, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        values = _numbers_of_line(path, line_no, line)
        if len(values) not in allowed:
            layout = "T, 9 components and the iteration count" if iterative else "T and 9 components"
            raise InputFileError(path, f"expected {layout}, found {len(values)} fields",
                                 line=line_no)
        temps.append(values[0])
        kappas.append(_tensor_from_fortran(values[1:10]))
    if not temps:
        raise InputFileError(path, "no data rows (did ShengBTE finish?)")
    return np.array(temps, dtype=np.float64), np.array(kappas, dtype=np.float64)


def _read_kappa_tensor_file(path: Path, iterative: bool) -> np.ndarray:
    rows = []
    for line_no, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        values = _numbers_of_line(path, line_no, line)
        if len(values) != 10 or values[0] != int(values[0]):
            raise InputFileError(
                path, f"expected an iteration number and 9 components, found {len(values)} fields",
                line=line_no,
            )
        rows.append((int(values[0]), values[1:10]))
    if not rows:
        raise InputFileError(path, "no data rows (did ShengBTE finish?)")
    if iterative:
        if rows[-1][0] == 0:
            raise InputFileError(
                path, "holds only iteration 0 (the RTA result): was convergence=.false.?"
            )
        return _tensor_from_fortran(rows[-1][1])
    if rows[0][0] != 0:
        raise InputFileError(path, f"first row is iteration {rows[0][0]}, expected 0 (RTA)", line=1)
    return _tensor_from_fortran(rows[0][1])


def _temperature_from_control(control: Path) -> float:
    text = control.read_text()
    match = re.search(r"&parameters(.*?)&end", text, flags=re.IGNORECASE | re.DOTALL)
    block = match.group(1) if match else ""
    found = re.search(r"(?<![\w])T\s*=\s*([-+0-9.eEdD]+)", block)
    if not found:
        raise InputFileError(control, "no single temperature 'T=' in &parameters")
    try:
        return _parse_fortran_real(found.group(1))
    except ValueError as exc:
        raise InputFileError(control, f"unreadable temperature ({exc})") from None


def read_kappa_vs_t(run_dir, iterative: bool) -> tuple[np.ndarray, np.ndarray]:
    """Read ShengBTE's thermal-conductivity tensor versus temperature.

    Looked for, in order:

    1. ``BTE.KappaTensorVsT_CONV`` (``iterative``) or ``BTE.KappaTensorVsT_RTA`` in ``run_dir``:
       rows ``(F7.1, 9E14.5)``, CONV with a trailing iteration count ``I6``;
    2. ``T<int>K/BTE.kappa_tensor`` directories: rows ``(I9, 9E20.10)`` per iteration, the
       last one converged (``iterative``) or iteration 0 (RTA); T from the directory name;
    3. the 1.1.x layout, ``BTE.kappa_tensor`` in ``run_dir``, with T from ``CONTROL``'s ``T=``.

    The 9 components are in Fortran (column-major) order.  Numbers may be Fortran reals such as
    ``0.12345E+03`` or ``0.12345+103``.

    Parameters
    ----------
    run_dir : str or Path
        The directory ShengBTE ran in.
    iterative : bool
        Converged iterative κ (``True``) or RTA κ (``False``).

    Returns
    -------
    temperatures_k : ndarray, shape (n,)
    kappa_w_per_mk : ndarray, shape (n, 3, 3)

    Raises
    ------
    InputFileError
        Naming the directory and what was looked for when nothing is found, or naming file and
        line for malformed content.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputFileError(run_dir, "ShengBTE run directory does not exist")
    vs_t_name = "BTE.KappaTensorVsT_CONV" if iterative else "BTE.KappaTensorVsT_RTA"
    vs_t = run_dir / vs_t_name
    if vs_t.is_file():
        return _read_kappa_vs_t_file(vs_t, iterative)

    t_dirs = []
    for entry in run_dir.iterdir():
        match = _T_DIR.fullmatch(entry.name)
        if match and (entry / "BTE.kappa_tensor").is_file():
            t_dirs.append((int(match.group(1)), entry / "BTE.kappa_tensor"))
    if t_dirs:
        t_dirs.sort()
        temps = np.array([t for t, _ in t_dirs], dtype=np.float64)
        kappas = np.array([_read_kappa_tensor_file(p, iterative) for _, p in t_dirs])
        return temps, kappas

    legacy = run_dir / "BTE.kappa_tensor"
    if legacy.is_file():
        control = run_dir / CONTROL_FILENAME
        if not control.is_file():
            raise InputFileError(
                run_dir,
                "found BTE.kappa_tensor (ShengBTE 1.1.x layout) but no CONTROL to take T from",
            )
        temperature = _temperature_from_control(control)
        return (np.array([temperature], dtype=np.float64),
                _read_kappa_tensor_file(legacy, iterative)[None])

    other = "BTE.KappaTensorVsT_RTA" if iterative else "BTE.KappaTensorVsT_CONV"
    hint = f" ({other} exists: was 'iterative' set wrongly?)" if (run_dir / other).is_file() else ""
    raise InputFileError(
        run_dir,
        f"no ShengBTE thermal conductivity found: looked for {vs_t_name}, "
        f"T<int>K/BTE.kappa_tensor and BTE.kappa_tensor{hint}",
    )


# ------------------------------------------------------------------------------------------------
# Running ShengBTE
# ------------------------------------------------------------------------------------------------


def _log_tail(log_path: Path, n_lines: int = 15) -> str:
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n_lines:])


def run_shengbte(executable, workdir, mpi_prefix=None, log_path=None) -> Path:
    """Run ShengBTE in ``workdir``, streaming stdout and stderr to a log file.

    Parameters
    ----------
    executable : str or Path
        The ShengBTE binary (a path or a name on ``PATH``).
    workdir : str or Path
        Directory holding CONTROL, FORCE_CONSTANTS_2ND (or espresso.ifc2) and FORCE_CONSTANTS_3RD.
    mpi_prefix : str or sequence of str, optional
        Launcher put in front, e.g. ``"mpirun -n 4"`` or ``["srun"]``.
    log_path : str or Path, optional
        Log file; default ``workdir/ShengBTE.log``.

    Returns
    -------
    Path
        The log file.

    Raises
    ------
    ShengBTERunError
        If the program cannot be started, exits non-zero, or prints an ``Error:`` line (ShengBTE
        reports input errors that way and may still exit 0).  The message names the log.
    """
    workdir = Path(workdir)
    if not workdir.is_dir():
        raise ShengBTERunError(f"{workdir}: ShengBTE working directory does not exist")
    log_path = Path(log_path) if log_path is not None else workdir / "ShengBTE.log"
    if mpi_prefix is None:
        prefix: list[str] = []
    elif isinstance(mpi_prefix, str):
        prefix = shlex.split(mpi_prefix)
    else:
        prefix = [str(p) for p in mpi_prefix]
    command = prefix + [os.fspath(executable)]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        log.write(f"# command: {shlex.join(command)}\n# workdir: {workdir}\n")
        log.flush()
        try:
            process = subprocess.Popen(command, cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL)
        except OSError as exc:
            raise ShengBTERunError(
                f"{log_path}: could not start {shlex.join(command)}: {exc}"
            ) from None
        return_code = process.wait()
    if return_code != 0:
        raise ShengBTERunError(
            f"{log_path}: ShengBTE ({shlex.join(command)}) exited with code {return_code}; "
            f"last lines:\n{_log_tail(log_path)}"
        )
    errors = [line for line in log_path.read_text(errors="replace").splitlines()
              if line.strip().startswith("Error:")]
    if errors:
        raise ShengBTERunError(f"{log_path}: ShengBTE reported an error: {errors[0].strip()}")
    return log_path
