"""``ml.al``: the settings of the active-learning loop, checked at start-up (no heavy imports here)."""

from __future__ import annotations

from dataclasses import dataclass, field

from kappaflow.errors import ConfigError


@dataclass
class AlSettings:
    """``ml.al`` of the config (schema: src/kappaflow/schema/config.schema.yaml)."""

    pool_sow: bool = True
    pool_amplitudes_ang: list = field(default_factory=lambda: [0.01, 0.03, 0.1])
    pool_random_per_amplitude: int = 20
    pool_temperatures_k: list = field(default_factory=list)
    md_steps: int = 300
    md_timestep_fs: float = 2.0
    md_equilibration_steps: int = 100
    md_snapshots: int = 8
    md_friction_per_fs: float = 0.02
    md_max_displacement_ang: float = 0.4
    pool_aimd: bool = False
    seed_fraction: float = 0.1
    seed_min: int = 2
    method: str = "pulp"
    batch_size: int = 4
    max_per_family: int | None = 2
    max_pw_runs: int = 20
    budget_node_hours: float | None = None
    round_budget_node_hours: float | None = None
    max_rounds: int = 8
    kappa_tolerance: float = 0.02
    force_tolerance_ev_per_ang: float | None = 1e-3
    tolerance_file: str | None = None
    kappa_temperature_k: float = 300.0
    on_failure: str = "skip"
    gate: str = "none"
    random_seed: int = 0
    baseline: str = "fc"
    baseline_max_displacement_ang: float | None = 0.05

    @classmethod
    def from_config(cls, al_cfg: dict) -> "AlSettings":
        known = set(cls.__dataclass_fields__)
        unknown = set(al_cfg) - known
        if unknown:
            raise ConfigError(f"ml.al: unknown key(s) {sorted(unknown)}")
        s = cls(**al_cfg)
        if s.max_pw_runs < 1:
            raise ConfigError(f"ml.al.max_pw_runs = {s.max_pw_runs}: the budget is smaller than one pw.x run")
        if not s.pool_sow and not (s.pool_amplitudes_ang and s.pool_random_per_amplitude > 0):
            raise ConfigError("ml.al: the pool is empty (pool_sow is false and no random supercells: "
                              "set ml.al.pool_amplitudes_ang and ml.al.pool_random_per_amplitude > 0)")
        if s.pool_temperatures_k and s.md_equilibration_steps >= s.md_steps:
            raise ConfigError(f"ml.al.md_equilibration_steps = {s.md_equilibration_steps} leaves none of "
                              f"md_steps = {s.md_steps} for snapshots")
        return s
