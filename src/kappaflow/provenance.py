"""Provenance of a κ table: ``kappa.provenance.json`` next to every ``kappa.csv``.

One function, :func:`write_kappa_provenance`, is called by every κ writer (rule ``bte``, rule
``bte_ml``, the noise study).  The record holds the code versions (kappaflow, phono3py, phonopy,
spglib, symfc, numpy, h5py, Python, Quantum ESPRESSO as the pw.x outputs report it, TensorFlow when an
ML model produced forces), every parameter that produced the table (BTE, sow, reap, pw.x settings of
the supercells), the number of DFT and ML force sets, and sha256 hashes of the inputs and models.
docs/provenance.md describes it field by field.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import platform
from pathlib import Path

import numpy as np
from kappaflow import atomic

SCHEMA = "kappaflow-provenance/1"
CODES = ("kappaflow", "phono3py", "phonopy", "spglib", "symfc", "numpy", "h5py")


def provenance_path(kappa_csv_path) -> Path:
    """``…/kappa.csv`` → ``…/kappa.provenance.json``."""
    p = Path(kappa_csv_path)
    return p.with_name(f"{p.stem}.provenance.json")


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_record(path) -> dict:
    """``{"path", "sha256", "bytes"}``; a missing file is recorded as such (never silently hashed)."""
    p = Path(path)
    if not p.is_file():
        return {"path": str(path), "sha256": None, "missing": True}
    return {"path": str(path), "sha256": sha256_file(p), "bytes": p.stat().st_size}


def code_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        pass
    try:
        module = __import__(name)
    except ImportError:
        return None
    return str(getattr(module, "__version__", None) or "") or None


def qe_versions(pw_outputs) -> dict:
    """``{version: count}`` from the ``Program PWSCF v.X`` banner of each pw.x output (first 200 lines).
    ML-injected outputs say ``kappaflow-ml``; the mock says ``6.7MaX`` as its pw.x interface."""
    import re

    counts: dict[str, int] = {}
    for path in pw_outputs:
        version = "unreadable"
        try:
            with open(path, errors="replace") as fh:
                for _, line in zip(range(200), fh):
                    if line.strip().startswith("Program PWSCF"):
                        m = re.search(r"v\.(\S+)", line)
                        version = m.group(1) if m else "unknown"
                        break
        except OSError:
            version = "missing"
        counts[version] = counts.get(version, 0) + 1
    return dict(sorted(counts.items()))


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


def bte_parameters(bte_cfg: dict, mesh, temperatures_k) -> dict:
    sigma = bte_cfg.get("sigma_thz")
    backend = bte_cfg["backend"]
    if backend == "shengbte":
        integration = "ShengBTE adaptive Gaussian smearing"
    else:
        integration = "linear tetrahedron" if sigma is None else "Gaussian smearing"
    return {
        "backend": backend, "method": bte_cfg["method"], "mesh": [int(m) for m in mesh],
        "bz_integration": integration, "sigma_thz": sigma,
        "temperatures_k": [float(t) for t in temperatures_k],
        "isotopes": bool(bte_cfg["isotopes"]), "boundary_mfp_um": bte_cfg.get("boundary_mfp_um"),
        "shengbte_executable": bte_cfg.get("shengbte_executable") if backend == "shengbte" else None,
    }


def pw_parameters(pw_in_path) -> dict:
    """The pw.x settings of one supercell input (the base supercell: the same for every supercell)."""
    from kappaflow.qe.pwin import read_pw_input

    pw = read_pw_input(pw_in_path)
    ecutwfc = pw.get("system", "ecutwfc")
    ecutrho = pw.get("system", "ecutrho")
    return {
        "input": file_record(pw_in_path),
        "ecutwfc_ry": ecutwfc,
        "ecutrho_ry": ecutrho if ecutrho is not None else (4 * ecutwfc if ecutwfc is not None else None),
        "ecutrho_is_default": ecutrho is None,
        "input_dft": pw.get("system", "input_dft"),
        "occupations": pw.get("system", "occupations"),
        "conv_thr": pw.get("electrons", "conv_thr"),
        "k_points": pw.k_points,
        "pseudopotentials": {s.symbol: s.pseudopotential for s in pw.species},
    }


def write_kappa_provenance(kappa_csv_path, *, route: str, bte_cfg: dict, mesh, temperatures_k,
                           context: dict, files: dict | None = None, extra: dict | None = None) -> Path:
    """Write ``kappa.provenance.json`` next to ``kappa_csv_path`` and return its path.

    ``route``: ``dft``, ``ml``, ``noise`` or ``noise_ml``.  ``context`` (from the rule's params or the
    script): ``manifest``, ``disp_yaml``, ``store`` (the DFT store), ``reap`` (config block), and
    optionally ``unitcell``, ``supercell_template``, ``structure``, ``force_store`` (the store the
    forces were read from, when not ``store``), ``models`` (ML model files), ``ml`` (settings).
    ``files``: the force-constant files that fed the BTE (name → path); none for in-memory routes."""
    from kappaflow import reap, sow

    manifest_path = context["manifest"]
    manifest = sow.read_manifest(manifest_path)
    store = Path(context["store"])
    keys = sorted({j["key"] for j in manifest["jobs"]})
    dft_outputs = [j.get("output") or str(store / j["key"] / "pw.out") for j in
                   {j["key"]: j for j in manifest["jobs"]}.values()]
    models = [str(m) for m in context.get("models") or []]

    codes = {name: code_version(name) for name in CODES}
    codes["python"] = platform.python_version()
    codes["quantum_espresso"] = qe_versions(dft_outputs)
    codes["dft_engine"] = manifest.get("engine")
    if models:
        codes["tensorflow"] = code_version("tensorflow")

    force_sets = {"dft": len(keys), "ml": 0}
    ml_block = context.get("ml")
    if ml_block and ml_block.get("inject_provenance"):
        sources = json.loads(Path(ml_block["inject_provenance"]).read_text())["sources"]
        n_ml = sum(1 for k in keys if sources.get(k) == "ml")
        force_sets = {"dft": len(keys) - n_ml, "ml": n_ml}
    elif ml_block and ml_block.get("n_ml") is not None:
        force_sets = {"dft": len(keys) - int(ml_block["n_ml"]), "ml": int(ml_block["n_ml"])}
    if context.get("force_store"):
        force_store = Path(context["force_store"])
        codes["force_outputs"] = qe_versions([force_store / k / "pw.out" for k in keys])

    base = next((j for j in manifest["jobs"] if j["role"] in ("base", "fc2_base")), manifest["jobs"][0])
    base_in = store / base["key"] / "pw.in"
    parameters = {
        "bte": bte_parameters(bte_cfg, mesh, temperatures_k),
        "sow": {k: manifest.get(k) for k in ("strategy", "supercell_matrix", "fc2_supercell_matrix",
                                              "amplitude_ang", "pair_cutoff_ang", "fc3_cutoff_ang", "n_supercells_total",
                                              "n_displaced_fc3", "n_displaced_fc2")},
        "reap": {"fc_calculator_requested": context["reap"]["fc_calculator"],
                 "fc_calculator": reap.fc_calculator_for(manifest["strategy"], context["reap"]["fc_calculator"]),
                 "full_arrays": True},
        "dft": pw_parameters(base_in) if base_in.is_file() else {"input": None,
                                                                   "note": "imported (thirdorder) set"},
    }
    if context.get("sow_config"):
        parameters["sow"]["config"] = context["sow_config"]
    if extra:
        parameters.update(extra)

    inputs = {"manifest": file_record(manifest_path), "phono3py_disp_yaml": file_record(context["disp_yaml"])}
    for name in ("unitcell", "supercell_template", "structure"):
        if context.get(name):
            inputs[name] = file_record(context[name])
    for name, path in (files or {}).items():
        inputs[name] = file_record(path)

    record = {
        "schema": SCHEMA,
        "kappa_table": file_record(kappa_csv_path),
        "route": route,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "codes": codes,
        "parameters": parameters,
        "force_sets": force_sets,
        "inputs": inputs,
        "models": [file_record(m) for m in models],
    }
    if ml_block:
        record["ml"] = {k: v for k, v in ml_block.items() if k != "inject_provenance"}
        if ml_block.get("inject_provenance"):
            record["inputs"]["ml_inject_provenance"] = file_record(ml_block["inject_provenance"])
    out = provenance_path(kappa_csv_path)
    atomic.write_text(out, json.dumps(_jsonable(record), indent=1) + "\n")
    return out
