"""A scheduler that doesn't answer, or that died and whose port a stranger took: every
command facing it ends within seconds with one line, and no client reaches the stranger."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

import clusterctl
from clusterctl import processes, state
from clusterctl.errors import ClusterctlError
from tests.conftest import FREE_PORTS, port_in_use, run_cli

pytestmark = [pytest.mark.local, pytest.mark.slow, pytest.mark.bad_input]


def scheduler_pid(name: str) -> int:
    folder = state.cluster_dir(name)
    (scheduler,) = [
        p for p in processes.find_by_marker(folder) if "dask_scheduler" in str(p.cmdline())
    ]
    return scheduler.pid


@pytest.mark.parametrize("command", [["status"], ["scale", "2"], ["status", "--json"]])
def test_a_stopped_scheduler_is_one_line_within_10_s(command):
    name = f"stopped-{command[0]}-{len(command)}"
    run_cli("up", "--name", name, "--workers", "1", *FREE_PORTS)
    pid = scheduler_pid(name)
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        result = run_cli(*command, "--name", name, check=False, timeout=60)
        took = time.monotonic() - started
        assert result.returncode == 1, result.stdout + result.stderr
        assert took < 10, f"{command} took {took:.1f} s"
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
        assert f"the scheduler of {name!r} does not answer" in lines[0]
    finally:
        os.kill(pid, signal.SIGCONT)
        run_cli("down", name)


def test_connect_refuses_a_dead_scheduler_s_port_taken_by_another_process():
    name = "deadport"
    run_cli("up", "--name", name, "--workers", "1", "--no-tls", *FREE_PORTS)
    address = clusterctl.connect(name).scheduler.address
    port = int(address.rsplit(":", 1)[1])
    os.kill(scheduler_pid(name), signal.SIGKILL)
    stranger = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "distributed.cli.dask_scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--dashboard-address",
            ":0",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not port_in_use(port):
            assert time.monotonic() < deadline, "the stranger's scheduler did not start"
            time.sleep(0.1)
        with pytest.raises(ClusterctlError, match="is not running"):
            clusterctl.connect(name)
        with pytest.raises(ClusterctlError, match="is not running"):
            clusterctl.Cluster.from_name(name)
    finally:
        stranger.terminate()
        stranger.wait(30)
        run_cli("down", name)
