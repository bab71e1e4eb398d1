"""The CLI end to end, each command in its own process, as a user runs it from shells."""

from __future__ import annotations

import json
import re
import sys
import time
import urllib.request

import psutil
import pytest

from clusterctl import state
from clusterctl.backends.base import port_is_free
from tests.conftest import FREE_PORTS, free_port, listed, run_cli

pytestmark = [pytest.mark.local, pytest.mark.slow]  # each test runs `clusterctl up`


def _status(name: str) -> dict:
    return json.loads(run_cli("status", "--name", name, "--json").stdout)


def test_up_scale_status_health_down_on_the_default_ports():
    """The README's walk-through: default ports, new process per command."""
    if not (port_is_free("127.0.0.1", 8786) and port_is_free("127.0.0.1", 8787)):
        pytest.skip(
            "ports 8786/8787 are taken on this machine by something else: "
            "this test needs the default ports"
        )
    up = run_cli("up", "--name", "t1", "--workers", "2")
    assert "http://127.0.0.1:8787/status" in up.stdout
    try:
        scale = run_cli("scale", "4", "--name", "t1")
        for out in (up, scale):  # no blank line ahead of what it says, where it's no terminal
            assert out.stdout.startswith("Cluster 't1'") and not out.stderr.startswith("\n")
        report = _status("t1")
        assert [w["state"] for w in report["workers"]] == ["running"] * 4
        table = run_cli("status", "--name", "t1").stdout
        assert "4 of 4 workers running" in table
        assert "t1-worker-4" in table
        with urllib.request.urlopen("http://127.0.0.1:8787/health", timeout=10) as r:
            assert r.read() == b"ok"
        row = listed("t1")
        assert (row["backend"], row["status"], row["workers"]) == ("local", "running", 4)
        assert row["address"].endswith("://127.0.0.1:8786") and row["threads"] >= 4
        assert row["memory"] > 0 and time.time() - 600 < row["created"] < time.time()
        table = run_cli("list").stdout.splitlines()
        assert table[0].split() == [
            *["name", "address", "type", "workers", "threads", "memory"],
            "created",
            "status",
        ]
        assert re.match(
            rf"t1 +{re.escape(row['address'])} +local +4 +\d+ +[\d.]+ \wiB +"
            r"(Just now|\d+ \w+ ago) +running$",
            table[1],
        ), table
        assert run_cli("dashboard", "--name", "t1").stdout.strip() == (
            "http://127.0.0.1:8787/status"
        )
        no_notebook = run_cli("notebook", "--name", "t1", check=False)
        assert no_notebook.returncode == 2 and "has no notebook" in no_notebook.stderr
        assert "Register worker" in run_cli("logs", "--name", "t1").stdout
        worker_log = run_cli("logs", "t1-worker-3", "--name", "t1", "--tail", "3").stdout
        supervisor_log = run_cli("logs", "supervisor", "--name", "t1").stdout
        assert "supervising t1: a look every" in supervisor_log, supervisor_log
        assert len(worker_log.splitlines()) == 3
    finally:
        run_cli("down", "--name", "t1")
    assert not state.cluster_dir("t1").exists()
    assert port_is_free("127.0.0.1", 8786) and port_is_free("127.0.0.1", 8787)
    assert "No clusters." in run_cli("list").stdout


def test_adapt_outlives_the_command_and_scale_turns_it_off(tmp_path):
    run_cli("up", "--name", "ad", "--workers", "1", "--port", "0", "--dashboard-port", "0")
    try:
        out = run_cli("adapt", "--name", "ad", "--minimum", "1", "--maximum", "3").stdout
        assert "between 1 and 3" in out
        assert _status("ad")["adaptive"] == {"minimum": 1, "maximum": 3, "group": None}
        # Load from another process; the adapt command has long exited.
        load = tmp_path / "load.py"
        load.write_text(
            "import time, clusterctl\n"
            "client = clusterctl.connect('ad')\n"
            "futures = client.map(time.sleep, [1.0] * 30, pure=False)\n"
            "client.gather(futures)\n"
        )
        proc = psutil.Popen([sys.executable, str(load)])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if len(_status("ad")["workers"]) >= 2:
                break
            time.sleep(0.5)
        assert len(_status("ad")["workers"]) >= 2, "the supervisor's adaptive loop added no worker"
        proc.wait(120)
        out = run_cli("scale", "1", "--name", "ad")
        assert "Adaptive scaling turned off." in out.stderr
        assert _status("ad")["adaptive"] is None
        assert len(_status("ad")["workers"]) == 1
    finally:
        run_cli("down", "ad")


@pytest.mark.fault("the scheduler killed (local)")
def test_dead_scheduler_is_reported_and_down_cleans_up():
    port = free_port()
    run_cli("up", "--name", "crash", "--workers", "2", "--port", str(port), "--dashboard-port", "0")
    report = _status("crash")
    worker_pids = [int(w["detail"].split()[1]) for w in report["workers"]]
    scheduler_pid = state.read_json(state.cluster_dir("crash") / "processes" / "scheduler.json")
    psutil.Process(scheduler_pid["pid"]).kill()
    time.sleep(0.5)
    result = run_cli("status", "--name", "crash", check=False)
    assert result.returncode == 1
    assert "scheduler: not running" in result.stdout
    scale = run_cli("scale", "3", "--name", "crash", check=False)
    # Refused while workers linger; once they are gone, the remains are cleaned on sight.
    assert (scale.returncode, "is not running") == (1, "is not running") or (
        scale.returncode == 2 and "no running cluster" in scale.stderr
    ), scale.stderr

    def alive() -> list[int]:
        return [
            p
            for p in worker_pids
            if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
        ]

    deadline = time.monotonic() + 15  # workers leave when their scheduler's connection breaks
    while alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not alive(), "workers outlived their scheduler"
    run_cli("down", "crash")
    assert not state.cluster_dir("crash").exists()
    assert port_is_free("127.0.0.1", port)


@pytest.mark.fault("down twice")
def test_down_all_and_down_twice():
    for name in ("a1", "a2"):
        run_cli("up", "--name", name, "--workers", "1", *FREE_PORTS, "--no-wait")
    out = run_cli("down", "--all").stdout
    assert "'a1' is down" in out and "'a2' is down" in out
    again = run_cli("down", "a1")
    assert "nothing to do" in again.stdout
    assert state.names() == []
    nothing = run_cli("down", "--all")
    assert nothing.stdout == "No clusters on this machine; nothing to do.\n"


def test_the_supervisor_log_is_read_with_its_rotated_copies_oldest_first():
    from clusterctl import supervisor

    log = supervisor.log_path("rotated")
    with state.locked("rotated"):  # released, it takes the emptied folder with it
        try:
            log.parent.mkdir()
            for suffix, text in ((".2", "oldest\n"), (".1", "older\n"), ("", "newest\n")):
                log.with_name(log.name + suffix).write_text(text)
            assert list(supervisor.logs("rotated")) == ["oldest", "older", "newest"]
            for suffix in (".2", ".1", ""):
                log.with_name(log.name + suffix).unlink()
            assert list(supervisor.logs("rotated")) == [], "no log yet: no lines, no error"
        finally:
            state.remove("rotated")


def test_cluster_names_complete_in_the_shell():
    """bash's side of click's completion: the names of this machine's clusters that start
    with what is typed, after --name and as `down`'s argument."""
    with state.locked("complete-me"):  # a cluster's folder, as `up` makes it
        try:
            for words, cword in (("clusterctl down comp", "2"), ("clusterctl status -n co", "3")):
                env = {"_CLUSTERCTL_COMPLETE": "bash_complete", "COMP_WORDS": words}
                offered = run_cli(env={**env, "COMP_CWORD": cword}).stdout.split()
                assert offered == ["plain,complete-me"], (words, offered)
            env = {"_CLUSTERCTL_COMPLETE": "bash_complete", "COMP_WORDS": "clusterctl down x"}
            assert run_cli(env={**env, "COMP_CWORD": "2"}).stdout.split() == []
        finally:
            state.remove("complete-me")
