"""Writing a kubeconfig for a test API server (the stand-in or the real control plane)."""

from __future__ import annotations

import json
import os
from typing import Any


def write_kubeconfig(path: str | os.PathLike[str], server: str, ca: str | os.PathLike[str],
                     user: dict[str, Any]) -> str:
    """A one-context kubeconfig (mode 0600): ``user`` is its user entry, e.g. ``{"token": ..}`` or
    ``{"client-certificate": .., "client-key": ..}``."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test-cluster", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": "test-user", "user": user}],
        "contexts": [{"name": "test", "context": {"cluster": "test-cluster", "user": "test-user"}}],
        "current-context": "test",
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(config, f)  # JSON is valid YAML
    return str(path)
