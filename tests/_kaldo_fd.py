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
    """(N, N) minimum-image distances (Å), searched over the neighbouring cells (skewed cells too)."""
    shifts = np.array(list(itertools.product(range(-2, 3), repeat=3)), dtype=np.float64)
    d = frac[None, :, :] - frac[:, None, :]
    d -= np.rint(d)
    vectors = (d[:, :, None, :] + shifts[None, None, :, :]) @ cell
    return np.linalg.norm(vectors, axis=3).min(axis=2)


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


if __name__ == "__main__":  # the by-hand pw.x anchor (docs/validation.md §3)
    import json
    import os
    import sys
    from pathlib import Path

    from ase import Atoms
    from phono3py import Phono3py

    from kappaflow.bte import run_phono3py
    from kappaflow.steps import load_phono3py

    results = Path(sys.argv[1])  # results/si of a finished run of tests/test_pipeline_pwx.py's setup
    unit = json.loads((results / "structure/unitcell.json").read_text())
    atoms = Atoms(unit["symbols"], cell=unit["cell_ang"], scaled_positions=unit["scaled_positions"], pbc=True)

    def espresso():
        from ase.calculators.espresso import Espresso, EspressoProfile

        return Espresso(profile=EspressoProfile(command="pw.x", pseudo_dir="/usr/share/espresso/pseudo"),
                        input_data={"control": {"calculation": "scf", "tprnfor": True},
                                    "system": {"ecutwfc": 16}, "electrons": {"conv_thr": 1e-10}},
                        pseudopotentials={"Si": "Si.pz-vbc.UPF"}, kpts=(2, 2, 2),
                        directory=f"kaldo_fd_pw/{os.getpid()}")

    if not Path("kaldo_fd_pw.npz").exists():  # 75 pw.x runs
        np.savez("kaldo_fd_pw.npz", **kaldo_force_constants(atoms, (2, 2, 2), espresso, delta_ang=0.01,
                                                            threshold_ang=3.0, n_workers=2))
    template = load_phono3py(results / "sow/phono3py_disp.yaml")
    fc2, fc3 = to_phonopy_order(dict(np.load("kaldo_fd_pw.npz")), template)
    fc3 = pair_cutoff_fc3(fc3, template, 3.0)
    for symmetrize in (False, True):
        ph3 = Phono3py(template.unitcell, supercell_matrix=template.supercell_matrix,
                       primitive_matrix=template.primitive_matrix, log_level=0)
        ph3.fc2, ph3.fc3 = fc2.copy(), fc3.copy()
        if symmetrize:  # phono3py's translational-invariance + index-permutation symmetrisation
            ph3.symmetrize_fc3()
            ph3.symmetrize_fc2()
        kappa = run_phono3py(ph3, [11, 11, 11], np.array([300.0, 600.0]), isotopes=True).kappa_w_per_mk
        print(f"symmetrized={symmetrize}: kappa_xx(300, 600 K) =", kappa[:, 0, 0])
