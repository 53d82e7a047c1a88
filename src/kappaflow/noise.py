"""Force-noise sensitivity: how much force error can κ tolerate?

Zero-mean Gaussian noise of a given amplitude (standard deviation per Cartesian component, eV/Å) is
added to the forces of every displaced supercell (the undisplaced one, whose forces are subtracted as
residual forces, is left alone), and the DFT route's own reap and BTE run on the result.  No pw.x job
runs: the finished outputs of the store are reused.  The same machinery takes ML-predicted forces
instead of noise (``ml_forces``, on every supercell, the undisplaced one included, so that the
model's own residual force is subtracted), which places a model's force error on the same curve.

Why κ falls: third-order force constants come from differences of forces between supercells displaced
by h ≈ 0.01 Å, Φ3 ~ ΔF/h², so a force error δ gives an error ~δ/h² in every Φ3 element — including the
many that are physically ~0.  The three-phonon scattering rate is a sum of |Φ3|² terms; random errors add
in quadrature and never cancel, so they open spurious scattering channels, raise the rates and lower κ
(docs/noise.md).
"""

from __future__ import annotations

import json
from pathlib import Path

from kappaflow.plotting import save_figure
import numpy as np

from kappaflow import reap as reap_mod
from kappaflow.bte import KappaResult, read_kappa_csv

DISPLACED_ROLES = ("fc3", "fc2")


def amplitude_label(amplitude_ev_per_ang: float) -> str:
    """A file-name-safe label in µeV/Å (integers): 0, 10, 20000."""
    return f"{round(amplitude_ev_per_ang * 1e6):d}"


def noisy_forces(forces: dict, amplitude_ev_per_ang: float, seed: int) -> dict:
    """Copy of ``forces`` (role -> index -> (n,3)) with Gaussian noise on every displaced supercell.

    Deterministic for (amplitude, seed); amplitude 0 returns the very same arrays."""
    if amplitude_ev_per_ang == 0.0:
        return forces
    rng = np.random.default_rng([int(seed), round(amplitude_ev_per_ang * 1e12)])
    out = {}
    for role in sorted(forces):
        out[role] = {}
        for index in sorted(forces[role]):
            f = forces[role][index]
            if role in DISPLACED_ROLES:
                f = f + rng.normal(0.0, amplitude_ev_per_ang, size=f.shape)
            out[role][index] = f
    return out


def replaced_forces(forces: dict, manifest: dict, ml_forces: dict) -> dict:
    """Forces with every supercell's forces -- displaced ones *and* the undisplaced ``base`` /
    ``fc2_base``, whose forces reap subtracts as residual forces -- replaced by ``ml_forces[key]``.

    The undisplaced supercell must carry the model's own forces: a model's residual force at
    equilibrium (or any offset common to all supercells) then cancels in the subtraction exactly as
    the DFT residual does, and the study measures the model's error in the force *differences*.
    Keeping the DFT base would leave the model's residual in every supercell (docs/noise.md)."""
    by_job = {(j["role"], j["index"]): j["key"] for j in manifest["jobs"]}
    missing = sorted({by_job[(role, index)] for role, items in forces.items() for index in items}
                     - set(ml_forces))
    if missing:
        raise KeyError(f"no ML forces for supercell {missing[0]} ({len(missing)} missing)")
    return {role: {index: np.asarray(ml_forces[by_job[(role, index)]], dtype=np.float64)
                   for index in items} for role, items in forces.items()}


def kappa_with_forces(ph3_loader, manifest: dict, forces: dict, fc_calculator: str, bte_cfg: dict,
                      mesh=None) -> KappaResult:
    """The DFT route's reap and BTE on the given forces, in memory."""
    from kappaflow import bte as bte_mod

    ph3 = ph3_loader()
    reap_mod.produce_force_constants(ph3, manifest, forces, fc_calculator)
    temperatures = bte_mod.temperatures_from_config(bte_cfg["temperatures"])
    return bte_mod.run_phono3py(ph3, mesh or bte_cfg["mesh"], temperatures, bte_cfg["method"],
                                bte_cfg["isotopes"], bte_cfg["boundary_mfp_um"], bte_cfg["sigma_thz"])


def force_rmse(forces: dict, reference: dict) -> float:
    diffs = [forces[r][i] - reference[r][i] for r in forces if r in DISPLACED_ROLES for i in forces[r]]
    return float(np.sqrt(np.mean(np.concatenate([d.ravel() for d in diffs]) ** 2))) if diffs else 0.0


# --- summary ------------------------------------------------------------------------------------
def collect(runs: list[dict]) -> list[dict]:
    """Rows (source, amplitude, seed, T, κxx, κyy, κzz) of all runs; each run: {amplitude, seed,
    kappa_csv, source, rmse}."""
    rows = []
    for run in runs:
        result = read_kappa_csv(run["kappa_csv"])
        for t, k in zip(result.temperatures_k, result.kappa_w_per_mk):
            rows.append({"source": run.get("source", "noise"), "amplitude_ev_per_ang": run["amplitude"],
                         "seed": run["seed"], "force_rmse_ev_per_ang": run.get("rmse", run["amplitude"]),
                         "T_K": float(t), "kappa_xx": float(k[0, 0]), "kappa_yy": float(k[1, 1]),
                         "kappa_zz": float(k[2, 2])})
    return rows


def write_table(path, rows: list[dict]) -> None:
    from kappaflow.tables import write_table

    write_table(path, rows, list(rows[0]))


def tolerance(rows: list[dict], band: float) -> dict:
    """The largest amplitude such that it and every smaller one keep κxx, κyy, κzz within ``band``
    (relative) of the noise-free κ at every temperature, for every seed."""
    noise = [r for r in rows if r["source"] == "noise"]
    ref = {r["T_K"]: r for r in noise if r["amplitude_ev_per_ang"] == 0.0}
    if not ref:
        raise ValueError("the noise study needs amplitude 0 (the noise-free reference)")
    deviation = {}
    for r in noise:
        base = ref[r["T_K"]]
        dev = max(abs(r[c] / base[c] - 1.0) for c in ("kappa_xx", "kappa_yy", "kappa_zz"))
        a = r["amplitude_ev_per_ang"]
        deviation[a] = max(deviation.get(a, 0.0), dev)
    tol = 0.0
    for a in sorted(deviation):
        if deviation[a] > band:
            break
        tol = a
    return {"tolerance_ev_per_ang": tol, "tolerance_uev_per_ang": tol * 1e6, "band": band,
            "max_relative_deviation_by_amplitude": {f"{a:.3e}": d for a, d in sorted(deviation.items())},
            "temperatures_k": sorted(ref)}


def write_tolerance(path, data: dict) -> None:
    Path(path).write_text(json.dumps(data, indent=1))


def plot(rows: list[dict], tol: dict, kappa_paths: dict, ratio_path, temperature_k: float = 300.0) -> None:
    """κxx(T), κzz(T) per amplitude (log scale, seed 0) and κ(300 K)/κ0 vs amplitude with the spread."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    noise = [r for r in rows if r["source"] == "noise"]
    amps = sorted({r["amplitude_ev_per_ang"] for r in noise})
    cmap = plt.get_cmap("viridis")
    for comp, path in kappa_paths.items():
        fig, ax = plt.subplots(figsize=(6, 4.3), dpi=120)
        for n, a in enumerate(amps):
            seed0 = min(r["seed"] for r in noise if r["amplitude_ev_per_ang"] == a)
            sel = [r for r in noise if r["amplitude_ev_per_ang"] == a and r["seed"] == seed0]
            label = "noise-free" if a == 0 else (f"{a * 1e6:g} µeV/Å" if a < 1e-3 else f"{a * 1e3:g} meV/Å")
            ax.plot([r["T_K"] for r in sel], [r[comp] for r in sel], "o-", ms=2.5, lw=1.2,
                    color="k" if a == 0 else cmap(n / max(len(amps) - 1, 1)), label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("T (K)")
        ax.set_ylabel(rf"$\kappa_{{{comp[-2:]}}}$ (W m$^{{-1}}$ K$^{{-1}}$)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        save_figure(fig, path)

    temps = sorted({r["T_K"] for r in noise})
    t_sel = min(temps, key=lambda t: abs(t - temperature_k))
    ref = [r for r in noise if r["amplitude_ev_per_ang"] == 0 and r["T_K"] == t_sel][0]
    fig, ax = plt.subplots(figsize=(6, 4.3), dpi=120)
    xs, mean, lo, hi = [], [], [], []
    for a in amps:
        if a == 0:
            continue
        ratios = [r["kappa_xx"] / ref["kappa_xx"] for r in noise if r["amplitude_ev_per_ang"] == a
                  and r["T_K"] == t_sel]
        xs.append(a * 1e6)
        mean.append(np.mean(ratios))
        lo.append(np.min(ratios))
        hi.append(np.max(ratios))
    ax.plot(xs, mean, "o-", color="C0", label=r"noise: mean over seeds")
    ax.fill_between(xs, lo, hi, color="C0", alpha=0.25, label="min–max over seeds")
    band = tol["band"]
    ax.axhspan(1 - band, 1 + band, color="0.85", zorder=0, label=f"±{100 * band:g} % band")
    if tol["tolerance_ev_per_ang"] > 0:
        ax.axvline(tol["tolerance_ev_per_ang"] * 1e6, color="C3", ls="--",
                   label=f"tolerance {tol['tolerance_ev_per_ang'] * 1e6:g} µeV/Å")
    for r in rows:
        if r["source"] != "noise" and r["T_K"] == t_sel:
            ax.plot(r["force_rmse_ev_per_ang"] * 1e6, r["kappa_xx"] / ref["kappa_xx"], "*", ms=12,
                    label=f"{r['source']} (force RMSE)")
    ax.set_xscale("log")
    ax.set_xlabel("force error: noise amplitude or RMSE (µeV/Å)")
    ax.set_ylabel(rf"$\kappa_{{xx}}$({t_sel:.0f} K) / noise-free")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, ratio_path)
