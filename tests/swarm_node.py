"""Swarms for the tests and the benchmarks: this machine's engine as a single-node swarm
manager on loopback for a while, then as it was; or the several nodes of `scripts/nodes`."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
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


NODES = Path(__file__).resolve().parent.parent / "scripts" / "nodes"
NODES_FOLDER = Path(os.environ.get("CLUSTERCTL_NODES", "/var/tmp/clusterctl-nodes"))


def nodes_script(*args: str, timeout: float = 300) -> str:
    """Run `scripts/nodes` (finding this interpreter's clusterctl); its stdout, or an
    error with its stderr."""
    path = f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"
    done = subprocess.run(
        [str(NODES), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "PATH": path},
    )
    if done.returncode != 0:
        raise RuntimeError(f"scripts/nodes {' '.join(args)} failed:\n{done.stderr}")
    return done.stdout


@contextlib.contextmanager
def several_nodes(n: int) -> Iterator[None]:
    """`scripts/nodes up n` for the duration, with DOCKER_HOST on its manager (node 1);
    `scripts/nodes down` afterwards, also when `up` failed half-way."""
    try:
        export = nodes_script("up", str(n))
    except RuntimeError:
        nodes_script("down")
        raise
    old = os.environ.get("DOCKER_HOST")
    os.environ["DOCKER_HOST"] = export.strip().rpartition("DOCKER_HOST=")[2]
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("DOCKER_HOST")
        else:
            os.environ["DOCKER_HOST"] = old
        nodes_script("down")


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
