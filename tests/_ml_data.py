"""Small data sets for the ML tests: Stillinger–Weber Si and a synthetic two-species set."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
from ase import Atoms
from ase.build import bulk

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from kappaflow.ml.gvectors import MBPParameters  # noqa: E402
from kappaflow.ml.tfrecords import record_from_atoms  # noqa: E402

#: A reduced Si set (8 radial + 2x4 angular = 16 values) that keeps tests fast.
SI_SMALL = MBPParameters(species=("Si",), eta_rad=8.0, Rc_rad=4.6, Rs0_rad=0.5, RsN_rad=8,
                         eta_ang=4.0, Rc_ang=3.1, Rs0_ang=1.5, RsN_ang=2, zeta=8.0, ThetasN=4)

#: Si reference set A of facts.md (16 radial + 4x8 angular = 48 values).
SI_SET_A = MBPParameters.from_dict(dict(Rc_rad=4.6, Rs0_rad=0.5, RsN_rad=16, eta_rad=16, Rc_ang=3.1,
                                        ThetasN=8, Rs0_ang=0.5, RsN_ang=4, eta_ang=16, zeta=50),
                                   species=["Si"])

#: Two species with an angular cutoff wide enough for angular triplets with an atom's own images.
GES2_WIDE = dataclasses.replace(MBPParameters.seed_ges2(), Rc_ang=4.2, eta_ang=4.0, zeta=6.0)


def si_cubic(rattle=0.05, seed=0, repeat=(1, 1, 1)) -> Atoms:
    atoms = bulk("Si", "diamond", a=5.431, cubic=True).repeat(repeat)
    atoms.positions += rattle * np.random.default_rng(seed).standard_normal(atoms.positions.shape)
    return atoms


def si_primitive(rattle=0.03, seed=0) -> Atoms:
    """2-atom diamond Si: lattice vectors 3.84 Å, atoms see their own images within 4.6 Å."""
    atoms = bulk("Si", "diamond", a=5.431)
    atoms.positions += rattle * np.random.default_rng(seed).standard_normal(atoms.positions.shape)
    return atoms


def sw_si_records(n, params=SI_SMALL, seed=0, rattle=(0.02, 0.12), prefix="si"):
    """``n`` rattled 8-atom Si cells with Stillinger–Weber energies and forces, as records."""
    from kappaflow.mock.potentials import stillinger_weber_si

    calc = stillinger_weber_si()
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        amp = rng.uniform(*rattle)
        atoms = si_cubic(rattle=amp, seed=int(rng.integers(1 << 31)))
        atoms.calc = calc
        out.append(record_from_atoms(atoms, params, f"{prefix}{k:03d}"))
    return out


def ges2_cell(rattle=0.0, seed=0) -> Atoms:
    """The 6-atom GeS2 cell of the seed thesis (a = 3.50 Å, c = 11.0 Å), sheared and rattled."""
    bohr = 0.529177210903
    alat = 6.67592990 * bohr
    cell = alat * np.diag([0.991634235, 0.991634235, 3.114821979])
    frac = np.array([[0.0, 0.0, 0.5], [0.5, 0.5, 0.0],
                     [0.0, 0.5, 0.370911775], [0.0, 0.5, 0.870911775],
                     [0.5, 0.0, 0.129088225], [0.5, 0.0, 0.629088225]])
    shear = np.array([[1.0, 0.0, 0.0], [0.25, 1.0, 0.0], [0.1, -0.1, 1.0]])
    cell = cell @ shear
    atoms = Atoms(["Ge", "Ge", "S", "S", "S", "S"], scaled_positions=frac, cell=cell, pbc=True)
    atoms.positions += rattle * np.random.default_rng(seed).standard_normal(atoms.positions.shape)
    return atoms
