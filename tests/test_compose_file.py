"""The top-level docker-compose.yml: the rendering of the default spec, and a working
cluster under plain Compose, with no clusterctl in the loop."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from distributed import Client

from clusterctl.backends.compose import compose_command
from clusterctl.render.compose import render
from clusterctl.spec import ClusterSpec, load_spec
from tests.conftest import free_port, run_cli

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "clusterctl-standalone-test"


def test_the_top_level_file_is_the_rendered_default():
    rendered = run_cli("render", "--backend", "compose").stdout
    assert (ROOT / "docker-compose.yml").read_text() == rendered, (
        "docker-compose.yml is stale: run scripts/render-deploy"
    )


# Strings Compose would interpolate or refuse if the file didn't escape them.
DOLLARS = ["${HOME}", "pa$$word$", "$USER", "a$", "$$", "${CLUSTERCTL_TAG:-x}"]


@pytest.mark.bad_input
@pytest.mark.parametrize("managed", [True, False], ids=["clusterctl", "plain"])
def test_dollars_in_user_strings_reach_compose_as_written(managed, tmp_path):
    """Every user string (env values, mount paths, the spec label) comes out of Compose's
    own reading of the file exactly as written; the renderer's ${CLUSTERCTL_...} stay."""
    folder = tmp_path / "a$b ${HOME}"
    folder.mkdir()
    env = {f"V{i}": value for i, value in enumerate(DOLLARS)}
    spec = load_spec(
        overrides={
            "name": "dollars",
            "backend": "compose",
            "security": {"tls": False},
            "notebook": {"enabled": True},
            "scheduler": {"env": env, "mounts": [f"{folder}:/data"]},
            "worker": {"env": env, "mounts": [f"{folder}:/data:ro"]},
        }
    )
    file = tmp_path / "docker-compose.yml"
    text = yaml.safe_dump(render(spec, managed=managed), sort_keys=False)
    file.write_text(text)
    done = subprocess.run(
        [*compose_command(), "--project-name", "dollars", "--file", str(file), "config"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "CLUSTERCTL_TAG": "tag-from-env", "HOME": "/home/elsewhere"},
    )
    assert done.returncode == 0, done.stderr
    # `config` prints what it read as a Compose file again, so with `$` escaped once more.
    read = yaml.safe_load(done.stdout.replace("$$", "$"))["services"]
    ttl = {"DASK_DISTRIBUTED__SCHEDULER__WORKER_TTL": f"{spec.scheduler.worker_ttl:g}s"}
    assert read["scheduler"]["environment"] == {**ttl, **env}
    assert read["worker"]["environment"] == env
    for service in ("scheduler", "worker"):
        (volume,) = read[service]["volumes"]
        source = volume["source"] if isinstance(volume, dict) else volume.split(":")[0]
        assert source == str(folder)
    if managed:
        label = read["scheduler"]["labels"]["io.clusterctl.spec"]
        assert ClusterSpec.from_dict(json.loads(label)) == spec
    else:  # the renderer's own interpolations still work
        assert read["worker"]["image"] == "clusterctl-worker:tag-from-env"
        notebook_env = read["notebook"]["environment"]
        assert notebook_env["CLUSTERCTL_DASHBOARD_URL"] == "http://127.0.0.1:8787"
        assert notebook_env["DASK_DISTRIBUTED__DASHBOARD__LINK"] == "http://127.0.0.1:8787/status"


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
    assert docker_engine.containers.list(ignore_removed=True, all=True, filters=label) == []
    assert docker_engine.networks.list(filters=label) == []
    assert docker_engine.volumes.list(filters=label) == []


def test_gpu_reservations_pass_compose_s_and_swarm_s_own_checks(tmp_path):
    """A group's GPUs as Compose reserves them (a device request of the nvidia driver) and
    as a swarm stack does (generic resources), each read back by the tool that runs it."""
    from clusterctl.render import stack

    spec = load_spec(
        overrides={
            "backend": "compose",
            "security": {"tls": False},
            "workers": {"gpu": {"count": 1, "gpus": 2}},
        }
    )
    compose_file, stack_file = tmp_path / "compose.yml", tmp_path / "stack.yml"
    compose_file.write_text(yaml.safe_dump(render(spec, managed=False), sort_keys=False))
    stack_file.write_text(yaml.safe_dump(stack.render(spec), sort_keys=False))
    read = subprocess.run(
        [*compose_command(), "--project-name", "gpu", "--file", str(compose_file), "config"],
        capture_output=True,
        text=True,
    )
    assert read.returncode == 0, read.stderr
    [device] = yaml.safe_load(read.stdout)["services"]["gpu"]["deploy"]["resources"][
        "reservations"
    ]["devices"]
    assert (device["driver"], device["count"], device["capabilities"]) == ("nvidia", 2, ["gpu"])
    read = subprocess.run(
        ["docker", "stack", "config", "--compose-file", str(stack_file)],
        capture_output=True,
        text=True,
    )
    assert read.returncode == 0, read.stderr
    reservations = yaml.safe_load(read.stdout)["services"]["gpu"]["deploy"]["resources"]
    assert reservations["reservations"]["generic_resources"] == [
        {"discrete_resource_spec": {"kind": "NVIDIA-GPU", "value": 2}}
    ]
