"""Bad input: every case exits 2 with a message naming the problem, and starts nothing."""

from __future__ import annotations

import socket

import pytest
from click.testing import CliRunner

from clusterctl import state
from clusterctl.cli import cli
from tests.conftest import free_port, run_cli

pytestmark = pytest.mark.bad_input

SPEC_FILES = {
    "yaml-error": ("workers: [1, 2\n", "not valid YAML"),
    "not-a-mapping": ("- a\n- b\n", "must be a mapping"),
    "unknown-top-key": ("nmae: x\n", "nmae: unknown field"),
    "unknown-nested-key": ("scheduler: {prot: 1}\n", "scheduler.prot: unknown field"),
    "negative-count": ("worker: {count: -1}\n", "workers.worker.count"),
    "huge-count": ("worker: {count: 100000}\n", "workers.worker.count"),
    "count-wrong-type": ("worker: {count: many}\n", "workers.worker.count"),
    "count-bool": ("worker: {count: true}\n", "workers.worker.count"),
    "threads-zero": ("worker: {threads: 0}\n", "workers.worker.threads"),
    "memory-nonsense": ("worker: {memory_limit: lots}\n", "workers.worker.memory-limit"),
    "memory-tiny": ("worker: {memory_limit: 10}\n", "workers.worker.memory-limit"),
    "bad-name": ("name: My_Cluster\n", "name: must be a DNS label"),
    "long-name": (f"name: {'a' * 41}\n", "name: must be a DNS label"),
    "bad-group-name": ("workers: {GPU: {count: 1}}\n", "workers.GPU"),
    "group-named-as-a-role": ("workers: {scheduler: {count: 1}}\n", "may not be called"),
    "port-out-of-range": ("scheduler: {port: 70000}\n", "scheduler.port"),
    "port-string": ("scheduler: {dashboard-port: http}\n", "scheduler.dashboard-port"),
    "same-ports": (
        "scheduler: {port: 9999, dashboard-port: 9999}\n",
        "must differ from scheduler.port",
    ),
    "bad-host": ("scheduler: {host: 'not a host'}\n", "scheduler.host"),
    "unknown-backend": ("backend: slurm\n", "backend: must be one of"),
    "env-bad-name": ("worker: {env: {'1X': a}}\n", "workers.worker.env.1X"),
    "env-nested": ("worker: {env: {A: {b: 1}}}\n", "workers.worker.env.A"),
    "resources-negative": ("worker: {resources: {GPU: -1}}\n", "workers.worker.resources.GPU"),
    "mount-format": ("worker: {mounts: [nocolon]}\n", "workers.worker.mounts[0]"),
    "mount-missing": ("worker: {mounts: ['/no/such/dir:/data']}\n", "does not exist"),
    "mount-relative-target": ("worker: {mounts: ['/tmp:data']}\n", "must be absolute"),
    "scheduler-mount-missing": (
        "scheduler: {mounts: ['/no/such/dir:/wheels']}\n",
        "scheduler.mounts[0]",
    ),
    "scheduler-env-nested": ("scheduler: {env: {A: [1]}}\n", "scheduler.env.A"),
    "cpus-negative": ("worker: {cpus: -1}\n", "workers.worker.cpus"),
    "death-timeout-zero": ("worker: {death-timeout: 0}\n", "workers.worker.death-timeout"),
    "start-timeout-string": ("start-timeout: soon\n", "start-timeout"),
    "notebook-port-clash": (
        "notebook: {enabled: true, port: 8787}\n",
        "notebook.port: must differ",
    ),
    "notebook-enabled-text": ("notebook: {enabled: sometimes}\n", "notebook.enabled"),
    "tls-wrong-value": ("security: {tls: maybe}\n", "security.tls: must be true, false or auto"),
    "security-unknown-key": ("security: {password: x}\n", "security.password: unknown field"),
}

FLAGS = {
    "workers-negative": (["up", "--workers", "-3"], "--workers"),
    "workers-huge": (["up", "--workers", "5000"], "--workers"),
    "threads-zero": (["up", "--threads", "0"], "--threads"),
    "name-uppercase": (["up", "--name", "Big"], "name: must be a DNS label"),
    "port-negative": (["up", "--port", "-1"], "scheduler.port"),
    "port-text": (["up", "--dashboard-port", "abc"], "--dashboard-port"),
    "memory-flag": (["up", "--memory-limit", "-2GB"], "memory-limit"),
    "missing-file": (["up", "-f", "/no/such/spec.yaml"], "cannot read the spec file"),
    "backend-unknown": (["up", "--backend", "slurm"], "backend: must be one of"),
    "scale-negative": (["scale", "-1"], "Invalid value for 'N'"),
    "scale-unknown-cluster": (["scale", "2", "--name", "nosuch"], "no running cluster named"),
    "status-unknown-cluster": (["status", "--name", "nosuch"], "no running cluster named"),
    "logs-unknown-cluster": (["logs", "--name", "nosuch"], "no running cluster named"),
    "adapt-no-maximum": (["adapt", "--name", "nosuch", "--minimum", "1"], "no running cluster"),
    "down-all-and-name": (["down", "x", "--all"], "--all"),
    "unknown-command": (["upp"], "No such command"),
}


def _assert_rejected(result, expected: str) -> None:
    output = result.output + (result.stderr if hasattr(result, "stderr") else "")
    assert result.exit_code == 2, output
    assert expected in output, output
    assert "Traceback" not in output, output
    assert state.names() == [], "something was started"


@pytest.mark.parametrize("case", sorted(SPEC_FILES))
def test_bad_spec_file_is_rejected(case, tmp_path):
    text, expected = SPEC_FILES[case]
    spec = tmp_path / "cluster.yaml"
    spec.write_text(text)
    result = CliRunner().invoke(cli, ["up", "-f", str(spec)])
    _assert_rejected(result, expected)


@pytest.mark.parametrize("case", sorted(FLAGS))
def test_bad_flags_are_rejected(case):
    args, expected = FLAGS[case]
    result = CliRunner().invoke(cli, args)
    _assert_rejected(result, expected)


def test_port_in_use_is_rejected_before_anything_starts():
    port = free_port()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port))
        busy.listen()
        result = CliRunner().invoke(
            cli, ["up", "--name", "busy", "--port", str(port), "--dashboard-port", "0"]
        )
    _assert_rejected(result, f"scheduler.port: port {port} on 127.0.0.1 is already in use")


def test_unreachable_engine_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    for args in (["image", "build"], ["image", "save", str(tmp_path / "x.tar.gz")]):
        result = CliRunner().invoke(cli, args)
        _assert_rejected(result, "cannot reach a Docker Engine at unix://")


def test_image_load_of_a_missing_archive(tmp_path):
    result = CliRunner().invoke(cli, ["image", "load", str(tmp_path / "none.tar.gz")])
    _assert_rejected(result, "no such archive")


def test_rejection_through_the_real_console_script():
    """The same contract seen from a shell: exit status 2, one line, no traceback."""
    result = run_cli("up", "--workers", "2", "--name", "Not_A_Label", check=False)
    assert result.returncode == 2
    assert result.stderr.startswith("Error: name: must be a DNS label")
    assert "Traceback" not in result.stderr
    assert state.names() == []
