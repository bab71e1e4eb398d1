"""Adaptive scaling that outlives the CLI.

``clusterctl adapt`` starts ``python -m clusterctl.autoscaler NAME ...`` as a detached
process on this machine. It attaches with :meth:`Cluster.from_name` and runs Dask's own
``Adaptive`` until it is stopped (by ``clusterctl scale``, ``adapt --off`` or ``down``)
or the scheduler goes away. Its settings and pid live in the cluster's state folder.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any

from clusterctl import processes, state
from clusterctl.processes import ProcessRecord

RECORD = "autoscaler.json"


def start(name: str, minimum: int, maximum: int, group: str | None = None) -> ProcessRecord:
    """Replace any autoscaler of cluster ``name`` with one for these bounds."""
    stop(name)
    folder = state.cluster_dir(name)
    args = [
        sys.executable,
        "-m",
        "clusterctl.autoscaler",
        name,
        "--minimum",
        str(minimum),
        "--maximum",
        str(maximum),
    ]
    if group:
        args += ["--group", group]
    record = processes.spawn(args, folder / "logs" / "autoscaler.log")
    settings = {"minimum": minimum, "maximum": maximum, "group": group}
    state.write_json(folder / RECORD, {**record.to_dict(), **settings})
    return record


def settings(name: str) -> dict[str, Any] | None:
    """The bounds of cluster ``name``'s running autoscaler, or None."""
    data = state.read_json(state.cluster_dir(name) / RECORD)
    if not data or not processes.is_alive(ProcessRecord.from_dict(data)):
        return None
    return {k: data[k] for k in ("minimum", "maximum", "group")}


def stop(name: str) -> bool:
    """Stop cluster ``name``'s autoscaler; True if one was running."""
    path = state.cluster_dir(name) / RECORD
    data = state.read_json(path)
    path.unlink(missing_ok=True)
    if not data:
        return False
    record = ProcessRecord.from_dict(data)
    running = processes.is_alive(record)
    processes.stop([record])
    return running


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m clusterctl.autoscaler")
    parser.add_argument("name")
    parser.add_argument("--minimum", type=int, required=True)
    parser.add_argument("--maximum", type=int, required=True)
    parser.add_argument("--group")
    args = parser.parse_args(argv)

    import logging

    from clusterctl.cluster import Cluster

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    cluster = Cluster.from_name(args.name)
    cluster.adapt(minimum=args.minimum, maximum=args.maximum, group=args.group)
    while not stopping.wait(1.0):
        if cluster._watch_worker_status_task.done():  # the scheduler went away
            logging.info("scheduler of %s is gone; stopping", args.name)
            break
    cluster.close(timeout=10)


if __name__ == "__main__":
    main()
