"""Installed only in the tests' dask-ctl virtualenv, run by a ``.pth`` line there.

dask-ctl 2024.1.0 (the latest release) imports ``install_signal_handlers`` from
``distributed.cli.utils``, which distributed removed (dask/distributed#9240), so it no
longer imports. When that module loads, this adds a no-op in its place: dask-ctl calls it
once, at import, only so that Ctrl-C stops its event loop, which the tests never send.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any


def install_signal_handlers(loop: Any = None, cleanup: Any = None) -> None:
    """Stands in for distributed's removed function (which stopped ``loop`` on a signal)."""


class AddSignalHandlers(importlib.abc.MetaPathFinder):
    """Finds ``distributed.cli.utils`` as usual, and adds the function once it has run."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "distributed.cli.utils":
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_add(module: ModuleType) -> None:
            exec_module(module)
            if not hasattr(module, "install_signal_handlers"):
                module.install_signal_handlers = install_signal_handlers

        spec.loader.exec_module = exec_and_add  # type: ignore[method-assign]
        return spec


sys.meta_path.insert(0, AddSignalHandlers())
