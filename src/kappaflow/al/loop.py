"""Query-by-Committee active learning: the named steps of the loop (docs/ml.md, "Active learning").

pool → round 0: a random seed of the pool → pw.x (the ordinary ``dft`` jobs) → dataset → G-vectors →
TFRecords → committee (one job per member) → predict the pool (committee spread σ per candidate) and the
sow's supercells → inject (DFT forces where the loop ran pw.x, ML forces elsewhere) → reap → BTE →
round r + 1: stop, or select a batch (:mod:`kappaflow.al.select`) → pw.x → ...

Files (``<results>/al``): ``pool.json`` (the candidates, their pw.x inputs are in the DFT store),
``round<r>/selected.json`` (the batch of round r and the decision to go on), ``round<r>/...`` (data, models,
predictions, κ of the committee of round r), ``final/`` (κ, summary, figures).

Every candidate's pw.x input is in the DFT store under its hash key, so a selected one runs as an
ordinary ``dft`` job, is never recomputed and counts in the bill.  Called by ``scripts/al_*.py``;
nothing here imports Snakemake.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from kappaflow import sow
from kappaflow.al.settings import AlSettings
from kappaflow.engine import engine_for
from kappaflow.errors import ConfigError, KappaflowError
from kappaflow.qe.pwin import check_template, read_pw_input
from kappaflow.steps import atomic_path, progress, pw_overrides_for_supercells
from kappaflow.tables import write_table

FAMILY_SOW = "sow"
FAMILY_RANDOM = "random"
FAMILY_AIMD = "aimd"
FAILURE_RECORD = "failure.json"  # written by kappaflow.dft next to a pw.out that could not be made


# --- pool -----------------------------------------------------------------------------------------
def random_displacements(n_atoms: int, amplitude_ang: float, rng) -> np.ndarray:
    """Every atom displaced by ``amplitude_ang`` in a uniformly random direction (phonopy's random
    displacements at fixed distance)."""
    v = rng.normal(size=(n_atoms, 3))
    return amplitude_ang * v / np.linalg.norm(v, axis=1)[:, None]


def build_pool(structure_path, template_path, manifest_path, disp_yaml_path, sow_cfg: dict, dft_cfg: dict,
               al_cfg: dict, stability_enabled: bool, store_dir, pool_path, aimd_snapshots_path=None) -> dict:
    """The candidates of the loop, none computed: the sow's supercells and rattled copies of the undisplaced
    supercell at several amplitudes.  Their pw.x inputs go into the DFT store (``sow.store_input``).

    While the stability gate is on, the sow's pair-displaced supercells stay out of the pool: the gate's
    promise is that none of them runs before FC2 from pw.x showed a stable lattice.

    With ``ml.al.pool_aimd`` the AIMD snapshots (``aimd_snapshots_path``, the ML route's
    ``aimd/snapshots.json``) join as family ``aimd``; the pw.x md run they come from has run by then, so
    the pool names it (``aimd_md_key``) and the bill counts it (:func:`pool_runs`)."""
    from kappaflow.ml.steps import undisplaced_supercell
    from kappaflow.stability import gated_keys

    settings = AlSettings.from_config(al_cfg)
    template = Path(template_path).read_text()
    check_template(template, str(template_path))
    manifest = sow.read_manifest(manifest_path)
    engine = engine_for(dft_cfg)
    overrides = pw_overrides_for_supercells(dft_cfg)
    candidates: dict[str, dict] = {}
    n_gated = 0
    if settings.pool_sow:
        gated = gated_keys(manifest_path, disp_yaml_path) if stability_enabled else frozenset()
        for job in manifest["jobs"]:
            if "output" in job:
                continue
            if job["key"] in gated:
                n_gated += 1
                continue
            candidates.setdefault(job["key"], {"key": job["key"], "family": f"{FAMILY_SOW}:{job['role']}",
                                               "n_atoms": int(job["n_atoms"]), "amplitude_ang": None})
    base = undisplaced_supercell(structure_path, sow_cfg)
    rng = np.random.default_rng(settings.random_seed)
    for amplitude in settings.pool_amplitudes_ang:
        for _ in range(settings.pool_random_per_amplitude):
            atoms = base.copy()
            atoms.positions = base.positions + random_displacements(len(base), float(amplitude), rng)
            text = sow.supercell_input_text(template, str(template_path), atoms, overrides)
            key = sow.store_input(store_dir, engine, text, str(template_path))
            candidates.setdefault(key, {"key": key, "family": f"{FAMILY_RANDOM}:{float(amplitude):g}",
                                        "n_atoms": len(atoms), "amplitude_ang": float(amplitude)})
    aimd_record = None
    if settings.pool_aimd:
        if not aimd_snapshots_path:
            raise ConfigError("ml.al.pool_aimd is true but no AIMD snapshots were given (the ML route's "
                              "aimd/snapshots.json)")
        aimd_record = json.loads(Path(aimd_snapshots_path).read_text())
        for job in aimd_record["jobs"]:
            candidates.setdefault(job["key"], {"key": job["key"], "family": FAMILY_AIMD, "n_atoms": int(job["n_atoms"]),
                                               "amplitude_ang": None, "md_frame": int(job["index"])})
    if not candidates:
        raise KappaflowError(f"{manifest_path}: the active-learning pool is empty (no sow supercell outside "
                             "the stability gate and no random supercells)")
    pool = {"candidates": sorted(candidates.values(), key=lambda c: (c["family"], c["key"])),
            "n_gated_sow_supercells_left_out": n_gated, "settings": al_cfg,
            "runs_spent_making_the_pool": ([{"key": aimd_record["md_key"], "what": "AIMD pw.x md run",
                                             "md_steps": int(aimd_record["n_frames"])}] if aimd_record else [])}
    with atomic_path(pool_path) as tmp:
        tmp.write_text(json.dumps(pool, indent=1))
    families = {}
    for c in pool["candidates"]:
        families[c["family"]] = families.get(c["family"], 0) + 1
    progress(f"al pool: {len(candidates)} candidates ({', '.join(f'{k} {v}' for k, v in sorted(families.items()))})"
             + (f"; {n_gated} pair-displaced sow supercells left out while the stability gate is on"
                if n_gated else ""))
    return pool


def read_pool(pool_paths) -> list[dict]:
    """The candidates of ``pool.json`` and of the MD pools of the rounds so far (one path or a list; a
    key listed twice is the same pw.x input, kept once, first listing first)."""
    if isinstance(pool_paths, (str, Path)):
        pool_paths = [pool_paths]
    out: dict[str, dict] = {}
    for path in pool_paths:
        for c in json.loads(Path(path).read_text())["candidates"]:
            out.setdefault(c["key"], c)
    return list(out.values())


def pool_runs(pool_paths) -> list[dict]:
    """pw.x runs the pool itself cost (the AIMD md run with ``ml.al.pool_aimd``): in every bill."""
    if isinstance(pool_paths, (str, Path)):
        pool_paths = [pool_paths]
    runs = {}
    for path in pool_paths:
        for run in json.loads(Path(path).read_text()).get("runs_spent_making_the_pool", []):
            runs.setdefault(run["key"], run)
    return list(runs.values())


# --- rounds ---------------------------------------------------------------------------------------
def read_selected(path) -> dict:
    return json.loads(Path(path).read_text())


def failed(store_dir, key) -> bool:
    """A pw.x run of the store that failed (after its SCF rescue) and has no output."""
    d = Path(store_dir) / key
    return (d / FAILURE_RECORD).exists() and not (d / "pw.out").exists()


def computed_keys(selected_paths, store_dir, on_failure: str = "skip") -> list[str]:
    """Keys of every batch so far whose pw.x run finished: the training data of the round.

    A failed run is left out (``on_failure: skip``) or stops the loop with its key and record
    (``on_failure: stop``)."""
    keys = []
    for path in selected_paths:
        for key in read_selected(path)["keys"]:
            if failed(store_dir, key):
                if on_failure == "stop":
                    raise KappaflowError(f"active learning: the pw.x run of selected candidate {key} failed "
                                         f"({Path(store_dir) / key / FAILURE_RECORD}); ml.al.on_failure is "
                                         "'stop' (set it to 'skip' to go on without it)")
                continue
            keys.append(key)
    return sorted(set(keys))


def selected_outputs(selected_paths, store_dir, on_failure: str = "skip") -> list[str]:
    """pw.x outputs the loop needs for its rounds so far (failed runs left out, see :func:`computed_keys`)."""
    return [str(Path(store_dir) / k / "pw.out") for k in computed_keys(selected_paths, store_dir, on_failure)]


def measured_wall_times(store_dir, n_atoms: dict) -> dict[int, list[float]]:
    """WALL times (s) of the finished runs ``n_atoms`` names (key -> atoms, from the pool), by size."""
    from kappaflow.dft import wall_time_or_none

    out: dict[int, list[float]] = {}
    for key, n in n_atoms.items():
        path = Path(store_dir) / key / "pw.out"
        t = wall_time_or_none(path) if path.exists() else None
        if t is not None:
            out.setdefault(int(n), []).append(t)
    return out


def candidate_costs(pool: list[dict], store_dir, done_keys, nodes_per_job: float,
                    cost_reference: dict | None, k_points: int) -> tuple[list[float], str]:
    """Node-hours per candidate: the median measured WALL time of the loop's finished runs of the same
    size (atoms³ from the nearest size), else ``plan.cost_reference``'s atoms³ × k-points model, at least
    one second per run; nan when neither is known (the budget then counts runs only)."""
    from kappaflow.plan import CostModel

    sizes = {c["key"]: c["n_atoms"] for c in pool if c["key"] in set(done_keys)}
    measured = {n: float(np.median(t)) for n, t in measured_wall_times(store_dir, sizes).items()}
    model = CostModel(measured=measured, reference=cost_reference)
    costs, source = [], "relative only"
    for c in pool:
        seconds, source = model.wall_time_s(int(c["n_atoms"]), k_points)
        # at least one second: a run reported as 0.00s WALL (the mock, a tiny cell) still costs a job
        costs.append(max(seconds, 1.0) / 3600.0 * float(nodes_per_job))
    return costs, source


def kappa_at(path, temperature_k: float):
    """The κ table of ``path`` and its diagonal (W/mK) at the tabulated temperature nearest ``temperature_k``."""
    from kappaflow.bte import read_kappa_csv

    k = read_kappa_csv(path)
    i = int(np.argmin(np.abs(k.temperatures_k - temperature_k)))
    return k, np.diag(k.kappa_w_per_mk[i]).astype(np.float64)


def force_tolerance(settings: AlSettings) -> tuple[float, str]:
    if settings.tolerance_file:
        path = Path(settings.tolerance_file)
        try:
            tol = float(json.loads(path.read_text())["tolerance_ev_per_ang"])
        except (OSError, ValueError, KeyError) as exc:
            raise ConfigError(f"ml.al.tolerance_file {path}: expected the noise study's tolerance.json with "
                              f"tolerance_ev_per_ang ({exc})") from None
        if tol <= 0:
            raise ConfigError(f"ml.al.tolerance_file {path}: tolerance_ev_per_ang is {tol} (the noise study "
                              "found no amplitude that keeps κ in its band)")
        return tol, str(path)
    if settings.force_tolerance_ev_per_ang is None:
        raise ConfigError("ml.al: give force_tolerance_ev_per_ang or tolerance_file")
    return float(settings.force_tolerance_ev_per_ang), "ml.al.force_tolerance_ev_per_ang"


def select_round(round_index: int, pool_path, previous_selected: list, store_dir, al_cfg: dict,
                 dft_cfg: dict, cost_reference: dict | None, k_points: int, out_path,
                 scores_path=None, kappa_paths: list | None = None) -> dict:
    """Round 0: the random seed.  Round r ≥ 1: stop (converged, budget spent, pool exhausted, last round)
    or the next batch, from the scores of round r − 1's committee.  Writes ``selected.json``."""
    import pandas as pd

    from kappaflow.al import select

    settings = AlSettings.from_config(al_cfg)
    pool = read_pool(pool_path)
    history = [read_selected(p) for p in previous_selected]
    asked = sorted({k for h in history for k in h["keys"]})
    done_keys = computed_keys(previous_selected, store_dir, settings.on_failure)
    failed_keys = sorted(set(asked) - set(done_keys))
    costs, cost_source = candidate_costs(pool, store_dir, done_keys, dft_cfg["nodes_per_job"], cost_reference,
                                         k_points)
    known_cost = all(math.isfinite(c) for c in costs)
    extra = pool_runs(pool_path)  # the AIMD md run (ml.al.pool_aimd): spent before round 0
    spent_runs = len(asked) + len(extra)
    spent_nh = (sum(c for c, p in zip(costs, pool) if p["key"] in set(asked)) if known_cost else None)
    if spent_nh is not None and extra:
        from kappaflow.dft import wall_time_or_none

        walls = [wall_time_or_none(Path(store_dir) / r["key"] / "pw.out") for r in extra]
        spent_nh += sum(w for w in walls if w) / 3600.0 * float(dft_cfg["nodes_per_job"])
    runs_left = settings.max_pw_runs - spent_runs
    frame = pd.DataFrame({"key": [c["key"] for c in pool], "family": [c["family"] for c in pool],
                          "cost_node_hours": costs if known_cost else [1.0] * len(pool),
                          "done": [c["key"] in set(asked) for c in pool]})
    # budgets in node-hours when the cost is known and a node-hour budget is set, else in runs (cost 1)
    use_nh = known_cost and settings.budget_node_hours is not None
    total_left = (settings.budget_node_hours - (spent_nh or 0.0)) if use_nh else float(runs_left)
    round_left = (settings.round_budget_node_hours if use_nh and settings.round_budget_node_hours else total_left)
    record = {"round": round_index, "keys": [], "stop": False, "reason": "", "spent_pw_runs": spent_runs,
              "spent_node_hours": spent_nh, "cost_source": cost_source, "failed_keys": failed_keys,
              "pool_runs": [r["key"] for r in extra],
              "budget": {"max_pw_runs": settings.max_pw_runs, "budget_node_hours": settings.budget_node_hours,
                         "counted_in": "node-hours" if use_nh else "pw.x runs"}}
    if round_index == 0:
        n_seed = max(settings.seed_min, math.ceil(settings.seed_fraction * len(pool)))
        n_seed = min(n_seed, settings.max_pw_runs - len(extra))
        if n_seed < 1:
            raise KappaflowError(f"ml.al.max_pw_runs = {settings.max_pw_runs}: the pool's own runs "
                                 f"({len(extra)}, the AIMD md run of ml.al.pool_aimd) spend the whole budget")
        # exactly n_seed draws: the fraction n_seed / pool with n_seed as the minimum
        batch = select.seed_batch(frame.assign(score=0.0), n_seed / len(pool), n_seed,
                                  total_left if use_nh else float(n_seed), settings.random_seed)
        record.update(keys=batch["key"].tolist(), reason=f"random seed of {len(batch)} from {len(pool)} candidates")
        return _write_selected(out_path, record)
    scores = pd.read_csv(scores_path)
    frame = frame.merge(scores[["key", "sigma_max_ev_per_ang"]], on="key", how="left")
    if frame["sigma_max_ev_per_ang"].isna().any():
        missing = frame.loc[frame["sigma_max_ev_per_ang"].isna(), "key"].tolist()[:3]
        raise KappaflowError(f"{scores_path}: no committee score for pool candidate(s) {missing}")
    frame["score"] = frame["sigma_max_ev_per_ang"]
    tol, tol_source = force_tolerance(settings)
    sigma_fit = float(scores.loc[scores["in_fit"].astype(bool), "sigma_max_ev_per_ang"].max())
    kappas = [kappa_at(p, settings.kappa_temperature_k)[1] for p in (kappa_paths or [])]
    change = (float(np.max(np.abs(kappas[-1] / kappas[-2] - 1.0))) if len(kappas) >= 2 else None)
    record.update(sigma_max_fit_ev_per_ang=sigma_fit, force_tolerance_ev_per_ang=tol, tolerance_source=tol_source,
                  kappa_diag_w_per_mk=[k.tolist() for k in kappas], kappa_change=change)
    converged = change is not None and change < settings.kappa_tolerance and sigma_fit < tol
    open_frame = frame[~frame["done"]]
    cheapest = float(open_frame["cost_node_hours"].min()) if len(open_frame) else float("inf")
    if converged:
        reason = (f"converged: κ({settings.kappa_temperature_k:g} K) changed by {100 * change:.2f} % "
                  f"< {100 * settings.kappa_tolerance:g} % and the largest σ on the fit's supercells "
                  f"{sigma_fit * 1000:.4f} meV/Å < {tol * 1000:.4f} meV/Å ({tol_source})")
    elif runs_left <= 0 or total_left < cheapest and len(open_frame):
        reason = f"budget spent: {spent_runs} pw.x runs" + (f", {spent_nh:.4g} node-hours" if spent_nh else "")
    elif not len(open_frame):
        reason = "pool exhausted: every candidate has been computed"
    elif round_index > settings.max_rounds:
        reason = f"last round (ml.al.max_rounds = {settings.max_rounds}) done"
    else:
        reason = ""
    if reason:
        record.update(stop=True, reason=reason)
        return _write_selected(out_path, record)
    batch = select.select_batch(frame, settings.method, min(settings.batch_size, runs_left), round_left,
                                total_left, settings.max_per_family, settings.random_seed + round_index)
    change_text = "n/a" if change is None else f"{100 * change:.2f} %"
    record.update(keys=batch["key"].tolist(), scores_ev_per_ang=batch["score"].tolist(),
                  families=batch["family"].tolist(),
                  reason=f"{settings.method}: {len(batch)} of {len(open_frame)} open candidates; κ change "
                         f"{change_text}, largest σ on the fit's supercells {sigma_fit * 1000:.4f} meV/Å "
                         f"(tolerance {tol * 1000:.4f})")
    return _write_selected(out_path, record)


def _write_selected(out_path, record: dict) -> dict:
    with atomic_path(out_path) as tmp:
        tmp.write_text(json.dumps(record, indent=1))
    what = "stop: " + record["reason"] if record["stop"] else f"{len(record['keys'])} pw.x runs: {record['reason']}"
    progress(f"al round {record['round']}: {what} (spent so far {record['spent_pw_runs']} pw.x runs)")
    return record


def is_stop(selected_path) -> bool:
    return bool(read_selected(selected_path)["stop"])


# --- data and committee of a round ----------------------------------------------------------------
def build_round_dataset(selected_paths, store_dir, on_failure: str, examples_dir, extxyz_path, index_path,
                        baseline_path=None) -> dict:
    """The training data of a round: one PANNA example per finished pw.x run of the batches so far
    (minus the Δ-learning baseline's forces and energy, when there is one)."""
    from kappaflow.al.baseline import load_optional
    from kappaflow.ml.steps import write_dataset

    keys = computed_keys(selected_paths, store_dir, on_failure)
    if not keys:
        raise KappaflowError("active learning: no finished pw.x run to train on (every selected run failed)")
    return write_dataset({k: "disp" for k in keys}, store_dir, examples_dir, extxyz_path, index_path,
                         baseline=load_optional(baseline_path))


def fit_round_baseline(manifest_path, disp_yaml_path, store_dir, selected_paths, on_failure: str, out_path,
                       report_path, max_displacement_ang: float | None = 0.05) -> dict:
    """The Δ-learning baseline of a round: :func:`kappaflow.al.baseline.fit_baseline` on every finished run
    of the batches so far."""
    from kappaflow.al.baseline import fit_baseline

    return fit_baseline(manifest_path, disp_yaml_path, store_dir,
                        computed_keys(selected_paths, store_dir, on_failure), out_path, report_path,
                        max_displacement_ang)


def predict_pool(model_dirs, pool_path, manifest_path, store_dir, gvectors_path, training_index, out_csv,
                 baseline_path=None) -> dict:
    """Committee spread on every pool candidate and sow supercell: ``key, family, in_fit, trained,
    sigma_max_ev_per_ang`` (largest per-component σ), ``sigma_rms_ev_per_ang``, ``force_max_ev_per_ang``."""
    import pandas as pd

    from kappaflow.ml.model import Committee
    from kappaflow.ml.steps import gvector_parameters, supercell_keys

    committee = Committee.load([str(d) for d in model_dirs])
    if committee.params != gvector_parameters(gvectors_path):
        raise KappaflowError(f"{gvectors_path}: the committee was trained with other G-vector parameters")
    rows = {c["key"]: {"key": c["key"], "family": c["family"], "in_fit": False} for c in read_pool(pool_path)}
    for key in supercell_keys(manifest_path):
        rows.setdefault(key, {"key": key, "family": f"{FAMILY_SOW}:not-in-pool", "in_fit": True})["in_fit"] = True
    trained = set(json.loads(Path(training_index).read_text())["examples"])
    keys = sorted(rows)
    from kappaflow.al.baseline import with_baseline

    structures = [read_pw_input(Path(store_dir) / k / "pw.in").atoms for k in keys]
    predictions = with_baseline(baseline_path, committee.predict_many(structures), structures, keys)
    for key, pred in zip(keys, predictions):
        std = np.asarray(pred["forces_std_ev_per_ang"], dtype=np.float64)
        forces = np.asarray(pred["forces_ev_per_ang"], dtype=np.float64)
        rows[key].update(trained=key in trained, sigma_max_ev_per_ang=float(std.max()),
                         sigma_rms_ev_per_ang=float(np.sqrt(np.mean(std**2))),
                         force_max_ev_per_ang=float(np.abs(forces).max()))
    table = pd.DataFrame([rows[k] for k in keys])
    write_table(out_csv, table)
    fit = table[table["in_fit"]]
    progress(f"al predict: {len(table)} structures; largest σ {table['sigma_max_ev_per_ang'].max() * 1000:.4f} "
             f"meV/Å (on the fit's supercells {fit['sigma_max_ev_per_ang'].max() * 1000:.4f} meV/Å)")
    return {"n": len(table)}


# --- the κ of a round, and the end ---------------------------------------------------------------
def final_dft_keys(scores_csv, al_cfg: dict) -> list[str]:
    """The fit's supercells whose committee σ is still above the force tolerance (``ml.al.gate: dft``
    sends them to pw.x); read once the last round's scores exist."""
    import pandas as pd

    settings = AlSettings.from_config(al_cfg)
    tol, _ = force_tolerance(settings)
    scores = pd.read_csv(scores_csv)
    high = scores[scores["in_fit"].astype(bool) & (scores["sigma_max_ev_per_ang"] >= tol)]
    return sorted(high["key"].tolist())


def inject_stage(manifest_path, forces_path, selected_paths, store_dir, out_store, al_cfg: dict,
                 scores_path=None) -> dict:
    """Forces of every sow supercell: DFT where the loop ran pw.x (and, with ``ml.al.gate: dft`` at the
    end, where σ stayed above the tolerance), the committee mean elsewhere."""
    from kappaflow.ml.steps import inject

    settings = AlSettings.from_config(al_cfg)
    dft_keys = set(computed_keys(selected_paths, store_dir, settings.on_failure))
    gated = final_dft_keys(scores_path, al_cfg) if scores_path else []
    sources = inject(manifest_path, forces_path, store_dir, out_store, "hybrid", dft_keys=dft_keys | set(gated))
    if gated:
        progress(f"al: ml.al.gate dft: {len(gated)} supercell(s) with σ above the tolerance took pw.x forces")
    return sources


def select_round_from_config(round_index: int, pool_path, previous_selected: list, store_dir, al_cfg: dict,
                             dft_cfg: dict, cost_reference, template_path, structure_path, out_path,
                             scores_path=None, kappa_paths=None) -> dict:
    """:func:`select_round` with the k-points of the supercell template (the cost model's k factor)."""
    from kappaflow.plan import k_points_of_template
    from kappaflow.structure import read_structure

    k_points = k_points_of_template(template_path, read_structure(structure_path))
    return select_round(round_index, pool_path, previous_selected, store_dir, al_cfg, dft_cfg, cost_reference,
                        k_points, out_path, scores_path, kappa_paths)
