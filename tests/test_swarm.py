"""The swarm backend and deploy/swarm/stack.yml on a real single-node swarm.

The module puts the engine in swarm mode when it isn't (``docker swarm init`` on loopback)
and takes it out again afterwards, leaving the engine as it found it.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("docker", reason="the docker SDK drives the engine")
import docker.errors
from distributed import Client, wait

import clusterctl
from clusterctl import state
from clusterctl.backends.base import port_is_free
from tests.conftest import assert_client_refused, free_port, run_cli
from tests.swarm_node import single_node_swarm

pytestmark = pytest.mark.timeout(1800)

ROOT = Path(__file__).resolve().parent.parent
STACK = "clusterctl-stack-test"


def ours(engine, name: str) -> list[str]:
    """Every service, container, network and secret of cluster ``name``, by label."""
    label = {"label": f"io.clusterctl.cluster={name}"}
    return (
        [s.name for s in engine.services.list(filters=label)]
        + [c.name for c in engine.containers.list(ignore_removed=True, all=True, filters=label)]
        + [n.name for n in engine.networks.list(filters=label)]
        + [s.name for s in engine.secrets.list(filters=label)]
    )


@pytest.fixture(scope="module")
def swarm(docker_engine, images):
    """The engine as a single-node swarm manager; as it was before, afterwards.

    Before initialising it, ``up --backend swarm`` is tried (and must be refused)."""
    refusal = None
    if docker_engine.info()["Swarm"]["LocalNodeState"] != "active":
        refusal = run_cli("up", "--backend", "swarm", "--name", "s0", check=False)
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(single_node_swarm(docker_engine))
        except docker.errors.APIError as exc:  # an engine that can't do swarm mode: loudly
            pytest.skip(f"SWARM TESTS SKIPPED: `docker swarm init` failed here: {exc}")
        yield {"refusal": refusal}


def test_up_is_refused_when_the_engine_is_not_a_swarm_manager(swarm):
    refusal = swarm["refusal"]
    if refusal is None:
        pytest.skip("the engine was already a swarm manager: nothing to refuse")
    assert refusal.returncode == 2, refusal.stderr
    assert "swarm manager" in refusal.stderr and "docker swarm init" in refusal.stderr
    assert not state.cluster_dir("s0").exists()


@pytest.mark.fault("docker kill a swarm worker")
def test_walk_through_scale_keeps_persisted_data_and_down_leaves_nothing(swarm, docker_engine):
    import dask.array as da

    if not (port_is_free("127.0.0.1", 8786) and port_is_free("127.0.0.1", 8787)):
        pytest.skip("ports 8786/8787 are taken on this machine by something else")
    run_cli("up", "--backend", "swarm", "--name", "s1", "--workers", "2")
    try:
        cluster = clusterctl.from_name("s1")
        assert cluster.scheduler_address.startswith("tls://127.0.0.1:8786")
        assert_client_refused(cluster.scheduler_address)
        with urllib.request.urlopen("http://127.0.0.1:8787/health", timeout=10) as r:
            assert r.read() == b"ok"
        with pytest.raises(urllib.error.HTTPError, match="404"):  # no HTTP API that changes things
            urllib.request.urlopen("http://127.0.0.1:8787/api/v1/retire_workers", timeout=10)
        with Client(cluster) as client:
            assert len(client.scheduler_info()["workers"]) == 2
            run_cli("scale", "4", "--name", "s1")
            report = json.loads(run_cli("status", "--name", "s1", "--json").stdout)
            assert [w["state"] for w in report["workers"]] == ["running"] * 4
            client.wait_for_workers(4, timeout=60)
            assert "supervising s1" in run_cli("logs", "supervisor", "--name", "s1").stdout

            x = da.random.RandomState(0).random((4000, 4000), chunks=(500, 500)).persist()
            wait(x)
            total = x.sum().compute()
            holders = {w for ws in client.who_has(x).values() for w in ws}
            assert len(holders) > 1, "the data should be spread over the workers"

            run_cli("scale", "1", "--name", "s1")
            assert len(client.scheduler_info()["workers"]) == 1
            assert all(len(w) == 1 for w in client.who_has(x).values()), "a key was lost"
            assert x.sum().compute() == total
            workers = {"label": ["io.clusterctl.cluster=s1", "io.clusterctl.role=worker"]}
            services = docker_engine.services.list(filters=workers)
            survivor = {w["name"] for w in client.scheduler_info()["workers"].values()}
            assert [s.name for s in services] == list(survivor), "not the worker retired"
            tasks = [t for t in services[0].tasks() if t["DesiredState"] == "running"]

            # A killed worker is replaced (swarm restarts its task under on-failure).
            container = docker_engine.containers.get(
                tasks[0]["Status"]["ContainerStatus"]["ContainerID"]
            )
            container.kill()
            deadline = time.monotonic() + 10
            while not [c for c in _workers(docker_engine, "s1") if c.id != container.id]:
                assert time.monotonic() < deadline, "swarm did not restart the worker in 10 s"
                time.sleep(0.2)
            client.wait_for_workers(1, timeout=30)
            assert x.sum().compute() == total  # recomputed from its graph
    finally:
        run_cli("down", "--name", "s1")
    assert ours(docker_engine, "s1") == []


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.read() == b"ok"
    except OSError:
        return False


def _workers(engine, name: str) -> list:
    """The running worker containers of cluster ``name``."""
    labels = [f"io.clusterctl.cluster={name}", "io.clusterctl.role=worker"]
    return engine.containers.list(ignore_removed=True, filters={"label": labels})


def test_services_are_unprivileged_and_secrets_stay_out_of_inspect(swarm, docker_engine):
    cluster = clusterctl.up(
        name="s2",
        backend="swarm",
        workers=1,
        port=0,
        dashboard_port=0,
        notebook=True,
        notebook_port=0,
    )
    try:
        services = docker_engine.services.list(filters={"label": "io.clusterctl.cluster=s2"})
        assert sorted(s.name for s in services) == ["s2-notebook", "s2-scheduler", "s2-worker-1"]
        key = (state.cluster_dir("s2") / "tls" / "key.pem").read_text().strip().splitlines()[1]
        token = (state.cluster_dir("s2") / "notebook" / "token").read_text()
        for service in services:
            spec = service.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]
            assert spec["User"] == "1000:0" or not spec["User"].startswith("0")
            assert spec["CapabilityDrop"] == ["ALL"]
            assert key not in json.dumps(service.attrs) and token not in json.dumps(service.attrs)
        url = cluster.backend.notebook_url()
        base, token = url.split("/lab?token=")
        with urllib.request.urlopen(f"{base}/api/sessions?token={token}", timeout=10) as ok:
            assert ok.status == 200
        with pytest.raises(urllib.error.HTTPError, match="403"):
            urllib.request.urlopen(f"{base}/api/sessions", timeout=10)
        with Client(cluster) as client:
            assert client.submit(lambda: 2 + 2).result() == 4
        health = cluster.dashboard_link.replace("/status", "/health")  # the published port
        with urllib.request.urlopen(health, timeout=10) as r:
            assert r.read() == b"ok"
    finally:
        cluster.shutdown()
    assert ours(docker_engine, "s2") == []


def test_the_stack_file_is_the_rendered_default():
    rendered = run_cli("render", "--backend", "swarm").stdout
    assert (ROOT / "deploy/swarm/stack.yml").read_text() == rendered, (
        "deploy/swarm/stack.yml is stale: run scripts/render-deploy"
    )


def test_docker_stack_deploy_runs_the_stack_file_as_it_is(swarm, docker_engine, images):
    ports = {what: free_port() for what in ("SCHEDULER", "DASHBOARD", "NOTEBOOK")}
    tag = images["scheduler"].partition(":")[2]
    env = {
        **os.environ,
        "CLUSTERCTL_TAG": tag,
        **{f"CLUSTERCTL_{k}_PORT": str(v) for k, v in ports.items()},
    }

    def docker(*args: str) -> str:
        done = subprocess.run(
            ["docker", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr
        return done.stdout + done.stderr

    label = {"label": f"com.docker.stack.namespace={STACK}"}
    try:
        docker("stack", "deploy", "-c", "deploy/swarm/stack.yml", STACK)
        docker("service", "scale", "--detach", f"{STACK}_worker=3")
        health = f"http://127.0.0.1:{ports['DASHBOARD']}/health"
        deadline = time.monotonic() + 120  # until then the port may accept and reset
        while not _answers(health):
            assert time.monotonic() < deadline, "the stack's scheduler never answered"
            time.sleep(0.5)
        with Client(f"tcp://127.0.0.1:{ports['SCHEDULER']}", timeout=60) as client:
            client.wait_for_workers(3, timeout=120)
            names = {w["name"] for w in client.scheduler_info()["workers"].values()}
            assert names == {f"{STACK}_worker-{slot}" for slot in (1, 2, 3)}
            assert client.submit(sum, range(10)).result() == 45
        deadline = time.monotonic() + 90  # JupyterLab prints its tokenised URL when it listens
        while "/lab?token=" not in (logs := docker("service", "logs", f"{STACK}_notebook")):
            assert time.monotonic() < deadline, logs
            time.sleep(1)
    finally:
        docker("stack", "rm", STACK)
        deadline = time.monotonic() + 60
        while docker_engine.containers.list(ignore_removed=True, all=True, filters=label):
            assert time.monotonic() < deadline, "the stack's containers did not go"
            time.sleep(0.5)
        while docker_engine.networks.list(filters=label):
            assert time.monotonic() < deadline, "the stack's network did not go"
            time.sleep(0.5)
    assert docker_engine.services.list(filters=label) == []


@pytest.mark.fault("destroy died after removing the services, before the secrets and network")
def test_a_network_and_secrets_left_without_services_are_found_and_removed(swarm, docker_engine):
    labels = {"io.clusterctl.cluster": "s3", "io.clusterctl.backend": "swarm"}
    docker_engine.networks.create("clusterctl-s3", driver="overlay", labels=labels)
    docker_engine.secrets.create(name="s3-tls-key.pem", data=b"x", labels=labels)
    try:
        listed = json.loads(run_cli("list", "--json").stdout)
        (found,) = [c for c in listed if c["name"] == "s3"]
        assert (found["backend"], found["status"]) == ("swarm", "broken")
        assert "network clusterctl-s3" in found["problem"]
        assert "secret s3-tls-key.pem" in found["problem"]
        run_cli("down", "s3")
    finally:
        run_cli("down", "s3", check=False)
    assert ours(docker_engine, "s3") == []
