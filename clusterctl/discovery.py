"""The cluster class that dask-ctl's discovery hands out (``api.discover`` yields it).

dask-ctl (checked against 2024.1.0, ``dask_ctl/lifecycle.py`` and ``cli.py``) builds every
cluster object with ``from_name(name)``, and calls ``close()`` on it in exactly one place:
``delete_cluster(name)`` (``dask cluster delete``), which is ``get_cluster(name).close()``
and means "stop the cluster". ``list_clusters``, ``scale_cluster``, ``get_snippet`` and
``dask cluster list/scale`` never call ``close()``, use no ``with``; they drop the object,
and distributed's ``Cluster.__del__`` only warns. So here ``close()`` stops the cluster,
while :meth:`clusterctl.Cluster.from_name` keeps its meaning: ``close()`` disconnects.
"""

from __future__ import annotations

from typing import Any

from clusterctl.cluster import Cluster


class DiscoveredCluster(Cluster):
    """A running cluster as dask-ctl sees it: ``close()`` (dask-ctl's delete) stops it."""

    @classmethod
    def from_name(cls, name: str, asynchronous: bool = False, **kwargs: Any) -> Cluster:
        """Attach to the running cluster ``name``; closing the object stops the cluster."""
        kwargs.setdefault("shutdown_on_close", True)
        return super().from_name(name, asynchronous=asynchronous, **kwargs)
