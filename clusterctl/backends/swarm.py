"""The swarm backend: a cluster as Docker Swarm services on one overlay network.

The scheduler and the notebook are one-replica services; each worker group is a replicated
service whose tasks are named ``<service>-<slot>`` (their hostname, hence their Dask name).
Certificates and the notebook's token are swarm secrets, so they reach every node without
bind mounts and never show in ``docker service inspect``. Services, secrets and the network
carry the docker backend's labels; the scheduler service carries the spec.

Scale-down: ``docker service scale`` chooses the tasks it removes by itself (balance across
nodes, then tasks that aren't running, then the highest slot), never by the data a worker
holds. So the controller retires its chosen workers through the scheduler first; they exit
0 and, under ``restart_policy: on-failure``, their tasks stay ``complete``, and lowering the
replica count then removes exactly those (verified on Engine 20.10: the completed slots go,
the running ones stay). A worker that won't exit is stopped with SIGTERM, on which
``dask worker`` also exits 0.

Ports are published in swarm's ``host`` mode, on the node that runs the task: the routing
mesh (``ingress``) needs IPVS, which not every kernel has. Swarm can't bind a published port
to one address, so they listen on all of the node's addresses: the scheduler port needs the
cluster's certificates, and the scheduler serves no HTTP API that changes anything (the
images' Dask configuration leaves ``distributed.http.scheduler.api`` out).

Discovery reads only, as the docker backend's does: services, networks, secrets and
volumes labelled for a cluster, and state folders whose ``spec.json`` names this backend.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from functools import cached_property
from typing import Any

from clusterctl import engine, labels, launch, state, waiting
from clusterctl.backends.base import Member
from clusterctl.backends.containers import ContainerBackend
from clusterctl.errors import ClusterctlError, UserInputError
from clusterctl.render.stack import WORKER_HOSTNAME
from clusterctl.security import tls_files
from clusterctl.spec import WorkerGroup

LIVE_STATES = {
    "new",
    "allocated",
    "pending",
    "assigned",
    "accepted",
    "preparing",
    "ready",
    "starting",
    "running",
}
TLS_FILES = ("ca.pem", "cert.pem", "key.pem")


class SwarmBackend(ContainerBackend):
    kind = "swarm"
    services = True
    scheduler_holder = "service"
    no_engine = "its state folder names the swarm backend, and this engine is no swarm manager"

    # --- discovery ------------------------------------------------------------------------

    @classmethod
    def engine_or_none(cls) -> Any | None:
        """The engine's client when it is a swarm manager, else None (nothing to find)."""
        client = engine.client_or_none()
        if client is None or not client.info().get("Swarm", {}).get("ControlAvailable"):
            return None
        return client

    @classmethod
    def scheduler_labels(cls, client: Any, name: str) -> dict[str, str] | None:
        found = client.services.list(filters=labels.filters(cls.kind, name, "scheduler"))
        return found[0].attrs["Spec"]["Labels"] if found else None

    # --- lifecycle ------------------------------------------------------------------------

    def preflight(self) -> None:
        swarm = self.client.info().get("Swarm", {})
        if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
            raise UserInputError(
                "backend: swarm needs this engine to be a swarm manager "
                f"(its swarm state is {swarm.get('LocalNodeState', 'unknown')!r}); "
                "run `docker swarm init`, or choose another backend"
            )
        super().preflight()

    def start_scheduler(self) -> None:
        sched = self.spec.scheduler
        with engine.engine_errors(f"creating network {self._network}"):
            self.client.networks.create(
                self._network, driver="overlay", attachable=True, labels=self._labels()
            )
        args = ["--port", "8786"]
        if self.spec.security.tls:
            self._create_tls_secrets()
            args += ["--protocol", "tls", *launch.tls_args(self.spec)]
        self._create_service(
            "scheduler",
            ["scheduler", *args],
            name=f"{self.spec.name}-scheduler",
            env=launch.scheduler_env(self.spec),
            restart="none",
            mounts=self._mounts(sched.mounts),
            ports={8786: sched.port, 8787: sched.dashboard_port},
            extra_labels={labels.SPEC: json.dumps(self.spec.to_dict())},
        )
        if self.spec.notebook.enabled:
            self._start_notebook()

    def _start_notebook(self) -> None:
        self._write_notebook_token()
        secret = self._secret(f"{self.spec.name}-notebook-token", self._notebook_token() or "")
        env = {
            "DASK_SCHEDULER_ADDRESS": self._address_in_network(),
            "JUPYTER_TOKEN_FILE": launch.TOKEN_IN_CONTAINER,
            **launch.dask_tls_env(self.spec),
        }
        self._create_service(
            "notebook",
            ["notebook"],
            name=f"{self.spec.name}-notebook",
            env=env,
            restart="on-failure",
            ports={8888: self.spec.notebook.port},
            secrets=[_secret_file(secret, launch.TOKEN_IN_CONTAINER)],
            mounts=self._mounts(self.spec.workers[0].mounts),
        )

    def _create_tls_secrets(self) -> None:
        folder = tls_files(self.spec.name).ca.parent
        for file in TLS_FILES:
            self._secret(f"{self.spec.name}-tls-{file}", state.read_text(folder / file) or "")

    def _secret(self, name: str, data: str) -> Any:
        with engine.engine_errors(f"creating secret {name}"):
            return self.client.secrets.create(name=name, data=data.encode(), labels=self._labels())

    def wait_until_ready(self) -> None:
        """Until the scheduler's task answers on its published dashboard port, then the
        notebook's on JupyterLab's; all within ``start-timeout``."""
        deadline = time.monotonic() + self.spec.start_timeout

        def scheduler_answers() -> bool:
            task = self._live_task(f"{self.spec.name}-scheduler")
            port = _published_port(task, 8787) if task else None
            if port and waiting.answers(f"http://{self._node_address(task)}:{port}/health"):
                return True
            if task is None and self._failed("scheduler"):
                raise ClusterctlError(f"the scheduler did not start:\n{self._scheduler_log()}")
            return False

        waiting.until(
            scheduler_answers,
            timeout=self.spec.start_timeout,
            interval=0.2,
            what=f"the scheduler of cluster {self.spec.name!r} answering on its published "
            "dashboard port",
            detail=self._scheduler_log,
        )
        if self.spec.notebook.enabled:
            waiting.until(
                self._notebook_healthy,
                timeout=max(deadline - time.monotonic(), 0),
                interval=0.2,
                what=f"the notebook of cluster {self.spec.name!r} answering",
            )

    def _scheduler_log(self) -> str:
        try:
            return "\n".join(list(self.logs("scheduler"))[-30:])
        except UserInputError as exc:  # its task runs on another node, or not at all
            return str(exc)

    def _failed(self, role: str) -> bool:
        """Whether the latest task of a one-replica service has ended."""
        tasks = self._service(f"{self.spec.name}-{role}").tasks()
        return bool(tasks) and all(t["Status"]["State"] not in LIVE_STATES for t in tasks)

    def _notebook_healthy(self) -> bool:
        task = self._live_task(f"{self.spec.name}-notebook")
        port = _published_port(task, 8888) if task else None
        return bool(port) and waiting.answers(f"http://{self._node_address(task)}:{port}/api")

    def notebook_url(self) -> str | None:
        task = self._live_task(f"{self.spec.name}-notebook")
        port = _published_port(task, 8888) if task else None
        token = self._notebook_token()
        if not port or token is None:
            return None
        return f"http://{self._node_address(task)}:{port}/lab?token={token}"

    def dashboard_address(self) -> str | None:
        task = self._live_task(f"{self.spec.name}-scheduler")
        port = _published_port(task, 8787) if task else None
        return f"{self._node_address(task)}:{port}" if port else None

    def scheduler_address(self) -> str:
        task = self._live_task(f"{self.spec.name}-scheduler")
        port = _published_port(task, 8786) if task else None
        if not port:
            raise ClusterctlError(f"the scheduler of cluster {self.spec.name!r} is not running")
        protocol = "tls" if self.spec.security.tls else "tcp"
        return f"{protocol}://{self._node_address(task)}:{port}"

    def start_workers(self, group: WorkerGroup, n: int) -> list[str]:
        name = f"{self.spec.name}-{group.name}"
        service = self._service(name)
        if service is None:
            args = [*launch.worker_args(group), *launch.tls_args(self.spec)]
            limits = launch.container_limits(group)
            service = self._create_service(
                "worker",
                ["worker", self._address_in_network(), *args],
                name=name,
                group=group,
                env=group.env,
                restart="on-failure",
                replicas=n,
                hostname=WORKER_HOSTNAME,
                mounts=self._mounts(group.mounts),
                resources={
                    "cpu_limit": int(limits["cpus"] * 1e9) if "cpus" in limits else None,
                    "mem_limit": limits.get("mem_limit"),
                },
            )
            before: set[str] = set()
        else:
            before = {m.name for m in self._members_of(service)}
            self._add_replicas(service, n)
        waiting.until(
            lambda: len(self._members_of(service)) >= len(before) + n,
            timeout=30,
            what=f"swarm creating {n} tasks of {name}",
        )
        return sorted({m.name for m in self._members_of(service)} - before, key=_slot)

    def stop_workers(self, names: list[str]) -> None:
        by_service: dict[str, list[str]] = {}
        for name in names:
            by_service.setdefault(name.rpartition("-")[0], []).append(name)
        for service_name, victims in by_service.items():
            service = self._service(service_name)
            if service is None:
                continue
            present = {m.name for m in self._members_of(service)} & set(victims)
            if not present:
                continue
            self._let_exit(service, present)
            self._add_replicas(service, -len(present))
            self._wait_removed(service, present)

    def _let_exit(self, service: Any, victims: set[str]) -> None:
        """Wait for the victims' tasks to end (retired workers exit 0 by themselves); stop
        the ones that don't in 10 s. Ended with 0, their tasks stay down under on-failure,
        and they are the ones the next scale-down removes."""

        def live() -> list[dict[str, Any]]:
            tasks = self._tasks(service, victims)
            return [t for t in tasks if t["Status"]["State"] in LIVE_STATES]

        what = f"workers {sorted(victims)} exiting"
        try:
            waiting.until(lambda: not live(), timeout=10, what=f"{what} once retired")
        except waiting.WaitTimeout:
            for task in live():
                container = self._task_container(task)
                if container is not None:
                    container.stop(timeout=10)  # SIGTERM: dask worker exits 0
            waiting.until(lambda: not live(), timeout=30, what=f"{what} when stopped")

    def _wait_removed(self, service: Any, victims: set[str]) -> None:
        """Return once swarm has dropped the victims' slots; fail if it chose others."""
        waiting.until(
            lambda: not self._tasks(service, victims),
            timeout=30,
            what=f"swarm removing the tasks of {sorted(victims)}",
        )

    def members(self) -> list[Member]:
        services = self.client.services.list(filters=labels.filters(self.kind, self.spec.name))
        found = [m for s in services for m in self._members_of(s)]
        order = {"scheduler": 0, "notebook": 1, "worker": 2}
        return sorted(found, key=lambda m: (order[m.role], m.group or "", _slot(m.name)))

    def logs(self, name: str, follow: bool = False) -> Iterator[str]:
        if name in ("scheduler", "notebook"):
            name = f"{self.spec.name}-{name}"
        known = {m.name for m in self.members()}
        if name not in known:
            raise UserInputError(
                f"no scheduler or worker named {name!r}; known: {', '.join(sorted(known))}"
            )
        service_name = (
            name if name.endswith(("-scheduler", "-notebook")) else name.rpartition("-")[0]
        )
        tasks = self._tasks(self._service(service_name), {name})
        container = self._task_container(tasks[0]) if tasks else None
        if container is None:
            raise UserInputError(
                f"{name} does not run on this node; see `docker service logs {service_name}`"
            )
        yield from engine.log_lines(container, follow)

    def destroy(self) -> None:
        if not self.client.info().get("Swarm", {}).get("ControlAvailable"):
            return  # not a swarm manager (any more): there are no services to remove
        ours = labels.filters(self.kind, self.spec.name)
        for service in self.client.services.list(filters=ours):
            with engine.engine_errors(f"removing service {service.name}"):
                service.remove()
        with contextlib.suppress(waiting.WaitTimeout):  # those left are removed below
            waiting.until(
                lambda: not self.client.api.containers(all=True, filters=ours),
                timeout=60,
                interval=0.2,
                what="swarm removing the tasks' containers",
            )
        for container in self.client.api.containers(all=True, filters=ours):
            _remove_container(self.client, container["Id"])
        for secret in self.client.secrets.list(filters=ours):
            with engine.engine_errors(f"removing secret {secret.name}"):
                secret.remove()
        for network in self.client.networks.list(filters=ours):
            engine.remove_network(network, within=30)
        for volume in self.client.volumes.list(filters=ours):
            engine.remove_volume(volume)

    # --- helpers --------------------------------------------------------------------------

    def _create_service(
        self,
        role: str,
        command: list[str],
        *,
        name: str,
        restart: str,
        env: dict[str, str],
        group: WorkerGroup | None = None,
        ports: dict[int, int] | None = None,
        replicas: int = 1,
        hostname: str | None = None,
        mounts: dict[str, dict[str, str]] | None = None,
        secrets: list[Any] | None = None,
        resources: dict[str, int | None] | None = None,
        extra_labels: dict[str, str] | None = None,
    ) -> Any:
        """Create a labelled, unprivileged service of this cluster."""
        from docker.types import EndpointSpec, Mount, Resources, RestartPolicy, ServiceMode

        image = self._image(role, group)
        own = self._labels(role, group.name if group else None)
        endpoint = EndpointSpec(mode="dnsrr")  # a VIP needs IPVS, like the routing mesh
        endpoint["Ports"] = [
            {
                "Protocol": "tcp",
                "TargetPort": inside,
                "PublishMode": "host",
                **({"PublishedPort": outside} if outside else {}),
            }
            for inside, outside in (ports or {}).items()
        ]
        with engine.engine_errors(f"creating service {name}"):
            return self.client.services.create(
                image,
                args=command,
                name=name,
                hostname=hostname or name,
                env=env,
                labels={**own, **(extra_labels or {})},
                container_labels=own,
                networks=[self._network],
                endpoint_spec=endpoint,
                user=launch.container_user(),
                mode=ServiceMode("replicated", replicas=replicas),
                restart_policy=RestartPolicy(condition=restart, delay=1_000_000_000),
                mounts=[
                    Mount(target=m["bind"], source=source, type="bind", read_only=m["mode"] == "ro")
                    for source, m in (mounts or {}).items()
                ],
                secrets=[*self._tls_secret_files(), *(secrets or [])],
                resources=Resources(**resources) if resources else None,
                cap_drop=["ALL"],
            )

    def _add_replicas(self, service: Any, delta: int) -> None:
        """Change the replica count by ``delta`` and nothing else.

        Not ``Service.scale()``: the SDK sends back the spec as inspected *with defaults
        filled in*, which swarm sees as a new task template, and it then restarts every
        task of the service, data and all (seen on Engine 20.10).
        """
        current = self.client.api.inspect_service(service.id)
        spec = current["Spec"]
        replicas = spec["Mode"]["Replicated"]["Replicas"] + delta
        with engine.engine_errors(f"scaling service {spec['Name']} to {replicas}"):
            self.client.api.update_service(
                service.id,
                current["Version"]["Index"],
                name=spec["Name"],
                labels=spec.get("Labels"),
                task_template=spec["TaskTemplate"],
                mode={"Replicated": {"Replicas": replicas}},
                endpoint_spec=spec.get("EndpointSpec"),
            )
        service.reload()

    def _tls_secret_files(self) -> list[Any]:
        if not self.spec.security.tls:
            return []
        found = {
            s.name: s
            for s in self.client.secrets.list(filters=labels.filters(self.kind, self.spec.name))
        }
        return [
            _secret_file(found[f"{self.spec.name}-tls-{file}"], f"{launch.TLS_IN_CONTAINER}/{file}")
            for file in TLS_FILES
        ]

    def _service(self, name: str) -> Any | None:
        found = self.client.services.list(
            filters={"name": name, **labels.filters(self.kind, self.spec.name)}
        )
        return next((s for s in found if s.name == name), None)

    def _tasks(self, service: Any, names: set[str]) -> list[dict[str, Any]]:
        """The current tasks (desired running, or not yet removed) of the named members."""
        if service is None:
            return []
        return [t for t in _current_tasks(service) if _task_member(service, t) in names]

    def _live_task(self, service_name: str) -> dict[str, Any] | None:
        service = self._service(service_name)
        tasks = _current_tasks(service) if service else []
        return next((t for t in tasks if t["Status"]["State"] == "running"), None)

    def _members_of(self, service: Any) -> list[Member]:
        role = service.attrs["Spec"]["Labels"].get(labels.ROLE, "worker")
        group = service.attrs["Spec"]["Labels"].get(labels.GROUP)
        return [
            Member(
                name=_task_member(service, task),
                role=role,
                group=group,
                running=_running(task, role),
                detail=f"task {task['ID'][:12]}",
            )
            for task in _current_tasks(service)
        ]

    def _task_container(self, task: dict[str, Any]) -> Any | None:
        """The task's container, when it runs on this node."""
        container_id = task["Status"].get("ContainerStatus", {}).get("ContainerID")
        if not container_id:
            return None
        import docker.errors

        try:
            return self.client.containers.get(container_id)
        except docker.errors.NotFound:
            return None

    def _node_address(self, task: dict[str, Any]) -> str:
        """Where this machine reaches a port the task publishes: loopback on this node."""
        if task["NodeID"] == self._this_node:
            return "127.0.0.1"
        return self.client.nodes.get(task["NodeID"]).attrs["Status"]["Addr"]

    @cached_property
    def _this_node(self) -> str:
        return self.client.info()["Swarm"]["NodeID"]


def _current_tasks(service: Any) -> list[dict[str, Any]]:
    """The task holding each slot of the service now.

    That is the slot's latest task while swarm wants it running (or is about to restart
    it), or while it has ended with 0 in place (a retired worker, until the scale-down that
    removes its slot). A removed slot's older tasks linger as history for a while: not
    counted. A one-replica service (scheduler, notebook) always shows its latest task.
    """
    latest: dict[int, dict[str, Any]] = {}
    for task in service.tasks():
        slot = task.get("Slot", 0)
        if slot not in latest or task["Version"]["Index"] > latest[slot]["Version"]["Index"]:
            latest[slot] = task
    if service.attrs["Spec"]["Labels"].get(labels.ROLE) != "worker":
        return list(latest.values())
    return [
        t
        for t in latest.values()
        if t["DesiredState"] in ("ready", "running")
        or (t["DesiredState"] == "shutdown" and t["Status"]["State"] == "complete")
    ]


def _running(task: dict[str, Any], role: str) -> bool:
    """Whether a task runs, or is a worker's that swarm is restarting (under on-failure,
    as the engine restarts the docker backend's containers): not one to replace."""
    if role == "worker" and task["DesiredState"] in ("ready", "running"):
        return True
    return task["Status"]["State"] in LIVE_STATES


def _task_member(service: Any, task: dict[str, Any]) -> str:
    if service.attrs["Spec"]["Labels"].get(labels.ROLE) != "worker":
        return service.name
    return f"{service.name}-{task['Slot']}"


def _published_port(task: dict[str, Any], inside: int) -> int | None:
    for port in task["Status"].get("PortStatus", {}).get("Ports", []):
        if port["TargetPort"] == inside:
            return port["PublishedPort"]
    return None


def _secret_file(secret: Any, path: str) -> Any:
    """A secret mounted at ``path``, readable by the containers' group (0) only."""
    from docker.types import SecretReference

    return SecretReference(secret.id, secret.name, filename=path, uid="0", gid="0", mode=0o440)


def _slot(name: str) -> int:
    tail = name.rpartition("-")[2]
    return int(tail) if tail.isdigit() else 0


def _remove_container(client: Any, container_id: str) -> None:
    import docker.errors

    removing = engine.engine_errors("removing a task container")
    with removing, contextlib.suppress(docker.errors.NotFound):
        client.api.remove_container(container_id, v=True, force=True)  # unless swarm did
