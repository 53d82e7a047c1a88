"""Named steps of the ML force route, each a plain function of explicit paths and settings.

aimd_plan → (dft: md run) → aimd_snapshots → (dft: one SCF per snapshot) → dataset → gvectors → pack →
train (one job per committee member) → infer → inject → reap/bte (the DFT route's own steps) → figures.

Called by ``scripts/ml_*.py``; nothing here imports Snakemake.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from kappaflow import aimd, sow
from kappaflow.engine import engine_for
from kappaflow.errors import KappaflowError
from kappaflow.qe.pwin import check_template, read_pw_input
from kappaflow.steps import atomic_path, progress, pw_overrides_for_supercells, sow_settings
from kappaflow.structure import from_phonopy, labels_of, read_structure

ROLES = {"disp": ("base", "fc3", "fc2", "fc2_base"), "aimd": ("aimd",)}
DATA_SETS = {"disp": ("disp",), "disp_aimd": ("disp", "aimd")}


def undisplaced_supercell(structure_path, sow_cfg):
    """The sow's undisplaced supercell (ASE atoms, species labels from the unit cell) of ``structure_path``."""
    unit = read_structure(structure_path)
    ph3 = sow.make_phono3py(unit, sow_settings(sow_cfg))
    labels_unit = labels_of(unit)
    sc = ph3.supercell
    return from_phonopy(sc, [labels_unit[sc.u2u_map[s]] for s in sc.s2u_map])


# --- aimd ---------------------------------------------------------------------------------------
def plan_aimd(structure_path, template_path, sow_cfg: dict, dft_cfg: dict, aimd_cfg: dict, store_dir,
              plan_path, engine: str) -> dict:
    """Write the md input of the FC3 supercell into the store; the plan names its key."""
    template = Path(template_path).read_text()
    check_template(template, str(template_path))
    atoms = undisplaced_supercell(structure_path, sow_cfg)
    scf_text = sow.supercell_input_text(template, str(template_path), atoms, pw_overrides_for_supercells(dft_cfg))
    settings = aimd.AimdSettings.from_config(aimd_cfg)
    key = sow.store_input(store_dir, engine_for(dft_cfg), aimd.md_input_text(scf_text, settings, str(template_path)),
                          str(template_path))  # the sow's key and store writer
    plan = {"md_key": key, "n_atoms": len(atoms), "settings": aimd_cfg, "engine": engine}
    with atomic_path(plan_path) as tmp:
        aimd.write_plan(tmp, plan)
    progress(f"aimd: md of the {len(atoms)}-atom supercell, {settings.steps} steps of "
             f"{settings.timestep_fs} fs at {settings.temperature_k} K ({settings.thermostat}), key {key}")
    return plan


def sow_snapshots(plan_path, template_path, dft_cfg: dict, store_dir, snapshots_path) -> dict:
    """Pick snapshots from the finished md run; one SCF input per snapshot into the store."""
    plan = aimd.read_plan(plan_path)
    settings = aimd.AimdSettings.from_config(plan["settings"])
    md_dir = Path(store_dir) / plan["md_key"]
    chosen, run = aimd.snapshots(md_dir / "pw.out", md_dir / "pw.in", settings)
    template = Path(template_path).read_text()
    overrides = pw_overrides_for_supercells(dft_cfg)
    engine = engine_for(dft_cfg)
    jobs = []
    for frame, atoms in chosen:
        text = sow.supercell_input_text(template, str(template_path), atoms, overrides)
        jobs.append({"key": sow.store_input(store_dir, engine, text, str(template_path)), "role": "aimd",
                     "index": frame, "n_atoms": len(atoms)})
    temps = aimd.temperature_trace(run)
    after = temps[settings.equilibration_steps:] or temps
    record = {"md_key": plan["md_key"], "n_frames": len(run.frames), "frames": [j["index"] for j in jobs],
              "mean_temperature_k": float(np.mean(after)) if after else None, "jobs": jobs}
    with atomic_path(snapshots_path) as tmp:
        tmp.write_text(json.dumps(record, indent=1))
    stride = np.diff(record["frames"]).mean() if len(jobs) > 1 else 0
    progress(f"aimd: {len(jobs)} snapshots from {len(run.frames)} md steps (stride {stride:.1f} steps, "
             f"mean T after equilibration {record['mean_temperature_k'] or float('nan'):.0f} K)")
    return record


def snapshot_keys(snapshots_path) -> list[str]:
    return sorted({j["key"] for j in json.loads(Path(snapshots_path).read_text())["jobs"]})


def md_key(plan_path) -> str:
    return aimd.read_plan(plan_path)["md_key"]


# --- dataset ------------------------------------------------------------------------------------
def dataset_jobs(manifest_path, snapshots_path=None) -> dict[str, str]:
    """key -> "disp" | "aimd" for every computed run that becomes training data."""
    manifest = sow.read_manifest(manifest_path)
    roles = {}
    for job in manifest["jobs"]:
        if "output" not in job:
            roles.setdefault(job["key"], "disp")
    if snapshots_path:
        for job in json.loads(Path(snapshots_path).read_text())["jobs"]:
            roles.setdefault(job["key"], "aimd")
    return roles


def build_dataset(manifest_path, snapshots_path, store_dir, examples_dir, extxyz_path, index_path) -> dict:
    """One PANNA .example per finished pw.x output, all of them in one extxyz, and an index."""
    return write_dataset(dataset_jobs(manifest_path, snapshots_path), store_dir, examples_dir, extxyz_path,
                         index_path)


def write_dataset(roles: dict, store_dir, examples_dir, extxyz_path, index_path, baseline=None) -> dict:
    """One PANNA .example per finished pw.x output ``roles`` names (key -> "disp" | "aimd"), all of them
    in one extxyz, and an index.  With a ``baseline`` (:class:`kappaflow.al.baseline.Baseline`) the
    examples hold what it leaves: forces and energy minus the baseline's (Δ-learning)."""
    from kappaflow.ml import dataset

    examples_dir = Path(examples_dir)
    examples_dir.mkdir(parents=True, exist_ok=True)
    examples = []
    for n, (key, role) in enumerate(sorted(roles.items())):
        ex = dataset.example_from_pwout(Path(store_dir) / key / "pw.out", key,
                                        pw_input=Path(store_dir) / key / "pw.in")
        if baseline is not None:
            ex = _minus_baseline(ex, baseline, Path(store_dir) / key / "pw.in")
        dataset.write_example(examples_dir / f"{key}.example", ex)
        examples.append(ex)
        if (n + 1) % 200 == 0:
            progress(f"dataset: {n + 1}/{len(roles)} examples")
    dataset.write_extxyz(extxyz_path, examples)
    index = {"examples": {k: roles[k] for k in sorted(roles)},
             "counts": {r: sum(v == r for v in roles.values()) for r in ROLES}}
    with atomic_path(index_path) as tmp:
        tmp.write_text(json.dumps(index, indent=1))
    progress(f"dataset: {index['counts']['disp']} displaced supercells, {index['counts']['aimd']} AIMD "
             f"snapshots -> {examples_dir}, {extxyz_path}")
    return index


def _minus_baseline(ex: dict, baseline, what) -> dict:
    from kappaflow.ml import dataset

    positions = np.array([a[2] for a in ex["atoms"]], dtype=np.float64)
    forces = np.array([a[3] for a in ex["atoms"]], dtype=np.float64)
    f_base, e_base = baseline.forces_energy(positions, np.array(ex["lattice_vectors"]), str(what))
    return dataset.make_example(ex["key"], [a[1] for a in ex["atoms"]], ex["lattice_vectors"], positions,
                                float(ex["energy"][0]) - e_base, forces - f_base)


# --- gvectors -----------------------------------------------------------------------------------
def mbp_parameters(desc_cfg: dict, species):
    from kappaflow.ml.gvectors import MBPParameters

    return MBPParameters.from_dict(dict(desc_cfg), species=list(species))


def species_of(structure_path) -> list[str]:
    """Species in order of first appearance in the unit cell (fixes the G-vector layout)."""
    unit = read_structure(structure_path)
    seen = []
    for s in unit.get_chemical_symbols():
        if s not in seen:
            seen.append(s)
    return seen


def compute_gvectors(index_path, examples_dir, desc_cfg: dict, species, out_path) -> dict:
    """G and sparse dG/dR of every example, stored in one float64 .npz (concatenated with offsets)."""
    from kappaflow.ml import dataset
    from kappaflow.ml.gvectors import compute_descriptors

    index = json.loads(Path(index_path).read_text())["examples"]
    params = mbp_parameters(desc_cfg, species)
    arrays = {k: [] for k in ("n_atoms", "n_pairs", "species", "positions", "cell", "energy", "forces",
                              "G", "dG_pairs", "dG_values")}
    keys, roles = [], []
    t0 = time.perf_counter()
    for n, (key, role) in enumerate(index.items()):
        ex = dataset.read_example(Path(examples_dir) / f"{key}.example")
        symbols = [a[1] for a in ex["atoms"]]
        positions = np.array([a[2] for a in ex["atoms"]], dtype=np.float64)
        forces = np.array([a[3] for a in ex["atoms"]], dtype=np.float64)
        cell = np.array(ex["lattice_vectors"], dtype=np.float64)
        desc = compute_descriptors(positions, cell, symbols, params)
        keys.append(key)
        roles.append(role)
        arrays["n_atoms"].append(len(symbols))
        arrays["n_pairs"].append(len(desc.dG_pairs))
        arrays["species"].append(desc.species_index)
        arrays["positions"].append(positions)
        arrays["cell"].append(cell)
        arrays["energy"].append(float(ex["energy"][0]))
        arrays["forces"].append(forces)
        arrays["G"].append(desc.G)
        arrays["dG_pairs"].append(desc.dG_pairs)
        arrays["dG_values"].append(desc.dG_values)
        if (n + 1) % 200 == 0:
            progress(f"gvectors: {n + 1}/{len(index)} structures")
    stacked = {k: (np.array(v) if k in ("n_atoms", "n_pairs", "energy", "cell") else np.concatenate(v))
               for k, v in arrays.items()}
    with atomic_path(out_path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, keys=np.array(keys), roles=np.array(roles), params=json.dumps(params.to_dict()),
                     **stacked)
    progress(f"gvectors: {len(keys)} structures, {params.g_size} values per atom, "
             f"{time.perf_counter() - t0:.1f} s")
    return {"n_structures": len(keys), "g_size": params.g_size}


def load_gvectors(path, roles=None) -> list[dict]:
    """The structures of a gvectors .npz as record dicts (the layout ``kappaflow.ml.tfrecords`` packs)."""
    data = np.load(path)
    keys, all_roles = data["keys"].tolist(), data["roles"].tolist()
    atom_off = np.concatenate([[0], np.cumsum(data["n_atoms"])])
    pair_off = np.concatenate([[0], np.cumsum(data["n_pairs"])])
    params = json.loads(str(data["params"]))
    species = params.get("species")
    records = []
    for s, key in enumerate(keys):
        if roles is not None and all_roles[s] not in roles:
            continue
        a0, a1, p0, p1 = atom_off[s], atom_off[s + 1], pair_off[s], pair_off[s + 1]
        species_index = data["species"][a0:a1]
        records.append({
            "key": key, "role": all_roles[s],
            "symbols": [species[i] for i in species_index] if species else None,
            "species_index": species_index, "positions_ang": data["positions"][a0:a1],
            "cell_ang": data["cell"][s], "energy_ev": float(data["energy"][s]),
            "forces_ev_per_ang": data["forces"][a0:a1], "G": data["G"][a0:a1],
            "dG_pairs": data["dG_pairs"][p0:p1], "dG_values": data["dG_values"][p0:p1]})
    return records


def gvector_parameters(path):
    from kappaflow.ml.gvectors import MBPParameters

    return MBPParameters.from_dict(json.loads(str(np.load(path)["params"])))


# --- pack ---------------------------------------------------------------------------------------
def pack(gvectors_path, data_set: str, out_dir, elements_per_file: int) -> list[Path]:
    from kappaflow.ml.tfrecords import write_tfrecords

    if data_set not in DATA_SETS:
        raise KappaflowError(f"unknown training data set {data_set!r} (one of {sorted(DATA_SETS)})")
    records = load_gvectors(gvectors_path, roles=DATA_SETS[data_set])
    if not records:
        raise KappaflowError(f"{gvectors_path}: no structures of data set {data_set!r}")
    from kappaflow.atomic import atomic_dir

    with atomic_dir(out_dir) as tmp_dir:
        paths = write_tfrecords(records, tmp_dir, prefix=data_set, elements_per_file=elements_per_file)
        (tmp_dir / "index.json").write_text(json.dumps({
            "data_set": data_set, "n_structures": len(records), "keys": [r["key"] for r in records],
            "shards": [p.name for p in paths]}, indent=1))
    progress(f"pack: {len(records)} structures of '{data_set}' in {len(paths)} TFRecord shard(s)")
    return [Path(out_dir) / p.name for p in paths]


def packed_shards(pack_dir) -> list[Path]:
    index = json.loads((Path(pack_dir) / "index.json").read_text())
    return [Path(pack_dir) / name for name in index["shards"]]


# --- train --------------------------------------------------------------------------------------
def model_name(data_set: str, validation_fraction: float) -> str:
    """`disp_aimd-full` (100 % training) or `disp-val20` (80/20)."""
    split = "full" if validation_fraction == 0 else f"val{round(100 * validation_fraction)}"
    return f"{data_set}-{split}"


def parse_model_name(name: str) -> tuple[str, float]:
    data_set, _, split = name.rpartition("-")
    if data_set not in DATA_SETS or not (split == "full" or split.startswith("val") and split[3:].isdigit()):
        raise KappaflowError(f"model name {name!r}: expected <disp|disp_aimd>-<full|valNN>")
    return data_set, 0.0 if split == "full" else int(split[3:]) / 100.0


def train_settings(train_cfg: dict, validation_fraction: float, seed: int):
    from kappaflow.ml.model import NetworkSettings, TrainSettings

    network = NetworkSettings(hidden_layers=tuple(train_cfg["hidden_layers"]), activation=train_cfg["activation"])
    fields = {"epochs": train_cfg["epochs"], "batch_size": train_cfg["batch_size"],
              "learning_rate": train_cfg["learning_rate"], "force_weight": train_cfg["force_weight"],
              "energy_weight": train_cfg.get("energy_weight", 1.0),
              "learning_rate_final": train_cfg.get("learning_rate_final", 1e-5),
              "validation_fraction": validation_fraction, "seed": seed, "network": network}
    fields.update(train_cfg.get("extra") or {})
    try:
        return TrainSettings(**fields)
    except (TypeError, ValueError) as exc:
        raise KappaflowError(f"ml.train: {exc}") from None


def train_member(pack_dir, gvectors_path, train_cfg: dict, model: str, member: int, out_dir,
                 validation_fraction: float | None = None) -> dict:
    """Train committee member ``member`` (seed = ml.train.seed + member) on a packed data set; the
    validation fraction from the model name (``disp-val20``) unless given."""
    from kappaflow.ml.model import split_keys, train_model
    from kappaflow.ml.tfrecords import load_records

    if validation_fraction is None:
        _, validation_fraction = parse_model_name(model)
    seed = int(train_cfg["seed"]) + int(member)
    records = load_records(packed_shards(pack_dir))
    train_keys, val_keys = split_keys([r["key"] for r in records], validation_fraction, seed)
    train_set = [r for r in records if r["key"] in set(train_keys)]
    val_set = [r for r in records if r["key"] in set(val_keys)] or None
    settings = train_settings(train_cfg, validation_fraction, seed)
    progress(f"train: model {model} member {member} (seed {seed}): {len(train_set)} training, "
             f"{len(val_set or [])} validation structures, {settings.epochs} epochs")
    return train_model(train_set, val_set, gvector_parameters(gvectors_path), settings, out_dir,
                       progress=progress)


# --- infer --------------------------------------------------------------------------------------
def supercell_keys(manifest_path) -> dict[str, int]:
    """key -> n_atoms of every computed supercell of the sow (fc3, base, fc2 roles)."""
    manifest = sow.read_manifest(manifest_path)
    return {j["key"]: j["n_atoms"] for j in manifest["jobs"] if "output" not in j}


def infer(model_dirs, manifest_path, store_dir, gvectors_path, forces_path, sigma_path, timing_path,
          baseline_path=None) -> dict:
    """Committee forces (mean, and per-atom spread) for every displaced supercell of the sow.

    Structures come from the supercells' pw.x inputs; reference forces (when a DFT output exists)
    are written next to the prediction, PANNA-style, for the parity figures.  With a Δ-learning
    baseline (``baseline_path``, :mod:`kappaflow.al.baseline`) its forces and energy are added."""
    from kappaflow.ml.forcesfile import write_forces, write_sigma
    from kappaflow.ml.model import Committee
    from kappaflow.qe.pwout import read_pw_output

    params = gvector_parameters(gvectors_path)
    committee = Committee.load([str(d) for d in model_dirs])
    if committee.params != params:
        raise KappaflowError(f"{gvectors_path}: the committee was trained with other G-vector parameters")
    keys = supercell_keys(manifest_path)
    structures = []
    for key in keys:
        pw = read_pw_input(Path(store_dir) / key / "pw.in")
        structures.append(pw.atoms)
    # descriptors and forces inside TensorFlow (kappaflow.ml.ontheflytf): equal to the stored-dG/dR
    # route to ~1e-15 eV/Å and several times faster, since the sparse dG/dR is never built
    t0 = time.perf_counter()
    predictions = committee.predict_many(structures)
    t_total = time.perf_counter() - t0
    from kappaflow.al.baseline import with_baseline

    predictions = with_baseline(baseline_path, predictions, structures, list(keys))
    mean, spread, reference, energies = {}, {}, {}, {}
    for key, pred in zip(keys, predictions):
        mean[key] = pred["forces_ev_per_ang"]
        spread[key] = pred["forces_std_ev_per_ang"]
        energies[key] = float(pred["energy_ev"])
        out = Path(store_dir) / key / "pw.out"
        reference[key] = (read_pw_output(out, expected_n_atoms=keys[key]).forces_ev_per_ang if out.exists()
                          else np.full_like(mean[key], np.nan))
    if all(np.all(np.isfinite(r)) for r in reference.values()):
        write_forces(forces_path, mean, reference)
    else:
        write_forces(forces_path, mean)
    write_sigma(sigma_path, spread)
    timing = {"n_supercells": len(keys), "n_atoms": int(np.mean(list(keys.values()))),
              "committee_size": len(model_dirs), "total_s": t_total,
              "per_supercell_s": t_total / max(len(keys), 1), "energies_ev": energies}
    with atomic_path(timing_path) as tmp:
        tmp.write_text(json.dumps(timing, indent=1))
    progress(f"infer: {len(keys)} supercells with a {len(model_dirs)}-model committee in {t_total:.2f} s "
             f"(descriptors on the fly in TensorFlow); largest committee spread "
             f"{max(float(s.max()) for s in spread.values()) * 1000:.3f} meV/Å")
    return timing


# --- inject -------------------------------------------------------------------------------------
def inject(manifest_path, forces_path, store_dir, out_store, mode: str, dft_keys=None) -> dict:
    """ML forces (committee mean) into pw.x-format outputs that the DFT route's reap reads; in ``hybrid``
    mode with ``dft_keys`` only those supercells keep their DFT output (the active-learning loop's runs)."""
    from kappaflow.inject import inject_set
    from kappaflow.ml.forcesfile import read_forces

    keys = supercell_keys(manifest_path)
    table = read_forces(forces_path, expected_n_atoms=keys)
    ml_forces = {k: v[0] for k, v in table.items()}
    sources = inject_set(list(keys), store_dir, ml_forces, out_store, mode=mode, dft_keys=dft_keys,
                         note=f"committee mean from {forces_path}")
    n_ml = sum(v == "ml" for v in sources.values())
    progress(f"inject ({mode}): {n_ml} supercells with ML forces, {len(sources) - n_ml} keep DFT -> {out_store}")
    return sources


# --- figures ------------------------------------------------------------------------------------
def ml_report(model: str, dft_kappa, ml_kappa, forces_path, sigma_path, metrics_paths, cost_csv, timing_json,
              out: dict, title: str = "") -> dict:
    from kappaflow.ml import figures

    figures.plot_kappa_ml_vs_dft(dft_kappa, {f"ML ({model})": ml_kappa}, out["kappa"], title=title)
    parity = figures.plot_parity(forces_path, out["parity"], title=f"{title}: {model}")
    figures.plot_training_curves(list(metrics_paths), out["training"], title=f"{title}: {model}")
    committee = figures.plot_committee_disagreement(forces_path, sigma_path, out["committee"],
                                                    title=f"{title}: {model}")
    timing = figures.timing_table(cost_csv, timing_json, out["timing"])
    from kappaflow.bte import read_kappa_csv

    dft, ml = read_kappa_csv(dft_kappa), read_kappa_csv(ml_kappa)
    i300 = int(np.argmin(np.abs(dft.temperatures_k - 300.0)))
    summary = {"model": model, "force_rmse_mev_per_ang": parity["force_rmse_ev_per_ang"] * 1000,
               "kappa_xx_dft_300K": float(dft.kappa_w_per_mk[i300, 0, 0]),
               "kappa_xx_ml_300K": float(ml.kappa_w_per_mk[i300, 0, 0]),
               "speedup_per_supercell": timing["speedup"], **committee}
    summary["kappa_xx_rel_error_300K"] = summary["kappa_xx_ml_300K"] / summary["kappa_xx_dft_300K"] - 1.0
    with atomic_path(out["summary"]) as tmp:
        tmp.write_text(json.dumps(summary, indent=1))
    progress(f"ml: model {model}: force RMSE {summary['force_rmse_mev_per_ang']:.3f} meV/Å, "
             f"kappa_xx(300 K) ML {summary['kappa_xx_ml_300K']:.2f} vs DFT {summary['kappa_xx_dft_300K']:.2f} "
             f"W/mK ({100 * summary['kappa_xx_rel_error_300K']:+.1f} %)")
    return summary


def ablation_report(dft_kappa, model_kappas: dict, figure_path, table_path) -> list[dict]:
    from kappaflow.ml import figures

    rows = figures.ablation(dft_kappa, model_kappas, figure_path, table_path)
    for r in rows[1:]:
        progress(f"ablation: {r['model']:>16}: kappa_xx(300 K) {r['kappa_xx']:.2f} W/mK "
                 f"({100 * r['rel_error_xx']:+.1f} % vs DFT {rows[0]['kappa_xx']:.2f})")
    return rows
