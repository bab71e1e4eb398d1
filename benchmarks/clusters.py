"""Cluster figures per backend, each against ``distributed.LocalCluster`` in the same run.

- cold start: scheduler + N workers, from nothing to all registered;
- scale 1→8 (until all 8 run) and graceful 8→1 (until one is left);
- throughput: tiny tasks per second on 2 one-thread workers; a dask.array reduction;
- transfer: one worker fetching another's array (MB/s);
- ``clusterctl --help`` and ``clusterctl status`` latency.

LocalCluster gets the same shape: one-thread worker processes behind nannies. Tasks are
builtins (pickled by reference), as code shipped to containers must be importable there.
Containers run with their defaults (TLS on); the local backend with its (plain TCP).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from distributed import Client, LocalCluster

BASELINE = "LocalCluster"


def run(quick: bool = False) -> dict[str, Any]:
    sizes = [2] if quick else [1, 2, 4, 8]
    scale_to = 4 if quick else 8
    repeats = 1 if quick else 3
    tasks = 2_000 if quick else 20_000
    megabytes = 50 if quick else 200
    results: dict[str, Any] = {"repeats": repeats, "tasks": tasks, "transfer_mb": megabytes}
    backends = available_backends()
    for backend in [BASELINE, *backends]:
        print(f"-- {backend}", flush=True)
        figures: dict[str, Any] = {}
        for n in sizes:
            figures[f"cold_start_{n}_s"] = measure(repeats, lambda n=n, b=backend: cold_start(b, n))
        up, down = zip(*(scale_up_down(backend, scale_to) for _ in range(repeats)), strict=True)
        figures[f"scale_1_to_{scale_to}_s"] = summary(up)
        figures[f"scale_{scale_to}_to_1_s"] = summary(down)
        with cluster(backend, 2) as client:
            client.submit(int, 1).result()  # warm connections
            figures["tasks_per_s"] = measure(repeats, lambda: throughput(client, tasks))
            figures["array_reduction_s"] = measure(repeats, lambda: reduction(client))
            figures["transfer_mb_per_s"] = measure(repeats, lambda: transfer(client, megabytes))
        results[backend] = figures
        for key, value in figures.items():
            print(f"   {key:24} {value['median']:10.3f}  (spread {value['spread']:.3f})")
    results["ratios"] = ratios(results, backends)
    results["cli"] = {
        "help_s": measure(repeats, lambda: timed_command("--help")),
        "status_s": cli_status(repeats),
    }
    return results


def available_backends() -> list[str]:
    backends = ["local"]
    try:
        import docker

        client = docker.from_env()
        client.ping()
        from clusterctl.images import default_image, image_exists

        if image_exists(client, default_image("worker")):
            backends.append("docker")
            from clusterctl.backends.compose import compose_command

            compose_command()
            backends.append("compose")
    except Exception as exc:  # no engine, no images, or no Compose: measured where there is
        print(f"   (container backends skipped: {exc})", flush=True)
    return backends


@contextmanager
def cluster(backend: str, n: int) -> Iterator[Client]:
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

    c = clusterctl.up(name=f"bench-{backend}", backend=backend, workers=n, threads=1,
                      port=0, dashboard_port=0)  # fmt: skip
    try:
        with Client(c) as client:
            client.cluster = c
            yield client
    finally:
        c.shutdown()


def cold_start(backend: str, n: int) -> float:
    start = time.perf_counter()
    with cluster(backend, n):
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


def reduction(client: Client) -> float:
    import dask.array as da

    x = da.random.default_rng(0).random((4000, 4000), chunks=(500, 500))
    start = time.perf_counter()
    client.compute((x @ x.T).sum()).result()
    return time.perf_counter() - start


def transfer(client: Client, megabytes: int) -> float:
    a, b = sorted(client.scheduler_info()["workers"])[:2]
    data = client.submit(np.ones, megabytes * 2**20 // 8, workers=[a], pure=False)
    client.submit(len, data, workers=[a], pure=False).result()  # made, on a
    start = time.perf_counter()
    client.submit(len, data, workers=[b], pure=False).result()
    return megabytes / (time.perf_counter() - start)


def timed_command(*args: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "clusterctl", *args], check=True, capture_output=True)
    return time.perf_counter() - start


def cli_status(repeats: int) -> dict[str, float]:
    import clusterctl

    c = clusterctl.up(name="bench-status", workers=1, port=0, dashboard_port=0)
    try:
        return measure(repeats, lambda: timed_command("status", "--name", "bench-status"))
    finally:
        c.shutdown()


def ratios(results: dict[str, Any], backends: list[str]) -> dict[str, dict[str, float]]:
    """Each backend's median over LocalCluster's: times >1 are slower, rates <1 are."""
    base = results[BASELINE]
    return {
        backend: {k: round(v["median"] / base[k]["median"], 2) for k, v in results[backend].items()}
        for backend in backends
    }


def measure(repeats: int, fn: Callable[[], float]) -> dict[str, float]:
    return summary([fn() for _ in range(repeats)])


def summary(values: Any) -> dict[str, float]:
    values = list(values)
    return {
        "median": round(statistics.median(values), 4),
        "spread": round(max(values) - min(values), 4),
        "values": [round(v, 4) for v in values],
    }
