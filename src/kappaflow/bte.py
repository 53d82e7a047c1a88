"""Boltzmann transport: κ(T) from fc2 and fc3.

The embedded default is phono3py (RTA, or LBTE as an option).  ``backend: shengbte`` writes ShengBTE's
CONTROL next to FORCE_CONSTANTS_2ND/3RD, runs the given executable and parses its κ tensor.
Either way the result is a :class:`KappaResult`: temperatures (K) and the 3×3 tensor (W/(m·K)).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kappaflow.errors import ConfigError, InputFileError, KappaflowError

VOIGT = [(0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)]
CSV_COLUMNS = ["T_K", "kappa_xx", "kappa_yy", "kappa_zz", "kappa_yz", "kappa_xz", "kappa_xy"]


@dataclass
class KappaResult:
    temperatures_k: np.ndarray
    kappa_w_per_mk: np.ndarray  # (n_T, 3, 3)

    def voigt(self) -> np.ndarray:
        return np.array([[k[i, j] for i, j in VOIGT] for k in self.kappa_w_per_mk])


def temperatures_from_config(spec) -> np.ndarray:
    if isinstance(spec, dict):
        t = np.arange(spec["min"], spec["max"] + 0.5 * spec["step"], spec["step"], dtype=np.float64)
    else:
        t = np.array(spec, dtype=np.float64)
    if t.size == 0 or np.any(t <= 0):
        raise ConfigError(f"bte.temperatures must be positive, got {spec}")
    return t


def voigt_to_tensor(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    t = np.zeros(v.shape[:-1] + (3, 3))
    for n, (i, j) in enumerate(VOIGT):
        t[..., i, j] = v[..., n]
        t[..., j, i] = v[..., n]
    return t


def mode_file_name(mesh) -> str:
    """phono3py's name of its mode file for ``mesh`` (``kappa-m111111.hdf5``), the BTE rule's output."""
    return "kappa-m" + "".join(str(int(m)) for m in mesh) + ".hdf5"


def run_phono3py(ph3, mesh, temperatures_k, method: str = "rta", isotopes: bool = True,
                 boundary_mfp_um: float | None = None, sigma_thz: float | None = None,
                 log_level: int = 0, mode_file=None) -> KappaResult:
    """κ with phono3py on a Phono3py object that already holds fc2 and fc3.

    ``sigma_thz`` None integrates the delta functions with the linear tetrahedron method, else with
    Gaussians of that width.  ``mode_file``: also phono3py's own ``kappa-m*.hdf5`` of the run (its
    ``write_kappa``: frequencies, group velocities, linewidths, mode κ), written there atomically."""
    import contextlib
    import tempfile

    if method not in ("rta", "lbte"):
        raise ConfigError(f"bte.method must be 'rta' or 'lbte', got {method!r}")
    if sigma_thz is not None:
        ph3.sigmas = [float(sigma_thz)]
    ph3.mesh_numbers = list(mesh)
    ph3.init_phph_interaction()
    with contextlib.ExitStack() as stack:
        if mode_file is not None:
            # phono3py writes its file into the working directory: a private one beside the destination
            mode_file = Path(mode_file).resolve()
            mode_file.parent.mkdir(parents=True, exist_ok=True)
            scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=mode_file.parent, prefix=".modes-")))
            stack.enter_context(contextlib.chdir(scratch))
        ph3.run_thermal_conductivity(is_LBTE=method == "lbte", temperatures=np.asarray(temperatures_k),
                                     is_isotope=isotopes, boundary_mfp=boundary_mfp_um, log_level=log_level,
                                     write_kappa=mode_file is not None)
        if mode_file is not None:
            from kappaflow import atomic

            written = sorted(scratch.glob("kappa-m*.hdf5"))
            if len(written) != 1:
                raise KappaflowError(f"phono3py wrote {len(written)} kappa-m*.hdf5 files, expected one: "
                                  f"{[p.name for p in written]}")
            atomic.publish(written[0], mode_file)
    tc = ph3.thermal_conductivity
    kappa = np.asarray(tc.kappa, dtype=np.float64)[0]  # the one sigma: tetrahedron or the Gaussian
    return KappaResult(np.asarray(tc.temperatures, dtype=np.float64), voigt_to_tensor(kappa))


def write_kappa_csv(path, result: KappaResult) -> None:
    """κ(T): T_K, then the six Voigt components in W/(m·K) (kappaflow.tables)."""
    import pandas as pd

    from kappaflow.tables import write_table

    data = np.column_stack([result.temperatures_k, result.voigt()]).astype(np.float64)
    write_table(path, pd.DataFrame(data, columns=CSV_COLUMNS))


def read_kappa_csv(path) -> KappaResult:
    from kappaflow.tables import read_table

    path = Path(path)
    frame = read_table(path, required=CSV_COLUMNS, numeric=CSV_COLUMNS, what="κ table")
    if list(frame.columns) != CSV_COLUMNS:
        raise InputFileError(path, f"header must be {','.join(CSV_COLUMNS)}", 1)
    data = frame.to_numpy(dtype=np.float64)
    return KappaResult(data[:, 0], voigt_to_tensor(data[:, 1:]))
