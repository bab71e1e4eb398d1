"""Preloaded into the nanny of the images' workers (``--preload-nanny``).

The nanny forks its worker process, which so inherits the nanny's signal handling:
asyncio's handlers, whose wake-up pipe is the nanny's. The SIGTERM that ``docker stop``
sends the container's process group would then reach neither of them as such, and the
nanny would wait 8 s before killing the worker. A forked worker gets the default handling
instead, as a spawned one has.
"""

from __future__ import annotations

import os
import signal


def _as_if_spawned() -> None:
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


os.register_at_fork(after_in_child=_as_if_spawned)
