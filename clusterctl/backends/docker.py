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

import json
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from clusterctl import engine, labels, launch, sharing, waiting
from clusterctl.backends.base import Member
from clusterctl.backends.containers import ContainerBackend, share_with_containers
from clusterctl.errors import ClusterctlError, UserInputError
from clusterctl.memory import Host
from clusterctl.security import tls_files
from clusterctl.spec import WorkerGroup


class DockerBackend(ContainerBackend):
    kind = "docker"

    # --- lifecycle ------------------------------------------------------------------------

    def start_scheduler(self) -> None:
        sched = self.spec.scheduler
        with engine.engine_errors(f"creating network {self._network}"):
            self.client.networks.create(self._network, driver="bridge", labels=self._labels())
        args = ["--port", "8786"]
        if self.spec.security.tls:
            share_with_containers(tls_files(self.spec.name).ca.parent)
            args += ["--protocol", "tls", *launch.tls_args(self.spec)]
        self._run(
            self._image("scheduler"),
            ["scheduler", *args],
            name=f"{self.spec.name}-scheduler",
            role="scheduler",
            restart=False,
            environment=launch.scheduler_env(self.spec),
            extra_volumes=self._mounts(sched.mounts),
            ports={
                "8786/tcp": (sched.host, sched.port or None),
                "8787/tcp": (sched.host, sched.dashboard_port or None),
            },
            extra_labels={labels.SPEC: json.dumps(self.spec.to_dict())},
        )
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
            if waiting.answers(url):
                return True
            engine.check_not_exited(scheduler)
            return False

        waiting.until(
            ready,
            timeout=self.spec.start_timeout,
            what=f"the scheduler of cluster {self.spec.name!r} answering at {url} from here",
            detail=lambda: engine.unreachable_detail(scheduler),
        )
        if self.spec.notebook.enabled:
            notebook = self._container("notebook")
            if notebook is None:
                raise ClusterctlError(f"the notebook container of {self.spec.name!r} is gone")
            engine.wait_healthy(notebook, max(deadline - time.monotonic(), 0))

    def _start_notebook(self) -> None:
        token_file = self._write_notebook_token()
        dashboard = self._published("8787/tcp", self._container("scheduler"))
        env = {
            "DASK_SCHEDULER_ADDRESS": self._address_in_network(),
            "CLUSTERCTL_DASHBOARD_URL": f"http://{dashboard}",
            # Client().dashboard_link there: what a browser on this machine opens
            "DASK_DISTRIBUTED__DASHBOARD__LINK": f"http://{dashboard}/status",
            "JUPYTER_TOKEN_FILE": launch.TOKEN_IN_CONTAINER,
            **launch.dask_tls_env(self.spec),
        }
        inside = os.path.dirname(launch.TOKEN_IN_CONTAINER)
        volumes = {str(token_file.parent): {"bind": inside, "mode": "ro"}}
        volumes.update(self._mounts(self.spec.workers[0].mounts))
        self._run(
            self._image("notebook"),
            ["notebook"],
            name=f"{self.spec.name}-notebook",
            role="notebook",
            environment=env,
            extra_volumes=volumes,
            restart=True,
            ports={"8888/tcp": (self.spec.scheduler.host, self.spec.notebook.port or None)},
        )

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

    def worker_hosts(self) -> list[Host]:
        """The engine's machine (it may be another than this one), as ``docker info``
        gives its memory."""
        info = self.client.info()
        return [Host(f"the Docker Engine's machine {info.get('Name', '')}", info.get("MemTotal"))]

    def start_workers(self, group: WorkerGroup, n: int) -> list[str]:
        existing = [m.name for m in self.members() if m.group == group.name]
        first = max((int(x.rsplit("-", 1)[1]) for x in existing), default=0) + 1
        names = [f"{self.spec.name}-{group.name}-{i}" for i in range(first, first + n)]
        args = [*launch.worker_args(group), *launch.tls_args(self.spec)]
        image = self._image("worker", group)  # looked up once, not per container
        limits = launch.container_limits(group)
        if "cpus" in limits:
            limits["nano_cpus"] = int(limits.pop("cpus") * 1e9)
        if group.gpus is not None:
            count = -1 if group.gpus == "all" else group.gpus
            limits["device_requests"] = [{"count": count, "capabilities": [["gpu"]]}]

        def start(name: str) -> None:
            self._run(
                image,
                ["worker", self._address_in_network(), "--name", name, *args],
                name=name,
                role="worker",
                group=group.name,
                environment=group.env,
                extra_volumes=self._mounts(group.mounts),
                restart=True,
                **limits,
            )

        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(start, names))
        return names

    def stop_workers(self, names: list[str]) -> None:
        wanted = set(names)
        containers = [c for c in self._containers() if self._member_name(c) in wanted]
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(engine.stop_and_remove, containers))

    def members(self) -> list[Member]:
        return [
            Member(
                name=self._member_name(c),
                role=c.labels.get(labels.ROLE, "worker"),
                group=c.labels.get(labels.GROUP) or None,
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
        yield from engine.log_lines(container, follow)

    def destroy(self) -> None:
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(engine.remove_container, self._containers()))
        ours = labels.filters(self.kind, self.spec.name)
        for network in self.client.networks.list(filters=ours):
            engine.remove_network(network)
        for volume in self.client.volumes.list(filters=ours):
            engine.remove_volume(volume)

    # --- helpers --------------------------------------------------------------------------

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
        """Start a labelled, unprivileged container of this cluster (in its share-dir,
        when it has one)."""
        volumes = dict(extra_volumes or {})
        if self.spec.security.tls:
            folder = tls_files(self.spec.name).ca.parent
            volumes[str(folder)] = {"bind": launch.TLS_IN_CONTAINER, "mode": "ro"}
        binds = [f"{source}:{m['bind']}:{m['mode']}" for source, m in volumes.items()]
        if (share := sharing.host_share(self.spec)) is not None:
            binds.append(f"{share.folder}:{share.folder}:rw")
        doing = f"starting container {name}"
        if "device_requests" in kwargs:
            doing += " (with GPUs: the engine needs the NVIDIA Container Toolkit)"
        with engine.engine_errors(doing):
            container = self.client.containers.create(
                image,
                command,
                name=name,
                hostname=name,
                detach=True,
                network=self._network,
                labels={**self._labels(role, group), **(extra_labels or {})},
                volumes=binds,
                **launch.container_process(self.spec),
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
                restart_policy={"Name": "on-failure"} if restart else {"Name": "no"},
                init=False,
                **kwargs,
            )
            try:
                container.start()
            except Exception:  # not left behind as a "created" container that never runs
                engine.remove_container(container)
                raise
            return container

    def _containers(self) -> list[Any]:
        return engine.listed_containers(self.client, labels.filters(self.kind, self.spec.name))

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


def _sort_key(name: str) -> tuple[int, str, int]:
    head, _, tail = name.rpartition("-")
    if tail.isdigit():
        return (1, head, int(tail))
    return (0, name, 0)
