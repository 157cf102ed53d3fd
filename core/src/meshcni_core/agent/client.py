"""The plugin side: forward one CNI request to the agent's socket.

Uses ``_socket`` rather than ``socket``: the latter's enum set-up costs ~10 ms of start-up on
every pod, and this is the hot path. The peer's credentials are decoded with ``int.from_bytes``
rather than ``struct`` for the same reason.

Two rules decide what happens when the agent does not answer:
- The request is served in this process instead only when the agent never got it (nothing
  listens on the socket, or the request could not be written). Once it was written, the agent may
  still act on it: running the ADD a second time here could tell the runtime "ok" while a late
  failure in the agent rolls the rules back. A timeout or a broken reply is then an error.
- The peer must be root. Anybody who can bind the socket's path could otherwise answer "ok" and
  let pods start without redirection; such a peer gets nothing and the command fails.
"""

from __future__ import annotations

import _socket
import sys

from meshcni_core.agent.wire import recv_frame, send_frame
from meshcni_core.cni.outcome import process_started_ns
from meshcni_core.cni.protocol import CniError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

# The plugin's deadline for the agent's answer (netconf key agent_timeout). The budget, from the
# inside out: the pod lookup (kubernetes.pod_lookup_timeout, 30 s, validated to be shorter than
# this) plus the apply (at most three iptables lock waits of 10 s) stays well below it, so the
# agent's own error reaches the runtime rather than this timeout; and this stays below kubelet's
# deadline for RunPodSandbox (twice --runtime-request-timeout: 4 minutes by default), so our error,
# not kubelet's cancellation, is what the pod's events show.
AGENT_TIMEOUT_SECONDS = 120.0
MAX_AGENT_TIMEOUT_SECONDS = 220.0
# struct ucred {pid_t pid; uid_t uid; gid_t gid;}: three native 32-bit integers.
UCRED_SIZE = 12
AGENT_ERROR_CODE = 50  # CNI's "not available": the node's agent cannot be used right now


def call_agent(socket_path: str, env: Mapping[str, str], stdin: bytes,
               timeout: float = AGENT_TIMEOUT_SECONDS) -> tuple[int, str] | None:
    """(exit status, stdout) from the agent, or None when the request should be served in this
    process instead because the agent never received it. Raises CniError when the peer is not
    root, or when the agent got the request but did not answer within ``timeout`` seconds."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(socket_path)
        except OSError:
            return None  # nobody listening (a crashed or stopped agent), or its backlog is full
        check_peer_is_root(sock, socket_path)
        request = {
            "env": {k: v for k, v in env.items() if k.startswith("CNI_")},
            "stdin": stdin.decode("utf-8", "surrogateescape"),
            "started_ns": process_started_ns(),  # CLOCK_MONOTONIC: the agent times the ADD from here
        }
        try:
            send_frame(sock, request)
        except OSError as exc:  # not all of it was written: the agent cannot act on half a frame
            sys.stderr.write(f"istio-cni: node agent at {socket_path} took no request ({exc}); serving in-process\n")
            return None
        try:
            reply = recv_frame(sock)
        except TimeoutError:
            raise CniError(
                f"node agent at {socket_path} did not answer within {timeout:g}s",
                "the agent has the request and may still act on it, so it is not run a second time "
                "in this process; see the agent's log (meshcni install-cni)",
                code=AGENT_ERROR_CODE,
            ) from None
        except (OSError, ValueError) as exc:
            raise CniError(
                f"node agent at {socket_path} failed after receiving the request: {exc}",
                "it is not run a second time in this process; see the agent's log (meshcni install-cni)",
                code=AGENT_ERROR_CODE,
            ) from None
        if isinstance(reply, dict) and reply.get("served") is False:  # declined unread: it will not act on it
            sys.stderr.write(f"istio-cni: node agent at {socket_path} declined the request "
                             f"({reply.get('reason')}); serving in-process\n")
            return None
        if not isinstance(reply, dict) or not isinstance(reply.get("code"), int) \
                or not isinstance(reply.get("stdout"), str):
            raise CniError(f"node agent at {socket_path} sent a malformed reply", code=AGENT_ERROR_CODE)
        return reply["code"], reply["stdout"]
    finally:
        sock.close()


def check_peer_is_root(sock: _socket.socket, socket_path: str) -> None:
    """Raise CniError unless the process listening on the socket runs as uid 0."""
    creds = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, UCRED_SIZE)
    pid = int.from_bytes(creds[0:4], sys.byteorder)
    uid = int.from_bytes(creds[4:8], sys.byteorder)
    if uid != 0:
        raise CniError(
            f"refusing the node agent at {socket_path}: it is served by uid {uid} (pid {pid}), not root",
            "the real agent runs as root; a process of another user listening on that path may be "
            "impersonating it, so nothing was sent to it and the request is not served in-process either",
            code=AGENT_ERROR_CODE,
        )


def agent_timeout(netconf: Mapping[str, object]) -> float:
    """The netconf's agent_timeout in seconds (the default when absent); CniError when invalid."""
    value = netconf.get("agent_timeout", AGENT_TIMEOUT_SECONDS)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= MAX_AGENT_TIMEOUT_SECONDS:
        raise CniError(
            f"netconf key agent_timeout must be seconds in (0, {MAX_AGENT_TIMEOUT_SECONDS:g}], got {value!r}", code=7
        )
    return float(value)
