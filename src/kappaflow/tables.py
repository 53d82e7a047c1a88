"""The one home for kappaflow's CSV tables: written and read with pandas.

Every table the pipeline writes (κ, cost, plan, sweep, noise, scaling, AL rounds, GK, analysis) goes
through :func:`write_table` (atomic, floats as Python's shortest round-trip repr: a float read back is
the float written) and every table it reads through :func:`read_table` (the file, the line and the column
named when a column is missing or a value is not a number).  :mod:`kappaflow.results` loads a results
folder into DataFrames with it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kappaflow.errors import InputFileError

__all__ = ["write_table", "read_table"]


def write_table(path, rows, columns=None) -> None:
    """``rows`` (a DataFrame, or a list of dicts) to ``path`` atomically; ``columns`` fixes their order (and
    drops others)."""
    import pandas as pd

    from kappaflow import atomic

    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows), columns=columns)
    if columns is not None:
        frame = frame.reindex(columns=list(columns))
    with atomic.atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def read_table(path, required=(), numeric=(), what: str = "table"):
    """A CSV table as a DataFrame; stops naming the file (and the line) when it cannot be read, lacks one of
    ``required`` columns, or holds a value in a ``numeric`` column that is not a finite number (an empty
    cell or NaN included: a κ or a wall time that is not there is an error, not a NaN passed on)."""
    import pandas as pd

    path = Path(path)
    try:
        frame = pd.read_csv(path)
    except FileNotFoundError:
        raise InputFileError(path, f"no {what} here") from None
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputFileError(path, f"cannot read the {what} ({exc})") from None
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise InputFileError(path, f"the {what} lacks column(s) {', '.join(missing)} "
                                   f"(its header: {', '.join(map(str, frame.columns))})", 1)
    for column in numeric:
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = ~np.isfinite(values.to_numpy(dtype=np.float64))
        if bad.any():
            row = int(bad.nonzero()[0][0])
            raw = frame[column].iloc[row]
            what = "is empty or NaN" if pd.isna(raw) else f"{str(raw)!r} is not a finite number"
            raise InputFileError(path, f"{column} {what}", row + 2)
        frame[column] = values
    return frame
