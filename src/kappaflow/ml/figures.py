"""Figures and tables of the ML route: κ ML vs DFT, force parity and residuals, training curves,
committee disagreement, DFT vs ML timing, and the harmonic-trap ablation (seed figs 5.4–5.8, 6.2,
table 5.2)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from kappaflow.plotting import save_figure  # noqa: E402
import numpy as np  # noqa: E402

from kappaflow.bte import read_kappa_csv  # noqa: E402
from kappaflow.ml.forcesfile import read_forces, read_sigma  # noqa: E402


def _kappa_at(result, temperature_k: float, component: int = 0) -> float:
    i = int(np.argmin(np.abs(result.temperatures_k - temperature_k)))
    return float(result.kappa_w_per_mk[i, component, component])


def plot_kappa_ml_vs_dft(dft_csv, ml_csvs: dict, path, title: str = "") -> None:
    """κxx and κzz vs T, DFT and one or more ML models, log scale (seed fig. 5.8)."""
    dft = read_kappa_csv(dft_csv)
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 4.0), dpi=120, sharey=True)
    for ax, (c, name) in zip(axes, ((0, "xx"), (2, "zz"))):
        ax.plot(dft.temperatures_k, dft.kappa_w_per_mk[:, c, c], "k-", lw=2.2, label="DFT")
        for label, csv_path in ml_csvs.items():
            ml = read_kappa_csv(csv_path)
            ax.plot(ml.temperatures_k, ml.kappa_w_per_mk[:, c, c], "o--", ms=3, label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("T (K)")
        ax.set_title(rf"$\kappa_{{{name}}}$", fontsize=10)
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel(r"$\kappa$ (W m$^{-1}$ K$^{-1}$)")
    axes[1].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


def _force_table(forces_path):
    table = read_forces(forces_path)
    nn = np.concatenate([v[0] for v in table.values()])
    ref = np.concatenate([v[1] for v in table.values()])
    return table, nn, ref


def plot_parity(forces_path, path, title: str = "") -> dict:
    """Hexbin parity F_ML vs F_DFT (log density) and the residual density (seed figs 5.4–5.5)."""
    _, nn, ref = _force_table(forces_path)
    nn, ref = nn.ravel(), ref.ravel()
    ok = np.isfinite(ref)
    nn, ref = nn[ok], ref[ok]
    resid = nn - ref
    rmse = float(np.sqrt(np.mean(resid**2))) if resid.size else float("nan")
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), dpi=120)
    lim = float(np.max(np.abs(np.concatenate([nn, ref])))) * 1.05 if nn.size else 1.0
    hb = axes[0].hexbin(ref, nn, gridsize=60, bins="log", cmap="viridis", extent=(-lim, lim, -lim, lim),
                        mincnt=1)
    axes[0].plot([-lim, lim], [-lim, lim], "r-", lw=0.8)
    axes[0].set_xlabel(r"$F_{\rm DFT}$ (eV/Å)")
    axes[0].set_ylabel(r"$F_{\rm ML}$ (eV/Å)")
    axes[0].set_title(f"force components, RMSE {rmse * 1000:.3f} meV/Å", fontsize=9)
    fig.colorbar(hb, ax=axes[0], label="count (log)")
    scale = 1000.0
    axes[1].hist(resid * scale, bins=80, density=True, color="C1", alpha=0.8)
    axes[1].set_yscale("log")
    axes[1].set_xlabel(r"$F_{\rm ML} - F_{\rm DFT}$ (meV/Å)")
    axes[1].set_ylabel("density")
    axes[1].set_title("residual density", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
    return {"force_rmse_ev_per_ang": rmse, "max_abs_error_ev_per_ang": float(np.abs(resid).max()) if resid.size
            else float("nan"), "n_components": int(resid.size)}


def read_metrics(path) -> dict[str, np.ndarray]:
    """A training run's metrics.csv: its numeric columns as float64 arrays (empty cells: NaN)."""
    import pandas as pd

    from kappaflow.tables import read_table

    table = read_table(path, what="training metrics")
    out = {}
    for key in table.columns:
        values = pd.to_numeric(table[key], errors="coerce")
        if values.notna().sum() == table[key].notna().sum():  # a numeric column (not a text one)
            out[key] = values.to_numpy(dtype=np.float64)
    return out


def plot_training_curves(metrics_paths: list, path, title: str = "") -> None:
    """Force and energy RMSE per epoch of every committee member (seed fig. 5.6)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.0), dpi=120)
    for m, mpath in enumerate(metrics_paths):
        data = read_metrics(mpath)
        epoch = data.get("epoch", np.arange(len(next(iter(data.values())))))
        for ax, quantity in zip(axes, ("force", "energy")):
            for split, style in (("train", "-"), ("val", "--")):
                cols = [k for k in data if quantity in k and split in k and "rmse" in k.lower()]
                if cols and np.any(np.isfinite(data[cols[0]])):
                    ax.plot(epoch, data[cols[0]], style, color=f"C{m}", lw=1,
                            label=f"member {m} {split}" if quantity == "force" else None)
    axes[0].set_ylabel("force RMSE (meV/Å)")
    axes[1].set_ylabel("energy RMSE (meV/atom)")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=6, ncol=2)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


def plot_committee_disagreement(forces_path, sigma_path, path, title: str = "") -> dict:
    """Committee spread σ against |F_DFT| and the true error (seed fig. 6.2)."""
    table, nn, ref = _force_table(forces_path)
    sigma = read_sigma(sigma_path)
    sig = np.concatenate([sigma[k] for k in table])
    fmag = np.linalg.norm(ref, axis=1)
    smag = np.linalg.norm(sig, axis=1)
    err = np.linalg.norm(nn - ref, axis=1)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.0), dpi=120)
    axes[0].loglog(np.maximum(fmag, 1e-8), np.maximum(smag, 1e-12) * 1000, ".", ms=2, alpha=0.5)
    axes[0].set_xlabel(r"$|F_{\rm DFT}|$ (eV/Å)")
    axes[0].set_ylabel(r"committee spread $|\sigma_F|$ (meV/Å)")
    axes[1].loglog(np.maximum(smag, 1e-12) * 1000, np.maximum(err, 1e-12) * 1000, ".", ms=2, alpha=0.5)
    lo = max(min(smag.min(), err.min()) * 1000, 1e-6)
    hi = max(smag.max(), err.max()) * 1000
    axes[1].plot([lo, hi], [lo, hi], "r-", lw=0.8)
    axes[1].set_xlabel(r"committee spread $|\sigma_F|$ (meV/Å)")
    axes[1].set_ylabel(r"true error $|F_{\rm ML}-F_{\rm DFT}|$ (meV/Å)")
    for ax in axes:
        ax.grid(alpha=0.3, which="both")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
    corr = float(np.corrcoef(smag, err)[0, 1]) if len(err) > 2 and smag.std() > 0 and err.std() > 0 else float("nan")
    return {"spread_error_correlation": corr, "mean_spread_ev_per_ang": float(smag.mean())}


def timing_table(cost_csv, timing_json, out_csv) -> dict:
    """DFT (pw.x WALL) vs ML (committee incl. descriptors) time per supercell (seed table 5.2)."""
    from kappaflow.tables import read_table, write_table

    cost = read_table(cost_csv, required=("role", "wall_time_s"), numeric=("wall_time_s",), what="cost table")
    dft_s = cost.loc[cost["role"].isin(["fc3", "base"]), "wall_time_s"].to_numpy(dtype=np.float64)
    timing = json.loads(Path(timing_json).read_text())
    table = [
        {"route": "DFT (pw.x)", "supercells": len(dft_s), "total_s": float(dft_s.sum()),
         "per_supercell_s": float(dft_s.mean()) if len(dft_s) else float("nan")},
        {"route": f"ML ({timing['committee_size']}-model committee, incl. descriptors)",
         "supercells": timing["n_supercells"], "total_s": timing["total_s"],
         "per_supercell_s": timing["per_supercell_s"]},
    ]
    write_table(out_csv, table)
    speedup = table[0]["per_supercell_s"] / table[1]["per_supercell_s"] if table[1]["per_supercell_s"] else None
    return {"rows": table, "speedup": speedup}


def ablation(dft_csv, model_csvs: dict, figure_path, table_path, temperature_k: float = 300.0) -> list[dict]:
    """The harmonic-trap ablation: κ(T) of four models against DFT in one figure, κ(300 K) table."""
    plot_kappa_ml_vs_dft(dft_csv, model_csvs, figure_path,
                         title="training data × split: displacements only vs + AIMD, 100 % vs 80/20")
    dft = read_kappa_csv(dft_csv)
    rows = [{"model": "DFT", "kappa_xx": _kappa_at(dft, temperature_k), "kappa_zz": _kappa_at(dft, temperature_k, 2),
             "rel_error_xx": 0.0}]
    for name, path in model_csvs.items():
        ml = read_kappa_csv(path)
        kxx = _kappa_at(ml, temperature_k)
        rows.append({"model": name, "kappa_xx": kxx, "kappa_zz": _kappa_at(ml, temperature_k, 2),
                     "rel_error_xx": kxx / rows[0]["kappa_xx"] - 1.0})
    from kappaflow.tables import write_table

    write_table(table_path, rows)
    return rows
