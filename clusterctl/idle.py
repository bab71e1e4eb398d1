"""What "idle" means for a cluster's ``idle-timeout``, and the clock it is measured on.

Idle: no task has run or changed state since the last look, and no client a person holds is
connected. Only clients with a connection of their own count. distributed also keeps
pseudo-clients on the scheduler that never connect and never go away by themselves:
``fire-and-forget``, ``published-NAME`` (``publish_dataset``; it stays after
``unpublish_dataset``), ``variable-NAME`` (``Variable``) and ``queue-NAME`` (``Queue``). A
worker's own client (``get_client()`` in a task, ``Client-worker-…``) connects, yet stays
connected after the task is done: it is the cluster's, not a person's, and does not count
either.

The clock is the machine's time since boot (``CLOCK_BOOTTIME`` on Linux: the same in every
process, counting time suspended, never stepped by NTP or by hand; ``time.monotonic()``
elsewhere), so ``status`` in another process reads the supervisor's record on the same clock.
"""

from __future__ import annotations

import time
from typing import Any

WORKER_CLIENT = "Client-worker-"  # distributed's Worker._get_client names its client "worker"


def clock() -> float:
    """Seconds since boot: what the idle clock is kept in."""
    if hasattr(time, "CLOCK_BOOTTIME"):
        return time.clock_gettime(time.CLOCK_BOOTTIME)
    return time.monotonic()


def held_clients(dask_scheduler: Any) -> list[str]:
    """The ids of the clients a person holds connected to ``dask_scheduler``."""
    return [c for c in dask_scheduler.client_comms if not c.startswith(WORKER_CLIENT)]


def scheduler_idle(dask_scheduler: Any) -> bool:
    """Run on the scheduler: whether no client a person holds is connected and no task has
    run or changed state since the last look (Dask's ``check_idle`` counts every task
    transition between two looks)."""
    if held_clients(dask_scheduler):
        return False
    return dask_scheduler.check_idle() is not None
