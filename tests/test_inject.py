"""Force injection into pw.x-format outputs, checked against a real pw.x 6.7 output, kappaflow's parser,
ASE's espresso-out reader and a thirdorder-style grep written here."""
import hashlib
import json
import math

import ase.io
import ase.io.espresso
import numpy as np
import pytest

from kappaflow import inject
from kappaflow.errors import KappaflowError
from kappaflow.qe.pwin import read_pw_input
from kappaflow.qe.pwout import read_pw_output

from conftest import DATA

RY_EV_2018 = 13.605693122994
BOHR_ANG_2018 = 0.529177210903
EV_ANG_TO_RY_BOHR = BOHR_ANG_2018 / RY_EV_2018
ALAS_OUT = DATA / "alas_disp_scf_qe6.7.out"
ALAS_IN = DATA / "alas_disp_scf.in"
MARKED = ("Program PWSCF", "kappaflow ML injection:", "Total SCF correction", "PWSCF        :")


def thirdorder_grep(path):
    """thirdorder_espresso.py's read_forces: every line with 9 fields, 'atom' first and 'force' fifth;
    the last three fields in Ry/bohr (returned raw here), plus the index and type columns."""
    rows = []
    with open(path) as fh:
        for line in fh:
            fields = line.split()
            if len(fields) == 9 and fields[0] == "atom" and fields[4] == "force":
                rows.append((int(fields[1]), int(fields[3]), [float(x) for x in fields[6:]]))
    return rows


def printed_ry(forces_ev_per_ang):
    """What pw.x's 3F14.8 prints for forces given in eV/Å."""
    return np.round(np.asarray(forces_ev_per_ang) * EV_ANG_TO_RY_BOHR, 8)


def random_forces(n, seed=0, scale=2.0):
    return np.random.default_rng(seed).normal(size=(n, 3)) * scale


# ------------------------------------------------------------------------------------------------
def test_dft_forces_injected_reproduce_pwx_lines(tmp_path):
    """Inject the DFT energy and forces of a real run: every line pw.x printed that the injected file
    also carries is byte-identical (header, positions, energy, force lines)."""
    run = read_pw_output(ALAS_OUT)
    out = tmp_path / "pw.out"
    inject.write_ml_output(out, ALAS_IN, run.forces_ev_per_ang, run.energy_ev)
    real = ALAS_OUT.read_text().splitlines()
    injected = out.read_text().splitlines()
    foreign = [line for line in injected if line.strip() and line not in real]
    assert foreign and all(any(m in line for m in MARKED) for line in foreign), foreign
    force_lines = [line for line in real if line.lstrip().startswith("atom ") and "force =" in line]
    assert len(force_lines) == 8 and all(line in injected for line in force_lines)
    for expected in ("!    total energy              =     -67.42226684 Ry",
                     "     celldm(1)=  10.695850  celldm(2)=   0.000000  celldm(3)=   0.000000",
                     "         4           As  tau(   4) = (   0.2500000   0.7482332   0.7500000  )",
                     "     Total force =     0.005120     Total SCF correction =     0.000000"):
        assert expected in injected


def test_round_trip_through_kappaflow_parser_and_ase(tmp_path):
    pw = read_pw_input(ALAS_IN)
    forces = random_forces(8, seed=1)
    forces[3] = [-1234.5678, 1e-9, -0.0]  # large, tiny and signed-zero components
    energy = -917.123456789
    out = tmp_path / "pw.out"
    inject.write_ml_output(out, pw, forces, energy, note="committee mean of 5 models")
    run = read_pw_output(out, expected_n_atoms=8)
    assert run.qe_version == "kappaflow-ml" and len(run.frames) == 1
    assert inject.is_ml_injected(out) and not inject.is_ml_injected(ALAS_OUT)
    # kappaflow's parser: pw.x print precision, 8 decimals of Ry/bohr and of Ry
    np.testing.assert_allclose(run.forces_ev_per_ang * EV_ANG_TO_RY_BOHR, forces * EV_ANG_TO_RY_BOHR,
                               rtol=0, atol=0.5e-8 * (1 + 1e-9))
    assert run.energy_ev / RY_EV_2018 == pytest.approx(energy / RY_EV_2018, abs=0.5e-8)
    # ASE's reader, converted back to the printed Ry and bohr with ASE's own (CODATA 2006) units
    qe = ase.io.espresso.units
    atoms = ase.io.read(out, format="espresso-out")
    np.testing.assert_allclose(atoms.get_forces() / (qe["Ry"] / qe["Bohr"]), printed_ry(forces), rtol=1e-15,
                               atol=1e-17)
    assert atoms.get_potential_energy() / qe["Ry"] == pytest.approx(round(energy / RY_EV_2018, 8), abs=1e-12)
    reference = ase.io.read(ALAS_IN, format="espresso-in")
    assert atoms.get_chemical_symbols() == reference.get_chemical_symbols()
    alat = np.linalg.norm(reference.cell[0])
    np.testing.assert_allclose(atoms.positions / qe["Bohr"] * BOHR_ANG_2018, reference.positions,
                               rtol=0, atol=0.6e-7 * alat)
    np.testing.assert_allclose(atoms.cell.array / qe["Bohr"] * BOHR_ANG_2018, reference.cell.array,
                               rtol=0, atol=0.6e-6 * alat)


def test_thirdorder_grep_reads_the_injected_forces(tmp_path):
    forces = random_forces(8, seed=2, scale=0.05)
    out = tmp_path / "DISP.scf_sc.out.001"
    inject.write_ml_output(out, ALAS_IN, forces)  # no ML energy: labelled placeholder
    rows = thirdorder_grep(out)
    assert [r[0] for r in rows] == list(range(1, 9))
    assert [r[1] for r in rows] == [1, 2] * 4  # pw.x type index from ATOMIC_SPECIES (Al 1, As 2)
    np.testing.assert_array_equal(np.array([r[2] for r in rows]), printed_ry(forces))
    text = out.read_text()
    assert "placeholder" in text
    assert read_pw_output(out).energy_ev == 0.0
    # the same grep on the real pw.x output finds exactly its 8 lines
    assert len(thirdorder_grep(ALAS_OUT)) == 8


def test_force_line_format_and_overflow():
    with pytest.raises(KappaflowError, match="does not fit pw.x's F14.8"):
        inject.force_line(1, 1, [1e6, 0.0, 0.0])
    with pytest.raises(KappaflowError, match="I4/I2"):
        inject.force_line(10000, 1, [0.0, 0.0, 0.0])
    line = inject.force_line(12, 3, [-0.00103434, 0.03134155, 0.03134117])
    assert line == "     atom   12 type  3   force =    -0.00103434    0.03134155    0.03134117"


# ------------------------------------------------------------------------------------------------
# a set of supercells
# ------------------------------------------------------------------------------------------------
def make_store(tmp_path):
    """A DFT store: supercell A finished (the real pw.x run), B and C only sown (other displacements)."""
    store = tmp_path / "dft"
    keys = [hashlib.sha256(name.encode()).hexdigest()[:20] for name in "ABC"]
    pw = read_pw_input(ALAS_IN)
    for k, key in enumerate(keys):
        (store / key).mkdir(parents=True)
        if k == 0:
            (store / key / "pw.in").write_bytes(ALAS_IN.read_bytes())
            (store / key / "pw.out").write_bytes(ALAS_OUT.read_bytes())
        else:
            atoms = pw.atoms.copy()
            atoms.positions[k] += [0.0, 0.0, 0.01 * k]
            (store / key / "pw.in").write_text(pw.with_structure(atoms).to_text())
    return store, keys


def test_hybrid_keeps_dft_bytes_and_injects_the_rest(tmp_path):
    store, keys = make_store(tmp_path)
    ml = {key: random_forces(8, seed=i) for i, key in enumerate(keys)}
    energies = {key: -917.0 - i for i, key in enumerate(keys)}
    out = tmp_path / "hybrid"
    sources = inject.inject_set(keys, store, ml, out, mode="hybrid", ml_energies=energies)
    assert sources == {keys[0]: "dft", keys[1]: "ml", keys[2]: "ml"}
    assert (out / keys[0] / "pw.out").read_bytes() == ALAS_OUT.read_bytes()
    for key in keys:
        assert (out / key / "pw.in").read_bytes() == (store / key / "pw.in").read_bytes()
    for key in keys[1:]:
        run = read_pw_output(out / key / "pw.out", expected_n_atoms=8)
        np.testing.assert_array_equal(np.array([r[2] for r in thirdorder_grep(out / key / "pw.out")]),
                                      printed_ry(ml[key]))
        assert run.energy_ev / RY_EV_2018 == pytest.approx(energies[key] / RY_EV_2018, abs=0.5e-8)
        # the structure written is the supercell's own
        atoms = ase.io.read(out / key / "pw.out", format="espresso-out")
        reference = ase.io.read(store / key / "pw.in", format="espresso-in")
        np.testing.assert_allclose(atoms.positions / ase.io.espresso.units["Bohr"] * BOHR_ANG_2018,
                                   reference.positions, rtol=0, atol=1e-6)
    record = json.loads((out / "provenance.json").read_text())
    assert record == {"mode": "hybrid", "n_dft": 1, "n_ml": 2, "sources": sources}


def test_ml_mode_injects_everything(tmp_path):
    store, keys = make_store(tmp_path)
    ml = {key: random_forces(8, seed=i) for i, key in enumerate(keys)}
    structures = {key: read_pw_input(store / key / "pw.in").atoms for key in keys}
    prov = tmp_path / "prov.json"
    sources = inject.inject_set(keys, store, ml, tmp_path / "ml", mode="ml", ml_structures=structures,
                                provenance_path=prov)
    assert set(sources.values()) == {"ml"}
    assert inject.is_ml_injected(tmp_path / "ml" / keys[0] / "pw.out")
    rows = thirdorder_grep(tmp_path / "ml" / keys[0] / "pw.out")
    np.testing.assert_array_equal(np.array([r[2] for r in rows]), printed_ry(ml[keys[0]]))
    assert json.loads(prov.read_text())["n_ml"] == 3


@pytest.mark.parametrize("case, message", [
    ("missing", r"supercell {B}: no ML forces \(no finished DFT output"),
    ("count", r"supercell {B}: ML forces have shape \(7, 3\), the supercell has 8 atoms"),
    ("nan", r"supercell {B}: ML force on atom 3 is nan"),
    ("order", r"supercell {B}: atom order differs from the pw.x input .*: atom 1 is As in the ML structure, Al"),
    ("position", r"supercell {B}: ML position of atom 2 differs"),
    ("energy", r"supercell {C}: ML energies were given, but not for this supercell"),
    ("broken", r"{A}/pw.out: pw.x did not finish"),
    ("wrong-dft", r"{A}/pw.out: position of atom 2 differs from the pw.x input"),
    ("no-input", r"{C}/pw.in: supercell {C}: no pw.x input"),
    ("duplicate", r"supercell {B} is listed twice"),
    ("mode", r"injection mode must be one of"),
])
def test_strict_errors_name_the_supercell_and_write_nothing(tmp_path, case, message):
    store, keys = make_store(tmp_path)
    a, b, c = keys
    ml = {key: random_forces(8, seed=i) for i, key in enumerate(keys)}
    kwargs = {}
    mode = "hybrid"
    if case == "missing":
        del ml[b]
    elif case == "count":
        ml[b] = ml[b][:7]
    elif case == "nan":
        ml[b][2, 1] = math.nan
    elif case in ("order", "position"):
        structures = {key: read_pw_input(store / key / "pw.in").atoms for key in keys}
        atoms = structures[b]
        if case == "order":
            atoms.positions[[0, 1]] = atoms.positions[[1, 0]]
            atoms.numbers[[0, 1]] = atoms.numbers[[1, 0]]
        else:
            atoms.positions[1] += [1e-4, 0, 0]
        kwargs["ml_structures"] = structures
    elif case == "energy":
        kwargs["ml_energies"] = {b: -1.0}
    elif case == "broken":
        text = (store / a / "pw.out").read_text()
        (store / a / "pw.out").write_text(text[: text.index("JOB DONE")])
    elif case == "wrong-dft":
        (store / a / "pw.in").write_bytes((store / b / "pw.in").read_bytes())
    elif case == "no-input":
        (store / c / "pw.in").unlink()
    elif case == "duplicate":
        keys = [a, b, b]
    elif case == "mode":
        mode = "dft"
    out = tmp_path / "out"
    with pytest.raises(KappaflowError, match=message.format(A=a, B=b, C=c)):
        inject.inject_set(keys, store, ml, out, mode=mode, **kwargs)
    assert not out.exists()


def test_hybrid_accepts_a_mock_pw_output(tmp_path, caplog):
    """kappaflow-mock-pw's header prints the structure like pw.x: the DFT output is validated by the
    strict parser, its structure compared with the input (no warning), and kept byte for byte."""
    import contextlib
    import io

    from kappaflow.mock import pw as mock_pw

    store, keys = make_store(tmp_path)
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert mock_pw.main(["--model", "morse-network", "--reference", str(ALAS_IN),
                             "-in", str(store / keys[0] / "pw.in")]) == 0
    (store / keys[0] / "pw.out").write_text(buffer.getvalue())
    ml = {key: random_forces(8, seed=i) for i, key in enumerate(keys)}
    with caplog.at_level("WARNING"):
        sources = inject.inject_set(keys, store, ml, tmp_path / "out")
    assert sources[keys[0]] == "dft" and "does not print the structure" not in caplog.text
    assert (tmp_path / "out" / keys[0] / "pw.out").read_text() == buffer.getvalue()
