"""Importing an existing thirdorder set (BASE.*/DISP.* pw.x inputs + outputs) into reap.

The set is built the way thirdorder_espresso.py sows it (tests/_thirdorder_sow.py, from
/work/shared/reference/formats.md §1: its irreducible triplets, displacement rule, file names, atom order
and template filling), for the seed's GeS2 (3 3 1, cutoff -3), with forces from the mock pw.x's GeS2
potential written as pw.x outputs.  The expected κ is the systematic route's on the same potential
(tests/_ges2_reference.py).
"""
import json
import re
import shutil

import numpy as np
import pytest
import yaml

import _thirdorder_sow as third
from _ges2_reference import (GES2_TEMPLATE, MESH, SIGMA_THZ, ges2_unitcell, mock_forces, rta_kappa,
                             systematic_kappa)
from kappaflow import thirdorder_import as ti
from kappaflow import units
from kappaflow.bte import read_kappa_csv
from kappaflow.errors import ConfigError, InputFileError
from kappaflow.sow import SowSettings

from conftest import REPO, mock_invocations, run_snakemake

MODEL = "ges2-morse"


def labels_of(atoms):
    return [str(s) for s in atoms.arrays.get("qe_labels", atoms.get_chemical_symbols())]


def sow_ges2(directory, cutoff=-3, outputs=True) -> third.SownSet:
    unit = ges2_unitcell()
    sown = third.sow(directory, np.asarray(unit.cell), unit.get_scaled_positions(), labels_of(unit),
                     (3, 3, 1), cutoff, GES2_TEMPLATE)
    if outputs:
        third.write_mock_outputs(directory, [sown.base_name] + sown.disp_names, MODEL)
    return sown


@pytest.fixture(scope="module")
def ges2_set(tmp_path_factory):
    directory = tmp_path_factory.mktemp("thirdorder") / "ges2-3rd"
    return directory, sow_ges2(directory)


def settings(**kw):
    return SowSettings(supercell_matrix=[3, 3, 1], strategy="thirdorder", **kw)


def phonopy_order(sown: third.SownSet, ph3) -> np.ndarray:
    """thirdorder atom t -> phonopy atom, by position (independent of kappaflow's matching)."""
    lattice = np.asarray(ph3.supercell.cell)
    frac = np.asarray(ph3.supercell.scaled_positions)
    order = []
    for x in sown.supercell.frac:
        d = frac - x
        d -= np.round(d)
        order.append(int(np.argmin(np.linalg.norm(d @ lattice, axis=1))))
    assert sorted(order) == list(range(len(order)))
    return np.array(order)


def test_the_set_is_thirdorders_212_runs_for_ges2(ges2_set):
    """The seed thesis ran thirdorder on GeS2 3 3 1 -3: 212 pw.x runs = 4 x 53 irreducible pairs."""
    directory, sown = ges2_set
    assert sown.wedge.frange_ang == pytest.approx(4.304, abs=1e-3)  # facts.md: (4.166 + 4.441) / 2
    assert len(sown.wedge.list4) == 53 and len(sown.disp_names) == 212
    assert sown.disp_names[0] == "DISP.GeS2.sc.scf.in.001" and sown.disp_names[-1] == "DISP.GeS2.sc.scf.in.212"
    net = np.abs(sown.displacements_ang).sum(axis=(1, 2))
    assert (net == 0).sum() > 0  # (+h, -h) on one atom: kept, like thirdorder does
    assert (directory / "BASE.GeS2.sc.scf.in.out").is_file()


def test_import_recovers_the_displacement_fields(ges2_set, tmp_path):
    import phono3py

    directory, sown = ges2_set
    manifest = ti.import_set(ges2_unitcell(), settings(), directory, "{input}.out",
                             disp_yaml_path=tmp_path / "d.yaml")
    ph3 = phono3py.load(str(tmp_path / "d.yaml"), primitive_matrix=np.eye(3).tolist(), produce_fc=False)
    order = phonopy_order(sown, ph3)
    expected = np.zeros_like(sown.displacements_ang)
    expected[:, order] = sown.displacements_ang
    # 15 significant digits of fractional coordinates in the files
    assert np.abs(np.asarray(ph3.displacements) - expected).max() < 1e-12
    assert manifest["n_supercells_total"] == 212
    assert [j["role"] for j in manifest["jobs"]].count("base") == 1
    assert abs(manifest["amplitude_ang"] - 0.01) < 1e-9


def test_import_records_the_cutoff_from_the_set_or_the_config(ges2_set):
    directory, _ = ges2_set
    unit = ges2_unitcell()
    from_set = ti.import_set(unit, settings(), directory, "{input}.out")
    # largest displaced pair: 4.166 Å (Ge-Ge); next distance 4.441 Å: the midpoint is thirdorder's -3
    assert from_set["import"]["largest_displaced_pair_ang"] == pytest.approx(4.1663, abs=1e-4)
    assert from_set["fc3_cutoff_ang"] == pytest.approx(4.304, abs=1e-3)
    from_config = ti.import_set(unit, settings(neighbour_shells=3), directory, "{input}.out")
    assert from_config["fc3_cutoff_ang"] == pytest.approx(4.304, abs=1e-3)
    assert "neighbour_shells = 3" in from_config["import"]["cutoff_source"]
    # a cutoff smaller than the set's pairs: the set was sown with another one
    with pytest.raises(ConfigError, match=r"DISP\.GeS2\.sc\.scf\.in\.\d+ displaces two atoms 4\.166.* larger cutoff"):
        ti.import_set(unit, settings(neighbour_shells=2), directory, "{input}.out")


def test_import_reorders_forces_into_phonopy_order(ges2_set, tmp_path):
    """Forces read from the imported outputs equal the potential's forces on phonopy's supercell."""
    import phono3py

    from kappaflow.reap import load_forces

    directory, sown = ges2_set
    manifest = ti.import_set(ges2_unitcell(), settings(), directory, "{input}.out",
                             disp_yaml_path=tmp_path / "d.yaml")
    forces = load_forces(manifest, store_dir=None)
    ph3 = phono3py.load(str(tmp_path / "d.yaml"), primitive_matrix=np.eye(3).tolist(), produce_fc=False)
    half_last_digit = float(units.ry_per_bohr_to_ev_per_ang(0.5e-8))  # pw.x prints 8 decimals in Ry/au
    for index in (0, 7, 150):
        reference = mock_forces([ph3.supercells_with_displacements[index]])[0]
        assert np.abs(forces["fc3"][index] - reference).max() <= half_last_digit * 1.001


def test_disp_files_in_their_own_atom_order(ges2_set, tmp_path):
    """A DISP input (and so its output) listing the atoms in another order than BASE is matched by
    position: same displacement field, same forces; an atom far from every BASE site is named."""
    from kappaflow.qe.pwin import read_pw_input
    from kappaflow.reap import load_forces

    directory, sown = ges2_set
    copy = tmp_path / "shuffled"
    shutil.copytree(directory, copy)
    name = sown.disp_names[5]
    lines = (copy / name).read_text().split("\n")
    start = lines.index("ATOMIC_POSITIONS crystal") + 1
    rows = lines[start:start + 54]
    order = np.random.default_rng(3).permutation(54)
    lines[start:start + 54] = [rows[i] for i in order]
    (copy / name).write_text("\n".join(lines))
    third.write_mock_outputs(copy, [name], MODEL)
    unit = ges2_unitcell()
    reference = ti.import_set(unit, settings(), directory, "{input}.out", disp_yaml_path=tmp_path / "a.yaml")
    shuffled = ti.import_set(unit, settings(), copy, "{input}.out", disp_yaml_path=tmp_path / "b.yaml")
    assert (tmp_path / "a.yaml").read_text().replace(str(directory), "") == \
        (tmp_path / "b.yaml").read_text().replace(str(copy), "")
    f_ref, f_shuffled = load_forces(reference, None), load_forces(shuffled, None)
    assert np.array_equal(f_ref["fc3"][5], f_shuffled["fc3"][5])
    # an atom moved by 0.8 Å: not a displacement of BASE, the file and atom are named
    atoms = read_pw_input(copy / name).atoms
    lines[start] = lines[start].split()[0] + " " + " ".join(
        f"{x:.12f}" for x in np.asarray(atoms.get_scaled_positions(wrap=False))[0] + [0.8 / 10.5, 0, 0])
    (copy / name).write_text("\n".join(lines))
    with pytest.raises(InputFileError, match=re.escape(name) + r": atom 1 .* from the nearest site of the BASE "
                                             r"supercell BASE\.GeS2\.sc\.scf\.in"):
        ti.import_set(unit, settings(), copy, "{input}.out")


def test_imported_set_gives_the_kappa_of_the_systematic_route(ges2_set, workspace):
    """snakemake with sow.strategy thirdorder on thirdorder's GeS2 set: no pw.x job runs, the stability
    gate and reap fit with the set's cutoff, and κ equals the systematic route's (another displacement
    set, finite differences) on the same potential.  Without the cutoff symfc fitted every triplet of the
    supercell, FC2 came out ~4000x too small and κ was off by orders of magnitude."""
    directory, _ = ges2_set
    config = {"system": "ges2", "name": "imported", "relax": {"enabled": False},
              "dft": {"pw_command": f"kappaflow-mock-pw --model {MODEL}"},
              "sow": {"strategy": "thirdorder", "thirdorder_dir": str(directory)},
              # the reference's mesh and smearing (tests/_ges2_reference.py says why not 11x11x4)
              "bte": {"mesh": MESH, "sigma_thz": SIGMA_THZ, "temperatures": [300]}}
    (workspace / "imported.yaml").write_text(yaml.safe_dump(config))
    log = workspace / "mock.log"
    run_snakemake(workspace, "--configfile", "imported.yaml", env={"KAPPAFLOW_MOCK_PW_LOG": str(log)})
    assert mock_invocations(log) == []  # the imported outputs are used as they are
    kappa = read_kappa_csv(workspace / "results/imported/bte/kappa.csv").kappa_w_per_mk[0]
    reference = systematic_kappa()[0]
    print("kxx, kzz (W/mK) imported:", kappa[0, 0], kappa[2, 2], " systematic:", reference[0, 0], reference[2, 2])
    # measured 1.3e-4 (xx): both fits are exact to O(h²) on the same forces' physics
    np.testing.assert_allclose(np.diagonal(kappa), np.diagonal(reference), rtol=2e-3)
    manifest = json.loads((workspace / "results/imported/sow/manifest.json").read_text())
    assert manifest["strategy"] == "thirdorder" and manifest["import"]["base_forces_subtracted"]
    assert manifest["fc3_cutoff_ang"] == pytest.approx(4.304, abs=1e-3)
    reap_log = (workspace / "results/imported/logs/reap.log").read_text()
    assert "rank 406" in reap_log and "triplets within 4.3039 Å" in reap_log
    gate = json.loads((workspace / "results/imported/stability/stability.json").read_text())
    assert gate["status"] == "stable" and gate["lowest_frequency_thz"] > -0.05
    cost = (workspace / "results/imported/dft/cost.csv").read_text().splitlines()
    assert len(cost) == 1 + len({j["key"] for j in manifest["jobs"]})


def test_missing_output_is_named(tmp_path):
    directory = tmp_path / "set"
    sow_ges2(directory, outputs=False)
    with pytest.raises(InputFileError, match=r"DISP\.GeS2\.sc\.scf\.in\.001\.out.*not found"):
        ti.find_runs(directory)


def test_set_from_another_unit_cell_is_refused(ges2_set):
    directory, _ = ges2_set
    unit = ges2_unitcell()
    unit.set_cell(np.asarray(unit.cell) * 1.01, scale_atoms=True)
    with pytest.raises(InputFileError, match=r"BASE\.GeS2\.sc\.scf\.in.*supercell vectors differ"):
        ti.import_set(unit, settings(), directory, "{input}.out")


def test_thirdorder_strategy_needs_dir_and_no_relax(tmp_path):
    from kappaflow import config

    base = {"system": "si", "systems_dir": str(REPO / "config/systems")}
    with pytest.raises(ConfigError, match="thirdorder_dir"):
        config.resolve(dict(base, relax={"enabled": False}, sow={"strategy": "thirdorder"}), check_files=False)
    with pytest.raises(ConfigError, match="relax.enabled: false"):
        config.resolve(dict(base, sow={"strategy": "thirdorder", "thirdorder_dir": str(tmp_path)}),
                       check_files=False)
