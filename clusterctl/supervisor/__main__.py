"""The supervisor's loop: ``python -m clusterctl.supervisor NAME`` (see the package)."""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import signal
import threading
from typing import Any

from clusterctl import state
from clusterctl.cluster import Cluster
from clusterctl.errors import ClusterNotFound
from clusterctl.supervisor import INTERVAL, LIFELOCK, adapt_settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m clusterctl.supervisor")
    parser.add_argument("name")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
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

    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    cluster = Cluster.from_name(args.name, compare_versions=False)  # no one to tell
    following: dict[str, Any] | None = None
    while not stopping.wait(INTERVAL):
        if cluster._watch_worker_status_task.done():  # the scheduler went away
            logging.info("scheduler of %s is gone; stopping", args.name)
            break
        try:
            if (settings := adapt_settings(args.name)) != following:
                cluster.follow_adapt_settings(settings)
                following = settings
            cluster.reconcile()
        except ClusterNotFound:
            logging.info("cluster %s is gone; stopping", args.name)
            break
        except Exception:  # keep watching: the next look may succeed
            logging.exception("supervising %s failed", args.name)
    cluster.close(timeout=10)


if __name__ == "__main__":
    main()
