"""The node agent against hostile neighbours: processes that reach its socket from another mount
namespace, requests naming netns paths or kubeconfigs of their choosing, idle connections."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from test_agent import MESHCNI, PLUGIN, agent_config, netconf, run_plugin, start_agent

pytestmark = pytest.mark.netns

# A client of the agent's wire protocol (4-byte length, JSON), run as its own process: it prints
# the bytes the agent answered, hex-encoded ("" = the agent closed without a reply).
RAW_CLIENT = textwrap.dedent("""
    import json, socket, sys
    path, request = sys.argv[1], json.loads(sys.argv[2])
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(60)
    s.connect(path)
    data = json.dumps(request).encode()
    try:
        s.sendall(len(data).to_bytes(4, "big") + data)
    except OSError:
        pass
    got = b""
    while True:
        try:
            chunk = s.recv(65536)
        except OSError:
            break
        if not chunk:
            break
        got += chunk
    print(got.hex())
""")


def cni_env(command: str, ns: str, pod: str = "app-1") -> dict[str, str]:
    return {"CNI_COMMAND": command, "CNI_CONTAINERID": f"c-{pod}", "CNI_NETNS": ns, "CNI_IFNAME": "eth0",
            "CNI_PATH": "/opt/cni/bin", "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod}"}


def raw_request(sock: str, env: dict[str, str], conf: dict, prefix: list[str] | None = None) -> dict | None:
    """The agent's reply to one request, or None when it closed the connection without one."""
    request = {"env": env, "stdin": json.dumps(conf)}
    out = subprocess.run([*(prefix or []), sys.executable, "-c", RAW_CLIENT, sock, json.dumps(request)],
                         capture_output=True, text=True, timeout=90)
    assert out.returncode == 0, out.stderr
    got = bytes.fromhex(out.stdout.strip())
    return json.loads(got[4:]) if got else None


@pytest.fixture
def agent(tmp_path):
    sock = str(tmp_path / "run" / "cni.sock")
    proc = start_agent(sock, agent_config(tmp_path, sock))
    try:
        yield sock, proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def lab(netns_lab):
    return netns_lab


class Neighbour:
    """A root process in a mount namespace of its own that sees the agent's socket directory
    through a read-only bind mount: a container with a hostPath volume."""

    def __init__(self, sock: str, mountpoint: Path):
        mountpoint.mkdir()
        self.sock = str(mountpoint / os.path.basename(sock))
        self.setup = f"mount --bind -o ro {os.path.dirname(sock)} {mountpoint} && exec \"$@\""

    def prefix(self) -> list[str]:
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", self.setup, "sh"]

    def request(self, env: dict[str, str], conf: dict) -> dict | None:
        return raw_request(self.sock, env, conf, self.prefix())

    def plugin(self, command: str, ns: str, conf: dict) -> subprocess.CompletedProcess[str]:
        """The real istio-cni run from the neighbour; no iptables on its PATH, so only the agent
        could program anything."""
        return subprocess.run([*self.prefix(), "env", "PATH=/nonexistent", PLUGIN], input=json.dumps(conf),
                              env={**os.environ, **cni_env(command, ns)}, capture_output=True, text=True, timeout=90)


def declined(reply: dict | None) -> bool:
    """The agent's refusal, sent before it reads anything, and nothing else."""
    return reply is not None and reply.get("served") is False and set(reply) == {"served", "reason"}


def test_a_neighbour_in_its_own_mount_namespace_can_neither_program_strip_nor_read(agent, lab, tmp_path):
    sock, _ = agent
    neighbour = Neighbour(sock, tmp_path / "hostpath")
    neighbour_conf = netconf(neighbour.sock)
    victim, other = lab.netns("victim"), lab.netns("other")

    # program: neither through the plugin nor on the raw protocol
    added = neighbour.plugin("ADD", other, neighbour_conf)
    assert added.returncode != 0 and lab.save(other) == "", added.stdout + added.stderr
    assert declined(neighbour.request(cni_env("ADD", other), neighbour_conf))
    assert lab.save(other) == ""

    # the host's own plugin is still served by the agent (no iptables on its PATH either)
    result = run_plugin("ADD", victim, netconf(sock), path="/nonexistent")
    assert result.returncode == 0, result.stdout + result.stderr
    rules = lab.save(victim)
    assert "ISTIO_OUTPUT" in rules

    # strip: the neighbour's DEL leaves the victim's rules in place
    neighbour.plugin("DEL", victim, neighbour_conf)
    assert declined(neighbour.request(cni_env("DEL", victim), neighbour_conf))
    assert lab.save(victim) == rules

    # read: no answer but the refusal, not even to CHECK or STATUS
    assert declined(neighbour.request(cni_env("CHECK", victim), neighbour_conf))
    assert declined(neighbour.request({"CNI_COMMAND": "STATUS"}, {**neighbour_conf, "require_agent": True}))


def test_a_netns_outside_the_runtime_directories_is_refused(agent, lab, tmp_path):
    sock, _ = agent
    ns = lab.netns("pod")
    outside = tmp_path / "elsewhere"
    outside.touch()
    subprocess.run(["mount", "--bind", ns, str(outside)], check=True)
    try:
        result = run_plugin("ADD", str(outside), netconf(sock), path="/nonexistent")
        assert result.returncode == 1, result.stdout
        error = json.loads(result.stdout)
        assert "refused" in error["msg"] and "/proc/<pid>/ns/net" in error["msg"], error
        assert lab.save(ns) == ""
    finally:
        subprocess.run(["umount", str(outside)], check=True)


def test_a_netns_named_by_process_is_accepted(agent, lab):
    sock, _ = agent
    ns = lab.netns("pod")
    holder = subprocess.Popen(["ip", "netns", "exec", lab.name_of(ns), "sleep", "60"])
    try:
        by_pid = f"/proc/{holder.pid}/ns/net"
        deadline = time.monotonic() + 10
        while os.stat(by_pid).st_ino != os.stat(ns).st_ino:  # until ip netns exec has entered it
            assert time.monotonic() < deadline
            time.sleep(0.02)
        result = run_plugin("ADD", by_pid, netconf(sock), path="/nonexistent")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "ISTIO_OUTPUT" in lab.save(ns)
    finally:
        holder.kill()
        holder.wait()


def test_only_namespace_files_in_an_accepted_directory_are_entered(lab, tmp_path):
    netns_dir = tmp_path / "netns"
    netns_dir.mkdir()
    sock = str(tmp_path / "run" / "cni.sock")
    proc = start_agent(sock, agent_config(tmp_path, sock), "--netns-dir", str(netns_dir))
    mounted = netns_dir / "pinned"
    try:
        victim = lab.netns("victim")
        (netns_dir / "link").symlink_to(victim)
        (netns_dir / "file").write_text("")
        (netns_dir / "dir").mkdir()
        for name, why in (("link", "cannot open"), ("file", "not a network namespace"),
                          ("dir", "not a network namespace"), ("../netns/link", "refused")):
            result = run_plugin("ADD", str(netns_dir / name), netconf(sock), path="/nonexistent")
            assert result.returncode == 1, (name, result.stdout)
            assert why in json.loads(result.stdout)["msg"], (name, result.stdout)
        assert lab.save(victim) == ""
        # a real namespace file there is entered
        mounted.touch()
        subprocess.run(["mount", "--bind", victim, str(mounted)], check=True)
        result = run_plugin("ADD", str(mounted), netconf(sock), path="/nonexistent")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "ISTIO_OUTPUT" in lab.save(victim)
    finally:
        subprocess.run(["umount", str(mounted)], check=False, capture_output=True)
        proc.terminate()
        proc.wait(timeout=10)


def test_a_kubeconfig_named_in_a_request_is_never_read(agent, lab, tmp_path):
    sock, _ = agent
    ns = lab.netns("pod")
    marker = tmp_path / "exec-credential-ran"
    kubeconfig = tmp_path / "evil-kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "x",
        "clusters": [{"name": "x", "cluster": {"server": "https://127.0.0.1:9"}}],
        "contexts": [{"name": "x", "context": {"cluster": "x", "user": "x"}}],
        "users": [{"name": "x", "user": {"exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1", "command": "/bin/sh",
            "args": ["-c", f"touch {marker}; echo '{{\"apiVersion\": \"client.authentication.k8s.io/v1beta1\", "
                           f"\"kind\": \"ExecCredential\", \"status\": {{\"token\": \"t\"}}}}'"]}}}],
    }))
    conf = netconf(sock)
    conf["kubernetes"] = {"kubeconfig": str(kubeconfig)}
    del conf["runtimeConfig"]  # no annotations from the runtime: the pod must be looked up
    reply = raw_request(sock, cni_env("ADD", ns), conf)
    assert reply is not None and reply["code"] == 1, reply
    assert str(kubeconfig) not in reply["stdout"]
    assert not marker.exists(), "the agent ran the kubeconfig's exec credential"
    assert lab.save(ns) == ""


def test_client_chosen_extensions_are_ignored(agent, lab):
    """The agent runs its own configuration; a client cannot load extensions it names."""
    sock, _ = agent
    ns = lab.netns("pod")
    result = run_plugin("ADD", ns, {**netconf(sock), "extensions": ["no-such-extension"]}, path="/nonexistent")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ISTIO_OUTPUT" in lab.save(ns)


def threads_of(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def test_300_idle_connections_hold_no_threads_and_real_requests_are_served(agent, lab):
    sock, proc = agent
    ns = lab.netns("warm-up")
    assert run_plugin("ADD", ns, netconf(sock), path="/nonexistent").returncode == 0
    before = threads_of(proc.pid)
    idle = []
    try:
        for _ in range(300):
            s = socket.socket(socket.AF_UNIX)
            s.connect(sock)
            idle.append(s)
        time.sleep(1)
        assert threads_of(proc.pid) <= before + 2, (before, threads_of(proc.pid))
        ns = lab.netns("pod")
        started = time.monotonic()
        result = run_plugin("ADD", ns, netconf(sock), path="/nonexistent")  # only the agent can serve it
        assert result.returncode == 0, result.stdout + result.stderr
        assert time.monotonic() - started < 5
        assert "ISTIO_OUTPUT" in lab.save(ns)
        # the idle ones are dropped after the read deadline (10 s)
        idle[0].settimeout(20)
        assert idle[0].recv(1) == b""
        assert threads_of(proc.pid) <= before + 2
    finally:
        for s in idle:
            s.close()


def test_a_full_agent_declines_new_connections_unread_and_the_plugin_serves_in_process(lab, tmp_path):
    sock = str(tmp_path / "run" / "cni.sock")
    proc = start_agent(sock, agent_config(tmp_path, sock), "--max-connections", "4")
    idle = []
    try:
        for _ in range(4):
            s = socket.socket(socket.AF_UNIX)
            s.connect(sock)
            idle.append(s)
        time.sleep(0.5)
        ns = lab.netns("pod")
        assert declined(raw_request(sock, cni_env("ADD", ns), netconf(sock)))
        assert lab.save(ns) == ""
        result = run_plugin("ADD", ns, netconf(sock))  # iptables on PATH: it can serve itself
        assert result.returncode == 0, result.stdout + result.stderr
        assert "serving in-process" in result.stderr and "ISTIO_OUTPUT" in lab.save(ns)
    finally:
        for s in idle:
            s.close()
        proc.terminate()
        proc.wait(timeout=10)


def test_an_oversized_request_is_dropped_unread(agent):
    """A request frame over 1 MiB is refused from its header, not waited for."""
    sock, _ = agent
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(3)
    s.connect(sock)
    s.sendall((2 * 1024 * 1024).to_bytes(4, "big") + b"{")
    try:
        assert s.recv(1) == b""
    except ConnectionResetError:
        pass  # closed with our byte unread: just as closed
    finally:
        s.close()


@pytest.mark.parametrize("existing_mode", [0o755, 0o777])
def test_socket_directory_is_made_private_when_it_exists(tmp_path, existing_mode):
    run = tmp_path / "run"
    run.mkdir()
    run.chmod(existing_mode)
    sock = str(run / "cni.sock")
    proc = start_agent(sock, agent_config(tmp_path, sock))
    try:
        assert stat.S_IMODE(run.stat().st_mode) == 0o700
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_socket_directory_of_another_owner_is_refused(tmp_path):
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    os.chown(run, 1000, 1000)
    sock = str(run / "cni.sock")
    result = subprocess.run([MESHCNI, "agent", "--socket", sock, "--config", agent_config(tmp_path, sock)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "belongs to uid 1000" in result.stderr, result.stderr
    assert not os.path.exists(sock)
