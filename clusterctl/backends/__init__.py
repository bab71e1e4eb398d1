"""Backends: where a cluster's scheduler and workers run. See :mod:`.base`.

Discovery reads each cluster on its own: one cluster with a damaged state is reported as
broken, and never keeps ``list``, ``up`` or ``down`` from working on the others.
"""

from __future__ import annotations

import asyncio
import collections
import importlib
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from clusterctl import state
from clusterctl.backends.base import Backend, Member
from clusterctl.errors import ClusterctlError, ClusterNotFound, SpecError
from clusterctl.spec import BACKENDS, ClusterSpec

logger = logging.getLogger(__name__)

ASK_WITHIN = 5.0  # seconds a scheduler has to answer `list`
# Backend name -> "module:Class" (backend "x" is XBackend in clusterctl.backends.x); modules
# are imported only when used.
REGISTRY = {kind: f"clusterctl.backends.{kind}:{kind.capitalize()}Backend" for kind in BACKENDS}


@dataclass(frozen=True)
class Found:
    """A cluster as discovery sees it."""

    name: str
    backend: str
    # "running" | "stopped" (its scheduler is gone) | "broken" | "unreachable" (its engine
    # does not answer) | "starting" (`up` is under way) | "removed" (by its supervisor, with
    # the reason as problem)
    status: str
    problem: str = ""  # why it is broken, unreachable or removed
    # dask-ctl's columns, as far as known: the scheduler's, while it answers
    type: str = "clusterctl.Cluster"
    address: str = ""
    workers: int | None = None
    threads: int | None = None
    memory: int | None = None  # bytes: the workers' memory limits added up
    created: float | None = None  # seconds since the epoch
    removed: float | None = None  # status "removed" (`list --all`): when, since the epoch


def backend_class(kind: str) -> type[Backend]:
    """The backend class for ``kind`` (a spec's ``backend`` field)."""
    try:
        target = REGISTRY[kind]
    except KeyError:
        raise SpecError(
            f"backend: {kind!r} is not available in this version; available: {', '.join(REGISTRY)}"
        ) from None
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)


def find_all(name: str) -> list[Backend]:
    """The backends holding anything of cluster ``name`` (usually one; broken ones too)."""
    backends = (backend_class(kind).attach(name) for kind in REGISTRY)
    return [backend for backend in backends if backend is not None]


def find_cluster(name: str) -> Backend | None:
    """The backend of cluster ``name``, whichever backend it is on (it may be broken)."""
    found = find_all(name)
    usable = [b for b in found if b.problem is None]
    return (usable or found or [None])[0]


def get_cluster(name: str) -> Backend:
    """The backend of the usable cluster ``name``; a clear error if there is none."""
    backend = find_cluster(name)
    if backend is None:
        raise ClusterNotFound(f"no running cluster named {name!r} (see `clusterctl list`)")
    if backend.unreachable:
        raise ClusterctlError(f"cluster {name!r} can't be reached: {backend.problem}")
    if backend.problem:
        if starting(name):
            raise ClusterctlError(f"cluster {name!r} is still starting; try again in a moment")
        raise ClusterctlError(
            f"cluster {name!r} is broken: {backend.problem}; `clusterctl down {name}` "
            "removes what is left of it"
        )
    return backend


def starting(name: str) -> bool:
    """Whether cluster ``name`` is being started right now: its lock is held, and it has no
    supervisor record yet (a start writes one last; orchestrated backends have none)."""
    from clusterctl import supervisor

    if (state.cluster_dir(name) / supervisor.RECORD).exists():
        return False
    return state.is_locked(name)


def require_scheduler_running(backend: Backend) -> None:
    """An error unless the cluster's own scheduler process or container runs: its port alone
    proves nothing (another user's scheduler may have taken it since ours died)."""
    for member in backend.members():
        if member.role == "scheduler" and not member.running:
            name = backend.spec.name
            raise ClusterctlError(
                f"the scheduler of cluster {name!r} is not running (it stopped or crashed); "
                f"remove what is left with `clusterctl down {name}`"
            )


def cluster_names() -> set[str]:
    """The names every backend knows here (running, stopped or remains); reads names only,
    never asks a scheduler."""
    return {name for kind in REGISTRY for name in backend_class(kind).cluster_names()}


def survey() -> list[Found]:
    """Every cluster of every backend on this machine, each read on its own."""
    found = []
    for kind in REGISTRY:
        cls = backend_class(kind)
        for name in cls.cluster_names():
            found.append(_inspect(cls, name))
    return [f for f in found if f is not None]


def _inspect(cls: type[Backend], name: str) -> Found | None:
    try:
        backend = cls.attach(name)
        if backend is None:  # gone since it was listed
            return None
        if backend.problem:
            if not backend.unreachable and starting(name):
                return Found(name, cls.kind, "starting", created=state.created(name))
            status = "unreachable" if backend.unreachable else "broken"
            return Found(name, cls.kind, status, backend.problem)
        created = state.created(name)
        members = backend.members()
        if not any(m.role == "scheduler" and m.running for m in members):
            status = "starting" if starting(name) else "stopped"
            return Found(name, cls.kind, status, created=created)
        address = backend.scheduler_address()
        return Found(
            name,
            cls.kind,
            "running",
            _crash_loops(name, members),
            address=address,
            created=created,
            **_scheduler_counts(address, backend.spec),
        )
    except Exception as exc:  # reported, never in the way of the other clusters
        logger.debug("reading cluster %s failed", name, exc_info=True)
        if starting(name):  # its scheduler has not written its address yet
            return Found(name, cls.kind, "starting", created=state.created(name))
        return Found(name, cls.kind, "broken", f"{type(exc).__name__}: {exc}"[:300])


def _crash_loops(name: str, members: list[Member]) -> str:
    """Its groups whose workers die while starting, as ``status`` tells them ("" if none)."""
    from clusterctl import crashloop, supervisor

    running = collections.Counter(m.group for m in members if m.role == "worker" and m.running)
    return "; ".join(crashloop.summary(supervisor.crash_loops(name), running))


def _scheduler_counts(address: str, spec: ClusterSpec) -> dict[str, int]:
    """Workers, threads and memory limits (bytes) the scheduler at ``address`` counts; {}
    when it does not answer within ASK_WITHIN seconds (also when called from inside a
    running event loop: dask-ctl's discovery is a coroutine)."""
    from distributed.core import rpc

    from clusterctl.security import client_security

    async def ask() -> dict[str, Any]:
        args = client_security(spec.name, spec.security.tls).get_connection_args("client")
        async with rpc(address, connection_args=args) as scheduler:
            return await scheduler.identity()

    with ThreadPoolExecutor(1) as thread:
        try:  # also without this machine's client certificates (a lost state folder)
            identity = thread.submit(asyncio.run, asyncio.wait_for(ask(), ASK_WITHIN)).result()
        except Exception:  # the counts go blank; the cluster is still listed as running
            logger.debug("the scheduler at %s did not answer", address, exc_info=True)
            return {}
    workers = identity["workers"].values()
    return {
        "workers": len(workers),
        "threads": sum(w["nthreads"] for w in workers),
        "memory": sum(w["memory_limit"] or 0 for w in workers),
    }


__all__ = [
    "REGISTRY",
    "Backend",
    "Found",
    "Member",
    "backend_class",
    "find_all",
    "find_cluster",
    "get_cluster",
    "require_scheduler_running",
    "survey",
]
