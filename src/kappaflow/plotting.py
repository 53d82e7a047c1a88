"""One home for saving figures: titles that fit, nothing cut at the edges, atomic writes.

Every figure of the pipeline is saved through :func:`save_figure` (``tests/test_plotting.py`` checks that
no other module calls ``savefig``).  Before writing, each title -- axes titles and the figure's
suptitle -- is wrapped onto as many lines as it needs to fit its axes (suptitle: the figure), the
layout is redone, and the file is written with a tight bounding box, so no text leaves the image.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from kappaflow.atomic import atomic_path

#: a title may overhang its axes by this fraction of the axes width before it is wrapped
AXES_OVERHANG = 0.10
MIN_CHARS_PER_LINE = 12


def _titles(fig):
    """(Text artist, allowed width in pixels) for every non-empty title of the figure."""
    out = []
    fig_width = fig.bbox.width
    for ax in fig.axes:
        width = min(ax.get_window_extent().width * (1 + AXES_OVERHANG), fig_width * 0.98)
        if ax.get_title():  # the centre title (kappaflow sets no left/right titles)
            out.append((ax.title, width))
    for text in fig.texts:  # fig.suptitle() is a figure text
        if text.get_text():
            out.append((text, fig_width * 0.98))
    return out


def fit_titles(fig) -> int:
    """Wrap every title that is wider than its room; returns how many were wrapped."""
    renderer = fig.canvas.get_renderer()
    wrapped = 0
    for artist, room in _titles(fig):
        text = artist.get_text()
        if "$" in text:  # mathtext: wrapping could split a formula
            continue
        width = artist.get_window_extent(renderer).width
        if width <= room:
            continue
        flat = " ".join(text.split())
        chars = max(MIN_CHARS_PER_LINE, int(len(flat) * room / width))
        while True:
            artist.set_text(textwrap.fill(flat, chars, break_on_hyphens=False))
            if artist.get_window_extent(renderer).width <= room or chars <= MIN_CHARS_PER_LINE:
                break
            chars = max(MIN_CHARS_PER_LINE, int(chars * 0.9))
        wrapped += 1
    return wrapped


def save_figure(fig, path, dpi=None, close: bool = True) -> Path:
    """Fit the titles, redo the layout, write ``path`` atomically (format from its suffix)."""
    import matplotlib.pyplot as plt

    path = Path(path)
    fig.canvas.draw()
    if fit_titles(fig) and fig.get_layout_engine() is None:
        fig.tight_layout()
    kwargs = {"bbox_inches": "tight", "pad_inches": 0.08, "format": path.suffix.lstrip(".") or "png"}
    if dpi is not None:
        kwargs["dpi"] = dpi
    with atomic_path(path) as tmp:
        fig.savefig(tmp, **kwargs)
    if close:
        plt.close(fig)
    return path
