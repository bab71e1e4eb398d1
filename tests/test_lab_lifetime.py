"""A cluster made by JupyterLab's "+ NEW" ends with its JupyterLab: a real Jupyter server with
dask-labextension, the factory docs/notebooks.md gives, and its own REST route."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import clusterctl
from clusterctl import api, lifetime

pytest.importorskip("dask_labextension", reason="dask-labextension is the sidebar")
pytest.importorskip("jupyterlab", reason="JupyterLab runs the sidebar's server side")

PREFIX = "nlab"  # this file's clusters: nlab-1, nlab-2...
FACTORY = f"""\
labextension:
  factory:
    module: clusterctl
    class: new_cluster
    args: []
    kwargs: {{prefix: {PREFIX}, workers: 1}}
"""
REMOVED_WITHIN = 60.0  # seconds from the stop to no cluster left


@dataclass
class Lab:
    process: subprocess.Popen[bytes]
    port: int
    token: str
    env: dict[str, str]
    log: Path

    def request(self, method: str, path: str) -> dict:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            method=method,
            data=b"" if method == "PUT" else None,
            headers={"Authorization": f"token {self.token}"},
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read() or b"null")


def ours() -> list[str]:
    """This file's clusters, as `clusterctl list` shows them."""
    listed = subprocess.run(
        [sys.executable, "-m", "clusterctl", "list", "--json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return [c["name"] for c in json.loads(listed.stdout) if c["name"].startswith(f"{PREFIX}-")]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def jupyterlab(tmp_path: Path) -> Iterator[Lab]:
    """JupyterLab on a free port with a token, its dask config in a folder of its own (as
    `~/.config/dask/labextension.yaml` would be). Killed, and this file's clusters removed,
    whatever the test did."""
    config = tmp_path / "dask"
    config.mkdir()
    (config / "labextension.yaml").write_text(FACTORY)
    port, token = free_port(), os.urandom(16).hex()
    env = {
        **os.environ,
        "DASK_CONFIG": str(config),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter"),
    }
    command = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--allow-root",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={tmp_path}",
    ]
    log = tmp_path / "jupyterlab.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
    lab = Lab(process, port, token, env, log)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                lab.request("GET", "/api/status")
                break
            except OSError:
                assert process.poll() is None, f"JupyterLab exited:\n{log.read_text()}"
                assert time.monotonic() < deadline, f"JupyterLab did not answer:\n{log.read_text()}"
                time.sleep(0.5)
        yield lab
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
        left = [name for name in ours() if clusterctl.down(name)]
        assert not left, f"clusters left behind: {left}"


def stop_with_sigterm(lab: Lab) -> None:
    lab.process.send_signal(signal.SIGTERM)


def stop_with_sigint(lab: Lab) -> None:
    """Ctrl-C: with no terminal (as here, or under a service manager) Jupyter stops at once;
    at a terminal it asks, and a second Ctrl-C stops it."""
    lab.process.send_signal(signal.SIGINT)


def stop_with_jupyter_server_stop(lab: Lab) -> None:
    """`jupyter server stop PORT`: /api/shutdown, then SIGTERM after 5 s, SIGKILL after 10."""
    subprocess.run(
        [sys.executable, "-m", "jupyter_server", "stop", str(lab.port)],
        env=lab.env,
        check=True,
        timeout=60,
    )


@pytest.mark.local
@pytest.mark.parametrize(
    "stop",
    [
        stop_with_sigterm,
        pytest.param(stop_with_sigint, marks=pytest.mark.slow),
        pytest.param(stop_with_jupyter_server_stop, marks=pytest.mark.slow),
    ],
)
def test_a_new_cluster_ends_with_its_jupyterlab(jupyterlab, stop):
    """dask-labextension's own route for "+ NEW" (PUT /dask/clusters with the token) makes
    nlab-1; once the Jupyter server is stopped, `clusterctl list` shows it no more."""
    model = jupyterlab.request("PUT", "/dask/clusters")
    assert model["workers"] == 1, model
    assert model["name"] == "Cluster 1"  # dask-labextension 7 names it, not the factory
    assert ours() == [f"{PREFIX}-1"]
    assert [m["id"] for m in jupyterlab.request("GET", "/dask/clusters")] == [model["id"]]

    stop(jupyterlab)
    stopped = time.monotonic()
    jupyterlab.process.wait(timeout=REMOVED_WITHIN)
    while (left := ours()) and time.monotonic() - stopped < REMOVED_WITHIN:
        time.sleep(0.5)
    assert not left, f"still running {REMOVED_WITHIN:g} s after the stop: {left}"
    log = jupyterlab.log.read_text()
    assert "Traceback" not in log, log


def test_new_cluster_s_default_idle_timeout():
    """A "+ NEW" cluster whose JupyterLab was killed outright (nothing runs at exit) goes
    when idle: new_cluster's default idle-timeout, unless the spec or the caller sets one
    (None: none). up() keeps the spec's (none by default)."""
    import dask

    from clusterctl.errors import SpecError

    assert api.NEW_CLUSTER_IDLE_TIMEOUT == "30m"
    assert api.new_cluster_spec(PREFIX).idle_timeout == 30 * 60
    assert api.new_cluster_spec(PREFIX, idle_timeout="2h").idle_timeout == 2 * 3600
    assert api.new_cluster_spec(PREFIX, idle_timeout=None).idle_timeout is None
    with dask.config.set({"clusterctl.idle-timeout": "1h"}):
        assert api.new_cluster_spec(PREFIX).idle_timeout == 3600
    assert api.build_spec(name="nlab-up").idle_timeout is None
    with pytest.raises(SpecError, match="idle-timeout"):
        api.new_cluster_spec(PREFIX, idle_timeout="soon")


@pytest.mark.local
@pytest.mark.slow
def test_a_new_cluster_is_removed_when_its_process_exits_and_only_then(tmp_path):
    """Exit of the process that made it removes a new_cluster(); closing it first leaves
    nothing for the exit to do; a cluster of the same name made since by someone else
    (`down`, then another `new_cluster`) is not touched; nor is one made by up()."""
    script = tmp_path / "make.py"
    script.write_text(
        "import clusterctl\n"
        f"kept = clusterctl.up(name='{PREFIX}-up', workers=0, port=0, dashboard_port=0)\n"
        f"gone = clusterctl.new_cluster(prefix='{PREFIX}', workers=0)\n"
        f"closed = clusterctl.new_cluster(prefix='{PREFIX}', workers=0)\n"
        "closed.close()\n"
        "print(gone.name, closed.name, flush=True)\n"
    )
    try:
        made = subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, timeout=120
        )
        assert made.returncode == 0, made.stderr
        assert made.stdout.split() == [f"{PREFIX}-1", f"{PREFIX}-2"]
        assert ours() == [f"{PREFIX}-up"]

        # One this process owns, removed (by `down`) and its name taken by another process.
        cluster = clusterctl.new_cluster(prefix=PREFIX, workers=0)
        assert lifetime.owned() == [cluster.name]
        clusterctl.down(cluster.name)
        cluster.shutdown_on_close = False  # now only a disconnected object
        cluster.close()
        up = [
            "up",
            "--name",
            cluster.name,
            "--workers",
            "0",
            "--port",
            "0",
            "--dashboard-port",
            "0",
        ]
        taken = subprocess.run(
            [sys.executable, "-m", "clusterctl", *up],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert taken.returncode == 0, taken.stderr
        lifetime.remove_owned()  # as at this process's exit
        assert sorted(ours()) == sorted([f"{PREFIX}-up", cluster.name])
        assert lifetime.owned() == []
    finally:
        for name in ours():
            clusterctl.down(name)
