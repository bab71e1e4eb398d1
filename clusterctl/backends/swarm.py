"""The swarm backend: a cluster as Docker Swarm services on one overlay network.

Every member is a one-replica service pinned to a node (a ``node.id==`` constraint): the
scheduler and the notebook to the manager this machine talks to, each worker (named
``<cluster>-<group>-<n>``, its hostname and Dask name) to the node chosen for it, the one
with the fewest of its group's workers among the ready nodes that meet the group's
``placement``. Certificates and the notebook's token are swarm secrets, so they reach every
node without bind mounts and never show in ``docker service inspect``. Services, secrets and
the network carry the docker backend's labels; the scheduler service carries the spec.

Why a service per worker, not a replicated service per group: lowering a service's replica
count removes the tasks swarm picks, on the nodes holding the most replicas first, and not
the workers the scheduler retired (swarmkit's replicated orchestrator, its reconcile: balance
across nodes comes first). Removing a worker's own service removes exactly that worker. A
worker whose node goes down is reported not running; the controller removes its service and
starts a replacement on a node that is up (swarm can't move a pinned task), and when the
node returns its engine drops the removed service's container.

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
import logging
import re
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from typing import Any

from clusterctl import engine, labels, launch, state, waiting
from clusterctl.backends.base import Member
from clusterctl.backends.containers import ContainerBackend
from clusterctl.errors import ClusterctlError, UserInputError
from clusterctl.memory import Host
from clusterctl.security import tls_files
from clusterctl.spec import WorkerGroup

logger = logging.getLogger(__name__)

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
    wrong_engine = "its state folder names the swarm backend, and this engine is no swarm manager"
    no_answer_means = " (the swarm's manager: its workers run on unmanaged until it is back)"

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
        for group in self.spec.workers:  # every group fits the nodes, before anything starts
            self._place(group, group.count, [])
        if self.spec.share_dir is not None and len(self.client.api.nodes()) > 1:
            logger.warning(
                "share-dir: %s is mounted on whichever node runs each container: it must be "
                "on a filesystem every node mounts at that same path (NFS; see "
                "docs/backends.md), or each node's workers see that node's own folder",
                self.spec.share_dir,
            )

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
            node=self._this_node,  # a manager: where this machine reaches its ports
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
            node=self._this_node,
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
        services = self._services()
        workers = [s for s in services if _role(s) == "worker"]
        nodes = self._place(group, n, services)  # before anything is made: all fit, or none
        first = max((_number(s.name) for s in workers), default=0) + 1
        names = [f"{self.spec.name}-{group.name}-{i}" for i in range(first, first + n)]
        args = [*launch.worker_args(group), *launch.tls_args(self.spec)]
        limits = launch.container_limits(group)
        resources: dict[str, Any] = {
            "cpu_limit": int(limits["cpus"] * 1e9) if "cpus" in limits else None,
            "mem_limit": limits.get("mem_limit"),
        }
        if group.gpus is not None:
            resources["generic_resources"] = {launch.SWARM_GPU_KIND: group.gpus}

        def start(name: str, node: str) -> None:
            self._create_service(
                "worker",
                ["worker", self._address_in_network(), "--name", name, *args],
                name=name,
                group=group,
                env=group.env,
                restart="on-failure",
                node=node,
                constraints=list(group.placement.constraints),
                mounts=self._mounts(group.mounts),
                resources=resources,
            )

        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(start, names, nodes))
        return names

    def worker_hosts(self) -> list[Host]:
        """The ready nodes, each with its memory and the groups whose placement it meets:
        workers are sized per node (:mod:`clusterctl.memory`)."""
        return [
            Host(
                _hostname(node),
                node["Description"].get("Resources", {}).get("MemoryBytes"),
                frozenset(g.name for g in self.spec.workers if _may_run(node, g)),
            )
            for node in self.client.api.nodes()
            if node["Status"]["State"] == "ready" and node["Spec"].get("Availability") == "active"
        ]

    def _place(self, group: WorkerGroup, n: int, services: list[Any]) -> list[str]:
        """The nodes for ``n`` more workers of ``group``: each on a ready node that meets
        the group's constraints and has room under its ``max-replicas-per-node``, the one
        with the fewest of the group's workers, then of the cluster's services."""
        nodes = [
            node
            for node in self.client.api.nodes()
            if node["Status"]["State"] == "ready" and node["Spec"].get("Availability") == "active"
        ]
        constraints = group.placement.constraints
        eligible = [node for node in nodes if all(_meets(node, c) for c in constraints)]
        if group.gpus is not None and eligible:
            eligible = [node for node in eligible if _gpus(node) >= group.gpus]
            if not eligible:
                raise UserInputError(
                    f"workers.{group.name}.gpus: no ready node of the swarm advertises "
                    f"{group.gpus} GPUs (its engine's --node-generic-resource "
                    f"{launch.SWARM_GPU_KIND}=...)"
                )
        if not eligible:
            raise UserInputError(
                f"workers.{group.name}: no ready node of the swarm meets the group's placement "
                f"constraints {list(constraints)}; nodes: "
                + ", ".join(f"{_hostname(node)} ({node['Status']['State']})" for node in nodes)
            )
        mine = Counter(_pinned_node(s) for s in services if _group(s) == group.name)
        load = Counter(_pinned_node(s) for s in services)
        most = group.placement.max_replicas_per_node
        chosen: list[str] = []
        for _ in range(n):
            room = [node for node in eligible if most is None or mine[node["ID"]] < most]
            if not room:
                raise UserInputError(
                    f"workers.{group.name}: {sum(mine.values())} workers would be all that "
                    f"fit: {len(eligible)} eligible nodes, at most {most} on each "
                    "(placement.max-replicas-per-node)"
                )
            best = min(room, key=lambda node: (mine[node["ID"]], load[node["ID"]], _hostname(node)))
            mine[best["ID"]] += 1
            load[best["ID"]] += 1
            chosen.append(best["ID"])
        return chosen

    def stop_workers(self, names: list[str]) -> None:
        """Remove the workers' services: exactly those, wherever they run. A worker the
        controller retired has exited already; any other is stopped by swarm (SIGTERM, on
        which ``dask worker`` exits 0; SIGKILL after 10 s)."""
        wanted = set(names)
        for service in self._services():
            if service.name in wanted and _role(service) == "worker":
                with engine.engine_errors(f"removing service {service.name}"):
                    service.remove()

    def members(self) -> list[Member]:
        services = self._services()
        tasks: dict[str, list[dict[str, Any]]] = {s.id: [] for s in services}
        if services:
            for task in self.client.api.tasks(filters={"service": list(tasks)}):
                tasks.setdefault(task["ServiceID"], []).append(task)
        nodes = {node["ID"]: node for node in self.client.api.nodes()}
        found = [
            self._member(service, _current_task(tasks[service.id]), nodes) for service in services
        ]
        order = {"scheduler": 0, "notebook": 1, "worker": 2}
        return sorted(found, key=lambda m: (order[m.role], m.group or "", _number(m.name)))

    def _member(
        self, service: Any, task: dict[str, Any] | None, nodes: dict[str, dict[str, Any]]
    ) -> Member:
        """A service's member: running while its task is wanted running (a worker's also
        while swarm restarts it) on a node that is up; a worker pinned to a node that is
        down is not, and the controller replaces it elsewhere."""
        role = _role(service)
        node = nodes.get((task or {}).get("NodeID") or _pinned_node(service) or "")
        up = node is not None and node["Status"]["State"] == "ready"
        if task is None:  # just created: swarm makes its task in a moment
            running = up
        else:
            wanted = task["DesiredState"] in ("ready", "running")
            running = up and wanted and (role == "worker" or task["Status"]["State"] in LIVE_STATES)
        where = f"on {_hostname(node)}" if node else "not placed"
        return Member(
            name=service.name,
            role=role,
            group=_group(service),
            running=running,
            detail=f"{where}, task {task['ID'][:12]}" if task else where,
        )

    def logs(self, name: str, follow: bool = False) -> Iterator[str]:
        """A member's log: from its container when it runs on this node, else through
        swarm (``docker service logs``), wherever it runs."""
        if name in ("scheduler", "notebook"):
            name = f"{self.spec.name}-{name}"
        services = {s.name: s for s in self._services()}
        if name not in services:
            raise UserInputError(
                f"no scheduler or worker named {name!r}; known: {', '.join(sorted(services))}"
            )
        service = services[name]
        task = _current_task(self.client.api.tasks(filters={"service": service.id}))
        container = self._task_container(task) if task else None
        if container is not None:
            yield from engine.log_lines(container, follow)
        elif follow:
            yield from engine.lines_of(service.logs(stdout=True, stderr=True, follow=True))
        else:
            yield from _remote_log(service)

    def destroy(self) -> None:
        if not self.client.info().get("Swarm", {}).get("ControlAvailable"):
            return  # not a swarm manager (any more): there are no services to remove
        ours = labels.filters(self.kind, self.spec.name)
        services = self.client.services.list(filters=ours)
        ids = [s.id for s in services]
        tasks = self.client.api.tasks(filters={"service": ids}) if ids else []
        for service in services:
            with engine.engine_errors(f"removing service {service.name}"):
                service.remove()

        def tasks_left() -> bool:
            """Whether the manager still holds a task of ours on a node that is up (a node
            that is down drops them when it returns), or this engine a container. Other
            nodes remove their containers a moment after their tasks go."""
            up = {n["ID"] for n in self.client.api.nodes() if n["Status"]["State"] == "ready"}
            present = {t["ID"] for t in self.client.api.tasks()}
            remaining = [t for t in tasks if t["ID"] in present and t.get("NodeID") in up]
            return bool(remaining or self.client.api.containers(all=True, filters=ours))

        with contextlib.suppress(waiting.WaitTimeout):  # those left here are removed below
            waiting.until(
                lambda: not tasks_left(),
                timeout=60,
                interval=0.2,
                what="swarm removing the tasks' containers on every node",
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
        node: str,
        constraints: list[str] | None = None,
        mounts: dict[str, dict[str, str]] | None = None,
        secrets: list[Any] | None = None,
        resources: dict[str, Any] | None = None,
        extra_labels: dict[str, str] | None = None,
    ) -> Any:
        """Create a labelled, unprivileged one-replica service of this cluster, pinned to
        ``node`` (a swarm node's id)."""
        from docker.types import EndpointSpec, Mount, Resources, RestartPolicy

        image = self._image(role, group)
        own = self._labels(role, group.name if group else None)
        process = launch.container_process(self.spec)
        binds = [
            Mount(target=m["bind"], source=source, type="bind", read_only=m["mode"] == "ro")
            for source, m in (mounts or {}).items()
        ]
        if "working_dir" in process:  # the share-dir, at its own path on every node
            binds.append(Mount(process["working_dir"], process["working_dir"], type="bind"))
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
                hostname=name,
                env=env,
                labels={**own, **(extra_labels or {})},
                container_labels=own,
                networks=[self._network],
                endpoint_spec=endpoint,
                user=process["user"],
                groups=process.get("group_add"),
                workdir=process.get("working_dir"),
                constraints=[f"node.id=={node}", *(constraints or [])],
                restart_policy=RestartPolicy(condition=restart, delay=1_000_000_000),
                mounts=binds,
                secrets=[*self._tls_secret_files, *(secrets or [])],
                resources=Resources(**resources) if resources else None,
                cap_drop=["ALL"],
            )

    @cached_property
    def _tls_secret_files(self) -> list[Any]:
        """The certificates' secrets, as every service of the cluster mounts them."""
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

    def _services(self) -> list[Any]:
        return self.client.services.list(filters=labels.filters(self.kind, self.spec.name))

    def _service(self, name: str) -> Any | None:
        found = self.client.services.list(
            filters={"name": name, **labels.filters(self.kind, self.spec.name)}
        )
        return next((s for s in found if s.name == name), None)

    def _live_task(self, service_name: str) -> dict[str, Any] | None:
        """The running task of the scheduler's or the notebook's service, if it runs."""
        service = self._service(service_name)
        task = _current_task(service.tasks()) if service else None
        return task if task and task["Status"]["State"] == "running" else None

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
        """Where this machine reaches a port the task publishes: its node's address in the
        swarm (a manager may show 0.0.0.0 there; then its address as a manager)."""
        node = self.client.api.inspect_node(task["NodeID"])
        address = node["Status"].get("Addr", "")
        if address in ("", "0.0.0.0"):
            address = node.get("ManagerStatus", {}).get("Addr", "").rpartition(":")[0]
        return address

    @cached_property
    def _this_node(self) -> str:
        return self.client.info()["Swarm"]["NodeID"]


REMOTE_LOG_TRIES = 10  # `docker service logs` of a task on another node can come back empty


def _remote_log(service: Any) -> list[str]:
    """The log of a service whose task runs on another node, read through the manager.

    The manager relays it from that node's engine, and a read ends empty until the node has
    sent anything (moby#33183; on `scripts/nodes`, for ~2 s after the worker registered): a
    started task has always written something, so an empty read is tried again, a second
    apart.
    """
    for _ in range(REMOTE_LOG_TRIES - 1):
        if lines := list(engine.lines_of(service.logs(stdout=True, stderr=True))):
            return lines
        time.sleep(1)
    return list(engine.lines_of(service.logs(stdout=True, stderr=True)))


def _current_task(tasks: list[dict[str, Any]]) -> dict[str, Any] | None:
    """A one-replica service's task now: the newest swarm wants running, else the newest
    (a retired worker's, ended with 0; older tasks linger as history for a while)."""
    newest = sorted(tasks, key=lambda t: t["Version"]["Index"], reverse=True)
    wanted = [t for t in newest if t["DesiredState"] in ("ready", "running")]
    return (wanted or newest or [None])[0]


def _role(service: Any) -> str:
    return service.attrs["Spec"]["Labels"].get(labels.ROLE, "worker")


def _group(service: Any) -> str | None:
    return service.attrs["Spec"]["Labels"].get(labels.GROUP)


def _pinned_node(service: Any) -> str | None:
    """The node a service is pinned to (its ``node.id==`` constraint)."""
    placement = service.attrs["Spec"]["TaskTemplate"].get("Placement", {})
    for constraint in placement.get("Constraints") or []:
        key, _, value = constraint.partition("==")
        if key.strip() == "node.id":
            return value.strip()
    return None


def _hostname(node: dict[str, Any]) -> str:
    return node["Description"]["Hostname"]


def _gpus(node: dict[str, Any]) -> int:
    """How many GPUs a swarm node's engine advertises (named ones count one each)."""
    count = 0
    for resource in node["Description"].get("Resources", {}).get("GenericResources") or []:
        for spec in ("DiscreteResourceSpec", "NamedResourceSpec"):
            if resource.get(spec, {}).get("Kind") == launch.SWARM_GPU_KIND:
                value = resource[spec]["Value"]
                count += value if spec == "DiscreteResourceSpec" else 1
    return count


def _may_run(node: dict[str, Any], group: WorkerGroup) -> bool:
    """Whether a node meets a group's placement constraints and has its GPUs."""
    fits = group.gpus is None or _gpus(node) >= group.gpus
    return fits and all(_meets(node, c) for c in group.placement.constraints)


def _meets(node: dict[str, Any], constraint: str) -> bool:
    """Whether a node meets a placement constraint (as swarm reads ``key==value``/``!=``)."""
    key, op, value = re.fullmatch(r"\s*([\w.-]+)\s*(==|!=)\s*(\S+)\s*", constraint).groups()
    spec, description = node["Spec"], node["Description"]
    if key.startswith("node.labels."):
        actual = (spec.get("Labels") or {}).get(key.removeprefix("node.labels."))
    elif key.startswith("engine.labels."):
        actual = (description["Engine"].get("Labels") or {}).get(key.removeprefix("engine.labels."))
    else:
        actual = {
            "node.id": node["ID"],
            "node.hostname": description["Hostname"],
            "node.role": spec.get("Role"),
            "node.platform.os": description["Platform"].get("OS"),
            "node.platform.arch": description["Platform"].get("Architecture"),
        }[key]
    equal = actual is not None and actual.lower() == value.lower()
    return equal if op == "==" else not equal


def _published_port(task: dict[str, Any], inside: int) -> int | None:
    for port in task["Status"].get("PortStatus", {}).get("Ports", []):
        if port["TargetPort"] == inside:
            return port["PublishedPort"]
    return None


def _secret_file(secret: Any, path: str) -> Any:
    """A secret mounted at ``path``, readable by the containers' group (0) only."""
    from docker.types import SecretReference

    return SecretReference(secret.id, secret.name, filename=path, uid="0", gid="0", mode=0o440)


def _number(name: str) -> int:
    """A worker's number, the last part of its name (0 for the scheduler and notebook)."""
    tail = name.rpartition("-")[2]
    return int(tail) if tail.isdigit() else 0


def _remove_container(client: Any, container_id: str) -> None:
    import docker.errors

    removing = engine.engine_errors("removing a task container")
    with removing, contextlib.suppress(docker.errors.NotFound):
        client.api.remove_container(container_id, v=True, force=True)  # unless swarm did
