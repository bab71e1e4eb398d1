"""The docker backend: a cluster as labelled containers on one bridge network.

Everything is read back from the engine: containers, the network and volumes carry
``io.clusterctl.cluster=<name>`` (and ``.role``, ``.group``), and the scheduler container
carries the spec, so any process, even after the creating one was killed, finds and
removes all of it. Worker name = container name = Dask worker name. Workers restart on
failure (a killed or crashed worker comes back); a retired worker exits 0 and stays down.
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

from clusterctl import images, state
from clusterctl.backends.base import Backend, Member
from clusterctl.errors import ClusterctlError, UserInputError
from clusterctl.security import tls_files
from clusterctl.spec import ClusterSpec, Mount, WorkerGroup

CLUSTER = "io.clusterctl.cluster"
ROLE = "io.clusterctl.role"
GROUP = "io.clusterctl.group"
BACKEND = "io.clusterctl.backend"
SPEC = "io.clusterctl.spec"
TLS_IN_CONTAINER = "/etc/clusterctl/tls"
TOKEN_IN_CONTAINER = "/etc/clusterctl/notebook/token"


class DockerBackend(Backend):
    kind = "docker"

    def __init__(self, spec: ClusterSpec):
        super().__init__(spec)
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = images.docker_client()
        return self._client

    # --- discovery ------------------------------------------------------------------------

    @classmethod
    def cluster_names(cls) -> list[str]:
        client = _client_or_none()
        if client is None:
            return []
        names = []
        for c in client.containers.list(all=True, filters=_filters(cls.kind, role="scheduler")):
            name = c.labels[CLUSTER]
            if c.status in ("exited", "dead") and not _running_workers(client, cls.kind, name):
                cls(_spec_of(c)).destroy()  # stale: nothing of it runs any more
                state.remove(name)
                continue
            names.append(name)
        return sorted(names)

    @classmethod
    def attach(cls, name: str) -> DockerBackend | None:
        client = _client_or_none()
        if client is None:
            return None
        found = client.containers.list(all=True, filters=_filters(cls.kind, name, role="scheduler"))
        if not found:
            return None
        backend = cls(_spec_of(found[0]))
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
        scheduler = self._container("scheduler")
        deadline = time.monotonic() + self.spec.start_timeout
        # Asked over the published dashboard port rather than through the engine's health
        # status, which only changes every HEALTHCHECK interval (3 s).
        while not _answers(f"http://{self._published('8787/tcp', scheduler)}/health"):
            scheduler.reload()
            if scheduler.status in ("exited", "dead") or time.monotonic() > deadline:
                self._wait_healthy(scheduler)  # fails with the container's log
            time.sleep(0.1)
        if self.spec.notebook.enabled:
            self._wait_healthy(self._container("notebook"))

    def _write_notebook_token(self) -> Path:
        """A fresh JupyterLab token in the state folder, for mounting (never in env)."""
        token_file = state.cluster_dir(self.spec.name) / "notebook" / "token"
        token_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        token_file.write_text(secrets.token_urlsafe(24))
        self._share_with_containers(token_file.parent)
        return token_file

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
        token_file = state.cluster_dir(self.spec.name) / "notebook" / "token"
        container = self._container("notebook")
        if container is None or not token_file.exists():
            return None
        return f"http://{self._published('8888/tcp', container)}/lab?token={token_file.read_text()}"

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
        for network in self.client.networks.list(filters=_filters(self.kind, self.spec.name)):
            network.remove()
        for volume in self.client.volumes.list(filters=_filters(self.kind, self.spec.name)):
            volume.remove(force=True)

    # --- helpers --------------------------------------------------------------------------

    @property
    def _network(self) -> str:
        return f"clusterctl-{self.spec.name}"

    def _image(self, role: str, group: WorkerGroup | None = None) -> str:
        if group is not None and group.image:
            return group.image
        return images.default_image(role)

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
        return self.client.containers.list(all=True, filters=_filters(self.kind, self.spec.name))

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

    def _wait_healthy(self, container: Any) -> None:
        deadline = time.monotonic() + self.spec.start_timeout
        while time.monotonic() < deadline:
            container.reload()
            health = container.attrs["State"].get("Health", {}).get("Status")
            if health == "healthy":
                return
            if container.status in ("exited", "dead"):
                break
            time.sleep(0.2)
        logs = container.logs().decode(errors="replace")[-3000:]
        raise ClusterctlError(f"{container.name} did not become healthy:\n{logs}")


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


def _client_or_none() -> Any | None:
    """The engine's client, or None where there is no SDK or no engine (nothing to find)."""
    try:
        return images.docker_client()
    except UserInputError:
        return None


def _answers(url: str) -> bool:
    """Whether ``url`` answers 200 now."""
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def _filters(kind: str, name: str | None = None, role: str | None = None) -> dict[str, list[str]]:
    labels = [f"{BACKEND}={kind}", f"{CLUSTER}={name}" if name else CLUSTER]
    if role:
        labels.append(f"{ROLE}={role}")
    return {"label": labels}


def _spec_of(container: Any) -> ClusterSpec:
    name = container.labels[CLUSTER]
    return ClusterSpec.from_dict(json.loads(container.labels[SPEC]), source=f"cluster {name!r}")


def _running_workers(client: Any, kind: str, name: str) -> bool:
    found = client.containers.list(filters=_filters(kind, name, role="worker"))
    return bool(found)


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

    with contextlib.suppress(docker.errors.NotFound):  # `destroy` may get there first
        container.update(restart_policy={"Name": "no"})  # or the engine would bring it back
        container.stop(timeout=10)
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
            raise
        with contextlib.suppress(docker.errors.NotFound):
            container.wait(condition="removed", timeout=60)


def _sort_key(name: str) -> tuple[int, str, int]:
    head, _, tail = name.rpartition("-")
    if tail.isdigit():
        return (1, head, int(tail))
    return (0, name, 0)
