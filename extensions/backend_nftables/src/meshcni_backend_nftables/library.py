"""libnftables in-process, through the python3-nftables ctypes binding.

A libnftables context talks to the kernel over a netlink socket opened when the context is
created, in the network namespace of the creating thread; so a context is made per operation,
inside the pod's netns (``Session``), while the library itself is loaded once per process.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from meshcni_hooks.errors import ApplyError

SONAME = "libnftables.so.1"
BINDING_FIX = "install the meshcni-backend-nftables wheel's dependency ansibleguy-nftables (pip)"
LIBRARY_FIX = "install Debian's libnftables1 (nftables on RHEL)"

_lock = threading.Lock()
_binding: Any = None


def host_problems() -> list[str]:
    """What this process lacks to program nftables; [] when the library and its JSON parser work.
    Touches no netns (the check document is parsed, not run against the kernel)."""
    try:
        session = Session()
    except ApplyError as exc:
        return [exc.msg]
    try:
        session.run([])
    except ApplyError as exc:
        return [f"{SONAME} cannot read JSON ({exc.details or exc.msg}): {LIBRARY_FIX} built with JSON support"]
    return []


def _load() -> Any:
    global _binding
    with _lock:
        if _binding is None:
            try:
                import nftables
            except ImportError as exc:
                raise ApplyError(f"the python3-nftables binding is missing ({exc}): {BINDING_FIX}") from None
            _binding = nftables
        return _binding


class Session:
    """One libnftables context in the current thread's network namespace."""

    def __init__(self) -> None:
        binding = _load()
        try:
            self._nft = binding.Nftables(sofile=SONAME)
        except OSError as exc:
            raise ApplyError(f"{SONAME} not found or not loadable ({exc}): {LIBRARY_FIX}") from None
        self._nft.set_json_output(True)
        self._nft.set_handle_output(False)

    def run(self, commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Run one JSON document (one kernel transaction); its output objects, or ApplyError."""
        return self.run_text(json.dumps({"nftables": commands}))

    def run_text(self, document: str) -> list[dict[str, Any]]:
        rc, output, error = self._nft.cmd(document)
        if rc != 0:
            raise ApplyError("libnftables rejected the transaction", (error or output or f"rc {rc}").strip())
        if not output:
            return []
        return list(json.loads(output).get("nftables", []))

    def list(self, what: dict[str, Any]) -> list[dict[str, Any]]:
        return [o for o in self.run([{"list": what}]) if "metainfo" not in o]
