"""Measurement: Green–Kubo κ of SW Si, kappaflow's route against a LAMMPS run of the same protocol.

kappaflow's route as the rules run it (:func:`kappaflow.gk.steps.gk_starts` and ``gk_trajectory``: ASE MD,
TensorFlow SW, unfolded heat flux by autodiff; LAMMPS's ``equal`` partition and no gauge term, so both
define the same instantaneous J: :func:`kappaflow.gk.lammps_gk.kappaflow_settings`), and the same
protocol in LAMMPS (:func:`kappaflow.gk.lammps_gk.run_like`: LAMMPS's MD, its pair_style sw, the flux by
finite differences of its pe/atom), on the SW-relaxed 2-atom cell × ``--supercell``³.  κ of both at
kappaflow's cutoff (:func:`kappaflow.gk.lammps_gk.side_by_side`), a two-sample t statistic, a figure.

    python3 benchmarks/gk_vs_lammps.py [--supercell 3] [--trajectories 12] [--steps 10000] [--max-lag-fs 5000]

Writes ``--out`` (JSON) and ``--figure`` (PNG); record the numbers in docs/green_kubo.md ("Measured").
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "src") not in sys.path:
    sys.path.insert(0, str(REPO / "src"))


def main(argv=None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--supercell", type=int, default=3)
    ap.add_argument("--trajectories", type=int, default=12)
    ap.add_argument("--steps", type=int, default=10000, help="NVE steps of 2 fs per trajectory")
    ap.add_argument("--max-lag-fs", type=float, default=5000.0)
    ap.add_argument("--temperature", type=float, default=300.0)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/gk_vs_lammps"))
    ap.add_argument("--out", type=Path, default=REPO / "docs/gk_vs_lammps.json")
    ap.add_argument("--figure", type=Path, default=REPO / "docs/gk_vs_lammps.png")
    args = ap.parse_args(argv)

    from kappaflow.gk.lammps_gk import kappaflow_settings, run_like, side_by_side, write_relaxed_sw_si
    from kappaflow.gk.md import read_trajectory
    from kappaflow.gk.steps import gk_starts, gk_trajectory

    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    cfg = kappaflow_settings(args.supercell, args.trajectories, args.steps, args.max_lag_fs, args.temperature)
    structure = write_relaxed_sw_si(work / "unitcell.json")
    starts = work / "starts.npz"
    t0 = time.time()
    if not starts.exists():
        gk_starts(structure, cfg, args.temperature, [], starts)
    paths = []
    for k in range(args.trajectories):
        out = work / f"traj{k}.npz"
        if not out.exists():
            gk_trajectory(starts, k, cfg, [], work / "checkpoints" / f"traj{k}.npz", out)
        paths.append(out)
    wall_ours = time.time() - t0
    ours = [read_trajectory(p) for p in paths]
    reference = run_like(starts)
    first = ours[0]
    result = side_by_side([t["flux_ev_ang_per_fs"] for t in ours], reference, float(first["flux_dt_fs"]),
                          args.temperature, float(first["volume_ang3"]), args.max_lag_fs)
    result["kappaflow"]["wall_s"] = wall_ours
    result["protocol"] = {"n_atoms": int(first["positions_ang"].shape[0]), "supercell": cfg["supercell"],
                          "temperature_k": args.temperature, "trajectory_ps": args.steps * 2e-3,
                          "n_trajectories": args.trajectories, "max_lag_fs": args.max_lag_fs, "filter_thz": 1.0,
                          "timestep_fs": 2.0, "flux_every": 2, "thermalisation_steps": 1000,
                          "start_spacing_steps": 250}
    result["machine_load"] = os.getloadavg()
    args.out.write_text(json.dumps(result, indent=1))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = result["kappa_tau_iso_filtered"]
    lag_ps = np.array(curves["lag_fs"]) * 1e-3
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [3, 1]})
    for name, colour, label in (("kappaflow", "C0", "kappaflow (ASE MD, TF SW, autodiff J)"),
                                ("lammps", "C3", "LAMMPS (its MD, pair sw, J by FD of pe/atom)")):
        ax.plot(lag_ps, curves[name], color=colour, label=label)
        values = result[name]["kappa_per_trajectory_w_per_mk"]
        bx.errorbar([0 if name == "kappaflow" else 1], [result[name]["kappa_w_per_mk"]],
                    yerr=[result[name]["kappa_stderr_w_per_mk"]], fmt="o", color=colour, capsize=4)
        bx.scatter(np.full(len(values), 0 if name == "kappaflow" else 1) + 0.15, values, s=8, color=colour, alpha=0.5)
    ax.axvline(result["cutoff_fs"] * 1e-3, color="k", ls=":", label=f"cutoff {result['cutoff_fs'] * 1e-3:g} ps")
    ax.set_xlabel("τ (ps)")
    ax.set_ylabel("filtered κ(τ) (W/mK)")
    p = result["protocol"]
    ax.set_title(f"SW Si {p['n_atoms']} atoms, {p['temperature_k']:g} K, {p['n_trajectories']} × {p['trajectory_ps']:g} ps "
                 "each route")
    ax.legend(fontsize=8)
    bx.set_xticks([0, 1], ["kappaflow", "LAMMPS"])
    bx.set_xlim(-0.5, 1.5)
    bx.set_ylabel("κ at the cutoff (W/mK)")
    bx.set_title(f"t = {result['t_statistic']:.2f}")
    fig.tight_layout()
    fig.savefig(args.figure, dpi=110)
    print(json.dumps({k: v for k, v in result.items() if k != "kappa_tau_iso_filtered"}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
