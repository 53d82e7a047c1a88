"""Modified Behler-Parrinello (mBP) descriptors ("G-vectors") as PANNA 2 defines them, with derivatives.

Lengths are in Å throughout; every array is float64.

Definitions (atom ``i``, neighbours ``j``, ``k`` over all periodic images, an atom's own images included)
----------------------------------------------------------------------------------------------------
* Cutoff: ``f_c(R; Rc) = 0.5 (1 + cos(pi R / Rc))`` for ``R < Rc``, else 0.
* Radial, one block of ``RsN_rad`` values per neighbour species::

      G_rad[s, k] = sum_{j of species s} exp(-eta_rad (R_ij - R_s^k)^2) f_c(R_ij; Rc_rad)
      R_s^k = Rs0_rad + k * Rsst_rad,  Rsst_rad = (Rc_rad - Rs0_rad) / RsN_rad by default

* Angular, one block of ``RsN_ang x ThetasN`` values (theta fastest) per unordered species pair
  ``(a, b)``, ``a <= b`` in ``params.species`` order::

      G_ang[(a,b), p, m] = sum_{pairs} 2 N_m q_m(theta_ijk)^zeta exp(-eta_ang ((R_ij + R_ik)/2 - R_s^p)^2)
                                       f_c(R_ij; Rc_ang) f_c(R_ik; Rc_ang)
      q_m = (1 + cos(theta_ijk) cos(theta_s^m) + sqrt(1 - cos^2(theta_ijk) + epsilon sin^2(theta_s^m))
             sin(theta_s^m)) / 2
      N_m = (2 / (1 + sqrt(1 + epsilon sin^2(theta_s^m))))^zeta
      theta_s^m = (m + 1/2) pi / ThetasN,   R_s^p = Rs0_ang + p * Rsst_ang

  The sum runs over **unordered** pairs of distinct neighbours {j, k} of ``i`` (distinct as image
  vectors, so ``j`` and an image of ``j`` form a pair) whose species are ``{a, b}``.  This is PANNA's
  loop: for ``a < b`` it visits each (j in a, k in b) once with prefactor 1; for ``a == b`` it visits
  both orders (j, k) and (k, j) with prefactor 0.5.  Equivalently, it is the sum over ordered pairs
  without the leading factor 2.  There is no cutoff on ``R_jk``.  ``epsilon`` is 1e-3 in PANNA 2
  (the default here) and 1e-2 in PANNA 1.x.

Layout: ``[radial block per species] + [angular block per species pair]``; two species with
16 radial and 4 x 8 angular bins give 2*16 + 3*32 = 128 values per atom.

Derivatives
-----------
``dG_i/dR_k`` (Cartesian positions of every atom ``k``) is stored sparsely: one row per (i, k) with
``k == i`` or ``k`` (any of its images) within ``max(Rc_rad, Rc_ang)`` of ``i``.  Contributions of
several images of ``k`` are summed into one row.  Rows are sorted by ``i``, then ``k``; each atom has its
diagonal row.  Translation invariance makes the diagonal row minus the sum of the others, which is how
it is computed.

API
---
``MBPParameters(species, eta_rad, Rc_rad, Rs0_rad, RsN_rad, eta_ang, Rc_ang, Rs0_ang, RsN_ang, zeta,
ThetasN, epsilon=1e-3, Rsst_rad=None, Rsst_ang=None)``
    Frozen parameter set with PANNA's key names; ``MBPParameters.from_dict(mapping, species=None)``,
    ``.to_dict()``, ``MBPParameters.seed_ges2()``, ``.g_size``, ``.radial_size``, ``.angular_size``,
    ``.radial_centres_ang``, ``.angular_centres_ang``, ``.theta_centres``, ``.cutoff_ang``,
    ``.angular_block(a, b)``, ``.feature_labels()`` and ``.species_indices(symbols)``.  Constructor
    and ``from_dict`` raise ValueError for unknown/missing keys and invalid values.

``compute_descriptors(positions_ang, cell_ang, symbols, params, pbc=(True, True, True),
derivatives=True) -> Descriptors``
    ``cell_ang`` holds the lattice vectors as rows; it is ignored (and may be None) when no direction
    is periodic.  Directions with ``pbc`` False are open.  Neighbours come from matscipy's C
    neighbour list.  ValueError for a symbol outside ``params.species`` (naming it and the allowed
    species), bad shapes, a singular cell, or overlapping atoms.

``descriptors_for_atoms(atoms, params, derivatives=True) -> Descriptors``
    The same for an ``ase.Atoms`` (positions, cell and pbc taken from it).

``Descriptors``
    ``G`` (n_atoms, g_size); ``species_index`` (n_atoms,) int64 into ``params.species``;
    ``dG_pairs`` (n_pairs, 2) int64 rows ``[i, k]`` and ``dG_values`` (n_pairs, g_size, 3) with
    ``dG_values[p, g, c] = dG[i, g] / dR[k, c]`` (both None when computed without derivatives);
    ``dense_dG()`` -> (n_atoms, g_size, n_atoms, 3); ``forces_from_dE_dG(dE_dG)`` -> (n_atoms, 3)
    forces ``F_k = -sum_i sum_g dE/dG[i, g] dG[i, g]/dR_k`` (eV/Å when E is in eV).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Mapping, Sequence

import numpy as np

__all__ = ["MBPParameters", "Descriptors", "compute_descriptors", "descriptors_for_atoms"]

#: Distances below this (Å) between two distinct atoms/images are rejected as overlapping atoms.
MIN_DISTANCE_ANG = 1e-8

#: Neighbour pairs (j, k) handled per vectorised batch in the angular part; bounds temporary memory
#: to roughly ``_TRIPLET_CHUNK * RsN_ang * ThetasN * 3 * 8 bytes`` per temporary array.
_TRIPLET_CHUNK = 32768


# ------------------------------------------------------------------------------------------------
# Parameters
# ------------------------------------------------------------------------------------------------
_INT_KEYS = ("RsN_rad", "RsN_ang", "ThetasN")
_REQUIRED_KEYS = ("eta_rad", "Rc_rad", "Rs0_rad", "RsN_rad",
                  "eta_ang", "Rc_ang", "Rs0_ang", "RsN_ang", "zeta", "ThetasN")
_OPTIONAL_KEYS = ("epsilon", "Rsst_rad", "Rsst_ang")


@dataclass(frozen=True)
class MBPParameters:
    """One mBP descriptor set.  Lengths in Å, ``eta_*`` in 1/Å², ``zeta`` and ``epsilon`` dimensionless.

    Key names follow PANNA's ``[GVECT_PARAMETERS]`` section.  ``Rsst_rad``/``Rsst_ang`` override the
    default centre steps ``(Rc - Rs0)/RsN``.  ``species`` fixes the block order of the vector.
    """

    species: tuple[str, ...]
    eta_rad: float
    Rc_rad: float
    Rs0_rad: float
    RsN_rad: int
    eta_ang: float
    Rc_ang: float
    Rs0_ang: float
    RsN_ang: int
    zeta: float
    ThetasN: int
    epsilon: float = 1e-3
    Rsst_rad: float | None = None
    Rsst_ang: float | None = None

    def __post_init__(self):
        species = self.species
        if isinstance(species, str):
            species = tuple(s for s in species.replace(",", " ").split())
        species = tuple(species)
        if not species:
            raise ValueError("MBPParameters: species must name at least one element")
        if not all(isinstance(s, str) and s for s in species):
            raise ValueError(f"MBPParameters: species must be non-empty strings, got {species!r}")
        if len(set(species)) != len(species):
            raise ValueError(f"MBPParameters: species {species!r} contains duplicates")
        object.__setattr__(self, "species", species)

        for name in _INT_KEYS:
            value = getattr(self, name)
            if isinstance(value, bool) or not float(value).is_integer() or int(value) < 1:
                raise ValueError(f"MBPParameters: {name} must be a positive integer, got {value!r}")
            object.__setattr__(self, name, int(value))
        for name in ("eta_rad", "Rc_rad", "Rs0_rad", "eta_ang", "Rc_ang", "Rs0_ang", "zeta", "epsilon"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise ValueError(f"MBPParameters: {name} must be a number, got {value!r}")
            value = float(value)
            if not math.isfinite(value):
                raise ValueError(f"MBPParameters: {name} must be finite, got {value!r}")
            object.__setattr__(self, name, value)
        for name in ("Rsst_rad", "Rsst_ang"):
            value = getattr(self, name)
            if value is not None:
                value = float(value)
                if not math.isfinite(value):
                    raise ValueError(f"MBPParameters: {name} must be finite, got {value!r}")
                object.__setattr__(self, name, value)

        for name in ("Rc_rad", "Rc_ang", "zeta"):
            if getattr(self, name) <= 0.0:
                raise ValueError(f"MBPParameters: {name} must be > 0, got {getattr(self, name)!r}")
        for name in ("eta_rad", "eta_ang", "epsilon"):
            if getattr(self, name) < 0.0:
                raise ValueError(f"MBPParameters: {name} must be >= 0, got {getattr(self, name)!r}")

    # -- construction ----------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, mapping: Mapping, species: Sequence[str] | str | None = None) -> "MBPParameters":
        """Build from a mapping with PANNA key names (e.g. a parsed ``[GVECT_PARAMETERS]`` section).

        ``species`` may come from the mapping (key ``species``) or the argument, not both.
        Unknown or missing keys raise ValueError naming them.
        """
        data = dict(mapping)
        if "species" in data:
            if species is not None:
                raise ValueError("MBPParameters.from_dict: species given both in the mapping and as argument")
            species = data.pop("species")
        if species is None:
            raise ValueError("MBPParameters.from_dict: no species (give a 'species' key or the species argument)")
        allowed = set(_REQUIRED_KEYS) | set(_OPTIONAL_KEYS)
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise ValueError(f"MBPParameters.from_dict: unknown key(s) {unknown}; allowed keys are "
                             f"{sorted(allowed | {'species'})}")
        missing = [k for k in _REQUIRED_KEYS if k not in data]
        if missing:
            raise ValueError(f"MBPParameters.from_dict: missing key(s) {missing}")
        return cls(species=species, **data)

    def to_dict(self) -> dict:
        """Plain dict (species as a list); ``from_dict(to_dict())`` round-trips."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "species":
                value = list(value)
            if value is None:
                continue
            out[f.name] = value
        return out

    @classmethod
    def seed_ges2(cls) -> "MBPParameters":
        """The seed thesis' GeS2 set: 2*16 radial + 3*(4*8) angular = 128 values per atom."""
        return cls(species=("Ge", "S"),
                   eta_rad=16.0, Rc_rad=4.6, Rs0_rad=0.5, RsN_rad=16,
                   eta_ang=6.0, Rc_ang=3.1, Rs0_ang=0.5, RsN_ang=4, zeta=50.0, ThetasN=8)

    # -- derived quantities ----------------------------------------------------------------------
    @property
    def n_species(self) -> int:
        return len(self.species)

    @property
    def n_species_pairs(self) -> int:
        return self.n_species * (self.n_species + 1) // 2

    @property
    def radial_size(self) -> int:
        """Values in all radial blocks (``n_species * RsN_rad``)."""
        return self.n_species * self.RsN_rad

    @property
    def angular_block_size(self) -> int:
        return self.RsN_ang * self.ThetasN

    @property
    def angular_size(self) -> int:
        """Values in all angular blocks."""
        return self.n_species_pairs * self.angular_block_size

    @property
    def g_size(self) -> int:
        return self.radial_size + self.angular_size

    @property
    def cutoff_ang(self) -> float:
        """Largest cutoff: neighbours farther than this never contribute."""
        return max(self.Rc_rad, self.Rc_ang)

    @property
    def radial_centres_ang(self) -> np.ndarray:
        step = (self.Rc_rad - self.Rs0_rad) / self.RsN_rad if self.Rsst_rad is None else self.Rsst_rad
        return self.Rs0_rad + np.arange(self.RsN_rad, dtype=np.float64) * step

    @property
    def angular_centres_ang(self) -> np.ndarray:
        step = (self.Rc_ang - self.Rs0_ang) / self.RsN_ang if self.Rsst_ang is None else self.Rsst_ang
        return self.Rs0_ang + np.arange(self.RsN_ang, dtype=np.float64) * step

    @property
    def theta_centres(self) -> np.ndarray:
        """Angular centres theta_s^m = (m + 1/2) pi / ThetasN (radians)."""
        return (np.arange(self.ThetasN, dtype=np.float64) + 0.5) * np.pi / self.ThetasN

    def angular_block(self, a: int, b: int) -> int:
        """Index of the angular block of species indices (a, b), symmetric in a and b."""
        a, b = min(a, b), max(a, b)
        if a < 0 or b >= self.n_species:
            raise IndexError(f"species index out of range 0..{self.n_species - 1}: ({a}, {b})")
        return a * self.n_species - a * (a - 1) // 2 + (b - a)

    def feature_labels(self) -> list[str]:
        """Human-readable label of each of the ``g_size`` columns."""
        labels = [f"rad[{s}][Rs{k}]" for s in self.species for k in range(self.RsN_rad)]
        for a in range(self.n_species):
            for b in range(a, self.n_species):
                labels += [f"ang[{self.species[a]}-{self.species[b]}][Rs{p}][th{m}]"
                           for p in range(self.RsN_ang) for m in range(self.ThetasN)]
        return labels

    def species_indices(self, symbols: Sequence[str]) -> np.ndarray:
        """Index of each symbol in ``species``; ValueError for a symbol not in the set."""
        lookup = {s: n for n, s in enumerate(self.species)}
        out = np.empty(len(symbols), dtype=np.int64)
        for n, sym in enumerate(symbols):
            try:
                out[n] = lookup[str(sym)]
            except KeyError:
                raise ValueError(f"atom {n} has symbol {str(sym)!r}, which is not among the descriptor "
                                 f"species {list(self.species)}") from None
        return out


# ------------------------------------------------------------------------------------------------
# Result
# ------------------------------------------------------------------------------------------------
@dataclass
class Descriptors:
    """G-vectors of one structure and, optionally, their sparse derivatives (see the module docstring)."""

    G: np.ndarray
    species_index: np.ndarray
    params: MBPParameters
    dG_pairs: np.ndarray | None = None
    dG_values: np.ndarray | None = None

    @property
    def n_atoms(self) -> int:
        return self.G.shape[0]

    @property
    def g_size(self) -> int:
        return self.G.shape[1]

    @property
    def has_derivatives(self) -> bool:
        return self.dG_values is not None

    def _require_derivatives(self):
        if not self.has_derivatives:
            raise ValueError("descriptors were computed without derivatives (derivatives=False)")

    def dense_dG(self) -> np.ndarray:
        """``dG[i, g, k, c] = dG_ig / dR_kc`` as a dense (n_atoms, g_size, n_atoms, 3) array.

        Memory grows as n_atoms²; meant for tests and small cells.
        """
        self._require_derivatives()
        dense = np.zeros((self.n_atoms, self.g_size, self.n_atoms, 3), dtype=np.float64)
        dense[self.dG_pairs[:, 0], :, self.dG_pairs[:, 1], :] = self.dG_values
        return dense

    def forces_from_dE_dG(self, dE_dG) -> np.ndarray:
        """Forces ``F_k = -sum_i sum_g dE/dG_ig dG_ig/dR_k``, shape (n_atoms, 3).

        ``dE_dG`` has the shape of ``G``; forces come in (energy unit)/Å.
        """
        self._require_derivatives()
        dE_dG = np.asarray(dE_dG, dtype=np.float64)
        if dE_dG.shape != self.G.shape:
            raise ValueError(f"dE_dG has shape {dE_dG.shape}, expected {self.G.shape}")
        per_pair = np.einsum("pg,pgc->pc", dE_dG[self.dG_pairs[:, 0]], self.dG_values)
        forces = np.zeros((self.n_atoms, 3), dtype=np.float64)
        np.add.at(forces, self.dG_pairs[:, 1], per_pair)
        return -forces


# ------------------------------------------------------------------------------------------------
# Computation
# ------------------------------------------------------------------------------------------------
def descriptors_for_atoms(atoms, params: MBPParameters, derivatives: bool = True) -> Descriptors:
    """Descriptors of an ``ase.Atoms`` (Cartesian positions, cell and pbc taken from it)."""
    return compute_descriptors(atoms.get_positions(), np.asarray(atoms.cell[:], dtype=np.float64),
                               atoms.get_chemical_symbols(), params, pbc=tuple(bool(p) for p in atoms.pbc),
                               derivatives=derivatives)


def compute_descriptors(positions_ang, cell_ang, symbols: Sequence[str], params: MBPParameters,
                        pbc=(True, True, True), derivatives: bool = True) -> Descriptors:
    """mBP G-vectors (and their derivatives) of every atom of one structure.

    positions_ang: (n_atoms, 3) Cartesian positions, Å.
    cell_ang: (3, 3) lattice vectors as rows, Å; may be None when no direction is periodic.
    symbols: element symbol per atom, each one of ``params.species``.
    pbc: bool or three bools; open directions have no images.
    derivatives: also compute the sparse dG/dR.
    """
    if not isinstance(params, MBPParameters):
        raise TypeError(f"params must be MBPParameters, got {type(params).__name__}")
    positions = np.array(positions_ang, dtype=np.float64)
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise ValueError(f"positions_ang must have shape (n_atoms, 3), got {positions.shape}")
    if not np.all(np.isfinite(positions)):
        raise ValueError("positions_ang contains non-finite values")
    n_atoms = positions.shape[0]
    symbols = list(symbols)
    if len(symbols) != n_atoms:
        raise ValueError(f"{len(symbols)} symbols for {n_atoms} positions")
    species_index = params.species_indices(symbols)

    pbc = _normalise_pbc(pbc)
    cell = _checked_cell(cell_ang, pbc)

    gs = params.g_size
    G = np.zeros(n_atoms * gs, dtype=np.float64)
    if n_atoms == 0:
        empty_pairs = np.zeros((0, 2), dtype=np.int64)
        return Descriptors(G.reshape(0, gs), species_index, params,
                           empty_pairs if derivatives else None,
                           np.zeros((0, gs, 3)) if derivatives else None)

    i_nb, j_nb, d_nb, D_nb = _neighbour_list(positions, cell, pbc, params.cutoff_ang)
    if d_nb.size and d_nb.min() < MIN_DISTANCE_ANG:
        n = int(np.argmin(d_nb))
        raise ValueError(f"atoms {i_nb[n]} and {j_nb[n]} (or an image of it) overlap: distance "
                         f"{d_nb[n]:.3g} Å")

    # Sparse derivative rows: (i, i) for every atom plus (i, j) for every neighbour entry.
    if derivatives:
        keys = np.concatenate([np.arange(n_atoms, dtype=np.int64) * (n_atoms + 1),
                               i_nb * n_atoms + j_nb])
        pair_keys, inverse = np.unique(keys, return_inverse=True)
        inverse = inverse.reshape(-1)
        diag_rows = inverse[:n_atoms]
        entry_rows = inverse[n_atoms:]
        n_pairs = pair_keys.size
        dG = np.zeros(n_pairs * gs * 3, dtype=np.float64)
    else:
        entry_rows = None

    unit_nb = D_nb / d_nb[:, None] if d_nb.size else D_nb
    _radial(params, species_index, i_nb, j_nb, d_nb, unit_nb, entry_rows, G, dG if derivatives else None)
    _angular(params, species_index, i_nb, j_nb, d_nb, unit_nb, entry_rows, G, dG if derivatives else None)

    G = G.reshape(n_atoms, gs)
    if not derivatives:
        return Descriptors(G, species_index, params)

    dG = dG.reshape(n_pairs, gs, 3)
    pairs = np.stack([pair_keys // n_atoms, pair_keys % n_atoms], axis=1).astype(np.int64)
    # Translation invariance: the diagonal row is minus the sum of the neighbour rows.  The rows are
    # sorted by i and the accumulated diagonal row holds only self-image contributions, which the
    # row sum includes, so subtracting the full row sum leaves exactly -sum_{k != i}.
    row_start = np.searchsorted(pairs[:, 0], np.arange(n_atoms))
    dG[diag_rows] -= np.add.reduceat(dG, row_start, axis=0)
    return Descriptors(G, species_index, params, pairs, dG)


def _normalise_pbc(pbc) -> tuple[bool, bool, bool]:
    if isinstance(pbc, (bool, np.bool_)):
        return (bool(pbc),) * 3
    pbc = tuple(bool(p) for p in pbc)
    if len(pbc) != 3:
        raise ValueError(f"pbc must be a bool or three bools, got {pbc!r}")
    return pbc


def _checked_cell(cell_ang, pbc) -> np.ndarray | None:
    if not any(pbc):
        return None
    if cell_ang is None:
        raise ValueError(f"cell_ang is required when pbc={pbc}")
    cell = np.array(cell_ang, dtype=np.float64)
    if cell.shape != (3, 3):
        raise ValueError(f"cell_ang must have shape (3, 3) (lattice vectors as rows), got {cell.shape}")
    if not np.all(np.isfinite(cell)):
        raise ValueError("cell_ang contains non-finite values")
    volume = abs(np.linalg.det(cell))
    if volume < 1e-6 * max(np.linalg.norm(cell, axis=1).prod(), 1e-300):
        raise ValueError(f"cell_ang is singular (volume {volume:.3g} Å³); periodic directions need "
                         "three independent lattice vectors")
    return cell


def _neighbour_list(positions, cell, pbc, cutoff):
    """All (i, j, image) with 0 < |D| < cutoff, sorted by i; D = R_j + shift - R_i."""
    from matscipy.neighbours import neighbour_list

    if cell is None:
        # Open boundaries: matscipy still bins atoms in a box; give it one around the atoms.
        lower = positions.min(axis=0)
        span = positions.max(axis=0) - lower
        box = np.diag(span + 1.0)
        i, j, d, D = neighbour_list("ijdD", positions=positions, cell=box, pbc=[False] * 3,
                                    cutoff=cutoff, cell_origin=lower - 0.5)
    else:
        i, j, d, D = neighbour_list("ijdD", positions=positions, cell=cell, pbc=list(pbc), cutoff=cutoff)
    i = np.asarray(i, dtype=np.int64)
    j = np.asarray(j, dtype=np.int64)
    d = np.asarray(d, dtype=np.float64)
    D = np.asarray(D, dtype=np.float64)
    keep = d < cutoff
    if not keep.all():
        i, j, d, D = i[keep], j[keep], d[keep], D[keep]
    if i.size > 1 and np.any(np.diff(i) < 0):
        order = np.argsort(i, kind="stable")
        i, j, d, D = i[order], j[order], d[order], D[order]
    return i, j, d, D


def _cutoff_and_derivative(r, rc):
    arg = np.pi * r / rc
    return 0.5 * (1.0 + np.cos(arg)), -0.5 * np.pi / rc * np.sin(arg)


#: ``np.add.at`` got its fast path in numpy 1.25; older versions go through a full-size bincount.
_FAST_ADD_AT = tuple(int(x) for x in np.__version__.split(".")[:2]) >= (1, 25)


def _scatter_add(out, index, weights):
    """out[index] += weights for a flat ``out`` (repeated indices accumulate)."""
    if not index.size:
        return
    if _FAST_ADD_AT:
        np.add.at(out, index.ravel(), weights.ravel())
    else:
        out += np.bincount(index.ravel(), weights=weights.ravel(), minlength=out.size)


def _radial(params, species_index, i_nb, j_nb, d_nb, unit_nb, entry_rows, G, dG):
    gs = params.g_size
    K = params.RsN_rad
    sel = np.flatnonzero(d_nb < params.Rc_rad)
    if sel.size == 0:
        return
    r = d_nb[sel]
    x = r[:, None] - params.radial_centres_ang[None, :]                     # (E, K)
    gauss = np.exp(-params.eta_rad * x * x)
    fc, dfc = _cutoff_and_derivative(r, params.Rc_rad)
    cols = species_index[j_nb[sel]][:, None] * K + np.arange(K)[None, :]    # (E, K)
    _scatter_add(G, i_nb[sel][:, None] * gs + cols, gauss * fc[:, None])
    if dG is None:
        return
    dg_dr = gauss * (dfc[:, None] - 2.0 * params.eta_rad * x * fc[:, None])
    # dG_i/dR_j (image vector R_j + shift - R_i): dg/dr * unit vector.
    values = dg_dr[:, :, None] * unit_nb[sel][:, None, :]                    # (E, K, 3)
    index = ((entry_rows[sel][:, None] * gs + cols)[:, :, None] * 3 + np.arange(3)[None, None, :])
    _scatter_add(dG, index, values)


def _angular(params, species_index, i_nb, j_nb, d_nb, unit_nb, entry_rows, G, dG):
    gs = params.g_size
    sel = np.flatnonzero(d_nb < params.Rc_ang)
    if sel.size < 2:
        return
    centre = i_nb[sel]                      # sorted by centre atom
    n_sel = sel.size
    # Unordered pairs (e1 < e2) of entries sharing a centre atom.
    group_end = np.searchsorted(centre, centre, side="right")
    n_after = group_end - np.arange(n_sel) - 1
    n_triplets = int(n_after.sum())
    if n_triplets == 0:
        return
    starts = np.cumsum(n_after) - n_after

    cos_s = np.cos(params.theta_centres)
    sin_s = np.sin(params.theta_centres)
    eps_sin2 = params.epsilon * sin_s ** 2
    denom = 1.0 + np.sqrt(1.0 + eps_sin2)             # (M,): N_m q^zeta = ((1 + c cos_s + root sin_s)/denom)^zeta
    rs = params.angular_centres_ang
    eta, zeta = params.eta_ang, params.zeta
    PM = params.angular_block_size
    block_offset = params.radial_size
    n_spec = params.n_species
    pm = np.arange(PM)

    e1_all = np.repeat(np.arange(n_sel), n_after)
    for lo in range(0, n_triplets, _TRIPLET_CHUNK):
        hi = min(lo + _TRIPLET_CHUNK, n_triplets)
        e1 = e1_all[lo:hi]
        e2 = np.arange(lo, hi) - starts[e1] + e1 + 1
        a1, a2 = sel[e1], sel[e2]           # indices into the full neighbour list
        i = i_nb[a1]
        r1, r2 = d_nb[a1], d_nb[a2]
        u1, u2 = unit_nb[a1], unit_nb[a2]
        c = np.clip(np.einsum("tc,tc->t", u1, u2), -1.0, 1.0)

        # Angular factor (T, M)
        root = np.sqrt(np.maximum(1.0 - c[:, None] ** 2 + eps_sin2[None, :], 0.0))
        q = (1.0 + c[:, None] * cos_s[None, :] + root * sin_s[None, :]) / denom[None, :]
        q_zm1 = q ** (zeta - 1.0)
        ang = q_zm1 * q
        # Radial factor (T, P), including PANNA's leading 2
        y = 0.5 * (r1 + r2)[:, None] - rs[None, :]
        gauss = 2.0 * np.exp(-eta * y * y)
        fc1, dfc1 = _cutoff_and_derivative(r1, params.Rc_ang)
        fc2, dfc2 = _cutoff_and_derivative(r2, params.Rc_ang)
        fc12 = (fc1 * fc2)[:, None]
        rad = gauss * fc12

        s1, s2 = species_index[j_nb[a1]], species_index[j_nb[a2]]
        sa, sb = np.minimum(s1, s2), np.maximum(s1, s2)
        block = sa * n_spec - sa * (sa - 1) // 2 + (sb - sa)
        cols = (block_offset + block * PM)[:, None] + pm[None, :]             # (T, PM)
        values = (rad[:, :, None] * ang[:, None, :]).reshape(-1, PM)
        _scatter_add(G, i[:, None] * gs + cols, values)
        if dG is None:
            continue

        # d(ang)/dc; root > 0 whenever epsilon > 0 (with epsilon = 0 the collinear limit is singular).
        dq_dc = cos_s[None, :] - sin_s[None, :] * np.divide(c[:, None], root, out=np.zeros_like(root),
                                                            where=root > 0)
        dang_dc = zeta * q_zm1 * dq_dc / denom[None, :]                          # (T, M)
        dgauss = -eta * y * gauss                                                 # d gauss / d r1 (= / d r2)
        drad_dr1 = dgauss * fc12 + gauss * (dfc1 * fc2)[:, None]
        drad_dr2 = dgauss * fc12 + gauss * (fc1 * dfc2)[:, None]
        dG_dr1 = (drad_dr1[:, :, None] * ang[:, None, :]).reshape(-1, PM)
        dG_dr2 = (drad_dr2[:, :, None] * ang[:, None, :]).reshape(-1, PM)
        dG_dc = (rad[:, :, None] * dang_dc[:, None, :]).reshape(-1, PM)
        # dc/dD1 = (u2 - c u1)/r1, dc/dD2 = (u1 - c u2)/r2
        dc_dD1 = (u2 - c[:, None] * u1) / r1[:, None]
        dc_dD2 = (u1 - c[:, None] * u2) / r2[:, None]
        v1 = dG_dr1[:, :, None] * u1[:, None, :] + dG_dc[:, :, None] * dc_dD1[:, None, :]
        v2 = dG_dr2[:, :, None] * u2[:, None, :] + dG_dc[:, :, None] * dc_dD2[:, None, :]
        xyz = np.arange(3)[None, None, :]
        _scatter_add(dG, (entry_rows[a1][:, None] * gs + cols)[:, :, None] * 3 + xyz, v1)
        _scatter_add(dG, (entry_rows[a2][:, None] * gs + cols)[:, :, None] * 3 + xyz, v2)
