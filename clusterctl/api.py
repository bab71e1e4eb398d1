"""The public face: ``up()``, ``connect()``, ``down()``, ``list_clusters()``, discovery."""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from distributed import Client

    from clusterctl.backends import Found
    from clusterctl.cluster import Cluster
    from clusterctl.spec import ClusterSpec


def default_name() -> str:
    """The cluster name used when none is given (``clusterctl.name`` in dask.config)."""
    import dask.config

    from clusterctl import config  # noqa: F401

    return dask.config.get("clusterctl.name")


def build_spec(
    spec: str | os.PathLike[str] | ClusterSpec | None = None,
    *,
    name: str | None = None,
    backend: str | None = None,
    workers: int | None = None,
    threads: int | None = None,
    memory_limit: str | int | float | None = None,
    host: str | None = None,
    port: int | None = None,
    dashboard_port: int | None = None,
    notebook: bool | None = None,
    notebook_port: int | None = None,
    tls: bool | None = None,
    share_dir: str | os.PathLike[str] | None = None,
) -> ClusterSpec:
    """A validated spec: dask.config, then the spec file, then these arguments.

    ``workers`` sets the size of the first worker group; ``threads`` and
    ``memory_limit`` apply to every group. ``share_dir``: a folder (relative to this
    process's working folder) the scheduler, workers and notebook share and start in; on
    Kubernetes ``"pvc:NAME"``.
    """
    from clusterctl.errors import SpecError
    from clusterctl.spec import ClusterSpec, describe, load_spec

    if not isinstance(spec, (str, os.PathLike, ClusterSpec, type(None))):
        raise SpecError(f"spec: must be a spec file path or a ClusterSpec, got {describe(spec)}")
    overrides: dict[str, Any] = {}
    for key, value in (("name", name), ("backend", backend), ("share_dir", share_dir)):
        if value is not None:
            overrides[key] = value
    scheduler = {"host": host, "port": port, "dashboard_port": dashboard_port}
    if scheduler := {k: v for k, v in scheduler.items() if v is not None}:
        overrides["scheduler"] = scheduler
    nb = {"enabled": notebook, "port": notebook_port}
    if nb := {k: v for k, v in nb.items() if v is not None}:
        overrides["notebook"] = nb
    if tls is not None:
        overrides["security"] = {"tls": tls}
    worker = {"threads": threads, "memory_limit": memory_limit}
    if worker := {k: v for k, v in worker.items() if v is not None}:
        overrides["worker"] = worker
    if isinstance(spec, ClusterSpec):
        result = load_spec(overrides=overrides, base=spec)
    else:
        result = load_spec(spec, overrides)
    return result if workers is None else result.with_count(None, workers)


def up(
    spec: str | os.PathLike[str] | ClusterSpec | None = None,
    *,
    wait: bool = True,
    asynchronous: bool = False,
    shutdown_on_close: bool = False,
    **fields: Any,
) -> Cluster:
    """Start a cluster and return it; it keeps running after this process exits, unless
    ``shutdown_on_close``: then closing the object, or this process's exit, removes it.

    ``spec`` is a spec file or a :class:`ClusterSpec`; keyword fields (``name``,
    ``workers``, ``threads``, ``memory_limit``, ``backend``, ``port``...) override it.
    With ``asynchronous=True``, ``await`` the result.
    """
    from clusterctl.cluster import Cluster

    return Cluster(
        build_spec(spec, **fields),
        wait=wait,
        asynchronous=asynchronous,
        shutdown_on_close=shutdown_on_close,
    )


def new_cluster(
    prefix: str = "lab", *, name: str | None = None, asynchronous: bool = False, **fields: Any
) -> Cluster:
    """A new cluster on any free ports, removed entirely when closed or when this process
    exits: dask-labextension's "+ NEW" (its factory, see docs/notebooks.md) and anyone else
    who wants a throwaway cluster. Its name is ``name``, else the first free one of
    ``<prefix>-1``, ``<prefix>-2``..., claimed at once, so that factories running together
    each get their own. ``fields`` as for :func:`up`, and ``idle_timeout`` (None: none);
    without it, the spec's, else :data:`NEW_CLUSTER_IDLE_TIMEOUT`, so that one whose
    process was killed outright does not run on for good."""
    spec = new_cluster_spec(prefix, name=name, claim=name is None, **fields)
    try:
        return up(spec, asynchronous=asynchronous, shutdown_on_close=True)
    except BaseException:
        if name is None:
            from clusterctl import state

            state.unclaim(spec.name)  # when it failed before its start used the folder
        raise


NEW_CLUSTER_IDLE_TIMEOUT = "30m"  # new_cluster's, when neither it nor the spec sets one


def new_cluster_spec(
    prefix: str = "lab", *, name: str | None = None, claim: bool = False, **fields: Any
) -> ClusterSpec:
    """The spec :func:`new_cluster` starts (arguments alike): under ``name``, else under the
    first name ``<prefix>-N`` that no backend knows (read from their names only, never by
    asking a scheduler), which ``claim`` makes this process's own (its folder)."""
    from clusterctl import state
    from clusterctl.backends import cluster_names
    from clusterctl.spec import load_spec

    given = "idle_timeout" in fields
    idle_timeout = fields.pop("idle_timeout", NEW_CLUSTER_IDLE_TIMEOUT)
    # Checked in full (the prefix too) before any name is claimed.
    spec = build_spec(**{"port": 0, "dashboard_port": 0, **fields, "name": name or f"{prefix}-1"})
    if given or spec.idle_timeout is None:
        spec = load_spec(overrides={"idle_timeout": idle_timeout}, base=spec)
    if name is not None:
        return spec
    taken = cluster_names()
    if claim:
        free = state.claim_free_name(prefix, taken)
    else:
        free = next(f"{prefix}-{n}" for n in itertools.count(1) if f"{prefix}-{n}" not in taken)
    return load_spec(overrides={"name": free}, base=spec)


def from_name(name: str | None = None, asynchronous: bool = False) -> Cluster:
    """Attach to a running cluster (the default one if ``name`` is None)."""
    from clusterctl.cluster import Cluster

    return Cluster.from_name(name or default_name(), asynchronous=asynchronous)


def connect(name: str | None = None, asynchronous: bool = False, **kwargs: Any) -> Client:
    """A ``distributed.Client`` of a running cluster (the default one if ``name`` is None)."""
    from distributed import Client

    from clusterctl.backends import get_cluster, require_scheduler_running
    from clusterctl.security import client_security

    name = name or default_name()
    backend = get_cluster(name)
    require_scheduler_running(backend)  # as from_name: never a stranger's on our old port
    kwargs.setdefault("security", client_security(name, backend.spec.security.tls))
    return Client(backend.scheduler_address(), asynchronous=asynchronous, **kwargs)


def down(name: str | None = None) -> bool:
    """Stop a cluster and remove all it left, also of a damaged one; False if nothing of
    that name was found."""
    from clusterctl.backends import find_all
    from clusterctl.cluster import destroy_cluster

    found = find_all(name or default_name())
    for backend in found:
        destroy_cluster(backend)
    return bool(found)


def adapt(
    name: str | None = None,
    minimum: int = 0,
    maximum: int | None = None,
    group: str | None = None,
) -> bool:
    """Have the cluster's supervisor scale ``group`` with the load, between ``minimum`` and
    ``maximum`` workers; ``maximum=None`` turns adaptive scaling off. It outlives this
    process. Returns whether adaptive scaling was on before."""
    from clusterctl import state, supervisor
    from clusterctl.backends import get_cluster
    from clusterctl.errors import UserInputError
    from clusterctl.spec import MAX_WORKERS

    name = name or default_name()
    if maximum is not None and not 0 <= minimum <= maximum <= MAX_WORKERS:
        raise UserInputError(
            f"--minimum/--maximum: need 0 <= minimum <= maximum <= {MAX_WORKERS}, "
            f"got {minimum} and {maximum}"
        )
    with state.locked(name):  # read and changed while no other command changes it
        spec = get_cluster(name).spec
        target = spec.group(group)  # an unknown group is an input error, before anything
        others = sum(g.count for g in spec.workers if g.name != target.name)
        if maximum is not None and others + maximum > MAX_WORKERS:
            raise UserInputError(
                f"--maximum: the other groups run {others} workers, so this one may adapt up "
                f"to {MAX_WORKERS - others} (at most {MAX_WORKERS} in all), not {maximum}"
            )
        was_on = supervisor.adapt_settings(name) is not None
        settings = None if maximum is None else {"minimum": minimum, "maximum": maximum}
        supervisor.set_adapt(name, settings and {**settings, "group": group})
        supervisor.ensure_running(name)
    return was_on


def status(name: str | None = None) -> dict[str, Any]:
    """A report on a cluster; with a dead scheduler, what the backend still sees."""
    from clusterctl.backends import get_cluster, starting
    from clusterctl.cluster import Cluster
    from clusterctl.errors import ClusterctlError
    from clusterctl.security import plaintext_note

    name = name or default_name()
    backend = get_cluster(name)
    if starting(name):  # an `up` under way: its scheduler may not even have an address
        raise ClusterctlError(f"cluster {name!r} is still starting; try again in a moment")
    members = backend.members()
    if any(m.role == "scheduler" and m.running for m in members):
        cluster = Cluster(backend.spec, backend=backend)
        try:
            plaintext = plaintext_note(backend.spec)
            return {**cluster.describe(), "scheduler_running": True, "plaintext": plaintext}
        finally:
            cluster.close()
    return {
        "name": name,
        "backend": backend.kind,
        "scheduler_running": False,
        "workers": [
            {
                "name": m.name,
                "group": m.group,
                "state": "running" if m.running else "exited",
                "detail": m.detail,
            }
            for m in members
            if m.role == "worker"
        ],
    }


def list_clusters(removed: bool = False) -> list[Found]:
    """Every cluster on this machine: name, backend, and status ("running", "stopped" when
    its scheduler is gone, "broken" with the problem when its state can't be read,
    "unreachable" when its engine does not answer). With ``removed``, also the records of
    clusters removed for the user, not by ``down`` (status "removed", the reason as
    ``problem``: see :func:`clusterctl.state.record_removal`)."""
    from clusterctl import state
    from clusterctl.backends import Found, survey

    found = survey()
    if removed:
        found += [
            Found(r["name"], r["backend"], "removed", r["reason"], removed=r["removed"])
            for r in state.removals()
        ]
    return found


def last_removal(name: str) -> dict[str, Any] | None:
    """The record of cluster ``name``'s last removal not by ``down`` (when, why, its last
    log lines: see :func:`clusterctl.state.record_removal`), if one is kept."""
    from clusterctl import state

    return next((r for r in reversed(state.removals()) if r["name"] == name), None)


async def discover() -> AsyncIterator[tuple[str, type]]:
    """dask-ctl's ``dask_cluster_discovery`` entry point: ``(name, DiscoveredCluster)``
    pairs, whose ``close()`` stops the cluster, as dask-ctl's delete expects."""
    from clusterctl.discovery import DiscoveredCluster

    for found in list_clusters():
        if found.status == "running":
            yield found.name, DiscoveredCluster
