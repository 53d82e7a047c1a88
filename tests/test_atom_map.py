"""Atom mapping: every force set is matched to its expected (displaced) supercell by periodic position."""
import contextlib
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from kappaflow import atom_map, config, reap, steps, units
from kappaflow.errors import InputFileError, KappaflowError
from kappaflow.mock.pw import main as mock_pw_main
from kappaflow.qe.pwout import read_pw_output

from conftest import REPO

MOCK = "kappaflow-mock-pw --model stillinger-weber-si"
_SITE = re.compile(r"^(\s*)(\d+)(\s+\S+\s+tau\(\s*)(\d+)(\).*)$")
_FORCE = re.compile(r"^(\s*atom\s+)(\d+)(\s+type.*)$")


def run_mock(input_path, output_path):
    """The mock pw.x in-process (the same code as the kappaflow-mock-pw executable, without start-up)."""
    with open(output_path, "w") as out, contextlib.redirect_stdout(out):
        assert mock_pw_main(["--model", "stillinger-weber-si", "-in", str(input_path)]) == 0


@pytest.fixture(scope="module")
def si_set(tmp_path_factory):
    """Si 2x2x2, pair cutoff 3 Å: 20 supercells sown and computed with the mock pw.x."""
    root = tmp_path_factory.mktemp("si_atom_map")
    cfg = config.load(REPO / "config/mock/si.yaml", check_files=False,
                      overrides={"systems_dir": str(REPO / "config/systems"), "sow": {"pair_cutoff_ang": 3.0}})
    steps.structure_from_input(REPO / "config/systems/si/Si.scf.in", root / "unitcell.json")
    store = root / "dft"
    manifest = steps.run_sow(root / "unitcell.json", cfg["supercell_template"], cfg["sow"], cfg["dft"], store,
                             root / "manifest.json", root / "disp.yaml")
    for key in {j["key"] for j in manifest["jobs"]}:
        run_mock(store / key / "pw.in", store / key / "pw.out")
    return root, manifest, cfg


def reap_to(root, store, reap_cfg, out_dir):
    out_dir.mkdir(parents=True, exist_ok=True)
    names = ("fc2", "fc3", "fc2_shengbte", "fc3_shengbte")
    files = ("fc2.hdf5", "fc3.hdf5", "FORCE_CONSTANTS_2ND", "FORCE_CONSTANTS_3RD")
    paths = {n: out_dir / f for n, f in zip(names, files)}
    steps.run_reap(root / "manifest.json", root / "disp.yaml", store, reap_cfg, paths)
    from phono3py.file_IO import read_fc2_from_hdf5, read_fc3_from_hdf5

    return read_fc2_from_hdf5(str(paths["fc2"])), read_fc3_from_hdf5(str(paths["fc3"]))


def shuffle_output(text: str, perm: np.ndarray) -> str:
    """pw.x output with atoms reordered: new atom i is old atom perm[i] (sites and forces, renumbered)."""
    lines = text.splitlines()
    site_idx = [i for i, l in enumerate(lines) if _SITE.match(l)]
    force_idx = [i for i, l in enumerate(lines) if _FORCE.match(l)]
    n = len(perm)
    assert len(site_idx) == n and len(force_idx) == n
    out = list(lines)
    for new, old in enumerate(perm):
        m = _SITE.match(lines[site_idx[old]])
        out[site_idx[new]] = f"{m[1]}{new + 1:{len(m[2])}d}{m[3]}{new + 1:{len(m[4])}d}{m[5]}"
        m = _FORCE.match(lines[force_idx[old]])
        out[force_idx[new]] = f"{m[1]}{new + 1:{len(m[2])}d}{m[3]}"
    return "\n".join(out) + "\n"


def test_shuffled_outputs_reap_to_the_same_fc3(si_set, tmp_path):
    root, manifest, cfg = si_set
    fc2_ref, fc3_ref = reap_to(root, root / "dft", cfg["reap"], tmp_path / "fc_ref")
    shuffled = tmp_path / "shuffled"
    rng = np.random.default_rng(7)
    perms = {}
    for key in {j["key"] for j in manifest["jobs"]}:
        (shuffled / key).mkdir(parents=True)
        perm = rng.permutation(manifest["jobs"][0]["n_atoms"])
        perms[key] = perm
        text = (root / "dft" / key / "pw.out").read_text()
        (shuffled / key / "pw.out").write_text(shuffle_output(text, perm))
    # the shuffle is real: in file order, the forces are no longer those of the reference
    file_order = reap.load_forces(manifest, shuffled)
    mapped = reap.load_forces(manifest, shuffled, expected=reap.expected_supercells(steps.load_phono3py(
        root / "disp.yaml")))
    reference = reap.load_forces(manifest, root / "dft")
    job = next(j for j in manifest["jobs"] if j["role"] == "fc3")
    f_ref = reference["fc3"][job["index"]]
    assert np.abs(file_order["fc3"][job["index"]] - f_ref).max() > 1e-3
    assert np.array_equal(file_order["fc3"][job["index"]], f_ref[perms[job["key"]]])
    assert np.array_equal(mapped["fc3"][job["index"]], f_ref)
    fc2, fc3 = reap_to(root, shuffled, cfg["reap"], tmp_path / "fc_shuffled")
    assert np.abs(fc3_ref).max() > 1.0  # eV/Å^3: a real FC3, not zeros
    assert np.abs(fc3 - fc3_ref).max() <= 1e-12 * np.abs(fc3_ref).max()
    assert np.abs(fc2 - fc2_ref).max() <= 1e-12 * np.abs(fc2_ref).max()


def test_mock_run_on_a_shuffled_input_gives_the_same_forces(si_set, tmp_path):
    """pw.x (mock) run on an input whose ATOMIC_POSITIONS are permuted: mapped forces = reference forces
    to pw.x's print precision (the potential sums in another order)."""
    root, manifest, _ = si_set
    job = [j for j in manifest["jobs"] if j["role"] == "fc3"][5]
    text = (root / "dft" / job["key"] / "pw.in").read_text()
    lines = text.splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith("ATOMIC_POSITIONS"))
    block = lines[start + 1:start + 1 + job["n_atoms"]]
    perm = np.random.default_rng(3).permutation(job["n_atoms"])
    lines[start + 1:start + 1 + job["n_atoms"]] = [block[p] for p in perm]
    (tmp_path / "pw.in").write_text("\n".join(lines) + "\n")
    run_mock(tmp_path / "pw.in", tmp_path / "pw.out")
    run = read_pw_output(tmp_path / "pw.out", expected_n_atoms=job["n_atoms"])
    expected = reap.expected_supercells(steps.load_phono3py(root / "disp.yaml"))("fc3", job["index"])
    mapping = atom_map.map_pw_output(run, expected)
    assert np.array_equal(mapping, perm)  # atom i of the file is site perm[i] of the displaced supercell
    forces = atom_map.to_reference_order(run.forces_ev_per_ang, mapping)
    reference = read_pw_output(root / "dft" / job["key"] / "pw.out").forces_ev_per_ang
    half_last_digit = float(units.ry_per_bohr_to_ev_per_ang(0.5e-8))
    assert np.abs(forces - reference).max() <= 2 * half_last_digit


def test_output_of_another_supercell_fails_naming_file_and_atom(si_set, tmp_path):
    root, manifest, cfg = si_set
    store = tmp_path / "dft"
    shutil.copytree(root / "dft", store)
    jobs = {j["index"]: j for j in manifest["jobs"] if j["role"] == "fc3"}
    first, other = sorted(jobs)[:2]
    wrong = store / jobs[first]["key"] / "pw.out"
    shutil.copy(store / jobs[other]["key"] / "pw.out", wrong)
    with pytest.raises(InputFileError) as exc:
        reap_to(root, store, cfg["reap"], tmp_path / "fc")
    message = str(exc.value)
    assert message.startswith(f"{wrong}:")  # file:line of the atom's 'tau(' row
    line = int(message[len(str(wrong)) + 1:].split(":")[0])
    assert "tau(" in wrong.read_text().splitlines()[line - 1]
    assert re.search(r"atom \d+ \(Si\) at \[.*\] Å is 0\.0\d+ Å from the nearest site of the expected fc3 "
                     rf"supercell {first} of the manifest", message), message
    assert not (tmp_path / "fc" / "fc3.hdf5").exists()


def test_undisplaced_output_in_place_of_a_displaced_one_fails(si_set, tmp_path):
    root, manifest, _ = si_set
    base = next(j for j in manifest["jobs"] if j["role"] == "base")
    disp = next(j for j in manifest["jobs"] if j["role"] == "fc3")
    run = read_pw_output(root / "dft" / base["key"] / "pw.out")
    expected = reap.expected_supercells(steps.load_phono3py(root / "disp.yaml"))("fc3", disp["index"])
    with pytest.raises(InputFileError, match=r"is 0\.01 Å from the nearest site"):
        atom_map.map_pw_output(run, expected, tolerance_ang=2e-3)


def test_wrong_species_and_overlapping_atoms_and_cell_fail():
    lattice = np.diag([4.0, 4.0, 4.0])
    ref = atom_map.Structure(lattice, np.array([[0.0, 0, 0], [2.0, 2.0, 2.0]]), ["Ga", "As"])
    with pytest.raises(InputFileError, match=r"f\.out:12: atom 2 \(Ga\) sits on site 2 .* which is As"):
        atom_map.map_atoms("f.out", ref, [[0.0, 0, 0], [2.0, 2.0, 2.0]], ["Ga", "Ga"], lines=[11, 12])
    with pytest.raises(InputFileError, match=r"atoms \[1, 2\] all map onto site 1"):
        atom_map.map_atoms("f.out", ref, [[0.0, 0, 0], [0.001, 0, 0]], tolerance_ang=0.01)
    with pytest.raises(InputFileError, match=r"cell vectors differ .* by 0\.01 Å"):
        atom_map.map_atoms("f.out", ref, [[0.0, 0, 0], [2.0, 2.0, 2.0]], cell_ang=lattice + np.diag([0.01, 0, 0]))
    with pytest.raises(InputFileError, match=r"3 atoms, but the reference supercell has 2"):
        atom_map.map_atoms("f.out", ref, np.zeros((3, 3)))


def test_mapping_is_periodic_and_exact_for_a_skewed_cell():
    """Atoms given in another image of the cell (and just across its faces) map to their sites."""
    rng = np.random.default_rng(11)
    lattice = np.array([[3.0, 0.0, 0.0], [1.5, 2.6, 0.0], [0.3, 0.7, 4.1]])  # triclinic
    frac = rng.random((30, 3))
    frac[0] = [1e-9, 0.5, 0.5]  # on a face
    ref = atom_map.Structure(lattice, frac @ lattice, ["Ge"] * 15 + ["S"] * 15)
    perm = rng.permutation(30)
    shift = rng.integers(-2, 3, size=(30, 3))
    found = (frac[perm] + shift) @ lattice + rng.normal(scale=1e-4, size=(30, 3))
    found[np.flatnonzero(perm == 0)[0]] -= 2e-4 * lattice[0] / 3.0  # across the face: frac -> 0.99993
    symbols = [ref.symbols[p] for p in perm]
    assert np.array_equal(atom_map.map_atoms("x", ref, found, symbols, tolerance_ang=1e-3), perm)
    values = rng.normal(size=(30, 3))
    assert np.array_equal(atom_map.to_reference_order(values[perm], perm), values)


def test_tolerance_must_stay_below_half_the_amplitude(si_set):
    root, manifest, _ = si_set
    expected = reap.expected_supercells(steps.load_phono3py(root / "disp.yaml"))
    with pytest.raises(KappaflowError, match=r"reap.atom_map_tolerance_ang = 0.005 Å is not below half"):
        reap.load_forces(manifest, root / "dft", expected=expected, tolerance_ang=0.005)


def test_thirdorder_import_uses_the_same_mapping():
    """match_atoms (BASE input vs phonopy's supercell) is map_atoms: a far atom names the input file."""
    from ase import Atoms

    from kappaflow.thirdorder_import import match_atoms

    lattice = np.diag([5.0, 5.0, 5.0])
    frac = np.array([[0.0, 0, 0], [0.5, 0.5, 0.5]])
    base = Atoms("Si2", scaled_positions=[[0.5, 0.5, 0.5], [1.0, 0.0, 0.0]], cell=lattice, pbc=True)
    assert match_atoms("BASE.in", base, lattice, frac).tolist() == [1, 0]
    base.positions[1] += [0.01, 0, 0]
    with pytest.raises(InputFileError, match=r"BASE\.in: atom 2 at .* is 0\.01 Å from the nearest site of "
                                             r"phonopy's supercell"):
        match_atoms("BASE.in", base, lattice, frac)
