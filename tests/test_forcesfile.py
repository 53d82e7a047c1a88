"""PANNA evaluation force files and the committee-spread companion: round trips and strict errors."""
import numpy as np
import pytest

from kappaflow.errors import InputFileError, KappaflowError
from kappaflow.ml import forcesfile

HEADER = "#filename atom_id fx_nn fy_nn fz_nn fx_ref fy_ref fz_ref"

# as PANNA's evaluate.py writes it: str() of each float, one row per atom, 0-based atom_id
PANNA_TEXT = f"""{HEADER}
disp_001 0 0.0123 -0.5 1e-05 0.0121 -0.49 0.0
disp_001 1 -0.0123 0.5 -1e-05 -0.0121 0.49 -0.0
disp_002 0 1.25 2.5e-07 -3.0 1.2 0.0 -2.9
disp_002 1 -1.25 -2.5e-07 3.0 -1.2 -0.0 2.9
"""


def write(tmp_path, text, name="epoch_240_step_2400_forces.dat"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_reads_panna_file(tmp_path):
    out = forcesfile.read_forces(write(tmp_path, PANNA_TEXT), expected_n_atoms=2,
                                 expected_keys={"disp_001", "disp_002"})
    assert sorted(out) == ["disp_001", "disp_002"]
    nn, ref = out["disp_002"]
    assert nn.shape == ref.shape == (2, 3)
    np.testing.assert_array_equal(nn, [[1.25, 2.5e-07, -3.0], [-1.25, -2.5e-07, 3.0]])
    np.testing.assert_array_equal(ref, [[1.2, 0.0, -2.9], [-1.2, -0.0, 2.9]])


def test_rows_in_any_order_are_sorted_by_atom_id(tmp_path):
    lines = PANNA_TEXT.splitlines()
    text = "\n".join([lines[0], lines[2], lines[4], lines[1], lines[3]]) + "\n"
    a = forcesfile.read_forces(write(tmp_path, text))
    b = forcesfile.read_forces(write(tmp_path, PANNA_TEXT, "b.dat"))
    for key in b:
        np.testing.assert_array_equal(a[key][0], b[key][0])


def test_round_trip_is_bit_exact(tmp_path):
    rng = np.random.default_rng(7)
    nn = {"k1": rng.normal(size=(5, 3)) * 1e-3, "k2": rng.normal(size=(3, 3)) * 10}
    ref = {k: v + rng.normal(size=v.shape) * 1e-4 for k, v in nn.items()}
    path = tmp_path / "forces.dat"
    forcesfile.write_forces(path, nn, ref)
    assert path.read_text().splitlines()[0] == HEADER
    back = forcesfile.read_forces(path, expected_n_atoms={"k1": 5, "k2": 3})
    for key in nn:
        assert back[key][0].tobytes() == nn[key].tobytes()
        assert back[key][1].tobytes() == ref[key].tobytes()
    # without reference forces: 5 columns, NaN reference
    forcesfile.write_forces(path, nn)
    assert path.read_text().splitlines()[0] == "#filename atom_id fx_nn fy_nn fz_nn"
    back = forcesfile.read_forces(path)
    assert back["k2"][0].tobytes() == nn["k2"].tobytes()
    assert back["k2"][1].shape == (3, 3) and np.isnan(back["k2"][1]).all()
    assert [p.name for p in tmp_path.iterdir()] == ["forces.dat"]


def test_sigma_companion_round_trip(tmp_path):
    sigma = {"k1": np.abs(np.random.default_rng(1).normal(size=(4, 3))) * 1e-3}
    path = tmp_path / "committee_sigma.dat"
    forcesfile.write_sigma(path, sigma)
    assert path.read_text().splitlines()[0] == "#filename atom_id sigma_fx sigma_fy sigma_fz"
    back = forcesfile.read_sigma(path, expected_n_atoms=4, expected_keys=["k1"])
    assert back["k1"].tobytes() == sigma["k1"].tobytes()
    path.write_text(path.read_text().replace(repr(float(sigma["k1"][2, 1])), "-0.001"))
    with pytest.raises(InputFileError, match=r":4: sigma_fy of atom 2 of 'k1' is negative"):
        forcesfile.read_sigma(path)
    with pytest.raises(InputFileError, match="header must be"):
        forcesfile.read_sigma(write(tmp_path, PANNA_TEXT))


def replace_line(lineno, new):
    lines = PANNA_TEXT.splitlines()
    lines[lineno - 1] = new
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("text, kwargs, message", [
    # a gap in the atom_ids of a structure (atom 0 missing): named with the structure's first line
    (replace_line(2, ""), {}, r":3: 'disp_001' lacks atom\(s\) 0 of atom_id 0..1"),
    # fewer atoms than expected
    (PANNA_TEXT, {"expected_n_atoms": 3}, r":2: 'disp_001' lacks atom\(s\) 2 of atom_id 0..2"),
    (PANNA_TEXT, {"expected_n_atoms": {"disp_001": 2, "disp_002": 3}}, r":4: 'disp_002' lacks atom\(s\) 2"),
    # more atoms than expected
    (PANNA_TEXT, {"expected_n_atoms": 1}, r":3: 'disp_001' lists atom 1, but has 1 atoms"),
    (replace_line(3, "disp_001 0 0 0 0 0 0 0"), {},
     r":3: atom 0 of 'disp_001' is listed twice \(first at line 2\)"),
    (replace_line(4, "disp_002 0 1.25 nan -3.0 1.2 0.0 -2.9"), {}, r":4: fy_nn of atom 0 of 'disp_002' is nan"),
    (replace_line(5, "disp_002 1 -1.25 0 3.0 -1.2 -0.0 -inf"), {}, r":5: fz_ref of atom 1 of 'disp_002' is -inf"),
    (replace_line(5, "disp_002 1 -1.25 0 3.0 -1.2 -0.0 1e999"), {}, r":5: fz_ref of atom 1 .* overflows"),
    (replace_line(3, "disp_001 1 -0.0123 0.5 -1e-05 -0.0121 0.49"), {}, r":3: expected 8 columns .*found 7"),
    (replace_line(3, "disp_001 1 -0.0123 0.5 -1e-05 -0.0121 0.49 0.0 9"), {}, r":3: expected 8 columns .*found 9"),
    (replace_line(3, "disp_001 1 -0.0123 0.5 -1e-O5 -0.0121 0.49 0.0"), {}, r":3: fz_nn .*cannot read '-1e-O5'"),
    (replace_line(3, "disp_001 1.0 -0.0123 0.5 -1e-05 -0.0121 0.49 0.0"), {}, r":3: atom_id must be .* '1.0'"),
    (replace_line(3, "disp_001 -1 -0.0123 0.5 -1e-05 -0.0121 0.49 0.0"), {}, r":3: atom_id must be"),
    # an unknown structure when the expected keys are given, and a missing one
    (PANNA_TEXT, {"expected_keys": ["disp_001"]}, r":4: unknown structure 'disp_002'"),
    (PANNA_TEXT, {"expected_n_atoms": {"disp_001": 2}}, r":4: unknown structure 'disp_002'"),
    (PANNA_TEXT, {"expected_keys": ["disp_001", "disp_002", "disp_003"]}, r"missing, e.g. 'disp_003'"),
    (replace_line(1, "#filename atom_id fx fy fz"), {}, r":1: header must be"),
    (PANNA_TEXT.split("\n", 1)[1], {}, r":1: header must be"),
    (HEADER + "\n", {}, "no data rows"),
    ("", {}, "empty file"),
    (PANNA_TEXT + HEADER + "\n", {}, r":6: a second header"),
])
def test_errors_name_file_line_and_structure(tmp_path, text, kwargs, message):
    path = write(tmp_path, text)
    with pytest.raises(InputFileError, match=message) as err:
        forcesfile.read_forces(path, **kwargs)
    assert str(err.value).startswith(str(path))


def test_writer_refuses_bad_input(tmp_path):
    path = tmp_path / "f.dat"
    good = np.zeros((2, 3))
    with pytest.raises(KappaflowError, match="not finite on atom 1"):
        forcesfile.write_forces(path, {"k": np.array([[0.0, 0, 0], [np.nan, 0, 0]])})
    with pytest.raises(KappaflowError, match="shape"):
        forcesfile.write_forces(path, {"k": np.zeros((2, 2))})
    with pytest.raises(KappaflowError, match="without whitespace"):
        forcesfile.write_forces(path, {"a b": good})
    with pytest.raises(KappaflowError, match="no reference forces for 'k2'"):
        forcesfile.write_forces(path, {"k": good, "k2": good}, {"k": good})
    with pytest.raises(KappaflowError, match="has 3 atoms, the predictions 2"):
        forcesfile.write_forces(path, {"k": good}, {"k": np.zeros((3, 3))})
    with pytest.raises(KappaflowError, match="negative"):
        forcesfile.write_sigma(path, {"k": -np.ones((2, 3))})
    assert not path.exists()
