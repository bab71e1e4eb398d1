"""The ``clusterctl`` command line: parse, call the API, print.

Only click is imported at start-up; everything else is imported inside the commands so
that ``clusterctl --help`` stays instant.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import warnings
from typing import Any

import click

from clusterctl import __version__
from clusterctl.errors import ClusterctlError, EnvironmentMismatchWarning
from clusterctl.render import RENDERED

NAME_HELP = "Cluster name (default: clusterctl.name in dask.config, normally 'default')."
SHARE_DIR_HELP = (
    "A folder (e.g. .) mounted at its own path in the scheduler, workers and notebook, which "
    "start in it and write as its owner; kubernetes: pvc:CLAIM."
)
# The spec's own, kept import-free (a test checks they agree): clusterctl.spec's MAX_WORKERS
# and BACKENDS.
MAX_WORKERS = 1000
BACKENDS = ("local", "docker", "compose", "swarm", "kubernetes")


class Group(click.Group):
    """Turns clusterctl's own errors into a one-line message and an exit status."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ClusterctlError as exc:
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            ctx.exit(130)


class Whole(click.IntRange):
    """A whole number in a range, whose error shows a huge value cut short."""

    def fail(self, message: str, param: Any = None, ctx: Any = None) -> Any:
        if len(message) > 200:
            message = f"{message[:120]}… ({len(message)} characters)"
        return super().fail(message, param, ctx)


def cluster_names(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    """Shell completion: the names of the clusters made on this machine."""
    from clusterctl import state

    try:
        return [name for name in state.names() if name.startswith(incomplete)]
    except Exception:  # a broken state folder: no completions, never a traceback
        return []


def name_option(f: Any) -> Any:
    return click.option("--name", "-n", help=NAME_HELP, shell_complete=cluster_names)(f)


def spec_file_option(f: Any) -> Any:
    return click.option(
        "-f",
        "--file",
        "spec_file",
        type=click.Path(dir_okay=False),
        help="Spec file (YAML); flags override it.",
    )(f)


def _name(name: str | None) -> str:
    from clusterctl.api import default_name

    return name or default_name()


@click.group(name="clusterctl", cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="clusterctl")
@click.option(
    "-v",
    "--verbose",
    count=True,
    help="Show what clusterctl does and asks of the engine (each API request); -vv: more.",
)
def cli(verbose: int) -> None:
    """An interactive Dask cluster in one command, on this machine or in containers.

    \b
    clusterctl up                 start the default cluster (2 local workers)
    clusterctl scale 8            8 workers; removed ones hand their data over first
    clusterctl status             workers, memory, tasks, dashboard link, versions
    clusterctl down               stop it and remove everything it made
    """
    # Commands submit no tasks: what a cluster lacks is shown by `status`, not warned about.
    warnings.filterwarnings("ignore", category=EnvironmentMismatchWarning)
    # A warning reads as one message, without the source line that issued it.
    warnings.formatwarning = lambda message, category, *_, **__: (
        f"Warning ({category.__name__}): {message}\n"
    )
    if verbose:
        _log_to_stderr(verbose)


def _unquoted(record: Any) -> bool:
    """A request's line with its URL's query readable (the label filters, mostly)."""
    from urllib.parse import unquote_plus

    record.msg, record.args = unquote_plus(record.getMessage()), ()
    return True


def _log_to_stderr(verbose: int) -> None:
    """-v: clusterctl's own steps, every request to the engine's API (the docker SDK's
    HTTP calls) and the commands it runs (Compose); -vv: the same at debug level, Dask's
    too."""
    import logging

    logging.basicConfig(format="%(asctime)s %(name)s %(message)s", level=logging.WARNING)
    level = logging.INFO if verbose == 1 else logging.DEBUG
    logging.getLogger("clusterctl").setLevel(level)
    requests = logging.getLogger("urllib3.connectionpool")  # one line a request
    requests.setLevel(logging.DEBUG)
    requests.addFilter(_unquoted)
    if verbose > 1:
        logging.getLogger("distributed").setLevel(logging.DEBUG)


@cli.command()
@spec_file_option
@name_option
@click.option("--workers", "-w", type=Whole(0, MAX_WORKERS), help="Workers in the first group.")
@click.option("--threads", type=Whole(1, 1024), help="Threads per worker.")
@click.option("--memory-limit", help='Memory per worker: "auto", "4GiB", or a fraction.')
@click.option("--backend", "-b", type=click.Choice(BACKENDS), help="Where (default: local).")
@click.option("--host", help="Scheduler bind address (default 127.0.0.1).")
@click.option(
    "--tls/--no-tls",
    default=None,
    help="Mutual TLS with per-cluster certificates (default: on, but for kubernetes). "
    "--no-tls: a single-user machine only, and only on 127.0.0.1.",
)
@click.option("--port", type=Whole(), help="Scheduler port (default 8786; 0 = any free).")
@click.option("--dashboard-port", type=Whole(), help="Dashboard port (default 8787; 0 = any free).")
@click.option(
    "--notebook/--no-notebook", default=None, help="Also start JupyterLab wired to the cluster."
)
@click.option("--notebook-port", type=Whole(), help="JupyterLab port (default 8888; 0 = any free).")
@click.option("--share-dir", help=SHARE_DIR_HELP)
@click.option(
    "--wait/--no-wait", default=True, show_default=True, help="Wait until every worker runs."
)
def up(spec_file: str | None, wait: bool, **fields: Any) -> None:
    """Start a cluster that keeps running after this command."""
    from clusterctl.api import build_spec
    from clusterctl.cluster import Cluster
    from clusterctl.crashloop import WorkerStartFailed, keep_record
    from clusterctl.interrupts import Interrupted, Interruptions
    from clusterctl.security import plaintext_note

    if spec_file is not None:
        fields["spec"] = spec_file
    if fields["memory_limit"] is not None:
        fields["memory_limit"] = _memory_value(fields["memory_limit"])
    spec = build_spec(**fields)
    if note := plaintext_note(spec):
        click.echo(f"Warning: {note}", err=True)
    cluster = None
    with Interruptions() as interruptions:
        try:
            starting = _status(f"Starting scheduler of {spec.name!r} ({spec.backend})")
            with interruptions.held(), starting:  # all or nothing: a signal waits for it
                cluster = Cluster(spec, wait=False)
            if wait:
                _wait_with_progress(cluster)
        except Interrupted as stop:  # SIGINT, SIGTERM or SIGHUP: undo the start
            if cluster is not None:
                with contextlib.suppress(Interrupted), interruptions.held():
                    cluster.shutdown()
            click.echo(f"Error: {stop}; cluster {spec.name!r} was removed again", err=True)
            sys.exit(stop.exit_status)
        except WorkerStartFailed as failed:  # it would fail again: nothing is left of it
            with interruptions.held():
                cluster.shutdown()
                keep_record(spec.name, spec.backend, failed)
            raise
        interruptions.settle()  # it is up: a signal from here on leaves it up, exit status 0
        click.echo(f"Cluster {spec.name!r} is up on {spec.backend}: {len(cluster.workers)} workers")
        click.echo(f"  scheduler  {cluster.scheduler_address}")
        click.echo(f"  dashboard  {cluster.dashboard_link}")
        if notebook := cluster.backend.notebook_url():
            click.echo(f"  notebook   {notebook}")
        click.echo(f"  connect    clusterctl.connect({spec.name!r})")
        cluster.close()


@cli.command(context_settings={"ignore_unknown_options": True})  # so "-1" reaches N
@click.argument("n", type=Whole(0, MAX_WORKERS))
@name_option
@click.option("--group", "-g", help="Worker group (default: the first).")
@click.option(
    "--wait/--no-wait", default=True, show_default=True, help="Wait until new workers run."
)
def scale(n: int, name: str | None, group: str | None, wait: bool) -> None:
    """Scale to N workers; workers removed hand their data to the others first.

    Turns off adaptive scaling if it was on.
    """
    from clusterctl import supervisor
    from clusterctl.cluster import Cluster

    name = _name(name)
    cluster = Cluster.from_name(name)
    try:
        cluster.spec.group(group)  # an unknown group is an input error, before anything
        was_adaptive = supervisor.adapt_settings(name) is not None
        cluster.scale(n, group)
        if was_adaptive:
            click.echo("Adaptive scaling turned off.", err=True)
        if wait:
            _wait_with_progress(cluster)
        click.echo(f"Cluster {name!r}: {_workers(cluster)}")
    finally:
        cluster.close()


@cli.command()
@name_option
@click.option("--minimum", type=Whole(0, MAX_WORKERS), default=0, show_default=True)
@click.option("--maximum", type=Whole(1, MAX_WORKERS))
@click.option("--group", "-g", help="Worker group to adapt (default: the first).")
@click.option("--off", is_flag=True, help="Turn adaptive scaling off.")
def adapt(
    name: str | None, minimum: int, maximum: int | None, group: str | None, off: bool
) -> None:
    """Scale with the load, between --minimum and --maximum workers.

    The adaptive loop runs in the cluster's supervisor, a small detached process on this
    machine, so it keeps working after this command exits; `scale` and `adapt --off`
    turn it off.
    """
    from clusterctl.api import adapt as set_adapt
    from clusterctl.errors import UserInputError

    name = _name(name)
    if off:
        was_on = set_adapt(name, maximum=None)
        click.echo("Adaptive scaling turned off." if was_on else "Adaptive scaling was off.")
        return
    if maximum is None:
        raise UserInputError("--maximum: required (or --off)")
    set_adapt(name, minimum, maximum, group)
    click.echo(f"Cluster {name!r} adapts between {minimum} and {maximum} workers.")


@cli.command()
@name_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(name: str | None, as_json: bool) -> None:
    """Workers, threads, memory, tasks, dashboard link and versions of a cluster."""
    import json

    from clusterctl.api import status as get_status

    report = get_status(_name(name))
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
    else:
        _print_status(report)
    if not report["scheduler_running"]:
        sys.exit(1)


@cli.command()
@click.argument("process", default="scheduler")
@name_option
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines.")
@click.option("--tail", type=Whole(1), help="Only the last N lines.")
def logs(process: str, name: str | None, follow: bool, tail: int | None) -> None:
    """Print the log of the scheduler (default), of a worker (by name), or of the
    supervisor (which replaces lost workers and runs adaptive scaling)."""
    from itertools import islice

    from clusterctl import supervisor
    from clusterctl.api import last_removal
    from clusterctl.backends import get_cluster
    from clusterctl.errors import ClusterNotFound, UserInputError

    try:
        backend = get_cluster(_name(name))
    except ClusterNotFound:
        if (record := last_removal(_name(name))) is None:
            raise
        click.echo(f"Cluster {record['name']!r} was removed {_when(record['removed'])}")
        click.echo(f"  why: {record['reason']}\n  the last lines of its logs:")
        for line in record["log"]:
            click.echo(f"  {line}")
        return
    read = functools.partial(backend.logs, process)
    if process == "supervisor":
        if backend.orchestrated:
            raise UserInputError(
                f"cluster {backend.spec.name!r} has no supervisor: on {backend.kind}, "
                "its orchestrator replaces lost workers"
            )
        read = functools.partial(supervisor.logs, backend.spec.name)
    lines = read(follow=follow)
    if tail:
        total = sum(1 for _ in read())
        lines = islice(lines, max(total - tail, 0), None)
    for line in lines:
        click.echo(line)


@cli.command()
@name_option
@click.option("--open", "open_browser", is_flag=True, help="Open it in a web browser.")
def dashboard(name: str | None, open_browser: bool) -> None:
    """Print (or open) the Dask dashboard link."""
    from clusterctl.cluster import Cluster

    cluster = Cluster.from_name(_name(name))
    link = cluster.dashboard_link
    cluster.close()
    click.echo(link)
    if open_browser:
        import webbrowser

        webbrowser.open(link)


@cli.command()
@name_option
@click.option("--open", "open_browser", is_flag=True, help="Open it in a web browser.")
def notebook(name: str | None, open_browser: bool) -> None:
    """Print (or open) JupyterLab's URL, with its token."""
    from clusterctl.backends import get_cluster
    from clusterctl.errors import UserInputError

    cluster = _name(name)
    url = get_cluster(cluster).notebook_url()
    if url is None:
        raise UserInputError(
            f"cluster {cluster!r} has no notebook; start one with `clusterctl up --notebook`"
        )
    click.echo(url)
    if open_browser:
        import webbrowser

        webbrowser.open(url)


@cli.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option(
    "--all", "all_", is_flag=True, help="Also clusters removed for you (idle-timeout...)."
)
def list_(as_json: bool, all_: bool) -> None:
    """Clusters on this machine: running, stopped (scheduler gone), or broken; with
    dask-ctl's columns (address, workers, threads, memory, created). --all: also those
    removed for you, when and why (`clusterctl logs --name NAME` shows their last lines)."""
    import json
    from dataclasses import asdict

    from clusterctl.api import list_clusters

    clusters = list_clusters(removed=all_)
    if as_json:
        click.echo(json.dumps([asdict(c) for c in clusters], indent=2))
    elif not clusters:
        click.echo("No clusters.")
    else:
        _print_list(clusters)


def _print_list(clusters: list[Any]) -> None:
    import datetime

    from dask.utils import format_bytes, format_time_ago
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 160)
    columns = ("name", "address", "type", "workers", "threads", "memory", "created", "status")
    table = Table(*columns, box=None, pad_edge=False)
    table.columns[0].no_wrap = True
    for c in clusters:
        status = f"{c.status}: {c.problem}" if c.problem else c.status
        if c.status == "removed":
            status = f"removed {_when(c.removed)}: {c.problem}"
        if c.status == "broken":
            status += f"; `clusterctl down {c.name}` removes it"
        created = c.created and format_time_ago(datetime.datetime.fromtimestamp(c.created))
        counts = (c.workers, c.threads, c.memory and format_bytes(c.memory))
        table.add_row(
            c.name,
            c.address,
            c.backend,
            *("" if v is None else str(v) for v in counts),
            created or "",
            status,
        )
    console.print(table, highlight=False)


@cli.command()
@click.argument("cluster", required=False, shell_complete=cluster_names)
@name_option
@click.option("--all", "all_", is_flag=True, help="Every cluster on this machine.")
def down(cluster: str | None, name: str | None, all_: bool) -> None:
    """Stop a cluster and remove everything it made (processes, containers, state)."""
    from clusterctl.api import down as stop_cluster
    from clusterctl.api import list_clusters
    from clusterctl.errors import UserInputError

    if cluster and name and cluster != name:
        raise UserInputError(f"two names given: {cluster!r} and --name {name!r}")
    if all_:
        if cluster or name:
            raise UserInputError("--all: give either a name or --all, not both")
        names = sorted({c.name for c in list_clusters()})
        if not names:
            click.echo("No clusters on this machine; nothing to do.")
            return
    else:
        names = [_name(cluster or name)]
    failed = 0
    for n in names:
        try:
            done = stop_cluster(n)
        except ClusterctlError as exc:
            if not all_:
                raise
            click.echo(f"Error: cluster {n!r}: {exc}", err=True)
            failed += 1
            continue
        click.echo(f"Cluster {n!r} is down." if done else f"No cluster named {n!r}; nothing to do.")
    if failed:
        sys.exit(1)


@cli.command()
@click.option("--backend", "-b", required=True, type=click.Choice(RENDERED))
@spec_file_option
@click.option("--workers", "-w", type=Whole(0, MAX_WORKERS), help="Workers in the first group.")
@click.option(
    "--notebook/--no-notebook", default=True, show_default=True, help="Include JupyterLab."
)
@click.option("--share-dir", help=SHARE_DIR_HELP)
@click.option(
    "--operator", is_flag=True, help="kubernetes: a DaskCluster for the dask-kubernetes operator."
)
@click.option(
    "--pod-monitor",
    is_flag=True,
    help="kubernetes: also a PodMonitor, for the Prometheus operator to scrape /metrics.",
)
def render(
    backend: str,
    spec_file: str | None,
    workers: int | None,
    notebook: bool,
    share_dir: str | None,
    operator: bool,
    pod_monitor: bool,
) -> None:
    """Print a cluster as the backend's own file, to run without clusterctl.

    \b
    compose:    a docker-compose.yml for plain `docker compose` (ports on 127.0.0.1, plain
                TCP inside the project's network: certificates need `clusterctl up`).
    swarm:      a stack file for `docker stack deploy` (ports in host mode, plain TCP inside
                the overlay network: certificates need `clusterctl up`).
    kubernetes: manifests for `kubectl apply -f -` (plain TCP inside the namespace, behind
                a NetworkPolicy); --operator: a DaskCluster resource instead.
    """
    from clusterctl.api import build_spec
    from clusterctl.errors import UserInputError

    for flag, given in (("--operator", operator), ("--pod-monitor", pod_monitor)):
        if given and backend != "kubernetes":
            raise UserInputError(f"{flag}: only with --backend kubernetes, not {backend}")
    spec = build_spec(
        spec_file,
        backend=backend,
        workers=workers,
        notebook=notebook,
        tls=False,
        share_dir=share_dir,
    )
    if backend == "kubernetes":
        from clusterctl.render import kubernetes

        text = kubernetes.render_text(spec, operator=operator, pod_monitor=pod_monitor)
        click.echo(text, nl=False)
    elif backend == "swarm":
        from clusterctl.render import stack

        click.echo(stack.render_text(spec), nl=False)
    else:
        from clusterctl.render import compose

        click.echo(compose.render_text(spec), nl=False)


@cli.group()
def image() -> None:
    """Build, save and load the scheduler, worker and notebook images."""


@image.command(name="base")
@click.option("--release", default="bookworm", show_default=True, help="Debian release.")
@click.option("--mirror", help="Debian mirror URL (default: the one this machine's apt uses).")
def image_base(release: str, mirror: str | None) -> None:
    """Make a Debian base image with this client's Python, for engines with no registry."""
    from clusterctl.images import build_base

    name = build_base(release, mirror, progress=_progress_line)
    click.echo(name)


@image.command(name="build")
@click.option(
    "--base",
    metavar="IMAGE|debian",
    help="Base image; 'debian' makes one from Debian's archive (no registry needed). "
    "Default: that one if the engine has it, else python:X.Y.Z-slim.",
)
@click.option(
    "--extra",
    multiple=True,
    metavar="REQUIREMENT",
    help="Another package for every image, e.g. --extra scikit-learn==1.5.2.",
)
@click.option("--fresh", is_flag=True, help="Rebuild everything, with no cache.")
@click.option(
    "--sync",
    is_flag=True,
    help="Put this whole Python environment (every installed package, at its version) into "
    "the scheduler and worker images; clusters then run on them. Packages with no wheel to "
    "be had are listed and left out.",
)
def image_build(base: str | None, extra: tuple[str, ...], fresh: bool, sync: bool) -> None:
    """Build the three images, locked to the versions of this Python environment."""
    from clusterctl.images import build_images, image_sizes_mb

    built = build_images(base, extra, fresh, sync, progress=_progress_line)
    sizes = image_sizes_mb(built.values())
    for role, name in built.items():
        click.echo(f"{role:10} {name}  {sizes[name]} MB")


@image.command(name="save")
@click.argument("archive", type=click.Path(dir_okay=False, writable=True))
@click.argument("images", nargs=-1)
def image_save(archive: str, images: tuple[str, ...]) -> None:
    """Write the images (default: this client's three) to one ARCHIVE, gzip-compressed
    unless its name ends in .tar."""
    from pathlib import Path

    from clusterctl.images import save_images

    with _status(f"Saving to {archive}"):
        names = save_images(Path(archive), images or None)
    click.echo(f"Saved {', '.join(names)} to {archive}")


@image.command(name="load")
@click.argument("archive", type=click.Path(dir_okay=False))
def image_load(archive: str) -> None:
    """Load an ARCHIVE from `image save` into this engine (or the one DOCKER_HOST names)."""
    from pathlib import Path

    from clusterctl.images import load_images

    with _status(f"Loading {archive}"):
        names = load_images(Path(archive))
    click.echo(f"Loaded {', '.join(names)}")


# --- output helpers ------------------------------------------------------------------------


def _workers(cluster: Any) -> str:
    n = len(cluster.workers)
    return f"{n} worker" + ("" if n == 1 else "s")


def _when(timestamp: float) -> str:
    """A moment (seconds since the epoch) as local time and how long ago."""
    import datetime

    from dask.utils import format_time_ago

    moment = datetime.datetime.fromtimestamp(timestamp)
    return f"at {moment:%Y-%m-%d %H:%M:%S} ({format_time_ago(moment)})"


def _memory_value(text: str) -> str | float:
    """'0.5' on the command line means a fraction, as it does in a spec file."""
    try:
        return float(text) if "." in text else text
    except ValueError:
        return text


def _progress_line(line: str) -> None:
    click.secho(line, err=True, dim=True)


def _status(message: str) -> Any:
    return _stderr_console().status(message)


def _wait_with_progress(cluster: Any) -> None:
    """Wait for the cluster's workers, with a bar on a terminal (elsewhere rich's bar would
    leave a blank line in the output)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = _stderr_console()
    if not console.is_terminal:
        cluster.wait_for_workers()
        return
    with Progress(
        TextColumn("Workers"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=True,
        console=console,
    ) as bar:
        task = bar.add_task("workers", total=None)

        def update(running: int, wanted: int) -> None:
            bar.update(task, completed=running, total=wanted)

        cluster.wait_for_workers(progress=update)


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def _print_status(report: dict[str, Any]) -> None:
    from dask.utils import format_bytes
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 120)
    console.print(f"[bold]{report['name']}[/] on {report['backend']}")
    if not report["scheduler_running"]:
        console.print(
            "[red]scheduler: not running[/] (stopped or crashed); "
            f"`clusterctl down {report['name']}` removes what is left"
        )
    else:
        console.print(f"scheduler  {report['scheduler']}")
        console.print(f"dashboard  {report['dashboard']}")
        if report.get("notebook"):
            console.print(f"notebook   {report['notebook']}")
        v = report["versions"]
        console.print(
            f"versions   python {v['python']}, dask {v['dask']}, distributed {v['distributed']}"
        )
        if report["version_mismatch"]:
            console.print(f"[red]{report['version_mismatch']}[/]", highlight=False)
        if report.get("environment_mismatch"):
            console.print(f"[yellow]{report['environment_mismatch']}[/]", highlight=False)
        if report.get("plaintext"):
            console.print(f"[yellow]Warning: {report['plaintext']}[/]", highlight=False)
    if report.get("adaptive"):
        a = report["adaptive"]
        console.print(f"adaptive   {a['minimum']} to {a['maximum']} workers")
    if report.get("idle_timeout"):
        from dask.utils import format_time

        left = report.get("idle_left")
        console.print(
            f"idle       removed after {format_time(report['idle_timeout'])} with no client "
            "and no task"
            + (f": idle now, removed in {format_time(left)}" if left is not None else "")
        )
    for line in report.get("crash_loops", []):
        console.print(f"[red]{line}[/]", highlight=False)
    if report["scheduler_running"] and not report.get("supervised"):
        console.print(
            "[yellow]supervisor: not running[/] (dead workers are not replaced); "
            f"`clusterctl scale N --name {report['name']}` starts one"
        )
    for g in report.get("groups", []):  # the per-worker limit, as the workers registered it
        limits = " or ".join(format_bytes(b) for b in g["per_worker"]) or "none registered yet"
        console.print(
            f"group      {g['name']}: {g['count']} workers, memory limit per worker {limits} "
            f"(memory-limit: {g['memory_limit']})",
            highlight=False,
        )
    table = Table("worker", "group", "state", "threads", "memory", "processing", "where")
    table.columns[0].no_wrap = True
    for w in report["workers"]:
        memory = (
            f"{format_bytes(w['memory'] or 0)} / {format_bytes(w['memory_limit'])}"
            if w.get("memory_limit")
            else ""
        )
        table.add_row(
            w["name"],
            w["group"],
            w["state"],
            str(w.get("threads") or ""),
            memory,
            str(w.get("processing", "")),
            w["detail"],
        )
    console.print(table)
    running = sum(1 for w in report["workers"] if w["state"] == "running")
    console.print(f"{running} of {len(report['workers'])} workers running")


def main() -> None:
    """Console-script entry point (also `dask clusterctl`, through dask's ``dask_cli``)."""
    from clusterctl.interrupts import ignore_from_now

    try:
        cli()
    finally:
        ignore_from_now()
