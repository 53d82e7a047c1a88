"""Green–Kubo molecular dynamics: NVT thermalisation, NVE trajectories with the heat flux, checkpoints.

:class:`CompiledModel` wraps an :class:`~kappaflow.gk.heatflux.AtomicEnergyModel` in compiled
TensorFlow functions (the neighbour data are arguments, so one trace serves every step) and
:class:`AtomicEnergyCalculator` makes it an ASE calculator, so the MD is ASE's (Langevin for the
thermalisation, velocity Verlet for the NVE runs).

:func:`thermalise` runs Langevin NVT from the perfect supercell and takes ``n_trajectories`` starting
points ``start_spacing_steps`` apart after ``thermalisation_steps``.  :func:`run_trajectory` integrates
one NVE trajectory, computes J every ``flux_every`` steps (unfolded form) and writes a checkpoint every
``segment_steps``: positions, velocities, the flux so far (one atomic write), so a kill loses at most one
segment and a rerun continues from it (to round-off: velocity Verlet is deterministic, TensorFlow's
sums are not ordered).  A trajectory whose
total energy drifts by more than ``max_drift_ev_per_atom`` stops with the step and the drift.  Every
file carries its provenance (settings, model, start, seed) as JSON.

Units: fs, Å, Å/fs, eV, K (velocities are converted to ASE's units in :mod:`kappaflow.units` only).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from ase.calculators.calculator import Calculator, all_changes

from kappaflow.errors import KappaflowError
from kappaflow.gk.heatflux import HeatFlux, assemble_flux, graph_tensors, unfolded_inputs, unfolded_potential_flux
from kappaflow.gk.unfold import plane_spacings_ang
from kappaflow.units import ang_per_fs_to_ase_velocity, ase_velocity_to_ang_per_fs, fs_to_ase_time

__all__ = ["MDSettings", "CompiledModel", "AtomicEnergyCalculator", "thermalise", "run_trajectory",
           "read_trajectory", "check_cell"]


@dataclass(frozen=True)
class MDSettings:
    temperature_k: float
    timestep_fs: float = 2.0
    thermalisation_steps: int = 2000
    start_spacing_steps: int = 500
    friction_per_fs: float = 0.01
    n_trajectories: int = 3
    trajectory_steps: int = 5000
    flux_every: int = 2
    segment_steps: int = 500
    max_drift_ev_per_atom: float = 2e-3
    seed: int = 0


def _tf():
    from kappaflow.ml.tfimport import import_tensorflow

    return import_tensorflow()


def check_cell(model, cell_ang) -> None:
    """The MD cell must be wider than twice the model's cutoff in every direction: otherwise an atom sees
    its own image within the cutoff, which the potential was not trained for (and the MIC check of the
    flux is invalid)."""
    spacing = plane_spacings_ang(cell_ang)
    if spacing.min() <= 2.0 * model.cutoff_ang:
        raise KappaflowError(f"Green-Kubo: the MD cell is too small for the potential: its narrowest lattice-plane "
                             f"spacing {spacing.min():.3f} Å is not above twice the cutoff ({2 * model.cutoff_ang:.3f} Å); "
                             "use a larger gk.supercell")


def _one_trace(tf, fn):
    """``fn`` compiled once for every size: the input signature (every dimension None) is taken from the first
    call's arguments.  The number of atoms, pairs and triplets changes from step to step; with shapes left
    to TensorFlow's retracing heuristics the dispatch over the cached traces cost ~25 ms per MD step
    (54 atoms; the compiled work itself ~2 ms)."""
    compiled = {}

    def call(*args):
        if "f" not in compiled:
            signature = tf.nest.map_structure(lambda t: tf.TensorSpec([None] * len(t.shape), t.dtype), list(args))
            compiled["f"] = tf.function(fn, input_signature=signature)
        return compiled["f"](*args)

    return call


class CompiledModel:
    """Energies, forces and the unfolded heat flux of a model, in compiled TensorFlow functions."""

    def __init__(self, model):
        tf = _tf()
        self.model = model
        self._tf = tf

        def energy_forces(r, g):
            with tf.GradientTape() as tape:
                tape.watch(r)
                U = model.atomic_energies(tf.gather(r, g["j"]) - tf.gather(r, g["i"]) + g["shift"], g)
                total = tf.reduce_sum(U)
            return total, -tf.convert_to_tensor(tape.gradient(total, r)), U

        self._energy_forces = _one_trace(tf, energy_forces)
        self._unfolded_flux = _one_trace(tf, lambda r, v, r_cell, g: unfolded_potential_flux(tf, model, r, v, r_cell, g))

    def energy_forces(self, positions_ang, cell_ang, symbols):
        tf = self._tf
        g = graph_tensors(tf, self.model.graph(positions_ang, cell_ang, symbols))
        E, F, U = self._energy_forces(tf.constant(positions_ang, tf.float64), g)
        return float(E.numpy()), F.numpy(), U.numpy()

    def heat_flux(self, positions_ang, velocities_ang_per_fs, masses_amu, cell_ang, symbols, gauge=None) -> HeatFlux:
        tf = self._tf
        vel = np.asarray(velocities_ang_per_fs, dtype=np.float64)
        j_pot, U = self._unfolded_flux(*unfolded_inputs(tf, self.model, positions_ang, vel, cell_ang, symbols))
        return assemble_flux(j_pot.numpy(), U.numpy(), vel, np.asarray(masses_amu, dtype=np.float64), "unfolded",
                             gauge=gauge)


class AtomicEnergyCalculator(Calculator):
    """ASE calculator of an atomic-energy model (energy, free_energy, forces, energies)."""

    implemented_properties = ["energy", "free_energy", "forces", "energies"]

    def __init__(self, model, **kwargs):
        super().__init__(**kwargs)
        self.compiled = model if isinstance(model, CompiledModel) else CompiledModel(model)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        E, F, U = self.compiled.energy_forces(self.atoms.positions, self.atoms.cell.array,
                                              self.atoms.get_chemical_symbols())
        self.results = {"energy": E, "free_energy": E, "forces": F, "energies": U}


def _atomic_write_npz(path: Path, **arrays) -> None:
    from kappaflow.atomic import atomic_path

    with atomic_path(path) as tmp:
        np.savez(tmp, **arrays)


def thermalise(atoms, calc, settings: MDSettings, out_path: Path, provenance: dict, log=print) -> Path:
    """Langevin NVT from ``atoms`` (the perfect supercell), then ``n_trajectories`` snapshots
    ``start_spacing_steps`` apart: ``out_path`` (npz: positions, velocities Å/fs, cell, numbers, provenance)."""
    from ase.constraints import FixCom
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary

    atoms = atoms.copy()
    atoms.calc = calc
    # the centre of mass held by a constraint: ASE 3.28's Langevin(fixcm=True) does not sample NVT exactly
    atoms.set_constraint(FixCom())
    rng = np.random.default_rng(settings.seed)
    # 2T: equipartition brings it to T within a period from the perfect crystal
    MaxwellBoltzmannDistribution(atoms, temperature_K=2 * settings.temperature_k, rng=rng)
    Stationary(atoms)
    dyn = Langevin(atoms, fs_to_ase_time(settings.timestep_fs), temperature_K=settings.temperature_k,
                   friction=settings.friction_per_fs / fs_to_ase_time(1.0), fixcm=False, rng=rng)
    t0 = time.time()
    dyn.run(settings.thermalisation_steps)
    log(f"[gk] thermalised {len(atoms)} atoms at {settings.temperature_k:g} K for {settings.thermalisation_steps} "
        f"steps: T = {atoms.get_temperature():.1f} K ({time.time() - t0:.0f} s)")
    positions, velocities = [], []
    for k in range(settings.n_trajectories):
        if k:
            dyn.run(settings.start_spacing_steps)
        Stationary(atoms)  # no drift of the centre of mass in the NVE runs
        positions.append(atoms.positions.copy())
        velocities.append(ase_velocity_to_ang_per_fs(atoms.get_velocities()))
        log(f"[gk] start {k}: T = {atoms.get_temperature():.1f} K")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write_npz(out_path, positions_ang=np.array(positions), velocities_ang_per_fs=np.array(velocities),
                      cell_ang=atoms.cell.array, numbers=atoms.numbers, masses_amu=atoms.get_masses(),
                      provenance=json.dumps({**provenance, "settings": asdict(settings)}))
    return out_path


def read_trajectory(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as data:
        out = {k: data[k] for k in data.files}
    out["provenance"] = json.loads(str(out["provenance"]))
    return out


def run_trajectory(starts_path: Path, index: int, compiled: CompiledModel, settings: MDSettings, out_path: Path,
                   provenance: dict, gauge=None, log=print, stop_after_steps: int | None = None,
                   members: tuple = (), member_gauges: tuple = ()) -> Path:
    """One NVE trajectory from start ``index`` of ``starts_path``: J every ``flux_every`` steps, a
    checkpoint every ``segment_steps`` (``out_path`` is the checkpoint until ``complete`` is true).
    ``members``: further :class:`CompiledModel` s (a committee's members) whose J is taken on the same
    positions and velocities at every sample (``member_flux_ev_ang_per_fs``, (n_members, n_samples, 3);
    with ``member_gauges`` their own gauge matrices): the committee spread of κ, to first order, on the
    mean's trajectory.  ``stop_after_steps`` ends the call early (as a kill would), for tests."""
    from ase import Atoms
    from ase.md.verlet import VelocityVerlet

    out_path = Path(out_path)
    starts = read_trajectory(starts_path)
    if not 0 <= index < starts["positions_ang"].shape[0]:
        raise KappaflowError(f"{starts_path}: no start {index} (it has {starts['positions_ang'].shape[0]})")
    if settings.segment_steps % settings.flux_every:
        raise KappaflowError(f"gk.segment_steps {settings.segment_steps} must be a multiple of gk.flux_every "
                             f"{settings.flux_every}")
    atoms = Atoms(numbers=starts["numbers"], positions=starts["positions_ang"][index], cell=starts["cell_ang"], pbc=True)
    atoms.set_masses(starts["masses_amu"])
    atoms.set_velocities(ang_per_fs_to_ase_velocity(starts["velocities_ang_per_fs"][index]))
    record = {**provenance, "start": index, "starts_file": str(starts_path), "settings": asdict(settings)}
    step, fluxes, energies, temperatures, e0 = 0, [], [], [], None
    member_fluxes = [[] for _ in members]
    member_gauges = tuple(member_gauges) or (None,) * len(members)
    record["committee_members_with_flux"] = len(members)
    if out_path.exists():
        done = read_trajectory(out_path)
        if done["provenance"].get("settings") != asdict(settings) or done["provenance"].get("start") != index:
            raise KappaflowError(f"{out_path}: a checkpoint of other settings or another start; delete it to rerun")
        if bool(done["complete"]):
            return out_path
        step = int(done["step"])
        atoms.positions = done["positions_ang"]
        atoms.set_velocities(ang_per_fs_to_ase_velocity(done["velocities_ang_per_fs"]))
        fluxes, energies = list(done["flux_ev_ang_per_fs"]), list(done["total_energy_ev"])
        member_fluxes = [list(m) for m in done.get("member_flux_ev_ang_per_fs", np.zeros((0, 0, 3)))]
        if len(member_fluxes) != len(members):
            raise KappaflowError(f"{out_path}: a checkpoint with the fluxes of {len(member_fluxes)} committee members, "
                                 f"this run has {len(members)}; delete it to rerun")
        temperatures = list(done["temperature_samples_k"])
        e0 = float(done["initial_total_energy_ev"])
        log(f"[gk] {out_path.name}: resuming at step {step} of {settings.trajectory_steps}")
    atoms.calc = AtomicEnergyCalculator(compiled)
    symbols = atoms.get_chemical_symbols()
    masses = atoms.get_masses()
    if e0 is None:
        e0 = float(atoms.get_total_energy())
    dyn = VelocityVerlet(atoms, fs_to_ase_time(settings.timestep_fs))
    n_atoms = len(atoms)
    t0 = time.time()
    taken = 0

    def sample():
        vel = ase_velocity_to_ang_per_fs(atoms.get_velocities())
        fluxes.append(compiled.heat_flux(atoms.positions, vel, masses, atoms.cell.array, symbols, gauge=gauge).total)
        for member, member_gauge, series in zip(members, member_gauges, member_fluxes):
            series.append(member.heat_flux(atoms.positions, vel, masses, atoms.cell.array, symbols,
                                           gauge=member_gauge).total)
        energies.append(float(atoms.get_total_energy()))
        temperatures.append(float(atoms.get_temperature()))
        drift = abs(energies[-1] - e0) / n_atoms
        if drift > settings.max_drift_ev_per_atom:
            raise KappaflowError(f"{out_path}: the NVE energy drifted by {drift:.3g} eV/atom at step {step} (bound "
                                 f"gk.max_drift_ev_per_atom {settings.max_drift_ev_per_atom:g}): the MD explodes; lower "
                                 "gk.timestep_fs or check the potential at this temperature")

    def checkpoint(complete: bool):
        _atomic_write_npz(out_path, step=np.int64(step), complete=np.bool_(complete), positions_ang=atoms.positions,
                          velocities_ang_per_fs=ase_velocity_to_ang_per_fs(atoms.get_velocities()),
                          flux_ev_ang_per_fs=np.array(fluxes).reshape(-1, 3), total_energy_ev=np.array(energies),
                          member_flux_ev_ang_per_fs=np.array(member_fluxes).reshape(len(members), len(fluxes), 3),
                          temperature_samples_k=np.array(temperatures),
                          initial_total_energy_ev=np.float64(e0), flux_dt_fs=np.float64(settings.timestep_fs *
                                                                                        settings.flux_every),
                          volume_ang3=np.float64(atoms.get_volume()), temperature_k=np.float64(settings.temperature_k),
                          provenance=json.dumps(record))

    if step == 0:
        sample()
    while step < settings.trajectory_steps:
        if stop_after_steps is not None and taken >= stop_after_steps:
            return out_path
        for _ in range(settings.segment_steps // settings.flux_every):
            if step >= settings.trajectory_steps:
                break
            dyn.run(settings.flux_every)
            step += settings.flux_every
            taken += settings.flux_every
            sample()
        checkpoint(complete=False)
        rate = taken / max(time.time() - t0, 1e-9)
        log(f"[gk] {out_path.name}: step {step}/{settings.trajectory_steps}, T {atoms.get_temperature():.0f} K, "
            f"drift {(energies[-1] - e0) / n_atoms:+.2e} eV/atom, {rate:.1f} steps/s")
    checkpoint(complete=True)
    return out_path
