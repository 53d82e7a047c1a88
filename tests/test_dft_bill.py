"""benchmarks/dft_bill.py's tables on a synthetic input: a refused fit never becomes a number, errors are
against the right reference, and goal 1 needs every seed of a point within 5 % at <= 10 runs."""
import importlib.util
import math
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "dft_bill.py"


@pytest.fixture(scope="module")
def bill():
    spec = importlib.util.spec_from_file_location("dft_bill", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["dft_bill"] = module  # its dataclasses resolve their annotations through sys.modules
    spec.loader.exec_module(module)
    yield module
    del sys.modules["dft_bill"]


def rows():
    return [
        {"method": "fd-cutoff", "seed": None, "n_pw_runs": 39, "kappa_300K": 100.0, "status": "ok"},
        {"method": "fd-nocutoff", "seed": None, "n_pw_runs": 57, "kappa_300K": 80.0, "status": "ok"},
        # a refused fit that (wrongly) carries a number: the table must not show it
        {"method": "random", "seed": 0, "n_pw_runs": 2, "kappa_300K": 123.0, "status": "refused", "note": "sow: x"},
        {"method": "random", "seed": 1, "n_pw_runs": 2, "status": "refused", "note": "reap: rank"},
        {"method": "random", "seed": 0, "n_pw_runs": 3, "kappa_300K": 82.0, "status": "ok"},
        {"method": "random", "seed": 1, "n_pw_runs": 3, "kappa_300K": 90.0, "status": "ok"},  # +12.5 %
        {"method": "random", "seed": 0, "n_pw_runs": 5, "kappa_300K": 81.0, "status": "ok"},
        {"method": "random", "seed": 1, "n_pw_runs": 5, "kappa_300K": 79.0, "status": "ok"},
        {"method": "qbc", "seed": 0, "n_pw_runs": 12, "kappa_300K": 80.0, "status": "ok"},
        {"method": "mlp", "seed": None, "n_pw_runs": 0, "status": "not run", "note": "not importable"},
    ]


def test_errors_against_both_references_and_refused_rows_carry_no_number(bill):
    table = bill.finish_rows(rows(), kappa_cutoff=100.0, kappa_nocutoff=80.0)
    assert list(table.columns) == bill.COLUMNS
    r = table[(table["method"] == "random") & (table["n_pw_runs"] == 3) & (table["seed"] == 1)].iloc[0]
    assert r["error_vs_cutoff_ref"] == pytest.approx(-0.10)
    assert r["error_vs_nocutoff_ref"] == pytest.approx(0.125)
    for _, r in table[table["status"] != "ok"].iterrows():
        assert all(math.isnan(r[c]) for c in ("kappa_300K", "error_vs_cutoff_ref", "error_vs_nocutoff_ref"))


def test_an_ok_row_without_a_kappa_is_an_error(bill):
    bad = rows() + [{"method": "random", "seed": 2, "n_pw_runs": 3, "status": "ok"}]
    with pytest.raises(ValueError, match="status ok but no finite"):
        bill.finish_rows(bad, 100.0, 80.0)
    with pytest.raises(ValueError, match="positive"):
        bill.finish_rows(rows(), 0.0, 80.0)


def test_markdown_and_goal1(bill):
    table = bill.finish_rows(rows(), 100.0, 80.0)
    refs = {"fd-cutoff": (39, 100.0), "fd-nocutoff": (57, 80.0)}
    text = bill.summary_markdown(table, refs)
    assert "| random | 2 | refused | | | 0 / 2 / 0 |" in text
    assert "123" not in text
    # two seeds: mean and range; errors against the no-cutoff reference
    assert "| random | 3 | 86.0 (82.0 .. 90.0) | -14.0 % (-18.0 % .. -10.0 %) | +7.5 % (+2.5 % .. +12.5 %) | 2 / 0 / 0 |" in text
    assert "| mlp | | not run: not importable |" in text
    goal = bill.goal1_lines(table)
    # n_pw_runs 3 has a seed at +12.5 %: the first point with every seed within 5 % is 5 runs;
    # qbc is within 5 % but with 12 runs, above the goal's 10
    assert goal == ["random: within 5 % from 5 pw.x runs (smallest n where every seed is)",
                    "qbc: not within 5 % at <= 10 runs"]


def test_components_and_the_mock_model_of_a_config(bill):
    """GeS2 points carry κxx and κzz: each component gets its own rows; the in-process "DFT" is the mock
    model named in the config's dft.pw_command, and a real pw.x command is refused."""
    rows_in = [{"method": "fd-cutoff", "seed": None, "n_pw_runs": 276, "kappa_300K": {"xx": 16.0, "zz": 4.4},
                "status": "ok"},
               {"method": "random", "seed": 0, "n_pw_runs": 3, "status": "refused", "note": "sow: x"}]
    zz = bill.component_rows(rows_in, "zz")
    assert [r["kappa_300K"] for r in zz] == [4.4, None] and {r["component"] for r in zz} == {"zz"}
    table = bill.finish_rows(zz + [{"method": "fd-nocutoff", "seed": None, "n_pw_runs": 832, "component": "zz",
                                    "kappa_300K": 4.0, "status": "ok"}], 4.4, 4.0)
    assert table.loc[table["method"] == "fd-cutoff", "error_vs_nocutoff_ref"].iloc[0] == pytest.approx(0.1)
    assert bill.mock_model({"dft": {"pw_command": "kappaflow-mock-pw --model ges2-morse"}}) == "ges2-morse"
    assert bill.mock_model({"dft": {"pw_command": "kappaflow-mock-pw"}}) == "stillinger-weber-si"
    with pytest.raises(SystemExit, match="not the mock pw.x"):
        bill.mock_model({"dft": {"pw_command": "mpirun -np 4 pw.x"}})
    assert set(bill.SYSTEMS) == {"si", "ges2"} and bill.SYSTEMS["ges2"].components == ("xx", "zz")
