"""Backends: where a cluster's scheduler and workers run. See :mod:`.base`."""

from __future__ import annotations

import importlib

from clusterctl.backends.base import Backend, Member
from clusterctl.errors import SpecError

# Backend name -> "module:Class"; modules are imported only when used.
REGISTRY = {
    "local": "clusterctl.backends.local:LocalBackend",
    "docker": "clusterctl.backends.docker:DockerBackend",
    "compose": "clusterctl.backends.compose:ComposeBackend",
    "swarm": "clusterctl.backends.swarm:SwarmBackend",
    "kubernetes": "clusterctl.backends.kubernetes:KubernetesBackend",
}


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


def find_cluster(name: str) -> Backend | None:
    """The backend of the running cluster ``name``, whichever backend it is on."""
    for kind in REGISTRY:
        cls = backend_class(kind)
        if name in cls.cluster_names():
            return cls.attach(name)
    return None


def all_clusters() -> list[tuple[str, str]]:
    """``(name, backend)`` of every running cluster on this machine."""
    return [(name, kind) for kind in REGISTRY for name in backend_class(kind).cluster_names()]


__all__ = ["REGISTRY", "Backend", "Member", "all_clusters", "backend_class", "find_cluster"]
