"""Force injection: pw.x-format outputs that carry machine-learned forces.

kappaflow's reap (and thirdorder's ``reap``, and ASE's ``espresso-out`` reader) read forces from pw.x
outputs.  To use ML forces for a displaced supercell without running pw.x, this module writes an output
in pw.x 6.7's exact line layout for the parts those readers use:

* the header lines ``lattice parameter (alat)``, ``number of atoms/cell``, ``celldm(1)=``, ``crystal
  axes`` (``3f11.6``, units of alat) and the ``site n. ... tau( n) = (...)`` positions (``3f12.7``);
* ``!    total energy              =<F17.8> Ry``;
* ``Forces acting on atoms (cartesian axes, Ry/au):``, a blank line, then one
  ``     atom <I4> type <I2>   force = <3F14.8>`` line per atom (9 whitespace fields, as thirdorder
  greps them) with the pw.x species index of ``ATOMIC_SPECIES``, and ``Total force = <F12.6>`` (the norm
  of all components, as pw.x prints it);
* a ``PWSCF : ... WALL`` timing line (0 s) and ``JOB DONE.``.

Forces are converted from eV/Å to Ry/bohr with :mod:`kappaflow.units` and printed with pw.x's 8
decimals, so a round trip through :func:`kappaflow.qe.pwout.read_pw_output` reproduces them to
5e-9 Ry/bohr.  Every injected file is marked: its banner reads ``Program PWSCF v.kappaflow-ml`` (so the
parsed "QE version" is ``kappaflow-ml``, never a real one) followed by lines starting with
``kappaflow ML injection:`` (see :func:`is_ml_injected`).  Without an ML energy the total energy is a
labelled placeholder 0.  The output is deterministic (no dates or timings).

:func:`inject_set` builds a result store for a set of supercells: in ``hybrid`` mode a supercell with a
finished DFT output keeps it byte for byte and the others get ML forces; in ``ml`` mode all get ML
forces.  Nothing falls back silently: a missing, misshapen, non-finite or misordered ML force set, a
missing pw.x input or an unusable DFT output raise, naming the supercell.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from kappaflow import atomic
from kappaflow import units
from kappaflow.errors import InputFileError, KappaflowError
from kappaflow.ml.dataset import check_output_against_input
from kappaflow.qe.pwin import PwInput, read_pw_input
from kappaflow.qe.pwout import FORCES_HEADER, read_pw_output

ML_VERSION = "kappaflow-ml"
MARKER = "kappaflow ML injection:"
BANNER = f"     Program PWSCF v.{ML_VERSION} (kappaflow ML injection; not a pw.x run)"
MODES = ("hybrid", "ml")
#: agreement demanded between an ML structure and the pw.x input of its supercell (Å)
STRUCTURE_TOLERANCE_ANG = 1e-6


def _fixed(value: float, width: int, decimals: int, what: str) -> str:
    """``value`` in Fortran ``F<width>.<decimals>``; raises instead of printing ``****``."""
    text = f"{value:{width}.{decimals}f}"
    if len(text) != width or not np.isfinite(value):
        raise KappaflowError(f"{what} = {value!r} does not fit pw.x's F{width}.{decimals} format")
    return text


def force_line(index: int, type_index: int, force_ry_bohr) -> str:
    """pw.x 6.7's force line ``(5X,'atom ',I4,' type ',I2,'   force = ',3F14.8)``."""
    if not 1 <= index <= 9999 or not 1 <= type_index <= 99:
        raise KappaflowError(f"atom {index} type {type_index} does not fit pw.x's I4/I2 format")
    return (f"     atom {index:4d} type {type_index:2d}   force = "
            + "".join(_fixed(float(x), 14, 8, f"force on atom {index}") for x in force_ry_bohr))


def forces_block(forces_ev_per_ang, type_indices) -> list[str]:
    """The lines of pw.x's forces block (header, blank, atom lines, blank, total force, blank)."""
    f = units.ev_per_ang_to_ry_per_bohr(forces_ev_per_ang)
    lines = ["     " + FORCES_HEADER, ""]
    lines += [force_line(i, t, row) for i, (t, row) in enumerate(zip(type_indices, f), start=1)]
    total = float(np.sqrt(np.sum(f * f)))
    lines += ["", f"     Total force = {_fixed(total, 12, 6, 'total force')}     Total SCF correction = "
              f"{_fixed(0.0, 12, 6, 'SCF correction')}", ""]
    return lines


def energy_line(energy_ev: float) -> str:
    """pw.x's ``'!    total energy              =',F17.8,' Ry'``."""
    return f"!    total energy              ={_fixed(float(units.ev_to_ry(energy_ev)), 17, 8, 'total energy')} Ry"


def _check_forces(forces, n_atoms: int, what: str) -> np.ndarray:
    f = np.asarray(forces, dtype=np.float64)
    if f.shape != (n_atoms, 3):
        raise KappaflowError(f"{what}: ML forces have shape {f.shape}, the supercell has {n_atoms} atoms "
                             f"(expected ({n_atoms}, 3))")
    bad = np.argwhere(~np.isfinite(f))
    if len(bad):
        raise KappaflowError(f"{what}: ML force on atom {bad[0][0] + 1} is {f[tuple(bad[0])]}")
    return f


def _alat_bohr(pw: PwInput) -> float:
    """pw.x's alat for an input: celldm(1), else A, else the length of the first cell vector."""
    celldm = pw.get("system", "celldm(1)")
    if isinstance(celldm, (int, float)) and not isinstance(celldm, bool) and celldm > 0:
        return float(celldm)
    a = pw.get("system", "a")
    if isinstance(a, (int, float)) and not isinstance(a, bool) and a > 0:
        return float(units.ang_to_bohr(a))
    return float(units.ang_to_bohr(np.linalg.norm(np.asarray(pw.atoms.cell)[0])))


def _labels(pw: PwInput) -> list[str]:
    return [str(s) for s in pw.atoms.arrays.get("qe_labels", pw.atoms.get_chemical_symbols())]


def _marker_lines(note: str | None, energy_given: bool, source: str) -> list[str]:
    lines = [f"     {MARKER} this is NOT a pw.x run.  kappaflow.inject wrote the forces",
             f"     {MARKER} of a machine-learned potential in pw.x's output format.",
             f"     {MARKER} structure from {source}"]
    if not energy_given:
        lines.append(f"     {MARKER} no ML energy was given; the total energy is a placeholder 0.")
    if note:
        for part in str(note).splitlines():
            lines.append(f"     {MARKER} {part}")
    return lines


def ml_output_text(pw: PwInput, forces_ev_per_ang, energy_ev: float | None = None,
                   note: str | None = None) -> str:
    """The text of a pw.x-format scf output for the structure of ``pw`` carrying the given forces."""
    atoms = pw.atoms
    n = len(atoms)
    f = _check_forces(forces_ev_per_ang, n, pw.path)
    if energy_ev is not None and not np.isfinite(energy_ev):
        raise KappaflowError(f"{pw.path}: ML energy is {energy_ev}")
    type_of = {sp.symbol: i + 1 for i, sp in enumerate(pw.species)}
    labels = _labels(pw)
    alat = _alat_bohr(pw)
    alat_ang = float(units.bohr_to_ang(alat))
    cell_alat = np.asarray(atoms.cell, dtype=np.float64) / alat_ang
    tau_alat = np.asarray(atoms.positions, dtype=np.float64) / alat_ang
    volume = float(abs(np.linalg.det(units.ang_to_bohr(np.asarray(atoms.cell)))))
    out = ["", BANNER, ""]
    out += _marker_lines(note, energy_ev is not None, pw.path)
    out += ["",
            f"     bravais-lattice index     = {0:12d}",
            f"     lattice parameter (alat)  = {_fixed(alat, 12, 4, 'alat')}  a.u.",
            f"     unit-cell volume          = {_fixed(volume, 12, 4, 'volume')} (a.u.)^3",
            f"     number of atoms/cell      = {n:12d}",
            f"     number of atomic types    = {len(pw.species):12d}",
            "", "",
            f"     celldm(1)={_fixed(alat, 11, 6, 'celldm(1)')}  celldm(2)={0.0:11.6f}  celldm(3)={0.0:11.6f}",
            f"     celldm(4)={0.0:11.6f}  celldm(5)={0.0:11.6f}  celldm(6)={0.0:11.6f}",
            "",
            "     crystal axes: (cart. coord. in units of alat)"]
    out += [f"               a({i}) = (" + "".join(_fixed(x, 11, 6, f"a({i})") for x in v) + " )  "
            for i, v in enumerate(cell_alat, start=1)]
    out += ["", "", "", "   Cartesian axes", "",
            "     site n.     atom                  positions (alat units)"]
    for i, (lab, t) in enumerate(zip(labels, tau_alat), start=1):
        if lab not in type_of:
            raise KappaflowError(f"{pw.path}: species {lab!r} of atom {i} is not in ATOMIC_SPECIES")
        out.append(f"      {i:4d}        " + f"{lab:<3s}".rjust(6) + f" tau({i:4d}) = ("
                   + "".join(_fixed(x, 12, 7, f"position of atom {i}") for x in t) + "  )")
    out += ["", "", energy_line(0.0 if energy_ev is None else energy_ev)]
    if energy_ev is None:
        out.append(f"     {MARKER} the total energy above is a placeholder, not an energy")
    out += [""]
    out += forces_block(f, [type_of[lab] for lab in labels])
    out += ["", "     PWSCF        :      0.00s CPU      0.00s WALL", "", "",
            "=------------------------------------------------------------------------------=",
            "   JOB DONE.",
            "=------------------------------------------------------------------------------="]
    return "\n".join(out) + "\n"


def write_ml_output(path, pw_input, forces_ev_per_ang, energy_ev: float | None = None,
                    note: str | None = None) -> None:
    """Write (atomically) a pw.x-format output for the supercell of ``pw_input`` (path or PwInput)
    carrying ``forces_ev_per_ang`` (n_atoms, 3) in the input's atom order, and the ML energy (eV) if
    given.  The written file is parsed back with kappaflow's strict parser before it is renamed."""
    pw = pw_input if isinstance(pw_input, PwInput) else read_pw_input(pw_input)
    text = ml_output_text(pw, forces_ev_per_ang, energy_ev, note)
    _write_checked(path, text, len(pw.atoms), forces_ev_per_ang)


def _write_checked(path, text: str, n_atoms: int, forces_ev_per_ang) -> None:
    """Write ``text`` to a temporary sibling, parse it strictly, compare the forces, rename."""
    with atomic.atomic_path(path) as tmp:
        tmp.write_text(text)
        run = read_pw_output(tmp, expected_n_atoms=n_atoms)
        back = units.ev_per_ang_to_ry_per_bohr(run.forces_ev_per_ang)
        want = units.ev_per_ang_to_ry_per_bohr(forces_ev_per_ang)
        if np.abs(back - want).max() > 0.5e-8 * (1 + 1e-6) + 1e-15 * np.abs(want).max():
            raise KappaflowError(f"{path}: injected forces do not read back (internal error)")


def is_ml_injected(path) -> bool:
    """True if ``path`` was written by this module (its first 40 lines carry the marker)."""
    with open(path, errors="replace") as fh:
        for _, line in zip(range(40), fh):
            if MARKER in line or f"v.{ML_VERSION}" in line:
                return True
    return False


# ------------------------------------------------------------------------------------------------
# a set of supercells
# ------------------------------------------------------------------------------------------------
def _structure_of(obj):
    """(symbols, cell Å, positions Å) of an ASE Atoms or a PANNA example dict."""
    if isinstance(obj, Mapping):
        from kappaflow.ml.dataset import normalize_example

        ex = normalize_example(dict(obj), require_forces=False)
        return ([a[1] for a in ex["atoms"]], np.array(ex["lattice_vectors"]),
                np.array([a[2] for a in ex["atoms"]]))
    return obj.get_chemical_symbols(), np.asarray(obj.cell), np.asarray(obj.positions)


def check_structure(key: str, pw: PwInput, structure, tolerance_ang: float = STRUCTURE_TOLERANCE_ANG) -> None:
    """The ML structure of supercell ``key`` must be the pw.x input's: same atom count, species in the
    same order, same cell and positions (modulo lattice translations) within ``tolerance_ang``."""
    symbols, cell, pos = _structure_of(structure)
    ref = pw.atoms.get_chemical_symbols()
    if len(symbols) != len(ref):
        raise KappaflowError(f"supercell {key}: ML structure has {len(symbols)} atoms, the pw.x input "
                             f"{pw.path} {len(ref)}")
    if list(symbols) != ref:
        k = next(i for i, (a, b) in enumerate(zip(symbols, ref)) if a != b)
        raise KappaflowError(f"supercell {key}: atom order differs from the pw.x input {pw.path}: atom {k + 1} "
                             f"is {symbols[k]} in the ML structure, {ref[k]} in the input")
    ref_cell = np.asarray(pw.atoms.cell)
    if np.abs(cell - ref_cell).max() > tolerance_ang:
        raise KappaflowError(f"supercell {key}: ML cell differs from the pw.x input {pw.path} by "
                             f"{np.abs(cell - ref_cell).max():.2e} Å")
    frac = (pos - pw.atoms.positions) @ np.linalg.inv(ref_cell)
    d = np.linalg.norm((frac - np.round(frac)) @ ref_cell, axis=1)
    if d.max() > tolerance_ang:
        k = int(np.argmax(d))
        raise KappaflowError(f"supercell {key}: ML position of atom {k + 1} differs from the pw.x input "
                             f"{pw.path} by {d[k]:.2e} Å")


def inject_set(keys: Iterable[str], dft_dir, ml_forces: Mapping[str, np.ndarray], out_dir,
               mode: str = "hybrid", *, ml_energies: Mapping[str, float] | None = None,
               ml_structures: Mapping | None = None, provenance_path=None,
               note: str | None = None, dft_keys: Iterable[str] | None = None) -> dict[str, str]:
    """Write ``out_dir/<key>/pw.out`` (and a copy of ``pw.in``) for every supercell ``key``.

    ``dft_dir`` is the DFT result store (``<key>/pw.in``, and ``<key>/pw.out`` for finished runs).
    ``mode="hybrid"``: a finished DFT output is validated and copied byte for byte, the other supercells
    get ML forces; ``mode="ml"``: every supercell gets ML forces.  ``ml_forces[key]`` is (n_atoms, 3)
    eV/Å in the pw.x input's atom order; ``ml_energies[key]`` (eV) is optional; ``ml_structures[key]``
    (ASE Atoms or PANNA example), if given for the set, is checked against the pw.x input (atom count,
    species order, cell, positions).  ML forces for keys outside ``keys``, or for supercells that keep
    their DFT output, are not used.  ``dft_keys`` (hybrid mode): only these supercells may keep a DFT
    output (the runs an active-learning loop paid for; other outputs in the store are not used).

    Returns ``{key: "dft" | "ml"}`` and writes it as JSON to ``provenance_path`` (default
    ``out_dir/provenance.json``): ``{"mode": ..., "n_dft": ..., "n_ml": ..., "sources": {key: ...}}``."""
    if mode not in MODES:
        raise KappaflowError(f"injection mode must be one of {MODES}, got {mode!r}")
    keys = list(keys)
    dft_keys = None if dft_keys is None else set(dft_keys)
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise KappaflowError(f"supercell {dup} is listed twice")
    dft_dir, out_dir = Path(dft_dir), Path(out_dir)
    plan: dict[str, tuple[str, PwInput]] = {}
    for key in keys:  # check everything before writing anything
        pw_path = dft_dir / key / "pw.in"
        if not pw_path.is_file():
            raise InputFileError(pw_path, f"supercell {key}: no pw.x input in the DFT store")
        pw = read_pw_input(pw_path)
        n = len(pw.atoms)
        dft_out = dft_dir / key / "pw.out"
        allowed = dft_keys is None or key in dft_keys
        if mode == "hybrid" and dft_out.exists() and allowed:
            read_pw_output(dft_out, expected_n_atoms=n)  # a broken DFT output raises; never replaced by ML
            if is_ml_injected(dft_out):
                raise InputFileError(dft_out, f"supercell {key}: the DFT store holds an ML-injected output")
            check_output_against_input(pw, dft_out, n)  # species order, cell and positions of the header
            plan[key] = ("dft", pw)
            continue
        why = "mode 'ml'" if mode == "ml" else "no finished DFT output"
        if key not in ml_forces:
            raise KappaflowError(f"supercell {key}: no ML forces ({why}; {dft_dir / key})")
        _check_forces(ml_forces[key], n, f"supercell {key}")
        if ml_energies is not None and key not in ml_energies:
            raise KappaflowError(f"supercell {key}: ML energies were given, but not for this supercell")
        if ml_structures is not None:
            if key not in ml_structures:
                raise KappaflowError(f"supercell {key}: ML structures were given, but not for this supercell")
            check_structure(key, pw, ml_structures[key])
        plan[key] = ("ml", pw)

    sources = {}
    for key, (source, pw) in plan.items():
        target = out_dir / key
        atomic.copy_file(dft_dir / key / "pw.in", target / "pw.in")
        if source == "dft":
            atomic.copy_file(dft_dir / key / "pw.out", target / "pw.out")
        else:
            energy = None if ml_energies is None else float(ml_energies[key])
            write_ml_output(target / "pw.out", pw, ml_forces[key], energy, note)
        sources[key] = source
    record = {"mode": mode, "n_dft": sum(v == "dft" for v in sources.values()),
              "n_ml": sum(v == "ml" for v in sources.values()), "sources": sources}
    atomic.write_text(provenance_path or out_dir / "provenance.json", json.dumps(record, indent=1) + "\n")
    return sources
