"""dask-ctl's own functions on a real clusterctl cluster: delete stops it, list and scale
don't.

The released dask-ctl (2024.1.0) no longer imports with current distributed (it imports the
removed ``distributed.cli.utils.install_signal_handlers``), so it runs in a virtualenv built
here once per session: ``python -m venv --system-site-packages --without-pip`` (so it sees
this clusterctl and distributed), then this pip installs ``dask-ctl==2024.1.0`` from PyPI
into it, and ``tests/daskctl_shim.py`` goes in with a ``.pth`` line, adding the missing
function as a no-op (in that virtualenv only). dask-ctl's functions then run in that
virtualenv's Python, unchanged.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest
from distributed import Client

import clusterctl
from clusterctl import state
from clusterctl.security import client_security
from tests.conftest import our_processes

pytestmark = pytest.mark.local

DASK_CTL = "dask-ctl==2024.1.0"
NAME = "ctl-dask"

# Runs in the virtualenv: one of dask-ctl's functions, then prints what it returned.
DRIVER = textwrap.dedent("""
    import json, sys
    import dask_ctl.config  # dask-ctl's defaults, loaded as its CLI loads them
    from dask_ctl.lifecycle import delete_cluster, list_clusters, scale_cluster

    what, name = sys.argv[1], sys.argv[2]
    if what == "list":
        print(json.dumps([cluster.name for cluster in list_clusters()]))
    elif what == "scale":
        scale_cluster(name, int(sys.argv[3]))
    elif what == "delete":
        delete_cluster(name)
""")


@pytest.fixture(scope="session")
def dask_ctl_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv's Python where dask-ctl 2024.1.0 imports (see the module's docstring)."""
    venv = tmp_path_factory.mktemp("dask-ctl-venv")
    python = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
        check=True,
        timeout=120,
    )
    pip = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", DASK_CTL],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if pip.returncode != 0:
        try:
            urllib.request.urlopen("https://pypi.org/simple/dask-ctl/", timeout=15).close()
        except OSError as exc:
            message = f"PYPI UNREACHABLE: dask-ctl is NOT TESTED, not passed ({exc})"
            print(f"\n{'!' * 80}\n{message}\n{'!' * 80}", file=sys.stderr)
            pytest.skip(message)
        pytest.fail(f"pip install {DASK_CTL} failed:\n{pip.stdout}\n{pip.stderr}")
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    shutil.copy(Path(__file__).with_name("daskctl_shim.py"), site)
    (site / "daskctl_shim.pth").write_text("import daskctl_shim\n")
    return python


def dask_ctl(python: Path, tmp_path: Path, *args: str) -> str:
    """Run one of dask-ctl's functions in the virtualenv; its output."""
    env = {
        **os.environ,
        # dask-ctl copies its config file into DASK_CONFIG (else ~/.config/dask)
        "DASK_CONFIG": str(tmp_path / "dask-config"),
        # clusterctl's discovery only: not dask-ctl's own scan of every scheduler on this
        # machine, nor dask-kubernetes' (dask-ctl's own switch)
        "DASK_CTL__DISABLE_DISCOVERY": json.dumps(["proxycluster", "kubecluster"]),
    }
    result = subprocess.run(
        [str(python), "-c", DRIVER, *args], capture_output=True, text=True, timeout=180, env=env
    )
    assert result.returncode == 0, f"dask-ctl {args}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def workers(address: str) -> int:
    """The number of workers the scheduler at ``address`` has (it must answer)."""
    with Client(address, security=client_security(NAME, True), timeout=30) as client:
        return len(client.scheduler_info(n_workers=-1)["workers"])


@pytest.mark.slow
def test_dask_ctl_delete_stops_while_list_and_scale_leave_it_running(dask_ctl_python, tmp_path):
    """Each dask-ctl call runs in a process of its own, which has ended (dropping its
    cluster objects) before the cluster is looked at."""
    cluster = clusterctl.up(name=NAME, workers=1, port=0, dashboard_port=0)
    address = cluster.scheduler_address
    cluster.close()  # disconnects: the cluster runs on
    try:
        assert NAME in json.loads(dask_ctl(dask_ctl_python, tmp_path, "list", NAME))
        assert workers(address) == 1, "dask-ctl's list_clusters() stopped the cluster"

        dask_ctl(dask_ctl_python, tmp_path, "scale", NAME, "2")
        deadline = time.monotonic() + 60
        while workers(address) != 2:
            assert time.monotonic() < deadline, "dask-ctl's scale_cluster() did not scale"
            time.sleep(0.5)

        # clusterctl's own from_name keeps its meaning: close() disconnects
        clusterctl.Cluster.from_name(NAME).close()
        assert workers(address) == 2

        dask_ctl(dask_ctl_python, tmp_path, "delete", NAME)
        assert NAME not in [found.name for found in clusterctl.list_clusters()]
        assert not state.cluster_dir(NAME).exists()
        left = [
            p
            for p in our_processes(os.environ["XDG_STATE_HOME"])
            if p.environ().get("CLUSTERCTL_CLUSTER") == NAME
        ]
        assert not left, f"left running after dask-ctl's delete: {[p.cmdline() for p in left]}"
    finally:
        clusterctl.down(NAME)
