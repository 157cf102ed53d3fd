"""The apply backends the real-packet tests run against: the core's iptables-restore and the
nftables extension. Mark a test ``@both_backends``: it then runs once per backend, with the
``backend`` fixture (tests/conftest.py, default ``iptables-restore``) overridden by the mark."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

BACKENDS = ("iptables-restore", "nftables")
both_backends = pytest.mark.parametrize("backend", BACKENDS)


def use_backend(netconf: dict[str, Any], backend: str) -> dict[str, Any]:
    """``netconf`` selecting ``backend`` (an extension's backend is enabled with it)."""
    if backend == "iptables-restore":
        return netconf
    return {**netconf, "extensions": [*netconf.get("extensions", []), backend], "backend": backend}


def rules_text(lab: Any, ns: str, family: int = 4) -> str:
    """What the test's backend programmed in ``ns``: ``iptables-save``'s rules of ``family``, or
    ``nft list ruleset`` (both families in one ``inet`` table)."""
    if lab.backend == "nftables":
        return subprocess.run(["ip", "netns", "exec", lab.name_of(ns), "nft", "list", "ruleset"],
                              capture_output=True, text=True, check=True).stdout
    return str(lab.save(ns, family))
