"""A single-node swarm for the swarm tests and the benchmarks: this machine's engine as a
swarm manager on loopback for a while, then as it was."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

from clusterctl import engine, waiting


@contextlib.contextmanager
def single_node_swarm(client: Any) -> Iterator[None]:
    """The engine as a single-node swarm manager on loopback for the duration, and as it was
    afterwards (for tests and benchmarks; an active swarm is used and left alone)."""
    if client.info()["Swarm"]["LocalNodeState"] == "active":
        yield
        return
    had_gwbridge = bool(client.networks.list(names=["docker_gwbridge"]))
    client.swarm.init(advertise_addr="127.0.0.1")
    try:
        yield
    finally:
        client.swarm.leave(force=True)
        if not had_gwbridge:  # made by `swarm init`; `swarm leave` doesn't remove it
            _remove_gwbridge(client)


def _remove_gwbridge(client: Any) -> None:
    """Remove the engine's docker_gwbridge; if a stale endpoint keeps it (moby/moby#37018),
    after 10 s leave it with a warning rather than fail: the next `swarm init` reuses it."""
    for network in client.networks.list(names=["docker_gwbridge"]):
        try:
            engine.remove_network(network, within=10)
        except waiting.WaitTimeout as exc:
            if "active endpoints" not in str(exc):
                raise
            warnings.warn(
                "docker_gwbridge (made by `docker swarm init`) still holds a stale endpoint "
                "after `swarm leave` and was left; restarting the engine clears it",
                stacklevel=2,
            )
