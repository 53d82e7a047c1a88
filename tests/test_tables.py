"""kappaflow.tables, the one home of the CSV tables: a κ table round-trips bit for bit, and a cell that is
missing, NaN, infinite or not a number stops with the file, the line and the column (never a NaN κ passed
on)."""
import numpy as np
import pytest

from kappaflow.bte import CSV_COLUMNS, KappaResult, read_kappa_csv, write_kappa_csv
from kappaflow.errors import InputFileError

HEADER = ",".join(CSV_COLUMNS) + "\n"


def test_kappa_table_round_trips_bit_for_bit(tmp_path):
    rng = np.random.default_rng(0)
    k = rng.normal(size=(4, 3, 3)) * 123.456
    k = k + k.transpose(0, 2, 1)
    result = KappaResult(np.array([100.0, 150.0, 300.0, 1e-3 / 3]), k)
    write_kappa_csv(tmp_path / "kappa.csv", result)
    back = read_kappa_csv(tmp_path / "kappa.csv")
    assert np.array_equal(back.temperatures_k, result.temperatures_k)
    assert np.array_equal(back.kappa_w_per_mk, k)
    assert not list(tmp_path.glob(".*"))  # no temporary file left beside it


@pytest.mark.parametrize("row, message", [
    ("100.0,1,1,1,0,0,", r"kappa.csv:3: kappa_xy is empty or NaN"),
    ("100.0,1,1,nan,0,0,0", r"kappa.csv:3: kappa_zz is empty or NaN"),
    ("100.0,1,1,inf,0,0,0", r"kappa.csv:3: kappa_zz 'inf' is not a finite number"),
    ("100.0,1,1,abc,0,0,0", r"kappa.csv:3: kappa_zz 'abc' is not a finite number"),
])
def test_a_bad_kappa_cell_names_the_file_line_and_column(tmp_path, row, message):
    (tmp_path / "kappa.csv").write_text(HEADER + "50.0,1,1,1,0,0,0\n" + row + "\n")
    with pytest.raises(InputFileError, match=message):
        read_kappa_csv(tmp_path / "kappa.csv")


def test_a_kappa_table_with_another_header_is_refused(tmp_path):
    (tmp_path / "kappa.csv").write_text("T_K,kappa_xx\n100,1\n")
    with pytest.raises(InputFileError, match=r"kappa.csv:1: the κ table lacks column\(s\) kappa_yy"):
        read_kappa_csv(tmp_path / "kappa.csv")
