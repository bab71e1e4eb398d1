"""Where clusterctl keeps per-cluster facts on this machine, and what it trusts there.

``$XDG_STATE_HOME/clusterctl/<name>/`` (default ``~/.local/state/clusterctl/<name>/``)
holds one cluster's spec, process records, logs, certificates and lock.

Trust: the root must be a folder of this user's that no one else may write (a relative
``XDG_STATE_HOME`` is ignored, as the XDG specification says); cluster folders are 0700;
files are created 0600, written atomically, and opened without following symlinks. So
another account on a shared machine can neither plant a file that clusterctl writes
through, nor read a certificate or a token.

Every change to a cluster happens under its lock (:func:`locked`), a ``flock`` shared by
every process of this user: two ``up`` of one name, ``down`` racing ``scale``, and the
supervisor's repairs never interleave.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import stat
import sys
import tempfile
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from clusterctl import waiting
from clusterctl.errors import ClusterctlError, UserInputError

LOCK = ".lock"
SPEC = "spec.json"
PYTHON = "python.json"  # {executable}: the interpreter `up` ran, which runs all our processes
REMOVED = ".removed"  # in the root (not a cluster name): records of clusters removed for us
REMOVED_KEPT, REMOVED_DAYS = 20, 7  # the newest 20 records of the last 7 days are kept
REMOVED_LINES, REMOVED_LINE_CHARS = 40, 300  # of a removed cluster's last log lines
LOCK_TIMEOUT = 600.0  # seconds to wait for a cluster another command is changing
MAX_FILE = 1 << 20  # bytes: no state file of ours is near this; a bigger one is not ours


class StateError(UserInputError):
    """The state folder can't be used safely (CLI exit status 2)."""


class BrokenState(ClusterctlError):
    """A file in a cluster's folder is not what clusterctl wrote there."""


def root() -> Path:
    """``$XDG_STATE_HOME/clusterctl`` (``~/.local/state/clusterctl`` when that is unset or
    relative). Not checked: see :func:`checked_root`."""
    base = os.environ.get("XDG_STATE_HOME", "")
    folder = Path(base) if os.path.isabs(base) else Path.home() / ".local" / "state"
    return folder / "clusterctl"


def checked_root(create: bool = False) -> Path | None:
    """The state root, made 0700 if ``create``; None if it doesn't exist.

    Refused (:class:`StateError`) when it is not a folder, is owned by someone else, or
    may be written by others: a shared ``XDG_STATE_HOME`` must not let another user plant
    files there. One that others may only read is closed (chmod 700).
    """
    path = root()
    try:
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):
                path.mkdir(mode=0o700)
        link, target = os.lstat(path), os.stat(path)
    except FileNotFoundError:
        if create:
            raise StateError(f"state folder {path}: it vanished while being made") from None
        return None
    except OSError as exc:
        raise StateError(
            f"state folder {path}: unusable ({exc.strerror}); set XDG_STATE_HOME to a folder "
            "of yours"
        ) from None
    if not stat.S_ISDIR(target.st_mode):
        raise StateError(f"state folder {path}: not a folder; set XDG_STATE_HOME elsewhere")
    me = os.geteuid()
    if link.st_uid not in (me, 0) or target.st_uid != me:
        raise StateError(
            f"state folder {path}: owned by uid {target.st_uid}, not by you (uid {me}); "
            "someone else made it. Set XDG_STATE_HOME to a folder of yours"
        )
    if target.st_mode & 0o022:
        raise StateError(
            f"state folder {path}: other users may write to it (mode "
            f"{stat.S_IMODE(target.st_mode):o}); check what is inside, then `chmod 700 {path}`"
        )
    if target.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def cluster_dir(name: str) -> Path:
    """Where cluster ``name``'s folder is (not made, not checked)."""
    from clusterctl.spec import check_cluster_name

    return root() / check_cluster_name(name)


def make_cluster_dir(name: str) -> Path:
    """Cluster ``name``'s folder, made 0700 if missing; refused if it is not ours."""
    checked_root(create=True)
    folder = cluster_dir(name)
    with contextlib.suppress(FileExistsError):
        folder.mkdir(mode=0o700)
    info = os.lstat(folder)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        raise BrokenState(f"{folder}: not a folder of yours; remove it, then try again")
    return folder


def names() -> list[str]:
    """Names of the folders in the state root (each a cluster, or what is left of one)."""
    from clusterctl.spec import is_cluster_name

    folder = checked_root()
    if folder is None:
        return []
    return sorted(p.name for p in folder.iterdir() if is_cluster_name(p.name) and _is_real_dir(p))


def claim_free_name(prefix: str, taken: Collection[str] = ()) -> str:
    """Make the folder of the first name ``<prefix>-N`` not in ``taken`` that has none yet,
    and return the name. Making a folder is atomic: of processes claiming at once, each
    gets a name of its own. The caller starts its cluster there (or :func:`unclaim`s it)."""
    folder = checked_root(create=True)
    n = 0
    while True:
        n += 1
        name = f"{prefix}-{n}"
        if name in taken:
            continue
        try:
            (folder / name).mkdir(mode=0o700)
        except FileExistsError:
            continue
        return name


def unclaim(name: str) -> None:
    """Remove cluster ``name``'s folder if nothing was put in it (a claim not used)."""
    with contextlib.suppress(OSError):
        cluster_dir(name).rmdir()


def stored_backend(name: str) -> str | None:
    """The ``backend`` of the spec in cluster ``name``'s folder (``spec.json``, written first
    by ``up`` for every backend); None when it is missing or unreadable."""
    try:
        data = read_json(cluster_dir(name) / SPEC)
    except BrokenState:
        return None
    return data.get("backend") if isinstance(data, dict) else None


def record_interpreter(name: str) -> None:
    """Record this process's interpreter as cluster ``name``'s (``up`` does): every process
    clusterctl starts for it on this machine runs that one, whichever virtualenv a later
    command runs in."""
    write_json(cluster_dir(name) / PYTHON, {"executable": sys.executable})


def interpreter(name: str) -> str:
    """The interpreter cluster ``name``'s processes run (:func:`record_interpreter`); this
    process's for a cluster made before it was recorded. An error when it is gone."""
    try:
        data = read_json(cluster_dir(name) / PYTHON)
    except BrokenState:
        data = None
    path = data.get("executable") if isinstance(data, dict) else None
    if not isinstance(path, str) or not path:
        return sys.executable
    if not os.access(path, os.X_OK):
        raise ClusterctlError(
            f"cluster {name!r} was started with the Python at {path}, which is gone (a "
            f"removed virtualenv?); `clusterctl down {name}`, then `up` it again"
        )
    return path


def created(name: str) -> float | None:
    """When cluster ``name`` was made (its ``spec.json`` written by ``up``, seconds since the
    epoch); None when it is missing."""
    try:
        return (cluster_dir(name) / SPEC).lstat().st_mtime
    except OSError:
        return None


def remove(name: str) -> None:
    """Empty cluster ``name``'s folder but for its lock, which the caller holds; releasing
    that lock then removes the folder."""
    folder = cluster_dir(name)
    try:
        entries = [folder / entry for entry in os.listdir(folder) if entry != LOCK]
    except FileNotFoundError:
        return
    for path in entries:
        discard(path)


def record_removal(name: str, backend: str, reason: str, log: list[str]) -> None:
    """Keep a record that cluster ``name`` was removed, why, and the last lines of its logs
    (its folder, logs included, is gone): for a removal no one asked for by ``down``, such
    as the supervisor's at the idle-timeout. Only the newest records are kept."""
    folder = _removed_dir()
    stamp = time.time_ns()  # orders the records, to the nanosecond
    now = stamp / 1e9
    record = {
        "name": name,
        "backend": backend,
        "removed": now,
        "reason": reason,
        "log": [line[:REMOVED_LINE_CHARS] for line in log[-REMOVED_LINES:]],
    }
    write_json(folder / f"{stamp}-{name}.json", record)
    kept = sorted(folder.glob("*.json"), key=_record_order, reverse=True)
    for n, path in enumerate(kept):
        if n >= REMOVED_KEPT or _record_order(path) < stamp - REMOVED_DAYS * 86400 * 10**9:
            discard(path)


def removals() -> list[dict[str, Any]]:
    """The records :func:`record_removal` kept, oldest first (unreadable ones left out)."""
    root_folder = checked_root()
    folder = root_folder / REMOVED if root_folder else None
    if folder is None or not _is_real_dir(folder):
        return []
    found = []
    for path in sorted(folder.glob("*.json"), key=_record_order):
        try:
            data = read_json(path)
        except BrokenState:
            continue
        fields = {"name": str, "backend": str, "removed": (int, float), "reason": str, "log": list}
        if isinstance(data, dict) and all(isinstance(data.get(k), t) for k, t in fields.items()):
            found.append(data)
    return found


def _removed_dir() -> Path:
    folder = checked_root(create=True) / REMOVED
    with contextlib.suppress(FileExistsError):
        folder.mkdir(mode=0o700)
    if not _is_real_dir(folder):
        raise BrokenState(f"{folder}: not a folder, where clusterctl keeps records; remove it")
    return folder


def _record_order(path: Path) -> int:
    """When a removal record was written (ns since the epoch), from its name."""
    stamp = path.name.partition("-")[0]
    return int(stamp) if stamp.isdigit() else 0


# --- files --------------------------------------------------------------------------------


def write_text(path: Path, text: str) -> None:
    """Write ``text`` atomically, readable by the owner only; a full disk leaves nothing."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")  # 0600, O_EXCL
    except OSError as exc:
        raise _write_error(path, exc) from None
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise _write_error(path, exc) from None
        raise


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically, readable by the owner only."""
    write_text(path, json.dumps(data, indent=1))


def open_regular(path: Path | str, flags: int = os.O_RDONLY, mode: int = 0o600) -> int:
    """A file descriptor of the regular file at ``path``, opened with ``flags`` (made
    ``mode`` with ``os.O_CREAT``); the one way clusterctl opens a file in its folders.

    Anything else there is :class:`BrokenState`, at once: a symlink (never followed), a
    folder, a FIFO (opened without blocking, so a FIFO no one writes never hangs a
    command), a socket or a device. A missing file (without ``O_CREAT``) is
    ``FileNotFoundError``.
    """
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    except FileNotFoundError:
        raise
    except OSError as exc:
        kind = kind_of_path(path)
        raise BrokenState(
            f"{path}: {_not_regular(kind) if kind else f'cannot open it ({_reason(exc)})'}"
        ) from None
    mode_found = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode_found):
        os.close(fd)
        raise BrokenState(f"{path}: {_not_regular(_kind_of(mode_found))}")
    os.set_blocking(fd, True)
    return fd


def discard(path: Path) -> None:
    """Remove whatever is at ``path`` (a folder with what it holds), never following a
    symlink; nothing if nothing is there."""
    if _is_real_dir(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def read_text(path: Path) -> str | None:
    """A file's text, None if it is missing; never through a symlink, never a huge file."""
    try:
        fd = open_regular(path)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as f:
        data = f.read(MAX_FILE + 1)
    if len(data) > MAX_FILE:
        raise BrokenState(f"{path}: larger than {MAX_FILE} bytes, so not written by clusterctl")
    return data.decode("utf-8", errors="replace")


def read_json(path: Path) -> Any | None:
    """The JSON in ``path``, None if it is missing; :class:`BrokenState` if it is not JSON
    (half-written by a crash, or edited)."""
    text = read_text(path)
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        raise BrokenState(f"{path}: not valid JSON (half-written, or edited)") from None


def open_log(path: Path) -> int:
    """A file descriptor appending to ``path`` (made 0600), never through a symlink."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        return open_regular(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    except OSError as exc:
        raise BrokenState(f"{path}: cannot open the log ({_reason(exc)})") from None


# --- the lock -----------------------------------------------------------------------------


@contextmanager
def locked(name: str, timeout: float = LOCK_TIMEOUT) -> Iterator[Path]:
    """Hold cluster ``name``'s lock; yields its folder (made if missing).

    The lock file lives in the cluster's folder. A folder left holding nothing but the
    lock (after ``down``, or a refused ``up``) is removed on release, lock included; a
    command that was waiting for it then locks the folder made anew.
    """
    while True:
        folder = make_cluster_dir(name)
        fd = open_regular(folder / LOCK, os.O_RDWR | os.O_CREAT)
        try:
            waiting.until(
                lambda fd=fd: _try_lock(fd),
                timeout=timeout,
                interval=0.05,
                what=f"cluster {name!r} is being changed by another clusterctl command "
                "(or its supervisor); waited for it to finish",
            )
        except BaseException:
            os.close(fd)
            raise
        if _same_file(fd, folder / LOCK):
            break
        os.close(fd)  # the folder was removed while we waited
    try:
        yield folder
    finally:
        try:
            if os.listdir(folder) == [LOCK]:
                shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            pass
        finally:
            os.close(fd)


def is_locked(name: str) -> bool:
    """Whether a command (or a supervisor) holds cluster ``name``'s lock right now."""
    try:
        fd = open_regular(cluster_dir(name) / LOCK, os.O_RDWR)
    except (OSError, BrokenState):
        return False
    try:
        if not _try_lock(fd):
            return True
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _same_file(fd: int, path: Path) -> bool:
    try:
        on_disk = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (on_disk.st_dev, on_disk.st_ino)


def _is_real_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


_KINDS = (
    (stat.S_ISLNK, "a symlink"),
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def _kind_of(mode: int) -> str:
    return next((kind for test, kind in _KINDS if test(mode)), "not a regular file")


def kind_of_path(path: Path | str) -> str | None:
    """What is at ``path`` when it is not a regular file, as a phrase ("a FIFO (named
    pipe)"); None for a regular file, or nothing."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return None
    return None if stat.S_ISREG(mode) else _kind_of(mode)


def check_regular(path: Path | str) -> None:
    """:class:`BrokenState` when something other than a regular file is at ``path``
    (nothing there is fine): for files that others open, such as certificates."""
    if kind := kind_of_path(path):
        raise BrokenState(f"{path}: {_not_regular(kind)}")


def _not_regular(kind: str) -> str:
    return f"is {kind}, where clusterctl keeps a regular file; remove it"


def _reason(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "it is a symlink, which clusterctl never follows"
    return exc.strerror or str(exc)


def _write_error(path: Path, exc: OSError) -> ClusterctlError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return ClusterctlError(f"cannot write {path}: the disk is full; nothing was changed")
    return ClusterctlError(f"cannot write {path}: {_reason(exc)}")
