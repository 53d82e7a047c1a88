"""pw.x output files: a strict parser.

Every way a pw.x run can be unusable raises :class:`PwOutputError` with the file, the line where known,
and the reason: the run did not finish (``JOB DONE`` missing), the SCF did not converge (the subclass
:class:`ScfNotConvergedError`, which :mod:`kappaflow.dft` recognises and rescues), a relax/vc-relax
whose BFGS stopped unconverged (:class:`RelaxNotConvergedError`: ``nstep`` reached, or two
consecutive history resets, which pw.x 6.7 reports as "bfgs converged"), the atom count
is not the expected one, the forces block is missing or incomplete, a force is NaN or overflowed
(``*****``).  Nothing is ever silently replaced.

Forces are returned in eV/Å, energies in eV, stresses in eV/Å³ in ASE's sign convention
((1/V) ∂E/∂ε, the negative of what pw.x prints), all converted in :mod:`kappaflow.units`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kappaflow import units
from kappaflow.errors import PwOutputError


class ScfNotConvergedError(PwOutputError):
    """pw.x stopped because the SCF did not converge (``convergence NOT achieved after N iterations``).

    ``iterations`` is N (pw.x's ``electron_maxstep``) when the line says so."""

    reason_code = "scf_not_converged"

    def __init__(self, path, reason: str, line: int | None = None, iterations: int | None = None):
        super().__init__(path, reason, line)
        self.iterations = iterations


class RelaxNotConvergedError(PwOutputError):
    """A relax or vc-relax whose BFGS did not converge although pw.x finished (``JOB DONE``).

    pw.x 6.7 (Modules/bfgs_module.f90, PW/src/move_ions.f90) ends a BFGS in two ways that are not a
    relaxed structure: ``nstep`` reached (terminate_bfgs: ``The maximum number of steps has been
    reached.``, no final coordinates, exit code 3), and the trust radius falling below
    ``trust_radius_min`` on two consecutive steps (``infomsg``: ``Message from routine bfgs:`` /
    ``history already reset at previous step: stopping``), after which bfgs sets ``conv_bfgs`` and pw.x
    prints ``bfgs converged in ...``, ``Begin final coordinates`` and exits with code 0."""

    reason_code = "relax_not_converged"


FORCES_HEADER = "Forces acting on atoms (cartesian axes, Ry/au):"
_FORCE_LINE = re.compile(r"^\s*atom\s+(\d+)\s+type\s+(\d+)\s+force\s+=\s+(.*)$")
_WALL = re.compile(r"^\s*PWSCF\s*:.*CPU\s+(.*)WALL\s*$")
_TIME_TOKEN = re.compile(r"([\d.]+)\s*([dhms])")
# electrons.f90, format 9120: /'     convergence NOT achieved after ',i3,' iterations: stopping'
_NOT_CONVERGED = re.compile(r"^\s*convergence NOT achieved after\s*(\d+|\*+)\s*iterations")
# summary.f90: '     site n.     atom                  positions (alat units)', then per atom
# '         1           Al  tau(   1) = (   0.0017668   0.0000000   0.0000000  )'
_SITE_HEADER = re.compile(r"^\s*site n\.\s+atom\s+positions \(alat units\)\s*$")
_SITE_LINE = re.compile(r"^\s*(\d+|\*+)\s+(\S+)\s+tau\(\s*(\d+|\*+)\)\s*=\s*\((.*)\)\s*$")
_AXIS_LINE = re.compile(r"^\s*a\((\d)\)\s*=\s*\((.*)\)\s*$")
_PROGRAM = re.compile(r"Program PWSCF v\.(\S+)")
_MOCK_BANNER = re.compile(r"This output was written by kappaflow-mock-pw(?: (\S+?))?:")
# forces.f90: '(/5x,"Total force = ",F12.6,5X, "Total SCF correction = ",F12.6)' (Ry/au, norms over atoms)
_TOTAL_FORCE = re.compile(r"^\s*Total force\s*=\s*(\S+)\s+Total SCF correction\s*=\s*(\S+)\s*$")
# read_pseudo.f90: '(/5x,"PseudoPot. #",i3," for ",a2," read from file:",/5x,a)' then 'MD5 check sum: ...'
_PSEUDO_HEADER = re.compile(r"^\s*PseudoPot\.\s*#\s*\d+\s+for\s+(\S+)\s+read from file:\s*$")
# bfgs_module.f90 (QE 6.7): infomsg('bfgs', 'history already reset at previous step: stopping'),
# terminate_bfgs: '(/,5X,"bfgs converged in ",I3," scf cycles and ",I3," bfgs steps")' and
# '(/,5X,"The maximum number of steps has been reached.")' then '(/,5X,"End of BFGS Geometry Optimization")';
# the errors of the last step: '(5X,"Energy error",T30,"= ",1PE12.1)' (and Gradient, Cell gradient)
# (later QE versions print '...: exiting' and '(/,5X,"bfgs failed after ",I3," scf cycles and ",...)')
BFGS_RESET_STOP = "history already reset at previous step: stopping"
BFGS_FAILED = "bfgs failed after"
BFGS_MAX_STEPS = "The maximum number of steps has been reached."
BFGS_END = "End of BFGS Geometry Optimization"
_BFGS_ERROR = re.compile(r"^\s*((?:Energy|Gradient|Cell gradient) error)\s*=\s*(\S+(?: Ry/Bohr| Ry| kbar)?)\s*$")


@dataclass
class PwFrame:
    """One ionic configuration of a run (scf: one; relax/md: one per step)."""

    energy_ev: float | None = None
    forces_ev_per_ang: np.ndarray | None = None
    stress_ev_per_ang3: np.ndarray | None = None
    cell_ang: np.ndarray | None = None
    positions_frac: np.ndarray | None = None
    symbols: list[str] | None = None
    temperature_k: float | None = None
    scf_correction_ry_per_bohr: float | None = None  # 'Total SCF correction' (norm over all atoms)


@dataclass
class PwRun:
    path: str
    n_atoms: int
    qe_version: str
    n_mpi_processes: int
    wall_time_s: float
    frames: list[PwFrame] = field(default_factory=list)
    final_cell_ang: np.ndarray | None = None
    final_positions_frac: np.ndarray | None = None
    final_symbols: list[str] | None = None
    alat_ang: float | None = None
    # pw.x's header (summary.f90): the starting structure exactly as pw.x read it, in pw.x's atom order
    cell_ang: np.ndarray | None = None  # 'crystal axes' rows, Å
    positions_ang: np.ndarray | None = None  # 'site n. ... tau' rows, Cartesian Å
    site_symbols: list[str] | None = None  # the species labels of those rows
    site_lines: list[int] | None = None  # 1-based line of each atom's 'tau(' row
    # what ran: 'Program PWSCF v.X' (or the mock's revision) and the pseudopotentials pw.x read
    engine_version: str = "unknown"
    pseudopotentials: dict[str, tuple[str, str | None]] | None = None  # label -> (path, MD5 check sum)
    pseudopotential_lines: dict[str, int] | None = None

    @property
    def energy_ev(self) -> float:
        return self.frames[-1].energy_ev

    @property
    def forces_ev_per_ang(self) -> np.ndarray:
        return self.frames[-1].forces_ev_per_ang

    @property
    def stress_ev_per_ang3(self):
        return self.frames[-1].stress_ev_per_ang3

    @property
    def scf_correction_ev_per_ang(self) -> float | None:
        """pw.x's 'Total SCF correction' of the last forces (norm over all atoms), eV/Å."""
        value = self.frames[-1].scf_correction_ry_per_bohr
        return None if value is None else float(units.ry_per_bohr_to_ev_per_ang(value))


def program_version(text: str) -> str | None:
    """The version a pw.x output's header names: 'Program PWSCF v.6.7MaX starts ...' -> '6.7MaX'; the
    mock pw.x ('This output was written by kappaflow-mock-pw 2: ...') -> 'kappaflow-mock-pw 2'."""
    version = None
    for line in text.splitlines()[:80]:
        m = _MOCK_BANNER.search(line)
        if m:
            return f"kappaflow-mock-pw {m.group(1)}" if m.group(1) else "kappaflow-mock-pw"
        m = _PROGRAM.search(line)
        if m and version is None:
            version = m.group(1)
    return version


def parse_wall_time(text: str) -> float:
    """'9.92s', '2m30.11s', '1h 3m', '1d 2h 3m' -> seconds."""
    factors = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
    tokens = _TIME_TOKEN.findall(text)
    if not tokens:
        raise ValueError(f"cannot read a time from {text!r}")
    return sum(float(v) * factors[u] for v, u in tokens)


def _floats(tokens: list[str], path: str, lineno: int, what: str) -> np.ndarray:
    values = []
    for tok in tokens:
        if "*" in tok:
            raise PwOutputError(path, f"{what} overflowed the print format ({tok})", lineno)
        try:
            value = float(tok)
        except ValueError:
            raise PwOutputError(path, f"{what}: cannot read {tok!r} as a number", lineno) from None
        if not math.isfinite(value):
            raise PwOutputError(path, f"{what} is {tok}", lineno)
        values.append(value)
    return np.array(values, dtype=np.float64)


def _read_cell(lines: list[str], i: int, path: str, alat_ang: float | None, what: str) -> np.ndarray:
    """The 3 rows after a ``CELL_PARAMETERS (unit)`` header at line index ``i``, in Å."""
    unit = lines[i].strip()[len("CELL_PARAMETERS"):].strip().strip("()").lower()
    rows = np.array([_floats(lines[i + k].split()[:3], path, i + 1 + k, what) for k in (1, 2, 3)])
    if unit.startswith("alat"):
        m = re.search(r"alat\s*=\s*([\d.]+)", unit)
        return rows * (float(m.group(1)) * units.BOHR_ANG if m else alat_ang)
    if unit == "bohr":
        return rows * units.BOHR_ANG
    return rows


def _read_positions(lines: list[str], i: int, path: str, n_atoms: int | None, cell_ang, alat_ang,
                    what: str) -> tuple[list[str], np.ndarray, int]:
    """Symbols and fractional positions after an ``ATOMIC_POSITIONS (unit)`` header at line index
    ``i``; returns them with the index of the first line after the block."""
    unit = lines[i].strip()[len("ATOMIC_POSITIONS"):].strip().strip("()").lower()
    syms, pos = [], []
    j = i + 1
    while j < len(lines) and len(syms) < (n_atoms or 0):
        fields = lines[j].split()
        if len(fields) < 4:
            break
        syms.append(fields[0])
        pos.append(_floats(fields[1:4], path, j + 1, what))
        j += 1
    pos = np.array(pos)
    if unit != "crystal":
        if cell_ang is None:
            raise PwOutputError(path, f"ATOMIC_POSITIONS {unit} before any cell is known", i + 1)
        scale = {"angstrom": 1.0, "bohr": units.BOHR_ANG, "alat": alat_ang}[unit]
        pos = (pos * scale) @ np.linalg.inv(cell_ang)
    return syms, pos, j


def _next_nonblank(lines: list[str], i: int) -> str | None:
    for line in lines[i + 1:i + 4]:
        if line.strip():
            return line.strip()
    return None


def _format_bfgs_errors(errors: dict[str, str]) -> str:
    if not errors:
        return ""
    return "; last step: " + ", ".join(f"{k.lower()} {v}" for k, v in errors.items())


def _bfgs_reset_reason(converged_line: str, following: list[str], errors: dict[str, str]) -> str:
    criteria = following[0].strip() if following and "criteria" in following[0] else ""
    return ("the BFGS relaxation failed: its trust radius fell below trust_radius_min on two consecutive "
            f"steps ('{BFGS_RESET_STOP}'); pw.x then prints '{converged_line}' and final coordinates "
            f"anyway, but the structure is not relaxed{_format_bfgs_errors(errors)}"
            f"{' ' + criteria if criteria else ''}. Loosen etot_conv_thr/forc_conv_thr/press_conv_thr, lower "
            "trust_radius_min (&IONS), or restart from the last coordinates")


def _next_frame(frames: list[PwFrame], frame: PwFrame) -> PwFrame:
    """A configuration is complete once its energy is known; what follows belongs to the next one."""
    if frame.energy_ev is None:
        return frame
    frames.append(frame)
    return PwFrame(cell_ang=frame.cell_ang)


def read_pw_output(path, expected_n_atoms: int | None = None, require_forces: bool = True) -> PwRun:
    """Parse a finished pw.x output, raising PwOutputError for anything unusable."""
    path = Path(path)
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        raise PwOutputError(str(path), f"cannot read pw.x output ({exc.strerror})") from None
    if not text.strip():
        raise PwOutputError(str(path), "empty pw.x output (the run did not start or was killed)")
    return _PwOutputReader(str(path), text.splitlines(), expected_n_atoms).read(require_forces)


class _PwOutputReader:
    """One pass over a pw.x output: each block kind has its own method, which returns the index of the
    next line to look at; the run's state lives on the reader until :meth:`result` checks it."""

    def __init__(self, path: str, lines: list[str], expected_n_atoms: int | None):
        self.path, self.lines, self.expected_n_atoms = path, lines, expected_n_atoms
        self.n_atoms = None
        self.version = "unknown"
        self.mock_version = None
        self.n_proc = 1
        self.wall = None
        self.alat_ang = None
        self.job_done = False
        self.frames: list[PwFrame] = []
        self.frame = PwFrame()
        self.final_cell = self.final_pos = self.final_symbols = None
        self.header_cell = self.site_pos = self.site_syms = self.site_lines = None
        self.pseudos: dict[str, tuple[str, str | None]] = {}
        self.pseudo_lines: dict[str, int] = {}
        self.bfgs_reset_stop_line = None  # 'history already reset ...: stopping' since the last SCF energy
        self.bfgs_errors: dict[str, str] = {}
        self.nstep = None

    def read(self, require_forces: bool) -> PwRun:
        i = 0
        while i < len(self.lines):
            i = self.step(i)
        return self.result(require_forces)

    def fail(self, reason: str, lineno: int | None = None):
        raise PwOutputError(self.path, reason, lineno)

    # -- dispatch ------------------------------------------------------------------------------------
    def step(self, i: int) -> int:
        line = self.lines[i]
        s = line.strip()
        for handler in (self.header, self.structure_block, self.scf_and_bfgs, self.results_block):
            nxt = handler(i, line, s)
            if nxt is not None:
                return nxt
        if s.startswith("PWSCF") and "WALL" in s:
            m = _WALL.match(line)
            if m:
                self.wall = parse_wall_time(m.group(1))
        elif s == "JOB DONE.":
            self.job_done = True
        return i + 1

    # -- header: program, pseudopotentials, cell size ----------------------------------------------
    def header(self, i, line, s):
        lines = self.lines
        if s.startswith("Program PWSCF"):
            m = re.search(r"v\.(\S+)", s)
            self.version = m.group(1) if m else self.version
        elif "kappaflow-mock-pw" in s and _MOCK_BANNER.search(s) and self.mock_version is None:
            self.mock_version = program_version(s)
        elif _PSEUDO_HEADER.match(line):
            label = _PSEUDO_HEADER.match(line).group(1)
            where = lines[i + 1].strip() if i + 1 < len(lines) else ""
            md5 = None
            for k in (2, 3):
                if i + k < len(lines) and lines[i + k].strip().startswith("MD5 check sum:"):
                    md5 = lines[i + k].split(":", 1)[1].strip()
                    break
            self.pseudos[label] = (where, md5)
            self.pseudo_lines[label] = i + 1
        elif s.startswith("number of atoms/cell"):
            self.n_atoms = int(s.split("=")[1])
            if self.expected_n_atoms is not None and self.n_atoms != self.expected_n_atoms:
                self.fail(f"run has {self.n_atoms} atoms, expected {self.expected_n_atoms}", i + 1)
        elif s.startswith("lattice parameter (alat)"):
            self.alat_ang = float(s.split("=")[1].split()[0]) * units.BOHR_ANG
        elif s.startswith("celldm(1)="):
            # the same alat with 6 decimals instead of 4 (ibrav=0 inputs: |a1| in bohr)
            value = float(s.split("=")[1].split()[0])
            if value > 0:
                self.alat_ang = value * units.BOHR_ANG
        elif "running on" in s and "processors" in s:
            m = re.search(r"running on\s+(\d+)\s+processor", s)
            self.n_proc = int(m.group(1)) if m else self.n_proc
        else:
            return None
        return i + 1

    # -- the starting structure the header prints (crystal axes, sites) -----------------------------
    def structure_block(self, i, line, s):
        if s.startswith("crystal axes:") and "units of alat" in s and self.header_cell is None:
            return self.crystal_axes(i)
        if _SITE_HEADER.match(line) and self.site_pos is None:
            return self.sites(i)
        return None

    def crystal_axes(self, i):
        if self.alat_ang is None:
            self.fail("'crystal axes' before 'lattice parameter (alat)'", i + 1)
        rows = []
        for k in (1, 2, 3):
            m = _AXIS_LINE.match(self.lines[i + k]) if i + k < len(self.lines) else None
            if not m or int(m.group(1)) != k:
                self.fail(f"crystal axes: expected the row 'a({k}) = ( x y z )'", i + 1 + k)
            rows.append(_floats(m.group(2).split(), self.path, i + 1 + k, f"crystal axis a({k})"))
        self.header_cell = np.array(rows, dtype=np.float64) * self.alat_ang
        return i + 4

    def sites(self, i):
        if self.alat_ang is None or self.n_atoms is None:
            self.fail("atomic positions before 'lattice parameter (alat)' and 'number of atoms/cell'", i + 1)
        syms, pos, site_lines = [], [], []
        j = i + 1
        while j < len(self.lines) and len(pos) < self.n_atoms:
            m = _SITE_LINE.match(self.lines[j])
            if not m:
                break
            if m.group(1).isdigit() and int(m.group(1)) != len(pos) + 1:
                self.fail(f"positions block: expected site {len(pos) + 1}, found site {m.group(1)}", j + 1)
            xyz = _floats(m.group(4).split(), self.path, j + 1, f"position of site {m.group(1)}")
            if xyz.shape != (3,):
                self.fail("a 'tau(' line needs 3 components", j + 1)
            syms.append(m.group(2))
            pos.append(xyz * self.alat_ang)
            site_lines.append(j + 1)
            j += 1
        if len(pos) != self.n_atoms:
            self.fail(f"positions block lists {len(pos)} atoms, expected {self.n_atoms}", i + 1)
        self.site_syms, self.site_pos, self.site_lines = syms, np.array(pos, dtype=np.float64), site_lines
        return j

    # -- convergence of the SCF and of the BFGS relaxation ------------------------------------------
    def scf_and_bfgs(self, i, line, s):
        if "convergence NOT achieved" in s and not s.startswith("EXX"):
            m = _NOT_CONVERGED.match(line)
            n_iter = int(m.group(1)) if m and m.group(1).isdigit() else None
            after = f" after {n_iter} iterations" if n_iter is not None else ""
            raise ScfNotConvergedError(self.path, f"SCF did not converge ('convergence NOT achieved{after}')",
                                       i + 1, iterations=n_iter)
        if "EXX convergence NOT achieved" in s:
            raise ScfNotConvergedError(self.path, "EXX self-consistency did not converge "
                                       "('EXX convergence NOT achieved')", i + 1)
        if s.startswith("nstep") and "=" in s and self.nstep is None:
            try:
                self.nstep = int(s.split("=")[1])
            except ValueError:
                pass
        elif s.startswith(BFGS_RESET_STOP.rsplit(":", 1)[0]):
            self.bfgs_reset_stop_line = i + 1
        elif _BFGS_ERROR.match(line):
            m = _BFGS_ERROR.match(line)
            self.bfgs_errors[m.group(1)] = m.group(2)
        elif (s.startswith("bfgs converged in") and self.bfgs_reset_stop_line is not None) \
                or s.startswith(BFGS_FAILED):
            raise RelaxNotConvergedError(self.path, _bfgs_reset_reason(s, self.lines[i + 1:i + 2], self.bfgs_errors),
                                         self.bfgs_reset_stop_line or i + 1)
        elif s == BFGS_MAX_STEPS and _next_nonblank(self.lines, i) == BFGS_END:
            steps = f"nstep = {self.nstep}" if self.nstep is not None else "nstep"
            raise RelaxNotConvergedError(
                self.path, f"the BFGS relaxation stopped at {steps} without converging ('{BFGS_MAX_STEPS}'"
                f"{_format_bfgs_errors(self.bfgs_errors)}): raise nstep in &CONTROL, or restart from the last "
                "coordinates", i + 1)
        else:
            return None
        return i + 1

    # -- per configuration: energy, forces, stress, temperature, cell, positions, final coordinates ---
    def results_block(self, i, line, s):
        if s.startswith("!") and "total energy" in s:
            self.bfgs_reset_stop_line = None  # a new SCF: a later bfgs step decides again
            self.frame = _next_frame(self.frames, self.frame)
            value = _floats([s.split("=")[1].split()[0]], self.path, i + 1, "total energy")[0]
            self.frame.energy_ev = float(units.ry_to_ev(value))
            return i + 1
        if s == FORCES_HEADER:
            return self.forces(i)
        if s.startswith("Total force") and "Total SCF correction" in s:
            m = _TOTAL_FORCE.match(line)
            if m:
                self.frame.scf_correction_ry_per_bohr = float(
                    _floats([m.group(2)], self.path, i + 1, "Total SCF correction")[0])
            return i + 1
        if s.startswith("total   stress") and "Ry/bohr**3" in s:
            rows = [_floats(self.lines[i + k].split()[:3], self.path, i + 1 + k, "stress") for k in (1, 2, 3)]
            # pw.x prints -(1/V) dE/deps; kappaflow (like ASE) uses +(1/V) dE/deps
            self.frame.stress_ev_per_ang3 = -units.ry_per_bohr3_to_ev_per_ang3(np.array(rows))
            return i + 4
        if s.startswith("temperature") and s.endswith("K") and "=" in s:
            try:
                self.frame.temperature_k = float(s.split("=")[1].split()[0])
            except ValueError:
                pass
            return i + 1
        if s.startswith("CELL_PARAMETERS"):
            self.frame = _next_frame(self.frames, self.frame)
            self.frame.cell_ang = _read_cell(self.lines, i, self.path, self.alat_ang, "cell")
            return i + 4
        if s.startswith("ATOMIC_POSITIONS"):
            self.frame = _next_frame(self.frames, self.frame)
            self.frame.symbols, self.frame.positions_frac, j = _read_positions(
                self.lines, i, self.path, self.n_atoms, self.frame.cell_ang, self.alat_ang, "atomic position")
            return j
        if s == "Begin final coordinates":
            return self.final_coordinates(i)
        return None

    def forces(self, i):
        if self.n_atoms is None:
            self.fail("forces printed before 'number of atoms/cell'", i + 1)
        forces = []
        j = i + 1
        while j < len(self.lines) and len(forces) < self.n_atoms:
            m = _FORCE_LINE.match(self.lines[j])
            if m:
                if int(m.group(1)) != len(forces) + 1:
                    self.fail(f"forces block: expected atom {len(forces) + 1}, found atom {m.group(1)}", j + 1)
                forces.append(_floats(m.group(3).split(), self.path, j + 1, f"force on atom {m.group(1)}"))
                if forces[-1].shape != (3,):
                    self.fail("a force line needs 3 components", j + 1)
            elif self.lines[j].strip() and forces:
                break
            j += 1
        if len(forces) != self.n_atoms:
            self.fail(f"forces block lists {len(forces)} atoms, expected {self.n_atoms} (output truncated?)", i + 1)
        self.frame.forces_ev_per_ang = units.ry_per_bohr_to_ev_per_ang(np.array(forces))
        return j

    def final_coordinates(self, i):
        lines = self.lines
        j = i + 1
        sub_cell = None
        while j < len(lines) and lines[j].strip() != "End final coordinates":
            t = lines[j].strip()
            if t.startswith("CELL_PARAMETERS"):
                sub_cell = _read_cell(lines, j, self.path, self.alat_ang, "final cell")
                j += 4
                continue
            if t.startswith("ATOMIC_POSITIONS"):
                cell_for = sub_cell if sub_cell is not None else self.frame.cell_ang
                self.final_symbols, self.final_pos, j = _read_positions(
                    lines, j, self.path, self.n_atoms, cell_for, self.alat_ang, "final position")
                continue
            j += 1
        if j >= len(lines):
            self.fail("'Begin final coordinates' without 'End final coordinates'", i + 1)
        self.final_cell = sub_cell
        return j + 1

    # -- the run as a whole ----------------------------------------------------------------------------
    def result(self, require_forces: bool) -> PwRun:
        frames = self.frames
        if self.frame.energy_ev is not None:
            frames.append(self.frame)  # a trailing frame without energy (md: positions after the last step) is dropped
        if not self.job_done:
            self.fail("pw.x did not finish ('JOB DONE' missing: killed, crashed or truncated)")
        if self.n_atoms is None:
            self.fail("no 'number of atoms/cell' line: not a pw.x output?")
        if not frames or frames[-1].energy_ev is None:
            self.fail("no converged total energy ('!    total energy') in the output")
        if require_forces and frames[-1].forces_ev_per_ang is None:
            self.fail("no forces block (set tprnfor = .true. in &CONTROL)")
        if self.wall is None:
            self.fail("no 'PWSCF ... WALL' timing line")
        final_cell = self.final_cell
        if final_cell is None and self.final_pos is not None:
            final_cell = frames[-1].cell_ang
        return PwRun(self.path, self.n_atoms, self.version, self.n_proc, self.wall, frames, final_cell,
                     self.final_pos, self.final_symbols, self.alat_ang, self.header_cell, self.site_pos,
                     self.site_syms, self.site_lines, engine_version=self.mock_version or self.version,
                     pseudopotentials=self.pseudos, pseudopotential_lines=self.pseudo_lines)
