"""Benchmark: κ(300 K) error against the number of pw.x runs, mock Si or mock GeS2 (the "DFT bill").

``--system si`` (the default) is the mock Si demo's (``config/mock/si_al.yaml`` over ``config/systems/si.yaml``): diamond Si,
2×2×2 supercell of the 2-atom cell (16 atoms), displacement amplitude 0.01 Å, FC3 pair cutoff 4.0 Å,
phono3py RTA on the configured q-mesh (19³, tetrahedron, isotopes on), κxx at 300 K.  "DFT" is the mock
pw.x's force field (Stillinger–Weber Si, :func:`kappaflow.mock.potentials.stillinger_weber_si`), called
in-process: every force evaluation counts as one pw.x run.  The relax is common to every route and is
not counted.

``--system ges2`` is the mock GeS2 of ``config/mock/ges2_al.yaml`` over ``config/systems/ges2.yaml``: the
seed's 6-atom tetragonal cell, 3×3×1 supercell (54 atoms), 0.01 Å, FC3 within −3 neighbour shells (the
sow's shell cutoff in Å), RTA on 11×11×4, κxx and κzz at 300 K; "DFT" is the mock's Morse network
(``kappaflow-mock-pw --model ges2-morse``).  Each component has its own table, and the figure a row.

Methods (one CSV row per point):

``fd-cutoff`` / ``fd-nocutoff``
    the references: phono3py's systematic finite displacements with the 4.0 Å pair cutoff, and without
    a cutoff, in the same supercell (kappaflow's reap: ``traditional`` + symmetrisation).
``random-symfc-cutoff`` / ``random-symfc-nocutoff``
    kappaflow's ``sow.strategy: random`` (n rattled supercells, every atom moved by 0.01 Å) fitted by
    ``reap.symfc_fit`` with FC3 within 4.0 Å / with all triplets; + the undisplaced run the route
    computes (``sow.subtract_residual_forces``).  An underdetermined set is refused by kappaflow (the
    sow's count check, then the reap's rank check) and appears as ``refused``, never as a number.
``pypolymlp``
    phono3py's MLIP route (``Phono3py.develop_mlp`` on the same n random supercells, then
    ``evaluate_mlp`` on the no-cutoff finite-displacement set); n pw.x runs (no undisplaced run).
``qbc-pulp`` / ``qbc-topn``
    kappaflow's Query-by-Committee loop (``snakemake al``), one point per round from
    ``results/si/al/final/rounds.csv`` (its κ uses the sow's 4.0 Å cutoff); ``--al-results`` reuses a
    finished run, ``--run-al`` starts it in a scratch copy of the workflow.
``qbc-<method>-committee-nocutoff``
    goal 1: the final committee of that run (models and Δ-learning baseline of its last round) predicts
    the forces of the no-cutoff finite-displacement set; FC3 without cutoff; κ.

    python3 benchmarks/dft_bill.py --out DIR [--system si|ges2] [--quick] [--al-results pulp=PATH --al-results topn=PATH]
                                   [--run-al] [--no-pypolymlp]

Writes DIR/dft_bill.csv, DIR/dft_bill.md (tables) and DIR/dft_bill.png (κ error vs pw.x runs).
Record the numbers in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "src") not in sys.path:
    sys.path.insert(0, str(REPO / "src"))



@dataclass(frozen=True)
class System:
    """What differs between the benchmarked systems: the AL config (over its system file), the κ
    components reported, the random-set sizes (a no-cutoff fit of GeS2 needs ~32 supercells), the
    pypolymlp sizes (the goals are at <= 10 runs) and the quick mesh."""
    name: str
    config: str
    components: tuple
    n_random: tuple
    n_pypolymlp: tuple
    quick_mesh: tuple
    title: str


SYSTEMS = {
    "si": System("si", "config/mock/si_al.yaml", ("xx",), (1, 2, 3, 4, 6, 8), (1, 2, 3, 4, 6, 8), (7, 7, 7),
                 "mock Si (Stillinger–Weber as the DFT), 2×2×2, 0.01 Å, RTA"),
    "ges2": System("ges2", "config/mock/ges2_al.yaml", ("xx", "zz"), (1, 2, 3, 4, 6, 8, 16, 32, 40),
                   (2, 3, 4, 6, 8), (5, 5, 2), "mock GeS2 (Morse network as the DFT), 3×3×1, 0.01 Å, RTA"),
}
#: the system of this run (main sets it from --system)
SYSTEM = SYSTEMS["si"]
#: snakemake arguments after `al --configfile <config>` per QBC batch rule (--config is merged key by key
#: into the config files, so only ml.al.method changes)
AL_CONFIGS = {"pulp": [], "topn": ["--config", 'ml={"al": {"method": "topn"}}']}
AXIS_INDEX = {"xx": 0, "yy": 1, "zz": 2}
SEEDS = (0, 1, 2)
#: kappaflow draws snapshot i of a random set with seed random_seed + i: seeds this far apart share none
SEED_STRIDE = 100
GOAL_RUNS, GOAL_ERROR = 10, 0.05
COLUMNS = ["method", "seed", "component", "n_pw_runs", "kappa_300K", "error_vs_cutoff_ref", "error_vs_nocutoff_ref",
           "status", "note"]
WORKFLOW_FILES = ("Snakefile", "workflow", "scripts", "config", "profiles", "envs")


def say(text: str) -> None:
    print(f"[dft_bill {time.strftime('%H:%M:%S')}] {text}", flush=True)


# --- setup -----------------------------------------------------------------------------------------
@dataclass
class Setup:
    unitcell: object  # ase.Atoms, relaxed
    unitcell_source: str
    supercell: list
    amplitude_ang: float
    cutoff_ang: float
    mesh: list
    bte: dict
    temperature_k: float = 300.0
    extra: dict = field(default_factory=dict)


def load_config() -> dict:
    from kappaflow import config as kfconfig

    cwd = os.getcwd()
    os.chdir(REPO)  # the system file and its paths are relative to the repository
    try:
        return kfconfig.load(SYSTEM.config)
    finally:
        os.chdir(cwd)


def relaxed_unitcell(cfg: dict, al_dirs: dict):
    """The relaxed unit cell of an AL run (the structure its loop used), else the mock's vc-relax of the
    configured unit cell done in-process (BFGS + FrechetCellFilter, as ``kappaflow-mock-pw`` does)."""
    from kappaflow.structure import read_structure

    for name, results in al_dirs.items():
        path = results / "structure/unitcell.json"
        if path.exists():
            return read_structure(path), f"{path} (the relax of the {name} AL run)"
    from ase.filters import FrechetCellFilter
    from ase.optimize import BFGS

    from kappaflow.qe.pwin import read_pw_input

    atoms = read_pw_input(cfg["unitcell"]).atoms.copy()
    atoms.calc = mock_calculator(cfg)
    BFGS(FrechetCellFilter(atoms, scalar_pressure=0.0), logfile=None, maxstep=0.1).run(fmax=1e-6, steps=400)
    atoms.calc = None
    return atoms, (f"{cfg['unitcell']} relaxed in-process with the mock's {mock_model(cfg)} "
                   "(BFGS + FrechetCellFilter, fmax 1e-6 eV/Å)")


def mock_model(cfg: dict) -> str:
    """The mock pw.x model of the config's ``dft.pw_command`` (``kappaflow-mock-pw --model NAME``)."""
    import shlex

    words = shlex.split(str(cfg["dft"]["pw_command"]))
    if not words or "kappaflow-mock-pw" not in Path(words[0]).name:
        raise SystemExit(f"{SYSTEM.config}: dft.pw_command {cfg['dft']['pw_command']!r} is not the mock pw.x; "
                         "this benchmark calls the mock's force field in-process")
    if "--reference" in words:
        raise SystemExit(f"{SYSTEM.config}: a mock with --reference is not supported here")
    return words[words.index("--model") + 1] if "--model" in words else "stillinger-weber-si"


def mock_calculator(cfg: dict):
    from kappaflow.mock.pw import make_calculator

    return make_calculator(mock_model(cfg))


def make_setup(al_dirs: dict, quick: bool) -> Setup:
    from kappaflow.sow import SowSettings, effective_pair_cutoff

    cfg = load_config()
    sow = cfg["sow"]
    unitcell, source = relaxed_unitcell(cfg, al_dirs)
    # the sow's cutoff in Å (neighbour shells become thirdorder's shell cutoff, as the sow does)
    cutoff = effective_pair_cutoff(unitcell, SowSettings(list(sow["supercell"]), pair_cutoff_ang=sow["pair_cutoff_ang"],
                                                         neighbour_shells=sow["neighbour_shells"]))
    if cutoff is None:
        raise SystemExit(f"{SYSTEM.config}: neither sow.pair_cutoff_ang nor sow.neighbour_shells is set; this "
                         "benchmark compares a cutoff with none")
    label = (f"{sow['neighbour_shells']} shells = {cutoff:.3f} Å" if sow["neighbour_shells"] is not None
             else f"{cutoff:g} Å")
    bte = dict(cfg["bte"])
    mesh = list(SYSTEM.quick_mesh) if quick else list(bte["mesh"])
    return Setup(unitcell, source, list(sow["supercell"]), float(sow["amplitude_ang"]),
                 float(cutoff), mesh, bte, float(cfg["ml"]["al"]["kappa_temperature_k"]),
                 extra={"supercell_template": str(REPO / cfg["supercell_template"]), "calculator": mock_calculator(cfg),
                        "cutoff_label": label})


# --- forces ----------------------------------------------------------------------------------------
def mock_dft(cells, setup: "Setup") -> tuple[list[np.ndarray], list[float]]:
    """Forces (eV/Å) and energies (eV) of phonopy supercells from the mock pw.x's force field."""
    from kappaflow.structure import from_phonopy

    calc = setup.extra["calculator"]
    forces, energies = [], []
    for cell in cells:
        atoms = from_phonopy(cell)
        atoms.calc = calc
        forces.append(np.asarray(atoms.get_forces(), dtype=np.float64))
        energies.append(float(atoms.get_potential_energy()))
    return forces, energies


def committee_forces(results: Path, stop_round: int | None = None):
    """A force function from the final committee of an AL run (its last round's members + Δ-learning
    baseline, as the loop's own inference adds it)."""
    from kappaflow.al.baseline import load_optional
    from kappaflow.ml.gvectors import descriptors_for_atoms
    from kappaflow.ml.model import Committee
    from kappaflow.structure import from_phonopy

    summary = json.loads((results / "al/final/summary.json").read_text())
    last = int(summary["stop_round"]) - 1 if stop_round is None else stop_round
    members = sorted((results / f"al/round{last}/models").glob("member*"))
    if not members:
        raise SystemExit(f"{results}/al/round{last}/models: no member* model directories")
    committee = Committee.load(members)
    baseline_path = results / f"al/round{last}/baseline/baseline.npz"
    baseline = load_optional(baseline_path if baseline_path.exists() else None)
    say(f"committee of round {last}: {len(members)} members, baseline "
        f"{baseline.orders if baseline is not None else 'none'} ({summary['pw_runs']} pw.x runs)")

    def forces(cells, setup):
        out = []
        for n, cell in enumerate(cells):
            atoms = from_phonopy(cell)
            pred = committee.predict(descriptors_for_atoms(atoms, committee.params, derivatives=True))
            if baseline is not None:
                pred = baseline.corrected(pred, atoms, f"supercell {n}")
            out.append(np.asarray(pred["forces_ev_per_ang"], dtype=np.float64))
        return out, None

    return forces, int(summary["pw_runs"]), last


def unique_runs(cells, setup: "Setup") -> int:
    """Distinct pw.x runs among phonopy supercells: distinct pw.x inputs as the sow writes them from the
    supercell template (the store key is a hash of the input text, so equal inputs are one run)."""
    from kappaflow.sow import supercell_input_text
    from kappaflow.structure import from_phonopy

    template = setup.extra["supercell_template"]
    text = Path(template).read_text()
    return len({supercell_input_text(text, template, from_phonopy(c)) for c in cells})


# --- force constants and κ -------------------------------------------------------------------------
def kappa_components(ph3, setup: Setup) -> dict:
    """κ (W/mK) at the setup's temperature, per reported component (``{"xx": ..}``)."""
    from kappaflow.bte import run_phono3py

    bte = setup.bte
    result = run_phono3py(ph3, setup.mesh, [setup.temperature_k], bte["method"], bte["isotopes"],
                          bte["boundary_mfp_um"], bte["sigma_thz"])
    return {c: float(result.kappa_w_per_mk[0, AXIS_INDEX[c], AXIS_INDEX[c]]) for c in SYSTEM.components}


def _manifest(strategy: str, n_total: int, cutoff):
    return {"strategy": strategy, "n_supercells_total": n_total, "fc2_supercell_matrix": None,
            "pair_cutoff_ang": cutoff if strategy == "systematic" else None, "fc3_cutoff_ang": cutoff}


def fd_kappa(setup: Setup, cutoff, force_fn) -> tuple[dict, int, object]:
    """Systematic finite displacements (pair cutoff ``cutoff``, None: all pairs), forces from
    ``force_fn``, kappaflow's reap (undisplaced forces subtracted) and κxx.  Returns κ, the number of
    distinct supercells including the undisplaced one, and the fit report."""
    from kappaflow.reap import DEFAULT_MAX_FC2_FORCE_RESIDUAL, fit_force_constants
    from kappaflow.sow import SowSettings, generate_displacements

    ph3 = generate_displacements(setup.unitcell, SowSettings(setup.supercell, "systematic", setup.amplitude_ang,
                                                             pair_cutoff_ang=cutoff))
    cells = ph3.supercells_with_displacements
    index = [i for i, c in enumerate(cells) if c is not None]
    forces, _ = force_fn([ph3.supercell] + [cells[i] for i in index], setup)
    table = {"base": {0: forces[0]}, "fc3": dict(zip(index, forces[1:]))}
    report = fit_force_constants(ph3, _manifest("systematic", len(cells), cutoff), table,
                                 max_fc2_force_residual=DEFAULT_MAX_FC2_FORCE_RESIDUAL)
    return kappa_components(ph3, setup), unique_runs([ph3.supercell] + [cells[i] for i in index], setup), report


def random_set(setup: Setup, n: int, seed: int, cutoff):
    from kappaflow.sow import SowSettings, generate_displacements

    settings = SowSettings(setup.supercell, "random", setup.amplitude_ang, pair_cutoff_ang=cutoff, n_random=n,
                           random_seed=seed * SEED_STRIDE)
    return settings, generate_displacements(setup.unitcell, settings)


def random_symfc(setup: Setup, n: int, seed: int, cutoff) -> dict:
    """kappaflow's random route: the sow's determinacy check, then reap's symfc fit with its rank check;
    a refusal is a row with status ``refused`` and the message, never a κ."""
    from kappaflow.errors import KappaflowError
    from kappaflow.reap import DEFAULT_MAX_FC2_FORCE_RESIDUAL, fit_force_constants
    from kappaflow.sow import check_random_set_determined

    settings, ph3 = random_set(setup, n, seed, cutoff)
    runs = n + 1  # + the undisplaced supercell (sow.subtract_residual_forces, the default)
    try:
        check_random_set_determined(setup.unitcell, settings)
    except KappaflowError as exc:
        return {"n_pw_runs": runs, "status": "refused", "note": f"sow: {exc}"}
    cells = ph3.supercells_with_displacements
    forces, energies = mock_dft([ph3.supercell] + list(cells), setup)
    table = {"base": {0: forces[0]}, "fc3": dict(enumerate(forces[1:]))}
    try:
        report = fit_force_constants(ph3, _manifest("random", n, cutoff), table,
                                     max_fc2_force_residual=DEFAULT_MAX_FC2_FORCE_RESIDUAL)
    except KappaflowError as exc:
        return {"n_pw_runs": runs, "status": "refused", "note": f"reap: {exc}"}
    return {"n_pw_runs": runs, "kappa_300K": kappa_components(ph3, setup), "status": "ok",
            "note": f"{report.n_parameters_fc2 + report.n_parameters_fc3} parameters, "
                    f"{report.n_force_equations} equations, rank {report.rank}"}


def pypolymlp_point(setup: Setup, n: int, seed: int, params: dict | None) -> dict:
    """phono3py's MLIP route on the n random supercells of (n, seed): develop_mlp on their mock-DFT
    forces and energies, evaluate_mlp on the no-cutoff finite-displacement set, FC3 without cutoff."""
    from kappaflow.errors import KappaflowError
    from kappaflow.reap import DEFAULT_MAX_FC2_FORCE_RESIDUAL, fit_force_constants
    from kappaflow.sow import SowSettings, generate_displacements

    _, train = random_set(setup, n, seed, None)
    cells = list(train.supercells_with_displacements)
    forces, energies = mock_dft(cells, setup)
    ph3 = generate_displacements(setup.unitcell, SowSettings(setup.supercell, "systematic", setup.amplitude_ang))
    ph3.mlp_dataset = {"displacements": np.asarray(train.dataset["displacements"], dtype=np.float64),
                       "forces": np.array(forces, dtype=np.float64),
                       "supercell_energies": np.array(energies, dtype=np.float64)}
    # phono3py splits the set in order (the last test_size of it to choose the ridge penalty on): one
    # supercell for the test, the rest for training; a single supercell cannot be split (phonopy raises)
    test_size = 0.5 / n
    try:
        ph3.develop_mlp(params=params, test_size=test_size)
    except Exception as exc:  # noqa: BLE001 -- a failure of the external MLIP is a result, with its reason
        return {"n_pw_runs": n, "status": "failed", "note": f"develop_mlp: {type(exc).__name__}: {exc}"}
    ph3.evaluate_mlp()
    forces_fd = np.asarray(ph3.forces, dtype=np.float64)
    table = {"fc3": dict(enumerate(forces_fd))}
    try:
        fit_force_constants(ph3, _manifest("systematic", len(forces_fd), None), table,
                            max_fc2_force_residual=DEFAULT_MAX_FC2_FORCE_RESIDUAL)
    except KappaflowError as exc:  # e.g. an MLP of one training supercell that gives zero forces
        return {"n_pw_runs": n, "status": "refused", "note": f"reap on the MLP's forces: {exc}"}
    return {"n_pw_runs": n, "kappa_300K": kappa_components(ph3, setup), "status": "ok",
            "note": f"MLP trained on {n} supercells (test_size {test_size:.2g}); FD without cutoff from the MLP"}


# --- active learning -------------------------------------------------------------------------------
def find_results(path: Path) -> Path:
    """PATH may be a workflow copy (PATH/results/<system>) or its results folder (PATH/al/final)."""
    for cand in (path / "results" / SYSTEM.name, path):
        if (cand / "al/final/rounds.csv").exists():
            return cand
    raise SystemExit(f"--al-results {path}: no results/{SYSTEM.name}/al/final/rounds.csv or al/final/rounds.csv below it "
                     "(is the AL run finished?)")


def run_al(method: str, workdir: Path) -> Path:
    """``snakemake al`` in a scratch copy of the workflow (as tests/conftest.py copy_workflow does)."""
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    for name in WORKFLOW_FILES:
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, workdir / name)
    cmd = ["nice", "-n", "15", "snakemake", "--cores", "2", "--rerun-incomplete", "al", "--configfile", SYSTEM.config,
           *AL_CONFIGS[method]]
    env = dict(os.environ, KAPPAFLOW_MOCK_PW_LOG=str(workdir / "mock.log"))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), env.get("PYTHONPATH")]))
    say(f"AL {method}: {' '.join(cmd)} in {workdir} (about 10-15 min on 2 cores; log: snakemake.log)")
    t0 = time.time()
    with open(workdir / "snakemake.log", "w") as log:
        proc = subprocess.run(cmd, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise SystemExit(f"AL {method}: snakemake failed (rc {proc.returncode}); see {workdir}/snakemake.log")
    say(f"AL {method}: finished in {time.time() - t0:.0f} s")
    return find_results(workdir)


def al_rows(method: str, results: Path) -> list[dict]:
    import pandas as pd

    rounds = pd.read_csv(results / "al/final/rounds.csv")
    summary = json.loads((results / "al/final/summary.json").read_text())
    for path in sorted((results / "al").glob("round*/selected.json")):
        record = json.loads(path.read_text())
        reason = str(record.get("reason", ""))
        if record.get("round", 0) > 0 and record.get("keys") and not reason.startswith(f"{method}:"):
            raise SystemExit(f"{path}: selected by {reason.split(':')[0]!r}, not {method!r}: wrong --al-results?")
    rows = []
    for _, r in rounds.iterrows():
        rows.append({"method": f"qbc-{method}", "seed": 0, "n_pw_runs": int(r["pw_runs_total"]),
                     "kappa_300K": {c: float(r[f"kappa_{c}"]) for c in SYSTEM.components}, "status": "ok",
                     "note": f"round {int(r['round'])}" + (f"; stop: {summary.get('stop_reason', '')}"
                                                           if int(r["round"]) == len(rounds) - 1 else "")})
    return rows


# --- tables and figure -----------------------------------------------------------------------------
def component_rows(rows: list[dict], component: str) -> list[dict]:
    """The rows of one κ component: ``kappa_300K`` becomes that component's number (a row that is not
    ``ok`` has none)."""
    out = []
    for r in rows:
        kappa = r.get("kappa_300K")
        out.append({**r, "component": component,
                    "kappa_300K": kappa.get(component) if isinstance(kappa, dict) else None})
    return out


def finish_rows(rows: list[dict], kappa_cutoff: float, kappa_nocutoff: float):
    """The CSV table of one component (rows from :func:`component_rows`): relative errors against both
    references; a row that is not ``ok`` carries no κ and no error (NaN), whatever it was given."""
    import pandas as pd

    if not (kappa_cutoff > 0 and kappa_nocutoff > 0):
        raise ValueError(f"references must be positive, got {kappa_cutoff!r}, {kappa_nocutoff!r}")
    table = pd.DataFrame([{c: r.get(c) for c in COLUMNS} for r in rows], columns=COLUMNS)
    ok = table["status"] == "ok"
    kappa = pd.to_numeric(table["kappa_300K"], errors="coerce").where(ok)
    if (ok & ~np.isfinite(kappa.astype(float))).any():
        bad = table.loc[ok & ~np.isfinite(kappa.astype(float)), ["method", "seed", "n_pw_runs"]]
        raise ValueError(f"rows with status ok but no finite κ: {bad.to_dict('records')}")
    table["kappa_300K"] = kappa
    table["error_vs_cutoff_ref"] = kappa / kappa_cutoff - 1.0
    table["error_vs_nocutoff_ref"] = kappa / kappa_nocutoff - 1.0
    table["seed"] = table["seed"].astype("Int64")
    table["n_pw_runs"] = table["n_pw_runs"].astype(int)
    return table


def _pct(x) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:+.1f} %"


def summary_markdown(table, references: dict, component: str = "xx", cutoff_label: str = "4.0 Å") -> str:
    """Markdown: the references, then per method and pw.x runs the κ and errors over the seeds (mean, and
    min..max when more than one), and how many seeds were refused or failed."""
    lines = [f"| reference | pw.x runs | κ{component}(300 K) W/mK |", "|---|---|---|"]
    for name, (runs, kappa) in references.items():
        lines.append(f"| {name} | {runs} | {kappa:.2f} |")
    lines += ["", f"| method | pw.x runs | κ{component}(300 K) W/mK | error vs {cutoff_label} FD | error vs no-cutoff FD "
              "| seeds ok / refused / failed |",
              "|---|---|---|---|---|---|"]
    for (method, runs), g in table.groupby(["method", "n_pw_runs"], sort=False):
        if method in references:
            continue
        if (g["status"] == "not run").all():
            lines.append(f"| {method} | | not run: {g['note'].iloc[0]} | | | |")
            continue
        ok = g[g["status"] == "ok"]
        n_ref = int((g["status"] == "refused").sum())
        n_fail = int((~g["status"].isin(["ok", "refused"])).sum())
        counts = f"{len(ok)} / {n_ref} / {n_fail}"
        if ok.empty:
            lines.append(f"| {method} | {runs} | refused | | | {counts} |" if n_ref else
                         f"| {method} | {runs} | failed | | | {counts} |")
            continue

        def spread(col, fmt):
            v = ok[col].astype(float)
            text = fmt(v.mean())
            return text if len(v) == 1 else f"{text} ({fmt(v.min())} .. {fmt(v.max())})"

        lines.append(f"| {method} | {runs} | {spread('kappa_300K', lambda x: f'{x:.1f}')} | "
                     f"{spread('error_vs_cutoff_ref', _pct)} | {spread('error_vs_nocutoff_ref', _pct)} | {counts} |")
    return "\n".join(lines) + "\n"


def goal1_lines(table) -> list[str]:
    """Goal 1: the best (fewest runs) point of each method within 5 % of the no-cutoff FD with ≤ 10 runs
    (every seed of that n within 5 %)."""
    out = []
    for method, g in table.groupby("method", sort=False):
        if method.startswith("fd-") or (g["status"] == "not run").all():
            continue
        hits = []
        for runs, h in g.groupby("n_pw_runs"):
            err = h["error_vs_nocutoff_ref"].astype(float)
            if runs <= GOAL_RUNS and (h["status"] == "ok").all() and (err.abs() <= GOAL_ERROR).all():
                hits.append(runs)
        out.append(f"{method}: " + (f"within {100 * GOAL_ERROR:.0f} % from {min(hits)} pw.x runs (smallest n where "
                                    "every seed is)"
                                    if hits else f"not within {100 * GOAL_ERROR:.0f} % at <= {GOAL_RUNS} runs"))
    return out


def plot(tables: dict, path: Path, cutoff_label: str = "4.0 Å") -> None:
    """One row per κ component (``tables``: component → (table, references)), errors against the
    cutoff FD (left) and the no-cutoff FD (right) vs pw.x runs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, NullLocator

    from kappaflow.plotting import save_figure

    fig, axes = plt.subplots(len(tables), 2, figsize=(12, 4.8 * len(tables)), dpi=120, sharey="row", squeeze=False)
    cols = [("error_vs_cutoff_ref", f"systematic FD, {cutoff_label} cutoff"),
            ("error_vs_nocutoff_ref", "systematic FD, no cutoff")]
    for row_axes, (component, (table, references)) in zip(axes, tables.items()):
        shown = table[table["status"] != "not run"]
        methods = [m for m in dict.fromkeys(shown["method"]) if not m.startswith("fd-")]
        ok_all = shown[shown["status"] == "ok"]
        worst = float(np.nanmax(np.abs(100 * ok_all[[c for c, _ in cols]].to_numpy(dtype=float)))) if len(ok_all) else 0.0
        ymax = min(60.0, max(10.0, 1.15 * worst))
        ticks = []  # the run counts of the points and the references, none closer than 12 % to the last one
        for t in sorted({GOAL_RUNS} | set(int(n) for n in shown["n_pw_runs"] if n > 0)
                        | {runs for runs, _ in references.values()}):
            if not ticks or t / ticks[-1] >= 1.12:
                ticks.append(t)
        for ax, (col, ref) in zip(row_axes, cols):
            ax.axhspan(-100 * GOAL_ERROR, 100 * GOAL_ERROR, color="0.88", zorder=0, label="±5 %")
            ax.axhline(0, color="k", lw=0.8)
            ax.axvline(GOAL_RUNS, color="0.5", ls=":", lw=1, label=f"{GOAL_RUNS} runs (goal 1)")
            for i, method in enumerate(methods):
                g = shown[shown["method"] == method]
                color = f"C{i}"
                ok = g[g["status"] == "ok"]
                err = 100 * ok[col].astype(float)
                ax.plot(ok["n_pw_runs"], err.clip(-ymax, ymax), ".", color=color, alpha=0.45)
                mean = err.groupby(ok["n_pw_runs"]).mean()
                ax.plot(mean.index, mean.clip(-ymax, ymax), "-o", color=color, ms=4, lw=1.2,
                        label=f"{method} (mean over seeds)" if g["seed"].nunique() > 1 else method)
                refused = sorted(g[g["status"] != "ok"]["n_pw_runs"].unique())
                if len(refused):
                    ax.plot(refused, np.full(len(refused), -0.92 * ymax + 0.05 * ymax * i), "x", color=color, ms=7,
                            label=f"{method}: refused")
            for j, name in enumerate(references):
                runs = references[name][0]
                e = 100 * float(table.loc[table["method"] == name, col].iloc[0])
                ax.plot([runs], [e], "ks" if j == 0 else "kD", ms=6, label=f"{name} ({runs} runs)")
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(FixedLocator(ticks))
            ax.xaxis.set_minor_locator(NullLocator())
            ax.set_xticklabels([str(t) for t in ticks], fontsize=7)
            ax.set_xlabel("pw.x runs (force evaluations; the relax is not counted)")
            ax.set_ylim(-ymax, ymax)
            ax.set_title(f"κ{component}: error vs {ref}", fontsize=10)
            ax.grid(alpha=0.3)
        row_axes[0].set_ylabel(rf"$\kappa_{{{component}}}$(300 K) error (%)"
                               + (f", clipped at ±{ymax:.0f} %" if worst > ymax else ""))
        row_axes[1].legend(fontsize=6.5, loc="upper right", ncol=2)
    fig.suptitle(f"{SYSTEM.title}: κ(300 K) error vs pw.x runs", fontsize=11)
    fig.tight_layout()
    save_figure(fig, path)


# --- main ------------------------------------------------------------------------------------------
def parse_al_results(values) -> dict:
    out = {}
    for v in values or []:
        method, sep, path = v.partition("=")
        if not sep or method not in AL_CONFIGS:
            raise SystemExit(f"--al-results {v!r}: give METHOD=PATH with METHOD one of {', '.join(AL_CONFIGS)}")
        out[method] = find_results(Path(path).resolve())
    return out


class PointCache:
    """Computed points in OUT/points.json, keyed by method, seed, n and everything they depend on (the
    unit cell, mesh, BTE settings, amplitude, cutoff): a rerun (e.g. once another AL run has finished)
    computes only what is new."""

    def __init__(self, path: Path, setup: Setup):
        self.path = path
        self.context = json.dumps({"cell": np.round(np.asarray(setup.unitcell.cell), 8).tolist(),
                                   "positions": np.round(setup.unitcell.get_scaled_positions(), 8).tolist(),
                                   "supercell": setup.supercell, "amplitude": setup.amplitude_ang,
                                   "cutoff": setup.cutoff_ang, "mesh": setup.mesh, "T": setup.temperature_k,
                                   "bte": {k: setup.bte[k] for k in ("method", "isotopes", "sigma_thz",
                                                                     "boundary_mfp_um")}}, sort_keys=True)
        self.points = json.loads(path.read_text()) if path.exists() else {}

    def get(self, method: str, seed, n: int, compute, extra: str = "") -> dict:
        key = json.dumps([self.context, method, seed, n, extra])
        if key not in self.points:
            self.points[key] = compute()
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.points, indent=0))
            tmp.replace(self.path)
        point = dict(self.points[key])
        if "kappa_xx_300K" in point:  # a cache written before the per-component points
            point["kappa_300K"] = {"xx": point.pop("kappa_xx_300K")}
        return point


def pypolymlp_available() -> str | None:
    try:
        import pypolymlp  # noqa: F401
    except ImportError as exc:
        return f"pypolymlp is not importable ({exc}); pip install pypolymlp (needs Eigen3 headers and a C++ compiler)"
    return None


def main(argv=None) -> int:
    global SYSTEM
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--system", choices=sorted(SYSTEMS), default="si",
                    help="si: config/mock/si_al.yaml (κxx); ges2: config/mock/ges2_al.yaml (κxx and κzz)")
    ap.add_argument("--quick", action="store_true",
                    help="a coarse mesh, seed 0, n 1 2 4 8 (+32 for ges2): a smoke run, not a result")
    ap.add_argument("--al-results", action="append", metavar="METHOD=PATH",
                    help="a finished AL run to reuse (pulp=PATH, topn=PATH; PATH a workflow copy or its "
                         "results/<system>)")
    ap.add_argument("--run-al", action="store_true", help="run the missing AL methods in OUT/al_<method> first")
    ap.add_argument("--no-pypolymlp", action="store_true")
    ap.add_argument("--pypolymlp-seeds", type=int, default=None,
                    help="the first N seeds only for pypolymlp (GeS2: ~5 min per point on 2 cores)")
    ap.add_argument("--polymlp-params", type=json.loads, default=None,
                    help="JSON dict for develop_mlp (default: phono3py's defaults)")
    args = ap.parse_args(argv)
    SYSTEM = SYSTEMS[args.system]
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    al = parse_al_results(args.al_results)
    if args.run_al:
        for method in AL_CONFIGS:
            if method not in al:
                al[method] = run_al(method, out / f"al_{method}")
    seeds = SEEDS[:1] if args.quick else SEEDS
    n_values = tuple(n for n in SYSTEM.n_random if n in (1, 2, 4, 8, 32)) if args.quick else SYSTEM.n_random
    setup = make_setup(al, args.quick)
    cell = setup.unitcell.cell.lengths()
    cutoff_label = setup.extra["cutoff_label"]
    say(f"{SYSTEM.name}: unit cell {setup.unitcell_source}: |a| |c| {cell[0]:.5f} {cell[2]:.5f} Å; supercell "
        f"{setup.supercell}, amplitude {setup.amplitude_ang} Å, cutoff {cutoff_label}, mesh {setup.mesh}, "
        f"{setup.bte['method']}, components {', '.join(SYSTEM.components)}")
    t0 = time.time()
    points = PointCache(out / "points.json", setup)
    rows, references = [], {}

    def shown(row):
        if row["status"] != "ok":
            return row["status"]
        return ", ".join(f"κ{c} {v:.2f}" for c, v in row["kappa_300K"].items()) + " W/mK"

    for name, cutoff in (("fd-cutoff", setup.cutoff_ang), ("fd-nocutoff", None)):
        def reference(cutoff=cutoff):
            kappa, runs, report = fd_kappa(setup, cutoff, mock_dft)
            return {"n_pw_runs": runs, "kappa_300K": kappa, "status": "ok",
                    "note": f"{report.n_supercells} displaced supercells + the undisplaced one, {runs} distinct"}

        say(f"reference {name}: systematic FD, mock forces, κ on {setup.mesh}")
        row = points.get(name, None, 0, reference)
        references[name] = (row["n_pw_runs"], row["kappa_300K"])
        rows.append({"method": name, "seed": None, **row})
        say(f"  {name}: {shown(row)} from {row['n_pw_runs']} runs ({time.time() - t0:.0f} s)")
    # most wanted first (a run cut short keeps its points in points.json): the cutoff fits, goal 1, the rest
    order = [("random-symfc-cutoff", setup.cutoff_ang), ("committee", None), ("random-symfc-nocutoff", None),
             ("pypolymlp", None)]
    skip = "--no-pypolymlp given" if args.no_pypolymlp else pypolymlp_available()
    for name, cutoff in order:
        if name == "committee":
            for method, results in al.items():
                label = f"qbc-{method}-committee-nocutoff"

                def committee(results=results):
                    force_fn, pw_runs, last = committee_forces(results)
                    kappa, runs, _ = fd_kappa(setup, None, force_fn)
                    return {"n_pw_runs": pw_runs, "kappa_300K": kappa, "status": "ok",
                            "note": f"round {last} committee + baseline on the {runs} no-cutoff FD supercells"}

                say(f"AL {method} ({results}): the final committee on the no-cutoff FD set")
                row = points.get(label, 0, 0, committee, extra=str(results))
                rows.append({"method": label, "seed": 0, **row})
                say(f"  {label}: {shown(row)} ({time.time() - t0:.0f} s)")
            continue
        if name == "pypolymlp" and skip:
            say(f"pypolymlp skipped: {skip}")
            rows.append({"method": "pypolymlp", "seed": None, "n_pw_runs": 0, "status": "not run", "note": skip})
            continue
        for seed in (seeds[:args.pypolymlp_seeds] if name == "pypolymlp" and args.pypolymlp_seeds else seeds):
            for n in (tuple(m for m in SYSTEM.n_pypolymlp if m in n_values) if name == "pypolymlp" else n_values):
                if name == "pypolymlp":
                    row = points.get(name, seed, n, lambda: pypolymlp_point(setup, n, seed, args.polymlp_params),
                                     extra=json.dumps(args.polymlp_params, sort_keys=True))
                else:
                    row = points.get(name, seed, n, lambda: random_symfc(setup, n, seed, cutoff))
                rows.append({"method": name, "seed": seed, **row})
                say(f"  {name} seed {seed} n {n}: {shown(row)} ({time.time() - t0:.0f} s)")
    for method, results in al.items():
        rows += al_rows(method, results)
    rank = {m: i for i, m in enumerate(["fd-cutoff", "fd-nocutoff", "random-symfc-cutoff", "random-symfc-nocutoff",
                                        "pypolymlp", "qbc-pulp", "qbc-topn", "qbc-pulp-committee-nocutoff",
                                        "qbc-topn-committee-nocutoff"])}
    rows.sort(key=lambda r: (rank.get(r["method"], 99), r["n_pw_runs"], -1 if r["seed"] is None else r["seed"]))
    tables = {}
    for c in SYSTEM.components:
        refs = {name: (runs, kappa[c]) for name, (runs, kappa) in references.items()}
        tables[c] = (finish_rows(component_rows(rows, c), refs["fd-cutoff"][1], refs["fd-nocutoff"][1]), refs)
    import pandas as pd

    pd.concat([t for t, _ in tables.values()]).to_csv(out / "dft_bill.csv", index=False, float_format="%.8g")
    text = [f"# κ error vs pw.x runs, {SYSTEM.title} ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})", "",
            f"unit cell: {setup.unitcell_source}; supercell {setup.supercell}; mesh {setup.mesh}; FC3 cutoff "
            f"{cutoff_label}", ""]
    for c, (table, refs) in tables.items():
        diff = refs["fd-cutoff"][1] / refs["fd-nocutoff"][1] - 1
        text += [f"## κ{c}(300 K)", "", f"{cutoff_label} FD reference vs no-cutoff FD: {100 * diff:+.4f} %", "",
                 summary_markdown(table, refs, c, cutoff_label),
                 f"Goal 1, κ{c} (≤ {GOAL_RUNS} pw.x runs, within {100 * GOAL_ERROR:.0f} % of the no-cutoff FD):", ""]
        text += [f"* {line}" for line in goal1_lines(table)] + [""]
    (out / "dft_bill.md").write_text("\n".join(text) + "\n")
    plot(tables, out / "dft_bill.png", cutoff_label)
    print("\n".join(text))
    say(f"done in {time.time() - t0:.0f} s: {out / 'dft_bill.csv'}, {out / 'dft_bill.md'}, {out / 'dft_bill.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
