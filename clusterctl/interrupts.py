"""Signals that end a command part-way (SIGINT, SIGTERM, SIGHUP) as an exception the command
can clean up after, held back while a step that must not be cut in two runs.

``clusterctl up`` uses it so that a start is all or nothing: a signal that arrives while the
cluster is being made is held until it is made (or rolled back), then undoes it.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(BaseException):  # as KeyboardInterrupt: no `except Exception` stops it
    """A signal asked this command to stop."""

    def __init__(self, signum: int):
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum

    @property
    def exit_status(self) -> int:
        """The shell's convention for a process ended by this signal."""
        return 128 + self.signum


class Interruptions:
    """Inside this context (main thread only), the SIGNALS raise :class:`Interrupted`, or,
    within :meth:`held`, are kept until it ends."""

    def __init__(self) -> None:
        self._holding = False
        self._pending: int | None = None
        self._settled = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Interruptions:
        # A signal this process was started ignoring (SIGINT in a shell's `cmd &`) stays so.
        ignored = {s for s in SIGNALS if signal.getsignal(s) == signal.SIG_IGN}
        self._previous = {s: signal.signal(s, self._on_signal) for s in SIGNALS if s not in ignored}
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._settled:
            return
        if self._holding:
            self._pending = self._pending or signum
            return
        raise Interrupted(signum)

    def settle(self) -> None:
        """The command's outcome is decided (a cluster is whole): for the rest of this
        context the SIGNALS are ignored, so that none turns a finished start into a failed
        exit status. What remains (printing, disconnecting) is short."""
        self._settled = True

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Run the block whole; a signal that came meanwhile is raised when it ends."""
        self._holding = True
        try:
            yield
        finally:
            self._holding = False
        if self._pending is not None:
            raise Interrupted(self._pending)


def ignore_from_now() -> None:
    """A command has finished: its exit status stands, and a signal while the interpreter
    shuts down no longer replaces it (the console script's last step)."""
    for signum in SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
