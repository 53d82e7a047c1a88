"""Heat flux and stress of a potential with atomic energies, by automatic differentiation (TensorFlow).

Any model that gives atomic energies U_i from the pair vectors of a neighbour list works here (the
:class:`AtomicEnergyModel` protocol): :class:`kappaflow.gk.potentials_tf.StillingerWeberTF` (an independent
potential, to check against LAMMPS) and the committee of network potentials
(:class:`kappaflow.gk.committee_tf.CommitteeAtomicEnergies`).  Formulations (Langer's thesis §4.2,
``../shared/reference/green_kubo_summary.md``), with r_ji = r_i − r_j:

``unfolded`` (eq. 4.2.25-27, O(N)): on the cell plus its replicas within the effective cutoff
    (:mod:`kappaflow.gk.unfold`), J_pot = Σ_{i∈cell, j∈unf} r_ji (∂U_i/∂r_j · v_j)
    = JVP_v(B) − Σ_j r_j (∂U/∂r_j · v_j), B = Σ_{i∈cell} stop_gradient(r_i) U_i: one forward-mode
    JVP with the velocities as tangent, one reverse gradient of U = Σ_{i∈cell} U_i.
``mic`` (eq. 4.2.20, O(N²), a check): the full Jacobian ∂U_i/∂r_j of the periodic potential with
    minimum-image r_ji; valid only when the effective cutoff is below half the smallest plane spacing.
``edges`` (eq. 4.2.23, O(N)): Σ_{ij∈E} r_ji (∂U/∂r_ij · v_j) from one gradient with respect to the
    pair vectors; exact only for a strictly local model (U_i depends on i's own pair vectors only),
    refused otherwise.

J = J_pot + J_conv with the convective term J_conv = Σ_i (U_i + ½ m_i v_i²) v_i (``convective=False``
leaves it out), and optionally minus the gauge term Σ_i Ω_i v_i (:func:`gauge_matrices`: Ω on a
reference structure, App. D.4), which changes J but not κ.  Units: Å, Å/fs, amu, eV; J in eV·Å/fs
(the volume-integrated flux; κ = V/(k_B T²) ∫⟨J(t)J(0)⟩/V² dt).

Stress by the strain trick (eq. 4.1.13): every pair vector becomes (1 + ε) r, σ = (1/V) ∂U/∂ε at ε = 0
(ASE's sign and Voigt order).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from kappaflow.gk.unfold import plane_spacings_ang, unfold
from kappaflow.units import AMU_ANG2_PER_FS2_EV

__all__ = ["AtomicEnergyModel", "HeatFlux", "heat_flux", "gauge_matrices", "energy_forces_stress",
           "mic_valid", "mic_vectors", "unfolded_inputs", "unfolded_potential_flux", "assemble_flux", "FORMS"]

FORMS = ("unfolded", "mic", "edges")


class AtomicEnergyModel(Protocol):
    """What the heat flux needs from a potential.

    ``cutoff_ang``: the neighbour-list cutoff; ``effective_cutoff_ang``: U_i depends on atoms up to this
    far from i (the unfolding radius); ``strictly_local``: U_i depends only on the pair vectors of i.
    ``graph(positions_ang, cell_ang, symbols)`` (``cell_ang`` None: a finite cluster) returns the
    neighbour data as a dict of numpy arrays with at least ``i``, ``j`` (P,) int64, ``shift`` (P, 3)
    Cartesian and the scalar ``n_atoms``; ``atomic_energies(pair_vectors, graph)`` maps the (P, 3) tensor
    r_j − r_i + shift and the same dict as tensors to the (n_atoms,) tensor of U_i (eV), float64.  Being
    a dict of tensors, the graph is an argument of compiled functions (:class:`CompiledFlux`), not a
    constant baked into them."""

    cutoff_ang: float
    effective_cutoff_ang: float
    strictly_local: bool

    def graph(self, positions_ang, cell_ang, symbols): ...

    def atomic_energies(self, pair_vectors, graph): ...


def _tf():
    from kappaflow.ml.tfimport import import_tensorflow

    return import_tensorflow()


def _dense(tf, grad):
    """A gradient as a dense numpy array (gathers give IndexedSlices)."""
    return tf.convert_to_tensor(grad).numpy()


@dataclass(frozen=True)
class HeatFlux:
    """``potential``, ``convective``, ``gauge`` and ``total`` = potential + convective − gauge (3,), eV·Å/fs."""

    potential: np.ndarray
    convective: np.ndarray
    gauge: np.ndarray
    total: np.ndarray
    form: str


def mic_valid(model: AtomicEnergyModel, cell_ang) -> bool:
    """The MIC form needs the effective cutoff below half the smallest lattice-plane spacing."""
    return model.effective_cutoff_ang < 0.5 * float(plane_spacings_ang(cell_ang).min())


def graph_tensors(tf, graph: dict) -> dict:
    """A model's numpy graph dict as tensors (float arrays as float64, integer ones as they are)."""
    return {k: tf.constant(v, tf.float64 if np.asarray(v).dtype.kind == "f" else None) for k, v in graph.items()}


def _pair_vectors(tf, positions, g):
    return tf.gather(positions, g["j"]) - tf.gather(positions, g["i"]) + g["shift"]


def _checked(positions_ang, velocities_ang_per_fs, masses_amu, cell_ang, symbols):
    pos = np.asarray(positions_ang, dtype=np.float64)
    vel = np.asarray(velocities_ang_per_fs, dtype=np.float64)
    masses = np.asarray(masses_amu, dtype=np.float64)
    cell = np.asarray(cell_ang, dtype=np.float64)
    n = pos.shape[0]
    if pos.shape != (n, 3) or vel.shape != (n, 3) or masses.shape != (n,) or cell.shape != (3, 3):
        raise ValueError(f"heat_flux: positions {pos.shape}, velocities {vel.shape}, masses {masses.shape}, cell "
                         f"{cell.shape}: expected (N, 3), (N, 3), (N,), (3, 3)")
    if len(symbols) != n:
        raise ValueError(f"heat_flux: {len(symbols)} symbols for {n} atoms")
    return pos, vel, masses, cell


def unfolded_inputs(tf, model, pos, vel, cell, symbols):
    """The unfolded cluster as tensors: positions, replica velocities, the cell atoms' positions, graph."""
    unf = unfold(pos, cell, model.effective_cutoff_ang)
    g = graph_tensors(tf, model.graph(unf.positions_ang, None, [symbols[k] for k in unf.replica_of]))
    return (tf.constant(unf.positions_ang, tf.float64), tf.constant(unf.unfold_per_atom(vel), tf.float64),
            tf.constant(unf.positions_ang[:unf.n_cell], tf.float64), g)


def unfolded_potential_flux(tf, model, r, v, r_cell, g):
    """J_pot = JVP_v(B) − Σ_j r_j (∂U/∂r_j · v_j) and the cell atoms' U_i, as tensors (eager, or inside a
    compiled function: :class:`kappaflow.gk.md.CompiledModel`)."""
    n = tf.shape(r_cell)[0]
    with tf.autodiff.ForwardAccumulator(r, v) as acc:
        U = model.atomic_energies(_pair_vectors(tf, r, g), g)[:n]
        B = tf.reduce_sum(r_cell * U[:, None], axis=0)
    term1 = acc.jvp(B)
    with tf.GradientTape() as tape:
        tape.watch(r)
        total = tf.reduce_sum(model.atomic_energies(_pair_vectors(tf, r, g), g)[:n])
    grad = tf.convert_to_tensor(tape.gradient(total, r))
    term2 = tf.reduce_sum(r * tf.reduce_sum(grad * v, axis=1)[:, None], axis=0)
    return term1 - term2, U


def _unfolded_flux(tf, model, pos, vel, cell, symbols):
    j_pot, U = unfolded_potential_flux(tf, model, *unfolded_inputs(tf, model, pos, vel, cell, symbols))
    return j_pot.numpy(), U.numpy()


def assemble_flux(j_pot, atomic_energies_ev, vel, masses, form: str, convective: bool = True, gauge=None) -> HeatFlux:
    """J = J_pot + J_conv − Σ_i Ω_i v_i from the potential part and the cell atoms' U_i."""
    j_pot = np.asarray(j_pot, dtype=np.float64)
    j_conv = np.zeros(3)
    if convective:
        kinetic = 0.5 * masses * np.einsum("ic,ic->i", vel, vel) * AMU_ANG2_PER_FS2_EV
        j_conv = ((atomic_energies_ev + kinetic)[:, None] * vel).sum(axis=0)
    j_gauge = np.zeros(3)
    if gauge is not None:
        omega = np.asarray(gauge, dtype=np.float64)
        if omega.shape != (vel.shape[0], 3, 3):
            raise ValueError(f"gauge matrices: shape {omega.shape}, expected ({vel.shape[0]}, 3, 3)")
        j_gauge = np.einsum("iab,ib->a", omega, vel)
    return HeatFlux(j_pot, j_conv, j_gauge, j_pot + j_conv - j_gauge, form)


def mic_vectors(cell, pos):
    """(N, N, 3) minimum-image r_i − r_j."""
    inv = np.linalg.inv(cell)
    d = pos[:, None, :] - pos[None, :, :]
    frac = d @ inv
    frac -= np.round(frac)
    return frac @ cell


def _mic_flux(tf, model, pos, vel, cell, symbols):
    if not mic_valid(model, cell):
        raise ValueError(f"heat flux, MIC form: the effective cutoff {model.effective_cutoff_ang:.3f} Å is not below "
                         f"half the smallest plane spacing of the cell ({0.5 * plane_spacings_ang(cell).min():.3f} Å); "
                         "use the unfolded form")
    graph = model.graph(pos, cell, symbols)
    g = graph_tensors(tf, graph)
    r = tf.constant(pos, tf.float64)
    with tf.GradientTape() as tape:
        tape.watch(r)
        U = model.atomic_energies(_pair_vectors(tf, r, g), g)
    jac = tape.jacobian(U, r).numpy()                      # (N_i, N_j, 3): ∂U_i/∂r_j
    rji = mic_vectors(cell, pos)                           # r_i − r_j
    dUdt = np.einsum("ijc,jc->ij", jac, vel)
    return np.einsum("ija,ij->a", rji, dUdt), U.numpy()


def _edge_flux(tf, model, pos, vel, cell, symbols):
    if not model.strictly_local:
        raise ValueError(f"heat flux, edge form: {type(model).__name__} is not strictly local (U_i depends on "
                         "other atoms' pair vectors); the edge form would be wrong; use the unfolded form")
    graph = model.graph(pos, cell, symbols)
    g = graph_tensors(tf, graph)
    r = tf.constant(pos, tf.float64)
    D = _pair_vectors(tf, r, g)
    with tf.GradientTape() as tape:
        tape.watch(D)
        U = model.atomic_energies(D, g)
        total = tf.reduce_sum(U)
    gD = _dense(tf, tape.gradient(total, D))                    # ∂U/∂r_ij per edge
    Dn = D.numpy()
    proj = np.einsum("pc,pc->p", gD, vel[graph["j"]])
    return -(Dn * proj[:, None]).sum(axis=0), U.numpy()


def heat_flux(model: AtomicEnergyModel, positions_ang, velocities_ang_per_fs, masses_amu, cell_ang, symbols,
              form: str = "unfolded", convective: bool = True, gauge=None) -> HeatFlux:
    """The heat flux J (eV·Å/fs) of one MD frame; ``gauge``: (N, 3, 3) from :func:`gauge_matrices`."""
    if form not in FORMS:
        raise ValueError(f"heat flux form must be one of {', '.join(FORMS)}, got {form!r}")
    tf = _tf()
    pos, vel, masses, cell = _checked(positions_ang, velocities_ang_per_fs, masses_amu, cell_ang, symbols)
    symbols = list(symbols)
    flux = {"unfolded": _unfolded_flux, "mic": _mic_flux, "edges": _edge_flux}[form]
    j_pot, U = flux(tf, model, pos, vel, cell, symbols)
    return assemble_flux(j_pot, U, vel, masses, form, convective=convective, gauge=gauge)


def gauge_matrices(model: AtomicEnergyModel, positions_ang, cell_ang, symbols) -> np.ndarray:
    """Ω_j = Σ_i r_ji ⊗ ∂U_i/∂r_j (N, 3, 3) on a reference structure (the perfect crystal), folded onto
    the cell's atoms: Σ_j Ω_j · v_j is the part of J_pot that is linear in the velocities at that
    structure; subtracting it removes a total time derivative (App. D.4), which leaves κ unchanged.
    Three reverse passes of B = Σ_i r_i U_i and one of U on the unfolded cluster."""
    tf = _tf()
    cell = np.asarray(cell_ang, dtype=np.float64)
    unf = unfold(np.asarray(positions_ang, dtype=np.float64), cell, model.effective_cutoff_ang)
    n = unf.n_cell
    graph = model.graph(unf.positions_ang, None, [list(symbols)[k] for k in unf.replica_of])
    g = graph_tensors(tf, graph)
    r = tf.constant(unf.positions_ang, tf.float64)
    r_const = tf.constant(unf.positions_ang[:n], tf.float64)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(r)
        U = model.atomic_energies(_pair_vectors(tf, r, g), g)[:n]
        B = tf.reduce_sum(r_const * U[:, None], axis=0)
        B_parts = [B[a] for a in range(3)]
        total = tf.reduce_sum(U)
    dB = np.stack([_dense(tf, tape.gradient(b, r)) for b in B_parts])   # (3, N_unf, 3): ∂B_a/∂r_jb
    g = _dense(tf, tape.gradient(total, r))
    del tape
    omega_unf = np.transpose(dB, (1, 0, 2)) - unf.positions_ang[:, :, None] * g[:, None, :]  # (N_unf, a, b)
    omega = np.zeros((n, 3, 3))
    np.add.at(omega, unf.replica_of, omega_unf)
    return omega


def energy_forces_stress(model: AtomicEnergyModel, positions_ang, cell_ang, symbols):
    """``(energy eV, forces (N, 3) eV/Å, stress (6,) eV/Å³ Voigt xx yy zz yz xz xy, atomic energies (N,))``
    of a periodic structure: forces by one reverse pass, stress by the strain trick (all pair vectors
    strained by (1 + ε), ε symmetric; σ = (1/V) ∂U/∂ε)."""
    tf = _tf()
    pos = np.asarray(positions_ang, dtype=np.float64)
    cell = np.asarray(cell_ang, dtype=np.float64)
    graph = model.graph(pos, cell, list(symbols))
    g = graph_tensors(tf, graph)
    r = tf.constant(pos, tf.float64)
    eps = tf.zeros((3, 3), tf.float64)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([r, eps])
        sym = 0.5 * (eps + tf.transpose(eps))
        D = _pair_vectors(tf, r, g)
        D = D + tf.matmul(D, sym, transpose_b=True)
        U = model.atomic_energies(D, g)
        total = tf.reduce_sum(U)
    forces = -_dense(tf, tape.gradient(total, r))
    dE_deps = _dense(tf, tape.gradient(total, eps))
    del tape
    sigma = dE_deps / abs(float(np.linalg.det(cell)))
    stress = np.array([sigma[0, 0], sigma[1, 1], sigma[2, 2], sigma[1, 2], sigma[0, 2], sigma[0, 1]])
    return float(total.numpy()), forces, stress, U.numpy()

