"""Glue for the thin Snakemake scripts: log files, and one-line errors instead of tracebacks."""

from __future__ import annotations

import sys
from pathlib import Path

from kappaflow.errors import KappaflowError


def run(step, *args, log=None, **kwargs):
    from kappaflow import logs  # not kappaflow.steps: the pw.x jobs' environment has no phono3py

    if log:
        path = Path(str(log[0] if isinstance(log, (list, tuple)) or hasattr(log, "__getitem__")
                        and not isinstance(log, str) else log))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
        logs.LOG_FILES.append(path)
    try:
        return step(*args, **kwargs)
    except KappaflowError as exc:
        logs.progress(f"ERROR: {exc}")
        sys.exit(1)
