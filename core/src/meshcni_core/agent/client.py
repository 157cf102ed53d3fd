"""The plugin side: forward one CNI request to the agent's socket.

Uses ``_socket`` rather than ``socket``: the latter's enum set-up costs ~10 ms of start-up on
every pod, and this is the hot path.
"""

from __future__ import annotations

import _socket
import sys

from meshcni_core.agent.wire import recv_frame, send_frame

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

# Longer than the pod lookup's own deadline (30 s by default) so the agent's answer, not this
# timeout, reports a slow API server.
AGENT_TIMEOUT_SECONDS = 120.0


def call_agent(socket_path: str, env: Mapping[str, str], stdin: bytes) -> tuple[int, str] | None:
    """(exit status, stdout) from the agent, or None when the request should be served in this
    process instead (nobody listening, or the agent failed before answering)."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    sock.settimeout(AGENT_TIMEOUT_SECONDS)
    try:
        try:
            sock.connect(socket_path)
        except OSError:
            return None
        request = {
            "env": {k: v for k, v in env.items() if k.startswith("CNI_")},
            "stdin": stdin.decode("utf-8", "surrogateescape"),
        }
        try:
            send_frame(sock, request)
            reply = recv_frame(sock)
        except (OSError, ValueError) as exc:
            sys.stderr.write(f"istio-cni: node agent at {socket_path} failed ({exc}); serving in-process\n")
            return None
        return int(reply["code"]), str(reply["stdout"])
    finally:
        sock.close()
