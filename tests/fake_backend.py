"""``FakeBackend``: a backend that runs a real ``distributed.Scheduler`` and real
``distributed.Worker``s (no nanny, no subprocess) on an event loop of its own, in this
process, naming the workers as the real backends do (``<cluster>-<group>-<i>``), and
recording every call the controller makes. The controller's policy tests
(tests/test_controller.py) run on it, and so can a measurement of the controller alone.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

from distributed import Scheduler, Worker
from distributed.core import Status

from clusterctl.backends.base import Backend, Member
from clusterctl.spec import ClusterSpec, WorkerGroup, load_spec

TIMEOUT = 30  # seconds for any one wait on the backend's loop


class FakeBackend(Backend):
    """In-process scheduler and workers on a private event loop; every call recorded."""

    kind = "local"  # what spec.backend says; the fake is never in the backend registry
    runs_this_environment = True  # same interpreter: no environment comparison
    # name -> backend, for attach(): the controller checks the cluster is still there
    live: ClassVar[dict[str, FakeBackend]] = {}

    def __init__(self, spec: ClusterSpec, orchestrated: bool = False):
        super().__init__(spec)
        self.orchestrated = orchestrated
        self.calls: list[tuple[Any, ...]] = []
        self.workers: dict[str, tuple[str, Worker]] = {}  # name -> (group, worker)
        self.hung: set[str] = set()  # closed, yet reported running (a hung process)
        self.scheduler: Scheduler | None = None
        # Called inside stop_workers, before anything is stopped: a test's check of the
        # scheduler's state at that moment (exceptions are kept in self.failures).
        self.on_stop: Callable[[list[str]], None] | None = None
        self.failures: list[BaseException] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        FakeBackend.live[spec.name] = self

    def run(self, coro: Any) -> Any:
        """Run a coroutine on the backend's loop, from any other thread."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(TIMEOUT)

    # --- discovery ------------------------------------------------------------------------

    @classmethod
    def cluster_names(cls) -> list[str]:
        return sorted(cls.live)

    @classmethod
    def attach(cls, name: str) -> FakeBackend | None:
        return cls.live.get(name)

    # --- the scheduler --------------------------------------------------------------------

    def start_scheduler(self) -> None:
        self.calls.append(("start_scheduler",))

        async def start() -> Scheduler:
            return await Scheduler(
                host="127.0.0.1", port=0, dashboard=False, dashboard_address="127.0.0.1:0"
            )

        self.scheduler = self.run(start())

    def scheduler_address(self) -> str:
        assert self.scheduler is not None
        return self.scheduler.address

    def notebook_url(self) -> str | None:
        return None

    # --- workers --------------------------------------------------------------------------

    def start_workers(self, group: WorkerGroup, n: int) -> list[str]:
        taken = [
            int(name.rsplit("-", 1)[1]) for name, (g, _) in self.workers.items() if g == group.name
        ]
        first = max(taken, default=0) + 1
        names = [f"{self.spec.name}-{group.name}-{i}" for i in range(first, first + n)]
        self.calls.append(("start_workers", group.name, names))

        async def start(name: str) -> Worker:
            return await Worker(
                self.scheduler_address(),
                name=name,
                nthreads=group.threads,
                memory_limit="1GiB",
                dashboard=False,
                host="127.0.0.1",
            )

        async def start_all() -> list[Worker]:
            return await asyncio.gather(*(start(name) for name in names))

        for name, worker in zip(names, self.run(start_all()), strict=True):
            self.workers[name] = (group.name, worker)
        return names

    def stop_workers(self, names: list[str]) -> None:
        self.calls.append(("stop_workers", list(names)))
        if self.on_stop is not None:
            try:
                self.on_stop(list(names))
            except BaseException as exc:  # reported by the test, not lost in a thread
                self.failures.append(exc)
        self._close(*(self.workers.pop(name)[1] for name in names if name in self.workers))
        self.hung.difference_update(names)

    def _close(self, *workers: Worker) -> None:
        """Close the workers, all at once (as a real backend stops its processes)."""
        closing = [
            w.close(reason="stopped by the fake backend")
            for w in workers
            if w.status not in (Status.closed, Status.closing, Status.failed)
        ]
        if closing:

            async def close_all() -> None:
                await asyncio.gather(*closing)

            self.run(close_all())

    def members(self) -> list[Member]:
        found = [Member("scheduler", "scheduler", None, self.scheduler is not None)]
        for name, (group, worker) in self.workers.items():
            running = name in self.hung or worker.status not in (Status.closed, Status.failed)
            found.append(Member(name, "worker", group, running, detail="in-process"))
        return found

    def logs(self, name: str, follow: bool = False) -> Iterator[str]:
        return iter(())

    def destroy(self) -> None:
        self.calls.append(("destroy",))
        self._close(*(worker for _, worker in self.workers.values()))
        self.workers.clear()
        if self.scheduler is not None:
            self.run(self.scheduler.close())
            self.scheduler = None

    def close_loop(self) -> None:
        self.destroy()
        FakeBackend.live.pop(self.spec.name, None)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(TIMEOUT)
        self.loop.close()

    # --- an orchestrator ------------------------------------------------------------------

    def scale(self, group: WorkerGroup, n: int) -> None:
        self.calls.append(("scale", group.name, n))

    def adapt(self, group: WorkerGroup, minimum: int, maximum: int) -> None:
        self.calls.append(("adapt", group.name, minimum, maximum))

    # --- faults and looks, for the tests --------------------------------------------------

    def kill(self, name: str) -> None:
        """The worker dies behind the controller's back (its process exited)."""
        self._close(self.workers[name][1])

    def hang(self, name: str) -> None:
        """The worker is lost to the scheduler, yet its process still runs (it hangs, or
        its network failed): the backend keeps reporting it running."""
        self.hung.add(name)
        self._close(self.workers[name][1])

    def silence(self, name: str) -> None:
        """The worker stays registered but sends no more heartbeats (its network is cut,
        and the scheduler has not noticed yet)."""
        self.workers[name][1].periodic_callbacks["heartbeat"].stop()

    def address(self, name: str) -> str:
        return self.workers[name][1].address

    def running(self, group: str | None = None) -> set[str]:
        return {
            m.name
            for m in self.members()
            if m.role == "worker" and m.running and group in (None, m.group)
        }

    def held_by_scheduler(self) -> dict[str, int]:
        """Worker name -> number of keys the scheduler says it holds, read on its loop."""

        async def look() -> dict[str, int]:
            assert self.scheduler is not None
            return {ws.name: len(ws.has_what) for ws in self.scheduler.workers.values()}

        return self.run(look())

    def worker_calls(self) -> list[tuple[Any, ...]]:
        return [c for c in self.calls if c[0] in ("start_workers", "stop_workers")]


def make_spec(name: str, groups: dict[str, int], worker_ttl: float = 30) -> ClusterSpec:
    return load_spec(
        overrides={
            "name": name,
            "backend": "local",
            "security": {"tls": False},
            "scheduler": {"port": 0, "dashboard_port": 0, "worker_ttl": worker_ttl},
            "workers": {group: {"count": n} for group, n in groups.items()},
            "cut_off": 1,  # the least a spec allows: the cut-off tests wait it out
        }
    )
