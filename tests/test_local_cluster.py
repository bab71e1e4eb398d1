"""The local backend end to end, on real scheduler and worker processes."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from importlib.metadata import entry_points
from pathlib import Path

import psutil
import pytest
from distributed import Client, wait

import clusterctl
from clusterctl import state
from clusterctl.backends.base import port_is_free
from clusterctl.discovery import DiscoveredCluster
from clusterctl.errors import UserInputError
from tests.conftest import FREE_PORTS, assert_client_refused, run_cli

pytestmark = pytest.mark.local


def executions(marker_dir: Path) -> int:
    return len(list(marker_dir.iterdir()))


@pytest.fixture(scope="module")
def cluster():
    """One cluster on free ports, shared by the tests of this module (in order)."""
    c = clusterctl.up(name="api", workers=1, port=0, dashboard_port=0)
    yield c
    c.shutdown()


def test_up_gives_a_working_dask_cluster(cluster):
    assert cluster.workers == {"api-worker-1"}
    with Client(cluster) as client:
        assert client.submit(sum, [1, 2, 3]).result() == 6
    assert cluster.dashboard_link.startswith("http://127.0.0.1:")
    assert "api-worker-1" in repr(cluster) or "workers=1" in repr(cluster)


def test_scale_up_then_graceful_scale_down_loses_nothing(cluster, tmp_path):
    def make_chunk(i: int, marker_dir: str):
        """Leaves a file behind each time it runs, so that re-runs can be counted."""
        import uuid
        from pathlib import Path

        import numpy as np

        Path(marker_dir, f"{i}-{uuid.uuid4().hex}").touch()
        return np.full(250_000, i)  # 2 MB

    client = Client(cluster)
    cluster.scale(4)
    cluster.wait_for_workers(4)
    assert len(client.scheduler_info()["workers"]) == 4

    futures = client.map(make_chunk, range(40), marker_dir=str(tmp_path), pure=False)
    wait(futures)
    holders = {w for ws in client.who_has(futures).values() for w in ws}
    assert len(holders) > 1, "the data should be spread over several workers"
    assert executions(tmp_path) == 40

    cluster.scale(1)

    assert len(cluster.workers) == 1
    assert len(client.scheduler_info()["workers"]) == 1
    who_has = client.who_has(futures)
    assert all(len(w) == 1 for w in who_has.values()), "every key is still held somewhere"
    assert sum(int(chunk.sum()) for chunk in client.gather(futures)) == sum(range(40)) * 250_000
    assert executions(tmp_path) == 40, "no task ran twice: the data moved, not recomputed"
    client.close()


def test_from_name_and_connect_in_a_second_process(cluster):
    script = textwrap.dedent("""
        import clusterctl
        c = clusterctl.from_name("api")
        print(sorted(c.workers), c.scheduler_address)
        client = clusterctl.connect("api")
        print(client.submit(lambda: 41 + 1).result())
        client.close(); c.close()
    """)
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    assert cluster.scheduler_address in out
    assert out.strip().endswith("42")
    assert cluster.status.name == "running", "the second process did not stop the cluster"


FOLLOWER = """
import sys, time, clusterctl
cluster = clusterctl.Cluster.from_name(sys.argv[1])
seen = None
print("attached", flush=True)
for _ in range(1200):
    if (n := len(cluster.scheduler_info["workers"])) != seen:
        seen = n
        print(n, time.time(), flush=True)
    time.sleep(0.05)
"""


def test_every_cluster_object_follows_the_scheduler():
    """The creator, its supervisor and a from_name in another process each subscribe to the
    scheduler's worker-status feed; each sees workers come and go within 2 s."""
    cluster = clusterctl.up(name="follow", workers=2, port=0, dashboard_port=0)
    follower = subprocess.Popen(
        [sys.executable, "-c", FOLLOWER, "follow"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert follower.stdout.readline().strip() == "attached"
        assert follower.stdout.readline().split()[0] == "2"
        assert state.read_json(state.cluster_dir("follow") / "supervisor.json")["pid"]
        client = Client(cluster)
        for n in (3, 2):
            cluster.scale(n)
            while len(client.scheduler_info(n_workers=-1)["workers"]) != n:
                time.sleep(0.02)
            registered = time.time()  # the scheduler has the new count, as a client sees it
            while len(cluster.scheduler_info["workers"]) != n:
                assert time.time() - registered < 2, cluster.scheduler_info["workers"].keys()
                time.sleep(0.02)
            assert f"workers={n}," in repr(cluster)
            count, when = follower.stdout.readline().split()
            assert int(count) == n
            assert float(when) - registered < 2
        client.close()
    finally:
        follower.kill()
        follower.wait()
        cluster.shutdown()


def test_dask_ctl_discovery_entry_point(cluster):
    (ep,) = [e for e in entry_points(group="dask_cluster_discovery") if e.name == "clusterctl"]
    discover = ep.load()

    async def collect():
        return [item async for item in discover()]

    found = asyncio.run(collect())
    assert ("api", DiscoveredCluster) in found  # its close() stops: see test_dask_ctl.py
    name, cls = next(item for item in found if item[0] == "api")
    attached = cls.from_name(name, shutdown_on_close=False)
    assert attached.scheduler_address == cluster.scheduler_address
    attached.close()


def test_adapt_in_process_grows_and_shrinks(cluster):
    adaptive = cluster.adapt(minimum=1, maximum=3, interval="200ms", wait_count=2)
    try:
        with Client(cluster) as client:
            futures = client.map(time.sleep, [1.0] * 24, pure=False)
            deadline = time.monotonic() + 60
            while len(cluster.workers) < 2 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert len(cluster.workers) >= 2, "adaptive did not add workers under load"
            client.gather(futures)
            del futures
        deadline = time.monotonic() + 60
        while len(cluster.workers) > 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(cluster.workers) == 1, "adaptive did not scale back down when idle"
    finally:
        adaptive.stop()


@pytest.mark.fault("up twice with the same name")
def test_up_twice_with_the_same_name_is_refused(cluster):
    with pytest.raises(UserInputError, match="a cluster named 'api' already runs"):
        clusterctl.up(name="api", port=0, dashboard_port=0)
    assert cluster.status.name == "running"


def test_shutdown_leaves_no_process_port_or_state():
    c = clusterctl.up(name="gone", workers=2, port=0, dashboard_port=0)
    port = int(c.scheduler_address.rsplit(":", 1)[1])
    dash = int(c.dashboard_link.split(":")[2].split("/")[0])
    pids = [int(m.detail.split()[1]) for m in c.backend.members()]
    c.shutdown()
    assert not state.cluster_dir("gone").exists()
    assert not [
        p
        for p in pids
        if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
    ]
    assert port_is_free("127.0.0.1", port) and port_is_free("127.0.0.1", dash)
    assert "gone" not in [f.name for f in clusterctl.list_clusters()]


def test_a_cluster_whose_processes_all_died_is_reported_stopped_and_up_takes_it_over():
    c = clusterctl.up(name="stale", workers=1, port=0, dashboard_port=0)
    pids = [int(m.detail.split()[1]) for m in c.backend.members()]
    c.close()
    for pid in pids:  # a reboot, or kill -9 of everything
        psutil.Process(pid).kill()
    for pid in pids:
        psutil.Process(pid).wait(10) if psutil.pid_exists(pid) else None
    deadline = time.monotonic() + 20
    while (
        any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in _children_of(pids))
        and time.monotonic() < deadline
    ):
        time.sleep(0.2)
    # Reported, never removed as a side effect of looking: `down` or `up` of the name do.
    (found,) = [f for f in clusterctl.list_clusters() if f.name == "stale"]
    assert found.status == "stopped"
    assert state.cluster_dir("stale").exists()
    again = clusterctl.up(name="stale", workers=1, port=0, dashboard_port=0)
    assert again.workers == {"stale-worker-1"}
    again.shutdown()
    assert not state.cluster_dir("stale").exists()


def _children_of(pids: list[int]) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("CLUSTERCTL_CLUSTER") == "stale":
                found.append(proc)
        except psutil.Error:
            continue
    return found


def test_async_api():
    async def main():
        c = await clusterctl.up(
            name="async", workers=1, port=0, dashboard_port=0, asynchronous=True
        )
        try:
            async with Client(c, asynchronous=True) as client:
                assert await client.submit(lambda: 7) == 7
            await c.scale(2)
            await c.wait_for_workers(2)
            assert len(c.workers) == 2
        finally:
            await c.shutdown()

    asyncio.run(main())


def test_tls_cluster_refuses_clients_without_its_certificates(tmp_path):
    spec = tmp_path / "tls.yaml"
    spec.write_text("security: {tls: true}\nscheduler: {port: 0, dashboard-port: 0}\n")
    c = clusterctl.up(spec, name="tls", workers=1)
    try:
        assert c.scheduler_address.startswith("tls://")
        key = state.cluster_dir("tls") / "tls" / "key.pem"
        assert key.stat().st_mode & 0o077 == 0, "the private key is readable by others"
        assert_client_refused(c.scheduler_address)
        assert_client_refused(c.scheduler_address.replace("tls://", "tcp://"))
        with clusterctl.connect("tls") as client:
            assert client.submit(lambda: 5).result() == 5
    finally:
        c.shutdown()


def test_notebook_needs_its_token_and_points_at_the_cluster():
    c = clusterctl.up(
        name="nb", workers=1, port=0, dashboard_port=0, notebook=True, notebook_port=0
    )
    try:
        url = c.backend.notebook_url()
        base, token = url.split("/lab?token=")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{base}/api/sessions", timeout=10)
        assert refused.value.code == 403
        with urllib.request.urlopen(f"{base}/api/sessions?token={token}", timeout=10) as ok:
            assert ok.status == 200
        (notebook,) = [m for m in c.backend.members() if m.role == "notebook"]
        env = psutil.Process(int(notebook.detail.split()[1])).environ()
        assert env["DASK_SCHEDULER_ADDRESS"] == c.scheduler_address
        assert token not in " ".join(psutil.Process(int(notebook.detail.split()[1])).cmdline())
    finally:
        c.shutdown()


def test_up_with_3_workers_on_2_cores_fits_the_machines_memory():
    """memory-limit auto divides the machine among the workers, as LocalCluster does
    (distributed's own auto would give each 1-thread worker half of a 2-core machine)."""
    from dask.utils import format_bytes
    from distributed.system import MEMORY_LIMIT

    run_cli("up", "--name", "mem-local", "--workers", "3", *FREE_PORTS)
    try:
        with clusterctl.connect("mem-local") as client:
            limits = [w["memory_limit"] for w in client.scheduler_info()["workers"].values()]
        assert len(limits) == 3
        assert sum(limits) <= MEMORY_LIMIT
        assert min(limits) > 0.33 * MEMORY_LIMIT  # each its third, not less
        shown = run_cli("status", "--name", "mem-local").stdout
        assert f"memory limit per worker {format_bytes(limits[0])}" in shown, shown
        assert "(memory-limit: auto)" in shown
    finally:
        run_cli("down", "--name", "mem-local")


def test_an_explicit_limit_over_the_machine_starts_with_a_warning_naming_both():
    from dask.utils import format_bytes
    from distributed.system import MEMORY_LIMIT

    size = MEMORY_LIMIT * 6 // 10 // 2**20 * 2**20  # 0.6 of the machine, in whole MiB
    up = run_cli(
        "up", "--name", "mem-over", "--workers", "2", "--memory-limit", f"{size}B", *FREE_PORTS
    )
    try:
        assert "2 workers" in up.stdout
        assert "MemoryOvercommitWarning" in up.stderr, up.stderr
        assert format_bytes(2 * size) in up.stderr and format_bytes(MEMORY_LIMIT) in up.stderr
        scale = run_cli("scale", "3", "--name", "mem-over")
        assert format_bytes(3 * size) in scale.stderr, scale.stderr
        shown = run_cli("status", "--name", "mem-over").stdout
        assert f"3 workers, memory limit per worker {format_bytes(size)}" in shown, shown
    finally:
        run_cli("down", "--name", "mem-over")
