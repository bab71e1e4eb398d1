"""Every wait in clusterctl: a condition polled until it holds, with a deadline and a message.

No wait may go on forever: each names what it waits for, so that when the deadline passes
the user reads what did not happen, and (``detail``) what the thing waited for said last.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from clusterctl.errors import ClusterctlError


class WaitTimeout(ClusterctlError):
    """A wait reached its deadline (CLI exit status 1)."""


def until(
    condition: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    interval: float = 0.1,
    detail: Callable[[], str] | None = None,
) -> float:
    """Poll ``condition`` until it is true; return the seconds it took.

    After ``timeout`` seconds raise :class:`WaitTimeout`: "``what`` did not happen within
    N s", followed by ``detail()`` (a log tail, say) when given. ``condition`` may raise to
    end the wait early with its own error (a process that exited, say).
    """
    start = time.monotonic()
    deadline = start + timeout
    while not condition():
        if time.monotonic() >= deadline:
            message = f"{what}: not within {timeout:g} s"
            extra = detail() if detail else ""
            raise WaitTimeout(f"{message}\n{extra}" if extra else message)
        time.sleep(interval)
    return time.monotonic() - start
