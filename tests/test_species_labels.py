"""pw.x species labels that split an element (Si1/Si2, Fe1/Fe2) stay distinct for phonopy's symmetry.

Diamond Si with its two basis atoms labelled Si1 and Si2 is, for pw.x, zincblende (two species): space
group F-43m (216), not the diamond's Fd-3m (227).  Merging the labels into 'Si' would raise the symmetry.
"""
import numpy as np
import pytest
import spglib

from kappaflow import dft, steps
from kappaflow.qe.pwin import parse_pw_input
from kappaflow.sow import SowSettings, make_phono3py
from kappaflow.structure import label_classes, read_structure, to_phonopy, write_structure

from conftest import REPO

SI_UNIT = (REPO / "config/systems/si/Si.scf.in").read_text()
LABELLED = (SI_UNIT.replace("ntyp = 1", "ntyp = 2")
            .replace("  Si 28.0855 Si.pz-vbc.UPF", "  Si1 28.0855 Si.pz-vbc.UPF\n  Si2 28.0855 Si.pz-vbc.UPF")
            .replace("  Si 0.00 0.00 0.00", "  Si1 0.00 0.00 0.00").replace("  Si 0.25 0.25 0.25", "  Si2 0.25 0.25 0.25"))


def spglib_number(atoms, types):
    return spglib.get_symmetry_dataset((np.asarray(atoms.cell), atoms.get_scaled_positions(), types),
                                       symprec=1e-5).number


def test_labels_that_split_an_element_lower_phono3pys_symmetry():
    plain = parse_pw_input(SI_UNIT).atoms
    labelled = parse_pw_input(LABELLED).atoms
    # the independent reference: spglib on the two cells, types by element and by label
    assert spglib_number(plain, [14, 14]) == 227 and spglib_number(labelled, [1, 2]) == 216
    assert label_classes(plain) is None and list(label_classes(labelled)) == [1.0, 2.0]
    settings = SowSettings(supercell_matrix=[2, 2, 2], pair_cutoff_ang=2.5)
    assert make_phono3py(plain, settings).primitive_symmetry.dataset.number == 227
    ph3 = make_phono3py(labelled, settings)
    assert ph3.primitive_symmetry.pointgroup_symbol == "-43m"  # 24 operations, not m-3m's 48
    assert len(ph3.symmetry.pointgroup_operations) == 24
    assert to_phonopy(labelled).symbols == ["Si", "Si"]  # elements (isotopes, masses) unchanged


def kappa_xx_300(tmp_path, unit_text, template_text, name):
    """κxx(300 K) through the pipeline's steps: sow, mock pw.x (Stillinger-Weber), reap, phono3py RTA."""
    work = tmp_path / name
    work.mkdir()
    (work / "unit.in").write_text(unit_text)
    (work / "sc.in").write_text(template_text)
    write_structure(work / "unit.json", parse_pw_input(unit_text).atoms, "test")
    sow_cfg = {"supercell": [2, 2, 2], "strategy": "systematic", "amplitude_ang": 0.01, "pair_cutoff_ang": 2.5,
               "neighbour_shells": None, "n_random": 1, "random_seed": 0, "fc2_supercell": None,
               "subtract_residual_forces": True, "symprec": 1e-5}
    mock = "kappaflow-mock-pw --model stillinger-weber-si"
    dft_cfg = {"pw_command": mock, "pseudo_dir": None, "keep_scratch": False}
    manifest = steps.run_sow(work / "unit.json", work / "sc.in", sow_cfg, dft_cfg, work / "dft",
                             work / "manifest.json", work / "disp.yaml")
    for key in sorted({j["key"] for j in manifest["jobs"]}):
        dft.run_pw(work / "dft" / key / "pw.in", work / "dft" / key / "pw.out", mock, log=lambda _: None)
    fc = {"fc2": work / "fc2.hdf5", "fc3": work / "fc3.hdf5", "fc2_shengbte": work / "FORCE_CONSTANTS_2ND",
          "fc3_shengbte": work / "FORCE_CONSTANTS_3RD"}
    steps.run_reap(work / "manifest.json", work / "disp.yaml", work / "dft",
                   {"fc_calculator": "traditional", "max_scf_correction_ev_per_ang": 1e-5}, fc)
    bte_cfg = {"backend": "phono3py", "method": "rta", "mesh": [7, 7, 7], "temperatures": [300],
               "isotopes": False, "boundary_mfp_um": None, "sigma_thz": 0.2}
    result = steps.run_bte(work / "disp.yaml", fc["fc2"], fc["fc3"], bte_cfg, work / "kappa.csv")
    return len(manifest["jobs"]), float(result.kappa_w_per_mk[0, 0, 0]), read_structure(work / "unit.json")


def test_labelled_si_gives_the_diamond_kappa_with_the_lower_symmetry(tmp_path):
    """The same Stillinger-Weber crystal, once with diamond symmetry and once as 'zincblende' Si1/Si2
    (half the operations, more displaced supercells): κ agrees, so the lowered symmetry is used
    consistently by the sow, the reap and the BTE."""
    template = (REPO / "config/systems/si/Si.sc.in").read_text()
    labelled_template = (template.replace("ntyp = 1", "ntyp = 2")
                         .replace("  Si 28.0855 Si.pz-vbc.UPF",
                                  "  Si1 28.0855 Si.pz-vbc.UPF\n  Si2 28.0855 Si.pz-vbc.UPF"))
    n_plain, k_plain, _ = kappa_xx_300(tmp_path, SI_UNIT, template, "diamond")
    n_lab, k_lab, unit = kappa_xx_300(tmp_path, LABELLED, labelled_template, "labelled")
    assert [str(s) for s in unit.arrays["qe_labels"]] == ["Si1", "Si2"]
    assert n_lab > n_plain  # fewer operations: more irreducible displacements
    # measured 7e-5 apart: the lower symmetry computes some displacements that diamond rotates, so the
    # finite-difference errors (O(h^2), h = 0.01 Å) enter differently
    assert k_lab == pytest.approx(k_plain, rel=5e-4)
    stored = sorted((tmp_path / "labelled/dft").glob("*/pw.in"))[0].read_text()
    assert "Si1" in stored and "Si2" in stored
