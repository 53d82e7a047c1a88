"""A real single-node SLURM for the cluster tests (Debian's slurmctld, slurmd, munge; optional slurmdbd).

The node advertises what a Leonardo Booster node has (32 cores, 4 A100 GPUs, 494 GB) through
``SlurmdParameters=config_overrides``; the GPUs are fake character devices.  Partitions are named like
Leonardo's: ``boost_usr_prod`` (GPU nodes) and ``lrd_all_serial`` (serial CPU work).  Accounting runs
through slurmdbd on a private MariaDB so that ``sacct`` holds the scheduler's own records of every job
(partition, tasks, CPUs, GPUs, state) and the executor plugin can validate the account.

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
import socket
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


class ClusterUnavailable(RuntimeError):
    pass


def _run(cmd, check=True, **kw):
    return subprocess.run(cmd, check=check, text=True, capture_output=True, **kw)


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


def _slurm_conf(host: str, state: Path) -> str:
    return f"""{MARKER}
ClusterName=kappaflow
SlurmctldHost={host}
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
AccountingStorageHost={host}
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
NodeName={host} CPUs={CPUS_PER_NODE} Boards=1 SocketsPerBoard=2 CoresPerSocket=16 ThreadsPerCore=1 RealMemory=494000 Gres=gpu:{GPUS_PER_NODE} State=UNKNOWN
PartitionName=boost_usr_prod Nodes={host} MaxTime=1-00:00:00 State=UP
PartitionName=lrd_all_serial Nodes={host} Default=YES MaxTime=04:00:00 State=UP
"""


def _slurmdbd_conf(host: str, state: Path) -> str:
    return f"""{MARKER}
AuthType=auth/munge
DbdHost={host}
SlurmUser=root
PidFile={state}/slurmdbd.pid
LogFile={state}/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=33061
StorageUser=root
StorageLoc=slurm_acct_db
"""


class Cluster:
    """Start/stop the daemons; remember their PIDs in ``state/pids.json``."""

    def __init__(self, state: Path = STATE):
        self.state = Path(state)
        self.host = socket.gethostname().split(".")[0]
        self.procs: dict[str, int] = {}

    # -- lifecycle ------------------------------------------------------------------------------------
    def start(self, timeout_s: float = 90.0) -> "Cluster":
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
        SLURM_CONF.write_text(_slurm_conf(self.host, self.state))
        SLURM_CONF.with_name("gres.conf").write_text(
            f"{MARKER}\nNodeName={self.host} Name=gpu File={self.state}/gpu/nvidia[0-{GPUS_PER_NODE - 1}]\n")
        dbd = SLURM_CONF.with_name("slurmdbd.conf")
        dbd.write_text(_slurmdbd_conf(self.host, self.state))
        dbd.chmod(0o600)
        try:
            self._start_munge()
            self._start_mariadb()
            self._spawn("slurmdbd", ["slurmdbd", "-D"])
            self._wait(lambda: _run(["sacctmgr", "-n", "list", "cluster"], check=False).returncode == 0,
                       timeout_s, "slurmdbd to answer sacctmgr")
            _run(["sacctmgr", "-i", "add", "cluster", "kappaflow"], check=False)
            self._spawn("slurmctld", ["slurmctld", "-D", "-i"])
            self._wait(lambda: _run(["scontrol", "ping"], check=False).stdout.count("UP") >= 1,
                       timeout_s, "slurmctld to answer scontrol ping")
            _run(["sacctmgr", "-i", "add", "account", ACCOUNT, "Description=kappaflow CI", "Organization=ci"])
            _run(["sacctmgr", "-i", "add", "user", "root", f"Account={ACCOUNT}", f"DefaultAccount={ACCOUNT}"])
            self._spawn("slurmd", ["slurmd", "-D"])
            self._wait(self._node_idle, timeout_s, "the node to become idle")
        except Exception:
            self.stop()
            raise
        return self

    def _node_idle(self) -> bool:
        out = _run(["sinfo", "-h", "-N", "-o", "%T"], check=False).stdout.split()
        return bool(out) and all(s.rstrip("*") in ("idle", "mixed") for s in out)

    def _start_munge(self) -> None:
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
        self._wait(lambda: _run(["munge", "-n"], check=False).returncode == 0, 30, "munged")

    def _start_mariadb(self) -> None:
        datadir = self.state / "db" / "data"
        sock = self.state / "db" / "mysqld.sock"
        install_db = shutil.which("mariadb-install-db") or shutil.which("mysql_install_db")
        _run([install_db, "--user=root", f"--datadir={datadir}", "--auth-root-authentication-method=normal",
              "--skip-test-db"])
        server = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
        self._spawn("mariadbd", [server, "--no-defaults", "--user=root", f"--datadir={datadir}",
                                 f"--socket={sock}", "--port=33061", "--bind-address=127.0.0.1",
                                 f"--pid-file={self.state}/db/mariadbd.pid",
                                 "--innodb-buffer-pool-size=64M", "--innodb-lock-wait-timeout=900"])
        client = shutil.which("mariadb") or shutil.which("mysql")
        self._wait(lambda: _run([client, f"--socket={sock}", "-uroot", "-e", "select 1"],
                                check=False).returncode == 0, 60, "MariaDB")
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

    def _wait(self, ready, timeout_s: float, what: str) -> None:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            if ready():
                return
            for name, pid in self.procs.items():
                if not _alive(pid):
                    tail = (self.state / f"{name}.console.log").read_text()[-1500:]
                    raise ClusterUnavailable(f"{name} (pid {pid}) died while waiting for {what}:\n{tail}")
            time.sleep(0.5)
        raise ClusterUnavailable(f"timed out after {timeout_s:.0f} s waiting for {what}")

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
