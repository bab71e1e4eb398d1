"""Bad input: every case exits 2 with a one-line message naming the problem, starts
nothing, and leaves the module's running bystander cluster untouched."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

import clusterctl
from clusterctl import state
from clusterctl.cli import cli
from clusterctl.errors import ClusterctlError
from tests.conftest import Bystander, free_port, run_cli

pytestmark = pytest.mark.bad_input

# An alias bomb: a few hundred bytes of YAML that stand for 9**9 strings.
ALIAS_BOMB = "".join(
    [f"a: &a [{', '.join(['lol'] * 9)}]\n"]
    + [f"{k}: &{k} [{', '.join(['*' + p] * 9)}]\n" for p, k in pairwise("abcdefghi")]
    + ["worker: {env: {A: *i}}\n"]
)
BIG = "x" * 200_000  # an env value as big as the one that made spawning fail with E2BIG

SPEC_FILES: dict[str, tuple[str | bytes, str]] = {
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
    # a trailing newline, which a pattern ending in `$` lets through
    "name-newline": ('name: "abc\\n"\n', "name: must be a DNS label"),
    "group-newline": ('workers: {"gpu\\n": {count: 1}}\n', "workers.'gpu\\n': must be a DNS"),
    "env-key-newline": ('worker: {env: {"MODE\\n": x}}\n', "an environment variable name"),
    "scheduler-env-key-newline": (
        'scheduler: {env: {"EXTRA_PIP_PACKAGES\\n": x}}\n',
        "scheduler.env.'EXTRA_PIP_PACKAGES\\n': an environment variable name",
    ),
    "image-newline": ('worker: {image: "clusterctl-worker:1\\n"}\n', "image: must be an image"),
    "host-newline": ('scheduler: {host: "example.com\\n"}\n', "scheduler.host: must be an IP"),
    "resource-newline": ('worker: {resources: {"GPU\\n": 1}}\n', "a resource name must be"),
    # IPv6, which the scheduler can't start on yet
    "host-ipv6-loopback": ("scheduler: {host: '::1'}\n", "IPv6 addresses are not supported yet"),
    "host-ipv6-any": ("scheduler: {host: '::'}\n", "IPv6 addresses are not supported yet"),
    # memory a worker can't run with
    "memory-fraction-tiny": ("worker: {memory-limit: 0.0000001}\n", "a worker needs at least"),
    "memory-below-floor": ("worker: {memory-limit: 100MB}\n", "a worker needs at least 256 MiB"),
    "group-memory-below-floor": (
        "workers: {big: {count: 1, memory-limit: 8GiB}, small: {count: 1, memory-limit: 1MiB}}\n",
        "workers.small.memory-limit: a worker needs at least 256 MiB",
    ),
    # numbers beyond float, infinities, NaN
    "memory-1e400": ("worker: {memory-limit: '1e400'}\n", "got '1e400'"),
    "memory-inf": ("worker: {memory-limit: .inf}\n", "memory-limit: must be"),
    "memory-nan": ("worker: {memory-limit: .nan}\n", "memory-limit: must be"),
    "cpus-inf": ("worker: {cpus: .inf}\n", "workers.worker.cpus: must be a number"),
    "resource-nan": ("worker: {resources: {GPU: .nan}}\n", "resources.GPU: must be a number"),
    "start-timeout-inf": ("start-timeout: .inf\n", "start-timeout: must be a number"),
    "death-timeout-nan": ("worker: {death-timeout: .nan}\n", "death-timeout: must be a number"),
    "env-inf": ("worker: {env: {A: .inf}}\n", "workers.worker.env.A: must be a string or a"),
    "int-past-4300-digits": (f"worker: {{count: {'9' * 5000}}}\n", "not valid YAML"),
    # too many workers in all groups together
    "three-groups-of-1000": (
        "workers: {a: {count: 1000}, b: {count: 1000}, c: {count: 1000}}\n",
        "workers: at most 1000 workers in all groups together, got 3000",
    ),
    "two-groups-of-600": (
        "workers: {a: {count: 600}, b: {count: 600}}\n",
        "at most 1000 workers in all groups together",
    ),
    # swarm placement: constraints in swarm's syntax only, a sane cap
    "placement-not-a-constraint": (
        "worker: {placement: {constraints: ['node.labels.pool=big']}}\n",
        "placement.constraints[0]: must be a swarm constraint",
    ),
    "placement-shell": (
        "worker: {placement: {constraints: ['node.id==$(reboot)']}}\n",
        "must be a swarm constraint",
    ),
    "placement-cap-zero": (
        "worker: {placement: {max-replicas-per-node: 0}}\n",
        "placement.max-replicas-per-node: must be a whole number from 1",
    ),
    "placement-unknown": ("worker: {placement: {spread: node.id}}\n", "placement.spread: unknown"),
    # Kubernetes placement: its own label syntax and toleration fields
    "node-selector-bad-key": (
        "worker: {placement: {node-selector: {'a b': x}}}\n",
        "placement.node-selector.a b: not a Kubernetes label key",
    ),
    "node-selector-number": (
        "worker: {placement: {node-selector: {pool: 1}}}\n",
        "must be a Kubernetes label value",
    ),
    "toleration-unknown": (
        "worker: {placement: {tolerations: [{key: a, effct: NoSchedule}]}}\n",
        "placement.tolerations[0].effct: unknown field",
    ),
    "toleration-operator": (
        "worker: {placement: {tolerations: [{key: a, operator: Is}]}}\n",
        "tolerations[0].operator: must be one of 'Exists', 'Equal'",
    ),
    "affinity-unknown": (
        "worker: {placement: {affinity: {nodeAfinity: {}}}}\n",
        "placement.affinity.nodeAfinity: unknown field",
    ),
    # GPUs: a count (or all, where the engine can hand them all), in containers only
    "gpus-zero": (
        "backend: docker\nworker: {gpus: 0}\n",
        'gpus: must be a whole number from 1 to 64 or "all"',
    ),
    "gpus-text": ("backend: docker\nworker: {gpus: many}\n", "gpus: must be a whole number"),
    "gpus-fraction": ("backend: compose\nworker: {gpus: 0.5}\n", "gpus: must be a whole number"),
    "gpus-local": ("worker: {gpus: 1}\n", "GPUs are handed to containers"),
    "gpus-all-kubernetes": (
        "backend: kubernetes\nworker: {gpus: all}\n",
        "kubernetes reserves GPUs by number",
    ),
    "gpus-all-swarm": ("backend: swarm\nworker: {gpus: all}\n", "swarm reserves GPUs by number"),
    # mounts that hand the containers this machine
    "mount-root": ("worker: {mounts: ['/:/host']}\n", "may not mount / (the whole machine)"),
    "mount-root-read-only": ("worker: {mounts: ['/:/host:ro']}\n", "may not mount /"),
    "mount-var-run": ("worker: {mounts: ['/var/run:/run']}\n", "the Docker socket's folder"),
    "mount-run-read-only": ("worker: {mounts: ['/run:/r:ro']}\n", "the Docker socket's folder"),
    "mount-var": ("worker: {mounts: ['/var:/var:ro']}\n", "the Docker socket's folder"),
    "scheduler-mount-root": ("scheduler: {mounts: ['/:/host:ro']}\n", "scheduler.mounts[0]"),
    "scheduler-mount-run": ("scheduler: {mounts: ['/run:/r']}\n", "the Docker socket's folder"),
    "mount-proc": ("worker: {mounts: ['/proc:/p:ro']}\n", "may not mount /proc"),
    "mount-sys-below": ("worker: {mounts: ['/sys/fs:/s:ro']}\n", "may not mount /sys"),
    "mount-dev": ("worker: {mounts: ['/dev:/dev']}\n", "may not mount /dev"),
    "mount-no-host-path": ("worker: {mounts: [':/data']}\n", "must be 'host-path:container"),
    # YAML that is small as text and huge (or endless) as data
    "alias-bomb": (ALIAS_BOMB, "more than 10000 values (aliases expanded)"),
    "alias-cycle": ("worker: &w {env: *w}\n", "an alias refers to a value that holds it"),
    "nested-5000-deep": ("a: " + "[" * 5000 + "]" * 5000 + "\n", "nested more than 50 levels"),
    "many-values": ("".join(f"k{i}: {i}\n" for i in range(20_000)), "more than 10000 values"),
    # not text
    "binary": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", "not UTF-8 text"),
    "utf-16": ("name: abc\n".encode("utf-16"), "not UTF-8 text"),
    "control-character": ("name: a\x01b\n", "not valid YAML"),
    "bad-timestamp": ("name: !!timestamp nope\n", "not valid YAML"),
    # huge values: the message shows the start, and how long the value is
    "huge-name": (f"name: {'a' * 100_000}\n", "… (100000 characters)"),
    "huge-unknown-key": (f"? {'k' * 100_000}\n: 1\n", "… (100000 characters): unknown field"),
    "huge-backend": (f"backend: {'b' * 100_000}\n", "… (100000 characters)"),
    "huge-host": (f"scheduler: {{host: {'a.' * 50_000}a}}\n", "… (100001 characters)"),
    # environments too big to spawn a process with or to store
    "env-value-200k": (f"worker: {{env: {{A: {BIG}}}}}\n", "env.A: at most 32 KiB"),
    "scheduler-env-value-200k": (f"scheduler: {{env: {{A: {BIG}}}}}\n", "at most 32 KiB"),
    "env-total": (
        "worker: {env: {" + ", ".join(f"A{i}: {'x' * 30_000}" for i in range(3)) + "}}\n",
        "workers.worker.env: the environment of the scheduler and all worker groups together",
    ),
    "env-nul": ('worker: {env: {A: "a\\0b"}}\n', "env.A: may not contain a NUL"),
    "env-lone-surrogate": ('worker: {env: {A: "\\ud800"}}\n', "not valid Unicode"),
    "env-date": ("worker: {env: {A: 2024-01-01}}\n", "must be a string or a finite number"),
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
    "backend-unknown": (["up", "--backend", "slurm"], "'slurm' is not one of 'local', 'docker'"),
    "scale-negative": (["scale", "-1"], "Invalid value for 'N'"),
    "scale-5000-digits": (["scale", "9" * 5000], "(5032 characters)"),
    "port-5000-digits": (["up", "--port", "9" * 5000], "(5032 characters)"),
    "no-tls-on-every-interface": (
        ["up", "--host", "0.0.0.0", "--no-tls"],
        "scheduler.host: 0.0.0.0 can be reached from other machines",
    ),
    "scale-unknown-cluster": (["scale", "2", "--name", "nosuch"], "no running cluster named"),
    "status-unknown-cluster": (["status", "--name", "nosuch"], "no running cluster named"),
    "logs-unknown-cluster": (["logs", "--name", "nosuch"], "no running cluster named"),
    "adapt-no-maximum": (["adapt", "--name", "nosuch", "--minimum", "1"], "--maximum"),
    "down-all-and-name": (["down", "x", "--all"], "--all"),
    "unknown-command": (["upp"], "No such command"),
    "name-newline": (["up", "--name", "abc\n"], "name: must be a DNS label"),
    "host-newline": (["up", "--host", "127.0.0.1\n"], "scheduler.host: must be an IP"),
    "host-ipv6": (["up", "--host", "::1"], "IPv6 addresses are not supported yet"),
    "host-ipv4-mapped": (["up", "--host", "::ffff:127.0.0.1"], "IPv6 addresses are not"),
    "memory-fraction-tiny": (["up", "--memory-limit", "0.0000001"], "a worker needs at least"),
    "memory-64mib": (["up", "--memory-limit", "64MiB"], "a worker needs at least 256 MiB"),
    "memory-1e400": (["up", "--memory-limit", "1e400"], "memory-limit: must be"),
    "memory-1.0e400": (["up", "--memory-limit", "1.0e400"], "got float inf"),
    "memory-inf": (["up", "--memory-limit", "inf"], "memory-limit: must be"),
    "memory-nan": (["up", "--memory-limit", "nan"], "memory-limit: must be"),
    "memory-huge-text": (["up", "--memory-limit", "x" * 100_000], "… (100000 characters)"),
    "spec-dev-zero": (["up", "-f", "/dev/zero"], "/dev/zero: not a regular file"),
    "spec-dev-null": (["up", "-f", "/dev/null"], "/dev/null: not a regular file"),
    "render-spec-dev-zero": (
        ["render", "--backend", "compose", "-f", "/dev/zero"],
        "not a regular file",
    ),
    "render-spec-dev-urandom": (
        ["render", "--backend", "kubernetes", "-f", "/dev/urandom"],
        "not a regular file",
    ),
    "share-dir-missing": (
        ["up", "--backend", "docker", "--share-dir", "/no/such/dir"],
        "share-dir: /no/such/dir does not exist",
    ),
    "share-dir-root": (["up", "--backend", "docker", "--share-dir", "/"], "may not mount /"),
    "share-dir-etc": (["up", "--backend", "compose", "--share-dir", "/etc"], "may not mount /etc"),
    "share-dir-root-owned": (["up", "--backend", "docker", "--share-dir", "/tmp"], "/tmp"),
    "share-dir-claim-on-docker": (
        ["up", "--backend", "docker", "--share-dir", "pvc:data"],
        "share-dir: a PersistentVolumeClaim",
    ),
    "share-dir-folder-on-kubernetes": (
        ["render", "--backend", "kubernetes", "--share-dir", "."],
        "share-dir: folders of this machine are not on Kubernetes nodes",
    ),
}


@dataclass
class Outcome:
    """What a command (or an API call) ended with."""

    exit_code: int
    output: str


def _cli(args: list[str]) -> Outcome:
    result: Result = CliRunner().invoke(cli, args)
    unexpected = result.exception is not None and not isinstance(result.exception, SystemExit)
    assert not unexpected, f"{result.output}\n{result.exception!r}"
    return Outcome(result.exit_code, result.output)


def _api(call: Callable[[], Any]) -> Outcome:
    try:
        call()
    except ClusterctlError as exc:
        return Outcome(exc.exit_code, f"Error: {exc}\n")
    return Outcome(0, "")


def _assert_rejected(outcome: Outcome, expected: str, bystander: Bystander) -> None:
    output = outcome.output
    assert outcome.exit_code == 2, output
    assert expected in output, output
    assert "Traceback" not in output, output
    last = output.rstrip("\n").splitlines()[-1]
    assert last.startswith("Error: "), f"not a one-line error at the end:\n{output}"
    assert len(last) < 500, f"a message that prints a huge value whole: {last[:200]}..."
    assert state.names() == [bystander.name], "something was started"
    bystander.assert_untouched()


def _spec_file(folder: Path, text: str | bytes) -> Path:
    path = folder / "cluster.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


@pytest.mark.parametrize("case", sorted(SPEC_FILES))
def test_bad_spec_file_is_rejected(case, tmp_path, bystander):
    text, expected = SPEC_FILES[case]
    outcome = _cli(["up", "-f", str(_spec_file(tmp_path, text))])
    _assert_rejected(outcome, expected, bystander)


@pytest.mark.parametrize("case", sorted(FLAGS))
def test_bad_flags_are_rejected(case, bystander):
    args, expected = FLAGS[case]
    _assert_rejected(_cli(args), expected, bystander)


def test_port_in_use_is_rejected_before_anything_starts(bystander):
    port = free_port()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port))
        busy.listen()
        outcome = _cli(["up", "--name", "busy", "--port", str(port), "--dashboard-port", "0"])
    _assert_rejected(
        outcome, f"scheduler.port: port {port} on 127.0.0.1 is already in use", bystander
    )


def test_unreachable_engine_is_a_clear_error(monkeypatch, tmp_path, bystander):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    for args in (["image", "build"], ["image", "save", str(tmp_path / "x.tar.gz")]):
        _assert_rejected(_cli(args), "cannot reach a Docker Engine at unix://", bystander)


def test_image_load_of_a_missing_archive(tmp_path, bystander):
    outcome = _cli(["image", "load", str(tmp_path / "none.tar.gz")])
    _assert_rejected(outcome, "no such archive", bystander)


def test_spec_file_that_is_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path, bystander):
    fifo = tmp_path / "spec.yaml"
    os.mkfifo(fifo)
    _assert_rejected(_cli(["up", "-f", str(fifo)]), "not a regular file", bystander)


def test_spec_file_over_1_mib_is_refused(tmp_path, bystander):
    spec = _spec_file(tmp_path, "name: big\n# " + "x" * 2**20 + "\n")
    _assert_rejected(_cli(["up", "-f", str(spec)]), "larger than 1 MiB", bystander)


def test_mount_of_a_symlink_to_root_is_refused(tmp_path, bystander):
    (tmp_path / "innocent").symlink_to("/")
    spec = _spec_file(tmp_path, f"worker: {{mounts: ['{tmp_path}/innocent:/data:ro']}}\n")
    _assert_rejected(_cli(["up", "-f", str(spec)]), "may not mount /", bystander)


def test_mount_of_the_folder_of_docker_host_s_socket_is_refused(monkeypatch, tmp_path, bystander):
    engine = tmp_path / "engine"
    engine.mkdir()
    monkeypatch.setenv("DOCKER_HOST", f"unix://{engine}/docker.sock")
    for source in (engine, tmp_path):  # its folder, and a folder that holds it
        spec = _spec_file(tmp_path, f"worker: {{mounts: ['{source}:/data:ro']}}\n")
        outcome = _cli(["up", "-f", str(spec)])
        _assert_rejected(outcome, f"it holds the Docker socket's folder {engine}", bystander)


def test_workers_flag_past_the_total_of_all_groups(tmp_path, bystander):
    spec = _spec_file(tmp_path, "workers: {a: {count: 1}, b: {count: 500}}\n")
    outcome = _cli(["up", "-f", str(spec), "--workers", "600"])
    _assert_rejected(outcome, "workers.a.count: at most 1000 workers in all groups", bystander)


def test_ipv6_host_from_dask_config_environment(monkeypatch, bystander):
    import dask.config

    monkeypatch.setenv("DASK_CLUSTERCTL__SCHEDULER__HOST", "::1")
    dask.config.refresh()
    try:
        outcome = _cli(["up", "--name", "v6"])
    finally:
        monkeypatch.undo()
        dask.config.refresh()
    _assert_rejected(outcome, "scheduler.host: IPv6 addresses are not supported yet", bystander)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"spec": 123}, "spec: must be a spec file path or a ClusterSpec, got int 123"),
        ({"spec": b"cluster.yaml"}, "spec: must be a spec file path or a ClusterSpec, got bytes"),
        ({"workers": 10**5000}, "workers.worker.count: must be a whole number from 0 to 1000"),
        ({"memory_limit": float("nan")}, "memory-limit: must be"),
        ({"host": "::1"}, "IPv6 addresses are not supported yet"),
    ],
    ids=["spec-int", "spec-bytes", "workers-5000-digits", "memory-nan", "host-ipv6"],
)
def test_bad_arguments_to_up_are_spec_errors(fields, expected, bystander):
    _assert_rejected(_api(lambda: clusterctl.up(**fields)), expected, bystander)


def test_rejection_through_the_real_console_script(bystander):
    """The same contract seen from a shell: exit status 2, one line, no traceback."""
    result: subprocess.CompletedProcess = run_cli(
        "up", "--workers", "2", "--name", "Not_A_Label", check=False
    )
    assert result.stderr.startswith("Error: name: must be a DNS label")
    _assert_rejected(Outcome(result.returncode, result.stdout + result.stderr), "", bystander)
