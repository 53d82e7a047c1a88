"""The DFT engine a store key describes: which program, which version, which pseudopotential files.

A pw.x result depends on more than its input text: on the program (Quantum ESPRESSO's pw.x or the mock),
on its version, and on the contents of the pseudopotential files the input names (a file can change
under the same name).  :class:`Engine` holds the first two, found from the pw.x the config's
``dft.pw_command`` launches (:func:`engine_for`: run it briefly on an empty input in a scratch directory
and read ``Program PWSCF v.6.7MaX starts ...``; the mock prints its own revision), and
:func:`identity` adds the sha256 (and md5, which pw.x prints) of each pseudopotential file an input
names.  :func:`kappaflow.sow.engine_key` hashes that identity with the input text; every store key
(sow, sweeps, the AIMD route, ``kappaflow plan``) is made there.

The mock pw.x reads no pseudopotential, so its identity holds none: mock keys do not depend on
pseudopotential files, and a mock run needs none (docs/provenance.md).

After each run, :func:`check_run` compares the output with the identity the key was made from
(``engine.json`` next to ``pw.in``): the version in the header and each pseudopotential's ``MD5 check
sum`` line.  Imports: standard library and :mod:`kappaflow.qe` only (the pw.x jobs' environment).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shlex
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from kappaflow.errors import ConfigError, InputFileError, KappaflowError, PwOutputError

#: bumped when what the key hashes changes (old keys are then never reused: docs/provenance.md)
KEY_SCHEME = "kappaflow-store/2"
#: the file next to a store input that records what its key was made from
IDENTITY_FILE = "engine.json"
MOCK_EXECUTABLE = "kappaflow-mock-pw"
_PW_EXECUTABLE = re.compile(r"^pw.*\.x$")
VERSION_TIMEOUT_S = 120


@dataclass(frozen=True)
class Engine:
    """``tag``: 'pw.x' however it is launched, or 'mock <model args>'; ``version``: what the program's
    output header says ('6.7MaX', 'kappaflow-mock-pw 2')."""

    tag: str
    version: str

    @property
    def is_mock(self) -> bool:
        return self.tag.startswith("mock")

    @property
    def reads_pseudopotentials(self) -> bool:
        return not self.is_mock


def engine_tag(pw_command: str) -> str:
    """What decides the physics of a run besides its version: 'pw.x' for Quantum ESPRESSO (however it
    is launched: ``pw.x``, ``srun pw.x -nk 2`` and ``mpirun -np 4 pw.x`` share results), or the mock and
    its model."""
    words = shlex.split(pw_command)
    for i, w in enumerate(words):
        if Path(w).name == MOCK_EXECUTABLE:
            return "mock " + " ".join(words[i + 1:])
    return "pw.x"


def is_mock_command(pw_command: str) -> bool:
    return any(Path(w).name == MOCK_EXECUTABLE for w in shlex.split(pw_command))


def version_command(pw_command: str) -> list[str]:
    """The program of ``pw_command`` without its launcher (srun, mpirun: not inside a sow job) and without
    pw.x's parallel flags; an ``env VAR=value`` prefix is kept.  A command naming no ``pw*.x`` and no mock
    (a wrapper script) is run as it is."""
    words = shlex.split(pw_command)
    prefix = []
    if words and Path(words[0]).name == "env":
        prefix = ["env"] + [w for w in words[1:] if re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", w)]
    for i, w in enumerate(words):
        name = Path(w).name
        if name == MOCK_EXECUTABLE or _PW_EXECUTABLE.match(name):
            return prefix + [w]
    return words


@functools.lru_cache(maxsize=16)
def detect_version(pw_command: str) -> str:
    """The version the program of ``pw_command`` prints in its header, from a run on an empty input in a
    scratch directory (pw.x stops at once: 'could not find namelist &control')."""
    from kappaflow.qe.pwout import program_version

    cmd = version_command(pw_command)
    env = dict(os.environ)
    env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
    env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    with tempfile.TemporaryDirectory(prefix="kappaflow-pwversion-") as tmp:
        (Path(tmp) / "empty.in").write_text("")
        try:
            proc = subprocess.run(cmd + ["-in", "empty.in"], cwd=tmp, env=env, stdin=subprocess.DEVNULL,
                                  capture_output=True, text=True, errors="replace", timeout=VERSION_TIMEOUT_S)
        except FileNotFoundError:
            raise ConfigError(f"dft.pw_command: cannot run {cmd[0]!r} to read its version (not found); "
                              "install pw.x, fix dft.pw_command, or set dft.pw_version") from None
        except subprocess.TimeoutExpired:
            raise ConfigError(f"dft.pw_command: {' '.join(cmd)} on an empty input did not stop within "
                              f"{VERSION_TIMEOUT_S} s; set dft.pw_version") from None
    version = program_version(proc.stdout)
    if version is None:
        tail = " | ".join((proc.stdout + proc.stderr).strip().splitlines()[:6])
        raise ConfigError(f"dft.pw_command: {' '.join(cmd)} printed no 'Program PWSCF v.' header on an empty "
                          f"input (exit code {proc.returncode}: {tail[:400]}); load its modules in this job or "
                          "set dft.pw_version")
    return version


def engine_for(dft_cfg: dict) -> Engine:
    """The engine of the config's ``dft`` block: ``dft.pw_version`` when given, else detected."""
    command = dft_cfg["pw_command"]
    version = dft_cfg.get("pw_version") or "auto"
    if version == "auto":
        version = detect_version(command)
    return Engine(engine_tag(command), str(version))


# --- pseudopotentials -------------------------------------------------------------------------------
def default_pseudo_dir() -> str:
    """pw.x's pseudo_dir when the input sets none: $ESPRESSO_PSEUDO, else $HOME/espresso/pseudo."""
    return os.environ.get("ESPRESSO_PSEUDO") or str(Path.home() / "espresso" / "pseudo")


@functools.lru_cache(maxsize=256)
def _digests(path: str, mtime_ns: int, size: int) -> tuple[str, str]:
    data = Path(path).read_bytes()
    return hashlib.sha256(data).hexdigest(), hashlib.md5(data).hexdigest()


def file_digests(path) -> tuple[str, str]:
    """(sha256, md5) of a file (cached per path, mtime and size)."""
    st = os.stat(path)
    return _digests(str(path), st.st_mtime_ns, st.st_size)


def pseudopotentials(text: str, source: str = "<input>") -> dict[str, dict]:
    """Per species label: the pseudopotential file the pw.x input ``text`` names, its sha256 and md5."""
    from kappaflow.qe.pwin import pseudopotential_files

    pseudo_dir, files = pseudopotential_files(text, source)
    base = Path(pseudo_dir if pseudo_dir is not None else default_pseudo_dir())
    out = {}
    for label, name in files.items():
        path = base / name
        if not path.is_file():
            raise InputFileError(source, f"pseudopotential for {label} not found: {path} (the store key holds "
                                 "the sha256 of every pseudopotential file; set dft.pseudo_dir)")
        sha, md5 = file_digests(path)
        out[label] = {"file": name, "path": str(path), "sha256": sha, "md5": md5}
    return out


def identity(engine: Engine, text: str, source: str = "<input>") -> dict:
    """What the key of ``text`` run by ``engine`` stands for (written as ``engine.json`` in the store)."""
    return {"key_scheme": KEY_SCHEME, "engine": engine.tag, "version": engine.version,
            "pseudopotentials": pseudopotentials(text, source) if engine.reads_pseudopotentials else {}}


def key_header(ident: dict) -> str:
    """The lines hashed in front of the input text: scheme, engine, version, pseudopotential sha256s."""
    lines = [ident["key_scheme"], f"engine {ident['engine']}", f"version {ident['version']}"]
    lines += [f"pseudopotential {label} {p['file']} sha256 {p['sha256']}"
              for label, p in sorted(ident["pseudopotentials"].items())]
    return "\n".join(lines) + "\n"


# --- the checks of a run against its key ---------------------------------------------------------
def read_identity(input_path) -> dict | None:
    """The identity recorded next to a store input (None outside the store: relax, scaling runs)."""
    path = Path(input_path).parent / IDENTITY_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise InputFileError(path, f"unreadable store identity ({exc})") from None


def check_pseudopotentials_unchanged(input_path, ident: dict) -> None:
    """Before a run: each pseudopotential still has the sha256 its key holds."""
    for label, p in sorted(ident.get("pseudopotentials", {}).items()):
        path = Path(p["path"])
        if not path.is_file():
            continue  # the existence check before pw.x starts names it
        sha, _ = file_digests(path)
        if sha != p["sha256"]:
            raise KappaflowError(
                f"{input_path}: pseudopotential {label} ({path}) changed since the sow keyed this input "
                f"(sha256 {p['sha256'][:12]}… then, {sha[:12]}… now): its store key describes the old file. "
                "Re-run the sow (snakemake --forcerun sow) to key the inputs with the new file")


def check_run(run, ident: dict, input_path) -> None:
    """After a run: the program that ran has the version the key claims, and pw.x read pseudopotentials
    with the md5 of the files the key hashed.  Raises PwOutputError (``reason_code`` engine_mismatch)."""
    if run.engine_version != ident["version"]:
        raise EngineMismatchError(
            run.path, f"the program that ran reports version {run.engine_version!r}, but the store key of "
            f"{input_path} was made for {ident['version']!r} ({ident['engine']}): dft.pw_command or the loaded "
            "modules differ from the sow's. Re-run the sow (snakemake --forcerun sow) with the pw.x that "
            "runs the jobs, or set dft.pw_version")
    read = run.pseudopotentials or {}
    for label, p in sorted(ident.get("pseudopotentials", {}).items()):
        got = read.get(label)
        if got is None:
            raise EngineMismatchError(run.path, f"no 'PseudoPot. ... for {label} read from file' block: "
                                      "cannot check the pseudopotential pw.x read against the store key")
        if got[1] is not None and got[1] != p["md5"]:
            raise EngineMismatchError(
                run.path, f"pw.x read {label} from {got[0]} with MD5 {got[1]}, but the store key holds "
                f"{p['path']} with MD5 {p['md5']}: the pseudopotential changed during the run or pw.x read "
                "another file", run.pseudopotential_lines.get(label) if run.pseudopotential_lines else None)


class EngineMismatchError(PwOutputError):
    """A finished run that is not the run its store key describes (version or pseudopotential)."""

    reason_code = "engine_mismatch"
