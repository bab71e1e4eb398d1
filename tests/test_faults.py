"""The fault suite: faults injected into real clusters, each of which must be survived.

Every test here injects one fault (its ``fault`` marker says which); the session's summary
line counts them, with the bad inputs of test_bad_input.py and the objects of ours left
on the machine afterwards (see conftest.py).
"""

from __future__ import annotations

import os
import signal
import textwrap
import time

import dask
import numpy as np
import pytest
from distributed import Client

import clusterctl
from clusterctl import state
from clusterctl.cluster import destroy_cluster
from tests.conftest import run_cli

pytestmark = pytest.mark.timeout(900)


def registered(client: Client) -> set[str]:
    return {w["name"] for w in client.scheduler_info()["workers"].values()}


def wait_for(condition, timeout: float, what: str) -> float:
    """Seconds until ``condition()`` holds; fails after ``timeout``."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout, f"not within {timeout} s: {what}"
        time.sleep(0.2)
    return time.monotonic() - start


@pytest.fixture(
    scope="module",
    params=[
        pytest.param("local", marks=pytest.mark.local),
        pytest.param("docker", marks=pytest.mark.images),
    ],
)
def cluster(request, tmp_path_factory):
    if request.param == "docker":
        request.getfixturevalue("images")
    spec = tmp_path_factory.mktemp("spec") / "cluster.yaml"
    spec.write_text(
        textwrap.dedent(f"""
        backend: {request.param}
        scheduler: {{port: 0, dashboard-port: 0, worker-ttl: 10}}
        worker: {{count: 2, memory-limit: 400MB, death-timeout: 10}}
        cut-off: 5
        """)
    )
    c = clusterctl.up(spec, name=f"fault-{request.param}")
    yield c
    c.shutdown()


def kill_worker(cluster, name: str) -> None:
    """``kill -9`` a worker: its process group, or its container."""
    if cluster.spec.backend == "docker":
        cluster.backend.client.containers.get(name).kill()
    else:  # the nanny and its worker: the process group of a detached `dask worker`
        member = next(m for m in cluster.backend.members() if m.name == name)
        os.killpg(int(member.detail.split()[1]), signal.SIGKILL)


@pytest.mark.fault("kill -9 a worker during a computation")
def test_killed_worker_mid_computation_result_right_and_replaced_within_10s(cluster):
    with Client(cluster) as client:
        client.wait_for_workers(2)
        futures = client.map(lambda i: (time.sleep(0.3), i * i)[1], range(30), pure=False)
        time.sleep(1)
        victim = sorted(registered(client))[0]
        kill_worker(cluster, victim)
        assert sum(client.gather(futures)) == sum(i * i for i in range(30))
        took = wait_for(
            lambda: len(registered(client) - {victim}) == 2, 10, "a replacement registered"
        )
        print(f"replaced in {took:.1f} s")


@pytest.mark.fault("a worker pushed past its memory limit")
def test_worker_past_its_memory_limit_is_restarted_and_the_error_is_clear(cluster):
    with Client(cluster) as client:
        client.wait_for_workers(2)
        before = registered(client)

        def hog() -> int:
            blocks = [np.ones(50 * 2**20 // 8) for _ in range(40)]  # 2 GB in 50 MB steps
            return len(blocks)

        with pytest.raises(Exception, match=r"KilledWorker|killed|memory") as err:
            client.submit(hog, pure=False).result(timeout=300)
        print("error:", type(err.value).__name__, str(err.value)[:200])
        wait_for(lambda: len(registered(client)) == 2, 60, "two workers again")
        assert client.submit(sum, [1, 2], pure=False).result() == 3
        print("workers before/after:", sorted(before), sorted(registered(client)))


@pytest.mark.fault("the scheduler killed")
def test_killed_scheduler_is_reported_workers_leave_and_down_cleans(images, docker_engine):
    c = clusterctl.up(name="fault-sched", backend="docker", workers=2, port=0, dashboard_port=0)
    c.close()
    docker_engine.containers.get("fault-sched-scheduler").kill()
    status = run_cli("status", "--name", "fault-sched", check=False)
    if status.returncode != 2:  # 2: already gone, all its workers left and were cleaned
        assert status.returncode == 1 and "scheduler: not running" in status.stdout
    label = {"label": "io.clusterctl.cluster=fault-sched"}

    def running() -> list:
        return docker_engine.containers.list(ignore_removed=True, filters=label)

    # A worker leaves at once when it sees the connection break; one that misses it (its
    # nanny restarted it, say) gives up after the spec's death-timeout, 60 s.
    try:
        took = wait_for(lambda: not running(), 60 + 30, "workers left after their scheduler died")
    except AssertionError:
        for container in running():
            print(container.name, container.status, container.logs(tail=30).decode())
        raise
    print(f"workers left {took:.1f} s after their scheduler was killed")
    run_cli("down", "fault-sched")
    assert docker_engine.containers.list(ignore_removed=True, all=True, filters=label) == []
    assert docker_engine.networks.list(filters=label) == []


@pytest.mark.fault("a worker's network disconnected")
@pytest.mark.parametrize("cluster", ["docker"], indirect=True)
@pytest.mark.images
def test_a_worker_cut_off_from_the_network_is_replaced(cluster):
    engine = cluster.backend.client
    with Client(cluster) as client:
        client.wait_for_workers(2)
        ttl = client.run_on_scheduler(lambda: dask.config.get("distributed.scheduler.worker-ttl"))
        assert ttl == "10s", "the spec's scheduler.worker-ttl did not reach the scheduler"
        victim = sorted(registered(client))[0]
        engine.networks.get(f"clusterctl-{cluster.name}").disconnect(victim, force=True)
        started = time.monotonic()  # a command's version check must not wait for the victim
        assert "scheduler" in run_cli("status", "--name", cluster.name).stdout
        print(f"status with a worker cut off took {time.monotonic() - started:.1f} s")
        assert time.monotonic() - started < 25, "status waited for the cut-off worker (30 s)"

        def replaced() -> bool:
            names = {c.name for c in engine.containers.list(ignore_removed=True, all=True)}
            return victim not in names and len(registered(client) - {victim}) == 2

        took = wait_for(replaced, 240, "the cut-off worker replaced")
        print(f"cut-off worker replaced in {took:.1f} s")
        assert client.submit(sum, [1, 2], pure=False).result() == 3


@pytest.mark.fault("down while a scale-down is still removing a worker")
def test_down_racing_a_scale_down_leaves_nothing_and_raises_nothing(images, docker_engine):
    c = clusterctl.up(name="fault-race", backend="docker", workers=2, port=0, dashboard_port=0)
    c.close()
    backend = c.backend
    # The race an adaptive scale-down can run with `down`, made certain: `down` lists the
    # containers, then the scale-down removes one of them before `down` gets to it.
    listed = backend._containers()
    backend.stop_workers([sorted(m.name for m in backend.members() if m.role == "worker")[0]])
    backend._containers = lambda: listed
    label = {"label": "io.clusterctl.cluster=fault-race"}
    try:
        destroy_cluster(backend)
        assert docker_engine.containers.list(ignore_removed=True, all=True, filters=label) == []
        assert docker_engine.networks.list(filters=label) == []
    finally:  # if it failed, what it left must not outlive the test
        for container in docker_engine.containers.list(
            ignore_removed=True, all=True, filters=label
        ):
            container.remove(force=True)
        for network in docker_engine.networks.list(filters=label):
            network.remove()
        state.remove("fault-race")
