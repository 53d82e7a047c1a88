"""The real route: Debian's pw.x (QE 6.7) on Si, a small variant of the demo (pair cutoff 3.0 Å)."""
import shutil

import numpy as np
import pytest
import yaml

from kappaflow.bte import read_kappa_csv
from kappaflow.qe.pwout import read_pw_output

from conftest import run_snakemake

pytestmark = [pytest.mark.slow, pytest.mark.pwx,
              pytest.mark.skipif(shutil.which("pw.x") is None, reason="needs pw.x (apt quantum-espresso)")]


def test_real_pwx_si_small(workspace):
    settings = {"system": "si", "dft": {"pw_command": "pw.x"},
                "sow": {"pair_cutoff_ang": 3.0},
                "bte": {"mesh": [11, 11, 11], "temperatures": [300, 600]}}
    (workspace / "small.yaml").write_text(yaml.safe_dump(settings))
    run_snakemake(workspace, "--configfile", "small.yaml", timeout=2400)
    result = read_kappa_csv(workspace / "results/si/bte/kappa.csv")
    kxx = result.kappa_w_per_mk[:, 0, 0]
    assert np.all(np.isfinite(kxx)) and np.all(kxx > 0)
    assert kxx[0] > kxx[1]  # kappa falls with T
    # cubic symmetry of the tensor
    assert np.allclose(np.diagonal(result.kappa_w_per_mk, axis1=1, axis2=2), kxx[:, None], rtol=1e-6)
    relax = read_pw_output(workspace / "results/si/relax/pw.out", expected_n_atoms=2)
    assert relax.qe_version.startswith("6.7")
    print("real pw.x kappa_xx:", dict(zip(result.temperatures_k, kxx)))
