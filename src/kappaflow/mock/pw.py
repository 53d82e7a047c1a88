"""``kappaflow-mock-pw``: a stand-in for pw.x with pw.x's interface and output format.

It reads a pw.x input (``-in FILE``/``-i``/``-inp``/``-input`` or standard input), computes energies, forces
and stresses with a classical potential (:mod:`kappaflow.mock.potentials`), and writes output in pw.x 6.7's
exact line layout (``!    total energy``, ``Forces acting on atoms (cartesian axes, Ry/au):`` with
``3F14.8`` force lines, the stress block, ``Begin/End final coordinates`` for relaxations, ``Entering
Dynamics`` blocks for md, the ``PWSCF ... WALL`` line and ``JOB DONE.``), so that the same parsers read
mock and real runs.  Supported calculations: ``scf``, ``relax``, ``vc-relax``, ``md``.

Models (``--model``): ``stillinger-weber-si`` (numpy Stillinger–Weber, equal to matscipy's), ``ges2-morse`` (Morse network around the seed
GeS2 structure), ``morse-network --reference FILE`` (Morse network around the structure of a pw.x input).
pw.x's parallelisation flags (``-nk``, ``-nd``, ``-nt``, ``-nb``, ``-ndiag``, ``-npool``) are accepted and
ignored.  Pseudopotential files are not read.

Test hooks (environment): ``KAPPAFLOW_MOCK_PW_LOG=FILE`` appends one line per run (not for an empty
input: the version probe of :func:`kappaflow.engine.detect_version`);
``KAPPAFLOW_MOCK_PW_FAULT=kind[@text]`` makes runs whose input path contains ``text`` (all runs without
``@``) fail like a broken pw.x run: ``truncate``, ``no-convergence``, ``nan-force``,
``wrong-natoms``, ``no-forces``, ``crash``.  ``KAPPAFLOW_MOCK_PW_SCF_MAX_BETA=beta[@text][,beta@text...]``
makes the SCF of runs whose ``mixing_beta`` (pw.x default 0.7) exceeds ``beta`` fail to converge, as a
hard-to-converge system would (the smallest ``beta`` of the specs whose ``text`` is in the input path
applies; a spec without ``@`` applies to all runs): the output is pw.x's (``electron_maxstep`` iterations,
``convergence NOT achieved after N iterations: stopping``, the timing and ``JOB DONE.``, exit code 2).
``KAPPAFLOW_MOCK_PW_SCF_CORRECTION=value[@text]`` prints ``Total SCF correction = value`` (Ry/au; default 0)
for the runs whose input path contains ``text``, as a loosely converged SCF would.

Like pw.x, every run leaves its charge density in ``outdir/prefix.save/charge-density.dat`` (a marker
file), and ``startingpot = 'file'`` starts from it ("The initial density is read from file :") or, when it
is missing, from atomic densities ("Cannot read rho : file not found").
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
from ase import Atoms

from kappaflow import units
from kappaflow.errors import KappaflowError
from kappaflow.qe.pwin import IF_POS, PwInput, parse_pw_input

SUPPORTED = ("scf", "relax", "vc-relax", "md")
FAULTS = ("truncate", "no-convergence", "nan-force", "wrong-natoms", "no-forces", "crash")
VERSION = "6.7MaX"  # the pw.x whose output layout the mock writes ('Program PWSCF v.6.7MaX')
#: the mock's own revision, printed in its banner and part of every mock store key (kappaflow.engine):
#: bump it when the mock's numbers change, so that stores do not reuse outputs of the old mock.
#: 2: numpy Stillinger-Weber (equal to matscipy's to round-off), pw.x's BFGS ending at nstep
MOCK_REVISION = "2"


def make_calculator(model: str, reference: str | None = None):
    from kappaflow.mock import potentials

    if model == "stillinger-weber-si":
        return potentials.stillinger_weber_si()
    if model == "ges2-morse":
        return potentials.ges2_mock_calculator()
    if model == "morse-network":
        if not reference:
            raise KappaflowError("mock pw.x: --model morse-network needs --reference FILE (a pw.x input)")
        from kappaflow.qe.pwin import read_pw_input

        return potentials.calculator_from_name("morse-network", reference=read_pw_input(reference).atoms)
    raise KappaflowError(f"mock pw.x: unknown model {model!r} (stillinger-weber-si, ges2-morse, "
                         "morse-network)")


# ------------------------------------------------------------------------------------------------
# pw.x output layout
# ------------------------------------------------------------------------------------------------
def banner() -> str:
    """pw.x's first lines (printed before the input is read, so also on an input error) with the mock's
    revision (kappaflow.qe.pwout.program_version reads it)."""
    now = datetime.now()
    return (f"\n     Program PWSCF v.{VERSION} starts on {now:%d%b%Y} at {now:%H:%M:%S} \n\n"
            f"     This output was written by kappaflow-mock-pw {MOCK_REVISION}: a classical potential stands in "
            "for DFT.\n\n"
            f"     Parallel version (MPI), running on {mpi_size():5d} processors\n\n")


class PwWriter:
    def __init__(self, pw: PwInput, stream, fault: str | None, start_from: str | None = None):
        self.pw = pw
        self.out = stream
        self.fault = fault
        self.start_from = start_from  # None: atomic; "file:<path>" / "missing:<path>" for startingpot='file'
        self.scf_correction = 0.0  # Ry/au, printed as pw.x's 'Total SCF correction'
        self.mixing_beta = float(pw.get("electrons", "mixing_beta", 0.7))
        self.electron_maxstep = int(pw.get("electrons", "electron_maxstep", 100))
        self.t0 = time.perf_counter()
        atoms = pw.atoms
        self.alat_bohr = float(np.linalg.norm(atoms.cell[0]) / units.BOHR_ANG)
        self.labels = [str(s) for s in atoms.arrays.get("qe_labels", atoms.get_chemical_symbols())]
        self.type_of = {sp.symbol: i + 1 for i, sp in enumerate(pw.species)}

    def w(self, text: str = "") -> None:
        self.out.write(text + "\n")

    def header(self, calculation: str) -> None:
        n_atoms = len(self.pw.atoms) + (1 if self.fault == "wrong-natoms" else 0)
        self.out.write(banner())
        self.w(f"     bravais-lattice index     = {0:12d}")
        self.w(f"     lattice parameter (alat)  = {self.alat_bohr:12.4f}  a.u.")
        self.w(f"     unit-cell volume          = {self.pw.atoms.get_volume() / units.BOHR_ANG**3:12.4f} (a.u.)^3")
        self.w(f"     number of atoms/cell      = {n_atoms:12d}")
        self.w(f"     number of atomic types    = {len(self.pw.species):12d}")
        self.w()
        self.w(f"     calculation               = {calculation}")
        if calculation != "scf":
            self.w(f"     nstep                     = {int(self.pw.get('control', 'nstep', 50)):12d}")
        self.w()
        self.w(f"     celldm(1)={self.alat_bohr:11.6f}  celldm(2)={0:11.6f}  celldm(3)={0:11.6f}")
        self.w(f"     celldm(4)={0:11.6f}  celldm(5)={0:11.6f}  celldm(6)={0:11.6f}")
        self.w()
        self.cell_block()
        self.site_block()
        self.starting_potential()

    def starting_potential(self) -> None:
        """potinit.f90's report of where the starting density comes from."""
        if self.start_from and self.start_from.startswith("file:"):
            self.w("     The initial density is read from file :")
            self.w(f"     {self.start_from[len('file:'):]}")
        else:
            if self.start_from:
                self.w("     Cannot read rho : file not found")
                self.w()
            self.w("     Initial potential from superposition of free atoms")
        self.w()

    def cell_block(self) -> None:
        cell_alat = np.asarray(self.pw.atoms.cell) / (self.alat_bohr * units.BOHR_ANG)
        self.w("     crystal axes: (cart. coord. in units of alat)")
        for i, v in enumerate(cell_alat, start=1):
            self.w(f"               a({i}) = ( {v[0]:10.6f} {v[1]:10.6f} {v[2]:10.6f} )  ")
        self.w()

    def site_block(self) -> None:
        """pw.x's starting positions in units of alat (what ASE's and kappaflow's readers take)."""
        tau = np.asarray(self.pw.atoms.positions) / (self.alat_bohr * units.BOHR_ANG)
        labels = [str(s) for s in self.pw.atoms.arrays.get("qe_labels", self.pw.atoms.get_chemical_symbols())]
        self.w("   Cartesian axes")
        self.w()
        self.w("     site n.     atom                  positions (alat units)")
        for i, (lab, t) in enumerate(zip(labels, tau), start=1):
            self.w(f"     {i:5d}           {lab:<3s} tau({i:4d}) = ( {t[0]:11.7f} {t[1]:11.7f} {t[2]:11.7f}  )")
        self.w()

    def scf(self, energy_ev: float) -> None:
        self.w("     Self-consistent Calculation")
        self.w()
        e_ry = float(units.ev_to_ry(energy_ev))
        if self.fault == "no-convergence":
            # electrons.f90: one block per iteration, then formats 9101 and 9120 (charge sloshing)
            for it in range(1, self.electron_maxstep + 1):
                self.w(f"     iteration #{it:3d}     ecut={16.0:9.2f} Ry     beta={self.mixing_beta:5.2f}")
                self.w("     Davidson diagonalization with overlap")
                self.w("     ethr =  1.00E-06,  avg # of iterations =  2.0")
                self.w()
                self.w(f"     total cpu time spent up to now is {0.1 * it:10.1f} secs")
                self.w()
                self.w(f"     total energy              = {e_ry + 0.01 * (-1) ** it:17.8f} Ry")
                self.w(f"     estimated scf accuracy    < {0.0123 * (1 + 0.1 * (it % 3)):17.8f} Ry")
                self.w()
            self.w("     End of self-consistent calculation")
            self.w()
            self.w(f"     convergence NOT achieved after {self.electron_maxstep:3d} iterations: stopping")
            self.w()
            save = _charge_density_path(self.pw).parent
            self.w(f"     Writing output data file {save}/")
            return
        self.w("     End of self-consistent calculation")
        self.w()
        self.w(f"!    total energy              = {e_ry:17.8f} Ry")
        self.w("     estimated scf accuracy    <          1.0E-12 Ry")
        self.w()
        self.w("     convergence has been achieved in   1 iterations")
        self.w()

    def forces(self, forces_ev_per_ang: np.ndarray) -> None:
        if self.fault == "no-forces":
            return
        f = units.ev_per_ang_to_ry_per_bohr(forces_ev_per_ang)
        self.w("     Forces acting on atoms (cartesian axes, Ry/au):")
        self.w()
        for i, (lab, row) in enumerate(zip(self.labels, f), start=1):
            if self.fault == "nan-force" and i == 1:
                row = np.array([np.nan, row[1], row[2]])
            if self.fault == "truncate" and i == len(self.labels):
                self.out.flush()
                return
            self.w(f"     atom {i:4d} type {self.type_of[lab]:2d}   force = "
                   + "".join(f"{x:14.8f}" for x in row))
        self.w()
        self.w(f"     Total force = {np.sqrt(np.sum(f * f)):12.6f}     Total SCF correction = "
               f"{self.scf_correction:12.6f}")
        self.w()

    def stress(self, stress_voigt_ev_per_ang3: np.ndarray) -> None:
        s = np.asarray(stress_voigt_ev_per_ang3, dtype=np.float64)
        ase_tensor = np.array([[s[0], s[5], s[4]], [s[5], s[1], s[3]], [s[4], s[3], s[2]]])
        qe = -units.ev_per_ang3_to_ry_per_bohr3(ase_tensor)  # pw.x prints -(1/V) dE/deps
        kbar = units.ev_per_ang3_to_kbar(-ase_tensor)
        self.w("     Computing stress (Cartesian axis) and pressure")
        self.w()
        self.w(f"          total   stress  (Ry/bohr**3)                   (kbar)     P={np.trace(kbar) / 3:12.2f}")
        for r in range(3):
            self.w("".join(f"{x:13.8f}" for x in qe[r]) + "    " + "".join(f"{x:12.2f}" for x in kbar[r]))
        self.w()

    def positions(self, atoms: Atoms, with_cell: bool) -> None:
        if with_cell:
            self.w("CELL_PARAMETERS (angstrom)")
            for v in np.asarray(atoms.cell):
                self.w("".join(f"{x:14.9f}" for x in v))
            self.w()
        self.w("ATOMIC_POSITIONS (crystal)")
        for lab, p in zip(self.labels, atoms.get_scaled_positions(wrap=False)):
            self.w(f"{lab:3s}" + "".join(f"{x:20.10f}" for x in p))
        self.w()

    def footer(self) -> None:
        wall = time.perf_counter() - self.t0
        self.w()
        self.w(f"     PWSCF        : {wall:8.2f}s CPU {wall:8.2f}s WALL")
        self.w()
        now = datetime.now()
        self.w(f"   This run was terminated on:  {now:%H:%M:%S}  {now:%d%b%Y}            ")
        self.w()
        self.w("=------------------------------------------------------------------------------=")
        self.w("   JOB DONE.")
        self.w("=------------------------------------------------------------------------------=")


# ------------------------------------------------------------------------------------------------
# calculations
# ------------------------------------------------------------------------------------------------
def _evaluate(atoms: Atoms, calc, need_stress: bool):
    atoms = atoms.copy()
    atoms.calc = calc
    energy = float(atoms.get_potential_energy())
    forces = np.array(atoms.get_forces(), dtype=np.float64)
    stress = np.array(atoms.get_stress(), dtype=np.float64) if need_stress else None
    return energy, forces, stress


def run_scf(pw: PwInput, calc, out: PwWriter) -> None:
    need_stress = bool(pw.get("control", "tstress", False))
    energy, forces, stress = _evaluate(pw.atoms, calc, need_stress)
    out.scf(energy)
    if out.fault == "no-convergence":
        return
    if pw.get("control", "tprnfor", True) is not False or out.fault:
        out.forces(forces)
    if stress is not None:
        out.stress(stress)


def run_relax(pw: PwInput, calc, out: PwWriter, variable_cell: bool) -> int:
    """BFGS (ASE) to pw.x's thresholds within ``nstep`` SCF cycles; the exit code pw.x would give
    (0, or 3 when ``nstep`` is reached unconverged, printed as pw.x's terminate_bfgs does)."""
    from ase.filters import FrechetCellFilter
    from ase.optimize import BFGS

    fmax = float(pw.get("ions", "forc_conv_thr", pw.get("control", "forc_conv_thr", 1.0e-3)))
    fmax_ev = fmax * units.RY_PER_BOHR_TO_EV_PER_ANG
    press_kbar = float(pw.get("cell", "press_conv_thr", 0.5))
    nstep = int(pw.get("control", "nstep", 50))
    atoms = pw.atoms.copy()
    atoms.calc = calc
    if IF_POS in atoms.arrays:  # pw.x keeps the coordinates with if_pos 0 fixed
        from ase.constraints import FixCartesian

        fixed = np.asarray(atoms.arrays[IF_POS]) == 0
        atoms.set_constraint([FixCartesian(i, mask=fixed[i]) for i in range(len(atoms)) if fixed[i].any()])
    target = FrechetCellFilter(atoms, scalar_pressure=0.0) if variable_cell else atoms
    opt = BFGS(target, logfile=None, maxstep=0.1)

    def converged() -> bool:
        f = atoms.get_forces()
        ok = np.max(np.abs(f)) < fmax_ev
        if variable_cell:
            s = units.ev_per_ang3_to_kbar(atoms.get_stress())
            ok = ok and np.max(np.abs(s)) < press_kbar
        return bool(ok)

    n_scf = 0
    for step in range(nstep):
        energy = atoms.get_potential_energy()
        n_scf += 1
        out.scf(energy)
        if out.fault == "no-convergence":
            return 0
        out.forces(atoms.get_forces())
        if variable_cell:
            out.stress(atoms.get_stress())
        if converged():
            break
        if step == nstep - 1:
            # pw.x's terminate_bfgs at nstep: no final coordinates; pw.x exits with code 3
            out.w("     The maximum number of steps has been reached.")
            out.w()
            out.w("     End of BFGS Geometry Optimization")
            out.w()
            return 3
        opt.step()
        out.w(f"     number of scf cycles    = {step + 1:3d}")
        out.w(f"     number of bfgs steps    = {step:3d}")
        out.w()
        out.positions(atoms, with_cell=variable_cell)
    out.w()
    out.w(f"     bfgs converged in {n_scf:3d} scf cycles and {n_scf - 1:3d} bfgs steps")
    out.w()
    out.w("     End of BFGS Geometry Optimization")
    out.w()
    out.w("Begin final coordinates")
    if variable_cell:
        out.w(f"     new unit-cell volume = {atoms.get_volume() / units.BOHR_ANG**3:12.5f} a.u.^3 "
              f"( {atoms.get_volume():12.5f} Ang^3 )")
        out.w()
    out.positions(atoms, with_cell=variable_cell)
    out.w("End final coordinates")
    out.w()
    if variable_cell:
        out.w("     Final scf calculation at the relaxed structure.")
        out.w()
        energy, forces, stress = _evaluate(atoms, calc, True)
        out.scf(energy)
        out.forces(forces)
        out.stress(stress)
    return 0


def run_md(pw: PwInput, calc, out: PwWriter, seed: int) -> None:
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
    from ase.units import fs as ase_fs
    from ase.units import kB

    dt_fs = float(units.ry_time_to_fs(float(pw.get("control", "dt", 20.0))))
    nstep = int(pw.get("control", "nstep", 50))
    thermostat = str(pw.get("ions", "ion_temperature", "not_controlled")).lower()
    tempw = float(pw.get("ions", "tempw", 300.0))
    atoms = pw.atoms.copy()
    atoms.calc = calc
    rng = np.random.default_rng(seed)
    MaxwellBoltzmannDistribution(atoms, temperature_K=tempw, rng=rng)
    Stationary(atoms)
    if thermostat not in ("not_controlled", "initial"):
        atoms.set_momenta(atoms.get_momenta() * np.sqrt(tempw / max(atoms.get_temperature(), 1e-12)))
    dt = dt_fs * ase_fs
    nu = float(pw.get("ions", "nraise", 1))
    out.w(f"     Molecular Dynamics Calculation (velocity Verlet), thermostat: {thermostat}")
    out.w(f"     Starting temperature  = {tempw:8.2f} K")
    out.w()
    forces = atoms.get_forces()
    for step in range(1, nstep + 1):
        out.scf(atoms.get_potential_energy())
        if out.fault == "no-convergence":
            return
        out.forces(forces)
        # velocity Verlet
        masses = atoms.get_masses()[:, None]
        p = atoms.get_momenta() + 0.5 * dt * forces
        atoms.set_positions(atoms.get_positions() + dt * p / masses)
        forces = atoms.get_forces()
        atoms.set_momenta(p + 0.5 * dt * forces)
        if thermostat in ("rescaling", "rescale-v", "rescale-t"):
            atoms.set_momenta(atoms.get_momenta() * np.sqrt(tempw / max(atoms.get_temperature(), 1e-12)))
        elif thermostat == "berendsen":
            tau = max(nu, 1.0)
            lam = np.sqrt(1.0 + (tempw / max(atoms.get_temperature(), 1e-12) - 1.0) / tau)
            atoms.set_momenta(atoms.get_momenta() * lam)
        elif thermostat == "andersen":
            prob = 1.0 / max(nu, 1.0)
            pick = rng.random(len(atoms)) < prob
            sigma = np.sqrt(masses[:, 0] * kB * tempw)
            new = rng.normal(size=(len(atoms), 3)) * sigma[:, None]
            mom = atoms.get_momenta()
            mom[pick] = new[pick]
            atoms.set_momenta(mom)
        ekin_ry = float(units.ev_to_ry(atoms.get_kinetic_energy()))
        out.w(f"     Entering Dynamics:    iteration = {step:5d}")
        out.w(f"     time      = {step * dt_fs / 1000.0:12.7f} pico-seconds")
        out.w()
        out.positions(atoms, with_cell=False)
        out.w(f"     kinetic energy (Ekin) = {ekin_ry:20.8f} Ry")
        out.w(f"     temperature           = {atoms.get_temperature():20.8f} K ")
        out.w()
    out.w("     The maximum number of steps has been reached.")
    out.w()
    out.w("     End of molecular dynamics calculation")


# ------------------------------------------------------------------------------------------------
def _scf_max_beta(source: str) -> float | None:
    """The largest mixing_beta that converges for this run (KAPPAFLOW_MOCK_PW_SCF_MAX_BETA), or None."""
    spec = os.environ.get("KAPPAFLOW_MOCK_PW_SCF_MAX_BETA", "").strip()
    if not spec:
        return None
    where = str(Path(source).resolve())
    limits = []
    for item in spec.split(","):
        value, _, text = item.strip().partition("@")
        try:
            beta = float(value)
        except ValueError:
            raise KappaflowError(f"KAPPAFLOW_MOCK_PW_SCF_MAX_BETA: {item!r} is not 'beta[@text]'") from None
        if not text or text in where:
            limits.append(beta)
    return min(limits) if limits else None


def _scf_correction(source: str) -> float:
    """The 'Total SCF correction' (Ry/au) to print for this run (KAPPAFLOW_MOCK_PW_SCF_CORRECTION), or 0."""
    spec = os.environ.get("KAPPAFLOW_MOCK_PW_SCF_CORRECTION", "").strip()
    value, _, text = spec.partition("@")
    if not value or (text and text not in str(Path(source).resolve())):
        return 0.0
    try:
        return float(value)
    except ValueError:
        raise KappaflowError(f"KAPPAFLOW_MOCK_PW_SCF_CORRECTION: {spec!r} is not 'value[@text]'") from None


def _charge_density_path(pw: PwInput) -> Path:
    outdir = str(pw.get("control", "outdir", os.environ.get("ESPRESSO_TMPDIR", "./")))
    prefix = str(pw.get("control", "prefix", "pwscf"))
    return Path(outdir) / f"{prefix}.save" / "charge-density.dat"


def _save_charge_density(pw: PwInput, sha: str) -> None:
    """What pw.x's punch leaves behind (also after an unconverged SCF): here a marker file."""
    path = _charge_density_path(pw)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"kappaflow-mock-pw charge density of input {sha[:16]}\n")
    except OSError:
        pass  # pw.x would stop with an error; the mock's outputs do not depend on it


# Launched by srun or mpirun, every rank runs this program; like pw.x, only rank 0 writes the output.
_RANK_VARS = ("SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK")
_SIZE_VARS = ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE")


def _first_int(names) -> int | None:
    for name in names:
        value = os.environ.get(name, "").strip()
        if value.isdigit():
            return int(value)
    return None


def mpi_rank() -> int:
    """This process's MPI rank under srun/mpirun (0 when run alone)."""
    return _first_int(_RANK_VARS) or 0


def mpi_size() -> int:
    """The number of MPI processes of the launch (1 when run alone), printed in the header like pw.x."""
    if _first_int(_RANK_VARS) is None:  # a batch script's SLURM_NTASKS does not make a lone process MPI
        return 1
    return max(1, _first_int(_SIZE_VARS) or 1)


def _read_fault(source: str) -> str | None:
    spec = os.environ.get("KAPPAFLOW_MOCK_PW_FAULT", "").strip()
    if not spec:
        return None
    kind, _, prefix = spec.partition("@")
    if kind not in FAULTS:
        raise KappaflowError(f"KAPPAFLOW_MOCK_PW_FAULT: unknown fault {kind!r} ({', '.join(FAULTS)})")
    if prefix and prefix not in str(Path(source).resolve()):
        return None
    return kind


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="kappaflow-mock-pw", description=__doc__.split("\n\n")[0])
    ap.add_argument("-in", "-i", "-inp", "-input", dest="input", help="pw.x input file (default: stdin)")
    ap.add_argument("--model", default="stillinger-weber-si")
    ap.add_argument("--reference", help="pw.x input whose structure anchors a morse-network model")
    for flag in ("-nk", "-npool", "-nd", "-ndiag", "-nt", "-ntg", "-nb", "-nband"):
        ap.add_argument(flag, type=int, help=argparse.SUPPRESS)
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if mpi_rank() > 0:  # the other ranks of an srun/mpirun launch: rank 0 does the work and writes
        return 0
    try:
        text = Path(args.input).read_text() if args.input else sys.stdin.read()
        source = args.input or "<stdin>"
        log_path = os.environ.get("KAPPAFLOW_MOCK_PW_LOG")
        sha = hashlib.sha256(text.encode()).hexdigest()
        if log_path and text.strip():  # an empty input is the version probe (kappaflow.engine), not a run
            with open(log_path, "a") as fh:
                fh.write(f"{time.time():.3f} {Path(source).resolve().parent.name} {sha[:16]} {source}\n")
        fault = _read_fault(source)
        if fault == "crash":
            sys.stderr.write("kappaflow-mock-pw: injected crash\n")
            return 1
        try:
            pw = parse_pw_input(text, source)
        except KappaflowError as exc:  # like pw.x: the header, then the error
            sys.stdout.write(banner() + f"     Error reading the input: {exc}\n")
            sys.stdout.flush()
            raise
        calculation = pw.calculation
        if calculation not in SUPPORTED:
            sys.stdout.write(f"\n     Error: calculation '{calculation}' is not supported by the mock pw.x "
                             f"(supported: {', '.join(SUPPORTED)})\n")
            sys.stderr.write(f"kappaflow-mock-pw: calculation '{calculation}' not supported "
                             f"(supported: {', '.join(SUPPORTED)})\n")
            return 1
        max_beta = _scf_max_beta(source)
        if fault is None and max_beta is not None and float(pw.get("electrons", "mixing_beta", 0.7)) > max_beta:
            fault = "no-convergence"
        start_from = None
        if str(pw.get("electrons", "startingpot", "atomic")).lower() == "file":
            rho = _charge_density_path(pw)
            start_from = ("file:" if rho.is_file() else "missing:") + str(rho.with_suffix(""))
        calc = make_calculator(args.model, args.reference)
        buffer = io.StringIO()
        writer = PwWriter(pw, buffer, fault, start_from)
        writer.scf_correction = _scf_correction(source)
        writer.header(calculation)
        status = 0
        if calculation == "scf":
            run_scf(pw, calc, writer)
        elif calculation in ("relax", "vc-relax"):
            status = run_relax(pw, calc, writer, variable_cell=calculation == "vc-relax")
        else:
            run_md(pw, calc, writer, seed=int(sha[:8], 16))
        _save_charge_density(pw, sha)
        if fault != "truncate":
            writer.footer()  # pw.x prints its timing and JOB DONE after an unconverged SCF too
        sys.stdout.write(buffer.getvalue())
        sys.stdout.flush()
        return 2 if fault == "no-convergence" else status  # run_pwscf: 2 = scf not converged, 3 = nstep
    except KappaflowError as exc:
        sys.stderr.write(f"kappaflow-mock-pw: {exc}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
