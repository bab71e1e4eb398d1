"""Our images as a drop-in for the official Dask images (ghcr.io/dask/dask, dask-notebook):
their command names, their environment variables, and their own Compose file."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from distributed import Client

from clusterctl.backends.compose import compose_command
from tests.conftest import wait_healthy

pytestmark = pytest.mark.timeout(1800)
LABELS = {"io.clusterctl.cluster": "test-dropin"}

# dask-docker's docker-compose.yml as it stands upstream (github.com/dask/dask-docker at
# 2b07a68, BSD-3-Clause), written for the official images. The test changes only the
# `image:` lines (ours, by role) and the fixed host ports, which other tests may hold.
OFFICIAL_COMPOSE = """\
version: "3.1"

services:
  scheduler:
    image: ghcr.io/dask/dask:latest
    hostname: scheduler
    ports:
      - "8786:8786"
      - "8787:8787"
    command: ["dask-scheduler"]

  worker:
    image: ghcr.io/dask/dask:latest
    command: ["dask-worker", "tcp://scheduler:8786"]
    # For Docker swarm you can specify multiple workers, this is ignored by `docker-compose up`
    deploy:
      replicas: 2

  notebook:
    image: ghcr.io/dask/dask-notebook:latest
    ports:
      - "8888:8888"
    environment:
      - DASK_SCHEDULER_ADDRESS="tcp://scheduler:8786"
"""


def with_our_images(text: str) -> str:
    """The official file with each service's image replaced by ours for its role, and each
    published port `"N:N"` by `"127.0.0.1::N"` (a free host port, on loopback only)."""
    lines, service = [], None
    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        if line.startswith("  ") and not line.startswith("   ") and stripped.endswith(":"):
            service = stripped[:-1]
        if stripped.startswith("image:"):
            line = line[: line.index("image:")] + f"image: clusterctl-{service}:latest\n"
        elif stripped.startswith('- "') and stripped.count(":") == 1:
            host, container = stripped[3:-1].split(":")
            if host == container:
                line = line[: line.index("-")] + f'- "127.0.0.1::{container}"\n'
        lines.append(line)
    return "".join(lines)


def run_once(engine, image: str, command: list[str] | None, **kwargs) -> tuple[int, str]:
    """Run a container to its end: its exit status and its output (stdout and stderr)."""
    container = engine.containers.run(image, command, detach=True, labels=LABELS, **kwargs)
    try:
        status = container.wait(timeout=120)["StatusCode"]
        return status, container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)


def http_get(url: str, timeout: float = 90) -> bytes:
    """The body of a 200 answer from ``url``, retried until it comes or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                assert answer.status == 200
                return answer.read()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


# --- the official command names -----------------------------------------------------------

HELP = [
    ("scheduler", ["dask-scheduler", "--help"], "Usage: dask scheduler"),
    ("scheduler", ["dask", "scheduler", "--help"], "Usage: dask scheduler"),
    ("worker", ["dask-worker", "--help"], "Usage: dask worker"),
    ("worker", ["dask", "worker", "--help"], "Usage: dask worker"),
    # dask-docker's one image serves both roles: so do ours (the command decides)
    ("worker", ["dask-scheduler", "--help"], "Usage: dask scheduler"),
    ("scheduler", ["dask-worker", "--help"], "Usage: dask worker"),
]


@pytest.mark.parametrize(
    ("role", "command", "usage"), HELP, ids=[f"{r}-{'_'.join(c)}" for r, c, _ in HELP]
)
def test_official_command_names_answer_help(images, docker_engine, role, command, usage):
    status, output = run_once(docker_engine, f"clusterctl-{role}:latest", command)
    assert status == 0, output
    assert usage in output, output


def test_dask_scheduler_in_the_worker_image_is_a_healthy_scheduler(images, docker_engine):
    """The HEALTHCHECK probes the role the command asked for, not the image's: the worker
    image running `dask-scheduler` (as dask-docker's one image does) turns healthy."""
    container = docker_engine.containers.run(
        "clusterctl-worker:latest", ["dask-scheduler"], detach=True, labels=LABELS
    )
    try:
        wait_healthy(container)
        top = " ".join(" ".join(p) for p in container.top()["Processes"])
        assert "dask scheduler --dashboard-address :8787" in top, top
    finally:
        container.remove(force=True)


def test_a_commands_own_nanny_preload_runs_beside_ours(images, docker_engine):
    """`dask-worker --preload-nanny X` (a Helm value or Compose command may add one) keeps
    X and the preload that gives forked workers their signal handling."""
    mine = "import logging; logging.getLogger('distributed').warning('MY PRELOAD RAN')"
    command = ["dask-worker", "tcp://127.0.0.1:9", "--death-timeout", "2"]
    status, output = run_once(docker_engine, images["worker"], [*command, "--preload-nanny", mine])
    assert "MY PRELOAD RAN" in output, output
    assert "Import preload module: clusterctl.forking" in output, output
    assert status != 0, output  # no scheduler answered within its death-timeout


# --- the official environment variables we can't honour ------------------------------------

SECRET = "https://user:s3cr3t-t0ken@conda.example.invalid/channel"


@pytest.mark.bad_input
@pytest.mark.parametrize("role", ["scheduler", "worker", "notebook"])
@pytest.mark.parametrize("variable", ["EXTRA_CONDA_PACKAGES", "EXTRA_APT_PACKAGES"])
def test_extra_conda_and_apt_packages_stop_the_container(images, docker_engine, role, variable):
    """Not ignored: the container stops with status 3 and a message that names the variable
    and what to use instead, and never shows the value (it may hold a password)."""
    value = f"-c {SECRET} numba" if variable == "EXTRA_CONDA_PACKAGES" else f"libgl1 {SECRET}"
    status, output = run_once(
        docker_engine, f"clusterctl-{role}:latest", None, environment={variable: value}
    )
    assert status == 3, output
    assert f"{variable} is set" in output
    assert f"{variable}: stopping (exit status 3)" in output
    if variable == "EXTRA_CONDA_PACKAGES":
        assert "EXTRA_PIP_PACKAGES" in output
        assert "clusterctl image build --extra" in output and "--sync" in output
    else:
        assert "clusterctl image build --base" in output
    assert "s3cr3t" not in output and "numba" not in output and "libgl1" not in output


@pytest.mark.bad_input
def test_both_refused_variables_are_named_even_before_help(images, docker_engine):
    status, output = run_once(
        docker_engine,
        "clusterctl-worker:latest",
        ["dask-worker", "--help"],
        environment={"EXTRA_CONDA_PACKAGES": "dask", "EXTRA_APT_PACKAGES": "git"},
    )
    assert status == 3, output
    assert "EXTRA_CONDA_PACKAGES is set" in output and "EXTRA_APT_PACKAGES is set" in output
    assert "Usage:" not in output


def test_empty_extra_conda_and_apt_packages_are_no_request(images, docker_engine):
    """Compose files often carry them empty (`EXTRA_CONDA_PACKAGES=`): nothing is asked for."""
    status, output = run_once(
        docker_engine,
        "clusterctl-worker:latest",
        ["dask-worker", "--help"],
        environment={"EXTRA_CONDA_PACKAGES": "", "EXTRA_APT_PACKAGES": " "},
    )
    assert status == 0, output
    assert "Usage: dask worker" in output


# --- dask-docker's own Compose file ---------------------------------------------------------


def test_the_substitution_changes_only_images_and_host_ports():
    ours = with_our_images(OFFICIAL_COMPOSE).splitlines()
    official = OFFICIAL_COMPOSE.splitlines()
    assert len(ours) == len(official)
    changed = [(a.strip(), b.strip()) for a, b in zip(official, ours, strict=True) if a != b]
    assert changed == [
        ("image: ghcr.io/dask/dask:latest", "image: clusterctl-scheduler:latest"),
        ('- "8786:8786"', '- "127.0.0.1::8786"'),
        ('- "8787:8787"', '- "127.0.0.1::8787"'),
        ("image: ghcr.io/dask/dask:latest", "image: clusterctl-worker:latest"),
        ("image: ghcr.io/dask/dask-notebook:latest", "image: clusterctl-notebook:latest"),
        ('- "8888:8888"', '- "127.0.0.1::8888"'),
    ]


class Project:
    """A Compose project under a name of its own; ``down`` removes all of it."""

    def __init__(self, file: Path) -> None:
        self.name = f"clusterctl-dropin-{uuid.uuid4().hex[:8]}"
        self.base = [*compose_command(), "--project-name", self.name, "--file", str(file)]

    def run(self, *args: str, timeout: float = 300) -> str:
        done = subprocess.run([*self.base, *args], capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, f"{' '.join(args)}: {done.stdout}\n{done.stderr}"
        return done.stdout

    def port(self, service: str, port: int) -> str:
        """host:port where this machine reaches ``service``'s published ``port``."""
        return self.run("port", service, str(port)).strip()


@pytest.fixture
def official_compose(images, docker_engine, tmp_path) -> Iterator[Project]:
    file = tmp_path / "docker-compose.yml"
    file.write_text(with_our_images(OFFICIAL_COMPOSE))
    project = Project(file)
    yield project
    label = {"label": f"com.docker.compose.project={project.name}"}
    try:
        for container in docker_engine.containers.list(
            ignore_removed=True, all=True, filters={"label": "io.clusterctl.cluster=test-dropin"}
        ):
            container.remove(force=True)
    finally:
        project.run("down", "--volumes", "--timeout", "5")
    assert docker_engine.containers.list(ignore_removed=True, all=True, filters=label) == []
    assert docker_engine.networks.list(filters=label) == []
    assert docker_engine.volumes.list(filters=label) == []


def test_dask_dockers_compose_file_runs_our_images(official_compose, docker_engine):
    """dask-docker's docker-compose.yml, images substituted: two workers compute, the
    dashboard and the notebook answer, and the notebook's Client() finds the scheduler
    from DASK_SCHEDULER_ADDRESS written with quotes inside the value, as there."""
    project = official_compose
    project.run("up", "-d", "--scale", "worker=2")
    # the scheduler listens once its dashboard (our default for `dask-scheduler`) answers
    health = f"http://{project.port('scheduler', 8787)}/health"
    assert http_get(health) == b"ok"

    with Client(f"tcp://{project.port('scheduler', 8786)}", timeout=30) as client:
        client.wait_for_workers(2, timeout=120)
        assert client.submit(sum, range(10)).result(timeout=60) == 45
        assert sum(client.gather(client.map(lambda x: x * x, range(100)))) == 328350
        # our defaults applied to `dask-worker ADDRESS`: named after the container
        workers = client.scheduler_info()["workers"].values()
        assert sorted(w["name"] for w in workers) == sorted(
            client.run(lambda: Path("/etc/hostname").read_text().strip()).values()
        )

        # `dask worker` with no address, and the address in quotes, as the file writes it
        network = f"{project.name}_default"
        docker_engine.containers.run(
            "clusterctl-worker:latest",
            ["dask", "worker"],
            detach=True,
            labels=LABELS,
            network=network,
            environment={"DASK_SCHEDULER_ADDRESS": '"tcp://scheduler:8786"'},
        )
        client.wait_for_workers(3, timeout=120)

    api = json.loads(http_get(f"http://{project.port('notebook', 8888)}/api"))
    assert "version" in api

    # The notebook's own example (dask-docker's README): Client() with no address
    script = (
        "from dask.distributed import Client\n"
        "with Client(timeout=30) as c:\n"
        "    print(len(c.scheduler_info()['workers']))\n"
    )
    out = project.run("exec", "-T", "notebook", "python", "-c", script, timeout=120)
    assert out.strip().splitlines()[-1] == "3", out

    for service in ("scheduler", "worker", "notebook"):
        for cid in project.run("ps", "-q", service).split():
            wait_healthy(docker_engine.containers.get(cid))
