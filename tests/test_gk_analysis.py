"""Green-Kubo analysis (kappaflow.gk.analysis) on a flux with an analytic answer: a discrete
Ornstein-Uhlenbeck process with variance s² and correlation time tau has the HFACF s² a^k
(a = exp(-dt/tau)), whose trapezoid integral is s² dt (1/(1 - a) - 1/2): κ follows without the code
under test.  Both estimators (first dip of the filtered κ(τ), and sportran's cepstral analysis) must
find it within their error bars; bad input stops with the reason."""
import numpy as np
import pytest
from scipy.signal import lfilter

from kappaflow.errors import KappaflowError
from kappaflow.gk.analysis import cepstral_kappa, green_kubo
from kappaflow.units import EV_PER_FS_ANG_K_TO_W_PER_MK, K_BOLTZMANN_EV

DT, TAU, S, T, V = 4.0, 100.0, 0.3, 300.0, 1000.0


def ou_fluxes(n_traj=8, n_steps=50000, seed=0, tau=TAU):
    rng = np.random.default_rng(seed)
    a = np.exp(-DT / tau)
    out = []
    for _ in range(n_traj):  # started from the stationary distribution: x(-1) ~ N(0, 1)
        zi = a * rng.normal(size=(1, 3))
        x, _ = lfilter([np.sqrt(1 - a * a)], [1, -a], rng.normal(size=(n_steps, 3)), axis=0, zi=zi)
        out.append(S * x)
    return out


def analytic_kappa(tau=TAU):
    a = np.exp(-DT / tau)
    return S**2 * DT * (1 / (1 - a) - 0.5) * EV_PER_FS_ANG_K_TO_W_PER_MK / (K_BOLTZMANN_EV * T**2 * V)


@pytest.mark.parametrize("filter_thz,subtract_mean", [(0.3, False), (1.0, False), (10.0, False), (1.0, True)])
def test_first_dip_finds_the_analytic_kappa(filter_thz, subtract_mean):
    result = green_kubo(ou_fluxes(), DT, T, V, max_lag_fs=4000, filter_thz=filter_thz, subtract_mean=subtract_mean)
    expected = analytic_kappa()
    assert abs(result.kappa_w_per_mk - expected) < 3 * result.kappa_stderr_w_per_mk, (result.kappa_w_per_mk, expected)
    assert result.kappa_stderr_w_per_mk < 0.05 * expected
    assert result.cutoff_fs > 3 * TAU  # the dip lies after the correlation has decayed
    assert result.n_trajectories == 8 and result.kappa_per_trajectory.shape == (8,)
    # the unfiltered κ(τ) at the cutoff agrees too, and the components are all near the isotropic value
    assert abs(result.kappa_tau_iso[int(round(result.cutoff_fs / DT))] - expected) < 0.1 * expected
    assert np.all(np.abs(result.kappa_components - expected) < 0.15 * expected)


def test_cepstral_analysis_finds_the_analytic_kappa():
    kappa, err, details = cepstral_kappa(ou_fluxes(), DT, T, V)
    assert details["n_components"] == 24
    assert abs(kappa - analytic_kappa()) < 3 * err, (kappa, err, analytic_kappa())
    assert err < 0.05 * kappa
    if int(np.__version__.split(".")[0]) >= 2:
        assert not hasattr(np, "trapz")  # the shim for sportran is gone after the call


def test_bad_input_stops_with_the_reason():
    fluxes = ou_fluxes(n_traj=2, n_steps=2000)
    with pytest.raises(KappaflowError, match="fewer than twice the longest lag"):
        green_kubo(fluxes, DT, T, V, max_lag_fs=5000)
    with pytest.raises(KappaflowError, match="no zero crossing within 400 fs"):
        green_kubo(ou_fluxes(n_traj=2, n_steps=20000, tau=2000.0), DT, T, V, max_lag_fs=400)
    with pytest.raises(KappaflowError, match="Nyquist"):
        green_kubo(fluxes, DT, T, V, max_lag_fs=1000, filter_thz=200.0)
    with pytest.raises(KappaflowError, match=r"trajectory 1: .*finite \(n_steps, 3\)"):
        green_kubo([fluxes[0], np.full((2000, 3), np.nan)], DT, T, V, max_lag_fs=1000)


def test_subtracting_the_mean_removes_a_correlation_longer_than_the_trajectory():
    """A flux correlated over 50 ps in trajectories of 20 ps: its slow part is each trajectory's mean.
    The HFACF integral up to 2 ps keeps the analytic value without the subtraction, loses most of it with."""
    from kappaflow.gk.analysis import autocorrelation

    tau = 50000.0
    fluxes = ou_fluxes(n_traj=16, n_steps=5000, seed=3, tau=tau)
    lag = 500  # samples: 2 ps
    expected = S**2 * tau * (1 - np.exp(-lag * DT / tau))  # ∫_0^2ps s² e^(-t/tau) dt, eV² Å² / fs

    def integral(subtract):
        c = np.mean([autocorrelation(j, lag, subtract).mean(axis=1) for j in fluxes], axis=0)
        return float(np.sum(0.5 * (c[1:] + c[:-1])) * DT)

    assert integral(False) == pytest.approx(expected, rel=0.5)
    assert integral(True) < 0.3 * expected


def test_no_dip_can_be_read_at_the_longest_lag_and_says_so():
    fluxes = ou_fluxes(n_traj=2, n_steps=20000, tau=2000.0)
    result = green_kubo(fluxes, DT, T, V, max_lag_fs=400, on_no_dip="max_lag")
    assert not result.converged and result.cutoff_fs == 400
    assert result.kappa_w_per_mk == pytest.approx(result.kappa_tau_iso_filtered[-1])
    assert green_kubo(ou_fluxes(), DT, T, V, max_lag_fs=4000).converged


def test_kappa_at_a_given_lag_and_the_convergence_parts():
    from kappaflow.gk.analysis import convergence

    fluxes = ou_fluxes()
    full = green_kubo(fluxes, DT, T, V, max_lag_fs=4000)
    at = green_kubo(fluxes, DT, T, V, max_lag_fs=4000, at_lag_fs=2000.0)
    assert at.cutoff_fs == 2000.0 and at.kappa_w_per_mk == pytest.approx(at.kappa_tau_iso_filtered[500])
    assert at.converged == (full.cutoff_fs <= 2000.0)
    # the correlation (100 fs) has decayed by 2 ps: the same κ as at the first dip, within its error
    assert abs(at.kappa_w_per_mk - full.kappa_w_per_mk) < 2 * full.kappa_stderr_w_per_mk
    with pytest.raises(KappaflowError, match="at_lag_fs"):
        green_kubo(fluxes, DT, T, V, max_lag_fs=4000, at_lag_fs=5000.0)
    conv = convergence(fluxes, DT, T, V, max_lag_fs=4000)
    # 50 000 samples: every fraction leaves more than twice the 1000-sample lag
    assert [r["fraction"] for r in conv["by_length"]] == [0.25, 0.5, 0.75, 1.0]
    assert [r["n_trajectories"] for r in conv["by_count"]] == list(range(2, 9))
    assert conv["by_count"][-1]["kappa_w_per_mk"] == pytest.approx(full.kappa_w_per_mk, rel=1e-12)
    assert conv["by_length"][-1]["kappa_w_per_mk"] == pytest.approx(full.kappa_w_per_mk, rel=1e-12)
    expected = analytic_kappa()
    for row in conv["by_length"]:  # every part finds the analytic κ: within 3σ of its own error bar
        assert row["converged"] and abs(row["kappa_w_per_mk"] - expected) < 3 * row["kappa_stderr_w_per_mk"], row
    for row in conv["by_count"][2:]:  # and from 4 trajectories on within 10 %
        assert row["converged"] and abs(row["kappa_w_per_mk"] - expected) < 0.1 * expected, row
    # the error bar shrinks with the data (about as 1/√length)
    assert conv["by_length"][0]["kappa_stderr_w_per_mk"] > 1.4 * conv["by_length"][-1]["kappa_stderr_w_per_mk"]
