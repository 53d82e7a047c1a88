"""Progress messages of the named steps: standard error and the rule's log file.

Kept apart from :mod:`kappaflow.steps` so that light scripts (the pw.x jobs: ``scripts/run_pw.py``,
``scripts/scaling_run.py``) log the same way without importing phono3py, phonopy and matplotlib: their
conda environment (``envs/dft.yaml``) holds only what pw.x jobs need (tests/test_envs.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

LOG_FILES: list[Path] = []


def progress(message: str) -> None:
    """Progress to standard error and to the rule's log file (if a script registered one)."""
    line = f"[kappaflow] {message}"
    print(line, file=sys.stderr, flush=True)
    for path in LOG_FILES:
        with open(path, "a") as fh:
            fh.write(line + "\n")
