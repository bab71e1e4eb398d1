"""Workers that can't start, and one cluster driven from two interpreters (issue 29, items
1 and 7).

- Every way a worker can fail at start that we could make real (a dask setting its code
  can't take, a preload that raises or exits, a preload module that isn't there, an
  interpreter that can't start): `clusterctl up` exits 1 within 30 s with the worker's own
  error in one line, and nothing of the cluster is left but the record of why.
- A worker that starts, then crashes on every restart (its preload broken after `up`) is
  restarted with a growing delay and given up after crashloop.MAX_TRIES deaths; `status`
  and `list` say so; `scale` tries again.
- `scale` run by another virtualenv's Python starts workers (and a supervisor) with the
  interpreter `up` ran.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

import clusterctl
from clusterctl import crashloop, processes, state, supervisor
from clusterctl.backends import survey
from tests.conftest import FREE_PORTS, run_cli

UP_WITHIN = 30.0  # seconds: the bound for a failed `up`


def write_spec(folder: Path, name: str, env: dict[str, str], count: int = 2) -> Path:
    spec = {"name": name, "workers": {"w": {"count": count, "env": env}}}
    path = folder / f"{name}.yaml"
    path.write_text(json.dumps(spec))  # JSON is YAML
    return path


def assert_nothing_left(name: str) -> None:
    left = processes.find_by_marker(state.cluster_dir(name))
    assert not left, f"processes of {name} left: {[p.cmdline() for p in left]}"
    assert not state.cluster_dir(name).exists(), f"the state folder of {name} is left"
    assert name not in [f.name for f in survey()], f"{name} is still listed"


def forget_removal(name: str) -> None:
    """Remove the record a failed `up` keeps (and its folder, once empty): the session
    checks that nothing of ours is left in the state root."""
    folder = state.root() / state.REMOVED
    for path in folder.glob(f"*-{name}.json"):
        path.unlink()
    with contextlib.suppress(OSError):
        folder.rmdir()


def preload(folder: Path, name: str, body: str) -> str:
    path = folder / f"{name}.py"
    path.write_text(body)
    return json.dumps([str(path)])


# Each case: the group env, given a tmp folder, and what the one-line error must say.
CASES = {
    "bad-dask-memory-setting": (
        lambda tmp: {"DASK_DISTRIBUTED__WORKER__MEMORY__TARGET": "bogus"},
        "MemoryError",  # distributed multiplies the limit by the string
    ),
    "bad-dask-time-setting": (
        lambda tmp: {"DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "bogus"},
        "KeyError: 'Invalid time unit: bogus.",
    ),
    "preload-raises": (
        lambda tmp: {
            "DASK_DISTRIBUTED__WORKER__PRELOAD": preload(
                tmp, "raising", "raise RuntimeError('preload says no')\n"
            )
        },
        "RuntimeError: preload says no",
    ),
    "preload-exits": (
        lambda tmp: {
            "DASK_DISTRIBUTED__WORKER__PRELOAD": preload(tmp, "exiting", "raise SystemExit(3)\n")
        },
        "SystemExit: 3",
    ),
    "preload-missing": (
        lambda tmp: {"DASK_DISTRIBUTED__WORKER__PRELOAD": '["no_such_preload_module_29"]'},
        "ModuleNotFoundError: No module named 'no_such_preload_module_29'",
    ),
    "interpreter-cannot-start": (
        lambda tmp: {"PYTHONHOME": str(tmp / "no-python-here")},
        "Fatal Python error: init_fs_encoding",
    ),
}


@pytest.mark.local
@pytest.mark.bad_input
@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", sorted(CASES))
def test_up_fails_at_once_when_a_worker_cannot_start(case: str, tmp_path: Path, bystander) -> None:
    make_env, expected = CASES[case]
    name = f"crash-{case}"[:40]
    spec = write_spec(tmp_path, name, make_env(tmp_path))
    started = time.monotonic()
    try:
        result = run_cli("up", "-f", str(spec), *FREE_PORTS, check=False, timeout=120)
        took = time.monotonic() - started
        assert result.returncode == 1, result.stdout + result.stderr
        assert took < UP_WITHIN, f"`up` took {took:.1f} s to fail"
        errors = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(errors) == 1, f"not one line:\n{result.stderr}"
        assert errors[0].startswith(f"Error: worker {name}-w-"), errors[0]
        assert "exited while starting: " in errors[0] and expected in errors[0], errors[0]
        assert errors[0].endswith(f"(its log: `clusterctl logs --name {name}`)"), errors[0]
        assert "Traceback" not in result.stderr
        assert_nothing_left(name)
        record = run_cli("logs", "--name", name).stdout  # where the error says its log is
        assert expected in record and f"{name}-w-" in record, record
        bystander.assert_untouched()
    finally:
        run_cli("down", name, check=False)
        forget_removal(name)


@pytest.mark.local
@pytest.mark.bad_input
@pytest.mark.timeout(120)
def test_the_api_up_fails_the_same_way(tmp_path: Path) -> None:
    """`clusterctl.up()` waits under the cluster's lock, before any supervisor: the same
    error, and nothing left."""
    name = "crash-api"
    env = {"DASK_DISTRIBUTED__WORKER__PRELOAD": '["no_such_preload_module_29"]'}
    try:
        with pytest.raises(crashloop.WorkerStartFailed) as failed:
            clusterctl.up(str(write_spec(tmp_path, name, env)), port=0, dashboard_port=0)
        message = str(failed.value)
        assert "No module named 'no_such_preload_module_29'" in message
        assert "\n" not in message and f"`clusterctl logs --name {name}`" in message
        assert_nothing_left(name)
    finally:
        run_cli("down", name, check=False)
        forget_removal(name)


def status_of(name: str) -> dict:
    return json.loads(run_cli("status", "--name", name, "--json").stdout)


@pytest.mark.local
@pytest.mark.slow
@pytest.mark.fault
@pytest.mark.timeout(240)
def test_a_worker_that_crashes_on_every_restart_is_given_up(tmp_path: Path) -> None:
    """Its preload is fine at `up`, then broken; one worker is killed. The supervisor
    restarts it after 1, 2, 4, 8 s, gives up at the 5th death, and says so in `status` and
    `list`; nothing restarts after that. `scale` tries again: it fails while the preload is
    broken, and brings the group back once it is fixed."""
    name = "crash-loop"
    module = tmp_path / "fragile.py"
    module.write_text("ok = True\n")
    env = {"DASK_DISTRIBUTED__WORKER__PRELOAD": json.dumps([str(module)])}
    spec = write_spec(tmp_path, name, env)
    try:
        run_cli("up", "-f", str(spec), *FREE_PORTS)
        module.write_text("raise SystemExit(1)\n")
        victim = json.loads(
            (state.cluster_dir(name) / "processes" / f"{name}-w-1.json").read_text()
        )
        psutil.Process(victim["pid"]).kill()

        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            loops = supervisor.crash_loops(name)
            if loops and crashloop.given_up(loops["w"]):
                break
            time.sleep(1)
        else:
            pytest.fail(f"not given up within 90 s: {supervisor.crash_loops(name)}")
        assert loops["w"]["tries"] == crashloop.MAX_TRIES
        report = status_of(name)
        [line] = report["crash_loops"]
        assert line.startswith("group w: 1 of 2, crash-looping: SystemExit: 1"), line
        shown = run_cli("status", "--name", name).stdout
        assert "group w: 1 of 2, crash-looping: SystemExit: 1" in shown, shown
        listed = run_cli("list").stdout
        assert "crash-looping: SystemExit: 1" in listed, listed
        log = list(supervisor.logs(name))
        deaths = [line for line in log if "exited while starting (" in line]
        assert len(deaths) == crashloop.MAX_TRIES - 1, deaths
        assert any("gave up after 5 deaths" in line for line in log), log[-10:]

        # Given up: no more restarts (the last death is long past its delay by now).
        starts = len([p for p in state.cluster_dir(name).glob("processes/*.json")])
        time.sleep(5)
        assert len(list(state.cluster_dir(name).glob("processes/*.json"))) == starts
        assert len([line for line in supervisor.logs(name) if "Replacing" in line]) == len(
            [line for line in log if "Replacing" in line]
        ), "the supervisor still restarts a group it gave up"

        result = run_cli("scale", "2", "--name", name, check=False)  # still broken
        assert result.returncode == 1, result.stdout + result.stderr
        assert "exited while starting: SystemExit: 1" in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr

        module.write_text("ok = True\n")
        assert "2 workers" in run_cli("scale", "2", "--name", name).stdout
        deadline = time.monotonic() + 30
        while supervisor.crash_loops(name) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert supervisor.crash_loops(name) == {}, "a worker that registered did not reset it"
        assert status_of(name)["crash_loops"] == []
    finally:
        run_cli("down", name, check=False)
    assert_nothing_left(name)


def test_first_error_finds_the_root_cause() -> None:
    """The one line: the first exception printed (distributed's "Nanny failed to start"
    comes after it), with the error logged before one that has no message."""
    log = [
        "2026-12-05 10:00:00,000 - distributed.nanny - ERROR - Failed to initialize worker",
        "Traceback (most recent call last):",
        '  File "x.py", line 1, in <module>',
        "MemoryError",
        "RuntimeError: Nanny failed to start.",
    ]
    assert crashloop.first_error(log) == "Failed to initialize worker: MemoryError"
    assert crashloop.first_error(["SystemExit: 3", "AssertionError: x"]) == "SystemExit: 3"
    assert crashloop.first_error(["a", "killed", ""]) == "killed"
    assert crashloop.first_error([]) == "it printed nothing"
    assert len(crashloop.first_error(["KeyError: " + "x" * 1000])) == crashloop.ERROR_CHARS
    assert [crashloop.delay(n) for n in range(1, 5)] == [1, 2, 4, 8]


@pytest.mark.local
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_scale_from_another_virtualenv_uses_the_interpreter_of_up(tmp_path: Path) -> None:
    """`up` from this Python, then (supervisor killed) `scale 4` from a second virtualenv:
    every worker, and the supervisor that `scale` starts again, run `up`'s interpreter."""
    venv = tmp_path / "other-venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    other = venv / "bin" / "python"
    name = "interp-two-venvs"
    try:
        run_cli("up", "--name", name, "--workers", "2", *FREE_PORTS)
        recorded = json.loads((state.cluster_dir(name) / state.PYTHON).read_text())["executable"]
        record = json.loads((state.cluster_dir(name) / supervisor.RECORD).read_text())
        psutil.Process(record["pid"]).kill()
        psutil.wait_procs([psutil.Process(record["pid"])], timeout=10)

        result = subprocess.run(
            [str(other), "-m", "clusterctl", "scale", "4", "--name", name],
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "4 workers" in result.stdout

        with clusterctl.connect(name) as client:
            prefixes = client.run(lambda: sys.prefix)
        assert len(prefixes) == 4
        assert set(prefixes.values()) == {sys.prefix}, f"workers run other Pythons: {prefixes}"
        assert str(venv) not in set(prefixes.values())
        new_record = json.loads((state.cluster_dir(name) / supervisor.RECORD).read_text())
        assert new_record["pid"] != record["pid"], "`scale` did not start a new supervisor"
        assert psutil.Process(new_record["pid"]).cmdline()[0] == recorded
        assert not recorded.startswith(str(venv))
    finally:
        run_cli("down", name, check=False)
    assert_nothing_left(name)
