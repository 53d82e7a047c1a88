"""The active-learning loop's steps without Snakemake (kappaflow.al.loop): pool, seed, stopping rules,
failed runs, and the κ store that takes DFT forces only where the loop paid for pw.x."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kappaflow import config as kfconfig
from kappaflow import dft, steps
from kappaflow.al import loop
from kappaflow.al.settings import AlSettings
from kappaflow.errors import ConfigError, KappaflowError
from kappaflow.qe.pwin import read_pw_input
from kappaflow.structure import write_structure

REPO = Path(__file__).resolve().parents[1]
MOCK = "kappaflow-mock-pw --model stillinger-weber-si"


def _load(overrides=None):
    """The shipped AL config, resolved from the repository root (its paths are relative to it)."""
    import os

    here = os.getcwd()
    os.chdir(REPO)
    try:
        return kfconfig.load(REPO / "config/mock/si_al.yaml", overrides=overrides, check_files=False)
    finally:
        os.chdir(here)


CFG = _load()


def _al_cfg(**kw):
    return dict(CFG["ml"]["al"], **kw)


@pytest.fixture
def si_sow(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = CFG
    sow_cfg = dict(cfg["sow"], pair_cutoff_ang=2.5)
    dft_cfg = dict(cfg["dft"], pw_command=MOCK, pseudo_dir=None)
    write_structure(tmp_path / "unit.json", read_pw_input(REPO / "config/systems/si/Si.scf.in").atoms, "test")
    manifest = steps.run_sow(tmp_path / "unit.json", REPO / "config/systems/si/Si.sc.in", sow_cfg, dft_cfg,
                             tmp_path / "dft", tmp_path / "manifest.json", tmp_path / "disp.yaml")
    return {"dir": tmp_path, "sow": sow_cfg, "dft": dft_cfg, "manifest": manifest, "cfg": cfg}


def _pool(s, stability=True, **al):
    d = s["dir"]
    return loop.build_pool(d / "unit.json", REPO / "config/systems/si/Si.sc.in", d / "manifest.json",
                           d / "disp.yaml", s["sow"], s["dft"], _al_cfg(**al), stability, d / "dft",
                           d / "pool.json")


def test_budget_below_one_run_and_an_empty_pool_are_refused_at_start_up():
    with pytest.raises(ConfigError, match=r"max_pw_runs = 0: the budget is smaller than one pw.x run"):
        _load({"ml": {"al": {"max_pw_runs": 0}}})
    with pytest.raises(ConfigError, match="the pool is empty"):
        AlSettings.from_config({"pool_sow": False, "pool_random_per_amplitude": 0})


def test_pool_holds_sow_and_rattled_supercells_and_leaves_gated_pairs_out(si_sow):
    pool = _pool(si_sow, stability=True)
    jobs = si_sow["manifest"]["jobs"]
    families = pd.Series([c["family"] for c in pool["candidates"]]).value_counts().to_dict()
    assert families["random:0.01"] == families["random:0.03"] == families["random:0.1"] == 10
    from kappaflow.stability import gated_keys

    pairs = gated_keys(si_sow["dir"] / "manifest.json", si_sow["dir"] / "disp.yaml")
    assert pairs
    sow_in_pool = {c["key"] for c in pool["candidates"] if c["family"].startswith("sow:")}
    assert pool["n_gated_sow_supercells_left_out"] > 0
    assert len(sow_in_pool) + pool["n_gated_sow_supercells_left_out"] == len({j["key"] for j in jobs})
    assert not (sow_in_pool & pairs) and pool["n_gated_sow_supercells_left_out"] == len(pairs)
    everything = _pool(si_sow, stability=False)
    assert everything["n_gated_sow_supercells_left_out"] == 0
    assert {c["key"] for c in everything["candidates"] if c["family"].startswith("sow:")} == {j["key"] for j in jobs}
    # every candidate is a pw.x input of the store, rattled by exactly the amplitude
    base = read_pw_input(si_sow["dir"] / "dft" / next(j["key"] for j in jobs if j["role"] == "base") / "pw.in")
    for c in pool["candidates"]:
        pw = read_pw_input(si_sow["dir"] / "dft" / c["key"] / "pw.in")
        assert len(pw.atoms) == c["n_atoms"] == 16
        if c["amplitude_ang"]:
            d = pw.atoms.positions - base.atoms.positions
            np.testing.assert_allclose(np.linalg.norm(d, axis=1), c["amplitude_ang"], rtol=1e-6)


def _select(s, r, previous, **kw):
    d = s["dir"]
    return loop.select_round(r, d / "pool.json", previous, d / "dft", _al_cfg(**kw.pop("al", {})), s["dft"],
                             None, 8, d / f"sel{r}.json", **kw)


def test_seed_round_then_stop_rules(si_sow, tmp_path):
    pool = _pool(si_sow)
    n = len(pool["candidates"])
    seed = _select(si_sow, 0, [])
    assert len(seed["keys"]) == max(2, int(np.ceil(0.1 * n))) and not seed["stop"]
    assert seed == _select(si_sow, 0, []), "the seed is reproducible"
    d = si_sow["dir"]
    for key in seed["keys"]:
        dft.run_pw(d / "dft" / key / "pw.in", d / "dft" / key / "pw.out", MOCK, log=lambda _: None)
    # scores of a committee: small everywhere, large on two random candidates
    rows = [{"key": c["key"], "family": c["family"], "in_fit": c["family"].startswith("sow"),
             "trained": c["key"] in seed["keys"], "sigma_max_ev_per_ang": 1e-4, "sigma_rms_ev_per_ang": 5e-5,
             "force_max_ev_per_ang": 0.1} for c in pool["candidates"]]
    uncertain = [i for i, c in enumerate(pool["candidates"]) if c["family"] == "random:0.1"][:2]
    for i in uncertain:
        rows[i]["sigma_max_ev_per_ang"] = 0.05
    pd.DataFrame(rows).to_csv(d / "scores.csv", index=False)
    T = np.array([100.0, 300.0])

    def kappa(path, value):
        from kappaflow.bte import KappaResult, write_kappa_csv

        write_kappa_csv(path, KappaResult(T, np.array([np.eye(3) * value] * 2)))
        return path

    k0, k1, k2 = kappa(d / "k0.csv", 100.0), kappa(d / "k1.csv", 150.0), kappa(d / "k2.csv", 150.5)
    # κ changed by 50 %: go on, and the two uncertain candidates are in the batch
    r1 = _select(si_sow, 1, [d / "sel0.json"], scores_path=d / "scores.csv", kappa_paths=[k0, k1])
    assert not r1["stop"] and {rows[i]["key"] for i in uncertain} <= set(r1["keys"])
    assert r1["kappa_change"] == pytest.approx(0.5)
    # κ changed by 0.3 % and σ below the tolerance: converged
    r2 = _select(si_sow, 2, [d / "sel0.json"], scores_path=d / "scores.csv", kappa_paths=[k1, k2])
    assert r2["stop"] and r2["reason"].startswith("converged") and r2["keys"] == []
    # the same κ, but σ above a tighter tolerance: not converged
    r2b = _select(si_sow, 2, [d / "sel0.json"], scores_path=d / "scores.csv", kappa_paths=[k1, k2],
                  al={"force_tolerance_ev_per_ang": 5e-5})
    assert not r2b["stop"]
    # the budget is spent: stop with the count
    r3 = _select(si_sow, 1, [d / "sel0.json"], scores_path=d / "scores.csv", kappa_paths=[k0, k1],
                 al={"max_pw_runs": len(seed["keys"])})
    assert r3["stop"] and r3["reason"].startswith(f"budget spent: {len(seed['keys'])} pw.x runs")
    # a noise study's tolerance.json wins over the configured value
    (d / "tolerance.json").write_text(json.dumps({"tolerance_ev_per_ang": 2e-4}))
    assert loop.force_tolerance(AlSettings.from_config(_al_cfg(tolerance_file=str(d / "tolerance.json")))) == \
        (2e-4, str(d / "tolerance.json"))
    (d / "bad.json").write_text(json.dumps({"tolerance_ev_per_ang": 0.0}))
    with pytest.raises(ConfigError, match="found no amplitude"):
        loop.force_tolerance(AlSettings.from_config(_al_cfg(tolerance_file=str(d / "bad.json"))))


def test_a_failed_run_is_skipped_or_stops_the_loop(si_sow, tmp_path):
    _pool(si_sow)
    d = si_sow["dir"]
    seed = _select(si_sow, 0, [])
    good, bad = seed["keys"][0], seed["keys"][1]
    dft.run_pw(d / "dft" / good / "pw.in", d / "dft" / good / "pw.out", MOCK, log=lambda _: None)
    (d / "dft" / bad / "failure.json").write_text(json.dumps({"reason": "test"}))
    assert loop.computed_keys([d / "sel0.json"], d / "dft", "skip") == sorted(set(seed["keys"]) - {bad})
    with pytest.raises(KappaflowError, match=rf"selected candidate {bad} failed.*on_failure is 'stop'"):
        loop.computed_keys([d / "sel0.json"], d / "dft", "stop")
    # a failed run counts as spent (the budget) and is listed
    pd.DataFrame([{"key": c["key"], "family": c["family"], "in_fit": c["family"].startswith("sow"),
                   "trained": False, "sigma_max_ev_per_ang": 1.0, "sigma_rms_ev_per_ang": 1.0,
                   "force_max_ev_per_ang": 1.0} for c in loop.read_pool(d / "pool.json")]).to_csv(
        d / "scores.csv", index=False)
    r = _select(si_sow, 1, [d / "sel0.json"], scores_path=d / "scores.csv", kappa_paths=[])
    assert r["failed_keys"] == [bad] and r["spent_pw_runs"] == len(seed["keys"])
    assert not set(r["keys"]) & set(seed["keys"])


def test_kappa_store_takes_dft_forces_only_where_the_loop_ran_pw(si_sow):
    """The DFT route may have filled the store: a round's κ still uses DFT only for the loop's runs."""
    from kappaflow.ml.forcesfile import write_forces
    from kappaflow.ml.steps import supercell_keys

    d = si_sow["dir"]
    keys = supercell_keys(d / "manifest.json")
    for key in keys:  # the whole DFT route ran in this results folder
        dft.run_pw(d / "dft" / key / "pw.in", d / "dft" / key / "pw.out", MOCK, log=lambda _: None)
    mine = sorted(keys)[:2]
    (d / "sel0.json").write_text(json.dumps({"round": 0, "keys": mine, "stop": False}))
    write_forces(d / "forces.dat", {k: np.zeros((n, 3)) for k, n in keys.items()})
    sources = loop.inject_stage(d / "manifest.json", d / "forces.dat", [d / "sel0.json"], d / "dft",
                                d / "store", _al_cfg())
    assert {k for k, v in sources.items() if v == "dft"} == set(mine)
    assert json.loads((d / "store/provenance.json").read_text())["n_dft"] == 2


def test_baseline_fit_predicts_mock_forces_it_never_saw_and_its_forces_are_minus_the_energy_gradient(si_sow):
    """The Δ-learning baseline (symfc FC2 + FC3 of the loop's runs) against the mock's own forces on a
    rattled supercell outside the fit, and against finite differences of its own energy."""
    from kappaflow.al.baseline import Baseline
    from kappaflow.qe.pwout import read_pw_output

    pool = _pool(si_sow)
    d = si_sow["dir"]
    rattled = [c["key"] for c in pool["candidates"] if c["family"] in ("random:0.03", "random:0.1")]
    train, test = rattled[:4], [c["key"] for c in pool["candidates"] if c["family"] == "random:0.03"][-1]
    for key in train + [test]:
        dft.run_pw(d / "dft" / key / "pw.in", d / "dft" / key / "pw.out", MOCK, log=lambda _: None)
    (d / "sel0.json").write_text(json.dumps({"round": 0, "keys": train, "stop": False}))
    rec = loop.fit_round_baseline(d / "manifest.json", d / "disp.yaml", d / "dft", [d / "sel0.json"], "skip",
                                  d / "b.npz", d / "b.json", max_displacement_ang=None)
    assert rec["orders"] == "fc2+fc3" and rec["n_runs"] == 4
    b = Baseline.load(d / "b.npz")
    pw = read_pw_input(d / "dft" / test / "pw.in")
    f_mock = read_pw_output(d / "dft" / test / "pw.out", expected_n_atoms=16).forces_ev_per_ang
    f_base, _ = b.forces_energy(pw.atoms.positions, np.asarray(pw.atoms.cell))
    rel = np.linalg.norm(f_base - f_mock) / np.linalg.norm(f_mock)
    print(f"baseline on an unseen 0.03 Å rattle: {100 * rel:.2f} % of the force norm")
    assert rel < 0.05
    # forces = -dE/du by central differences
    x = pw.atoms.positions.copy()
    h = 1e-5
    for i, a in [(0, 0), (5, 2), (11, 1)]:
        xp, xm = x.copy(), x.copy()
        xp[i, a] += h
        xm[i, a] -= h
        fd = -(b.forces_energy(xp)[1] - b.forces_energy(xm)[1]) / (2 * h)
        assert fd == pytest.approx(f_base[i, a], rel=1e-6, abs=1e-9)
    # a structure that is not a displaced copy of the supercell is refused
    with pytest.raises(KappaflowError, match="not a displaced copy"):
        b.forces_energy(x + 0.7)


def test_aimd_snapshots_join_the_pool_and_their_md_run_is_billed(si_sow):
    """ml.al.pool_aimd: a mock pw.x md run of the supercell (the ML route's plan_aimd / sow_snapshots),
    its snapshots become candidates of family aimd, and the md run counts as spent before the seed."""
    from kappaflow.ml.steps import plan_aimd, sow_snapshots

    d = si_sow["dir"]
    aimd_cfg = {"temperature_k": 300.0, "steps": 30, "timestep_fs": 1.0, "equilibration_steps": 10,
                "n_snapshots": 4}
    plan = plan_aimd(d / "unit.json", REPO / "config/systems/si/Si.sc.in", si_sow["sow"], si_sow["dft"], aimd_cfg,
                     d / "dft", d / "aimd_plan.json", "mock")
    md = d / "dft" / plan["md_key"]
    dft.run_pw(md / "pw.in", md / "pw.out", MOCK, log=lambda _: None)
    sow_snapshots(d / "aimd_plan.json", REPO / "config/systems/si/Si.sc.in", si_sow["dft"], d / "dft",
                  d / "snapshots.json")
    with pytest.raises(ConfigError, match="pool_aimd"):
        _pool(si_sow, pool_aimd=True)
    d = si_sow["dir"]
    pool = loop.build_pool(d / "unit.json", REPO / "config/systems/si/Si.sc.in", d / "manifest.json",
                           d / "disp.yaml", si_sow["sow"], si_sow["dft"], _al_cfg(pool_aimd=True), True, d / "dft",
                           d / "pool.json", d / "snapshots.json")
    aimd = [c for c in pool["candidates"] if c["family"] == "aimd"]
    snaps = json.loads((d / "snapshots.json").read_text())
    assert sorted(c["key"] for c in aimd) == sorted(j["key"] for j in snaps["jobs"]) and len(aimd) == 4
    for c in aimd:  # a snapshot is a plain SCF input of the store (the md frame's positions)
        assert read_pw_input(d / "dft" / c["key"] / "pw.in").atoms.positions.shape == (16, 3)
    assert loop.pool_runs(d / "pool.json") == [{"key": plan["md_key"], "what": "AIMD pw.x md run",
                                                "md_steps": snaps["n_frames"]}]
    with pytest.raises(KappaflowError, match="spend the whole budget"):
        _select(si_sow, 0, [], al={"pool_aimd": True, "max_pw_runs": 1})
    seed = _select(si_sow, 0, [], al={"pool_aimd": True})
    r1 = _select(si_sow, 1, [d / "sel0.json"], al={"pool_aimd": True, "max_pw_runs": len(seed["keys"]) + 1},
                 scores_path=_flat_scores(d, pool), kappa_paths=[])
    assert r1["spent_pw_runs"] == len(seed["keys"]) + 1 and r1["pool_runs"] == [plan["md_key"]]
    assert r1["stop"] and r1["reason"].startswith("budget spent")


def _flat_scores(d, pool):
    rows = [{"key": c["key"], "family": c["family"], "in_fit": c["family"].startswith("sow"), "trained": False,
             "sigma_max_ev_per_ang": 1e-4, "sigma_rms_ev_per_ang": 5e-5, "force_max_ev_per_ang": 0.1}
            for c in pool["candidates"]]
    pd.DataFrame(rows).to_csv(d / "flat_scores.csv", index=False)
    return d / "flat_scores.csv"
