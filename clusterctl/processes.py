"""Detached OS processes: start them so they outlive us, recognise them, stop them.

A process is identified by its pid *and* its start time, so a recycled pid is never
mistaken for ours. The start time is the kernel's, counted from boot (``/proc/PID/stat``),
so a wall clock stepped by NTP or by hand changes nothing; elsewhere psutil's wall-clock
start time is compared with a tolerance.

Every process clusterctl starts also carries ``CLUSTERCTL_STATE=<its cluster's folder>``
in its environment, so what a record lost (a crash between start and record, a damaged
folder) is still found by :func:`find_by_marker`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from clusterctl import state

MARKER = "CLUSTERCTL_STATE"  # environment variable naming the cluster folder a process is of
TOLERANCE = 1.0  # seconds between two readings of one wall-clock start time (non-Linux)


@dataclass(frozen=True)
class ProcessRecord:
    pid: int
    started: float  # seconds since boot (Linux), else psutil's wall-clock start time
    log: str

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> ProcessRecord:
        """A record as :meth:`to_dict` wrote it; :class:`state.BrokenState` otherwise."""
        try:
            record = cls(pid=data["pid"], started=data["started"], log=data["log"])
        except (TypeError, KeyError) as exc:
            raise state.BrokenState(f"not a process record (missing {exc})") from None
        if isinstance(record.pid, bool) or not isinstance(record.pid, int) or record.pid <= 1:
            raise state.BrokenState(f"not a process record (pid {record.pid!r:.40})")
        if isinstance(record.started, bool) or not isinstance(record.started, (int, float)):
            raise state.BrokenState(f"not a process record (started {record.started!r:.40})")
        if not isinstance(record.log, str):
            raise state.BrokenState("not a process record (log is not a path)")
        return record


def spawn(
    command: list[str], log: Path, env: Mapping[str, str], folder: Path, cwd: str | None = None
) -> ProcessRecord:
    """Start ``command`` in its own session (in ``cwd``, else this process's working folder),
    output appended to ``log``, marked as a process of the cluster whose folder is ``folder``."""
    fd = state.open_log(log)
    try:
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=fd,
            stderr=subprocess.STDOUT,
            env={**env, MARKER: str(folder)},
            start_new_session=True,
            cwd=cwd,
            umask=0o077,  # what it writes (spilled data, files of its own) is the owner's
        )
    except OSError as exc:
        raise state.BrokenState(f"cannot start {command[0]}: {exc.strerror}") from None
    finally:
        os.close(fd)
    return ProcessRecord(pid=proc.pid, started=start_time(proc.pid) or 0.0, log=str(log))


def start_time(pid: int) -> float | None:
    """When process ``pid`` started, in :attr:`ProcessRecord.started`'s units; None if it
    doesn't exist."""
    if sys.platform.startswith("linux"):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        # Field 22, after the command name (which may hold spaces and parentheses).
        ticks = int(stat.rpartition(")")[2].split()[19])
        return ticks / os.sysconf("SC_CLK_TCK")
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def is_alive(record: ProcessRecord) -> bool:
    """Whether the recorded process still runs (not a zombie, not a recycled pid)."""
    started = start_time(record.pid)
    if started is None:
        return False
    same = (
        started == record.started
        if sys.platform.startswith("linux")
        else abs(started - record.started) <= TOLERANCE
    )
    try:
        return same and psutil.Process(record.pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def find_by_marker(folder: Path) -> list[psutil.Process]:
    """This user's live processes marked as belonging to the cluster folder ``folder``."""
    return [proc for proc, marker in _marked() if marker == str(folder)]


def marked_folders() -> set[str]:
    """The cluster folders this user's live processes are marked with."""
    return {marker for _, marker in _marked()}


def _marked() -> list[tuple[psutil.Process, str]]:
    me, mine = os.getpid(), os.geteuid()
    found = []
    for proc in psutil.process_iter(["uids"]):
        try:
            if proc.pid == me or proc.info["uids"].real != mine:
                continue
            marker = proc.environ().get(MARKER)
            if marker and proc.status() != psutil.STATUS_ZOMBIE:
                found.append((proc, marker))
        except psutil.Error:
            continue
    return found


def stop(records: Iterable[ProcessRecord], grace: float = 10.0) -> None:
    """SIGTERM each process group, then SIGKILL whatever is left after ``grace`` seconds."""
    alive = [r for r in records if is_alive(r)]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for record in alive:
            _signal_group(record.pid, sig)
        deadline = time.monotonic() + (grace if sig == signal.SIGTERM else 5)
        while alive and time.monotonic() < deadline:
            time.sleep(0.05)
            alive = [r for r in alive if is_alive(r) or _group_alive(r.pid)]
        if not alive:
            return


def kill(procs: Iterable[psutil.Process]) -> None:
    """SIGKILL processes found by :func:`find_by_marker` (with their process groups)."""
    procs = list(procs)
    for proc in procs:
        with contextlib.suppress(psutil.Error, OSError):
            if os.getpgid(proc.pid) == proc.pid:
                _signal_group(proc.pid, signal.SIGKILL)
            proc.kill()
    psutil.wait_procs(procs, timeout=5)


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    """Whether any live (non-zombie) process remains in the process group."""
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, psutil.Error):
            continue
    return False


def log_lines(path: str | Path, follow_while: Callable[[], bool] | None = None) -> Iterator[str]:
    """The lines of the log at ``path``; then, while ``follow_while()`` holds, new ones as
    they come. FileNotFoundError if it is missing; :class:`state.BrokenState` if it is not
    a regular file (a symlink, a folder, a FIFO...)."""
    fd = state.open_regular(path)
    with os.fdopen(fd, errors="replace") as f:
        while True:
            line = f.readline()
            if line:
                yield line.rstrip("\n")
            elif follow_while is not None and follow_while():
                time.sleep(0.2)
            else:
                return


def tail(path: str | Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a log file ("" if it is missing or unreadable)."""
    try:
        fd = state.open_regular(path)
    except (OSError, state.BrokenState):
        return ""
    with os.fdopen(fd, "rb") as f:
        size = os.fstat(fd).st_size
        f.seek(max(size - 65536, 0))
        text = f.read(65536).decode(errors="replace")
    return "\n".join(text.splitlines()[-lines:])
