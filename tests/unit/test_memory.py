"""clusterctl.memory: how workers are sized against their hosts (pure, no processes)."""

from __future__ import annotations

import pytest

from clusterctl.memory import Host, overcommitted, report, worker_limit
from clusterctl.spec import ClusterSpec, load_spec

GiB = 2**30


def spec(**groups: dict) -> ClusterSpec:
    return load_spec(overrides={"name": "mem-unit", "workers": groups})


def total(fraction: float, memory: int, n: int) -> int:
    """What n workers given ``--memory-limit fraction`` take, as `dask worker` sizes it."""
    return n * int(fraction * memory)


@pytest.mark.parametrize("n", [1, 2, 3, 7, 64])
def test_auto_divides_the_machine_among_its_workers(n):
    groups = spec(worker={"count": n, "memory-limit": "auto", "threads": 1}).workers
    host = Host("this machine", 24 * GiB)
    share = worker_limit("worker", groups, {"worker": n}, [host])
    assert isinstance(share, float)
    assert total(share, host.memory, n) <= host.memory
    assert total(share, host.memory, n) > 0.999 * host.memory  # and nearly all of it
    assert overcommitted(groups, {"worker": n}, [host]) is None


def test_the_count_divided_by_is_all_groups_as_now_asked():
    groups = spec(a={"count": 1, "memory-limit": "auto"}, b={"count": 1, "memory-limit": "auto"})
    host = Host("this machine", 24 * GiB)
    # b was scaled to 3 (counts.json): four workers share the machine
    assert worker_limit("a", groups.workers, {"a": 1, "b": 3}, [host]) == 0.25
    # a group of count 0 being started counts its new worker
    assert worker_limit("a", groups.workers, {"a": 0, "b": 1}, [host]) == 0.5


def test_auto_workers_share_what_the_sized_ones_leave():
    groups = spec(big={"count": 1, "memory-limit": "16GiB"}, cpu={"count": 4}).workers
    host = Host("this machine", 24 * GiB)
    share = worker_limit("cpu", groups, {"big": 1, "cpu": 4}, [host])
    assert share == pytest.approx(2 / 24, abs=1e-6)
    assert 16 * GiB + total(share, host.memory, 4) <= host.memory
    assert worker_limit("big", groups, {"big": 1, "cpu": 4}, [host]) == "16GiB"
    assert overcommitted(groups, {"big": 1, "cpu": 4}, [host]) is None


def test_an_explicit_total_over_the_machine_is_named_with_the_machines_memory():
    groups = spec(worker={"count": 3, "memory-limit": "10GiB"}).workers
    host = Host("this machine", 24 * GiB)
    assert worker_limit("worker", groups, {"worker": 3}, [host]) == "10GiB"  # still starts
    text = overcommitted(groups, {"worker": 3}, [host])
    assert "30.00 GiB" in text and "24.00 GiB" in text and "this machine" in text
    assert overcommitted(groups, {"worker": 2}, [host]) is None
    # fractions of the machine count too
    halves = spec(worker={"count": 3, "memory-limit": 0.5}).workers
    assert "36.00 GiB" in overcommitted(halves, {"worker": 3}, [host])


def test_sized_workers_that_leave_too_little_make_auto_an_equal_share_and_a_warning():
    groups = spec(big={"count": 1, "memory-limit": "24GiB"}, cpu={"count": 2}).workers
    host = Host("this machine", 24 * GiB)
    assert worker_limit("cpu", groups, {"big": 1, "cpu": 2}, [host]) == pytest.approx(1 / 3)
    assert "40.00 GiB" in overcommitted(groups, {"big": 1, "cpu": 2}, [host])


def test_unknown_memory_still_divides_and_never_warns():
    groups = spec(worker={"count": 4}).workers
    assert worker_limit("worker", groups, {"worker": 4}, [Host("?", None)]) == 0.25
    assert overcommitted(groups, {"worker": 4}, [Host("?", None)]) is None


def test_swarm_sizes_per_node_by_the_workers_each_node_may_run():
    groups = spec(
        cpu={"count": 4, "placement": {"constraints": ["node.labels.pool==cpu"]}},
        any={"count": 2},
    ).workers
    counts = {"cpu": 4, "any": 2}
    small = Host("n1", 8 * GiB, frozenset({"cpu", "any"}))
    big = Host("n2", 64 * GiB, frozenset({"cpu", "any"}))
    other = Host("n3", 4 * GiB, frozenset({"any"}))
    hosts = [small, big, other]
    # cpu: 2 on each of n1, n2; any: 1 on each node; n1 and n2 run 3 workers each
    cpu = worker_limit("cpu", groups, counts, hosts)
    assert cpu == pytest.approx(1 / 3, abs=1e-6)
    for host in (small, big):
        assert total(cpu, host.memory, 3) <= host.memory
    assert worker_limit("any", groups, counts, hosts) == cpu  # the tightest node's share
    assert overcommitted(groups, counts, hosts) is None


def test_report_gives_each_groups_per_worker_limit():
    groups = spec(a={"count": 2}, b={"count": 1, "memory-limit": "1GiB"}).workers
    workers = [
        {"group": "a", "memory_limit": 5 * GiB},
        {"group": "a", "memory_limit": 5 * GiB},
        {"group": "b", "memory_limit": GiB},
        {"group": "b", "memory_limit": None},  # still starting
    ]
    assert report(groups, {"a": 2}, workers) == [
        {"name": "a", "count": 2, "memory_limit": "auto", "per_worker": [5 * GiB]},
        {"name": "b", "count": 1, "memory_limit": "1GiB", "per_worker": [GiB]},
    ]
