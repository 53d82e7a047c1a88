"""Convergence sweeps of κ against the FC3 pair cutoff, the FC3 supercell and the q-mesh, reusing forces.

Points
------
A *force point* is (supercell, cutoff): one sow (its own manifest and phono3py_disp.yaml under
``results/<name>/sweep/<point>/``) writing into the shared DFT store ``results/<name>/dft``.  A *κ point*
is a force point and a q-mesh: one in-memory reap + BTE at ``sweep.temperature_k``.

With ``design: axes`` (default) each list is ordered from cheap to converged and its last entry is the
reference: the cutoff axis varies the cutoff at the reference supercell and mesh, the supercell axis
the supercell at the reference cutoff and mesh, the mesh axis the mesh at the reference cutoff and
supercell.  ``design: grid`` takes every combination.

Why forces are reused
---------------------
phono3py generates the full pair-displacement dataset for a supercell and displacement distance and
only *marks* the pairs beyond the cutoff as excluded; the supercells of a smaller cutoff are therefore
the same structures (same pw.x input text, same store key) as a subset of those of a larger cutoff
(:func:`keys_are_nested`, checked in tests/test_sweep.py).  The store computes each key once, so the
pw.x runs of a cutoff sweep are those of its largest cutoff; the smaller cutoffs are free.

Convergence verdict
-------------------
Along an axis (sorted by cutoff in Å, supercell atoms, or q-points) the change between consecutive
points is max over xx, yy, zz of |κ_i − κ_{i−1}| / |κ_i|.  The axis is converged at the first point
whose change and every later change are below ``tolerance``; the converged value is κ at that point.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from pathlib import Path

from kappaflow.plotting import save_figure
import numpy as np

from kappaflow.errors import InputFileError
from kappaflow.plan import cutoff_label, max_safe_cutoff_ang, split_cutoff, supercell_label

COMPONENTS = ("xx", "yy", "zz")
SUMMARY_FIELDS = ["label", "axes", "force_point", "supercell", "n_atoms_supercell", "cutoff_setting",
                  "pair_cutoff_ang", "max_safe_cutoff_ang", "mesh", "n_q", "n_pw_runs", "T_K",
                  "kappa_xx", "kappa_yy", "kappa_zz", "seconds"]


# --- points ---------------------------------------------------------------------------------------
def force_label(supercell, cutoff) -> str:
    sc = supercell_label(supercell)
    if sc.startswith("["):
        sc = "m" + "_".join(str(v) for row in supercell for v in row).replace("-", "n")
    if cutoff is None:
        cut = "all"
    elif cutoff < 0:
        cut = f"{int(round(-cutoff))}shells"
    else:
        cut = f"{float(cutoff):g}A"
    return f"sc{sc}_{cut}"


def mesh_label(mesh) -> str:
    return "q" + "x".join(str(int(v)) for v in mesh)


def _config_cutoff(sow_cfg):
    from kappaflow.plan import config_cutoff

    return config_cutoff(sow_cfg)


def sweep_points(cfg: dict) -> tuple[dict, dict]:
    """(force points, κ points) of the sweep: label -> settings.

    force point: {supercell, cutoff (Å, or -n shells, or None)}; κ point: {force_point, mesh, axes}."""
    sw = cfg["sweep"]
    cutoffs = sw["cutoffs_ang"] or [_config_cutoff(cfg["sow"])]
    supercells = sw["supercells"] or [cfg["sow"]["supercell"]]
    meshes = sw["meshes"] or [cfg["bte"]["mesh"]]
    for c in cutoffs:
        split_cutoff(c)  # refuses 0 and fractional shells
    ref_c, ref_s, ref_m = cutoffs[-1], supercells[-1], meshes[-1]
    if sw["design"] == "grid":
        combos = [(c, s, m, ("cutoff", "supercell", "mesh")) for s, c, m in
                  itertools.product(supercells, cutoffs, meshes)]
    else:
        combos = ([(c, ref_s, ref_m, ("cutoff",)) for c in cutoffs]
                  + [(ref_c, s, ref_m, ("supercell",)) for s in supercells]
                  + [(ref_c, ref_s, m, ("mesh",)) for m in meshes])
    force_points: dict = {}
    kappa_points: dict = {}
    for c, s, m, axes in combos:
        fl = force_label(s, c)
        force_points.setdefault(fl, {"supercell": s, "cutoff": c})
        kl = f"{fl}/{mesh_label(m)}"
        point = kappa_points.setdefault(kl, {"force_point": fl, "mesh": list(m), "axes": []})
        point["axes"] = sorted(set(point["axes"]) | set(axes))
    return force_points, kappa_points


def point_sow_config(sow_cfg: dict, point: dict) -> dict:
    """The sow settings of a force point: the config's, with the point's supercell and cutoff;
    always the systematic strategy (a cutoff sweep of random or imported sets has no meaning)."""
    pair, shells = split_cutoff(point["cutoff"])
    return dict(sow_cfg, supercell=point["supercell"], strategy="systematic", pair_cutoff_ang=pair,
                neighbour_shells=shells)


def cutoff_warning(unitcell, supercell, cutoff_ang) -> str | None:
    if cutoff_ang is None:
        return (f"supercell {supercell_label(supercell)}: all pairs (no cutoff): beyond "
                f"{max_safe_cutoff_ang(unitcell, supercell):.3f} Å (half the shortest image distance) the "
                "supercell, not the cutoff, limits FC3")
    safe = max_safe_cutoff_ang(unitcell, supercell)
    if cutoff_ang > safe + 1e-9:
        return (f"supercell {supercell_label(supercell)}: FC3 cutoff {cutoff_ang:.3f} Å exceeds half the "
                f"shortest image distance ({safe:.3f} Å): pairs that far are as close to a periodic image; "
                "use a larger supercell to converge the cutoff")
    return None


def keys_are_nested(manifests: list[dict]) -> bool:
    """True when the pw.x keys of each manifest (ordered by cutoff) contain those of the previous."""
    sets = [{j["key"] for j in m["jobs"]} for m in manifests]
    return all(a <= b for a, b in zip(sets, sets[1:]))


def run_sweep_sow(structure_path, template_path, sow_cfg: dict, dft_cfg: dict, store_dir, manifest_path,
                  disp_yaml_path) -> dict:
    """The sow of one force point (steps.run_sow into the shared store), warning when the cutoff exceeds
    what the supercell can hold."""
    from kappaflow.steps import progress, run_sow
    from kappaflow.structure import read_structure

    manifest = run_sow(structure_path, template_path, sow_cfg, dft_cfg, store_dir, manifest_path, disp_yaml_path)
    warning = cutoff_warning(read_structure(structure_path), sow_cfg["supercell"], manifest["pair_cutoff_ang"])
    if warning:
        progress(f"sweep: WARNING {warning}")
    return manifest


# --- one κ point ----------------------------------------------------------------------------------
def run_sweep_kappa(manifest_path, disp_yaml_path, store_dir, reap_cfg: dict, bte_cfg: dict, mesh,
                    temperature_k: float, kappa_csv_path, point: dict | None = None,
                    progress=None, provenance: dict | None = None) -> dict:
    """reap + BTE in memory for one sweep point at one temperature; writes kappa.csv and kappa.json."""
    from kappaflow import bte as bte_mod
    from kappaflow import sow
    from kappaflow.noise import kappa_with_forces
    from kappaflow.steps import atomic_path, load_phono3py, mapped_forces

    t0 = time.perf_counter()
    manifest = sow.read_manifest(manifest_path)
    forces, _ = mapped_forces(manifest, store_dir, disp_yaml_path, reap_cfg)
    cfg = dict(bte_cfg, temperatures=[float(temperature_k)])
    result = kappa_with_forces(lambda: load_phono3py(disp_yaml_path), manifest, forces,
                               reap_cfg["fc_calculator"], cfg, list(mesh))
    bte_mod.write_kappa_csv(kappa_csv_path, result)
    k = result.kappa_w_per_mk[0]
    meta = {"manifest": str(manifest_path), "mesh": list(mesh), "temperature_k": float(temperature_k),
            "n_pw_runs": len({j["key"] for j in manifest["jobs"]}),
            "n_displaced_fc3": manifest["n_displaced_fc3"], "pair_cutoff_ang": manifest["pair_cutoff_ang"],
            "supercell_matrix": manifest["supercell_matrix"], "point": point or {},
            "kappa_w_per_mk": {c: float(k["xyz".index(c[0]), "xyz".index(c[1])]) for c in COMPONENTS},
            "seconds": time.perf_counter() - t0}
    with atomic_path(Path(kappa_csv_path).with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(meta, indent=1))
    if provenance is not None:  # kappa.provenance.json, like every other kappa table
        from kappaflow.provenance import write_kappa_provenance

        write_kappa_provenance(kappa_csv_path, route="sweep", bte_cfg=cfg, mesh=list(mesh),
                               temperatures_k=[float(temperature_k)],
                               context={"manifest": manifest_path, "disp_yaml": disp_yaml_path,
                                        "store": store_dir, "reap": reap_cfg, **provenance},
                               extra={"sweep_point": point or {}})
    if progress:
        progress(f"sweep: {point.get('label', manifest_path) if point else manifest_path}: "
                 f"kappa({temperature_k:g} K) xx {k[0, 0]:.3f} yy {k[1, 1]:.3f} zz {k[2, 2]:.3f} W/mK "
                 f"({meta['n_pw_runs']} pw.x runs, {meta['seconds']:.1f} s)")
    return meta


# --- summary --------------------------------------------------------------------------------------
def collect(kappa_points: dict, kappa_jsons: dict, unitcell, temperature_k: float) -> list[dict]:
    """One row per κ point from its kappa.json (label -> path)."""
    rows = []
    for label, point in kappa_points.items():
        path = Path(kappa_jsons[label])
        try:
            meta = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise InputFileError(path, f"cannot read the sweep point's κ record ({exc})") from None
        sc = meta["supercell_matrix"]
        n_atoms = len(unitcell) * round(abs(np.linalg.det(np.array(sc, dtype=float))))
        cut = meta["pair_cutoff_ang"]
        fp = point["force_point"]
        rows.append({"label": label, "axes": "+".join(point["axes"]), "force_point": fp,
                     "supercell": supercell_label(sc), "n_atoms_supercell": n_atoms,
                     "cutoff_setting": cutoff_label(point.get("cutoff")), "pair_cutoff_ang": cut,
                     "max_safe_cutoff_ang": max_safe_cutoff_ang(unitcell, sc), "mesh": mesh_label(meta["mesh"]),
                     "n_q": int(np.prod(meta["mesh"])), "n_pw_runs": meta["n_pw_runs"],
                     "T_K": meta["temperature_k"],
                     **{f"kappa_{c}": meta["kappa_w_per_mk"][c] for c in COMPONENTS},
                     "seconds": meta["seconds"]})
    return rows


AXIS_KEYS = {"cutoff": lambda r: (math.inf if r["pair_cutoff_ang"] is None else r["pair_cutoff_ang"]),
             "supercell": lambda r: r["n_atoms_supercell"], "mesh": lambda r: r["n_q"]}


def relative_change(a: dict, b: dict) -> float:
    """max over xx, yy, zz of |κ_b − κ_a| / |κ_b|."""
    return max(abs(b[f"kappa_{c}"] - a[f"kappa_{c}"]) / max(abs(b[f"kappa_{c}"]), 1e-300)
               for c in COMPONENTS)


def verdict(rows: list[dict], axis: str, tolerance: float) -> dict:
    """Convergence along one axis (rows of that axis, any order); see the module docstring."""
    pts = sorted([r for r in rows if axis in r["axes"].split("+")], key=AXIS_KEYS[axis])
    if len(pts) < 2:
        return {"axis": axis, "n_points": len(pts), "converged": None,
                "reason": "fewer than two points: nothing to compare"}
    changes = [relative_change(a, b) for a, b in zip(pts, pts[1:])]
    at = None
    for i in range(len(changes)):
        if all(c < tolerance for c in changes[i:]):
            at = i + 1
            break
    out = {"axis": axis, "n_points": len(pts), "tolerance": tolerance,
           "points": [p["label"] for p in pts], "relative_changes": changes, "converged": at is not None}
    if at is not None:
        p = pts[at]
        out.update(converged_at=p["label"], value_w_per_mk={c: p[f"kappa_{c}"] for c in COMPONENTS},
                   setting={"cutoff": p["pair_cutoff_ang"], "supercell": p["supercell"], "mesh": p["mesh"]}[axis])
    else:
        out["reason"] = (f"the last change ({changes[-1]:.3%}) is not below {tolerance:.1%}: extend the "
                         f"{axis} list")
    return out


def write_table(path, rows: list[dict]) -> None:
    from kappaflow.tables import write_table

    write_table(path, rows, SUMMARY_FIELDS)


def plot(rows: list[dict], verdicts: dict, path, tolerance: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = {a: sum(a in r["axes"].split("+") for r in rows) for a in ("cutoff", "supercell", "mesh")}
    axes_present = [a for a, n in counts.items() if n >= 2] or [a for a, n in counts.items() if n][:1]
    fig, axs = plt.subplots(1, len(axes_present), figsize=(4.6 * len(axes_present), 4.2), dpi=120,
                            squeeze=False)
    xlabels = {"cutoff": "FC3 pair cutoff (Å)", "supercell": "atoms in the FC3 supercell",
               "mesh": "q-points in the mesh"}
    for ax, axis in zip(axs[0], axes_present):
        pts = sorted([r for r in rows if axis in r["axes"].split("+")], key=AXIS_KEYS[axis])
        x = [AXIS_KEYS[axis](r) for r in pts]
        if axis == "cutoff" and any(math.isinf(v) for v in x):
            finite = [v for v in x if not math.isinf(v)]
            x = [v if not math.isinf(v) else (max(finite) + 1.0 if finite else 1.0) for v in x]
        for n, c in enumerate(COMPONENTS):
            ax.plot(x, [r[f"kappa_{c}"] for r in pts], "o-", color=f"C{n}", label=rf"$\kappa_{{{c}}}$")
        v = verdicts.get(axis, {})
        if v.get("converged"):
            for n, c in enumerate(COMPONENTS):
                val = v["value_w_per_mk"][c]
                ax.axhspan(val * (1 - tolerance), val * (1 + tolerance), color=f"C{n}", alpha=0.12)
            ax.set_title(f"{axis}: converged at {v['converged_at'].split('/')[0] if axis != 'mesh' else v['setting']}",
                         fontsize=8)
        else:
            ax.set_title(f"{axis}: " + ("not converged" if v.get("converged") is False else "one point"),
                         fontsize=8)
        if axis == "cutoff":
            for r in pts:
                if r["pair_cutoff_ang"] is not None and r["pair_cutoff_ang"] > r["max_safe_cutoff_ang"]:
                    ax.axvline(r["max_safe_cutoff_ang"], color="0.5", ls="--", lw=1)
                    ax.text(r["max_safe_cutoff_ang"], ax.get_ylim()[0], " half image\n distance",
                            fontsize=6, color="0.4", va="bottom")
                    break
        ax.set_xlabel(xlabels[axis])
        ax.set_ylabel(f"κ({rows[0]['T_K']:g} K) (W m$^{{-1}}$ K$^{{-1}}$)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


def run_sweep_summary(structure_path, kappa_points: dict, force_points: dict, kappa_jsons: dict,
                      tolerance: float, temperature_k: float, out: dict, progress=None) -> dict:
    from kappaflow.steps import atomic_path
    from kappaflow.structure import read_structure

    unit = read_structure(structure_path)
    points = {k: dict(v, cutoff=force_points[v["force_point"]]["cutoff"]) for k, v in kappa_points.items()}
    rows = collect(points, kappa_jsons, unit, temperature_k)
    verdicts = {a: verdict(rows, a, tolerance) for a in ("cutoff", "supercell", "mesh")}
    warnings = []
    for fp in sorted({r["force_point"] for r in rows}):
        r = next(x for x in rows if x["force_point"] == fp)
        w = cutoff_warning(unit, force_points[fp]["supercell"], r["pair_cutoff_ang"])
        if w:
            warnings.append(w)
    manifests = {}
    for label, path in kappa_jsons.items():
        manifests[points[label]["force_point"]] = json.loads(Path(path).read_text())["manifest"]
    all_keys = set()
    for m in manifests.values():
        all_keys |= {j["key"] for j in json.loads(Path(m).read_text())["jobs"]}
    summary = {"temperature_k": temperature_k, "tolerance": tolerance, "verdicts": verdicts,
               "warnings": warnings, "n_pw_runs_unique": len(all_keys),
               "n_pw_runs_if_not_shared": sum(len({j["key"] for j in json.loads(Path(m).read_text())["jobs"]})
                                              for m in manifests.values())}
    write_table(out["table"], rows)
    with atomic_path(out["summary"]) as tmp:
        tmp.write_text(json.dumps(summary, indent=1))
    with atomic_path(out["figure"]) as tmp:
        plot(rows, verdicts, tmp, tolerance)
    if progress:
        for w in warnings:
            progress(f"sweep: WARNING {w}")
        for a, v in verdicts.items():
            if v["converged"]:
                val = v["value_w_per_mk"]
                progress(f"sweep: {a} converged (changes < {tolerance:.1%}) at {v['converged_at']}: "
                         f"kappa xx {val['xx']:.3f} yy {val['yy']:.3f} zz {val['zz']:.3f} W/mK")
            elif v["converged"] is False:
                progress(f"sweep: {a} NOT converged: {v['reason']}")
        progress(f"sweep: {summary['n_pw_runs_unique']} unique pw.x runs serve "
                 f"{summary['n_pw_runs_if_not_shared']} point-runs")
    return summary

