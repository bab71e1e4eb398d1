"""The local backend: the scheduler and workers as detached processes on this machine.

Everything it knows lives in the cluster's state folder (``clusterctl.state``)::

    spec.json                 the spec the cluster was started with (the controller's claim)
    scheduler.json            written by the scheduler (``--scheduler-file``): its address
    processes/<name>.json     pid, start time and log of the scheduler and each worker
    logs/<name>.log           their output

Processes run in their own session, so they outlive the command that started them; the
folder is read back by every command and never trusted: dead processes are noticed, and a
damaged file makes this one cluster "broken" (``down`` still removes it: every process is
also marked with the folder in its environment), never the others.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from clusterctl import preload, processes, sharing, state, waiting
from clusterctl.backends.base import Backend, Member
from clusterctl.errors import ClusterctlError, IgnoredFieldsWarning, UserInputError
from clusterctl.launch import scheduler_env, tls_args, worker_args
from clusterctl.memory import Host
from clusterctl.processes import ProcessRecord
from clusterctl.security import tls_files
from clusterctl.spec import BACKENDS, ClusterSpec, Placement, WorkerGroup, is_cluster_name

SCHEDULER = "scheduler"
NOTEBOOK = "notebook"


class LocalBackend(Backend):
    kind = "local"

    @property
    def runs_this_environment(self) -> bool:  # type: ignore[override]
        """Its processes run the interpreter `up` ran: this one, unless this command runs
        in another virtualenv (then the packages are compared on connecting)."""
        return state.interpreter(self.spec.name) == sys.executable

    def __init__(self, spec: ClusterSpec, problem: str | None = None):
        super().__init__(spec, problem)
        self.dir = state.cluster_dir(spec.name)

    # --- discovery ------------------------------------------------------------------------

    @classmethod
    def cluster_names(cls) -> list[str]:
        """State folders of local clusters, and those whose spec can't be read (what is
        left of any cluster's folder is this backend's to report and to remove); and the
        clusters whose folder is gone while processes marked with it still run."""
        found = set(_names_of_orphans())
        for name in state.names():
            kind = state.stored_backend(name)
            if kind == cls.kind or (kind is None and _has_remains(state.cluster_dir(name))):
                found.add(name)
        return sorted(found)

    @classmethod
    def attach(cls, name: str) -> LocalBackend | None:
        folder = state.cluster_dir(name)
        try:
            data = state.read_json(folder / state.SPEC)
            if data is None:
                if _has_remains(folder):
                    raise state.BrokenState(f"{folder / state.SPEC}: missing")
                if orphans := processes.find_by_marker(folder):
                    raise state.BrokenState(
                        f"its state folder is gone, yet {len(orphans)} of its processes run"
                    )
                return None  # nothing here, or a folder being made this instant
            if not isinstance(data, dict) or data.get("backend") != cls.kind:
                if isinstance(data, dict) and data.get("backend") in BACKENDS:
                    return None  # another backend's cluster
                raise state.BrokenState(f"{folder / state.SPEC}: not a cluster spec")
            backend = cls(ClusterSpec.from_dict(data, source=str(folder / state.SPEC)))
            backend._records()  # a damaged process record makes the cluster broken
            return backend
        except ClusterctlError as exc:
            return cls(ClusterSpec.placeholder(name, cls.kind), problem=str(exc))

    # --- lifecycle ------------------------------------------------------------------------

    def preflight(self) -> None:
        super().preflight()
        if ignored := ignored_fields(self.spec):
            warnings.warn(
                IgnoredFieldsWarning(
                    f"cluster {self.spec.name!r}: the local backend ignores {', '.join(ignored)} "
                    "(they are for container backends: its processes run in this Python "
                    "environment, on this machine's folders)"
                ),
                stacklevel=1,
            )

    def start_scheduler(self) -> None:
        sched = self.spec.scheduler
        scheduler_file = self.dir / "scheduler.json"
        scheduler_file.unlink(missing_ok=True)
        args = [
            "-m",
            "distributed.cli.dask_scheduler",
            "--host",
            sched.host,
            "--port",
            str(sched.port),
            "--dashboard-address",
            f"{sched.host}:{sched.dashboard_port}",
            "--scheduler-file",
            str(scheduler_file),
            *preload.scheduler_args(),
        ]
        if self.spec.security.tls:
            args += ["--protocol", "tls", *self._tls_args()]
        env = {**os.environ, **scheduler_env(self.spec)}
        record = self._spawn(SCHEDULER, args, group=None, env=env)
        self._wait_until(SCHEDULER, record, lambda: self._scheduler_info() is not None)
        if self.spec.notebook.enabled:
            self._start_notebook()

    def _start_notebook(self) -> None:
        """JupyterLab in the current folder, with a token, its clients pointed at us."""
        host = self.spec.scheduler.host
        port = self.spec.notebook.port or free_port(host)
        token = secrets.token_urlsafe(24)
        url = f"http://{_url_host(host)}:{port}/lab?token={token}"
        state.write_json(self.dir / "notebook.json", {"url": url})  # owner-only file
        # The token goes in the environment (owner-only), not the command line (world-readable).
        env = {
            **os.environ,
            "DASK_SCHEDULER_ADDRESS": self.scheduler_address(),
            "JUPYTER_TOKEN": token,
        }
        if self.spec.security.tls:
            files = tls_files(self.spec.name)
            env.update(
                {
                    "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True",
                    "DASK_DISTRIBUTED__COMM__TLS__CA_FILE": str(files.ca),
                    "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT": str(files.cert),
                    "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY": str(files.key),
                }
            )
        args = [
            "-m",
            "jupyterlab",
            "--no-browser",
            f"--ServerApp.ip={host}",
            f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0",
        ]
        if os.geteuid() == 0:
            args.append("--allow-root")
        record = self._spawn(NOTEBOOK, args, group=None, env=env)
        self._wait_until(
            NOTEBOOK, record, lambda: waiting.answers(f"http://{_url_host(host)}:{port}/api")
        )

    def notebook_url(self) -> str | None:
        data = state.read_json(self.dir / "notebook.json")
        return data.get("url") if isinstance(data, dict) else None

    def _wait_until(self, what: str, record: ProcessRecord, ready: Callable[[], bool]) -> None:
        def started() -> bool:
            if ready():
                return True
            if not processes.is_alive(record):
                raise ClusterctlError(
                    f"the {what} of cluster {self.spec.name!r} exited while starting:\n"
                    + processes.tail(record.log)
                )
            return False

        waiting.until(
            started,
            timeout=self.spec.start_timeout,
            interval=0.05,
            what=f"the {what} of cluster {self.spec.name!r} to start",
            detail=lambda: processes.tail(record.log),
        )

    def _scheduler_info(self) -> dict | None:
        """What the scheduler wrote to its ``--scheduler-file`` (None until it has, whole)."""
        try:
            info = state.read_json(self.dir / "scheduler.json")
        except state.BrokenState:
            return None  # being written
        return info if isinstance(info, dict) and isinstance(info.get("address"), str) else None

    def scheduler_address(self) -> str:
        info = self._scheduler_info()
        if not info:
            raise ClusterctlError(f"the scheduler of cluster {self.spec.name!r} is not running")
        return info["address"]

    def worker_hosts(self) -> list[Host]:
        from distributed.system import MEMORY_LIMIT  # what `dask worker` sizes itself by

        return [Host("this machine", MEMORY_LIMIT)]

    def start_workers(self, group: WorkerGroup, n: int) -> list[str]:
        address = self.scheduler_address()
        taken = [_index(name) for name, g in self._groups().items() if g == group.name]
        first = max(taken, default=0) + 1
        names = [f"{self.spec.name}-{group.name}-{i}" for i in range(first, first + n)]
        host = self.spec.scheduler.host
        env = {**os.environ, **group.env}
        for name in names:
            args = [
                "-m",
                "distributed.cli.dask_worker",
                address,
                "--name",
                name,
                *worker_args(group),
                "--nworkers",
                "1",
                "--no-dashboard",
                "--local-directory",
                str(self.dir / "work"),
                *self._tls_args(),
            ]
            if host not in ("0.0.0.0", "::"):
                args += ["--host", host]
            self._spawn(name, args, group=group.name, env=env)
        return names

    def stop_workers(self, names: list[str]) -> None:
        records = self._records()
        processes.stop([records[n] for n in names if n in records])
        for name in names:
            state.discard(self.dir / "processes" / f"{name}.json")
            state.discard(self.dir / "logs" / f"{name}.log")

    def members(self) -> list[Member]:
        groups = self._groups()
        return [
            Member(
                name=name,
                role=name if name in (SCHEDULER, NOTEBOOK) else "worker",
                group=groups.get(name),
                running=processes.is_alive(record),
                detail=f"pid {record.pid}",
            )
            for name, record in sorted(
                self._records(skip_broken=True).items(), key=lambda kv: _sort_key(kv[0])
            )
        ]

    def logs(self, name: str, follow: bool = False) -> Iterator[str]:
        records = self._records()
        if name not in records:
            known = ", ".join(sorted(records, key=_sort_key)) or "none"
            raise UserInputError(f"no scheduler or worker named {name!r}; known: {known}")
        record = records[name]
        try:
            yield from processes.log_lines(
                record.log, lambda: follow and processes.is_alive(record)
            )
        except OSError as exc:
            raise ClusterctlError(f"the log of {name} can't be read: {exc.strerror}") from None
        except state.BrokenState as exc:
            raise ClusterctlError(f"the log of {name} can't be read: {exc}") from None

    def destroy(self) -> None:
        """Stop every process of the cluster: those recorded (workers and notebook first),
        then any other process marked as the cluster's (a lost or damaged record)."""
        records = self._records(skip_broken=True)
        scheduler = records.pop(SCHEDULER, None)
        processes.stop(records.values())
        processes.stop([scheduler] if scheduler else [])
        processes.kill(processes.find_by_marker(self.dir))

    # --- helpers --------------------------------------------------------------------------

    def _tls_args(self) -> list[str]:
        return tls_args(self.spec, folder=str(tls_files(self.spec.name).ca.parent))

    def _spawn(
        self, name: str, args: list[str], group: str | None, env: Mapping[str, str]
    ) -> ProcessRecord:
        record = processes.spawn(
            [state.interpreter(self.spec.name), *args],  # `up`'s, whoever asks
            self.dir / "logs" / f"{name}.log",
            env={**env, "CLUSTERCTL_CLUSTER": self.spec.name},  # a label `ps e` shows
            folder=self.dir,
            cwd=sharing.working_dir(self.spec),
        )
        try:
            state.write_json(
                self.dir / "processes" / f"{name}.json", {**record.to_dict(), "group": group}
            )
        except BaseException:  # a process nothing records would outlive the cluster
            processes.stop([record], grace=0)
            raise
        return record

    def _raw_records(self, skip_broken: bool = False) -> dict[str, dict]:
        folder = self.dir / "processes"
        found = {}
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else ():
            try:
                data = state.read_json(path)
                if data is not None:
                    record = ProcessRecord.from_dict(data)
                    found[path.stem] = {**data, "record": record}
            except state.BrokenState as exc:
                if not skip_broken:
                    raise state.BrokenState(f"{path}: {exc}") from None
        return found

    def _records(self, skip_broken: bool = False) -> dict[str, ProcessRecord]:
        return {name: d["record"] for name, d in self._raw_records(skip_broken).items()}

    def _groups(self) -> dict[str, str | None]:
        return {name: d.get("group") for name, d in self._raw_records().items()}


def ignored_fields(spec: ClusterSpec) -> list[str]:
    """The fields of ``spec`` set that the local backend has no use for, as the spec names
    them."""
    fields = ["scheduler.mounts"] if spec.scheduler.mounts else []
    for group in spec.workers:
        used = {
            "cpus": group.cpus is not None,
            "image": group.image is not None,
            "mounts": bool(group.mounts),
            "placement": group.placement != Placement(),
        }
        fields += [f"workers.{group.name}.{key}" for key, value in used.items() if value]
    return fields


def _names_of_orphans() -> list[str]:
    """Clusters of this state root that marked processes belong to (their folder may be
    gone: :meth:`LocalBackend.attach` tells)."""
    root = state.root()
    folders = {Path(f) for f in processes.marked_folders()}
    return [f.name for f in folders if f.parent == root and is_cluster_name(f.name)]


def _has_remains(folder: Path) -> bool:
    """Whether a state folder holds anything but its lock (a cluster, or what is left)."""
    try:
        return any(entry != state.LOCK for entry in os.listdir(folder))
    except OSError:
        return False


def _index(name: str) -> int:
    match = re.search(r"-(\d+)$", name)
    return int(match.group(1)) if match else 0


def _sort_key(name: str) -> tuple[int, str, int]:
    """Scheduler and notebook first, then workers in numeric order."""
    match = re.match(r"^(.*)-(\d+)$", name)
    if name in (SCHEDULER, NOTEBOOK):
        return (0, name, 0)
    return (1, match.group(1), int(match.group(2))) if match else (1, name, 0)


def _url_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::") else host


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]
