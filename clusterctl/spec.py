"""ClusterSpec: the one validated model of a cluster.

A spec is merged from three layers, later ones winning: ``dask.config`` under the
``clusterctl`` key (the packaged defaults, ``~/.config/dask/*.yaml`` and
``DASK_CLUSTERCTL__...`` environment variables), a spec file, then CLI flags. Keys may
be spelled with ``-`` or ``_``. Every field is checked before anything starts; a
:class:`SpecError` names the field and what is allowed.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from clusterctl.errors import SpecError

BACKENDS = ("local", "docker", "compose", "swarm", "kubernetes")
DEFAULT_GROUP = "worker"
MAX_WORKERS = 1000
MAX_NAME = 40
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_RESOURCE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


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


@dataclass(frozen=True)
class NotebookSpec:
    enabled: bool
    port: int


@dataclass(frozen=True)
class SecuritySpec:
    tls: bool  # mutual TLS between client, scheduler and workers; "auto" in a spec file
    # means on for the docker, compose and swarm backends, off for local and kubernetes


@dataclass(frozen=True)
class WorkerGroup:
    """A set of identical workers; a cluster has one or more groups."""

    name: str
    count: int
    threads: int
    memory_limit: str | int | float
    cpus: float | None  # container backends: the CPU limit of each worker
    death_timeout: float
    resources: dict[str, float]
    env: dict[str, str]
    image: str | None
    mounts: tuple[Mount, ...]


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

    def group(self, name: str | None = None) -> WorkerGroup:
        """The named worker group, or the first one when ``name`` is None."""
        if name is None:
            return self.workers[0]
        for group in self.workers:
            if group.name == name:
                return group
        raise SpecError(
            f"--group: no worker group {name!r} in cluster {self.name!r}; "
            f"groups: {', '.join(g.name for g in self.workers)}"
        )

    def with_count(self, group: str | None, count: int) -> ClusterSpec:
        """A copy of this spec with one group's worker count changed."""
        target = self.group(group)
        _check_count(count, f"workers.{target.name}.count")
        return replace(
            self,
            workers=tuple(
                replace(g, count=count) if g.name == target.name else g for g in self.workers
            ),
        )

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
        from clusterctl.config import DEFAULTS_FILE

        defaults = yaml.safe_load(DEFAULTS_FILE.read_text())["clusterctl"]
        data = _normalise({**defaults, "name": name, "backend": backend}, _SPEC_KEYS, "", "")
        return _build(data, stored=True)


# --- loading and merging -----------------------------------------------------------------

_SCHEDULER_KEYS = {"host", "port", "dashboard_port", "env", "mounts"}
_WORKER_KEYS = {
    "count",
    "threads",
    "memory_limit",
    "cpus",
    "death_timeout",
    "resources",
    "env",
    "image",
    "mounts",
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
        layers.append(_normalise(read_spec_file(path), _SPEC_KEYS, str(path), ""))
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
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise SpecError(f"{path}: cannot read the spec file ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError(f"{path}: not valid YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SpecError(f"{path}: a spec file must be a mapping of fields, got {_kind(data)}")
    if set(data) == {"clusterctl"}:
        data = data["clusterctl"]
        if not isinstance(data, dict):
            raise SpecError(f"{path}: clusterctl: must be a mapping of fields")
    return data


def _normalise(data: Any, keys: Any, source: str, path: str) -> dict[str, Any]:
    """Check a mapping's keys against ``keys``, spelling ``-`` as ``_``; values untouched."""
    where = f"{source}: {path}" if path else source
    if not isinstance(data, Mapping):
        raise SpecError(f"{where}: must be a mapping, got {_kind(data)}")
    out: dict[str, Any] = {}
    for raw_key, value in data.items():
        key = str(raw_key).replace("-", "_")
        if key not in keys:
            allowed = ", ".join(sorted(k.replace("_", "-") for k in keys))
            raise SpecError(f"{source}: {_join(path, raw_key)}: unknown field; allowed: {allowed}")
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
        groups[str(name)] = _normalise(group or {}, _WORKER_KEYS, source, f"{path}.{name}")
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


def _build(data: dict[str, Any], stored: bool = False) -> ClusterSpec:
    name = check_cluster_name(_need(data, "name", "spec"))
    backend = _need(data, "backend", "spec")
    if backend not in BACKENDS:
        raise SpecError(f"backend: must be one of {', '.join(BACKENDS)}; got {backend!r}")
    sched = _need(data, "scheduler", "spec")
    scheduler = SchedulerSpec(
        host=_check_host(_need(sched, "host", "scheduler"), "scheduler.host"),
        port=_check_port(_need(sched, "port", "scheduler"), "scheduler.port"),
        dashboard_port=_check_port(
            _need(sched, "dashboard_port", "scheduler"), "scheduler.dashboard-port"
        ),
        env=_check_mapping(sched.get("env") or {}, "scheduler.env", _check_env),
        mounts=_check_mounts(sched.get("mounts") or [], "scheduler.mounts", stored),
    )
    defaults = data.get("worker", {})
    groups = data.get("workers") or {DEFAULT_GROUP: {}}
    workers = tuple(
        _build_group(_check_group_name(gname), {**defaults, **g}, stored)
        for gname, g in groups.items()
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
        raise SpecError(f"security.tls: must be true, false or auto, got {_kind(tls)}")
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
    return ClusterSpec(
        name=name,
        backend=backend,
        scheduler=scheduler,
        workers=workers,
        notebook=notebook,
        security=security,
        start_timeout=timeout,
    )


def _build_group(name: str, g: dict[str, Any], stored: bool) -> WorkerGroup:
    p = f"workers.{name}"
    return WorkerGroup(
        name=name,
        count=_check_count(_need(g, "count", p), f"{p}.count"),
        threads=_check_int(_need(g, "threads", p), f"{p}.threads", low=1, high=1024),
        memory_limit=_check_memory(_need(g, "memory_limit", p), f"{p}.memory-limit"),
        cpus=None if g.get("cpus") is None else _check_number(g["cpus"], f"{p}.cpus", 0.01, 1024),
        death_timeout=_check_number(_need(g, "death_timeout", p), f"{p}.death-timeout", 1, 86400),
        resources=_check_mapping(g.get("resources") or {}, f"{p}.resources", _check_resource),
        env=_check_mapping(g.get("env") or {}, f"{p}.env", _check_env),
        image=_check_image(g.get("image"), f"{p}.image"),
        mounts=_check_mounts(g.get("mounts") or [], f"{p}.mounts", stored),
    )


def _kind(value: Any) -> str:
    return "nothing" if value is None else f"{type(value).__name__} {value!r}"


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _check_int(value: Any, where: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"{where}: must be a whole number from {low} to {high}, got {_kind(value)}")
    if not low <= value <= high:
        raise SpecError(f"{where}: must be a whole number from {low} to {high}, got {value}")
    return value


def _check_bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise SpecError(f"{where}: must be true or false, got {_kind(value)}")
    return value


def _check_count(value: Any, where: str) -> int:
    return _check_int(value, where, 0, MAX_WORKERS)


def _check_number(value: Any, where: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise SpecError(f"{where}: must be a number from {low} to {high}, got {_kind(value)}")
    if not low <= value <= high:
        raise SpecError(f"{where}: must be a number from {low} to {high}, got {value}")
    return value


def _check_port(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise SpecError(
            f"{where}: must be a port number from 1 to 65535 (or 0 for any free port), "
            f"got {_kind(value)}"
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
            f"digits and '-', starting and ending with a letter or digit), got {value!r}"
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
    name = _check_name(value, f"workers.{value}", max_len=15)
    if name in ("scheduler", "notebook"):
        raise SpecError(f"workers.{name}: a worker group may not be called {name!r} (a role)")
    return name


def _check_host(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise SpecError(f"{where}: must be an IP address or host name, got {_kind(value)}")
    try:
        ipaddress.ip_address(value)
    except ValueError:
        if not all(_DNS_LABEL.match(part) for part in value.lower().split(".")):
            raise SpecError(f"{where}: must be an IP address or host name, got {value!r}") from None
    return value


def _check_memory(value: Any, where: str) -> str | int | float:
    from dask.utils import parse_bytes

    allowed = '"auto", a size such as "4GiB", a number of bytes, or a fraction such as 0.5'
    if value == "auto":
        return value
    if isinstance(value, bool) or value is None:
        raise SpecError(f"{where}: must be {allowed}, got {_kind(value)}")
    if isinstance(value, float) and 0 < value <= 1:
        return value
    try:
        size = parse_bytes(value) if isinstance(value, str) else value
    except (ValueError, TypeError):
        raise SpecError(f"{where}: must be {allowed}, got {value!r}") from None
    if not isinstance(size, int) or size < 2**20:
        raise SpecError(f"{where}: must be {allowed} (at least 1 MiB), got {value!r}")
    return value


def _check_mapping(
    value: Any, where: str, check: Callable[[Any, Any, str], tuple[str, Any]]
) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise SpecError(f"{where}: must be a mapping, got {_kind(value)}")
    return dict(check(k, v, f"{where}.{k}") for k, v in value.items())


def _check_resource(key: Any, value: Any, where: str) -> tuple[str, float]:
    if not isinstance(key, str) or not _RESOURCE_NAME.match(key):
        raise SpecError(f"{where}: a resource name must be letters, digits, '_', '.' or '-'")
    return key, _check_number(value, where, 0, 1e12)


def _check_env(key: Any, value: Any, where: str) -> tuple[str, str]:
    if not isinstance(key, str) or not _ENV_NAME.match(key):
        raise SpecError(f"{where}: an environment variable name must match [A-Za-z_][A-Za-z0-9_]*")
    if isinstance(value, (dict, list)) or value is None:
        raise SpecError(f"{where}: must be a string or number, got {_kind(value)}")
    return key, str(value).lower() if isinstance(value, bool) else str(value)


def _check_image(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not re.match(r"^[a-z0-9][a-z0-9._/:@-]*$", value):
        raise SpecError(
            f"{where}: must be an image reference such as clusterctl-worker:1.0, got {_kind(value)}"
        )
    return value


def _check_mounts(value: Any, where: str, stored: bool) -> tuple[Mount, ...]:
    if not isinstance(value, list):
        raise SpecError(f"{where}: must be a list of 'host-path:container-path[:ro]'")
    mounts = []
    for i, item in enumerate(value):
        here = f"{where}[{i}]"
        parts = item.split(":") if isinstance(item, str) else []
        if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
            raise SpecError(f"{here}: must be 'host-path:container-path[:ro|:rw]', got {item!r}")
        source = os.path.abspath(os.path.expanduser(parts[0]))
        if not parts[1].startswith("/"):
            raise SpecError(f"{here}: the container path must be absolute, got {parts[1]!r}")
        if not stored and (not os.path.isdir(source) or not os.access(source, os.R_OK | os.X_OK)):
            raise SpecError(f"{here}: the host folder {source} does not exist or is not readable")
        mounts.append(Mount(source, parts[1], len(parts) == 3 and parts[2] == "ro"))
    return tuple(mounts)
