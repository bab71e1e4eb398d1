"""Registers clusterctl's packaged defaults with dask.config (imported for that effect)."""

from __future__ import annotations

from pathlib import Path

import dask.config
import yaml

DEFAULTS_FILE = Path(__file__).with_name("clusterctl.yaml")

dask.config.update_defaults(yaml.safe_load(DEFAULTS_FILE.read_text()))
