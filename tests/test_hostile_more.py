"""Hostile and careless use, second round (issue 29): idle clocks fooled both ways, special
files where clusterctl keeps a regular file, and the low ones (a full disk under the TLS key,
fields the local backend ignores, non-JSON values in a spec, TLS turned off by the
environment, a cluster still starting, a graph that raises SystemExit on the scheduler).

As in test_hostile.py: each case asserts the message and exit status, that the module's
bystander is untouched, and that nothing of a removed cluster is left.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

import clusterctl
from clusterctl import idle, processes, state, supervisor, waiting
from tests.conftest import FREE_PORTS, cli_command, listed, run_cli
from tests.test_hostile import _home_of, assert_gone, assert_rejected, marked, state_env, up

pytestmark = [pytest.mark.slow, pytest.mark.bad_input, pytest.mark.local, pytest.mark.timeout(300)]

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="NEEDS ROOT: mknod / mounts a tmpfs")


def spec_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "spec.yaml"
    path.write_text(textwrap.dedent(text))
    return str(path)


@pytest.fixture
def removal_records() -> Iterator[Path]:
    """The state root's removal records, which a test of a removal leaves: removed after."""
    folder = state.root() / state.REMOVED
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


# --- idle means idle ---------------------------------------------------------------------------

IDLE_SPEC = "idle-timeout: 20s\n"


def _published(client) -> None:
    client.publish_dataset(x=client.submit(sum, [1, 2], pure=False))
    client.unpublish_dataset("x")


def _variable(client) -> None:
    from distributed import Variable

    Variable("v", client=client).set(client.submit(sum, [1, 2], pure=False))


def _queue(client) -> None:
    from distributed import Queue

    Queue("q", client=client).put(client.submit(sum, [1, 2], pure=False))


def _fire_and_forget(client) -> None:
    from distributed import fire_and_forget

    fire_and_forget(client.submit(sum, [1, 2], pure=False))


def _worker_client(client) -> None:
    def ask() -> str:
        from distributed import get_client

        return get_client().id

    assert client.submit(ask, pure=False).result(timeout=30).startswith(idle.WORKER_CLIENT)


PSEUDO_CLIENTS = {
    "published-then-unpublished": _published,  # published-x, left after unpublish_dataset
    "variable": _variable,  # variable-v
    "queue": _queue,  # queue-q
    "fire-and-forget": _fire_and_forget,
    "worker-client": _worker_client,  # get_client() in a task: Client-worker-…, stays
}


@pytest.mark.parametrize("kind", PSEUDO_CLIENTS)
def test_only_clients_a_person_holds_keep_an_idle_cluster(
    bystander, tmp_path, removal_records, kind
):
    """distributed's pseudo-clients never go away by themselves: with each as the only
    "client" left, a 20 s idle-timeout removes the cluster within a minute, and the removal
    is on record (`list --all`, `logs`)."""
    name = "idle-" + kind.split("-")[0]
    up(name, "-f", spec_file(tmp_path, IDLE_SPEC))
    try:
        with clusterctl.connect(name) as client:
            PSEUDO_CLIENTS[kind](client)
            if kind == "published-then-unpublished":  # the control: a held client counts
                time.sleep(30)
                assert name in state.names(), "removed while a client was connected"
        left_at = time.monotonic()
        waiting.until(
            lambda: name not in state.names() and not marked(name),
            timeout=60,
            interval=0.5,
            what=f"the idle cluster {name} to be removed",
        )
        print(f"{kind}: removed {time.monotonic() - left_at:.0f} s after its client left")
        assert_gone(name)
        rows = json.loads(run_cli("list", "--all", "--json").stdout)
        row = [r for r in rows if r["name"] == name]
        assert [r["status"] for r in row] == ["removed"], row
        assert row[0]["problem"] == "idle-timeout: no client and no task for 20s", row
        assert time.time() - 90 < row[0]["removed"] <= time.time()
        table = run_cli("list", "--all").stdout
        assert f"removed at {time.strftime('%Y-%m-%d')}" in table, table
        assert name not in run_cli("list").stdout, "a removed cluster listed without --all"
        logs = run_cli("logs", "--name", name)
        assert f"Cluster {name!r} was removed at" in logs.stdout, logs.stdout
        assert "why: idle-timeout: no client and no task for 20s" in logs.stdout
        assert "supervisor | " in logs.stdout and "scheduler | " in logs.stdout, logs.stdout
    finally:
        run_cli("down", name, check=False)
    bystander.assert_untouched()


STEPPING_CLOCK = """
import os, sys, time
if "clusterctl.supervisor" in sys.orig_argv:  # the supervisor's wall clock only
    _real, _step = time.time, os.environ["CLUSTERCTL_TEST_CLOCK_STEP"]
    time.time = lambda: _real() + (7200 if os.path.exists(_step) else 0)
    open(_step + ".installed", "w").close()
"""


@pytest.mark.fault("the wall clock stepped 2 h ahead in the supervisor of an idle cluster")
def test_a_stepped_wall_clock_does_not_end_an_idle_cluster_early(
    bystander, tmp_path, removal_records
):
    """Stepping the real clock of a shared machine is not ours to do: the supervisor gets a
    wall clock (time.time) that jumps 2 h ahead once a file exists."""
    fake = tmp_path / "fakeclock"
    fake.mkdir()
    (fake / "sitecustomize.py").write_text(STEPPING_CLOCK)
    step = tmp_path / "step"
    env = {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(fake), os.environ.get("PYTHONPATH")])),
        "CLUSTERCTL_TEST_CLOCK_STEP": str(step),
    }
    name = "idle-clock"
    up(name, "-f", spec_file(tmp_path, "idle-timeout: 10m\n"), env=env)
    try:
        waiting.until(
            lambda: supervisor.idle_since(name) is not None, timeout=30, what="the idle clock"
        )
        step.touch()
        stepped_at = time.monotonic()
        time.sleep(16)  # three looks at whether it is idle, each one on the stepped clock
        assert name in state.names() and listed(name)["status"] == "running", "removed early"
        report = json.loads(run_cli("status", "--name", name, "--json").stdout)
        assert 600 - 60 < report["idle_left"] <= 600 - (time.monotonic() - stepped_at) + 1
        assert step.with_name("step.installed").exists(), "the supervisor has no fake clock"
    finally:
        run_cli("down", name)
    assert_gone(name)
    bystander.assert_untouched()


def test_removal_records_are_bounded(removal_records, monkeypatch):
    """The newest 20 of the last 7 days are kept; an old or damaged record is left out."""
    monkeypatch.setattr(time, "time_ns", lambda: 10**18)  # 2001
    state.record_removal("ancient", "local", "idle-timeout: long ago", ["x"])
    monkeypatch.undo()
    for n in range(25):
        state.record_removal(f"idle-bound-{n}", "local", "idle-timeout: test", ["a"] * 100)
    (removal_records / f"{time.time_ns()}-broken.json").write_text("{half")
    kept = state.removals()
    assert [r["name"] for r in kept] == [f"idle-bound-{n}" for n in range(5, 25)]
    assert all(len(r["log"]) == state.REMOVED_LINES for r in kept)
    assert len(list(removal_records.glob("*.json"))) == 20 + 1  # the damaged one: left alone


# --- special files where a regular file is expected --------------------------------------------

KINDS = ["symlink", "folder", "fifo", "socket", "device"]
SAYS = {
    "symlink": "is a symlink",
    "folder": "is a folder",
    "fifo": "is a FIFO (named pipe)",
    "socket": "is a socket",
    "device": "is a character device",
}


def plant(path: Path, kind: str, target: Path) -> None:
    """Put a ``kind`` of special file at ``path`` (a symlink points at ``target``)."""
    if kind == "symlink":
        path.symlink_to(target)
    elif kind == "folder":
        path.mkdir()
        (path / "inside").write_text("x")
    elif kind == "fifo":
        os.mkfifo(path, 0o600)
    elif kind == "socket":
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind(str(path))
    else:
        if os.geteuid() != 0:
            pytest.skip("NEEDS ROOT: mknod of a device")
        os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # as /dev/null


@pytest.fixture(scope="module")
def special() -> Iterator[str]:
    """A running cluster to plant special files in (one per module: each case undoes its
    own planting)."""
    name = "spec-files"
    up(name)
    yield name
    run_cli("down", name)
    assert_gone(name)


@pytest.fixture
def target(tmp_path) -> Path:
    path = tmp_path / "target.txt"
    path.write_text("untouched\n")
    return path


def _aside(path: Path) -> Path:
    """Move what is at ``path`` aside (to be put back with :func:`_back`)."""
    kept = path.with_name(path.name + ".kept")
    if path.exists():
        path.rename(kept)
    return kept


def _back(path: Path, kept: Path) -> None:
    state.discard(path)
    if kept.exists():
        kept.rename(path)


@pytest.mark.parametrize("kind", KINDS)
def test_a_special_file_as_a_rotated_supervisor_log(bystander, special, target, kind):
    path = supervisor.log_path(special).with_name("supervisor.log.1")
    plant(path, kind, target)
    try:
        result = run_cli("logs", "supervisor", "--name", special, check=False, timeout=30)
        assert_rejected(result, 1, f"supervisor.log.1: {SAYS[kind]}, where clusterctl keeps")
    finally:
        state.discard(path)
    assert target.read_text() == "untouched\n"
    bystander.assert_untouched()


@pytest.mark.parametrize("kind", KINDS)
def test_a_special_file_as_a_worker_log(bystander, special, target, kind):
    path = state.cluster_dir(special) / "logs" / f"{special}-worker-1.log"
    kept = _aside(path)
    plant(path, kind, target)
    try:
        result = run_cli("logs", f"{special}-worker-1", "--name", special, check=False, timeout=30)
        assert_rejected(result, 1, f"the log of {special}-worker-1 can't be read")
        assert SAYS[kind] in result.stderr, result.stderr
    finally:
        _back(path, kept)
    assert target.read_text() == "untouched\n"
    bystander.assert_untouched()


def _next_worker(name: str) -> str:
    records = (state.cluster_dir(name) / "processes").glob(f"{name}-worker-*.json")
    return f"{name}-worker-{max(int(p.stem.rpartition('-')[2]) for p in records) + 1}"


@pytest.mark.parametrize("kind", KINDS)
def test_a_special_file_where_scale_writes_a_new_log(bystander, special, target, kind):
    """`scale` holds the cluster's lock while it starts a worker: a FIFO where the worker's
    log goes once hung it, and every command waiting for the lock with it."""
    path = state.cluster_dir(special) / "logs" / f"{_next_worker(special)}.log"
    plant(path, kind, target)
    try:
        started = time.monotonic()
        result = run_cli("scale", "2", "--name", special, check=False, timeout=60)
        assert_rejected(result, 1, SAYS[kind])
        assert time.monotonic() - started < 30
    finally:
        state.discard(path)
    assert target.read_text() == "untouched\n"
    assert "1 worker" in run_cli("scale", "1", "--name", special, timeout=60).stdout
    bystander.assert_untouched()


@pytest.mark.parametrize("kind", KINDS)
def test_a_special_file_as_a_certificate(bystander, special, target, kind):
    path = state.cluster_dir(special) / "tls" / "cert.pem"
    kept = _aside(path)
    plant(path, kind, target)
    try:
        result = run_cli("status", "--name", special, check=False, timeout=30)
        assert_rejected(result, 1, f"cert.pem: {SAYS[kind]}")
    finally:
        _back(path, kept)
    run_cli("status", "--name", special)
    bystander.assert_untouched()


@pytest.mark.parametrize("kind", KINDS)
def test_the_supervisor_log_rotates_over_special_files(kind, target):
    """What is not a regular file where the log rotates to is removed, not followed, and
    the log goes on (it would never rotate again, a traceback on every line)."""
    import logging

    name = "spec-rotate"
    logs = state.make_cluster_dir(name) / "logs"
    logs.mkdir()
    try:
        plant(logs / "supervisor.log.1", kind, target)
        plant(logs / "supervisor.log.2", "folder", target)
        handler = supervisor.LogHandler(name)
        handler.maxBytes = 100
        handler.setFormatter(logging.Formatter("%(message)s"))
        errors = []
        handler.handleError = errors.append  # type: ignore[method-assign]
        for n in range(5):
            handler.emit(logging.makeLogRecord({"msg": f"line {n} " + "x" * 60}))
        handler.close()
        assert not errors
        for path in logs.iterdir():
            assert stat.S_ISREG(path.lstat().st_mode), f"{path} is not a regular file"
        assert sorted(p.name for p in logs.iterdir()) == [
            "supervisor.log",
            "supervisor.log.1",
            "supervisor.log.2",
        ]
        assert target.read_text() == "untouched\n"
    finally:
        shutil.rmtree(state.cluster_dir(name))


# --- the low ones --------------------------------------------------------------------------------


@pytest.fixture
def tiny_disk(tmp_path, request) -> Iterator[Path]:
    """A tmpfs of ``request.param`` KiB to use as XDG_STATE_HOME."""
    if os.geteuid() != 0:
        pytest.skip("NEEDS ROOT: mounts a tmpfs")
    mount = tmp_path / "tiny"
    mount.mkdir()
    size = f"size={request.param}k,mode=700"
    subprocess.run(["mount", "-t", "tmpfs", "-o", size, "tmpfs", str(mount)], check=True)
    yield mount
    run_cli("down", "--all", env=state_env(mount), check=False)
    processes.kill(p for p in psutil.process_iter() if _home_of(p) == str(mount))
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.fault("the disk fills up while the TLS key is written")
@pytest.mark.parametrize("tiny_disk", [8, 12], indirect=True)
def test_a_disk_full_under_the_tls_files_is_a_message(bystander, tiny_disk):
    result = run_cli("up", "--name", "low-full", *FREE_PORTS, check=False, env=state_env(tiny_disk))
    assert_rejected(result, 1, "the disk is full; nothing was changed")
    assert "tls" in result.stderr, "not the TLS files' write: choose another size"
    assert not list(tiny_disk.rglob(".tmp-*")), "half-written files left"
    assert not (tiny_disk / "clusterctl" / "low-full").exists(), "a half-made cluster is left"
    assert not marked("low-full", tiny_disk)
    bystander.assert_untouched()


IGNORED = {
    "workers.worker.cpus": "worker: {cpus: 1}",
    "workers.worker.image": "worker: {image: 'clusterctl-worker:1.0'}",
    "workers.worker.mounts": "worker: {mounts: ['{tmp}:/data']}",
    "workers.worker.placement": "worker: {placement: {constraints: ['node.role==manager']}}",
    "scheduler.mounts": "scheduler: {mounts: ['{tmp}:/data']}",
}


@pytest.mark.parametrize("field", IGNORED)
def test_a_field_the_local_backend_ignores_is_named(bystander, tmp_path, field):
    """A spec shared across backends starts on local, with a warning naming the field."""
    text = IGNORED[field].replace("{tmp}", str(tmp_path))
    result = run_cli("up", "--name", "low-ignored", "--workers", "0", *FREE_PORTS, "-f",
                     spec_file(tmp_path, text + "\n"))  # fmt: skip
    try:
        assert "Warning (IgnoredFieldsWarning)" in result.stderr, result.stderr
        assert f"the local backend ignores {field} (" in result.stderr, result.stderr
    finally:
        run_cli("down", "low-ignored")
    assert_gone("low-ignored")
    bystander.assert_untouched()


NOT_JSON = {
    "date": ("when: 2024-01-01", "when: must be a string, number, boolean, list or mapping"),
    "timestamp": ("at: 2024-01-01T10:00:00Z", "at: must be a string, number"),
    "binary": ("blob: !!binary aGVsbG8=", "blob: must be a string, number"),
    "set": ("pool: !!set {a, b}", "pool: must be a string, number"),
    "number-key": ("1: x", "nodeAffinity: keys must be strings, got int 1"),
    "date-in-a-list": ("terms: [2024-01-01]", "terms[0]: must be a string, number"),
}


@pytest.mark.parametrize("case", NOT_JSON)
def test_a_non_json_value_in_affinity_is_a_spec_error(bystander, tmp_path, case):
    value, message = NOT_JSON[case]
    text = f"worker:\n  placement:\n    affinity:\n      nodeAffinity:\n        {value}\n"
    result = run_cli("up", "--name", "low-affinity", *FREE_PORTS, "-f", spec_file(tmp_path, text),
                     check=False)  # fmt: skip
    assert_rejected(result, 2, "workers.worker.placement.affinity.nodeAffinity")
    assert message in result.stderr, result.stderr
    assert "low-affinity" not in state.names()
    bystander.assert_untouched()


@pytest.mark.parametrize("how", ["environment", "flag"])
def test_a_cluster_without_tls_is_warned_of_in_up_and_status(bystander, how):
    env = {"DASK_CLUSTERCTL__SECURITY__TLS": "false"} if how == "environment" else {}
    flag = ("--no-tls",) if how == "flag" else ()
    started = run_cli("up", "--name", "low-plain", "--workers", "0", *FREE_PORTS, *flag, env=env)
    try:
        says = "cluster 'low-plain' runs without TLS (security.tls: false)"
        assert f"Warning: {says}" in started.stderr, started.stderr
        status = run_cli("status", "--name", "low-plain")
        assert f"Warning: {says}" in " ".join(status.stdout.split()), status.stdout
        report = json.loads(run_cli("status", "--name", "low-plain", "--json").stdout)
        assert report["plaintext"].startswith(says)
    finally:
        run_cli("down", "low-plain")
    assert_gone("low-plain")
    tls = run_cli("status", "--name", "bystander")
    assert "without TLS" not in tls.stdout
    bystander.assert_untouched()


SLOW_SCHEDULER = """
import sys, time
if "distributed.cli.dask_scheduler" in sys.orig_argv:
    time.sleep(6)  # a scheduler slow to start: the cluster stays "starting" for seconds
"""


def test_a_cluster_still_starting_is_listed_as_starting(bystander, tmp_path):
    slow = tmp_path / "slow"
    slow.mkdir()
    (slow / "sitecustomize.py").write_text(SLOW_SCHEDULER)
    env = {**os.environ, "PYTHONPATH": str(slow)}
    command = cli_command("up", "--name", "low-starting", "--workers", "1", *FREE_PORTS)
    starting = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        waiting.until(
            lambda: (state.cluster_dir("low-starting") / state.SPEC).exists(),
            timeout=30,
            interval=0.05,
            what="the start to claim the name",
        )
        row = listed("low-starting")
        assert row["status"] == "starting", row
        status = run_cli("status", "--name", "low-starting", check=False)
        assert_rejected(status, 1, "cluster 'low-starting' is still starting")
        assert "down" not in status.stderr
        assert starting.wait(120) == 0, starting.stderr.read()
        assert listed("low-starting")["status"] == "running"
    finally:
        if starting.poll() is None:
            starting.send_signal(signal.SIGKILL)
            starting.wait()
        run_cli("down", "low-starting")
    assert_gone("low-starting")
    bystander.assert_untouched()


class _Raises:
    """Pickled as a call that raises ``exc`` when the scheduler unpickles the graph."""

    def __init__(self, exc: str):
        self.exc = exc

    def __reduce__(self):
        if self.exc == "SystemExit":
            return (sys.exit, (3,))
        return (signal.default_int_handler, (signal.SIGINT, None))  # KeyboardInterrupt


@pytest.mark.fault("a graph whose unpickling raises SystemExit or KeyboardInterrupt")
@pytest.mark.parametrize("exc", ["SystemExit", "KeyboardInterrupt"])
def test_a_graph_raising_system_exit_leaves_the_scheduler_running(bystander, exc):
    from distributed.client import FutureCancelledError

    up("low-graph")
    try:
        scheduler = [m for m in marked("low-graph") if "dask_scheduler" in " ".join(m.cmdline())]
        with clusterctl.connect("low-graph") as client:
            future = client.submit(str, _Raises(exc), pure=False)
            with pytest.raises(FutureCancelledError, match="cannot unpickle the task graph"):
                future.result(timeout=20)
            assert client.submit(sum, [1, 2], pure=False).result(timeout=30) == 3
        assert [p.is_running() for p in scheduler] == [True], "the scheduler died"
        assert listed("low-graph")["status"] == "running"
    finally:
        run_cli("down", "low-graph")
    assert_gone("low-graph")
    bystander.assert_untouched()


# --- new_cluster: names claimed, not asked for ------------------------------------------------

MAKE_NEW = (
    "import sys, clusterctl\n"
    "cluster = clusterctl.new_cluster(prefix='lab', workers=0)\n"
    "print(cluster.name, flush=True)\n"
    "sys.stdin.read()  # until the test closes it; exiting then removes the cluster\n"
)


def test_four_new_clusters_at_once_get_four_names(bystander):
    """Four factories at once, beside a cluster whose scheduler is stopped: each gets a
    name of its own (lab-1...lab-4), the stopped scheduler is never asked, and each
    cluster ends with its process."""
    up("low-frozen")
    (scheduler,) = [p for p in marked("low-frozen") if "dask_scheduler" in str(p.cmdline())]
    scheduler.suspend()
    try:
        started = time.monotonic()
        assert clusterctl.api.new_cluster_spec("lab").name == "lab-1"
        assert time.monotonic() - started < 3, "picking a name waited for a scheduler"
        makers = [
            subprocess.Popen(
                [sys.executable, "-c", MAKE_NEW],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(4)
        ]
        try:
            names = [maker.stdout.readline().strip() for maker in makers]
            assert sorted(names) == ["lab-1", "lab-2", "lab-3", "lab-4"], [
                m.stderr.read() for m in makers if m.poll() is not None
            ]
            scheduler.resume()  # `list` asks every scheduler
            assert all(listed(name)["status"] == "running" for name in names)
        finally:
            for maker in makers:
                maker.stdin.close()
                maker.wait(120)
        assert [m.returncode for m in makers] == [0] * 4
        for name in names:
            assert_gone(name)
    finally:
        scheduler.resume()
        run_cli("down", "low-frozen")
    bystander.assert_untouched()


def test_new_cluster_honours_its_name(bystander):
    cluster = clusterctl.new_cluster(name="low-named", workers=0)
    try:
        assert cluster.name == "low-named"
        assert listed("low-named")["status"] == "running"
    finally:
        cluster.close()
    assert_gone("low-named")
    bystander.assert_untouched()
