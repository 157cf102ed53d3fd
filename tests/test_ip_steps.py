"""Route steps through netlink (the node agent) leave the kernel exactly as ``ip`` execs do, undo
what either way added, answer failures as ``ip`` does, and exec ``ip`` for anything else."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshcni_core import netns
from meshcni_core.backends import ip_steps
from meshcni_testing.netlab import cni, mesh_netconf
from meshcni_testing.processes import wait_until_listening

pytestmark = pytest.mark.netns
IP = shutil.which("ip") or "ip"
MESHCNI = str(Path(sys.executable).with_name("meshcni"))

# The shapes the core and the tproxy mode produce (rules/builder.py ipv6_self_address; the tproxy
# extension's policy routing), with their undo steps.
STEPS = (
    ("-f", "inet", "rule", "add", "fwmark", "1337", "lookup", "133"),
    ("-f", "inet", "route", "replace", "local", "default", "dev", "lo", "table", "133"),
    ("-6", "addr", "replace", "::6/128", "dev", "lo"),
)
UNDO = (
    ("-f", "inet", "rule", "del", "fwmark", "1337", "lookup", "133"),
    ("-f", "inet", "route", "flush", "table", "133"),
    ("-6", "addr", "del", "::6/128", "dev", "lo"),
)


def kernel_state(ns: str) -> list[str]:
    shows = (("rule", "show"), ("-6", "rule", "show"), ("-d", "route", "show", "table", "all"),
             ("-d", "-6", "route", "show", "table", "all"), ("-6", "addr", "show", "dev", "lo"))
    return [subprocess.run([IP, "-n", os.path.basename(ns), *show], capture_output=True, text=True,
                           check=True).stdout for show in shows]


@contextlib.contextmanager
def netlink_only() -> Iterator[None]:
    """Netlink on, and ``ip`` off PATH: a step that still exec'd would fail."""
    path = os.environ["PATH"]
    ip_steps.use_netlink()
    os.environ["PATH"] = "/nonexistent"
    try:
        yield
    finally:
        os.environ["PATH"] = path
        ip_steps.use_netlink(False)


def run_all(ns: str, steps: tuple[tuple[str, ...], ...], shared_socket: bool = True) -> list[tuple[int, str]]:
    with netns.entered(ns), ip_steps.session() if shared_socket else contextlib.nullcontext():
        return [(done.returncode, done.stderr.strip()) for done in map(ip_steps.run_ip, steps)]


def test_netlink_programs_what_ip_execs_program(netns_lab):
    by_exec, by_netlink, pristine = netns_lab.netns("exec"), netns_lab.netns("netlink"), netns_lab.netns("pristine")
    # A first ADD, then a second one of the same netns (the tproxy step's `pre` deletes the rule first).
    assert run_all(by_exec, (*STEPS, UNDO[0], *STEPS)) == [(0, "")] * 7
    with netlink_only():
        assert run_all(by_netlink, (*STEPS, UNDO[0], *STEPS)) == [(0, "")] * 7
    programmed = kernel_state(by_exec)
    assert "fwmark 0x539 lookup 133" in programmed[0] and "local default dev lo table 133" in programmed[2]
    assert kernel_state(by_netlink) == programmed != kernel_state(pristine)


def test_netlink_undoes_what_ip_execs_added_and_fails_as_ip_does(netns_lab):
    pod, pristine = netns_lab.netns("pod"), netns_lab.netns("pristine")
    assert run_all(pod, STEPS) == [(0, "")] * 3  # programmed by an in-process ADD (execs)
    with netlink_only():
        assert run_all(pod, UNDO) == [(0, "")] * 3  # a DEL the agent serves
    assert kernel_state(pod) == kernel_state(pristine)
    # Undoing again finds nothing: both fail as `ip` does (exit 2, a reason), and DEL ignores that.
    by_exec = run_all(pod, UNDO)
    with netlink_only():
        by_netlink = run_all(pod, UNDO, shared_socket=False)
    for answers in (by_exec, by_netlink):
        assert [code for code, _ in answers] == [2, 0, 2] and all(reason for code, reason in answers if code)
    assert by_netlink[0] == (2, "RTNETLINK answers: No such file or directory") == by_exec[0]


def test_other_commands_still_exec_ip(netns_lab):
    ns = netns_lab.netns("pod")
    ip_steps.use_netlink()
    try:
        with netns.entered(ns):
            shown = ip_steps.run_ip(("-f", "inet", "rule", "show"))
            other = ip_steps.run_ip(("-f", "inet", "rule", "add", "iif", "lo", "lookup", "133"))
    finally:
        ip_steps.use_netlink(False)
    assert shown.returncode == 0 and "lookup main" in shown.stdout  # CHECK compares ip's own text
    assert other.returncode == 0 and "iif lo lookup 133" in kernel_state(ns)[0]


def test_the_agent_programs_and_removes_a_tproxy_pods_routes_without_an_ip_binary(netns_lab, tmp_path, monkeypatch):
    """The agent's route steps go through netlink: it serves ADD and DEL with every host tool on
    its PATH but ``ip`` (CHECK still compares ``ip``'s own text)."""
    tools = tmp_path / "bin"
    tools.mkdir()
    for folder in ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"):
        for tool in Path(folder).iterdir() if Path(folder).is_dir() else ():
            if tool.name != "ip" and not (tools / tool.name).exists():
                (tools / tool.name).symlink_to(tool)
    sock = str(tmp_path / "run" / "cni.sock")
    conf = mesh_netconf({"sidecar.istio.io/interceptionMode": "TPROXY"}, agent_socket=sock)
    (tmp_path / "netconf.json").write_text(json.dumps(conf))
    agent = subprocess.Popen([MESHCNI, "agent", "--socket", sock, "--config", str(tmp_path / "netconf.json")],
                             env={**os.environ, "PATH": str(tools)}, stderr=subprocess.PIPE, text=True)
    try:
        wait_until_listening(agent, sock, output=lambda: agent.stderr.read() if agent.poll() is not None else "")
        ns, pristine = netns_lab.netns("pod"), netns_lab.netns("pristine")
        monkeypatch.setenv("PATH", "/nonexistent")  # the plugin itself could program nothing: the agent does
        added = cni("ADD", ns, conf)
        assert added.returncode == 0, added.stdout + added.stderr
        assert "fwmark 0x539 lookup 133" in kernel_state(ns)[0]
        assert "local default dev lo table 133" in kernel_state(ns)[2]
        assert cni("DEL", ns, conf).returncode == 0
        assert kernel_state(ns) == kernel_state(pristine)
    finally:
        agent.terminate()
        agent.wait(timeout=10)
