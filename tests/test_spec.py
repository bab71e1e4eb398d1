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
