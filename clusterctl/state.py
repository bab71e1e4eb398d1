"""Where clusterctl keeps per-cluster facts on this machine (XDG state dir)."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def root() -> Path:
    """``$XDG_STATE_HOME/clusterctl`` (default ``~/.local/state/clusterctl``)."""
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "clusterctl"


def cluster_dir(name: str) -> Path:
    return root() / name


def names() -> list[str]:
    """Names of the clusters that have a state folder here."""
    if not root().is_dir():
        return []
    return sorted(p.name for p in root().iterdir() if p.is_dir())


def remove(name: str) -> None:
    shutil.rmtree(cluster_dir(name), ignore_errors=True)


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically, readable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)


def read_json(path: Path) -> Any | None:
    """The JSON in ``path``, or None if it is missing or half-written."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


@contextmanager
def locked(name: str) -> Iterator[None]:
    """Hold cluster ``name``'s lock, shared by every process on this machine: scaling and
    the supervisor's repairs never interleave."""
    folder = cluster_dir(name)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(folder / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
