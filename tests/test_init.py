"""`kappaflow init` as a user types it: CIFs of Si and of the seed's GeS2 written with ASE from the shipped
pw.x inputs give system files whose dry run resolves; a species without a pseudopotential, a malformed
CIF, overlapping atoms and an existing name stop with the file and the problem.

Outside references: spglib's space group of the shipped input (227 for Si, 137 for GeS2), the shipped
cell's volume, and the seed thesis's own choice for GeS2 (3x3x1 supercell, 3 neighbour shells:
config/systems/ges2.yaml), which the plan-based proposal should reach by itself."""
import os
import subprocess

import ase.io
import pytest
import spglib
import yaml

from conftest import REPO, copy_workflow, run_snakemake
from kappaflow.qe.pwin import read_pw_input

DEBIAN_PSEUDO = "/usr/share/espresso/pseudo"  # apt quantum-espresso-data (scripts/install.sh)
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not os.path.isdir(DEBIAN_PSEUDO), reason="needs Debian's quantum-espresso-data")]


def kappaflow(work, *args):
    return subprocess.run(["kappaflow", *args], cwd=work, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    work = copy_workflow(tmp_path_factory.mktemp("init"))
    for name, path in (("Si", "config/systems/si/Si.scf.in"), ("GeS2", "config/systems/ges2/GeS2.scf.in")):
        ase.io.write(work / f"{name}.cif", read_pw_input(REPO / path).atoms)
    # Debian ships Ge but no S pseudopotential: a directory with Debian's Ge and a stand-in S file (init reads
    # only its name and header; a dry run needs no pseudopotential)
    pp = work / "pp"
    pp.mkdir()
    (pp / "Ge.pbe-kjpaw.UPF").symlink_to(f"{DEBIAN_PSEUDO}/Ge.pbe-kjpaw.UPF")
    (pp / "S.pbe-n-rrkjus_psl.1.0.0.UPF").write_text(
        '<UPF version="2.0.1">\n<PP_HEADER element="S" pseudo_type="US" functional="PBE"/>\n</UPF>\n')
    return work


def _space_group(atoms) -> int:
    return spglib.get_symmetry_dataset((atoms.cell.array, atoms.get_scaled_positions(), atoms.numbers),
                                       symprec=1e-3).number


def test_si_from_a_cif_dry_runs(work):
    proc = kappaflow(work, "init", "Si.cif", "--name", "si_cif", "--pseudo-dir", DEBIAN_PSEUDO, "--functional", "pz",
                     "--ecutwfc", "16")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout + proc.stderr
    assert "Fd-3m (No. 227)" in out and "pw.x runs" in out  # the space group and the plan's cost table
    system = yaml.safe_load((work / "config/systems/si_cif.yaml").read_text())
    unit = read_pw_input(work / "config/systems" / system["unitcell"]).atoms
    shipped = read_pw_input(REPO / "config/systems/si/Si.scf.in").atoms
    assert len(unit) == 2 and _space_group(unit) == _space_group(shipped) == 227
    assert unit.cell.volume == pytest.approx(shipped.cell.volume, rel=1e-6)
    assert system["sow"]["supercell"] == [3, 3, 3] and system["sow"]["neighbour_shells"] == 3
    template = (work / "config/systems" / system["supercell_template"]).read_text()
    assert all(p in template for p in ("##NATOMS##", "##CELL##", "##COORDINATES##"))
    assert "Si.pz-vbc.UPF" in template and "3 3 3 0 0 0" in template  # 9x9x9 / 3x3x3
    dry = run_snakemake(work, "-n", "--configfile", "config/systems/si_cif.yaml")
    assert "relax" in dry.stdout and "sow" in dry.stdout
    again = kappaflow(work, "init", "Si.cif", "--name", "si_cif", "--pseudo-dir", DEBIAN_PSEUDO, "--functional", "pz",
                      "--ecutwfc", "16")
    assert again.returncode == 1 and "si_cif.yaml exists" in again.stderr and "--force" in again.stderr


def test_ges2_from_a_cif_reaches_the_theses_supercell_and_dry_runs(work):
    proc = kappaflow(work, "init", "GeS2.cif", "--name", "ges2_cif", "--pseudo-dir", "pp", "--functional", "pbe",
                     "--ecutwfc", "65", "--ecutrho", "520")
    assert proc.returncode == 0, proc.stderr
    system = yaml.safe_load((work / "config/systems/ges2_cif.yaml").read_text())
    thesis = yaml.safe_load((REPO / "config/systems/ges2.yaml").read_text())["sow"]
    assert system["sow"]["supercell"] == thesis["supercell"] and system["sow"]["neighbour_shells"] == 3
    unit = read_pw_input(work / "config/systems" / system["unitcell"]).atoms
    shipped = read_pw_input(REPO / "config/systems/ges2/GeS2.scf.in").atoms
    assert len(unit) == 6 and _space_group(unit) == _space_group(shipped) == 137
    assert unit.cell.volume == pytest.approx(shipped.cell.volume, rel=1e-6)
    text = (work / "config/systems" / system["unitcell"]).read_text()
    assert "ecutrho = 520" in text and str(work / "pp") in text  # the directory as an absolute path
    run_snakemake(work, "-n", "--configfile", "config/systems/ges2_cif.yaml")


def test_bad_structures_and_a_missing_pseudopotential_stop_with_the_file_and_the_problem(work):
    proc = kappaflow(work, "init", "GeS2.cif", "--name", "ges2_debian", "--pseudo-dir", DEBIAN_PSEUDO,
                     "--functional", "pbe", "--ecutwfc", "65")
    assert proc.returncode == 1
    assert "GeS2.cif: no pbe pseudopotential for S in /usr/share/espresso/pseudo" in proc.stderr, proc.stderr
    assert not (work / "config/systems/ges2_debian.yaml").exists()
    (work / "bad.cif").write_text("data_bad\n_cell_length_a 5.43\n_cell_length_b\nloop_\n_atom_site_label\nSi1 0 0\n")
    proc = kappaflow(work, "init", "bad.cif", "--pseudo-dir", DEBIAN_PSEUDO, "--functional", "pz")
    assert proc.returncode == 1 and "bad.cif: ASE cannot read a structure from it" in proc.stderr, proc.stderr
    si = read_pw_input(REPO / "config/systems/si/Si.scf.in").atoms
    si.append("Si")
    si.positions[-1] = si.positions[0] + [0.1, 0, 0]
    ase.io.write(work / "overlap.cif", si)
    proc = kappaflow(work, "init", "overlap.cif", "--pseudo-dir", DEBIAN_PSEUDO, "--functional", "pz")
    assert proc.returncode == 1 and "overlap.cif: atoms 1 and 3 (Si, Si) are 0.100 Å apart" in proc.stderr, proc.stderr
    proc = kappaflow(work, "init", "Si.cif", "--name", "si_nocut", "--pseudo-dir", DEBIAN_PSEUDO, "--functional", "pz")
    assert proc.returncode == 1 and "Si.pz-vbc.UPF: no suggested cutoff" in proc.stderr and "--ecutwfc" in proc.stderr
