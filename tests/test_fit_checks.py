"""An underdetermined force-constant fit is an error, never a κ (docs/numerics.md, "Is the fit determined?").

* the sow refuses a random set with fewer independent force equations (3N − 3 per supercell) than free
  FC2 + FC3 parameters, before any pw.x input is written;
* the random strategy fits FC3 within the sow's cutoff (pair_cutoff_ang / neighbour_shells);
* reap refuses a normal matrix of deficient rank and an FC2 that does not reproduce the forces.

Forces come from the mock potentials in process; expected κ from the systematic route (finite
differences on phono3py's pairs) on the same potential.
"""
import numpy as np
import pytest

from _ges2_reference import GES2_TEMPLATE, ges2_unitcell, mock_forces, rta_kappa, systematic_kappa
from kappaflow import reap, sow
from kappaflow.errors import ConfigError, KappaflowError
from kappaflow.qe.pwin import read_pw_input

from conftest import REPO
from kappaflow.engine import Engine

MOCK_ENGINE = Engine("mock --model test", "kappaflow-mock-pw test")  # reads no pseudopotential

SI_UNITCELL = REPO / "config/systems/si/Si.scf.in"
SI_TEMPLATE = REPO / "config/systems/si/Si.sc.in"
SI_MESH = [11, 11, 11]


def si_forces(cells):
    from kappaflow.mock.potentials import stillinger_weber_si
    from kappaflow.structure import from_phonopy

    calc = stillinger_weber_si()
    out = []
    for cell in cells:
        atoms = from_phonopy(cell)
        atoms.calc = calc
        out.append(np.asarray(atoms.get_forces(), dtype=np.float64))
    return out


def sown_forces(ph3, manifest, forces_of):
    """The manifest's forces by role and index, as reap.load_forces returns them."""
    cells = {"base": [ph3.supercell], "fc3": ph3.supercells_with_displacements}
    out = {}
    for job in manifest["jobs"]:
        out.setdefault(job["role"], {})[job["index"]] = forces_of([cells[job["role"]][job["index"]]])[0]
    return out


def sow_and_load(unit, settings, template, tmp_path):
    from kappaflow.steps import load_phono3py

    manifest = sow.sow(unit, settings, template, tmp_path / "store", MOCK_ENGINE, disp_yaml_path=tmp_path / "d.yaml")
    return manifest, load_phono3py(tmp_path / "d.yaml")


def si_systematic_kappa():
    ph3 = sow.generate_displacements(read_pw_input(SI_UNITCELL).atoms,
                                     sow.SowSettings(supercell_matrix=[2, 2, 2], pair_cutoff_ang=4.0))
    base = si_forces([ph3.supercell])[0]
    cells = ph3.supercells_with_displacements
    ph3.forces = np.array([f - base if c is not None else np.zeros_like(base)
                           for f, c in zip(si_forces([c if c is not None else ph3.supercell for c in cells]), cells)])
    ph3.produce_fc3(is_compact_fc=False)
    ph3.symmetrize_fc3()
    ph3.symmetrize_fc2()
    from kappaflow import bte

    return bte.run_phono3py(ph3, SI_MESH, [300.0], "rta", True, None, None).kappa_w_per_mk[0]


# --- the sow -------------------------------------------------------------------------------------
def test_sow_refuses_one_random_si_supercell_without_cutoff(tmp_path):
    """The demo's Si (2x2x2, 16 atoms) with n_random 1 and no FC3 cutoff: 45 equations for 57 parameters
    (FC2 8 + FC3 49); it used to give κ = 0.6 W/mK instead of ~300."""
    settings = sow.SowSettings(supercell_matrix=[2, 2, 2], strategy="random", n_random=1)
    with pytest.raises(ConfigError, match=r"n_random = 1: 57 free force-constant parameters \(FC2 8 \+ FC3 49, "
                                          r"no FC3 cutoff\) but 1 supercells of 16 atoms give only 45 "
                                          r"independent force equations.*at least 2 supercells"):
        sow.sow(read_pw_input(SI_UNITCELL).atoms, settings, SI_TEMPLATE, tmp_path / "store", MOCK_ENGINE)
    assert not (tmp_path / "store").exists()  # not one pw.x input written


def test_sow_refuses_four_random_ges2_supercells_without_cutoff(tmp_path):
    """GeS2 3x3x1: 4925 parameters without a cutoff, 406 within thirdorder's -3; 4 supercells give 636
    equations (they used to give κ = 0.47 W/mK)."""
    unit = ges2_unitcell()
    settings = sow.SowSettings(supercell_matrix=[3, 3, 1], strategy="random", n_random=4)
    with pytest.raises(ConfigError, match=r"4925 free force-constant parameters.* 636 independent"):
        sow.sow(unit, settings, GES2_TEMPLATE, tmp_path / "store", MOCK_ENGINE)
    settings.neighbour_shells = 3
    counts = sow.check_random_set_determined(unit, settings)
    assert counts["n_parameters"] == 406 and counts["n_force_equations"] == 636
    assert counts["fc3_cutoff_ang"] == pytest.approx(4.304, abs=1e-3)


# --- the random fit honours the cutoff -------------------------------------------------------------
def test_random_si_fit_within_the_pair_cutoff_gives_the_systematic_kappa(tmp_path):
    """One random supercell suffices within Si's 4.0 Å cutoff (25 parameters, 45 equations)."""
    unit = read_pw_input(SI_UNITCELL).atoms
    settings = sow.SowSettings(supercell_matrix=[2, 2, 2], strategy="random", n_random=1, pair_cutoff_ang=4.0)
    manifest, ph3 = sow_and_load(unit, settings, SI_TEMPLATE, tmp_path)
    forces = sown_forces(ph3, manifest, si_forces)
    reap.produce_force_constants(ph3, manifest, forces, "auto")
    from kappaflow import bte

    kappa = bte.run_phono3py(ph3, SI_MESH, [300.0], "rta", True, None, None).kappa_w_per_mk[0]
    reference = si_systematic_kappa()
    print("Si kxx (W/mK): random-1 within 4 Å", kappa[0, 0], " systematic", reference[0, 0])
    np.testing.assert_allclose(kappa[0, 0], reference[0, 0], rtol=0.01)  # measured +0.3 %
    assert manifest["fc3_cutoff_ang"] == 4.0
    report = reap.fit_force_constants(ph3, manifest, forces, "auto", reap.DEFAULT_MAX_FC2_FORCE_RESIDUAL)
    assert (report.n_parameters_fc2, report.n_parameters_fc3, report.rank) == (8, 17, 25)
    assert report.fc2_force_residual < 0.02


def test_four_random_ges2_supercells_within_three_shells_give_the_systematic_kappa(tmp_path):
    settings = sow.SowSettings(supercell_matrix=[3, 3, 1], strategy="random", n_random=4, neighbour_shells=3)
    manifest, ph3 = sow_and_load(ges2_unitcell(), settings, GES2_TEMPLATE, tmp_path)
    reap.produce_force_constants(ph3, manifest, sown_forces(ph3, manifest, mock_forces), "auto")
    kappa, reference = rta_kappa(ph3)[0], systematic_kappa()[0]
    print("GeS2 kxx, kzz (W/mK): random-4 within -3", kappa[0, 0], kappa[2, 2], " systematic", reference[0, 0],
          reference[2, 2])
    # measured +0.6 % (xx), -0.2 % (zz): four snapshots, quartic terms of 0.01 Å leak into FC3
    np.testing.assert_allclose(np.diagonal(kappa), np.diagonal(reference), rtol=0.02)
    assert manifest["fc3_cutoff_ang"] == pytest.approx(4.304, abs=1e-3)


# --- reap ------------------------------------------------------------------------------------------
def test_reap_refuses_a_set_of_deficient_rank(tmp_path):
    """Enough equations by count (90 for 57 parameters) but the second supercell is the first one
    mirrored (u, −u): the u⊗u terms repeat, the FC3 columns do not reach full rank."""
    unit = read_pw_input(SI_UNITCELL).atoms
    settings = sow.SowSettings(supercell_matrix=[2, 2, 2], strategy="random", n_random=2)
    manifest, ph3 = sow_and_load(unit, settings, SI_TEMPLATE, tmp_path)
    u = np.asarray(ph3.displacements)
    ph3.displacements = np.array([u[0], -u[0]])
    forces = sown_forces(ph3, manifest, si_forces)
    with pytest.raises(KappaflowError,
                       match=r"the 2 displaced supercells determine only \d+ of the 57 free force-constant "
                             r"parameters \(FC2 8 \+ FC3 49, no FC3 cutoff"):
        reap.produce_force_constants(ph3, manifest, forces, "auto")


def test_reap_refuses_forces_the_fitted_fc2_does_not_reproduce(tmp_path):
    """Rule reap on pw.x outputs whose force lines were shuffled among the atoms (positions intact, so
    every output maps onto its supercell): a determined set, but no FC2 reproduces those forces."""
    import _thirdorder_sow as third
    from kappaflow import steps
    from kappaflow.mock.potentials import stillinger_weber_si

    unit = read_pw_input(SI_UNITCELL).atoms
    settings = sow.SowSettings(supercell_matrix=[2, 2, 2], strategy="random", n_random=3, pair_cutoff_ang=4.0)
    manifest, _ = sow_and_load(unit, settings, SI_TEMPLATE, tmp_path)
    sow.write_manifest(tmp_path / "manifest.json", manifest)
    calc, rng = stillinger_weber_si(), np.random.default_rng(0)
    for job in manifest["jobs"]:
        lines = third.mock_output_text(tmp_path / "store" / job["key"] / "pw.in", calc).split("\n")
        at = [n for n, line in enumerate(lines) if line.split()[:1] == ["atom"] and "force =" in line]
        vectors = [lines[n].split("=")[1] for n in at]
        for n, v in zip(at, rng.permutation(vectors)):
            lines[n] = lines[n].split("=")[0] + "=" + v
        (tmp_path / "store" / job["key"] / "pw.out").write_text("\n".join(lines))
    out = {k: tmp_path / "fc" / k for k in ("fc2", "fc3", "fc2_shengbte", "fc3_shengbte")}
    (tmp_path / "fc").mkdir()
    with pytest.raises(KappaflowError, match=r"reproduces the forces of the 3 displaced supercells only to a "
                                             r"relative residual .* reap.max_fc2_force_residual = 0.2"):
        steps.run_reap(tmp_path / "manifest.json", tmp_path / "d.yaml", tmp_path / "store",
                       {"fc_calculator": "auto", "atom_map_tolerance_ang": 2e-3, "max_fc2_force_residual": 0.2},
                       out)
    assert not out["fc3"].exists()


def test_own_symfc_fit_is_phono3pys(tmp_path):
    """reap's checked fit solves the very normal equations of phono3py's produce_fc3(fc_calculator='symfc')
    with the same cutoff."""
    unit = read_pw_input(SI_UNITCELL).atoms
    settings = sow.SowSettings(supercell_matrix=[2, 2, 2], strategy="random", n_random=2, pair_cutoff_ang=4.0)
    manifest, ph3 = sow_and_load(unit, settings, SI_TEMPLATE, tmp_path)
    reap.fit_force_constants(ph3, manifest, sown_forces(ph3, manifest, si_forces), "auto")
    fc2, fc3 = np.array(ph3.fc2), np.array(ph3.fc3)
    ph3.produce_fc3(fc_calculator="symfc", fc_calculator_options="cutoff=4.0", is_compact_fc=False)
    assert np.abs(ph3.fc2 - fc2).max() < 1e-10 and np.abs(ph3.fc3 - fc3).max() < 1e-9
