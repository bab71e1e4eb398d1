"""Registers clusterctl's packaged defaults with dask.config (imported for that effect)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import dask.config
import yaml

DEFAULTS_FILE = Path(__file__).with_name("clusterctl.yaml")
_PACKAGED = yaml.safe_load(DEFAULTS_FILE.read_text())

dask.config.update_defaults(_PACKAGED)


def packaged_defaults() -> dict[str, Any]:
    """The packaged ``clusterctl`` settings (no user's config), as a copy of one's own."""
    return copy.deepcopy(_PACKAGED["clusterctl"])
