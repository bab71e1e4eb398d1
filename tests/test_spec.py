"""ClusterSpec: layering of dask.config, spec file and flags; round trips."""

from __future__ import annotations

import dask.config
import pytest

from clusterctl.api import build_spec
from clusterctl.errors import SpecError
from clusterctl.spec import ClusterSpec, load_spec


def test_defaults_come_from_dask_config():
    spec = load_spec()
    assert spec.name == "default"
    assert spec.backend == "local"
    assert (spec.scheduler.port, spec.scheduler.dashboard_port) == (8786, 8787)
    assert [(g.name, g.count, g.threads) for g in spec.workers] == [("worker", 2, 1)]


def test_dask_config_then_file_then_flags(tmp_path):
    spec_file = tmp_path / "cluster.yaml"
    spec_file.write_text("name: fromfile\nworker:\n  threads: 3\nscheduler:\n  port: 9000\n")
    with dask.config.set(
        {
            "clusterctl.worker.threads": 2,
            "clusterctl.name": "fromconfig",
            "clusterctl.worker.memory-limit": "2GiB",
        }
    ):
        assert load_spec().name == "fromconfig"
        spec = build_spec(spec_file, threads=5, workers=7)
    assert spec.name == "fromfile"  # the file beats dask.config
    group = spec.group()
    assert group.threads == 5  # flags beat the file
    assert group.count == 7
    assert group.memory_limit == "2GiB"  # dask.config fills what the file leaves out
    assert spec.scheduler.port == 9000
    assert spec.scheduler.dashboard_port == 8787


def test_environment_variables_reach_the_spec(monkeypatch):
    monkeypatch.setenv("DASK_CLUSTERCTL__WORKER__COUNT", "5")
    monkeypatch.setenv("DASK_CLUSTERCTL__NAME", "fromenv")
    dask.config.refresh()
    try:
        spec = load_spec()
    finally:
        monkeypatch.undo()
        dask.config.refresh()
    assert (spec.name, spec.group().count) == ("fromenv", 5)


def test_worker_groups_inherit_worker_defaults(tmp_path):
    spec_file = tmp_path / "groups.yaml"
    spec_file.write_text(
        "worker: {threads: 2}\n"
        "workers:\n"
        "  cpu: {count: 3}\n"
        "  big: {count: 1, memory_limit: 4GiB, resources: {BIG: 1}, env: {MODE: big}}\n"
    )
    spec = load_spec(spec_file)
    cpu, big = spec.workers
    assert (cpu.name, cpu.count, cpu.threads) == ("cpu", 3, 2)
    assert (big.name, big.threads, big.memory_limit, big.resources, big.env) == (
        "big",
        2,
        "4GiB",
        {"BIG": 1},
        {"MODE": "big"},
    )
    assert spec.with_count("big", 4).group("big").count == 4
    with pytest.raises(SpecError, match="no worker group 'gpu'"):
        spec.group("gpu")


def test_round_trip_and_hyphenated_keys(tmp_path):
    spec_file = tmp_path / "c.yaml"
    spec_file.write_text(
        "clusterctl:\n  scheduler: {dashboard-port: 0}\n  worker: {memory_limit: 0.5}\n"
        f"  workers: {{w: {{mounts: ['{tmp_path}:/data:ro']}}}}\n"
    )
    spec = load_spec(spec_file)
    assert spec.scheduler.dashboard_port == 0
    assert str(spec.group().mounts[0]) == f"{tmp_path}:/data:ro"
    assert ClusterSpec.from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize("limit", ["auto", "256MiB", "400MB", 2**30, 0.5, 1.0])
def test_memory_limits_a_worker_can_run_with_are_accepted(limit):
    assert load_spec(overrides={"worker": {"memory_limit": limit}}).group().memory_limit == limit


def test_a_fraction_is_not_sized_where_workers_run_on_other_machines():
    """Swarm and Kubernetes workers take a fraction of their own node's memory, not ours."""
    for backend in ("swarm", "kubernetes"):
        spec = load_spec(overrides={"backend": backend, "worker": {"memory_limit": 1e-7}})
        assert spec.group().memory_limit == 1e-7
    with pytest.raises(SpecError, match="a worker needs at least 256 MiB"):
        load_spec(overrides={"backend": "docker", "worker": {"memory_limit": 1e-7}})


def test_the_worker_total_holds_for_scale_too(tmp_path):
    spec_file = tmp_path / "groups.yaml"
    spec_file.write_text("workers: {a: {count: 600}, b: {count: 300}}\n")
    spec = load_spec(spec_file)
    assert spec.with_count("b", 400).group("b").count == 400  # 1000 in all: the limit
    with pytest.raises(SpecError, match=r"workers.b.count: at most 1000 workers .* got 1001"):
        spec.with_count("b", 401)


def test_hosts_and_mounts_that_stay_allowed(tmp_path):
    for host in ("127.0.0.1", "localhost", "0.0.0.0", "scheduler.example.org"):
        assert load_spec(overrides={"scheduler": {"host": host}}).scheduler.host == host
    mounts = [f"{tmp_path}:/data:ro", f"{tmp_path}:/scratch", "/var/tmp:/var/tmp"]
    spec = load_spec(overrides={"worker": {"mounts": mounts}})
    assert [str(m) for m in spec.group().mounts] == mounts


def test_a_stored_spec_is_read_back_without_looking_at_its_folders_again(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    spec = load_spec(overrides={"worker": {"mounts": [f"{folder}:/data"]}})
    folder.rmdir()  # removed while the cluster runs: it must still be found, and removed
    assert ClusterSpec.from_dict(spec.to_dict()) == spec


def test_anchors_and_aliases_of_a_real_size_still_work(tmp_path):
    spec_file = tmp_path / "aliases.yaml"
    spec_file.write_text("workers:\n  a: &same {count: 1, threads: 2}\n  b: *same\n")
    assert [(g.name, g.threads) for g in load_spec(spec_file).workers] == [("a", 2), ("b", 2)]


def test_environment_values_up_to_the_limits(tmp_path):
    value = "x" * 32 * 2**10
    spec = load_spec(overrides={"worker": {"env": {"A": value}}, "scheduler": {"env": {"B": 1}}})
    assert (spec.group().env["A"], spec.scheduler.env["B"]) == (value, "1")
    with pytest.raises(SpecError, match=r"workers.worker.env.A: at most 32 KiB, got 32769 bytes"):
        load_spec(overrides={"worker": {"env": {"A": value + "x"}}})


def test_messages_show_the_start_of_a_long_value_and_its_length():
    with pytest.raises(SpecError) as err:
        load_spec(overrides={"backend": "k" * 10_000})
    message = str(err.value)
    assert message.endswith(f"got {'k' * 60!r}… (10000 characters)")
    with pytest.raises(SpecError, match=r"got \(int too large to show\)"):
        build_spec(workers=10**5000)
