"""The supervisor: a small detached process per cluster that keeps it as it was asked to be.

This module is its record (is one running, start one, its settings, kill it), which commands
and the controller use; its loop is ``__main__`` (``python -m clusterctl.supervisor NAME``),
the only part that imports the controller.

Every cluster this machine creates gets one (``python -m clusterctl.supervisor NAME``).
Once a second it calls :meth:`Cluster.reconcile`, which replaces workers that died or were
cut off, up to the count ``scale`` last asked for; while the cluster's adapt settings are
on, it also runs Dask's own ``Adaptive`` with them. It attaches with
:meth:`Cluster.from_name` like any other client and exits when the scheduler goes away.

What it does is read from the cluster's folder each time, never passed at start: commands
change the settings (``adapt.json``) and the counts under the cluster's lock, and the one
supervisor follows. At most one runs per cluster, ever: it is started under the cluster's
lock only when the record of a live one is missing, and it holds ``supervisor.lock`` for
its whole life, so a second one could not even run. ``down`` kills it under the cluster's
lock, where it holds nothing (all it changes, it changes under that lock).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import Any

from clusterctl import processes, state
from clusterctl.processes import ProcessRecord

RECORD = "supervisor.json"  # the running supervisor: pid, start time, log
IDLE = "idle.json"  # {since_boot}: when the supervisor found the cluster idle (idle-timeout)
SETTINGS = "adapt.json"  # adaptive bounds {minimum, maximum, group}; absent: a fixed size
LIFELOCK = "supervisor.lock"  # flock'ed by the supervisor for as long as it runs
# {group: {tries, error, worker, log, wanted, retry_at}}: groups whose workers die before they
# register (see clusterctl.crashloop); retry_at is on time.monotonic()
CRASHES = "crashes.json"
INTERVAL = 1.0  # seconds between two looks at the cluster
IDLE_EVERY = 5  # looks between two at whether it is idle (each one is logged by the scheduler)
LOG_BYTES, LOG_BACKUPS = 1 << 20, 2  # its log is rotated past 1 MiB; two old ones are kept


def ensure_running(name: str) -> None:
    """Start cluster ``name``'s supervisor unless one runs. Hold the cluster's lock."""
    if running(name):
        return
    folder = state.cluster_dir(name)
    record = processes.spawn(
        [state.interpreter(name), "-m", "clusterctl.supervisor", name],
        log_path(name),
        env={**os.environ, "CLUSTERCTL_CLUSTER": name},
        folder=folder,
    )
    state.write_json(folder / RECORD, record.to_dict())


def log_path(name: str) -> Path:
    """Cluster ``name``'s supervisor log; LOG_BACKUPS older ones beside it, as ``.1``, ..."""
    return state.cluster_dir(name) / "logs" / "supervisor.log"


def logs(name: str, follow: bool = False) -> Iterator[str]:
    """The lines of cluster ``name``'s supervisor log, the rotated ones first; with
    ``follow``, new lines as long as the supervisor runs. :class:`state.BrokenState` for
    one that is not a regular file."""
    current = log_path(name)
    for n in range(LOG_BACKUPS, 0, -1):
        with contextlib.suppress(FileNotFoundError):
            yield from processes.log_lines(f"{current}.{n}")
    try:
        yield from processes.log_lines(current, lambda: follow and running(name))
    except FileNotFoundError:
        return  # none yet: no worker has needed replacing, nor anything gone wrong


class LogHandler(RotatingFileHandler):
    """The supervisor's rotated log, opened as :func:`state.open_regular` opens files; what
    is not a regular file where it rotates to (a folder, a symlink, a FIFO...) is removed
    first, or the log could never rotate again."""

    def __init__(self, name: str):
        super().__init__(log_path(name), maxBytes=LOG_BYTES, backupCount=LOG_BACKUPS)

    def _open(self) -> Any:
        fd = state.open_regular(self.baseFilename, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        return os.fdopen(fd, "a", encoding=self.encoding or "utf-8", errors=self.errors)

    def doRollover(self) -> None:
        for n in range(1, LOG_BACKUPS + 1):
            backup = Path(f"{self.baseFilename}.{n}")
            if state.kind_of_path(backup):
                state.discard(backup)
        super().doRollover()


def _record(name: str) -> ProcessRecord | None:
    try:
        record = ProcessRecord.from_dict(state.read_json(state.cluster_dir(name) / RECORD))
    except state.BrokenState:  # missing or damaged: as good as no supervisor
        return None
    return record if processes.is_alive(record) else None


def running(name: str) -> bool:
    """Whether cluster ``name`` has a live supervisor."""
    return _record(name) is not None


def adapt_settings(name: str) -> dict[str, Any] | None:
    """The bounds of cluster ``name``'s adaptive scaling, or None when its size is fixed."""
    try:
        data = state.read_json(state.cluster_dir(name) / SETTINGS)
    except state.BrokenState:
        return None
    if not isinstance(data, dict) or not {"minimum", "maximum", "group"} <= data.keys():
        return None
    return data


def set_adapt(name: str, settings: dict[str, Any] | None) -> None:
    """Turn adaptive scaling on with ``settings`` (minimum, maximum, group), or off with
    None. Hold the cluster's lock; the supervisor follows within a second."""
    path = state.cluster_dir(name) / SETTINGS
    if settings is None:
        path.unlink(missing_ok=True)
    else:
        state.write_json(path, settings)


def idle_since(name: str) -> float | None:
    """Since when cluster ``name`` has had no client and no task, as its supervisor saw, on
    :func:`clusterctl.idle.clock` (seconds since boot); None when it hasn't, or nothing
    watches."""
    try:
        data = state.read_json(state.cluster_dir(name) / IDLE)
    except state.BrokenState:
        return None
    since = data.get("since_boot") if isinstance(data, dict) else None
    return float(since) if isinstance(since, (int, float)) else None


def set_idle_since(name: str, since: float | None) -> None:
    """Record when cluster ``name`` became idle, on the idle clock (None: it is in use
    again)."""
    path = state.cluster_dir(name) / IDLE
    if since is None:
        path.unlink(missing_ok=True)
    else:
        state.write_json(path, {"since_boot": since})


def crash_loops(name: str) -> dict[str, dict[str, Any]]:
    """Cluster ``name``'s groups whose workers die before registering, with their record
    (:mod:`clusterctl.crashloop`); {} when none does."""
    try:
        data = state.read_json(state.cluster_dir(name) / CRASHES)
    except state.BrokenState:
        return {}
    if not isinstance(data, dict):
        return {}
    return {
        g: r for g, r in data.items() if isinstance(r, dict) and isinstance(r.get("tries"), int)
    }


def set_crash_loops(name: str, loops: dict[str, dict[str, Any]]) -> None:
    """Record cluster ``name``'s crash-looping groups (none: the record goes). Hold the
    cluster's lock."""
    path = state.cluster_dir(name) / CRASHES
    if loops:
        state.write_json(path, loops)
    else:
        state.discard(path)


def kill(name: str) -> None:
    """Kill cluster ``name``'s supervisor, if it has one (not this process: the supervisor
    removing its idle cluster). Hold the cluster's lock."""
    if (record := _record(name)) and record.pid != os.getpid():
        processes.stop([record], grace=0)
    (state.cluster_dir(name) / RECORD).unlink(missing_ok=True)
