"""The shared working folder (``share-dir``): one folder the scheduler, every worker and the
notebook see at the client's absolute path and start in, so a relative path
(``bag.to_textfiles("data/*.json")``, ``pd.read_csv("sales.csv")``) names the same file in
all of them.

On the container backends (docker, compose, swarm) it is a host folder, mounted read-write
at its own path; the containers run as the folder's owner and group, so what they write is
owned like the folder's other files. A folder owned by root is refused: the containers never
run as root (a task running as root could leave a set-uid-root program in a folder the host
shares). On local it is the workers' working folder. On Kubernetes it is a
PersistentVolumeClaim, ``pvc:NAME``, mounted at :data:`CLAIM_MOUNT` in every pod.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from clusterctl.errors import SpecError, UserInputError

if TYPE_CHECKING:
    from clusterctl.spec import ClusterSpec

logger = logging.getLogger(__name__)

CLAIM_PREFIX = "pvc:"
CLAIM_MOUNT = "/share"  # where pods mount the claim, and start
_CLAIM_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?\Z")  # a DNS subdomain
_CONTAINERS = ("docker", "compose", "swarm")


@dataclass(frozen=True)
class HostShare:
    """A share-dir on the host as the containers get it: the folder and its owner."""

    folder: str
    uid: int
    gid: int


def check(value: Any, backend: str, stored: bool) -> str | None:
    """The spec's ``share-dir``: an absolute, resolved host folder, ``pvc:NAME`` on
    Kubernetes, or None. A stored spec's folder is not looked for again."""
    from clusterctl.spec import check_mount_source, describe, os_bytes, shorten

    if value is None:
        return None
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value:
        raise SpecError(f"share-dir: must be a folder path (or pvc:NAME), got {describe(value)}")
    os_bytes(value, "share-dir")
    if value.startswith(CLAIM_PREFIX):
        claim = value[len(CLAIM_PREFIX) :]
        if backend != "kubernetes":
            raise SpecError(
                f"share-dir: a PersistentVolumeClaim ({shorten(value)}) is for the kubernetes "
                f"backend; on {backend} give a folder of this machine"
            )
        if not _CLAIM_NAME.match(claim):
            raise SpecError(
                f"share-dir: {shorten(claim)!r} is not a PersistentVolumeClaim name (lowercase "
                "letters, digits, '-' and '.', at most 253)"
            )
        return value
    if backend == "kubernetes":
        raise SpecError(
            "share-dir: folders of this machine are not on Kubernetes nodes; give a "
            "PersistentVolumeClaim as pvc:NAME (mounted at /share in every pod)"
        )
    if stored:
        return value
    folder = os.path.realpath(os.path.expanduser(value))
    if not os.path.isdir(folder):
        raise SpecError(f"share-dir: {shorten(folder)} does not exist or is not a folder")
    if ":" in folder:
        raise SpecError(f"share-dir: a path with ':' can't be mounted ({shorten(folder)})")
    check_mount_source(folder, "share-dir", writable=True)
    if backend in _CONTAINERS:
        uid = os.stat(folder).st_uid
        _check_owner(folder, uid, SpecError)
        if os.geteuid() == 0:
            logger.warning(
                "share-dir: you are root and %s is uid %d's: a folder this process makes "
                "there (to_textfiles makes its output's) is root's, and the containers, "
                "running as uid %d, can't write in it; run the client as the folder's owner",
                folder,
                uid,
                uid,
            )
    return folder


def _check_owner(folder: str, uid: int, error: type[Exception]) -> None:
    """Refuse a folder the containers can't run in as its owner."""
    if uid == 0:
        raise error(
            f"share-dir: {folder} is owned by root, and the containers that run in it as its "
            "owner never run as root (a task could leave a set-uid-root program there); use a "
            "folder a user owns, or `chown` this one"
        )
    me = os.geteuid()
    if me not in (0, uid):
        raise error(
            f"share-dir: {folder} belongs to uid {uid}, not to you (uid {me}): the containers "
            "run as the folder's owner, and only you or root can hand them this cluster's "
            "certificates; use a folder of your own"
        )


def host_share(spec: ClusterSpec) -> HostShare | None:
    """The spec's host share-dir and its owner now, or None (no share-dir, or a claim).
    Containers are started only in a folder that is there and owned as allowed."""
    folder = spec.share_dir
    if folder is None or folder.startswith(CLAIM_PREFIX):
        return None
    try:
        info = os.stat(folder)
    except OSError as exc:
        raise UserInputError(f"share-dir: {folder} can't be mounted ({exc.strerror})") from None
    _check_owner(folder, info.st_uid, UserInputError)
    return HostShare(folder, info.st_uid, info.st_gid)


def working_dir(spec: ClusterSpec) -> str | None:
    """Where the cluster's processes start: the share-dir (a claim's mount point), or None."""
    if spec.share_dir is None:
        return None
    return CLAIM_MOUNT if spec.share_dir.startswith(CLAIM_PREFIX) else spec.share_dir


def claim(spec: ClusterSpec) -> str | None:
    """The PersistentVolumeClaim the spec shares, or None."""
    folder = spec.share_dir
    return folder[len(CLAIM_PREFIX) :] if folder and folder.startswith(CLAIM_PREFIX) else None
