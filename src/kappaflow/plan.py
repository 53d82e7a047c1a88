"""Plan before you pay: what a setting costs before any pw.x job runs.

For each candidate setting (FC3 supercell, pair cutoff or neighbour shells, strategy systematic or
random) :func:`plan_candidates` reports

* the displaced supercells the sow would write and their unique pw.x inputs (keys computed with the
  sow's own code, so they are exactly the ``dft`` jobs Snakemake schedules), how many of them the
  store already holds, and the atoms per supercell;
* the estimated pw.x cost: from the cost table of finished jobs (``results/<name>/dft/cost.csv``) when
  there is one, else from the scaling model cost ∝ atoms³ × k-points (always also given as a relative
  cost, see :class:`CostModel`);
* the estimated peak memory of ``reap`` and ``bte`` (:func:`reap_memory_mb`, :func:`bte_memory_mb`,
  documented in docs/planning.md and checked against measured peak RSS in tests/test_plan.py);
* the number of free FC3 parameters (the size of symfc's FC3 basis with the translational sum rule, for
  the supercell and the cutoff);
* the largest cutoff the supercell can hold (half its shortest lattice translation).

Nothing here runs pw.x or writes into the DFT store.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from kappaflow.plotting import save_figure
import numpy as np

from kappaflow.errors import ConfigError, InputFileError
from kappaflow.fitsize import free_parameters  # noqa: F401  (re-exported)

MB = 2.0**20
FLOAT64 = 8
COMPLEX128 = 16
#: resident memory of a Python process that has imported numpy, phonopy, phono3py, h5py and kappaflow
#: and loaded the displacement YAML (VmHWM measured 60 MB after the imports, 67-78 MB with phono3py and an
#: 834-supercell phono3py_disp.yaml loaded; rounded up)
BASE_MEMORY_MB = 110.0
#: Snakemake's mem_mb = estimated peak × this margin (the estimate itself is checked against measured RSS)
MEM_SAFETY_FACTOR = 1.5

PLAN_FIELDS = [
    "label", "strategy", "supercell", "cutoff_setting", "pair_cutoff_ang", "max_safe_cutoff_ang",
    "cutoff_exceeds_supercell", "n_atoms_supercell", "n_displaced_fc3", "n_displaced_fc2",
    "n_pw_runs", "n_pw_runs_stored", "n_pw_runs_to_run", "k_points", "cost_basis",
    "wall_time_per_run_s", "wall_time_to_run_s", "node_hours_to_run", "relative_cost",
    "fc3_free_parameters", "fc2_free_parameters", "force_equations", "equations_per_parameter",
    "reap_memory_mb", "bte_memory_mb",
    "fc3_full_mb", "fc3_compact_mb", "seconds_to_plan",
]


# --- candidate settings ------------------------------------------------------------------------
@dataclass
class Candidate:
    supercell: list  # as in the config: 3 integers or a 3x3 matrix
    cutoff: float | None  # > 0: pair cutoff in Å; < 0: -n = n neighbour shells (thirdorder); None: all pairs
    strategy: str = "systematic"
    n_random: int = 20

    @property
    def label(self) -> str:
        sc = supercell_label(self.supercell)
        if self.strategy == "random":
            return f"{sc} random{self.n_random}" + ("" if self.cutoff is None else f" {cutoff_label(self.cutoff)}")
        return f"{sc} {cutoff_label(self.cutoff)}"


def supercell_label(supercell) -> str:
    from kappaflow.sow import supercell_matrix_3x3

    m = supercell_matrix_3x3(supercell)
    if np.count_nonzero(m - np.diag(np.diag(m))) == 0:
        return "x".join(str(int(v)) for v in np.diag(m))
    return "[" + ",".join(" ".join(str(int(v)) for v in row) for row in m) + "]"


def cutoff_label(cutoff) -> str:
    if cutoff is None:
        return "all pairs"
    return f"{int(round(-cutoff))} shells" if cutoff < 0 else f"{float(cutoff):g} Å"


def split_cutoff(cutoff) -> tuple[float | None, int | None]:
    """A cutoff setting → (pair_cutoff_ang, neighbour_shells): thirdorder's negative numbers are shells."""
    if cutoff is None:
        return None, None
    value = float(cutoff)
    if value < 0:
        if value != round(value):
            raise ConfigError(f"cutoff {cutoff}: a negative cutoff is a number of neighbour shells (-2, -3), "
                              "it must be an integer")
        return None, int(round(-value))
    if value == 0:
        raise ConfigError("cutoff 0: give a pair cutoff in Å (> 0) or neighbour shells as -n")
    return value, None


def config_cutoff(sow_cfg: dict) -> float | None:
    """The config's own cutoff in the plan's notation (shells as negative numbers)."""
    if sow_cfg.get("neighbour_shells") is not None:
        return -float(sow_cfg["neighbour_shells"])
    return sow_cfg.get("pair_cutoff_ang")


def candidates_from_config(cfg: dict, supercells=None, cutoffs=None, strategies=None,
                           n_random=None) -> list[Candidate]:
    """Candidates: the product of supercells × cutoffs (systematic) plus one random set per supercell
    (at the sow's own FC3 cutoff, as the random strategy fits it).

    Lists not given come from the ``plan:`` section, then from the ``sow:`` section."""
    plan_cfg = cfg.get("plan") or {}
    sow_cfg = cfg["sow"]
    supercells = supercells or plan_cfg.get("supercells") or [sow_cfg["supercell"]]
    cutoffs = cutoffs if cutoffs else (plan_cfg.get("cutoffs_ang") or [config_cutoff(sow_cfg)])
    strategies = strategies or plan_cfg.get("strategies") or [sow_cfg["strategy"]]
    n_random = n_random or plan_cfg.get("n_random") or sow_cfg["n_random"]
    bad = sorted(set(strategies) - {"systematic", "random"})
    if bad:
        raise ConfigError(f"plan: strategies must be systematic or random, got {bad}")
    out = []
    for sc in supercells:
        if "systematic" in strategies:
            out += [Candidate(sc, None if c is None else float(c), "systematic") for c in cutoffs]
        if "random" in strategies:
            random_cutoff = config_cutoff(sow_cfg)
            out.append(Candidate(sc, None if random_cutoff is None else float(random_cutoff), "random",
                                 int(n_random)))
    return out


# --- geometry --------------------------------------------------------------------------------------
def shortest_image_distance_ang(unitcell, supercell) -> float:
    """Length of the shortest non-zero lattice translation of the supercell (Å): an atom's distance to
    its own nearest periodic image."""
    from phonopy.structure.cells import get_reduced_bases

    from kappaflow.sow import supercell_matrix_3x3

    lattice = supercell_matrix_3x3(supercell) @ np.asarray(unitcell.cell, dtype=np.float64)
    reduced = get_reduced_bases(lattice)  # Delaunay-reduced: the shortest vector is a small combination
    combos = np.array([[i, j, k] for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)
                       if (i, j, k) != (0, 0, 0)], dtype=np.float64)
    return float(np.sqrt(((combos @ reduced) ** 2).sum(1)).min())


def max_safe_cutoff_ang(unitcell, supercell) -> float:
    """The largest FC3 cutoff the supercell can hold: half the shortest image distance.  Beyond it a
    pair's partner and the partner's periodic image are about equally far, and the supercell
    approximation, not the cutoff, limits the force constants."""
    return 0.5 * shortest_image_distance_ang(unitcell, supercell)


# --- k-points and the cost model -------------------------------------------------------------------
def k_points_of_template(template_path, unitcell) -> int:
    """Number of k-points of the supercell template's K_POINTS card (mesh product for ``automatic``,
    1 for ``gamma``, the listed count otherwise); pw.x's symmetry reduction is not modelled."""
    from kappaflow.qe.pwin import fill_template, parse_pw_input

    text = Path(template_path).read_text()
    card = parse_pw_input(fill_template(text, unitcell, str(template_path)), str(template_path)).k_points
    lines = card.split("\n")
    option = lines[0].split()[1].strip("{}()").lower() if len(lines[0].split()) > 1 else "tpiba"
    if option == "gamma":
        return 1
    try:
        if option == "automatic":
            return int(np.prod([int(v) for v in lines[1].split()[:3]]))
        return int(lines[1].split()[0])
    except (IndexError, ValueError):
        raise InputFileError(template_path, f"K_POINTS {option}: expected a k-point mesh or count, "
                             f"got {card!r}") from None


@dataclass
class CostModel:
    """pw.x wall time per run.

    With a cost table (rows of finished runs: n_atoms, wall_time_s), a supercell size present in it
    takes the median measured WALL time of that size ("measured"); another size is scaled from the
    nearest measured size with atoms³ ("scaled N^3 from N=<n>").  Without a table, an optional reference
    (``plan.cost_reference``: n_atoms, k_points, wall_time_s) anchors atoms³ × k-points ("model"); with
    neither, only the relative cost is known ("relative only").  The k-points of measured runs are
    taken to be those of the current template."""

    measured: dict = field(default_factory=dict)  # n_atoms -> median wall time (s) per run
    reference: dict | None = None
    source: str = ""

    @classmethod
    def from_cost_table(cls, path, reference: dict | None = None) -> "CostModel":
        path = Path(path)
        if not path.exists():
            return cls(reference=reference, source="no cost table")
        from kappaflow.tables import read_table

        table = read_table(path, required=("n_atoms", "wall_time_s"), numeric=("n_atoms", "wall_time_s"),
                           what="cost table (rule cost's)")
        by_size: dict[int, list[float]] = {}
        for n_atoms, wall in zip(table["n_atoms"], table["wall_time_s"]):
            by_size.setdefault(int(n_atoms), []).append(float(wall))
        measured = {n: float(np.median(t)) for n, t in by_size.items() if t}
        return cls(measured=measured, reference=reference,
                   source=f"{path} ({sum(len(t) for t in by_size.values())} runs)")

    def wall_time_s(self, n_atoms: int, k_points: int) -> tuple[float, str]:
        if self.measured:
            if n_atoms in self.measured:
                return self.measured[n_atoms], "measured"
            ref = min(self.measured, key=lambda n: (abs(math.log(n / n_atoms)), n))
            return self.measured[ref] * (n_atoms / ref) ** 3, f"scaled N^3 from N={ref}"
        if self.reference:
            r = self.reference
            return (r["wall_time_s"] * (n_atoms / r["n_atoms"]) ** 3 * (k_points / r["k_points"]),
                    "model N^3 x k")
        return float("nan"), "relative only"


# --- memory ----------------------------------------------------------------------------------------
def fc3_full_bytes(n_super: int) -> int:
    return n_super**3 * 27 * FLOAT64


def fc3_compact_bytes(n_prim: int, n_super: int) -> int:
    return n_prim * n_super**2 * 27 * FLOAT64


def reap_memory_mb(n_super: int, n_displacement_cells: int, fc2_n_super: int | None = None,
                   symfc_basis_bytes: float = 0.0) -> float:
    """Estimated peak RSS (MB) of rule reap: the base process, the full fc3 array (phono3py's
    finite-difference solver and symmetrisation work in place; measured RSS rise 1.0-1.05 × the fc3
    array), twice the force array (the dataset and the residual-subtracted copy), fc2, and for symfc the
    compressed basis and its product with the displacements."""
    n2 = fc2_n_super or n_super
    forces = 2 * n_displacement_cells * n_super * 3 * FLOAT64
    fc2 = 2 * n2**2 * 9 * FLOAT64
    return BASE_MEMORY_MB + (fc3_full_bytes(n_super) + forces + fc2 + symfc_basis_bytes) / MB


def bte_memory_mb(n_prim: int, n_super: int, mesh, method: str = "rta", n_temperatures: int = 1,
                  n_irreducible_q: int | None = None, fc2_n_super: int | None = None) -> float:
    """Estimated peak RSS (MB) of rule bte (phono3py):

    * the base process and the full fc3 (N³·27 float64) and fc2 arrays read from hdf5;
    * phonons on the whole mesh: eigenvectors n_q·n_b² complex128 plus frequencies (n_b = 3·n_prim);
    * at one grid point, the interaction strength (n_triplets, n_b, n_b, n_b) float64 and the two
      integration-weight arrays of the same shape, with n_triplets ≤ n_q/2 + 1 (the q1 ↔ q2 pairs of a
      general grid point: an upper bound);
    * LBTE: the collision matrix (n_T, n_irq·n_b·3)² float64 and one work copy for its diagonalisation.
    """
    n_q = int(np.prod(mesh))
    nb = 3 * n_prim
    n2 = fc2_n_super or n_super
    phonons = n_q * nb * nb * COMPLEX128 + 4 * n_q * nb * FLOAT64
    triplets = n_q // 2 + 1
    interaction = 3 * triplets * nb**3 * FLOAT64
    total = fc3_full_bytes(n_super) + n2**2 * 9 * FLOAT64 + phonons + interaction
    if method == "lbte":
        n_ir = n_irreducible_q or n_q
        total += 2 * n_temperatures * (n_ir * nb * 3) ** 2 * FLOAT64
    return BASE_MEMORY_MB + total / MB


def n_irreducible_q(unitcell, mesh, symprec: float = 1e-5) -> int:
    import spglib

    cell = (np.asarray(unitcell.cell), unitcell.get_scaled_positions(), unitcell.numbers)
    mapping, _ = spglib.get_ir_reciprocal_mesh(list(mesh), cell, is_shift=[0, 0, 0], symprec=symprec)
    return int(len(np.unique(mapping)))


def _systematic_cells_upper_bound(n_prim: int, n_super: int) -> int:
    """Pair-displacement supercells without symmetry: 6 first displacements (±x, ±y, ±z) per
    inequivalent atom, 6 second ones per supercell atom: an upper bound used where generating the
    dataset would be too slow (Snakemake's parse time)."""
    return 6 * n_prim * (1 + 6 * n_super)


def mem_mb_estimate(config: dict, stage: str, supercell=None, mesh=None) -> int:
    """``mem_mb`` for Snakemake's ``resources:`` of rules reap and bte (and sweep_kappa, which does both
    in one process), from the resolved config: estimated peak × MEM_SAFETY_FACTOR, rounded up to
    100 MB.  Cheap (reads the unit-cell input only): safe to call while Snakemake parses the rules."""
    from kappaflow.qe.pwin import read_pw_input
    from kappaflow.sow import supercell_matrix_3x3

    if stage not in ("reap", "bte", "sweep_kappa"):
        raise ConfigError(f"mem_mb_estimate: stage must be reap, bte or sweep_kappa, got {stage!r}")
    unit = read_pw_input(config["unitcell"]).atoms
    n_prim = len(unit)
    sow_cfg = config["sow"]
    n_super = n_prim * round(abs(np.linalg.det(supercell_matrix_3x3(supercell or sow_cfg["supercell"]))))
    fc2_sc = sow_cfg.get("fc2_supercell")
    n2 = None if fc2_sc is None else n_prim * round(abs(np.linalg.det(supercell_matrix_3x3(fc2_sc))))
    bte_cfg = config["bte"]
    mesh = mesh or bte_cfg["mesh"]
    n_cells = (sow_cfg["n_random"] if sow_cfg["strategy"] == "random"
               else _systematic_cells_upper_bound(n_prim, n_super))
    reap_mb = reap_memory_mb(n_super, n_cells, n2)
    n_t = 1
    n_ir = None
    if bte_cfg["method"] == "lbte":
        from kappaflow.bte import temperatures_from_config

        n_t = len(temperatures_from_config(bte_cfg["temperatures"]))
        n_ir = n_irreducible_q(unit, mesh)
    bte_mb = bte_memory_mb(n_prim, n_super, mesh, bte_cfg["method"], n_t, n_ir, n2)
    if stage == "reap":
        peak = reap_mb
    elif stage == "bte":
        peak = bte_mb
    else:
        peak = reap_mb + bte_mb - BASE_MEMORY_MB - fc3_full_bytes(n_super) / MB
    return int(math.ceil(peak * MEM_SAFETY_FACTOR / 100.0) * 100)


# --- free parameters ------------------------------------------------------------------------------
# --- the plan --------------------------------------------------------------------------------------
def plan_structure(cfg: dict):
    """The structure the sow would use: results/<name>/structure/unitcell.json when it exists (relaxed),
    else the unit-cell input as given (the counts hold; keys of a relaxed structure differ)."""
    from kappaflow.qe.pwin import read_pw_input
    from kappaflow.structure import read_structure

    path = Path(cfg["results_dir"]) / cfg["name"] / "structure" / "unitcell.json"
    if path.exists():
        return read_structure(path), str(path)
    source = f"{cfg['unitcell']} (unrelaxed input" + (
        "; relax is enabled: store keys will differ, counts will not)" if cfg["relax"]["enabled"] else ")")
    return read_pw_input(cfg["unitcell"]).atoms, source


UNKEYED = "text:"  # prefix of the stand-in keys of sow_keys without an engine (distinct per input text)


def sow_keys(unitcell, settings, template_path, engine, pw_overrides: dict, ph3=None):
    """The manifest jobs (role, key) the sow would write, computed with the sow's own functions
    (:func:`kappaflow.sow.engine_key`) but writing nothing.  ``engine`` None (no pw.x or no
    pseudopotential files where the plan runs): ``text:<sha256 of the input>`` in place of the key,
    one per distinct input like the keys, never found in a store."""
    import hashlib

    from kappaflow import sow
    from kappaflow.structure import from_phonopy, labels_of

    template_text = Path(template_path).read_text()
    ph3 = ph3 or sow.generate_displacements(unitcell, settings)
    labels = labels_of(unitcell)
    jobs = []

    def add(role, cell, s2u):
        atoms = from_phonopy(cell, [labels[u] for u in s2u])
        text = sow.supercell_input_text(template_text, str(template_path), atoms, pw_overrides)
        key = (sow.engine_key(engine, text, str(template_path)) if engine is not None
               else UNKEYED + hashlib.sha256(text.encode()).hexdigest()[:20])
        jobs.append((role, key))

    s2u = [ph3.supercell.u2u_map[s] for s in ph3.supercell.s2u_map]
    if settings.subtract_residual_forces:
        add("base", ph3.supercell, s2u)
    for cell in ph3.supercells_with_displacements:
        if cell is not None:
            add("fc3", cell, s2u)
    if settings.fc2_supercell_matrix is not None:
        s2u2 = [ph3.phonon_supercell.u2u_map[s] for s in ph3.phonon_supercell.s2u_map]
        if settings.subtract_residual_forces:
            add("fc2_base", ph3.phonon_supercell, s2u2)
        for cell in ph3.phonon_supercells_with_displacements:
            add("fc2", cell, s2u2)
    return jobs, ph3


def plan_engine(cfg: dict, unitcell):
    """(engine, note): the engine the sow would key the store with, or None and why not (no pw.x, no
    pseudopotential files where the plan runs: then nothing counts as stored)."""
    from kappaflow.engine import engine_for, identity
    from kappaflow.errors import KappaflowError
    from kappaflow.steps import pw_overrides_for_supercells

    try:
        engine = engine_for(cfg["dft"])
        # the pseudopotentials the inputs name (the template with the config's overrides)
        from kappaflow import sow

        text = sow.supercell_input_text(Path(cfg["supercell_template"]).read_text(), cfg["supercell_template"],
                                        unitcell, pw_overrides_for_supercells(cfg["dft"]))
        identity(engine, text, cfg["supercell_template"])
    except KappaflowError as exc:
        return None, f"store not checked ({exc}): no run counts as stored"
    return engine, f"store keys: {engine.tag} {engine.version}" + (
        ", pseudopotential sha256" if engine.reads_pseudopotentials else "")


def plan_one(cfg: dict, cand: Candidate, unitcell, cost: CostModel, k_points: int,
             store_dir=None, basis_mode: str = "exact", engine=None) -> dict:
    from kappaflow import sow
    from kappaflow.bte import temperatures_from_config
    from kappaflow.fitsize import independent_force_equations
    from kappaflow.steps import pw_overrides_for_supercells, sow_settings

    t0 = time.perf_counter()
    sow_cfg = dict(cfg["sow"], supercell=cand.supercell, strategy=cand.strategy, n_random=cand.n_random)
    pair, shells = split_cutoff(cand.cutoff)
    sow_cfg.update(pair_cutoff_ang=pair, neighbour_shells=shells)
    settings = sow_settings(sow_cfg)
    cutoff_ang = sow.fc3_cutoff_ang(unitcell, settings)  # random: symfc's FC3 cutoff, as the reap fits it
    jobs, ph3 = sow_keys(unitcell, settings, cfg["supercell_template"], engine,
                         pw_overrides_for_supercells(cfg["dft"]))
    keys = {k for _, k in jobs}
    stored = sum(1 for k in keys if store_dir and engine is not None and (Path(store_dir) / k / "pw.out").exists())
    n_super = len(ph3.supercell)
    n_prim = len(unitcell)
    n2 = len(ph3.phonon_supercell) if settings.fc2_supercell_matrix is not None else None
    safe = max_safe_cutoff_ang(unitcell, cand.supercell)
    basis = free_parameters(unitcell, cand.supercell, cutoff_ang, basis_mode, settings.symprec)
    per_run, basis_kind = cost.wall_time_s(n_super, k_points)
    to_run = len(keys) - stored
    bte_cfg = cfg["bte"]
    n_t = len(temperatures_from_config(bte_cfg["temperatures"]))
    n_ir = n_irreducible_q(unitcell, bte_cfg["mesh"]) if bte_cfg["method"] == "lbte" else None
    symfc_bytes = 0.0
    if cand.strategy == "random":
        symfc_bytes = basis["fc3_basis_bytes"] + cand.n_random * n_super * 3 * basis["fc3"] * FLOAT64
    n_cells = len(ph3.supercells_with_displacements)
    n_fc3 = sum(1 for r, _ in jobs if r == "fc3")
    equations = independent_force_equations(n_fc3, n_super)
    return {
        "label": cand.label, "strategy": cand.strategy, "supercell": supercell_label(cand.supercell),
        "cutoff_setting": cutoff_label(cand.cutoff),
        "pair_cutoff_ang": cutoff_ang, "max_safe_cutoff_ang": safe,
        "cutoff_exceeds_supercell": bool(cutoff_ang is not None and cutoff_ang > safe),
        "n_atoms_supercell": n_super,
        "n_displaced_fc3": sum(1 for r, _ in jobs if r == "fc3"),
        "n_displaced_fc2": sum(1 for r, _ in jobs if r == "fc2"),
        "n_pw_runs": len(keys), "n_pw_runs_stored": stored, "n_pw_runs_to_run": to_run,
        "k_points": k_points, "cost_basis": basis_kind, "wall_time_per_run_s": per_run,
        "wall_time_to_run_s": per_run * to_run,
        "node_hours_to_run": per_run * to_run / 3600.0 * float(cfg["dft"]["nodes_per_job"]),
        "relative_cost": len(keys) * float(n_super) ** 3 * k_points,
        "fc3_free_parameters": basis["fc3"], "fc2_free_parameters": basis["fc2"],
        "force_equations": equations,
        "equations_per_parameter": equations / max(basis["fc3"] + basis["fc2"], 1),
        "reap_memory_mb": reap_memory_mb(n_super, n_cells, n2, symfc_bytes),
        "bte_memory_mb": bte_memory_mb(n_prim, n_super, bte_cfg["mesh"], bte_cfg["method"], n_t, n_ir, n2),
        "fc3_full_mb": fc3_full_bytes(n_super) / MB, "fc3_compact_mb": fc3_compact_bytes(n_prim, n_super) / MB,
        "seconds_to_plan": time.perf_counter() - t0,
    }


def plan_candidates(cfg: dict, candidates: list[Candidate], progress=None) -> dict:
    """Rows (one per candidate, PLAN_FIELDS) and notes on the sources of the numbers."""
    results = Path(cfg["results_dir"]) / cfg["name"]
    unitcell, structure_source = plan_structure(cfg)
    plan_cfg = cfg.get("plan") or {}
    cost = CostModel.from_cost_table(results / "dft" / "cost.csv", plan_cfg.get("cost_reference"))
    k_points = k_points_of_template(cfg["supercell_template"], unitcell)
    engine, store_note = plan_engine(cfg, unitcell)
    rows = []
    for n, cand in enumerate(candidates, start=1):
        if progress:
            progress(f"plan: {n}/{len(candidates)} {cand.label}")
        rows.append(plan_one(cfg, cand, unitcell, cost, k_points, results / "dft",
                             plan_cfg.get("fc3_basis", "exact"), engine=engine))
    first = rows[0]["relative_cost"] if rows else 1.0
    for r in rows:
        r["relative_cost"] = r["relative_cost"] / first
    return {"rows": rows, "structure": structure_source, "cost_source": cost.source, "store": store_note,
            "cost_model": ("measured pw.x WALL times from the cost table (other sizes scaled with atoms^3)"
                           if cost.measured else
                           "scaling model: cost per run ∝ atoms^3 × k-points"
                           + (" anchored at plan.cost_reference" if cost.reference else
                              " (no cost table, no plan.cost_reference: relative cost only)"))}


# --- output ---------------------------------------------------------------------------------------
def write_plan_csv(path, rows: list[dict]) -> None:
    from kappaflow.tables import write_table

    write_table(path, rows, PLAN_FIELDS)


def read_plan_csv(path) -> list[dict]:
    """plan.csv as rows (dicts; numbers as numbers); ``kappaflow.results.load`` gives it as a DataFrame."""
    from kappaflow.tables import read_table

    return read_table(path, required=("label", "n_pw_runs"), what="plan table").to_dict("records")


def _fmt(value, digits=3) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.{digits}g}"
    return str(value)


def format_table(plan: dict) -> str:
    cols = [("setting", "label"), ("atoms", "n_atoms_supercell"), ("cutoff Å", "pair_cutoff_ang"),
            ("safe≤Å", "max_safe_cutoff_ang"), ("pw.x runs", "n_pw_runs"), ("to run", "n_pw_runs_to_run"),
            ("s/run", "wall_time_per_run_s"), ("node-h", "node_hours_to_run"), ("rel.cost", "relative_cost"),
            ("FC3 params", "fc3_free_parameters"),
            ("eqs/param", "equations_per_parameter"), ("reap MB", "reap_memory_mb"), ("bte MB", "bte_memory_mb")]
    table = [[h for h, _ in cols]]
    for r in plan["rows"]:
        cells = []
        for _, k in cols:
            v = r[k]
            if k == "pair_cutoff_ang" and v is None:
                v = "all"
            elif k == "pair_cutoff_ang" and r["cutoff_exceeds_supercell"]:
                v = f"{v:.3g}!"
            elif k in ("reap_memory_mb", "bte_memory_mb"):
                v = f"{v:.0f}"
            cells.append(_fmt(v))
        table.append(cells)
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in table]
    lines.insert(1, "-" * len(lines[0]))
    notes = [f"structure: {plan['structure']}", f"cost: {plan['cost_model']}; source: {plan['cost_source']}",
             f"stored runs: {plan.get('store', 'store keys unknown')}",
             "memory: estimated peak RSS (docs/planning.md); '!' = cutoff beyond half the shortest image "
             "distance of the supercell",
             "FC3 params: symfc basis size (translational sum rule) at the FC3 cutoff (random: the sow's own "
             "cutoff, all triplets without one); eqs/param: independent force equations (3N - 3 per displaced "
             "supercell) per free FC2+FC3 parameter (a random set needs at least 1, better well above)"]
    for r in plan["rows"]:
        if r["strategy"] == "random" and r["equations_per_parameter"] < 1:
            notes.append(f"WARNING {r['label']}: {r['force_equations']} force equations for "
                         f"{r['fc3_free_parameters'] + r['fc2_free_parameters']} parameters: underdetermined, "
                         "the sow will refuse it: raise n_random or set a cutoff")
        if r["cutoff_exceeds_supercell"]:
            notes.append(f"WARNING {r['label']}: cutoff {r['pair_cutoff_ang']:.3f} Å exceeds half the shortest "
                         f"image distance ({r['max_safe_cutoff_ang']:.3f} Å) of the supercell")
    return "\n".join(lines + [""] + notes)


def plot_plan(plan: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = plan["rows"]
    x = np.arange(len(rows))
    labels = [r["label"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(max(10, 1.2 * len(rows) + 6), 4.4), dpi=120)
    ax = axes[0]
    ax.bar(x - 0.2, [r["n_pw_runs"] for r in rows], 0.4, label="pw.x runs (unique)")
    ax.bar(x + 0.2, [r["fc3_free_parameters"] for r in rows], 0.4, label="free FC3 parameters")
    ax.set_yscale("log")
    ax.set_title("supercells and parameters")
    ax.legend(fontsize=7)
    ax = axes[1]
    absolute = all(not math.isnan(r["wall_time_per_run_s"]) for r in rows)
    if absolute:
        ax.bar(x, [r["wall_time_per_run_s"] * r["n_pw_runs"] / 3600.0 * 1.0 for r in rows], 0.6,
               color="C2")
        ax.set_ylabel("pw.x wall hours (all runs, 1 job at a time)")
    else:
        ax.bar(x, [r["relative_cost"] for r in rows], 0.6, color="C2")
        ax.set_ylabel("relative cost (runs × atoms³ × k-points)")
    ax.set_yscale("log")
    ax.set_title("estimated pw.x cost" + ("" if absolute else " (scaling model)"))
    ax = axes[2]
    ax.bar(x - 0.2, [r["reap_memory_mb"] for r in rows], 0.4, label="reap", color="C3")
    ax.bar(x + 0.2, [r["bte_memory_mb"] for r in rows], 0.4, label="bte", color="C4")
    ax.set_ylabel("estimated peak memory (MB)")
    ax.set_yscale("log")
    ax.set_title("memory")
    ax.legend(fontsize=7)
    for ax in axes:
        ax.set_xticks(x)
        ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=7)
        ax.grid(alpha=0.3, axis="y", which="both")
    fig.tight_layout()
    save_figure(fig, path)


def parse_supercell_arg(text: str) -> list:
    """'3x3x1', '3,3,1', '3 3 1' or 9 integers → a supercell setting."""
    values = [int(v) for v in re.split(r"[x,\s]+", text.strip()) if v]
    if len(values) == 3:
        return values
    if len(values) == 9:
        return [values[0:3], values[3:6], values[6:9]]
    raise ConfigError(f"supercell {text!r}: expected 3 integers (3x3x1) or 9 (a matrix)")


def run_plan(cfg: dict, csv_path, png_path, candidates: list[Candidate] | None = None, progress=None) -> dict:
    """The plan of the config's candidates (or the given ones): table printed, CSV and PNG written."""
    from kappaflow.steps import atomic_path

    t0 = time.perf_counter()
    plan = plan_candidates(cfg, candidates or candidates_from_config(cfg), progress=progress)
    for path in (csv_path, png_path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_plan_csv(csv_path, plan["rows"])
    with atomic_path(png_path) as tmp:
        plot_plan(plan, tmp)
    plan["seconds"] = time.perf_counter() - t0
    from kappaflow.steps import LOG_FILES

    text = (format_table(plan) + f"\nplan: {len(plan['rows'])} settings in {plan['seconds']:.1f} s -> "
            f"{csv_path}, {png_path}")
    print(text, flush=True)
    for path in LOG_FILES:
        with open(path, "a") as fh:
            fh.write(text + "\n")
    return plan
