"""The docker backend: a cluster as labelled containers on one bridge network.

Everything is read back from the engine: containers, the network and volumes carry
``io.clusterctl.cluster=<name>`` (and ``.role``, ``.group``), and the scheduler container
carries the spec, so any process, even after the creating one was killed, finds and
removes all of it. Worker name = container name = Dask worker name. Workers restart on
failure (a killed or crashed worker comes back); a retired worker exits 0 and stays down.

Discovery reads only: a cluster is whatever carries its label (a container, a network, a
volume) or a state folder whose ``spec.json`` names this backend. One whose scheduler
container is gone, or whose spec label can't be read, comes back from :meth:`attach` with
``problem`` set, and ``destroy`` removes what is left of it by label.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from clusterctl import images, state, waiting
from clusterctl.backends.base import Backend, Member
from clusterctl.errors import ClusterctlError, UserInputError
from clusterctl.security import tls_files
from clusterctl.spec import ClusterSpec, Mount, WorkerGroup, is_cluster_name

CLUSTER = "io.clusterctl.cluster"
ROLE = "io.clusterctl.role"
GROUP = "io.clusterctl.group"
BACKEND = "io.clusterctl.backend"
SPEC = "io.clusterctl.spec"
TLS_IN_CONTAINER = "/etc/clusterctl/tls"
TOKEN_IN_CONTAINER = "/etc/clusterctl/notebook/token"
NO_ENGINE = "its state folder names a container backend, and no Docker Engine answers here"


class DockerBackend(Backend):
    kind = "docker"

    def __init__(self, spec: ClusterSpec, problem: str | None = None):
        super().__init__(spec, problem)
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = images.docker_client()
        return self._client

    # --- discovery ------------------------------------------------------------------------

    @classmethod
    def cluster_names(cls) -> list[str]:
        names = {n for n in state.names() if state.stored_backend(n) == cls.kind}
        client = client_or_none()
        if client is not None:
            names.update(labelled_names(client, cls.kind))
        return sorted(names)

    @classmethod
    def attach(cls, name: str) -> DockerBackend | None:
        client = client_or_none()
        in_state = state.stored_backend(name) == cls.kind
        if client is None:
            if not in_state:
                return None
            return cls(ClusterSpec.placeholder(name, cls.kind), problem=NO_ENGINE)
        found = client.containers.list(
            ignore_removed=True, all=True, filters=label_filters(cls.kind, name, role="scheduler")
        )
        if found:
            spec, problem = read_spec(found[0].labels, name, cls.kind, "its scheduler container")
            backend = cls(spec, problem=problem)
        else:
            left = remains(client, cls.kind, name)
            if not left and not in_state:
                return None
            problem = f"its scheduler container is gone (left: {', '.join(left) or 'its state'})"
            backend = cls(ClusterSpec.placeholder(name, cls.kind), problem=problem)
        backend._client = client
        return backend

    # --- lifecycle ------------------------------------------------------------------------

    def preflight(self) -> None:
        super().preflight()
        wanted = {self._image("scheduler")} | {self._image("worker", g) for g in self.spec.workers}
        if self.spec.notebook.enabled:
            wanted.add(self._image("notebook"))
        missing = sorted(i for i in wanted if not images.image_exists(self.client, i))
        if missing:
            raise UserInputError(
                f"image(s) not on this engine: {', '.join(missing)}; build them with "
                "`clusterctl image build` (or load them with `clusterctl image load`)"
            )

    def start_scheduler(self) -> None:
        sched = self.spec.scheduler
        with engine_errors(f"creating network {self._network}"):
            self.client.networks.create(self._network, driver="bridge", labels=self._labels())
        args = ["--port", "8786"]
        if self.spec.security.tls:
            self._share_with_containers(tls_files(self.spec.name).ca.parent)
            args += ["--protocol", "tls", *tls_args(self.spec)]
        self._run(
            self._image("scheduler"), ["scheduler", *args], name=f"{self.spec.name}-scheduler",
            role="scheduler", restart=False, environment=sched.env,
            extra_volumes=self._mounts(sched.mounts),
            ports={"8786/tcp": (sched.host, sched.port or None),
                   "8787/tcp": (sched.host, sched.dashboard_port or None)},
            extra_labels={SPEC: json.dumps(self.spec.to_dict())},
        )  # fmt: skip
        if self.spec.notebook.enabled:
            self._start_notebook()

    def wait_until_ready(self) -> None:
        """Until the scheduler answers on its published dashboard port (asked directly: the
        engine's health status changes only every HEALTHCHECK interval, 3 s), then the
        notebook is healthy; all within ``start-timeout``."""
        deadline = time.monotonic() + self.spec.start_timeout
        scheduler = self._container("scheduler")
        if scheduler is None:
            raise ClusterctlError(f"the scheduler container of {self.spec.name!r} is gone")
        url = f"http://{self._published('8787/tcp', scheduler)}/health"

        def ready() -> bool:
            if answers(url):
                return True
            _check_not_exited(scheduler)
            return False

        waiting.until(
            ready,
            timeout=self.spec.start_timeout,
            what=f"the scheduler of cluster {self.spec.name!r} answering at {url} from here",
            detail=lambda: _unreachable_detail(scheduler),
        )
        if self.spec.notebook.enabled:
            notebook = self._container("notebook")
            if notebook is None:
                raise ClusterctlError(f"the notebook container of {self.spec.name!r} is gone")
            _wait_healthy(notebook, max(deadline - time.monotonic(), 0))

    def _write_notebook_token(self) -> Path:
        """A fresh JupyterLab token in the state folder, for mounting (never in env)."""
        token_file = state.make_cluster_dir(self.spec.name) / "notebook" / "token"
        state.write_text(token_file, secrets.token_urlsafe(24))
        self._share_with_containers(token_file.parent)
        return token_file

    def _notebook_token(self) -> str | None:
        return state.read_text(state.cluster_dir(self.spec.name) / "notebook" / "token")

    def _start_notebook(self) -> None:
        token_file = self._write_notebook_token()
        dashboard = self._published("8787/tcp", self._container("scheduler"))
        env = {"DASK_SCHEDULER_ADDRESS": self._address_in_network(),
               "CLUSTERCTL_DASHBOARD_URL": f"http://{dashboard}",
               "JUPYTER_TOKEN_FILE": TOKEN_IN_CONTAINER, **dask_tls_env(self.spec)}  # fmt: skip
        volumes = {str(token_file.parent): {"bind": os.path.dirname(TOKEN_IN_CONTAINER),
                                            "mode": "ro"}}  # fmt: skip
        volumes.update(self._mounts(self.spec.workers[0].mounts))
        self._run(
            self._image("notebook"), ["notebook"], name=f"{self.spec.name}-notebook",
            role="notebook", environment=env, extra_volumes=volumes, restart=True,
            ports={"8888/tcp": (self.spec.scheduler.host, self.spec.notebook.port or None)},
        )  # fmt: skip

    def notebook_url(self) -> str | None:
        container = self._container("notebook")
        token = self._notebook_token()
        if container is None or token is None:
            return None
        return f"http://{self._published('8888/tcp', container)}/lab?token={token}"

    def dashboard_address(self) -> str | None:
        container = self._container("scheduler")
        return self._published("8787/tcp", container) if container is not None else None

    def scheduler_address(self) -> str:
        container = self._container("scheduler")
        if container is None or container.status != "running":
            raise ClusterctlError(f"the scheduler of cluster {self.spec.name!r} is not running")
        protocol = "tls" if self.spec.security.tls else "tcp"
        return f"{protocol}://{self._published('8786/tcp', container)}"

    def start_workers(self, group: WorkerGroup, n: int) -> list[str]:
        existing = [m.name for m in self.members() if m.group == group.name]
        first = max((int(x.rsplit("-", 1)[1]) for x in existing), default=0) + 1
        names = [f"{self.spec.name}-{group.name}-{i}" for i in range(first, first + n)]
        args = [*worker_args(group), *tls_args(self.spec)]
        limits = container_limits(group)
        if "cpus" in limits:
            limits["nano_cpus"] = int(limits.pop("cpus") * 1e9)

        def start(name: str) -> None:
            self._run(
                self._image("worker", group),
                ["worker", self._address_in_network(), "--name", name, *args],
                name=name, role="worker", group=group.name, environment=group.env,
                extra_volumes=self._mounts(group.mounts), restart=True, **limits,
            )  # fmt: skip

        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(start, names))
        return names

    def stop_workers(self, names: list[str]) -> None:
        wanted = set(names)
        containers = [c for c in self._containers() if self._member_name(c) in wanted]
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(_stop_and_remove, containers))

    def members(self) -> list[Member]:
        return [
            Member(
                name=self._member_name(c),
                role=c.labels.get(ROLE, "worker"),
                group=c.labels.get(GROUP) or None,
                running=c.status in ("created", "running", "restarting"),
                detail=f"container {c.short_id}",
            )
            for c in sorted(self._containers(), key=lambda c: _sort_key(c.name))
        ]

    def logs(self, name: str, follow: bool = False) -> Iterator[str]:
        container = self._container(name)
        if container is None:
            known = ", ".join(self._member_name(c) for c in self._containers()) or "none"
            raise UserInputError(f"no scheduler or worker named {name!r}; known: {known}")
        yield from log_lines(container, follow)

    def destroy(self) -> None:
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(_remove, self._containers()))
        ours = label_filters(self.kind, self.spec.name)
        for network in self.client.networks.list(filters=ours):
            remove_network(network)
        for volume in self.client.volumes.list(filters=ours):
            remove_volume(volume)

    # --- helpers --------------------------------------------------------------------------

    @property
    def _network(self) -> str:
        return f"clusterctl-{self.spec.name}"

    def _image(self, role: str, group: WorkerGroup | None = None) -> str:
        if group is not None and group.image:
            return group.image
        return images.default_image(role, self.client)

    def _labels(self, role: str | None = None, group: str | None = None) -> dict[str, str]:
        labels = {CLUSTER: self.spec.name, BACKEND: self.kind}
        if role:
            labels[ROLE] = role
        if group:
            labels[GROUP] = group
        return labels

    def _run(
        self,
        image: str,
        command: list[str],
        *,
        name: str,
        role: str,
        restart: bool,
        group: str | None = None,
        extra_labels: dict[str, str] | None = None,
        extra_volumes: dict[str, dict[str, str]] | None = None,
        **kwargs: Any,
    ) -> Any:
        """Start a labelled, unprivileged container of this cluster."""
        volumes = dict(extra_volumes or {})
        if self.spec.security.tls:
            folder = tls_files(self.spec.name).ca.parent
            volumes[str(folder)] = {"bind": TLS_IN_CONTAINER, "mode": "ro"}
        with engine_errors(f"starting container {name}"):
            return self.client.containers.run(
                image, command, name=name, hostname=name, detach=True, network=self._network,
                labels={**self._labels(role, group), **(extra_labels or {})}, volumes=volumes,
                user=container_user(), cap_drop=["ALL"], security_opt=["no-new-privileges"],
                restart_policy={"Name": "on-failure"} if restart else {"Name": "no"},
                init=False, **kwargs,
            )  # fmt: skip

    @staticmethod
    def _share_with_containers(folder: Path) -> None:
        """Let the containers' user read a folder of secrets we mount, and no one else.

        As root, the containers run as uid 1000 in group 0: the files stay root's and group 0
        (root's group) may read them. Otherwise the containers run as this user (see
        :func:`_container_user`) and read them as their owner already.
        """
        if os.geteuid() == 0:
            folder.chmod(0o750)
            for path in folder.iterdir():
                path.chmod(0o640)

    @staticmethod
    def _mounts(mounts: tuple[Mount, ...]) -> dict[str, dict[str, str]]:
        return {m.source: {"bind": m.target, "mode": "ro" if m.read_only else "rw"}
                for m in mounts}  # fmt: skip

    def _address_in_network(self) -> str:
        protocol = "tls" if self.spec.security.tls else "tcp"
        return f"{protocol}://{self.spec.name}-scheduler:8786"

    def _containers(self) -> list[Any]:
        return self.client.containers.list(
            ignore_removed=True, all=True, filters=label_filters(self.kind, self.spec.name)
        )

    def _member_name(self, container: Any) -> str:
        """The name status and scale use: the container's, which is the Dask worker's."""
        return container.name

    def _container(self, name: str) -> Any | None:
        """A container of this cluster by name; "scheduler" and "notebook" work too."""
        if name in ("scheduler", "notebook"):
            name = f"{self.spec.name}-{name}"
        return next((c for c in self._containers() if name in (c.name, self._member_name(c))), None)

    def _published(self, port: str, container: Any) -> str:
        container.reload()
        binding = (container.attrs["NetworkSettings"]["Ports"] or {}).get(port) or []
        if not binding:
            raise ClusterctlError(f"{container.name} publishes no {port}")
        host = binding[0]["HostIp"]
        host = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
        return f"{host}:{binding[0]['HostPort']}"


def log_lines(container: Any, follow: bool = False) -> Iterator[str]:
    """A container's log, line by line; with ``follow``, until it stops."""
    if not follow:
        yield from container.logs().decode(errors="replace").splitlines()
        return
    buffer = b""
    for chunk in container.logs(stream=True, follow=True):
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        yield from (line.decode(errors="replace") for line in lines)


def client_or_none() -> Any | None:
    """The engine's client, or None where there is no SDK or no engine (nothing to find)."""
    try:
        return images.docker_client()
    except UserInputError:
        return None


def answers(url: str) -> bool:
    """Whether ``url`` answers 200 now."""
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def label_filters(
    kind: str, name: str | None = None, role: str | None = None
) -> dict[str, list[str]]:
    """The engine's filter for what backend ``kind`` made (of cluster ``name``, in ``role``)."""
    labels = [f"{BACKEND}={kind}", f"{CLUSTER}={name}" if name else CLUSTER]
    if role:
        labels.append(f"{ROLE}={role}")
    return {"label": labels}


def labelled_names(client: Any, kind: str, services: bool = False) -> set[str]:
    """Cluster names on the labels of backend ``kind``'s containers, networks and volumes
    (and, with ``services``, swarm services and secrets)."""
    names = {_labels_of(item).get(CLUSTER, "") for _, item in _labelled(client, kind, services)}
    return {n for n in names if is_cluster_name(n)}


def remains(client: Any, kind: str, name: str, services: bool = False) -> list[str]:
    """What the engine holds of cluster ``name`` of backend ``kind``, as "network X" etc."""
    return [f"{what} {item.name}" for what, item in _labelled(client, kind, services, name)]


def _labelled(
    client: Any, kind: str, services: bool, name: str | None = None
) -> list[tuple[str, Any]]:
    """``(what, object)`` of everything on the engine carrying backend ``kind``'s labels
    (of cluster ``name``): containers, networks, volumes, and swarm services and secrets."""
    ours = label_filters(kind, name)
    found = [("container", c) for c in client.containers.list(ignore_removed=True, all=True,
                                                               filters=ours)]  # fmt: skip
    found += [("network", n) for n in client.networks.list(filters=ours)]
    found += [("volume", v) for v in client.volumes.list(filters=ours)]
    if services:
        found += [("service", s) for s in client.services.list(filters=ours)]
        found += [("secret", s) for s in client.secrets.list(filters=ours)]
    return found


def read_spec(
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


def remove_network(network: Any) -> None:
    """Remove a network of ours; one already gone counts as removed."""
    import docker.errors

    try:
        network.remove()
    except docker.errors.NotFound:
        return
    except docker.errors.APIError as exc:
        raise ClusterctlError(
            f"network {network.name} could not be removed ({exc.explanation or exc}); a "
            "container of someone else's may still use it: disconnect it, then run `clusterctl "
            "down` again"
        ) from None


def remove_volume(volume: Any) -> None:
    """Remove a volume of ours; one already gone counts as removed."""
    import docker.errors

    with (
        engine_errors(f"removing volume {volume.name}"),
        contextlib.suppress(docker.errors.NotFound),
    ):
        volume.remove(force=True)


def _check_not_exited(container: Any) -> None:
    """Fail with its log when a container we wait for has exited, or was removed."""
    import docker.errors

    try:
        container.reload()
    except docker.errors.NotFound:
        raise ClusterctlError(f"{container.name} was removed while it started") from None
    if container.status in ("exited", "dead"):
        code = container.attrs["State"].get("ExitCode")
        raise ClusterctlError(f"{container.name} exited (status {code}):\n{_log_tail(container)}")


def _wait_healthy(container: Any, timeout: float) -> None:
    def healthy() -> bool:
        _check_not_exited(container)
        return container.attrs["State"].get("Health", {}).get("Status") == "healthy"

    waiting.until(healthy, timeout=timeout, interval=0.2, what=f"{container.name} becoming "
                  "healthy", detail=lambda: _log_tail(container))  # fmt: skip


def _unreachable_detail(container: Any) -> str:
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
    return _log_tail(container)


def _log_tail(container: Any) -> str:
    """The end of a container's log (nothing if it is gone)."""
    import docker.errors

    try:
        return container.logs(tail=40).decode(errors="replace")[-3000:]
    except docker.errors.NotFound:
        return ""


def container_user() -> str:
    """The containers' user: this user's uid (so mounted files are shared), never root."""
    uid = os.getuid()
    return f"{uid if uid != 0 else 1000}:0"


def worker_args(group: WorkerGroup) -> list[str]:
    """``dask worker`` options of a group (the scheduler address comes first)."""
    args = ["--nthreads", str(group.threads), "--death-timeout", f"{group.death_timeout:g}",
            "--memory-limit", str(group.memory_limit)]  # fmt: skip
    if group.resources:
        args += ["--resources", " ".join(f"{k}={v:g}" for k, v in group.resources.items())]
    return args


def tls_args(spec: ClusterSpec) -> list[str]:
    """The scheduler's and workers' certificate options, as mounted in containers."""
    if not spec.security.tls:
        return []
    return ["--tls-ca-file", f"{TLS_IN_CONTAINER}/ca.pem",
            "--tls-cert", f"{TLS_IN_CONTAINER}/cert.pem",
            "--tls-key", f"{TLS_IN_CONTAINER}/key.pem"]  # fmt: skip


def dask_tls_env(spec: ClusterSpec) -> dict[str, str]:
    """Dask's TLS configuration for a client in a container (the notebook)."""
    if not spec.security.tls:
        return {}
    return {
        "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True",
        "DASK_DISTRIBUTED__COMM__TLS__CA_FILE": f"{TLS_IN_CONTAINER}/ca.pem",
        "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT": f"{TLS_IN_CONTAINER}/cert.pem",
        "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY": f"{TLS_IN_CONTAINER}/key.pem",
    }


def container_limits(group: WorkerGroup) -> dict[str, Any]:
    """The container's memory limit in bytes (when the group gives a size) and CPUs."""
    limits: dict[str, Any] = {}
    memory = group.memory_limit
    if memory != "auto" and not (isinstance(memory, float) and memory <= 1):
        from dask.utils import parse_bytes

        limits["mem_limit"] = parse_bytes(memory)
    if group.cpus:
        limits["cpus"] = group.cpus
    return limits


def _stop_and_remove(container: Any) -> None:
    import docker.errors

    with engine_errors(f"stopping {container.name}"), contextlib.suppress(docker.errors.NotFound):
        container.update(restart_policy={"Name": "no"})  # or the engine would bring it back
        container.stop(timeout=10)  # `destroy` may have removed it (NotFound) meanwhile
    _remove(container)


def _remove(container: Any) -> None:
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


def _sort_key(name: str) -> tuple[int, str, int]:
    head, _, tail = name.rpartition("-")
    if tail.isdigit():
        return (1, head, int(tail))
    return (0, name, 0)
