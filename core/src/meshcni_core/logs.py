"""Logging to stderr only (stdout belongs to the CNI protocol)."""

from __future__ import annotations

import logging
import sys

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "warning": logging.WARNING,
          "error": logging.ERROR, "none": logging.CRITICAL + 1}


def configure_logging(level: object = "info") -> None:
    name = level.lower() if isinstance(level, str) else "info"
    root = logging.getLogger("meshcni")
    root.setLevel(LEVELS.get(name, logging.INFO))
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
        root.propagate = False
