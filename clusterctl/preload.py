"""The preload of every clusterctl scheduler: ``dask scheduler --preload clusterctl.preload``
on the local backend, ``distributed.scheduler.preload`` in the images' dask.yaml.

It installs two things on the scheduler:

- :mod:`clusterctl.graphcheck`: a task graph the scheduler cannot unpickle fails at once,
  naming the module it lacks.
- A worker-status feed per subscriber. distributed registers each cluster object's feed
  (``subscribe_worker_status``, which keeps ``Cluster.scheduler_info``, its repr, the Jupyter
  widget and dask-labextension's sidebar up to date) as a scheduler plugin under one fixed
  name, so the last subscriber takes the feed from all the others: the supervisor, a
  ``Cluster.from_name`` in another process or a second sidebar silenced the object that made
  the cluster. Here each subscription gets a plugin of its own name, and one whose
  subscriber has gone is dropped at the next subscription or worker event. Every client
  keeps using distributed's own handler name and messages, so nothing changes on their side.

Imports nothing heavy until set up.
"""

from __future__ import annotations

import itertools
from typing import Any

PRELOAD = __name__
FEED = "clusterctl-worker-status"  # the prefix of our feeds' plugin names
_numbers = itertools.count(1)


def dask_setup(scheduler: Any) -> None:
    """Install the graph check and the per-subscriber worker-status feeds."""
    from clusterctl import graphcheck

    graphcheck.install(scheduler)
    install_status_feeds(scheduler)


def install_status_feeds(scheduler: Any) -> None:
    """Answer ``subscribe_worker_status`` with a feed of the subscriber's own."""
    from distributed.scheduler import WorkerStatusPlugin

    if getattr(scheduler.handlers["subscribe_worker_status"], "clusterctl", False):
        return  # preloaded twice (configured, and by clusterctl)

    class Feed(WorkerStatusPlugin):
        """distributed's worker-status plugin under a name of its own (its methods remove
        the plugin by ``self.name`` once its subscriber is gone)."""

        def __init__(self, comm: Any) -> None:
            self.name = f"{FEED}-{next(_numbers)}"  # type: ignore[misc]
            super().__init__(scheduler, comm)

    def subscribe_worker_status(comm: Any) -> dict[str, Any]:
        for name, plugin in list(scheduler.plugins.items()):
            if isinstance(plugin, Feed) and _closed(plugin):
                scheduler.remove_plugin(name=name)
        Feed(comm)
        ident = scheduler.identity()
        for worker in ident["workers"].values():
            del worker["metrics"]
            del worker["last_seen"]
        return ident

    subscribe_worker_status.clusterctl = True  # type: ignore[attr-defined]
    scheduler.handlers["subscribe_worker_status"] = subscribe_worker_status


def _closed(feed: Any) -> bool:
    comm = feed.bcomm.comm
    return comm is None or comm.closed()


def scheduler_args() -> list[str]:
    """``dask scheduler`` options that load this preload. A ``--preload`` option replaces the
    configured ``distributed.scheduler.preload`` list, so those preloads come first; with
    per-preload arguments configured, the configured preloads alone (ours would unpair them)."""
    import dask.config

    configured = dask.config.get("distributed.scheduler.preload", None) or []
    argv = dask.config.get("distributed.scheduler.preload-argv", None) or []
    if argv and not isinstance(argv[0], str):
        return []
    if isinstance(configured, str):
        configured = [configured]
    names = [*configured, *([] if PRELOAD in configured else [PRELOAD])]
    return [arg for name in names for arg in ("--preload", name)]
