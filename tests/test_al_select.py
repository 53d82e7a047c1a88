"""Batch selection of the active-learning loop (kappaflow.al.select).

The integer program is checked against an independent brute force over every subset (plain Python,
itertools, n <= 12); the top-n rule against hand-derived tables; the random seed for size,
reproducibility, budget and uniformity; every bad input for a message that names what is wrong.
"""
import itertools
import math
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from kappaflow.al import select
from kappaflow.al.select import SelectionError, budget_left, seed_batch, select_batch
from kappaflow.errors import KappaflowError


def table(rows):
    """rows: (key, family, score, cost_node_hours, done)"""
    return pd.DataFrame(rows, columns=["key", "family", "score", "cost_node_hours", "done"])


def keys(frame):
    return list(frame["key"])


# --- brute force: an independent optimum -----------------------------------------------------------
def feasible_subsets(rows, batch_size, budget, cap):
    """Every subset of the open rows within the budget, the batch size and the family cap."""
    open_rows = [r for r in rows if not r[4]]
    for k in range(1, batch_size + 1):
        for combo in itertools.combinations(open_rows, k):
            if math.fsum(r[3] for r in combo) > budget:
                continue
            if cap is not None and max(Counter(r[1] for r in combo).values()) > cap:
                continue
            yield combo


def random_instance(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(4, 13))
    families = ["sow:fc3", "random:0.03", "md:300"][: int(rng.integers(1, 4))]
    discrete = seed % 2 == 0  # even seeds: scores and costs from small sets, so ties are everywhere
    rows = []
    for i in range(n):
        score = float(rng.choice([0.0, 0.1, 0.2, 0.3])) if discrete else float(rng.uniform(0, 0.5))
        cost = float(rng.choice([0.25, 0.5, 1.0])) if discrete else float(rng.uniform(0.05, 1.0))
        rows.append((f"c{int(rng.integers(0, 10**6)):06d}-{i}", str(rng.choice(families)), score, cost,
                     bool(rng.random() < 0.15)))
    batch_size = int(rng.integers(2, 7))
    cap = None if rng.random() < 0.25 else int(rng.integers(1, 3))
    round_budget = float(rng.uniform(0.3, 6.0))
    remaining = float(rng.uniform(0.3, 6.0))
    return rows, batch_size, cap, round_budget, remaining


@pytest.mark.parametrize("instance", range(30))
def test_pulp_matches_brute_force_on_random_instances(instance):
    rows, batch_size, cap, round_budget, remaining = random_instance(instance)
    budget = min(round_budget, remaining)
    open_costs = [r[3] for r in rows if not r[4]]
    if not open_costs or min(open_costs) > budget:
        with pytest.raises(SelectionError):
            select_batch(table(rows), "pulp", batch_size, round_budget, remaining, max_per_family=cap)
        return
    subsets = list(feasible_subsets(rows, batch_size, budget, cap))
    best = max(math.fsum(r[2] for r in s) for s in subsets)

    got = select_batch(table(rows), "pulp", batch_size, round_budget, remaining, max_per_family=cap)
    assert math.fsum(got["score"]) == pytest.approx(best, rel=1e-8, abs=1e-12)
    assert math.fsum(got["cost_node_hours"]) <= budget * (1 + select.BUDGET_RTOL)
    assert 1 <= len(got) <= batch_size
    if cap is not None:
        assert max(Counter(got["family"]).values()) <= cap
    done = {r[0] for r in rows if r[4]}
    assert not done & set(got["key"]), "a done candidate was selected"
    assert set(got["reason"]) == {"pulp"}
    assert list(got["score"]) == sorted(got["score"], reverse=True)

    # the tie rule: among the optimal batches, the largest sum of (n - rank) over (score desc, key) order
    # of the candidates that fit the budget at all
    fitting = sorted((r for r in rows if not r[4] and r[3] <= budget), key=lambda r: (-r[2], r[0]))
    weight = {r[0]: len(fitting) - i for i, r in enumerate(fitting)}
    optimal = [s for s in subsets if math.fsum(r[2] for r in s) >= best - 1e-9 * max(best, 1e-300)]
    assert sum(weight[k] for k in got["key"]) == max(sum(weight[r[0]] for r in s) for s in optimal)

    # deterministic, and independent of the table's row order
    shuffled = table(rows).sample(frac=1.0, random_state=instance)
    again = select_batch(shuffled, "pulp", batch_size, round_budget, remaining, max_per_family=cap)
    assert keys(again) == keys(got)


def test_pulp_ties_go_to_the_smaller_key_and_an_exact_fit_is_within_budget():
    rows = [(k, "md:300", 1.0, 0.5, False) for k in ("d", "b", "a", "c")]
    got = select_batch(table(rows), "pulp", 2, 1.0, 5.0)
    assert keys(got) == ["a", "b"]  # 0.5 + 0.5 == 1.0: the exact fit is allowed
    assert math.fsum(got["cost_node_hours"]) == 1.0
    # all scores zero: the batch is still filled in key order
    rows0 = [(k, "md:300", 0.0, 0.25, False) for k in ("q", "p", "r")]
    assert keys(select_batch(table(rows0), "pulp", 2, 1.0, 1.0)) == ["p", "q"]


def test_pulp_uses_the_smaller_of_round_and_remaining_budget():
    rows = [("a", "f", 0.9, 1.0, False), ("b", "f", 0.8, 1.0, False), ("c", "f", 0.7, 1.0, False)]
    assert keys(select_batch(table(rows), "pulp", 3, 10.0, 2.0)) == ["a", "b"]
    assert keys(select_batch(table(rows), "pulp", 3, 1.0, 10.0)) == ["a"]


# --- pulp against the top-n rule --------------------------------------------------------------------
def test_pulp_spreads_over_families_where_topn_takes_near_copies():
    rows = [("md-1", "md:300", 0.50, 1.0, False), ("md-2", "md:300", 0.49, 1.0, False),
            ("md-3", "md:300", 0.48, 1.0, False), ("sow-1", "sow:fc3", 0.30, 1.0, False),
            ("rnd-1", "random:0.03", 0.20, 1.0, False)]
    top = select_batch(table(rows), "topn", 3, 10.0, 10.0, max_per_family=1)
    ilp = select_batch(table(rows), "pulp", 3, 10.0, 10.0, max_per_family=1)
    assert keys(top) == ["md-1", "md-2", "md-3"]  # three near-copies of one MD temperature
    assert set(top["family"]) == {"md:300"}
    assert keys(ilp) == ["md-1", "sow-1", "rnd-1"]  # one per family
    assert len(set(ilp["family"])) == 3


def test_pulp_packs_a_budget_that_topn_leaves_unused():
    rows = [("a", "f", 1.0, 3.0, False), ("b", "f", 0.9, 3.0, False), ("c", "f", 0.8, 1.0, False),
            ("d", "f", 0.7, 1.0, False)]
    # top-n: a, b, c cost 7 > 4; drop c (6), drop b (3): only a, score 1.0
    top = select_batch(table(rows), "topn", 3, 4.0, 4.0)
    assert keys(top) == ["a"]
    # the ILP: a + c (cost 4, score 1.8) beats a + d (1.7), b + c (1.7), c + d (1.5)
    ilp = select_batch(table(rows), "pulp", 3, 4.0, 4.0)
    assert keys(ilp) == ["a", "c"]
    assert math.fsum(ilp["score"]) > math.fsum(top["score"])


# --- the top-n rule -------------------------------------------------------------------------------
def test_topn_hand_derived():
    rows = [("a", "f1", 0.90, 1.0, False), ("b", "f1", 0.50, 1.0, False), ("c", "f2", 0.70, 2.0, False),
            ("d", "f2", 0.70, 1.0, False), ("e", "f3", 0.20, 0.1, False), ("f", "f1", 0.95, 1.0, True)]
    # open by score, ties by key: a 0.9, c 0.7, d 0.7, b 0.5, e 0.2 (f is done); the top 4 are a, c, d, b,
    # cost 5 > 4: drop b -> a, c, d, cost 4
    got = select_batch(table(rows), "topn", 4, 4.0, 100.0, max_per_family=1)  # no family cap in top-n
    assert keys(got) == ["a", "c", "d"]
    assert set(got["reason"]) == {"topn"}
    # budget 5: all four; batch larger than the pool: every open candidate fitting from the top
    assert keys(select_batch(table(rows), "topn", 4, 5.0, 100.0)) == ["a", "c", "d", "b"]
    assert keys(select_batch(table(rows), "topn", 50, 100.0, 100.0)) == ["a", "c", "d", "b", "e"]


def test_result_is_a_copy_with_the_other_columns():
    frame = table([("a", "f", 0.2, 1.0, False), ("b", "f", 0.3, 1.0, False)])
    frame["note"] = ["x", "y"]
    got = select_batch(frame, "pulp", 2, 5.0, 5.0)
    assert list(got.columns) == ["key", "family", "score", "cost_node_hours", "done", "note", "reason"]
    assert keys(got) == ["b", "a"]
    got.loc[0, "score"] = 99.0
    assert list(frame["score"]) == [0.2, 0.3] and "reason" not in frame.columns


# --- the random seed --------------------------------------------------------------------------------
def pool(n, done=()):
    return table([(f"k{i:03d}", f"md:{300 * (1 + i % 3)}", 0.0, 0.1 + 0.01 * i, f"k{i:03d}" in done)
                  for i in range(n)])


def test_seed_size():
    assert len(seed_batch(pool(30), 0.1, 1, 100.0, 0)) == 3
    assert len(seed_batch(pool(100), 0.07, 1, 100.0, 0)) == 7  # 0.07 * 100 = 7.000000000000001 in floats
    assert len(seed_batch(pool(25), 0.1, 1, 100.0, 0)) == 3  # ceil(2.5)
    assert len(seed_batch(pool(30), 0.1, 5, 100.0, 0)) == 5  # at least min_count
    assert len(seed_batch(pool(4), 0.1, 10, 100.0, 0)) == 4  # at most the pool
    assert len(seed_batch(pool(7), 1.0, 1, 100.0, 0)) == 7
    # the fraction is of the open pool: 10 done of 30 -> ceil(0.25 * 20) = 5
    done = {f"k{i:03d}" for i in range(10)}
    got = seed_batch(pool(30, done), 0.25, 1, 100.0, 0)
    assert len(got) == 5 and not done & set(got["key"])
    assert set(got["reason"]) == {"seed"}


def test_seed_reproducible_and_independent_of_row_order():
    first = seed_batch(pool(40), 0.1, 1, 100.0, 7)
    assert keys(seed_batch(pool(40), 0.1, 1, 100.0, 7)) == keys(first)
    shuffled = pool(40).sample(frac=1.0, random_state=3)
    assert keys(seed_batch(shuffled, 0.1, 1, 100.0, 7)) == keys(first)
    assert keys(seed_batch(pool(40), 0.1, 1, 100.0, 8)) != keys(first)


def test_seed_draw_is_uniform_over_the_pool():
    counts = Counter()
    n_seeds = 800
    for seed in range(n_seeds):
        counts.update(seed_batch(pool(20), 0.25, 1, 100.0, seed)["key"])
    # each of 20 candidates is drawn with probability 5/20: mean 200, binomial sd 12.2; bound 5 sd
    assert set(counts) == {f"k{i:03d}" for i in range(20)}
    assert all(abs(c - 200) < 62 for c in counts.values()), counts


def test_seed_drops_the_most_expensive_draws_to_fit_the_budget():
    frame = pool(40)
    unlimited = seed_batch(frame, 0.25, 1, 1e6, 11)
    cost = dict(zip(frame["key"], frame["cost_node_hours"]))
    budget = 0.7 * math.fsum(unlimited["cost_node_hours"])
    got = seed_batch(frame, 0.25, 1, budget, 11)
    kept, dropped = set(got["key"]), set(unlimited["key"]) - set(got["key"])
    assert kept < set(unlimited["key"]) and dropped
    assert math.fsum(got["cost_node_hours"]) <= budget
    assert max(cost[k] for k in kept) <= min(cost[k] for k in dropped)
    assert math.fsum(got["cost_node_hours"]) + min(cost[k] for k in dropped) > budget  # dropped no more than needed


# --- bad input --------------------------------------------------------------------------------------
GOOD = [("a", "md:300", 0.3, 0.5, False), ("b", "sow:fc3", 0.2, 0.25, False), ("c", "md:300", 0.1, 1.0, True)]


def all_selectors(frame):
    yield lambda: seed_batch(frame, 0.5, 1, 10.0, 0)
    yield lambda: select_batch(frame, "pulp", 2, 10.0, 10.0)
    yield lambda: select_batch(frame, "topn", 2, 10.0, 10.0)


@pytest.mark.parametrize("column", ["key", "family", "score", "cost_node_hours", "done"])
def test_missing_column(column):
    for call in all_selectors(table(GOOD).drop(columns=[column])):
        with pytest.raises(SelectionError, match=f"missing column.*'{column}'"):
            call()


@pytest.mark.parametrize("column, value, expected", [
    ("score", float("nan"), r"column 'score' of key 'b' is nan"),
    ("score", -0.01, r"column 'score' of key 'b' is -0.01 \(expected a finite number >= 0\)"),
    ("score", float("inf"), r"column 'score' of key 'b' is inf"),
    ("score", "high", r"column 'score' of key 'b' is 'high'"),
    ("cost_node_hours", 0.0, r"column 'cost_node_hours' of key 'b' is 0.0 \(expected a finite number > 0\)"),
    ("cost_node_hours", -1.0, r"column 'cost_node_hours' of key 'b' is -1.0"),
    ("cost_node_hours", float("nan"), r"column 'cost_node_hours' of key 'b' is nan"),
    ("done", "yes", r"column 'done' of key 'b' is 'yes' \(expected True or False\)"),
    ("family", None, r"column 'family' of key 'b' is None"),
    ("key", None, r"column 'key' of row 1 is None"),
])
def test_bad_value_names_column_and_key(column, value, expected):
    frame = table(GOOD).astype({column: object})
    frame.at[1, column] = value
    for call in all_selectors(frame):
        with pytest.raises(SelectionError, match=expected):
            call()


def test_duplicate_key():
    frame = table(GOOD + [("b", "md:600", 0.4, 0.5, False)])
    for call in all_selectors(frame):
        with pytest.raises(SelectionError, match=r"duplicate key.*'b'"):
            call()


def test_not_a_dataframe():
    with pytest.raises(SelectionError, match="expected a pandas DataFrame, got list"):
        select_batch(GOOD, "pulp", 2, 1.0, 1.0)


@pytest.mark.parametrize("frame", [table([(k, f, s, c, True) for k, f, s, c, _ in GOOD]), table([])],
                         ids=["all-done", "no-rows"])
def test_empty_pool(frame):
    for call in all_selectors(frame):
        with pytest.raises(SelectionError, match="pool is empty"):
            call()


def test_budget_smaller_than_the_cheapest_open_candidate():
    # cheapest open: b at 0.25 (c at 1.0 is done and does not count)
    frame = table(GOOD)
    for method in ("pulp", "topn"):
        with pytest.raises(SelectionError, match=r"budget 0\.2 node-hours \(min of round budget 0\.2 and "
                                                 r"remaining 5\).*cheapest open candidate 'b' \(0\.25 node-hours\)"):
            select_batch(frame, method, 2, 0.2, 5.0)
        with pytest.raises(SelectionError, match=r"budget 0 node-hours \(min of round budget 3 and "
                                                 r"remaining 0\).*'b' \(0\.25"):
            select_batch(frame, method, 2, 3.0, budget_left(10.0, 12.5))
    with pytest.raises(SelectionError, match=r"seed batch: the budget 0\.1 node-hours.*'b' \(0\.25 node-hours\)"):
        seed_batch(frame, 0.5, 1, 0.1, 0)


def test_topn_cannot_skip_an_expensive_top_candidate():
    frame = table([("big", "f", 0.9, 2.0, False), ("small", "f", 0.1, 0.5, False)])
    with pytest.raises(SelectionError, match=r"topn.*'big' costs 2 node-hours, more than the budget 1 "):
        select_batch(frame, "topn", 2, 1.0, 1.0)
    assert keys(select_batch(frame, "pulp", 2, 1.0, 1.0)) == ["small"]


def test_seed_whose_draws_all_exceed_the_budget():
    frame = table([(f"big{i}", "f", 0.0, 2.0, False) for i in range(9)] + [("small", "f", 0.0, 0.5, False)])
    seed = next(s for s in range(100) if "small" not in keys(seed_batch(frame, 0.1, 1, 100.0, s)))
    with pytest.raises(SelectionError, match=r"budget 1 node-hours fits none of the 1 randomly drawn.*2 node-hours"):
        seed_batch(frame, 0.1, 1, 1.0, seed)


def test_unknown_method_lists_the_methods():
    with pytest.raises(SelectionError, match=r"unknown method 'greedy'; the methods are 'pulp', 'topn'"):
        select_batch(table(GOOD), "greedy", 2, 1.0, 1.0)


@pytest.mark.parametrize("call, expected", [
    (lambda f: select_batch(f, "pulp", 0, 1.0, 1.0), r"batch_size is 0 \(expected an integer >= 1\)"),
    (lambda f: select_batch(f, "pulp", 2.5, 1.0, 1.0), r"batch_size is 2.5"),
    (lambda f: select_batch(f, "pulp", 2, 1.0, 1.0, max_per_family=0), r"max_per_family is 0"),
    (lambda f: select_batch(f, "pulp", 2, float("nan"), 1.0), r"round budget \(node-hours\) is nan"),
    (lambda f: select_batch(f, "topn", 2, 1.0, None), r"remaining budget \(node-hours\) is None"),
    (lambda f: select_batch(f, "pulp", 2, 1.0, 1.0, seed=-1), r"seed is -1"),
    (lambda f: seed_batch(f, 0.0, 1, 1.0, 0), r"fraction 0.0 must be in \(0, 1\]"),
    (lambda f: seed_batch(f, 1.5, 1, 1.0, 0), r"fraction 1.5 must be in \(0, 1\]"),
    (lambda f: seed_batch(f, 0.5, 0, 1.0, 0), r"min_count is 0"),
    (lambda f: budget_left(10.0, -1.0), r"must be >= 0"),
])
def test_bad_arguments(call, expected):
    with pytest.raises(SelectionError, match=expected):
        call(table(GOOD))


def test_solver_status_other_than_optimal_raises(monkeypatch):
    import pulp

    class NotSolved:
        def actualSolve(self, problem, **kwargs):
            problem.assignStatus(pulp.LpStatusNotSolved)
            return problem.status

    monkeypatch.setattr(select, "_cbc", lambda seed: NotSolved())
    with pytest.raises(SelectionError, match=r"al_batch_score ended with solver status 'Not Solved'.*not 'Optimal'"):
        select_batch(table(GOOD), "pulp", 2, 1.0, 1.0)


def test_budget_left_and_error_class():
    assert budget_left(10.0, 2.5) == 7.5
    assert budget_left(10.0, 12.0) == 0.0
    assert issubclass(SelectionError, KappaflowError)


def test_cbc_on_path_when_pulp_has_no_bundled_binary(tmp_path, monkeypatch):
    """conda-forge builds of pulp may lack the bundled CBC: a `cbc` on PATH (coin-or-cbc) is used instead;
    with neither, a SelectionError says the solver failed."""
    import os
    import pulp

    bundled = select._cbc(0).path
    monkeypatch.setattr(pulp.PULP_CBC_CMD, "available", lambda self: False)
    monkeypatch.setenv("PATH", str(tmp_path))
    rows = [("a", "f", 1.0, 3.0, False), ("b", "f", 0.9, 3.0, False), ("c", "f", 0.8, 1.0, False)]
    with pytest.raises(SelectionError, match="CBC solver failed"):
        select_batch(table(rows), "pulp", 3, 4.0, 4.0)
    os.symlink(bundled, tmp_path / "cbc")
    got = select_batch(table(rows), "pulp", 3, 4.0, 4.0)
    assert keys(got) == ["a", "c"]
