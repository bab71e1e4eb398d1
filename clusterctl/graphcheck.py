"""A scheduler preload: a task graph the scheduler cannot unpickle fails at once, by name.

The scheduler unpickles every graph a client submits, so a module whose functions, classes
or objects travel in a graph must be importable there too. When it is not, distributed
(2026.8) errs the graph's keys with "Error during deserialization of the task graph", which
names no module, and joblib's dask backend (scikit-learn's ``n_jobs`` under
``parallel_config(backend="dask")``) never notices an erred future: it waits forever.

Installed on every clusterctl scheduler by its preload (:mod:`clusterctl.preload`), it
reads each graph before distributed does; when that fails, it cancels the graph's keys for the
client that sent it, with a reason naming the module. A cancelled future raises
``FutureCancelledError`` from ``result()``, and joblib raises it too. A graph that reads is
handed on as read, so it is unpickled once, as before. Imports nothing heavy until set up.
"""

from __future__ import annotations

import logging
import re
from typing import Any

_FAMILY = "clusterctl-graphcheck"  # a "serializer" whose frames hold the graph, already read

logger = logging.getLogger("distributed.scheduler")  # where `clusterctl logs` shows it


def install(scheduler: Any) -> None:
    """Put the check in front of the scheduler's ``update-graph`` stream handler."""
    import inspect

    from distributed.protocol.serialize import (
        Serialized,
        deserialize,
        register_serialization_family,
    )

    register_serialization_family(_FAMILY, None, lambda header, frames: frames[0])
    original = scheduler.stream_handlers["update-graph"]
    if getattr(original, "graphcheck", False):
        return  # installed twice (preloaded by the configuration, and by clusterctl)
    if not {"client", "expr_ser", "keys"} <= set(inspect.signature(original).parameters):
        logger.warning("clusterctl.graphcheck: this distributed's update_graph is unknown; off")
        return

    async def update_graph(client: str, expr_ser: Any, keys: Any, **kwargs: Any) -> None:
        try:
            expr = deserialize(expr_ser.header, expr_ser.frames)
        except BaseException as exc:  # SystemExit or KeyboardInterrupt too: a graph's own
            # code raised it (the scheduler's signals are handled by its event loop), and
            # it must not stop the scheduler
            refuse(scheduler, client, keys, exc, kwargs.get("stimulus_id"))
            return
        read = Serialized({"serializer": _FAMILY}, [expr])
        await original(client=client, expr_ser=read, keys=keys, **kwargs)

    update_graph.graphcheck = True  # type: ignore[attr-defined]
    scheduler.stream_handlers["update-graph"] = update_graph


def refuse(scheduler: Any, client: str, keys: Any, exc: BaseException, stimulus: Any) -> None:
    """Cancel ``keys`` for ``client`` with the reason, and log it."""
    reason, detail = explain(exc)
    logger.error("a graph from %s could not be read: %s\n%s", client, reason, detail)
    scheduler.log_event(
        ["scheduler", client],
        {"action": "update-graph", "stimulus_id": stimulus, "status": "error", "reason": reason},
    )
    scheduler.report(
        {"op": "cancelled-keys", "keys": list(keys), "reason": reason, "msg": detail},
        client=client,
    )


def explain(exc: BaseException) -> tuple[str, str]:
    """A short reason naming the module the scheduler lacks (when one can be told), and
    what to do about it."""
    module, attribute = _missing(exc)
    if module and attribute:
        reason = f"the scheduler's module {module!r} has no {attribute!r} (another version?)"
    elif module:
        reason = f"the scheduler cannot import module {module!r}"
    else:
        reason = "the scheduler cannot unpickle the task graph"
    what = repr(module) if module else "every package whose objects the graph carries"
    detail = (
        f"{_describe(exc)}\nThe scheduler unpickles every task graph: install {what} where "
        "the scheduler and workers run, at the client's version (the images: `clusterctl "
        "image build --sync`, or `--extra`; at start: EXTRA_PIP_PACKAGES), or send a module "
        "of your own with client.upload_file()."
    )
    return reason, detail


def _missing(exc: BaseException) -> tuple[str | None, str | None]:
    """(module, attribute) from an import error, or a pickle error for a name not in the
    scheduler's module, anywhere in the chain of causes."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ImportError) and current.name:
            return current.name, None
        if isinstance(current, AttributeError) and (
            found := re.search(r"attribute '([\w.]+)' on <module '([\w.]+)'", str(current))
        ):
            return found.group(2), found.group(1)
        current = current.__cause__ or current.__context__
    return None, None


def _describe(exc: BaseException) -> str:
    causes, current = [], exc
    while current is not None and len(causes) < 5:
        causes.append(f"{type(current).__name__}: {current}")
        current = current.__cause__ or current.__context__
    return "; caused by ".join(causes)
