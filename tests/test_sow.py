"""Sow: thirdorder's neighbour-shell rule, phono3py's counts for GeS2, hash-keyed store."""
import numpy as np
import pytest

from kappaflow.engine import Engine
from kappaflow.qe.pwin import read_pw_input
from kappaflow.sow import SowSettings, generate_displacements, shell_cutoff_ang, sow

from conftest import REPO

GES2 = REPO / "config/systems/ges2/GeS2.scf.in"
GES2_TEMPLATE = REPO / "config/systems/ges2/GeS2.sc.scf.in"
MOCK = Engine("mock --model ges2-morse", "kappaflow-mock-pw test")  # reads no pseudopotential


@pytest.fixture(scope="module")
def ges2():
    return read_pw_input(GES2).atoms


def test_thirdorder_minus3_cutoff_for_ges2(ges2):
    # facts.md: "-3" -> 4.304 Å, set by Ge: (4.166 + 4.441)/2 (thirdorder's calc_frange)
    assert shell_cutoff_ang(ges2, [3, 3, 1], 3) == pytest.approx(4.304, abs=1e-3)


def test_ges2_systematic_count_is_phono3pys(ges2, tmp_path):
    settings = SowSettings(supercell_matrix=[3, 3, 1], neighbour_shells=3)
    manifest = sow(ges2, settings, GES2_TEMPLATE, tmp_path, MOCK, {"control": {"pseudo_dir": "/p"}})
    assert manifest["n_displaced_fc3"] == 278  # facts.md: phono3py at 4.304 Å
    keys = {j["key"] for j in manifest["jobs"]}
    # phono3py emits a few identical supercells; the store computes each once
    ph3 = generate_displacements(ges2, settings)
    cells = [c for c in ph3.supercells_with_displacements if c is not None]
    distinct = {np.round(c.scaled_positions, 10).tobytes() for c in cells}
    base = np.round(ph3.supercell.scaled_positions, 10).tobytes()
    assert len(keys) == len(distinct | {base})
    for key in keys:
        assert (tmp_path / key / "pw.in").exists()


def test_existing_inputs_are_never_rewritten(ges2, tmp_path):
    settings = SowSettings(supercell_matrix=[3, 3, 1], pair_cutoff_ang=3.0)
    first = sow(ges2, settings, GES2_TEMPLATE, tmp_path, MOCK)
    stamps = {j["key"]: (tmp_path / j["key"] / "pw.in").stat().st_mtime_ns for j in first["jobs"]}
    settings.pair_cutoff_ang = 4.0
    second = sow(ges2, settings, GES2_TEMPLATE, tmp_path, MOCK)
    assert set(stamps) < {j["key"] for j in second["jobs"]}
    for key, stamp in stamps.items():
        assert (tmp_path / key / "pw.in").stat().st_mtime_ns == stamp


def test_engine_is_part_of_the_key(ges2, tmp_path):
    settings = SowSettings(supercell_matrix=[3, 3, 1], pair_cutoff_ang=2.5)
    a = {j["key"] for j in sow(ges2, settings, GES2_TEMPLATE, tmp_path, Engine("mock --model x", "v"))["jobs"]}
    b = {j["key"] for j in sow(ges2, settings, GES2_TEMPLATE, tmp_path, MOCK)["jobs"]}
    assert a.isdisjoint(b)  # more on the key: tests/test_store_key.py


def test_random_strategy_displaces_every_atom(ges2, tmp_path):
    settings = SowSettings(supercell_matrix=[3, 3, 1], strategy="random", n_random=3, amplitude_ang=0.03)
    ph3 = generate_displacements(ges2, settings)
    disp = np.asarray(ph3.dataset["displacements"])
    assert disp.shape == (3, 54, 3)
    assert np.allclose(np.linalg.norm(disp, axis=-1), 0.03)
    # more snapshots keep the first ones: their pw.x results are reused
    more = np.asarray(generate_displacements(
        ges2, SowSettings(supercell_matrix=[3, 3, 1], strategy="random", n_random=5,
                          amplitude_ang=0.03)).dataset["displacements"])
    np.testing.assert_array_equal(more[:3], disp)
    assert not np.allclose(more[3], more[4])
    supercells = generate_displacements(ges2, settings).supercells_with_displacements
    assert len(supercells) == 3 and all(s is not None for s in supercells)
