"""The docker backend on Podman's Docker-compatible API, where there is no Docker daemon
(HPC login nodes, rootless desktops): `podman system service` on a socket of this test's
own, the images copied over from the Docker Engine (no registry), and the CLI pointed at
it with DOCKER_HOST, as docs/backends.md tells users to."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import clusterctl
from tests.conftest import run_cli

pytestmark = [
    pytest.mark.podman,
    pytest.mark.skipif(
        shutil.which("podman") is None,
        reason="NO PODMAN: Debian's podman is not installed (scripts/test installs it as root); "
        "the docker backend on Podman is SKIPPED, not passed",
    ),
]

LABEL = "io.clusterctl.cluster=onpodman"


def podman(*args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["podman", *args], capture_output=True, text=True, check=check, timeout=600, **kwargs
    )


@pytest.fixture(scope="module")
def podman_host(images, docker_engine, tmp_path_factory) -> Iterator[str]:
    """DOCKER_HOST for a Podman API service holding clusterctl's scheduler and worker
    images; afterwards, what was copied in is removed and the service stopped."""
    folder = tmp_path_factory.mktemp("podman")
    socket = folder / "podman.sock"
    # docs/backends.md's settings for hosts like this one (a container, whose hard limit on
    # open files is below Podman's default for its containers): runc, lower ulimits
    limits = [
        f"{name}={n}:{n}"
        for name, kind in (("nofile", resource.RLIMIT_NOFILE), ("nproc", resource.RLIMIT_NPROC))
        if (n := _below(resource.getrlimit(kind)[1], 20000))
    ]
    conf = folder / "containers.conf"
    conf.write_text(
        f'[containers]\ndefault_ulimits = {json.dumps(limits)}\n[engine]\nruntime = "runc"\n'
    )
    service = subprocess.Popen(
        ["podman", "system", "service", "--time=0", f"unix://{socket}"],
        stdout=subprocess.DEVNULL,
        stderr=(folder / "service.log").open("w"),
        env={**os.environ, "CONTAINERS_CONF": str(conf)},
    )
    loaded = []
    try:
        deadline = time.monotonic() + 30
        while not socket.exists():
            assert service.poll() is None, (folder / "service.log").read_text()
            assert time.monotonic() < deadline, "podman's API socket never appeared"
            time.sleep(0.2)
        for role in ("scheduler", "worker"):
            archive = folder / f"{role}.tar"
            with archive.open("wb") as out:
                for chunk in docker_engine.images.get(images[role]).save(named=True):
                    out.write(chunk)
            podman("load", "--input", str(archive))
            archive.unlink()
            loaded.append(images[role])
        yield f"unix://{socket}"
    finally:
        leftovers = podman("ps", "--all", "--quiet", "--filter", f"label={LABEL}", check=False)
        for container in leftovers.stdout.split():  # only after a failed test: ours, by label
            podman("rm", "--force", container, check=False)
        for image in loaded:
            podman("rmi", "--force", image, check=False)
        service.terminate()
        service.wait(30)


def _below(hard: int, most: int) -> int:
    return most if hard == resource.RLIM_INFINITY else min(hard, most)


def ours_on_podman() -> list[str]:
    containers = podman("ps", "--all", "--format", "{{.Names}}", "--filter", f"label={LABEL}")
    networks = podman("network", "ls", "--format", "{{.Name}}", "--filter", f"label={LABEL}")
    return containers.stdout.split() + networks.stdout.split()


def test_the_docker_backend_runs_on_podman(podman_host, monkeypatch):
    version = podman("version", "--format", "{{.Client.Version}}").stdout.strip()
    print(f"Podman {version}, API at {podman_host}")
    env = {"DOCKER_HOST": podman_host}
    up = ["up", "--backend", "docker", "--name", "onpodman", "--workers", "2"]
    run_cli(*up, "--port", "0", "--dashboard-port", "0", env=env, timeout=600)
    try:
        report = json.loads(run_cli("status", "--name", "onpodman", "--json", env=env).stdout)
        assert [w["state"] for w in report["workers"]] == ["running"] * 2, report
        monkeypatch.setenv("DOCKER_HOST", podman_host)
        with clusterctl.connect("onpodman") as client:
            assert client.submit(sum, [1, 2, 3]).result() == 6
            assert len(client.scheduler_info()["workers"]) == 2
        run_cli("scale", "1", "--name", "onpodman", env=env)
        report = json.loads(run_cli("status", "--name", "onpodman", "--json", env=env).stdout)
        assert len(report["workers"]) == 1
    finally:
        down = run_cli("down", "onpodman", env=env, check=False)
    assert down.returncode == 0, down.stderr
    assert ours_on_podman() == []
    assert not Path(os.environ["XDG_STATE_HOME"], "clusterctl", "onpodman").exists()
