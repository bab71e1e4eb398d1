"""The top-level docker-compose.yml: the rendering of the default spec, and a working
cluster under plain Compose, with no clusterctl in the loop."""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from distributed import Client

from clusterctl.backends.compose import compose_command
from tests.conftest import free_port, run_cli

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "clusterctl-standalone-test"


def test_the_top_level_file_is_the_rendered_default():
    rendered = run_cli("render", "--backend", "compose").stdout
    assert (ROOT / "docker-compose.yml").read_text() == rendered, (
        "docker-compose.yml is stale: run `clusterctl render --backend compose > "
        "docker-compose.yml`"
    )


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_plain_compose_up_with_three_workers(images, docker_engine):
    ports = {what: free_port() for what in ("SCHEDULER", "DASHBOARD", "NOTEBOOK")}
    env = {**os.environ, **{f"CLUSTERCTL_{k}_PORT": str(v) for k, v in ports.items()}}
    compose = [*compose_command(), "--project-name", PROJECT, "--file", "docker-compose.yml"]

    def run(*args: str) -> str:
        done = subprocess.run(
            [*compose, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr
        return done.stdout + done.stderr

    try:
        run("up", "-d", "--scale", "worker=3")
        with Client(f"tcp://127.0.0.1:{ports['SCHEDULER']}", timeout=30) as client:
            client.wait_for_workers(3, timeout=120)
            assert len(client.scheduler_info()["workers"]) == 3
            assert client.submit(sum, range(10)).result() == 45
        health = f"http://127.0.0.1:{ports['DASHBOARD']}/health"
        with urllib.request.urlopen(health, timeout=10) as r:
            assert r.read() == b"ok"
        deadline = time.monotonic() + 60  # JupyterLab prints its tokenised URL when it listens
        while "/lab?token=" not in (logs := run("logs", "notebook")):
            assert time.monotonic() < deadline, logs
            time.sleep(1)
        refused = f"http://127.0.0.1:{ports['NOTEBOOK']}/api/sessions"
        with pytest.raises(urllib.error.HTTPError, match="403"):
            urllib.request.urlopen(refused, timeout=10)
    finally:
        run("down", "--volumes", "--timeout", "5")
    label = {"label": f"com.docker.compose.project={PROJECT}"}
    assert docker_engine.containers.list(all=True, filters=label) == []
    assert docker_engine.networks.list(filters=label) == []
    assert docker_engine.volumes.list(filters=label) == []
