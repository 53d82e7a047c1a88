"""The committee of network potentials as an :class:`kappaflow.gk.heatflux.AtomicEnergyModel`.

U_i is the network output of atom i's mBP descriptors G_i, which depend only on i's own pair vectors
within the descriptor cutoff: the model is strictly local (effective cutoff = descriptor cutoff), so
the unfolded, MIC and edge forms of the heat flux coincide.  ``member=None`` is the committee mean
(the potential the MD runs on); ``member=k`` one member, for propagating the committee spread to κ.

The active-learning loop's Δ-learning baseline (:mod:`kappaflow.al.baseline`) is a Taylor expansion
about one supercell, not an additive atomic-energy potential of any cell: it is not part of this model
(the Green–Kubo route runs on committees trained without it).
"""

from __future__ import annotations

import numpy as np

__all__ = ["CommitteeAtomicEnergies"]


class CommitteeAtomicEnergies:
    strictly_local = True

    def __init__(self, committee, member: int | None = None):
        from kappaflow.ml.ontheflytf import CommitteeEvaluator

        self.committee = committee
        self.params = committee.params
        self.cutoff_ang = self.effective_cutoff_ang = float(self.params.cutoff_ang)
        self.n_members = n_members = committee.n_members
        if member is not None and not 0 <= member < n_members:
            raise ValueError(f"committee member {member} of {n_members}")
        self.member = member
        # one member: its own network only (the whole stack per member made the spread cost n_members² networks)
        self.evaluator = CommitteeEvaluator(committee if member is None else committee.models[member],
                                            method="autodiff")

    def graph(self, positions_ang, cell_ang, symbols) -> dict:
        """The neighbour data of :func:`kappaflow.ml.ontheflytf.build_geometry` (pairs, radial entries,
        angular triplets and their segments) and the species index."""
        from kappaflow.ml.ontheflytf import build_geometry

        geom = build_geometry(positions_ang, cell_ang, symbols, self.params, pbc=cell_ang is not None)
        return {"n_atoms": np.int64(geom.n_atoms), "i": geom.ent_i, "j": geom.ent_j, "shift": geom.ent_shift,
                "rad": geom.rad, "tri_a": geom.tri_a, "tri_b": geom.tri_b, "rad_seg": geom.rad_seg,
                "tri_seg": geom.tri_seg, "species": geom.species_index.astype(np.int32)}

    def atomic_energies(self, pair_vectors, graph: dict):
        from kappaflow.ml.ontheflytf import descriptors_from_pair_vectors
        from kappaflow.ml.tfimport import import_tensorflow

        tf = import_tensorflow()
        g = graph
        G = descriptors_from_pair_vectors(tf, self.params, tf.convert_to_tensor(pair_vectors, tf.float64), g["rad"],
                                          g["tri_a"], g["tri_b"], g["rad_seg"], g["tri_seg"], g["n_atoms"])
        E = self.evaluator.atomic_energies_from_descriptors(G, g["species"])
        return tf.reduce_mean(E, axis=1) if self.member is None else E[:, 0]
