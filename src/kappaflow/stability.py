"""Stability gate: harmonic phonons from FC2 before the expensive FC3 stage.

FC2 needs only the single-displacement supercells (phono3py's first-level displacements, the same
forces phono3py's ``produce_fc3`` turns into fc2) or, with ``sow.fc2_supercell``, the separate FC2 set.
The gate builds fc2 from those forces with phonopy, computes the dispersion along the high-symmetry path
(``report.plot_dispersion``) and on a Γ-centred mesh, and fails (a :class:`UnstableStructureError`)
when a frequency falls below ``stability.tolerance_thz``; ``stability.override: true`` records the
instability and goes on.  The Snakemake rule ``dft`` adds a pair-displaced supercell's pw.x job only once
the pass marker of the current gate id exists (:func:`gate_id`, :func:`write_pass_marker`), so no
pair pw.x job starts on an unstable structure or on a stale verdict.

Random (rattled) and imported thirdorder sets have no single-displacement subset: their gate fits fc2
from all supercells (``reap.produce_force_constants``) and can only stop the BTE, not the pw.x runs.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

import numpy as np

from kappaflow import atomic
from kappaflow.errors import KappaflowError

#: the gate's kinds of FC2 source
MODE_FIRST_LEVEL = "first_level"      # systematic: base + single-displacement supercells of the FC3 set
MODE_FC2_SUPERCELL = "fc2_supercell"  # sow.fc2_supercell: the separate FC2 set
MODE_ALL = "all"                      # random / thirdorder: every supercell (nothing can be gated)


class UnstableStructureError(KappaflowError):
    """Imaginary modes beyond the tolerance."""


# --- which supercells feed the gate, which wait for it -------------------------------------------
@lru_cache(maxsize=8)
def _first_level_count_cached(path: str, mtime_ns: int, size: int) -> int:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with open(path) as fh:
        data = yaml.load(fh, Loader=loader)
    pairs = data.get("displacement_pairs")
    if pairs is None:  # a type-2 (random / imported) dataset: no first level
        return 0
    return len(pairs)


def first_level_count(disp_yaml_path) -> int:
    """Number of single-displacement supercells of a systematic phono3py_disp.yaml (cached by mtime:
    the Snakemake input function of rule dft calls this once per job)."""
    st = os.stat(disp_yaml_path)
    return _first_level_count_cached(str(disp_yaml_path), st.st_mtime_ns, st.st_size)


def gate_plan(manifest: dict, n_first_level: int) -> dict:
    """The gate's jobs and the jobs that wait for it.

    Returns ``{"mode", "gate_jobs": [manifest job dicts], "gated_keys": set of store keys}``.  A key
    shared by a gate job and a pair job (never in practice) is not gated: it must run for the gate."""
    jobs = manifest["jobs"]
    if manifest.get("fc2_supercell_matrix") is not None:
        mode = MODE_FC2_SUPERCELL
        gate_jobs = [j for j in jobs if j["role"] in ("fc2", "fc2_base")]
        candidates = [j for j in jobs if j["role"] == "fc3"]
    elif manifest.get("strategy") == "systematic" and n_first_level > 0:
        mode = MODE_FIRST_LEVEL
        gate_jobs = [j for j in jobs if j["role"] == "base" or (j["role"] == "fc3" and j["index"] < n_first_level)]
        candidates = [j for j in jobs if j["role"] == "fc3" and j["index"] >= n_first_level]
    else:
        mode = MODE_ALL
        gate_jobs = list(jobs)
        candidates = []
    gate_keys = {j["key"] for j in gate_jobs}
    gated = {j["key"] for j in candidates if "output" not in j} - gate_keys
    return {"mode": mode, "gate_jobs": gate_jobs, "gated_keys": gated}


def plan_from_files(manifest_path, disp_yaml_path) -> dict:
    from kappaflow import sow

    manifest = sow.read_manifest(manifest_path)
    return gate_plan(manifest, first_level_count(disp_yaml_path))


def gate_inputs(manifest_path, disp_yaml_path, store_dir) -> list[str]:
    """pw.x outputs the gate reads (for the Snakemake rule's input)."""
    plan = plan_from_files(manifest_path, disp_yaml_path)
    paths = set()
    for job in plan["gate_jobs"]:
        paths.add(job["output"] if "output" in job else f"{store_dir}/{job['key']}/pw.out")
    return sorted(paths)


@lru_cache(maxsize=8)
def _gated_keys_cached(manifest_path: str, m_mtime: int, disp_yaml_path: str, d_mtime: int) -> frozenset:
    return frozenset(plan_from_files(manifest_path, disp_yaml_path)["gated_keys"])


def gated_keys(manifest_path, disp_yaml_path) -> frozenset:
    """Store keys whose pw.x run waits for the gate (cached by mtime: called once per dft job)."""
    return _gated_keys_cached(str(manifest_path), os.stat(manifest_path).st_mtime_ns,
                              str(disp_yaml_path), os.stat(disp_yaml_path).st_mtime_ns)


def gate_id(manifest_path, disp_yaml_path, settings: dict) -> str:
    """What a gate verdict is about: its pw.x force sets (store keys, or imported outputs) and the
    settings it was judged with (``stability`` block, fc calculator).  A verdict in ``stability.json``
    holds for the pair-displaced supercells only while this id is the same: a new structure or new
    settings make a new id, whose pass marker does not exist yet, so the pair jobs wait for the gate
    again (``workflow/rules/stability.smk``)."""
    st_m, st_d = os.stat(manifest_path), os.stat(disp_yaml_path)
    return _gate_id_cached(str(manifest_path), st_m.st_mtime_ns, str(disp_yaml_path), st_d.st_mtime_ns,
                           json.dumps(settings, sort_keys=True))


@lru_cache(maxsize=8)
def _gate_id_cached(manifest_path: str, m_mtime: int, disp_yaml_path: str, d_mtime: int,
                    settings_json: str) -> str:
    import hashlib

    plan = plan_from_files(manifest_path, disp_yaml_path)
    sources = sorted(j.get("output", j["key"]) for j in plan["gate_jobs"])
    text = json.dumps({"mode": plan["mode"], "force_sets": sources, "settings": json.loads(settings_json)},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def write_pass_marker(stability_json, expected_gate_id: str, marker_path) -> dict:
    """The gate's verdict for ``expected_gate_id``, as a marker the pair-displaced pw.x jobs wait for.

    Refuses a ``stability.json`` written for another gate id (another structure or other settings) or
    one that did not pass -- never lets pair jobs through on a stale verdict."""
    summary = json.loads(Path(stability_json).read_text())
    found = (summary.get("source") or {}).get("gate_id")
    if found != expected_gate_id:
        raise KappaflowError(f"{stability_json}: the verdict is for gate {found}, but the current sow and "
                             f"stability settings make gate {expected_gate_id}: rerun the gate "
                             f"(snakemake --forcerun stability_gate)")
    if not summary.get("passed"):
        raise UnstableStructureError(f"{stability_json}: status {summary.get('status')}: the pair-displaced "
                                     "supercells are not computed")
    record = {"gate_id": expected_gate_id, "status": summary["status"],
              "lowest_frequency_thz": summary["lowest_frequency_thz"], "stability_json": str(stability_json)}
    atomic.write_text(marker_path, json.dumps(record, indent=1) + "\n")
    return record


# --- fc2 from the gate's supercells -------------------------------------------------------------
def fc2_phonopy(ph3, manifest: dict, plan: dict, forces: dict, fc_calculator: str = "auto"):
    """A Phonopy object (unit cell as primitive, as in ``report``) holding fc2 (eV/Å²) from the plan's
    forces (eV/Å, ``reap.load_forces`` layout)."""
    import phonopy

    from kappaflow import reap

    if plan["mode"] == MODE_FC2_SUPERCELL:
        matrix, dataset = ph3.phonon_supercell_matrix, ph3.phonon_dataset
        disp_forces = forces.get("fc2", {})
        base = forces.get("fc2_base", {}).get(0)
    else:
        matrix, dataset = ph3.supercell_matrix, ph3.dataset
        disp_forces = forces.get("fc3", {})
        base = forces.get("base", {}).get(0)
    phonon = phonopy.Phonopy(ph3.unitcell, supercell_matrix=matrix, primitive_matrix=np.eye(3),
                             symprec=ph3.symmetry.tolerance)
    if plan["mode"] == MODE_ALL:
        reap.produce_force_constants(ph3, manifest, forces, fc_calculator)
        phonon.force_constants = np.asarray(ph3.fc2, dtype=np.float64)
        return phonon
    natom = len(phonon.supercell)
    first = []
    for i, disp in enumerate(dataset["first_atoms"]):
        index = int(disp.get("id", i + 1)) - 1  # phono3py numbers supercells from 1, first level first
        if index not in disp_forces:
            raise KappaflowError(f"stability gate: no forces for single-displacement supercell {index}")
        f = np.asarray(disp_forces[index], dtype=np.float64)
        if base is not None:
            f = f - base
        first.append({"number": int(disp["number"]),
                      "displacement": np.asarray(disp["displacement"], dtype=np.float64), "forces": f})
    phonon.dataset = {"natom": natom, "first_atoms": first}
    phonon.produce_force_constants()
    phonon.symmetrize_force_constants()
    if not np.all(np.isfinite(phonon.force_constants)):
        raise KappaflowError("stability gate: fc2 contains NaN or inf: check the forces")
    return phonon


# --- the check ----------------------------------------------------------------------------------
def analyse(phonon, mesh, band_points: int, figure_path, title: str = "") -> dict:
    """Frequencies on the path (figure written) and the mesh; the lowest of each with its q-point."""
    from kappaflow.report import plot_dispersion

    plot_dispersion(phonon, figure_path, band_points, title=title)
    bands = phonon.get_band_structure_dict()
    path_q = np.concatenate([np.asarray(q, dtype=np.float64) for q in bands["qpoints"]])
    path_f = np.concatenate([np.asarray(f, dtype=np.float64) for f in bands["frequencies"]])
    i_path = np.unravel_index(int(np.argmin(path_f)), path_f.shape)
    phonon.run_mesh(list(mesh), is_gamma_center=True)
    mesh_q = np.asarray(phonon.mesh.qpoints, dtype=np.float64)
    mesh_f = np.asarray(phonon.mesh.frequencies, dtype=np.float64)
    weights = np.asarray(phonon.mesh.weights, dtype=np.float64)
    i_mesh = np.unravel_index(int(np.argmin(mesh_f)), mesh_f.shape)
    phonon.run_total_dos()
    dos = phonon.total_dos
    return {
        "path": {"lowest_frequency_thz": float(path_f[i_path]), "q_frac": path_q[i_path[0]].tolist(),
                 "band_index": int(i_path[1]), "n_qpoints": int(path_q.shape[0])},
        "mesh": {"mesh": [int(m) for m in mesh], "lowest_frequency_thz": float(mesh_f[i_mesh]),
                 "q_frac": mesh_q[i_mesh[0]].tolist(), "band_index": int(i_mesh[1]),
                 "highest_frequency_thz": float(mesh_f.max()), "n_irreducible_qpoints": int(mesh_q.shape[0]),
                 "weights": weights, "frequencies": mesh_f},
        "dos": (np.asarray(dos.frequency_points, dtype=np.float64), np.asarray(dos.dos, dtype=np.float64)),
    }


def unstable_paths(out: dict) -> dict:
    """Where a failing gate leaves its JSON and figure (Snakemake deletes a failed job's outputs)."""
    def sibling(path):
        p = Path(path)
        return p.with_name(f"{p.stem}.unstable{p.suffix}")

    return {name: sibling(path) for name, path in out.items()}


def check_stability(phonon, cfg: dict, out: dict, title: str = "", source: dict | None = None) -> dict:
    """Run the analysis, write ``out['json']``, ``out['figure']``, ``out['dos']`` and return the summary;
    raise :class:`UnstableStructureError` (files kept as ``*.unstable.*``) when unstable without override."""
    tol = float(cfg["tolerance_thz"])
    failed = unstable_paths(out)
    for path in failed.values():
        if Path(path).exists():
            Path(path).unlink()
    Path(out["figure"]).parent.mkdir(parents=True, exist_ok=True)
    tmp_fig = atomic.temporary_sibling(out["figure"]).with_suffix(".png")
    res = analyse(phonon, cfg["mesh"], cfg["band_points"], tmp_fig, title=title)
    mesh = res["mesh"]
    w = mesh.pop("weights")
    f = mesh.pop("frequencies")
    below = f < tol
    mesh["fraction_of_modes_below_tolerance"] = float((w[:, None] * below).sum() / (w.sum() * f.shape[1]))
    lowest = min((res["path"], res["mesh"]), key=lambda r: r["lowest_frequency_thz"])
    unstable = lowest["lowest_frequency_thz"] < tol
    override = bool(cfg.get("override", False))
    status = "stable" if not unstable else ("unstable_overridden" if override else "unstable")
    summary = {
        "status": status, "passed": (not unstable) or override,
        "tolerance_thz": tol, "override": override,
        "lowest_frequency_thz": lowest["lowest_frequency_thz"], "lowest_q_frac": lowest["q_frac"],
        "lowest_on": "path" if lowest is res["path"] else "mesh",
        "path": res["path"], "mesh": mesh, "source": source or {},
    }
    targets = out if summary["passed"] else failed
    summary["figure"] = str(targets["figure"])
    freq, dos = res["dos"]
    dos_text = "frequency_thz,dos_states_per_thz\n" + "".join(f"{a!r},{b!r}\n" for a, b in zip(freq, dos))
    for key, text in (("json", json.dumps(summary, indent=1)), ("dos", dos_text)):
        atomic.write_text(targets[key], text)
    os.replace(tmp_fig, targets["figure"])  # written by save_figure (atomic) under a private name
    if not summary["passed"]:
        q = ", ".join(f"{x:.4f}" for x in summary["lowest_q_frac"])
        raise UnstableStructureError(
            f"stability gate: imaginary mode {summary['lowest_frequency_thz']:.4f} THz at q = ({q}) "
            f"(fractional, {summary['lowest_on']}) is below the tolerance {tol:g} THz; the pair-displaced "
            f"supercells were not computed. Dispersion: {targets['figure']}; details: {targets['json']}. "
            "Relax the structure or check the cell; to go on anyway set stability.override: true "
            "(or stability.tolerance_thz lower)")
    return summary
