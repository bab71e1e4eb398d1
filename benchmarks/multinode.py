"""The swarm backend on three nodes beside one: `python -m benchmarks.multinode` (root).

Cold start of 4 and 8 workers and scale 1→8 (until all run) and 8→1, for LocalCluster, the
swarm backend on a single-node swarm (this machine's engine), and on the three-node swarm of
`scripts/nodes up 3` (three engines on this machine, so the same 2 cores: what it shows is
the cost of spanning engines, not the gain of more machines). Writes
benchmarks/results/multinode.json and prints the table docs/benchmarks.md shows.
"""

from __future__ import annotations

import json
import time
from typing import Any

from benchmarks.__main__ import RESULTS, machine
from benchmarks.clusters import BASELINE, cold_start, measure, summary

SIZES = (4, 8)
SCALE_TO = 8


def scale_figures(backend: str, repeats: int) -> dict[str, Any]:
    """Scale 1→8 until all are registered, and 8→1 until one is left (one cluster)."""
    from distributed import Client

    import clusterctl

    if backend == BASELINE:
        from benchmarks.clusters import scale_up_down

        ups, downs = zip(*(scale_up_down(BASELINE, SCALE_TO) for _ in range(repeats)), strict=True)
        return {"scale_1_to_8_s": summary(ups), "scale_8_to_1_s": summary(downs)}
    c = clusterctl.up(name="bench-mn", backend="swarm", workers=1, port=0, dashboard_port=0)
    ups, downs = [], []
    try:
        with Client(c) as client:
            for _ in range(repeats):
                start = time.perf_counter()
                c.scale(SCALE_TO)
                client.wait_for_workers(SCALE_TO)
                ups.append(time.perf_counter() - start)
                start = time.perf_counter()
                c.scale(1)
                while len(client.scheduler_info()["workers"]) > 1:
                    time.sleep(0.01)
                downs.append(time.perf_counter() - start)
    finally:
        c.shutdown()
    return {"scale_1_to_8_s": summary(ups), "scale_8_to_1_s": summary(downs)}


def figures(backend: str, repeats: int) -> dict[str, Any]:
    cold = {n: (lambda n=n: cold_start(backend, n)) for n in SIZES}
    found = {f"cold_start_{n}_s": measure(repeats, start) for n, start in cold.items()}
    return found | scale_figures(backend, repeats)


def main(repeats: int = 3) -> None:
    import docker

    from tests.swarm_node import several_nodes, single_node_swarm

    results: dict[str, Any] = {"machine": machine(), "repeats": repeats}
    results["date"] = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    results[BASELINE] = figures(BASELINE, repeats)
    with single_node_swarm(docker.from_env()):
        results["swarm, 1 node"] = figures("swarm", repeats)
    with several_nodes(3):
        results["swarm, 3 nodes"] = figures("swarm", repeats)
    output = RESULTS / "multinode.json"
    output.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    print(f"results: {output}")


def table(results: dict[str, Any]) -> str:
    """The figures as docs/benchmarks.md shows them: medians, and their ratio to LocalCluster's."""
    keys = [*(f"cold_start_{n}_s" for n in SIZES), "scale_1_to_8_s", "scale_8_to_1_s"]
    heads = ["cold start 4", "cold start 8", "scale 1→8", "scale 8→1"]
    lines = ["| | " + " | ".join(heads) + " |", "| --- |" + " --- |" * len(keys)]
    base = results[BASELINE]
    for name in (BASELINE, "swarm, 1 node", "swarm, 3 nodes"):
        cells = []
        for key in keys:
            median = results[name][key]["median"]
            ratio = median / base[key]["median"]
            cells.append(f"{median:.2f} s" + ("" if name == BASELINE else f" ({ratio:.1f}x)"))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
