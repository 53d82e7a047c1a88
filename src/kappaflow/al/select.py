"""Batch selection of the Query-by-Committee loop: which open pool candidates go to pw.x this round.

A candidate table (:class:`pandas.DataFrame`) has one row per pool member:

``key``
    the store key (str, unique);
``family``
    the pool family it came from (str: ``"sow:fc3"``, ``"random:0.03"``, ``"md:300"`` ...);
``score``
    the committee uncertainty (float >= 0, e.g. the largest per-atom force spread in eV/Å);
``cost_node_hours``
    the expected pw.x cost (float > 0);
``done``
    already computed or failed (bool): never selected again.

Three rules (docs/ml.md, "Batch selection"):

* :func:`seed_batch` -- round 0: ``ceil(fraction × pool)`` (at least ``min_count``) candidates drawn
  at random with ``numpy.random.default_rng(seed)`` from the pool in key order, the most expensive draws
  dropped until the budget holds;
* :func:`select_batch` with ``method="pulp"`` -- a binary integer program solved by CBC through PuLP:
  maximise the summed score of the batch under the budget, the batch size and at most
  ``max_per_family`` candidates per family;
* :func:`select_batch` with ``method="topn"`` -- the seed thesis' rule: the ``batch_size`` highest
  scores, then drop from the bottom until the budget holds.

Every result is a copy of the chosen rows with a column ``reason`` (``seed``, ``pulp``, ``topn``),
sorted by score (descending), ties by key.
"""

from __future__ import annotations

import math
import numbers
import warnings

import numpy as np
import pandas as pd
import pulp

from kappaflow.errors import KappaflowError

#: the methods of :func:`select_batch`
METHODS = ("pulp", "topn")
#: the columns a candidate table must have
COLUMNS = ("key", "family", "score", "cost_node_hours", "done")
#: CBC's primal-feasibility and integrality tolerances (its defaults are 1e-7); the constraints are
#: scaled to order one (cost / budget, score / largest score), so these are relative tolerances
SOLVER_TOLERANCE = 1e-9
#: a pulp batch may exceed the budget by this fraction at most (the solver's tolerance, summed over
#: the batch); more is a solver defect and raises
BUDGET_RTOL = 1e-8
#: the tie-break stage keeps the summed score within this fraction of the optimum
SCORE_RTOL = 1e-9


class SelectionError(KappaflowError):
    """A batch cannot be selected: bad candidate table, empty pool, budget too small, solver failure."""


def budget_left(total_budget_node_hours: float, spent_node_hours: float) -> float:
    """The DFT budget still to spend, in node-hours (0 once the spending reached or passed the total)."""
    total = _finite("total budget (node-hours)", total_budget_node_hours)
    spent = _finite("spent (node-hours)", spent_node_hours)
    if total < 0 or spent < 0:
        raise SelectionError(f"budget_left: total budget {_nh(total)} and spent {_nh(spent)} node-hours "
                             "must be >= 0")
    return max(total - spent, 0.0)


def seed_batch(candidates: pd.DataFrame, fraction: float, min_count: int, budget_node_hours: float,
               seed: int) -> pd.DataFrame:
    """Round 0: a reproducible random seed of the open pool within the budget.

    ``n = max(ceil(fraction × n_open), min_count)`` (at most ``n_open``; the product is rounded to 9
    decimals first, so 0.07 × 100 gives 7, not 8) candidates are drawn without replacement with
    ``numpy.random.default_rng(seed)`` from the open candidates sorted by key, so the draw does not
    depend on the row order of the table. While the drawn cost exceeds ``budget_node_hours`` the most
    expensive draw (ties: the larger key) is dropped.
    """
    table = _validated(candidates)
    fraction = _finite("fraction", fraction)
    if not 0.0 < fraction <= 1.0:
        raise SelectionError(f"seed batch: fraction {fraction!r} must be in (0, 1]")
    min_count = _positive_int("min_count", min_count)
    seed = _seed(seed)
    budget = _finite("budget (node-hours)", budget_node_hours)
    pool = _open_pool(table, "seed batch")
    _check_budget(pool, budget, f"seed batch: the budget {_nh(budget)} node-hours")

    n_pool = len(pool)
    n_draw = min(n_pool, max(min_count, math.ceil(round(fraction * n_pool, 9))))
    rng = np.random.default_rng(seed)
    drawn = pool.iloc[rng.choice(n_pool, size=n_draw, replace=False)]
    kept = drawn.sort_values(["cost_node_hours", "key"], ascending=[True, True], kind="mergesort")
    while len(kept) and math.fsum(kept["cost_node_hours"]) > budget:
        kept = kept.iloc[:-1]
    if not len(kept):
        cheapest = drawn.sort_values(["cost_node_hours", "key"], kind="mergesort").iloc[0]
        raise SelectionError(
            f"seed batch: the budget {_nh(budget)} node-hours fits none of the {n_draw} randomly drawn "
            f"candidates (cheapest drawn: {cheapest['key']!r} at {_nh(cheapest['cost_node_hours'])} "
            f"node-hours, seed {seed}); raise the budget or draw with another seed")
    return _result(kept, "seed")


def select_batch(candidates: pd.DataFrame, method: str, batch_size: int, round_budget_node_hours: float,
                 remaining_budget_node_hours: float, max_per_family: int | None = None,
                 seed: int = 0) -> pd.DataFrame:
    """The next batch of open candidates under ``min(round budget, remaining budget)``.

    ``method="pulp"``: the binary integer program

        maximise Σ score_i x_i  subject to  Σ cost_i x_i <= budget,  Σ x_i <= batch_size,
        Σ_{i in family f} x_i <= max_per_family for every family f (when given),  x_i in {0, 1},

    solved by CBC (single thread, random seed ``seed + 1``: CBC reads 0 as "seed from the clock"),
    status checked. Ties are settled by a second program: among the batches whose summed score is within
    ``SCORE_RTOL`` of the optimum, the one of largest Σ (n − rank_i) x_i, rank in (score descending,
    key) order: equal scores go to the smaller key, and a batch is filled up to ``batch_size`` with
    zero-score candidates when the budget allows.

    ``method="topn"``: the ``batch_size`` highest scores (ties by key), then drop from the bottom until
    the cost fits the budget. It has no family constraint (``max_per_family`` is not used) and cannot
    skip an expensive candidate: if the top one alone exceeds the budget, SelectionError.
    """
    table = _validated(candidates)
    if method not in METHODS:
        raise SelectionError(f"batch selection: unknown method {method!r}; the methods are "
                             + ", ".join(repr(m) for m in METHODS))
    batch_size = _positive_int("batch_size", batch_size)
    if max_per_family is not None:
        max_per_family = _positive_int("max_per_family", max_per_family)
    seed = _seed(seed)
    round_budget = _finite("round budget (node-hours)", round_budget_node_hours)
    remaining = _finite("remaining budget (node-hours)", remaining_budget_node_hours)
    pool = _open_pool(table, f"batch selection ({method})")
    budget = min(round_budget, remaining)
    _check_budget(pool, budget, f"batch selection ({method}): the budget {_nh(budget)} node-hours "
                                f"(min of round budget {_nh(round_budget)} and remaining {_nh(remaining)})")
    if method == "topn":
        return _topn(pool, batch_size, budget)
    return _pulp(pool, batch_size, budget, max_per_family, seed)


# --- the two rules -------------------------------------------------------------------------------
def _topn(pool: pd.DataFrame, batch_size: int, budget: float) -> pd.DataFrame:
    chosen = _ranked(pool).head(batch_size)
    top = chosen.iloc[0]
    while len(chosen) and math.fsum(chosen["cost_node_hours"]) > budget:
        chosen = chosen.iloc[:-1]
    if not len(chosen):
        raise SelectionError(
            f"batch selection (topn): the highest-scoring open candidate {top['key']!r} costs "
            f"{_nh(top['cost_node_hours'])} node-hours, more than the budget {_nh(budget)} node-hours; "
            "the top-n rule drops from the bottom of the ranking and cannot skip it "
            "(method 'pulp' packs the budget)")
    return _result(chosen, "topn")


def _pulp(pool: pd.DataFrame, batch_size: int, budget: float, max_per_family: int | None,
          seed: int) -> pd.DataFrame:
    # a candidate dearer than the budget can never be chosen; the rest in rank order (model built the
    # same way whatever the table's row order)
    ranked = _ranked(pool[pool["cost_node_hours"] <= budget])
    n = len(ranked)
    scores = ranked["score"].to_numpy(np.float64)
    costs = ranked["cost_node_hours"].to_numpy(np.float64)
    families = ranked["family"].tolist()
    scale = float(scores.max()) if scores.max() > 0 else 1.0
    s = scores / scale
    c = costs / budget

    def program(name: str, objective: list[float], score_floor: float | None = None) -> np.ndarray:
        problem = pulp.LpProblem(name, pulp.LpMaximize)
        x = _binaries(problem, n)
        problem += pulp.lpSum(objective[i] * x[i] for i in range(n))
        problem += pulp.lpSum(float(c[i]) * x[i] for i in range(n)) <= 1.0, "budget"
        problem += pulp.lpSum(x) <= batch_size, "batch_size"
        if max_per_family is not None:
            for j, family in enumerate(sorted(set(families))):
                members = [i for i in range(n) if families[i] == family]
                if len(members) > max_per_family:
                    problem += pulp.lpSum(x[i] for i in members) <= max_per_family, f"family{j}"
        if score_floor is not None:
            problem += pulp.lpSum(float(s[i]) * x[i] for i in range(n)) >= score_floor, "score"
        _solve(problem, seed)
        return _chosen(x)

    first = program("al_batch_score", [float(v) for v in s])
    optimum = float(s[first].sum())
    chosen = program("al_batch_ties", [float(n - i) for i in range(n)],
                     score_floor=optimum - SCORE_RTOL * max(optimum, 1.0))
    if math.fsum(scores[chosen]) < math.fsum(scores[first]) * (1.0 - 10 * SCORE_RTOL):
        chosen = first  # the tie-break must not cost score beyond its tolerance

    picked = ranked.iloc[np.flatnonzero(chosen)]
    total_cost = math.fsum(picked["cost_node_hours"])
    per_family = picked["family"].value_counts()
    if (total_cost > budget * (1.0 + BUDGET_RTOL) or len(picked) > batch_size
            or (max_per_family is not None and len(per_family) and per_family.max() > max_per_family)):
        raise SelectionError(
            f"batch selection (pulp): the solver's batch breaks a constraint (cost {_nh(total_cost)} of "
            f"{_nh(budget)} node-hours, {len(picked)} of {batch_size} candidates, at most "
            f"{per_family.max() if len(per_family) else 0} per family of {max_per_family}): a solver defect")
    return _result(picked, "pulp")


def _cbc(seed: int):
    """CBC: quiet, one thread, fixed random seed, tight tolerances.

    The CBC binary bundled with PuLP 3 (``PULP_CBC_CMD``), else a ``cbc`` on PATH (``COIN_CMD``: conda-forge
    builds of pulp may ship without the bundled binary; envs/ml.yaml adds coin-or-cbc). PuLP 3.3 marks
    the bundled-CBC interface deprecated (PuLP 4 moves it to the extra ``pulp[cbc]``); pyproject.toml
    pins ``pulp<4``.
    """
    settings = dict(msg=False, threads=1, gapRel=0.0,
                    options=[f"randomCbcSeed {seed + 1}", f"primalT {SOLVER_TOLERANCE}",
                             f"integerT {SOLVER_TOLERANCE}"])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="PULP_CBC_CMD is deprecated", category=DeprecationWarning)
        solver = pulp.PULP_CBC_CMD(**settings)
    if not solver.available():
        solver = pulp.COIN_CMD(**settings)
    return solver


def _solve(problem, seed: int) -> None:
    try:
        problem.solve(_cbc(seed))
    except pulp.PulpSolverError as exc:
        raise SelectionError(f"batch selection (pulp): the CBC solver failed on {problem.name}: {exc}") from exc
    status = pulp.LpStatus.get(problem.status, str(problem.status))
    solution = pulp.LpSolution.get(problem.sol_status, str(problem.sol_status))
    if status != "Optimal" or problem.sol_status != pulp.LpSolutionOptimal:
        raise SelectionError(f"batch selection (pulp): the integer program {problem.name} ended with solver "
                             f"status {status!r} (solution {solution!r}), not 'Optimal'")


def _binaries(problem, n: int) -> list:
    """n binary variables of ``problem`` (PuLP >= 3.3: owned by the problem; older: free variables)."""
    if hasattr(problem, "add_variable"):
        return [problem.add_variable(f"x{i}", 0, 1, cat=pulp.LpBinary) for i in range(n)]
    return [pulp.LpVariable(f"x{i}", 0, 1, cat=pulp.LpBinary) for i in range(n)]


def _chosen(x) -> np.ndarray:
    values = np.array([0.0 if v.value() is None else float(v.value()) for v in x], dtype=np.float64)
    off = np.abs(values - np.round(values))
    if len(values) and off.max() > 1e-6:
        raise SelectionError(f"batch selection (pulp): the solver returned a non-integral x = "
                             f"{values[off.argmax()]!r}")
    return values > 0.5


# --- the candidate table -------------------------------------------------------------------------
def _validated(candidates) -> pd.DataFrame:
    """A checked copy: key/family str, score/cost float64, done bool."""
    if not isinstance(candidates, pd.DataFrame):
        raise SelectionError(f"candidates: expected a pandas DataFrame, got {type(candidates).__name__}")
    missing = [c for c in COLUMNS if c not in candidates.columns]
    if missing:
        raise SelectionError("candidates: missing column(s) " + ", ".join(repr(c) for c in missing)
                             + " (expected " + ", ".join(COLUMNS) + ")")
    table = candidates.copy()
    for row, key in zip(table.index, table["key"]):
        if not isinstance(key, str) or not key:
            raise SelectionError(f"candidates: column 'key' of row {row!r} is {key!r} (expected a non-empty "
                                 "string)")
    duplicated = sorted(set(table["key"][table["key"].duplicated()]))
    if duplicated:
        raise SelectionError("candidates: duplicate key(s) in column 'key': "
                             + ", ".join(repr(k) for k in duplicated))
    keys = table["key"].tolist()
    for key, family in zip(keys, table["family"]):
        if not isinstance(family, str) or not family:
            raise SelectionError(f"candidates: column 'family' of key {key!r} is {family!r} (expected a "
                                 "non-empty string)")
    for column, lowest, rule in (("score", 0.0, "a finite number >= 0"),
                                 ("cost_node_hours", None, "a finite number > 0")):
        values = []
        for key, value in zip(keys, table[column]):
            number = _number(value)
            if number is None or not math.isfinite(number) or (number < lowest if lowest is not None
                                                                else number <= 0):
                raise SelectionError(f"candidates: column {column!r} of key {key!r} is {value!r} "
                                     f"(expected {rule})")
            values.append(number)
        table[column] = np.array(values, dtype=np.float64)
    for key, value in zip(keys, table["done"]):
        if not isinstance(value, (bool, np.bool_)):
            raise SelectionError(f"candidates: column 'done' of key {key!r} is {value!r} (expected True or "
                                 "False)")
    table["done"] = np.array([bool(v) for v in table["done"]], dtype=bool)
    return table


def _number(value) -> float | None:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        return None
    return float(value)


def _open_pool(table: pd.DataFrame, what: str) -> pd.DataFrame:
    pool = table[~table["done"]].sort_values("key", kind="mergesort")
    if not len(pool):
        raise SelectionError(f"{what}: the candidate pool is empty ({len(table)} candidates, all done); "
                             "nothing left to select")
    return pool


def _check_budget(pool: pd.DataFrame, budget: float, what: str) -> None:
    cheapest = pool.sort_values(["cost_node_hours", "key"], kind="mergesort").iloc[0]
    if budget < cheapest["cost_node_hours"]:
        raise SelectionError(f"{what} is smaller than the cheapest open candidate {cheapest['key']!r} "
                             f"({_nh(cheapest['cost_node_hours'])} node-hours)")


def _ranked(table: pd.DataFrame) -> pd.DataFrame:
    return table.sort_values(["score", "key"], ascending=[False, True], kind="mergesort")


def _result(rows: pd.DataFrame, reason: str) -> pd.DataFrame:
    out = _ranked(rows).reset_index(drop=True).copy()
    out["reason"] = reason
    return out


# --- argument checks -----------------------------------------------------------------------------
def _finite(name: str, value) -> float:
    number = _number(value)
    if number is None or not math.isfinite(number):
        raise SelectionError(f"batch selection: {name} is {value!r} (expected a finite number)")
    return number


def _positive_int(name: str, value) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < 1:
        raise SelectionError(f"batch selection: {name} is {value!r} (expected an integer >= 1)")
    return int(value)


def _seed(value) -> int:
    if (isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral)
            or not 0 <= value < 2**31 - 1):
        raise SelectionError(f"batch selection: seed is {value!r} (expected an integer in [0, 2^31 - 2])")
    return int(value)


def _nh(value: float) -> str:
    return f"{float(value):.6g}"
