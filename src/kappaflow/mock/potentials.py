"""Classical potentials behind the mock pw.x (ASE calculators, eV and Å throughout).

Two models are provided:

* :func:`stillinger_weber_si` — Stillinger–Weber silicon (PRB 31, 5262 (1985); :class:`StillingerWeber`,
  numpy, equal to matscipy's Manybody form to round-off); cohesive energy 4.3366 eV/atom, equilibrium
  diamond lattice constant a0 ≈ 5.4309 Å.
* :class:`MorseNetwork` — a pair network of Morse springs built around a *reference crystal*: every
  pair of atoms closer than a cutoff in the reference is joined by a Morse spring whose rest length is
  its reference distance, so the reference is an exact equilibrium (zero forces, zero stress) and the
  Hessian there is positive semi-definite.  It evaluates any integer supercell of the reference,
  strained, with displaced atoms and in any atom order.  :func:`ges2_mock_calculator` is the model
  around the GeS2 seed structure (:func:`ges2_reference`), whose seed is not an equilibrium of any
  real potential.

Both calculators implement ``energy``, ``free_energy`` (= energy), ``forces`` and ``stress`` (ASE
convention: ``stress = (1/V) ∂E/∂ε``, Voigt order xx yy zz yz xz xy, eV/Å³), so they plug into ASE
dynamics, phonopy and phono3py unchanged.  :func:`calculator_from_name` selects one by name.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from kappaflow.units import BOHR_ANG

__all__ = [
    "SW_SI_LATTICE_CONSTANT_ANG",
    "SW_SI_COHESIVE_ENERGY_EV",
    "GES2_CUTOFF_ANG",
    "GES2_DEPTH_EV",
    "GES2_ALPHA_PER_ANG",
    "GES2_ALAT_BOHR",
    "GES2_MASSES",
    "MorseNetwork",
    "StillingerWeber",
    "SW_SI_PARAMETERS",
    "periodic_pairs",
    "stillinger_weber_si",
    "ges2_reference",
    "ges2_mock_calculator",
    "calculator_from_name",
    "CALCULATOR_NAMES",
]

#: Equilibrium diamond lattice constant of Stillinger–Weber silicon (Å).
SW_SI_LATTICE_CONSTANT_ANG = 5.4309
#: Cohesive energy of Stillinger–Weber silicon, 2 ε = 2 × 2.1683 eV (eV/atom).
SW_SI_COHESIVE_ENERGY_EV = 4.3366


#: Stillinger–Weber silicon, PRB 31, 5262 (1985): the values of matscipy's
#: ``Stillinger_Weber_PRB_31_5262_Si`` (including its cos θ0 = 0.333333333333)
SW_SI_PARAMETERS = {
    "epsilon_ev": 2.1683, "sigma_ang": 2.0951, "costheta0": 0.333333333333, "A": 7.049556277,
    "B": 0.6022245584, "p": 4, "a": 1.80, "lambda": 21.0, "gamma": 1.20,
}


def stillinger_weber_si() -> Calculator:
    """Stillinger–Weber silicon (PRB 31, 5262 (1985)): :class:`StillingerWeber` with
    :data:`SW_SI_PARAMETERS`.  The energy is −4.3366 eV/atom for diamond Si at a0 = 5.4309 Å.

    It equals matscipy's ``Manybody(**StillingerWeber(Stillinger_Weber_PRB_31_5262_Si))`` (energy,
    forces and stress to round-off: tests/test_mock_potentials.py) but needs only numpy, so the mock
    pw.x starts without importing scipy (matscipy's calculators import scipy.stats; docs/benchmarks.md).
    """
    return StillingerWeber(**SW_SI_PARAMETERS)


def periodic_pairs(cell: np.ndarray, positions: np.ndarray, cutoff_ang: float):
    """Every ordered pair ``(i, j, n)`` with ``|x_j + n @ cell − x_i| < cutoff_ang`` (``n`` integer
    lattice translations; an atom is not its own pair at ``n = 0``), sorted by ``i``.  Plain numpy
    (the role of ``ase.neighborlist.primitive_neighbor_list``, which imports scipy)."""
    cell = np.asarray(cell, dtype=np.float64)
    pos = np.asarray(positions, dtype=np.float64)
    frac = pos @ np.linalg.inv(cell)
    shift = np.floor(frac)
    wrapped = (frac - shift) @ cell
    # planes of lattice points along a_c are 1/|b_c| apart (b = rows of inv(cell).T)
    spacing = 1.0 / np.linalg.norm(np.linalg.inv(cell).T, axis=1)
    reach = np.ceil(cutoff_ang / spacing).astype(int)
    grid = np.array([(a, b, c) for a in range(-reach[0], reach[0] + 1) for b in range(-reach[1], reach[1] + 1)
                     for c in range(-reach[2], reach[2] + 1)], dtype=np.int64)
    i_all, j_all, n_all = [], [], []
    cut2 = float(cutoff_ang) ** 2
    for image in grid:
        d = wrapped[None, :, :] + (image @ cell)[None, None, :] - wrapped[:, None, :]
        inside = np.einsum("ijc,ijc->ij", d, d) < cut2
        if not image.any():
            np.fill_diagonal(inside, False)
        i, j = np.nonzero(inside)
        if len(i):
            i_all.append(i)
            j_all.append(j)
            n_all.append(np.broadcast_to(image, (len(i), 3)))
    if not i_all:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 3), np.int64)
    i = np.concatenate(i_all).astype(np.int64)
    j = np.concatenate(j_all).astype(np.int64)
    # translations between the given (unwrapped) positions
    n = np.concatenate(n_all).astype(np.int64) - shift[j].astype(np.int64) + shift[i].astype(np.int64)
    order = np.lexsort((j, i))
    return i[order], j[order], n[order]


class StillingerWeber(Calculator):
    """The Stillinger–Weber potential (PRB 31, 5262 (1985)) in numpy, for one element.

    ``E = ½ Σ_i Σ_{j≠i} [f_R(r_ij) + λε f_A(r_ij) Σ_{k≠i,j} f_A(r_ik) (cos θ_jik + cos θ0)²]`` with
    ``f_R(r) = Aε (B (σ/r)^p − 1) exp(σ/(r − aσ))`` and ``f_A(r) = exp(γσ/(r − aσ))`` for r < aσ (zero
    beyond): the two-body term per pair and the three-body term per angle at every atom, matscipy's
    Manybody form.  Energy, forces and stress (ASE convention, Voigt, eV/Å³) from the analytic
    derivatives with respect to the pair vectors.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]
    nolabel = True

    def __init__(self, epsilon_ev, sigma_ang, costheta0, A, B, p, a, **kwargs):
        lam = kwargs.pop("lambda")
        gamma = kwargs.pop("gamma")
        super().__init__(**kwargs)
        self.epsilon, self.sigma, self.costheta0 = float(epsilon_ev), float(sigma_ang), float(costheta0)
        self.A, self.B, self.p, self.a = float(A), float(B), float(p), float(a)
        self.lam, self.gamma = float(lam), float(gamma)
        self.cutoff_ang = self.a * self.sigma

    def evaluate(self, atoms: Atoms):
        """``(energy, forces, stress_voigt)`` of ``atoms``."""
        cell = np.array(atoms.cell.array, dtype=np.float64)
        pos = np.array(atoms.positions, dtype=np.float64)
        n_atoms = len(atoms)
        i, j, n = periodic_pairs(cell, pos, self.cutoff_ang)
        d = pos[j] + n @ cell - pos[i]  # pair vectors r_ij
        r = np.sqrt(np.einsum("pc,pc->p", d, d))
        unit = d / r[:, None]
        eps, sig, rc = self.epsilon, self.sigma, self.cutoff_ang
        x = r - rc  # < 0 inside the cutoff
        exp_r = np.exp(sig / x)
        power = self.B * (sig / r) ** self.p
        f_rep = self.A * eps * (power - 1.0) * exp_r
        df_rep = self.A * eps * (-self.p * power / r) * exp_r - f_rep * sig / x**2
        f_att = np.exp(self.gamma * sig / x)
        df_att = -self.gamma * sig / x**2 * f_att
        energy = 0.5 * float(f_rep.sum())
        grad = (0.5 * df_rep)[:, None] * unit  # ∂E/∂r_p (pair vector)
        # three-body: ordered pairs (p, q) of pairs sharing their first atom i, p ≠ q
        counts = np.bincount(i, minlength=n_atoms)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        per_pair = counts[i]  # neighbours of i for each pair p
        p_idx = np.repeat(np.arange(len(i)), per_pair)
        offset = np.arange(len(p_idx)) - np.repeat(np.cumsum(per_pair) - per_pair, per_pair)
        q_idx = starts[i[p_idx]] + offset
        keep = p_idx != q_idx
        p_idx, q_idx = p_idx[keep], q_idx[keep]
        if len(p_idx):
            cos = np.einsum("tc,tc->t", unit[p_idx], unit[q_idx])
            angular = cos + self.costheta0
            g = angular**2
            k = 0.5 * self.lam * eps
            fa_p, fa_q = f_att[p_idx], f_att[q_idx]
            energy += k * float(np.sum(fa_p * fa_q * g))
            # ∂cos/∂r_p = (u_q − cos u_p)/|r_p|
            dcos_p = (unit[q_idx] - cos[:, None] * unit[p_idx]) / r[p_idx][:, None]
            dcos_q = (unit[p_idx] - cos[:, None] * unit[q_idx]) / r[q_idx][:, None]
            g_p = k * ((df_att[p_idx] * fa_q * g)[:, None] * unit[p_idx]
                       + (fa_p * fa_q * 2.0 * angular)[:, None] * dcos_p)
            g_q = k * ((fa_p * df_att[q_idx] * g)[:, None] * unit[q_idx]
                       + (fa_p * fa_q * 2.0 * angular)[:, None] * dcos_q)
            for c in range(3):
                grad[:, c] += np.bincount(p_idx, weights=g_p[:, c], minlength=len(i))
                grad[:, c] += np.bincount(q_idx, weights=g_q[:, c], minlength=len(i))
        forces = np.empty((n_atoms, 3), dtype=np.float64)
        for c in range(3):  # r_p = x_j − x_i: F = −∂E/∂x
            forces[:, c] = np.bincount(i, weights=grad[:, c], minlength=n_atoms) - np.bincount(
                j, weights=grad[:, c], minlength=n_atoms)
        virial = grad.T @ d  # Σ_p ∂E/∂r_p ⊗ r_p = ∂E/∂ε
        sigma = 0.5 * (virial + virial.T) / abs(np.linalg.det(cell))
        stress = np.array([sigma[0, 0], sigma[1, 1], sigma[2, 2], sigma[1, 2], sigma[0, 2], sigma[0, 1]],
                          dtype=np.float64)
        return energy, forces, stress

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        if not np.all(self.atoms.pbc):
            raise ValueError(f"StillingerWeber: the structure must be periodic in 3D, pbc={self.atoms.pbc}")
        energy, forces, stress = self.evaluate(self.atoms)
        self.results = {"energy": energy, "free_energy": energy, "forces": forces, "stress": stress}


# --------------------------------------------------------------------------------------------------
# Morse network
# --------------------------------------------------------------------------------------------------

#: the 27 integer offsets {-1, 0, 1}³, used to find the nearest lattice image of a site
_OFFSETS = np.array(
    [(a, b, c) for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1)], dtype=np.int64
)


@dataclass(frozen=True)
class _Topology:
    """Pairs of one supercell geometry: ``r_p = x[j_p] + image_p · cell − x[i_p]``, rest ``r0_p``."""

    supercell: np.ndarray  # (3, 3) int, cell ≈ supercell @ ref_cell
    site: np.ndarray  # (n,) int, reference site of every atom
    translation: np.ndarray  # (n, 3) int, reference-lattice translation of every atom
    shift: np.ndarray  # (3,) rigid origin shift of the structure from the reference (Å)
    i: np.ndarray  # (P,) int
    j: np.ndarray  # (P,) int
    image: np.ndarray  # (P, 3) float64 (integer valued), in units of the actual cell
    r0: np.ndarray  # (P,) float64


def _first_nonzero_positive(n: np.ndarray) -> np.ndarray:
    """True for the integer vectors whose first non-zero component is positive."""
    out = np.zeros(len(n), dtype=bool)
    decided = np.zeros(len(n), dtype=bool)
    for c in range(3):
        nz = (n[:, c] != 0) & ~decided
        out[nz] = n[nz, c] > 0
        decided |= nz
    return out


def _integer_adjugate(m: np.ndarray) -> tuple[np.ndarray, int]:
    """Integer adjugate ``adj`` and determinant ``det`` of an integer 3×3 matrix (``m @ adj = det·I``)."""
    m = np.asarray(m, dtype=np.int64)
    adj = np.empty((3, 3), dtype=np.int64)
    for r in range(3):
        for c in range(3):
            minor = np.delete(np.delete(m, c, axis=0), r, axis=1)
            adj[r, c] = (-1) ** (r + c) * (minor[0, 0] * minor[1, 1] - minor[0, 1] * minor[1, 0])
    det = int(m[0] @ adj[:, 0])
    assert np.array_equal(m @ adj, det * np.eye(3, dtype=np.int64))
    return adj, det


class MorseNetwork(Calculator):
    """Morse springs between all pairs of a reference crystal closer than ``cutoff_ang``.

    ``E = Σ_pairs D [1 − exp(−α (r − r0))]²`` where the pairs (with their periodic images) and rest
    lengths ``r0`` are those of the reference, so the reference is an exact equilibrium with zero
    forces and zero stress, and its harmonic force constants are positive semi-definite (each spring
    contributes ``2Dα²`` along its own direction only).  The third derivative of a spring at rest is
    ``−6Dα³``: the model is anharmonic.

    A structure is evaluated by mapping it onto the reference: its cell must be an integer supercell
    ``M @ ref_cell`` (``M = round(cell @ inv(ref_cell))``, within ``cell_tolerance`` per entry, so
    homogeneous strain is allowed), and each atom, taken at its fractional coordinates in the ideal
    (unstrained) supercell, must lie within ``site_tolerance_ang`` of a unique reference site of the
    same species.  Atom order is free, and so is a rigid translation of the whole structure (tried
    when the mapping at the reference origin fails).  Pairs are replicated from the reference with their exact
    lattice images, so a cutoff larger than half the supercell is handled correctly (an atom may be
    bonded to several images of another one).  The mapping and pair list are cached per
    ``(M, species order)`` and re-validated cheaply at each call.

    Parameters
    ----------
    reference:
        Periodic ``ase.Atoms``: the equilibrium crystal.
    cutoff_ang:
        Pairs whose reference distance is below this are springs (Å).  Must not lie within
        1e-3 Å of a neighbour distance.
    depth_ev:
        Morse depth ``D`` (eV).
    alpha_per_ang:
        Morse inverse width ``α`` (1/Å); spring constant at rest ``2Dα²``.
    site_tolerance_ang:
        Largest allowed distance of an atom from its ideal site; default 0.3 × the shortest reference
        distance.
    cell_tolerance:
        Largest allowed deviation of ``cell @ inv(ref_cell)`` from an integer matrix (default 0.2).
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]
    nolabel = True

    _CACHE_SIZE = 8
    _SHELL_GAP_ANG = 1e-3

    def __init__(
        self,
        reference: Atoms,
        cutoff_ang: float,
        depth_ev: float,
        alpha_per_ang: float,
        *,
        site_tolerance_ang: float | None = None,
        cell_tolerance: float = 0.2,
        **kwargs,
    ):
        super().__init__(
            cutoff_ang=float(cutoff_ang),
            depth_ev=float(depth_ev),
            alpha_per_ang=float(alpha_per_ang),
            **kwargs,
        )
        if not isinstance(reference, Atoms):
            raise TypeError(f"MorseNetwork: reference must be ase.Atoms, got {type(reference).__name__}")
        if len(reference) == 0:
            raise ValueError("MorseNetwork: the reference structure has no atoms")
        if not np.all(reference.pbc):
            raise ValueError(f"MorseNetwork: the reference must be periodic in 3D, pbc={reference.pbc}")
        for name, value in (("cutoff_ang", cutoff_ang), ("depth_ev", depth_ev), ("alpha_per_ang", alpha_per_ang)):
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"MorseNetwork: {name} must be a positive number, got {value!r}")
        self.cutoff_ang = float(cutoff_ang)
        self.depth_ev = float(depth_ev)
        self.alpha_per_ang = float(alpha_per_ang)
        self.cell_tolerance = float(cell_tolerance)

        self.reference = reference.copy()
        self.reference.calc = None
        self._ref_cell = np.array(reference.cell.array, dtype=np.float64)
        if abs(np.linalg.det(self._ref_cell)) < 1e-9:
            raise ValueError("MorseNetwork: the reference cell is singular")
        self._ref_inv_cell = np.linalg.inv(self._ref_cell)
        self._ref_pos = np.array(reference.positions, dtype=np.float64)
        self._ref_numbers = np.array(reference.numbers, dtype=np.int64)
        self._ref_symbols = reference.get_chemical_symbols()

        (self._ref_i, self._ref_j, self._ref_n, self._ref_r0, self.shortest_distance_ang) = (
            self._reference_pairs()
        )
        self.site_tolerance_ang = (
            0.3 * self.shortest_distance_ang if site_tolerance_ang is None else float(site_tolerance_ang)
        )
        self._cache: OrderedDict[bytes, _Topology] = OrderedDict()

    # ---------------------------------------------------------------- reference pair list
    def _reference_pairs(self):
        cell, pos = self._ref_cell, self._ref_pos
        shift = np.floor(pos @ self._ref_inv_cell)
        wrapped = pos - shift @ cell
        # search a little beyond the cutoff (to detect a shell sitting on it) and at least as far as
        # the nearest neighbour (for the default site tolerance)
        search = self.cutoff_ang + 2 * self._SHELL_GAP_ANG
        while True:
            i, j, s = periodic_pairs(cell, wrapped, search)
            if len(i) > 0:
                break
            search *= 2.0
        n = s - shift[j].astype(np.int64) + shift[i].astype(np.int64)
        keep = (i < j) | ((i == j) & _first_nonzero_positive(n))
        i, j, n = i[keep], j[keep], n[keep]
        r = np.linalg.norm(pos[j] - pos[i] + n @ cell, axis=1)
        shortest = float(r.min())
        near = np.abs(r - self.cutoff_ang) < self._SHELL_GAP_ANG
        if np.any(near):
            raise ValueError(
                f"MorseNetwork: cutoff {self.cutoff_ang} Å lies on a neighbour shell of the reference "
                f"(distance {r[near][0]:.6f} Å); move it by more than {self._SHELL_GAP_ANG} Å"
            )
        inside = r < self.cutoff_ang
        if not np.any(inside):
            raise ValueError(
                f"MorseNetwork: cutoff {self.cutoff_ang} Å is below the shortest reference distance "
                f"{shortest:.4f} Å: no springs"
            )
        i, j, n, r = i[inside], j[inside], n[inside], r[inside]
        bonded = np.zeros(len(self._ref_pos), dtype=bool)
        bonded[i] = True
        bonded[j] = True
        if not bonded.all():
            k = int(np.flatnonzero(~bonded)[0])
            raise ValueError(
                f"MorseNetwork: reference atom {k} ({self._ref_symbols[k]}) has no neighbour within "
                f"the cutoff {self.cutoff_ang} Å"
            )
        return i.astype(np.int64), j.astype(np.int64), n, r, shortest

    @property
    def n_reference_pairs(self) -> int:
        """Number of springs per reference cell."""
        return len(self._ref_r0)

    def reference_pair_distances(self) -> np.ndarray:
        """Rest lengths of the springs of one reference cell (Å), sorted."""
        return np.sort(self._ref_r0)

    # ---------------------------------------------------------------- mapping onto the reference
    def _supercell_matrix(self, cell: np.ndarray) -> np.ndarray:
        if abs(np.linalg.det(cell)) < 1e-9:
            raise ValueError("MorseNetwork: the structure's cell is singular")
        m_real = cell @ self._ref_inv_cell
        m = np.rint(m_real)
        dev = float(np.abs(m_real - m).max())
        if dev > self.cell_tolerance:
            raise ValueError(
                "MorseNetwork: the cell is not an integer supercell of the reference: "
                f"cell @ inv(ref_cell) = {np.array2string(m_real, precision=4)} deviates by {dev:.3f} "
                f"from an integer matrix (tolerance {self.cell_tolerance})"
            )
        m = m.astype(np.int64)
        if round(np.linalg.det(m)) == 0:
            raise ValueError(
                f"MorseNetwork: supercell matrix {m.tolist()} (cell @ inv(ref_cell), rounded) is singular"
            )
        return m

    def _ideal_positions(self, atoms: Atoms, m: np.ndarray) -> np.ndarray:
        """Atoms at their fractional coordinates in the ideal (unstrained) supercell ``m @ ref_cell``."""
        cell = np.array(atoms.cell.array, dtype=np.float64)
        return np.array(atoms.positions, dtype=np.float64) @ np.linalg.inv(cell) @ (m @ self._ref_cell)

    def _assign(self, y: np.ndarray, shift: np.ndarray):
        """Nearest reference site (any species) of every ideal position ``y − shift``."""
        n_atoms = len(y)
        z = y - shift
        t_real = (z[:, None, :] - self._ref_pos[None, :, :]) @ self._ref_inv_cell  # (n, K, 3)
        cand = np.rint(t_real).astype(np.int64)[:, :, None, :] + _OFFSETS[None, None, :, :]  # (n,K,27,3)
        delta = z[:, None, None, :] - self._ref_pos[None, :, None, :] - cand @ self._ref_cell
        dist = np.linalg.norm(delta, axis=-1).reshape(n_atoms, -1)
        best = np.argmin(dist, axis=1)
        rows = np.arange(n_atoms)
        site = best // len(_OFFSETS)
        translation = cand.reshape(n_atoms, -1, 3)[rows, best]
        offset = delta.reshape(n_atoms, -1, 3)[rows, best]
        return site, translation, offset, dist[rows, best]

    def _check_assignment(self, atoms, m, adj, det, site, translation, dmin):
        """Canonical translations, or an error message naming the first offending atom."""
        symbols = atoms.get_chemical_symbols()
        far = np.flatnonzero(dmin > self.site_tolerance_ang)
        if len(far):
            a = int(far[0])
            return None, (
                f"MorseNetwork: atom {a} ({symbols[a]}) is {dmin[a]:.3f} Å from the nearest reference "
                f"site (tolerance {self.site_tolerance_ang:.3f} Å)"
            )
        wrong = np.flatnonzero(np.asarray(atoms.numbers) != self._ref_numbers[site])
        if len(wrong):
            a = int(wrong[0])
            return None, (
                f"MorseNetwork: atom {a} ({symbols[a]}) sits on reference site {int(site[a])}, which is "
                f"{self._ref_symbols[site[a]]}"
            )
        canon = self._canonical(translation, m, adj, det)
        keys = np.column_stack([site, canon])
        _, first, counts = np.unique(keys, axis=0, return_index=True, return_counts=True)
        if np.any(counts > 1):
            dup_key = keys[first[np.flatnonzero(counts > 1)[0]]]
            dups = np.flatnonzero(np.all(keys == dup_key, axis=1))
            a, b = int(dups[0]), int(dups[1])
            return None, (
                f"MorseNetwork: atoms {a} ({symbols[a]}) and {b} ({symbols[b]}) map onto the same "
                f"reference site {int(dup_key[0])} (translation {dup_key[1:].tolist()})"
            )
        return canon, None

    def _map_atoms(self, atoms: Atoms, m: np.ndarray):
        """Site, lattice translation and origin shift of every atom.

        The structure is first mapped with the reference origin.  If that fails it is tried as a
        rigidly translated copy: the shift that puts atom 0 on each reference site of its species,
        refined to the mean offset of all atoms; the valid mapping with the smallest largest offset
        wins.  The energy does not depend on the shift, only on the pairing.
        """
        n_atoms, n_ref = len(atoms), len(self._ref_pos)
        adj, det = _integer_adjugate(m)
        if n_atoms != n_ref * abs(det):
            raise ValueError(
                f"MorseNetwork: the structure has {n_atoms} atoms but a {m.tolist()} supercell of the "
                f"{n_ref}-atom reference has {n_ref * abs(det)}"
            )
        y = self._ideal_positions(atoms, m)
        shift = np.zeros(3)
        site, translation, _, dmin = self._assign(y, shift)
        canon, error = self._check_assignment(atoms, m, adj, det, site, translation, dmin)
        if error is None:
            return site, translation, canon, shift, adj, det
        best = None
        for k in np.flatnonzero(self._ref_numbers == atoms.numbers[0]):
            trial = y[0] - self._ref_pos[k]
            for _ in range(2):
                t_site, t_trans, t_off, t_dmin = self._assign(y, trial)
                trial = trial + t_off.mean(axis=0)
            t_site, t_trans, _, t_dmin = self._assign(y, trial)
            t_canon, t_error = self._check_assignment(atoms, m, adj, det, t_site, t_trans, t_dmin)
            if t_error is None and (best is None or t_dmin.max() < best[0]):
                best = (t_dmin.max(), t_site, t_trans, t_canon, trial)
        if best is None:
            raise ValueError(error)
        _, site, translation, canon, shift = best
        return site, translation, canon, shift, adj, det

    @staticmethod
    def _canonical(t: np.ndarray, m: np.ndarray, adj: np.ndarray, det: int) -> np.ndarray:
        """Representative of reference-lattice translations modulo the supercell lattice (exact)."""
        q = (t @ adj) * (1 if det > 0 else -1)  # = |det| · (t @ inv(m))
        frac_num = np.mod(q, abs(det))  # |det| · fractional part
        tc = frac_num @ m
        assert np.all(tc % abs(det) == 0)
        return tc // abs(det)

    def _build_topology(self, atoms: Atoms, m: np.ndarray) -> _Topology:
        site, translation, canon, shift, adj, det = self._map_atoms(atoms, m)
        # every atom a on site k carries every reference pair (k, k', n): partner (k', T_a + n)
        pair_rows = []
        atom_rows = []
        for k in range(len(self._ref_pos)):
            atoms_k = np.flatnonzero(site == k)
            pairs_k = np.flatnonzero(self._ref_i == k)
            if len(pairs_k) == 0:
                continue
            atom_rows.append(np.repeat(atoms_k, len(pairs_k)))
            pair_rows.append(np.tile(pairs_k, len(atoms_k)))
        a_idx = np.concatenate(atom_rows)
        p_idx = np.concatenate(pair_rows)
        partner_site = self._ref_j[p_idx]
        partner_t = translation[a_idx] + self._ref_n[p_idx]
        partner_canon = self._canonical(partner_t, m, adj, det)

        atom_keys = np.column_stack([site, canon])
        query_keys = np.column_stack([partner_site, partner_canon])
        _, inverse = np.unique(np.vstack([atom_keys, query_keys]), axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        atom_of_key = np.full(inverse.max() + 1, -1, dtype=np.int64)
        atom_of_key[inverse[: len(atoms)]] = np.arange(len(atoms))
        b_idx = atom_of_key[inverse[len(atoms):]]
        assert np.all(b_idx >= 0), "incomplete supercell tiling"

        q = (translation[a_idx] + self._ref_n[p_idx] - translation[b_idx]) @ adj
        assert np.all(q % det == 0)
        image = q // det
        return _Topology(
            supercell=m,
            site=site,
            translation=translation,
            shift=shift,
            i=a_idx,
            j=b_idx,
            image=image.astype(np.float64),
            r0=self._ref_r0[p_idx],
        )

    def topology(self, atoms: Atoms) -> _Topology:
        """Pair list of ``atoms`` (cached; rebuilt when an atom left its cached site, e.g. wrapped)."""
        if not np.all(atoms.pbc):
            raise ValueError(f"MorseNetwork: the structure must be periodic in 3D, pbc={atoms.pbc}")
        cell = np.array(atoms.cell.array, dtype=np.float64)
        m = self._supercell_matrix(cell)
        key = m.tobytes() + np.asarray(atoms.numbers, dtype=np.int64).tobytes()
        topo = self._cache.get(key)
        if topo is not None:
            y = self._ideal_positions(atoms, m) - topo.shift
            off = np.linalg.norm(y - self._ref_pos[topo.site] - topo.translation @ self._ref_cell, axis=1)
            if np.all(off <= self.site_tolerance_ang):
                self._cache.move_to_end(key)
                return topo
        topo = self._build_topology(atoms, m)
        self._cache[key] = topo
        while len(self._cache) > self._CACHE_SIZE:
            self._cache.popitem(last=False)
        return topo

    # ---------------------------------------------------------------- evaluation
    def evaluate(self, atoms: Atoms):
        """Return ``(energy, forces, stress_voigt)`` of ``atoms`` without touching the ASE cache."""
        topo = self.topology(atoms)
        cell = np.array(atoms.cell.array, dtype=np.float64)
        pos = np.array(atoms.positions, dtype=np.float64)
        d = pos[topo.j] - pos[topo.i] + topo.image @ cell
        r = np.sqrt(np.einsum("pc,pc->p", d, d))
        e = np.exp(-self.alpha_per_ang * (r - topo.r0))
        one_minus_e = 1.0 - e
        energy = self.depth_ev * float(np.dot(one_minus_e, one_minus_e))
        de_dr = 2.0 * self.depth_ev * self.alpha_per_ang * e * one_minus_e
        g = (de_dr / r)[:, None] * d  # ∂E/∂d_p
        n = len(atoms)
        forces = np.empty((n, 3), dtype=np.float64)
        for c in range(3):
            forces[:, c] = np.bincount(topo.i, weights=g[:, c], minlength=n) - np.bincount(
                topo.j, weights=g[:, c], minlength=n
            )
        virial = g.T @ d  # Σ_p ∂E/∂d_p ⊗ d_p = ∂E/∂ε (symmetric)
        virial = 0.5 * (virial + virial.T)
        sigma = virial / abs(np.linalg.det(cell))
        stress = np.array(
            [sigma[0, 0], sigma[1, 1], sigma[2, 2], sigma[1, 2], sigma[0, 2], sigma[0, 1]],
            dtype=np.float64,
        )
        return energy, forces, stress

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        energy, forces, stress = self.evaluate(self.atoms)
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "forces": forces,
            "stress": stress,
        }


# --------------------------------------------------------------------------------------------------
# GeS2
# --------------------------------------------------------------------------------------------------

#: celldm(1) of the GeS2 seed structure (bohr)
GES2_ALAT_BOHR = 6.67592990
#: pw.x masses of the GeS2 seed input (amu)
GES2_MASSES = {"Ge": 72.640000, "S": 32.065000}

#: default cutoff of the GeS2 Morse network (Å): see :func:`ges2_mock_calculator`
GES2_CUTOFF_ANG = 3.9
#: default Morse depth of the GeS2 network (eV)
GES2_DEPTH_EV = 0.5
#: default Morse inverse width of the GeS2 network (1/Å)
GES2_ALPHA_PER_ANG = 1.5


def ges2_reference() -> Atoms:
    """The 6-atom tetragonal GeS2 seed structure of ``config/systems/ges2/GeS2.scf.in``.

    a = b = 0.991634235 alat, c = 3.114821979 alat, alat = 6.67592990 bohr; masses from the pw.x
    input.
    """
    alat = GES2_ALAT_BOHR * BOHR_ANG
    cell = alat * np.diag([0.991634235, 0.991634235, 3.114821979])
    symbols = ["Ge", "Ge", "S", "S", "S", "S"]
    scaled = [
        (0.0, 0.0, 0.5),
        (0.5, 0.5, 0.0),
        (0.0, 0.5, 0.370911775),
        (0.0, 0.5, 0.870911775),
        (0.5, 0.0, 0.129088225),
        (0.5, 0.0, 0.629088225),
    ]
    atoms = Atoms(symbols=symbols, scaled_positions=scaled, cell=cell, pbc=True)
    atoms.set_masses([GES2_MASSES[s] for s in symbols])
    return atoms


def ges2_mock_calculator(
    cutoff_ang: float = GES2_CUTOFF_ANG,
    depth_ev: float = GES2_DEPTH_EV,
    alpha_per_ang: float = GES2_ALPHA_PER_ANG,
    reference: Atoms | None = None,
) -> MorseNetwork:
    """Morse network around the GeS2 seed structure (:func:`ges2_reference`).

    Defaults and why:

    * ``cutoff_ang = 3.9`` Å takes the first four neighbour shells of the seed: Ge–S bonds (2.255 Å),
      the a-axis Ge–Ge/S–S pairs (3.503 Å), the interlayer S–S pairs (3.636 Å) and the S–S edges of
      the GeS4 tetrahedra (3.769 Å) — 36 springs per 6-atom cell.  With fewer shells the network is
      floppy (zero-frequency branches away from Γ); with these it is rigid: the only zero modes are
      the three acoustic modes at Γ, and the acoustic branches are linear.  The cutoff sits 0.13 Å
      above and 0.27 Å below neighbour shells, and below half the shortest image distance of the
      3×3×1 supercell (5.25 Å), so the supercell mapping is unambiguous even without the image
      handling.
    * ``alpha_per_ang = 1.5`` Å⁻¹ is close to the Morse width of the GeS molecule (ωe ≈ 575 cm⁻¹,
      De ≈ 5.5 eV give α ≈ 1.57 Å⁻¹); it sets the anharmonicity (third over second derivative of a
      spring at rest: −3α).
    * ``depth_ev = 0.5`` eV then scales the spring constant 2Dα² = 2.25 eV/Å² so that the phonon
      spectrum tops out at 12.85 THz, within the 10–15 THz of real GeS2 (highest Raman line ≈ 13 THz).

    phonopy (3×3×1 supercell, 8×8×4 mesh and a high-symmetry path) finds no imaginary frequency.
    """
    return MorseNetwork(
        ges2_reference() if reference is None else reference, cutoff_ang, depth_ev, alpha_per_ang
    )


# --------------------------------------------------------------------------------------------------
# by name
# --------------------------------------------------------------------------------------------------

#: names accepted by :func:`calculator_from_name`
CALCULATOR_NAMES = ("stillinger-weber-si", "morse-network")


def calculator_from_name(name: str, reference: Atoms | None = None, **params) -> Calculator:
    """Calculator for a mock-pw.x potential name.

    * ``"stillinger-weber-si"``: :func:`stillinger_weber_si` (``reference`` is ignored).
    * ``"morse-network"``: :class:`MorseNetwork` around ``reference`` (ase.Atoms, e.g. the structure
      of the seed pw.x input; default: :func:`ges2_reference`), with ``cutoff_ang``, ``depth_ev``,
      ``alpha_per_ang`` from ``params`` or the GeS2 defaults.

    Names are case-insensitive and ``_`` is accepted for ``-``.
    """
    key = str(name).strip().lower().replace("_", "-")
    if key == "stillinger-weber-si":
        if params:
            raise ValueError(f"stillinger-weber-si takes no parameters, got {sorted(params)}")
        return stillinger_weber_si()
    if key == "morse-network":
        if reference is not None and not isinstance(reference, Atoms):
            raise TypeError(
                f"morse-network: reference must be ase.Atoms, got {type(reference).__name__}"
            )
        unknown = set(params) - {"cutoff_ang", "depth_ev", "alpha_per_ang", "site_tolerance_ang", "cell_tolerance"}
        if unknown:
            raise ValueError(f"morse-network: unknown parameters {sorted(unknown)}")
        ref = ges2_reference() if reference is None else reference
        return MorseNetwork(
            ref,
            params.pop("cutoff_ang", GES2_CUTOFF_ANG),
            params.pop("depth_ev", GES2_DEPTH_EV),
            params.pop("alpha_per_ang", GES2_ALPHA_PER_ANG),
            **params,
        )
    raise ValueError(f"unknown mock potential {name!r}; known: {', '.join(CALCULATOR_NAMES)}")
