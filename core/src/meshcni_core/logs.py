"""Logging to stderr only (stdout belongs to the CNI protocol)."""

from __future__ import annotations

import logging
import sys

from meshcni_core.cni.outcome import LEVELS

# Istio's levels (the seed's logLevel: panic, fatal, error, warn, info, debug), plus "warning" and
# "none", numbered as the logging module numbers them (cni/outcome.py keeps the table import-light).
LEVEL_NAMES = tuple(LEVELS)


def configure_logging(level: object = "info") -> None:
    name = level.lower() if isinstance(level, str) else "info"
    root = logging.getLogger("meshcni")
    root.setLevel(LEVELS.get(name, logging.INFO))
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
        root.propagate = False
