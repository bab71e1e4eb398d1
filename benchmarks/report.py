"""A results JSON as docs/benchmarks.md's tables and as a PNG chart (both drawn from it alone).

``python -m benchmarks.report [RESULTS.json]`` draws them again from a saved run.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from benchmarks.clusters import BASELINE

PAGE = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
LATEST = Path(__file__).resolve().with_name("results") / "latest.json"
BEGIN, END = "<!-- benchmarks:begin -->", "<!-- benchmarks:end -->"
# Targets (issue 18) as ratios to LocalCluster: figure -> (at most / at least, the ratio by
# backend; a backend not named has no target for that figure).
CONTAINER_START = {"docker": 2.5, "compose": 2.5, "swarm": 3.0}
RATIO_TARGETS: dict[str, tuple[str, dict[str, float]]] = {
    "cold_start_4_s": ("≤", CONTAINER_START),
    "cold_start_8_s": ("≤", CONTAINER_START),
    "scale_1_to_8_s": ("≤", CONTAINER_START),
    "tasks_per_s": ("≥", dict.fromkeys(("local", "docker", "compose", "swarm"), 0.95)),
    "transfer_mb_per_s": ("≥", {"docker": 0.7}),  # with TLS on, the default
}
SHORT_NAMES = {
    "cold_start_4_s": "cold start, 4",
    "cold_start_8_s": "cold start, 8",
    "scale_1_to_8_s": "scale 1→8",
    "tasks_per_s": "throughput",
    "transfer_mb_per_s": "transfer",
}
PROFILE_STEPS = (  # (key in startup_profile, what happened by then)
    ("scheduler_started", "scheduler container started"),
    ("scheduler_listening", "scheduler listening"),
    ("worker_created", "worker containers created"),
    ("worker_started", "worker containers started"),
    ("worker_nanny_listening", "nannies listening"),
    ("worker_process_listening", "worker processes listening"),
    ("worker_registered", "workers registered"),
    ("last_registered", "last worker registered"),
    ("up_returned", "`up()` returned"),
    ("cpu_here_s", "CPU seconds spent by this process (and its children)"),
    ("cpu_containers_s", "CPU seconds spent in the containers"),
)


def rows(clusters: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(key, label, unit) of each cluster figure, in the table's order."""
    sizes, top = clusters["sizes"], clusters["scale_to"]
    tasks, mb = clusters["tasks"], clusters["transfer_mb"]
    side = clusters.get("reduction_side", 4000)  # runs before it was recorded: 4000
    return [
        *[(f"cold_start_{n}_s", f"cold start, {n} worker{'s' * (n > 1)}", "s") for n in sizes],
        (f"scale_1_to_{top}_s", f"scale 1→{top}", "s"),
        (f"scale_{top}_to_1_s", f"graceful scale {top}→1", "s"),
        ("tasks_per_s", f"throughput, {tasks:,} tiny tasks", "tasks/s"),
        ("array_reduction_s", f"dask.array reduction ({side}² matmul, sum)", "s"),
        ("transfer_mb_per_s", f"worker-to-worker transfer, {mb} MB", "MB/s"),
        ("status_s", "`clusterctl status`", "s"),
    ]


def markdown(report: dict[str, Any]) -> str:
    """The benchmark page's tables: machine, cluster figures, start-up profile, images."""
    m = report["machine"]
    out = [
        f"Run of {report['date']} UTC{' (quick mode)' if report['quick'] else ''} on "
        f"{m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, Docker Engine "
        f"{m['docker_engine']} ({m['storage_driver']} storage), Python {m['python']} "
        "([JSON](../benchmarks/results/latest.json), [chart](../benchmarks/results/latest.png)).",
    ]
    if clusters := report.get("clusters"):
        out += ["", *cluster_table(clusters)]
        if clusters.get("startup_profile"):
            out += ["", *profile_table(clusters)]
        if clusters.get("without_tls"):
            out += ["", *tls_table(clusters)]
    if images := report.get("images"):
        out += ["", *image_table(images)]
    return "\n".join(out) + "\n"


def cluster_table(clusters: dict[str, Any]) -> list[str]:
    backends = clusters["backends"]
    out = [
        f"Median of {clusters['repeats']} runs ± half their range, and the ratio to "
        f"LocalCluster (in the same process, same run). `clusterctl --help`: "
        f"{clusters['help_s']['median']:.2f} s.",
        "",
        "| figure | " + " | ".join(backends) + " | target |",
        "| --- |" + " ---: |" * len(backends) + " --- |",
    ]
    for key, label, unit in rows(clusters):
        cells = []
        for backend in backends:
            figure = clusters[backend].get(key)
            if figure is None:
                cells.append("—")
                continue
            cell = f"{number(figure['median'])} {unit} ±{number(figure['spread'] / 2)}"
            ratio = clusters["ratios"].get(backend, {}).get(key)
            if ratio is not None:
                cell += f" · **{ratio:.2f}x**" + verdict(key, backend, ratio)
            cells.append(cell)
        out.append(f"| {label} | " + " | ".join(cells) + f" | {goal(key)} |")
    return out


def profile_table(clusters: dict[str, Any]) -> list[str]:
    profile, imports = clusters["startup_profile"], clusters.get("imports")
    workers, backends = clusters["profile_workers"], list(profile)
    out = [
        f"Where a cold start of {workers} workers goes: seconds after `up()` was called, from the "
        "engine's records of each container and the timestamps of their log lines (worker "
        "steps: median over the workers), and the CPU time spent by then.",
        "",
        "| by then | " + " | ".join(backends) + " |",
        "| --- |" + " ---: |" * len(backends),
    ]
    for key, label in PROFILE_STEPS:
        cells = [f"{profile[b][key]:.2f}" if key in profile[b] else "—" for b in backends]
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    if imports:
        out += [
            "",
            f"Importing what `dask worker` imports takes {imports['import_dask_worker_here_s']} s "
            f"here and {imports['import_dask_worker_in_image_s']} s in the worker image; an "
            f"empty container of the worker image runs and is removed in "
            f"{imports['run_empty_container_s']} s.",
        ]
    return out


def tls_table(clusters: dict[str, Any]) -> list[str]:
    """TLS on (the default) against off, for the backends measured both ways."""
    off = clusters["without_tls"]
    pairs = [(b, on_off) for b in off for on_off in ("on", "off")]
    out = [
        "What TLS costs (on is the default; medians as above):",
        "",
        "| | " + " | ".join(f"{b}, TLS {on_off}" for b, on_off in pairs) + " |",
        "| --- |" + " ---: |" * len(pairs),
    ]
    for key, label, unit in rows(clusters):
        if any(key not in off[b] for b in off):
            continue
        cells = [
            number((clusters[b] if on_off == "on" else off[b])[key]["median"])
            for b, on_off in pairs
        ]
        out.append(f"| {label} ({unit}) | " + " | ".join(cells) + " |")
    return out


def image_table(images: dict[str, Any]) -> list[str]:
    targets = images["targets"]
    out = ["| image figure | measured | target |", "| --- | ---: | --- |"]
    for role, size in images["size_mb"].items():
        out.append(f"| {role} image | {size} MB | ≤ {targets['size_mb'][role]} MB |")
    if "cold_build_s" in images:
        out.append(f"| cold build, Debian base included | {images['cold_build_s']} s | — |")
    out.append(
        f"| rebuild after a code-only change | {images['code_only_rebuild_s']} s "
        f"| ≤ {targets['code_only_rebuild_s']} s |"
    )
    return out


def verdict(key: str, backend: str, ratio: float) -> str:
    """Whether a backend's figure met its target, and by how much it missed; "" if it has
    none."""
    sign, targets = RATIO_TARGETS.get(key, ("", {}))
    if backend not in targets:
        return ""
    miss = ratio - targets[backend] if sign == "≤" else targets[backend] - ratio
    return " (met)" if miss <= 0 else f" (missed by {miss:.2f}x)"


def goal(key: str) -> str:
    """A figure's targets, as the table's last column says them: "≤ 2.5x docker, compose"."""
    sign, targets = RATIO_TARGETS.get(key, ("", {}))
    by_ratio: dict[float, list[str]] = {}
    for backend, ratio in targets.items():
        by_ratio.setdefault(ratio, []).append(backend)
    return "; ".join(f"{sign} {ratio:g}x {', '.join(names)}" for ratio, names in by_ratio.items())


def number(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.2f}"


def update_page(report: dict[str, Any], page: Path = PAGE) -> None:
    """Put ``markdown(report)`` between the benchmark page's markers."""
    text = page.read_text()
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise SystemExit(f"{page}: no {BEGIN} … {END} section to fill")
    page.write_text(pattern.sub(lambda _: f"{BEGIN}\n{markdown(report)}{END}", text))


def page_section(page: Path = PAGE) -> str:
    text = page.read_text()
    return text[text.index(BEGIN) + len(BEGIN) + 1 : text.index(END)]


def chart(report: dict[str, Any], path: Path) -> None:
    """Four panels: cold start by N; ratios against their targets; the start-up profile;
    image sizes against theirs. Saved without a timestamp, so the same JSON draws the same
    PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 9), layout="constrained")
    clusters, images = report.get("clusters"), report.get("images")
    if clusters:
        cold_start_panel(axes[0][0], clusters)
        ratio_panel(axes[0][1], clusters)
        profile_panel(axes[1][0], clusters)
    if images:
        image_panel(axes[1][1], images)
    m = report["machine"]
    fig.suptitle(
        f"clusterctl benchmarks, {report['date']} — {m['cores']} cores, "
        f"{m['memory_gib']} GiB, Docker Engine {m['docker_engine']}"
    )
    fig.savefig(path, dpi=80, metadata={"Software": None})
    plt.close(fig)


def cold_start_panel(ax: Any, clusters: dict[str, Any]) -> None:
    sizes = clusters["sizes"]
    for backend in clusters["backends"]:
        figures = [clusters[backend][f"cold_start_{n}_s"] for n in sizes]
        medians = [f["median"] for f in figures]
        low = [f["median"] - min(f["values"]) for f in figures]
        high = [max(f["values"]) - f["median"] for f in figures]
        ax.errorbar(sizes, medians, yerr=[low, high], marker="o", capsize=3, label=backend)
    ax.set(title="cold start to N workers ready", xlabel="workers", ylabel="seconds", xticks=sizes)
    ax.set_ylim(bottom=0)
    ax.legend()


def ratio_panel(ax: Any, clusters: dict[str, Any]) -> None:
    keys = [k for k in RATIO_TARGETS if k in clusters[BASELINE]]
    backends = [b for b in clusters["backends"] if b != BASELINE]
    width = 0.8 / max(len(backends), 1)
    for i, backend in enumerate(backends):
        values = [clusters["ratios"][backend][k] for k in keys]
        ax.bar([x + i * width for x in range(len(keys))], values, width, label=backend)
        for x, key in enumerate(keys):  # each bar's own target
            if (target := RATIO_TARGETS[key][1].get(backend)) is not None:
                left = x + i * width - width / 2
                ax.hlines(target, left, left + width, colors="black", linestyles="--")
    ax.axhline(1, color="grey", linewidth=0.8)
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(keys))], [SHORT_NAMES[k] for k in keys])
    ax.set(title="ratio to LocalCluster (dashes: each bar's target)", ylabel="x LocalCluster")
    ax.legend(loc="best")


def profile_panel(ax: Any, clusters: dict[str, Any]) -> None:
    profile = clusters.get("startup_profile", {})
    steps = [
        ("worker_started", "engine: create + start"),
        ("worker_nanny_listening", "nanny: interpreter, imports"),
        ("worker_process_listening", "worker process: started by the nanny"),
        ("worker_registered", "registration"),
        ("up_returned", "rest, until up() returns"),
    ]
    backends, in_legend = list(profile), set()
    for i, backend in enumerate(backends):
        if "worker_started" not in profile[backend]:  # LocalCluster: its whole start only
            ax.barh(i, profile[backend]["up_returned"], color="grey", label="whole start")
            continue
        start = 0.0
        for j, (key, label) in enumerate(steps):
            end = profile[backend][key]
            shown = None if label in in_legend else label
            ax.barh(i, end - start, left=start, color=f"C{j}", label=shown)
            in_legend.add(label)
            start = end
    ax.set_yticks(range(len(backends)), backends)
    ax.set(
        title=f"where a cold start of {clusters['profile_workers']} workers goes",
        xlabel="seconds after up()",
    )
    if backends:
        ax.legend(loc="lower right", fontsize="small")


def image_panel(ax: Any, images: dict[str, Any]) -> None:
    roles = list(images["size_mb"])
    ax.bar(roles, [images["size_mb"][r] for r in roles], color="C0", label="measured")
    for x, role in enumerate(roles):
        target = images["targets"]["size_mb"][role]
        ax.hlines(
            target,
            x - 0.4,
            x + 0.4,
            colors="black",
            linestyles="--",
            label="target" if x == 0 else None,
        )
    rebuild, target = images["code_only_rebuild_s"], images["targets"]["code_only_rebuild_s"]
    ax.set(title=f"image sizes; code-only rebuild {rebuild} s (target ≤ {target} s)", ylabel="MB")
    ax.legend(loc="best")


def publish(report: dict[str, Any], path: Path, page: bool) -> None:
    """Draw the chart next to the JSON at ``path``; with ``page``, fill the tables of
    docs/benchmarks.md too."""
    chart(report, path.with_suffix(".png"))
    print(f"chart: {path.with_suffix('.png')}")
    if page:
        update_page(report)
        print(f"tables: {PAGE}")


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else LATEST
    report = json.loads(path.read_text())
    publish(report, path, page=path.resolve() == LATEST and not report["quick"])


if __name__ == "__main__":
    main()
