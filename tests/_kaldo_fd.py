"""Force constants by an independent route: kALDo's own finite differences over an ASE calculator.

Used by tests/test_pipeline_mock.py (Stillinger–Weber, the mock's potential, called directly: no pw.x
format, no sow, no reap) and, run by hand, for the real pw.x anchor of tests/test_pipeline_pwx.py
(pw.x through ASE's own Espresso calculator: ASE writes the input and reads the output):

    python tests/_kaldo_fd.py results/si      # a finished real-pw.x run of the pwx test's setup

kALDo displaces (central differences, ``delta``) every symmetry-irreducible pair (i in the primitive
cell, j within ``threshold``) and takes the forces on all atoms; fc2 is complete in the supercell.
The arrays are mapped onto phonopy's supercell by position (kALDo's sign of fc3 is −∂³E, undone here)
and expanded by lattice translations.  phono3py's pair cutoff keeps a triplet (i, j, k) when one of its
orderings has its two displaced atoms within the cutoff, and then gives it the full constant;
:func:`pair_cutoff_fc3` applies that rule (the average over the orderings that kALDo computed), so the
result is comparable element by element with kappaflow's fc3.hdf5 (measured on SW Si 2×2×2, 3.0 Å:
fc2 within 5e-4 eV/Å², fc3 within 5e-3 eV/Å³ of 27, κ within 0.07 %).
"""
from __future__ import annotations

import itertools
import logging

import numpy as np


def kaldo_force_constants(unit_atoms, supercell, calculator, delta_ang: float, threshold_ang: float,
                          n_workers: int = 1, folder: str = "kaldo_fd") -> dict:
    """kALDo's fc2/fc3 by finite differences; ``calculator`` is an ASE calculator or a factory."""
    from kaldo.forceconstants import ForceConstants

    logging.getLogger("kaldo").setLevel(logging.WARNING)
    fc = ForceConstants(atoms=unit_atoms, supercell=tuple(supercell), folder=str(folder))
    fc.second.calculate(calculator, delta_shift=delta_ang, is_storing=False, use_symmetry=True,
                        n_workers=n_workers)
    fc.third.calculate(calculator, delta_shift=delta_ang, distance_threshold=threshold_ang,
                       is_storing=False, use_symmetry=True, n_workers=n_workers)
    replicated = fc.second.replicated_atoms
    return {"second": np.asarray(fc.second.value, dtype=np.float64),
            "third": np.asarray(fc.third.value.todense(), dtype=np.float64),
            "replicated_positions": np.asarray(replicated.positions, dtype=np.float64),
            "replicated_cell": np.asarray(replicated.cell, dtype=np.float64)}


def _min_image_distances(frac, cell):
    n = len(frac)
    out = np.zeros((n, n))
    for a in range(n):
        d = frac - frac[a]
        d -= np.rint(d)
        out[a] = np.linalg.norm(d @ cell, axis=1)
    return out


def to_phonopy_order(kaldo: dict, ph3):
    """(fc2 (N, N, 3, 3), fc3 (N, N, N, 3, 3, 3)) in phonopy's supercell order, eV/Å², eV/Å³."""
    sc = ph3.supercell
    cell = np.asarray(sc.cell, dtype=np.float64)
    frac = np.asarray(sc.scaled_positions, dtype=np.float64)
    assert np.allclose(kaldo["replicated_cell"], cell, atol=1e-6), "kALDo's supercell is not phonopy's"
    d = (kaldo["replicated_positions"] @ np.linalg.inv(cell))[:, None, :] - frac[None, :, :]
    d -= np.rint(d)
    dist = np.linalg.norm(d @ cell, axis=2)
    to_ph = dist.argmin(axis=1)
    assert dist.min(axis=1).max() < 1e-6 and len(set(to_ph.tolist())) == len(to_ph)
    n = len(to_ph)
    second = kaldo["second"][0]  # (n_unit, 3, n_replicas, n_unit, 3)
    n_unit = second.shape[0]
    p2s = [int(x) for x in ph3.primitive.p2s_map]
    assert [int(to_ph[i]) for i in range(n_unit)] == p2s, "kALDo's first replica is not phonopy's primitive"
    third = kaldo["third"].reshape(n_unit, 3, n, 3, n, 3)
    fc2_rows = np.zeros((n_unit, n, 3, 3))
    fc3_rows = np.zeros((n_unit, n, n, 3, 3, 3))
    for i in range(n_unit):
        for r in range(second.shape[2]):
            for j in range(n_unit):
                fc2_rows[i, to_ph[r * n_unit + j]] = second[i, :, r, j, :]
        fc3_rows[i][np.ix_(to_ph, to_ph)] = -np.transpose(third[i], (1, 3, 0, 2, 4))
    # full arrays: row s is the row of its primitive atom, shifted by the lattice vector between them
    cart = frac @ cell
    s2p = [int(x) for x in ph3.primitive.s2p_map]
    inv_cell = np.linalg.inv(cell)

    def index_of(x):
        f = x @ inv_cell - frac
        f -= np.rint(f)
        return int(np.argmin(np.linalg.norm(f @ cell, axis=1)))

    fc2 = np.zeros((n, n, 3, 3))
    fc3 = np.zeros((n, n, n, 3, 3, 3))
    for s in range(n):
        a = p2s.index(s2p[s])
        shift = cart[s] - cart[p2s[a]]
        perm = np.array([index_of(cart[t] + shift) for t in range(n)])
        fc2[s][perm] = fc2_rows[a]
        fc3[s][np.ix_(perm, perm)] = fc3_rows[a]
    return fc2, fc3


def pair_cutoff_fc3(fc3_full, ph3, cutoff_ang: float):
    """phono3py's pair-cutoff rule on a kALDo fc3 (first two indices = the displaced pair)."""
    sc = ph3.supercell
    dist = _min_image_distances(np.asarray(sc.scaled_positions), np.asarray(sc.cell))
    n = len(dist)
    pair_ok = np.broadcast_to((dist <= cutoff_ang)[:, :, None], (n, n, n))
    total = np.zeros_like(fc3_full)
    count = np.zeros((n, n, n))
    for p in itertools.permutations(range(3)):
        total += np.transpose(fc3_full, p + tuple(3 + q for q in p))
        count += np.transpose(pair_ok, p)
    return np.where(count[..., None, None, None] > 0,
                    total / np.maximum(count, 1)[..., None, None, None], 0.0)


if __name__ == "__main__":  # the by-hand pw.x anchor (docs/validation.md)
    import json
    import os
    import sys
    from pathlib import Path

    from ase import Atoms

    results = Path(sys.argv[1])
    unit = json.loads((results / "structure/unitcell.json").read_text())
    atoms = Atoms(unit["symbols"], cell=unit["cell_ang"], scaled_positions=unit["scaled_positions"], pbc=True)

    def espresso():
        from ase.calculators.espresso import Espresso, EspressoProfile

        return Espresso(profile=EspressoProfile(command="pw.x", pseudo_dir="/usr/share/espresso/pseudo"),
                        input_data={"control": {"calculation": "scf", "tprnfor": True},
                                    "system": {"ecutwfc": 16}, "electrons": {"conv_thr": 1e-10}},
                        pseudopotentials={"Si": "Si.pz-vbc.UPF"}, kpts=(2, 2, 2),
                        directory=f"kaldo_fd_pw/{os.getpid()}")

    fd = kaldo_force_constants(atoms, (2, 2, 2), espresso, delta_ang=0.01, threshold_ang=3.0, n_workers=2)
    np.savez("kaldo_fd_pw.npz", **fd)
