"""The benchmarks: the quick run works end to end; the committed full run, its chart and the
docs/benchmarks.md's tables agree. Figures are never asserted here, only that they were measured."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.report import LATEST, chart, markdown, page_section

pytest.importorskip("matplotlib", reason="matplotlib (the benchmarks extra) draws the chart")
ROOT = Path(__file__).resolve().parent.parent
PROFILE_ORDER = (
    "scheduler_started",
    "scheduler_listening",
    "worker_registered",
    "last_registered",
    "up_returned",
)


def check_clusters(clusters: dict, backends: list[str]) -> None:
    assert clusters["backends"] == ["LocalCluster", *backends]
    figures = set(clusters["LocalCluster"])
    for backend in clusters["backends"]:
        measured = clusters[backend]
        assert figures - {"status_s"} <= set(measured), backend
        for key, figure in measured.items():
            assert len(figure["values"]) == clusters["repeats"], (backend, key)
            assert all(v > 0 for v in figure["values"]), (backend, key, figure)
            assert min(figure["values"]) <= figure["median"] <= max(figure["values"])
        if backend != "LocalCluster":
            assert clusters["ratios"][backend]["tasks_per_s"] > 0
            assert measured["status_s"]["median"] > 0
    for backend in ("docker", "compose", "swarm"):
        profile = clusters["startup_profile"][backend]
        steps = [profile[k] for k in PROFILE_ORDER]
        assert steps == sorted(steps) and steps[0] > 0, (backend, profile)
    assert clusters["help_s"]["median"] > 0


@pytest.mark.bench
@pytest.mark.timeout(1500)
def test_quick_run_measures_every_backend_and_draws_its_chart(images, tmp_path):
    output = tmp_path / "quick.json"
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--output", str(output)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1400,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads(output.read_text())
    assert report["quick"] and report["machine"]["docker_engine"]
    clusters = report["clusters"]
    assert clusters["repeats"] == 1 and clusters["sizes"] == [2]
    check_clusters(clusters, ["local", "docker", "compose", "swarm"])
    assert all(size > 0 for size in report["images"]["size_mb"].values())
    assert report["images"]["code_only_rebuild_s"] > 0
    png = output.with_suffix(".png")
    assert png.read_bytes().startswith(b"\x89PNG"), "no chart"
    assert "| scale 1→4 |" in markdown(report)


def test_published_tables_and_chart_agree_with_the_full_run(tmp_path):
    from matplotlib.testing.compare import compare_images

    report = json.loads(LATEST.read_text())
    assert not report["quick"], "results/latest.json must be a full run"
    clusters = report["clusters"]
    assert clusters["repeats"] >= 3 and clusters["sizes"] == [1, 2, 4, 8]
    assert clusters["tasks"] == 20_000 and clusters["transfer_mb"] == 200
    check_clusters(clusters, ["local", "docker", "compose", "swarm"])
    assert "cold_build_s" in report["images"]
    assert page_section() == markdown(report), "docs/benchmarks.md: run python -m benchmarks.report"
    drawn = tmp_path / "latest.png"
    chart(report, drawn)
    assert compare_images(str(LATEST.with_suffix(".png")), str(drawn), tol=2) is None


def test_published_size_curve_agrees_with_its_run():
    from benchmarks.report import PAGE
    from benchmarks.size import RESULTS_FILE, table

    results = json.loads(RESULTS_FILE.read_text())
    assert results["fake"]["sizes"][-1] == 1000, "the fake's curve must reach 1,000 workers"
    for backend in ("LocalCluster", "local", "docker"):
        assert results[backend]["sizes"][-1] == 64 and "steps" in results[backend], backend
    assert table(results) in PAGE.read_text(), "docs/benchmarks.md: paste benchmarks.size's table"


def check_curve(found: dict, steps: set[str]) -> None:
    assert set(found["steps"]) == steps
    for step, figure in found["steps"].items():
        for what, values in figure.items():
            assert len(values) == len(found["sizes"]), (step, what)
        assert all(t > 0 for t in figure["total"]), (step, figure)
        assert all(0 <= b <= t for b, t in zip(figure["backend"], figure["total"], strict=True))
        assert isinstance(found["growth"][step]["total"], float)


CONTROLLER_STEPS = {"scale_up", "identity", "status", "list", "reconcile", "scale_down"}


def test_size_curve_of_the_controller_on_the_fake_backend():
    from benchmarks.size import curve

    found = curve("fake", [4, 8])
    assert found["sizes"] == [4, 8]
    check_curve(found, CONTROLLER_STEPS)
    assert found["steps"]["scale_up"]["backend"][0] > 0, "the fake's start_workers untimed"


@pytest.mark.local
def test_size_curve_of_the_local_backend_and_local_cluster():
    from benchmarks.size import curve

    check_curve(curve("local", [2, 4]), CONTROLLER_STEPS)
    check_curve(curve("LocalCluster", [2, 4]), {"scale_up", "scale_down"})
