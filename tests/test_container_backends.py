"""The docker and compose backends end to end on the real engine, with the images built
offline: every test here runs on both (the compose backend shares the docker backend's
labels and differs in how containers are made and removed)."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request

import pytest
from distributed import Client, wait

import clusterctl
from clusterctl import state, supervisor, waiting
from clusterctl.api import build_spec
from clusterctl.backends.base import port_is_free
from clusterctl.errors import UserInputError
from tests.conftest import assert_client_refused, free_port, run_cli

# The first docker test may build the images (minutes): a timeout to match.
pytestmark = pytest.mark.timeout(1800)


def ours(docker_engine, name: str) -> list[str]:
    """Everything of cluster ``name`` the engine holds, found by label."""
    label = {"label": f"io.clusterctl.cluster={name}"}
    return (
        [
            c.name
            for c in docker_engine.containers.list(ignore_removed=True, all=True, filters=label)
        ]
        + [n.name for n in docker_engine.networks.list(filters=label)]
        + [v.name for v in docker_engine.volumes.list(filters=label)]
    )


BACKENDS = ["docker", "compose"]


# Worker env values with `$`, which Compose would interpolate unless the file escapes them.
DOLLAR_ENV = {"A": "${HOME}", "B": "pa$$word$"}


@pytest.fixture(scope="module", params=BACKENDS)
def cluster(request, images, docker_engine, tmp_path_factory):
    """A cluster with a notebook, a mounted folder and env values holding `$`, shared by
    this module's tests."""
    backend = request.param
    data = tmp_path_factory.mktemp("data")
    data.chmod(0o777)
    spec = tmp_path_factory.mktemp("spec") / "cluster.yaml"
    spec.write_text(
        textwrap.dedent(f"""
        backend: {backend}
        scheduler: {{port: 0, dashboard-port: 0}}
        notebook: {{enabled: true, port: 0}}
        worker: {{mounts: ["{data}:/data"], env: {json.dumps(DOLLAR_ENV)}}}
    """)
    )
    c = clusterctl.up(spec, name=f"t-{backend}", workers=2)
    c.data = data
    yield c
    c.shutdown()
    assert ours(docker_engine, c.name) == []


def test_containers_are_labelled_unprivileged_and_named_as_workers(cluster, docker_engine):
    label = {"label": f"io.clusterctl.cluster={cluster.name}"}
    containers = docker_engine.containers.list(ignore_removed=True, filters=label)
    roles = sorted(c.labels["io.clusterctl.role"] for c in containers)
    assert roles == ["notebook", "scheduler", "worker", "worker"]
    for c in containers:
        assert c.attrs["Config"]["User"] != "" and not c.attrs["Config"]["User"].startswith("0")
        assert c.attrs["HostConfig"]["CapDrop"] == ["ALL"]
        for binding in (c.attrs["HostConfig"]["PortBindings"] or {}).values():
            assert binding[0]["HostIp"] == "127.0.0.1"
    with Client(cluster) as client:
        names = {w["name"] for w in client.scheduler_info()["workers"].values()}
    assert names == cluster.workers and len(names) == 2
    for name in names:  # docker: the container's name; compose: the replica's hostname
        container = docker_engine.containers.get(name)
        assert name in (container.name, container.attrs["Config"]["Hostname"])
        assert container.labels["io.clusterctl.group"] == "worker"
    if cluster.spec.backend == "docker":
        assert names == {f"{cluster.name}-worker-1", f"{cluster.name}-worker-2"}
    else:
        project = {c.labels.get("com.docker.compose.project") for c in containers}
        assert project == {cluster.name}


def test_env_values_reach_the_workers_exactly_as_written(cluster, docker_engine):
    for name in cluster.workers:
        code, out = docker_engine.containers.get(name).exec_run(["printenv", "A", "B"])
        assert code == 0, out
        assert out.decode().splitlines() == [DOLLAR_ENV["A"], DOLLAR_ENV["B"]]


def test_state_files_are_the_owners_alone(cluster):
    """The cluster folder is 0700; the Compose file (env values) and the notebook token are
    0600, except that as root the token is also readable by group 0 (root's): the containers
    run as uid 1000 in group 0, and read it through a mount of its own folder."""
    folder = state.cluster_dir(cluster.name)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    token = folder / "notebook" / "token"
    token_mode = 0o640 if os.geteuid() == 0 else 0o600
    assert stat.S_IMODE(token.stat().st_mode) == token_mode
    assert token.stat().st_gid == os.getegid()
    if cluster.spec.backend == "compose":
        compose_file = folder / "docker-compose.yml"
        assert stat.S_IMODE(compose_file.stat().st_mode) == 0o600
        assert "pa$$$$word$$" in compose_file.read_text()  # escaped, so Compose reads it as is
    leftovers = [p.name for p in folder.rglob(".tmp-*")]
    assert leftovers == []


def test_workers_are_forked_by_their_nanny_with_what_spawning_would_give_them(cluster):
    """Each nanny forks its worker (no second import of distributed); the worker still gets
    the hash seed and one-thread BLAS a spawned one would, and Client.restart() works."""
    method = "distributed.worker.multiprocessing-method"
    with Client(cluster) as client:
        for restarted in (False, True):
            assert set(client.run(lambda: __import__("dask").config.get(method)).values()) == {
                "fork"
            }
            assert len(set(client.run(hash, "the same string on every worker").values())) == 1
            blas = client.run(lambda: __import__("os").environ.get("OPENBLAS_NUM_THREADS"))
            assert set(blas.values()) == {"1"}
            if not restarted:
                client.restart()
        assert {w["name"] for w in client.scheduler_info()["workers"].values()} == cluster.workers


@pytest.mark.bad_input
def test_a_cross_origin_post_to_the_dashboard_retires_no_worker(cluster):
    """A web page the user visits may POST to the dashboard (text/plain needs no CORS
    preflight): no route there may change anything."""
    workers = set(cluster.workers)
    assert len(workers) >= 2
    dashboard = cluster.dashboard_link.removesuffix("/status")
    body = json.dumps({"workers": sorted(workers)}).encode()
    for path in ("/api/v1/retire_workers", "/api/v1/adaptive_target", "/api/v1"):
        request = urllib.request.Request(
            f"{dashboard}{path}",
            data=body,
            method="POST",
            headers={"Content-Type": "text/plain", "Origin": "http://evil.example"},
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 404, path
    with Client(cluster) as client:
        registered = {w["name"] for w in client.scheduler_info()["workers"].values()}
        assert registered == workers
        squares = client.map(lambda i: i * i, range(20), pure=False)
        assert client.submit(sum, squares).result(timeout=30) == sum(i * i for i in range(20))
        ran_on = set(client.run(lambda dask_worker: dask_worker.name).values())
        assert ran_on == workers


def test_tls_by_default_and_a_client_without_certificates_is_refused(cluster):
    assert cluster.scheduler_address.startswith("tls://")
    health = cluster.dashboard_link.replace("/status", "/health")  # the published port
    with urllib.request.urlopen(health, timeout=10) as r:
        assert r.read() == b"ok"
    assert_client_refused(cluster.scheduler_address)
    with clusterctl.connect(cluster.name) as client:
        assert client.submit(lambda: 1 + 1).result() == 2


def test_dataframe_groupby_scale_up_persist_and_graceful_scale_down(cluster):
    import dask
    import dask.dataframe as dd

    with Client(cluster) as client:
        df = dask.datasets.timeseries(start="2000-01-01", end="2000-01-31", freq="10s", seed=1)
        expected = df.compute().groupby("name").x.mean()
        result = df.groupby("name").x.mean().compute()
        assert (abs(result.sort_index() - expected.sort_index()) < 1e-9).all()

        cluster.scale(4)
        cluster.wait_for_workers(4)
        persisted = dd.from_pandas(df.compute(), npartitions=16).persist()
        wait(persisted)
        total = persisted.x.sum().compute()
        assert len({w for ws in client.who_has(persisted).values() for w in ws}) > 1

        cluster.scale(1)
        assert len(cluster.workers) == 1
        who_has = client.who_has(persisted)
        assert all(len(w) == 1 for w in who_has.values()), "a key was lost"
        assert persisted.x.sum().compute() == total


@pytest.mark.fault("docker kill a worker mid-computation")
def test_docker_kill_mid_computation_still_gives_the_right_result(cluster, docker_engine):
    cluster.scale(2)
    cluster.wait_for_workers(2)
    with Client(cluster) as client:
        futures = client.map(
            lambda i: (__import__("time").sleep(0.5), i * i)[1], range(40), pure=False
        )
        time.sleep(1.5)
        docker_engine.containers.get(sorted(cluster.workers)[-1]).kill()
        assert sum(client.gather(futures)) == sum(i * i for i in range(40))
    # The engine does not restart a container `docker kill` stopped; the supervisor does.
    cluster.wait_for_workers(2, timeout=30)
    assert len(cluster.workers) == 2


@pytest.mark.fault("a worker process crashes in its container")
def test_a_crashed_worker_process_is_restarted_by_the_engine(cluster, docker_engine):
    container = docker_engine.containers.get(sorted(cluster.workers)[0])
    restarts = container.attrs["RestartCount"]
    crash = (  # SIGKILL the `dask worker` process, as an out-of-memory kill would
        "import os\n"
        "for pid in filter(str.isdigit, os.listdir('/proc')):\n"
        "    if b'dask\\x00worker' in open(f'/proc/{pid}/cmdline', 'rb').read():\n"
        "        os.kill(int(pid), 9)\n"
    )
    container.exec_run(["python", "-c", crash])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        container.reload()
        if container.attrs["RestartCount"] > restarts and container.status == "running":
            break
        time.sleep(0.5)
    assert container.attrs["RestartCount"] > restarts, "the engine did not restart it"
    cluster.wait_for_workers(2, timeout=60)


def test_a_script_in_the_notebook_container_uses_the_cluster_and_the_mount(cluster, docker_engine):
    (cluster.data / "input.txt").write_text("21\n")
    notebook = docker_engine.containers.get(f"{cluster.name}-notebook")
    script = (
        "from distributed import Client; c = Client(); "
        "f = c.submit(lambda: int(open('/data/input.txt').read()) * 2); print(f.result())"
    )
    code, out = notebook.exec_run(["python", "-c", script])
    assert code == 0, out.decode()
    assert out.decode().strip().endswith("42")
    url = cluster.backend.notebook_url()
    assert run_cli("notebook", "--name", cluster.name).stdout.strip() == url
    base, token = url.split("/lab?token=")
    with urllib.request.urlopen(f"{base}/api/sessions?token={token}", timeout=10) as ok:
        assert ok.status == 200
    assert token not in json.dumps(notebook.attrs), "the token is visible in docker inspect"
    # dask-labextension's sidebar points at this cluster's dashboard through JupyterLab's port
    settings = f"{base}/lab/api/settings/dask-labextension:plugin?token={token}"
    with urllib.request.urlopen(settings, timeout=10) as response:  # overrides = defaults
        defaults = {k: v["default"] for k, v in json.load(response)["schema"]["properties"].items()}
    host = f"{cluster.name}-scheduler" if cluster.spec.backend == "docker" else "scheduler"
    assert defaults["defaultURL"] == f"/proxy/{host}:8787"
    assert defaults["hideClusterManager"] is True
    with urllib.request.urlopen(f"{base}/proxy/{host}:8787/health?token={token}") as proxied:
        assert proxied.read() == b"ok"


def test_status_logs_and_from_name_in_new_processes(cluster):
    report = json.loads(run_cli("status", "--name", cluster.name, "--json").stdout)
    assert report["backend"] == cluster.spec.backend
    assert [w["state"] for w in report["workers"]] == ["running"] * len(cluster.workers)
    assert report["version_mismatch"] == ""
    assert "Scheduler at" in run_cli("logs", "--name", cluster.name).stdout
    worker = sorted(cluster.workers)[0]
    assert "Start worker" in run_cli("logs", worker, "--name", cluster.name).stdout
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import clusterctl; c = clusterctl.from_name({cluster.name!r}); "
            "print(c.scheduler_address); c.close()",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    assert cluster.scheduler_address in out


@pytest.mark.parametrize("backend", BACKENDS)
def test_cli_walk_through_on_the_default_ports(backend, images, docker_engine):
    if not (port_is_free("127.0.0.1", 8786) and port_is_free("127.0.0.1", 8787)):
        pytest.skip("ports 8786/8787 are taken on this machine by something else")
    run_cli("up", "--backend", backend, "--name", "d1", "--workers", "2")
    try:
        run_cli("scale", "4", "--name", "d1")
        report = json.loads(run_cli("status", "--name", "d1", "--json").stdout)
        assert [w["state"] for w in report["workers"]] == ["running"] * 4
        with urllib.request.urlopen("http://127.0.0.1:8787/health", timeout=10) as r:
            assert r.read() == b"ok"
    finally:
        run_cli("down", "--name", "d1")
    assert ours(docker_engine, "d1") == []
    assert not state.cluster_dir("d1").exists()


@pytest.mark.parametrize("backend", BACKENDS)
def test_down_finds_everything_after_the_creating_process_was_killed(
    backend, images, docker_engine
):
    script = (
        "import clusterctl, os; "
        f"clusterctl.up(name='orphan', backend={backend!r}, workers=1, port=0, "
        "dashboard_port=0); os._exit(0)"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=300)
    assert ours(docker_engine, "orphan")
    state.remove("orphan")  # as if the machine had lost it: the engine's labels suffice
    # (its supervisor, a process of this machine, is also listed as a local cluster's rest)
    listing = json.loads(run_cli("list", "--json").stdout)
    (row,) = [c for c in listing if (c["name"], c["backend"]) == ("orphan", backend)]
    assert row["status"] == "running"
    # the client's certificates and the creation time went with the state folder
    assert (row["workers"], row["created"]) == (None, None)
    run_cli("down", "orphan")
    assert ours(docker_engine, "orphan") == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_missing_image_and_taken_port_are_refused_before_anything_starts(
    backend, images, docker_engine, tmp_path
):
    spec = tmp_path / "c.yaml"
    spec.write_text(
        f"backend: {backend}\nscheduler: {{port: 0, dashboard-port: 0}}\n"
        "worker: {image: 'clusterctl-worker:no-such-tag'}\n"
    )
    with pytest.raises(UserInputError, match="clusterctl-worker:no-such-tag"):
        clusterctl.up(spec, name="noimg")
    port = free_port()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port))
        busy.listen()
        with pytest.raises(UserInputError, match=f"port {port} on 127.0.0.1 is already in use"):
            clusterctl.up(name="busy", backend=backend, port=port, dashboard_port=0)
    assert ours(docker_engine, "noimg") == ours(docker_engine, "busy") == []
    assert not state.cluster_dir("noimg").exists() and not state.cluster_dir("busy").exists()


@pytest.mark.fault("destroy died after removing the containers, before the network")
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_cluster_whose_containers_are_gone_is_listed_and_removed(backend, images, docker_engine):
    name = f"rem-{backend}"
    c = clusterctl.up(name=name, backend=backend, workers=1, port=0, dashboard_port=0)
    c.close()
    try:
        with state.locked(name):
            supervisor.kill(name)  # as `down` does first
        label = {"label": f"io.clusterctl.cluster={name}"}
        for container in docker_engine.containers.list(
            ignore_removed=True, all=True, filters=label
        ):
            container.remove(force=True)  # as a destroy that died half-way would leave it
        assert ours(docker_engine, name) == [
            f"{name}_default" if backend == "compose" else f"clusterctl-{name}"
        ]
        listed = json.loads(run_cli("list", "--json").stdout)
        (found,) = [c for c in listed if c["name"] == name]
        assert (found["backend"], found["status"]) == (backend, "broken")
        assert "scheduler container is gone" in found["problem"]
        assert "network" in found["problem"]
        result = run_cli("status", "--name", name, check=False)
        assert result.returncode != 0 and "Traceback" not in result.stderr
        assert f"clusterctl down {name}" in result.stderr
        down = run_cli("down", name)
        assert "is down" in down.stdout
    finally:
        run_cli("down", name, check=False)
    assert ours(docker_engine, name) == []
    assert not state.cluster_dir(name).exists()
    assert name not in run_cli("list").stdout


@pytest.mark.fault("the published port does not answer from this machine")
def test_a_healthy_container_whose_port_does_not_answer_fails_up_within_its_timeout(
    images, docker_engine, tmp_path, monkeypatch
):
    """The engine can't easily be made to publish a port that doesn't reach the container,
    so the probe from this machine is made to fail; the container itself is real and gets
    healthy."""
    from clusterctl import waiting
    from clusterctl.waiting import WaitTimeout

    monkeypatch.setattr(waiting, "answers", lambda url: False)
    spec = tmp_path / "c.yaml"
    spec.write_text("backend: docker\nstart-timeout: 15\nscheduler: {port: 0, dashboard-port: 0}\n")
    started = time.monotonic()
    with pytest.raises(WaitTimeout) as failed:
        clusterctl.up(spec, name="unreach", workers=1)
    assert time.monotonic() - started < 15 + 30  # the timeout, then the clean-up
    message = str(failed.value)
    assert "the scheduler of cluster 'unreach' answering at http://127.0.0.1:" in message
    assert "not within 15 s" in message
    assert "healthy inside" in message  # what is wrong: the port, not the scheduler
    assert ours(docker_engine, "unreach") == []
    assert not state.cluster_dir("unreach").exists()


@pytest.mark.fault("a scheduler container whose spec label is garbled or names another cluster")
@pytest.mark.parametrize(
    ("label", "problem"),
    [
        ("[1", "spec label is unreadable"),
        ("[1]", "spec label is unreadable"),
        (
            json.dumps(build_spec(name="victim", backend="docker").to_dict()),
            "names cluster 'victim'",
        ),
    ],
)
def test_a_damaged_spec_label_is_reported_and_down_removes_it(
    label, problem, images, docker_engine
):
    labels = {
        "io.clusterctl.cluster": "garbled",
        "io.clusterctl.backend": "docker",
        "io.clusterctl.role": "scheduler",
        "io.clusterctl.spec": label,
    }
    docker_engine.containers.run(
        images["scheduler"], ["sleep", "300"], name="garbled-scheduler", labels=labels, detach=True
    )
    try:
        listed = json.loads(run_cli("list", "--json").stdout)
        (found,) = [c for c in listed if c["name"] == "garbled"]
        assert found["status"] == "broken" and problem in found["problem"]
        assert "Traceback" not in run_cli("status", "--name", "garbled", check=False).stderr
        run_cli("down", "garbled")
    finally:
        run_cli("down", "garbled", check=False)
    assert ours(docker_engine, "garbled") == []


def test_a_state_folder_left_without_its_containers_is_listed_and_removed(images):
    spec = build_spec(name="folder-only", backend="compose")
    state.write_json(state.make_cluster_dir("folder-only") / state.SPEC, spec.to_dict())
    listed = json.loads(run_cli("list", "--json").stdout)
    (found,) = [c for c in listed if c["name"] == "folder-only"]
    assert (found["backend"], found["status"]) == ("compose", "broken")
    assert "left: its state" in found["problem"]
    run_cli("down", "folder-only")
    assert not state.cluster_dir("folder-only").exists()


def test_a_gpu_group_asks_the_engine_for_gpus_and_leaves_nothing_where_it_has_none(
    images, docker_engine, monkeypatch, tmp_path
):
    """No GPU here: what is checked is the create call the engine gets (a device request
    for one GPU, the worker offering Dask resource GPU=1), then that the engine's refusal
    to start it ends `up` with a message naming what's missing, and nothing left."""
    import docker.models.containers

    from clusterctl.errors import ClusterctlError

    created: dict[str, dict] = {}
    create = docker.models.containers.ContainerCollection.create

    def recording(self, image, command=None, **kwargs):
        created[kwargs["name"]] = {"command": command, **kwargs}
        return create(self, image, command, **kwargs)

    monkeypatch.setattr(docker.models.containers.ContainerCollection, "create", recording)
    spec = tmp_path / "gpu.yaml"
    spec.write_text("backend: docker\nworkers: {gpu: {count: 1, gpus: 1}}\n")
    with pytest.raises(ClusterctlError) as refused:
        clusterctl.up(spec, name="gpu", port=0, dashboard_port=0)
    assert "starting container gpu-gpu-1 (with GPUs: the engine needs the NVIDIA" in str(
        refused.value
    )
    worker = created["gpu-gpu-1"]
    assert worker["device_requests"] == [{"count": 1, "capabilities": [["gpu"]]}]
    resources = worker["command"].index("--resources")
    assert worker["command"][resources + 1] == "GPU=1"
    assert "device_requests" not in created["gpu-scheduler"]
    assert ours(docker_engine, "gpu") == [] and "gpu" not in state.names()


def test_an_idle_cluster_is_removed_entirely_and_a_client_keeps_it(images, docker_engine, tmp_path):
    """idle-timeout: 30s. While a client is connected (running nothing) the cluster stays
    past its timeout; once the last client leaves, it is gone within a minute: every
    container and network of its label, its state folder, its supervisor."""
    spec = tmp_path / "idle.yaml"
    spec.write_text("backend: docker\nidle-timeout: 30s\nscheduler: {port: 0, dashboard-port: 0}\n")
    run_cli("up", "-f", str(spec), "--name", "idle", "--workers", "1")
    try:
        with clusterctl.connect("idle") as client:
            assert client.submit(sum, [1, 2]).result() == 3
            time.sleep(40)  # past the timeout, with a client connected
            report = json.loads(run_cli("status", "--name", "idle", "--json").stdout)
            assert (report["idle_timeout"], report["idle_left"]) == (30, None), report
        left_at = time.monotonic()
        while ours(docker_engine, "idle") and time.monotonic() - left_at < 75:
            if "idle" in state.names():
                report = run_cli("status", "--name", "idle", "--json", check=False)
                if report.returncode == 0 and json.loads(report.stdout)["idle_left"]:
                    assert 0 < json.loads(report.stdout)["idle_left"] <= 30
            time.sleep(2)
        gone_after = time.monotonic() - left_at
        print(f"idle cluster gone {gone_after:.0f} s after its last client left")
        assert ours(docker_engine, "idle") == [], f"still there after {gone_after:.0f} s"
        assert 30 <= gone_after <= 60, gone_after
        waiting.until(lambda: "idle" not in state.names(), timeout=10, what="its state folder")
    finally:
        run_cli("down", "idle", check=False)


def test_verbose_shows_what_is_asked_of_the_engine(docker_engine):
    listing = run_cli("-v", "list")
    assert "No clusters." in listing.stdout or listing.stdout.startswith("name")
    asked = [line for line in listing.stderr.splitlines() if "/containers/json" in line]
    assert asked and '"label": ["io.clusterctl.backend=docker"' in "\n".join(asked), asked
    assert "Traceback" not in listing.stderr


@pytest.mark.parametrize("backend", BACKENDS)
def test_up_with_3_workers_fits_the_engines_memory(backend, images, docker_engine):
    """memory-limit auto divides the engine's machine among the workers (no container
    limit: each sizes its share of what it sees, the engine's memory)."""
    from dask.utils import format_bytes

    name = f"mem-{backend}"
    run_cli(
        "up",
        "--backend",
        backend,
        "--name",
        name,
        "--workers",
        "3",
        "--port",
        "0",
        "--dashboard-port",
        "0",
    )
    try:
        with clusterctl.connect(name) as client:
            limits = [w["memory_limit"] for w in client.scheduler_info()["workers"].values()]
        machine = docker_engine.info()["MemTotal"]
        assert len(limits) == 3
        assert machine * 0.33 < min(limits) and sum(limits) <= machine
        shown = run_cli("status", "--name", name).stdout
        assert f"3 workers, memory limit per worker {format_bytes(limits[0])}" in shown, shown
    finally:
        run_cli("down", "--name", name)
    assert ours(docker_engine, name) == []
