"""pw.x scaling study: strong scaling of one displaced supercell, weak scaling of a supercell series.

Strong scaling runs the same displaced FC3 supercell (the production template, its k-mesh) on each of
``scaling.strong_ranks`` MPI ranks (one GPU per rank on the cluster).  Weak scaling grows the problem with
the resources: each entry of ``scaling.weak`` is a supercell of the unit cell and its rank count; the k-mesh
of the unit-cell input is divided by the supercell multiplicity (rounded up) so that the k-point density
stays constant, as in the seed study (GeS2: 9x9x3 for the unit cell, 5x5x3 for 2x2x1, 3x3x1 for 3x3x1).

Times are pw.x's own ``PWSCF ... WALL`` line, not the job's wall time (queueing and start-up excluded).
Speedup S(n) = T(n0)/T(n) relative to the smallest rank count n0, strong efficiency S(n)·n0/n; weak
efficiency T(first)/T(n).
"""

from __future__ import annotations

import math
from pathlib import Path

from kappaflow.plotting import save_figure
import numpy as np

from kappaflow.dft import scaling_pw_command
from kappaflow.errors import ConfigError
from kappaflow.qe.pwin import read_pw_input
from kappaflow.qe.pwout import read_pw_output

FIELDS = ["run", "series", "supercell", "n_atoms", "k_mesh", "ranks", "wall_time_s", "speedup", "efficiency"]


def run_name(series: str, supercell, ranks: int) -> str:
    return f"{series}_{'x'.join(str(int(n)) for n in supercell)}_r{int(ranks)}"


def planned_runs(scaling_cfg: dict, sow_supercell) -> list[dict]:
    """Every run of the study from the config, in the order of the figures."""
    strong_cell = scaling_cfg.get("strong_supercell") or sow_supercell
    if np.ndim(strong_cell) != 1 or len(strong_cell) != 3:
        raise ConfigError(f"scaling.strong_supercell must be three integers (a diagonal supercell), "
                          f"got {strong_cell!r}")
    runs = [{"series": "strong", "supercell": [int(n) for n in strong_cell], "ranks": int(r)}
            for r in scaling_cfg["strong_ranks"]]
    runs += [{"series": "weak", "supercell": [int(n) for n in entry["supercell"]], "ranks": int(entry["ranks"])}
             for entry in scaling_cfg["weak"]]
    for run in runs:
        run["name"] = run_name(run["series"], run["supercell"], run["ranks"])
    names = [r["name"] for r in runs]
    if len(set(names)) != len(names):
        raise ConfigError(f"scaling: duplicated runs {sorted({n for n in names if names.count(n) > 1})}")
    return runs


def _k_mesh(k_points_card: str, path: str) -> list[int]:
    lines = k_points_card.strip().splitlines()
    if not lines or "automatic" not in lines[0].lower() or len(lines) < 2:
        raise ConfigError(f"{path}: scaling needs 'K_POINTS automatic' (found {lines[0] if lines else 'none'!r})")
    return [int(v) for v in lines[1].split()[:3]]


def write_inputs(structure_path, unitcell_input, template_path, amplitude_ang: float, pw_overrides: dict,
                 runs: list[dict], out_dir) -> dict[str, Path]:
    """One pw.in per run: strong runs from the supercell template, displaced like a single-displacement
    FC3 supercell (first atom along x by the sow amplitude); weak runs from the unit-cell input with a
    k-mesh of constant density."""
    from kappaflow.sow import apply_overrides, supercell_input_text
    from kappaflow.structure import read_structure

    unit = read_structure(structure_path)
    unit_pw = read_pw_input(unitcell_input)
    k_unit = _k_mesh(unit_pw.k_points, str(unitcell_input))
    template_text = Path(template_path).read_text()
    written = {}
    for run in runs:
        atoms = unit.repeat(run["supercell"])
        if run["series"] == "strong":
            positions = atoms.get_positions()
            positions[0, 0] += amplitude_ang
            atoms.set_positions(positions)
            text = supercell_input_text(template_text, str(template_path), atoms, pw_overrides)
        else:
            pw = unit_pw.with_structure(atoms)
            kmesh = [max(1, math.ceil(k / n)) for k, n in zip(k_unit, run["supercell"])]
            pw.k_points = "K_POINTS automatic\n  " + " ".join(str(k) for k in kmesh) + " 0 0 0"
            pw.set("control", "tprnfor", True)
            apply_overrides(pw, pw_overrides)
            text = pw.to_text()
        path = Path(out_dir) / run["name"] / "pw.in"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written[run["name"]] = path
    return written


pw_command_for = scaling_pw_command  # the launch command per rank count (kappaflow.dft)


def collect(runs: list[dict], outputs: dict) -> list[dict]:
    """Rows of the table: pw.x's WALL time per run, speedup and efficiency per series."""
    rows = []
    for run in runs:
        out = read_pw_output(outputs[run["name"]])
        pw = read_pw_input(Path(outputs[run["name"]]).with_name("pw.in"))
        rows.append({"run": run["name"], "series": run["series"], "supercell": "x".join(map(str, run["supercell"])),
                     "n_atoms": out.n_atoms, "k_mesh": "x".join(map(str, _k_mesh(pw.k_points, pw.path))),
                     "ranks": run["ranks"], "wall_time_s": out.wall_time_s,
                     "mpi_processes": out.n_mpi_processes})
    for series in ("strong", "weak"):
        sel = sorted((r for r in rows if r["series"] == series), key=lambda r: r["ranks"])
        if not sel:
            continue
        t0, n0 = sel[0]["wall_time_s"], sel[0]["ranks"]
        for r in sel:
            r["speedup"] = t0 / r["wall_time_s"]
            r["efficiency"] = (r["speedup"] * n0 / r["ranks"]) if series == "strong" else t0 / r["wall_time_s"]
    return rows


def write_table(path, rows: list[dict]) -> None:
    from kappaflow import tables

    tables.write_table(path, rows, FIELDS)


def plot(rows: list[dict], strong_png, weak_png, title: str = "", unit: str = "MPI ranks") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    strong = sorted((r for r in rows if r["series"] == "strong"), key=lambda r: r["ranks"])
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    n = np.array([r["ranks"] for r in strong])
    axes[0].plot(n, [r["wall_time_s"] for r in strong], "o-")
    axes[0].set(xlabel=unit, ylabel="pw.x WALL time (s)", title="time")
    axes[1].plot(n, [r["speedup"] for r in strong], "o-", label="measured")
    axes[1].plot(n, n / n[0], "k--", label="ideal")
    axes[1].set(xlabel=unit, ylabel="speedup", title="speedup")
    axes[1].legend()
    axes[2].plot(n, [100 * r["efficiency"] for r in strong], "o-")
    axes[2].axhline(100, color="k", ls="--")
    axes[2].set(xlabel=unit, ylabel="parallel efficiency (%)", title="efficiency", ylim=(0, 110))
    for ax in axes:
        ax.set_xticks(n)
    cell = strong[0]["supercell"] if strong else ""
    fig.suptitle(f"{title}: strong scaling, one displaced {cell} supercell ({strong[0]['n_atoms']} atoms)"
                 if strong else title)
    fig.tight_layout()
    save_figure(fig, strong_png, dpi=120)

    weak = sorted((r for r in rows if r["series"] == "weak"), key=lambda r: r["ranks"])
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    labels = [f"{r['supercell']}\n{r['n_atoms']} at., k {r['k_mesh']}\n{r['ranks']} rk" for r in weak]
    x = np.arange(len(weak))
    axes[0].bar(x, [r["wall_time_s"] for r in weak])
    axes[0].set(ylabel="pw.x WALL time (s)", title="time")
    axes[1].plot(x, [100 * r["efficiency"] for r in weak], "o-")
    axes[1].axhline(100, color="k", ls="--")
    axes[1].set(ylabel="weak efficiency T(first)/T (%)", title="efficiency")
    for ax in axes:
        ax.set_xticks(x, labels, fontsize=8)
    fig.suptitle(f"{title}: weak scaling (resources grow with the supercell, constant k-point density)")
    fig.tight_layout()
    save_figure(fig, weak_png, dpi=120)


# ----------------------------------------------------------------------------------------------------
# steps called by the Snakemake scripts
def step_inputs(structure_path, unitcell_input, template_path, amplitude_ang, pw_overrides, runs, out_dir):
    from kappaflow.logs import progress

    written = write_inputs(structure_path, unitcell_input, template_path, amplitude_ang, pw_overrides, runs,
                           out_dir)
    progress(f"scaling: {len(written)} pw.x inputs ({', '.join(written)})")


def step_report(runs, outputs, table_path, strong_png, weak_png, title=""):
    from kappaflow.logs import progress

    by_name = {Path(p).parent.name: p for p in outputs}
    rows = collect(runs, by_name)
    for r in rows:
        if r["mpi_processes"] != r["ranks"]:
            progress(f"WARNING: {r['run']}: pw.x reports {r['mpi_processes']} MPI processes, "
                     f"{r['ranks']} were requested (check scaling.pw_command)")
    write_table(table_path, rows)
    plot(rows, strong_png, weak_png, title=title)
    for r in rows:
        progress(f"scaling: {r['run']:>24s}  {r['n_atoms']:4d} atoms  {r['ranks']:3d} ranks  "
                 f"WALL {r['wall_time_s']:9.2f} s  speedup {r['speedup']:.2f}  efficiency {r['efficiency']:.2f}")
