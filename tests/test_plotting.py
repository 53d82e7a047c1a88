"""Figures: every title fits (issue 12: titles were cut at the right edge), one way to save them."""
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.image as mpimg  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from kappaflow.plotting import fit_titles, save_figure  # noqa: E402

from conftest import REPO  # noqa: E402

LONG = ("GeS2, PBE + Grimme-D2 (seed thesis annexure GeS2.scf.in / GeS2.sc.scf.in), 3x3x1 supercell: "
        "displacements + AIMD, committee of five")


def _inside(fig, artist, room=None):
    fig.canvas.draw()
    box = artist.get_window_extent(fig.canvas.get_renderer())
    return box.x0 >= -0.5 and box.x1 <= fig.bbox.width + 0.5 and (room is None or box.width <= room + 0.5)


def test_long_titles_are_wrapped_to_their_axes_and_the_figure(tmp_path):
    fig, axes = plt.subplots(1, 2, figsize=(6, 4), dpi=100)
    for ax in axes:
        ax.plot([0, 1], [0, 1])
        ax.set_title(LONG, fontsize=10)
    fig.suptitle(LONG, fontsize=10)
    fig.canvas.draw()
    assert not _inside(fig, axes[0].title, axes[0].get_window_extent().width * 1.1)  # too wide as given
    assert fit_titles(fig) == 3
    for ax in axes:
        assert "\n" in ax.get_title() and _inside(fig, ax.title, ax.get_window_extent().width * 1.1)
    assert _inside(fig, fig.texts[0])
    assert " ".join(axes[0].get_title().split()) == LONG  # wrapped, not shortened


def test_save_figure_writes_the_png_atomically_and_keeps_short_titles(tmp_path):
    fig, ax = plt.subplots(figsize=(5.5, 4), dpi=100)
    ax.plot(np.arange(3))
    ax.set_title("Si: kappa", fontsize=10)
    out = save_figure(fig, tmp_path / "f.png", close=False)
    assert ax.get_title() == "Si: kappa"
    image = mpimg.imread(out)
    assert image.shape[0] > 100 and image.shape[1] > 100
    assert [p.name for p in tmp_path.iterdir()] == ["f.png"]  # no temporary left behind
    plt.close(fig)


def test_every_figure_is_saved_through_save_figure():
    offenders = []
    for path in sorted((REPO / "src/kappaflow").rglob("*.py")):
        if path.name == "plotting.py":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"\.savefig\(", line) and not line.lstrip().startswith(("#", '"', "'")):
                offenders.append(f"{path.relative_to(REPO)}:{n}")
    assert not offenders, offenders
