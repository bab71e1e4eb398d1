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
) -> ClusterSpec:
    """A validated spec: dask.config, then the spec file, then these arguments.

    ``workers`` sets the size of the first worker group; ``threads`` and
    ``memory_limit`` apply to every group.
    """
    from clusterctl.errors import SpecError
    from clusterctl.spec import ClusterSpec, describe, load_spec

    if not isinstance(spec, (str, os.PathLike, ClusterSpec, type(None))):
        raise SpecError(f"spec: must be a spec file path or a ClusterSpec, got {describe(spec)}")
    overrides: dict[str, Any] = {}
    for key, value in (("name", name), ("backend", backend)):
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
    """Start a cluster and return it; it keeps running after this process exits.

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


def new_cluster(prefix: str = "lab", *, asynchronous: bool = False, **fields: Any) -> Cluster:
    """A new cluster under the first free name ``<prefix>-1``, ``<prefix>-2``... on any free
    ports, removed entirely when closed: dask-labextension's "+ NEW" (its factory, see
    docs/notebooks.md) and anyone else who wants a throwaway cluster. ``fields`` as for
    :func:`up`."""
    from clusterctl.backends import survey

    taken = {found.name for found in survey()}
    name = next(f"{prefix}-{n}" for n in itertools.count(1) if f"{prefix}-{n}" not in taken)
    fields = {"port": 0, "dashboard_port": 0, **fields, "name": name}
    return up(asynchronous=asynchronous, shutdown_on_close=True, **fields)


def from_name(name: str | None = None, asynchronous: bool = False) -> Cluster:
    """Attach to a running cluster (the default one if ``name`` is None)."""
    from clusterctl.cluster import Cluster

    return Cluster.from_name(name or default_name(), asynchronous=asynchronous)


def connect(name: str | None = None, asynchronous: bool = False, **kwargs: Any) -> Client:
    """A ``distributed.Client`` of a running cluster (the default one if ``name`` is None)."""
    from distributed import Client

    from clusterctl.backends import get_cluster
    from clusterctl.security import client_security

    name = name or default_name()
    backend = get_cluster(name)
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
    from clusterctl.backends import get_cluster
    from clusterctl.cluster import Cluster

    name = name or default_name()
    backend = get_cluster(name)
    members = backend.members()
    if any(m.role == "scheduler" and m.running for m in members):
        cluster = Cluster(backend.spec, backend=backend)
        try:
            return {**cluster.describe(), "scheduler_running": True}
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


def list_clusters() -> list[Found]:
    """Every cluster on this machine: name, backend, and status ("running", "stopped" when
    its scheduler is gone, "broken" with the problem when its state can't be read,
    "unreachable" when its engine does not answer)."""
    from clusterctl.backends import survey

    return survey()


async def discover() -> AsyncIterator[tuple[str, type]]:
    """dask-ctl's ``dask_cluster_discovery`` entry point: ``(name, Cluster)`` pairs."""
    from clusterctl.cluster import Cluster

    for found in list_clusters():
        if found.status == "running":
            yield found.name, Cluster
