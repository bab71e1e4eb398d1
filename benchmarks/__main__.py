"""Run the benchmarks: `python -m benchmarks [--quick] [--only NAME ...]`.

A full run writes benchmarks/results/latest.json, its chart latest.png, and the tables of
docs/benchmarks.md; a quick one (CI's) writes results/quick.json and quick.png. Figures are
measured, never asserted: tests check behaviour, this checks speed and size.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import time
from pathlib import Path

SUITES = ("clusters", "images")
RESULTS = Path(__file__).with_name("results")


def machine() -> dict[str, object]:
    import psutil

    cpuinfo = Path("/proc/cpuinfo")
    models = re.findall(r"model name\s*:\s*(.+)", cpuinfo.read_text()) if cpuinfo.exists() else []
    info: dict[str, object] = {
        "cores": os.cpu_count(),
        "cpu": models[0] if models else platform.processor(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "docker_engine": None,
        "storage_driver": None,
    }
    try:
        import docker

        engine = docker.from_env()
        info["docker_engine"] = engine.version()["Version"]
        info["storage_driver"] = engine.info()["Driver"]
    except Exception:  # no engine: the container backends aren't measured either
        pass
    return info


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, one repeat (CI)")
    parser.add_argument("--only", nargs="+", choices=SUITES, default=list(SUITES))
    parser.add_argument(
        "--output",
        type=Path,
        help="results JSON (default: results/latest.json, or quick.json in quick mode)",
    )
    args = parser.parse_args()
    output = args.output or RESULTS / ("quick.json" if args.quick else "latest.json")

    date = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    report: dict[str, object] = {"machine": machine(), "quick": args.quick, "date": date}
    for suite in args.only:
        print(f"== {suite}")
        module = __import__(f"benchmarks.{suite}", fromlist=["run"])
        report[suite] = module.run(quick=args.quick)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"results: {output}")
    from benchmarks.report import LATEST, publish

    publish(report, output, page=output.resolve() == LATEST and not args.quick)


if __name__ == "__main__":
    main()
