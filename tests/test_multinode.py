"""The swarm backend across a real three-node swarm: `scripts/nodes up 3` makes three hosts
on this machine (network and UTS namespaces, an engine each, the images loaded), once for
the module, and `scripts/nodes down` removes them afterwards.

One cluster walks through what several machines add: workers on every node, graceful
scale-down removing exactly the retired workers wherever they run, a node killed in the
middle of a computation, the node coming back, and `down` leaving nothing on any node.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

pytest.importorskip("docker", reason="the docker SDK drives the engines")
import docker
from distributed import Client, wait

import clusterctl
from clusterctl import state
from tests.conftest import nodes_left, run_cli
from tests.swarm_node import NODES_FOLDER, nodes_script, several_nodes

pytestmark = pytest.mark.timeout(900)

ROOT = Path(__file__).resolve().parent.parent
LABEL = {"label": "io.clusterctl.cluster=mn"}


@pytest.fixture(scope="module")
def nodes(images):
    """Three engines forming one swarm (node 1 its manager), each with the images; the
    client (and the processes clusterctl starts) talk to node 1 through DOCKER_HOST."""
    if os.geteuid() != 0:
        pytest.skip("MULTINODE TESTS SKIPPED: scripts/nodes needs root (namespaces, a bridge)")
    if NODES_FOLDER.exists():
        pytest.skip(f"MULTINODE TESTS SKIPPED: nodes are up already ({NODES_FOLDER}); not ours")
    with several_nodes(3):
        try:
            yield {
                k: docker.DockerClient(f"unix://{NODES_FOLDER}/node{k}/docker.sock")
                for k in (1, 2, 3)
            }
        finally:
            for name in ("mn", "mk"):
                run_cli("down", "--name", name, check=False)
    assert nodes_left() == []


@pytest.fixture
def downed_afterwards():
    """Call with a cluster's name: it is taken down after the test, also when the test
    failed half-way, so that the module's next tests find the nodes free."""
    names: list[str] = []
    yield names.append
    for name in names:
        run_cli("down", "--name", name, check=False)


def assert_nothing_left(nodes: dict[int, docker.DockerClient], name: str) -> None:
    """No service or secret of cluster ``name`` on the manager; no container or network on
    any node once its engine has acted on the removal (`down` returns when the manager has
    dropped the tasks; each node removes their containers a moment later)."""
    label = {"label": f"io.clusterctl.cluster={name}"}
    assert nodes[1].services.list(filters=label) == []
    assert nodes[1].secrets.list(filters=label) == []
    deadline = time.monotonic() + 30
    for k, engine in nodes.items():
        while left := [c.name for c in engine.containers.list(all=True, filters=label)] + [
            n.name for n in engine.networks.list(filters=label)
        ]:
            assert time.monotonic() < deadline, f"node {k}: {left}"
            time.sleep(0.5)


def node_of(engines: dict[int, docker.DockerClient]) -> dict[str, int]:
    """Each worker of cluster mn by the node whose engine runs its container."""
    found = {}
    for k, engine in engines.items():
        for container in engine.containers.list(filters=LABEL):
            if container.labels.get("io.clusterctl.role") == "worker":
                found[container.attrs["Config"]["Hostname"]] = k
    return found


@pytest.mark.fault("scripts/nodes kill 3: a worker node's engine dies mid-computation")
def test_a_cluster_across_three_nodes(nodes, downed_afterwards):
    import dask
    import dask.dataframe as dd
    import pandas as pd

    downed_afterwards("mn")
    started = time.monotonic()
    run_cli("up", "--backend", "swarm", "--name", "mn", "--workers", "6", timeout=300)
    up_seconds = time.monotonic() - started
    cluster = clusterctl.from_name("mn")
    assert cluster.scheduler_address.startswith("tls://192.168.213.1:")  # the manager's
    report = json.loads(run_cli("status", "--name", "mn", "--json").stdout)
    where = {w["name"]: w["detail"].split(",")[0] for w in report["workers"]}
    assert sorted(set(where.values())) == ["on clnode1", "on clnode2", "on clnode3"], where
    assert sorted(node_of(nodes).values()) == [1, 1, 2, 2, 3, 3]
    elsewhere = next(name for name, k in node_of(nodes).items() if k == 3)  # read through swarm
    log = run_cli("logs", elsewhere, "--name", "mn").stdout
    assert "Registered to:" in log, log

    with Client(cluster) as client:
        client.wait_for_workers(6, timeout=60)
        frame = pd.DataFrame({"k": [i % 7 for i in range(60_000)], "v": range(60_000)})
        df = dd.from_pandas(frame, npartitions=24).persist()
        wait(df)
        expected = frame.groupby("k").v.sum().tolist()

        def sums() -> list[int]:
            return df.groupby("k").v.sum().compute().sort_index().tolist()

        assert sums() == expected
        holders = {w for ws in client.who_has(df).values() for w in ws}
        assert len(holders) == 6, "the data should be on every worker"

        # Graceful scale-down: every key kept; exactly the retired workers' services gone.
        run_cli("scale", "2", "--name", "mn")
        assert all(len(w) == 1 for w in client.who_has(df).values()), "a key was lost"
        assert sums() == expected
        survivors = {w["name"] for w in client.scheduler_info()["workers"].values()}
        workers = {"label": [LABEL["label"], "io.clusterctl.role=worker"]}
        services = nodes[1].services.list(filters=workers)
        assert {s.name for s in services} == survivors
        deadline = time.monotonic() + 30  # each node's engine removes the retired containers
        while set(node_of(nodes)) != survivors:
            assert time.monotonic() < deadline, node_of(nodes)
            time.sleep(0.5)

        # Back to 6 (spread again), then node 3 dies in the middle of a computation.
        run_cli("scale", "6", "--name", "mn")
        client.wait_for_workers(6, timeout=60)
        assert set(node_of(nodes).values()) == {1, 2, 3}
        lost = {name for name, k in node_of(nodes).items() if k == 3}

        def slow_sum(block):  # defined here: pickled by value, the images have no tests
            time.sleep(0.5)
            return block.sum()

        parts = client.compute([dask.delayed(slow_sum)(part) for part in df.v.to_delayed()])
        time.sleep(2)  # under way
        nodes_script("kill", "3")
        killed = time.monotonic()
        assert sum(client.gather(parts)) == frame.v.sum()

        # The lost workers are replaced on nodes 1 and 2 by the supervisor.
        deadline = time.monotonic() + 120
        while True:
            names = {w["name"] for w in client.scheduler_info()["workers"].values()}
            if len(names) == 6 and not names & lost:
                break
            assert time.monotonic() < deadline, f"not replaced in 120 s: {names}"
            time.sleep(0.5)
        replaced_seconds = time.monotonic() - killed
        assert set(node_of({1: nodes[1], 2: nodes[2]})) == names

        # Node 3 back: its engine drops the removed services' containers; no duplicates.
        nodes_script("start", "3")
        deadline = time.monotonic() + 90
        while set(node_of(nodes)) != names:
            assert time.monotonic() < deadline, node_of(nodes)
            time.sleep(1)
        assert len(client.scheduler_info()["workers"]) == 6
        assert sums() == expected
    print(f"up 6 workers on 3 nodes: {up_seconds:.1f} s; replaced in {replaced_seconds:.1f} s")

    run_cli("down", "--name", "mn")
    assert_nothing_left(nodes, "mn")


def test_the_plain_stack_file_spreads_its_workers_over_the_nodes(nodes, images):
    stack, port = "clusterctl-mn-stack", 8790
    env = {**os.environ, "CLUSTERCTL_TAG": images["scheduler"].partition(":")[2]}
    env |= {"CLUSTERCTL_SCHEDULER_PORT": str(port), "CLUSTERCTL_DASHBOARD_PORT": "8791"}
    env |= {"CLUSTERCTL_NOTEBOOK_PORT": "8892"}

    def docker_cli(*args: str) -> str:
        done = subprocess.run(
            ["docker", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    label = {"label": f"com.docker.stack.namespace={stack}"}
    try:
        docker_cli("stack", "deploy", "-c", "deploy/swarm/stack.yml", stack)
        docker_cli("service", "scale", "--detach", f"{stack}_worker=3")
        with Client(f"tcp://192.168.213.1:{port}", timeout=120) as client:
            client.wait_for_workers(3, timeout=120)
            assert client.submit(sum, range(10)).result() == 45
        hosts = {
            k: [
                c.name
                for c in engine.containers.list(filters=label, ignore_removed=True)
                if "_worker." in c.name
            ]
            for k, engine in nodes.items()
        }
        assert all(len(names) == 1 for names in hosts.values()), hosts
        (notebook,) = [
            c
            for c in nodes[1].containers.list(filters=label, ignore_removed=True)
            if "_notebook." in c.name
        ]
        reach = "import distributed; print(len(distributed.Client().scheduler_info()['workers']))"
        assert notebook.exec_run(["python", "-c", reach]).output.decode().strip() == "3"
    finally:
        subprocess.run(["docker", "stack", "rm", stack], env=env, capture_output=True, check=False)
        deadline = time.monotonic() + 60
        while any(
            engine.containers.list(all=True, filters=label, ignore_removed=True)
            for engine in nodes.values()
        ):
            assert time.monotonic() < deadline, "the stack's containers did not go"
            time.sleep(0.5)


@pytest.mark.bad_input
@pytest.mark.parametrize(
    ("placement", "message"),
    [
        ("{constraints: [node.labels.pool==big]}", "no ready node of the swarm meets"),
        ("{max-replicas-per-node: 1}", "3 workers would be all that fit: 3 eligible nodes"),
    ],
)
def test_a_group_that_cannot_fit_the_nodes_is_refused_before_anything_starts(
    nodes, tmp_path, placement, message
):
    spec = tmp_path / "cluster.yaml"
    spec.write_text(f"worker: {{placement: {placement}}}\n")
    refused = run_cli(
        "up", "-f", str(spec), "--backend", "swarm", "--name", "mn0", "--workers", "4", check=False
    )
    assert refused.returncode == 2, refused.stderr
    assert message in refused.stderr
    assert nodes[1].services.list(filters={"label": "io.clusterctl.cluster=mn0"}) == []
    assert nodes[1].networks.list(filters={"label": "io.clusterctl.cluster=mn0"}) == []


@pytest.mark.fault("scripts/nodes kill 1: the swarm's manager, with the scheduler, dies")
def test_a_lost_manager_is_reported_and_nothing_is_forgotten(nodes, downed_afterwards):
    downed_afterwards("mk")
    run_cli("up", "--backend", "swarm", "--name", "mk", "--workers", "1", timeout=300)
    nodes_script("kill", "1")
    try:
        status = run_cli("status", "--name", "mk", check=False)
        assert status.returncode == 1 and "can't be reached" in status.stderr, status.stderr
        assert "no Docker Engine answers at unix://" in status.stderr
        (listed,) = [c for c in json.loads(run_cli("list", "--json").stdout) if c["name"] == "mk"]
        assert listed["status"] == "unreachable"
        again = run_cli("up", "--backend", "swarm", "--name", "mk", check=False)
        assert again.returncode == 2 and "may still run" in again.stderr, again.stderr
        refused = run_cli("down", "--name", "mk", check=False)
        assert refused.returncode == 2 and "cannot reach a Docker Engine" in refused.stderr
        assert state.cluster_dir("mk").exists(), "down forgot a cluster it could not remove"
    finally:
        nodes_script("start", "1")
    deadline = time.monotonic() + 60  # the manager back, with its swarm
    while "can't be reached" in (status := run_cli("status", "--name", "mk", check=False)).stderr:
        assert time.monotonic() < deadline, status.stderr
        time.sleep(1)
    assert "scheduler: not running" in status.stdout, status  # it ran on the manager
    run_cli("down", "--name", "mk")
    assert not state.cluster_dir("mk").exists()
    assert_nothing_left(nodes, "mk")
