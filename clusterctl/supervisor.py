"""The supervisor: a small detached process per cluster that keeps it as it was asked to be.

Every cluster this machine creates gets one (``python -m clusterctl.supervisor NAME``).
Once a second it calls :meth:`Cluster.reconcile`, which replaces workers that died or were
cut off, up to the count ``scale`` last asked for; after ``clusterctl adapt`` it also runs
Dask's own ``Adaptive``. It attaches with :meth:`Cluster.from_name` like any other client,
exits when the scheduler goes away, and is stopped by ``down``. Its pid and settings live
in the cluster's state folder; if it is killed, ``clusterctl scale`` or ``adapt`` start a
new one, and ``status`` says whether one runs.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from typing import Any

from clusterctl import processes, state
from clusterctl.processes import ProcessRecord

RECORD = "supervisor.json"
INTERVAL = 1.0  # seconds between two looks at the cluster


def start(name: str, adapt: dict[str, Any] | None = None) -> ProcessRecord:
    """Replace any supervisor of cluster ``name``; ``adapt``: Adaptive's bounds
    (``minimum``, ``maximum``, ``group``), or None for a fixed size."""
    stop(name)
    folder = state.cluster_dir(name)
    args = [sys.executable, "-m", "clusterctl.supervisor", name]
    if adapt:
        args += ["--minimum", str(adapt["minimum"]), "--maximum", str(adapt["maximum"])]
        if adapt.get("group"):
            args += ["--group", adapt["group"]]
    env = {**os.environ, "CLUSTERCTL_CLUSTER": name}
    record = processes.spawn(args, folder / "logs" / "supervisor.log", env=env)
    state.write_json(folder / RECORD, {**record.to_dict(), "adapt": adapt})
    return record


def _record(name: str) -> dict[str, Any] | None:
    data = state.read_json(state.cluster_dir(name) / RECORD)
    if not data or not processes.is_alive(ProcessRecord.from_dict(data)):
        return None
    return data


def running(name: str) -> bool:
    """Whether cluster ``name`` has a live supervisor."""
    return _record(name) is not None


def adapt_settings(name: str) -> dict[str, Any] | None:
    """The bounds of cluster ``name``'s adaptive scaling, or None when its size is fixed."""
    data = _record(name)
    return data["adapt"] if data else None


def stop(name: str) -> None:
    """Stop cluster ``name``'s supervisor, if it has one."""
    path = state.cluster_dir(name) / RECORD
    data = state.read_json(path)
    path.unlink(missing_ok=True)
    if data:
        processes.stop([ProcessRecord.from_dict(data)])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m clusterctl.supervisor")
    parser.add_argument("name")
    parser.add_argument("--minimum", type=int)
    parser.add_argument("--maximum", type=int)
    parser.add_argument("--group")
    args = parser.parse_args(argv)

    import logging

    from clusterctl.cluster import Cluster

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    cluster = Cluster.from_name(args.name)
    if args.maximum is not None:
        cluster.adapt(minimum=args.minimum or 0, maximum=args.maximum, group=args.group)
    while not stopping.wait(INTERVAL):
        if cluster._watch_worker_status_task.done():  # the scheduler went away
            logging.info("scheduler of %s is gone; stopping", args.name)
            break
        try:
            cluster.reconcile()
        except Exception:  # keep watching: the next look may succeed
            logging.exception("reconciling %s failed", args.name)
    cluster.close(timeout=10)


if __name__ == "__main__":
    main()
