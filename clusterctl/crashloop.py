"""Workers that die before they register: their error in one line, and when to stop trying.

A worker that exits while starting (a bad dask setting in its group's ``env``, a preload
that raises, a module that isn't there) would exit again if started again. So:

- ``up`` fails on the first such death and removes the cluster; :class:`WorkerStartFailed`
  says which worker, its own error in one line (:func:`first_error`), and where its log is.
- Later, the supervisor restarts a group whose workers die before registering after a
  growing delay (:func:`delay`: 1, 2, 4, 8 s) and gives up after :data:`MAX_TRIES`
  consecutive deaths. A worker of the group that registers resets the count; ``scale``
  by the user tries again. The record (one per group) is kept in the cluster's folder
  (:func:`clusterctl.supervisor.crash_loops`), so ``status`` and ``list`` show it.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from clusterctl import state, supervisor
from clusterctl.errors import ClusterctlError

logger = logging.getLogger(__name__)

MAX_TRIES = 5  # consecutive deaths before registering, then the supervisor gives up
FIRST_DELAY = 1.0  # seconds before the first restart; doubled after each death
LOG_LINES = 40  # of a dead worker's log, kept with its record
ERROR_CHARS = 300  # of the one-line error

# An exception line as Python prints it ("KeyError: 'x'", "MemoryError", "SystemExit: 3"),
# or the interpreter's own fatal error (a broken PYTHONHOME).
_EXCEPTION = re.compile(
    r"^(?:[A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt)|Fatal Python error)(?::.*)?$"
)
_LOGGED_ERROR = re.compile(r" - (?:ERROR|CRITICAL) - (.*)$")  # distributed's log format


class WorkerStartFailed(ClusterctlError):
    """A worker exited before it registered with the scheduler."""

    def __init__(self, worker: str, error: str, log: list[str], where: str):
        self.worker, self.error, self.log, self.where = worker, error, log, where
        super().__init__()

    def __str__(self) -> str:
        return f"worker {self.worker} exited while starting: {self.error} (its log: {self.where})"


def first_error(lines: list[str]) -> str:
    """A worker's own error, in one line, from its log: the first exception it printed (the
    root cause; distributed's "Nanny failed to start" follows it), with the message logged
    just before it when the exception has none ("MemoryError"); else the last error logged,
    else the last line."""
    logged = ""
    for line in lines:
        if match := _LOGGED_ERROR.search(line):
            logged = match.group(1).strip()
        elif _EXCEPTION.match(line):
            text = line.strip() if ":" in line or not logged else f"{logged}: {line.strip()}"
            return _short(text)
    last = next((line.strip() for line in reversed(lines) if line.strip()), "")
    return _short(logged or last or "it printed nothing")


def delay(tries: int) -> float:
    """Seconds to wait before restarting a group after its ``tries``-th death in a row."""
    return FIRST_DELAY * 2 ** max(tries - 1, 0)


def after_death(
    record: dict[str, Any] | None, group: str, failure: WorkerStartFailed, wanted: int
) -> dict[str, Any]:
    """The group's record once one more of its workers died while starting (the
    supervisor's, under the cluster's lock): when to try again, or that it gives up."""
    tries = (record or {}).get("tries", 0) + 1
    now = time.monotonic()
    new = {
        "tries": tries,
        "worker": failure.worker,
        "error": failure.error,
        "log": failure.log,
        "wanted": wanted,
        "died": now,
        "retry_at": now + delay(tries),
    }
    tail = "".join(f"\n  | {line}" for line in failure.log[-20:])
    if given_up(new):
        logger.warning(
            "group %s: gave up after %d deaths in a row while starting (`clusterctl scale` "
            "tries again): %s%s",
            group,
            tries,
            failure.error,
            tail,
        )
    else:
        logger.warning(
            "group %s: worker %s exited while starting (%d of %d); next try in %g s: %s%s",
            group,
            failure.worker,
            tries,
            MAX_TRIES,
            delay(tries),
            failure.error,
            tail,
        )
    return new


def holding_off(record: dict[str, Any] | None) -> bool:
    """Whether the group's dead workers are not to be replaced now: it gave up, or the
    delay after its last death has not passed."""
    if record is None:
        return False
    return given_up(record) or time.monotonic() < record.get("retry_at", 0)


def forget(name: str, group: str) -> None:
    """Clear a group's crash-loop record, so that its workers are tried again (``scale``
    by the user). Hold the cluster's lock."""
    loops = supervisor.crash_loops(name)
    if loops.pop(group, None) is not None:
        supervisor.set_crash_loops(name, loops)


def given_up(record: dict[str, Any]) -> bool:
    """Whether the supervisor stopped restarting the group of this record."""
    return record.get("tries", 0) >= MAX_TRIES


def summary(loops: dict[str, dict[str, Any]], running: dict[str, int]) -> list[str]:
    """One line per group whose workers die before registering, for ``status`` and
    ``list``: "group w: 0 of 2, crash-looping: <error>"; ``running``: each group's
    workers that run."""
    lines = []
    for group, record in sorted(loops.items()):
        head = f"group {group}: {running.get(group, 0)} of {record.get('wanted', '?')}"
        if given_up(record):
            lines.append(
                f"{head}, crash-looping: {record.get('error', '')} (gave up after "
                f"{record['tries']} tries; `clusterctl scale` tries again)"
            )
        else:
            lines.append(
                f"{head}, restarting after {record.get('tries', 0)} of {MAX_TRIES} deaths "
                f"while starting: {record.get('error', '')}"
            )
    return lines


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= ERROR_CHARS else text[: ERROR_CHARS - 3] + "..."


def keep_record(name: str, backend: str, failure: WorkerStartFailed) -> None:
    """Once a failed ``up`` removed cluster ``name``: keep a record of why, with the worker's
    last log lines (``clusterctl logs --name NAME`` and ``list --all`` show it), and point
    the error there."""
    reason = f"`up` failed: worker {failure.worker} exited while starting: {failure.error}"
    lines = [f"{failure.worker} | {line}" for line in failure.log]
    try:
        state.record_removal(name, backend, reason, lines)
    except ClusterctlError:  # a full disk, say: the error still says what went wrong
        failure.where = "removed with the cluster"
        return
    failure.where = f"`clusterctl logs --name {name}`"
