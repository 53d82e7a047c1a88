"""The end of an active-learning run: per-round table, held-out errors, summary and figures.

Held out means never trained on: the committee of round r is judged on the batch of round r + 1 (chosen
because that committee was unsure of it, then computed with pw.x, and only then trained on by round
r + 1).  These are the only DFT forces the loop has that a committee did not see.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from kappaflow.al.loop import (FAMILY_SOW, computed_keys, final_dft_keys, force_tolerance, kappa_at, pool_runs,
                               read_pool, read_selected)
from kappaflow.al.settings import AlSettings
from kappaflow.steps import atomic_path, progress
from kappaflow.tables import write_table

AXES = ("xx", "yy", "zz")


def heldout_errors(al_dir, store_dir, stop_round: int, members, on_failure: str) -> list[dict]:
    """Per round r < stop − 1 and member: force RMSE of committee r on the computed batch of round r + 1."""
    from kappaflow.al.baseline import with_baseline
    from kappaflow.ml.model import Committee
    from kappaflow.qe.pwin import read_pw_input
    from kappaflow.qe.pwout import read_pw_output

    al_dir, store_dir = Path(al_dir), Path(store_dir)
    rows = []
    for r in range(stop_round - 1):
        nxt = al_dir / f"round{r + 1}" / "selected.json"
        keys = computed_keys([nxt], store_dir, on_failure)
        if not keys:
            continue
        committee = Committee.load([str(al_dir / f"round{r}" / "models" / f"member{m}") for m in members])
        atoms = [read_pw_input(store_dir / k / "pw.in").atoms for k in keys]
        path = al_dir / f"round{r}" / "baseline" / "baseline.npz"  # Δ-learning: the committee predicts the residual
        preds = with_baseline(path if path.exists() else None, committee.predict_many(atoms), atoms, keys)
        ref = np.concatenate([read_pw_output(store_dir / k / "pw.out", expected_n_atoms=len(a)).forces_ev_per_ang
                              for k, a in zip(keys, atoms)])
        mean = np.concatenate([p["forces_ev_per_ang"] for p in preds])
        sigma = np.concatenate([p["forces_std_ev_per_ang"] for p in preds])
        members_f = np.concatenate([np.asarray(p["members_forces"]) for p in preds], axis=1)
        base = {"round": r, "n_structures": len(keys), "n_force_components": int(ref.size),
                "mean_sigma_ev_per_ang": float(np.sqrt(np.mean(sigma**2))),
                "force_rms_ev_per_ang": float(np.sqrt(np.mean(ref**2)))}
        rows.append(dict(base, member="committee", rmse_ev_per_ang=float(np.sqrt(np.mean((mean - ref) ** 2)))))
        for m, fm in zip(members, members_f):
            rows.append(dict(base, member=str(m), rmse_ev_per_ang=float(np.sqrt(np.mean((fm - ref) ** 2)))))
    return rows


def al_report(al_dir, store_dir, selected_paths, kappa_paths, score_paths, final_kappa, final_store, pool_path,
              al_cfg: dict, members, out: dict, reference_kappa=None, title: str = "") -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from kappaflow.plotting import save_figure

    settings = AlSettings.from_config(al_cfg)
    T = settings.kappa_temperature_k
    selected = [read_selected(p) for p in selected_paths]
    stop = len(selected) - 1
    pool = read_pool(pool_path)
    extra = pool_runs(pool_path)  # the AIMD md run of ml.al.pool_aimd: one pw.x run of many SCF steps
    n_runs = [len(computed_keys(selected_paths[: r + 1], store_dir, settings.on_failure)) + len(extra)
              for r in range(stop)]
    rounds = []
    for r in range(stop):
        _, k = kappa_at(kappa_paths[r], T)
        scores = pd.read_csv(score_paths[r])
        fit = scores[scores["in_fit"].astype(bool)]
        rounds.append({"round": r, "pw_runs_total": n_runs[r], "pw_runs_new": len(selected[r]["keys"]),
                       **{f"kappa_{a}": float(v) for a, v in zip(AXES, k)},
                       "sigma_max_fit_ev_per_ang": float(fit["sigma_max_ev_per_ang"].max()),
                       "sigma_max_pool_ev_per_ang": float(scores.loc[~scores["trained"].astype(bool),
                                                                     "sigma_max_ev_per_ang"].max())
                       if (~scores["trained"].astype(bool)).any() else float("nan")})
    table = pd.DataFrame(rounds)
    ref = None
    if reference_kappa and Path(reference_kappa).exists():
        _, ref = kappa_at(reference_kappa, T)
        for i, a in enumerate(AXES):
            table[f"kappa_{a}_rel_error"] = table[f"kappa_{a}"] / ref[i] - 1.0
    write_table(out["rounds"], table)
    held = pd.DataFrame(heldout_errors(al_dir, store_dir, stop, members, settings.on_failure),
                        columns=["round", "member", "rmse_ev_per_ang", "n_structures", "n_force_components",
                                 "mean_sigma_ev_per_ang", "force_rms_ev_per_ang"])
    write_table(out["heldout"], held)

    # κ(T) per round (and the DFT reference when the DFT route ran in the same results folder)
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    cmap = plt.get_cmap("viridis")
    for r in range(stop):
        k, _ = kappa_at(kappa_paths[r], T)
        ax.plot(k.temperatures_k, k.kappa_w_per_mk[:, 0, 0], color=cmap(r / max(stop - 1, 1)), lw=1,
                label=f"round {r} ({n_runs[r]} pw.x runs)")
    kf, kf300 = kappa_at(final_kappa, T)
    ax.plot(kf.temperatures_k, kf.kappa_w_per_mk[:, 0, 0], "k--", lw=1.5, label="final")
    if ref is not None:
        kr, _ = kappa_at(reference_kappa, T)
        ax.plot(kr.temperatures_k, kr.kappa_w_per_mk[:, 0, 0], "r:", lw=2, label="DFT route (every supercell)")
    ax.set_xlabel("T (K)")
    ax.set_ylabel(r"$\kappa_{xx}$ (W/mK)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    ax.set_title(f"{title}: active learning, κ per round")
    save_figure(fig, out["kappa"])

    # pw.x runs spent vs κ(T) error: against the DFT route when it ran here, else against the final κ
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    target, what = (ref, "the DFT route (every sow supercell)") if ref is not None else \
        (kf300, "the final κ (no DFT route κ in this results folder)")
    for i, a in enumerate(AXES):
        if i and np.allclose(table[f"kappa_{a}"], table["kappa_xx"], rtol=1e-9):
            continue  # a cubic crystal: yy, zz on top of xx
        ax.plot(table["pw_runs_total"], 100 * (table[f"kappa_{a}"] / target[i] - 1.0), marker="o",
                label=f"κ{a}, rounds 0..{stop - 1}")
        ax.plot([n_runs[-1] if n_runs else 0], [100 * (kf300[i] / target[i] - 1.0)], "k*", ms=10,
                label="final" if i == 0 else None)
    ax.axhline(0, color="k", lw=0.8)
    ax.axhspan(-5, 5, color="C2", alpha=0.12, label="±5 %")
    ax.set_xlabel("pw.x runs spent (seed included)")
    ax.set_ylabel(f"κ({T:g} K) error (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(f"{title}: κ error vs DFT runs\n(relative to {what})", fontsize=9)
    save_figure(fig, out["kappa_error"])

    # held-out force RMSE per member and round, and the committee's own spread
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    if len(held):
        for m, g in held.groupby("member"):
            style = dict(color="k", lw=2, marker="o") if m == "committee" else dict(lw=0.8, marker=".", alpha=0.7)
            ax.plot(g["round"], g["rmse_ev_per_ang"] * 1000, label=m if m == "committee" else f"member {m}", **style)
        g = held[held["member"] == "committee"]
        ax.plot(g["round"], g["mean_sigma_ev_per_ang"] * 1000, "C3--", label="committee σ (rms)")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no held-out batch yet (the loop stopped after one round)", ha="center",
                transform=ax.transAxes)
    ax.set_xlabel("round r (held out: the pw.x batch of round r + 1)")
    ax.set_ylabel("force RMSE (meV/Å)")
    ax.grid(alpha=0.3, which="both")
    ax.set_title(f"{title}: held-out force error per round")
    save_figure(fig, out["rmse"])

    # committee disagreement vs |F| on the last committee's pool
    last = pd.read_csv(score_paths[-1]) if score_paths else None
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    if last is not None:
        shown = last[last["force_max_ev_per_ang"] > 1e-6]  # the undisplaced supercell (no force) is left out
        labels = shown["family"].replace({f"{FAMILY_SOW}:not-in-pool": "sow (pair-displaced, not in the pool)"})
        for fam, g in shown.groupby(labels):
            ax.loglog(g["force_max_ev_per_ang"], np.maximum(g["sigma_max_ev_per_ang"], 1e-12) * 1000, ".", label=fam)
        ax.axhline(force_tolerance(settings)[0] * 1000, color="r", lw=0.8, ls="--", label="force tolerance")
        ax.legend(fontsize=7)
    ax.set_xlabel("largest |F| component (eV/Å, committee mean)")
    ax.set_ylabel("largest committee σ (meV/Å)")
    ax.grid(alpha=0.3, which="both")
    ax.set_title(f"{title}: committee disagreement of the last round, per pool family")
    save_figure(fig, out["disagreement"])

    prov = json.loads((Path(final_store) / "provenance.json").read_text())
    high = final_dft_keys(score_paths[-1], al_cfg) if score_paths else []
    n_pw = len(computed_keys(selected_paths, store_dir, settings.on_failure)) + len(extra)
    summary = {"stop_round": stop, "stop_reason": selected[-1]["reason"], "pw_runs": n_pw,
               "pw_runs_making_the_pool": extra,
               "pw_runs_failed": selected[-1].get("failed_keys", []), "pool_size": len(pool),
               "n_sow_supercells": len(prov["sources"]), "n_sow_supercells_dft": prov["n_dft"],
               "n_sow_supercells_ml": prov["n_ml"],
               "n_sow_supercells_in_pool": sum(c["family"].startswith(FAMILY_SOW) for c in pool),
               "kappa_temperature_k": T, **{f"kappa_{a}_final": float(v) for a, v in zip(AXES, kf300)},
               "supercells_sigma_above_tolerance": high, "gate": settings.gate,
               "heldout_committee_rmse_ev_per_ang": (float(held[held["member"] == "committee"]["rmse_ev_per_ang"].iloc[-1])
                                                      if len(held) else None)}
    if ref is not None:
        summary.update({f"kappa_{a}_reference": float(v) for a, v in zip(AXES, ref)})
    with atomic_path(out["summary"]) as tmp:
        tmp.write_text(json.dumps(summary, indent=1))
    progress(f"al: stopped at round {stop} ({summary['stop_reason']}); {n_pw} pw.x runs for "
             f"{len(prov['sources'])} sow supercells; final κxx({T:g} K) {summary['kappa_xx_final']:.2f} W/mK"
             + (f" (DFT route {ref[0]:.2f})" if ref is not None else "")
             + (f"; {len(high)} supercell(s) with σ above the tolerance (ml.al.gate {settings.gate})" if high else ""))
    return summary
