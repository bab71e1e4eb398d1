"""How schedulers, workers and notebooks are started, written once for processes and
containers alike: the workers' options, the TLS options, a container's limits and user."""

from __future__ import annotations

import os
from typing import Any

from clusterctl import sharing
from clusterctl.spec import ClusterSpec, WorkerGroup

TLS_IN_CONTAINER = "/etc/clusterctl/tls"  # where containers find the cluster's certificates
TOKEN_IN_CONTAINER = "/etc/clusterctl/notebook/token"  # the notebook's token file
# The generic resource a swarm node's engine advertises for its GPUs
# (`dockerd --node-generic-resource NVIDIA-GPU=<uuid>`), which workers reserve there.
SWARM_GPU_KIND = "NVIDIA-GPU"


def scheduler_env(spec: ClusterSpec) -> dict[str, str]:
    """The scheduler's environment: the spec's settings for it, then its own ``env``."""
    ttl = {"DASK_DISTRIBUTED__SCHEDULER__WORKER_TTL": f"{spec.scheduler.worker_ttl:g}s"}
    return {**ttl, **spec.scheduler.env}


def worker_args(group: WorkerGroup) -> list[str]:
    """``dask worker`` options of a group (the scheduler address comes first)."""
    args = [
        "--nthreads",
        str(group.threads),
        "--death-timeout",
        f"{group.death_timeout:g}",
        "--memory-limit",
        str(group.memory_limit),
    ]
    resources = dict(group.resources)
    if isinstance(group.gpus, int):  # tasks ask for them with resources={"GPU": 1}
        resources.setdefault("GPU", group.gpus)
    if resources:
        args += ["--resources", " ".join(f"{k}={v:g}" for k, v in resources.items())]
    return args


def tls_args(spec: ClusterSpec, folder: str = TLS_IN_CONTAINER) -> list[str]:
    """The scheduler's and workers' certificate options, the files in ``folder`` (by
    default where containers have them mounted); none without TLS."""
    if not spec.security.tls:
        return []
    return [
        "--tls-ca-file",
        f"{folder}/ca.pem",
        "--tls-cert",
        f"{folder}/cert.pem",
        "--tls-key",
        f"{folder}/key.pem",
    ]


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


def container_process(spec: ClusterSpec) -> dict[str, Any]:
    """How every container of a cluster runs, as the engine's API and Compose name it.

    Never as root: as this user's uid (so mounted files are shared; 1000 for root) in group
    0; with a share-dir (see :mod:`clusterctl.sharing`), as the folder's owner and group,
    also in group 0 (which the images' writable files and, for root, the mounted
    certificates belong to), starting in the folder.
    """
    share = sharing.host_share(spec)
    if share is None:
        uid = os.getuid()
        return {"user": f"{uid if uid != 0 else 1000}:0"}
    return {"user": f"{share.uid}:{share.gid}", "group_add": ["0"], "working_dir": share.folder}
