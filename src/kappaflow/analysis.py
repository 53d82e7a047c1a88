"""The analysis figures and tables of a κ paper, from phono3py's mode file (:mod:`kappaflow.modes`).

:func:`run_analysis` (the ``analysis`` and ``analysis_ml`` rules) writes, under ``<route>/analysis/``:

- ``modes.csv``: every (temperature, irreducible q, band): frequency, weight, |v|, lifetime, mean free
  path, contribution to κ tr/3;
- ``cumulative_kappa.csv`` + ``cumulative_kappa.png``: κ tr/3 accumulated over frequency and over mean
  free path at each ``analysis.temperatures_k``; the curves end at the κ table's value;
- ``lifetimes.png``: lifetimes and group speeds vs frequency, coloured by each mode's κ;
- ``branches.csv`` + ``branches.png``: κ by band (TA, TA, LA, optical …) vs T;
- ``kappa_loglog.png``: κ(T) on log–log axes with the ``analysis.reference_kappa`` data over it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kappaflow.errors import ConfigError, InputFileError, KappaflowError
from kappaflow.tables import write_table

__all__ = ["run_analysis", "read_references"]


def read_references(references: list[dict]) -> list[dict]:
    """``analysis.reference_kappa`` as ``{label, temperatures_k, kappa_w_per_mk}`` arrays; a CSV is read with
    pandas (columns temperature_k, kappa_w_per_mk) and a bad one is named with the problem."""
    import pandas as pd

    out = []
    for n, ref in enumerate(references):
        where = f"analysis.reference_kappa[{n}] ({ref.get('label', '?')})"
        if "csv" in ref:
            path = Path(ref["csv"])
            try:
                table = pd.read_csv(path)
            except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
                raise InputFileError(path, f"{where}: cannot read the reference κ table ({exc})") from None
            missing = {"temperature_k", "kappa_w_per_mk"} - set(table.columns)
            if missing:
                raise InputFileError(path, f"{where}: no column {', '.join(sorted(missing))} (the header must name "
                                           "temperature_k and kappa_w_per_mk)", 1)
            t = pd.to_numeric(table["temperature_k"], errors="coerce").to_numpy(np.float64)
            k = pd.to_numeric(table["kappa_w_per_mk"], errors="coerce").to_numpy(np.float64)
            bad = np.flatnonzero(~(np.isfinite(t) & np.isfinite(k) & (t > 0) & (k > 0)))
            if bad.size:
                raise InputFileError(path, f"{where}: not a positive number (temperature_k, kappa_w_per_mk)",
                                     int(bad[0]) + 2)
        else:
            t = np.asarray(ref["temperatures_k"], dtype=np.float64)
            k = np.asarray(ref["kappa_w_per_mk"], dtype=np.float64)
            if t.shape != k.shape:
                raise ConfigError(f"{where}: {t.size} temperatures_k but {k.size} kappa_w_per_mk")
        out.append({"label": ref["label"], "temperatures_k": t, "kappa_w_per_mk": k})
    return out


def run_analysis(modes_path, kappa_csv, analysis_cfg: dict, outputs: dict, title: str = "") -> dict:
    """Tables and figures of one route's BTE (``outputs``: the rule's named outputs); returns κ tr/3 at
    each analysis temperature from the mode file, which is checked against ``kappa_csv``."""
    import pandas as pd

    from kappaflow import logs, modes as modes_mod
    from kappaflow.bte import read_kappa_csv

    modes = modes_mod.read_mode_file(modes_path)
    table = read_kappa_csv(kappa_csv)
    if table.temperatures_k.shape != modes.temperatures_k.shape or not np.allclose(
            table.temperatures_k, modes.temperatures_k, atol=1e-6):
        raise KappaflowError(f"{modes_path} and {kappa_csv} are not of the same BTE run: temperatures differ")
    file_kappa = modes.kappa_lbte_w_per_mk if modes.kappa_lbte_w_per_mk is not None else modes.kappa_w_per_mk
    if not np.allclose(table.kappa_w_per_mk, file_kappa, rtol=1e-6, atol=1e-9):
        raise KappaflowError(f"{modes_path} and {kappa_csv} are not of the same BTE run: κ differs")
    if modes.kappa_lbte_w_per_mk is not None:
        title = (title + "; " if title else "") + "LBTE κ: the mode split is phono3py's RTA one"
        logs.progress("analysis: an LBTE run: the mode figures and tables split the RTA κ (phono3py's file has no "
                      "mode split of the LBTE κ); the κ(T) figure is the LBTE κ")
    temps = [float(t) for t in analysis_cfg["temperatures_k"]]
    for t in temps:
        modes_mod.select_temperature(modes, t)
    references = read_references(analysis_cfg.get("reference_kappa", []))

    write_table(outputs["modes"], modes_mod.mode_table(modes))
    # each cumulative curve once: for the table, the summary and the figure
    curves = {(t, by): modes_mod.cumulative_kappa(modes, t, by) for t in temps for by in ("frequency", "mean_free_path")}
    cumulative = pd.concat([pd.DataFrame({"temperature_k": t, "axis": c.columns[0], "value": c[c.columns[0]],
                                          "cumulative_kappa_w_per_mk": c["cumulative_kappa_w_per_mk"]})
                            for (t, _), c in curves.items()], ignore_index=True)
    write_table(outputs["cumulative_table"], cumulative)
    branches = modes_mod.branch_contributions(modes)
    write_table(outputs["branches_table"], branches)

    kappa_iso = np.trace(modes.kappa_w_per_mk, axis1=1, axis2=2) / 3.0  # what the mode contributions add up to
    summary = {}
    for t in temps:
        it = modes_mod.select_temperature(modes, t)
        summary[t] = float(curves[t, "frequency"]["cumulative_kappa_w_per_mk"].iloc[-1])
        part = branches[branches.temperature_k == modes.temperatures_k[it]]
        mfp = curves[t, "mean_free_path"]
        half = mfp["mean_free_path_nm"][np.searchsorted(mfp["cumulative_kappa_w_per_mk"], 0.5 * kappa_iso[it])]
        logs.progress(f"analysis {t:g} K: κ tr/3 {kappa_iso[it]:.2f} W/mK, half of it from mean free paths below "
                      f"{half:.3g} nm; by branch " + ", ".join(f"{r.branch} {100 * r.share:.0f} %"
                                                               for r in part.itertuples()))
    _plot_cumulative(curves, temps, outputs["cumulative"], title)
    _plot_lifetimes(modes, temps[0], outputs["lifetimes"], title)
    _plot_branches(branches, outputs["branches"], title)
    _plot_kappa_loglog(table, references, outputs["kappa_loglog"], title)
    return summary


def _figure(*args, **kw):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kw)


def _plot_cumulative(curves, temps, out_png, title) -> None:
    """``curves``: :func:`kappaflow.modes.cumulative_kappa` by (temperature, axis)."""
    from kappaflow.plotting import save_figure

    fig, axes = _figure(1, 2, figsize=(10.0, 4.0), dpi=120)
    for n, t in enumerate(temps):
        f, m = curves[t, "frequency"], curves[t, "mean_free_path"]
        axes[0].step(f["frequency_thz"], f["cumulative_kappa_w_per_mk"], where="post", color=f"C{n}", label=f"{t:g} K")
        axes[1].step(m["mean_free_path_nm"], m["cumulative_kappa_w_per_mk"], where="post", color=f"C{n}",
                     label=f"{t:g} K")
        total = f["cumulative_kappa_w_per_mk"].iloc[-1]
        for ax in axes:
            ax.axhline(total, color=f"C{n}", ls=":", lw=0.8)
    axes[0].set(xlabel="phonon frequency (THz)", ylabel="cumulative κ tr/3 (W/mK)",
                title="cumulative κ over frequency")
    axes[1].set(xlabel="mean free path |v|τ (nm)", xscale="log", title="cumulative κ over mean free path")
    # from where the first 0.01 % of κ is reached: modes of ~zero |v| (at Γ, on zone faces) carry none
    m = curves[temps[0], "mean_free_path"]
    start = np.searchsorted(m["cumulative_kappa_w_per_mk"].to_numpy(), 1e-4 * m["cumulative_kappa_w_per_mk"].iloc[-1])
    axes[1].set_xlim(left=max(float(m["mean_free_path_nm"].iloc[start]) / 3, 1e-3))
    for ax in axes:
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, out_png)


def _plot_lifetimes(modes, temperature_k, out_png, title) -> None:
    from kappaflow import modes as modes_mod
    from kappaflow.plotting import save_figure

    it = modes_mod.select_temperature(modes, temperature_k)
    freq = modes.frequency_thz.ravel()
    tau = modes.lifetime_ps[it].ravel()
    speed = np.linalg.norm(modes.group_velocity_m_per_s, axis=-1).ravel()
    contrib = modes.mode_kappa_w_per_mk[it].ravel() / np.repeat(modes.weights, modes.n_bands)  # per q-point
    from matplotlib.colors import LogNorm

    keep = np.isfinite(tau) & (freq > 0)
    floor = max(contrib.max() * 1e-6, 1e-300)
    norm = LogNorm(vmin=floor, vmax=max(contrib.max(), 2 * floor))
    contrib = np.clip(contrib, floor, None)
    fig, axes = _figure(1, 2, figsize=(10.0, 4.0), dpi=120, layout="constrained")
    sc = axes[0].scatter(freq[keep], tau[keep], c=contrib[keep], s=9, cmap="viridis", norm=norm)
    axes[0].set(xlabel="phonon frequency (THz)", ylabel="lifetime τ (ps)", yscale="log",
                title=f"lifetimes (three-phonon + isotope), {modes.temperatures_k[it]:g} K")
    axes[1].scatter(freq, speed * 1e-3, c=contrib, s=9, cmap="viridis", norm=norm)
    axes[1].set(xlabel="phonon frequency (THz)", ylabel="group speed |v| (km/s)", title="group velocities")
    fig.colorbar(sc, ax=list(axes), label="κ tr/3 per q-point (W/mK)")
    for ax in axes:
        ax.grid(alpha=0.3, which="both")
    fig.suptitle(title, fontsize=9)
    save_figure(fig, out_png)


def _plot_branches(branches, out_png, title) -> None:
    from kappaflow.plotting import save_figure

    fig, axes = _figure(1, 2, figsize=(10.0, 4.0), dpi=120)
    for band, part in branches.groupby("band"):
        label = f"{band}: {part['branch'].iloc[0]}"
        axes[0].plot(part["temperature_k"], part["kappa_w_per_mk"], "o-", ms=3, label=label)
        axes[1].plot(part["temperature_k"], 100 * part["share"], "o-", ms=3, label=label)
    axes[0].set(xlabel="T (K)", ylabel="κ tr/3 (W/mK)", yscale="log", title="κ by branch (band index)")
    axes[1].set(xlabel="T (K)", ylabel="share of κ (%)", title="share of each branch")
    for ax in axes:
        ax.grid(alpha=0.3, which="both")
    axes[1].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, out_png)


def _plot_kappa_loglog(table, references, out_png, title) -> None:
    from kappaflow.plotting import save_figure

    fig, ax = _figure(figsize=(5.8, 4.2), dpi=120)
    t = table.temperatures_k
    iso = np.trace(table.kappa_w_per_mk, axis1=1, axis2=2) / 3.0
    ax.plot(t, iso, "k-", lw=1.6, label="κ tr/3 (this BTE)")
    for i, name in ((0, "xx"), (2, "zz")):
        if not np.allclose(table.kappa_w_per_mk[:, i, i], iso, rtol=1e-3):
            ax.plot(t, table.kappa_w_per_mk[:, i, i], "--", lw=1, label=f"κ{name}")
    for n, ref in enumerate(references):
        ax.plot(ref["temperatures_k"], ref["kappa_w_per_mk"], "o", mfc="none", color=f"C{n + 2}", label=ref["label"])
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    ax.set(xscale="log", yscale="log", xlabel="T (K)", ylabel="κ (W/mK)", title="κ(T), log–log")
    ax.set_xticks([x for x in (50, 100, 200, 300, 500, 800, 1000, 1500) if t.min() <= x <= t.max()])
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(ScalarFormatter())
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, out_png)
