"""pw.x's if_pos flags: honoured in the relaxation, refused for the displaced supercells.

pw.x 6.7 (Debian) prints the full forces of an atom with if_pos 0 but then sets its fixed components to
zero in what it uses and saves ('Total force', the BFGS, data-file-schema.xml): measured in
docs/robustness.md.  A force set with fixed atoms is never what the force constants need.
"""
import json

import pytest

from kappaflow import engine, steps
from kappaflow.errors import InputFileError
from kappaflow.qe.pwin import IF_POS, parse_pw_input, read_pw_input

from conftest import REPO

FIXED = """&CONTROL
  calculation = 'scf'
  pseudo_dir = '/usr/share/espresso/pseudo'
  tprnfor = .true.
/
&SYSTEM
  ibrav = 0, celldm(1) = 10.26, nat = 2, ntyp = 1, ecutwfc = 16
/
&ELECTRONS
/
ATOMIC_SPECIES
  Si 28.0855 Si.pz-vbc.UPF
CELL_PARAMETERS alat
  -0.5 0.0 0.5
   0.0 0.5 0.5
  -0.5 0.5 0.0
ATOMIC_POSITIONS crystal
  Si 0.00 0.00 0.00 0 0 0
  Si 0.25 0.25 0.25
K_POINTS automatic
  4 4 4 0 0 0
"""
MOCK = "kappaflow-mock-pw --model stillinger-weber-si"


def test_if_pos_flags_are_kept_and_written_back():
    pw = parse_pw_input(FIXED, "fixed.in")
    assert pw.fixed_atoms() == [(0, [0, 0, 0])]
    text = pw.to_text()
    positions = text.split("ATOMIC_POSITIONS crystal\n")[1].splitlines()[:2]
    assert positions[0].split()[4:] == ["0", "0", "0"] and positions[1].split()[4:] == ["1", "1", "1"]
    assert parse_pw_input(text).to_text() == text
    free = parse_pw_input(FIXED.replace(" 0 0 0\n", "\n"))
    assert IF_POS not in free.atoms.arrays and "  1  1  1" not in free.to_text()


def test_the_relax_input_keeps_the_fixed_coordinates(tmp_path):
    """steps.relax_input (rule relax_input) used to drop the flags with a warning: pw.x then relaxed the
    atoms the user had fixed."""
    unit = tmp_path / "unit.in"
    unit.write_text(FIXED)
    steps.relax_input(unit, tmp_path / "relax.in", "/usr/share/espresso/pseudo")
    relaxed = read_pw_input(tmp_path / "relax.in")
    assert relaxed.calculation == "vc-relax" and relaxed.fixed_atoms() == [(0, [0, 0, 0])]


def test_the_mock_relax_keeps_fixed_coordinates(tmp_path):
    """The mock's BFGS (like pw.x's) does not move a coordinate with if_pos 0."""
    from kappaflow.qe.pwout import read_pw_output

    text = FIXED.replace("'scf'", "'relax'").replace("Si 0.25 0.25 0.25", "Si 0.26 0.25 0.24 1 1 0") \
        .replace("&ELECTRONS\n/", "&ELECTRONS\n/\n&IONS\n/")
    (tmp_path / "relax.in").write_text(text)
    import subprocess

    out = subprocess.run(MOCK.split() + ["-in", "relax.in"], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    (tmp_path / "relax.out").write_text(out.stdout)
    run = read_pw_output(tmp_path / "relax.out", expected_n_atoms=2)
    start = parse_pw_input(text).atoms
    final = run.final_positions_frac @ (start.cell.array if run.final_cell_ang is None else run.final_cell_ang)
    assert (final[0] == pytest.approx(start.positions[0], abs=1e-9))  # all three fixed
    assert final[1][2] == pytest.approx(start.positions[1][2], abs=1e-9)  # z fixed
    assert abs(final[1][0] - start.positions[1][0]) > 1e-4  # x relaxed (by ~1e-3 Å)


@pytest.mark.parametrize("fields", [["0", "0"], ["0", "2", "1"], ["x", "0", "1"], ["0", "0", "1", "1"]])
def test_malformed_if_pos_names_the_line(fields):
    bad = FIXED.replace("Si 0.00 0.00 0.00 0 0 0", "Si 0.00 0.00 0.00 " + " ".join(fields))
    with pytest.raises(InputFileError, match=r"bad.in:18: ATOMIC_POSITIONS: .* three if_pos flags"):
        parse_pw_input(bad, "bad.in")


def test_a_store_run_with_a_fixed_atom_is_refused(tmp_path):
    """A force set of the store (a displaced supercell) with if_pos 0 never reaches pw.x."""
    from kappaflow.dft import run_pw

    here = tmp_path / "dft" / "k"
    here.mkdir(parents=True)
    (here / "pw.in").write_text(FIXED)
    eng = engine.Engine("mock --model stillinger-weber-si", engine.detect_version(MOCK))
    (here / engine.IDENTITY_FILE).write_text(json.dumps(engine.identity(eng, FIXED)))
    with pytest.raises(InputFileError, match=r"pw.in:18: atom 1 \(Si\) has if_pos 0 0 0 .* needs every atom free"):
        run_pw(here / "pw.in", here / "pw.out", MOCK, log=lambda _: None)
    assert not (here / "pw.out").exists()


def test_a_template_cannot_fix_atoms_of_a_displaced_supercell():
    from kappaflow import sow

    unit = read_pw_input(REPO / "config/systems/si/Si.scf.in").atoms
    template = (REPO / "config/systems/si/Si.sc.in").read_text().replace(
        "##COORDINATES##", "##COORDINATES##  0 0 0")  # the first atom's line gets flags
    with pytest.raises(InputFileError, match="displaced supercell needs every atom free"):
        sow.supercell_input_text(template, "Si.sc.in", unit)
