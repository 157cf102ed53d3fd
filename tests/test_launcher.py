"""The self-contained plugin's C launcher (scripts/plugin-launcher.c) answers from the node agent
before any Python starts, and keeps the Python client's rules: the request exactly as the client
sends it, a root peer only, never run twice once sent, in-process only when the agent never took it.

The agent suites (test_agent*.py) also run against the bundle: MESHCNI_TEST_PLUGIN=<bundle> (make test).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from meshcni_testing.netlab import mesh_netconf

pytestmark = pytest.mark.netns
ROOT = Path(__file__).resolve().parents[1]
BUNDLE_PLUGIN = ROOT / "build" / "plugin-bundle" / "istio-cni"
VENV_PLUGIN = str(Path(sys.executable).with_name("istio-cni"))
MAX_FRAME = 16 * 1024 * 1024


@pytest.fixture(scope="module")
def bundle() -> str:
    assert BUNDLE_PLUGIN.is_symlink(), "run scripts/build-plugin-bundle.sh (make test does)"
    return str(BUNDLE_PLUGIN)


def frame(obj: object) -> bytes:
    data = json.dumps(obj).encode()
    return len(data).to_bytes(4, "big") + data


class FakeAgent:
    """A root process's socket answering one connection with the bytes it was given (after reading
    the request, unless it declines unread); keeps the connection open ``hold`` seconds."""

    def __init__(self, path: str, reply: bytes, *, read_request: bool = True, hold: float = 0.0):
        self.path, self.reply, self.read_request, self.hold = path, reply, read_request, hold
        self.request: dict | None = None
        self.connections = 0
        self.server = socket.socket(socket.AF_UNIX)
        self.server.bind(path)
        self.server.listen(8)
        self.server.settimeout(30)
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.server.accept()
        except OSError:
            return
        self.connections += 1
        with conn:
            conn.settimeout(30)
            if self.read_request:
                header = self._exactly(conn, 4)
                self.request = json.loads(self._exactly(conn, int.from_bytes(header, "big")))
            try:
                conn.sendall(self.reply)
            except OSError:
                pass
            self.done.wait(self.hold)

    @staticmethod
    def _exactly(conn: socket.socket, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = conn.recv(size - len(data))
            assert chunk, "the plugin closed mid-request"
            data += chunk
        return data

    def close(self) -> None:
        self.done.set()
        self.server.close()
        self.thread.join(timeout=10)


def run(plugin: str, conf: dict | bytes, ns: str, command: str = "ADD", **env: str) -> subprocess.CompletedProcess:
    cni_env = {"PATH": os.environ["PATH"], "CNI_COMMAND": command, "CNI_CONTAINERID": "c0ffee", "CNI_NETNS": ns,
               "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin",
               "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=app-1", **env}
    data = conf if isinstance(conf, bytes) else json.dumps(conf).encode()
    return subprocess.run([plugin], input=data, env=cni_env, capture_output=True, timeout=60)


@pytest.fixture
def sock(tmp_path) -> str:
    return str(tmp_path / "cni.sock")


def served(stdout: str, code: int = 0) -> bytes:
    return frame({"code": code, "stdout": stdout})


def test_the_request_is_the_python_clients_byte_for_byte_and_the_reply_is_printed(bundle, sock, netns_lab):
    """Escaped keys, duplicates (the last wins), look-alike keys inside nested values, non-ASCII
    text, control characters: the launcher finds agent_socket as Python's json does and sends
    exactly what agent/client.py sends."""
    ns = netns_lab.netns("pod")
    decoy = sock + ".decoy"
    conf_text = (
        '{"cniVersion": "1.0.0", "name": "n\\u00e9t \\"quoted\\"\\n", "agent_socket": "' + decoy + '", '
        '"nested": {"agent_socket": "/nowhere", "list": [1, -2.5e3, true, null, "agent_socket"]}, '
        '"agent\\u005fsocket": "' + sock.replace("/", "\\/") + '", "type": "istio-cni", "\u00fcber": "\u2603"}'
    ).encode()
    stdout = json.dumps({"cniVersion": "1.0.0", "note": "\u2603 \ud83d\ude00 \"x\"\n"}) + "\n"
    requests = []
    for plugin in (bundle, VENV_PLUGIN):
        agent = FakeAgent(sock, served(stdout, code=0))
        try:
            result = run(plugin, conf_text, ns, CNI_EXTRA="caf\u00e9")
        finally:
            agent.close()
            os.unlink(sock)
        assert result.returncode == 0, result.stderr
        assert result.stdout.decode() == stdout
        requests.append(agent.request)
    started = [request.pop("started_ns") for request in requests]  # each client's own start time
    assert all(isinstance(ns_, int) and 0 < ns_ <= time.monotonic_ns() for ns_ in started)
    assert requests[0] == requests[1]
    assert requests[0]["stdin"] == conf_text.decode()
    assert requests[0]["env"]["CNI_EXTRA"] == "caf\u00e9" and "PATH" not in requests[0]["env"]
    assert netns_lab.save(ns) == ""


def test_the_agents_exit_code_and_error_object_are_passed_through(bundle, sock, netns_lab):
    error = json.dumps({"cniVersion": "1.0.0", "code": 11, "msg": "from the agent"}) + "\n"
    agent = FakeAgent(sock, served(error, code=1))
    try:
        result = run(bundle, mesh_netconf(agent_socket=sock), netns_lab.netns("pod"))
    finally:
        agent.close()
    assert result.returncode == 1
    assert result.stdout.decode() == error


@pytest.mark.parametrize(("reply", "message"), [
    (frame({"code": 0, "stdout": "{}"})[:20], "failed after receiving the request: connection closed mid-frame"),
    (b"\x00\x00", "failed after receiving the request: connection closed mid-frame"),
    (b"", "failed after receiving the request: connection closed mid-frame"),
    ((MAX_FRAME + 1).to_bytes(4, "big") + b"{", f"failed after receiving the request: frame of {MAX_FRAME + 1} bytes "
                                               f"is larger than {MAX_FRAME}"),
    (frame({"code": "0", "stdout": "{}"}), "sent a malformed reply"),
    (frame({"code": 0}), "sent a malformed reply"),
    (frame([0, "{}"]), "failed after receiving the request: its reply is not a JSON object"),
    (b"\x00\x00\x00\x03{\"a", "failed after receiving the request: its reply is not a JSON object"),
    (frame({"code": 0, "stdout": "\ud800"}), "failed after receiving the request: its reply is not a JSON object"),
], ids=["truncated-body", "truncated-header", "closed", "oversized", "code-not-int", "no-stdout", "not-object",
        "bad-json", "lone-surrogate"])
def test_a_broken_reply_fails_the_command_and_nothing_runs_in_process(bundle, sock, netns_lab, reply, message):
    ns = netns_lab.netns("pod")
    agent = FakeAgent(sock, reply)
    try:
        result = run(bundle, mesh_netconf(agent_socket=sock), ns)
    finally:
        agent.close()
    assert result.returncode == 1, result.stdout
    error = json.loads(result.stdout)
    assert error == {"cniVersion": "1.0.0", "code": 50, "msg": f"node agent at {sock} {message}",
                     "details": "it is not run a second time in this process; see the agent's log "
                                "(meshcni install-cni)"}
    assert netns_lab.save(ns) == "", "the request was run a second time in-process"


def test_an_agent_that_hangs_fails_the_add_after_agent_timeout(bundle, sock, netns_lab):
    ns = netns_lab.netns("pod")
    agent = FakeAgent(sock, b"", hold=30)
    try:
        result = run(bundle, mesh_netconf(agent_socket=sock, agent_timeout=1.5), ns)
    finally:
        agent.close()
    assert result.returncode == 1
    error = json.loads(result.stdout)
    assert error["code"] == 50 and error["msg"] == f"node agent at {sock} did not answer within 1.5s", error
    assert netns_lab.save(ns) == ""


def test_a_declined_request_is_served_in_process(bundle, sock, netns_lab):
    ns = netns_lab.netns("pod")
    # Held open: the request fits the socket's buffer, so it is the refusal the launcher reads. (The
    # real agent closes at once; the launcher may then fail to write and says "took no request":
    # in-process too.)
    agent = FakeAgent(sock, frame({"served": False, "reason": "4 connections open (the limit)"}), read_request=False,
                      hold=5)
    try:
        result = run(bundle, mesh_netconf(agent_socket=sock), ns)
    finally:
        agent.close()
    assert result.returncode == 0, result.stdout + result.stderr
    assert b"declined the request (4 connections open (the limit)); serving in-process" in result.stderr
    assert agent.connections == 1, "the in-process run asked the agent a second time"
    assert "-A ISTIO_OUTPUT" in netns_lab.save(ns)


@pytest.fixture
def bundle_without_python(bundle, tmp_path) -> str:
    """The launcher alone, without the interpreter, libpython, the standard library or our
    packages: whatever this answers, it answered without Python."""
    home = tmp_path / "bare"
    home.mkdir()
    shutil.copy(Path(bundle).resolve(), home / "istio-cni")
    return str(home / "istio-cni")


def test_an_agent_served_request_starts_no_interpreter(bundle_without_python, sock, netns_lab):
    ns = netns_lab.netns("pod")
    stdout = json.dumps({"cniVersion": "1.0.0", "served-by": "agent"}) + "\n"
    agent = FakeAgent(sock, served(stdout))
    try:
        result = run(bundle_without_python, mesh_netconf(agent_socket=sock), ns)
    finally:
        agent.close()
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.decode() == stdout
    # Without an agent the same executable needs its interpreter, which is not there.
    os.unlink(sock)
    fallback = run(bundle_without_python, mesh_netconf(agent_socket=sock), ns)
    assert fallback.returncode == 1
    assert json.loads(fallback.stdout)["msg"] == "istio-cni: cannot start the bundled interpreter"


def test_values_the_launcher_skips_may_be_anything_json_allows(bundle_without_python, sock, netns_lab):
    """Long numbers, deep nesting, NaN, escapes in other members: still read by the launcher
    alone (without Python here, so any input it gave up on would fail)."""
    conf = {**mesh_netconf(agent_socket=sock), "big": 10**80, "deep": [[[[{"a": [1.5e-300, None]}]]]],
            "odd": float("nan"), "text": "\u2603\n\"\\"}
    agent = FakeAgent(sock, served("{}\n"))
    try:
        result = run(bundle_without_python, conf, netns_lab.netns("pod"))
    finally:
        agent.close()
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(agent.request["stdin"])["big"] == 10**80


def test_the_launcher_does_not_load_libpython(bundle):
    """The dynamic loader's work on libpython alone costs milliseconds on every pod."""
    needed = subprocess.run(["readelf", "-d", str(Path(bundle).resolve())], capture_output=True, text=True,
                            check=True).stdout
    assert "libc.so" in needed and "libpython" not in needed


@pytest.mark.parametrize("conf", [
    b'{"cniVersion": "1.0.0", "agent_socket": "\xff"}',  # not UTF-8
    b'{"cniVersion": "1.0.0", "agent_timeout": "5"}',  # the Python plugin's configuration error
    b'{"cniVersion": "1.0.0", "agent_timeout": 0}',
    b'{"cniVersion": "1.0.0", "agent_timeout": NaN}',
    b'{"cniVersion": 1}',
    b'[1, 2]',
    b'{"cniVersion": "1.0.0"',
    b'',
], ids=["not-utf8", "timeout-string", "timeout-zero", "timeout-nan", "version-number", "array", "unterminated",
        "empty"])
def test_input_the_launcher_does_not_read_gets_the_python_plugins_answer(bundle, tmp_path, netns_lab, conf):
    ns = netns_lab.netns("pod")
    bundled, venv = run(bundle, conf, ns), run(VENV_PLUGIN, conf, ns)
    assert (bundled.returncode, bundled.stdout) == (venv.returncode, venv.stdout)
    assert bundled.stdout, "no answer at all"


def test_stdin_larger_than_an_agent_request_reaches_the_python_plugin_whole(bundle, sock, netns_lab):
    """2 MiB of netconf is more than the agent reads: the launcher hands all of it to Python,
    which asks the agent as it always did (and is dropped unread), so both give one answer."""
    ns = netns_lab.netns("pod")
    conf = mesh_netconf(agent_socket="", padding="x" * (2 * 1024 * 1024))
    bundled, venv = run(bundle, conf, ns), run(VENV_PLUGIN, conf, ns)
    assert bundled.returncode == venv.returncode == 0, bundled.stderr
    assert json.loads(bundled.stdout) == json.loads(venv.stdout)
