"""The real-SLURM fixture (tests/slurm_cluster.py) without starting SLURM: its configuration does not depend
on the host name resolving, and a start-up that fails shows the daemons' own error output."""
import socket
import time

import pytest

from slurm_cluster import ADDR, NODE, Cluster, ClusterUnavailable, _answers, _slurm_conf, _slurmdbd_conf


def test_configuration_addresses_every_daemon_by_ip_not_by_host_name(tmp_path):
    slurm_conf, dbd_conf = _slurm_conf(tmp_path), _slurmdbd_conf(tmp_path)
    assert ADDR == "127.0.0.1"
    assert "SlurmctldHost=localhost(127.0.0.1)" in slurm_conf
    assert "AccountingStorageHost=127.0.0.1" in slurm_conf
    assert f"NodeName={NODE} NodeAddr=127.0.0.1 " in slurm_conf
    assert "DbdAddr=127.0.0.1" in dbd_conf and "StorageHost=127.0.0.1" in dbd_conf
    host = socket.gethostname().split(".")[0]
    if host != "localhost":
        assert host not in slurm_conf and host not in dbd_conf


def test_a_probe_that_never_succeeds_reports_its_own_message_and_the_daemon_logs(tmp_path):
    cluster = Cluster(state=tmp_path)
    (tmp_path / "slurmdbd.log").write_text("[..] error: getaddrinfo() failed: Name or service not known\n")
    probe = _answers(["sh", "-c", "echo 'sacctmgr: error: Problem talking to the database' >&2; exit 1"])
    t0 = time.monotonic()
    with pytest.raises(ClusterUnavailable) as err:
        cluster._wait(probe, 1.0, "slurmdbd to answer sacctmgr")
    message = str(err.value)
    assert time.monotonic() - t0 < 10
    assert "timed out after 1 s waiting for slurmdbd to answer sacctmgr" in message
    assert "sacctmgr: error: Problem talking to the database" in message  # the command's own answer
    assert "Name or service not known" in message and "slurmdbd.log" in message  # the daemon's log


def test_a_daemon_that_dies_during_start_up_is_reported_at_once_with_its_output(tmp_path):
    cluster = Cluster(state=tmp_path)
    cluster._spawn("slurmctld", ["sh", "-c", "echo 'fatal: Unable to determine this slurmd hostname'; exit 1"])
    t0 = time.monotonic()
    with pytest.raises(ClusterUnavailable) as err:
        cluster._wait(_answers(["false"]), 60.0, "slurmctld to answer scontrol ping")
    assert time.monotonic() - t0 < 30  # not the full timeout: the condition is "alive", polled
    assert "slurmctld (pid" in str(err.value) and "died" in str(err.value)
    assert "Unable to determine this slurmd hostname" in str(err.value)
