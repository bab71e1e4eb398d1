"""The supervisor's loop: ``python -m clusterctl.supervisor NAME`` (see the package)."""

from __future__ import annotations

import argparse
import fcntl
import itertools
import logging
import os
import signal
import threading
from logging.handlers import RotatingFileHandler
from typing import Any

from clusterctl import state
from clusterctl.cluster import Cluster, destroy_cluster
from clusterctl.errors import ClusterNotFound
from clusterctl.supervisor import (
    IDLE_EVERY,
    INTERVAL,
    LIFELOCK,
    LOG_BACKUPS,
    LOG_BYTES,
    adapt_settings,
    log_path,
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m clusterctl.supervisor")
    parser.add_argument("name")
    args = parser.parse_args(argv)
    # Rotated: a cluster runs for days. What escapes logging (a crash) still reaches the
    # file through stderr, or its rotated copy.
    rotating = RotatingFileHandler(log_path(args.name), maxBytes=LOG_BYTES, backupCount=LOG_BACKUPS)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(message)s", handlers=[rotating]
    )
    lifelock = os.open(
        state.cluster_dir(args.name) / LIFELOCK,
        os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
        0o600,
    )
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
                logging.info(
                    "%s had no client and no task for its idle-timeout (%gs): removing it",
                    args.name,
                    cluster.spec.idle_timeout,
                )
                destroy_cluster(cluster.backend)
                break
        except ClusterNotFound:
            logging.info("cluster %s is gone; stopping", args.name)
            break
        except Exception:  # keep watching: the next look may succeed
            logging.exception("supervising %s failed", args.name)
    cluster.close(timeout=10)


if __name__ == "__main__":
    main()
