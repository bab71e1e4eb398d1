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
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from clusterctl import waiting
from clusterctl.errors import ClusterctlError, UserInputError

LOCK = ".lock"
SPEC = "spec.json"
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


def stored_backend(name: str) -> str | None:
    """The ``backend`` of the spec in cluster ``name``'s folder (``spec.json``, written first
    by ``up`` for every backend); None when it is missing or unreadable."""
    try:
        data = read_json(cluster_dir(name) / SPEC)
    except BrokenState:
        return None
    return data.get("backend") if isinstance(data, dict) else None


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
        if _is_real_dir(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


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


def read_text(path: Path) -> str | None:
    """A file's text, None if it is missing; never through a symlink, never a huge file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BrokenState(f"{path}: cannot read it ({_reason(exc)})") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise BrokenState(f"{path}: not a regular file")
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
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(path, flags, 0o600)
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
        fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
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


def _reason(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "it is a symlink, which clusterctl never follows"
    return exc.strerror or str(exc)


def _write_error(path: Path, exc: OSError) -> ClusterctlError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return ClusterctlError(f"cannot write {path}: the disk is full; nothing was changed")
    return ClusterctlError(f"cannot write {path}: {_reason(exc)}")
