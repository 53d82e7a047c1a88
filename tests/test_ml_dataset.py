"""PANNA examples and extended XYZ from real pw.x 6.7 outputs.

Reference numbers come from independent routes: ASE's own ``espresso-out`` and ``espresso-in`` readers,
with ASE's values converted back to the Ry and bohr pw.x printed (with the CODATA 2006 units ASE's reader
uses) and then to eV and Å with the CODATA 2018 constants (those of QE 6.7) written out here.
"""
import json
import math

import ase.io
import ase.io.espresso
import numpy as np
import pytest

from kappaflow.errors import InputFileError, KappaflowError
from kappaflow.ml import dataset

from conftest import DATA

RY_EV_2018 = 13.605693122994  # CODATA 2018, as QE 6.7
BOHR_ANG_2018 = 0.529177210903
ALAS_OUT = DATA / "alas_disp_scf_qe6.7.out"
ALAS_IN = DATA / "alas_disp_scf.in"
MD_OUT, MD_IN = DATA / "si_md_qe6.7.out", DATA / "si_md.in"
VC_OUT, VC_IN = DATA / "si_vc-relax_qe6.7.out", DATA / "si_vc-relax.in"
KEY = "0123456789abcdef0123"


ASE_QE_UNITS = ase.io.espresso.units  # what ASE's espresso reader converts with


def ase_energy_ev(atoms):
    return atoms.get_potential_energy() / ASE_QE_UNITS["Ry"] * RY_EV_2018


def ase_forces_ev_per_ang(atoms):
    return atoms.get_forces() / (ASE_QE_UNITS["Ry"] / ASE_QE_UNITS["Bohr"]) * (RY_EV_2018 / BOHR_ANG_2018)


def ase_lengths_ang(values):
    """Lengths ASE read from a pw.x header (celldm(1) in bohr times alat units), CODATA 2018 Å."""
    return np.asarray(values) / ASE_QE_UNITS["Bohr"] * BOHR_ANG_2018


def arrays(example):
    pos = np.array([a[2] for a in example["atoms"]])
    forces = np.array([a[3] for a in example["atoms"]])
    return np.array(example["lattice_vectors"]), pos, forces


def test_scf_example_matches_ase_and_the_input():
    ex = dataset.example_from_pwout(ALAS_OUT, KEY, pw_input=ALAS_IN)
    assert ex["key"] == KEY and ex["unit_of_length"] == "angstrom"
    assert ex["atomic_position_unit"] == "cartesian" and ex["energy"][1] == "eV"
    assert [a[0] for a in ex["atoms"]] == list(range(1, 9))
    assert [a[1] for a in ex["atoms"]] == ["Al", "As"] * 4
    out = ase.io.read(ALAS_OUT, format="espresso-out")
    inp = ase.io.read(ALAS_IN, format="espresso-in")
    cell, pos, forces = arrays(ex)
    assert ex["energy"][0] == pytest.approx(ase_energy_ev(out), rel=1e-14)
    np.testing.assert_allclose(forces, ase_forces_ev_per_ang(out), rtol=1e-13, atol=1e-16)
    # the structure is the input's exactly, and the header's to print precision
    np.testing.assert_allclose(cell, inp.cell.array, rtol=0, atol=1e-13)
    np.testing.assert_allclose(pos, inp.positions, rtol=0, atol=1e-13)
    np.testing.assert_allclose(pos, ase_lengths_ang(out.positions), rtol=0, atol=1e-6)
    # the displaced atom: 0.01 Å along x
    assert pos[0, 0] == pytest.approx(0.01, abs=1e-13)


def test_scf_example_without_input_uses_the_header():
    ex = dataset.example_from_pwout(ALAS_OUT, KEY)
    out = ase.io.read(ALAS_OUT, format="espresso-out")
    inp = ase.io.read(ALAS_IN, format="espresso-in")
    cell, pos, _ = arrays(ex)
    # 7 decimals of alat (10.69585 bohr) on positions, 6 on the cell
    np.testing.assert_allclose(pos, inp.positions, rtol=0, atol=0.6e-7 * 10.69585 * BOHR_ANG_2018)
    np.testing.assert_allclose(cell, inp.cell.array, rtol=0, atol=1e-6 * 10.69585 * BOHR_ANG_2018)
    np.testing.assert_allclose(pos, ase_lengths_ang(out.positions), rtol=0, atol=1e-14)
    np.testing.assert_allclose(cell, ase_lengths_ang(out.cell.array), rtol=0, atol=1e-14)


@pytest.mark.parametrize("out_path, in_path", [(MD_OUT, MD_IN), (VC_OUT, VC_IN)])
def test_every_frame_of_md_and_vc_relax_matches_ase(out_path, in_path):
    images = ase.io.read(out_path, index=":", format="espresso-out")
    assert len(images) > 2
    for k, image in enumerate(images):
        ex = dataset.example_from_pwout(out_path, KEY, frame=k, pw_input=in_path)
        cell, pos, forces = arrays(ex)
        assert ex["energy"][0] == pytest.approx(ase_energy_ev(image), rel=1e-14)
        np.testing.assert_allclose(forces, ase_forces_ev_per_ang(image), rtol=1e-13, atol=1e-16)
        # ASE: header (frame 0) and md cells at print precision; relax blocks exactly
        np.testing.assert_allclose(cell, image.cell.array, rtol=0, atol=2e-6)
        np.testing.assert_allclose(pos, image.positions, rtol=0, atol=2e-6)
    last = dataset.example_from_pwout(out_path, KEY, pw_input=in_path)
    assert last == dataset.example_from_pwout(out_path, KEY, frame=len(images) - 1, pw_input=in_path)


def test_vc_relax_last_frame_is_the_final_structure():
    ex = dataset.example_from_pwout(VC_OUT, KEY, pw_input=VC_IN)
    cell, pos, _ = arrays(ex)
    # "Begin final coordinates" of the fixture, CELL_PARAMETERS (angstrom), ATOMIC_POSITIONS (crystal)
    final_cell = np.array([[0.000074574, 2.685124928, 2.685124928],
                           [2.685189166, 0.000031159, 2.685165910],
                           [2.685189166, 2.685165910, 0.000031159]])
    final_frac = np.array([[0.0050031527, -0.0000003253, -0.0000003253],
                           [0.2549968473, 0.2500003253, 0.2500003253]])
    np.testing.assert_allclose(cell, final_cell, rtol=0, atol=1e-15)
    np.testing.assert_allclose(pos, final_frac @ final_cell, rtol=0, atol=1e-14)
    assert ex["energy"][0] == pytest.approx(-15.83722870 * RY_EV_2018, rel=1e-15)


def test_frame_out_of_range_and_wrong_input(tmp_path):
    with pytest.raises(InputFileError, match="frame 3 requested, the run has 3"):
        dataset.example_from_pwout(MD_OUT, KEY, frame=3)
    with pytest.raises(InputFileError, match="run has 8 atoms, expected 2"):
        dataset.example_from_pwout(ALAS_OUT, KEY, pw_input=MD_IN)
    moved = tmp_path / "moved.in"
    moved.write_text(ALAS_IN.read_text().replace("0.748233215547703", "0.749233215547703"))
    with pytest.raises(InputFileError, match=r"position of atom 4 differs from the pw.x input .*moved.in"):
        dataset.example_from_pwout(ALAS_OUT, KEY, pw_input=moved)
    with pytest.raises(KappaflowError, match="key"):
        dataset.example_from_pwout(ALAS_OUT, "has space")


def test_example_json_round_trip_is_bit_exact(tmp_path):
    ex = dataset.example_from_pwout(MD_OUT, KEY, frame=1, pw_input=MD_IN)
    path = tmp_path / f"{KEY}.example"
    dataset.write_example(path, ex)
    back = dataset.read_example(path, expected_n_atoms=2)
    assert back == ex
    for a, b in zip((np.float64(ex["energy"][0]), *arrays(ex)), (np.float64(back["energy"][0]), *arrays(back))):
        assert a.tobytes() == b.tobytes()
    # PANNA-readable plain JSON, and writing again gives the same bytes
    raw = json.loads(path.read_text())
    assert raw["atoms"][1][1] == "Si" and raw["energy"][1] == "eV"
    text = path.read_bytes()
    dataset.write_example(path, back)
    assert path.read_bytes() == text
    assert not [p for p in tmp_path.iterdir() if p.name != path.name]  # no temporary left behind


def test_read_example_converts_bohr_ry_crystal_and_ha(tmp_path):
    ex = dataset.example_from_pwout(ALAS_OUT, KEY, pw_input=ALAS_IN)
    cell, pos, forces = arrays(ex)
    frac = pos @ np.linalg.inv(cell)
    ry_bohr = {
        "key": KEY, "unit_of_length": "bohr", "atomic_position_unit": "crystal",
        "lattice_vectors": (cell / BOHR_ANG_2018).tolist(),
        "energy": [ex["energy"][0] / RY_EV_2018, "Ry"],
        "atoms": [[k + 1, s, frac[k].tolist(), (forces[k] * BOHR_ANG_2018 / RY_EV_2018).tolist()]
                  for k, s in enumerate(["Al", "As"] * 4)],
    }
    path = tmp_path / f"{KEY}.example"
    path.write_text(json.dumps(ry_bohr))
    back = dataset.read_example(path)
    assert back["unit_of_length"] == "angstrom" and back["atomic_position_unit"] == "cartesian"
    assert back["energy"] == [pytest.approx(ex["energy"][0], rel=1e-14), "eV"]
    bcell, bpos, bforces = arrays(back)
    np.testing.assert_allclose(bcell, cell, rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(bpos, pos, rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(bforces, forces, rtol=1e-13, atol=1e-17)
    ha = dict(ry_bohr, energy=[ex["energy"][0] / (2 * RY_EV_2018), "Ha"])
    path.write_text(json.dumps(ha))
    assert dataset.read_example(path)["energy"][0] == pytest.approx(ex["energy"][0], rel=1e-14)


def _bad(tmp_path, mutate, name=KEY):
    ex = dataset.example_from_pwout(MD_OUT, KEY, pw_input=MD_IN)
    mutate(ex)
    path = tmp_path / f"{name}.example"
    path.write_text(json.dumps(ex))
    return path


@pytest.mark.parametrize("mutate, message", [
    (lambda e: e.update(unit_of_length="nm"), "unknown unit_of_length 'nm'"),
    (lambda e: e.update(energy=[1.0, "kcal/mol"]), "unknown energy unit 'kcal/mol'"),
    (lambda e: e.update(atomic_position_unit="fractional"), "unknown atomic_position_unit"),
    (lambda e: e["atoms"][1][3].__setitem__(2, math.nan), r"force on atom 2\[2\] is nan"),
    (lambda e: e["atoms"][0][2].__setitem__(0, math.inf), r"position of atom 1\[0\] is inf"),
    (lambda e: e["atoms"].pop(), "atom count mismatch: 1 atoms, expected 2"),
    (lambda e: e["atoms"][1].__setitem__(0, 3), "has index 3, expected 2"),
    (lambda e: e["atoms"][1].pop(), "atom 2 has no force"),
    (lambda e: e.update(lattice_vectors=[[0, 0, 0]] * 3), "zero volume"),
])
def test_read_example_errors_name_file_and_problem(tmp_path, mutate, message):
    path = _bad(tmp_path, mutate)
    with pytest.raises(InputFileError, match=message) as err:
        dataset.read_example(path, expected_n_atoms=2)
    assert str(path) in str(err.value)


def test_read_example_bad_json_and_key(tmp_path):
    path = tmp_path / f"{KEY}.example"
    path.write_text('{"key": "x",\n "atoms": [1, 2,,]}')
    with pytest.raises(InputFileError, match=rf"{KEY}.example:2: not valid JSON"):
        dataset.read_example(path)
    path = _bad(tmp_path, lambda e: None, name="otherkey")
    with pytest.raises(InputFileError, match="differs from the file name's key 'otherkey'"):
        dataset.read_example(path)


def test_write_example_refuses_invalid_or_misnamed(tmp_path):
    ex = dataset.example_from_pwout(MD_OUT, KEY, pw_input=MD_IN)
    with pytest.raises(KappaflowError, match="name the file"):
        dataset.write_example(tmp_path / "wrong.example", ex)
    ex["atoms"][0][3][0] = math.nan
    with pytest.raises(KappaflowError, match="refusing to write an invalid example"):
        dataset.write_example(tmp_path / f"{KEY}.example", ex)
    assert not list(tmp_path.iterdir())


def test_extxyz_reads_back_with_ase(tmp_path):
    keys = ["aaaaaaaaaaaaaaaaaaa0", "1234567890", "1e5"]  # number-like keys survive through info['uid']
    examples = [dataset.example_from_pwout(MD_OUT, k, frame=i, pw_input=MD_IN) for i, k in enumerate(keys)]
    examples.append(dataset.example_from_pwout(ALAS_OUT, "alas", pw_input=ALAS_IN))
    path = tmp_path / "train.extxyz"
    dataset.write_extxyz(path, examples)
    images = ase.io.read(path, index=":", format="extxyz")
    assert len(images) == 4
    for ex, atoms in zip(examples, images):
        cell, pos, forces = arrays(ex)
        assert atoms.info["uid"] == ex["key"]
        assert atoms.get_chemical_symbols() == [a[1] for a in ex["atoms"]]
        assert atoms.pbc.all()
        assert np.array_equal(atoms.cell.array, cell)
        assert atoms.get_potential_energy() == ex["energy"][0]
        np.testing.assert_allclose(atoms.positions, pos, rtol=0, atol=5.1e-9)  # ASE writes %16.8f
        np.testing.assert_allclose(atoms.get_forces(), forces, rtol=0, atol=5.1e-9)
    assert images[0].info["key"] == keys[0]
    assert not [p for p in tmp_path.iterdir() if p.name != path.name]


def test_mock_pw_output_carries_its_structure(tmp_path):
    """kappaflow-mock-pw prints the starting structure in its header like pw.x (celldm(1), crystal axes,
    site positions in alat units, 7 decimals): with the input the example takes full precision,
    without it the header's print precision."""
    import contextlib
    import io

    from kappaflow.mock import pw as mock_pw

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert mock_pw.main(["--model", "morse-network", "--reference", str(ALAS_IN), "-in", str(ALAS_IN)]) == 0
    out = tmp_path / "pw.out"
    out.write_text(buffer.getvalue())
    ex = dataset.example_from_pwout(out, KEY, pw_input=ALAS_IN)
    _, pos, forces = arrays(ex)
    np.testing.assert_allclose(pos, ase.io.read(ALAS_IN, format="espresso-in").positions, rtol=0, atol=1e-13)
    assert forces.shape == (8, 3) and ex["energy"][1] == "eV"
    _, pos_header, forces_header = arrays(dataset.example_from_pwout(out, KEY))
    alat = float(np.linalg.norm(ase.io.read(ALAS_IN, format="espresso-in").cell[0]))  # any length scale
    np.testing.assert_allclose(pos_header, pos, rtol=0, atol=alat * 1e-6)  # 7 decimals of alat
    np.testing.assert_array_equal(forces_header, forces)
