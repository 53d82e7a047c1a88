"""pw.x output parser: real pw.x 6.7 outputs (fixtures) and every failure mode as a one-line error."""
import shutil

import numpy as np
import pytest
from ase.io import read as ase_read

from kappaflow.errors import PwOutputError
from kappaflow.qe.pwout import RelaxNotConvergedError, parse_wall_time, read_pw_output

from conftest import DATA

VC = DATA / "si_vc-relax_qe6.7.out"
MD = DATA / "si_md_qe6.7.out"


def test_vc_relax_agrees_with_ase_reader():
    run = read_pw_output(VC, expected_n_atoms=2)
    ref = ase_read(VC, format="espresso-out", index=-1)
    # ASE converts with CODATA 2014 constants, kappaflow with pw.x's own CODATA 2018 ones (~1e-8 apart)
    assert np.allclose(run.forces_ev_per_ang, ref.get_forces(), rtol=1e-7, atol=1e-12)
    assert np.isclose(run.energy_ev, ref.get_potential_energy(), rtol=1e-7)
    assert np.allclose(run.stress_ev_per_ang3, ref.get_stress(voigt=False), rtol=1e-7, atol=1e-12)
    assert run.qe_version.startswith("6.7")
    assert run.wall_time_s == pytest.approx(9.92)
    # final coordinates block
    assert run.final_cell_ang.shape == (3, 3)
    assert run.final_symbols == ["Si", "Si"]
    assert np.allclose(run.final_positions_frac[1], [0.2549968473, 0.2500003253, 0.2500003253])


def test_md_frames_pair_positions_with_their_forces():
    run = read_pw_output(MD, expected_n_atoms=2)
    frames = ase_read(MD, format="espresso-out", index=":")
    assert len(run.frames) == len(frames) == 3
    for ours, theirs in zip(run.frames, frames):
        assert np.allclose(ours.forces_ev_per_ang, theirs.get_forces(), rtol=1e-7, atol=1e-12)
        if ours.positions_frac is not None:
            assert np.allclose(ours.positions_frac, theirs.get_scaled_positions(wrap=False), atol=1e-9)


def test_wall_time_formats():
    assert parse_wall_time("   9.92s ") == pytest.approx(9.92)
    assert parse_wall_time(" 2m30.50s ") == pytest.approx(150.5)
    assert parse_wall_time(" 1h 3m ") == pytest.approx(3780)
    assert parse_wall_time(" 1d 2h 3m ") == pytest.approx(93780)


def _corrupt(tmp_path, transform):
    text = VC.read_text()
    path = tmp_path / "broken.out"
    path.write_text(transform(text))
    return path


@pytest.mark.parametrize(
    "transform, reason",
    [
        (lambda t: t[: len(t) // 2], "JOB DONE"),
        (lambda t: t.replace("convergence has been achieved in   8 iterations",
                             "convergence NOT achieved after 100 iterations: stopping", 1), "did not converge"),
        (lambda t: t.replace("atom    1 type  1   force =     0.00000058",
                             "atom    1 type  1   force =            NaN"), "NaN"),
        (lambda t: t.replace("Forces acting on atoms (cartesian axes, Ry/au):", "Forces: removed"), "no forces"),
        (lambda t: "", "empty"),
    ],
)
def test_unusable_outputs_fail_with_file_and_reason(tmp_path, transform, reason):
    path = _corrupt(tmp_path, transform)
    with pytest.raises(PwOutputError) as exc:
        read_pw_output(path, expected_n_atoms=2)
    message = str(exc.value)
    assert str(path) in message and reason in message
    assert "\n" not in message


def test_wrong_atom_count(tmp_path):
    with pytest.raises(PwOutputError, match="run has 2 atoms, expected 16"):
        read_pw_output(VC, expected_n_atoms=16)


# --- relaxations whose BFGS did not converge (real pw.x 6.7 outputs, tests/data/*.in say how) ------------
BFGS_RESET = DATA / "si_vc-relax_bfgs_reset_qe6.7.out"
BFGS_NSTEP = DATA / "si_vc-relax_nstep_qe6.7.out"


def test_bfgs_history_reset_is_not_a_relaxed_structure():
    """pw.x 6.7 sets conv_bfgs after two consecutive history resets: it prints 'bfgs converged' and a
    'Begin final coordinates' block although the last step's errors are far above the criteria."""
    text = BFGS_RESET.read_text()
    assert "bfgs converged in" in text and "Begin final coordinates" in text  # what pw.x claims
    with pytest.raises(RelaxNotConvergedError) as exc:
        read_pw_output(BFGS_RESET, expected_n_atoms=2)
    err = exc.value
    assert err.path == str(BFGS_RESET) and err.reason_code == "relax_not_converged"
    assert text.splitlines()[err.line - 1].strip() == "history already reset at previous step: stopping"
    assert "trust_radius_min" in err.reason and "gradient error 9.2E-04" in err.reason
    assert "force <  1.0E-06" in err.reason  # the criteria pw.x printed


def test_bfgs_stopped_at_nstep_is_not_a_relaxed_structure():
    with pytest.raises(RelaxNotConvergedError) as exc:
        read_pw_output(BFGS_NSTEP, expected_n_atoms=2)
    assert "nstep = 3" in exc.value.reason and "raise nstep" in exc.value.reason
    assert BFGS_NSTEP.read_text().splitlines()[exc.value.line - 1].strip() == \
        "The maximum number of steps has been reached."


def test_md_reaching_its_steps_is_not_a_bfgs_failure():
    """md prints 'The maximum number of steps has been reached.' too; only BFGS's is a failure."""
    assert "The maximum number of steps has been reached." in MD.read_text()
    assert len(read_pw_output(MD, expected_n_atoms=2).frames) == 3


@pytest.mark.parametrize("name", ["bfgs_reset", "nstep"])
def test_structure_step_refuses_an_unconverged_relax(tmp_path, name):
    from kappaflow.errors import KappaflowError
    from kappaflow.steps import structure_from_relax

    with pytest.raises(KappaflowError, match="BFGS relaxation"):
        structure_from_relax(DATA / f"si_vc-relax_{name}.in", DATA / f"si_vc-relax_{name}_qe6.7.out",
                             tmp_path / "unitcell.json")
    assert not (tmp_path / "unitcell.json").exists()


@pytest.mark.skipif(shutil.which("pw.x") is None, reason="pw.x (Quantum ESPRESSO) not installed")
def test_relax_rule_fails_a_real_bfgs_history_reset(tmp_path):
    """The same provocation run through the relax rule's code with Debian's pw.x: pw.x exits 0, the run
    is refused and recorded (failure.json), no pw.out appears."""
    import json

    from kappaflow.dft import run_pw

    here = tmp_path / "relax"
    here.mkdir()
    (here / "pw.in").write_text((DATA / "si_vc-relax_bfgs_reset.in").read_text())
    with pytest.raises(RelaxNotConvergedError, match="history already reset"):
        run_pw(here / "pw.in", here / "pw.out", "pw.x", log=lambda _: None)
    record = json.loads((here / "failure.json").read_text())
    assert record["reason_code"] == "relax_not_converged" and not (here / "pw.out").exists()
    assert "bfgs converged in" in (here / "pw.out.failed").read_text()
