"""clusterctl: an interactive Dask cluster in one command, on this machine or in containers.

>>> import clusterctl
>>> cluster = clusterctl.up(workers=4)          # doctest: +SKIP
>>> client = cluster.get_client()               # doctest: +SKIP
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

# Public names, imported on first use so that `import clusterctl` (and the CLI) stay fast.
_LAZY = {
    "up": "clusterctl.api",
    "new_cluster": "clusterctl.api",
    "connect": "clusterctl.api",
    "down": "clusterctl.api",
    "from_name": "clusterctl.api",
    "list_clusters": "clusterctl.api",
    "Cluster": "clusterctl.cluster",
    "ClusterSpec": "clusterctl.spec",
    "load_spec": "clusterctl.spec",
}

__all__ = [*_LAZY, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'clusterctl' has no attribute {name!r}")
