"""Hostile and careless use on one machine: commands twice and at once, damaged state,
another user, a full disk, a stepped clock, an untrusted state folder.

Each case asserts the message and exit status, that the running clusters (the module's
bystander, and the cluster a case aims at when it should survive) are untouched, and that
nothing of a removed cluster is left: no marked process, no state folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

import clusterctl
from clusterctl import processes, state, supervisor
from clusterctl.backends import survey
from tests.conftest import FREE_PORTS, assert_client_refused, cli_command, listed, run_cli

pytestmark = [pytest.mark.slow, pytest.mark.bad_input, pytest.mark.timeout(300)]

needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="NEEDS ROOT: runs a client as `nobody` / mounts a tmpfs"
)


def up(name: str, *extra: str, env: dict[str, str] | None = None) -> None:
    run_cli("up", "--name", name, "--workers", "1", *FREE_PORTS, *extra, env=env)


def marked(name: str, home: Path | None = None) -> list[psutil.Process]:
    folder = (home / "clusterctl" / name) if home else state.cluster_dir(name)
    return processes.find_by_marker(folder)


def assert_gone(name: str) -> None:
    """Nothing of cluster ``name`` is left, right after `down` returned."""
    left = marked(name)
    assert not left, f"processes of {name} outlived down: {[p.cmdline() for p in left]}"
    assert not state.cluster_dir(name).exists(), f"the state folder of {name} is left"
    assert name not in [f.name for f in survey()]


def assert_rejected(result: subprocess.CompletedProcess, status: int, message: str) -> None:
    assert result.returncode == status, result.stdout + result.stderr
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr + result.stdout, result.stderr


def workers_of(name: str) -> list[tuple[str, str]]:
    report = json.loads(run_cli("status", "--name", name, "--json").stdout)
    return sorted((w["name"], w["detail"]) for w in report["workers"] if w["state"] == "running")


def computes(name: str, workers: int) -> None:
    with clusterctl.connect(name) as client:
        client.wait_for_workers(workers, timeout=60)
        assert len(client.scheduler_info()["workers"]) == workers
        assert client.submit(sum, [20, 22], pure=False).result(timeout=30) == 42


# --- a second command, and two at once ------------------------------------------------------


def test_up_of_a_running_name_is_refused_and_the_cluster_keeps_its_workers(bystander):
    up("c1", "--workers", "2")
    try:
        before = workers_of("c1")
        again = run_cli("up", "--name", "c1", "--port", "0", "--dashboard-port", "0", check=False)
        assert_rejected(again, 2, "a cluster named 'c1' already runs")
        assert workers_of("c1") == before, "the second up touched the first one's workers"
        computes("c1", 2)
    finally:
        run_cli("down", "c1")
    assert_gone("c1")
    bystander.assert_untouched()


def test_two_up_of_one_name_at_once_exactly_one_wins_and_is_untouched(bystander):
    command = cli_command(
        "up", "--name", "race", "--workers", "2", "--port", "0", "--dashboard-port", "0"
    )
    procs = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = [(p.wait(180), p.stdout.read(), p.stderr.read()) for p in procs]
    try:
        assert sorted(r[0] for r in results) == [0, 2], results
        loser = next(r for r in results if r[0] == 2)
        assert "a cluster named 'race' already runs" in loser[2], loser
        computes("race", 2)
    finally:
        run_cli("down", "race")
    assert_gone("race")
    bystander.assert_untouched()


@pytest.mark.fault("down racing scale 30")
def test_down_racing_scale_30_leaves_no_worker_running(bystander):
    up("dr")
    scale = subprocess.Popen(
        cli_command("scale", "30", "--name", "dr", "--no-wait"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.5)  # the scale has the lock, or is about to take it
    down = run_cli("down", "dr")
    scale.wait(180)
    assert "Cluster 'dr' is down." in down.stdout
    assert_gone("dr")
    assert "Traceback" not in scale.stderr.read()
    bystander.assert_untouched()


@pytest.mark.fault("the supervisor killed, then scale, scale and adapt at once")
def test_at_most_one_supervisor_ever(bystander):
    up("sup")
    try:
        record = state.read_json(state.cluster_dir("sup") / supervisor.RECORD)
        psutil.Process(record["pid"]).kill()
        commands = [
            ("scale", "2", "--name", "sup"),
            ("scale", "2", "--name", "sup"),
            ("adapt", "--name", "sup", "--minimum", "1", "--maximum", "3"),
        ]
        procs = [
            subprocess.Popen(cli_command(*c), stderr=subprocess.PIPE, text=True) for c in commands
        ]
        assert [p.wait(180) for p in procs] == [0, 0, 0], [p.stderr.read() for p in procs]

        def supervisors() -> list[psutil.Process]:
            return [p for p in marked("sup") if "clusterctl.supervisor" in p.cmdline()]

        (only,) = supervisors()
        assert state.read_json(state.cluster_dir("sup") / supervisor.RECORD)["pid"] == only.pid
        # A second one started by hand exits at once: the first holds supervisor.lock.
        extra = subprocess.run(
            [sys.executable, "-m", "clusterctl.supervisor", "sup"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert extra.returncode == 0, extra.stderr
        assert "another supervisor of sup runs" in supervisor.log_path("sup").read_text()
        # The last word holds, whoever said it: adapt, then scale.
        run_cli("adapt", "--name", "sup", "--minimum", "1", "--maximum", "3")
        assert supervisor.adapt_settings("sup") == {"minimum": 1, "maximum": 3, "group": None}
        assert "Adaptive scaling turned off." in run_cli("scale", "2", "--name", "sup").stderr
        assert supervisor.adapt_settings("sup") is None
        assert [p.pid for p in supervisors()] == [only.pid]
        computes("sup", 2)
    finally:
        run_cli("down", "sup")
    assert_gone("sup")
    bystander.assert_untouched()


def test_adapt_beyond_the_worker_total_is_refused(bystander, tmp_path):
    spec = tmp_path / "groups.yaml"
    spec.write_text("workers: {a: {count: 1}, b: {count: 0}}\n")
    up("groups", "-f", str(spec))
    try:
        refused = run_cli(
            "adapt", "--name", "groups", "--group", "b", "--maximum", "1000", check=False
        )
        assert_rejected(refused, 2, "this one may adapt up to 999")
        assert supervisor.adapt_settings("groups") is None
    finally:
        run_cli("down", "groups")
    assert_gone("groups")
    bystander.assert_untouched()


# --- damaged state: one broken cluster never breaks the others ------------------------------


def damage(name: str, how: str) -> None:
    folder = state.cluster_dir(name)
    if how == "spec-list":
        (folder / "spec.json").write_text("[1]")
    elif how == "spec-half-written":
        text = (folder / "spec.json").read_text()
        (folder / "spec.json").write_text(text[: len(text) // 2])
    else:
        record = folder / "processes" / f"{name}-worker-1.json"
        data = json.loads(record.read_text())
        if how == "record-without-started":
            del data["started"]
        else:
            data["pid"] = {"pid-text": "abc", "pid-negative": -5}[how]
        record.write_text(json.dumps(data))


DAMAGES = ["spec-list", "spec-half-written", "record-without-started", "pid-text", "pid-negative"]


@pytest.mark.parametrize("how", DAMAGES)
def test_a_damaged_cluster_is_reported_alone_and_down_removes_all_of_it(bystander, how):
    up("dmg")
    damage("dmg", how)
    assert (listed("dmg")["backend"], listed("dmg")["status"]) == ("local", "broken")
    assert listed("bystander")["status"] == "running"
    status = run_cli("status", "--name", "dmg", check=False)
    assert_rejected(status, 1, "cluster 'dmg' is broken")
    assert_rejected(run_cli("scale", "2", "--name", "dmg", check=False), 1, "is broken")
    refused = run_cli("up", "--name", "dmg", "--port", "0", "--dashboard-port", "0", check=False)
    assert_rejected(refused, 2, "is damaged")
    run_cli("status", "--name", "bystander")  # the others work
    assert "Cluster 'dmg' is down." in run_cli("down", "dmg").stdout
    assert_gone("dmg")
    bystander.assert_untouched()


def test_down_all_with_a_broken_cluster_among_them(bystander):
    up("da1")
    up("da2")
    damage("da1", "spec-list")
    out = run_cli("down", "--all").stdout
    assert "'da1' is down" in out and "'da2' is down" in out and "'bystander' is down" in out
    for name in ("da1", "da2", "bystander"):
        assert_gone(name)
    bystander.restart()


def test_lost_records_still_go_down(bystander):
    """A record lost (a crash between start and record): the marker finds the process."""
    up("lost", "--workers", "2")
    shutil.rmtree(state.cluster_dir("lost") / "processes")
    assert run_cli("down", "lost").returncode == 0
    assert_gone("lost")
    bystander.assert_untouched()


def test_a_deleted_state_folder_is_found_by_the_marker_and_goes_down(bystander):
    up("nofolder", "--workers", "2")
    assert len(marked("nofolder")) >= 4  # scheduler, supervisor, and two workers (nannies)
    shutil.rmtree(state.cluster_dir("nofolder"))
    row = listed("nofolder")
    assert row["status"] == "broken" and row["problem"].startswith("its state folder is gone")
    assert "Cluster 'nofolder' is down." in run_cli("down", "nofolder").stdout
    assert_gone("nofolder")
    bystander.assert_untouched()


def test_a_deleted_mount_folder_does_not_keep_down_from_working(bystander, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"worker: {{mounts: ['{data}:/data']}}\n")
    up("mnt", "-f", str(spec))
    data.rmdir()
    assert listed("mnt")["status"] == "running"
    assert run_cli("down", "mnt").returncode == 0
    assert_gone("mnt")
    bystander.assert_untouched()


def test_a_deleted_log_is_a_message(bystander):
    up("nolog")
    try:
        (state.cluster_dir("nolog") / "logs" / "nolog-worker-1.log").unlink()
        result = run_cli("logs", "nolog-worker-1", "--name", "nolog", check=False)
        assert_rejected(result, 1, "the log of nolog-worker-1 can't be read")
    finally:
        run_cli("down", "nolog")
    assert_gone("nolog")
    bystander.assert_untouched()


def test_a_stepped_wall_clock_changes_nothing(bystander, monkeypatch):
    """Stepping the real clock of a shared machine is not ours to do: the wall clock and
    psutil's boot time (which moves with it) are shifted for this process instead."""
    shifted = time.time() + 3600
    monkeypatch.setattr(time, "time", lambda: shifted)
    monkeypatch.setattr(psutil, "boot_time", lambda: shifted - 100)
    real = psutil.Process.create_time
    monkeypatch.setattr(psutil.Process, "create_time", lambda self: real(self) + 3600)
    (found,) = [f for f in survey() if f.name == "bystander"]
    assert found.status == "running"
    monkeypatch.undo()
    bystander.assert_untouched()


# --- another user of this machine -----------------------------------------------------------

AS_NOBODY = textwrap.dedent("""
    import os, pwd, sys
    from click.testing import CliRunner
    from distributed import Client
    from clusterctl.cli import cli
    key, home, *targets = sys.argv[1:]
    def uid_on(url):
        with Client(url, timeout=5) as client:
            return client.submit(os.getuid).result(timeout=5)
    # A refused Client is left half-made in a reference cycle; collected while the next one
    # starts its loop, its __del__ deadlocks (distributed 2026.8): collect each one at once.
    import gc
    # As root first, so that every module a client and `list` import is loaded: nobody
    # can't read the modules of root's Python once it is nobody.
    for url in targets:
        try:
            uid_on(url)
        except Exception:
            pass
        gc.collect()
    CliRunner().invoke(cli, ["list"])
    nobody = pwd.getpwnam("nobody")
    os.setgroups([]); os.setgid(nobody.pw_gid); os.setuid(nobody.pw_uid)
    try:
        open(key).read()
        print("read the key")
    except PermissionError:
        print("key: permission denied")
    for url in targets:
        try:
            uid = uid_on(url)
            print("ran code as uid", uid, "on", url)
        except Exception as exc:
            print("refused:", url, type(exc).__name__, exc)
        gc.collect()
    listed = CliRunner().invoke(cli, ["list"], env={"XDG_STATE_HOME": home})
    print("list:", listed.exit_code, listed.output)
    """)


@needs_root
def test_another_user_can_neither_connect_nor_read_the_keys(bystander):
    address = bystander.cluster.scheduler_address
    assert address.startswith("tls://"), "a default local cluster must use TLS"
    assert_client_refused(address)
    up("plain", "--no-tls")  # the control: what nobody can do to a cluster without TLS
    try:
        plain = clusterctl.from_name("plain")
        plain_address = plain.scheduler_address
        plain.close()
        key = state.cluster_dir("bystander") / "tls" / "key.pem"
        targets = [address, address.replace("tls://", "tcp://"), plain_address]
        result = subprocess.run(
            [sys.executable, "-c", AS_NOBODY, str(key), os.environ["XDG_STATE_HOME"], *targets],
            capture_output=True,
            text=True,
            timeout=120,
            cwd="/",
        )
    finally:
        run_cli("down", "plain")
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "key: permission denied" in out
    assert f"refused: {targets[0]}" in out and f"refused: {targets[1]}" in out
    assert f"ran code as uid {os.getuid()} on {plain_address}" in out, "the control failed"
    assert "list: 2 Error: state folder" in out, out
    assert_gone("plain")
    bystander.assert_untouched()


def test_host_off_loopback_without_tls_is_refused(bystander, tmp_path):
    refused = run_cli("up", "--name", "open", "--host", "0.0.0.0", "--no-tls", check=False)
    assert_rejected(refused, 2, "scheduler.host: 0.0.0.0 can be reached from other machines")
    env = {"DASK_CLUSTERCTL__SCHEDULER__HOST": "0.0.0.0", "DASK_CLUSTERCTL__SECURITY__TLS": "false"}
    refused = run_cli("up", "--name", "open", check=False, env=env)
    assert_rejected(refused, 2, "without TLS anyone who reaches it runs code as you")
    assert state.names() == ["bystander"]
    bystander.assert_untouched()


# --- an untrusted or unusable state folder -----------------------------------------------------


def state_env(path: Path | str) -> dict[str, str]:
    return {"XDG_STATE_HOME": str(path)}


@pytest.mark.parametrize("case", ["owned-by-another", "writable-by-others"])
def test_a_state_root_others_control_is_refused(bystander, tmp_path, case):
    home = tmp_path / "shared"
    (home / "clusterctl" / "victim" / "logs").mkdir(parents=True)
    target = tmp_path / "target.txt"
    target.write_text("untouched\n")
    (home / "clusterctl" / "victim" / "logs" / "scheduler.log").symlink_to(target)
    root = home / "clusterctl"
    if case == "owned-by-another":
        if os.geteuid() != 0:
            pytest.skip("NEEDS ROOT: chown to another user")
        os.chown(root, 65534, 65534)
        message = "owned by uid 65534, not by you"
    else:
        root.chmod(0o777)
        message = "other users may write to it"
    for args in (("up", "--name", "victim", "--port", "0", "--dashboard-port", "0"), ("list",)):
        assert_rejected(run_cli(*args, check=False, env=state_env(home)), 2, message)
    assert target.read_text() == "untouched\n"
    assert not marked("victim", home)
    bystander.assert_untouched()


def test_a_symlinked_file_in_our_own_folder_is_never_written_through(bystander, tmp_path):
    home = tmp_path / "home"
    logs = home / "clusterctl" / "victim" / "logs"
    logs.mkdir(parents=True)
    (home / "clusterctl").chmod(0o700)
    target = tmp_path / "target.txt"
    target.write_text("untouched\n")
    (logs / "scheduler.log").symlink_to(target)
    refused = run_cli("up", "--name", "victim", *FREE_PORTS, check=False, env=state_env(home))
    assert_rejected(refused, 2, "is damaged")
    assert target.read_text() == "untouched\n"
    assert run_cli("down", "victim", env=state_env(home)).returncode == 0
    assert not (home / "clusterctl" / "victim").exists()
    assert target.read_text() == "untouched\n"
    bystander.assert_untouched()


@pytest.mark.parametrize("case", ["a-file", "under-proc"])
def test_an_unusable_state_home_is_a_message(bystander, tmp_path, case):
    home = tmp_path / "file" if case == "a-file" else Path("/proc/clusterctl-state")
    if case == "a-file":
        home.write_text("not a folder")
    up_ = run_cli("up", "--name", "x", *FREE_PORTS, check=False, env=state_env(home))
    assert_rejected(up_, 2, "state folder")
    listing = run_cli("list", check=False, env=state_env(home))  # none there, or a message
    assert listing.returncode in (0, 2) and "Traceback" not in listing.stderr, listing.stderr
    bystander.assert_untouched()


def test_a_relative_state_home_is_ignored(bystander, tmp_path):
    result = run_cli(
        "list", env={"XDG_STATE_HOME": "relative/state", "HOME": str(tmp_path)}, check=False
    )
    assert result.returncode == 0 and "No clusters." in result.stdout
    assert not Path("relative").exists()
    bystander.assert_untouched()


def test_cluster_folders_and_files_are_private(bystander):
    folder = state.cluster_dir("bystander")
    assert folder.stat().st_mode & 0o777 == 0o700
    assert state.root().stat().st_mode & 0o777 == 0o700
    for path in folder.rglob("*"):
        if path.is_file():
            assert path.stat().st_mode & 0o077 == 0, f"{path} is open to others"
    bystander.assert_untouched()


# --- a full disk ------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs to use as XDG_STATE_HOME, and a way to fill it."""
    if os.geteuid() != 0:
        pytest.skip("NEEDS ROOT: mounts a tmpfs")
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=700", "tmpfs", str(mount)], check=True
    )
    filler = mount / "filler"

    def fill(full: bool) -> None:
        filler.unlink(missing_ok=True)
        if full:
            fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                while os.write(fd, b"x" * 4096):
                    pass
            except OSError:
                pass
            finally:
                os.close(fd)

    yield mount, fill
    fill(False)
    run_cli("down", "--all", env=state_env(mount), check=False)
    processes.kill(p for p in psutil.process_iter() if _home_of(p) == str(mount))
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _home_of(proc: psutil.Process) -> str | None:
    try:
        return proc.environ().get("XDG_STATE_HOME")
    except psutil.Error:
        return None


@pytest.mark.fault("the disk fills up during up and scale")
def test_a_full_disk_is_a_message_and_leaves_no_half_made_cluster(bystander, small_disk):
    mount, fill = small_disk
    env = state_env(mount)
    fill(True)
    refused = run_cli(
        "up", "--name", "full", "--port", "0", "--dashboard-port", "0", check=False, env=env
    )
    assert_rejected(refused, 1, "the disk is full")
    assert not list(mount.rglob(".tmp-*")), "half-written files left"
    assert not marked("full", mount)
    fill(False)
    up("full", env=env)
    before = sorted(p.pid for p in marked("full", mount))
    fill(True)
    refused = run_cli("scale", "3", "--name", "full", check=False, env=env)
    assert_rejected(refused, 1, "the disk is full")
    assert not list(mount.rglob(".tmp-*")), "half-written files left"
    assert sorted(p.pid for p in marked("full", mount)) == before, "an unrecorded worker runs"
    fill(False)
    assert "1 worker" in run_cli("scale", "1", "--name", "full", env=env).stdout
    run_cli("down", "full", env=env)
    assert not marked("full", mount)
    bystander.assert_untouched()
