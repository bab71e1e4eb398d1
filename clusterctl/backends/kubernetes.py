"""The kubernetes backend: a cluster as a DaskCluster the dask-kubernetes operator runs.

:class:`KubernetesBackend` (``clusterctl up --backend kubernetes``) hands the DaskCluster of
:func:`clusterctl.render.kubernetes.render_operator` to
``dask_kubernetes.operator.KubeCluster``; the operator then owns the workers: it keeps each
group at its size, retires workers gracefully and adapts (the controller delegates
:meth:`KubernetesBackend.scale` and :meth:`KubernetesBackend.adapt` to it).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from clusterctl.backends.base import Backend, Member
from clusterctl.errors import ClusterctlError, UserInputError
from clusterctl.labels import BACKEND, CLUSTER, spec_of
from clusterctl.render.kubernetes import (
    OPERATOR_APP,
    OPERATOR_NAMESPACE,
    operator_group,
    render_operator,
)
from clusterctl.spec import ClusterSpec, WorkerGroup

logger = logging.getLogger(__name__)


class KubernetesBackend(Backend):
    """A cluster as a DaskCluster resource that the dask-kubernetes operator runs."""

    kind = "kubernetes"
    orchestrated = True

    def __init__(self, spec: ClusterSpec, namespace: str | None = None, problem: str | None = None):
        super().__init__(spec, problem)
        self.namespace = namespace
        self.operator_namespace = OPERATOR_NAMESPACE
        self._kube: Any = None

    @classmethod
    def cluster_names(cls) -> list[str]:
        if kubeconfig_source() is None:
            return []  # no API server configured: nothing to ask, and nothing to import
        try:
            return sorted(c.name for c in _our_clusters())
        except Exception as exc:  # kr8s missing, the API server unreachable or refusing
            logger.warning(
                "kubernetes clusters not listed: the API server of %s did not answer (%s: %s)",
                kubeconfig_source(),
                type(exc).__name__,
                str(exc)[:200],
            )
            return []

    @classmethod
    def attach(cls, name: str) -> KubernetesBackend | None:
        if kubeconfig_source() is None:
            return None
        for cluster in _our_clusters():
            if cluster.name == name:
                spec, problem = spec_of(cluster.annotations, name, cls.kind, "its DaskCluster")
                return cls(spec, namespace=cluster.namespace, problem=problem)
        return None

    def preflight(self) -> None:
        """Fail before anything is created: no kubeconfig, no API server, no operator."""
        source = kubeconfig_source()
        if source is None:
            raise UserInputError(
                "backend: kubernetes needs a Kubernetes API server, and none is configured "
                "(KUBECONFIG is unset, ~/.kube/config does not exist, and this is not a pod); "
                "point KUBECONFIG at your cluster's, or apply `clusterctl render --backend "
                "kubernetes` with kubectl where there is one"
            )
        try:
            import kr8s
            from dask_kubernetes.operator import KubeCluster  # noqa: F401
        except ImportError:
            raise UserInputError(
                "backend: kubernetes needs dask-kubernetes: pip install 'clusterctl[kubernetes]'"
            ) from None
        try:
            api = kr8s.api()
            api.version()
        except Exception as exc:
            raise UserInputError(
                f"backend: cannot reach the Kubernetes API server of {source}: {exc}"
            ) from None
        if not list(api.get("customresourcedefinitions", "daskclusters.kubernetes.dask.org")):
            raise UserInputError(
                "backend: the dask-kubernetes operator is not installed in this Kubernetes "
                "cluster (no DaskCluster CRD); install it with its Helm chart"
            )
        self.namespace = self.namespace or api.namespace
        self.operator_namespace = _operator_namespace(api)

    @property
    def kube(self) -> Any:
        """The operator's ``KubeCluster`` of this cluster (connects, and port-forwards)."""
        if self._kube is None:
            from dask_kubernetes.operator import KubeCluster

            self._kube = KubeCluster(
                name=self.spec.name,
                namespace=self.namespace,
                create_mode="connect_only",
                shutdown_on_close=False,
                quiet=True,
                resource_timeout=self.spec.start_timeout,
            )
        return self._kube

    def start_scheduler(self) -> None:
        """Create, in order, the NetworkPolicy, the DaskCluster (scheduler and first group),
        other groups, the notebook."""
        from dask_kubernetes.operator import KubeCluster
        from kr8s.objects import object_from_spec

        docs = render_operator(self.spec, tag=None, operator_namespace=self.operator_namespace)
        for doc in docs:
            if doc["kind"] == "DaskCluster":
                self._kube = KubeCluster(
                    custom_cluster_spec=doc,
                    namespace=self.namespace,
                    create_mode="create_only",
                    shutdown_on_close=False,
                    quiet=True,
                    resource_timeout=self.spec.start_timeout,
                )
            elif doc["kind"] == "DaskWorkerGroup":
                name = doc["metadata"]["name"].removeprefix(f"{self.spec.name}-")
                self.kube.add_worker_group(name, custom_spec=doc["spec"]["worker"])
            else:
                doc["metadata"]["namespace"] = self.namespace
                object_from_spec(doc, api=self._api()).create()

    def scheduler_address(self) -> str:
        return self.kube.scheduler_address

    def notebook_url(self) -> str | None:
        return None  # JupyterLab logs its URL: `kubectl logs deploy/<name>-notebook`

    def scale(self, group: WorkerGroup, n: int) -> None:
        """Ask the operator for ``n`` workers of ``group``; it retires the ones it removes."""
        self.kube.scale(n, worker_group=operator_group(self.spec, group))

    def adapt(self, group: WorkerGroup, minimum: int, maximum: int) -> None:
        """The operator's own adaptive scaling (a DaskAutoscaler), of the first group only."""
        if group.name != self.spec.workers[0].name:
            raise UserInputError(
                f"--group: the dask-kubernetes operator adapts only the first worker group "
                f"({self.spec.workers[0].name}), not {group.name!r}"
            )
        self.kube.adapt(minimum=minimum, maximum=maximum)

    def start_workers(self, group: WorkerGroup, n: int) -> list[str]:
        raise ClusterctlError("the dask-kubernetes operator starts workers: use scale()")

    def stop_workers(self, names: list[str]) -> None:
        raise ClusterctlError("the dask-kubernetes operator stops workers: use scale()")

    def members(self) -> list[Member]:
        out = []
        selector = {"dask.org/cluster-name": self.spec.name}
        for pod in self._api().get("pods", namespace=self.namespace, label_selector=selector):
            labels = pod.labels
            role = labels.get("dask.org/component", "worker")
            env = {e.get("name"): e.get("value") for e in pod.spec.containers[0].get("env", [])}
            out.append(
                Member(
                    name=(env.get("DASK_WORKER_NAME") or pod.name) if role == "worker" else role,
                    role=role,
                    group=labels.get("dask.org/workergroup-name"),
                    running=pod.status.get("phase") in ("Pending", "Running"),
                    detail=f"pod {pod.name}",
                )
            )
        return out

    def logs(self, name: str, follow: bool = False) -> Iterator[str]:
        for member in self.members():
            if member.name == name:
                pod = next(
                    self._api().get(
                        "pods", member.detail.removeprefix("pod "), namespace=self.namespace
                    )
                )
                yield from pod.logs(follow=follow)
                return
        raise UserInputError(f"no scheduler or worker named {name!r} in {self.spec.name!r}")

    def destroy(self) -> None:
        if self.namespace is None:
            return  # preflight found no API server: nothing was created
        api = self._api()
        selector = {CLUSTER: self.spec.name}
        kinds = ("daskworkergroups", "daskclusters", "services", "deployments", "networkpolicies")
        for kind in kinds:
            for obj in api.get(kind, namespace=self.namespace, label_selector=selector):
                obj.delete()

    def _api(self) -> Any:
        import kr8s

        return kr8s.api()


def kubeconfig_source() -> str | None:
    """Where the Kubernetes client would find its API server (a kubeconfig file, or this
    pod's service account), or None; reads no file and imports nothing heavy."""
    if paths := os.environ.get("KUBECONFIG"):
        existing = [p for p in paths.split(os.pathsep) if p and os.path.isfile(p)]
        return existing[0] if existing else None
    default = Path.home() / ".kube" / "config"
    if default.is_file():
        return str(default)
    token = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
    if os.environ.get("KUBERNETES_SERVICE_HOST") and token.is_file():
        return "this pod's service account"
    return None


def _operator_namespace(api: Any) -> str:
    """The namespace the dask-kubernetes operator runs in; its install guide's if unseen
    (none running yet, or this user may not list pods everywhere)."""
    import kr8s

    try:
        pods = api.get(
            "pods", namespace=kr8s.ALL, label_selector={"app.kubernetes.io/name": OPERATOR_APP}
        )
        return next(iter(pods)).namespace
    except Exception:  # not allowed, or none: the guide's namespace is the best guess
        return OPERATOR_NAMESPACE


def _our_clusters() -> list[Any]:
    import kr8s

    return list(
        kr8s.api().get("daskclusters", namespace=kr8s.ALL, label_selector={BACKEND: "kubernetes"})
    )
