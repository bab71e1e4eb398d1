"""The labels clusterctl puts on everything it makes, and the filters that find it again.

Containers, networks, volumes, swarm services and secrets, and Kubernetes objects all carry
them; discovery and clean-up trust nothing else (never a name).
"""

from __future__ import annotations

import json

from clusterctl.spec import ClusterSpec

CLUSTER = "io.clusterctl.cluster"
ROLE = "io.clusterctl.role"
GROUP = "io.clusterctl.group"
BACKEND = "io.clusterctl.backend"
SPEC = "io.clusterctl.spec"  # on the scheduler: the spec the cluster was started with


def of(
    cluster: str, kind: str | None = None, role: str | None = None, group: str | None = None
) -> dict[str, str]:
    """The labels of an object of ``cluster`` (made by backend ``kind``, in ``role``, of
    worker group ``group``)."""
    labels = {CLUSTER: cluster}
    if kind:
        labels[BACKEND] = kind
    if role:
        labels[ROLE] = role
    if group:
        labels[GROUP] = group
    return labels


def filters(kind: str, name: str | None = None, role: str | None = None) -> dict[str, list[str]]:
    """The engine's filter for what backend ``kind`` made (of cluster ``name``, in ``role``)."""
    labels = [f"{BACKEND}={kind}", f"{CLUSTER}={name}" if name else CLUSTER]
    if role:
        labels.append(f"{ROLE}={role}")
    return {"label": labels}


def spec_of(
    labels: dict[str, str], name: str, kind: str, where: str
) -> tuple[ClusterSpec, str | None]:
    """The spec in the labels of cluster ``name``'s scheduler; when it can't be read (a
    garbled or edited label), a placeholder and the reason, so the cluster can be removed."""
    try:
        spec = ClusterSpec.from_dict(json.loads(labels[SPEC]), source=f"cluster {name!r}")
    except Exception as exc:  # anything may be in a label: report it, never fail on it
        reason = f"{type(exc).__name__}: {exc}"[:300]
        return ClusterSpec.placeholder(name, kind), f"{where}'s spec label is unreadable ({reason})"
    if spec.name != name or spec.backend != kind:
        problem = f"{where}'s spec label names cluster {spec.name!r} on {spec.backend}"
        return ClusterSpec.placeholder(name, kind), problem
    return spec, None
