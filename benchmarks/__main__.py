"""Run the benchmarks: `python -m benchmarks [--quick] [--only NAME ...]`.

Results go to benchmarks/results/latest.json (and are printed). Figures are measured,
never asserted: tests check behaviour, this checks speed and size.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

SUITES = ("clusters", "images")
RESULTS = Path(__file__).with_name("results")


def machine() -> dict[str, object]:
    import psutil

    info: dict[str, object] = {
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
    }
    try:
        import docker

        info["docker_engine"] = docker.from_env().version()["Version"]
    except Exception:
        info["docker_engine"] = None
    return info


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, one repeat (CI)")
    parser.add_argument("--only", nargs="+", choices=SUITES, default=list(SUITES))
    parser.add_argument("--output", type=Path, default=RESULTS / "latest.json")
    args = parser.parse_args()

    report: dict[str, object] = {"machine": machine(), "quick": args.quick,
                                 "date": time.strftime("%Y-%m-%d %H:%M:%S")}  # fmt: skip
    for suite in args.only:
        print(f"== {suite}")
        module = __import__(f"benchmarks.{suite}", fromlist=["run"])
        report[suite] = module.run(quick=args.quick)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"results: {args.output}")


if __name__ == "__main__":
    main()
