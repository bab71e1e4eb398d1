"""Clusters that end with the process that made them: those a :class:`~clusterctl.Cluster`
object started with ``shutdown_on_close`` (``new_cluster``'s, so dask-labextension's "+ NEW").

Closing the object removes such a cluster; this removes the ones still open when the process
exits: normally, on an uncaught exception, or as a Jupyter server does on SIGTERM, SIGINT and
``jupyter server stop`` (it stops its event loop, then Python exits). It runs from ``atexit``,
where the object's event loop may be stopped and no thread pool takes work any more, so each
cluster is removed by a process of its own (``python -m clusterctl.lifetime NAME``, in a
session of its own), which this one waits for: a removal so goes on to the end even if this
process is then killed (``jupyter server stop`` sends SIGKILL 10 s after asking), and a lock
this process holds (a scale cut short) is released when it exits. A process killed outright
(SIGKILL) runs nothing: the cluster's idle-timeout (``new_cluster`` sets one) removes it then.
"""

from __future__ import annotations

import atexit
import logging
import os
import subprocess
import sys
import threading
from typing import TYPE_CHECKING, NamedTuple

from clusterctl import state

if TYPE_CHECKING:
    from clusterctl.backends import Backend

logger = logging.getLogger(__name__)

WAIT_AT_EXIT = 30.0  # seconds this process waits for its removals at exit (they go on after)


class _Owned(NamedTuple):
    backend: Backend
    created: float | None  # its spec.json's time: which cluster of that name it is
    pid: int  # the process that made it (a forked child inherits the list, not the clusters)


_owned: dict[str, _Owned] = {}
_guard = threading.Lock()
_hooked = False


def own(backend: Backend) -> None:
    """Remove the cluster ``backend`` has just started when this process exits, unless
    released first."""
    global _hooked
    name = backend.spec.name
    with _guard:
        if not _hooked:
            atexit.register(remove_owned)
            _hooked = True
        _owned[name] = _Owned(backend, state.created(name), os.getpid())


def release(backend: Backend) -> None:
    """Leave the cluster ``backend`` runs alone at exit (it was removed already)."""
    with _guard:
        if (entry := _owned.get(backend.spec.name)) and entry.backend is backend:
            del _owned[backend.spec.name]


def owned() -> list[str]:
    """Names of the clusters this process removes when it exits."""
    with _guard:
        return sorted(name for name, entry in _owned.items() if entry.pid == os.getpid())


def remove_owned() -> None:
    """Remove every cluster this process owns (``atexit`` calls it), each by a process of its
    own, and wait for them. One that ``down`` removed meanwhile, whose name another cluster
    may have taken since, is left alone."""
    with _guard:
        entries = {name: entry for name, entry in _owned.items() if entry.pid == os.getpid()}
        _owned.clear()
    names = [name for name, entry in entries.items() if state.created(name) == entry.created]
    removals = {
        name: subprocess.Popen(
            [sys.executable, "-m", "clusterctl.lifetime", name],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # not stopped by a signal to this process's group
        )
        for name in names
    }
    for name, removal in removals.items():
        try:
            _, errors = removal.communicate(timeout=WAIT_AT_EXIT)
        except subprocess.TimeoutExpired:
            logger.warning("Still removing cluster %s (pid %d); not waiting", name, removal.pid)
            continue
        if removal.returncode:
            logger.warning("Could not remove cluster %s: %s", name, errors.strip())


def main(names: list[str]) -> None:
    """Remove the clusters ``names`` (what :func:`remove_owned` runs for each)."""
    from clusterctl.api import down

    for name in names:
        down(name)


if __name__ == "__main__":
    main(sys.argv[1:])
