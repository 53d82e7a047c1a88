"""The Green–Kubo route's named steps (``snakemake gk``; thin scripts in ``scripts/gk_*.py`` call them).

``resolve_settings(gk_cfg)`` fills the preset's values for every key the user left null (``light``:
CI-sized; ``production``: the converged setting, see docs/green_kubo.md).  ``make_model`` builds the
potential: ``sw`` (the mock pw.x's Stillinger–Weber Si in TensorFlow, :mod:`kappaflow.gk.potentials_tf`)
or ``committee`` (the ML route's committee mean, :mod:`kappaflow.gk.committee_tf`).

Files, per temperature T under ``R/gk/T<T>/``: ``starts.npz`` (NVT thermalisation: the starting
points), ``traj<k>.npz`` (one NVE trajectory with J every ``flux_every`` steps; its checkpoint while it
runs is ``checkpoints/traj<k>.npz``), ``kappa.json`` + ``hfacf.png`` + ``kappa_tau.png`` (the analysis);
``R/gk/kappa_gk.csv`` and ``R/gk/kappa_gk_vs_bte.png`` side by side with the BTE κ of the same potential.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from kappaflow.errors import ConfigError, KappaflowError
from kappaflow.tables import write_table

__all__ = ["PRESETS", "MD_KEYS", "ANALYSIS_KEYS", "resolve_settings", "md_params", "analysis_params", "make_model",
           "md_settings", "gk_starts", "gk_trajectory", "gk_analyse", "gk_report", "bte_classical",
           "gk_bte_classical", "committee_spread", "member_models", "cell_label", "size_cells", "gk_size_report"]

#: the preset values of the keys left null in the config (supercell: repeats of the unit cell)
PRESETS = {
    # light: a run of the route, not a converged κ (Si's phonons outlive 5 ps): κ(τ) is read at the
    # longest lag when it has no first dip, and the result says so
    "light": {"supercell": [3, 3, 3], "thermalisation_steps": 1000, "start_spacing_steps": 250, "n_trajectories": 3,
              "trajectory_steps": 2500, "max_lag_fs": 1500.0, "on_no_dip": "max_lag"},
    "production": {"supercell": [5, 5, 5], "thermalisation_steps": 5000, "start_spacing_steps": 2500,
                   "n_trajectories": 8, "trajectory_steps": 100000, "max_lag_fs": 20000.0, "on_no_dip": "error"},
}


#: the settings the MD depends on (the rules' params: an analysis setting changed reruns no MD)
MD_KEYS = ("potential", "sw_partition", "supercell", "timestep_fs", "thermalisation_steps", "start_spacing_steps",
           "friction_per_fs", "n_trajectories", "trajectory_steps", "flux_every", "segment_steps",
           "max_drift_ev_per_atom", "gauge", "committee_spread", "seed")
#: the settings of the analysis of the stored fluxes
ANALYSIS_KEYS = ("max_lag_fs", "filter_thz", "subtract_mean", "cepstral", "on_no_dip")


def md_params(cfg: dict, supercell: str | None = None) -> dict:
    """The MD settings (the rules' params); ``supercell``: a cell-size study's ``<a>x<b>x<c>`` instead of
    ``gk.supercell``."""
    out = {k: cfg[k] for k in MD_KEYS}
    if supercell is not None:
        out["supercell"] = parse_cell_label(supercell)
    return out


def cell_label(repeats) -> str:
    """``[4, 4, 4]`` -> ``"4x4x4"`` (the cell-size study's folder name)."""
    return "x".join(str(int(n)) for n in repeats)


def parse_cell_label(label: str) -> list[int]:
    parts = str(label).split("x")
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ConfigError(f"gk: {label!r} is not a supercell label <a>x<b>x<c> of three positive integers")
    return [int(p) for p in parts]


def size_cells(cfg: dict) -> list[str]:
    """The cells of the size study, ``gk.supercell`` (the main run) among them, smallest first; empty when
    ``gk.cell_sizes`` is empty."""
    sizes = [cell_label(c) for c in cfg.get("cell_sizes") or []]
    if not sizes:
        return []
    repeated = sorted({c for c in sizes if sizes.count(c) > 1})
    if repeated:
        raise ConfigError(f"gk.cell_sizes: {', '.join(repeated)} given more than once")
    cells = set(sizes) | {cell_label(cfg["supercell"])}
    return sorted(cells, key=lambda c: (int(np.prod(parse_cell_label(c))), c))


def analysis_params(cfg: dict) -> dict:
    return {k: cfg[k] for k in ANALYSIS_KEYS}


def resolve_settings(gk_cfg: dict) -> dict:
    """The gk config with the preset's values where a key is null."""
    cfg = dict(gk_cfg)
    preset = cfg.get("preset", "light")
    if preset not in PRESETS:
        raise ConfigError(f"gk.preset: {preset!r} is not one of {', '.join(PRESETS)}")
    for key, value in PRESETS[preset].items():
        if cfg.get(key) is None:
            cfg[key] = value
    steps = int(cfg["trajectory_steps"])
    dt = float(cfg["timestep_fs"]) * int(cfg["flux_every"])
    if 2 * float(cfg["max_lag_fs"]) > steps * float(cfg["timestep_fs"]):
        raise ConfigError(f"gk: max_lag_fs {cfg['max_lag_fs']:g} fs needs trajectories of at least twice that; "
                          f"trajectory_steps {steps} x timestep_fs {cfg['timestep_fs']:g} = "
                          f"{steps * float(cfg['timestep_fs']):g} fs")
    if float(cfg["max_lag_fs"]) < 8 * dt:
        raise ConfigError(f"gk: max_lag_fs {cfg['max_lag_fs']:g} fs is fewer than 8 flux samples ({dt:g} fs apart)")
    size_cells(cfg)  # a repeated cell in gk.cell_sizes stops here
    if int(cfg["segment_steps"]) % int(cfg["flux_every"]):
        raise ConfigError(f"gk: segment_steps {cfg['segment_steps']} must be a multiple of flux_every {cfg['flux_every']}")
    return cfg


def make_model(gk_cfg: dict, model_paths=()):
    if gk_cfg["potential"] == "sw":
        from kappaflow.gk.potentials_tf import StillingerWeberTF

        return StillingerWeberTF(gk_cfg["sw_partition"])
    from kappaflow.gk.committee_tf import CommitteeAtomicEnergies
    from kappaflow.ml.model import Committee

    dirs = [str(Path(p).parent) if str(p).endswith(".npz") else str(p) for p in model_paths]
    if not dirs:
        raise KappaflowError("gk.potential committee: no model directories (run the ML route: snakemake ml)")
    return CommitteeAtomicEnergies(Committee.load(dirs))


def member_models(gk_cfg: dict, model) -> list:
    """The committee's members as atomic-energy models (gk.committee_spread with gk.potential committee),
    whose heat flux is taken on the mean's trajectory; none otherwise."""
    if gk_cfg["potential"] != "committee" or not gk_cfg.get("committee_spread", True):
        return []
    from kappaflow.gk.committee_tf import CommitteeAtomicEnergies

    return [CommitteeAtomicEnergies(model.committee, member=k) for k in range(model.n_members)]


def model_label(gk_cfg: dict, model_paths=()) -> dict:
    if gk_cfg["potential"] == "sw":
        return {"potential": "sw", "partition": gk_cfg["sw_partition"]}
    return {"potential": "committee", "models": [str(p) for p in model_paths]}


def md_settings(gk_cfg: dict, temperature_k: float):
    from kappaflow.gk.md import MDSettings

    c = gk_cfg
    return MDSettings(temperature_k=float(temperature_k), timestep_fs=float(c["timestep_fs"]),
                      thermalisation_steps=int(c["thermalisation_steps"]),
                      start_spacing_steps=int(c["start_spacing_steps"]), friction_per_fs=float(c["friction_per_fs"]),
                      n_trajectories=int(c["n_trajectories"]), trajectory_steps=int(c["trajectory_steps"]),
                      flux_every=int(c["flux_every"]), segment_steps=int(c["segment_steps"]),
                      max_drift_ev_per_atom=float(c["max_drift_ev_per_atom"]),
                      seed=int(c["seed"]) + int(round(float(temperature_k))))


def _supercell(structure_path, repeats):
    from ase.build import make_supercell

    from kappaflow.structure import read_structure

    unit = read_structure(structure_path)
    return make_supercell(unit, np.diag([int(n) for n in repeats]))


def gk_starts(structure_path, gk_cfg: dict, temperature_k: float, model_paths, out_path) -> Path:
    """NVT thermalisation of the relaxed cell's ``gk.supercell`` and the starting points."""
    from kappaflow import logs
    from kappaflow.gk.md import AtomicEnergyCalculator, CompiledModel, check_cell, thermalise

    cfg = gk_cfg  # md_params(resolve_settings(config["gk"]))
    atoms = _supercell(structure_path, cfg["supercell"])
    model = make_model(cfg, model_paths)
    check_cell(model, atoms.cell.array)
    settings = md_settings(cfg, temperature_k)
    logs.progress(f"gk: {len(atoms)}-atom supercell {cfg['supercell']} of {structure_path}, {settings.temperature_k:g} K, "
                  f"{settings.n_trajectories} starting points")
    provenance = {"structure": str(structure_path), "supercell": cfg["supercell"], **model_label(cfg, model_paths),
                  "reference_positions_ang": atoms.positions.tolist()}
    return thermalise(atoms, AtomicEnergyCalculator(CompiledModel(model)), settings, Path(out_path), provenance,
                      log=logs.progress)


def gk_trajectory(starts_path, index: int, gk_cfg: dict, model_paths, checkpoint_path, out_path) -> Path:
    """One NVE trajectory (resumed from its checkpoint), copied to ``out_path`` when complete."""
    from kappaflow import atomic, logs
    from kappaflow.gk.heatflux import gauge_matrices
    from kappaflow.gk.md import CompiledModel, read_trajectory, run_trajectory

    cfg = gk_cfg  # md_params(resolve_settings(config["gk"]))
    starts = read_trajectory(starts_path)
    settings = md_settings(cfg, float(starts["provenance"]["settings"]["temperature_k"]))
    model = make_model(cfg, model_paths)
    members = member_models(cfg, model)
    gauge, member_gauges = None, ()
    if cfg["gauge"]:
        from ase.data import chemical_symbols

        symbols = [chemical_symbols[z] for z in starts["numbers"]]
        reference = np.array(starts["provenance"]["reference_positions_ang"])
        gauge = gauge_matrices(model, reference, starts["cell_ang"], symbols)
        member_gauges = tuple(gauge_matrices(m, reference, starts["cell_ang"], symbols) for m in members)
    provenance = {**model_label(cfg, model_paths), "gauge": bool(cfg["gauge"]), "form": "unfolded",
                  "supercell": starts["provenance"].get("supercell")}
    checkpoint = Path(checkpoint_path)
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    run_trajectory(Path(starts_path), int(index), CompiledModel(model), settings, checkpoint, provenance,
                   gauge=gauge, log=logs.progress, members=tuple(CompiledModel(m) for m in members),
                   member_gauges=member_gauges)
    atomic.copy_file(checkpoint, out_path)
    return Path(out_path)


def gk_analyse(trajectory_paths, gk_cfg: dict, out_json, hfacf_png, kappa_tau_png, convergence_png) -> dict:
    """HFACF, κ(τ), first dip (and sportran's cepstral κ when ``gk.cepstral``) of one temperature; κ from
    shortened trajectories and from fewer of them (the convergence figure)."""
    from kappaflow import atomic, logs
    from kappaflow.gk.analysis import cepstral_kappa, convergence, green_kubo
    from kappaflow.gk.md import read_trajectory

    cfg = gk_cfg  # analysis_params(resolve_settings(config["gk"]))
    trajs = [read_trajectory(p) for p in trajectory_paths]
    for path, t in zip(trajectory_paths, trajs):
        if not bool(t["complete"]):
            raise KappaflowError(f"{path}: the trajectory is not complete")
    dt = float(trajs[0]["flux_dt_fs"])
    T = float(trajs[0]["temperature_k"])
    V = float(trajs[0]["volume_ang3"])
    fluxes = [t["flux_ev_ang_per_fs"] for t in trajs]
    result = green_kubo(fluxes, dt, T, V, float(cfg["max_lag_fs"]), float(cfg["filter_thz"]),
                        subtract_mean=bool(cfg["subtract_mean"]), on_no_dip=cfg["on_no_dip"])
    summary = {"temperature_k": T, "volume_ang3": V, "n_atoms": int(len(trajs[0]["positions_ang"])),
               "n_trajectories": len(trajs), "trajectory_ps": float(len(fluxes[0]) * dt * 1e-3),
               "flux_dt_fs": dt, "filter_thz": result.filter_thz, "cutoff_fs": result.cutoff_fs,
               "subtract_mean": bool(cfg["subtract_mean"]),
               # False: no first dip within max_lag_fs; κ is κ(τ) at the longest lag, not converged
               "converged": result.converged,
               "kappa_w_per_mk": result.kappa_w_per_mk, "kappa_stderr_w_per_mk": result.kappa_stderr_w_per_mk,
               "kappa_components_w_per_mk": result.kappa_components.tolist(),
               "kappa_per_trajectory_w_per_mk": result.kappa_per_trajectory.tolist(),
               # NVE runs from canonical starting points: each trajectory's mean kinetic temperature
               "md_temperature_mean_k": [float(np.mean(t["temperature_samples_k"])) for t in trajs],
               "provenance": trajs[0]["provenance"] | {"trajectories": [str(p) for p in trajectory_paths]}}
    summary["provenance"].pop("reference_positions_ang", None)
    if cfg["cepstral"]:
        kappa, err, details = cepstral_kappa(fluxes, dt, T, V)
        summary["cepstral"] = {"kappa_w_per_mk": kappa, "kappa_stderr_w_per_mk": err,
                               "n_components": details["n_components"], "library": "sportran"}
    members = [t.get("member_flux_ev_ang_per_fs", np.zeros((0, 0, 3))) for t in trajs]
    if members and members[0].shape[0] > 0:
        summary["committee"] = committee_spread(members, dt, T, V, result.cutoff_fs, cfg)
    temps = summary["md_temperature_mean_k"]
    where = (f"first dip at {result.cutoff_fs:g} fs" if result.converged else
             f"NOT CONVERGED: no first dip, κ(τ) read at the longest lag {result.cutoff_fs:g} fs")
    logs.progress(f"gk {T:g} K: κ = {result.kappa_w_per_mk:.2f} ± {result.kappa_stderr_w_per_mk:.2f} W/mK ({where}, "
                  f"{len(trajs)} trajectories of {summary['trajectory_ps']:g} ps, mean NVE "
                  f"T {np.mean(temps):.0f} K: {', '.join(f'{x:.0f}' for x in temps)})"
                  + (f"; cepstral {summary['cepstral']['kappa_w_per_mk']:.2f} ± "
                     f"{summary['cepstral']['kappa_stderr_w_per_mk']:.2f}" if cfg["cepstral"] else ""))
    summary["convergence"] = convergence(fluxes, dt, T, V, float(cfg["max_lag_fs"]), float(cfg["filter_thz"]),
                                         subtract_mean=bool(cfg["subtract_mean"]))
    atomic.write_text(out_json, json.dumps(summary, indent=1) + "\n")
    _plot_analysis(result, summary, hfacf_png, kappa_tau_png)
    _plot_convergence(summary, convergence_png)
    return summary


def committee_spread(member_fluxes, dt_fs: float, temperature_k: float, volume_ang3: float, cutoff_fs: float,
                     cfg: dict) -> dict:
    """κ of each committee member from its heat flux on the mean's trajectories (``member_fluxes``: one
    (n_members, n_samples, 3) array per trajectory), read at the mean's cutoff; the spread is their standard
    deviation: the committee's uncertainty of the potential carried to κ, to first order (the members'
    own dynamics are not run)."""
    from kappaflow.gk.analysis import green_kubo

    n_members = {m.shape[0] for m in member_fluxes}
    if len(n_members) != 1:
        raise KappaflowError(f"gk: the trajectories carry the fluxes of different numbers of members {sorted(n_members)}")
    kappas = []
    for k in range(n_members.pop()):
        r = green_kubo([m[k] for m in member_fluxes], dt_fs, temperature_k, volume_ang3, float(cfg["max_lag_fs"]),
                       float(cfg["filter_thz"]), subtract_mean=bool(cfg["subtract_mean"]), at_lag_fs=cutoff_fs)
        kappas.append(r.kappa_w_per_mk)
    kappas = np.array(kappas)
    return {"kappa_per_member_w_per_mk": kappas.tolist(), "kappa_member_mean_w_per_mk": float(kappas.mean()),
            "spread_w_per_mk": float(kappas.std(ddof=1)) if kappas.size > 1 else float("nan"),
            "at_cutoff_fs": float(cutoff_fs)}


def _plot_convergence(summary, out_png) -> None:
    """κ vs trajectory length and vs number of trajectories (each part analysed as a run of its own; open
    symbols: no first dip within the lag, κ read at the longest lag)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kappaflow.plotting import save_figure

    conv = summary["convergence"]
    fig, axes = plt.subplots(1, 2, figsize=(9.6, 3.8), dpi=120, sharey=True)
    for ax, rows, key, xlabel in ((axes[0], conv["by_length"], "trajectory_ps", "trajectory length (ps)"),
                                  (axes[1], conv["by_count"], "n_trajectories", "number of trajectories")):
        for converged, face in ((True, "C0"), (False, "white")):
            part = [r for r in rows if r["converged"] == converged]
            if part:
                ax.errorbar([r[key] for r in part], [r["kappa_w_per_mk"] for r in part],
                            yerr=[r["kappa_stderr_w_per_mk"] for r in part], fmt="o", mfc=face, mec="C0", color="C0",
                            capsize=3, label="first dip" if converged else "no first dip: at the longest lag")
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("κ (W/mK), tr/3")
    axes[0].set_title(f"{summary['n_trajectories']} trajectories, cut shorter")
    axes[1].set_title(f"{summary['trajectory_ps']:g} ps each, fewer of them")
    axes[1].legend(fontsize=8)
    fig.suptitle(f"Green–Kubo κ convergence, {summary['temperature_k']:g} K, {summary['n_atoms']} atoms")
    fig.tight_layout()
    save_figure(fig, out_png)


def _plot_analysis(result, summary, hfacf_png, kappa_tau_png) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kappaflow.plotting import save_figure

    T = summary["temperature_k"]
    lag_ps = result.lag_fs * 1e-3
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    iso = result.hfacf.mean(axis=1)
    ax.plot(lag_ps, iso / iso[0], lw=0.8, color="0.6", label="HFACF tr/3 (normalised)")
    ax.plot(lag_ps, result.hfacf_iso_smoothed / iso[0], lw=1.4, color="C0",
            label=f"from the {result.filter_thz:g} THz filtered κ(τ)")
    ax.axvline(result.cutoff_fs * 1e-3, color="C3", ls="--",
               label=f"first dip {result.cutoff_fs * 1e-3:.3g} ps" if result.converged else "no first dip: the longest lag")
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xlabel("τ (ps)")
    ax.set_ylabel("⟨J(τ)·J(0)⟩ / ⟨J(0)·J(0)⟩")
    ax.set_title(f"heat-flux autocorrelation, {T:g} K, {summary['n_trajectories']} trajectories")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    save_figure(fig, hfacf_png)

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for a, name in enumerate("xyz"):
        ax.plot(lag_ps, result.kappa_tau[:, a], lw=0.7, alpha=0.6, label=f"κ{name}{name}(τ)")
    ax.plot(lag_ps, result.kappa_tau_iso_filtered, lw=1.6, color="k", label="tr/3, filtered")
    ax.axvline(result.cutoff_fs * 1e-3, color="C3", ls="--",
               label="first dip" if result.converged else "no first dip: the longest lag")
    k, e = result.kappa_w_per_mk, result.kappa_stderr_w_per_mk
    ax.axhspan(k - e, k + e, color="C3", alpha=0.15,
               label=f"κ = {k:.2g} ± {e:.2g} W/mK" + ("" if result.converged else " (NOT converged)"))
    if "cepstral" in summary:
        c = summary["cepstral"]
        ax.axhline(c["kappa_w_per_mk"], color="C2", ls=":", label=f"cepstral (sportran) {c['kappa_w_per_mk']:.1f} ± "
                                                                  f"{c['kappa_stderr_w_per_mk']:.1f}")
    ax.set_xlabel("τ (ps)")
    ax.set_ylabel("κ(τ) (W/mK)")
    ax.set_title(f"cumulative Green–Kubo κ, {T:g} K" + ("" if result.converged else ": not converged"))
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    save_figure(fig, kappa_tau_png)


#: the temperature of the quantum run whose κ, scaled by T_high/T, is the classical κ (module gk_bte_classical)
CLASSICAL_HIGH_TEMPERATURE_K = 1.0e5


def bte_classical(ph3, mesh, temperatures_k, method: str = "rta", sigma_thz=None,
                  high_temperature_k: float = CLASSICAL_HIGH_TEMPERATURE_K) -> dict:
    """The intrinsic (three-phonon only: no isotopes, no boundary; the MD has neither) BTE κ tr/3 with
    quantum occupations at ``temperatures_k``, and with classical ones.

    phono3py (4.10) has no classical switch; the classical κ follows from its quantum run at one high
    temperature T_h: with n(ω) = k_BT/ħω the three-phonon rates (n2 + n3 + 1, n2 − n3) are ∝ T and the mode
    heat capacity is k_B, so the classical κ is ∝ 1/T, κ_cl(T) = κ_cl(T_h) T_h/T; and at T_h ≫ ħω_max/k_B
    the quantum κ equals the classical one up to O((ħω/k_BT_h)²) (the −½ of n = k_BT/ħω − ½ + … cancel in
    both combinations): 5e-5 for Si at 10⁵ K.  This holds for RTA and LBTE alike."""
    from kappaflow.bte import run_phono3py

    temps = np.asarray(temperatures_k, dtype=np.float64)
    result = run_phono3py(ph3, mesh, np.append(temps, high_temperature_k), method, isotopes=False,
                          boundary_mfp_um=None, sigma_thz=sigma_thz)
    iso = np.trace(result.kappa_w_per_mk, axis1=1, axis2=2) / 3.0
    return {"temperature_k": temps, "kappa_quantum_w_per_mk": iso[:-1],
            "kappa_classical_w_per_mk": iso[-1] * high_temperature_k / temps, "high_temperature_k": high_temperature_k}


def gk_bte_classical(disp_yaml, fc2_path, fc3_path, bte_cfg: dict, temperatures_k, out_csv) -> None:
    """The intrinsic BTE κ of the GK route's potential at the GK temperatures, quantum and classical
    (:func:`bte_classical`), as a table."""
    import pandas as pd
    from phono3py.file_IO import read_fc2_from_hdf5, read_fc3_from_hdf5

    from kappaflow import logs
    from kappaflow.sow import load_phono3py

    ph3 = load_phono3py(disp_yaml)
    ph3.fc3 = read_fc3_from_hdf5(filename=str(fc3_path))
    ph3.fc2 = read_fc2_from_hdf5(filename=str(fc2_path))
    out = bte_classical(ph3, bte_cfg["mesh"], temperatures_k, bte_cfg["method"], bte_cfg["sigma_thz"])
    table = pd.DataFrame({"temperature_k": out["temperature_k"],
                          "kappa_bte_intrinsic_quantum_w_per_mk": out["kappa_quantum_w_per_mk"],
                          "kappa_bte_intrinsic_classical_w_per_mk": out["kappa_classical_w_per_mk"]})
    for _, row in table.iterrows():
        logs.progress(f"gk: intrinsic BTE κ({row.temperature_k:g} K) quantum "
                      f"{row.kappa_bte_intrinsic_quantum_w_per_mk:.1f}, classical "
                      f"{row.kappa_bte_intrinsic_classical_w_per_mk:.1f} W/mK")
    write_table(out_csv, table)


def _kappa_row(s: dict) -> dict:
    """A table row of one temperature's kappa.json (:func:`gk_analyse`): both estimators and the run's size;
    the committee spread when there is one."""
    row = {"temperature_k": s["temperature_k"], "kappa_gk_w_per_mk": s["kappa_w_per_mk"],
           "kappa_gk_stderr_w_per_mk": s["kappa_stderr_w_per_mk"], "cutoff_fs": s["cutoff_fs"],
           "n_atoms": s["n_atoms"], "n_trajectories": s["n_trajectories"], "trajectory_ps": s["trajectory_ps"],
           "converged": s["converged"]}
    if "committee" in s:
        row["kappa_gk_committee_spread_w_per_mk"] = s["committee"]["spread_w_per_mk"]
    if "cepstral" in s:
        row["kappa_cepstral_w_per_mk"] = s["cepstral"]["kappa_w_per_mk"]
        row["kappa_cepstral_stderr_w_per_mk"] = s["cepstral"]["kappa_stderr_w_per_mk"]
    return row


def gk_report(kappa_jsons, bte_kappa_csv, out_csv, out_png, bte_classical_csv=None) -> None:
    """κ_GK(T) (first dip and cepstral) next to the BTE κ of the same potential (tr/3 at the same T)."""
    import pandas as pd

    from kappaflow.bte import read_kappa_csv

    rows = []
    bte = read_kappa_csv(bte_kappa_csv) if bte_kappa_csv else None
    for path in kappa_jsons:
        s = json.loads(Path(path).read_text())
        row = _kappa_row(s)
        if bte is not None:
            iso = np.trace(bte.kappa_w_per_mk, axis1=1, axis2=2) / 3.0
            T = s["temperature_k"]
            if not bte.temperatures_k.min() <= T <= bte.temperatures_k.max():
                raise KappaflowError(f"{bte_kappa_csv}: no BTE κ at {T:g} K (it spans {bte.temperatures_k.min():g}-"
                                     f"{bte.temperatures_k.max():g} K)")
            row["kappa_bte_w_per_mk"] = float(np.interp(T, bte.temperatures_k, iso))
        rows.append(row)
    table = pd.DataFrame(rows).sort_values("temperature_k")
    classical = None
    if bte_classical_csv:
        classical = pd.read_csv(bte_classical_csv)
        table = table.merge(classical, on="temperature_k", how="left", validate="one_to_one")
        if table["kappa_bte_intrinsic_classical_w_per_mk"].isna().any():
            raise KappaflowError(f"{bte_classical_csv}: no classical BTE κ at every GK temperature "
                                 f"({', '.join(f'{t:g}' for t in table['temperature_k'])} K)")
    write_table(out_csv, table)
    _plot_report(table, bte, out_png, classical)


def gk_size_report(kappa_jsons, cells, out_csv, out_png, bte_kappa_csv=None) -> None:
    """κ vs cell size: one row per (supercell, temperature) from each run's kappa.json (``cells``: the
    ``<a>x<b>x<c>`` label of each file), and the figure; the BTE κ of the same potential as a line."""
    import pandas as pd

    from kappaflow import logs
    from kappaflow.bte import read_kappa_csv

    if len(kappa_jsons) != len(cells):
        raise KappaflowError(f"gk_size_report: {len(kappa_jsons)} kappa files for {len(cells)} cells")
    rows = []
    for path, cell in zip(kappa_jsons, cells):
        s = json.loads(Path(path).read_text())
        recorded = s.get("provenance", {}).get("supercell")
        if recorded is not None and cell_label(recorded) != cell:
            raise KappaflowError(f"{path}: the trajectories are of the {cell_label(recorded)} supercell, not {cell}")
        rows.append({"supercell": cell, **_kappa_row(s)})
        logs.progress(f"gk size {cell} ({s['n_atoms']} atoms), {s['temperature_k']:g} K: κ = {s['kappa_w_per_mk']:.2f} "
                      f"± {s['kappa_stderr_w_per_mk']:.2f} W/mK" + ("" if s["converged"] else " (no first dip)"))
    table = pd.DataFrame(rows).sort_values(["temperature_k", "n_atoms"]).reset_index(drop=True)
    write_table(out_csv, table)
    _plot_size(table, read_kappa_csv(bte_kappa_csv) if bte_kappa_csv else None, out_png)


def _plot_size(table, bte, out_png) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kappaflow.plotting import save_figure

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    for i, (T, part) in enumerate(table.groupby("temperature_k")):
        color = f"C{i}"
        conv = part["converged"].astype(bool)
        for mask, face, label in ((conv, color, f"{T:g} K, first dip"),
                                  (~conv, "white", f"{T:g} K, no first dip: κ(τ) at the longest lag")):
            if mask.any():
                ax.errorbar(part["n_atoms"][mask], part["kappa_gk_w_per_mk"][mask],
                            yerr=part["kappa_gk_stderr_w_per_mk"][mask], fmt="o-", mfc=face, mec=color, color=color,
                            capsize=3, label=label)
        if "kappa_cepstral_w_per_mk" in part:
            ax.errorbar(part["n_atoms"] * 1.03, part["kappa_cepstral_w_per_mk"],
                        yerr=part["kappa_cepstral_stderr_w_per_mk"], fmt="s:", color=color, alpha=0.6, capsize=3,
                        label=f"{T:g} K, cepstral (sportran)")
        if bte is not None:
            iso = np.trace(bte.kappa_w_per_mk, axis1=1, axis2=2) / 3.0
            if bte.temperatures_k.min() <= T <= bte.temperatures_k.max():
                ax.axhline(float(np.interp(T, bte.temperatures_k, iso)), color=color, ls="--", lw=1,
                           label=f"{T:g} K, BTE of the same potential")
    cells = table.drop_duplicates("supercell").sort_values("n_atoms")
    ax.set_xscale("log")
    ax.set_xticks(cells["n_atoms"], [f"{n}\n{c}" for n, c in zip(cells["n_atoms"], cells["supercell"])])
    ax.minorticks_off()
    ax.set_xlabel("atoms in the MD cell (supercell of the relaxed unit cell)")
    ax.set_ylabel("κ (W/mK), tr/3")
    first = table.iloc[0]
    ax.set_title(f"Green–Kubo κ vs cell size: {int(first.n_trajectories)} × {first.trajectory_ps:g} ps per cell")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, out_png)


def _plot_report(table, bte, out_png, classical=None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kappaflow.plotting import save_figure

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    conv = table["converged"].astype(bool)
    for mask, fmt, label in ((conv, "o", "Green–Kubo (first dip), classical MD"),
                             (~conv, "^", "Green–Kubo at the longest lag: NOT converged (κ(τ) still rising)")):
        if mask.any():
            ax.errorbar(table["temperature_k"][mask], table["kappa_gk_w_per_mk"][mask],
                        yerr=table["kappa_gk_stderr_w_per_mk"][mask], fmt=fmt, capsize=3, label=label)
    if "kappa_gk_committee_spread_w_per_mk" in table:
        ax.errorbar(table["temperature_k"] - 3, table["kappa_gk_w_per_mk"],
                    yerr=table["kappa_gk_committee_spread_w_per_mk"], fmt="none", ecolor="C4", capsize=5, lw=2,
                    label="committee spread of the GK κ (members' fluxes on the mean's trajectories)")
    if "kappa_cepstral_w_per_mk" in table:
        ax.errorbar(table["temperature_k"] + 3, table["kappa_cepstral_w_per_mk"],
                    yerr=table["kappa_cepstral_stderr_w_per_mk"], fmt="s", capsize=3, label="Green–Kubo (cepstral, sportran), same fluxes")
    if bte is not None:
        iso = np.trace(bte.kappa_w_per_mk, axis1=1, axis2=2) / 3.0
        ax.plot(bte.temperatures_k, iso, "k-", label="BTE (quantum occupations), same potential, the sow supercell")
    if classical is not None:
        ax.plot(classical["temperature_k"], classical["kappa_bte_intrinsic_quantum_w_per_mk"], "k--", marker=".",
                label="BTE, quantum, intrinsic (no isotopes, no boundary: as in the MD)")
        ax.plot(classical["temperature_k"], classical["kappa_bte_intrinsic_classical_w_per_mk"], "C1--", marker="D",
                label="BTE, classical occupations, intrinsic (the MD's statistics)")
    ax.set_xlabel("T (K)")
    ax.set_ylabel("κ (W/mK), tr/3")
    ax.set_yscale("log")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    ax.set_title("Green–Kubo and BTE κ from the same potential")
    save_figure(fig, out_png)
