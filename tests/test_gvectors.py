"""mBP G-vectors (kappaflow.ml.gvectors): finite differences, a loop-based reference, invariances.

The comparison with PANNA's own numbers is opt-in: set KAPPAFLOW_PANNA_REFERENCE_DIR to a directory of
PANNA reference ``*.npz`` files (keys positions, cell, symbols, species, params, G, dG).
"""

import dataclasses
import itertools
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms

from kappaflow.ml.gvectors import (Descriptors, MBPParameters, compute_descriptors,
                                   descriptors_for_atoms)

SEED = MBPParameters.seed_ges2()

#: Angular cutoff long enough for angular triplets to contain an atom's own periodic images.
WIDE = dataclasses.replace(SEED, Rc_ang=4.2, eta_ang=4.0, zeta=6.0)

SI = MBPParameters(species=("Si",), eta_rad=16.0, Rc_rad=4.6, Rs0_rad=0.5, RsN_rad=16,
                   eta_ang=6.0, Rc_ang=4.6, Rs0_ang=0.5, RsN_ang=4, zeta=50.0, ThetasN=8)

BOHR_ANG = 0.529177210903


# ------------------------------------------------------------------------------------------------
# Structures
# ------------------------------------------------------------------------------------------------
def si_primitive(rattle=0.0, seed=0):
    """2-atom diamond Si; lattice vectors 3.84 Å, so atoms see their own images within 4.6 Å."""
    a = 5.431
    cell = 0.5 * a * np.array([[0.0, 1.0, 1.0], [1.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    positions = np.array([[0.0, 0.0, 0.0], [0.25 * a] * 3])
    positions += rattle * np.random.default_rng(seed).standard_normal(positions.shape)
    return positions, cell, ["Si", "Si"]


def ges2_cell(rattle=0.0, seed=0):
    """The 6-atom GeS2 cell of the seed thesis (a = 3.50 Å, c = 11.0 Å)."""
    alat = 6.67592990 * BOHR_ANG
    cell = alat * np.diag([0.991634235, 0.991634235, 3.114821979])
    frac = np.array([[0.0, 0.0, 0.5], [0.5, 0.5, 0.0],
                     [0.0, 0.5, 0.370911775], [0.0, 0.5, 0.870911775],
                     [0.5, 0.0, 0.129088225], [0.5, 0.0, 0.629088225]])
    positions = frac @ cell
    positions += rattle * np.random.default_rng(seed).standard_normal(positions.shape)
    return positions, cell, ["Ge", "Ge", "S", "S", "S", "S"]


def skewed_ges2(rattle=0.05, seed=3):
    """A sheared (triclinic) 2x1x1 GeS2 cell with the S/Ge order mixed up."""
    positions, cell, symbols = ges2_cell()
    cell2 = cell.copy()
    cell2[0] *= 2.0
    positions = np.concatenate([positions, positions + cell[0]])
    symbols = symbols + symbols
    shear = np.array([[1.0, 0.0, 0.0], [0.35, 1.0, 0.0], [0.2, -0.15, 1.0]])
    cell2 = cell2 @ shear
    positions = positions @ shear
    order = np.random.default_rng(seed).permutation(len(symbols))
    positions = positions[order] + rattle * np.random.default_rng(seed + 1).standard_normal(positions.shape)
    return positions, cell2, [symbols[n] for n in order]


def ges2_cluster(seed=5):
    """An open-boundary cluster: a rattled piece of the GeS2 structure."""
    positions, cell, symbols = ges2_cell(rattle=0.08, seed=seed)
    positions = np.concatenate([positions, positions + cell[0]])
    return positions, None, symbols + symbols


# ------------------------------------------------------------------------------------------------
# Loop-based reference written from the formulas (G only)
# ------------------------------------------------------------------------------------------------
def _cut(r, rc):
    return 0.5 * (1.0 + math.cos(math.pi * r / rc)) if r < rc else 0.0


def slow_gvectors(positions, cell, symbols, p: MBPParameters, pbc=(True, True, True)):
    positions = np.asarray(positions, dtype=float)
    n = len(positions)
    rc_max = max(p.Rc_rad, p.Rc_ang)
    # Lattice translations: enough along each periodic direction to cover rc_max from any atom.
    ranges = []
    if any(pbc):
        recip = np.linalg.inv(np.asarray(cell, dtype=float)).T        # rows b_d with a_c . b_d = delta
        frac = positions @ recip.T
    for d in range(3):
        if pbc[d]:
            reach = rc_max * np.linalg.norm(recip[d]) + np.ptp(frac[:, d])
            m = int(math.ceil(reach)) + 1
            ranges.append(range(-m, m + 1))
        else:
            ranges.append(range(0, 1))
    shifts = [np.asarray(l) @ np.asarray(cell, dtype=float) if any(pbc) else np.zeros(3)
              for l in itertools.product(*ranges)]

    S = len(p.species)
    rsst_rad = (p.Rc_rad - p.Rs0_rad) / p.RsN_rad if p.Rsst_rad is None else p.Rsst_rad
    rsst_ang = (p.Rc_ang - p.Rs0_ang) / p.RsN_ang if p.Rsst_ang is None else p.Rsst_ang
    gsize = S * p.RsN_rad + S * (S + 1) // 2 * p.RsN_ang * p.ThetasN
    G = np.zeros((n, gsize))
    for i in range(n):
        neighbours = []                     # (species index, vector, distance)
        for j in range(n):
            sj = p.species.index(symbols[j])
            for shift in shifts:
                v = positions[j] + shift - positions[i]
                r = math.sqrt(float(v @ v))
                if r < 1e-10:
                    continue
                if r < p.Rc_rad:
                    for k in range(p.RsN_rad):
                        rs = p.Rs0_rad + k * rsst_rad
                        G[i, sj * p.RsN_rad + k] += math.exp(-p.eta_rad * (r - rs) ** 2) * _cut(r, p.Rc_rad)
                if r < p.Rc_ang:
                    neighbours.append((sj, v, r))
        block = 0
        for a in range(S):
            for b in range(a, S):
                offset = S * p.RsN_rad + block * p.RsN_ang * p.ThetasN
                block += 1
                prefactor = 0.5 if a == b else 1.0
                for n1, (s1, v1, r1) in enumerate(neighbours):
                    if s1 != a:
                        continue
                    for n2, (s2, v2, r2) in enumerate(neighbours):
                        if s2 != b or n2 == n1:
                            continue
                        cos_t = max(-1.0, min(1.0, float(v1 @ v2) / (r1 * r2)))
                        for q in range(p.RsN_ang):
                            rs = p.Rs0_ang + q * rsst_ang
                            radial = math.exp(-p.eta_ang * (0.5 * (r1 + r2) - rs) ** 2)
                            for m in range(p.ThetasN):
                                th = (m + 0.5) * math.pi / p.ThetasN
                                norm = (2.0 / (1.0 + math.sqrt(1.0 + p.epsilon * math.sin(th) ** 2))) ** p.zeta
                                base = 0.5 * (1.0 + cos_t * math.cos(th) + math.sqrt(
                                    1.0 - cos_t ** 2 + p.epsilon * math.sin(th) ** 2) * math.sin(th))
                                G[i, offset + q * p.ThetasN + m] += (
                                    prefactor * 2.0 * norm * base ** p.zeta * radial
                                    * _cut(r1, p.Rc_ang) * _cut(r2, p.Rc_ang))
    return G


def finite_difference_dG(positions, cell, symbols, p, pbc=(True, True, True), h=1e-5):
    positions = np.asarray(positions, dtype=float)
    n = len(positions)
    out = np.zeros((n, p.g_size, n, 3))
    for k in range(n):
        for c in range(3):
            plus, minus = positions.copy(), positions.copy()
            plus[k, c] += h
            minus[k, c] -= h
            gp = compute_descriptors(plus, cell, symbols, p, pbc=pbc, derivatives=False).G
            gm = compute_descriptors(minus, cell, symbols, p, pbc=pbc, derivatives=False).G
            out[:, :, k, c] = (gp - gm) / (2 * h)
    return out


# ------------------------------------------------------------------------------------------------
# Parameters and layout
# ------------------------------------------------------------------------------------------------
def test_seed_ges2_has_128_values_laid_out_radial_then_angular():
    assert SEED.g_size == 128
    assert SEED.radial_size == 32 and SEED.angular_size == 96
    labels = SEED.feature_labels()
    assert len(labels) == 128
    assert labels[0] == "rad[Ge][Rs0]" and labels[16] == "rad[S][Rs0]"
    assert labels[32] == "ang[Ge-Ge][Rs0][th0]" and labels[33] == "ang[Ge-Ge][Rs0][th1]"
    assert labels[64] == "ang[Ge-S][Rs0][th0]" and labels[96] == "ang[S-S][Rs0][th0]"
    assert [SEED.angular_block(a, b) for a, b in [(0, 0), (0, 1), (1, 0), (1, 1)]] == [0, 1, 1, 2]
    np.testing.assert_allclose(SEED.radial_centres_ang, 0.5 + np.arange(16) * (4.6 - 0.5) / 16)
    np.testing.assert_allclose(SEED.angular_centres_ang, 0.5 + np.arange(4) * (3.1 - 0.5) / 4)
    np.testing.assert_allclose(SEED.theta_centres, (np.arange(8) + 0.5) * np.pi / 8)
    assert SEED.epsilon == 1e-3


def test_three_species_layout():
    p = dataclasses.replace(SEED, species=("A", "B", "C"))
    assert p.g_size == 3 * 16 + 6 * 32
    assert [p.angular_block(a, b) for a in range(3) for b in range(a, 3)] == list(range(6))


def test_from_dict_round_trip_and_overrides():
    p = MBPParameters.from_dict(SEED.to_dict())
    assert p == SEED
    q = MBPParameters.from_dict({**SEED.to_dict(), "species": "Ge, S", "Rsst_rad": 0.2, "epsilon": 1e-2})
    assert q.species == ("Ge", "S") and q.epsilon == 1e-2
    np.testing.assert_allclose(q.radial_centres_ang, 0.5 + 0.2 * np.arange(16))
    params = {k: v for k, v in SEED.to_dict().items() if k != "species"}
    assert MBPParameters.from_dict(params, species=["Ge", "S"]) == SEED


def test_from_dict_errors():
    params = {k: v for k, v in SEED.to_dict().items() if k != "species"}
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['Rc_radial'\]"):
        MBPParameters.from_dict({**params, "Rc_radial": 4.6}, species="Si")
    missing = dict(params)
    del missing["zeta"], missing["ThetasN"]
    with pytest.raises(ValueError, match=r"missing key\(s\) \['zeta', 'ThetasN'\]"):
        MBPParameters.from_dict(missing, species="Si")
    with pytest.raises(ValueError, match="no species"):
        MBPParameters.from_dict(params)
    with pytest.raises(ValueError, match="both"):
        MBPParameters.from_dict({**params, "species": ["Si"]}, species="Si")


@pytest.mark.parametrize("change, message", [
    ({"RsN_rad": 0}, "RsN_rad must be a positive integer"),
    ({"ThetasN": 2.5}, "ThetasN must be a positive integer"),
    ({"Rc_ang": -1.0}, "Rc_ang must be > 0"),
    ({"eta_rad": -1.0}, "eta_rad must be >= 0"),
    ({"epsilon": float("nan")}, "epsilon must be finite"),
    ({"zeta": "50"}, "zeta must be a number"),
    ({"species": ()}, "at least one"),
    ({"species": ("Ge", "Ge")}, "duplicates"),
])
def test_bad_parameters(change, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(SEED, **change)


# ------------------------------------------------------------------------------------------------
# Opt-in comparison with PANNA's own numbers
# ------------------------------------------------------------------------------------------------
def test_matches_panna_reference():
    ref_dir = os.environ.get("KAPPAFLOW_PANNA_REFERENCE_DIR")
    if not ref_dir:
        pytest.skip("set KAPPAFLOW_PANNA_REFERENCE_DIR to a directory of PANNA mBP reference *.npz "
                    "files to compare with PANNA's own G-vectors")
    files = sorted(Path(ref_dir).glob("*.npz"))
    assert files, f"no *.npz files in KAPPAFLOW_PANNA_REFERENCE_DIR={ref_dir}"
    for path in files:
        ref = np.load(path, allow_pickle=False)
        species = str(ref["species"]).replace(",", " ").split()
        params = MBPParameters.from_dict(json.loads(str(ref["params"])), species=species)
        desc = compute_descriptors(ref["positions"], ref["cell"], [str(s) for s in ref["symbols"]], params)
        dG = desc.dense_dG()
        for name, ours, theirs in [("G", desc.G, ref["G"]), ("dG", dG, ref["dG"])]:
            assert ours.shape == theirs.shape, (path.name, name)
            np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-10, err_msg=f"{path.name} {name}")
            large = np.abs(theirs) > 1e-3
            assert large.sum() > 10
            np.testing.assert_allclose(ours[large], theirs[large], rtol=1e-10, atol=0,
                                       err_msg=f"{path.name} {name} (relative, |value| > 1e-3)")


# ------------------------------------------------------------------------------------------------
# Loop-based reference
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["si_prim", "si_prim_rattled", "ges2", "ges2_rattled_wide",
                                  "skewed_ges2", "cluster_open", "slab", "eps_panna1", "rsst"])
def test_vectorised_matches_loop_reference(case):
    pbc = (True, True, True)
    p = SEED
    if case == "si_prim":
        (pos, cell, sym), p = si_primitive(), SI
    elif case == "si_prim_rattled":
        (pos, cell, sym), p = si_primitive(rattle=0.1), SI
    elif case == "ges2":
        pos, cell, sym = ges2_cell()
    elif case == "ges2_rattled_wide":
        (pos, cell, sym), p = ges2_cell(rattle=0.1), WIDE
    elif case == "skewed_ges2":
        pos, cell, sym = skewed_ges2()
    elif case == "cluster_open":
        (pos, cell, sym), pbc = ges2_cluster(), (False, False, False)
    elif case == "slab":
        (pos, cell, sym), pbc, p = skewed_ges2(), (True, True, False), WIDE
    elif case == "eps_panna1":
        (pos, cell, sym), p = ges2_cell(rattle=0.1), dataclasses.replace(WIDE, epsilon=1e-2)
    elif case == "rsst":
        (pos, cell, sym), p = ges2_cell(rattle=0.1), dataclasses.replace(SEED, Rsst_rad=0.21, Rsst_ang=0.5)
    fast = compute_descriptors(pos, cell, sym, p, pbc=pbc, derivatives=False).G
    slow = slow_gvectors(pos, cell, sym, p, pbc=pbc)
    assert np.abs(slow).max() > 0.1
    assert np.count_nonzero(slow[:, p.radial_size:] > 1e-6) > 0, "angular part not exercised"
    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-12)


def test_own_images_contribute():
    """In the 2-atom Si cell, each atom's radial block counts its own images (12 at 3.84 Å)."""
    pos, cell, sym = si_primitive()
    with_images = compute_descriptors(pos, cell, sym, SI, derivatives=False).G
    one_atom = compute_descriptors(pos[:1], cell, sym[:1], SI, derivatives=False).G
    a_len = np.linalg.norm(cell[0])
    expected = 12 * np.exp(-SI.eta_rad * (a_len - SI.radial_centres_ang) ** 2) * \
        0.5 * (1 + np.cos(np.pi * a_len / SI.Rc_rad))
    np.testing.assert_allclose(one_atom[0, :SI.RsN_rad], expected, rtol=1e-13, atol=1e-300)
    assert with_images[0, :SI.RsN_rad].sum() > one_atom[0, :SI.RsN_rad].sum()


# ------------------------------------------------------------------------------------------------
# Derivatives
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["si_prim", "ges2_seed", "ges2_wide", "skewed_slab", "cluster_open"])
def test_derivatives_match_finite_differences(case):
    pbc = (True, True, True)
    if case == "si_prim":          # own images in both radial and angular neighbour shells
        (pos, cell, sym), p = si_primitive(rattle=0.08, seed=1), SI
    elif case == "ges2_seed":
        (pos, cell, sym), p = ges2_cell(rattle=0.08, seed=2), SEED
    elif case == "ges2_wide":
        (pos, cell, sym), p = ges2_cell(rattle=0.08, seed=4), WIDE
    elif case == "skewed_slab":
        (pos, cell, sym), p, pbc = skewed_ges2(), WIDE, (True, False, True)
    elif case == "cluster_open":
        (pos, cell, sym), p, pbc = ges2_cluster(), WIDE, (False, False, False)
    desc = compute_descriptors(pos, cell, sym, p, pbc=pbc)
    analytic = desc.dense_dG()
    numeric = finite_difference_dG(pos, cell, sym, p, pbc=pbc)
    assert np.abs(numeric).max() > 0.1
    np.testing.assert_allclose(analytic, numeric, rtol=0, atol=1e-6)
    # G with and without derivatives is the same
    np.testing.assert_array_equal(desc.G, compute_descriptors(pos, cell, sym, p, pbc=pbc,
                                                              derivatives=False).G)


def test_sparse_pattern_and_sum_rule():
    pos, cell, sym = skewed_ges2()
    desc = compute_descriptors(pos, cell, sym, WIDE)
    n = len(pos)
    pairs = desc.dG_pairs
    assert pairs.dtype == np.int64 and desc.dG_values.shape == (len(pairs), WIDE.g_size, 3)
    keys = pairs[:, 0] * n + pairs[:, 1]
    assert np.all(np.diff(keys) > 0), "rows sorted by (i, k) and unique"
    assert {(i, i) for i in range(n)} <= set(map(tuple, pairs.tolist()))
    # every off-diagonal row has some image of k within the cutoff of i
    atoms = Atoms(sym, positions=pos, cell=cell, pbc=True)
    for i, k in pairs:
        if i != k:
            assert atoms.get_distance(i, k, mic=True) < WIDE.cutoff_ang + 1e-9
    # translation invariance: sum over k of dG_i/dR_k = 0
    dense = desc.dense_dG()
    assert np.abs(dense.sum(axis=2)).max() < 1e-12
    # the sparse layout holds everything that is non-zero
    full = np.zeros((n, n), dtype=bool)
    full[pairs[:, 0], pairs[:, 1]] = True
    assert not np.any(np.abs(dense).max(axis=(1, 3))[~full])


def test_forces_from_dE_dG_match_energy_gradient():
    pos, cell, sym = ges2_cell(rattle=0.08, seed=7)
    weights = np.random.default_rng(0).standard_normal(SEED.g_size)

    def energy(x):
        g = compute_descriptors(x, cell, sym, SEED, derivatives=False).G
        return float(np.sum(np.sin(g) @ weights))

    desc = compute_descriptors(pos, cell, sym, SEED)
    forces = desc.forces_from_dE_dG(np.cos(desc.G) * weights[None, :])
    h = 1e-5
    numeric = np.zeros_like(pos)
    for k in range(len(pos)):
        for c in range(3):
            plus, minus = pos.copy(), pos.copy()
            plus[k, c] += h
            minus[k, c] -= h
            numeric[k, c] = -(energy(plus) - energy(minus)) / (2 * h)
    np.testing.assert_allclose(forces, numeric, rtol=0, atol=1e-6)
    assert np.abs(forces.sum(axis=0)).max() < 1e-10, "no net force"
    dense = desc.dense_dG()
    np.testing.assert_allclose(forces, -np.einsum("ig,igkc->kc", np.cos(desc.G) * weights, dense),
                               rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="shape"):
        desc.forces_from_dE_dG(np.zeros(3))


# ------------------------------------------------------------------------------------------------
# Invariances
# ------------------------------------------------------------------------------------------------
def test_translation_invariance():
    pos, cell, sym = skewed_ges2()
    ref = compute_descriptors(pos, cell, sym, WIDE).G
    for shift in ([0.37, -1.2, 2.9], cell[0] * 3 - cell[2], [100.0, -50.0, 7.0]):
        moved = compute_descriptors(pos + np.asarray(shift), cell, sym, WIDE).G
        np.testing.assert_allclose(moved, ref, rtol=0, atol=1e-11)
    # wrapping atoms into the cell changes nothing either
    wrapped = Atoms(sym, positions=pos + 5.0, cell=cell, pbc=True)
    wrapped.wrap()
    np.testing.assert_allclose(descriptors_for_atoms(wrapped, WIDE).G, ref, rtol=0, atol=1e-11)


def test_permutation_of_same_species_atoms():
    pos, cell, sym = ges2_cell(rattle=0.08, seed=9)
    desc = compute_descriptors(pos, cell, sym, WIDE)
    perm = np.array([1, 0, 4, 2, 5, 3])          # Ge <-> Ge, S among S
    assert [sym[k] for k in perm] == sym
    other = compute_descriptors(pos[perm], cell, sym, WIDE)
    np.testing.assert_allclose(other.G, desc.G[perm], rtol=0, atol=1e-12)
    np.testing.assert_allclose(other.dense_dG(), desc.dense_dG()[perm][:, :, perm], rtol=0, atol=1e-12)


def test_rotation_of_cell_and_positions():
    pos, cell, sym = skewed_ges2()
    rng = np.random.default_rng(11)
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    rot = q * np.sign(np.diag(r))
    if np.linalg.det(rot) < 0:
        rot[:, 0] *= -1
    desc = compute_descriptors(pos, cell, sym, WIDE)
    turned = compute_descriptors(pos @ rot.T, cell @ rot.T, sym, WIDE)
    np.testing.assert_allclose(turned.G, desc.G, rtol=0, atol=1e-11)
    np.testing.assert_allclose(turned.dense_dG(), desc.dense_dG() @ rot.T, rtol=0, atol=1e-10)


# ------------------------------------------------------------------------------------------------
# API details and errors
# ------------------------------------------------------------------------------------------------
def test_descriptors_for_atoms_and_no_derivatives():
    pos, cell, sym = ges2_cell(rattle=0.05)
    atoms = Atoms(sym, positions=pos, cell=cell, pbc=True)
    a = descriptors_for_atoms(atoms, SEED)
    b = compute_descriptors(pos, cell, sym, SEED)
    np.testing.assert_array_equal(a.G, b.G)
    np.testing.assert_array_equal(a.dG_values, b.dG_values)
    assert a.G.dtype == np.float64 and a.dG_values.dtype == np.float64
    assert a.species_index.tolist() == [0, 0, 1, 1, 1, 1]
    c = descriptors_for_atoms(atoms, SEED, derivatives=False)
    assert isinstance(c, Descriptors) and not c.has_derivatives and c.dG_pairs is None
    with pytest.raises(ValueError, match="without derivatives"):
        c.dense_dG()


def test_isolated_atom_and_empty_structure():
    one = compute_descriptors([[0.0, 0.0, 0.0]], None, ["Ge"], SEED, pbc=False)
    assert one.G.shape == (1, 128) and not one.G.any()
    assert one.dG_pairs.tolist() == [[0, 0]] and not one.dG_values.any()
    empty = compute_descriptors(np.zeros((0, 3)), None, [], SEED, pbc=False)
    assert empty.G.shape == (0, 128) and empty.dense_dG().shape == (0, 128, 0, 3)


def test_unknown_symbol_names_it_and_the_species():
    pos, cell, _ = ges2_cell()
    with pytest.raises(ValueError, match=r"'Si'.*\['Ge', 'S'\]"):
        compute_descriptors(pos, cell, ["Ge", "Ge", "S", "Si", "S", "S"], SEED)


@pytest.mark.parametrize("kwargs, message", [
    ({"positions_ang": np.zeros((6, 2))}, r"shape \(n_atoms, 3\)"),
    ({"symbols": ["Ge", "S"]}, "2 symbols for 6 positions"),
    ({"cell_ang": None}, "cell_ang is required"),
    ({"cell_ang": np.diag([3.5, 3.5, 0.0])}, "singular"),
    ({"cell_ang": np.eye(2)}, r"shape \(3, 3\)"),
    ({"pbc": (True, True)}, "three bools"),
    ({"positions_ang": np.zeros((6, 3))}, "overlap"),
    ({"positions_ang": np.full((6, 3), np.nan)}, "non-finite"),
    ({"params": {"Rc_rad": 4.6}}, "MBPParameters"),
])
def test_bad_inputs(kwargs, message):
    pos, cell, sym = ges2_cell()
    args = {"positions_ang": pos, "cell_ang": cell, "symbols": sym, "params": SEED, **kwargs}
    with pytest.raises((ValueError, TypeError), match=message):
        compute_descriptors(**args)


def test_chunked_and_bincount_paths_agree(monkeypatch):
    """Small triplet chunks and the numpy<1.25 bincount path give the same numbers."""
    import kappaflow.ml.gvectors as gv

    pos, cell, sym = skewed_ges2()
    ref = compute_descriptors(pos, cell, sym, WIDE)
    monkeypatch.setattr(gv, "_TRIPLET_CHUNK", 7)
    monkeypatch.setattr(gv, "_FAST_ADD_AT", not gv._FAST_ADD_AT)
    other = compute_descriptors(pos, cell, sym, WIDE)
    np.testing.assert_allclose(other.G, ref.G, rtol=0, atol=1e-13)
    np.testing.assert_array_equal(other.dG_pairs, ref.dG_pairs)
    np.testing.assert_allclose(other.dG_values, ref.dG_values, rtol=0, atol=1e-13)
