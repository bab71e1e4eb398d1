"""Image figures: sizes, cold build time, and rebuild time after a code-only change.

Targets (issue 3): worker/scheduler image at most 400 MB, notebook at most 900 MB (the
official dask images are about 1 GB and 2 GB); a code-only rebuild in at most 20 s.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from clusterctl import engine, images

MB = 1_000_000  # docker's own unit when it prints image sizes
TARGETS_MB = {"scheduler": 400, "worker": 400, "notebook": 900}
MARKER = Path(images.__file__).with_name("_benchmark_marker.py")


def run(quick: bool, log: Any = print) -> dict[str, Any]:
    """Measure; quick mode skips the cold build (it takes minutes) and reuses images."""
    client = engine.docker_client()
    result: dict[str, Any] = {}
    silent = lambda line: None  # noqa: E731
    if quick:
        names = images.build_images(progress=silent)
    else:
        start = time.perf_counter()
        images.build_base(progress=silent)
        names = images.build_images(fresh=True, progress=silent)
        result["cold_build_s"] = round(time.perf_counter() - start, 1)
        log(f"cold build (Debian base, wheelhouse, runtimes, roles): {result['cold_build_s']} s")
    result["size_mb"] = {
        role: round(client.images.get(name).attrs["Size"] / MB, 1) for role, name in names.items()
    }
    for role, size in result["size_mb"].items():
        log(f"{role:10} {size:7.1f} MB (target <= {TARGETS_MB[role]} MB)")
    try:  # a real change to the package's code: a new module with a new value
        MARKER.write_text(f"VALUE = {uuid.uuid4().hex!r}\n")
        start = time.perf_counter()
        images.build_images(progress=silent)
        result["code_only_rebuild_s"] = round(time.perf_counter() - start, 1)
    finally:
        MARKER.unlink(missing_ok=True)
        images.build_images(progress=silent)  # back to the images of the real code
    log(f"code-only rebuild: {result['code_only_rebuild_s']} s (target <= 20 s)")
    result["targets"] = {"size_mb": TARGETS_MB, "code_only_rebuild_s": 20}
    return result
