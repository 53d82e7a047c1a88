"""Classical potentials in TensorFlow with atomic energies, to check the heat flux against LAMMPS.

:class:`MorseTF`: a pair potential (strictly local; LAMMPS's ``pair_style morse`` with ``pair_modify shift
yes``), for which LAMMPS's ``compute heat/flux`` with ``compute centroid/stress/atom`` is exact.

:class:`StillingerWeberTF`: Stillinger–Weber silicon, many-body (LAMMPS's ``pair_style sw`` gives the
per-atom energies but has no centroid stress, so its heat flux is checked through LAMMPS's per-atom
energies and finite differences instead: tests/test_gk_heatflux.py).

The same functional form and parameters as the mock pw.x's numpy potential
(:data:`kappaflow.mock.potentials.SW_SI_PARAMETERS`, PRB 31, 5262 (1985)), written again on pair vectors
so that :mod:`kappaflow.gk.heatflux` differentiates it:

    U = ½ Σ_{i≠j} φ2(r_ij) + Σ_i Σ_{j<k} φ3(r_ij, r_ik, θ_jik),
    φ2 = A ε (B (σ/r)^p − 1) exp(σ / (r − aσ)),
    φ3 = λ ε (cos θ_jik + 1/3)² exp(γσ / (r_ij − aσ)) exp(γσ / (r_ik − aσ)).

How U is split into atomic energies U_i is a choice that changes the instantaneous heat flux, not κ:

``partition="equal"``: each pair term half to each atom, each three-body term a third to each of its
    three atoms -- LAMMPS's ``pair_style sw`` per-atom energy and centroid stress (so the heat flux can
    be compared with ``compute heat/flux`` + ``compute centroid/stress/atom``); U_i then depends on
    atoms up to 2 aσ away, and the model is not strictly local;
``partition="central"``: the three-body term to its central atom i: U_i depends only on i's own pair
    vectors (strictly local, effective cutoff aσ), so the edge form of the heat flux is exact.
"""

from __future__ import annotations

import numpy as np

__all__ = ["StillingerWeberTF", "MorseTF", "PARTITIONS"]

PARTITIONS = ("equal", "central")


class StillingerWeberTF:
    """:class:`kappaflow.gk.heatflux.AtomicEnergyModel` of Stillinger–Weber Si."""

    def __init__(self, partition: str = "equal", parameters: dict | None = None):
        from kappaflow.mock.potentials import SW_SI_PARAMETERS

        if partition not in PARTITIONS:
            raise ValueError(f"StillingerWeberTF: partition must be one of {', '.join(PARTITIONS)}, got {partition!r}")
        par = dict(SW_SI_PARAMETERS if parameters is None else parameters)
        self.partition = partition
        self.epsilon_ev = float(par["epsilon_ev"])
        self.sigma_ang = float(par["sigma_ang"])
        self.costheta0 = float(par["costheta0"])
        self.A, self.B, self.p, self.a = (float(par[k]) for k in ("A", "B", "p", "a"))
        self.lam, self.gamma = float(par["lambda"]), float(par["gamma"])
        self.cutoff_ang = self.a * self.sigma_ang
        self.strictly_local = partition == "central"
        self.effective_cutoff_ang = self.cutoff_ang * (1.0 if self.strictly_local else 2.0)

    def graph(self, positions_ang, cell_ang, symbols) -> dict:
        """Ordered pairs (``i``, ``j``, Cartesian ``shift``) with r_ij < aσ, and the unordered pairs of
        pairs (``tri_p`` < ``tri_q``) sharing their first atom: the angles θ_jik."""
        from kappaflow.ml.ontheflytf import neighbours_with_shifts, pairs_with_shared_centre

        bad = sorted({s for s in symbols if s != "Si"})
        if bad:
            raise ValueError(f"StillingerWeberTF is Si only, got {', '.join(bad)}")
        pos = np.asarray(positions_ang, dtype=np.float64)
        cell = None if cell_ang is None else np.asarray(cell_ang, dtype=np.float64)
        i, j, shift, _ = neighbours_with_shifts(pos, cell, (cell is not None,) * 3, self.cutoff_ang)
        tri_p, tri_q = pairs_with_shared_centre(i)  # the list is sorted by i
        return {"n_atoms": np.int64(pos.shape[0]), "i": i, "j": j, "shift": shift, "tri_p": tri_p, "tri_q": tri_q}

    def atomic_energies(self, pair_vectors, graph: dict):
        from kappaflow.ml.tfimport import import_tensorflow

        tf = import_tensorflow()
        f64 = tf.float64
        D = tf.convert_to_tensor(pair_vectors, f64)
        r = tf.sqrt(tf.reduce_sum(D * D, axis=1))
        eps, sig, rc = self.epsilon_ev, self.sigma_ang, self.cutoff_ang
        x = r - rc  # < 0 inside the cutoff (the list holds only r < rc)
        phi2 = self.A * eps * (self.B * (sig / r) ** self.p - 1.0) * tf.exp(sig / x)
        n, i = graph["n_atoms"], graph["i"]
        U = tf.math.unsorted_segment_sum(0.5 * phi2, i, n)
        tp, tq = graph["tri_p"], graph["tri_q"]
        Dp, Dq = tf.gather(D, tp), tf.gather(D, tq)
        rp, rq = tf.gather(r, tp), tf.gather(r, tq)
        cos = tf.reduce_sum(Dp * Dq, axis=1) / (rp * rq)
        fp = tf.exp(self.gamma * sig / (rp - rc))
        fq = tf.exp(self.gamma * sig / (rq - rc))
        phi3 = self.lam * eps * (cos + self.costheta0) ** 2 * fp * fq
        centre = tf.gather(i, tp)
        if self.partition == "central":
            U += tf.math.unsorted_segment_sum(phi3, centre, n)
        else:
            j = graph["j"]
            owners = tf.concat([centre, tf.gather(j, tp), tf.gather(j, tq)], axis=0)
            U += tf.math.unsorted_segment_sum(tf.tile(phi3 / 3.0, [3]), owners, n)
        return U


class MorseTF:
    """Morse pair potential φ(r) = D0 (e^{−2α(r−r0)} − 2 e^{−α(r−r0)}) − φ(r_c) for r < r_c (one species),
    each pair half to each atom: strictly local, effective cutoff r_c."""

    strictly_local = True

    def __init__(self, d0_ev: float, alpha_per_ang: float, r0_ang: float, cutoff_ang: float, symbol: str = "Si"):
        self.d0_ev, self.alpha_per_ang, self.r0_ang = float(d0_ev), float(alpha_per_ang), float(r0_ang)
        self.cutoff_ang = self.effective_cutoff_ang = float(cutoff_ang)
        self.symbol = symbol
        x = np.exp(-self.alpha_per_ang * (self.cutoff_ang - self.r0_ang))
        self.phi_cutoff_ev = self.d0_ev * (x * x - 2.0 * x)

    def graph(self, positions_ang, cell_ang, symbols) -> dict:
        """Ordered pairs (``i``, ``j``, Cartesian ``shift``) closer than the cutoff."""
        from kappaflow.ml.ontheflytf import neighbours_with_shifts

        bad = sorted({s for s in symbols if s != self.symbol})
        if bad:
            raise ValueError(f"MorseTF is {self.symbol} only, got {', '.join(bad)}")
        pos = np.asarray(positions_ang, dtype=np.float64)
        cell = None if cell_ang is None else np.asarray(cell_ang, dtype=np.float64)
        i, j, shift, _ = neighbours_with_shifts(pos, cell, (cell is not None,) * 3, self.cutoff_ang)
        return {"n_atoms": np.int64(pos.shape[0]), "i": i, "j": j, "shift": shift}

    def atomic_energies(self, pair_vectors, graph: dict):
        from kappaflow.ml.tfimport import import_tensorflow

        tf = import_tensorflow()
        D = tf.convert_to_tensor(pair_vectors, tf.float64)
        r = tf.sqrt(tf.reduce_sum(D * D, axis=1))
        x = tf.exp(-self.alpha_per_ang * (r - self.r0_ang))
        phi = self.d0_ev * (x * x - 2.0 * x) - self.phi_cutoff_ev
        return tf.math.unsorted_segment_sum(0.5 * phi, graph["i"], graph["n_atoms"])
