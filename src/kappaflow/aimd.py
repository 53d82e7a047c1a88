"""AIMD training data: a pw.x ``md`` run on the FC3 supercell, then N snapshots as single-point SCF jobs.

Both the md run and the snapshot SCF runs go through the same hash-keyed store as the displaced
supercells (``R/dft/<key>/pw.{in,out}``), so they are computed once, counted in the cost table and
never recomputed when other settings change.

The md input is the user's supercell template filled with the undisplaced supercell, with
``calculation='md'``, ``dt`` (Rydberg atomic units, converted from fs in :mod:`kappaflow.units`),
``nstep``, the thermostat (``ion_temperature``, ``tempw``, ``nraise``) and ``nosym``.  Snapshots are
taken evenly spaced after ``equilibration_steps``: with the defaults (400 steps of 1 fs, 100 of
equilibration, 53 snapshots) they are 5–6 fs apart.  Consecutive frames that close are correlated; the
stride is logged so users can lengthen the run (``steps``) for more decorrelated data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kappaflow import units
from kappaflow.errors import KappaflowError
from kappaflow.qe.pwin import parse_pw_input
from kappaflow.qe.pwout import read_pw_output


@dataclass
class AimdSettings:
    temperature_k: float = 500.0
    steps: int = 400
    timestep_fs: float = 1.0
    thermostat: str = "berendsen"
    nraise: int = 10
    equilibration_steps: int = 100
    n_snapshots: int = 53
    nosym: bool = True

    @classmethod
    def from_config(cls, cfg: dict) -> "AimdSettings":
        return cls(**{k: v for k, v in cfg.items() if k != "enabled"})


def md_input_text(scf_text: str, settings: AimdSettings, source: str = "<md input>") -> str:
    """Turn a supercell SCF input (already filled from the template) into a pw.x md input."""
    pw = parse_pw_input(scf_text, source)
    pw.set("control", "calculation", "md")
    pw.set("control", "dt", float(units.fs_to_ry_time(settings.timestep_fs)))
    pw.set("control", "nstep", int(settings.steps))
    pw.set("control", "tprnfor", True)
    pw.set("ions", "ion_temperature", settings.thermostat)
    pw.set("ions", "tempw", float(settings.temperature_k))
    if settings.thermostat in ("berendsen", "andersen", "rescale-v", "rescale-T", "reduce-T"):
        pw.set("ions", "nraise", int(settings.nraise))
    if settings.nosym:
        pw.set("system", "nosym", True)
    return pw.to_text()


def snapshot_frames(n_frames: int, settings: AimdSettings) -> list[int]:
    """Indices of N frames evenly spaced after equilibration (the last frame included)."""
    first = settings.equilibration_steps
    if first >= n_frames:
        raise KappaflowError(f"AIMD has {n_frames} frames, fewer than equilibration_steps "
                             f"({settings.equilibration_steps}): raise ml.aimd.steps")
    available = n_frames - first
    if settings.n_snapshots > available:
        raise KappaflowError(f"AIMD has {available} frames after equilibration, fewer than n_snapshots "
                             f"({settings.n_snapshots}): raise ml.aimd.steps")
    return [int(i) for i in np.round(np.linspace(n_frames - 1, first, settings.n_snapshots))[::-1]]


def snapshots(md_output_path, md_input_path, settings: AimdSettings):
    """(frame index, ase.Atoms) of the chosen snapshots, species and cell from the md input."""
    md_in = parse_pw_input(Path(md_input_path).read_text(), str(md_input_path))
    run = read_pw_output(md_output_path, expected_n_atoms=len(md_in.atoms))
    # frame k (k >= 1) carries the positions at which its energy and forces were computed; frame 0's
    # positions are printed in the header only, so they come from the input
    positions = []
    for k, frame in enumerate(run.frames):
        if frame.positions_frac is not None:
            positions.append(frame.positions_frac)
        elif k == 0:
            positions.append(md_in.atoms.get_scaled_positions(wrap=False))
        else:
            raise KappaflowError(f"{md_output_path}: md step {k} has no ATOMIC_POSITIONS block")
    chosen = snapshot_frames(len(positions), settings)
    out = []
    for i in chosen:
        atoms = md_in.atoms.copy()
        atoms.set_scaled_positions(positions[i])
        out.append((i, atoms))
    return out, run


def temperature_trace(run) -> list[float]:
    return [f.temperature_k for f in run.frames if f.temperature_k is not None]


def write_plan(path, data: dict) -> None:
    Path(path).write_text(json.dumps(data, indent=1))


def read_plan(path) -> dict:
    return json.loads(Path(path).read_text())
