"""One home for atomic file writes: write a private temporary sibling, then rename it into place.

A killed or failing step therefore never leaves a half-written file under the final name, and two
processes writing the same file never see each other's partial output.  Every module writes through
these helpers (no hand-made temporary + rename elsewhere; ``tests/test_housekeeping.py`` checks it).
"""

from __future__ import annotations

import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path


def temporary_sibling(path) -> Path:
    """A unique hidden name next to ``path`` (same directory, so the rename is atomic)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


@contextmanager
def atomic_path(path):
    """Yield a temporary sibling path; rename it onto ``path`` only if the block succeeds.

    The suffix of ``path`` is kept on the temporary name's end (``.x.png.<pid>.<id>.tmp`` would
    confuse writers that pick a format from the suffix, such as matplotlib)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    tmp = tmp.with_name(tmp.name + path.suffix) if path.suffix else tmp
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_bytes(path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def copy_file(src, dst) -> None:
    """Byte-for-byte copy of ``src`` onto ``dst``."""
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def create_exclusive(path, text: str) -> bool:
    """Write ``path`` only if it does not exist yet, race-free between processes (a private temporary
    hard-linked into place); an existing file is never touched.  Returns whether this call created it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    tmp.write_text(text)
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink()


@contextmanager
def atomic_dir(path):
    """Yield a private temporary directory; on success it replaces the directory ``path`` as a whole
    (an older ``path`` is removed first), otherwise it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    tmp.mkdir()
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


@contextmanager
def staging_dir(parent):
    """Yield a private temporary directory inside ``parent`` for files that a step then moves into place
    one by one (:func:`publish`); whatever is left in it is removed at the end."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(parent / "stage")
    tmp.mkdir()
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def publish(staged, target) -> None:
    """Rename a finished file (written in a :func:`staging_dir` of the same file system) onto ``target``."""
    os.replace(staged, target)
