"""The controller's policy (clusterctl.cluster), on a fake backend: no process, no container.

``FakeBackend`` (tests/fake_backend.py) runs a real scheduler and real workers in this
process and records every call the controller makes, so a test can check *what* the
controller told the backend and *in which order* -- which workers it chose to stop, whether
their data had moved away before, and that a backend with an orchestrator is never told to
start or stop a worker.

The controller is constructed as ``Cluster(spec, backend=fake)``: the attach path, which
starts nothing. Its cluster lock and ``counts.json`` still live in the state folder (this
session's XDG_STATE_HOME); ``cluster.shutdown()`` removes them through the product's own
``destroy_cluster``. The supervisor is never started: ``supervisor.ensure_running`` is
replaced by a recorder for every test here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from distributed import Client

import clusterctl.cluster as controller
from clusterctl import state, supervisor
from clusterctl.cluster import Cluster, GroupAdaptive, destroy_cluster
from clusterctl.errors import ClusterctlError
from tests.fake_backend import TIMEOUT, FakeBackend, make_spec


@pytest.fixture(autouse=True)
def no_supervisor(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Never start a supervisor process; record that the controller asked for one."""
    asked: list[str] = []
    monkeypatch.setattr(supervisor, "ensure_running", asked.append)
    return asked


@pytest.fixture
def make_cluster(request: pytest.FixtureRequest) -> Iterator[Callable[..., Any]]:
    """``make_cluster(groups, orchestrated=False, worker_ttl=30) -> (cluster, fake)``: a fake
    backend with the groups' workers started (as ``up`` would), and a controller on it."""
    made: list[tuple[Cluster | None, FakeBackend]] = []

    def make(
        groups: dict[str, int], orchestrated: bool = False, worker_ttl: float = 30
    ) -> tuple[Cluster, FakeBackend]:
        slug = request.node.name.removeprefix("test_").replace("_", "-")
        name = f"ctl-{slug[:30]}".rstrip("-")
        spec = make_spec(name, groups, worker_ttl)
        fake = FakeBackend(spec, orchestrated=orchestrated)
        made.append((None, fake))
        fake.start_scheduler()
        if not orchestrated:
            for group in spec.workers:
                fake.start_workers(group, group.count)
        cluster = Cluster(spec, backend=fake)
        made[-1] = (cluster, fake)
        fake.calls.clear()  # what the tests look at: the controller's calls from here on
        return cluster, fake

    yield make
    for cluster, fake in made:
        try:
            if cluster is not None:
                cluster.shutdown()  # destroy_cluster: the backend, then the state folder
            else:
                destroy_cluster(fake)
        finally:
            fake.close_loop()
        assert fake.spec.name not in state.names(), "the state folder was left behind"


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def put_data(client: Client, fake: FakeBackend, names: list[str]) -> dict[str, Any]:
    """One distinct piece of data on each named worker (and nowhere else)."""
    futures = {}
    for name in names:
        [futures[name]] = client.scatter([f"data of {name}" * 100], workers=[fake.address(name)])
    wait_for(lambda: all(fake.held_by_scheduler().get(n) == 1 for n in names), "the data")
    return futures


# --- 1 and 2: scale-down chooses by the scheduler, retires, then stops exactly those --------


def test_scale_down_stops_the_workers_without_data(make_cluster) -> None:
    cluster, fake = make_cluster({"worker": 4})
    names = sorted(fake.running())
    keep = [names[0], names[2]]  # hold data: the scheduler would rather keep them
    with Client(fake.scheduler_address()) as client:
        futures = put_data(client, fake, keep)
        cluster.scale(2)
        [(call, stopped)] = fake.worker_calls()
        assert call == "stop_workers" and sorted(stopped) == sorted(set(names) - set(keep))
        assert fake.running() == set(keep)
        assert cluster.workers == set(keep)
        assert client.gather(list(futures.values())) == [f"data of {n}" * 100 for n in keep]
    assert state.read_json(state.cluster_dir(cluster.name) / controller.COUNTS) == {"worker": 2}


def test_retire_moves_the_data_before_the_backend_stops_exactly_those(make_cluster) -> None:
    cluster, fake = make_cluster({"worker": 3})
    names = sorted(fake.running())
    seen: list[dict[str, Any]] = []

    def at_stop(victims: list[str]) -> None:
        held = fake.held_by_scheduler()
        seen.append({"victims": victims, "held": held})
        # Retired first: the scheduler no longer has them, so none holds a key any more.
        assert not set(victims) & set(held), f"stopped before retired: {held}"

    fake.on_stop = at_stop
    with Client(fake.scheduler_address()) as client:
        futures = put_data(client, fake, names)  # every worker holds data: it must move
        cluster.scale(1)
        assert not fake.failures, fake.failures
        [stop] = fake.worker_calls()
        assert stop[0] == "stop_workers" and len(stop[1]) == 2, fake.calls
        [survivor] = set(names) - set(stop[1])
        assert seen[0]["held"] == {survivor: 3}, "the retired workers' data did not move"
        assert fake.running() == {survivor}
        assert sorted(client.gather(list(futures.values()))) == sorted(
            f"data of {n}" * 100 for n in names
        )


# --- 3: data with nowhere to go --------------------------------------------------------------


def test_data_with_nowhere_to_go_keeps_the_workers_and_names_them(make_cluster) -> None:
    cluster, fake = make_cluster({"worker": 2})
    names = sorted(fake.running())
    with Client(fake.scheduler_address()) as client:
        futures = put_data(client, fake, names)
        with pytest.raises(ClusterctlError) as raised:
            cluster.scale(0)
        message = str(raised.value)
        assert "could not retire" in message and "nowhere to go" in message, message
        for name in names:
            assert name in message, message
        assert fake.worker_calls() == [], "a worker holding the only copy was stopped"
        assert fake.running() == set(names)
        assert fake.held_by_scheduler() == {n: 1 for n in names}
        assert client.gather(list(futures.values())) == [f"data of {n}" * 100 for n in names]


# --- 4: reconcile ----------------------------------------------------------------------------


def test_reconcile_replaces_a_dead_worker_up_to_the_count(make_cluster) -> None:
    cluster, fake = make_cluster({"worker": 2})
    names = sorted(fake.running())
    cluster.reconcile()
    assert fake.worker_calls() == [], "reconcile touched a healthy cluster"
    fake.kill(names[0])
    wait_for(lambda: names[0] not in fake.held_by_scheduler(), "the scheduler to see it go")
    cluster.reconcile()
    new = f"{cluster.name}-worker-3"
    assert fake.worker_calls() == [
        ("stop_workers", [names[0]]),
        ("start_workers", "worker", [new]),
    ]
    assert fake.running() == {names[1], new}
    cluster.reconcile()
    assert len(fake.worker_calls()) == 2, "reconcile went on replacing"


def cut_off_once(cluster: Cluster, fake: FakeBackend) -> list[str]:
    """Hang one of two registered workers and reconcile past the cut-off (1 s): it is replaced,
    not before. Returns the names of the two workers."""
    names = sorted(fake.running())
    cluster.reconcile()  # both registered: watched from now on
    fake.hang(names[1])
    wait_for(lambda: names[1] not in fake.held_by_scheduler(), "the scheduler to lose it")
    assert fake.running() == set(names), "the backend must still report it running"
    cluster.reconcile()  # seen lost: its clock starts
    cluster.reconcile()  # lost, but not yet for the cut-off
    assert fake.worker_calls() == [], "replaced before the cut-off"
    time.sleep(cluster.spec.cut_off + 0.1)
    cluster.reconcile()
    # The backends number a new worker after the highest one there: the name comes back.
    assert fake.worker_calls() == [
        ("stop_workers", [names[1]]),
        ("start_workers", "worker", [names[1]]),
    ]
    assert fake.running() == set(names)
    assert names[1] in fake.held_by_scheduler(), "the replacement did not register"
    return names


def test_reconcile_replaces_a_worker_lost_to_the_scheduler_after_the_cut_off(make_cluster) -> None:
    cluster, fake = make_cluster({"worker": 2})
    cut_off_once(cluster, fake)


def test_a_healthy_replacement_with_the_same_name_is_kept(make_cluster) -> None:
    cluster, fake = make_cluster({"worker": 2})
    cut_off_once(cluster, fake)
    cluster.reconcile()  # the replacement is registered and healthy: it stays
    assert len(fake.worker_calls()) == 2, f"a healthy replacement was replaced: {fake.calls}"


def test_a_registered_worker_silent_past_the_worker_ttl_is_replaced_after_the_cut_off(
    make_cluster,
) -> None:
    """Its network cut, a worker stays registered until the scheduler gives up restarting it
    (worker-ttl, then 30 s more): silent for worker-ttl, it counts as lost already."""
    cluster, fake = make_cluster({"worker": 2}, worker_ttl=1)
    names = sorted(fake.running())
    cluster.reconcile()
    fake.silence(names[1])
    time.sleep(cluster.spec.scheduler.worker_ttl + 0.6)
    assert names[1] in fake.held_by_scheduler(), "the scheduler dropped it: not the case here"
    cluster.reconcile()  # silent past worker-ttl: lost, its clock starts
    assert fake.worker_calls() == [], "replaced before the cut-off"
    time.sleep(cluster.spec.cut_off + 0.1)
    cluster.reconcile()
    assert fake.worker_calls()[0] == ("stop_workers", [names[1]])
    assert fake.running() == set(names), "not replaced by a worker of the same name"


def test_a_worker_that_never_registered_is_not_cut_off(make_cluster) -> None:
    """The cut-off counts only for workers once seen by the scheduler: one still starting
    (a slow image pull, say) is left alone however long it takes."""
    cluster, fake = make_cluster({"worker": 1})
    [name] = fake.running()
    fake.hang(name)  # from the controller's view: running, never registered
    wait_for(lambda: name not in fake.held_by_scheduler(), "the scheduler to lose it")
    for _ in range(4):  # past the cut-off
        cluster.reconcile()
        time.sleep(0.3)
    assert fake.worker_calls() == []


def test_waiting_for_workers_outlasts_a_replacement_under_way(make_cluster) -> None:
    """A worker the supervisor is replacing (stopped, not yet removed) is not a worker that
    "exited while starting": the wait settles it under the cluster's lock, which the
    supervisor holds from stopping one to starting the next. One that died with nobody
    replacing it still ends the wait at once."""
    import threading

    cluster, fake = make_cluster({"worker": 2})
    group, [lost, kept] = cluster.spec.workers[0], sorted(fake.running())
    outcome: list[BaseException | None] = []
    with state.locked(cluster.name):  # the supervisor, at work
        fake.kill(lost)
        waiting = threading.Thread(
            target=lambda: outcome.append(_raised(lambda: cluster.wait_for_workers(2, 30)))
        )
        waiting.start()
        time.sleep(1)  # the wait sees the dead worker and asks for the lock
        fake.stop_workers([lost])
        [new] = fake.start_workers(group, 1)
    waiting.join(TIMEOUT)
    assert outcome == [None], f"the wait failed on a worker being replaced: {outcome}"
    fake.kill(new)
    with pytest.raises(ClusterctlError, match=f"worker {new} exited while starting"):
        cluster.wait_for_workers(2, 30)
    assert fake.running() == {kept}


def _raised(call: Callable[[], Any]) -> BaseException | None:
    try:
        call()
    except BaseException as exc:
        return exc
    return None


# --- 5: adapt confined to its group ----------------------------------------------------------


class FixedTarget(GroupAdaptive):
    """GroupAdaptive with the scheduler's target replaced by a number the test sets: what
    is tested is what the controller does with a target, not Dask's estimate of it."""

    wanted = 0

    async def target(self) -> int:
        return self.wanted


def test_adapt_scales_down_only_its_group(make_cluster) -> None:
    cluster, fake = make_cluster({"a": 2, "b": 2})
    a1, a2 = sorted(fake.running("a"))
    b_workers = fake.running("b")
    with Client(fake.scheduler_address()) as client:
        futures = put_data(client, fake, [a1])  # the scheduler would close a2, b-1 and b-2
        FixedTarget.wanted = 3  # the whole cluster: group b's 2 and 1 of group a
        adaptive = cluster.adapt(
            Adaptive=FixedTarget, group="a", interval="50ms", wait_count=1, maximum=10
        )
        assert isinstance(adaptive, FixedTarget) and adaptive.group == "a"
        wait_for(lambda: fake.worker_calls(), "adaptive scaling to act")
        time.sleep(0.3)  # a few more steps: they must not touch group b either
        adaptive.stop()
        assert fake.worker_calls() == [("stop_workers", [a2])]
        assert fake.running("b") == b_workers
        assert fake.running("a") == {a1}
        assert client.gather(futures[a1]) == f"data of {a1}" * 100


def test_adapt_scales_up_only_its_group(make_cluster) -> None:
    cluster, fake = make_cluster({"a": 1, "b": 2})
    b_workers = fake.running("b")
    FixedTarget.wanted = 5  # the whole cluster: group b's 2 and 3 of group a
    adaptive = cluster.adapt(
        Adaptive=FixedTarget, group="a", interval="50ms", wait_count=1, maximum=10
    )
    wait_for(lambda: len(fake.running("a")) >= 3, "group a to grow")
    time.sleep(0.3)
    adaptive.stop()
    assert fake.worker_calls() == [
        ("start_workers", "a", [f"{cluster.name}-a-2", f"{cluster.name}-a-3"])
    ]
    assert fake.running("b") == b_workers
    assert cluster.spec.group("a").count == 3 and cluster.spec.group("b").count == 2


def test_adapt_keeps_its_group_minimum(make_cluster) -> None:
    cluster, fake = make_cluster({"a": 2, "b": 2})
    with Client(fake.scheduler_address()) as client:
        futures = put_data(client, fake, sorted(fake.running("b")))  # a's go first
        FixedTarget.wanted = 0  # no work at all
        adaptive = cluster.adapt(
            Adaptive=FixedTarget, group="a", interval="50ms", wait_count=1, minimum=1, maximum=10
        )
        time.sleep(0.5)
        adaptive.stop()
        del futures
    assert len(fake.running("a")) == 1, fake.calls


def test_adapt_reaches_its_group_maximum(make_cluster) -> None:
    cluster, fake = make_cluster({"a": 1, "b": 2})
    FixedTarget.wanted = 10
    adaptive = cluster.adapt(
        Adaptive=FixedTarget, group="a", interval="50ms", wait_count=1, minimum=0, maximum=3
    )
    time.sleep(0.5)
    adaptive.stop()
    assert len(fake.running("a")) == 3, fake.calls


# --- 6: an orchestrator scales and adapts by itself ------------------------------------------


def test_an_orchestrated_backend_gets_scale_and_adapt_and_no_worker_calls(
    make_cluster, no_supervisor: list[str]
) -> None:
    cluster, fake = make_cluster({"a": 2, "b": 1}, orchestrated=True)
    cluster.scale(3, group="b")
    cluster.scale(0)
    assert cluster.adapt(group="b", minimum=1, maximum=6) is None
    cluster.reconcile()
    assert fake.calls == [("scale", "b", 3), ("scale", "a", 0), ("adapt", "b", 1, 6)]
    assert fake.worker_calls() == []
    assert no_supervisor == [], "a supervisor was asked for an orchestrated cluster"
    assert state.read_json(state.cluster_dir(cluster.name) / controller.COUNTS) == {
        "b": 3,
        "a": 0,
    }
