"""Unfolded positions: the simulation cell plus every periodic replica within an effective cutoff of it.

The unfolded heat flux (Langer's thesis eq. 4.2.25-27, App. C.3/C.4) evaluates a periodic potential on
a finite cluster, the cell's N atoms followed by the replicas ``x_i + n @ cell`` that lie within
``cutoff_ang`` (the potential's effective cutoff: the range over which U_i depends on other atoms)
of the cell.  A replica carries the velocity of its original atom (``replica_of``).

The criterion is the thesis's face test, for any (also non-orthorhombic) cell: with fractional
coordinates s of the wrapped positions and d_α the spacing of the lattice planes normal to a_α
(V / |a_β × a_γ|), the image with offset n is kept when on every axis it lies at most ``cutoff_ang``
beyond the cell's faces.  Every atom within ``cutoff_ang`` of the cell is kept (a few farther ones near
the edges and corners too, which costs only time).  Offsets beyond ±1 are used when the cutoff exceeds a
plane spacing.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

__all__ = ["Unfolded", "plane_spacings_ang", "unfold", "wrap_positions"]


@dataclass(frozen=True)
class Unfolded:
    """``positions_ang`` (N_unf, 3): the cell's atoms (wrapped into the cell, in their order), then the
    replicas; ``replica_of`` (N_unf,): the cell atom each row is a copy of (``arange(n_cell)`` first);
    ``offsets`` (N_unf, 3): the integer lattice offset of each row."""

    positions_ang: np.ndarray
    replica_of: np.ndarray
    offsets: np.ndarray
    n_cell: int
    cutoff_ang: float

    @property
    def n_unfolded(self) -> int:
        return int(self.positions_ang.shape[0])

    def unfold_per_atom(self, values: np.ndarray) -> np.ndarray:
        """Per-atom values of the cell (velocities, masses) for every unfolded row."""
        return np.asarray(values)[self.replica_of]


def plane_spacings_ang(cell_ang: np.ndarray) -> np.ndarray:
    """d_α = V / |a_β × a_γ|: the distance between the lattice planes spanned by the other two vectors."""
    cell = np.asarray(cell_ang, dtype=np.float64)
    volume = abs(float(np.linalg.det(cell)))
    if volume < 1e-12:
        raise ValueError(f"the cell is singular (volume {volume:.3g} Å³): {cell.tolist()}")
    return np.array([volume / np.linalg.norm(np.cross(cell[(a + 1) % 3], cell[(a + 2) % 3])) for a in range(3)])


def wrap_positions(positions_ang: np.ndarray, cell_ang: np.ndarray) -> np.ndarray:
    """Positions moved by lattice vectors into the cell (fractional coordinates in [0, 1))."""
    cell = np.asarray(cell_ang, dtype=np.float64)
    frac = np.asarray(positions_ang, dtype=np.float64) @ np.linalg.inv(cell)
    frac -= np.floor(frac)
    frac[frac >= 1.0] -= 1.0  # -1e-17 wraps to exactly 1.0
    return frac @ cell


def unfold(positions_ang: np.ndarray, cell_ang: np.ndarray, cutoff_ang: float) -> Unfolded:
    """The cell's atoms (wrapped) and every replica within ``cutoff_ang`` of the cell's faces."""
    if not cutoff_ang > 0:
        raise ValueError(f"unfold: the effective cutoff must be > 0 Å, got {cutoff_ang!r}")
    cell = np.asarray(cell_ang, dtype=np.float64)
    pos = wrap_positions(positions_ang, cell)
    n = pos.shape[0]
    frac = pos @ np.linalg.inv(cell)
    spacing = plane_spacings_ang(cell)
    reach = np.ceil(cutoff_ang / spacing).astype(int)
    rows, owners, offs = [pos], [np.arange(n)], [np.zeros((n, 3), dtype=np.int64)]
    for offset in itertools.product(*(range(-k, k + 1) for k in reach)):
        if offset == (0, 0, 0):
            continue
        s = frac + np.asarray(offset, dtype=np.float64)
        # perpendicular distance beyond the faces along each axis (0 inside the slab)
        beyond = np.maximum(np.maximum(-s, s - 1.0), 0.0) * spacing
        keep = np.all(beyond <= cutoff_ang, axis=1)
        if keep.any():
            rows.append(s[keep] @ cell)
            owners.append(np.flatnonzero(keep))
            offs.append(np.tile(np.asarray(offset, dtype=np.int64), (int(keep.sum()), 1)))
    return Unfolded(np.concatenate(rows), np.concatenate(owners).astype(np.int64), np.concatenate(offs), n,
                    float(cutoff_ang))
