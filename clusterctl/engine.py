"""The Docker Engine as the container backends and the image builder use it: the client,
and what is done to its objects (found by our labels, removed, waited for, read).

The docker SDK is imported only here and only when called, so what needs no engine
(``clusterctl render``, the local backend) runs without it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from typing import Any

from clusterctl import labels, waiting
from clusterctl.errors import ClusterctlError, UserInputError
from clusterctl.spec import is_cluster_name


def docker_host() -> str:
    """Which engine the client talks to, as messages name it."""
    return os.environ.get("DOCKER_HOST", "the local Docker socket")


def docker_client() -> Any:
    """A docker SDK client for DOCKER_HOST (or the local engine), checked to answer."""
    try:
        import docker
    except ImportError:
        raise UserInputError(
            "the docker SDK is not installed: pip install 'clusterctl[docker]'"
        ) from None
    host = docker_host()
    try:
        client = docker.from_env(use_ssh_client=host.startswith("ssh://"), timeout=600)
        client.ping()
    except Exception as exc:
        raise UserInputError(
            f"cannot reach a Docker Engine at {host}: {exc}. Is it running, and may you use "
            "it? (DOCKER_HOST selects another engine)"
        ) from None
    return client


def image_exists(client: Any, name: str) -> bool:
    import docker.errors

    try:
        client.images.get(name)
    except docker.errors.ImageNotFound:
        return False
    return True


def log_lines(container: Any, follow: bool = False) -> Iterator[str]:
    """A container's log, line by line; with ``follow``, until it stops."""
    if not follow:
        yield from container.logs().decode(errors="replace").splitlines()
        return
    yield from lines_of(container.logs(stream=True, follow=True))


def lines_of(chunks: Iterable[bytes]) -> Iterator[str]:
    """A log streamed in chunks, line by line."""
    buffer = b""
    for chunk in chunks:
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        yield from (line.decode(errors="replace") for line in lines)
    if buffer:
        yield buffer.decode(errors="replace")


def client_or_none() -> Any | None:
    """The engine's client, or None where there is no SDK or no engine (nothing to find)."""
    try:
        return docker_client()
    except UserInputError:
        return None


def labelled_names(client: Any, kind: str, services: bool = False) -> set[str]:
    """Cluster names on the labels of backend ``kind``'s containers, networks and volumes
    (and, with ``services``, swarm services and secrets)."""
    names = {
        _labels_of(item).get(labels.CLUSTER, "") for _, item in _labelled(client, kind, services)
    }
    return {n for n in names if is_cluster_name(n)}


def remains(client: Any, kind: str, name: str, services: bool = False) -> list[str]:
    """What the engine holds of cluster ``name`` of backend ``kind``, as "network X" etc."""
    return [f"{what} {item.name}" for what, item in _labelled(client, kind, services, name)]


def listed_containers(client: Any, filters: dict[str, Any]) -> list[Any]:
    """The containers (stopped ones too) that ``filters`` match, from one engine call, each
    with its id, name, labels and status; other attributes need ``reload()``. The SDK's
    ``containers.list`` inspects every container it lists: a round trip per worker."""
    found = []
    for row in client.api.containers(all=True, filters=filters):
        attrs = {
            "Id": row["Id"],
            "Name": row["Names"][0],
            "Config": {"Labels": row.get("Labels") or {}},
            "State": {"Status": row["State"]},
        }
        found.append(client.containers.prepare_model(attrs))
    return found


def _labelled(
    client: Any, kind: str, services: bool, name: str | None = None
) -> list[tuple[str, Any]]:
    """``(what, object)`` of everything on the engine carrying backend ``kind``'s labels
    (of cluster ``name``): containers, networks, volumes, and swarm services and secrets."""
    ours = labels.filters(kind, name)
    found = [("container", c) for c in listed_containers(client, ours)]
    found += [("network", n) for n in client.networks.list(filters=ours)]
    found += [("volume", v) for v in client.volumes.list(filters=ours)]
    if services:
        found += [("service", s) for s in client.services.list(filters=ours)]
        found += [("secret", s) for s in client.secrets.list(filters=ours)]
    return found


def _labels_of(item: Any) -> dict[str, str]:
    """An engine object's labels: a network's or volume's own, a container's in its config,
    a service's or secret's in its spec."""
    for where in (item.attrs, item.attrs.get("Config") or {}, item.attrs.get("Spec") or {}):
        if where.get("Labels"):
            return where["Labels"]
    return {}


@contextlib.contextmanager
def engine_errors(doing: str) -> Iterator[None]:
    """The engine's refusals as clusterctl errors (a message, never a traceback)."""
    import docker.errors

    try:
        yield
    except docker.errors.APIError as exc:
        raise ClusterctlError(f"{doing} failed: {exc.explanation or exc}") from None


def remove_network(network: Any, within: float = 0) -> None:
    """Remove a network of ours; one already gone counts as removed. A refusal is retried
    for ``within`` seconds (swarm detaches the last tasks from its networks a moment late)."""
    import docker.errors

    refusal = ""

    def removed() -> bool:
        nonlocal refusal
        try:
            network.remove()
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            refusal = str(exc.explanation or exc)
            return False
        return True

    try:
        waiting.until(removed, timeout=within, interval=0.5, what=f"removing {network.name}")
    except waiting.WaitTimeout:
        raise ClusterctlError(
            f"network {network.name} could not be removed ({refusal}); a container of someone "
            "else's may still use it: disconnect it, then run `clusterctl down` again"
        ) from None


def remove_volume(volume: Any) -> None:
    """Remove a volume of ours; one already gone counts as removed."""
    import docker.errors

    with (
        engine_errors(f"removing volume {volume.name}"),
        contextlib.suppress(docker.errors.NotFound),
    ):
        volume.remove(force=True)


def check_not_exited(container: Any) -> None:
    """Fail with its log when a container we wait for has exited, or was removed."""
    import docker.errors

    try:
        container.reload()
    except docker.errors.NotFound:
        raise ClusterctlError(f"{container.name} was removed while it started") from None
    if container.status in ("exited", "dead"):
        code = container.attrs["State"].get("ExitCode")
        raise ClusterctlError(f"{container.name} exited (status {code}):\n{log_tail(container)}")


def wait_healthy(container: Any, timeout: float) -> None:
    """Wait until a container's health check passes; its log if it exits or times out."""

    def healthy() -> bool:
        check_not_exited(container)
        return container.attrs["State"].get("Health", {}).get("Status") == "healthy"

    what = f"{container.name} becoming healthy"
    waiting.until(
        healthy, timeout=timeout, interval=0.2, what=what, detail=lambda: log_tail(container)
    )


def unreachable_detail(container: Any) -> str:
    """Why a container's published port may not answer from here."""
    import docker.errors

    try:
        container.reload()
    except docker.errors.NotFound:
        return f"{container.name} is gone"
    if container.attrs["State"].get("Health", {}).get("Status") == "healthy":
        return (
            f"{container.name} is healthy inside, so its published port does not reach it from "
            "this machine: a firewall, or an engine on another machine (DOCKER_HOST)?"
        )
    return log_tail(container)


def log_tail(container: Any) -> str:
    """The end of a container's log (nothing if it is gone)."""
    import docker.errors

    try:
        return container.logs(tail=40).decode(errors="replace")[-3000:]
    except docker.errors.NotFound:
        return ""


def stop_and_remove(container: Any) -> None:
    """Stop a container (for good: its restart policy is lifted first), then remove it."""
    import docker.errors

    with engine_errors(f"stopping {container.name}"), contextlib.suppress(docker.errors.NotFound):
        container.update(restart_policy={"Name": "no"})  # or the engine would bring it back
        container.stop(timeout=10)  # `destroy` may have removed it (NotFound) meanwhile
    remove_container(container)


def remove_container(container: Any) -> None:
    """Remove a container; one already gone, or being removed by a scale-down that is still
    running when `destroy` comes, counts as removed (waited for in the second case)."""
    import docker.errors

    try:
        container.remove(v=True, force=True)
    except docker.errors.NotFound:
        return
    except docker.errors.APIError as exc:
        if exc.status_code != 409:  # 409: "removal of container … is already in progress"
            raise ClusterctlError(
                f"removing container {container.name} failed: {exc.explanation or exc}"
            ) from None
        waiting.until(
            lambda: _gone(container),
            timeout=60,
            interval=0.2,
            what=f"container {container.name} being removed by another command",
        )


def _gone(container: Any) -> bool:
    import docker.errors

    try:
        container.reload()
    except docker.errors.NotFound:
        return True
    return False
