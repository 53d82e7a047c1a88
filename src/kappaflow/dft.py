"""Running pw.x (real or mock) for one input, validating its output, and the cost table.

A run happens in its own scratch directory next to the input (pw.x's ``outdir`` is relative), its
standard output goes to a temporary file, and only a run that passes every check of
:func:`kappaflow.qe.pwout.read_pw_output` is moved to the final output path.  A failure leaves the
partial output beside it (``pw.out.failed``) for inspection and raises with file and reason.

SCF rescue (``dft.scf_rescue``, docs/robustness.md): a run that stops with ``convergence NOT achieved``
(:class:`~kappaflow.qe.pwout.ScfNotConvergedError`) is retried once, in the same scratch directory, from
``pw.rescue.in`` written next to ``pw.in`` (which is never touched: its text is the store key): smaller
``mixing_beta``, more ``electron_maxstep`` and ``startingpot = 'file'`` when the failed run left its charge
density in ``outdir/prefix.save``.  A rescued run keeps its first output as ``pw.out.unconverged`` and
writes ``rescue.json``; a run that still fails writes ``failure.json`` (key, reason, line, log paths,
attempts), which :func:`collect_failures` and ``kappaflow failures`` list together.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from kappaflow import atomic
from kappaflow import engine, units
from kappaflow.engine import MOCK_EXECUTABLE, engine_tag, is_mock_command  # noqa: F401  (dft's names)
from kappaflow.errors import ConfigError, KappaflowError, PwOutputError
from kappaflow.qe.pwin import read_pw_input
from kappaflow.qe.pwout import ScfNotConvergedError, read_pw_output

RESCUE_INPUT = "pw.rescue.in"
RESCUE_RECORD = "rescue.json"
FAILURE_RECORD = "failure.json"
UNCONVERGED_SUFFIX = ".unconverged"  # pw.out.unconverged: the first output of a rescued run
QE_DEFAULT_MIXING_BETA = 0.7
QE_DEFAULT_ELECTRON_MAXSTEP = 100


@dataclass
class ScfRescue:
    """``dft.scf_rescue`` of the config (the schema holds the same defaults)."""

    enabled: bool = True
    mixing_beta_factor: float = 0.5
    mixing_beta: float | None = None
    electron_maxstep: int = 300
    restart_from_charge_density: bool = True

    @classmethod
    def from_config(cls, cfg) -> "ScfRescue":
        if cfg is None:
            return cls()
        if isinstance(cfg, cls):
            return cfg
        unknown = sorted(set(cfg) - set(cls.__dataclass_fields__))
        if unknown:
            raise KappaflowError(f"dft.scf_rescue: unknown key(s) {unknown}")
        return cls(**cfg)


def charge_density_file(pw, workdir) -> Path | None:
    """The charge density a run of ``pw`` in ``workdir`` left behind (``outdir/prefix.save/``), if any."""
    outdir = Path(str(pw.get("control", "outdir", os.environ.get("ESPRESSO_TMPDIR", "./"))))
    save = (outdir if outdir.is_absolute() else Path(workdir) / outdir) / \
        f"{pw.get('control', 'prefix', 'pwscf')}.save"
    for name in ("charge-density.dat", "charge-density.hdf5"):
        if (save / name).is_file():
            return save / name
    return None


def rescue_input(input_path, workdir, rescue: ScfRescue) -> tuple[str, dict]:
    """The text of the rescue input of ``input_path`` and what it changes (namelist variable -> value)."""
    pw = read_pw_input(input_path)
    beta0 = float(pw.get("electrons", "mixing_beta", QE_DEFAULT_MIXING_BETA))
    beta = float(rescue.mixing_beta) if rescue.mixing_beta is not None else beta0 * rescue.mixing_beta_factor
    maxstep = max(int(rescue.electron_maxstep),
                  int(pw.get("electrons", "electron_maxstep", QE_DEFAULT_ELECTRON_MAXSTEP)))
    changes = {"electrons.mixing_beta": [beta0, beta],
               "electrons.electron_maxstep": [pw.get("electrons", "electron_maxstep", None), maxstep]}
    pw.set("electrons", "mixing_beta", beta)
    pw.set("electrons", "electron_maxstep", maxstep)
    rho = charge_density_file(pw, workdir) if rescue.restart_from_charge_density else None
    if rho is not None:
        changes["electrons.startingpot"] = [pw.get("electrons", "startingpot", None), "file"]
        pw.set("electrons", "startingpot", "file")
    changes["restart_from"] = str(rho) if rho is not None else None
    text = f"! SCF rescue of {Path(input_path).name} (kappaflow dft.scf_rescue): {_describe(changes)}\n"
    return text + pw.to_text(), changes


def _describe(changes: dict) -> str:
    parts = [f"{k.split('.')[1]} {v[0]} -> {v[1]}" for k, v in changes.items() if "." in k]
    if changes.get("restart_from"):
        parts.append(f"charge density from {changes['restart_from']}")
    return ", ".join(parts)


def _attempt(input_path: Path, output_path: Path, work: Path, pw_command: str, n_atoms: int, run_env: dict,
             log, identity: dict | None = None):
    """One pw.x run in ``work``; the parsed output, or PwOutputError (output kept as pw.out.failed)."""
    partial = output_path.with_name(output_path.name + ".partial")
    failed = output_path.with_name(output_path.name + ".failed")
    cmd = shlex.split(pw_command) + ["-in", str(input_path)]
    log(f"pw.x: {' '.join(cmd)}  [{n_atoms} atoms, cwd {work}]")
    t0 = time.perf_counter()
    with open(partial, "w") as out, open(work / "stderr.txt", "w") as err:
        try:
            proc = subprocess.run(cmd, cwd=work, stdout=out, stderr=err, env=run_env)
        except FileNotFoundError:
            raise KappaflowError(f"{input_path}: pw.x command not found: {cmd[0]!r} "
                                 "(set dft.pw_command in the config)") from None
    elapsed = time.perf_counter() - t0
    try:
        run = read_pw_output(partial, expected_n_atoms=n_atoms)
        if identity is not None:
            engine.check_run(run, identity, input_path)
    except PwOutputError as exc:
        partial.replace(failed)
        stderr = (work / "stderr.txt").read_text().strip().splitlines()
        hint = f" (exit code {proc.returncode}{'; stderr: ' + stderr[-1] if stderr else ''})"
        raise type(exc)(failed, exc.reason + hint, exc.line) from None
    if proc.returncode != 0:
        partial.replace(failed)
        raise PwOutputError(failed, f"pw.x exited with code {proc.returncode}")
    return run, partial, elapsed


def _record_failure(output_path: Path, input_path: Path, exc: PwOutputError, attempts: list[dict],
                    rule_log=None) -> Path:
    record = {
        "key": output_path.parent.name,
        "reason": exc.reason,
        "reason_code": getattr(exc, "reason_code", "pw_output_error"),
        "line": exc.line,
        "log": exc.path,  # the failed pw.x output (pw.out.failed)
        "stderr": str(output_path.parent / "work" / "stderr.txt"),
        "rule_log": str(rule_log) if rule_log else None,
        "input": str(input_path),
        "rescue_attempted": len(attempts) > 1,
        "attempts": attempts,
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    path = output_path.parent / FAILURE_RECORD
    atomic.write_text(path, json.dumps(record, indent=1))
    return path


def run_pw(input_path, output_path, pw_command: str, keep_scratch: bool = False,
           env: dict | None = None, log=print, rescue=None, rule_log=None) -> float:
    """Run pw.x on ``input_path``; write the validated output to ``output_path``; return WALL seconds.

    ``rescue`` (:class:`ScfRescue` or the ``dft.scf_rescue`` dict; default: enabled) retries a
    non-converged SCF once from ``pw.rescue.in``.  Any final failure writes ``failure.json`` next to the
    output and raises :class:`PwOutputError` naming the failed output (``pw.out.failed``)."""
    input_path = Path(input_path).resolve()
    output_path = Path(output_path).resolve()
    rescue = ScfRescue.from_config(rescue)
    pw = read_pw_input(input_path)
    n_atoms = len(pw.atoms)
    identity = engine.read_identity(input_path)  # a store input: what its key was made from
    if identity is not None:
        pw.require_free_atoms("a store run (a force set for the force constants)")
        engine.check_pseudopotentials_unchanged(input_path, identity)
    here = output_path.parent
    work = here / "work"
    if work.exists():
        shutil.rmtree(work)
    (work / "tmp").mkdir(parents=True)  # pw.x refuses a nested outdir whose parent does not exist
    failed = output_path.with_name(output_path.name + ".failed")
    unconverged = output_path.with_name(output_path.name + UNCONVERGED_SUFFIX)
    for stale in (here / FAILURE_RECORD, here / RESCUE_RECORD, here / RESCUE_INPUT, unconverged):
        if stale.exists():
            stale.unlink()
    run_env = dict(os.environ)
    run_env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
    run_env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    run_env.update(env or {})
    attempts: list[dict] = []
    rescue_info = None
    try:
        try:
            run, partial, elapsed = _attempt(input_path, output_path, work, pw_command, n_atoms, run_env, log,
                                             identity)
        except ScfNotConvergedError as exc:
            attempts.append({"input": str(input_path), "output": str(failed), "reason": exc.reason,
                             "line": exc.line})
            if not rescue.enabled:
                raise
            failed.replace(unconverged)
            attempts[-1]["output"] = str(unconverged)
            text, changes = rescue_input(input_path, work, rescue)
            rescue_path = here / RESCUE_INPUT
            rescue_path.write_text(text)
            log(f"pw.x: {exc.reason} in {input_path}; SCF rescue from {rescue_path}: {_describe(changes)}")
            first_wall = wall_time_or_none(unconverged)
            try:
                run, partial, elapsed = _attempt(rescue_path, output_path, work, pw_command, n_atoms, run_env,
                                                 log, identity)
            except PwOutputError as exc2:
                attempts.append({"input": str(rescue_path), "output": str(failed), "reason": exc2.reason,
                                 "line": exc2.line, "changes": changes})
                raise type(exc2)(exc2.path, exc2.reason + f" [after the SCF rescue ({_describe(changes)}); "
                                 f"first attempt: {exc.reason}, {unconverged}]", exc2.line) from None
            rescue_info = {"key": here.name, "rescue_input": str(rescue_path), "changes": changes,
                           "first_attempt": {"output": str(unconverged), "reason": exc.reason, "line": exc.line,
                                             "wall_time_s": first_wall},
                           "rescued_wall_time_s": run.wall_time_s}
    except PwOutputError as exc:
        if not attempts:
            attempts.append({"input": str(input_path), "output": str(failed), "reason": exc.reason,
                             "line": exc.line})
        record = _record_failure(output_path, input_path, exc, attempts, rule_log)
        log(f"pw.x: FAILED {here.name}: {exc.reason} (record {record})")
        raise
    if rescue_info is not None:
        (here / RESCUE_RECORD).write_text(json.dumps(rescue_info, indent=1))
        log(f"pw.x: SCF rescued for {here.name} ({rescue_info['changes']['electrons.mixing_beta'][1]:g} mixing)")
    if not keep_scratch:
        shutil.rmtree(work, ignore_errors=True)
    partial.replace(output_path)
    if failed.exists():
        failed.unlink()
    log(f"pw.x: done in {elapsed:.1f} s (pw.x WALL {run.wall_time_s:.1f} s) -> {output_path}")
    return run.wall_time_s


def run_dft(input_path, output_path, dft_cfg: dict) -> float:
    """One pw.x run of the ``dft`` (or ``relax``) rule with the config's ``dft`` block: SCF rescue of
    ``dft.scf_rescue``; a final failure writes failure.json.  Progress goes to the rule's log."""
    from kappaflow.logs import LOG_FILES, progress

    return run_pw(input_path, output_path, dft_cfg["pw_command"], keep_scratch=dft_cfg["keep_scratch"],
                  log=progress, rescue=dft_cfg.get("scf_rescue"), rule_log=LOG_FILES[-1] if LOG_FILES else None)


def scaling_pw_command(scaling_cfg: dict, ranks: int) -> str:
    """The scaling study's launch command for ``ranks`` MPI ranks ({ranks} in ``scaling.pw_command``);
    one rank: ``scaling.pw_command_serial`` (no srun inside the job step's own srun)."""
    if ranks == 1:
        return scaling_cfg["pw_command_serial"]
    template = scaling_cfg["pw_command"]
    if "{ranks}" not in template:
        raise ConfigError(f"scaling.pw_command must contain {{ranks}} (got {template!r})")
    return template.format(ranks=ranks)


def run_scaling_pw(input_path, output_path, scaling_cfg: dict, ranks: int) -> float:
    """One pw.x run of the scaling study on ``ranks`` MPI ranks (rules scaling_run_*)."""
    from kappaflow.logs import progress

    wall = run_pw(input_path, output_path, scaling_pw_command(scaling_cfg, int(ranks)), log=progress)
    progress(f"scaling: {Path(output_path).parent.name}: pw.x WALL {wall:.2f} s on {ranks} rank(s)")
    return wall


def wall_time_or_none(path) -> float | None:
    """The WALL seconds a pw.x output reports, or None (no timing line, unreadable file)."""
    from kappaflow.qe.pwout import _WALL, parse_wall_time

    try:
        for line in Path(path).read_text(errors="replace").splitlines():
            m = _WALL.match(line)
            if m:
                return parse_wall_time(m.group(1))
    except (OSError, ValueError):
        pass
    return None


# --- SCF accuracy of the forces that enter a fit ----------------------------------------------
_SCF_CORRECTION = re.compile(r"Total SCF correction\s*=\s*(\S+)")
_N_ATOMS = re.compile(r"^\s*number of atoms/cell\s*=\s*(\d+)", re.M)


def scf_force_error_ev_per_ang(path) -> float | None:
    """pw.x's estimate of the force error left by the incomplete SCF of the run in ``path``: its last
    'Total SCF correction' (the norm over all 3N force components, Ry/au) as an RMS per Cartesian
    component, eV/Å (``/ sqrt(3 N)``: the quantity the noise study's amplitude is).  None when the
    output prints no SCF correction."""
    text = Path(path).read_text(errors="replace")
    values = _SCF_CORRECTION.findall(text)
    atoms = _N_ATOMS.search(text)
    if not values or atoms is None:
        return None
    try:
        total = float(values[-1])
    except ValueError:  # '*****': beyond the print format
        return float("inf")
    return float(units.ry_per_bohr_to_ev_per_ang(total)) / math.sqrt(3 * int(atoms.group(1)))


def check_scf_accuracy(manifest: dict, store_dir, limit_ev_per_ang) -> None:
    """Refuse force sets whose SCF force error estimate (:func:`scf_force_error_ev_per_ang`) exceeds
    ``reap.max_scf_correction_ev_per_ang``, listing every such run (key, role, index, estimate, file);
    ``None`` disables the check.  Called by ``steps.mapped_forces`` before a fit reads the forces."""
    if limit_ev_per_ang is None:
        return
    rows, seen, n = [], set(), 0
    for job in manifest["jobs"]:
        if job["key"] in seen:
            continue
        seen.add(job["key"])
        path = Path(job.get("output") or Path(store_dir) / job["key"] / "pw.out")
        error = scf_force_error_ev_per_ang(path)
        n += 1
        if error is not None and error > limit_ev_per_ang:
            rows.append((job["key"], job["role"], str(job["index"]), f"{error * 1e6:.1f}", str(path)))
    if not rows:
        return
    rows.sort(key=lambda r: -float(r[3]))
    table = [("key", "role", "index", "µeV/Å", "pw.x output")] + rows
    widths = [max(len(r[i]) for r in table) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4] for r in table]
    raise KappaflowError(
        f"{len(rows)} of {n} pw.x runs have an SCF force error above reap.max_scf_correction_ev_per_ang = "
        f"{limit_ev_per_ang * 1e6:g} µeV/Å (pw.x's 'Total SCF correction' / sqrt(3N), RMS per Cartesian "
        "component); their forces would enter the force-constant fit with more error than kappa tolerates "
        "(docs/noise.md). Lower conv_thr (dft.pw_overrides: {electrons: {conv_thr: 1.0e-12}}, or in the "
        "supercell template: the runs are recomputed under new keys), or raise the limit to what your "
        "system tolerates (its noise study's tolerance.json; docs/robustness.md):\n" + "\n".join(lines))


# --- failures, listed together -----------------------------------------------------------------
FAILURE_COLUMNS = ("key", "role", "index", "reason", "log")


def _jobs_by_key(results_dir: Path) -> dict[str, list[tuple[str, str]]]:
    """key -> [(role, index)] from the manifest (and the AIMD snapshot list of the ML route)."""
    out: dict[str, list[tuple[str, str]]] = {}
    for name in ("sow/manifest.json", "aimd/snapshots.json"):
        path = results_dir / name
        if not path.is_file():
            continue
        try:
            jobs = json.loads(path.read_text()).get("jobs", [])
        except (OSError, ValueError):
            continue
        for job in jobs:
            out.setdefault(job.get("key"), []).append((str(job.get("role", "-")), str(job.get("index", "-"))))
    return out


def collect_failures(results_dir) -> list[dict]:
    """Every ``failure.json`` of ``results_dir`` (``dft/<key>/`` and ``relax/``) with the role and index
    of its supercell in the manifest; sorted by role, index, key."""
    root = Path(results_dir)
    jobs = _jobs_by_key(root)
    paths = sorted(root.glob(f"dft/*/{FAILURE_RECORD}"))
    if (root / "relax" / FAILURE_RECORD).is_file():
        paths.append(root / "relax" / FAILURE_RECORD)
    rows = []
    for path in paths:
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            record = {"key": path.parent.name, "reason": f"unreadable {path.name}: {exc}", "log": str(path)}
        key = record.get("key", path.parent.name)
        where = jobs.get(key) or ([("relax", "-")] if path.parent.name == "relax" else [("-", "-")])
        record["role"] = ",".join(sorted({r for r, _ in where}))
        record["index"] = ",".join(i for _, i in where)
        record["record"] = str(path)
        rows.append(record)
    rows.sort(key=lambda r: (r["role"], _int_or_inf(r["index"].split(",")[0]), r["key"]))
    return rows


def _int_or_inf(text: str) -> float:
    try:
        return int(text)
    except ValueError:
        return float("inf")


def format_failures(rows: list[dict]) -> str:
    """The failures as one table (key, role, index, reason, log)."""
    if not rows:
        return "no failed pw.x runs"
    def reason(r):
        attempts = r.get("attempts") or []
        text = attempts[-1].get("reason", r.get("reason")) if attempts else r.get("reason")
        return f"{text} [after the SCF rescue]" if r.get("rescue_attempted") else str(text)

    table = [FAILURE_COLUMNS] + [(str(r.get("key")), str(r.get("role")), str(r.get("index")), reason(r),
                                  str(r.get("log"))) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(FAILURE_COLUMNS) - 1)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths)) + "  " + row[-1] for row in table]
    rescued = sum(1 for r in rows if r.get("rescue_attempted"))
    return "\n".join([f"{len(rows)} failed pw.x run(s) ({rescued} after an SCF rescue):"] + lines)


COST_FIELDS = ["key", "role", "index", "n_atoms", "wall_time_s", "mpi_processes", "nodes",
               "node_hours", "core_hours", "qe_version"]


def cost_table(manifest: dict, store_dir, nodes_per_job: float, cores_per_job: float) -> list[dict]:
    """One row per unique pw.x run of the manifest, from pw.x's own WALL time."""
    rows, seen = [], set()
    for job in manifest["jobs"]:
        if job["key"] in seen:
            continue
        seen.add(job["key"])
        path = job.get("output") or Path(store_dir) / job["key"] / "pw.out"  # imported runs name their file
        run = read_pw_output(path, expected_n_atoms=job["n_atoms"])
        hours = float(units.seconds_to_hours(run.wall_time_s))
        rows.append({"key": job["key"], "role": job["role"], "index": job["index"],
                     "n_atoms": run.n_atoms, "wall_time_s": run.wall_time_s,
                     "mpi_processes": run.n_mpi_processes, "nodes": nodes_per_job,
                     "node_hours": hours * nodes_per_job, "core_hours": hours * cores_per_job,
                     "qe_version": run.qe_version})
    return rows


def check_pseudopotentials(input_path, pw_command: str, mode="auto", run_dir=None) -> None:
    """Before pw.x starts: every ATOMIC_SPECIES file of ``input_path`` exists where pw.x will read it.

    pw.x reads ``pseudo_dir`` of the input (relative to its run directory ``run_dir``, by default
    ``work/`` beside the input, where :func:`run_pw` starts it), or ``$ESPRESSO_PSEUDO``, or
    ``~/espresso/pseudo``.  ``mode`` is ``dft.check_pseudopotentials``: ``auto`` skips the mock, which
    reads none.  A dry run and the plan never get here, so they need no pseudopotential files.
    """
    from kappaflow.errors import InputFileError

    if mode is False or (mode == "auto" and is_mock_command(pw_command)):
        return
    input_path = Path(input_path)
    pw = read_pw_input(input_path)
    run_dir = Path(run_dir) if run_dir is not None else input_path.parent / "work"
    given = pw.get("control", "pseudo_dir", None)
    if given is not None:
        # lexically: the run directory is made only when pw.x starts
        pseudo_dir = Path(os.path.normpath(run_dir / os.path.expanduser(str(given))))
    else:
        pseudo_dir = Path(os.environ.get("ESPRESSO_PSEUDO") or Path.home() / "espresso" / "pseudo")
    for sp in pw.species:
        path = pseudo_dir / sp.pseudopotential
        if not path.is_file():
            raise InputFileError(input_path, f"pseudopotential for {sp.symbol} not found: {path} "
                                 "(set dft.pseudo_dir in the config, or fix ATOMIC_SPECIES); pw.x not started")
