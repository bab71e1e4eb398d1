"""Shared fixtures: an isolated state folder per session, free ports, and a leak check.

Every cluster a test starts lives under this session's own XDG_STATE_HOME, and every
process clusterctl starts inherits it, so at the end we can prove that nothing of ours
is left: no state folder and no process.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest


def our_processes(state_home: str) -> list[psutil.Process]:
    """Live processes started with this session's XDG_STATE_HOME (i.e. by clusterctl)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.pid == os.getpid() or proc.status() == psutil.STATUS_ZOMBIE:
                continue
            env = proc.environ()
            if env.get("XDG_STATE_HOME") == state_home and "CLUSTERCTL_CLUSTER" in env:
                found.append(proc)
        except psutil.Error:
            continue
    return found


@pytest.fixture(scope="session", autouse=True)
def state_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Point clusterctl at a fresh state folder; afterwards, fail if anything leaked."""
    home = tmp_path_factory.mktemp("state")
    old = os.environ.get("XDG_STATE_HOME")
    os.environ["XDG_STATE_HOME"] = str(home)
    yield home
    deadline = time.monotonic() + 15
    while our_processes(str(home)) and time.monotonic() < deadline:
        time.sleep(0.2)
    leaked = our_processes(str(home))
    # Removal records (`list --all`) are kept on purpose: no cluster's state.
    left = sorted(p.name for p in (home / "clusterctl").glob("*") if p.name != ".removed")
    for proc in leaked:  # clean up for the next run, then fail loudly
        proc.kill()
    if old is None:
        os.environ.pop("XDG_STATE_HOME", None)
    else:
        os.environ["XDG_STATE_HOME"] = old
    docker_left = docker_leftovers() + nodes_left()
    SUMMARY["left"] = len(leaked) + len(left) + len(docker_left)
    assert not leaked, f"processes left behind: {[p.cmdline() for p in leaked]}"
    assert not left, f"cluster state left behind: {left}"
    assert not docker_left, f"engine objects left behind: {docker_left}"


# The fault suite's figures: faults injected (tests marked `fault`) and survived (passed),
# bad inputs tried (tests marked `bad_input`) and rejected, and our objects left over.
SUMMARY: dict[str, int] = {"faults": 0, "survived": 0, "bad": 0, "rejected": 0, "left": -1}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    # A test whose setup failed (its cluster never came up) counts as not survived.
    if report.when != "call" and not (report.when == "setup" and report.failed):
        return
    if item.get_closest_marker("fault"):
        SUMMARY["faults"] += 1
        SUMMARY["survived"] += report.passed
    if item.get_closest_marker("bad_input"):
        SUMMARY["bad"] += 1
        SUMMARY["rejected"] += report.passed


# What a test needs, as markers (pyproject.toml describes each): `scripts/test --quick`
# leaves out those that need the engine, images, a browser or a benchmark run (and the slow
# ones); `scripts/test -m docker` runs only those that need the engine. A test gets the
# markers of the fixtures it uses (directly or through other fixtures); tests that start
# clusters without such a fixture carry their markers themselves, or in their module.
NEEDS_BY_FIXTURE = {
    "bystander": "local",  # a local cluster for bad inputs to leave alone
    "docker_engine": "docker",
    "images": "images",
    "swarm": "swarm",  # tests/test_swarm.py: the engine in swarm mode
    "nodes": "multinode",  # tests/test_multinode.py: scripts/nodes up 3
    "browser": "browser",  # tests/test_browser.py: headless chromium
}
# A need that implies another: the images, swarm mode and the nodes are the engine's.
IMPLIED = {"images": "docker", "swarm": "docker", "multinode": "docker"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        used = getattr(item, "fixturenames", ())
        needs = {need for fixture, need in NEEDS_BY_FIXTURE.items() if fixture in used}
        needs |= {m.name for m in item.iter_markers() if m.name in IMPLIED}
        needs |= {IMPLIED[n] for n in needs if n in IMPLIED}
        for need in sorted(needs):
            if not item.get_closest_marker(need):
                item.add_marker(need)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    left = "not checked" if SUMMARY["left"] < 0 else SUMMARY["left"]
    terminalreporter.write_line(
        f"fault suite: {SUMMARY['survived']} of {SUMMARY['faults']} faults survived; "
        f"{SUMMARY['rejected']} of {SUMMARY['bad']} bad inputs cleanly rejected; "
        f"objects of ours left after the session: {left}"
    )


def docker_leftovers() -> list[str]:
    """Containers, networks and volumes of ours (by label) the engine still holds."""
    try:
        import docker

        client = docker.from_env()
        client.ping()
    except Exception:
        return []
    label = {"label": "io.clusterctl.cluster"}
    role = {"label": "io.clusterctl.role"}  # also containers of plain-Compose projects
    found = [
        f"container {c.name}"
        for c in client.containers.list(ignore_removed=True, all=True, filters=role)
    ]
    found += [f"network {n.name}" for n in client.networks.list(filters=label)]
    found += [f"volume {v.name}" for v in client.volumes.list(filters=label)]
    return found


def nodes_left() -> list[str]:
    """What scripts/nodes makes, if any is left: namespaces, the bridge, engines."""
    if shutil.which("ip") is None:
        return []  # no iproute2: scripts/nodes can't have run
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    found = [f"netns {line.split()[0]}" for line in namespaces.splitlines() if "clnode" in line]
    if subprocess.run(["ip", "link", "show", "clnodes-br"], capture_output=True).returncode == 0:
        found.append("bridge clnodes-br")
    engines = subprocess.run(["pgrep", "-f", "dockerd.*clusterctl-nodes"], capture_output=True)
    return found + [f"dockerd {pid}" for pid in engines.stdout.split()]


@pytest.fixture(scope="session")
def docker_engine():
    """The docker SDK client; without a reachable engine, docker tests skip, loudly."""
    try:
        import docker

        client = docker.from_env()
        client.ping()
    except Exception as exc:
        message = f"NO DOCKER ENGINE: docker tests are SKIPPED, not passed ({exc})"
        print(f"\n{'!' * 80}\n{message}\n{'!' * 80}", file=sys.stderr)
        pytest.skip(message)
    return client


@pytest.fixture(scope="session")
def images(docker_engine) -> dict[str, str]:
    """The three images, built once per session from nothing: Debian base, wheelhouse,
    runtimes, roles. CLUSTERCTL_TEST_REUSE_IMAGES=1 reuses what the engine has (faster
    local runs); CI builds from nothing."""
    from clusterctl.images import build_images

    def log(line: str) -> None:
        print(line, file=sys.stderr)

    if os.environ.get("CLUSTERCTL_TEST_REUSE_IMAGES") == "1":
        return build_images(progress=log)
    if os.geteuid() != 0:
        pytest.skip(
            "building the Debian base image needs root (debootstrap); "
            "set CLUSTERCTL_TEST_REUSE_IMAGES=1 to use images built before"
        )
    return build_images(base="debian", fresh=True, progress=log)


class Bystander:
    """A running cluster that bad input aimed at other clusters must leave untouched."""

    def __init__(self) -> None:
        self.start()

    def start(self) -> None:
        from distributed import Client

        import clusterctl

        self.cluster = clusterctl.up(name="bystander", workers=1, port=0, dashboard_port=0)
        self.name = self.cluster.name
        self.members = self._members()
        self.client = Client(self.cluster)

    def restart(self) -> None:
        """Start it again, after a test that removed every cluster on purpose."""
        self.client.close()
        self.cluster.close()
        self.start()

    def _members(self) -> list[tuple[str, str]]:
        return sorted((m.name, m.detail) for m in self.cluster.backend.members() if m.running)

    def assert_untouched(self) -> None:
        """Same processes as at the start, every one running, and it still computes."""
        from clusterctl import state

        assert self.name in state.names(), "the bystander's state folder is gone"
        assert self._members() == self.members, "the bystander's processes changed"
        assert self.client.submit(sum, [1, 1], pure=False).result(timeout=30) == 2

    def close(self) -> None:
        self.client.close()
        self.cluster.shutdown()


@pytest.fixture(scope="module")
def bystander() -> Iterator[Bystander]:
    """A running local cluster for this module's bad inputs to leave alone."""
    b = Bystander()
    yield b
    b.close()


def assert_client_refused(address: str) -> None:
    """A plain Client (no certificates) cannot use the cluster at ``address``.

    Tried in a separate process: a refused Client can leave its event-loop thread behind,
    which would disturb the Clients this test process makes afterwards.
    """
    script = (
        "import sys\nfrom distributed import Client\n"
        "try:\n    Client(sys.argv[1], timeout=5).submit(int, 1).result(timeout=5)\n"
        "except Exception as exc:\n    print('refused:', type(exc).__name__); sys.exit(3)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, address], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 3, f"a client without certificates got in:\n{result.stdout}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def cli_command(*args: str) -> list[str]:
    """The command line of the real `clusterctl` console script."""
    exe = Path(sys.executable).with_name("clusterctl")
    return [
        str(exe) if exe.exists() else sys.executable,
        *([] if exe.exists() else ["-m", "clusterctl"]),
        *args,
    ]


# `up` flags for a scheduler on free ports (tests must not collide on 8786 and 8787)
FREE_PORTS = ("--port", "0", "--dashboard-port", "0")


def run_cli(
    *args: str, check: bool = True, timeout: float = 180, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run the real `clusterctl` console script in a new process (``env`` added to ours)."""
    result = subprocess.run(
        cli_command(*args),
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"clusterctl {' '.join(args)} exited {result.returncode}:\n"
            f"{result.stdout}\n{result.stderr}"
        )
    return result


def listed(name: str) -> dict[str, Any]:
    """Cluster ``name``'s row of `clusterctl list --json` (an assertion error if not one)."""
    rows = [c for c in json.loads(run_cli("list", "--json").stdout) if c["name"] == name]
    assert len(rows) == 1, f"{name!r} listed {len(rows)} times"
    return rows[0]


def wait_healthy(container, timeout: float = 90) -> None:
    """Until the container's HEALTHCHECK says healthy; its log's tail if it exits or never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        container.reload()
        health = container.attrs["State"].get("Health", {}).get("Status")
        if health == "healthy":
            return
        if container.status == "exited":
            break
        time.sleep(0.5)
    logs = container.logs().decode(errors="replace")[-2000:]
    raise AssertionError(f"{container.name} is {container.status}/{health}:\n{logs}")
