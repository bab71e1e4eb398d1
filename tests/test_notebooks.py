"""The example notebooks, executed top to bottom with nbclient, and checked by their output."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("nbformat", reason="nbformat reads the notebooks")
pytest.importorskip("nbclient", reason="nbclient runs the notebooks")
pytest.importorskip("ipykernel", reason="ipykernel is the notebooks' kernel")
import nbformat
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "clusterctl" / "notebooks"
# Any free ports: the default ones are left to the tests that check them.
FREE_PORTS = {
    "DASK_CLUSTERCTL__SCHEDULER__PORT": "0",
    "DASK_CLUSTERCTL__SCHEDULER__DASHBOARD_PORT": "0",
}
# Each notebook on local processes, and in containers.
BACKENDS = [
    pytest.param("local", marks=[pytest.mark.local, pytest.mark.slow]),
    pytest.param("docker", marks=pytest.mark.images),
]


def run_notebook(name: str, env: dict[str, str], tmp_path: Path) -> str:
    """Execute ``notebooks/<name>`` in a fresh kernel whose working folder is a copy of the
    notebook's own folder, as in JupyterLab; return all it printed. The folder must be left
    as it was: a notebook writes only where the user says (CLUSTERCTL_OUTPUT) or its cache."""
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    folder = tmp_path / "notebooks"
    folder.mkdir()
    shutil.copy2(NOTEBOOKS / name, folder / name)
    old = dict(os.environ)
    os.environ.update(env)  # the kernel inherits this process's environment
    try:
        NotebookClient(
            notebook, timeout=300, resources={"metadata": {"path": str(folder)}}
        ).execute()
    finally:
        os.environ.clear()
        os.environ.update(old)
    assert sorted(p.name for p in folder.iterdir()) == [name], "the notebook wrote beside itself"
    return "".join(
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_getting_started(backend, tmp_path, request):
    if backend != "local":
        request.getfixturevalue("images")  # built once per session (skips without an engine)
    env = {"CLUSTERCTL_NAME": "nb-getting-started", "CLUSTERCTL_BACKEND": backend, **FREE_PORTS}
    printed = run_notebook("getting-started.ipynb", env, tmp_path)
    assert "workers: 2\n" in printed
    assert "dashboard: http://127.0.0.1:" in printed  # the port it really has
    assert "dashboard: http://127.0.0.1:8787" not in printed
    assert "mean: 0.500\n" in printed
    assert "after scale: 4\n" in printed
    assert "after scale down: 1\n" in printed
    assert "sum still right: True\n" in printed
    assert f"sum: {sum(range(30))}\n" in printed
    assert "after adapt, idle: 1\n" in printed


@pytest.mark.parametrize("backend", BACKENDS)
def test_dataframe_pipeline_results_outlive_the_cluster(backend, tmp_path, request):
    import dask
    import pandas as pd

    if backend != "local":
        request.getfixturevalue("images")
    env = {"CLUSTERCTL_NAME": "nb-pipeline", "CLUSTERCTL_BACKEND": backend, **FREE_PORTS}
    if backend == "local":  # by default the results go to the user's cache folder
        env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
        output = tmp_path / "cache" / "clusterctl" / "notebooks" / "dataframe-pipeline"
    else:  # or where the user says
        env["CLUSTERCTL_OUTPUT"] = str(tmp_path / "output")
        output = tmp_path / "output" / "dataframe-pipeline"
    printed = run_notebook("dataframe-pipeline.ipynb", env, tmp_path)
    df = dask.datasets.timeseries(start="2000-01-01", end="2000-01-15", freq="10s", seed=42)
    expected = df.compute()
    names = expected.name.nunique()
    assert "workers: 2\n" in printed
    assert f"names summarised: {names}\n" in printed and f"summary rows: {names}\n" in printed
    assert "all x positive: True\n" in printed
    assert f"rows kept: {(expected.x > 0).sum()}\n" in printed
    summary = pd.read_csv(output / "summary.csv").set_index("name").sort_index()
    means = expected.groupby("name").x.mean().sort_index()
    assert (abs(summary.x - means) < 1e-9).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_sklearn_grid_search_runs_on_the_workers(backend, tmp_path, request):
    env = {"CLUSTERCTL_NAME": "nb-sklearn", "CLUSTERCTL_BACKEND": backend, **FREE_PORTS}
    if backend != "local":  # the containers install scikit-learn from these wheels
        request.getfixturevalue("images")
        env["CLUSTERCTL_WHEELS"] = str(wheels_of("scikit-learn", tmp_path / "wheels"))
    printed = run_notebook("sklearn-joblib.ipynb", env, tmp_path)
    assert "workers: 2\n" in printed
    assert "best score above 0.9: True\n" in printed
    assert "fits ran on workers: 2\n" in printed


@pytest.mark.parametrize("backend", BACKENDS)
def test_worker_pools_route_tasks_by_resources(backend, tmp_path, request):
    if backend != "local":
        request.getfixturevalue("images")
    env = {"CLUSTERCTL_NAME": "nb-pools", "CLUSTERCTL_BACKEND": backend, **FREE_PORTS}
    printed = run_notebook("worker-pools.ipynb", env, tmp_path)
    assert "workers: 3\n" in printed
    assert "BIG tasks ran on: ['nb-pools-heavy-1']\n" in printed
    assert "only the heavy pool: True\n" in printed
    assert "other tasks used the light pool: True\n" in printed
    assert "after scaling the light pool: 4\n" in printed


@pytest.mark.parametrize("backend", BACKENDS)
def test_shipping_code_to_a_running_cluster(backend, tmp_path, request):
    if backend != "local":
        request.getfixturevalue("images")
    env = {
        "CLUSTERCTL_NAME": "nb-shipping",
        "CLUSTERCTL_BACKEND": backend,
        "CLUSTERCTL_OUTPUT": str(tmp_path / "output"),
        **FREE_PORTS,
    }
    printed = run_notebook("shipping-code.ipynb", env, tmp_path)
    assert "workers: 2\n" in printed
    assert "areas: [3.14, 12.56]\n" in printed  # the uploaded version, not the first


def wheels_of(package: str, folder: Path) -> Path:
    """Wheels of ``package`` at this environment's version (and what it needs), from PyPI."""
    from importlib.metadata import version

    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--only-binary=:all:",
            "--dest",
            str(folder),
            f"{package}=={version(package)}",
        ],
        check=True,
        timeout=600,
    )
    folder.chmod(0o755)
    return folder


@pytest.fixture(autouse=True)
def _no_cluster_left():
    yield
    from clusterctl.api import down

    names = ("nb-getting-started", "nb-pipeline", "nb-sklearn", "nb-pools", "nb-shipping")
    left = [name for name in names if down(name)]  # a failed notebook leaves its cluster
    assert not left, f"a notebook left its cluster running: {left}"


@pytest.mark.parametrize("backend", [pytest.param("local", marks=pytest.mark.local), BACKENDS[1]])
def test_the_labextension_s_new_button_makes_a_cluster_its_shutdown_removes(backend, request):
    """dask-labextension's "+ NEW" and "SHUTDOWN", through its own cluster manager, with
    the factory docs/notebooks.md gives: a cluster named lab-1 (lab-2 beside it), which
    its shutdown removes entirely."""
    import asyncio

    import dask

    import clusterctl
    from clusterctl import state

    if backend == "docker":
        request.getfixturevalue("images")

    async def imported() -> type:  # the module makes a manager on import: it needs a loop
        from dask_labextension.manager import DaskClusterManager

        return DaskClusterManager

    manager_class = asyncio.run(imported())
    factory = {"module": "clusterctl", "class": "new_cluster", "args": []}
    factory["kwargs"] = {"backend": backend, "workers": 1}

    async def new_twice_and_shut_down() -> None:
        manager = manager_class()
        made = [await manager.start_cluster(), await manager.start_cluster()]
        assert {"lab-1", "lab-2"} <= set(state.names())
        for model in made:
            assert model["workers"] == 1 and model["dashboard_link"].startswith("http")
            await manager.close_cluster(model["id"])

    try:
        with dask.config.set({"labextension.factory": factory}):
            asyncio.run(new_twice_and_shut_down())
        assert not {"lab-1", "lab-2"} & set(state.names()), "shutdown left a cluster"
    finally:
        for name in {"lab-1", "lab-2", "lab-3"} & set(state.names()):  # after a failure
            clusterctl.down(name)
