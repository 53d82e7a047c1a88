"""pw.x input parser/writer: the seed's GeS2 inputs as given, unit conventions, templates, errors."""
import numpy as np
import pytest

from kappaflow import units
from kappaflow.errors import InputFileError
from kappaflow.qe.pwin import fill_template, parse_pw_input, read_pw_input

from conftest import REPO

GES2 = REPO / "config/systems/ges2/GeS2.scf.in"
GES2_TEMPLATE = REPO / "config/systems/ges2/GeS2.sc.scf.in"

SI_TEXT = """&control
  calculation='scf', pseudo_dir = '/p'
/
&system
  ibrav = {ibrav}, {lattice} nat=2, ntyp=1, ecutwfc=16
/
&electrons
/
ATOMIC_SPECIES
 Si 28.0855 Si.pz-vbc.UPF
{cell}ATOMIC_POSITIONS {unit}
 Si 0.0 0.0 0.0
 Si {p} {p} {p}
K_POINTS automatic
 2 2 2 0 0 0
"""


def test_seed_ges2_input_as_given(caplog):
    pw = read_pw_input(GES2)
    assert "cellldm(1)" in caplog.text  # the seed's typo is read as celldm(1), with a warning
    alat = 6.67592990 * units.BOHR_ANG
    assert np.allclose(pw.atoms.cell.lengths(), [0.991634235 * alat, 0.991634235 * alat, 3.114821979 * alat])
    assert pw.atoms.get_chemical_symbols() == ["Ge", "Ge", "S", "S", "S", "S"]
    assert np.allclose(pw.atoms.get_masses(), [72.64, 72.64, 32.065, 32.065, 32.065, 32.065])
    assert pw.get("electrons", "conv_thr") == 1e-10
    assert pw.get("system", "vdw_corr") == "grimme-d2"


def test_canonical_writer_round_trips_bit_for_bit():
    pw = read_pw_input(GES2)
    text = pw.to_text()
    again = parse_pw_input(text)
    assert again.to_text() == text
    assert np.array_equal(again.atoms.get_scaled_positions(), pw.atoms.get_scaled_positions())


@pytest.mark.parametrize("ibrav, lattice, cell, unit, p", [
    (0, "", "CELL_PARAMETERS angstrom\n -2.715 0 2.715\n 0 2.715 2.715\n -2.715 2.715 0\n", "crystal", 0.25),
    (0, "celldm(1)=10.26144,", "CELL_PARAMETERS alat\n -0.5 0 0.5\n 0 0.5 0.5\n -0.5 0.5 0\n", "crystal", 0.25),
    (0, "", "CELL_PARAMETERS bohr\n -5.13072 0 5.13072\n 0 5.13072 5.13072\n -5.13072 5.13072 0\n", "angstrom",
     1.35753004976212),
    (2, "celldm(1)=10.26144,", "", "alat", 0.25),
])
def test_units_of_cells_and_positions_agree(ibrav, lattice, cell, unit, p):
    pw = parse_pw_input(SI_TEXT.format(ibrav=ibrav, lattice=lattice, cell=cell, unit=unit, p=p))
    a = 10.26144 * units.BOHR_ANG if "bohr" in cell or lattice else 5.43
    assert np.isclose(pw.atoms.get_volume(), a**3 / 4, rtol=1e-6)
    d = pw.atoms.get_distance(0, 1, mic=True)
    assert np.isclose(d, np.sqrt(3) / 4 * a, rtol=1e-8)


def test_template_filled_like_thirdorder():
    unit = read_pw_input(GES2).atoms
    text = fill_template(GES2_TEMPLATE.read_text(), unit.repeat((3, 3, 1)))
    pw = parse_pw_input(text)
    assert len(pw.atoms) == 54
    assert "CELL_PARAMETERS angstrom" in text and "ATOMIC_POSITIONS crystal" in text
    assert np.allclose(pw.atoms.cell.lengths(), unit.cell.lengths() * [3, 3, 1])


def test_template_without_placeholders_is_refused(tmp_path):
    bad = tmp_path / "bad.sc.in"
    bad.write_text(GES2_TEMPLATE.read_text().replace("##COORDINATES##", ""))
    with pytest.raises(InputFileError, match=r"bad.sc.in: supercell template lacks the placeholder\(s\) ##COORDINATES##"):
        fill_template(bad.read_text(), read_pw_input(GES2).atoms, str(bad))


@pytest.mark.parametrize("mutate, reason", [
    (lambda t: t.replace("nat=2", "nat=3"), "nat = 3 but ATOMIC_POSITIONS lists 2 atoms"),
    (lambda t: t.replace(" Si 0.0 0.0 0.0", " Ge 0.0 0.0 0.0"), "species 'Ge' is not in ATOMIC_SPECIES"),
    (lambda t: t.replace("&electrons\n/", "&electrons"), "is not closed"),
    (lambda t: t.replace(" Si 0.0 0.0 0.0", " Si 0.0 x 0.0"), "expected a number"),
])
def test_bad_inputs_name_file_line_and_reason(tmp_path, mutate, reason):
    text = mutate(SI_TEXT.format(ibrav=0, lattice="", unit="crystal", p=0.25,
                                 cell="CELL_PARAMETERS angstrom\n -2.715 0 2.715\n 0 2.715 2.715\n -2.715 2.715 0\n"))
    path = tmp_path / "user.in"
    path.write_text(text)
    with pytest.raises(InputFileError) as exc:
        read_pw_input(path)
    assert str(exc.value).startswith(str(path)) and reason in str(exc.value)


LATTICE_TEXT = """&control
  calculation='scf'
/
&system
  ibrav = {ibrav}, {lattice} nat=1, ntyp=1, ecutwfc=16
/
ATOMIC_SPECIES
 Si 28.0855 Si.pz-vbc.UPF
ATOMIC_POSITIONS crystal
 Si 0.0 0.0 0.0
K_POINTS gamma
"""


@pytest.mark.parametrize("ibrav, lattice, missing", [
    (4, "celldm(1)=8.0,", "celldm(3)"),
    (6, "celldm(1)=8.0,", "celldm(3)"),
    (8, "celldm(1)=8.0, celldm(3)=1.5,", "celldm(2)"),
    (8, "celldm(1)=8.0, celldm(2)=1.2,", "celldm(3)"),
    (4, "A=4.0,", "celldm(3) in &SYSTEM (or C with A)"),
    (8, "A=4.0, C=6.0,", "celldm(2) in &SYSTEM (or B with A)"),
])
def test_ibrav_lattice_without_axis_ratio_is_refused(tmp_path, ibrav, lattice, missing):
    """pw.x needs c/a (ibrav 4, 6, 8) and b/a (ibrav 8); without them the cell used to hold NaN and the
    canonical input 'nan' in CELL_PARAMETERS."""
    path = tmp_path / "cell.in"
    path.write_text(LATTICE_TEXT.format(ibrav=ibrav, lattice=lattice))
    with pytest.raises(InputFileError) as exc:
        read_pw_input(path)
    text = str(exc.value)
    assert text.startswith(str(path)) and f"ibrav = {ibrav}" in text and missing in text


@pytest.mark.parametrize("ibrav, lattice, lengths_ang, gamma_deg", [
    (4, "A=4.0, C=6.4,", [4.0, 4.0, 6.4], 120.0),
    (4, "celldm(1)=8.0, celldm(3)=1.6,", [8.0 * units.BOHR_ANG, 8.0 * units.BOHR_ANG, 12.8 * units.BOHR_ANG], 120.0),
    (6, "celldm(1)=8.0, celldm(3)=1.5,", [8.0 * units.BOHR_ANG, 8.0 * units.BOHR_ANG, 12.0 * units.BOHR_ANG], 90.0),
    (8, "A=3.0, B=4.0, C=5.0,", [3.0, 4.0, 5.0], 90.0),
    (8, "celldm(1)=6.0, celldm(2)=1.25, celldm(3)=1.5,",
     [6.0 * units.BOHR_ANG, 7.5 * units.BOHR_ANG, 9.0 * units.BOHR_ANG], 90.0),
])
def test_ibrav_lattices_have_the_lengths_and_angles_pw_x_defines(ibrav, lattice, lengths_ang, gamma_deg):
    """ibrav 4: hexagonal (|a1| = |a2| = a, 120 degrees, c along z); 6: tetragonal; 8: orthorhombic
    (pw.x's INPUT_PW), and no NaN reaches the canonical text."""
    pw = parse_pw_input(LATTICE_TEXT.format(ibrav=ibrav, lattice=lattice))
    params = pw.atoms.cell.cellpar()
    assert np.allclose(params[:3], lengths_ang, rtol=1e-12)
    assert np.allclose(params[3:], [90.0, 90.0, gamma_deg], atol=1e-10)
    assert np.isclose(pw.atoms.get_volume(), np.prod(lengths_ang) * np.sin(np.radians(gamma_deg)), rtol=1e-12)
    assert "nan" not in pw.to_text().lower()
