"""A real single-node SLURM for the cluster tests (Debian's slurmctld, slurmd, munge; optional slurmdbd).

The node advertises what a Leonardo Booster node has (32 cores, 4 A100 GPUs, 494 GB) through
``SlurmdParameters=config_overrides``; the GPUs are fake character devices.  Partitions are named like
Leonardo's: ``boost_usr_prod`` (GPU nodes) and ``lrd_all_serial`` (serial CPU work).  Accounting runs
through slurmdbd on a private MariaDB so that ``sacct`` holds the scheduler's own records of every job
(partition, tasks, CPUs, GPUs, state) and the executor plugin can validate the account.

No host name has to resolve: the controller, slurmdbd and the node are addressed as 127.0.0.1 (slurmd is
started under the node's configured name).  Start-up waits on conditions (a daemon answers, the node is
idle, slurmctld knows the account), never on fixed sleeps; when one does not come, the error carries the
last answer of the probe (e.g. sacctmgr's own message) and the tails of the daemons' logs.

Only the daemons started here are stopped here, by PID.  The cluster refuses to start over an existing
``/etc/slurm/slurm.conf`` that it did not write (a real cluster's configuration is never touched).

    python3 tests/slurm_cluster.py start     # for manual use; prints the state directory
    python3 tests/slurm_cluster.py stop
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

MARKER = "# written by kappaflow tests/slurm_cluster.py"
SLURM_CONF = Path("/etc/slurm/slurm.conf")
STATE = Path(os.environ.get("KAPPAFLOW_SLURM_STATE", "/var/tmp/kappaflow-slurm"))
ACCOUNT = "kappaflow_ci"
QOS = "normal"
PACKAGES = ["slurmctld", "slurmd", "slurm-client", "slurmdbd", "munge", "mariadb-server"]
GPUS_PER_NODE = 4
CPUS_PER_NODE = 32
NODE = "kfnode"            # the node's name in slurm.conf (slurmd -N NODE): independent of the host name
ADDR = "127.0.0.1"         # every daemon's address: nothing is looked up by name
CTLD_HOST = "localhost"    # slurmctld and slurmdbd accept "localhost" as their own host without a lookup
START_TIMEOUT_S = 180.0    # per condition; a loaded machine may need it, an idle one takes seconds
LOGS = ("slurmdbd.log", "slurmctld.log", "slurmd.log", "munged.log", "mariadbd.console.log",
        "slurmdbd.console.log", "slurmctld.console.log", "slurmd.console.log")


class ClusterUnavailable(RuntimeError):
    pass


def _run(cmd, check=True, **kw):
    proc = subprocess.run(cmd, check=False, text=True, capture_output=True, **kw)
    if check and proc.returncode != 0:
        raise ClusterUnavailable(f"$ {' '.join(map(str, cmd))}: exit {proc.returncode}: "
                                 f"{(proc.stdout + proc.stderr).strip()[-2000:]}")
    return proc


def installed() -> bool:
    return all(shutil.which(p) for p in ("slurmctld", "slurmd", "slurmdbd", "munged", "sbatch",
                                         "mariadbd" if shutil.which("mariadbd") else "mysqld"))


def install() -> None:
    """apt-get install the Debian packages (a few seconds when the index is fresh)."""
    if installed():
        return
    if os.geteuid() != 0:
        raise ClusterUnavailable("installing SLURM needs root (apt-get)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    proc = _run(["apt-get", "install", "-y", "--no-install-recommends", *PACKAGES], check=False, env=env)
    if proc.returncode != 0:
        _run(["apt-get", "update", "-q"], check=False, env=env)
        proc = _run(["apt-get", "install", "-y", "--no-install-recommends", *PACKAGES], check=False,
                    env=env)
    if proc.returncode != 0:
        raise ClusterUnavailable(f"apt-get install {' '.join(PACKAGES)} failed:\n{proc.stderr[-2000:]}")


def _slurm_conf(state: Path) -> str:
    return f"""{MARKER}
ClusterName=kappaflow
SlurmctldHost={CTLD_HOST}({ADDR})
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation={state}/ctld
SlurmdSpoolDir={state}/d
SlurmctldPidFile={state}/slurmctld.pid
SlurmdPidFile={state}/slurmd.pid
SlurmctldLogFile={state}/slurmctld.log
SlurmdLogFile={state}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost={ADDR}
AccountingStorageTRES=gres/gpu
AccountingStoreFlags=job_comment
AccountingStorageEnforce=associations,limits,qos
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc={state}/jobcomp.txt
MinJobAge=600
SlurmdParameters=config_overrides
ReturnToService=2
SchedulerType=sched/backfill
MpiDefault=none
DefMemPerCPU=1000
SlurmctldTimeout=30
SlurmdTimeout=60
NodeName={NODE} NodeAddr={ADDR} CPUs={CPUS_PER_NODE} Boards=1 SocketsPerBoard=2 CoresPerSocket=16 ThreadsPerCore=1 RealMemory=494000 Gres=gpu:{GPUS_PER_NODE} State=UNKNOWN
PartitionName=boost_usr_prod Nodes={NODE} MaxTime=1-00:00:00 State=UP
PartitionName=lrd_all_serial Nodes={NODE} Default=YES MaxTime=04:00:00 State=UP
"""


def _slurmdbd_conf(state: Path) -> str:
    return f"""{MARKER}
AuthType=auth/munge
DbdHost={CTLD_HOST}
DbdAddr={ADDR}
SlurmUser=root
PidFile={state}/slurmdbd.pid
LogFile={state}/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost={ADDR}
StoragePort=33061
StorageUser=root
StorageLoc=slurm_acct_db
"""


class Cluster:
    """Start/stop the daemons; remember their PIDs in ``state/pids.json``."""

    def __init__(self, state: Path = STATE):
        self.state = Path(state)
        self.procs: dict[str, int] = {}

    # -- lifecycle ------------------------------------------------------------------------------------
    def start(self, timeout_s: float = START_TIMEOUT_S) -> "Cluster":
        install()
        for conf in (SLURM_CONF, SLURM_CONF.with_name("slurmdbd.conf"), SLURM_CONF.with_name("gres.conf")):
            if conf.exists() and MARKER not in conf.read_text():
                raise ClusterUnavailable(f"{conf} exists and was not written by the kappaflow tests: "
                                         "refusing to overwrite a real SLURM configuration")
        if _run(["pgrep", "-x", "slurmctld"], check=False).returncode == 0:
            raise ClusterUnavailable("a slurmctld is already running on this machine")
        if self.state.exists():
            shutil.rmtree(self.state)
        for sub in ("ctld", "d", "db", "gpu", "run"):
            (self.state / sub).mkdir(parents=True)
        for i in range(GPUS_PER_NODE):  # fake GPUs: gres.conf File= must be character devices
            os.mknod(self.state / "gpu" / f"nvidia{i}", 0o666 | 0o020000, os.makedev(1, 3))
        SLURM_CONF.parent.mkdir(parents=True, exist_ok=True)
        SLURM_CONF.write_text(_slurm_conf(self.state))
        SLURM_CONF.with_name("gres.conf").write_text(
            f"{MARKER}\nNodeName={NODE} Name=gpu File={self.state}/gpu/nvidia[0-{GPUS_PER_NODE - 1}]\n")
        dbd = SLURM_CONF.with_name("slurmdbd.conf")
        dbd.write_text(_slurmdbd_conf(self.state))
        dbd.chmod(0o600)
        try:
            self._start_munge(timeout_s)
            self._start_mariadb(timeout_s)
            self._spawn("slurmdbd", ["slurmdbd", "-D"])
            self._wait(_answers(["sacctmgr", "-n", "list", "cluster"]), timeout_s, "slurmdbd to answer sacctmgr")
            self._until_ok(["sacctmgr", "-i", "add", "cluster", "kappaflow"], timeout_s, already="already exists")
            self._spawn("slurmctld", ["slurmctld", "-D", "-i"])
            self._wait(_answers(["scontrol", "ping"], expect="UP"), timeout_s, "slurmctld to answer scontrol ping")
            self._until_ok(["sacctmgr", "-i", "add", "account", ACCOUNT, "Description=kappaflow CI",
                            "Organization=ci"], timeout_s, already="already exists")
            self._until_ok(["sacctmgr", "-i", "add", "user", "root", f"Account={ACCOUNT}",
                            f"DefaultAccount={ACCOUNT}"], timeout_s, already="already exists")
            # submissions are checked against slurmctld's copy of the associations (AccountingStorageEnforce)
            self._wait(_answers(["scontrol", "show", "assoc_mgr", "users=root", f"accounts={ACCOUNT}",
                                 "flags=assoc"], expect=f"Account={ACCOUNT} "), timeout_s,
                       f"slurmctld to know the account {ACCOUNT}")
            self._spawn("slurmd", ["slurmd", "-D", "-N", NODE])
            self._wait(self._node_idle, timeout_s, "the node to become idle")
        except Exception:
            self.stop()
            raise
        return self

    def _node_idle(self) -> tuple[bool, str]:
        proc = _run(["sinfo", "-h", "-N", "-o", "%N %T %E"], check=False)
        states = [line.split()[1].rstrip("*") for line in proc.stdout.splitlines() if len(line.split()) > 1]
        ok = bool(states) and all(s in ("idle", "mixed") for s in states)
        return ok, f"sinfo: {proc.stdout.strip() or proc.stderr.strip()}"

    def _until_ok(self, cmd: list[str], timeout_s: float, already: str | None = None) -> None:
        """Run ``cmd`` until it succeeds (or says ``already``): slurmdbd may still be settling."""
        def attempt():
            proc = _run(cmd, check=False)
            text = (proc.stdout + proc.stderr).strip()
            return proc.returncode == 0 or bool(already and already in text), f"exit {proc.returncode}: {text}"
        self._wait(attempt, timeout_s, " ".join(cmd))

    def _start_munge(self, timeout_s: float) -> None:
        run = self.state / "run" / "munge"
        run.mkdir(parents=True)
        shutil.chown(run, "munge", "munge")
        log = self.state / "munged.log"
        log.touch()
        shutil.chown(log, "munge", "munge")
        if not Path("/etc/munge/munge.key").exists():
            _run(["runuser", "-u", "munge", "--", "mungekey", "--create"])
        self._spawn("munged", ["runuser", "-u", "munge", "--", "munged", "-F", "--force",
                               f"--socket={run}/munge.socket.2", f"--log-file={log}",
                               f"--pid-file={run}/munged.pid", f"--seed-file={run}/munged.seed"],
                    env_extra={})
        # slurm finds munge through its default socket path; point it there
        default = Path("/run/munge")
        default.mkdir(parents=True, exist_ok=True)
        sock = default / "munge.socket.2"
        if sock.is_symlink() or sock.exists():
            sock.unlink()
        sock.symlink_to(run / "munge.socket.2")
        self._wait(_answers(["munge", "-n"]), timeout_s, "munged")

    def _start_mariadb(self, timeout_s: float) -> None:
        datadir = self.state / "db" / "data"
        sock = self.state / "db" / "mysqld.sock"
        install_db = shutil.which("mariadb-install-db") or shutil.which("mysql_install_db")
        _run([install_db, "--user=root", f"--datadir={datadir}", "--auth-root-authentication-method=normal",
              "--skip-test-db", "--force"])  # --force: no check that the host name resolves (a bare root has
        # no /etc/hosts; everything below talks to 127.0.0.1)
        server = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
        self._spawn("mariadbd", [server, "--no-defaults", "--user=root", f"--datadir={datadir}",
                                 f"--socket={sock}", "--port=33061", "--bind-address=127.0.0.1", "--skip-name-resolve",
                                 f"--pid-file={self.state}/db/mariadbd.pid",
                                 "--innodb-buffer-pool-size=64M", "--innodb-lock-wait-timeout=900"])
        client = shutil.which("mariadb") or shutil.which("mysql")
        self._wait(_answers([client, f"--socket={sock}", "-uroot", "-e", "select 1"]), timeout_s, "MariaDB")
        # slurmdbd connects over TCP to localhost as root without a password
        _run([client, f"--socket={sock}", "-uroot", "-e",
              "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1'; GRANT ALL ON *.* TO 'root'@'127.0.0.1';"
              "GRANT ALL ON *.* TO 'root'@'localhost'; FLUSH PRIVILEGES;"])

    def _spawn(self, name: str, cmd: list[str], env_extra: dict | None = None) -> None:
        log = open(self.state / f"{name}.console.log", "w")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env=dict(os.environ, **(env_extra or {})))
        self.procs[name] = proc.pid
        (self.state / "pids.json").write_text(json.dumps(self.procs))

    def _wait(self, probe, timeout_s: float, what: str) -> None:
        """Poll ``probe() -> (ready, last answer)``; a daemon that dies or a timeout raises with the last
        answer and the tails of the daemons' logs."""
        t0 = time.monotonic()
        last = ""
        while True:
            ready, last = probe()
            if ready:
                return
            for name, pid in self.procs.items():
                if not _alive(pid):
                    raise ClusterUnavailable(f"{name} (pid {pid}) died while waiting for {what}; last answer: "
                                             f"{last}\n{self.log_tails()}")
            if time.monotonic() - t0 > timeout_s:
                raise ClusterUnavailable(f"timed out after {timeout_s:.0f} s waiting for {what}; last answer: "
                                         f"{last}\n{self.log_tails()}")
            time.sleep(0.5)

    def log_tails(self, lines: int = 12) -> str:
        """The last lines of every daemon log this cluster writes (for error messages)."""
        out = []
        for name in LOGS:
            path = self.state / name
            if path.exists():
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- {path} (last {len(tail)} lines)\n" + "\n".join(tail))
        return "\n".join(out) or f"(no daemon logs in {self.state})"

    def stop(self) -> None:
        """Cancel leftover jobs, then stop exactly the daemons this object started (reverse order)."""
        if not self.procs and (self.state / "pids.json").exists():
            self.procs = json.loads((self.state / "pids.json").read_text())
        if "slurmctld" in self.procs and _alive(self.procs["slurmctld"]):
            _run(["scancel", "--user=root"], check=False)
        for name in reversed(list(self.procs)):
            _terminate(self.procs[name])
        self.procs.clear()
        for conf in (SLURM_CONF, SLURM_CONF.with_name("slurmdbd.conf"), SLURM_CONF.with_name("gres.conf")):
            if conf.exists() and MARKER in conf.read_text():
                conf.unlink()
        sock = Path("/run/munge/munge.socket.2")
        if sock.is_symlink() and str(self.state) in os.readlink(sock):
            sock.unlink()

    # -- scheduler records --------------------------------------------------------------------------------
    def sacct(self, since: str = "now-1days") -> list[dict]:
        """One dict per job allocation (steps excluded) from slurmdbd: the scheduler's own records."""
        fields = ["JobID", "JobName", "Partition", "Account", "QOS", "State", "ExitCode", "NNodes",
                  "NTasks", "NCPUS", "ReqTRES", "AllocTRES", "Comment", "WorkDir", "Submit", "End"]
        out = _run(["sacct", "-a", "-X", "-P", "-n", "-S", since, "--format=" + ",".join(fields)]).stdout
        return [dict(zip(fields, line.split("|"))) for line in out.splitlines() if line.strip()]

    def wait_for_accounting(self, n_jobs: int, timeout_s: float = 60.0) -> list[dict]:
        """slurmctld forwards records asynchronously: wait until at least n_jobs finished jobs appear."""
        t0 = time.monotonic()
        while True:
            rows = [r for r in self.sacct() if r["End"] not in ("", "Unknown")]
            if len(rows) >= n_jobs or time.monotonic() - t0 > timeout_s:
                return rows
            time.sleep(1.0)


def _answers(cmd: list[str], expect: str | None = None):
    """A probe: ``cmd`` exits 0 (and prints ``expect``); its answer is kept for the error message."""
    def probe():
        try:
            proc = _run(cmd, check=False, timeout=60)
        except subprocess.TimeoutExpired:
            return False, f"$ {' '.join(cmd)}: no answer within 60 s"
        text = (proc.stdout + proc.stderr).strip()
        ok = proc.returncode == 0 and (expect is None or expect in proc.stdout)
        return ok, f"$ {' '.join(cmd)}: exit {proc.returncode}: {text[-1500:]}"
    return probe


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie of ours counts as dead
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _terminate(pid: int, grace_s: float = 15.0) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)  # started with start_new_session: the group is the daemon's own
    except ProcessLookupError:
        return
    t0 = time.monotonic()
    while _alive(pid) and time.monotonic() - t0 < grace_s:
        time.sleep(0.2)
    if _alive(pid):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


if __name__ == "__main__":
    cluster = Cluster()
    if sys.argv[1:] == ["start"]:
        cluster.start()
        print(f"SLURM up; state in {cluster.state}; stop with: python3 {__file__} stop")
    elif sys.argv[1:] == ["stop"]:
        cluster.stop()
    else:
        sys.exit(__doc__)
