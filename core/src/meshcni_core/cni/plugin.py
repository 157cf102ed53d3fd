"""``istio-cni``: the chained CNI plugin executable.

stdout carries exactly one JSON document (result, version or error) or nothing; logs go to
stderr. When the node agent (``meshcni agent``) listens on its socket, ADD/DEL/CHECK are
forwarded to it, where everything is already imported and warm, and where every decision is made
(pods passed through included); otherwise the work is done in this process by the same code
(slower, same result). The self-contained plugin's C launcher asks the agent itself, before this
module is ever imported, and starts it with ``run_in_process`` when the agent did not take the
request (scripts/plugin-launcher.c).
"""

from __future__ import annotations

import os
import sys

from meshcni_core.cni import fastjson, outcome
from meshcni_core.cni.commands import CniCommands
from meshcni_core.cni.protocol import (
    CniError,
    error_object,
    parse_request,
    read_stdin,
    version_object,
)

TYPE_CHECKING = False  # typing and collections cost 2-12 ms of start-up on the plugin's fast path
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

DEFAULT_AGENT_SOCKET = "/var/run/meshcni/cni.sock"


def main(forward: bool = True) -> int:
    """``forward=False``: the launcher already offered the request to the agent, which did not take it."""
    env = dict(os.environ)
    try:
        stdin = read_stdin(env.get("CNI_COMMAND", ""))
    except CniError as exc:
        sys.stdout.write(render_error(exc, ""))
        return 1
    served = forward_to_agent(env, stdin) if forward else None
    code, stdout = served if served is not None else serve_here(env, stdin)
    sys.stdout.write(stdout)
    sys.stdout.flush()
    return code


def handle(env: Mapping[str, str], stdin: bytes, commands: CniCommands | None = None) -> tuple[int, str]:
    """One CNI invocation: (exit status, stdout text). Never raises; errors become error objects."""
    version = ""
    try:
        if env.get("CNI_COMMAND") == "VERSION":
            return 0, render(version_object(requested_version(stdin)))
        request = parse_request(env, stdin)
        version = request.cni_version
        output = (commands or CniCommands()).dispatch(request, env)
        return 0, render(output) if output is not None else ""
    except KeyboardInterrupt:
        return 1, render_error(CniError("interrupted", code=100), version)
    except BaseException as exc:  # noqa: BLE001 - one error object, never a traceback on stdout
        return 1, render_error(as_cni_error(exc), version)


def serve_here(env: Mapping[str, str], stdin: bytes) -> tuple[int, str]:
    """Serve in this process; the run's log record goes to stderr and to the agent's spool."""
    outcome.begin()
    code, stdout = handle(env, stdin)
    outcome.served_here(env, stdin, code, stdout, DEFAULT_AGENT_SOCKET)
    return code, stdout


def forward_to_agent(env: Mapping[str, str], stdin: bytes) -> tuple[int, str] | None:
    """The agent's answer (or the error that it could not be trusted or did not answer), or None
    when this process must serve the request (no agent listening, VERSION/STATUS/GC, undecodable
    input)."""
    command = env.get("CNI_COMMAND")
    if command not in ("ADD", "DEL", "CHECK", "STATUS"):
        return None
    try:
        netconf = fastjson.loads(stdin)
    except ValueError:
        return None
    if not isinstance(netconf, dict):
        return None
    if command == "STATUS" and netconf.get("require_agent") is not True:
        return None
    socket_path = netconf.get("agent_socket", DEFAULT_AGENT_SOCKET)
    if not isinstance(socket_path, str) or not socket_path or not os.path.exists(socket_path):
        if command == "STATUS":  # require_agent: without the agent the node is not ready
            return 1, render_error(CniError(f"node agent is not running (no socket at {socket_path})", code=50),
                                   str(netconf.get("cniVersion", "")))
        return None
    from meshcni_core.agent.client import agent_timeout, call_agent

    version = str(netconf.get("cniVersion", ""))
    try:
        answer = call_agent(socket_path, env, stdin, agent_timeout(netconf))
    except CniError as exc:  # an untrusted peer, or an agent that has the request but did not answer
        return 1, render_error(exc, version)
    if answer is None and command == "STATUS":
        return 1, render_error(CniError(f"node agent at {socket_path} did not answer", code=50), version)
    return answer


def render(obj: Mapping[str, Any]) -> str:
    return fastjson.dumps(obj) + "\n"


def render_error(exc: Any, version: str) -> str:
    sys.stderr.write(f"istio-cni: {getattr(exc, 'stage', 'cni')}: {exc.msg}\n")
    if exc.details:
        sys.stderr.write(f"  {exc.details}\n")
    return fastjson.dumps(error_object(exc, version)) + "\n"


def as_cni_error(exc: BaseException) -> Any:
    if isinstance(getattr(exc, "code", None), int) and hasattr(exc, "msg"):
        return exc
    import traceback

    sys.stderr.write("".join(traceback.format_exception(exc)))
    return CniError(f"internal error: {type(exc).__name__}: {exc}", code=100)


def requested_version(stdin: bytes) -> str:
    try:
        value = fastjson.loads(stdin or b"{}").get("cniVersion", "")
        return value if isinstance(value, str) else ""
    except (ValueError, AttributeError):
        return ""


def run() -> None:
    sys.exit(main())


def run_in_process() -> None:
    """The bundle's launcher asked the agent first: nobody listened, or it declined the request."""
    sys.exit(main(forward=False))
