"""Cluster figures per backend, each against ``distributed.LocalCluster`` in the same run.

- cold start: scheduler + N workers, from nothing to all registered;
- scale 1→8 (until all 8 run) and graceful 8→1 (until one is left);
- throughput: tiny tasks per second on 2 one-thread workers; a dask.array reduction;
- transfer: one worker fetching another's array (MB/s);
- ``clusterctl --help``, and ``clusterctl status`` of each backend's cluster;
- where a container cold start's time goes, read off the engine's own records.

LocalCluster gets the same shape: one-thread worker processes behind nannies. Tasks are
builtins (pickled by reference), as code shipped to containers must be importable there.
Every backend runs with its defaults (TLS on); local and docker are measured again with TLS
off, to show what it costs. The
swarm backend is measured on a single-node swarm made for the run when the engine is not
in one (and left again afterwards).
"""

from __future__ import annotations

import contextlib
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import numpy as np
from distributed import Client, LocalCluster

BASELINE = "LocalCluster"
CONTAINER_BACKENDS = ("docker", "compose", "swarm")
PROFILE_WORKERS = 4
TLS_COST_WORKERS = 4  # the cold start measured again with TLS off


def run(quick: bool = False) -> dict[str, Any]:
    sizes = [2] if quick else [1, 2, 4, 8]
    scale_to = 4 if quick else 8
    repeats = 1 if quick else 3
    tasks = 2_000 if quick else 20_000
    megabytes = 50 if quick else 200
    side = 2000 if quick else 4000  # of the reduction's square array
    results: dict[str, Any] = {
        "repeats": repeats,
        "tasks": tasks,
        "transfer_mb": megabytes,
        "reduction_side": side,
        "sizes": sizes,
        "scale_to": scale_to,
        "profile_workers": PROFILE_WORKERS,
    }
    with contextlib.ExitStack() as stack:
        backends = available_backends(stack)
        results["backends"] = [BASELINE, *backends]
        for backend in [BASELINE, *backends]:
            print(f"-- {backend}", flush=True)
            figures: dict[str, Any] = {}
            for n in sizes:
                cold = lambda n=n, b=backend: cold_start(b, n)  # noqa: E731
                figures[f"cold_start_{n}_s"] = measure(repeats, cold)
            up, down = zip(*(scale_up_down(backend, scale_to) for _ in range(repeats)), strict=True)
            figures[f"scale_1_to_{scale_to}_s"] = summary(up)
            figures[f"scale_{scale_to}_to_1_s"] = summary(down)
            with cluster(backend, 2) as client:
                client.submit(int, 1).result()  # warm connections
                figures["tasks_per_s"] = measure(repeats, lambda: throughput(client, tasks))
                figures["array_reduction_s"] = measure(repeats, lambda: reduction(client, side))
                figures["transfer_mb_per_s"] = measure(repeats, lambda: transfer(client, megabytes))
                if backend != BASELINE:
                    status = lambda b=backend: timed_command("status", "--name", f"bench-{b}")  # noqa: E731
                    figures["status_s"] = measure(repeats, status)
            results[backend] = figures
            for key, value in figures.items():
                print(f"   {key:24} {value['median']:10.3f}  (spread {value['spread']:.3f})")
        results["ratios"] = ratios(results, backends)
        results["help_s"] = measure(repeats, lambda: timed_command("--help"))
        print(f"   clusterctl --help         {results['help_s']['median']:.3f} s")
        results["startup_profile"] = {
            backend: startup_profile(backend, PROFILE_WORKERS)
            for backend in [BASELINE, *backends]
            if backend in (BASELINE, *CONTAINER_BACKENDS)
        }
        if "docker" in backends:
            results["imports"] = import_times()
        n = TLS_COST_WORKERS if TLS_COST_WORKERS in sizes else sizes[-1]
        results["without_tls"] = {  # what TLS costs: the same figures with it off
            backend: without_tls(backend, repeats, n, tasks, megabytes)
            for backend in ("local", "docker")
            if backend in backends
        }
    return results


def without_tls(backend: str, repeats: int, n: int, tasks: int, megabytes: int) -> dict:
    """Cold start of ``n`` workers, throughput and transfer of ``backend`` with TLS off."""
    print(f"-- {backend} without TLS", flush=True)
    figures = {f"cold_start_{n}_s": measure(repeats, lambda: cold_start(backend, n, tls=False))}
    with cluster(backend, 2, tls=False) as client:
        client.submit(int, 1).result()  # warm connections
        figures["tasks_per_s"] = measure(repeats, lambda: throughput(client, tasks))
        figures["transfer_mb_per_s"] = measure(repeats, lambda: transfer(client, megabytes))
    return figures


def available_backends(stack: contextlib.ExitStack) -> list[str]:
    """local, and the container backends the engine here can run (swarm: entered on stack)."""
    backends = ["local"]
    try:
        import docker

        engine = docker.from_env()
        engine.ping()
        from clusterctl.engine import image_exists
        from clusterctl.images import default_image

        if not image_exists(engine, default_image("worker")):
            raise RuntimeError(f"no image {default_image('worker')}: clusterctl image build")
        backends.append("docker")
        from clusterctl.backends.compose import compose_command

        compose_command()
        backends.append("compose")
        from tests.swarm_node import single_node_swarm

        stack.enter_context(single_node_swarm(engine))
        backends.append("swarm")
    except Exception as exc:  # no engine, no images, no Compose, no swarm: measure the rest
        print(f"   (container backends after {backends[-1]} skipped: {exc})", flush=True)
    return backends


@contextmanager
def cluster(backend: str, n: int, tls: bool | None = None) -> Iterator[Client]:
    """A client of a fresh cluster of ``n`` one-thread workers, removed afterwards."""
    if backend == BASELINE:
        with (
            LocalCluster(n_workers=n, threads_per_worker=1, dashboard_address=":0") as lc,
            Client(lc) as client,
        ):
            client.wait_for_workers(n)
            client.cluster = lc
            yield client
        return
    import clusterctl

    c = clusterctl.up(
        name=f"bench-{backend}",
        backend=backend,
        workers=n,
        threads=1,
        port=0,
        dashboard_port=0,
        tls=tls,
    )
    try:
        with Client(c) as client:
            client.cluster = c
            yield client
    finally:
        c.shutdown()


def cold_start(backend: str, n: int, tls: bool | None = None) -> float:
    start = time.perf_counter()
    with cluster(backend, n, tls=tls):
        return time.perf_counter() - start


def scale_up_down(backend: str, n: int) -> tuple[float, float]:
    with cluster(backend, 1) as client:
        c = client.cluster
        start = time.perf_counter()
        c.scale(n)
        client.wait_for_workers(n)
        up = time.perf_counter() - start
        start = time.perf_counter()
        c.scale(1)
        while len(client.scheduler_info()["workers"]) > 1:
            time.sleep(0.01)
        return up, time.perf_counter() - start


def throughput(client: Client, n: int) -> float:
    start = time.perf_counter()
    client.gather(client.map(abs, range(n), pure=False))
    return n / (time.perf_counter() - start)


def reduction(client: Client, side: int) -> float:
    import dask.array as da

    x = da.random.default_rng(0).random((side, side), chunks=(500, 500))
    start = time.perf_counter()
    client.compute((x @ x.T).sum()).result()
    return time.perf_counter() - start


TRANSFERS = 5  # per repeat: one takes ~0.1-0.5 s, too short to time alone


def transfer(client: Client, megabytes: int) -> float:
    """MB/s of worker-to-worker transfers: ``TRANSFERS`` arrays of ``megabytes``, made on
    one worker and fetched by another one after the other, over a connection opened by a
    small transfer first."""
    a, b = sorted(client.scheduler_info()["workers"])[:2]
    client.submit(len, client.submit(np.ones, 8, workers=[a]), workers=[b]).result()  # warm
    seconds = 0.0
    for _ in range(TRANSFERS):
        data = client.submit(np.ones, megabytes * 2**20 // 8, workers=[a], pure=False)
        client.submit(len, data, workers=[a], pure=False).result()  # made, on a
        start = time.perf_counter()
        client.submit(len, data, workers=[b], pure=False).result()
        seconds += time.perf_counter() - start
        del data  # freed on both before the next one
    return megabytes * TRANSFERS / seconds


def timed_command(*args: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "clusterctl", *args], check=True, capture_output=True)
    return time.perf_counter() - start


# What a container's log says when each step is done (distributed's own log lines).
LOG_MARKS = {
    "scheduler": "Scheduler at:",
    "nanny": "Start Nanny at:",
    "worker": "Start worker at:",
    "registered": "Registered to:",
}


def startup_profile(backend: str, n: int) -> dict[str, float]:
    """Where a cold start of ``n`` workers goes: seconds after ``up()`` was called, and the
    CPU seconds spent (here, and in the containers) by the time it returned.

    Container steps come from the engine's records of each container (created, started)
    and the timestamps it keeps of their log lines: the scheduler listening; each worker's
    nanny listening, its worker process listening, registered (medians over the workers).
    LocalCluster's processes are all this one and its children.
    """
    import psutil

    here = psutil.Process()
    before = cpu_seconds(here)
    called = time.time()
    if backend == BASELINE:
        with cluster(backend, n):
            returned = time.time()
            spent = cpu_seconds(here) + sum(cpu_seconds(p) for p in here.children(True))
        return {"up_returned": round(returned - called, 2), "cpu_here_s": round(spent - before, 2)}
    import docker

    from clusterctl.labels import CLUSTER

    engine = docker.from_env()
    with cluster(backend, n):
        returned = time.time()
        spent = cpu_seconds(here)
        label = {"label": f"{CLUSTER}=bench-{backend}"}
        containers = engine.containers.list(ignore_removed=True, filters=label)
        marks = [container_marks(c) for c in containers]
        in_containers = (
            sum(
                c.stats(stream=False, one_shot=True)["cpu_stats"]["cpu_usage"]["total_usage"]
                for c in containers
            )
            / 1e9
        )
    scheduler = next(m for m in marks if m["role"] == "scheduler")
    workers = [m for m in marks if m["role"] == "worker"]

    def after(step: str) -> float:
        return round(statistics.median(w[step] - called for w in workers), 2)

    return {
        "scheduler_started": round(scheduler["started"] - called, 2),
        "scheduler_listening": round(scheduler["scheduler"] - called, 2),
        "worker_created": after("created"),
        "worker_started": after("started"),
        "worker_nanny_listening": after("nanny"),
        "worker_process_listening": after("worker"),
        "worker_registered": after("registered"),
        "last_registered": round(max(w["registered"] for w in workers) - called, 2),
        "up_returned": round(returned - called, 2),
        "cpu_here_s": round(spent - before, 2),
        "cpu_containers_s": round(in_containers, 2),
    }


def cpu_seconds(process: Any) -> float:
    times = process.cpu_times()
    return times.user + times.system


def container_marks(container: Any) -> dict[str, Any]:
    """A container's role, and when it was created, started and logged each LOG_MARKS line."""
    from clusterctl.labels import ROLE

    state = container.attrs
    marks: dict[str, Any] = {
        "role": container.labels.get(ROLE),
        "created": epoch(state["Created"]),
        "started": epoch(state["State"]["StartedAt"]),
    }
    for line in container.logs(timestamps=True).decode(errors="replace").splitlines():
        stamp, _, text = line.partition(" ")
        for step, words in LOG_MARKS.items():
            if words in text and step not in marks:
                marks[step] = epoch(stamp)
    return marks


def epoch(stamp: str) -> float:
    """Seconds since the epoch of the engine's RFC 3339 timestamps (nanoseconds, UTC)."""
    whole, _, fraction = stamp.rstrip("Z").partition(".")
    seconds = datetime.fromisoformat(whole + "+00:00").timestamp()
    return seconds + float(f"0.{fraction or 0}")


def import_times() -> dict[str, float]:
    """Seconds to import what ``dask worker`` imports, here and in the worker image, and to
    run an empty container of that image."""
    import docker

    from clusterctl.images import default_image

    engine, image = docker.from_env(), default_image("worker")
    code = (
        "import time; t = time.perf_counter(); import distributed.cli.dask_worker; "
        "print(time.perf_counter() - t)"
    )
    here = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    inside = engine.containers.run(image, ["-c", code], entrypoint="python", remove=True)
    start = time.perf_counter()
    engine.containers.run(image, entrypoint="true", remove=True)
    empty = time.perf_counter() - start
    return {
        "import_dask_worker_here_s": round(float(here), 2),
        "import_dask_worker_in_image_s": round(float(inside), 2),
        "run_empty_container_s": round(empty, 2),
    }


def ratios(results: dict[str, Any], backends: list[str]) -> dict[str, dict[str, float]]:
    """Each backend's median over LocalCluster's: times >1 are slower, rates <1 are."""
    base = results[BASELINE]
    return {
        backend: {
            k: round(v["median"] / base[k]["median"], 2)
            for k, v in results[backend].items()
            if k in base
        }
        for backend in backends
    }


def measure(repeats: int, fn: Callable[[], float]) -> dict[str, Any]:
    return summary([fn() for _ in range(repeats)])


def summary(values: Any) -> dict[str, Any]:
    values = list(values)
    return {
        "median": round(statistics.median(values), 4),
        "spread": round(max(values) - min(values), 4),
        "values": [round(v, 4) for v in values],
    }
