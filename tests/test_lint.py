"""The Snakemake workflow catalog's conventions: `snakemake --lint` clean on every shipped config, and the
rules formatted by snakefmt (`snakefmt --check`, pyproject.toml [tool.snakefmt])."""
import shutil
import subprocess

import pytest

from conftest import REPO

SHIPPED = sorted(str(p.relative_to(REPO)) for p in [REPO / "config/config.yaml", *(REPO / "config/mock").glob("*.yaml")])


@pytest.mark.parametrize("configfile", SHIPPED)
def test_snakemake_lint_is_clean(configfile):
    proc = subprocess.run(["snakemake", "--lint", "--configfile", configfile], cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "Congratulations, your workflow is in a good condition!" in out, out[-4000:]


def test_the_workflow_is_formatted_by_snakefmt():
    if shutil.which("snakefmt") is None:
        pytest.fail("snakefmt is missing: it is in the test extra (pip install -e '.[test]')")
    proc = subprocess.run(["snakefmt", "--check", "Snakefile", "workflow/"], cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
