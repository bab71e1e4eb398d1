"""Kubernetes manifests, checked as far as a machine with no Kubernetes API server allows:
against Kubernetes' own OpenAPI schemas and the dask-kubernetes CRDs (offline), and by
running the rendered pods' containers under Docker as a working Dask cluster."""

from __future__ import annotations

import ast
import copy
import re
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import distributed
import pytest

pytest.importorskip("jsonschema", reason="jsonschema checks the operator's resources")
pytest.importorskip("kubernetes_validate", reason="kubernetes-validate has Kubernetes' schemas")
pytest.importorskip("dask_kubernetes", reason="dask-kubernetes has the operator's CRDs")
import jsonschema
import kubernetes_validate
import yaml
from dask.utils import parse_bytes

from clusterctl import state
from clusterctl.errors import UserInputError
from clusterctl.labels import CLUSTER, ROLE
from clusterctl.render.kubernetes import (
    COMPONENT,
    INSTANCE,
    deploy_files,
    render,
    render_operator,
    scheduler_address,
    worker_resources,
)
from clusterctl.spec import ClusterSpec, load_spec
from tests.conftest import run_cli

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy" / "kubernetes"
K8S_VERSION = "1.37.0"  # the newest Kubernetes whose schemas kubernetes-validate ships
CRDS = (
    Path(__import__("dask_kubernetes").__file__).parent
    / "operator/deployment/helm/dask-kubernetes-operator/crds"
)


def spec_of(text: str) -> ClusterSpec:
    return load_spec(overrides={"backend": "kubernetes", **yaml.safe_load(text)})


DEFAULT = load_spec(overrides={"backend": "kubernetes", "notebook": {"enabled": True}})
GROUPS = spec_of(
    """
name: multi
notebook: {enabled: true}
worker: {threads: 2, memory-limit: 3GiB}
workers:
  cpu: {count: 3, cpus: 1.5}
  big: {count: 1, memory-limit: 8GiB, threads: 4, resources: {BIG: 1, GPU: 2},
        env: {OMP_NUM_THREADS: "4", EXTRA_PIP_PACKAGES: ""}}
  tiny: {count: 0, memory-limit: 0.5, image: registry.example/dask-worker:2.0}
  gpu:
    count: 1
    gpus: 1
    placement:
      node-selector: {cloud.google.com/gke-accelerator: nvidia-tesla-t4}
      tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]
      affinity:
        nodeAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            nodeSelectorTerms: [{matchExpressions: [{key: pool, operator: In, values: [gpu]}]}]
"""
)
SPECS = {"default": DEFAULT, "groups": GROUPS}


def strip_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: strip_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [strip_none(v) for v in value]
    return value


def closed(schema: Any) -> Any:
    """A CRD schema that also refuses unknown fields (the API server would drop them)."""
    if isinstance(schema, dict):
        schema = {k: closed(v) for k, v in schema.items()}
        open_ = "additionalProperties" in schema or "x-kubernetes-preserve-unknown-fields" in schema
        if "properties" in schema and not open_:
            schema["additionalProperties"] = False
    elif isinstance(schema, list):
        schema = [closed(v) for v in schema]
    return schema


def crd_schema(kind: str) -> dict[str, Any]:
    crd = yaml.safe_load((CRDS / f"{kind.lower()}.yaml").read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["served"] and v["name"] == "v1"]
    schema = closed(version["schema"]["openAPIV3Schema"])
    for key in ("apiVersion", "kind", "metadata"):
        schema["properties"].setdefault(key, {})
    return schema


def validate(doc: dict[str, Any]) -> None:
    """Against Kubernetes' schemas (strict: unknown fields fail), or the operator's CRDs."""
    if doc["apiVersion"].startswith("kubernetes.dask.org/"):
        jsonschema.validate(strip_none(doc), crd_schema(doc["kind"]))
    else:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def container_of(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def arg(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


# --- schemas -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SPECS))
def test_rendered_manifests_pass_the_kubernetes_schemas(name):
    docs = render(SPECS[name])
    assert {d["kind"] for d in docs} == {"ServiceAccount", "NetworkPolicy", "Deployment", "Service"}
    for doc in docs:
        validate(doc)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_operator_resources_pass_the_crds_and_kubernetes_schemas(name):
    spec = SPECS[name]
    docs = render_operator(spec)
    kinds = [d["kind"] for d in docs]
    assert kinds.count("DaskCluster") == 1
    assert kinds.count("DaskWorkerGroup") == len(spec.workers) - 1
    assert kinds.count("NetworkPolicy") == 1
    for doc in docs:
        validate(doc)


def test_the_validators_do_refuse_wrong_manifests():
    """The checks above would catch a mistake: an unknown field, a wrong type."""
    deployment = copy.deepcopy(by_kind(render(DEFAULT), "Deployment")[0])
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment)
    deployment["spec"]["replicas"] = 2
    container_of(deployment)["argz"] = ["x"]
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment)
    cluster = copy.deepcopy(by_kind(render_operator(DEFAULT), "DaskCluster")[0])
    cluster["spec"]["worker"]["replicas"] = "two"
    with pytest.raises(jsonschema.ValidationError):
        validate(cluster)
    cluster["spec"]["worker"]["replicas"] = 2
    cluster["spec"]["worker"]["spec"]["containers"][0]["commmand"] = ["x"]
    with pytest.raises(jsonschema.ValidationError):
        validate(cluster)


# --- what the manifests say ------------------------------------------------------------------


def test_worker_resources_match_their_dask_options():
    docs = render(GROUPS)
    workers = {
        d["metadata"]["name"]: d
        for d in by_kind(docs, "Deployment")
        if d["metadata"]["labels"][COMPONENT] == "worker"
    }
    assert sorted(workers) == ["multi-big", "multi-cpu", "multi-gpu", "multi-tiny"]
    for group in GROUPS.workers:
        deployment = workers[f"multi-{group.name}"]
        assert deployment["spec"]["replicas"] == group.count
        container = container_of(deployment)
        args = container["args"]
        assert args[:2] == ["worker", scheduler_address(GROUPS)]
        resources = container["resources"]
        assert resources["requests"] == resources["limits"]  # Guaranteed: no surprises
        threads = int(arg(args, "--nthreads"))
        assert threads == group.threads
        cpu = resources["limits"]["cpu"]
        cpus = float(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)
        assert cpus == (group.cpus or threads)
        memory = arg(args, "--memory-limit")
        if "memory" in resources["limits"]:
            assert parse_bytes(memory) == int(resources["limits"]["memory"])
        else:
            assert float(memory) <= 1  # a fraction of what the pod sees: no limit to match
    big = container_of(workers["multi-big"])
    assert arg(big["args"], "--resources") == "BIG=1 GPU=2"
    assert {"name": "OMP_NUM_THREADS", "value": "4"} in big["env"]
    assert container_of(workers["multi-tiny"])["image"] == "registry.example/dask-worker:2.0"
    pod = workers["multi-gpu"]["spec"]["template"]["spec"]  # placed as the group asks
    assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-tesla-t4"}
    assert pod["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert "nodeSelector" not in workers["multi-cpu"]["spec"]["template"]["spec"]
    gpu = container_of(workers["multi-gpu"])  # NVIDIA's device plugin hands it one
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert arg(gpu["args"], "--resources") == "GPU=1"  # what tasks ask for
    assert worker_resources(GROUPS.group("cpu"))["limits"] == {
        "cpu": "1500m",
        "memory": "3221225472",
    }


def test_probes_security_and_images():
    docs = render(DEFAULT)
    ports = {
        "scheduler": ("http-dashboard", 8787, "/health"),
        "worker": ("http-dashboard", 8788, "/health"),
        "notebook": ("http", 8888, "/api"),
    }
    deployments = by_kind(docs, "Deployment")
    assert sorted(d["metadata"]["labels"][COMPONENT] for d in deployments) == sorted(ports)
    for deployment in deployments:
        role = deployment["metadata"]["labels"][COMPONENT]
        pod = deployment["spec"]["template"]["spec"]
        container = container_of(deployment)
        name, number, path = ports[role]
        assert {"name": name, "containerPort": number, "protocol": "TCP"} in container["ports"]
        for probe in ("readinessProbe", "livenessProbe"):
            assert container[probe]["httpGet"] == {"path": path, "port": name}
        assert pod["securityContext"] == {
            "runAsNonRoot": True,
            "runAsUser": 1000,
            "runAsGroup": 0,
            "seccompProfile": {"type": "RuntimeDefault"},
        }
        assert container["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        }
        assert pod["automountServiceAccountToken"] is False
        assert pod["serviceAccountName"] == by_kind(docs, "ServiceAccount")[0]["metadata"]["name"]
        assert container["image"] == f"clusterctl-{role}:latest"
        assert container["imagePullPolicy"] == "IfNotPresent"
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "dask"
        assert labels[INSTANCE] == DEFAULT.name
        assert labels[CLUSTER] == DEFAULT.name and labels[ROLE] == role
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector.items() <= labels.items()


def test_services_are_the_addresses_the_pods_use():
    docs = render(DEFAULT)
    services = {s["metadata"]["name"]: s for s in by_kind(docs, "Service")}
    scheduler = services[f"{DEFAULT.name}-scheduler"]
    assert scheduler["spec"]["type"] == "ClusterIP"
    assert [(p["name"], p["port"]) for p in scheduler["spec"]["ports"]] == [
        ("tcp-comm", 8786),
        ("http-dashboard", 8787),
    ]
    assert scheduler_address(DEFAULT) == f"tcp://{DEFAULT.name}-scheduler:8786"
    pods = {d["metadata"]["labels"][COMPONENT]: d for d in by_kind(docs, "Deployment")}
    assert container_of(pods["worker"])["args"][1] == scheduler_address(DEFAULT)
    env = {e["name"]: e for e in container_of(pods["notebook"])["env"]}
    assert env["DASK_SCHEDULER_ADDRESS"]["value"] == scheduler_address(DEFAULT)
    assert env["JUPYTER_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": f"{DEFAULT.name}-notebook-token",
        "key": "token",
        "optional": True,
    }
    for service in services.values():  # each selects exactly the pods of its component
        selected = [
            d
            for d in pods.values()
            if service["spec"]["selector"].items()
            <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert [d["metadata"]["name"] for d in selected] == [service["metadata"]["name"]]
        targets = {p["name"] for p in container_of(selected[0])["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= targets


def test_network_policy_admits_only_the_cluster_to_the_scheduler_and_workers():
    (policy,) = by_kind(render(DEFAULT), "NetworkPolicy")
    ours = {"matchLabels": {INSTANCE: DEFAULT.name}}
    assert policy["spec"]["podSelector"] == ours
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    everything, public = policy["spec"]["ingress"]
    assert everything == {"from": [{"podSelector": ours}]}  # any port: workers' are random
    assert public["from"] == [{"podSelector": {}}]  # the namespace's pods
    assert sorted(p["port"] for p in public["ports"]) == [8787, 8888]  # a read-only dashboard


def routes_of(container: dict[str, Any]) -> list[str] | None:
    """The scheduler's HTTP routes as its environment sets them (None: the image's own)."""
    env = {e["name"]: e["value"] for e in container.get("env", [])}
    value = env.get("DASK_DISTRIBUTED__SCHEDULER__HTTP__ROUTES")
    return None if value is None else ast.literal_eval(value)  # as dask.config parses it


@pytest.mark.parametrize("name", sorted(SPECS))
def test_only_the_operators_scheduler_serves_the_http_api_and_only_to_it(name):
    spec = SPECS[name]
    plain = container_of(by_kind(render(spec), "Deployment")[0])
    assert plain["name"] == "scheduler" and routes_of(plain) is None  # the image's: no API
    docs = render_operator(spec, operator_namespace="ops")
    assert docs[0]["kind"] == "NetworkPolicy"  # in place before the scheduler starts
    (cluster,) = by_kind(docs, "DaskCluster")
    (scheduler,) = cluster["spec"]["scheduler"]["spec"]["containers"]
    routes = routes_of(scheduler)
    assert "distributed.http.scheduler.api" in routes  # what the operator retires workers by
    shipped = yaml.safe_load(Path(distributed.__file__).with_name("distributed.yaml").read_text())
    assert set(shipped["distributed"]["scheduler"]["http"]["routes"]) <= set(routes)
    (policy,) = by_kind(docs, "NetworkPolicy")
    ours = {"matchLabels": {INSTANCE: spec.name}}
    # Every pod the operator makes carries the DaskCluster's labels, so this selects them.
    assert cluster["metadata"]["labels"][INSTANCE] == spec.name
    assert cluster["spec"]["scheduler"]["metadata"]["labels"][INSTANCE] == spec.name
    assert policy["spec"]["podSelector"] == ours
    everything, operator, public = policy["spec"]["ingress"]
    assert everything == {"from": [{"podSelector": ours}]}
    assert operator["from"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ops"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "dask-kubernetes-operator"}},
        }
    ]  # both selectors in one entry: the operator's pods in its namespace, nothing else
    assert sorted(p["port"] for p in operator["ports"]) == [8786, 8787]
    assert public["from"] == [{"podSelector": {}}]
    assert [p["port"] for p in public["ports"]] == [8888]  # JupyterLab, which wants its token
    validate(policy)


def test_operator_form_is_the_same_pods():
    plain = {
        d["metadata"]["labels"].get("io.clusterctl.group")
        or d["metadata"]["labels"][COMPONENT]: container_of(d)
        for d in by_kind(render(GROUPS), "Deployment")
    }
    docs = render_operator(GROUPS)
    (cluster,) = by_kind(docs, "DaskCluster")
    groups = by_kind(docs, "DaskWorkerGroup")
    assert cluster["metadata"]["name"] == GROUPS.name
    assert (
        ClusterSpec.from_dict(
            yaml.safe_load(cluster["metadata"]["annotations"]["io.clusterctl.spec"])
        )
        == GROUPS
    )
    scheduler = cluster["spec"]["scheduler"]["spec"]["containers"][0]
    without_env = {k: v for k, v in scheduler.items() if k != "env"}
    assert without_env == {k: v for k, v in plain["scheduler"].items() if k != "env"}
    assert all(e in scheduler["env"] for e in plain["scheduler"]["env"])  # plus the API routes
    assert cluster["spec"]["scheduler"]["service"]["selector"] == {
        "dask.org/cluster-name": GROUPS.name,
        "dask.org/component": "scheduler",
    }
    workers = {"cpu": cluster["spec"]["worker"]}
    workers |= {
        g["metadata"]["name"].removeprefix("multi-"): g["spec"]["worker"]
        for g in by_kind(groups, "DaskWorkerGroup")
    }
    assert all(g["spec"]["cluster"] == GROUPS.name for g in by_kind(groups, "DaskWorkerGroup"))
    for group in GROUPS.workers:
        worker = workers[group.name]
        assert worker["replicas"] == group.count
        (container,) = worker["spec"]["containers"]
        # The operator names each worker (its Deployment) and gives the scheduler's address.
        assert container["args"][:3] == ["worker", "--name", "$(DASK_WORKER_NAME)"]
        assert container["args"][3:] == plain[group.name]["args"][2:]
        same = {k: v for k, v in container.items() if k != "args"}
        assert same == {k: v for k, v in plain[group.name].items() if k != "args"}


def test_what_a_manifest_cannot_carry_is_refused(tmp_path):
    with pytest.raises(UserInputError, match=r"security\.tls"):
        render(load_spec(overrides={"backend": "kubernetes", "security": {"tls": True}}))
    mounted = {"backend": "kubernetes", "worker": {"mounts": [f"{tmp_path}:/data"]}}
    with pytest.raises(UserInputError, match=r"workers\.worker\.mounts"):
        render_operator(load_spec(overrides=mounted))
    two_defaults = spec_of("workers: {a: {count: 1}, default: {count: 1}}")
    render(two_defaults)
    with pytest.raises(UserInputError, match=r"workers\.default"):
        render_operator(two_defaults)


def test_tls_auto_is_off_for_kubernetes():
    assert load_spec(overrides={"backend": "kubernetes"}).security.tls is False
    assert load_spec(overrides={"backend": "docker"}).security.tls is True


# --- deploy/kubernetes and the CLI -----------------------------------------------------------


def test_deploy_folder_is_the_rendered_default():
    from clusterctl.api import build_spec

    expected = deploy_files(build_spec(backend="kubernetes", notebook=True, tls=False))
    found = {p.name: p.read_text() for p in DEPLOY.iterdir()}
    assert found == expected, "deploy/kubernetes is stale: run scripts/render-deploy"
    for text in found.values():
        for doc in yaml.safe_load_all(text):
            if doc["kind"] != "Kustomization":
                validate(doc)


def test_kustomize_builds_the_cli_render():
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("no kubectl on this machine: `kubectl kustomize` not tried")
    built = subprocess.run(
        [kubectl, "kustomize", str(DEPLOY)], capture_output=True, text=True, check=True
    ).stdout
    rendered = run_cli("render", "--backend", "kubernetes").stdout

    def key(doc: dict[str, Any]) -> tuple[str, str]:
        return doc["kind"], doc["metadata"]["name"]

    assert sorted(yaml.safe_load_all(built), key=key) == sorted(
        yaml.safe_load_all(rendered), key=key
    )


def test_render_cli(tmp_path):
    spec_file = tmp_path / "cluster.yaml"
    spec_file.write_text("name: k9\nworkers: {a: {count: 1}, b: {count: 2, threads: 2}}\n")
    out = run_cli(
        "render", "-b", "kubernetes", "-f", str(spec_file), "--workers", "4", "--no-notebook"
    ).stdout
    assert out.startswith("# A Dask cluster for Kubernetes: kubectl apply -f -")
    docs = list(yaml.safe_load_all(out))
    replicas = {d["metadata"]["name"]: d["spec"]["replicas"] for d in by_kind(docs, "Deployment")}
    assert replicas == {"k9-scheduler": 1, "k9-a": 4, "k9-b": 2}
    for doc in docs:
        validate(doc)
    out = run_cli("render", "-b", "kubernetes", "-f", str(spec_file), "--operator").stdout
    docs = list(yaml.safe_load_all(out))
    assert [d["kind"] for d in docs] == [
        "NetworkPolicy",
        "DaskCluster",
        "DaskWorkerGroup",
        "Deployment",
        "Service",
    ]
    for doc in docs:
        validate(doc)


def test_operator_flag_needs_kubernetes():
    result = run_cli("render", "--backend", "compose", "--operator", check=False)
    assert result.returncode == 2, result.stderr
    assert "--operator: only with --backend kubernetes" in result.stderr


def test_up_without_an_api_server_fails_fast_and_leaves_nothing(tmp_path):
    env_home = {"KUBECONFIG": str(tmp_path / "no-such-kubeconfig")}
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "clusterctl", "up", "--backend", "kubernetes", "--name", "k1"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**__import__("os").environ, **env_home},
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "needs a Kubernetes API server" in result.stderr
    assert "Traceback" not in result.stderr
    assert time.monotonic() - started < 60
    assert "k1" not in state.names()
    assert not (state.cluster_dir("k1")).exists()


# --- the rendered pods under Docker ----------------------------------------------------------


@pytest.fixture
def pods_network(docker_engine):
    """A bridge network for the smoke test's containers; all of them removed afterwards."""
    name = f"k8s-smoke-{uuid.uuid4().hex[:6]}"
    labels = {CLUSTER: name, ROLE: "network"}
    network = docker_engine.networks.create(name, driver="bridge", labels=labels)
    yield network
    ours = {"label": f"{CLUSTER}={name}"}
    for container in docker_engine.containers.list(ignore_removed=True, all=True, filters=ours):
        container.remove(force=True, v=True)
    network.remove()


def run_pod(
    client: Any,
    network: Any,
    deployment: dict[str, Any],
    aliases: list[str],
    index: int,
    publish: bool,
) -> Any:
    """One replica of a Deployment as a container, with what its pod template says."""
    pod = deployment["spec"]["template"]["spec"]
    container = container_of(deployment)
    known = {"serviceAccountName", "automountServiceAccountToken", "securityContext", "containers"}
    assert set(pod) <= known, "a pod field the smoke test would ignore"
    env = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        elif "resourceFieldRef" in item["valueFrom"]:  # the downward API, as Kubernetes gives it
            field = item["valueFrom"]["resourceFieldRef"]
            assert field == {"containerName": container["name"], "resource": "requests.memory"}
            request = container.get("resources", {}).get("requests", {}).get("memory", "0")
            env[item["name"]] = str(int(request))  # no request: 0
        else:  # as Kubernetes does with an optional Secret that does not exist
            assert item["valueFrom"]["secretKeyRef"]["optional"] is True
    security = pod["securityContext"]
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    limits = container.get("resources", {}).get("limits", {})
    cpu = limits.get("cpu", "")
    extra: dict[str, Any] = {}
    if cpu:
        extra["nano_cpus"] = int(float(cpu[:-1]) * 1e6 if cpu.endswith("m") else float(cpu) * 1e9)
    if "memory" in limits:
        extra["mem_limit"] = int(limits["memory"])
    if publish:
        extra["ports"] = {
            f"{p['containerPort']}/tcp": ("127.0.0.1", None) for p in container["ports"]
        }
    name = f"{deployment['metadata']['name']}-{index}"
    return client.containers.run(
        container["image"],
        [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], arg) for arg in container["args"]],
        name=f"{network.name}-{name}",
        hostname=name,
        detach=True,
        environment=env,
        user=f"{security['runAsUser']}:{security['runAsGroup']}",
        cap_drop=["ALL"],
        security_opt=["no-new-privileges:true"],
        labels={CLUSTER: network.name, ROLE: deployment["metadata"]["labels"][ROLE]},
        network=network.name,
        networking_config={network.name: client.api.create_endpoint_config(aliases=aliases)},
        **extra,
    )


def probe(container: Any, spec: dict[str, Any]) -> bool:
    """A pod's httpGet probe, made from inside its container (as the kubelet would reach it)."""
    ports = {p["name"]: p["containerPort"] for p in spec["ports"]}
    get = spec["readinessProbe"]["httpGet"]
    url = f"http://127.0.0.1:{ports.get(get['port'], get['port'])}{get['path']}"
    code = f"import urllib.request as u; print(u.urlopen({url!r}, timeout=3).status)"
    result = container.exec_run(["python", "-c", code])
    return result.exit_code == 0 and result.output.strip() == b"200"


@pytest.mark.timeout(900)
def test_rendered_pods_form_a_working_cluster_under_docker(images, docker_engine, pods_network):
    from distributed import Client

    spec = spec_of("name: smoke\nnotebook: {enabled: true}\nworker: {count: 3}")
    docs = render(spec, tag=None)  # this client's images, as the fixture built them
    services = by_kind(docs, "Service")
    containers: dict[str, list[Any]] = {}
    for deployment in by_kind(docs, "Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        role = labels[COMPONENT]
        assert container_of(deployment)["image"] == images[role]
        aliases = [
            s["metadata"]["name"]
            for s in services
            if s["spec"]["selector"].items() <= labels.items()
        ]
        containers[role] = [
            run_pod(docker_engine, pods_network, deployment, aliases, i, role == "scheduler")
            for i in range(deployment["spec"]["replicas"])
        ]
    assert [len(containers[r]) for r in ("scheduler", "worker", "notebook")] == [1, 3, 1]
    (scheduler,) = containers["scheduler"]
    scheduler.reload()
    published = scheduler.attrs["NetworkSettings"]["Ports"]
    comm = published["8786/tcp"][0]["HostPort"]
    dashboard = published["8787/tcp"][0]["HostPort"]

    deadline = time.monotonic() + 180
    pending = {
        c.name: (c, container_of(d))
        for d in by_kind(docs, "Deployment")
        for c in containers[d["metadata"]["labels"][COMPONENT]]
    }
    while pending:  # every pod's readiness probe answers
        for name, (container, container_spec) in list(pending.items()):
            container.reload()
            assert container.status == "running", container.logs().decode()[-3000:]
            if probe(container, container_spec):
                del pending[name]
        assert time.monotonic() < deadline, f"not ready: {sorted(pending)}"
        time.sleep(1)

    with urllib.request.urlopen(f"http://127.0.0.1:{dashboard}/health", timeout=10) as r:
        assert r.read() == b"ok"
    with Client(f"tcp://127.0.0.1:{comm}", timeout=30) as client:
        client.wait_for_workers(3, timeout=120)
        workers = client.scheduler_info(n_workers=-1)["workers"].values()
        assert sorted(w["name"] for w in workers) == [f"smoke-worker-{i}" for i in range(3)]
        assert {w["nthreads"] for w in workers} == {1}
        squares = client.map(pow, range(100), [2] * 100)
        assert client.submit(sum, squares).result(timeout=60) == sum(x * x for x in range(100))
    # The notebook reaches the scheduler by its Service name, as JupyterLab's kernels would.
    (notebook,) = containers["notebook"]
    code = (
        "import os; from distributed import Client; "
        "c = Client(os.environ['DASK_SCHEDULER_ADDRESS'], timeout=30); "
        "print(c.submit(sum, [20, 22]).result()); c.close()"
    )
    result = notebook.exec_run(["python", "-c", code])
    assert result.exit_code == 0 and result.output.strip().endswith(b"42"), result.output


def test_render_needs_no_docker_sdk_and_imports_no_backend():
    """`clusterctl render` of every backend works where the docker SDK is not installed,
    and loads only the renderers (no backend module)."""
    code = """if True:
        import sys
        sys.modules["docker"] = None  # as if not installed: `import docker` fails
        from click.testing import CliRunner
        from clusterctl.cli import cli
        for backend in ("kubernetes", "compose", "swarm"):
            result = CliRunner().invoke(cli, ["render", "--backend", backend])
            assert result.exit_code == 0, (backend, result.output)
            assert "kind: Deployment" in result.output or "services:" in result.output
        print(" ".join(m for m in sys.modules if m.startswith("clusterctl.backends.")))
    """
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == []


def test_list_says_when_the_api_server_does_not_answer(tmp_path):
    """A kubeconfig whose server refuses: `list` still works and says why it shows no
    Kubernetes clusters (never silently nothing, never a traceback)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "gone", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "me", "user": {"token": "x"}}],
        "contexts": [{"name": "gone", "context": {"cluster": "gone", "user": "me"}}],
        "current-context": "gone",
    }
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(config))
    pytest.importorskip("kr8s", reason="the kubernetes extra (dask-kubernetes) is not installed")
    result = run_cli("list", env={"KUBECONFIG": str(kubeconfig)})
    assert "kubernetes clusters not listed" in result.stderr
    assert str(kubeconfig) in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("operator", [False, True], ids=["manifests", "operator"])
def test_the_pod_monitor_selects_the_scheduler_and_workers_by_their_metrics_port(operator):
    from clusterctl.render.kubernetes import render_text

    docs = list(yaml.safe_load_all(render_text(GROUPS, operator=operator, pod_monitor=True)))
    (monitor,) = by_kind(docs, "PodMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    wanted = monitor["spec"]["selector"]
    [endpoint] = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["path"] == "/metrics"

    def selected(labels: dict[str, str]) -> bool:
        (expression,) = wanted["matchExpressions"]
        return wanted["matchLabels"].items() <= labels.items() and (
            labels.get(expression["key"]) in expression["values"]
        )

    pods = [  # (labels, pod spec) of every pod template, in either rendering
        (d["spec"]["template"]["metadata"]["labels"], d["spec"]["template"]["spec"])
        for d in by_kind(docs, "Deployment")
    ]
    for cluster in by_kind(docs, "DaskCluster"):
        for role in ("scheduler", "worker"):
            pods.append(
                (cluster["spec"][role]["metadata"]["labels"], cluster["spec"][role]["spec"])
            )
    for group in by_kind(docs, "DaskWorkerGroup"):
        pods.append(
            (group["spec"]["worker"]["metadata"]["labels"], group["spec"]["worker"]["spec"])
        )
    roles = []
    for labels, pod in pods:
        if selected(labels):
            roles.append(labels[COMPONENT])
            ports = {p["name"] for c in pod["containers"] for p in c.get("ports", [])}
            assert endpoint["port"] in ports, (labels, ports)
    assert sorted(set(roles)) == ["scheduler", "worker"]
    assert roles.count("worker") == len(GROUPS.workers) and "notebook" not in roles
