"""The supervisor's loop: ``python -m clusterctl.supervisor NAME`` (see the package)."""

from __future__ import annotations

import argparse
import collections
import contextlib
import fcntl
import itertools
import logging
import os
import signal
import threading
from typing import Any

from clusterctl import processes, state
from clusterctl.cluster import Cluster, destroy_cluster
from clusterctl.errors import ClusterNotFound
from clusterctl.supervisor import (
    IDLE_EVERY,
    INTERVAL,
    LIFELOCK,
    LogHandler,
    adapt_settings,
    log_path,
)

LAST_LINES = 20  # of the scheduler's and of the supervisor's log, kept when it removes one


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m clusterctl.supervisor")
    parser.add_argument("name")
    args = parser.parse_args(argv)
    # Rotated: a cluster runs for days. What escapes logging (a crash) still reaches the
    # file through stderr, or its rotated copy.
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(name)s %(message)s",
        handlers=[LogHandler(args.name)],
    )
    lifelock = state.open_regular(state.cluster_dir(args.name) / LIFELOCK, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(lifelock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        logging.info("another supervisor of %s runs; this one exits", args.name)
        return

    logging.info("supervising %s: a look every %s s (pid %d)", args.name, INTERVAL, os.getpid())
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    cluster = Cluster.from_name(args.name, compare_versions=False)  # no one to tell
    following: dict[str, Any] | None = None
    looks = itertools.count()
    while not stopping.wait(INTERVAL):
        if cluster._watch_worker_status_task.done():  # the scheduler went away
            logging.info("scheduler of %s is gone; stopping", args.name)
            break
        try:
            if (settings := adapt_settings(args.name)) != following:
                cluster.follow_adapt_settings(settings)
                following = settings
            cluster.reconcile()
            watch_idle = cluster.spec.idle_timeout and next(looks) % IDLE_EVERY == 0
            if watch_idle and cluster.idle_check():
                timeout = f"{cluster.spec.idle_timeout:g}s"  # as the spec gives it
                remove(cluster, f"idle-timeout: no client and no task for {timeout}")
                break
        except ClusterNotFound:
            logging.info("cluster %s is gone; stopping", args.name)
            break
        except Exception:  # keep watching: the next look may succeed
            logging.exception("supervising %s failed", args.name)
    cluster.close(timeout=10)


def remove(cluster: Cluster, reason: str) -> None:
    """Remove the cluster as ``down`` does, and keep a record of when and why, with the last
    lines of its scheduler's and supervisor's logs (``clusterctl list --all`` and
    ``clusterctl logs`` show it: the cluster's folder, logs included, is gone)."""
    logging.info("removing %s (%s)", cluster.name, reason)
    lines = []
    with contextlib.suppress(Exception):  # a log that can't be read: the record without it
        tail = collections.deque(cluster.backend.logs("scheduler"), maxlen=LAST_LINES)
        lines += [f"scheduler | {line}" for line in tail]
    supervised = processes.tail(log_path(cluster.name), LAST_LINES).splitlines()
    lines += [f"supervisor | {line}" for line in supervised]
    destroy_cluster(cluster.backend)
    state.record_removal(cluster.name, cluster.spec.backend, reason, lines)


if __name__ == "__main__":
    main()
