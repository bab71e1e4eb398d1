"""The controller: a ``distributed.deploy.Cluster`` driving one backend.

This is the one module that talks to the scheduler. Scale-down is decided here and
only here: the scheduler says which workers are cheapest to close
(``workers_to_close``), they are retired by name so their data moves
(``retire_workers(names=..., close_workers=True)``), and only then is the backend told
to remove exactly those.

Why ``Cluster`` and not ``SpecCluster``: a SpecCluster owns its workers as in-process
objects that die with it, while ours outlive the Python process that started them and
are read back from the backend by any later process; and SpecCluster's manual scale-down
passes names where ``retire_workers`` wants addresses, so it is not graceful
(distributed issue 4532). ``Cluster`` gives us the widget, ``dashboard_link``,
``Client(cluster)``, ``adapt`` and dask-labextension support with none of that.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import functools
import logging
import math
import time
import warnings
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from distributed import Adaptive
from distributed.core import Status, rpc
from distributed.deploy.cluster import Cluster as DaskCluster
from distributed.protocol.pickle import dumps
from distributed.versions import VersionMismatchWarning, get_versions
from distributed.versions import error_message as version_error_message
from tornado.ioloop import IOLoop

from clusterctl import crashloop, environment, idle, lifetime, memory, state, supervisor, waiting
from clusterctl.backends import (
    Backend,
    Member,
    backend_class,
    find_all,
    get_cluster,
    require_scheduler_running,
)
from clusterctl.errors import (
    ClusterctlError,
    ClusterNotFound,
    EnvironmentMismatchWarning,
    UserInputError,
)
from clusterctl.security import client_security, create_tls_files
from clusterctl.spec import ClusterSpec, WorkerGroup

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]
COUNTS = "counts.json"  # in the state folder: each group's size, as last asked for
COMPARE_WITHIN = 5.0  # seconds the versions of the scheduler and workers are asked for
ANSWER_WITHIN = 5.0  # seconds a running cluster's scheduler has to take a connection or answer
T = TypeVar("T")


class Cluster(DaskCluster):
    """An interactive Dask cluster on any backend, that outlives this object.

    ``Cluster(spec)`` starts a new cluster; :meth:`from_name` attaches to a running one.
    :meth:`close` only disconnects unless ``shutdown_on_close`` is true (then it removes the
    cluster, as this process's exit does if it is still open: see :mod:`clusterctl.lifetime`);
    :meth:`shutdown` stops the cluster for good (as ``clusterctl down`` does).
    ``compare_versions``: on connecting, warn of packages and versions that differ between
    this client and the cluster.
    """

    def __init__(
        self,
        spec: ClusterSpec,
        *,
        backend: Backend | None = None,
        wait: bool = True,
        shutdown_on_close: bool = False,
        asynchronous: bool = False,
        loop: IOLoop | None = None,
        quiet: bool = True,
        compare_versions: bool = True,
    ):
        self.spec = spec
        self._compare_versions = compare_versions
        self._creating = backend is None
        self.backend = backend if backend is not None else backend_class(spec.backend)(spec)
        self.shutdown_on_close = shutdown_on_close
        self._wait_on_start = wait
        self._workers: set[str] = set()
        self._dashboard: str | None = None  # host:port, where the backend publishes it
        self._lost_since: dict[str, float] = {}  # registered once, then no longer: since when
        # Versions that differ between this client and the cluster, and packages this client
        # has that the cluster lacks, as found on connecting ("" if none).
        self.version_mismatch = ""
        self.environment_mismatch = ""
        self.security = client_security(spec.name, spec.security.tls)
        super().__init__(asynchronous=asynchronous, loop=loop, quiet=quiet, name=spec.name)
        if not self.asynchronous:
            self._loop_runner.start()
            self.sync(self._start)

    @property
    def dashboard_link(self) -> str:
        """The dashboard's URL from this machine (a container's published port, say)."""
        if self._dashboard is None:
            return super().dashboard_link
        from distributed.utils import format_dashboard_link

        host, _, port = self._dashboard.rpartition(":")
        return format_dashboard_link(host, int(port))

    @classmethod
    def from_name(cls, name: str, asynchronous: bool = False, **kwargs: Any) -> Cluster:
        """Attach to the running cluster ``name`` (dask-ctl's discovery contract)."""
        backend = get_cluster(name)
        return cls(backend.spec, backend=backend, asynchronous=asynchronous, **kwargs)

    def __await__(self):
        async def start() -> Cluster:
            if self.status == Status.created:
                await self._start()
            return self

        return start().__await__()

    # --- start and stop -------------------------------------------------------------------

    async def _start(self) -> None:
        if not self._creating:
            await asyncio.to_thread(require_scheduler_running, self.backend)
            try:
                async with asyncio.timeout(ANSWER_WITHIN):
                    await self._connect(compare=False)
            except (TimeoutError, OSError) as exc:
                await super()._close()
                raise self._not_answering(exc) from None
            if self._compare_versions:
                await self._compare_with_cluster()
            return
        # One lock from the check to the supervisor: of two `up` of one name, one makes the
        # cluster and the other then finds it; a failed start removes only what it made.
        async with self._exclusive(check=False):
            await asyncio.to_thread(self._claim)
            try:
                await asyncio.to_thread(self._create)
                await self._connect()
                await self._refresh()
                if self._wait_on_start:
                    await self._wait_for_workers(timeout=self.spec.start_timeout, locked=True)
                if not self.backend.orchestrated:  # its orchestrator keeps it as asked
                    await asyncio.to_thread(supervisor.ensure_running, self.name)
            except BaseException as exc:
                await super()._close()
                await asyncio.to_thread(_destroy_locked, self.backend)
                if isinstance(exc, crashloop.WorkerStartFailed):
                    kind = self.spec.backend
                    await asyncio.to_thread(crashloop.keep_record, self.name, kind, exc)
                raise
        if self.shutdown_on_close:  # it ends with this process, if not closed before
            lifetime.own(self.backend)

    async def _connect(self, compare: bool = True) -> None:
        address = await asyncio.to_thread(self.backend.scheduler_address)
        self._dashboard = await asyncio.to_thread(self.backend.dashboard_address)
        self.scheduler_comm = rpc(
            address, connection_args=self.security.get_connection_args("client")
        )
        await super()._start()
        await self._refresh()
        if compare and self._compare_versions:
            await self._compare_with_cluster()

    def _not_answering(self, exc: BaseException) -> ClusterctlError:
        if isinstance(exc, TimeoutError):
            return ClusterctlError(
                f"the scheduler of {self.name!r} does not answer (waited {ANSWER_WITHIN:g} s); "
                "it may be stopped or overloaded"
            )
        return ClusterctlError(f"the scheduler of {self.name!r} can't be reached: {exc}")

    async def _ask(self, question: Awaitable[T]) -> T:
        """The scheduler's answer to a question, or an error after ANSWER_WITHIN seconds."""
        try:
            async with asyncio.timeout(ANSWER_WITHIN):
                return await question
        except (TimeoutError, OSError) as exc:
            raise self._not_answering(exc) from None

    async def _compare_with_cluster(self) -> None:
        """Warn of versions and packages that differ between this client and the cluster.
        Asked of every worker, within COMPARE_WITHIN seconds: a worker cut off from the
        network would otherwise hold up connecting until the connection times out (30 s)."""
        try:
            async with asyncio.timeout(COMPARE_WITHIN):
                self.version_mismatch = await self._version_mismatch()
                self.environment_mismatch = await self._environment_mismatch()
        except TimeoutError:
            logger.info("Versions not compared: the cluster did not answer in time")
            return
        if self.version_mismatch:
            warnings.warn(self.version_mismatch, VersionMismatchWarning, stacklevel=3)
        if self.environment_mismatch:
            warnings.warn(self.environment_mismatch, EnvironmentMismatchWarning, stacklevel=3)

    def _claim(self) -> None:
        """Refuse a name in use; take over one whose cluster stopped entirely (its processes
        or containers all gone: a reboot, say); then claim the folder with the spec."""
        for existing in find_all(self.name):
            if existing.unreachable:
                raise UserInputError(
                    f"name: a cluster named {self.name!r} may still run ({existing.problem}); "
                    "choose another --name"
                )
            if existing.problem:
                raise UserInputError(
                    f"name: what is left of a cluster named {self.name!r} is damaged "
                    f"({existing.problem}); remove it with `clusterctl down {self.name}` "
                    "or choose another --name"
                )
            if any(m.running for m in existing.members()):
                raise UserInputError(
                    f"name: a cluster named {self.name!r} already runs (backend "
                    f"{existing.kind}); stop it with `clusterctl down {self.name}` "
                    "or choose another --name"
                )
            logger.info("Removing what is left of the stopped cluster %r", self.name)
            _destroy_locked(existing)
        state.write_json(state.cluster_dir(self.name) / state.SPEC, self.spec.to_dict())
        state.record_interpreter(self.name)

    def _create(self) -> None:
        """Check, make certificates, start the scheduler and the first workers (they connect
        once the scheduler answers, so their start overlaps its), wait until it answers."""
        self.backend.preflight()
        if self.spec.security.tls:
            create_tls_files(self.spec.name)
        self.backend.start_scheduler()
        if not self.backend.orchestrated:  # else it starts the workers itself
            self._warn_unless_memory_fits()
        for group in self.spec.workers:
            self._save_count(group.name, group.count)
            if group.count and not self.backend.orchestrated:
                self._start_workers(group, group.count)
        self.backend.wait_until_ready()

    def _wanted_counts(self) -> dict[str, int]:
        """Each group's size as last asked for (the spec's until a scale saves one)."""
        counts = self._counts()
        return {g.name: counts.get(g.name, g.count) for g in self.spec.workers}

    def _warn_unless_memory_fits(self) -> None:
        """Warn when the workers' memory limits add up to more than their host has."""
        hosts = self.backend.worker_hosts()
        if text := memory.overcommitted(self.spec.workers, self._wanted_counts(), hosts):
            warning = memory.MemoryOvercommitWarning(f"cluster {self.name!r}: {text}")
            warnings.warn(warning, stacklevel=1)  # from a worker thread: no caller to name

    def _start_workers(self, group: WorkerGroup, n: int) -> list[str]:
        """Start ``n`` workers of ``group``, with the memory limit :mod:`clusterctl.memory`
        gives them for the counts as now asked."""
        hosts = self.backend.worker_hosts()
        limit = memory.worker_limit(group.name, self.spec.workers, self._wanted_counts(), hosts)
        return self.backend.start_workers(dataclasses.replace(group, memory_limit=limit), n)

    async def _close(self) -> None:
        await super()._close()
        if self.shutdown_on_close:
            await asyncio.to_thread(destroy_cluster, self.backend)
            lifetime.release(self.backend)

    def shutdown(self) -> Any:
        """Stop every scheduler and worker process or container and forget the cluster."""
        self.shutdown_on_close = True
        if self.status == Status.closed:
            return self.sync(asyncio.to_thread, destroy_cluster, self.backend)
        return self.close()

    # --- scaling --------------------------------------------------------------------------

    def scale(self, n: int, group: str | None = None) -> Any:
        """Scale a worker group (the first one by default) to ``n`` workers.

        New workers start in the background (see :meth:`wait_for_workers`); removed
        workers are retired first, so the data they hold moves to the others.
        """
        return self.sync(self._scale, n, group)

    def scale_down(self, workers: list[str]) -> Any:
        """Remove named workers that :class:`distributed.Adaptive` has already retired."""
        return self.sync(self._scale_down, list(workers))

    def reconcile(self) -> Any:
        """Replace workers that died or lost the scheduler, up to each group's count.

        The cluster's supervisor calls this every second; ``scale`` and adaptive scaling
        set the counts.
        """
        return self.sync(self._reconcile)

    def adapt(
        self, Adaptive: type[Adaptive] | None = None, group: str | None = None, **kwargs: Any
    ) -> Adaptive | None:
        """Scale one worker group (the first by default) with Dask's ``Adaptive``.

        This runs in this process; ``clusterctl adapt`` runs the same loop in a detached
        process so that it outlives the command. An orchestrated backend's orchestrator
        adapts instead (``minimum`` and ``maximum`` only; returns None).
        """
        target = self.spec.group(group)
        if self.backend.orchestrated:
            self.backend.adapt(target, kwargs.get("minimum", 0), kwargs["maximum"])
            return None
        name = target.name
        return super().adapt(
            Adaptive=functools.partial(Adaptive or GroupAdaptive, group=name), **kwargs
        )

    def follow_adapt_settings(self, settings: dict[str, Any] | None) -> None:
        """Adapt as the cluster's settings say (see :mod:`clusterctl.supervisor`), or stop
        adapting when they are None. The supervisor calls this when they change."""
        if settings is None:
            if self._adaptive is not None:
                self._adaptive.stop()
                self._adaptive = None
            return
        self.adapt(
            minimum=settings["minimum"],
            maximum=settings["maximum"],
            group=settings["group"],
            supervised=True,
        )

    async def _scale(self, n: int, group: str | None = None, by_adaptive: bool = False) -> None:
        """Scale a group; unless ``by_adaptive``, this turns adaptive scaling off (the user
        asked for a size), and (re)starts a supervisor to keep it."""
        target = self.spec.group(group)
        spec = self.spec.with_count(target.name, n)
        async with self._exclusive():
            if by_adaptive and not await asyncio.to_thread(supervisor.adapt_settings, self.name):
                return  # adaptive scaling was turned off while this step was under way
            self.spec = spec
            self._save_count(target.name, n)
            if not by_adaptive and not self.backend.orchestrated:
                await asyncio.to_thread(supervisor.set_adapt, self.name, None)
                await asyncio.to_thread(supervisor.ensure_running, self.name)
                await asyncio.to_thread(crashloop.forget, self.name, target.name)  # try again
            elif by_adaptive:  # the supervisor starts them, once a crash loop allows
                loops = await asyncio.to_thread(supervisor.crash_loops, self.name)
                if crashloop.holding_off(loops.get(target.name)):
                    return
            await self._scale_unlocked(n, target.name)

    async def _scale_unlocked(self, n: int, group: str) -> None:
        target = self.spec.group(group)
        if self.backend.orchestrated:  # it retires the workers it removes itself
            await asyncio.to_thread(self.backend.scale, target, n)
            await self._refresh()
            return
        members = await asyncio.to_thread(self.backend.members)
        mine = [m for m in members if m.role == "worker" and m.group == target.name]
        if dead := [m.name for m in mine if not m.running]:
            logger.info("Forgetting workers that exited: %s", dead)
            await asyncio.to_thread(self.backend.stop_workers, dead)
        alive = [m.name for m in mine if m.running]
        if n > len(alive):
            await asyncio.to_thread(self._warn_unless_memory_fits)
            await asyncio.to_thread(self._start_workers, target, n - len(alive))
        elif n < len(alive):
            victims = await self._choose_workers_to_close(alive, len(alive) - n)
            await self._retire(victims)
        await self._refresh()

    async def _choose_workers_to_close(self, candidates: list[str], k: int) -> list[str]:
        """The ``k`` of ``candidates`` the scheduler would rather lose, starting ones first."""
        identity = await self.scheduler_comm.identity()
        registered = {w["name"] for w in identity["workers"].values()}
        starting = [c for c in candidates if c not in registered]  # hold no data yet
        order = await self.scheduler_comm.workers_to_close(
            n=len(identity["workers"]), attribute="name"
        )
        among = set(candidates)
        preferred = [w for w in order if w in among]
        chosen = set(preferred)
        busy = [c for c in candidates if c in registered and c not in chosen]
        return (starting + preferred + busy)[:k]

    async def _retire(self, names: list[str]) -> None:
        """Move the workers' data away, close them, then remove them from the backend."""
        identity = await self.scheduler_comm.identity()
        registered = {w["name"] for w in identity["workers"].values()}
        if to_retire := [n for n in names if n in registered]:
            retired = await self.scheduler_comm.retire_workers(
                names=to_retire, close_workers=True, remove=True
            )
            kept = set(to_retire) - {w["name"] for w in retired.values()}
            if kept:
                raise ClusterctlError(
                    f"could not retire {sorted(kept)}: the data they hold has nowhere to go; "
                    "they keep running"
                )
        await self._stop_workers(names)

    async def _stop_workers(self, names: list[str]) -> None:
        await asyncio.to_thread(self.backend.stop_workers, names)
        for name in names:  # a replacement may get the same name: it starts unwatched
            self._lost_since.pop(name, None)
        await self._refresh()

    async def _scale_down(
        self, names: list[str], retire: bool = False, by_adaptive: bool = False
    ) -> None:
        """Remove named workers (retiring them first if ``retire``) and lower the counts."""
        async with self._exclusive():
            if by_adaptive and not await asyncio.to_thread(supervisor.adapt_settings, self.name):
                return  # adaptive scaling was turned off while this step was under way
            members = await asyncio.to_thread(self.backend.members)
            removed = set(names)
            for group in self.spec.workers:
                left = [m for m in members if m.group == group.name and m.running]
                if any(m.name in removed for m in left):
                    self._save_count(group.name, sum(m.name not in removed for m in left))
            await (self._retire(names) if retire else self._stop_workers(names))

    async def _reconcile(self) -> None:
        if self.backend.orchestrated:
            return  # its orchestrator replaces dead workers
        async with self._exclusive():
            members = await asyncio.to_thread(self.backend.members)
            if not any(m.role == "scheduler" and m.running for m in members):
                return  # nothing to repair: `status` reports it, `down` cleans up
            identity = await self.scheduler_comm.identity()
            registered = _heard_from(identity["workers"].values(), self.spec.scheduler.worker_ttl)
            now = asyncio.get_running_loop().time()
            counts = self._counts()
            loops = await asyncio.to_thread(supervisor.crash_loops, self.name)
            recorded = dict(loops)
            for group in self.spec.workers:
                mine = [m for m in members if m.role == "worker" and m.group == group.name]
                lost = [m.name for m in mine if not m.running or self._cut_off(m.name, now)]
                # Died without ever having been seen registered: it failed to start.
                failed = [m.name for m in mine if not m.running and m.name not in self._lost_since]
                for m in mine:
                    if m.name in registered:
                        if m.name not in self._lost_since:  # one that started fine: a reset
                            loops.pop(group.name, None)
                        self._lost_since[m.name] = -1.0  # registered: watch from now on
                    elif self._lost_since.get(m.name) == -1.0:
                        self._lost_since[m.name] = now
                wanted = counts.get(group.name, group.count)
                if failed:
                    failure = await asyncio.to_thread(self._start_failed, failed[0])
                    loops[group.name] = crashloop.after_death(
                        loops.get(group.name), group.name, failure, wanted
                    )
                if lost:
                    logger.info("Replacing workers that died or were cut off: %s", lost)
                    await self._stop_workers(lost)
                missing = wanted - (len(mine) - len(lost))
                if missing > 0 and not crashloop.holding_off(loops.get(group.name)):
                    await asyncio.to_thread(self._start_workers, group, missing)
            if loops != recorded:
                await asyncio.to_thread(supervisor.set_crash_loops, self.name, loops)
            await self._refresh()

    def _cut_off(self, name: str, now: float) -> bool:
        """Whether a running worker has been lost to the scheduler (gone from it, or silent
        for ``worker-ttl``) for the spec's ``cut-off`` seconds after it had registered: its
        network failed, or it hangs."""
        since = self._lost_since.get(name, -1.0)
        return since >= 0 and now - since > self.spec.cut_off

    def _exclusive(self, check: bool = True) -> Any:
        """The cluster's lock (across processes), held while workers are added or removed;
        with ``check``, an error if the cluster was removed meanwhile (by `down`)."""

        @contextlib.asynccontextmanager
        async def hold():
            lock = state.locked(self.name)
            await asyncio.to_thread(lock.__enter__)
            try:
                if check and not await asyncio.to_thread(self._still_here):
                    raise ClusterNotFound(
                        f"cluster {self.name!r} is gone: it was removed (`clusterctl down`?)"
                    )
                yield
            finally:
                lock.__exit__(None, None, None)

        return hold()

    def _still_here(self) -> bool:
        backend = type(self.backend).attach(self.name)
        return backend is not None and backend.problem is None

    def _counts(self) -> dict[str, int]:
        try:
            counts = state.read_json(state.cluster_dir(self.name) / COUNTS)
        except state.BrokenState:
            counts = None  # the spec's counts stand in until the next scale writes them
        return counts if isinstance(counts, dict) else {}

    def _save_count(self, group: str, n: int) -> None:
        state.write_json(state.cluster_dir(self.name) / COUNTS, {**self._counts(), group: n})

    async def _refresh(self) -> None:
        members = await asyncio.to_thread(self.backend.members)
        self._workers = {m.name for m in members if m.role == "worker" and m.running}

    @property
    def workers(self) -> set[str]:
        """Names of the workers the backend runs (registered with the scheduler or not)."""
        return self._workers

    # --- waiting and reporting ------------------------------------------------------------

    def wait_for_workers(
        self,
        n_workers: int | None = None,
        timeout: float | None = None,
        progress: ProgressCallback | None = None,
    ) -> Any:
        """Wait until ``n_workers`` (default: all started) workers are running.

        Fails early, with the worker's last log lines, if a worker process exits.
        ``progress(running, wanted)`` is called as workers arrive.
        """
        return self.sync(self._wait_for_workers, n_workers, timeout, progress)

    async def _wait_for_workers(
        self,
        n_workers: int | None = None,
        timeout: float | None = None,
        progress: ProgressCallback | None = None,
        locked: bool = False,
    ) -> None:
        """``locked``: the caller holds the cluster's lock (no supervisor can be at work)."""
        timeout = timeout or self.spec.start_timeout
        seen = {"running": 0, "wanted": 0}

        async def dead_workers(workers: list[Member]) -> list[str]:
            dead = [m.name for m in workers if not m.running]
            if not dead or locked:
                return dead
            # Perhaps the supervisor is replacing them (cut off from the scheduler on a
            # saturated machine): it holds the lock from stopping one to starting the next.
            async with self._exclusive(check=False):
                members = await asyncio.to_thread(self.backend.members)
            return [m.name for m in members if m.role == "worker" and not m.running]

        started = time.monotonic()

        async def arrived() -> bool:
            members = await asyncio.to_thread(self.backend.members)
            workers = [m for m in members if m.role == "worker"]
            # Each group's count as last asked for, unless told: a `scale` from elsewhere
            # moves the goal; workers that died don't lower it.
            counts = await asyncio.to_thread(self._wanted_counts)
            wanted = sum(counts.values()) if n_workers is None else n_workers
            identity = await self.scheduler_comm.identity()
            running = sum(1 for w in identity["workers"].values() if w["status"] == "running")
            if progress and (running, wanted) != (seen["running"], seen["wanted"]):
                progress(running, wanted)
            seen.update(running=running, wanted=wanted)
            if running >= wanted:
                return True
            if dead := await dead_workers(workers):
                raise await asyncio.to_thread(self._start_failed, dead[0])
            if not locked:  # the supervisor may have found (and removed) one that died
                loops = await asyncio.to_thread(supervisor.crash_loops, self.name)
                for record in loops.values():
                    if crashloop.given_up(record) or record.get("died", 0) >= started:
                        where = f"`clusterctl logs supervisor --name {self.name}`"
                        raise crashloop.WorkerStartFailed(
                            record["worker"], record["error"], record["log"], where
                        )
            return False

        await waiting.until_async(
            arrived,
            timeout=timeout,
            what=f"the workers of cluster {self.name!r} to start (see `clusterctl logs`)",
            detail=lambda: f"only {seen['running']} of {seen['wanted']} workers were running",
        )
        await self._refresh()

    def _start_failed(self, worker: str) -> crashloop.WorkerStartFailed:
        """What a worker that exited while starting said, from its log (the supervisor,
        replacing it, removes that log and keeps its last lines in its own)."""
        try:
            lines = list(collections.deque(self.backend.logs(worker), maxlen=500))
        except ClusterctlError:  # removed since, by the supervisor replacing it
            lines = ["(its log went with it: it was removed meanwhile)"]
        where = f"`clusterctl logs supervisor --name {self.name}`"
        return crashloop.WorkerStartFailed(
            worker, crashloop.first_error(lines), lines[-crashloop.LOG_LINES :], where
        )

    def idle_check(self) -> bool:
        """One look for the spec's ``idle-timeout`` (the supervisor's, every few seconds):
        whether the cluster has had no client a person holds and no task for that long
        (:mod:`clusterctl.idle`). The idle clock starts when a look first finds it so, and
        is kept in the cluster's folder for ``status``."""
        return self.sync(self._idle_check)

    async def _idle_check(self) -> bool:
        answer = await self.scheduler_comm.run_function(function=dumps(idle.scheduler_idle))
        since = await asyncio.to_thread(supervisor.idle_since, self.name)
        if not (answer.get("status") == "OK" and answer["result"]):
            if since is not None:
                await asyncio.to_thread(supervisor.set_idle_since, self.name, None)
            return False
        now = idle.clock()
        if since is None or since > now:  # none yet, or not on this clock (a reboot)
            since = now
            await asyncio.to_thread(supervisor.set_idle_since, self.name, since)
        return now - since >= (self.spec.idle_timeout or math.inf)

    def describe(self) -> dict[str, Any]:
        """Workers, threads, memory, tasks, versions and scaling mode, for ``status``."""
        return self.sync(self._describe)

    async def _version_mismatch(self) -> str:
        """A table of the packages whose versions differ between this client and the
        cluster ("" when they all agree); what Dask's own check compares."""
        scheduler = await self.scheduler_comm.versions()
        workers = await self.scheduler_comm.broadcast(msg={"op": "versions"}, on_error="ignore")
        message = version_error_message(scheduler, workers, get_versions())
        text = "\n".join(filter(None, (message["error"], message["warning"])))
        if not text:
            return ""
        return (
            f"cluster {self.name!r} runs other versions than this client "
            f"(`clusterctl image build` makes matching images):\n{text}"
        )

    async def _environment_mismatch(self) -> str:
        """The packages this client has that the scheduler or a worker lacks or has at
        another version, named ("" when none). Not asked on a backend whose processes run
        this very interpreter, nor of a cluster whose images can't tell."""
        if self.backend.runs_this_environment:
            return ""
        function = dumps(environment.installed)
        sides = {}
        answer = await self.scheduler_comm.run_function(function=function)
        if answer.get("status") == "OK":
            sides["the scheduler"] = answer["result"]
        message = {"op": "run", "function": function, "args": dumps(()), "kwargs": dumps({})}
        answers = await self.scheduler_comm.broadcast(msg=message, on_error="ignore")
        for address, answer in answers.items():
            if isinstance(answer, dict) and answer.get("status") == "OK":
                sides[address] = answer["result"]
        client = environment.installed()
        client = {n: v for n, v in client.items() if n not in environment.NOT_COMPARED}
        if not sides or not (text := environment.differences(client, sides)):
            return ""
        return (
            f"cluster {self.name!r} lacks packages this client has, and tasks that use them "
            "will fail there (`clusterctl image build --sync` puts this whole environment "
            f"into the images):\n{text}"
        )

    async def _describe(self) -> dict[str, Any]:
        identity = await self._ask(self.scheduler_comm.identity())
        processing = await self._ask(self.scheduler_comm.processing())
        by_address = {addr: w for addr, w in identity["workers"].items()}
        registered = {w["name"]: addr for addr, w in by_address.items()}
        members = await asyncio.to_thread(self.backend.members)
        workers = []
        for m in members:
            if m.role != "worker":
                continue
            addr = registered.get(m.name)
            info = by_address.get(addr, {})
            workers.append(
                {
                    "name": m.name,
                    "group": m.group,
                    "state": info.get("status", "starting") if m.running else "exited",
                    "address": addr,
                    "threads": info.get("nthreads"),
                    "memory_limit": info.get("memory_limit"),
                    "memory": info.get("metrics", {}).get("memory"),
                    "processing": len(processing.get(addr, ())) if addr else 0,
                    "detail": m.detail,
                }
            )
        versions = (await self._ask(self.scheduler_comm.versions()))["packages"]
        return {
            "name": self.name,
            "backend": self.spec.backend,
            "scheduler": self.scheduler_address,
            "dashboard": self.dashboard_link,
            "notebook": await asyncio.to_thread(self.backend.notebook_url),
            "workers": workers,
            "groups": memory.report(
                self.spec.workers, await asyncio.to_thread(self._wanted_counts), workers
            ),
            "versions": {k: versions.get(k) for k in ("python", "dask", "distributed")},
            "version_mismatch": self.version_mismatch,
            "environment_mismatch": self.environment_mismatch,
            "adaptive": await asyncio.to_thread(supervisor.adapt_settings, self.name),
            "supervised": await asyncio.to_thread(supervisor.running, self.name),
            "crash_loops": crashloop.summary(
                await asyncio.to_thread(supervisor.crash_loops, self.name),
                collections.Counter(w["group"] for w in workers if w["state"] == "running"),
            ),
            "idle_timeout": self.spec.idle_timeout,
            "idle_left": await asyncio.to_thread(self._idle_left),
        }

    def _idle_left(self) -> float | None:
        """Seconds until an idle cluster is removed (None: not idle, or no idle-timeout)."""
        since = supervisor.idle_since(self.name)
        if self.spec.idle_timeout is None or since is None:
            return None
        return max(0.0, since + self.spec.idle_timeout - idle.clock())


class GroupAdaptive(Adaptive):
    """Dask's ``Adaptive`` confined to one worker group; other groups keep their size.

    ``supervised``: run by the supervisor for the cluster's adapt settings, so each step
    first checks, under the cluster's lock, that they are still on.
    """

    def __init__(self, cluster: Cluster, group: str, supervised: bool = False, **kwargs: Any):
        self.group = group
        self.supervised = supervised
        super().__init__(cluster, **kwargs)

    def _group_workers(self) -> set[str]:
        cluster: Cluster = self.cluster
        return {
            m.name
            for m in cluster.backend.members()
            if m.role == "worker" and m.group == self.group and m.running
        }

    async def safe_target(self) -> int:
        """The cluster-wide target, with this group's share of it held within ``minimum``
        and ``maximum``: they bound the group (as ``clusterctl adapt --group`` gives them),
        and the other groups keep their size."""
        mine = await asyncio.to_thread(self._group_workers)
        others = len(self.cluster.workers - mine)
        share = min(max(await self.target() - others, self.minimum), self.maximum)
        return others + share

    async def recommendations(self, target: int) -> dict:
        await self.cluster._refresh()
        return await super().recommendations(target)

    async def workers_to_close(self, target: int) -> list[str]:
        """Of this group's workers, as many as bring the cluster to ``target``: those the
        scheduler would rather lose."""
        mine = await asyncio.to_thread(self._group_workers)
        others = len(self.cluster.workers - mine)
        excess = len(mine) - (target - others)
        return await self.cluster._choose_workers_to_close(sorted(mine), max(excess, 0))

    async def scale_down(self, workers: list[str]) -> None:
        # Retired and removed under the cluster's lock, so the supervisor never takes a
        # retired worker for a dead one and brings it back.
        if workers:
            await self.cluster._scale_down(list(workers), retire=True, by_adaptive=self.supervised)

    async def scale_up(self, n: int) -> None:
        mine = await asyncio.to_thread(self._group_workers)
        others = len(self.cluster.workers - mine)
        await self.cluster._scale(max(n - others, 0), self.group, by_adaptive=self.supervised)


def destroy_cluster(backend: Backend) -> None:
    """Stop everything of a cluster, even one whose scheduler is gone or whose state is
    damaged, and forget it; under the cluster's lock, so nothing it starts meanwhile
    (a `scale` racing this) outlives it."""
    with state.locked(backend.spec.name):
        _destroy_locked(backend)


def _destroy_locked(backend: Backend) -> None:
    supervisor.kill(backend.spec.name)
    backend.destroy()
    state.remove(backend.spec.name)


__all__ = ["Cluster", "GroupAdaptive", "destroy_cluster"]


def _heard_from(workers: Iterable[dict[str, Any]], ttl: float) -> set[str]:
    """Names of the registered workers the scheduler heard from within ``ttl`` seconds of the
    last heartbeat it got (measured on its clock, so a skewed one here doesn't matter). One
    silent for longer is as good as lost: the scheduler would only drop it after trying to
    restart it for another 30 s."""
    workers = list(workers)
    newest = max((w["last_seen"] for w in workers), default=0.0)
    return {w["name"] for w in workers if newest - w["last_seen"] <= ttl}
