"""The scheduler, worker and notebook images, built offline, on the real Docker Engine."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
from distributed import Client
from distributed.versions import VersionMismatchWarning

from clusterctl.engine import image_exists
from clusterctl.images import (
    ROLES,
    Lock,
    check_mirror,
    check_release,
    load_images,
    package_files,
    save_images,
)
from clusterctl.render.kubernetes import render_operator
from clusterctl.spec import load_spec
from tests.conftest import free_port, run_cli, wait_healthy

# The first test builds the images (minutes): a timeout to match.
pytestmark = pytest.mark.timeout(1800)
LABELS = {"io.clusterctl.cluster": "test-images"}


@pytest.fixture
def network(docker_engine) -> Iterator[str]:
    net = docker_engine.networks.create("clusterctl-test-images", labels=LABELS)
    yield net.name
    for container in docker_engine.containers.list(
        ignore_removed=True, all=True, filters={"label": "io.clusterctl.cluster=test-images"}
    ):
        container.remove(force=True)
    net.remove()


def run(docker_engine, image: str, network: str, **kwargs):
    return docker_engine.containers.run(
        image, detach=True, network=network, labels=LABELS, **kwargs
    )


REVISION, SOURCE = "org.opencontainers.image.revision", "org.opencontainers.image.source"


def test_images_carry_the_lock_of_this_client(images, docker_engine):
    git_checkout = (Path(__file__).parent.parent / ".git").exists()
    lock = Lock.of_this_client()
    for role in ROLES:
        labels = docker_engine.images.get(images[role]).labels
        assert labels["io.clusterctl.lock"] == lock.label()
        assert labels["org.opencontainers.image.version"]
        assert labels["org.opencontainers.image.licenses"] == "BSD-3-Clause"
        assert labels["org.opencontainers.image.base.name"]
        created = labels["org.opencontainers.image.created"]
        assert datetime.fromisoformat(created) <= datetime.now(timezone.utc)
        if git_checkout:  # a clean clone's commit, or that commit with changes
            assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", labels[REVISION]), labels[REVISION]
        # never a local path: a URL, or left out when there is none to give
        assert "://" in labels.get(SOURCE, "://"), labels[SOURCE]
    lock_file = docker_engine.containers.run(
        images["worker"], ["cat", "/opt/clusterctl/lock.txt"], remove=True
    ).decode()
    assert f"dask=={lock.packages['dask']}" in lock_file.splitlines()
    assert f"distributed=={lock.packages['distributed']}" in lock_file.splitlines()


@pytest.mark.parametrize("role", ROLES)
def test_every_role_runs_as_a_non_root_user_in_group_zero(images, docker_engine, role):
    out = docker_engine.containers.run(images[role], ["sh", "-c", "id -u; id -g"], remove=True)
    uid, gid = out.decode().split()
    assert uid != "0"
    assert gid == "0"  # OpenShift-style: group 0 owns the writable paths


def test_scheduler_and_worker_are_healthy_and_match_the_client(images, docker_engine, network):
    port, dash = free_port(), free_port()
    scheduler = run(
        docker_engine,
        images["scheduler"],
        network,
        name="ctl-img-scheduler",
        hostname="scheduler",
        ports={"8786/tcp": ("127.0.0.1", port), "8787/tcp": ("127.0.0.1", dash)},
    )
    worker = run(
        docker_engine,
        images["worker"],
        network,
        name="ctl-img-worker",
        environment={"DASK_SCHEDULER_ADDRESS": "tcp://ctl-img-scheduler:8786"},
        nano_cpus=1_000_000_000,
        mem_limit="1g",
    )
    wait_healthy(scheduler)
    wait_healthy(worker)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Client(f"tcp://127.0.0.1:{port}", timeout=30) as client:
            client.wait_for_workers(1, timeout=60)
            client.get_versions(check=True)  # raises on a mismatch Dask cares about
            assert client.submit(sum, [1, 2, 3]).result() == 6
            (info,) = client.scheduler_info()["workers"].values()
    assert not [w for w in caught if issubclass(w.category, VersionMismatchWarning)]
    assert info["nthreads"] == 1, "the worker should size itself from its CPU limit"
    assert info["memory_limit"] == 2**30, "...and from its memory limit"
    with urllib.request.urlopen(f"http://127.0.0.1:{dash}/health", timeout=10) as r:
        assert r.read() == b"ok"
    with pytest.raises(urllib.error.HTTPError, match="404"):  # no route that changes things
        urllib.request.urlopen(f"http://127.0.0.1:{dash}/api/v1", timeout=10)
    with urllib.request.urlopen(f"http://127.0.0.1:{dash}/metrics", timeout=10) as r:
        assert "dask_scheduler_workers" in r.read().decode()  # Prometheus' text format
    code, out = worker.exec_run(
        [
            "python",
            "-c",
            "import urllib.request as u; "
            "print(u.urlopen('http://127.0.0.1:8788/metrics').read().decode())",
        ]
    )
    assert code == 0 and "dask_worker_threads" in out.decode(), out.decode()[-500:]


def test_the_operators_scheduler_serves_the_http_api(images, docker_engine, network):
    """The DaskCluster's scheduler turns on the API the dask-kubernetes operator retires
    workers by, with the environment variable the rendering gives it."""
    (cluster,) = [
        d
        for d in render_operator(load_spec(overrides={"backend": "kubernetes"}))
        if d["kind"] == "DaskCluster"
    ]
    (container,) = cluster["spec"]["scheduler"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    dash = free_port()
    scheduler = run(
        docker_engine,
        images["scheduler"],
        network,
        name="ctl-img-operator",
        environment=env,
        ports={"8787/tcp": ("127.0.0.1", dash)},
    )
    wait_healthy(scheduler)
    with urllib.request.urlopen(f"http://127.0.0.1:{dash}/api/v1", timeout=10) as r:
        assert r.read() == b"API V1"


def test_notebook_image_needs_its_token(images, docker_engine, network):
    port = free_port()
    notebook = run(
        docker_engine,
        images["notebook"],
        network,
        name="ctl-img-notebook",
        environment={"JUPYTER_TOKEN": "secret-token-123"},
        ports={"8888/tcp": ("127.0.0.1", port)},
    )
    wait_healthy(notebook)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/api/sessions", timeout=10)
    assert refused.value.code == 403
    url = f"http://127.0.0.1:{port}/api/sessions?token=secret-token-123"
    with urllib.request.urlopen(url, timeout=10) as ok:
        assert ok.status == 200
    code, out = notebook.exec_run(
        ["python", "-c", "import clusterctl, dask_labextension; print(clusterctl.__version__)"]
    )
    assert code == 0, out


def test_extra_pip_packages_install_from_a_mounted_wheelhouse(images, docker_engine, tmp_path):
    source = tmp_path / "src"
    (source / "tinypkg").mkdir(parents=True)
    (source / "tinypkg" / "__init__.py").write_text("ANSWER = 42\n")
    (source / "pyproject.toml").write_text(
        '[project]\nname = "tinypkg"\nversion = "1.0"\n'
        '[build-system]\nrequires = ["setuptools>=64"]\nbuild-backend = "setuptools.build_meta"\n'
    )
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(wheels),
            str(source),
        ],
        check=True,
    )
    # A file the shell would glob `tinypkg[e]` into, in the folder the entrypoint runs in:
    # the requirement must reach pip as written.
    (wheels / "tinypkge").write_text("")
    wheels.chmod(0o755)
    out = docker_engine.containers.run(
        images["worker"],
        ["python", "-c", "import tinypkg; print(tinypkg.ANSWER)"],
        environment={"EXTRA_PIP_PACKAGES": "tinypkg[e]", "EXTRA_PIP_FIND_LINKS": "/wheels"},
        volumes={str(wheels): {"bind": "/wheels", "mode": "ro"}},
        working_dir="/wheels",
        remove=True,
        user="123456:0",  # an OpenShift-style random uid in group 0 can still install
    )
    assert out.decode().strip().endswith("42")


def test_failing_extra_pip_packages_stop_the_container_and_never_show_the_value(
    images, docker_engine
):
    secret = "s3cret-Pa55"  # an index URL's password: never in the log
    container = docker_engine.containers.run(
        images["worker"],
        ["worker"],
        detach=True,
        labels=LABELS,
        environment={
            "EXTRA_PIP_PACKAGES": f"--extra-index-url https://me:{secret}@pypi.invalid/simple "
            "no-such-package-clusterctl",
            "EXTRA_PIP_FIND_LINKS": "/tmp",
        },
    )
    try:
        status = container.wait(timeout=60)["StatusCode"]
        logs = container.logs().decode()
    finally:
        container.remove(force=True)
    assert status == 3
    assert "EXTRA_PIP_PACKAGES: the install failed" in logs
    assert "no-such-package-clusterctl" in logs  # pip says what it could not find...
    assert secret not in logs  # ...and the entrypoint never echoes the value


@pytest.mark.bad_input
@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--release", "bookworm\n"),
        ("--release", "bookworm --no-check-gpg"),
        ("--release", 'x" LABEL evil="1'),
        ("--release", "../../etc"),
        ("--release", "Bookworm"),
        ("--release", "b" * 200),
        ("--mirror", "http://deb.debian.org/debian --keyring=/tmp/k"),
        ("--mirror", "ftp://deb.debian.org/debian"),
        ("--mirror", "http://example.org/'quoted'"),
        ("--mirror", "/srv/mirror"),
    ],
)
def test_image_base_refuses_a_bad_release_or_mirror(flag, value):
    result = run_cli("image", "base", flag, value, check=False, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith(f"Error: {flag}: must be"), result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr) < 400  # a long value is cut


def test_image_base_accepts_debian_suites_and_mirrors():
    for release in ("bookworm", "trixie", "stable", "oldstable", "sid", "bookworm-backports"):
        check_release(release)
    for mirror in (
        "http://deb.debian.org/debian",
        "https://mirror.example/debian/",
        "file:///srv/debian",
    ):
        check_mirror(mirror)


def git(folder: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(folder), *args], check=True, capture_output=True)


def test_only_tracked_package_files_go_into_the_image(tmp_path):
    checkout = tmp_path / "checkout"
    package = checkout / "clusterctl"
    (package / "notebooks" / "sub").mkdir(parents=True)
    for name in ("__init__.py", "notebooks/a.ipynb", "notebooks/sub/b.ipynb", "notebooks/d.csv"):
        (package / name).write_text("{}")
    git(checkout, "init", "-q")
    git(checkout, "add", "clusterctl")
    for name in ("notebooks/untracked.ipynb", ".env", "notebooks/secrets.txt"):  # left behind
        (package / name).write_text("token=abc")
    (package / "notebooks" / "link.ipynb").symlink_to("/etc/passwd")
    (package / "new.py").write_text("")  # a module not added yet: code goes in regardless
    tracked = ["__init__.py", "notebooks/a.ipynb", "notebooks/d.csv", "notebooks/sub/b.ipynb"]
    assert [str(p) for p in package_files(package)] == sorted([*tracked, "new.py"])
    tracked.append("new.py")

    # An installed wheel: not in a git checkout, so every file but hidden ones and caches.
    installed = tmp_path / "site-packages" / "clusterctl"
    shutil.copytree(package, installed, symlinks=True)
    (installed / "notebooks" / ".ipynb_checkpoints").mkdir()
    (installed / "notebooks" / ".ipynb_checkpoints" / "a-checkpoint.ipynb").write_text("{}")
    (installed / "__pycache__").mkdir()
    (installed / "__pycache__" / "x.pyc").write_text("")
    expected = [*tracked, "notebooks/secrets.txt", "notebooks/untracked.ipynb"]
    assert [str(p) for p in package_files(installed)] == sorted(expected)
    assert package_files(tmp_path / "nothing") == []


def test_save_remove_load_round_trip(images, docker_engine, tmp_path: Path):
    archive = tmp_path / "images.tar.gz"
    ids = {name: docker_engine.images.get(name).id for name in images.values()}
    assert save_images(archive, images.values()) == list(images.values())
    assert archive.read_bytes()[:2] == b"\x1f\x8b"  # gzip; a name ending in .tar: plain
    for name in images.values():
        docker_engine.images.remove(name)
        repo = name.split(":")[0]
        if image_exists(docker_engine, f"{repo}:latest"):
            docker_engine.images.remove(f"{repo}:latest")
        assert not image_exists(docker_engine, name)
    loaded = load_images(archive)
    assert sorted(loaded) == sorted(images.values())
    for name, image_id in ids.items():
        assert docker_engine.images.get(name).id == image_id
        docker_engine.images.get(name).tag(name.split(":")[0], "latest")
    out = docker_engine.containers.run(images["worker"], ["id", "-u"], remove=True)
    assert out.decode().strip() == "1000"


class _Builds:
    """An engine API whose builds answer with the given chunk lists, one per build."""

    def __init__(self, *answers: list[dict]):
        self.answers = list(answers)
        self.calls = 0

    def build(self, **kwargs):
        self.calls += 1
        return iter(self.answers.pop(0))


def test_a_build_the_storage_driver_broke_mid_copy_is_retried_once_and_no_more(tmp_path):
    """An engine error no real engine can be made to produce on demand (seen once from
    fuse-overlayfs), so a stand-in API answers the builds."""
    from types import SimpleNamespace

    from clusterctl.errors import ClusterctlError
    from clusterctl.images import _build

    lost = {"error": "failed to copy files: lchown /x/merged/opt/venv/a.js: no such file"}
    done = {"stream": "Successfully built 123\n"}
    api = _Builds([lost], [done])
    said: list[str] = []
    _build(SimpleNamespace(api=api), tmp_path, said.append, tag="t:1")
    assert api.calls == 2 and any("once more" in s for s in said) and said[-1].startswith("Succ")
    api = _Builds([lost], [lost])
    with pytest.raises(ClusterctlError, match="building t:1 failed: failed to copy files"):
        _build(SimpleNamespace(api=api), tmp_path, said.append, tag="t:1")
    api = _Builds([{"error": "no such base image"}], [done])
    with pytest.raises(ClusterctlError, match="no such base image"):
        _build(SimpleNamespace(api=api), tmp_path, said.append, tag="t:1")
    assert api.calls == 1, "only the storage driver's mid-copy failure is retried"
