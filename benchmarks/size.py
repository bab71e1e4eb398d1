"""How cost grows with the number of workers: `python -m benchmarks.size [--quick]`.

For each size ``n``: scale up from ``n/2`` to ``n`` (until all have registered), one
``status`` (``api.status``, what ``clusterctl status`` prints), one ``list``
(``api.list_clusters``), one supervisor reconcile tick, and a graceful scale-down from ``n``
to ``n/2`` (until ``scale`` returns: the retired workers are gone); and, for reference, the
scheduler answering one ``identity`` call at ``n`` (``status`` and a reconcile tick each
make one: the scheduler's share of them). One cluster grows through the sizes, brought
back to ``n/2`` before each one, unmeasured.

- local and docker: real processes and containers, one thread each, up to 64 workers,
  beside LocalCluster (scale up and down only: it has no status, list or supervisor);
- the tests' fake backend: real ``distributed`` workers in this process (no process or
  container), up to 1,000. distributed's per-worker monitors are off there, and the
  supervisor process is not started (there is no cluster for it to find).

Each step records the seconds it took, the seconds spent in the backend's
``start_workers``, ``stop_workers`` and ``members`` calls (processes, the engine, or the
fake's workers), and the CPU seconds this process spent (the controller, the client, the
engine's SDK; not the fake's workers and scheduler, which have their own thread). A step
that changes nothing is run three times at each size, and its median run kept. Python's
garbage collection runs between steps, not during them: with the fake, one collection walks
1,000 workers' objects (0.5 s) on whichever thread happens to allocate.
``growth`` is the exponent k of a least-squares fit of time ∝ nᵏ: 1 is linear.
Writes benchmarks/results/size.json and prints docs/benchmarks.md's table.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dask

from benchmarks.clusters import BASELINE

STEPS = ("scale_up", "identity", "status", "list", "reconcile", "scale_down")
# Steps that change nothing, each taken REPEATS times at a size and its median run kept: one
# alone may land on the scheduler's busy moment (1,000 workers' heartbeats arriving together).
READS, REPEATS = {"identity", "status", "list", "reconcile"}, 3
TIMED_BACKEND_CALLS = ("start_workers", "stop_workers", "members")
RESULTS_FILE = Path(__file__).with_name("results") / "size.json"
Steps = Callable[[int], dict[str, Callable[[], Any]]]  # size -> step -> what to run
# 64 workers on 2 cores: each idle one takes ~0.1 CPU-s/s, and scale 32→64 takes minutes;
# room for a worker queued that long to register before its death-timeout.
PATIENT = {"clusterctl.worker.death-timeout": 600, "clusterctl.start-timeout": 900}


def run(quick: bool = False) -> dict[str, Any]:
    real = [2, 4] if quick else [8, 16, 32, 64]
    sizes = {"fake": [10, 20] if quick else [50, 100, 250, 500, 1000], BASELINE: real}
    sizes |= {"local": real, "docker": [] if quick else real}
    results: dict[str, Any] = {}
    for backend, ns in sizes.items():
        if ns and (backend != "docker" or engine_ready()):
            print(f"-- size curve, {backend}: {ns} workers", flush=True)
            try:
                results[backend] = curve(backend, ns)
            except Exception as exc:  # kept in the results; the other curves still run
                print(f"   {backend} failed: {exc}", flush=True)
                results[backend] = {"sizes": ns, "failed": f"{type(exc).__name__}: {exc}"}
    return results


def engine_ready() -> bool:
    try:
        import docker

        from clusterctl.engine import image_exists
        from clusterctl.images import default_image

        return image_exists(docker.from_env(), default_image("worker"))
    except Exception as exc:
        print(f"   (docker size curve skipped: {exc})", flush=True)
        return False


def curve(backend: str, sizes: list[int]) -> dict[str, Any]:
    """``{"sizes", "steps": {step: {"total", "backend", "cpu_here": [per size]}}, "growth"}``."""
    figures: dict[str, dict[str, list[float]]] = {}
    with cluster_of(backend, sizes[0] // 2) as (steps_at, timed, fake_thread):
        spent = time_calls(timed)

        def measure(step: Callable[[], Any]) -> dict[str, float]:
            gc.collect()  # between steps, not during: see the module's docstring
            gc.disable()
            spent["s"], cpu = 0.0, cpu_seconds(fake_thread)
            start = time.perf_counter()
            try:
                step()
            finally:
                gc.enable()
            return {
                "total": time.perf_counter() - start,
                "backend": spent["s"],
                "cpu_here": cpu_seconds(fake_thread) - cpu,
            }

        for n in sizes:
            steps = steps_at(n)
            steps["resize"]()  # to n/2, where the previous size left it, or its start
            for step in STEPS:
                if step not in steps:
                    continue
                runs = [measure(steps[step]) for _ in range(REPEATS if step in READS else 1)]
                took = sorted(runs, key=lambda run: run["total"])[len(runs) // 2]
                into = figures.setdefault(step, {k: [] for k in took})
                for key, value in took.items():
                    into[key].append(round(value, 6))
            shown = (
                f"{s} {f['total'][-1]:.3f}/{f['cpu_here'][-1]:.2f}" for s, f in figures.items()
            )
            print(f"   {n:5d}: " + "  ".join(shown), flush=True)
    return {
        "sizes": sizes,
        "steps": figures,
        "growth": {
            step: {what: growth(sizes, values) for what, values in figure.items()}
            for step, figure in figures.items()
        },
    }


def growth(sizes: list[int], seconds: list[float]) -> float:
    """The exponent k of the least-squares fit of seconds ∝ sizeᵏ (1: linear)."""
    xs = [math.log(n) for n in sizes]
    ys = [math.log(max(s, 1e-6)) for s in seconds]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    spread = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    return round(slope / spread, 2) if spread else 0.0


def cpu_seconds(excluded: threading.Thread | None) -> float:
    """CPU seconds this process has spent, less those of the ``excluded`` thread (both
    read from the kernel's per-process and per-thread clocks, to the microsecond)."""
    total = time.process_time()
    if excluded is not None and excluded.ident is not None:
        total -= time.clock_gettime(time.pthread_getcpuclockid(excluded.ident))
    return total


def time_calls(backend: Any) -> dict[str, float]:
    """Wrap the backend's worker calls to add their seconds to the returned ``["s"]``."""
    spent = {"s": 0.0}
    for name in TIMED_BACKEND_CALLS if backend is not None else ():
        call = getattr(backend, name)

        def timed(*args: Any, _call: Callable = call, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return _call(*args, **kwargs)
            finally:
                spent["s"] += time.perf_counter() - start

        setattr(backend, name, timed)
    return spent


Made = tuple[Steps, Any, threading.Thread | None]  # steps, backend to time, fake's thread


@contextlib.contextmanager
def cluster_of(backend: str, n: int) -> Iterator[Made]:
    """A cluster of ``n`` one-thread workers, what each step runs on it at a size, its
    backend (whose calls are timed), and the thread of the fake's workers (if any)."""
    if backend == BASELINE:
        with local_cluster(n) as made:
            yield made
    elif backend == "fake":
        with fake_cluster(n) as made:
            yield made
    else:
        import clusterctl
        from clusterctl import api, state

        name = f"bench-size-{backend}"
        with dask.config.set(PATIENT):
            c = clusterctl.up(
                name=name, backend=backend, workers=n, threads=1, port=0, dashboard_port=0
            )
        try:
            yield controller_steps(c, lambda: api.status(name), api.list_clusters), c.backend, None
        except Exception:  # what the supervisor did meanwhile goes with the cluster
            log = state.cluster_dir(name) / "logs" / "supervisor.log"
            print("   supervisor's log, last lines:", *log.read_text().splitlines()[-15:], sep="\n")
            raise
        finally:
            c.shutdown()


def controller_steps(cluster: Any, status: Callable, listing: Callable) -> Steps:
    def at(n: int) -> dict[str, Callable[[], Any]]:
        return {
            "resize": lambda: (cluster.scale(n // 2), cluster.wait_for_workers(n // 2)),
            "scale_up": lambda: (cluster.scale(n), cluster.wait_for_workers(n)),
            "status": status,
            "list": listing,
            "reconcile": cluster.reconcile,
            "scale_down": lambda: cluster.scale(n // 2),
            "identity": lambda: cluster.sync(cluster.scheduler_comm.identity),
        }

    return at


@contextlib.contextmanager
def local_cluster(n: int) -> Iterator[Made]:
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=n, threads_per_worker=1, dashboard_address=":0") as lc,
        Client(lc) as client,
    ):

        def down_to(k: int) -> None:
            lc.scale(k)
            while len(client.scheduler_info()["workers"]) > k:
                time.sleep(0.01)

        def at(n: int) -> dict[str, Callable[[], Any]]:
            return {
                "resize": lambda: (down_to(n // 2), client.wait_for_workers(n // 2)),
                "scale_up": lambda: (lc.scale(n), client.wait_for_workers(n)),
                "scale_down": lambda: down_to(n // 2),
            }

        yield at, None, None


@contextlib.contextmanager
def fake_cluster(n: int) -> Iterator[Made]:
    """The controller on the tests' fake backend (see the module's docstring)."""
    from clusterctl import supervisor
    from clusterctl.backends import _inspect
    from clusterctl.cluster import Cluster
    from tests.fake_backend import FakeBackend, make_spec

    quiet = {  # each polls several times a second: with 1,000 they'd measure the fake
        "distributed.admin.system-monitor.interval": "1h",
        "distributed.admin.tick.interval": "5s",  # 20 ms by default: 50,000 calls/s
        "distributed.worker.profile.enabled": False,
        **{f"distributed.worker.memory.{k}": False for k in ("target", "spill", "pause")},
    }
    # else lines per worker, and a traceback per worker closed mid-heartbeat
    logging.getLogger("distributed").setLevel(logging.CRITICAL)
    saved = supervisor.ensure_running, supervisor.set_adapt
    supervisor.ensure_running = supervisor.set_adapt = lambda *args: None
    spec = make_spec("bench-size-fake", {"default": n})
    fake = cluster = None
    try:
        with dask.config.set(quiet):
            fake = FakeBackend(spec)
            fake.start_scheduler()
            fake.start_workers(spec.workers[0], n)
            cluster = Cluster(spec, backend=fake, compare_versions=False)
            listing = lambda: _inspect(FakeBackend, spec.name)  # noqa: E731
            yield controller_steps(cluster, cluster.describe, listing), fake, fake.thread
    finally:
        try:
            if cluster is not None:
                cluster.shutdown()
        finally:
            if fake is not None:
                fake.close_loop()
            supervisor.ensure_running, supervisor.set_adapt = saved


def table(results: dict[str, Any]) -> str:
    """docs/benchmarks.md's table: seconds per step and size, the growth exponent k of
    those, k of what is left without the backend's own calls (starting and stopping
    processes, containers or the fake's in-process workers), and k of the CPU seconds this
    process spent (the controller's own work: on the fake, nothing else runs here)."""
    sizes = _all_sizes(results)
    lines = [
        "| backend | step | "
        + " | ".join(f"n={n}" for n in sizes)
        + " | k | k less backend | k of CPU here |",
        "| --- | --- |" + " ---: |" * (len(sizes) + 3),
    ]
    for backend, found in results.items():
        if not isinstance(found, dict) or "sizes" not in found:
            continue
        if "steps" not in found:
            lines.append(f"| {backend} | failed: {found['failed'][:200]} |")
            continue
        for step, figure in found["steps"].items():
            by_size = dict(zip(found["sizes"], figure["total"], strict=True))
            cells = [_seconds(by_size.get(n)) for n in sizes]
            rest = [t - b for t, b in zip(figure["total"], figure["backend"], strict=True)]
            k, k_cpu = found["growth"][step]["total"], found["growth"][step]["cpu_here"]
            ks = f" | {k:.2f} | {growth(found['sizes'], rest):.2f} | {k_cpu:.2f} |"
            lines.append(f"| {backend} | {step.replace('_', ' ')} | " + " | ".join(cells) + ks)
    return "\n".join(lines)


def _all_sizes(results: dict[str, Any]) -> list[int]:
    return sorted({n for r in results.values() if isinstance(r, dict) for n in r.get("sizes", ())})


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}" if value < 1 else f"{value:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.size", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes (the tests' run)")
    parser.add_argument("--output", help="results JSON (default: results/size.json)")
    args = parser.parse_args()
    from benchmarks.__main__ import machine

    results = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M", time.gmtime())}
    results |= run(quick=args.quick)
    output = args.output or RESULTS_FILE.with_stem("size-quick" if args.quick else "size")
    with open(output, "w") as file:
        file.write(json.dumps(results, indent=2) + "\n")
    print(table(results))
    print(f"results: {output}")


if __name__ == "__main__":
    main()
