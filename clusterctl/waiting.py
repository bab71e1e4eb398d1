"""Every wait in clusterctl: a condition polled until it holds, with a deadline and a message.

No wait may go on forever: each names what it waits for, so that when the deadline passes
the user reads what did not happen, and (``detail``) what the thing waited for said last.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

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

    After ``timeout`` seconds raise :class:`WaitTimeout`: "``what``: not within N s",
    followed by ``detail()`` (a log tail, say) when given. ``condition`` may raise to end
    the wait early with its own error (a process that exited, say).
    """
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start >= timeout:
            raise _timeout(what, timeout, detail)
        time.sleep(interval)
    return time.monotonic() - start


async def until_async(
    condition: Callable[[], Awaitable[bool]],
    *,
    timeout: float,
    what: str,
    interval: float = 0.1,
    detail: Callable[[], str] | None = None,
) -> float:
    """:func:`until` for a coroutine condition, waiting without blocking the event loop."""
    start = time.monotonic()
    while not await condition():
        if time.monotonic() - start >= timeout:
            raise _timeout(what, timeout, detail)
        await asyncio.sleep(interval)
    return time.monotonic() - start


def _timeout(what: str, timeout: float, detail: Callable[[], str] | None) -> WaitTimeout:
    message = f"{what}: not within {timeout:g} s"
    extra = detail() if detail else ""
    return WaitTimeout(f"{message}\n{extra}" if extra else message)


def answers(url: str) -> bool:
    """Whether ``url`` answers 200 now."""
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False
