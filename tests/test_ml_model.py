"""Network potentials (kappaflow.ml.model) and on-the-fly TF descriptors (kappaflow.ml.ontheflytf).

Independent routes only: finite differences of the network energy, the numpy descriptor code of
kappaflow.ml.gvectors, round trips through files, and seeds.
"""

import csv
import json

import numpy as np
import pytest

from _ml_data import GES2_WIDE, SI_SET_A, SI_SMALL, ges2_cell, si_cubic, si_primitive, sw_si_records
from kappaflow.ml.gvectors import compute_descriptors, descriptors_for_atoms
from kappaflow.ml.model import (Committee, NetworkPotential, NetworkSettings, TrainSettings, _init_weights,
                                evaluate_records, split_keys, split_records, train_model)
from kappaflow.ml.tfrecords import record_from_atoms

TINY_NET = NetworkSettings(hidden_layers=(16, 8))


def random_model(params, seed=0, network=TINY_NET, standardized=True):
    """A network potential with random weights (and non-trivial normalisation and offsets)."""
    rng = np.random.default_rng(seed)
    S, g = params.n_species, params.g_size
    w = _init_weights(rng, (g,) + network.hidden_layers + (1,), S)
    w = [[(W, rng.normal(0, 0.3, b.shape)) for W, b in layers] for layers in w]
    mean = rng.uniform(0, 0.5, (S, g)) if standardized else np.zeros((S, g))
    std = rng.uniform(0.5, 2.0, (S, g)) if standardized else np.ones((S, g))
    return NetworkPotential(params, network, w, mean, std, rng.normal(-3, 1, S), 0.7)


def fd_forces(model, atoms, params, h=1e-5):
    pos0 = atoms.positions.copy()
    F = np.zeros_like(pos0)
    for k in range(len(atoms)):
        for c in range(3):
            e = []
            for sgn in (1, -1):
                p = pos0.copy()
                p[k, c] += sgn * h
                d = compute_descriptors(p, atoms.cell[:], atoms.get_chemical_symbols(), params, derivatives=False)
                e.append(model.atomic_energies(d).sum())
            F[k, c] = -(e[0] - e[1]) / (2 * h)
    return F


# ------------------------------------------------------------------------------------------------
# settings and splits
# ------------------------------------------------------------------------------------------------
def test_settings_round_trip_and_validation():
    st = TrainSettings(epochs=5, network=NetworkSettings(hidden_layers=(8,), activation="tanh"))
    assert TrainSettings.from_dict(json.loads(json.dumps(st.to_dict()))) == st
    assert NetworkSettings().hidden_layers == (64, 32) and NetworkSettings().activation == "gaussian"
    d = TrainSettings()
    assert (d.batch_size, d.learning_rate, d.force_weight, d.energy_weight) == (20, 1e-3, 0.3, 1.0)
    with pytest.raises(ValueError, match="activation"):
        NetworkSettings(activation="relu")
    with pytest.raises(ValueError, match="unknown key"):
        TrainSettings.from_dict({"epoch": 3})
    with pytest.raises(ValueError, match="validation_fraction"):
        TrainSettings(validation_fraction=1.0)
    lr = TrainSettings(epochs=11, learning_rate=1e-3, learning_rate_final=1e-5)
    assert lr.learning_rate_at(0) == pytest.approx(1e-3) and lr.learning_rate_at(10) == pytest.approx(1e-5)
    assert lr.learning_rate_at(5) == pytest.approx(1e-4)


def test_split_keys_deterministic():
    keys = [f"k{i:02d}" for i in range(25)]
    tr, va = split_keys(keys, 0.2, seed=3)
    assert len(va) == 5 and len(tr) == 20 and not set(tr) & set(va) and sorted(tr + va) == keys
    assert split_keys(list(reversed(keys)), 0.2, seed=3) == (tr, va)
    assert split_keys(keys, 0.2, seed=4) != (tr, va)
    assert split_keys(keys, 0.0, seed=3) == (keys, [])
    assert len(split_keys(keys[:3], 0.01, seed=0)[1]) == 1
    recs = [{"key": k} for k in keys]
    rtr, rva = split_records(recs, 0.2, seed=3)
    assert [r["key"] for r in rtr] == tr and [r["key"] for r in rva] == va


# ------------------------------------------------------------------------------------------------
# forces of the numpy evaluation and of the training graph against finite differences
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["si_images", "ges2"])
def test_forces_equal_finite_differences(case):
    if case == "si_images":
        params, atoms = SI_SMALL, si_primitive(rattle=0.05, seed=2)
    else:
        params, atoms = GES2_WIDE, ges2_cell(rattle=0.06, seed=2)
    model = random_model(params, seed=1)
    desc = descriptors_for_atoms(atoms, params)
    E, F = model.energy_and_forces(desc)
    assert E == pytest.approx(model.atomic_energies(desc).sum(), abs=1e-12)
    F_fd = fd_forces(model, atoms, params)
    assert np.abs(F).max() > 1e-3
    np.testing.assert_allclose(F, F_fd, atol=1e-6, rtol=0)

    # The TF graph of the training loop (stored sparse dG, segment sums) gives the same forces.
    rec = record_from_atoms(atoms, params, "x", energy_ev=0.0, forces_ev_per_ang=np.zeros((len(atoms), 3)))
    out = evaluate_records(model, [rec, rec | {"key": "y"}])
    np.testing.assert_allclose(out["forces_ev_per_ang"][0], F_fd, atol=1e-6, rtol=0)
    np.testing.assert_allclose(out["forces_ev_per_ang"][1], F, atol=1e-12, rtol=0)
    assert out["energy_ev"][0] == pytest.approx(E, abs=1e-10)


# ------------------------------------------------------------------------------------------------
# training on Stillinger-Weber Si
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sw_data():
    recs = sw_si_records(24, seed=11)
    return split_records(recs, 0.25, seed=0)


def quick_settings(**kw):
    base = dict(epochs=30, batch_size=6, learning_rate=5e-3, learning_rate_final=1e-3, seed=1,
                network=TINY_NET, progress_every=10)
    base.update(kw)
    return TrainSettings(**base)


def read_metrics(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def trained(sw_data, tmp_path_factory):
    tr, va = sw_data
    out = tmp_path_factory.mktemp("model_a")
    lines = []
    summary = train_model(tr, va, SI_SMALL, quick_settings(), out, progress=lines.append)
    return out, summary, lines


def test_training_reduces_force_error_and_keeps_best(trained, sw_data):
    out, summary, lines = trained
    tr, va = sw_data
    rows = read_metrics(out / "metrics.csv")
    assert len(rows) == 30 and [int(r["epoch"]) for r in rows] == list(range(1, 31))
    val_f = np.array([float(r["val_force_rmse_mev_per_ang"]) for r in rows])
    train_f = np.array([float(r["train_force_rmse_mev_per_ang"]) for r in rows])
    ref_rms = 1000 * np.sqrt(np.mean(np.concatenate([r["forces_ev_per_ang"] for r in tr]) ** 2))
    assert train_f[-1] < 0.6 * train_f[0] and train_f[-1] < 0.6 * ref_rms
    assert val_f.min() < 0.6 * val_f[0]
    best = int(np.argmin(val_f)) + 1
    assert summary["best_epoch"] == best and summary["selected_on"] == "val"
    meta = json.loads((out / "model.json").read_text())
    assert meta["best_epoch"] == best and meta["complete"] is True and meta["seed"] == 1
    assert meta["species"] == ["Si"] and meta["descriptor"] == SI_SMALL.to_dict()
    assert meta["architecture"]["layer_sizes"] == [16, 16, 8, 1]
    assert len(lines) == 3 and lines[-1].startswith("epoch 30/30")

    # The stored model is the best epoch's: its validation RMSE (numpy evaluation) is that row's.
    model = NetworkPotential.load(out)
    assert model.metadata["weights_sha256"] == meta["weights_sha256"]
    err = []
    for r in va:
        desc = compute_descriptors(r["positions_ang"], r["cell_ang"], r["symbols"], SI_SMALL)
        err.append(model.energy_and_forces(desc)[1] - r["forces_ev_per_ang"])
    rmse = 1000 * np.sqrt(np.mean(np.concatenate(err) ** 2))
    assert rmse == pytest.approx(val_f[best - 1], rel=1e-9)
    assert evaluate_records(model, va)["force_rmse_mev_per_ang"] == pytest.approx(rmse, rel=1e-9)


def test_seed_determinism(trained, sw_data, tmp_path):
    out_a, summary_a, _ = trained
    tr, va = sw_data
    train_model(tr, va, SI_SMALL, quick_settings(), tmp_path / "b")
    train_model(tr, va, SI_SMALL, quick_settings(seed=2, epochs=5), tmp_path / "c")
    a, b = NetworkPotential.load(out_a), NetworkPotential.load(tmp_path / "b")
    c = NetworkPotential.load(tmp_path / "c")
    for name, arr in a.arrays().items():
        assert arr.tobytes() == b.arrays()[name].tobytes(), name
    assert not np.array_equal(a.weights[0][0][0], c.weights[0][0][0])
    assert (tmp_path / "b" / "metrics.csv").read_text().split("\n")[1].split(",")[:5] == \
        (out_a / "metrics.csv").read_text().split("\n")[1].split(",")[:5]


def test_no_validation_set_selects_on_training_rmse(sw_data, tmp_path):
    tr, _ = sw_data
    summary = train_model(tr, [], SI_SMALL, quick_settings(epochs=4, eval_every=2), tmp_path)
    rows = read_metrics(tmp_path / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [2, 4]
    assert rows[0]["val_force_rmse_mev_per_ang"] == ""
    best = 2 * (int(np.argmin([float(r["train_force_rmse_mev_per_ang"]) for r in rows])) + 1)
    assert summary["selected_on"] == "train" and summary["best_epoch"] == best


def test_killed_training_leaves_loadable_model(sw_data, tmp_path):
    tr, va = sw_data

    class Killed(Exception):
        pass

    def progress(line):
        if line.startswith("epoch 4/"):
            raise Killed

    with pytest.raises(Killed):
        train_model(tr, va, SI_SMALL, quick_settings(epochs=50, progress_every=2), tmp_path, progress=progress)
    model = NetworkPotential.load(tmp_path)
    assert model.metadata["complete"] is False and 1 <= model.metadata["best_epoch"] <= 4
    assert len(read_metrics(tmp_path / "metrics.csv")) == 4
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_species_mismatch_raises(sw_data, tmp_path):
    tr, va = sw_data
    with pytest.raises(ValueError, match="g_size"):
        train_model(tr, va, SI_SET_A, quick_settings(epochs=1), tmp_path)
    with pytest.raises(ValueError, match="both training and validation"):
        train_model(tr, tr[:1], SI_SMALL, quick_settings(epochs=1), tmp_path)


# ------------------------------------------------------------------------------------------------
# committee
# ------------------------------------------------------------------------------------------------
def test_committee_spread(trained, sw_data, tmp_path):
    out_a, _, _ = trained
    tr, va = sw_data
    train_model(tr, va, SI_SMALL, quick_settings(seed=5, epochs=10), tmp_path / "s5")
    atoms = si_cubic(rattle=0.08, seed=99)
    desc = descriptors_for_atoms(atoms, SI_SMALL)

    same = Committee.load([out_a, out_a, out_a]).predict(desc)
    single = NetworkPotential.load(out_a).evaluate(desc)
    assert same["forces_std_ev_per_ang"].shape == (8, 3)
    assert np.all(same["forces_std_ev_per_ang"] == 0) and same["energy_std_ev"] == 0
    np.testing.assert_allclose(same["forces_ev_per_ang"], single["forces_ev_per_ang"], atol=1e-13)
    assert same["energy_ev"] == pytest.approx(single["energy_ev"], abs=1e-10)

    diff = Committee.load([out_a, tmp_path / "s5"])
    pred = diff.predict(desc)
    assert np.all(pred["forces_std_ev_per_ang"] > 0) and pred["energy_std_ev"] > 0
    members = [NetworkPotential.load(d).evaluate(desc) for d in (out_a, tmp_path / "s5")]
    np.testing.assert_allclose(pred["members_forces"], [m["forces_ev_per_ang"] for m in members], atol=1e-12)
    mean = 0.5 * (members[0]["forces_ev_per_ang"] + members[1]["forces_ev_per_ang"])
    half = 0.5 * np.abs(members[0]["forces_ev_per_ang"] - members[1]["forces_ev_per_ang"])
    np.testing.assert_allclose(pred["forces_ev_per_ang"], mean, atol=1e-12)
    np.testing.assert_allclose(pred["forces_std_ev_per_ang"], half, atol=1e-12)

    # predict_many: descriptors (numpy) and atoms (on-the-fly TF) agree with predict
    many_atoms = [si_cubic(rattle=0.05, seed=s) for s in range(3)] + [si_cubic(0.03, 7, (2, 1, 1))]
    descs = [descriptors_for_atoms(a, SI_SMALL) for a in many_atoms]
    singles = [diff.predict(d) for d in descs]
    for batch in (diff.predict_many(descs), diff.predict_many(many_atoms), diff.predict_many(many_atoms, 20)):
        for p, q in zip(batch, singles):
            assert p["energy_ev"] == pytest.approx(q["energy_ev"], abs=1e-9)
            np.testing.assert_allclose(p["members_forces"], q["members_forces"], atol=1e-10)
            np.testing.assert_allclose(p["forces_std_ev_per_ang"], q["forces_std_ev_per_ang"], atol=1e-10)


# ------------------------------------------------------------------------------------------------
# on-the-fly descriptors in TensorFlow (acceptance: stored dG/dR chain rule == autodiff)
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["si_own_images", "ges2_two_species", "si_set_a_supercell"])
def test_on_the_fly_matches_stored_derivatives(case):
    from kappaflow.ml.ontheflytf import CommitteeEvaluator, build_geometry, descriptors_numpy

    if case == "si_own_images":
        params, atoms = SI_SMALL, si_primitive(rattle=0.05, seed=5)
        assert min(np.linalg.norm(atoms.cell[:], axis=1)) < params.cutoff_ang
    elif case == "ges2_two_species":
        params, atoms = GES2_WIDE, ges2_cell(rattle=0.05, seed=5)
        assert min(np.linalg.norm(atoms.cell[:], axis=1)) < params.Rc_ang
    else:
        params, atoms = SI_SET_A, si_cubic(rattle=0.04, seed=5)
    desc = descriptors_for_atoms(atoms, params)
    geom = build_geometry(atoms.positions, atoms.cell[:], atoms.get_chemical_symbols(), params)
    G = descriptors_numpy(geom, params)
    np.testing.assert_allclose(G, desc.G, atol=1e-12, rtol=0)

    models = [random_model(params, seed=s) for s in (3, 4)]
    for method in ("autodiff", "fused"):
        E, F, G2 = CommitteeEvaluator(Committee(models), method=method).evaluate(geom, return_descriptors=True)
        np.testing.assert_allclose(G2, desc.G, atol=1e-12, rtol=0)
        for m, model in enumerate(models):
            E_ref, F_ref = model.energy_and_forces(desc)      # chain rule through the stored dG/dR
            assert np.abs(F_ref).max() > 1e-3
            np.testing.assert_allclose(F[m], F_ref, atol=1e-10, rtol=0)
            assert E[m, 0] == pytest.approx(E_ref, abs=1e-10)
    # a single model (no member axis in the input) through the autodiff route
    E1, F1 = CommitteeEvaluator(models[0], method="autodiff").evaluate(geom)
    np.testing.assert_allclose(F1[0], models[0].energy_and_forces(desc)[1], atol=1e-10, rtol=0)


def test_on_the_fly_batches_structures():
    from kappaflow.ml.ontheflytf import build_geometry, concat_geometries, descriptors_numpy

    params = GES2_WIDE
    cells = [ges2_cell(rattle=0.04, seed=s) for s in range(3)]
    geoms = [build_geometry(a.positions, a.cell[:], a.get_chemical_symbols(), params) for a in cells]
    batch = concat_geometries(geoms, params)
    assert batch.n_structures == 3 and batch.n_atoms == 18
    G = descriptors_numpy(batch, params)
    for k, a in enumerate(cells):
        np.testing.assert_allclose(G[6 * k:6 * k + 6], descriptors_for_atoms(a, params, False).G, atol=1e-12)
