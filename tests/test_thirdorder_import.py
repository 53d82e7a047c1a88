"""Importing an existing thirdorder set (BASE.*/DISP.* pw.x inputs + outputs) into reap."""
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from kappaflow import thirdorder_import as ti
from kappaflow import units
from kappaflow.bte import read_kappa_csv
from kappaflow.errors import ConfigError, InputFileError
from kappaflow.qe.pwin import fill_template, read_pw_input
from kappaflow.sow import SowSettings
from kappaflow.structure import to_phonopy

from conftest import REPO, mock_invocations, run_snakemake

UNITCELL = REPO / "config/systems/si/Si.scf.in"
TEMPLATE = REPO / "config/systems/si/Si.sc.in"
MOCK = ["kappaflow-mock-pw", "--model", "stillinger-weber-si"]


def thirdorder_supercell(unit, n=(2, 2, 2)):
    """The undisplaced supercell in thirdorder's atom order: product(nc, nb, na, natoms)."""
    from ase import Atoms

    frac = unit.get_scaled_positions()
    rows = [(frac[i] + (a, b, c)) / np.array(n) for c in range(n[2]) for b in range(n[1])
            for a in range(n[0]) for i in range(len(unit))]
    labels = [str(unit.arrays["qe_labels"][i]) for c in range(n[2]) for b in range(n[1])
              for a in range(n[0]) for i in range(len(unit))]
    atoms = Atoms([lab for lab in labels], cell=np.asarray(unit.cell) * np.array(n)[:, None],
                  scaled_positions=rows, pbc=True)
    atoms.arrays["qe_labels"] = np.array(labels)
    return atoms


def phono3py_pair_set(unit, cutoff):
    from phono3py import Phono3py

    ph3 = Phono3py(to_phonopy(unit), supercell_matrix=[2, 2, 2], primitive_matrix=np.eye(3))
    ph3.generate_displacements(distance=0.01, cutoff_pair_distance=cutoff, is_plusminus="auto")
    return ph3


def write_thirdorder_set(directory, cutoff=3.0, run_pw=True):
    """A thirdorder-layout directory holding phono3py's pair displacements (thirdorder atom order,
    thirdorder file names), pw.x outputs from the mock; returns the phono3py displacement fields."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    unit = read_pw_input(UNITCELL).atoms
    ph3 = phono3py_pair_set(unit, cutoff)
    base = thirdorder_supercell(unit)
    sc = ph3.supercell
    lattice = np.asarray(sc.cell)
    # independent position match: thirdorder atom t <-> phonopy atom p
    order = []
    for t in range(len(base)):
        d = base.get_scaled_positions()[t] - np.asarray(sc.scaled_positions)
        d -= np.round(d)
        order.append(int(np.argmin(np.linalg.norm(d @ lattice, axis=1))))
    assert sorted(order) == list(range(len(base)))
    fields = []
    for cell in ph3.supercells_with_displacements:
        if cell is None:
            continue
        u = np.asarray(cell.scaled_positions) - np.asarray(sc.scaled_positions)
        u -= np.round(u)
        fields.append(u @ lattice)
    template = TEMPLATE.read_text()
    width = len(str(4 * (len(fields) + 1)))
    names = ["BASE.supercell.in"]
    (directory / names[0]).write_text(fill_template(template, base))
    for i, u in enumerate(fields):
        atoms = base.copy()
        atoms.positions = base.positions + u[order]
        name = f"DISP.supercell.in.{i + 1:0{width}d}"
        (directory / name).write_text(fill_template(template, atoms))
        names.append(name)
    if run_pw:
        for name in names:
            with open(directory / f"{name}.out", "w") as out:
                subprocess.run(MOCK + ["-in", name], cwd=directory, stdout=out, check=True)
    return np.array(fields)


@pytest.fixture(scope="module")
def thirdorder_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("thirdorder") / "si-3rd"
    fields = write_thirdorder_set(directory)
    return directory, fields


def settings():
    return SowSettings(supercell_matrix=[2, 2, 2], strategy="thirdorder")


def test_import_recovers_the_displacement_fields(thirdorder_dir, tmp_path):
    directory, fields = thirdorder_dir
    unit = read_pw_input(UNITCELL).atoms
    manifest = ti.import_set(unit, settings(), directory, "{input}.out", disp_yaml_path=tmp_path / "d.yaml")
    import phono3py

    ph3 = phono3py.load(str(tmp_path / "d.yaml"), primitive_matrix=np.eye(3).tolist(), produce_fc=False)
    assert np.abs(np.asarray(ph3.displacements) - fields).max() < 1e-9
    assert manifest["n_supercells_total"] == len(fields)
    assert [j["role"] for j in manifest["jobs"]].count("base") == 1
    assert abs(manifest["amplitude_ang"] - 0.01) < 1e-9


def test_import_reorders_forces_into_phonopy_order(thirdorder_dir, tmp_path):
    """Forces read from the imported outputs equal the calculator's forces on phonopy's supercell."""
    from kappaflow.mock.potentials import stillinger_weber_si
    from kappaflow.reap import load_forces
    from kappaflow.structure import from_phonopy

    directory, fields = thirdorder_dir
    unit = read_pw_input(UNITCELL).atoms
    manifest = ti.import_set(unit, settings(), directory, "{input}.out")
    forces = load_forces(manifest, store_dir=None)
    ph3 = phono3py_pair_set(unit, 3.0)
    atoms = from_phonopy(ph3.supercell)
    atoms.positions = atoms.positions + fields[3]
    atoms.calc = stillinger_weber_si()
    half_last_digit = float(units.ry_per_bohr_to_ev_per_ang(0.5e-8))  # pw.x prints 8 decimals in Ry/au
    assert np.abs(forces["fc3"][3] - atoms.get_forces()).max() <= half_last_digit * 1.001


def test_imported_set_gives_the_kappa_of_the_systematic_route(thirdorder_dir, workspace):
    """Snakemake with sow.strategy thirdorder: no pw.x job runs, kappa matches the systematic route."""
    directory, _ = thirdorder_dir
    common = {"dft": {"pw_command": " ".join(MOCK)}, "relax": {"enabled": False},
              "bte": {"mesh": [11, 11, 11], "temperatures": [300, 600], "sigma_thz": 0.2}}
    imported = dict(common, system="si", name="imported",
                    sow={"strategy": "thirdorder", "thirdorder_dir": str(directory)})
    systematic = dict(common, system="si", name="systematic", sow={"pair_cutoff_ang": 3.0},
                      reap={"fc_calculator": "symfc"})
    (workspace / "imported.yaml").write_text(yaml.safe_dump(imported))
    (workspace / "systematic.yaml").write_text(yaml.safe_dump(systematic))
    log = workspace / "mock.log"
    run_snakemake(workspace, "--configfile", "imported.yaml", env={"KAPPAFLOW_MOCK_PW_LOG": str(log)})
    assert mock_invocations(log) == []  # the imported outputs are used as they are
    run_snakemake(workspace, "--configfile", "systematic.yaml")
    k_imp = read_kappa_csv(workspace / "results/imported/bte/kappa.csv").kappa_w_per_mk[:, 0, 0]
    k_sys = read_kappa_csv(workspace / "results/systematic/bte/kappa.csv").kappa_w_per_mk[:, 0, 0]
    # same displacements, same forces, same fit (symfc): only atom order and file names differ
    assert np.allclose(k_imp, k_sys, rtol=1e-6), (k_imp, k_sys)
    manifest = json.loads((workspace / "results/imported/sow/manifest.json").read_text())
    assert manifest["strategy"] == "thirdorder" and manifest["import"]["base_forces_subtracted"]
    cost = (workspace / "results/imported/dft/cost.csv").read_text().splitlines()
    # one row per distinct run (thirdorder's (+h,-h) same-atom runs repeat BASE's input)
    assert len(cost) == 1 + len({j["key"] for j in manifest["jobs"]})


def test_missing_output_is_named(tmp_path):
    directory = tmp_path / "set"
    write_thirdorder_set(directory, run_pw=False)
    with pytest.raises(InputFileError, match=r"DISP\.supercell\.in\.01\.out.*not found"):
        ti.find_runs(directory)


def test_set_from_another_unit_cell_is_refused(thirdorder_dir, tmp_path):
    directory, _ = thirdorder_dir
    unit = read_pw_input(UNITCELL).atoms
    unit.set_cell(np.asarray(unit.cell) * 1.01, scale_atoms=True)
    with pytest.raises(InputFileError, match=r"BASE\.supercell\.in.*supercell vectors differ"):
        ti.import_set(unit, settings(), directory, "{input}.out")


def test_thirdorder_strategy_needs_dir_and_no_relax(tmp_path):
    from kappaflow import config

    base = {"system": "si", "systems_dir": str(REPO / "config/systems")}
    with pytest.raises(ConfigError, match="thirdorder_dir"):
        config.resolve(dict(base, relax={"enabled": False}, sow={"strategy": "thirdorder"}), check_files=False)
    with pytest.raises(ConfigError, match="relax.enabled: false"):
        config.resolve(dict(base, sow={"strategy": "thirdorder", "thirdorder_dir": str(tmp_path)}),
                       check_files=False)
