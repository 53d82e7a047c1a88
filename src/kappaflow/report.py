"""Figures: κ(T) (linear and log), and the phonon dispersion along a high-symmetry path."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from kappaflow.plotting import save_figure  # noqa: E402
import numpy as np  # noqa: E402

from kappaflow.bte import KappaResult  # noqa: E402


def plot_kappa(result: KappaResult, path, title: str = "", log_scale: bool = False) -> None:
    fig, ax = plt.subplots(figsize=(5.5, 4.0), dpi=120)
    t = result.temperatures_k
    for (i, label, style) in ((0, r"$\kappa_{xx}$", "o-"), (2, r"$\kappa_{zz}$", "s--")):
        ax.plot(t, result.kappa_w_per_mk[:, i, i], style, ms=3.5, label=label)
    ax.set_xlabel("T (K)")
    ax.set_ylabel(r"$\kappa$ (W m$^{-1}$ K$^{-1}$)")
    if log_scale:
        ax.set_yscale("log")
        ax.set_xscale("log")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)


def band_path(primitive_cell: np.ndarray, n_points: int):
    """High-symmetry path (ASE's Setyawan–Curtarolo special points) in fractional reciprocal units."""
    from ase.cell import Cell

    path = Cell(primitive_cell).bandpath(npoints=0)
    special = path.special_points
    segments = []
    labels = []
    for branch in path.path.split(","):
        names = [n for n in _split_labels(branch)]
        for a, b in zip(names[:-1], names[1:]):
            qa, qb = np.asarray(special[a]), np.asarray(special[b])
            segments.append([qa + (qb - qa) * x for x in np.linspace(0, 1, n_points // 4 + 2)])
            labels.append((a, b))
    return segments, labels


def _split_labels(branch: str) -> list[str]:
    names, i = [], 0
    while i < len(branch):
        j = i + 1
        while j < len(branch) and (branch[j].isdigit() or branch[j].islower()):
            j += 1
        names.append(branch[i:j])
        i = j
    return names


def plot_dispersion(phonon, path, n_points: int = 101, title: str = "") -> float:
    """Phonon dispersion with phonopy along the path; returns the lowest frequency (THz)."""
    segments, labels = band_path(np.asarray(phonon.primitive.cell), n_points)
    phonon.run_band_structure(segments, labels=None)
    bands = phonon.get_band_structure_dict()
    fig, ax = plt.subplots(figsize=(6.0, 4.0), dpi=120)
    ticks, ticklabels = [0.0], [labels[0][0]]
    fmin = np.inf
    for dist, freq, (a, b) in zip(bands["distances"], bands["frequencies"], labels):
        ax.plot(dist, freq, color="C0", lw=1.0)
        fmin = min(fmin, float(np.min(freq)))
        if ticklabels[-1] != a:
            ticklabels[-1] = ticklabels[-1] + "|" + a
        ticks.append(float(dist[-1]))
        ticklabels.append(b)
    pretty = [lab.replace("G", r"$\Gamma$") for lab in ticklabels]
    ax.set_xticks(ticks)
    ax.set_xticklabels(pretty)
    for x in ticks:
        ax.axvline(x, color="k", lw=0.5)
    ax.axhline(0, color="k", lw=0.5, ls=":")
    ax.set_xlim(ticks[0], ticks[-1])
    ax.set_ylabel("Frequency (THz)")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
    return fmin


def make_report(kappa_csv, disp_yaml, fc2_path, out: dict, title: str, band_points: int = 101) -> float:
    """κ figures and the dispersion; returns the lowest frequency on the path (THz)."""
    import phonopy
    from phono3py.file_IO import read_fc2_from_hdf5

    from kappaflow.bte import read_kappa_csv

    result = read_kappa_csv(kappa_csv)
    plot_kappa(result, out["kappa_linear"], title=title)
    plot_kappa(result, out["kappa_log"], title=title, log_scale=True)
    from kappaflow.sow import load_phono3py

    ph3 = load_phono3py(disp_yaml)
    fc2 = read_fc2_from_hdf5(filename=str(fc2_path))
    phonon = phonopy.Phonopy(ph3.unitcell, supercell_matrix=ph3.phonon_supercell_matrix
                             if ph3.phonon_supercell_matrix is not None else ph3.supercell_matrix,
                             primitive_matrix=np.eye(3))
    phonon.force_constants = fc2
    return plot_dispersion(phonon, out["dispersion"], band_points, title=title)
