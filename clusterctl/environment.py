"""What a Python environment holds: read here, in the images, and on a running cluster.

``installed()`` is the one reading of an environment's distributions: ``image build --sync``
locks it, and a client compares its own with the cluster's (:func:`differences`).
"""

from __future__ import annotations

import json
import re
from importlib import metadata
from pathlib import Path
from urllib.parse import unquote, urlparse

# Shown by name in a warning; the rest are counted.
SHOWN = 12
# Not compared: the images run pip from its wheel, outside their environment.
NOT_COMPARED = frozenset({"pip"})


def normal(name: str) -> str:
    """A distribution's name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def installed() -> dict[str, str]:
    """Every distribution this interpreter imports from: normalized name -> version.

    Where one name is installed twice, the one found first on ``sys.path`` wins, as for
    imports.
    """
    found: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found.setdefault(normal(name), dist.version)
    return found


def local_source(name: str) -> Path | None:
    """The folder or wheel file ``name`` was installed from, when that was a local path
    (``pip install ./pkg``, ``pip install -e .``) rather than an index."""
    try:
        text = metadata.distribution(name).read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        return None
    if not text:
        return None
    url = json.loads(text).get("url", "")
    if not url.startswith("file://"):
        return None
    return Path(unquote(urlparse(url).path))


def differences(client: dict[str, str], sides: dict[str, dict[str, str]]) -> str:
    """What tasks from ``client`` would miss on the cluster: packages the client has that a
    side (``"the scheduler"``, a worker's name) lacks or has at another version. "" if
    none. Packages only the cluster has are no trouble and not named."""
    missing: dict[str, list[str]] = {}
    other: dict[str, dict[str, list[str]]] = {}
    for side, packages in sides.items():
        for name, version in client.items():
            theirs = packages.get(name)
            if theirs is None:
                missing.setdefault(name, []).append(side)
            elif theirs != version:
                other.setdefault(name, {}).setdefault(theirs, []).append(side)
    lines = []
    if missing:
        shown = [f"{n} {client[n]} ({_where(missing[n], len(sides))})" for n in sorted(missing)]
        lines.append(f"missing there: {_cut(shown)}")
    if other:
        shown = [
            f"{n} {client[n]} here, "
            + ", ".join(f"{v} on {_where(s, len(sides))}" for v, s in sorted(other[n].items()))
            for n in sorted(other)
        ]
        lines.append(f"at another version: {_cut(shown)}")
    return "\n".join(lines)


def _where(sides: list[str], total: int) -> str:
    if len(sides) == total:
        return "everywhere" if total > 1 else sides[0]
    if len(sides) <= 2:
        return " and ".join(sides)
    return f"{len(sides)} of {total} processes"


def _cut(items: list[str]) -> str:
    text = "; ".join(items[:SHOWN])
    return text if len(items) <= SHOWN else f"{text}; and {len(items) - SHOWN} more"
