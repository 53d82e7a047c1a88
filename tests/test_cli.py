"""The command line: validate and parse-pw on real files, errors as one line with exit code 1."""
import subprocess

from conftest import DATA, REPO


def run(*args):
    return subprocess.run(["kappaflow", *args], cwd=REPO, capture_output=True, text=True)


def test_validate_and_parse():
    proc = run("validate", "config/mock/ges2.yaml")
    assert proc.returncode == 0 and "valid (system ges2)" in proc.stdout
    proc = run("parse-pw", str(DATA / "si_vc-relax_qe6.7.out"), "--atoms", "2")
    assert proc.returncode == 0 and "pw.x 6.7MaX" in proc.stdout


def test_errors_are_one_line():
    proc = run("parse-pw", str(DATA / "si_vc-relax_qe6.7.out"), "--atoms", "54")
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "run has 2 atoms, expected 54" in proc.stderr
