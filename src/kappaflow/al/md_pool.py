"""Candidates from molecular dynamics run with the committee itself (``ml.al.pool_temperatures_k``).

After round r's committee is trained, one Langevin NVT trajectory per temperature (ASE dynamics on
:class:`kappaflow.ml.calculator.CommitteeCalculator`, with the round's Δ-learning baseline when there is
one) starts from the undisplaced FC3 supercell; ``md_snapshots`` frames evenly spaced after
``md_equilibration_steps`` become pool candidates (family ``md:<T>K``), their pw.x inputs in the DFT store
like every other candidate.  They cost no DFT: only the ones a later selection picks run pw.x.

The committee of an early round is poor, so its MD may run away; a trajectory stops when an atom moves
more than ``md_max_displacement_ang`` from its place in the supercell (frames before that stay; the stop
is recorded and logged).  Such frames are where the committee is least sure, which is what the
selection looks for, but not where the κ of the crystal is decided, so the trajectory does not go on.

Files: ``round<r>/md/pool.json`` (the candidates and, per temperature, the trajectory's record) and
``round<r>/md/trajectory_<T>K.extxyz`` (every snapshot with its committee forces and σ).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from kappaflow import sow, units
from kappaflow.al.settings import AlSettings
from kappaflow.engine import engine_for
from kappaflow.errors import KappaflowError
from kappaflow.qe.pwin import check_template
from kappaflow.steps import atomic_path, progress, pw_overrides_for_supercells

FAMILY_MD = "md"


def md_family(temperature_k: float) -> str:
    return f"{FAMILY_MD}:{float(temperature_k):g}K"


def snapshot_steps(settings: AlSettings) -> list[int]:
    """MD steps whose frames become candidates: ``md_snapshots`` evenly spaced after equilibration, the
    last step included."""
    first = settings.md_equilibration_steps + 1
    if first > settings.md_steps:
        raise KappaflowError(f"ml.al: md_equilibration_steps ({settings.md_equilibration_steps}) leaves no step "
                             f"of md_steps ({settings.md_steps}) for snapshots")
    n = min(settings.md_snapshots, settings.md_steps - first + 1)
    return sorted({int(s) for s in np.round(np.linspace(settings.md_steps, first, n))})


def run_trajectory(atoms, calculator, temperature_k: float, settings: AlSettings, seed: int, on_snapshot):
    """Langevin NVT of ``atoms`` at ``temperature_k`` with ``calculator``; ``on_snapshot(step, atoms)`` at
    every snapshot step.  Returns the trajectory's record (steps done, why it stopped, mean T)."""
    from ase.constraints import FixCom
    from ase.md import velocitydistribution
    from ase.md.langevin import Langevin

    # ASE >= 3.28 names it thermalize_momenta (same arguments)
    thermalize = getattr(velocitydistribution, "thermalize_momenta", None) or \
        velocitydistribution.MaxwellBoltzmannDistribution
    reference = atoms.get_positions().copy()
    cell = np.asarray(atoms.cell)
    inverse = np.linalg.inv(cell)
    atoms.calc = calculator
    rng = np.random.RandomState(seed)
    # twice the target: equipartition between kinetic and potential energy brings it to ~T within a period
    thermalize(atoms, temperature_K=2.0 * temperature_k, rng=rng)
    velocitydistribution.Stationary(atoms)
    atoms.set_constraint(FixCom())  # the centre of mass stays (ASE's recommended form, not fixcm=True)
    dyn = Langevin(atoms, timestep=units.fs_to_ase_time(settings.md_timestep_fs), temperature_K=temperature_k,
                   friction=settings.md_friction_per_fs / units.fs_to_ase_time(1.0), fixcm=False, rng=rng)
    wanted = set(snapshot_steps(settings))
    temperatures, stop = [], ""
    largest = 0.0
    for step in range(1, settings.md_steps + 1):
        dyn.run(1)
        frac = (atoms.get_positions() - reference) @ inverse
        u = (frac - np.round(frac)) @ cell
        largest = max(largest, float(np.linalg.norm(u, axis=1).max()))
        if largest > settings.md_max_displacement_ang:
            stop = (f"step {step}: an atom moved {largest:.3f} Å from its place (> ml.al.md_max_displacement_ang "
                    f"{settings.md_max_displacement_ang} Å); the committee's MD ran away, frames before kept")
            break
        if step > settings.md_equilibration_steps:
            temperatures.append(float(atoms.get_temperature()))
        if step in wanted:
            on_snapshot(step, atoms)
    return {"temperature_k": float(temperature_k), "steps_done": step if not stop else step - 1,
            "stopped": stop, "mean_temperature_k": float(np.mean(temperatures)) if temperatures else None,
            "largest_displacement_ang": largest}


def committee_md_pool(round_index: int, model_dirs, gvectors_path, structure_path, template_path,
                      sow_cfg: dict, dft_cfg: dict, al_cfg: dict, store_dir, out_path, baseline_path=None) -> dict:
    """The MD candidates of round ``round_index``'s committee (see the module text); writes ``out_path``
    (``round<r>/md/pool.json``) and one extxyz per temperature next to it."""
    from ase.io import write as ase_write

    from kappaflow.al.baseline import load_optional
    from kappaflow.ml.calculator import CommitteeCalculator
    from kappaflow.ml.model import Committee
    from kappaflow.ml.steps import gvector_parameters, undisplaced_supercell

    settings = AlSettings.from_config(al_cfg)
    committee = Committee.load([str(d) for d in model_dirs])
    if committee.params != gvector_parameters(gvectors_path):
        raise KappaflowError(f"{gvectors_path}: the committee was trained with other G-vector parameters")
    template = Path(template_path).read_text()
    check_template(template, str(template_path))
    engine = engine_for(dft_cfg)
    overrides = pw_overrides_for_supercells(dft_cfg)
    base = undisplaced_supercell(structure_path, sow_cfg)
    out_dir = Path(out_path).parent
    out_dir.mkdir(parents=True, exist_ok=True)
    candidates, trajectories = [], []
    for t_index, temperature in enumerate(settings.pool_temperatures_k):
        calc = CommitteeCalculator(committee, baseline=load_optional(baseline_path))
        frames = []

        def keep(step, atoms, temperature=temperature, frames=frames, calc=calc):
            snap = atoms.copy()
            snap.set_constraint()
            text = sow.supercell_input_text(template, str(template_path), snap, overrides)
            key = sow.store_input(store_dir, engine, text, str(template_path))
            sigma = np.asarray(calc.results["forces_std"], dtype=np.float64)
            candidates.append({"key": key, "family": md_family(temperature), "n_atoms": len(snap),
                               "amplitude_ang": None, "temperature_k": float(temperature), "md_step": int(step),
                               "md_round": int(round_index)})
            snap.info.update(key=key, md_step=int(step), temperature_k=float(atoms.get_temperature()),
                             sigma_max_ev_per_ang=float(sigma.max()))
            snap.arrays["forces_ev_per_ang"] = np.asarray(calc.results["forces"], dtype=np.float64).copy()
            snap.arrays["forces_std_ev_per_ang"] = sigma.copy()
            frames.append(snap)

        seed = settings.random_seed + 1000 * (round_index + 1) + t_index
        record = run_trajectory(base.copy(), calc, float(temperature), settings, seed, keep)
        traj_path = out_dir / f"trajectory_{float(temperature):g}K.extxyz"
        with atomic_path(traj_path) as tmp:
            if frames:
                ase_write(str(tmp), frames, format="extxyz")
            else:
                tmp.write_text("")
        record.update(n_snapshots=len(frames), trajectory=traj_path.name)
        trajectories.append(record)
        mean_t = record["mean_temperature_k"]
        progress(f"al md round {round_index}: {float(temperature):g} K, {record['steps_done']} steps of "
                 f"{settings.md_timestep_fs:g} fs, mean T {mean_t if mean_t is None else round(mean_t)} K, "
                 f"{len(frames)} snapshots" + (f"; stopped at {record['stopped']}" if record["stopped"] else ""))
    unique = {c["key"]: c for c in candidates}
    pool = {"round": int(round_index), "candidates": sorted(unique.values(), key=lambda c: (c["family"], c["key"])),
            "trajectories": trajectories}
    with atomic_path(out_path) as tmp:
        tmp.write_text(json.dumps(pool, indent=1))
    return pool
