"""The interface every backend implements: processes and containers, no Dask logic.

A backend starts and stops the scheduler and named workers, and reads back what runs
from where it really lives (a state folder, the container engine), so any process can
find and clean up a cluster. Deciding *which* workers to stop is the controller's job
(:mod:`clusterctl.cluster`); a backend only removes the workers it is told to.
"""

from __future__ import annotations

import socket
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass

from clusterctl.errors import UserInputError
from clusterctl.memory import Host
from clusterctl.spec import ClusterSpec, WorkerGroup


@dataclass(frozen=True)
class Member:
    """One scheduler or worker as the backend sees it."""

    name: str
    role: str  # "scheduler" | "worker" | "notebook"
    group: str | None
    running: bool
    detail: str = ""  # e.g. "pid 1234" or a container id


class Backend(ABC):
    """One cluster on one backend. Construct with a spec, or :meth:`attach` by name."""

    kind: str
    # True when an orchestrator keeps each group at its size, replaces dead workers, retires
    # the ones it removes and adapts (the dask-kubernetes operator): the controller then
    # hands scale() and adapt() to the backend, and never starts or stops workers itself.
    orchestrated: bool = False
    # True when the scheduler and workers run this very Python environment (processes of
    # this interpreter): nothing to compare with the client's.
    runs_this_environment: bool = False

    def __init__(self, spec: ClusterSpec, problem: str | None = None):
        self.spec = spec
        # Why this cluster can't be used, when attach() found its remains but not a readable
        # spec (a damaged state folder, a network whose containers are gone): ``spec`` is
        # then a placeholder, and only members() and destroy() make sense.
        self.problem = problem
        # True when the problem is that what holds the cluster (an engine, a swarm manager)
        # does not answer: the cluster may be whole there, so nothing is to be removed.
        self.unreachable = False

    @classmethod
    @abstractmethod
    def cluster_names(cls) -> list[str]:
        """Names of this backend's clusters here: running, stopped, or only remains (a
        state folder, a labelled network). Reads only; never changes anything."""

    @classmethod
    @abstractmethod
    def attach(cls, name: str) -> Backend | None:
        """The backend of cluster ``name``, read back from where its state lives; None when
        this backend has no trace of it. A damaged state never raises: the backend returned
        has :attr:`problem` set and :meth:`destroy` removes whatever can be found."""

    def preflight(self) -> None:
        """Refuse to start when a published port is taken; subclasses add their checks."""
        sched = self.spec.scheduler
        ports = [
            ("scheduler.port", "--port", sched.port),
            ("scheduler.dashboard-port", "--dashboard-port", sched.dashboard_port),
        ]
        if self.spec.notebook.enabled:
            ports.append(("notebook.port", "--notebook-port", self.spec.notebook.port))
        for field, flag, port in ports:
            if port and not port_is_free(sched.host, port):
                raise UserInputError(
                    f"{field}: port {port} on {sched.host} is already in use; choose another "
                    f"({flag}), or 0 for any free port"
                )

    @abstractmethod
    def start_scheduler(self) -> None:
        """Start the scheduler (and the notebook, if the spec asks).

        It may return before they answer (see :meth:`wait_until_ready`), so that workers
        can start meanwhile; it must return once workers could be given its address.
        """

    def wait_until_ready(self) -> None:
        """Return once the scheduler (and notebook) answer; raise if they never will.

        Backends whose :meth:`start_scheduler` already waits have nothing to do here.
        """
        return None

    @abstractmethod
    def scheduler_address(self) -> str:
        """The address clients on this machine use, e.g. ``tcp://127.0.0.1:8786``."""

    def dashboard_address(self) -> str | None:
        """``host:port`` where this machine reaches the dashboard, when that isn't the port
        the scheduler reports (a container's published port); else None."""
        return None

    @abstractmethod
    def notebook_url(self) -> str | None:
        """JupyterLab's URL with its token, or None without a notebook."""

    def scale(self, group: WorkerGroup, n: int) -> None:
        """An orchestrated backend: have its orchestrator run ``n`` workers of ``group``."""
        raise NotImplementedError(f"{self.kind}: workers are started and stopped one by one")

    def adapt(self, group: WorkerGroup, minimum: int, maximum: int) -> None:
        """An orchestrated backend: have its orchestrator adapt ``group``'s size."""
        raise NotImplementedError(f"{self.kind}: adaptive scaling is the controller's")

    def worker_hosts(self) -> list[Host]:
        """The machines the workers run on, with their memory, which the controller sizes
        them by (:mod:`clusterctl.memory`): one, of unknown memory, unless a backend knows."""
        return [Host("the workers' machine", None)]

    @abstractmethod
    def start_workers(self, group: WorkerGroup, n: int) -> list[str]:
        """Start ``n`` workers of ``group``; return their names (= Dask worker names).
        ``group`` comes with its workers' memory limit as the controller sized it."""

    @abstractmethod
    def stop_workers(self, names: list[str]) -> None:
        """Stop exactly the named workers and forget them (already-dead ones too)."""

    @abstractmethod
    def members(self) -> list[Member]:
        """The scheduler and workers, running or not, as they are now."""

    @abstractmethod
    def logs(self, name: str, follow: bool = False) -> Iterator[str]:
        """Lines of the log of the scheduler (``"scheduler"``) or a worker."""

    @abstractmethod
    def destroy(self) -> None:
        """Stop and remove everything of this cluster; safe to call twice."""


def port_is_free(host: str, port: int) -> bool:
    """Whether a server could listen on ``host:port`` now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True
