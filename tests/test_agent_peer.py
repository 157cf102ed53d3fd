"""istio-cni trusts only a root agent: a process of another user listening on the agent's socket
path gets nothing and cannot make an ADD succeed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time

import pytest

from meshcni_testing.netlab import cni, mesh_netconf

pytestmark = pytest.mark.netns
NOBODY = 65534

# An impostor: accepts one connection, records how many bytes the plugin sent, answers "ok".
FAKE_AGENT = r"""
import json, socket, sys
path, record = sys.argv[1], sys.argv[2]
server = socket.socket(socket.AF_UNIX)
server.bind(path)
server.listen(1)
conn, _ = server.accept()
conn.settimeout(2)
received = b""
try:
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            break
        received += chunk
        if len(received) >= 4 and len(received) >= 4 + int.from_bytes(received[:4], "big"):
            break
except OSError:
    pass
with open(record, "w") as f:
    f.write(str(len(received)))
reply = json.dumps({"code": 0, "stdout": json.dumps({"cniVersion": "1.0.0", "impostor": "ok"}) + "\n"}).encode()
try:
    conn.sendall(len(reply).to_bytes(4, "big") + reply)
except OSError:
    pass
"""


@pytest.fixture
def nobody_dir():
    """A directory the unprivileged user may create a socket in (pytest's tmp_path is root-only)."""
    top = tempfile.mkdtemp(prefix="meshcni-peer-", dir="/tmp")
    os.chmod(top, 0o755)
    run_dir = os.path.join(top, "run")
    os.mkdir(run_dir)
    os.chown(run_dir, NOBODY, NOBODY)
    try:
        yield run_dir
    finally:
        shutil.rmtree(top)


def test_an_agent_socket_served_by_a_non_root_user_fails_the_add(nobody_dir, netns_lab):
    sock = os.path.join(nobody_dir, "cni.sock")
    record = os.path.join(nobody_dir, "received")
    python = shutil.which("python3", path="/usr/bin:/bin")
    assert python is not None
    fake = subprocess.Popen(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                             python, "-c", FAKE_AGENT, sock, record], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(sock):
            assert fake.poll() is None, fake.stderr.read() if fake.stderr else ""
            assert time.monotonic() < deadline, "the fake agent did not start"
            time.sleep(0.02)
        ns = netns_lab.netns("pod")
        result = cni("ADD", ns, mesh_netconf(agent_socket=sock))
        fake.wait(timeout=10)
    finally:
        if fake.poll() is None:
            fake.kill()
            fake.wait()
    assert result.returncode == 1, result.stdout + result.stderr
    assert "impostor" not in result.stdout
    error = json.loads(result.stdout)
    assert sock in error["msg"] and f"uid {NOBODY}" in error["msg"] and "not root" in error["msg"], error
    with open(record) as f:
        assert f.read() == "0", "the request was sent to a non-root peer"
    assert netns_lab.save(ns) == "", "the ADD was served in-process although an impostor holds the socket"
