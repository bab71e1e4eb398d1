"""How much memory each worker gets: the one place that sizes workers against the hosts
that run them. Pure; the controller asks it before it starts workers.

``memory-limit: auto`` divides a host's memory among the workers that host runs, as
``LocalCluster`` divides the machine among its workers (distributed's own ``auto`` is per
process, memory x threads / cores, so three 1-thread workers on 2 cores promise 1.5x the
machine). Workers with an explicit size (or fraction) take theirs first; the ``auto`` ones
share what is left. The share is handed to the worker as a fraction of its host's memory
(``--memory-limit 0.333333``), which ``dask worker`` sizes against the memory it sees
itself: this machine's, the engine's machine's in a container without a memory limit, the
node's on a swarm. A container gets no hard memory limit from ``auto`` (only from a size).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from clusterctl.spec import MIN_WORKER_MEMORY, WorkerGroup

PRECISION = 10**6  # a fraction is rounded down to this many parts of the host's memory


class MemoryOvercommitWarning(UserWarning):
    """The workers' memory limits on a host add up to more than the host's memory."""


@dataclass(frozen=True)
class Host:
    """A machine workers run on."""

    name: str  # as messages name it: "this machine", a swarm node's hostname
    memory: int | None  # bytes; None when unknown
    groups: frozenset[str] | None = None  # the groups whose workers it may run; None: all

    def runs(self, group: str) -> bool:
        return self.groups is None or group in self.groups


def on_hosts(
    groups: Iterable[WorkerGroup], counts: Mapping[str, int], hosts: list[Host]
) -> dict[str, dict[str, int]]:
    """How many workers of each group each host runs once the counts are reached: all of a
    group on the one host that may run it, else spread evenly over those that may (at most
    ``ceil(count / hosts)`` on each, as the swarm backend places them)."""
    placed: dict[str, dict[str, int]] = {h.name: {} for h in hosts}
    for group in groups:
        eligible = [h for h in hosts if h.runs(group.name)]
        count = counts.get(group.name, group.count)
        for host in eligible:
            placed[host.name][group.name] = math.ceil(count / len(eligible))
    return placed


def _size(group: WorkerGroup, memory: int | None) -> int | None:
    """A group's given limit in bytes on a host of ``memory`` (None: auto, or unknown)."""
    value = group.memory_limit
    if value == "auto":
        return None
    if isinstance(value, float) and value <= 1:
        return int(value * memory) if memory is not None else None
    from dask.utils import parse_bytes

    return parse_bytes(value) if isinstance(value, str) else int(value)


def _auto_share(host: Host, placed: Mapping[str, int], groups: list[WorkerGroup]) -> float:
    """The fraction of ``host``'s memory each ``auto`` worker on it gets: what the workers of
    a given size leave, divided among the ``auto`` ones; equal shares of all of it when they
    leave too little (or its memory is unknown)."""
    total = max(sum(placed.values()), 1)
    autos = sum(placed.get(g.name, 0) for g in groups if g.memory_limit == "auto")
    if host.memory and autos:
        given = sum(placed.get(g.name, 0) * (_size(g, host.memory) or 0) for g in groups)
        left = (host.memory - given) / autos
        if left >= MIN_WORKER_MEMORY:
            return left / host.memory
    return 1 / total


def worker_limit(
    group: str, groups: Iterable[WorkerGroup], counts: Mapping[str, int], hosts: list[Host]
) -> str | int | float:
    """The ``--memory-limit`` of ``group``'s next workers: the spec's size or fraction as
    given; for ``auto``, the fraction of its host each gets when every group has its count
    (the smallest over the hosts that may run it)."""
    groups = list(groups)
    target = next(g for g in groups if g.name == group)
    if target.memory_limit != "auto":
        return target.memory_limit
    counts = {**counts, group: max(counts.get(group, target.count), 1)}
    placed = on_hosts(groups, counts, hosts)
    shares = [_auto_share(h, placed[h.name], groups) for h in hosts if h.runs(group)]
    share = min(shares, default=1.0)
    return max(math.floor(share * PRECISION), 1) / PRECISION


def overcommitted(
    groups: Iterable[WorkerGroup], counts: Mapping[str, int], hosts: list[Host]
) -> str | None:
    """Why the workers' limits don't fit, naming their total and the host's memory; None
    when on every host whose memory is known they add up to at most that memory."""
    from dask.utils import format_bytes

    groups = list(groups)
    placed = on_hosts(groups, counts, hosts)
    for host in hosts:
        if not host.memory:
            continue
        here = {name: n for name, n in placed[host.name].items() if n}
        auto = _auto_share(host, here, groups) * host.memory
        parts = [
            (g.name, here[g.name], _size(g, host.memory) or int(auto))
            for g in groups
            if g.name in here
        ]
        total = sum(n * size for _, n, size in parts)
        if total > host.memory:
            detail = ", ".join(f"workers.{g}: {n} x {format_bytes(s)}" for g, n, s in parts)
            return (
                f"the workers' memory limits add up to {format_bytes(total)} on {host.name}, "
                f"which has {format_bytes(host.memory)} ({detail}): Dask can't spill or pause "
                "them in time, and the kernel's OOM killer may stop workers first; "
                "memory-limit: auto divides the memory among them"
            )
    return None


def report(groups: Iterable[WorkerGroup], counts: Mapping[str, int], workers: list[dict]) -> list:
    """Each group's count, its spec's memory limit, and the per-worker limits (bytes) its
    registered workers have, for ``status``."""
    out: list[dict[str, Any]] = []
    for group in groups:
        limits = {
            w["memory_limit"] for w in workers if w["group"] == group.name and w["memory_limit"]
        }
        out.append(
            {
                "name": group.name,
                "count": counts.get(group.name, group.count),
                "memory_limit": group.memory_limit,
                "per_worker": sorted(limits),
            }
        )
    return out
