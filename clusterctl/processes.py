"""Detached OS processes: start them so they outlive us, recognise them, stop them.

A process is identified by its pid *and* its start time, so a recycled pid is never
mistaken for ours.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil


@dataclass(frozen=True)
class ProcessRecord:
    pid: int
    started: float
    log: str

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> ProcessRecord:
        return cls(pid=int(data["pid"]), started=float(data["started"]), log=str(data["log"]))


def spawn(command: list[str], log: Path, env: Mapping[str, str] | None = None) -> ProcessRecord:
    """Start ``command`` in its own session, output appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            start_new_session=True,
        )
    try:
        started = psutil.Process(proc.pid).create_time()
    except psutil.NoSuchProcess:
        started = 0.0
    return ProcessRecord(pid=proc.pid, started=started, log=str(log))


def is_alive(record: ProcessRecord) -> bool:
    try:
        proc = psutil.Process(record.pid)
        return proc.create_time() == record.started and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


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


def tail(path: str | Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a log file ("" if it is missing)."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
