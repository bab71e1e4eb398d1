"""A graph the scheduler cannot unpickle (a module only the client has) fails within
seconds with the module's name, never waits forever: clusterctl.graphcheck, the scheduler
preload every clusterctl scheduler loads.

Without it (distributed 2026.8), every shape below but joblib's raised at once, yet with
"Error during deserialization of the task graph", which names no module; joblib's dask
backend, and so scikit-learn's n_jobs, waited forever.

The module is written to a temporary folder on this process's sys.path only: the local
backend's scheduler runs this same interpreter without that folder, the docker backend's
image has never seen it.
"""

from __future__ import annotations

import sys
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from importlib import import_module
from importlib.util import find_spec
from types import ModuleType
from typing import Any

import pytest
from distributed import Client, wait

import clusterctl
from clusterctl.graphcheck import explain

BOUND = 10.0  # seconds within which the error must arrive

SOURCE = """
def inc(x):
    return x + 1


class Thing:
    pass


class Noise(UserWarning):
    pass
"""


@pytest.fixture
def missing(tmp_path) -> Iterator[ModuleType]:
    """A module of this process only, under a name used nowhere else."""
    name = f"clusterctl_absent_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(SOURCE)
    sys.path.insert(0, str(tmp_path))
    try:
        yield import_module(name)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(name, None)


def outcome_within(work: Callable[[], Any], bound: float = BOUND) -> tuple[BaseException, float]:
    """The exception ``work`` raises and how long it took; fails if it returns, or if it is
    still waiting after ``bound`` seconds (it is then left running, in a daemon thread)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = work()
        except BaseException as exc:  # what the user would see
            box["error"] = exc

    start = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(bound)
    took = time.monotonic() - start
    assert not thread.is_alive(), f"still waiting after {bound:g} s: the computation hangs"
    assert "error" in box, f"computed {box.get('result')!r}: the module was there after all"
    return box["error"], took


def assert_names(error: BaseException, module: str) -> None:
    text = str(error)
    assert f"cannot import module {module!r}" in text, text
    assert "clusterctl image build --sync" in text, text


@pytest.fixture(scope="module")
def cluster() -> Iterator[clusterctl.Cluster]:
    # Two threads: joblib's dask backend runs in-process when the cluster has only one.
    c = clusterctl.up(name="graphcheck", workers=1, threads=2, port=0, dashboard_port=0)
    yield c
    c.shutdown()


@pytest.fixture(scope="module")
def client(cluster) -> Iterator[Client]:
    with Client(cluster) as c:
        yield c


def _joblib(mod: ModuleType) -> Any:
    import joblib

    with joblib.parallel_config(backend="dask"):
        return joblib.Parallel()(joblib.delayed(mod.inc)(i) for i in range(4))


def _sklearn(mod: ModuleType) -> Any:
    """scikit-learn sends the client's warning filters with every task: one naming a class
    of a module the scheduler lacks makes every task unreadable there."""
    import joblib
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV

    search = GridSearchCV(LogisticRegression(), {"C": [0.1, 1.0]}, cv=2)
    with warnings.catch_warnings(), joblib.parallel_config(backend="dask"):
        warnings.filterwarnings("ignore", category=mod.Noise)
        return search.fit([[0], [1]] * 4, [0, 1] * 4)


def _bag(mod: ModuleType, client: Client) -> Any:
    import dask.bag as db

    return client.compute(db.from_sequence([1, 2, 3], npartitions=2).map(mod.inc)).result()


def _array(mod: ModuleType, client: Client) -> Any:
    import dask.array as da

    return client.compute(da.ones(10, chunks=5).map_blocks(mod.inc).sum()).result()


def _dataframe(mod: ModuleType, client: Client) -> Any:
    import dask.dataframe as dd
    import pandas as pd

    frame = dd.from_pandas(pd.DataFrame({"a": range(10)}), npartitions=2)
    return client.compute(frame.a.map_partitions(mod.inc).sum()).result()


def _persist(mod: ModuleType, client: Client) -> Any:
    import dask

    persisted = client.persist(dask.delayed(mod.inc)(1))
    wait(persisted)
    return persisted.compute()


def _delayed_compute(mod: ModuleType, client: Client) -> Any:
    import dask

    return dask.delayed(mod.inc)(1).compute()  # through the default client


# The shapes that hung before (joblib, scikit-learn) and those that raised without a name.
SHAPES: dict[str, Callable[[ModuleType, Client], Any]] = {
    "joblib-dask-backend": lambda mod, client: _joblib(mod),
    "sklearn-warning-filter": lambda mod, client: _sklearn(mod),
    "submit-function": lambda mod, client: client.submit(mod.inc, 1).result(),
    "submit-object-argument": lambda mod, client: client.submit(repr, mod.Thing()).result(),
    "map": lambda mod, client: client.gather(client.map(mod.inc, range(3))),
    "delayed-compute": _delayed_compute,
    "bag": _bag,
    "array": _array,
    "dataframe": _dataframe,
    "persist": _persist,
}


@pytest.mark.local
@pytest.mark.parametrize("shape", list(SHAPES))
def test_unreadable_graph_fails_fast_naming_the_module(client, missing, shape):
    error, took = outcome_within(lambda: SHAPES[shape](missing, client))
    assert_names(error, missing.__name__)
    assert took < BOUND


@pytest.mark.local
def test_the_client_still_works_after_an_unreadable_graph(client, missing):
    outcome_within(lambda: client.submit(missing.inc, 1).result())
    assert client.submit(sum, [1, 2], pure=False).result(timeout=BOUND) == 3


@pytest.mark.local
def test_the_scheduler_log_names_the_module(cluster, client, missing):
    outcome_within(lambda: client.submit(missing.inc, 2).result())
    wanted = f"cannot import module {missing.__name__!r}"
    deadline = time.monotonic() + BOUND
    while wanted not in (log := "\n".join(cluster.backend.logs("scheduler"))):
        assert time.monotonic() < deadline, f"not in the scheduler's log:\n{log[-2000:]}"
        time.sleep(0.2)


def test_explain_names_a_class_missing_from_the_schedulers_module():
    error = AttributeError("Can't get attribute 'Thing' on <module 'mymod' from '/x/mymod.py'>")
    reason, detail = explain(error)
    assert reason == "the scheduler's module 'mymod' has no 'Thing' (another version?)"
    assert "install 'mymod'" in detail


def test_explain_follows_the_cause_and_says_so_when_no_module_is_known():
    try:
        try:
            import_module("clusterctl_nowhere.sub")
        except ImportError as exc:
            raise RuntimeError("Error during deserialization of the task graph") from exc
    except RuntimeError as exc:
        assert explain(exc)[0] == "the scheduler cannot import module 'clusterctl_nowhere'"
    reason, detail = explain(ValueError("no GPU here"))
    assert reason == "the scheduler cannot unpickle the task graph"
    assert "ValueError: no GPU here" in detail


@pytest.mark.timeout(1800)
def test_docker_scheduler_without_the_module_fails_fast_naming_it(images, missing):
    """The image's scheduler loads the check from /etc/dask (dask.yaml), not from flags.
    Images built without --sync lack joblib itself: then joblib is the module named."""
    cluster = clusterctl.up(
        name="graphcheck-docker", backend="docker", workers=1, threads=2, port=0, dashboard_port=0
    )
    try:
        with Client(cluster) as client:
            error, took = outcome_within(lambda: SHAPES["submit-function"](missing, client))
            assert_names(error, missing.__name__)
            assert took < BOUND

            has_joblib = client.run_on_scheduler(lambda: find_spec("joblib") is not None)
            error, took = outcome_within(lambda: SHAPES["joblib-dask-backend"](missing, client))
            assert_names(error, missing.__name__ if has_joblib else "joblib")
            assert took < BOUND

            assert client.submit(sum, [1, 2], pure=False).result(timeout=BOUND) == 3
    finally:
        cluster.shutdown()
