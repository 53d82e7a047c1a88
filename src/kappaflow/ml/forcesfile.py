"""PANNA evaluation force files (``*_forces.dat``) and kappaflow's committee-spread companion.

Forces file (written by PANNA's ``evaluate.py`` with ``compute_forces = True``)::

    #filename atom_id fx_nn fy_nn fz_nn fx_ref fy_ref fz_ref
    <key> 0 fx fy fz fx fy fz
    <key> 1 ...

one row per atom, ``atom_id`` 0-based, forces in eV/Å, ``*_nn`` predicted and ``*_ref`` the reference
(DFT) forces of the example.  For structures without reference forces kappaflow also reads and writes
the 5-column form ``#filename atom_id fx_nn fy_nn fz_nn``; the reader then returns NaN reference arrays.

Committee spread (kappaflow's companion file, same row layout, never mixed into the PANNA file so that
tools expecting 8 columns keep working)::

    #filename atom_id sigma_fx sigma_fy sigma_fz

the per-component spread (standard deviation across committee members, eV/Å, non-negative) of the
predicted force on each atom; the file says nothing about how many members or which ``ddof`` were used,
record that next to it.

Readers are strict: every malformed line raises :class:`~kappaflow.errors.InputFileError` naming the
file and the line — wrong column count, unparsable number, NaN or infinite value, negative or duplicated
``atom_id``, a gap in the ``atom_id`` of a structure, fewer or more atoms than expected, an unknown
structure when the expected keys are given (and an expected structure that is missing).  Writers write
full ``repr`` precision (the file reads back bit for bit) through a temporary file and a rename.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from kappaflow.errors import InputFileError, KappaflowError
from kappaflow.atomic import write_text as atomic_write_text

FORCES_COLUMNS = ("filename", "atom_id", "fx_nn", "fy_nn", "fz_nn", "fx_ref", "fy_ref", "fz_ref")
FORCES_COLUMNS_NO_REF = FORCES_COLUMNS[:5]
SIGMA_COLUMNS = ("filename", "atom_id", "sigma_fx", "sigma_fy", "sigma_fz")

_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_NONFINITE = re.compile(r"^[+-]?(nan|inf|infinity)$", re.IGNORECASE)


def _header(columns) -> str:
    return "#" + " ".join(columns)


# ------------------------------------------------------------------------------------------------
# reading
# ------------------------------------------------------------------------------------------------
def _read_table(path, allowed_columns: list[tuple[str, ...]], expected_n_atoms, expected_keys,
                non_negative: bool = False) -> tuple[tuple[str, ...], dict[str, np.ndarray]]:
    """Rows of a ``#filename atom_id v1 v2 ...`` table, checked, as {key: (n_atoms, n_values)}."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise InputFileError(path, f"cannot read ({exc.strerror})") from None
    header_at = next((i for i, line in enumerate(lines) if line.strip()), None)
    if header_at is None:
        raise InputFileError(path, "empty file")
    header = tuple(lines[header_at].strip().lstrip("#").split())
    if not lines[header_at].lstrip().startswith("#") or header not in allowed_columns:
        expected = " or ".join(repr(_header(c)) for c in allowed_columns)
        raise InputFileError(path, f"header must be {expected}, found {lines[header_at].strip()!r}",
                             header_at + 1)
    n_cols = len(header)
    names = header[2:]
    if isinstance(expected_n_atoms, Mapping) and expected_keys is None:
        expected_keys = expected_n_atoms.keys()
    expected_keys = None if expected_keys is None else set(expected_keys)

    rows: dict[str, dict[int, tuple[np.ndarray, int]]] = {}
    first_line: dict[str, int] = {}
    for i in range(header_at + 1, len(lines)):
        lineno = i + 1
        fields = lines[i].split()
        if not fields:
            continue
        if fields[0].startswith("#"):
            raise InputFileError(path, "a second header or comment inside the table", lineno)
        if len(fields) != n_cols:
            raise InputFileError(path, f"expected {n_cols} columns ({' '.join(header)}), found {len(fields)}",
                                 lineno)
        key = fields[0]
        if expected_keys is not None and key not in expected_keys:
            raise InputFileError(path, f"unknown structure {key!r} (not among the {len(expected_keys)} "
                                 "expected keys)", lineno)
        if not re.fullmatch(r"\d+", fields[1]):
            raise InputFileError(path, f"atom_id must be a non-negative integer, found {fields[1]!r}", lineno)
        atom = int(fields[1])
        values = []
        for name, tok in zip(names, fields[2:]):
            if _NONFINITE.match(tok):
                raise InputFileError(path, f"{name} of atom {atom} of {key!r} is {tok}", lineno)
            if not _NUMBER.match(tok):
                raise InputFileError(path, f"{name} of atom {atom} of {key!r}: cannot read {tok!r} as a number",
                                     lineno)
            value = float(tok)
            if not np.isfinite(value):  # e.g. 1e999
                raise InputFileError(path, f"{name} of atom {atom} of {key!r} overflows ({tok})", lineno)
            if non_negative and value < 0:
                raise InputFileError(path, f"{name} of atom {atom} of {key!r} is negative ({tok})", lineno)
            values.append(value)
        per_key = rows.setdefault(key, {})
        first_line.setdefault(key, lineno)
        if atom in per_key:
            raise InputFileError(path, f"atom {atom} of {key!r} is listed twice (first at line "
                                 f"{per_key[atom][1]})", lineno)
        per_key[atom] = (np.array(values, dtype=np.float64), lineno)

    if not rows:
        raise InputFileError(path, "no data rows after the header")
    out = {}
    for key, per_key in rows.items():
        if isinstance(expected_n_atoms, Mapping):
            if key not in expected_n_atoms:
                raise InputFileError(path, f"unknown structure {key!r} (no expected atom count)",
                                     first_line[key])
            n_expected = int(expected_n_atoms[key])
        else:
            n_expected = None if expected_n_atoms is None else int(expected_n_atoms)
        n = max(per_key) + 1 if n_expected is None else n_expected
        missing = [a for a in range(n) if a not in per_key]
        extra = sorted(a for a in per_key if a >= n)
        if extra:
            raise InputFileError(path, f"{key!r} lists atom {extra[0]}, but has {n} atoms (atom_id 0..{n - 1})",
                                 per_key[extra[0]][1])
        if missing:
            shown = ", ".join(str(a) for a in missing[:5]) + (" ..." if len(missing) > 5 else "")
            raise InputFileError(path, f"{key!r} lacks atom(s) {shown} of atom_id 0..{n - 1} "
                                 f"({len(per_key)} rows)", first_line[key])
        out[key] = np.array([per_key[a][0] for a in range(n)])
    if expected_keys is not None:
        absent = sorted(expected_keys - set(out))
        if absent:
            raise InputFileError(path, f"{len(absent)} expected structure(s) missing, e.g. {absent[0]!r}")
    return header, out


def read_forces(path, expected_n_atoms: int | Mapping[str, int] | None = None,
                expected_keys: Iterable[str] | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A PANNA forces file as ``{key: (forces_nn (n,3), forces_ref (n,3))}`` in eV/Å, rows in atom_id
    order; ``forces_ref`` is all NaN for a 5-column file.

    ``expected_n_atoms``: one count for every structure, or a mapping key -> count (whose keys are
    then also the expected keys).  ``expected_keys``: the file must list exactly these structures."""
    header, table = _read_table(path, [FORCES_COLUMNS, FORCES_COLUMNS_NO_REF], expected_n_atoms,
                                expected_keys)
    out = {}
    for key, values in table.items():
        nn = np.ascontiguousarray(values[:, 0:3])
        ref = np.ascontiguousarray(values[:, 3:6]) if len(header) == 8 else np.full_like(nn, np.nan)
        out[key] = (nn, ref)
    return out


def read_sigma(path, expected_n_atoms: int | Mapping[str, int] | None = None,
               expected_keys: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """A committee-spread file as ``{key: sigma (n,3)}`` in eV/Å (same checks as :func:`read_forces`,
    and no negative spread)."""
    _, table = _read_table(path, [SIGMA_COLUMNS], expected_n_atoms, expected_keys, non_negative=True)
    return table


# ------------------------------------------------------------------------------------------------
# writing
# ------------------------------------------------------------------------------------------------
def _checked(path, key, array, what: str, n_atoms: int | None = None, non_negative: bool = False):
    if not isinstance(key, str) or not key or any(c.isspace() for c in key) or key.startswith("#"):
        raise KappaflowError(f"{path}: structure key {key!r} must be a non-empty string without whitespace")
    a = np.asarray(array, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != 3 or len(a) == 0:
        raise KappaflowError(f"{path}: {what} of {key!r} must have shape (n_atoms, 3), found {a.shape}")
    if n_atoms is not None and len(a) != n_atoms:
        raise KappaflowError(f"{path}: {what} of {key!r} has {len(a)} atoms, the predictions {n_atoms}")
    if not np.all(np.isfinite(a)):
        atom = int(np.argwhere(~np.isfinite(a))[0][0])
        raise KappaflowError(f"{path}: {what} of {key!r} is not finite on atom {atom}")
    if non_negative and np.any(a < 0):
        raise KappaflowError(f"{path}: {what} of {key!r} is negative")
    return a


def write_forces(path, forces_nn: Mapping[str, np.ndarray],
                 forces_ref: Mapping[str, np.ndarray] | None = None) -> None:
    """Write predicted (and reference) forces, eV/Å, in PANNA's layout: 8 columns when ``forces_ref``
    is given (it must then cover every key), else 5."""
    columns = FORCES_COLUMNS if forces_ref is not None else FORCES_COLUMNS_NO_REF
    out = [_header(columns)]
    if not forces_nn:
        raise KappaflowError(f"{path}: no forces to write")
    for key, nn in forces_nn.items():
        nn = _checked(path, key, nn, "predicted forces")
        if forces_ref is not None:
            if key not in forces_ref:
                raise KappaflowError(f"{path}: no reference forces for {key!r}")
            ref = _checked(path, key, forces_ref[key], "reference forces", len(nn))
            rows = np.hstack([nn, ref])
        else:
            rows = nn
        out.extend(f"{key} {i} " + " ".join(repr(float(v)) for v in row) for i, row in enumerate(rows))
    atomic_write_text(path, "\n".join(out) + "\n")


def write_sigma(path, sigma: Mapping[str, np.ndarray]) -> None:
    """Write a committee-spread companion file (eV/Å, non-negative)."""
    if not sigma:
        raise KappaflowError(f"{path}: no spreads to write")
    out = [_header(SIGMA_COLUMNS)]
    for key, s in sigma.items():
        s = _checked(path, key, s, "force spread", non_negative=True)
        out.extend(f"{key} {i} " + " ".join(repr(float(v)) for v in row) for i, row in enumerate(s))
    atomic_write_text(path, "\n".join(out) + "\n")
