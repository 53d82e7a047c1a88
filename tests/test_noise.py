"""Force-noise sensitivity study: noise model, tolerance rule, and the target in the DAG."""
import json

import numpy as np
import pytest
import yaml

from kappaflow import noise
from kappaflow.bte import read_kappa_csv

from conftest import mock_invocations, run_snakemake


def fake_forces(rng):
    return {"base": {0: rng.normal(size=(16, 3))},
            "fc3": {i: rng.normal(size=(16, 3)) for i in range(40)}}


def test_noise_is_gaussian_with_the_given_amplitude_and_spares_the_base():
    forces = fake_forces(np.random.default_rng(1))
    noisy = noise.noisy_forces(forces, 5e-4, seed=3)
    diff = np.concatenate([(noisy["fc3"][i] - forces["fc3"][i]).ravel() for i in forces["fc3"]])
    # 1920 samples: the sample std is within ~3 % (5 sigma: 8 %) of the amplitude, mean ~0
    assert abs(diff.std() / 5e-4 - 1) < 0.08
    assert abs(diff.mean()) < 5 * 5e-4 / np.sqrt(diff.size)
    assert noisy["base"][0] is forces["base"][0]
    again = noise.noisy_forces(forces, 5e-4, seed=3)
    assert all(np.array_equal(again["fc3"][i], noisy["fc3"][i]) for i in forces["fc3"])
    other = noise.noisy_forces(forces, 5e-4, seed=4)
    assert not np.array_equal(other["fc3"][0], noisy["fc3"][0])
    assert noise.noisy_forces(forces, 0.0, seed=3) is forces
    assert noise.force_rmse(noisy, forces) == pytest.approx(np.sqrt(np.mean(diff**2)))


def test_tolerance_is_the_largest_amplitude_inside_the_band_at_every_temperature():
    def rows(a, seed, kxx):
        return [{"source": "noise", "amplitude_ev_per_ang": a, "seed": seed, "force_rmse_ev_per_ang": a,
                 "T_K": t, "kappa_xx": k, "kappa_yy": 100.0, "kappa_zz": 100.0}
                for t, k in zip((300.0, 600.0), kxx)]
    table = (rows(0.0, 0, (100, 50)) + rows(1e-5, 0, (99, 50)) + rows(1e-5, 1, (101, 49))
             + rows(2e-5, 0, (97, 47.4)) + rows(5e-5, 0, (80, 49)) + rows(1e-4, 0, (99, 50)))
    tol = noise.tolerance(table, band=0.05)
    # 2e-5 deviates 5.2 % at 600 K (47.4 vs 50) -> out; 1e-4 is back inside but lies beyond a failure
    assert tol["tolerance_ev_per_ang"] == 1e-5
    assert noise.tolerance(table, band=0.06)["tolerance_ev_per_ang"] == 2e-5


@pytest.mark.slow
def test_noise_study_reuses_dft_outputs_and_kappa_falls(workspace):
    cfg = {"system": "si", "dft": {"pw_command": "kappaflow-mock-pw --model stillinger-weber-si"},
           "relax": {"enabled": False}, "sow": {"pair_cutoff_ang": 3.0},
           "bte": {"mesh": [11, 11, 11], "temperatures": [300, 600], "sigma_thz": 0.2},
           "noise": {"amplitudes_ev_per_ang": [0.0, 1e-4, 1e-3, 1e-2], "seeds": 2}}
    (workspace / "t.yaml").write_text(yaml.safe_dump(cfg))
    run_snakemake(workspace, "--configfile", "t.yaml")
    log = workspace / "mock.log"
    proc = run_snakemake(workspace, "noise_study", "--configfile", "t.yaml",
                         env={"KAPPAFLOW_MOCK_PW_LOG": str(log)})
    assert mock_invocations(log) == [], "the noise study must not run pw.x"
    assert "rule dft" not in proc.stdout + proc.stderr
    route = read_kappa_csv(workspace / "results/si/bte/kappa.csv").kappa_w_per_mk
    zero = read_kappa_csv(workspace / "results/si/noise/a0_s0/kappa.csv").kappa_w_per_mk
    assert np.array_equal(route, zero)  # amplitude 0 is the noise-free route, bit for bit
    ratios = []
    for amp in ("100", "1000", "10000"):
        k = [read_kappa_csv(workspace / f"results/si/noise/a{amp}_s{s}/kappa.csv").kappa_w_per_mk[0, 0, 0]
             for s in (0, 1)]
        ratios.append(np.mean(k) / route[0, 0, 0])
    assert ratios[0] > ratios[1] > ratios[2] and ratios[2] < 0.1, ratios
    tol = json.loads((workspace / "results/si/noise/tolerance.json").read_text())
    print("kappa_xx(300 K) ratios at 1e-4, 1e-3, 1e-2 eV/Å:", ratios, "tolerance.json:", tol)
    # 1e-4 eV/Å on 0.01 Å displacements is an fc3 error of ~δ/h² = 1 eV/Å³ in every element (|Φ3| ≤ 27):
    # κ falls by far more than the 5 % band (measured: mean ratio 0.83 at 300 K, worst seed, T and
    # component 31 % off), so already the smallest non-zero amplitude is out and the tolerance is 0.
    # (The tolerance of this crystal, ~10 µeV/Å (docs/noise.md), lies below this test's grid.)
    deviation = tol["max_relative_deviation_by_amplitude"]
    assert tol["band"] == 0.05 and deviation["1.000e-04"] > 0.15, deviation
    assert tol["tolerance_ev_per_ang"] == 0.0
    for name in ("kappa_xx_vs_T.png", "kappa_zz_vs_T.png", "kappa_ratio_vs_amplitude.png", "noise_kappa.csv"):
        assert (workspace / "results/si/noise" / name).stat().st_size > 0
