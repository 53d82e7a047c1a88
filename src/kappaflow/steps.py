"""The pipeline's named steps, each a plain function of explicit paths and settings.

Snakemake's scripts (``scripts/*.py``) and the ``kappaflow`` command line call these; nothing here
imports Snakemake.  Every step writes its outputs to a temporary name and renames, so a killed step
never leaves a half-written file behind.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from kappaflow import bte as bte_mod
from kappaflow import dft, reap, sow
from kappaflow.atomic import atomic_path  # noqa: F401  (the one atomic-write helper; re-exported)
from kappaflow.engine import engine_for
from kappaflow.errors import KappaflowError
from kappaflow.logs import LOG_FILES, progress  # noqa: F401  (re-exported: scripts and the CLI use them)
from kappaflow.qe.pwin import read_pw_input
from kappaflow.qe.pwout import read_pw_output
from kappaflow.sow import load_phono3py  # noqa: F401  (re-exported)
from kappaflow.structure import read_structure, write_structure
from kappaflow.tables import write_table

log = logging.getLogger("kappaflow")




# --- structure ----------------------------------------------------------------------------------
def relax_input(unitcell_path, out_path, pseudo_dir=None, pw_overrides=None) -> None:
    pw = read_pw_input(unitcell_path)
    pw.set("control", "calculation", "vc-relax")
    pw.set("control", "tprnfor", True)
    pw.set("control", "tstress", True)
    pw.set("control", "outdir", "./tmp")
    if pseudo_dir:
        pw.set("control", "pseudo_dir", str(pseudo_dir))
    sow.apply_overrides(pw, pw_overrides or {})
    with atomic_path(out_path) as tmp:
        tmp.write_text(pw.to_text())


def structure_from_relax(relax_input_path, relax_output_path, out_path) -> None:
    pw = read_pw_input(relax_input_path)
    run = read_pw_output(relax_output_path, expected_n_atoms=len(pw.atoms), require_forces=True)
    if run.final_positions_frac is None:
        raise KappaflowError(f"{relax_output_path}: no 'Begin final coordinates' block: the vc-relax "
                             "did not converge (raise nstep or loosen the thresholds)")
    if run.final_symbols != [str(s) for s in pw.atoms.arrays["qe_labels"]]:
        raise KappaflowError(f"{relax_output_path}: final coordinates list species {run.final_symbols}, "
                             "not those of the input")
    atoms = pw.atoms.copy()
    cell = run.final_cell_ang if run.final_cell_ang is not None else np.asarray(atoms.cell)
    atoms.set_cell(cell, scale_atoms=False)
    atoms.set_scaled_positions(run.final_positions_frac)
    with atomic_path(out_path) as tmp:
        write_structure(tmp, atoms, source=f"vc-relax {relax_output_path}")
    progress(f"relaxed cell lengths {atoms.cell.lengths()} Å, volume {atoms.get_volume():.4f} Å^3")


def structure_from_input(unitcell_path, out_path) -> None:
    pw = read_pw_input(unitcell_path)
    with atomic_path(out_path) as tmp:
        write_structure(tmp, pw.atoms, source=f"unrelaxed {unitcell_path}")


# --- sow ----------------------------------------------------------------------------------------
def sow_settings(sow_cfg: dict) -> sow.SowSettings:
    return sow.SowSettings(
        supercell_matrix=sow_cfg["supercell"], strategy=sow_cfg["strategy"],
        amplitude_ang=sow_cfg["amplitude_ang"], pair_cutoff_ang=sow_cfg["pair_cutoff_ang"],
        neighbour_shells=sow_cfg["neighbour_shells"], n_random=sow_cfg["n_random"],
        random_seed=sow_cfg["random_seed"], fc2_supercell_matrix=sow_cfg["fc2_supercell"],
        subtract_residual_forces=sow_cfg["subtract_residual_forces"], symprec=sow_cfg["symprec"])


def pw_overrides_for_supercells(dft_cfg: dict) -> dict:
    overrides = {k: dict(v) for k, v in (dft_cfg.get("pw_overrides") or {}).items()}
    if dft_cfg.get("pseudo_dir"):
        overrides.setdefault("control", {})["pseudo_dir"] = str(dft_cfg["pseudo_dir"])
    return overrides


def run_sow(structure_path, template_path, sow_cfg: dict, dft_cfg: dict, store_dir, manifest_path,
            disp_yaml_path) -> dict:
    unit = read_structure(structure_path)
    settings = sow_settings(sow_cfg)
    if settings.strategy == "thirdorder":
        from kappaflow.thirdorder_import import import_set

        with atomic_path(disp_yaml_path) as tmp_yaml:
            manifest = import_set(unit, settings, sow_cfg["thirdorder_dir"], sow_cfg["thirdorder_outputs"],
                                  disp_yaml_path=tmp_yaml, progress=progress)
        progress(f"sow: imported {manifest['n_displaced_fc3']} thirdorder supercells from "
                 f"{manifest['import']['dir']} (base forces subtracted: "
                 f"{manifest['import']['base_forces_subtracted']}); FC3 cutoff {manifest['fc3_cutoff_ang']:.4f} Å "
                 f"from {manifest['import']['cutoff_source']}")
        with atomic_path(manifest_path) as tmp:
            sow.write_manifest(tmp, manifest)
        return manifest
    with atomic_path(disp_yaml_path) as tmp_yaml:
        manifest = sow.sow(unit, settings, template_path, store_dir, engine_for(dft_cfg),
                           pw_overrides_for_supercells(dft_cfg), disp_yaml_path=tmp_yaml, progress=progress)
    unique = len({j["key"] for j in manifest["jobs"]})
    new = sum(1 for k in {j["key"] for j in manifest["jobs"]} if not (Path(store_dir) / k / "pw.out").exists())
    progress(f"sow: {manifest['n_displaced_fc3']} displaced FC3 supercells ({manifest['strategy']}, FC3 cutoff "
             f"{manifest['fc3_cutoff_ang']} Å), {unique} unique pw.x inputs, {new} not yet computed")
    with atomic_path(manifest_path) as tmp:
        sow.write_manifest(tmp, manifest)
    return manifest


def manifest_keys(manifest_path) -> list[str]:
    """Keys of the pw.x runs the store must compute (imported runs are not computed)."""
    manifest = sow.read_manifest(manifest_path)
    return sorted({j["key"] for j in manifest["jobs"] if "output" not in j})


def imported_outputs(manifest_path) -> list[str]:
    """pw.x outputs an imported (thirdorder) set brings along."""
    manifest = sow.read_manifest(manifest_path)
    return sorted({j["output"] for j in manifest["jobs"] if "output" in j})


# --- dft ----------------------------------------------------------------------------------------
run_dft = dft.run_dft  # one pw.x run (kappaflow.dft.run_dft; scripts/run_pw.py calls it without this module)


def run_cost(manifest_path, store_dir, dft_cfg: dict, table_path, summary_path) -> dict:
    manifest = sow.read_manifest(manifest_path)
    rows = dft.cost_table(manifest, store_dir, dft_cfg["nodes_per_job"], dft_cfg["cores_per_job"])
    # written here, not in kappaflow.dft: the pw.x jobs import dft, and their env (envs/dft.yaml) has no pandas
    write_table(table_path, rows, dft.COST_FIELDS)
    summary = {"n_runs": len(rows), "wall_time_s": sum(r["wall_time_s"] for r in rows),
               "node_hours": sum(r["node_hours"] for r in rows), "core_hours": sum(r["core_hours"] for r in rows)}
    with atomic_path(summary_path) as tmp:
        tmp.write_text(json.dumps(summary, indent=1))
    progress(f"cost: {summary['n_runs']} pw.x runs, {summary['wall_time_s']:.1f} s WALL, "
             f"{summary['node_hours']:.4f} node-hours")
    return summary


# --- reap ---------------------------------------------------------------------------------------
def mapped_forces(manifest: dict, store_dir, disp_yaml_path, reap_cfg: dict, ph3=None):
    """Every force set of ``manifest``, mapped by position onto the supercell phono3py_disp.yaml expects
    (reap.atom_map_tolerance_ang), after the SCF accuracy check (reap.max_scf_correction_ev_per_ang): the
    one way every consumer (reap, gate, noise, sweep) reads forces."""
    from kappaflow.atom_map import DEFAULT_TOLERANCE_ANG

    dft.check_scf_accuracy(manifest, store_dir, reap_cfg.get("max_scf_correction_ev_per_ang"))
    ph3 = load_phono3py(disp_yaml_path) if ph3 is None else ph3
    tolerance_ang = float(reap_cfg.get("atom_map_tolerance_ang", DEFAULT_TOLERANCE_ANG))
    return reap.load_forces(manifest, store_dir, expected=reap.expected_supercells(ph3),
                            tolerance_ang=tolerance_ang), tolerance_ang


def run_reap(manifest_path, disp_yaml_path, store_dir, reap_cfg: dict, out_paths: dict) -> None:
    manifest = sow.read_manifest(manifest_path)
    ph3 = load_phono3py(disp_yaml_path)
    forces, tolerance_ang = mapped_forces(manifest, store_dir, disp_yaml_path, reap_cfg, ph3=ph3)
    progress(f"reap: {len({j['key'] for j in manifest['jobs']})} force sets, each mapped onto its expected "
             f"supercell by position (tolerance {tolerance_ang:g} Å), "
             f"fc calculator {reap.fc_calculator_for(manifest['strategy'], reap_cfg['fc_calculator'])}")
    report = reap.fit_force_constants(ph3, manifest, forces, reap_cfg["fc_calculator"],
                                      reap_cfg.get("max_fc2_force_residual", reap.DEFAULT_MAX_FC2_FORCE_RESIDUAL))
    progress(f"reap: {report.summary()}")
    from kappaflow import atomic

    with atomic.staging_dir(Path(out_paths["fc3"]).parent) as stage:
        written = reap.write_force_constants(ph3, stage, fc3_cutoff_ang=reap.fc3_cutoff_of(manifest))
        for name, path in written.items():
            atomic.publish(path, out_paths[name])


# --- bte ----------------------------------------------------------------------------------------
def run_bte(disp_yaml_path, fc2_path, fc3_path, bte_cfg: dict, kappa_csv_path, workdir=None,
            shengbte_files: dict | None = None, provenance: dict | None = None,
            modes_path=None) -> bte_mod.KappaResult:
    """κ(T) from fc2/fc3; with ``provenance`` (the context of
    :func:`kappaflow.provenance.write_kappa_provenance`, plus ``route``) also ``kappa.provenance.json``;
    with ``modes_path`` (phono3py backend) also phono3py's mode file of the same run (:mod:`kappaflow.modes`)."""
    if modes_path is not None and bte_cfg["backend"] != "phono3py":
        raise KappaflowError(f"bte: the mode file {modes_path} is phono3py's; bte.backend is {bte_cfg['backend']}")
    temperatures = bte_mod.temperatures_from_config(bte_cfg["temperatures"])
    ph3 = load_phono3py(disp_yaml_path)
    if bte_cfg["backend"] == "phono3py":
        from phono3py.file_IO import read_fc2_from_hdf5, read_fc3_from_hdf5

        ph3.fc3 = read_fc3_from_hdf5(filename=str(fc3_path))
        ph3.fc2 = read_fc2_from_hdf5(filename=str(fc2_path))
        progress(f"bte: phono3py {bte_cfg['method'].upper()} on mesh {bte_cfg['mesh']}, "
                 f"{len(temperatures)} temperatures")
        result = bte_mod.run_phono3py(ph3, bte_cfg["mesh"], temperatures, bte_cfg["method"],
                                      bte_cfg["isotopes"], bte_cfg["boundary_mfp_um"], bte_cfg["sigma_thz"],
                                      mode_file=modes_path)
    else:
        result = run_shengbte_backend(ph3, bte_cfg, temperatures, workdir, shengbte_files)
    bte_mod.write_kappa_csv(kappa_csv_path, result)
    if provenance is not None:
        from kappaflow.provenance import write_kappa_provenance

        files = {"fc2": fc2_path, "fc3": fc3_path}
        if shengbte_files:
            files.update(shengbte_files)
        context = {k: v for k, v in provenance.items() if k != "route"}
        write_kappa_provenance(kappa_csv_path, route=provenance.get("route", "dft"), bte_cfg=bte_cfg,
                               mesh=bte_cfg["mesh"], temperatures_k=result.temperatures_k, context=context,
                               files=files)
    i300 = int(np.argmin(np.abs(result.temperatures_k - 300.0)))
    k = result.kappa_w_per_mk[i300]
    progress(f"bte: kappa({result.temperatures_k[i300]:.0f} K) xx {k[0, 0]:.2f} yy {k[1, 1]:.2f} "
             f"zz {k[2, 2]:.2f} W/mK")
    return result


def run_shengbte_backend(ph3, bte_cfg, temperatures, workdir, files):
    import shutil

    from kappaflow import shengbte

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copy(files["fc2_shengbte"], workdir / "FORCE_CONSTANTS_2ND")
    shutil.copy(files["fc3_shengbte"], workdir / "FORCE_CONSTANTS_3RD")
    scell = shengbte.shengbte_scell(ph3.phonon_supercell, ph3.phonon_primitive)
    shengbte.write_control(workdir / "CONTROL", primitive=ph3.primitive, scell=list(scell),
                           ngrid=bte_cfg["mesh"], temperatures_k=list(temperatures),
                           iterative=bte_cfg["method"] == "lbte", isotopes=bte_cfg["isotopes"])
    progress(f"bte: ShengBTE ({bte_cfg['shengbte_executable']}) in {workdir}")
    shengbte.run_shengbte(bte_cfg["shengbte_executable"], workdir,
                          mpi_prefix=bte_cfg["shengbte_mpi_prefix"] or None,
                          log_path=workdir / "shengbte.log")
    t, kappa = shengbte.read_kappa_vs_t(workdir, iterative=bte_cfg["method"] == "lbte")
    return bte_mod.KappaResult(t, kappa)


# --- noise study --------------------------------------------------------------------------------
def run_noise_job(manifest_path, disp_yaml_path, store_dir, reap_cfg: dict, bte_cfg: dict, mesh,
                  amplitude_ev_per_ang: float, seed: int, kappa_csv_path, ml_forces_path=None,
                  provenance: dict | None = None) -> dict:
    """κ with Gaussian noise of the given amplitude on the displaced supercells' forces (or, with
    ``ml_forces_path``, with ML forces in their place): the same reap and BTE, in memory.  With
    ``provenance`` (``unitcell``, ``supercell_template``, ``structure``, ``models``) also
    ``kappa.provenance.json``."""
    from kappaflow import noise

    manifest = sow.read_manifest(manifest_path)
    clean, _ = mapped_forces(manifest, store_dir, disp_yaml_path, reap_cfg)
    if ml_forces_path:
        from kappaflow.ml.forcesfile import read_forces

        # every supercell, the undisplaced one included: its ML forces are the residual subtracted
        keys = {j["key"]: j["n_atoms"] for j in manifest["jobs"]}
        table = read_forces(ml_forces_path)
        missing = sorted(set(keys) - set(table))
        if missing:
            raise KappaflowError(f"{ml_forces_path}: no ML forces for supercell {missing[0]}")
        forces = noise.replaced_forces(clean, manifest, {k: table[k][0] for k in keys})
        label = f"ML forces from {ml_forces_path}"
    else:
        forces = noise.noisy_forces(clean, amplitude_ev_per_ang, seed)
        label = f"noise {amplitude_ev_per_ang * 1e6:g} µeV/Å, seed {seed}"
    rmse = noise.force_rmse(forces, clean)
    result = noise.kappa_with_forces(lambda: load_phono3py(disp_yaml_path), manifest, forces,
                                     reap_cfg["fc_calculator"], bte_cfg, mesh)
    bte_mod.write_kappa_csv(kappa_csv_path, result)
    with atomic_path(Path(kappa_csv_path).with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps({"amplitude_ev_per_ang": amplitude_ev_per_ang, "seed": seed,
                                   "force_rmse_ev_per_ang": rmse, "source": label}, indent=1))
    if provenance is not None:
        from kappaflow.provenance import write_kappa_provenance

        context = dict(provenance, manifest=manifest_path, disp_yaml=disp_yaml_path, store=store_dir,
                       reap=reap_cfg)
        noise_params = {"amplitude_ev_per_ang": float(amplitude_ev_per_ang), "seed": int(seed),
                        "force_rmse_ev_per_ang": rmse, "force_constants": "in memory (not written)"}
        if ml_forces_path:
            context["ml"] = dict(context.get("ml") or {}, forces=str(ml_forces_path), n_ml=len(keys))
            noise_params["ml_forces"] = str(ml_forces_path)
        write_kappa_provenance(kappa_csv_path, route="noise_ml" if ml_forces_path else "noise",
                               bte_cfg=dict(bte_cfg, backend="phono3py"), mesh=mesh or bte_cfg["mesh"],
                               temperatures_k=result.temperatures_k, context=context,
                               files={"ml_forces": ml_forces_path} if ml_forces_path else None,
                               extra={"noise": noise_params})
    i300 = int(np.argmin(np.abs(result.temperatures_k - 300.0)))
    progress(f"noise: {label}: force RMSE {rmse * 1e6:.1f} µeV/Å, kappa_xx({result.temperatures_k[i300]:.0f} K) "
             f"{result.kappa_w_per_mk[i300, 0, 0]:.3f} W/mK")
    return {"rmse": rmse}


def run_noise_summary(noise_csvs, ml_csvs: dict, band: float, out: dict) -> dict:
    from kappaflow import noise

    runs = []
    for path in noise_csvs:
        meta = json.loads(Path(path).with_suffix(".json").read_text())
        runs.append({"amplitude": meta["amplitude_ev_per_ang"], "seed": meta["seed"], "kappa_csv": path,
                     "source": "noise", "rmse": meta["force_rmse_ev_per_ang"]})
    for model, path in ml_csvs.items():
        meta = json.loads(Path(path).with_suffix(".json").read_text())
        runs.append({"amplitude": float("nan"), "seed": 0, "kappa_csv": path, "source": f"ML {model}",
                     "rmse": meta["force_rmse_ev_per_ang"]})
    rows = noise.collect(runs)
    tol = noise.tolerance(rows, band)
    noise.write_table(out["table"], rows)
    with atomic_path(out["tolerance"]) as tmp:
        noise.write_tolerance(tmp, tol)
    noise.plot(rows, tol, {"kappa_xx": out["kappa_xx"], "kappa_zz": out["kappa_zz"]}, out["ratio"])
    progress(f"noise: tolerance {tol['tolerance_uev_per_ang']:g} µeV/Å (κ within ±{100 * band:g} % at every T)")
    return tol


# --- stability gate -----------------------------------------------------------------------------
def gate_settings(stability_cfg: dict, reap_cfg: dict) -> dict:
    """The settings a gate verdict depends on (part of :func:`kappaflow.stability.gate_id`)."""
    return {"stability": {k: v for k, v in stability_cfg.items() if k != "enabled"},
            "fc_calculator": reap_cfg["fc_calculator"]}


def run_stability_gate(manifest_path, disp_yaml_path, store_dir, stability_cfg: dict, reap_cfg: dict,
                       out: dict, title: str = "") -> dict:
    """FC2 from the single-displacement supercells, dispersion + mesh; raises when unstable
    (``out``: ``json``, ``figure``, ``dos``).  See :mod:`kappaflow.stability`."""
    from kappaflow import stability

    manifest = sow.read_manifest(manifest_path)
    plan = stability.gate_plan(manifest, stability.first_level_count(disp_yaml_path))
    forces, _ = mapped_forces({**manifest, "jobs": plan["gate_jobs"]}, store_dir, disp_yaml_path, reap_cfg)
    ph3 = load_phono3py(disp_yaml_path)
    progress(f"stability: fc2 from {len({j['key'] for j in plan['gate_jobs']})} pw.x runs ({plan['mode']}), "
             f"{len(plan['gated_keys'])} supercells wait for the gate")
    phonon = stability.fc2_phonopy(ph3, manifest, plan, forces, reap_cfg["fc_calculator"])
    source = {"mode": plan["mode"], "gate_id": stability.gate_id(manifest_path, disp_yaml_path,
                                                                  gate_settings(stability_cfg, reap_cfg)),
              "n_force_sets": len({j["key"] for j in plan["gate_jobs"]}),
              "keys": sorted({j["key"] for j in plan["gate_jobs"]}), "n_gated_supercells": len(plan["gated_keys"])}
    summary = stability.check_stability(phonon, stability_cfg, out, title=title, source=source)
    progress(f"stability: {summary['status']}: lowest frequency {summary['lowest_frequency_thz']:.4f} THz at "
             f"q = {summary['lowest_q_frac']} (tolerance {summary['tolerance_thz']:g} THz)")
    return summary
