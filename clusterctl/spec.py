"""ClusterSpec: the one validated model of a cluster.

A spec is merged from three layers, later ones winning: ``dask.config`` under the
``clusterctl`` key (the packaged defaults, ``~/.config/dask/*.yaml`` and
``DASK_CLUSTERCTL__...`` environment variables), a spec file, then CLI flags. Keys may
be spelled with ``-`` or ``_``. Every field is checked before anything starts; a
:class:`SpecError` names the field and what is allowed.
"""

from __future__ import annotations

import datetime
import ipaddress
import math
import os
import re
import stat
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import yaml

from clusterctl import sharing
from clusterctl.errors import SpecError

MAX_GPUS = 64  # per worker
BACKENDS = ("local", "docker", "compose", "swarm", "kubernetes")
DEFAULT_GROUP = "worker"
MAX_WORKERS = 1000  # in all groups together
MAX_NAME = 40
# An idle `dask worker` here (distributed 2026.8, Python 3.11) holds 63 MiB RSS, 147 MiB
# once a task has imported pandas; the nanny restarts it above 95% of its limit (at 64 MiB
# it was restarted over and over, doing nothing). 256 MiB keeps both below the 60% at
# which a worker starts spilling, so the smallest worker allowed can run an ordinary task.
MIN_WORKER_MEMORY = 256 * 2**20
MAX_ENV_VALUE = 32 * 2**10  # one value; a process's environment string may be 128 KiB
MAX_ENV_TOTAL = 64 * 2**10  # every env of a spec; the spec travels in a label/annotation
MAX_SPEC_BYTES = 2**20
MAX_SPEC_NODES = 10_000  # values in a spec file, aliases expanded; a real one has ~100
MAX_SPEC_DEPTH = 50  # nesting of a spec file; a real one has 4
MAX_SHOWN = 60  # characters of a value an error message shows
MAX_PATH_SHOWN = 200  # ... and of a spec file's path
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_RESOURCE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*\Z")
_IMAGE = re.compile(r"[a-z0-9][a-z0-9._/:@-]*\Z")
# Folders no mount may expose: the kernel's views of this machine, and (see _socket_dirs)
# the Docker socket's folder, through which a container would command the engine as root.
_SYSTEM_DIRS = ("/proc", "/sys", "/dev")
# ... and the operating system's own folders, which no container may write in (share-dir).
_OS_DIRS = ("/bin", "/boot", "/etc", "/lib", "/lib32", "/lib64", "/sbin", "/usr", "/var/lib")


@dataclass(frozen=True)
class Mount:
    """A host folder mounted into worker and notebook containers."""

    source: str
    target: str
    read_only: bool = False

    def __str__(self) -> str:
        return f"{self.source}:{self.target}" + (":ro" if self.read_only else "")


@dataclass(frozen=True)
class SchedulerSpec:
    host: str
    port: int
    dashboard_port: int
    # Container backends: the scheduler unpickles task graphs, so packages your tasks' objects
    # need (EXTRA_PIP_PACKAGES) must reach it too, as they reach the workers.
    env: dict[str, str]
    mounts: tuple[Mount, ...]
    # Seconds the scheduler waits for a silent worker's heartbeat before removing it (Dask's
    # distributed.scheduler.worker-ttl).
    worker_ttl: float


@dataclass(frozen=True)
class NotebookSpec:
    enabled: bool
    port: int


@dataclass(frozen=True)
class SecuritySpec:
    tls: bool  # mutual TLS between client, scheduler and workers; "auto" in a spec file
    # means on for the docker, compose and swarm backends, off for local and kubernetes


@dataclass(frozen=True)
class Placement:
    """Where a group's workers may run. On a swarm: constraints in swarm's own syntax
    (``node.labels.pool==big``, ``node.role!=manager``) and at most how many on one node.
    On Kubernetes: the pods' ``nodeSelector``, ``tolerations`` and ``affinity``, as
    Kubernetes writes them."""

    constraints: tuple[str, ...] = ()
    max_replicas_per_node: int | None = None
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: tuple[dict[str, Any], ...] = ()
    affinity: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class WorkerGroup:
    """A set of identical workers; a cluster has one or more groups."""

    name: str
    count: int
    threads: int
    memory_limit: str | int | float
    cpus: float | None  # container backends: the CPU limit of each worker
    gpus: int | str | None  # container backends: GPUs per worker, a number or "all"
    death_timeout: float
    resources: dict[str, float]
    env: dict[str, str]
    image: str | None
    mounts: tuple[Mount, ...]
    placement: Placement


@dataclass(frozen=True)
class ClusterSpec:
    """A validated cluster: build it with :func:`load_spec` or :meth:`from_dict`.

    The defaults of every field live in ``clusterctl.yaml`` (dask.config), nowhere else.
    """

    name: str
    backend: str
    scheduler: SchedulerSpec
    workers: tuple[WorkerGroup, ...]
    notebook: NotebookSpec
    security: SecuritySpec
    start_timeout: float
    # Seconds a worker that had registered may stay lost to the scheduler (gone from it, or
    # silent for scheduler.worker-ttl: its network cut, or hung) before it is replaced.
    cut_off: float
    # Seconds with no client connected and no task before the whole cluster is removed
    # (None: never).
    idle_timeout: float | None = None
    # The shared working folder (see clusterctl.sharing): an absolute host folder, or on
    # Kubernetes "pvc:NAME"; None: none.
    share_dir: str | None = None

    def group(self, name: str | None = None) -> WorkerGroup:
        """The named worker group, or the first one when ``name`` is None."""
        if name is None:
            return self.workers[0]
        for group in self.workers:
            if group.name == name:
                return group
        raise SpecError(
            f"--group: no worker group {_show(name)} in cluster {self.name!r}; "
            f"groups: {', '.join(g.name for g in self.workers)}"
        )

    def with_count(self, group: str | None, count: int) -> ClusterSpec:
        """A copy of this spec with one group's worker count changed."""
        target = self.group(group)
        _check_count(count, f"workers.{target.name}.count")
        workers = tuple(
            replace(g, count=count) if g.name == target.name else g for g in self.workers
        )
        _check_total(workers, f"workers.{target.name}.count")
        return replace(self, workers=workers)

    def to_dict(self) -> dict[str, Any]:
        """A plain dict that :meth:`from_dict` reads back to an equal spec."""
        data = asdict(self)
        data["scheduler"]["mounts"] = [str(m) for m in self.scheduler.mounts]
        data["workers"] = {
            g.pop("name"): {**g, "mounts": [str(m) for m in group.mounts]}
            for g, group in zip(data["workers"], self.workers, strict=True)
        }
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "spec") -> ClusterSpec:
        """Validate a complete spec mapping, such as :meth:`to_dict` wrote (no defaults).

        For a stored spec: its host folders are not looked for again (one may have been
        removed since; the cluster must still be found, and removed).
        """
        return _build(_normalise(data, _SPEC_KEYS, source, ""), stored=True)

    @classmethod
    def placeholder(cls, name: str, backend: str) -> ClusterSpec:
        """The packaged defaults under this name and backend: what is known of a cluster
        whose own spec can't be read, enough to find and remove what is left of it."""
        from clusterctl.config import packaged_defaults

        defaults = packaged_defaults()
        data = _normalise({**defaults, "name": name, "backend": backend}, _SPEC_KEYS, "", "")
        return _build(data, stored=True)


# --- loading and merging -----------------------------------------------------------------

_SCHEDULER_KEYS = {"host", "port", "dashboard_port", "env", "mounts", "worker_ttl"}
_WORKER_KEYS = {
    "count",
    "threads",
    "memory_limit",
    "cpus",
    "gpus",
    "death_timeout",
    "resources",
    "env",
    "image",
    "mounts",
    "placement",
}
_SPEC_KEYS: dict[str, Any] = {
    "name": None,
    "backend": None,
    "scheduler": _SCHEDULER_KEYS,
    "notebook": {"enabled", "port"},
    "security": {"tls"},
    "worker": _WORKER_KEYS,
    "workers": "groups",
    "start_timeout": None,
    "cut_off": None,
    "idle_timeout": None,
    "share_dir": None,
}


def load_spec(
    path: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    base: ClusterSpec | None = None,
) -> ClusterSpec:
    """Merge dask.config defaults (or ``base``), a spec file and overrides, then validate.

    ``overrides`` uses the spec's own layout, e.g. ``{"worker": {"threads": 4}}``; a
    ``worker`` override also applies to every group the lower layers name.
    """
    if base is not None:
        layers = [_normalise(base.to_dict(), _SPEC_KEYS, "spec", "")]
    else:
        import dask.config

        from clusterctl import config  # noqa: F401  (registers the packaged defaults)

        config_spec = dask.config.get("clusterctl", {})
        layers = [_normalise(config_spec, _SPEC_KEYS, "dask config clusterctl", "")]
    if path is not None:
        layers.append(
            _normalise(read_spec_file(path), _SPEC_KEYS, _field(path, MAX_PATH_SHOWN), "")
        )
    if overrides:
        layers.append(_normalise(overrides, _SPEC_KEYS, "flags", ""))
    merged: dict[str, Any] = {}
    for layer in layers:
        merged = _merge(merged, layer)
    if overrides and "worker" in overrides:
        worker = _normalise(overrides["worker"], _WORKER_KEYS, "flags", "worker")
        for group in merged.get("workers", {}).values():
            group.update(worker)
    return _build(merged)


def read_spec_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML spec file; a top-level ``clusterctl:`` key is allowed and unwrapped."""
    if not isinstance(path, (str, os.PathLike)):
        raise SpecError(f"spec: must be a spec file path, got {describe(path)}")
    where = _field(path, MAX_PATH_SHOWN)
    text = _read_text(path, where)
    try:
        loader = _SpecLoader(text, where)
        try:
            data = loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
        raise SpecError(f"{where}: not valid YAML{at}: {shorten(problem)}") from None
    except (ValueError, TypeError, AttributeError, LookupError) as exc:
        # a tagged value YAML's constructors can't make, e.g. !!int "" or !!timestamp x
        raise SpecError(f"{where}: not valid YAML: {shorten(' '.join(str(exc).split()))}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SpecError(f"{where}: a spec file must be a mapping of fields, got {describe(data)}")
    if set(data) == {"clusterctl"}:
        data = data["clusterctl"]
        if not isinstance(data, dict):
            raise SpecError(f"{where}: clusterctl: must be a mapping of fields")
    return data


def _read_text(path: str | os.PathLike[str], where: str) -> str:
    """The text of a regular file of at most MAX_SPEC_BYTES, read without blocking on a
    FIFO or reading a device forever."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        reason = exc.strerror if isinstance(exc, OSError) else str(exc)
        raise SpecError(f"{where}: cannot read the spec file ({reason})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise SpecError(f"{where}: not a regular file; a spec file is a YAML file")
        data = b""
        while len(data) <= MAX_SPEC_BYTES and (chunk := os.read(fd, MAX_SPEC_BYTES + 1)):
            data += chunk
    except OSError as exc:
        raise SpecError(f"{where}: cannot read the spec file ({exc.strerror})") from None
    finally:
        os.close(fd)
    if len(data) > MAX_SPEC_BYTES:
        raise SpecError(f"{where}: larger than {MAX_SPEC_BYTES // 2**20} MiB; not a spec file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"{where}: not UTF-8 text (byte {exc.start + 1} of the file)") from None


class _SpecLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a document with more than MAX_SPEC_NODES values, with
    each alias counted as the values it stands for (600 bytes of aliases can stand for
    billions), or nested deeper than MAX_SPEC_DEPTH — checked while composing, so before
    anything is built."""

    def __init__(self, text: str, where: str) -> None:
        super().__init__(text)
        self.where = where
        self.nodes = 0
        self.depth = 0
        self.sizes: dict[int, int] = {}  # id(node): its values, aliases expanded

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        if self.check_event(yaml.AliasEvent):
            target = self.anchors.get(self.peek_event().anchor)
            if target is not None:  # (an unknown alias: the composer's own error)
                if id(target) not in self.sizes:
                    raise SpecError(f"{self.where}: an alias refers to a value that holds it")
                self._count(self.sizes[id(target)])
            return super().compose_node(parent, index)
        if self.depth >= MAX_SPEC_DEPTH:
            raise SpecError(f"{self.where}: nested more than {MAX_SPEC_DEPTH} levels deep")
        before = self.nodes
        self._count(1)
        self.depth += 1
        node = super().compose_node(parent, index)
        self.depth -= 1
        self.sizes[id(node)] = self.nodes - before
        return node

    def _count(self, n: int) -> None:
        self.nodes += n
        if self.nodes > MAX_SPEC_NODES:
            raise SpecError(
                f"{self.where}: more than {MAX_SPEC_NODES} values (aliases expanded); "
                "not a spec file"
            )


def _normalise(data: Any, keys: Any, source: str, path: str) -> dict[str, Any]:
    """Check a mapping's keys against ``keys``, spelling ``-`` as ``_``; values untouched."""
    where = f"{source}: {path}" if path else source
    if not isinstance(data, Mapping):
        raise SpecError(f"{where}: must be a mapping, got {describe(data)}")
    out: dict[str, Any] = {}
    for raw_key, value in data.items():
        key = str(raw_key).replace("-", "_")
        if key not in keys:
            allowed = ", ".join(sorted(k.replace("_", "-") for k in keys))
            field = _join(path, _field(raw_key))
            raise SpecError(f"{source}: {field}: unknown field; allowed: {allowed}")
        sub = keys[key] if isinstance(keys, dict) else None
        if sub == "groups":
            if value is None:
                value = {}
            groups = _normalise_groups(value, source, _join(path, key))
            out[key] = groups
        elif isinstance(sub, (set, dict)):
            out[key] = _normalise(value, sub, source, _join(path, key))
        else:
            out[key] = value
    return out


def _normalise_groups(value: Any, source: str, path: str) -> dict[str, dict[str, Any]]:
    if not isinstance(value, Mapping):
        raise SpecError(f"{source}: {path}: must be a mapping of group name to fields")
    groups = {}
    for name, group in value.items():
        where = f"{path}.{_field(name)}"
        groups[str(name)] = _normalise(group or {}, _WORKER_KEYS, source, where)
    return groups


def _merge(base: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``new`` over ``base``; ``workers`` (the groups) is replaced whole."""
    out = dict(base)
    for key, value in new.items():
        if key != "workers" and isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


# --- validation --------------------------------------------------------------------------


def _need(data: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in data:
        raise SpecError(f"{where}: missing field {key.replace('_', '-')!r}")
    return data[key]


def _setting(data: Mapping[str, Any], key: str, where: str, stored: bool) -> Any:
    """A field added after clusters were first stored: a stored spec without it (a cluster
    started by an earlier version) gets the packaged default."""
    if stored and key not in data:
        from clusterctl.config import packaged_defaults

        defaults = packaged_defaults()
        return (defaults[where] if where != "spec" else defaults)[key.replace("_", "-")]
    return _need(data, key, where)


def _build(data: dict[str, Any], stored: bool = False) -> ClusterSpec:
    name = check_cluster_name(_need(data, "name", "spec"))
    backend = _need(data, "backend", "spec")
    if backend not in BACKENDS:
        raise SpecError(f"backend: must be one of {', '.join(BACKENDS)}; got {_show(backend)}")
    sched = _need(data, "scheduler", "spec")
    scheduler = SchedulerSpec(
        host=_check_host(_need(sched, "host", "scheduler"), "scheduler.host"),
        port=_check_port(_need(sched, "port", "scheduler"), "scheduler.port"),
        dashboard_port=_check_port(
            _need(sched, "dashboard_port", "scheduler"), "scheduler.dashboard-port"
        ),
        env=_check_mapping(sched.get("env") or {}, "scheduler.env", _check_env),
        mounts=_check_mounts(sched.get("mounts") or [], "scheduler.mounts", stored),
        worker_ttl=_check_number(
            _setting(sched, "worker_ttl", "scheduler", stored), "scheduler.worker-ttl", 1, 86400
        ),
    )
    defaults = data.get("worker", {})
    groups = data.get("workers") or {DEFAULT_GROUP: {}}
    # What a fraction memory limit is of: this machine's memory, where the workers run here
    # (not checked for a stored spec, which may be read on another machine).
    here = not stored and backend in ("local", "docker", "compose")
    workers = tuple(
        _build_group(_check_group_name(gname), {**defaults, **g}, stored, here, backend)
        for gname, g in groups.items()
    )
    _check_total(workers, "workers")
    _check_env_total(
        [("scheduler.env", scheduler.env)] + [(f"workers.{g.name}.env", g.env) for g in workers]
    )
    nb = _need(data, "notebook", "spec")
    notebook = NotebookSpec(
        enabled=_check_bool(_need(nb, "enabled", "notebook"), "notebook.enabled"),
        port=_check_port(_need(nb, "port", "notebook"), "notebook.port"),
    )
    _check_distinct_ports(
        [("scheduler.port", scheduler.port), ("scheduler.dashboard-port", scheduler.dashboard_port)]
        + ([("notebook.port", notebook.port)] if notebook.enabled else [])
    )
    tls = _need(_need(data, "security", "spec"), "tls", "security")
    if tls not in (True, False, "auto"):
        raise SpecError(f"security.tls: must be true, false or auto, got {describe(tls)}")
    # auto: on wherever clusterctl holds the certificates, local processes included (any
    # user of this machine reaches 127.0.0.1); off for Kubernetes (manifests can't carry
    # them; a NetworkPolicy guards instead)
    security = SecuritySpec(tls=backend != "kubernetes" if tls == "auto" else tls)
    if not security.tls and backend != "kubernetes" and not _is_loopback(scheduler.host):
        raise SpecError(
            f"scheduler.host: {scheduler.host} can be reached from other machines, and without "
            "TLS anyone who reaches it runs code as you; keep security.tls on, or bind to "
            "127.0.0.1"
        )
    timeout = _check_number(_need(data, "start_timeout", "spec"), "start-timeout", 1, 3600)
    cut_off = _check_number(_setting(data, "cut_off", "spec", stored), "cut-off", 1, 3600)
    idle_timeout = _check_idle_timeout(_setting(data, "idle_timeout", "spec", stored))
    share_dir = sharing.check(_setting(data, "share_dir", "spec", stored), backend, stored)
    return ClusterSpec(
        name=name,
        backend=backend,
        scheduler=scheduler,
        workers=workers,
        notebook=notebook,
        security=security,
        start_timeout=timeout,
        cut_off=cut_off,
        idle_timeout=idle_timeout,
        share_dir=share_dir,
    )


def _build_group(
    name: str, g: dict[str, Any], stored: bool, here: bool, backend: str
) -> WorkerGroup:
    p = f"workers.{name}"
    memory = _need(g, "memory_limit", p)
    return WorkerGroup(
        name=name,
        count=_check_count(_need(g, "count", p), f"{p}.count"),
        threads=_check_int(_need(g, "threads", p), f"{p}.threads", low=1, high=1024),
        memory_limit=_check_memory(memory, f"{p}.memory-limit", fraction_of_machine=here),
        cpus=None if g.get("cpus") is None else _check_number(g["cpus"], f"{p}.cpus", 0.01, 1024),
        gpus=_check_gpus(g.get("gpus"), f"{p}.gpus", backend),
        death_timeout=_check_number(_need(g, "death_timeout", p), f"{p}.death-timeout", 1, 86400),
        resources=_check_mapping(g.get("resources") or {}, f"{p}.resources", _check_resource),
        env=_check_mapping(g.get("env") or {}, f"{p}.env", _check_env),
        image=_check_image(g.get("image"), f"{p}.image"),
        mounts=_check_mounts(g.get("mounts") or [], f"{p}.mounts", stored),
        placement=_check_placement(g.get("placement") or {}, f"{p}.placement"),
    )


MAX_IDLE = 30 * 86400  # seconds: a month


def _check_idle_timeout(value: Any) -> float | None:
    if value is None:
        return None
    seconds = value
    if isinstance(value, str):
        from dask.utils import parse_timedelta

        try:
            seconds = parse_timedelta(value, default="seconds")
        except (ValueError, KeyError):
            seconds = None
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds != seconds:
        raise SpecError(
            f"idle-timeout: must be seconds or a duration such as 30s or 2h, got {describe(value)}"
        )
    if not 10 <= seconds <= MAX_IDLE:
        raise SpecError(f"idle-timeout: must be from 10s to 30 days, got {_show(value)}")
    return float(seconds)


def _check_gpus(value: Any, where: str, backend: str) -> int | str | None:
    if value is None:
        return None
    if value != "all":
        try:
            value = _check_int(value, where, 1, MAX_GPUS)
        except SpecError:
            raise SpecError(
                f'{where}: must be a whole number from 1 to {MAX_GPUS} or "all", '
                f"got {describe(value)}"
            ) from None
    if backend == "local":
        raise SpecError(
            f"{where}: GPUs are handed to containers; local workers see this machine's GPUs "
            "as they are (resources: {GPU: 1} lets tasks ask for one)"
        )
    if value == "all" and backend in ("swarm", "kubernetes"):
        raise SpecError(f"{where}: {backend} reserves GPUs by number: give one, not all")
    return value


# What a swarm placement constraint may test, and how (as `docker service create` takes it)
_CONSTRAINT = re.compile(
    r"(node\.(id|hostname|role|platform\.os|platform\.arch)|(node|engine)\.labels\.[\w.-]+)"
    r" *(==|!=) *[\w.:/-]+"
)


def _check_placement(value: Any, where: str) -> Placement:
    if not isinstance(value, Mapping):
        raise SpecError(f"{where}: must be a mapping, got {describe(value)}")
    data = {str(key).replace("-", "_"): v for key, v in value.items()}
    if unknown := set(data) - _PLACEMENT_KEYS:
        raise SpecError(
            f"{where}.{_field(sorted(unknown)[0])}: unknown field; allowed: "
            + ", ".join(sorted(_field(key) for key in _PLACEMENT_KEYS))
        )
    constraints = data.get("constraints") or []
    if not isinstance(constraints, (list, tuple)) or len(constraints) > 32:
        raise SpecError(
            f"{where}.constraints: must be a list of at most 32, got {describe(constraints)}"
        )
    for i, constraint in enumerate(constraints):
        if not isinstance(constraint, str) or not _CONSTRAINT.fullmatch(constraint):
            raise SpecError(
                f"{where}.constraints[{i}]: must be a swarm constraint such as "
                f"node.labels.pool==big or node.role!=manager, got {describe(constraint)}"
            )
    most = data.get("max_replicas_per_node")
    if most is not None:
        most = _check_int(most, f"{where}.max-replicas-per-node", 1, MAX_WORKERS)
    return Placement(
        constraints=tuple(constraints),
        max_replicas_per_node=most,
        node_selector=_check_mapping(
            data.get("node_selector") or {}, f"{where}.node-selector", _check_node_label
        ),
        tolerations=_check_tolerations(data.get("tolerations") or [], f"{where}.tolerations"),
        affinity=_check_affinity(data.get("affinity") or {}, f"{where}.affinity"),
    )


_PLACEMENT_KEYS = {
    "constraints",
    "max_replicas_per_node",
    "node_selector",
    "tolerations",
    "affinity",
}
# Kubernetes' label key (an optional DNS prefix, then a name) and label value
_LABEL_KEY = re.compile(
    r"([a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?"
)
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?)?")
_TOLERATION_KEYS = {"key", "operator", "value", "effect", "tolerationSeconds"}
_TOLERATION_CHOICES = {
    "operator": ("Exists", "Equal"),
    "effect": ("", "NoSchedule", "PreferNoSchedule", "NoExecute"),
}


def _check_node_label(key: Any, value: Any, where: str) -> tuple[str, str]:
    if not isinstance(key, str) or not _LABEL_KEY.fullmatch(key):
        raise SpecError(f"{where}: not a Kubernetes label key (such as nvidia.com/gpu.present)")
    if not isinstance(value, str) or not _LABEL_VALUE.fullmatch(value):
        raise SpecError(
            f"{where}: must be a Kubernetes label value (a string of at most 63 letters, "
            f"digits, '-', '_' or '.'), got {describe(value)}"
        )
    return key, value


def _check_tolerations(value: Any, where: str) -> tuple[dict[str, Any], ...]:
    if not isinstance(value, (list, tuple)) or len(value) > 32:
        raise SpecError(f"{where}: must be a list of at most 32, got {describe(value)}")
    for i, toleration in enumerate(value):
        at = f"{where}[{i}]"
        _check_fields(toleration, at, _TOLERATION_KEYS)
        for key, choices in _TOLERATION_CHOICES.items():
            if key in toleration and toleration[key] not in choices:
                raise SpecError(
                    f"{at}.{key}: must be one of {', '.join(map(repr, choices))}, "
                    f"got {describe(toleration[key])}"
                )
        for key in ("key", "value"):
            if key in toleration and not isinstance(toleration[key], str):
                raise SpecError(f"{at}.{key}: must be a string, got {describe(toleration[key])}")
        if "tolerationSeconds" in toleration:
            _check_int(toleration["tolerationSeconds"], f"{at}.tolerationSeconds", 0, 10**9)
    return tuple(dict(toleration) for toleration in value)


def _check_fields(value: Any, where: str, allowed: set[str]) -> None:
    """A mapping with no field but ``allowed`` (Kubernetes' own names, kept as written)."""
    if not isinstance(value, Mapping):
        raise SpecError(f"{where}: must be a mapping, got {describe(value)}")
    if unknown := set(value) - allowed:
        raise SpecError(
            f"{where}.{_field(sorted(map(str, unknown))[0])}: unknown field; allowed: "
            + ", ".join(sorted(allowed))
        )


def _check_affinity(value: Any, where: str) -> dict[str, Any]:
    """Kubernetes' own affinity, checked here for its kinds only: the rendered manifests
    are what Kubernetes validates (and the tests, against its schemas)."""
    _check_fields(value, where, {"nodeAffinity", "podAffinity", "podAntiAffinity"})
    for kind, rules in value.items():
        if not isinstance(rules, Mapping):
            raise SpecError(f"{where}.{kind}: must be a mapping, got {describe(rules)}")
        _check_plain(rules, f"{where}.{kind}")
    return dict(value)


def _check_plain(value: Any, where: str, depth: int = 0) -> None:
    """``value`` holds only what JSON (and so Kubernetes) can: mappings with string keys,
    lists, strings, numbers, booleans and nulls; not a YAML date, say."""
    if depth > 32:
        raise SpecError(f"{where}: nested more than 32 deep")
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise SpecError(f"{where}: keys must be strings, got {describe(key)}")
            _check_plain(item, f"{where}.{_field(key)}", depth + 1)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]", depth + 1)
    elif not isinstance(value, (str, int, float, bool, type(None))):
        raise SpecError(
            f"{where}: must be a string, number, boolean, list or mapping, got {describe(value)}"
            + (" (quote it to make it a string)" if isinstance(value, datetime.date) else "")
        )


def describe(value: Any) -> str:
    """A value as an error message shows it: its type and a short repr."""
    return "nothing" if value is None else f"{type(value).__name__} {_show(value)}"


def _show(value: Any) -> str:
    """``repr(value)`` for a message, cut short when long."""
    if isinstance(value, str) and len(value) > MAX_SHOWN:
        return f"{value[:MAX_SHOWN]!r}… ({len(value)} characters)"
    try:
        return shorten(repr(value))
    except (ValueError, RecursionError):  # an int too long for decimal, a list too deep
        return f"({type(value).__name__} too large to show)"


def _field(key: Any, limit: int = MAX_SHOWN) -> str:
    """A key or path as a message shows it: as is when printable, else as its repr; short."""
    text = str(key)
    return shorten(text if text.isprintable() else repr(text), limit)


def shorten(text: str, limit: int = MAX_SHOWN) -> str:
    """``text``, or its first ``limit`` characters and its length when longer."""
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _check_int(value: Any, where: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(
            f"{where}: must be a whole number from {low} to {high}, got {describe(value)}"
        )
    if not low <= value <= high:
        raise SpecError(f"{where}: must be a whole number from {low} to {high}, got {_show(value)}")
    return value


def _check_bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise SpecError(f"{where}: must be true or false, got {describe(value)}")
    return value


def _check_count(value: Any, where: str) -> int:
    return _check_int(value, where, 0, MAX_WORKERS)


def _check_total(workers: tuple[WorkerGroup, ...], where: str) -> None:
    total = sum(g.count for g in workers)
    if total > MAX_WORKERS:
        counts = ", ".join(f"{g.name} {g.count}" for g in workers)
        raise SpecError(
            f"{where}: at most {MAX_WORKERS} workers in all groups together, got {total} "
            f"({shorten(counts)})"
        )


def _check_number(value: Any, where: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise SpecError(f"{where}: must be a number from {low} to {high}, got {describe(value)}")
    if not low <= value <= high:
        raise SpecError(f"{where}: must be a number from {low} to {high}, got {_show(value)}")
    return value


def _check_port(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise SpecError(
            f"{where}: must be a port number from 1 to 65535 (or 0 for any free port), "
            f"got {describe(value)}"
        )
    return value


def _check_distinct_ports(ports: list[tuple[str, int]]) -> None:
    seen: dict[int, str] = {}
    for where, port in ports:
        if port and port in seen:
            raise SpecError(f"{where}: must differ from {seen[port]} (both are {port})")
        seen[port] = where


def _check_name(value: Any, where: str, max_len: int) -> str:
    if not isinstance(value, str) or not _DNS_LABEL.match(value) or len(value) > max_len:
        raise SpecError(
            f"{where}: must be a DNS label of at most {max_len} characters (lowercase letters, "
            f"digits and '-', starting and ending with a letter or digit), got {_show(value)}"
        )
    return value


def check_cluster_name(value: Any) -> str:
    """``value`` if it is a valid cluster name, else :class:`SpecError` naming the rules."""
    return _check_name(value, "name", max_len=MAX_NAME)


def is_cluster_name(value: Any) -> bool:
    """Whether ``value`` is a valid cluster name."""
    return isinstance(value, str) and len(value) <= MAX_NAME and bool(_DNS_LABEL.match(value))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_group_name(value: Any) -> str:
    name = _check_name(value, f"workers.{_field(value)}", max_len=15)
    if name in ("scheduler", "notebook"):
        raise SpecError(f"workers.{name}: a worker group may not be called {name!r} (a role)")
    return name


def _check_host(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise SpecError(f"{where}: must be an IP address or host name, got {describe(value)}")
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        parts = value.lower().split(".")
        if len(value) > 253 or not all(len(p) <= 63 and _DNS_LABEL.match(p) for p in parts):
            raise SpecError(
                f"{where}: must be an IP address or host name, got {_show(value)}"
            ) from None
    else:
        if address.version == 6:
            raise SpecError(
                f"{where}: IPv6 addresses are not supported yet; use 127.0.0.1 or a host name, "
                f"got {_show(value)}"
            )
    return value


def _check_memory(value: Any, where: str, fraction_of_machine: bool) -> str | int | float:
    """A memory limit a worker can run with. ``fraction_of_machine``: the workers run on
    this machine, so a fraction's size is known (what the worker itself computes)."""
    from dask.utils import format_bytes, parse_bytes

    allowed = '"auto", a size such as "4GiB", a number of bytes, or a fraction such as 0.5'
    least = f"a worker needs at least {MIN_WORKER_MEMORY // 2**20} MiB"
    if value == "auto":
        return value
    if isinstance(value, float) and 0 < value <= 1:
        if fraction_of_machine:
            from distributed.system import memory_limit

            total = memory_limit()
            size = int(value * total)
            if size < MIN_WORKER_MEMORY:
                raise SpecError(
                    f"{where}: {value:g} of this machine's {format_bytes(total)} is "
                    f"{format_bytes(size)}; {least}"
                )
        return value
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise SpecError(f"{where}: must be {allowed}, got {describe(value)}")
    try:
        size = parse_bytes(value) if isinstance(value, str) else value
    except (ValueError, TypeError, OverflowError):  # OverflowError: "1e400", "inf"
        raise SpecError(f"{where}: must be {allowed}, got {_show(value)}") from None
    if size < MIN_WORKER_MEMORY:
        raise SpecError(f"{where}: {least}, got {_show(value)}")
    return value


def _check_mapping(
    value: Any, where: str, check: Callable[[Any, Any, str], tuple[str, Any]]
) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise SpecError(f"{where}: must be a mapping, got {describe(value)}")
    return dict(check(k, v, f"{where}.{_field(k)}") for k, v in value.items())


def _check_resource(key: Any, value: Any, where: str) -> tuple[str, float]:
    if not isinstance(key, str) or not _RESOURCE_NAME.match(key):
        raise SpecError(f"{where}: a resource name must be letters, digits, '_', '.' or '-'")
    return key, _check_number(value, where, 0, 1e12)


def _check_env(key: Any, value: Any, where: str) -> tuple[str, str]:
    if not isinstance(key, str) or not _ENV_NAME.match(key):
        raise SpecError(f"{where}: an environment variable name must match [A-Za-z_][A-Za-z0-9_]*")
    if not isinstance(value, (str, int, float)) or value in (math.inf, -math.inf) or value != value:
        raise SpecError(f"{where}: must be a string or a finite number, got {describe(value)}")
    text = str(value).lower() if isinstance(value, bool) else str(value)
    if (size := len(os_bytes(text, where))) > MAX_ENV_VALUE:
        raise SpecError(f"{where}: at most {MAX_ENV_VALUE // 2**10} KiB, got {size} bytes")
    return key, text


def _check_env_total(envs: list[tuple[str, dict[str, str]]]) -> None:
    """All environment values of a spec together stay under MAX_ENV_TOTAL bytes."""
    total = 0
    for where, env in envs:
        total += sum(len(k) + len(os_bytes(v, where)) for k, v in env.items())
        if total > MAX_ENV_TOTAL:
            raise SpecError(
                f"{where}: the environment of the scheduler and all worker groups together "
                f"may hold at most {MAX_ENV_TOTAL // 2**10} KiB"
            )


def os_bytes(text: str, where: str) -> bytes:
    """``text`` as the operating system takes it (an environment value, a path)."""
    if "\0" in text:
        raise SpecError(f"{where}: may not contain a NUL character")
    try:
        return os.fsencode(text)
    except UnicodeEncodeError:
        raise SpecError(f"{where}: holds a character that is not valid Unicode") from None


def _check_image(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _IMAGE.match(value):
        raise SpecError(
            f"{where}: must be an image reference such as clusterctl-worker:1.0, "
            f"got {describe(value)}"
        )
    return value


def _check_mounts(value: Any, where: str, stored: bool) -> tuple[Mount, ...]:
    if not isinstance(value, list):
        raise SpecError(f"{where}: must be a list of 'host-path:container-path[:ro]'")
    mounts = []
    for i, item in enumerate(value):
        here = f"{where}[{i}]"
        parts = item.split(":") if isinstance(item, str) else []
        if len(parts) not in (2, 3) or not parts[0] or parts[2:] not in ([], ["ro"], ["rw"]):
            raise SpecError(
                f"{here}: must be 'host-path:container-path[:ro|:rw]', got {_show(item)}"
            )
        os_bytes(item, here)
        source = os.path.abspath(os.path.expanduser(parts[0]))
        if not parts[1].startswith("/"):
            raise SpecError(f"{here}: the container path must be absolute, got {_show(parts[1])}")
        if not stored:  # a stored spec's folders were checked when it started
            if not os.path.isdir(source) or not os.access(source, os.R_OK | os.X_OK):
                raise SpecError(
                    f"{here}: the host folder {shorten(source)} does not exist or is not readable"
                )
            check_mount_source(source, here)
        mounts.append(Mount(source, parts[1], len(parts) == 3 and parts[2] == "ro"))
    return tuple(mounts)


def check_mount_source(source: str, where: str, writable: bool = False) -> None:
    """Refuse a folder that is /, one of the kernel's, or holds the Docker socket (a
    read-only mount too: a socket still works through one); ``writable`` (containers write
    there as its owner): also one of the operating system's."""
    real = os.path.realpath(source)
    if real == "/":
        raise SpecError(f"{where}: may not mount / (the whole machine)")
    for system in _SYSTEM_DIRS + (_OS_DIRS if writable else ()):
        if _is_within(real, system):
            raise SpecError(f"{where}: may not mount {system} or a folder in it ({shorten(real)})")
    for folder in _socket_dirs():
        if _is_within(folder, real):
            raise SpecError(
                f"{where}: may not mount {shorten(real)}: it holds the Docker socket's folder "
                f"{folder}, which would give the containers control of this machine's engine"
            )


def _socket_dirs() -> set[str]:
    """The folders of the Docker socket, as written and with symlinks resolved."""
    sockets = ["/var/run/docker.sock"]
    host = os.environ.get("DOCKER_HOST", "")
    if host.startswith("unix://"):
        sockets.append(host[len("unix://") :])
    folders = {os.path.dirname(os.path.abspath(s)) for s in sockets}
    return folders | {os.path.realpath(f) for f in folders}


def _is_within(path: str, folder: str) -> bool:
    """Whether ``path`` is ``folder`` or inside it."""
    return path == folder or path.startswith(folder.rstrip("/") + "/")
