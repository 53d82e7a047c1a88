"""mBP descriptors computed inside TensorFlow (float64), so that forces come from autodiff.

The route of :mod:`kappaflow.ml.gvectors` stores dG/dR for every (atom, neighbour) pair: 3.5 MB per
54-atom GeS2 cell and ~5 ms to compute.  Here only the neighbour list is built in numpy (matscipy, the
same list ``compute_descriptors`` uses): for each neighbour entry (i, j, image shift) the pair vector
``R_ij = r_j - r_i + shift`` is formed *in TensorFlow from the positions*, G follows with the same
formulas as :mod:`kappaflow.ml.gvectors` (identical to ~1e-15), the networks give the energy, and
``F = -dE/dR`` comes from one backward pass (``tf.GradientTape``), per committee member.

Many structures are evaluated together: their neighbour data are concatenated (:func:`concat_geometries`)
and one graph call gives every structure's energy and every atom's force.

Two force routes, equal to round-off:

* ``method="autodiff"``: ``tf.GradientTape`` through the descriptor graph, one backward pass per member;
* ``method="fused"`` (default): the derivatives of G with respect to each pair vector are formed
  explicitly (per neighbour entry and angular triplet) and contracted with all members' dE/dG at once,
  so a committee of M members costs about one backward pass instead of M.

API
---
``Geometry``: numpy neighbour data of one or several structures (atoms concatenated).
``build_geometry(positions_ang, cell_ang, symbols, params, pbc=True) -> Geometry``;
``geometry_for_atoms(atoms, params)``; ``concat_geometries(geoms) -> Geometry``.
``descriptors_tf(positions, geom, params) -> tf.Tensor (n_atoms, g_size)``: differentiable G.
``descriptors_numpy(geom, params) -> np.ndarray``: the same, evaluated (for tests/comparisons).
``CommitteeEvaluator(committee_or_model, method="fused"|"autodiff")``:
``evaluate(geom, return_descriptors=False) -> (E (M, n_structures), F (M, n_atoms, 3)[, G])``,
``predict_many(atoms_list, batch_atoms=4000) -> list[dict]`` (the dicts of ``Committee.predict``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from kappaflow.ml.gvectors import MIN_DISTANCE_ANG, MBPParameters, _checked_cell, _normalise_pbc
from kappaflow.ml.tfimport import activation

__all__ = ["Geometry", "build_geometry", "geometry_for_atoms", "concat_geometries", "descriptors_tf",
           "descriptors_numpy", "descriptors_from_pair_vectors", "neighbours_with_shifts", "pairs_with_shared_centre",
           "CommitteeEvaluator"]


def _tf():
    from kappaflow.ml.tfimport import import_tensorflow

    return import_tensorflow()


@dataclass
class Geometry:
    """Neighbour data of one or several structures, atoms concatenated in structure order.

    ``ent_i``/``ent_j`` (E,) atom indices and ``ent_shift`` (E, 3) Cartesian image shifts (Å) of every
    neighbour entry with distance below the largest cutoff (sorted by ``ent_i``); ``rad`` indexes the
    entries inside ``Rc_rad``; ``tri_a``/``tri_b`` (T,) index pairs of entries (a < b) inside ``Rc_ang``
    sharing a centre atom.  ``rad_seg``/``tri_seg`` are the segment ids of the radial and angular
    blocks they add to (``atom * n_species + species_j`` and ``atom * n_pairs + block``).
    """

    positions: np.ndarray
    species_index: np.ndarray
    structure_index: np.ndarray
    n_structures: int
    ent_i: np.ndarray
    ent_j: np.ndarray
    ent_shift: np.ndarray
    rad: np.ndarray
    tri_a: np.ndarray
    tri_b: np.ndarray
    rad_seg: np.ndarray
    tri_seg: np.ndarray

    @property
    def n_atoms(self) -> int:
        return self.positions.shape[0]

    @property
    def atoms_per_structure(self) -> np.ndarray:
        return np.bincount(self.structure_index, minlength=self.n_structures)


def neighbours_with_shifts(positions, cell, pbc, cutoff):
    from matscipy.neighbours import neighbour_list

    if cell is None:
        lower = positions.min(axis=0)
        span = positions.max(axis=0) - lower
        i, j = neighbour_list("ij", positions=positions, cell=np.diag(span + 1.0), pbc=[False] * 3,
                              cutoff=cutoff, cell_origin=lower - 0.5)
        shift = np.zeros((len(i), 3))
    else:
        i, j, S = neighbour_list("ijS", positions=positions, cell=cell, pbc=list(pbc), cutoff=cutoff)
        shift = np.asarray(S, dtype=np.float64) @ cell
    i = np.asarray(i, np.int64)
    j = np.asarray(j, np.int64)
    D = positions[j] - positions[i] + shift
    d = np.sqrt(np.einsum("ec,ec->e", D, D))
    keep = d < cutoff
    i, j, shift, d = i[keep], j[keep], shift[keep], d[keep]
    order = np.argsort(i, kind="stable")
    return i[order], j[order], shift[order], d[order]


def pairs_with_shared_centre(centre: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every (a, b), a < b, of neighbour entries with the same centre atom, ``centre`` sorted: the angles."""
    group_end = np.searchsorted(centre, centre, side="right")
    n_after = group_end - np.arange(centre.size) - 1
    a = np.repeat(np.arange(centre.size), n_after)
    starts = np.cumsum(n_after) - n_after
    b = np.arange(a.size) - starts[a] + a + 1
    return a.astype(np.int64), b.astype(np.int64)


def build_geometry(positions_ang, cell_ang, symbols, params: MBPParameters, pbc=True) -> Geometry:
    """Neighbour data of one structure (the neighbour list of ``compute_descriptors``)."""
    positions = np.array(positions_ang, dtype=np.float64)
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise ValueError(f"positions_ang must have shape (n_atoms, 3), got {positions.shape}")
    symbols = list(symbols)
    if len(symbols) != positions.shape[0]:
        raise ValueError(f"{len(symbols)} symbols for {positions.shape[0]} positions")
    species = params.species_indices(symbols)
    pbc = _normalise_pbc(pbc)
    cell = _checked_cell(cell_ang, pbc)
    n = positions.shape[0]
    i, j, shift, d = neighbours_with_shifts(positions, cell, pbc, params.cutoff_ang)
    if d.size and d.min() < MIN_DISTANCE_ANG:
        k = int(np.argmin(d))
        raise ValueError(f"atoms {i[k]} and {j[k]} (or an image of it) overlap: distance {d[k]:.3g} Å")
    rad = np.flatnonzero(d < params.Rc_rad)
    rad_seg = i[rad] * params.n_species + species[j[rad]]
    ang = np.flatnonzero(d < params.Rc_ang)
    e1, e2 = pairs_with_shared_centre(i[ang])
    tri_a, tri_b = ang[e1], ang[e2]
    s1, s2 = species[j[tri_a]], species[j[tri_b]]
    sa, sb = np.minimum(s1, s2), np.maximum(s1, s2)
    S = params.n_species
    block = sa * S - sa * (sa - 1) // 2 + (sb - sa)
    tri_seg = i[tri_a] * params.n_species_pairs + block
    return Geometry(positions, species, np.zeros(n, np.int64), 1, i, j, shift, rad, tri_a.astype(np.int64),
                    tri_b.astype(np.int64), rad_seg.astype(np.int64), tri_seg.astype(np.int64))


def geometry_for_atoms(atoms, params: MBPParameters) -> Geometry:
    return build_geometry(atoms.get_positions(), np.asarray(atoms.cell[:], dtype=np.float64),
                          atoms.get_chemical_symbols(), params, pbc=tuple(bool(p) for p in atoms.pbc))


def concat_geometries(geoms: Sequence[Geometry], params: MBPParameters) -> Geometry:
    """One Geometry holding all ``geoms`` (atoms renumbered, structures numbered in order)."""
    geoms = list(geoms)
    if not geoms:
        raise ValueError("concat_geometries: nothing to concatenate")
    atom_off = np.concatenate([[0], np.cumsum([g.n_atoms for g in geoms])])
    ent_off = np.concatenate([[0], np.cumsum([g.ent_i.size for g in geoms])])
    struct_off = np.concatenate([[0], np.cumsum([g.n_structures for g in geoms])])
    S, SP = params.n_species, params.n_species_pairs
    cat = np.concatenate
    return Geometry(
        positions=cat([g.positions for g in geoms]),
        species_index=cat([g.species_index for g in geoms]),
        structure_index=cat([g.structure_index + struct_off[k] for k, g in enumerate(geoms)]),
        n_structures=int(struct_off[-1]),
        ent_i=cat([g.ent_i + atom_off[k] for k, g in enumerate(geoms)]),
        ent_j=cat([g.ent_j + atom_off[k] for k, g in enumerate(geoms)]),
        ent_shift=cat([g.ent_shift for g in geoms]),
        rad=cat([g.rad + ent_off[k] for k, g in enumerate(geoms)]),
        tri_a=cat([g.tri_a + ent_off[k] for k, g in enumerate(geoms)]),
        tri_b=cat([g.tri_b + ent_off[k] for k, g in enumerate(geoms)]),
        rad_seg=cat([g.rad_seg + atom_off[k] * S for k, g in enumerate(geoms)]),
        tri_seg=cat([g.tri_seg + atom_off[k] * SP for k, g in enumerate(geoms)]),
    )


# ------------------------------------------------------------------------------------------------
# TensorFlow descriptors
# ------------------------------------------------------------------------------------------------
def _geometry_tensors(tf, geom: Geometry):
    i64 = tf.int64
    return (tf.constant(geom.ent_i, i64), tf.constant(geom.ent_j, i64),
            tf.constant(geom.ent_shift, tf.float64), tf.constant(geom.rad, i64), tf.constant(geom.tri_a, i64),
            tf.constant(geom.tri_b, i64), tf.constant(geom.rad_seg, i64), tf.constant(geom.tri_seg, i64),
            tf.constant(geom.n_atoms, i64))


def _angular_terms(tf, params: MBPParameters, D, r, tri_a, tri_b):
    """Per angular triplet: the two distances and unit vectors, cos θ_ijk, and PANNA's angular base
    q = (1 + cos θ cos θ_s + √(1 − cos²θ + ε sin²θ_s) sin θ_s) / (1 + √(1 + ε sin²θ_s)) with its parts."""
    f64 = tf.float64
    Da, Db = tf.gather(D, tri_a), tf.gather(D, tri_b)
    r1, r2 = tf.gather(r, tri_a), tf.gather(r, tri_b)
    u1 = Da / r1[:, None]
    u2 = Db / r2[:, None]
    c = tf.clip_by_value(tf.reduce_sum(u1 * u2, axis=1), -1.0, 1.0)
    theta = params.theta_centres
    cos_s = tf.constant(np.cos(theta), f64)[None, :]
    sin_s = tf.constant(np.sin(theta), f64)[None, :]
    eps_sin2 = params.epsilon * np.sin(theta) ** 2
    denom = tf.constant(1.0 + np.sqrt(1.0 + eps_sin2), f64)[None, :]
    root = tf.sqrt(tf.maximum(1.0 - c[:, None] ** 2 + tf.constant(eps_sin2, f64)[None, :], 0.0))
    q = (1.0 + c[:, None] * cos_s + root * sin_s) / denom
    return r1, r2, u1, u2, c, cos_s, sin_s, root, q, denom


def _descriptors_graph(tf, params: MBPParameters, positions, ent_i, ent_j, ent_shift, rad, tri_a, tri_b,
                       rad_seg, tri_seg, n_atoms):
    D = tf.gather(positions, ent_j) - tf.gather(positions, ent_i) + ent_shift
    return descriptors_from_pair_vectors(tf, params, D, rad, tri_a, tri_b, rad_seg, tri_seg, n_atoms)


def descriptors_from_pair_vectors(tf, params: MBPParameters, D, rad, tri_a, tri_b, rad_seg, tri_seg, n_atoms):
    """G (n_atoms, g_size) from the (E, 3) pair vectors r_j − r_i + shift of the neighbour entries (the
    Green–Kubo heat flux and the strain-trick stress differentiate with respect to them)."""
    f64 = tf.float64
    pi = math.pi
    r = tf.sqrt(tf.reduce_sum(D * D, axis=1))

    # radial
    K = params.RsN_rad
    rr = tf.gather(r, rad)
    x = rr[:, None] - tf.constant(params.radial_centres_ang, f64)[None, :]
    fc = 0.5 * (1.0 + tf.cos(pi / params.Rc_rad * rr))
    vals = tf.exp(-params.eta_rad * x * x) * fc[:, None]
    S = params.n_species
    G_rad = tf.reshape(tf.math.unsorted_segment_sum(vals, rad_seg, n_atoms * S), [-1, S * K])

    # angular
    r1, r2, u1, u2, c, cos_s, sin_s, root, q, denom = _angular_terms(tf, params, D, r, tri_a, tri_b)
    ang = tf.pow(q, params.zeta)                                               # (T, M)
    y = 0.5 * (r1 + r2)[:, None] - tf.constant(params.angular_centres_ang, f64)[None, :]
    fc1 = 0.5 * (1.0 + tf.cos(pi / params.Rc_ang * r1))
    fc2 = 0.5 * (1.0 + tf.cos(pi / params.Rc_ang * r2))
    radial = 2.0 * tf.exp(-params.eta_ang * y * y) * (fc1 * fc2)[:, None]     # (T, P)
    PM = params.angular_block_size
    vals = tf.reshape(radial[:, :, None] * ang[:, None, :], [-1, PM])
    SP = params.n_species_pairs
    G_ang = tf.reshape(tf.math.unsorted_segment_sum(vals, tri_seg, n_atoms * SP), [-1, SP * PM])
    return tf.concat([G_rad, G_ang], axis=1)


def descriptors_tf(positions, geom: Geometry, params: MBPParameters):
    """G (n_atoms, g_size) as a float64 tensor, differentiable with respect to ``positions``
    (a float64 tensor or variable of shape (n_atoms, 3); pass ``geom.positions`` for the stored ones)."""
    tf = _tf()
    return _descriptors_graph(tf, params, tf.convert_to_tensor(positions, tf.float64),
                              *_geometry_tensors(tf, geom))


def descriptors_numpy(geom: Geometry, params: MBPParameters) -> np.ndarray:
    """:func:`descriptors_tf` at ``geom.positions``, as numpy."""
    return descriptors_tf(geom.positions, geom, params).numpy()


def _fused_graph(tf, params: MBPParameters, dE_dG_fn, positions, ent_i, ent_j, ent_shift, rad, tri_a, tri_b,
                 rad_seg, tri_seg, n_atoms):
    """G, the members' atomic energies and their forces with one explicit backward pass.

    ``dE_dG_fn(G) -> (E_atoms (N, M), dE/dG (N, g, M))``; returns ``G``, ``E_atoms`` and the forces
    (M, N, 3).  The derivatives of G with respect to the
    pair vectors are formed per neighbour entry and angular triplet (the formulas of
    :mod:`kappaflow.ml.gvectors`) and contracted with all M members' dE/dG at once, which costs
    about one backward pass instead of M."""
    f64 = tf.float64
    pi = math.pi
    D = tf.gather(positions, ent_j) - tf.gather(positions, ent_i) + ent_shift
    r = tf.sqrt(tf.reduce_sum(D * D, axis=1))
    S, SP = params.n_species, params.n_species_pairs

    # radial values and d/dr
    K = params.RsN_rad
    rr = tf.gather(r, rad)
    x = rr[:, None] - tf.constant(params.radial_centres_ang, f64)[None, :]
    arg = pi / params.Rc_rad * rr
    fc = 0.5 * (1.0 + tf.cos(arg))
    dfc = -0.5 * pi / params.Rc_rad * tf.sin(arg)
    gauss = tf.exp(-params.eta_rad * x * x)
    vals = gauss * fc[:, None]
    dvals = gauss * (dfc[:, None] - 2.0 * params.eta_rad * x * fc[:, None])          # (Er, K)
    G_rad = tf.reshape(tf.math.unsorted_segment_sum(vals, rad_seg, n_atoms * S), [-1, S * K])

    # angular values and derivatives
    r1, r2, u1, u2, c, cos_s, sin_s, root, q, denom = _angular_terms(tf, params, D, r, tri_a, tri_b)
    q_zm1 = tf.pow(q, params.zeta - 1.0)
    ang = q_zm1 * q                                                                   # (T, Mt)
    safe_root = tf.where(root > 0, root, tf.ones_like(root))
    dq_dc = cos_s - sin_s * tf.where(root > 0, c[:, None] / safe_root, tf.zeros_like(root))
    dang_dc = params.zeta * q_zm1 * dq_dc / denom                                     # (T, Mt)
    y = 0.5 * (r1 + r2)[:, None] - tf.constant(params.angular_centres_ang, f64)[None, :]
    a1 = pi / params.Rc_ang * r1
    a2 = pi / params.Rc_ang * r2
    fc1, fc2 = 0.5 * (1.0 + tf.cos(a1)), 0.5 * (1.0 + tf.cos(a2))
    dfc1 = -0.5 * pi / params.Rc_ang * tf.sin(a1)
    dfc2 = -0.5 * pi / params.Rc_ang * tf.sin(a2)
    gauss_a = 2.0 * tf.exp(-params.eta_ang * y * y)                                   # (T, P)
    fc12 = (fc1 * fc2)[:, None]
    radial = gauss_a * fc12
    dgauss = -params.eta_ang * y * gauss_a
    drad1 = dgauss * fc12 + gauss_a * (dfc1 * fc2)[:, None]
    drad2 = dgauss * fc12 + gauss_a * (fc1 * dfc2)[:, None]
    P, Mt = params.RsN_ang, params.ThetasN
    PM = P * Mt
    vals_a = tf.reshape(radial[:, :, None] * ang[:, None, :], [-1, PM])
    G_ang = tf.reshape(tf.math.unsorted_segment_sum(vals_a, tri_seg, n_atoms * SP), [-1, SP * PM])
    G = tf.concat([G_rad, G_ang], axis=1)

    E_atoms, dE = dE_dG_fn(G)                                  # (N, M), (N, g, M)
    M = tf.shape(dE)[2]
    # radial contraction -> dE/dD per radial entry (Er, 3, M)
    c_rad = tf.reshape(dE[:, :S * K, :], [-1, K, M])           # rows atom * S + species
    s_rad = tf.reduce_sum(tf.gather(c_rad, rad_seg) * dvals[:, :, None], axis=1)      # (Er, M)
    g_rad = s_rad[:, None, :] * tf.gather(D, rad)[:, :, None] / rr[:, None, None]
    # angular contraction
    c_ang = tf.reshape(dE[:, S * K:, :], [-1, P, Mt, M])       # rows atom * SP + block
    Ct = tf.gather(c_ang, tri_seg)                             # (T, P, Mt, M)
    A = tf.reduce_sum(Ct * ang[:, None, :, None], axis=2)      # (T, P, M)
    s1 = tf.reduce_sum(A * drad1[:, :, None], axis=1)          # (T, M)
    s2 = tf.reduce_sum(A * drad2[:, :, None], axis=1)
    B = tf.reduce_sum(Ct * radial[:, :, None, None], axis=1)  # (T, Mt, M)
    sc = tf.reduce_sum(B * dang_dc[:, :, None], axis=1)        # (T, M)
    dc1 = (u2 - c[:, None] * u1) / r1[:, None]
    dc2 = (u1 - c[:, None] * u2) / r2[:, None]
    g1 = s1[:, None, :] * u1[:, :, None] + sc[:, None, :] * dc1[:, :, None]            # (T, 3, M)
    g2 = s2[:, None, :] * u2[:, :, None] + sc[:, None, :] * dc2[:, :, None]
    # dE/dD per entry, then F_j -= dE/dD, F_i += dE/dD
    n_ent = tf.shape(ent_i, out_type=tf.int64)[0]
    dE_dD = tf.math.unsorted_segment_sum(tf.concat([g_rad, g1, g2], axis=0),
                                         tf.concat([rad, tri_a, tri_b], axis=0), n_ent)
    F = tf.math.unsorted_segment_sum(tf.concat([-dE_dD, dE_dD], axis=0),
                                     tf.concat([ent_j, ent_i], axis=0), n_atoms)       # (N, 3, M)
    return G, E_atoms, tf.transpose(F, [2, 0, 1])


# ------------------------------------------------------------------------------------------------
# Committee evaluation
# ------------------------------------------------------------------------------------------------
def committee_summary(E_members, F_members) -> dict:
    """Mean and spread of a committee's energies (M,) and forces (M, n, 3) for one structure.

    The spread is computed from differences to the first member: exactly zero for identical members."""
    dE = E_members - E_members[0]
    dF = F_members - F_members[0]
    return {"energy_ev": float(E_members[0] + dE.mean()),
            "energy_std_ev": float(dE.std()),
            "forces_ev_per_ang": F_members[0] + dF.mean(axis=0),
            "forces_std_ev_per_ang": dF.std(axis=0),
            "members_energy_ev": E_members,
            "members_forces": F_members}


class CommitteeEvaluator:
    """Energies and forces of a committee (or one :class:`~kappaflow.ml.model.NetworkPotential`) with
    descriptors computed on the fly in TensorFlow; one compiled graph for any batch of structures."""

    def __init__(self, committee, method: str = "fused"):
        if method not in ("fused", "autodiff"):
            raise ValueError(f"method must be 'fused' or 'autodiff', got {method!r}")
        self.method = method

        # a Committee or one NetworkPotential: both carry the members stacked as ``_stack``
        self.committee = committee
        self.params = committee.params
        tf = _tf()
        self._tf = tf
        st = committee._stack
        f64 = tf.float64
        S = len(st.species)
        layers = [[(tf.constant(W, f64), tf.constant(b, f64)) for W, b, _ in st.layers[s]] for s in range(S)]
        g_mean = tf.constant(st.g_mean, f64)          # (M, S, g)
        g_inv = tf.constant(st.g_inv_std, f64)
        offsets = tf.constant(st.offsets, f64)        # (M, S)
        scale = tf.constant(st.scale, f64)            # (M,)
        act = activation(tf, st.activation)
        M = st.n_members
        params = self.params

        def atomic(G, species):
            parts = tf.dynamic_partition(G, species, S)
            idx = tf.dynamic_partition(tf.range(tf.shape(G)[0]), species, S)
            outs = []
            for s in range(S):
                h = (parts[s][None, :, :] - g_mean[:, s, None, :]) * g_inv[:, s, None, :]   # (M, n_s, g)
                for l, (W, b) in enumerate(layers[s]):
                    h = tf.matmul(h, W) + b[:, None, :]
                    if l < len(layers[s]) - 1:
                        h = act(h)
                outs.append(tf.transpose(offsets[:, s, None] + scale[:, None] * h[:, :, 0]))   # (n_s, M)
            return tf.dynamic_stitch(idx, outs)                                             # (N, M)

        i64 = tf.int64
        sig = [tf.TensorSpec([None, 3], f64), tf.TensorSpec([None], tf.int32), tf.TensorSpec([None], i64),
               tf.TensorSpec([], i64), tf.TensorSpec([None], i64), tf.TensorSpec([None], i64),
               tf.TensorSpec([None, 3], f64), tf.TensorSpec([None], i64), tf.TensorSpec([None], i64),
               tf.TensorSpec([None], i64), tf.TensorSpec([None], i64), tf.TensorSpec([None], i64),
               tf.TensorSpec([], i64)]

        def dE_dG(G, species):
            # Member m's energy depends only on its own normalised input x_m, so one backward pass
            # of the summed energies gives every member's dE/dx.
            parts = tf.dynamic_partition(G, species, S)
            idx = tf.dynamic_partition(tf.range(tf.shape(G)[0]), species, S)
            xs = [(parts[s][None, :, :] - g_mean[:, s, None, :]) * g_inv[:, s, None, :] for s in range(S)]
            with tf.GradientTape() as tape:
                tape.watch(xs)
                outs = []
                for s in range(S):
                    h = xs[s]
                    for l, (W, b) in enumerate(layers[s]):
                        h = tf.matmul(h, W) + b[:, None, :]
                        if l < len(layers[s]) - 1:
                            h = act(h)
                    outs.append(h[:, :, 0])                      # (M, n_s)
                total = tf.add_n([tf.reduce_sum(o) for o in outs])
            grads = tape.gradient(total, xs)
            E = [tf.transpose(offsets[:, s, None] + scale[:, None] * outs[s]) for s in range(S)]   # (n_s, M)
            dE = [tf.transpose(grads[s] * (scale[:, None, None] * g_inv[:, s, None, :]), [1, 2, 0])
                  for s in range(S)]                                                        # (n_s, g, M)
            return tf.dynamic_stitch(idx, E), tf.dynamic_stitch(idx, dE)

        @tf.function(input_signature=sig, autograph=False)
        def run_fused(positions, species, structure, n_struct, ent_i, ent_j, ent_shift, rad, tri_a, tri_b,
                      rad_seg, tri_seg, n_atoms):
            G, Ei, forces = _fused_graph(tf, params, lambda G: dE_dG(G, species), positions, ent_i, ent_j,
                                         ent_shift, rad, tri_a, tri_b, rad_seg, tri_seg, n_atoms)
            E = tf.transpose(tf.math.unsorted_segment_sum(Ei, structure, n_struct))  # (M, n_struct)
            return E, forces, G

        @tf.function(input_signature=sig, autograph=False)
        def run(positions, species, structure, n_struct, ent_i, ent_j, ent_shift, rad, tri_a, tri_b,
                rad_seg, tri_seg, n_atoms):
            with tf.GradientTape(persistent=M > 1) as tape:
                tape.watch(positions)
                G = _descriptors_graph(tf, params, positions, ent_i, ent_j, ent_shift, rad, tri_a, tri_b,
                                       rad_seg, tri_seg, n_atoms)
                Ei = atomic(G, species)                          # (N, M)
                totals = tf.unstack(tf.reduce_sum(Ei, axis=0), num=M)
            forces = tf.stack([-tape.gradient(t, positions) for t in totals])   # (M, N, 3)
            E = tf.transpose(tf.math.unsorted_segment_sum(Ei, structure, n_struct))  # (M, n_struct)
            return E, forces, G

        self._run = run_fused if method == "fused" else run
        self.atomic_energies_from_descriptors = atomic  # (G (N, g), species (N,) int32) -> (N, M) eV

    def evaluate(self, geom: Geometry, return_descriptors: bool = False):
        """``(E (M, n_structures) eV, F (M, n_atoms, 3) eV/Å)`` (and G when asked)."""
        tf = self._tf
        t = _geometry_tensors(tf, geom)
        E, F, G = self._run(tf.constant(geom.positions, tf.float64),
                            tf.constant(geom.species_index.astype(np.int32)),
                            tf.constant(geom.structure_index, tf.int64),
                            tf.constant(geom.n_structures, tf.int64), *t)
        if return_descriptors:
            return E.numpy(), F.numpy(), G.numpy()
        return E.numpy(), F.numpy()

    def predict_many(self, atoms_list, batch_atoms: int = 4000) -> list[dict]:
        """:meth:`Committee.predict`-style dicts for every ``ase.Atoms`` of ``atoms_list``."""
        geoms = [geometry_for_atoms(a, self.params) for a in atoms_list]
        out = []
        start = 0
        while start < len(geoms):
            stop, n = start, 0
            while stop < len(geoms) and (stop == start or n + geoms[stop].n_atoms <= batch_atoms):
                n += geoms[stop].n_atoms
                stop += 1
            batch = concat_geometries(geoms[start:stop], self.params)
            E, F = self.evaluate(batch)
            a0 = 0
            for s in range(stop - start):
                na = geoms[start + s].n_atoms
                out.append(committee_summary(E[:, s], F[:, a0:a0 + na]))
                a0 += na
            start = stop
        return out
