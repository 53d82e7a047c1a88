"""Green–Kubo κ from heat-flux time series: HFACF, cumulative κ(τ), low-pass filter, first dip.

The protocol of Langer's thesis §5.2 (after Knoop et al. 2023; ``../shared/reference/green_kubo_summary.md``):

1. per trajectory s, optionally subtract the time average of J_s (``subtract_mean``; see below);
2. C_s(τ) = 1/(t0 − τ) ∫ J_s(τ + τ') ⊗ J_s(τ') dτ' (diagonal components; FFT, unbiased);
3. average C over trajectories; κ(τ) = 1/(k_B T² V) ∫_0^τ C, isotropic tr/3;
4. low-pass filter κ(τ) at ``filter_thz`` (a Gaussian, see :func:`_lowpass`; the thesis' 1 THz);
5. the smoothed HFACF is the finite-difference derivative of the filtered κ(τ); the cutoff t_c is its
   first zero crossing ("first dip"); κ = filtered κ(t_c);
6. error bar: the standard error over trajectories of each trajectory's own filtered κ at the same t_c.

**Decision: the time average is not subtracted by default.** The thesis (after Knoop) subtracts each
trajectory's mean flux; that is harmless when trajectories are much longer than the longest phonon
lifetimes, but a flux component that lives longer than the trajectory *is* its mean, and subtracting it
removes exactly the slow part that carries κ.  In equilibrium ⟨J⟩ = 0 exactly (no preferred direction
at zero total momentum), so the unsubtracted estimator is unbiased.  Measured on mock SW Si, 54 atoms,
3 × 5 ps at 300 K: subtracting gives κ(τ = 1.5 ps) = 0.07 W/mK, not subtracting 4.1 W/mK and still
rising (docs/green_kubo.md); each trajectory's mean flux was 25 % of its standard deviation.

A second estimator, cepstral analysis (Ercole, Marcolongo & Baroni 2017) by the maintained library
sportran (:func:`cepstral_kappa`), runs on the same fluxes.  sportran 1.0.0rc1 calls ``numpy.trapz``,
which numpy 2 removed; :func:`cepstral_kappa` supplies ``numpy.trapezoid`` (the same function, renamed)
under the old name for the duration of the call.

Units: J in eV·Å/fs (volume-integrated), times in fs, V in Å³, κ in W/(m·K) (:mod:`kappaflow.units`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kappaflow.errors import KappaflowError
from kappaflow.units import EV_PER_FS_ANG_K_TO_W_PER_MK, K_BOLTZMANN_EV, ev_ang_per_fs_to_ev_ang_per_ps

__all__ = ["GreenKuboResult", "autocorrelation", "green_kubo", "cepstral_kappa", "convergence"]


@dataclass(frozen=True)
class GreenKuboResult:
    """``lag_fs`` (L,); ``hfacf`` (L, 3) trajectory mean, eV²Å²/fs²; ``kappa_tau`` (L, 3) and
    ``kappa_tau_iso``/``kappa_tau_iso_filtered`` (L,) W/mK; ``cutoff_fs``; ``kappa_w_per_mk`` (isotropic
    at the cutoff) ± ``kappa_stderr_w_per_mk``; ``kappa_per_trajectory`` (n,); ``kappa_components``
    (3,) the filtered xx, yy, zz at the same cutoff."""

    lag_fs: np.ndarray
    hfacf: np.ndarray
    kappa_tau: np.ndarray
    kappa_tau_iso: np.ndarray
    kappa_tau_iso_filtered: np.ndarray
    hfacf_iso_smoothed: np.ndarray
    cutoff_fs: float
    kappa_w_per_mk: float
    kappa_stderr_w_per_mk: float
    kappa_per_trajectory: np.ndarray
    kappa_components: np.ndarray
    filter_thz: float
    n_trajectories: int
    #: False: no first dip within the longest lag (``on_no_dip="max_lag"``): κ is the filtered κ(τ) at the
    #: longest lag, not a converged value
    converged: bool = True


def autocorrelation(x: np.ndarray, max_lag: int, subtract_mean: bool = True) -> np.ndarray:
    """Unbiased autocorrelation of each column of x (n, k) (after subtracting its mean, if asked):
    (max_lag + 1, k)."""
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    if subtract_mean:
        x = x - x.mean(axis=0)
    size = 1 << int(np.ceil(np.log2(2 * n)))
    f = np.fft.rfft(x, n=size, axis=0)
    acf = np.fft.irfft(f * np.conj(f), n=size, axis=0)[:max_lag + 1]
    return acf / (n - np.arange(max_lag + 1))[:, None]


def _lowpass(y: np.ndarray, dt_fs: float, filter_thz: float) -> np.ndarray:
    """Gaussian low-pass of κ(τ) with its response 1/√2 at ``filter_thz``, on the odd extension of κ to
    τ < 0 (κ is odd since the HFACF is even).  A Gaussian, not a Butterworth: its step response does not
    overshoot, and the first dip of a Butterworth-filtered κ(τ) sits on the overshoot (+6 % on an
    Ornstein-Uhlenbeck flux with a 100 fs correlation time at 1 THz: tests/test_gk_analysis.py)."""
    from scipy.ndimage import gaussian_filter1d

    nyquist_thz = 0.5 / (dt_fs * 1e-3)
    if not 0 < filter_thz < nyquist_thz:
        raise KappaflowError(f"Green-Kubo: the filter frequency {filter_thz} THz must lie between 0 and the "
                             f"Nyquist frequency of the flux samples ({nyquist_thz:.3g} THz at {dt_fs} fs)")
    sigma_steps = np.sqrt(np.log(2.0)) / (2.0 * np.pi * filter_thz * 1e-3 * dt_fs)
    y = np.asarray(y, dtype=np.float64)
    extended = np.concatenate([-y[:0:-1], y])
    return gaussian_filter1d(extended, sigma_steps, mode="nearest")[y.shape[0] - 1:]


def green_kubo(fluxes, dt_fs: float, temperature_k: float, volume_ang3: float, max_lag_fs: float,
               filter_thz: float = 1.0, subtract_mean: bool = False, on_no_dip: str = "error",
               at_lag_fs: float | None = None) -> GreenKuboResult:
    """κ from the heat-flux series of n trajectories (a list of (n_steps, 3) arrays, eV·Å/fs, one sample
    every ``dt_fs``); HFACF up to ``max_lag_fs``.  Raises when a trajectory is shorter than twice the
    longest lag, and when the smoothed HFACF has no zero crossing within it (the cutoff search needs a
    longer lag or trajectory) unless ``on_no_dip="max_lag"``: then κ is read at the longest lag and the
    result says ``converged=False``.  ``at_lag_fs``: read κ at this lag instead of the first dip (to set two
    runs side by side at one cutoff, or κ vs trajectory length at a fixed one); ``converged`` then says
    whether the first dip lies at or before it."""
    if on_no_dip not in ("error", "max_lag"):
        raise ValueError(f"on_no_dip must be 'error' or 'max_lag', got {on_no_dip!r}")
    series = [np.asarray(j, dtype=np.float64) for j in fluxes]
    if not series:
        raise KappaflowError("Green-Kubo: no heat-flux trajectories")
    for k, j in enumerate(series):
        if j.ndim != 2 or j.shape[1] != 3 or not np.all(np.isfinite(j)):
            raise KappaflowError(f"Green-Kubo: trajectory {k}: the flux must be a finite (n_steps, 3) array, "
                                 f"got shape {j.shape}")
    max_lag = int(round(max_lag_fs / dt_fs))
    if max_lag < 8:
        raise KappaflowError(f"Green-Kubo: max_lag_fs {max_lag_fs} is fewer than 8 flux samples of {dt_fs} fs")
    shortest = min(j.shape[0] for j in series)
    if shortest < 2 * max_lag:
        raise KappaflowError(f"Green-Kubo: a trajectory has {shortest} flux samples ({shortest * dt_fs:g} fs), fewer "
                             f"than twice the longest lag {max_lag_fs:g} fs: run longer trajectories or lower "
                             "gk.max_lag_fs")
    prefactor = EV_PER_FS_ANG_K_TO_W_PER_MK / (K_BOLTZMANN_EV * temperature_k**2 * volume_ang3)
    acfs = np.stack([autocorrelation(j, max_lag, subtract_mean) for j in series])   # (n, L, 3)
    lag = np.arange(max_lag + 1) * dt_fs

    def cumulative(c):  # trapezoid rule along the lag axis, κ(0) = 0
        out = np.zeros_like(c)
        out[1:] = np.cumsum(0.5 * (c[1:] + c[:-1]) * dt_fs, axis=0)
        return prefactor * out

    kappa_each = np.stack([cumulative(c) for c in acfs])                    # (n, L, 3)
    mean_acf = acfs.mean(axis=0)
    kappa_tau = cumulative(mean_acf)
    iso = kappa_tau.mean(axis=1)
    iso_f = _lowpass(iso, dt_fs, filter_thz)
    smoothed = np.gradient(iso_f, dt_fs) / prefactor
    crossing = np.flatnonzero(smoothed[1:] <= 0.0)
    converged = crossing.size > 0
    if at_lag_fs is not None:
        cut = int(round(at_lag_fs / dt_fs))
        if not 0 < cut <= max_lag:
            raise KappaflowError(f"Green-Kubo: at_lag_fs {at_lag_fs:g} is not within (0, {max_lag_fs:g}] fs")
        converged = converged and int(crossing[0]) + 1 <= cut
    elif not converged and on_no_dip == "error":
        raise KappaflowError(f"Green-Kubo: the filtered HFACF has no zero crossing within {max_lag_fs:g} fs "
                             f"({len(series)} trajectories of >= {shortest * dt_fs:g} fs): raise gk.max_lag_fs with "
                             "longer trajectories (or gk.on_no_dip: max_lag to read κ(τ) at the longest lag, "
                             "marked unconverged)")
    else:
        cut = int(crossing[0]) + 1 if converged else max_lag
    each_iso_f = np.stack([_lowpass(k.mean(axis=1), dt_fs, filter_thz) for k in kappa_each])   # (n, L)
    per_traj = each_iso_f[:, cut]
    n = len(series)
    stderr = float(per_traj.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    components = np.array([_lowpass(kappa_tau[:, a], dt_fs, filter_thz)[cut] for a in range(3)])
    return GreenKuboResult(lag, mean_acf, kappa_tau, iso, iso_f, smoothed, float(lag[cut]), float(iso_f[cut]),
                           stderr, per_traj, components, float(filter_thz), n, bool(converged))


def cepstral_kappa(fluxes, dt_fs: float, temperature_k: float, volume_ang3: float, fstar_thz: float | None = None):
    """sportran's cepstral κ (W/mK) ± its error: the x, y, z fluxes of every trajectory are equivalent
    components of one current (sportran averages their periodograms; trajectories cut to the shortest).
    ``fstar_thz``: the resampling frequency (default: the full band).  Returns ``(kappa, stderr, details)``."""
    import contextlib
    import io

    series = [np.asarray(j, dtype=np.float64) for j in fluxes]
    n = min(j.shape[0] for j in series)
    components = np.concatenate([j[:n] for j in series], axis=1)           # (n, 3 n_traj)
    had = hasattr(np, "trapz")
    if not had:
        np.trapz = np.trapezoid  # sportran 1.0.0rc1 calls the name numpy 2 removed
    try:
        import sportran as st

        log = io.StringIO()
        with contextlib.redirect_stdout(log):
            current = st.HeatCurrent(traj=ev_ang_per_fs_to_ev_ang_per_ps(components), DT_FS=float(dt_fs), UNITS="metal",
                                     TEMPERATURE=float(temperature_k), VOLUME=float(volume_ang3))
            if fstar_thz is not None:
                current = current.resample(fstar_THz=float(fstar_thz))
            current.cepstral_analysis()
    finally:
        if not had:
            del np.trapz
    return float(current.kappa), float(current.kappa_std), {"n_components": components.shape[1], "n_samples": n,
                                                              "log": log.getvalue()}


def convergence(fluxes, dt_fs: float, temperature_k: float, volume_ang3: float, max_lag_fs: float,
                filter_thz: float = 1.0, subtract_mean: bool = False, fractions=(0.25, 0.5, 0.75, 1.0)) -> dict:
    """κ ± its standard error from parts of one run, each analysed as a run of its own (its own first dip,
    or the longest lag with ``converged`` false): ``by_length``, every trajectory cut to a fraction of its
    length (fractions leaving fewer than twice the longest lag are skipped); ``by_count``, the first
    m = 2 … n trajectories at full length.  Rows: dicts of the part, κ, stderr, cutoff and converged."""
    series = [np.asarray(j, dtype=np.float64) for j in fluxes]
    shortest = min(j.shape[0] for j in series)
    max_lag = int(round(max_lag_fs / dt_fs))

    def row(part, **label):
        r = green_kubo(part, dt_fs, temperature_k, volume_ang3, max_lag_fs, filter_thz, subtract_mean=subtract_mean,
                       on_no_dip="max_lag")
        return {**label, "kappa_w_per_mk": r.kappa_w_per_mk, "kappa_stderr_w_per_mk": r.kappa_stderr_w_per_mk,
                "cutoff_fs": r.cutoff_fs, "converged": r.converged}

    by_length = []
    for f in fractions:
        n = int(round(f * shortest))
        if n >= 2 * max_lag:
            by_length.append(row([j[:n] for j in series], trajectory_ps=n * dt_fs * 1e-3, fraction=float(f)))
    by_count = [row(series[:m], n_trajectories=m) for m in range(2, len(series) + 1)]
    return {"by_length": by_length, "by_count": by_count}
