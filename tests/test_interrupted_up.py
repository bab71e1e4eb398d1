"""`clusterctl up` cut short by a signal: each leaves a complete cluster with a running
supervisor, or nothing at all (issue 29: SIGTERM, SIGHUP and SIGINT at 0.5 to 3 s)."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest

from clusterctl import processes, state, supervisor
from clusterctl.backends import survey
from tests.conftest import FREE_PORTS, cli_command, run_cli

pytestmark = [pytest.mark.local, pytest.mark.slow]


@pytest.mark.fault("a signal to `clusterctl up` part-way")
@pytest.mark.parametrize("after", [0.5, 1.0, 2.0, 3.0])
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_signal_to_up_leaves_a_whole_cluster_or_nothing(signum, after):
    name = f"sig-{signum.name.lower()}-{int(after * 10)}"
    up = subprocess.Popen(
        cli_command("up", "--name", name, "--workers", "2", *FREE_PORTS),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(after)
        up.send_signal(signum)
        _, err = up.communicate(timeout=120)
        assert "Traceback" not in err, err
        clusters = {found.name: found for found in survey()}
        if up.returncode == 0:  # the signal came too late to stop it: all of it runs
            assert clusters[name].status == "running"
            assert supervisor.running(name), "a cluster with no supervisor was left"
            assert clusters[name].workers == 2
        else:
            # ended by the signal itself before `up` took it over, or by `up` after undoing
            assert up.returncode in (-signum, 128 + signum), (up.returncode, err)
            assert name not in clusters, f"half a cluster was left: {clusters[name]}"
            assert not state.cluster_dir(name).exists()
            assert not processes.find_by_marker(state.cluster_dir(name))
            if after >= 2:  # the start was under way: its undoing is said
                assert f"interrupted by {signum.name}" in err, err
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
        run_cli("down", name, check=False)
