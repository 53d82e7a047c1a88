"""Where the heat is carried: phono3py's mode quantities (its ``kappa-m*.hdf5``) as tables and figures.

The BTE rule has phono3py write its own mode file (``write_kappa``) next to ``kappa.csv``; nothing here
re-derives a mode quantity.  phono3py's conventions, read as it writes them (4.x):

- ``mode_kappa`` (n_T, n_q, n_band, 6) on the irreducible q-points, each already multiplied by its
  ``weight``; ``kappa = mode_kappa.sum(axis=(1, 2)) / weight.sum()``.  The contribution of one mode (one
  irreducible q with its star) to κ is therefore ``mode_kappa / weight.sum()``, and the cumulative κ ends at
  the table's κ (checked on every read: :func:`read_mode_file`).
- ``gamma`` (n_T, n_q, n_band) and ``gamma_isotope`` (n_q, n_band): the imaginary part of the self-energy
  Γ in THz; the lifetime is τ = 1/(2·2πΓ) (ps) with Γ the sum of both.  Boundary scattering
  (``bte.boundary_mfp_um``) is not in them: lifetimes and mean free paths are intrinsic + isotope.
- ``group_velocity`` (n_q, n_band, 3) in THz·Å.
- An LBTE run's file has no ``mode_kappa``: its κ (``kappa``) has no mode split in it, and the mode
  contributions are those of the RTA run phono3py makes alongside (``mode_kappa_RTA``, ``kappa_RTA``);
  ``ModeData`` then holds the RTA split and ``kappa_lbte_w_per_mk``.

Units are converted in :mod:`kappaflow.units`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kappaflow import units
from kappaflow.errors import InputFileError, KappaflowError

__all__ = ["ModeData", "read_mode_file", "mode_table", "cumulative_kappa", "branch_contributions",
           "select_temperature", "branch_names"]

_REQUIRED = ("temperature", "frequency", "weight", "group_velocity", "gamma")
_VOIGT = [(0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)]


@dataclass
class ModeData:
    """phono3py's mode quantities on the irreducible q-points (each with its weight)."""

    path: Path
    temperatures_k: np.ndarray  # (n_T,)
    qpoints: np.ndarray  # (n_q, 3) reduced
    weights: np.ndarray  # (n_q,) number of q-points in each star
    frequency_thz: np.ndarray  # (n_q, n_band)
    group_velocity_m_per_s: np.ndarray  # (n_q, n_band, 3)
    lifetime_ps: np.ndarray  # (n_T, n_q, n_band): phonon-phonon + isotope; inf where Γ = 0
    mode_kappa_w_per_mk: np.ndarray  # (n_T, n_q, n_band) tr/3 contribution of the mode's star to κ
    kappa_w_per_mk: np.ndarray  # (n_T, 3, 3) phono3py's κ of these mode contributions (RTA for an LBTE file)
    heat_capacity_ev_per_k: np.ndarray  # (n_T, n_q, n_band), phono3py's mode heat capacity
    kappa_lbte_w_per_mk: np.ndarray | None = None  # (n_T, 3, 3) an LBTE file's κ, which has no mode split

    @property
    def n_bands(self) -> int:
        return self.frequency_thz.shape[1]

    @property
    def mean_free_path_nm(self) -> np.ndarray:
        """|v| τ (n_T, n_q, n_band)."""
        speed = np.linalg.norm(self.group_velocity_m_per_s, axis=-1)
        with np.errstate(invalid="ignore"):
            return speed[None] * self.lifetime_ps * units.M_PER_S_PS_TO_NM


def read_mode_file(path) -> ModeData:
    """phono3py's ``kappa-m*.hdf5``; stops with the file and the reason when it is not one, and when the sum
    of its mode contributions is not its own κ (a file of another convention)."""
    import h5py

    path = Path(path)
    try:
        fh = h5py.File(path, "r")
    except (OSError, ValueError) as exc:
        raise InputFileError(path, f"not an HDF5 file phono3py wrote ({exc})") from None
    with fh:
        # an LBTE run writes its κ without a mode split, and the RTA κ with one (mode_kappa_RTA)
        lbte = "mode_kappa" not in fh and "mode_kappa_RTA" in fh
        mode_key, kappa_key = ("mode_kappa_RTA", "kappa_RTA") if lbte else ("mode_kappa", "kappa")
        missing = [k for k in (*_REQUIRED, mode_key, kappa_key) if k not in fh]
        if missing:
            raise InputFileError(path, f"not a phono3py kappa file: no dataset {', '.join(missing)} "
                                       "(phono3py writes them with write_kappa / --wgp off)")
        d = {k: np.asarray(fh[k][()], dtype=np.float64) for k in _REQUIRED}
        d["mode_kappa"] = np.asarray(fh[mode_key][()], dtype=np.float64)
        d["kappa"] = np.asarray(fh[kappa_key][()], dtype=np.float64)
        kappa_lbte = _voigt_tensor(np.asarray(fh["kappa"][()], dtype=np.float64)) if lbte else None
        iso = np.asarray(fh["gamma_isotope"][()], dtype=np.float64) if "gamma_isotope" in fh else 0.0
        cv = (np.asarray(fh["heat_capacity"][()], dtype=np.float64) if "heat_capacity" in fh
              else np.full(d["gamma"].shape, np.nan))
        qpoints = (np.asarray(fh["qpoint"][()], dtype=np.float64) if "qpoint" in fh
                   else np.full((len(d["weight"]), 3), np.nan))
    n_grid = d["weight"].sum()
    mode = d["mode_kappa"] / n_grid  # (n_T, n_q, n_band, 6)
    kappa = _voigt_tensor(d["kappa"])
    total = mode.sum(axis=(1, 2))
    if not np.allclose(total, d["kappa"], rtol=1e-8, atol=1e-10 * max(1.0, np.abs(d["kappa"]).max())):
        raise InputFileError(path, "the mode contributions mode_kappa / sum(weight) do not add up to the file's own "
                                   "kappa: not phono3py's convention")
    gamma = d["gamma"] + iso
    with np.errstate(divide="ignore"):
        lifetime = np.where(gamma > 0, units.LINEWIDTH_THZ_TO_LIFETIME_PS / np.where(gamma > 0, gamma, 1.0), np.inf)
    return ModeData(path=path, temperatures_k=d["temperature"], qpoints=qpoints,
                    weights=d["weight"].astype(np.int64), frequency_thz=d["frequency"],
                    group_velocity_m_per_s=d["group_velocity"] * units.THZ_ANG_TO_M_PER_S, lifetime_ps=lifetime,
                    mode_kappa_w_per_mk=mode[..., :3].sum(axis=-1) / 3.0, kappa_w_per_mk=kappa,
                    heat_capacity_ev_per_k=cv, kappa_lbte_w_per_mk=kappa_lbte)


def _voigt_tensor(v):
    t = np.zeros(v.shape[:-1] + (3, 3))
    for n, (i, j) in enumerate(_VOIGT):
        t[..., i, j] = t[..., j, i] = v[..., n]
    return t


def select_temperature(modes: ModeData, temperature_k: float) -> int:
    """The index of ``temperature_k`` among the file's temperatures (within 1e-6 K), else an error naming
    them."""
    i = int(np.argmin(np.abs(modes.temperatures_k - float(temperature_k))))
    if abs(modes.temperatures_k[i] - float(temperature_k)) > 1e-6:
        raise KappaflowError(f"{modes.path}: no BTE at {float(temperature_k):g} K (analysis.temperatures_k); it has "
                             f"{', '.join(f'{t:g}' for t in modes.temperatures_k)} K (bte.temperatures)")
    return i


def branch_names(n_bands: int) -> list[str]:
    """Bands in phono3py's order (ascending frequency at each q): the lowest three are the acoustic ones."""
    names = ["TA (lowest)", "TA", "LA"][:n_bands]
    return names + [f"optical {k + 1}" for k in range(n_bands - len(names))]


def mode_table(modes: ModeData):
    """One row per (temperature, irreducible q, band): frequency, weight, |v|, lifetime, mean free path and
    the tr/3 contribution to κ (a pandas DataFrame)."""
    import pandas as pd

    n_t, n_q, n_b = modes.lifetime_ps.shape
    t_idx, q_idx, b_idx = np.meshgrid(np.arange(n_t), np.arange(n_q), np.arange(n_b), indexing="ij")
    speed = np.linalg.norm(modes.group_velocity_m_per_s, axis=-1)
    return pd.DataFrame({
        "temperature_k": modes.temperatures_k[t_idx].ravel(), "q_index": q_idx.ravel(), "band": b_idx.ravel() + 1,
        "weight": modes.weights[q_idx].ravel(), "frequency_thz": modes.frequency_thz[q_idx, b_idx].ravel(),
        "group_velocity_m_per_s": speed[q_idx, b_idx].ravel(), "lifetime_ps": modes.lifetime_ps.ravel(),
        "mean_free_path_nm": modes.mean_free_path_nm.ravel(), "kappa_w_per_mk": modes.mode_kappa_w_per_mk.ravel()})


def cumulative_kappa(modes: ModeData, temperature_k: float, by: str = "frequency"):
    """The cumulative κ tr/3 at ``temperature_k`` over ``by`` (``frequency``: THz; ``mean_free_path``: nm),
    as a DataFrame of the sorted modes; its last value is the file's κ tr/3.  Modes with no scattering
    (Γ = 0: the acoustic ones at Γ) carry no κ and are left out of the mean-free-path axis."""
    import pandas as pd

    it = select_temperature(modes, temperature_k)
    contrib = modes.mode_kappa_w_per_mk[it].ravel()
    if by == "frequency":
        x, name = modes.frequency_thz.ravel(), "frequency_thz"
    elif by == "mean_free_path":
        x, name = modes.mean_free_path_nm[it].ravel(), "mean_free_path_nm"
        keep = np.isfinite(x)
        if np.abs(contrib[~keep]).sum() > 1e-9 * max(1.0, np.abs(contrib).sum()):
            raise KappaflowError(f"{modes.path}: modes without scattering carry κ at {temperature_k:g} K")
        x, contrib = x[keep], contrib[keep]
    else:
        raise KappaflowError(f"cumulative_kappa: by must be 'frequency' or 'mean_free_path', got {by!r}")
    order = np.argsort(x, kind="stable")
    return pd.DataFrame({name: x[order], "kappa_w_per_mk": contrib[order],
                         "cumulative_kappa_w_per_mk": np.cumsum(contrib[order])})


def branch_contributions(modes: ModeData):
    """κ tr/3 by band index (phono3py's ascending order) at every temperature, with each band's share."""
    import pandas as pd

    names = branch_names(modes.n_bands)
    rows = []
    for it, T in enumerate(modes.temperatures_k):
        per_band = modes.mode_kappa_w_per_mk[it].sum(axis=0)
        total = per_band.sum()
        for b, k in enumerate(per_band):
            rows.append({"temperature_k": T, "band": b + 1, "branch": names[b], "kappa_w_per_mk": k,
                         "share": k / total if total else np.nan})
    return pd.DataFrame(rows)
