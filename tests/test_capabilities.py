"""The capabilities the generated DaemonSet grants install-cni are exactly what its work needs.

The node agent runs under ``setpriv`` with its capability bounding set cut to the DaemonSet's
list (a root process then has exactly those), on a read-only root with only the DaemonSet's
volumes writable, as the container runtime would start it, and
serves a real ADD of a meshed pod in a real network namespace - by its pinned path and, as the
repair and some runtimes name it, as ``/proc/<pid>/ns/net`` of a process in it. The plugin runs
with ``/nonexistent`` as its PATH, so only the agent can have programmed the rules. Then the
same again without each listed capability: the ADD must fail.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from meshcni_core.cni import spool
from meshcni_core.manifest.node_cleanup import UNINSTALL_CNI_CAPABILITIES
from meshcni_core.manifest.render import INSTALL_CNI_CAPABILITIES
from meshcni_testing.hostlayout import PRIMARY, make_host
from meshcni_testing.netlab import mesh_netconf
from meshcni_testing.processes import wait_until_listening
from test_agent import MESHCNI, run_plugin
from test_node_cleanup import rendered_pod_spec

pytestmark = pytest.mark.netns


def as_in_the_daemon_set(argv: list[str], capabilities: tuple[str, ...], writable: tuple[str, ...]) -> list[str]:
    """``argv`` with only ``capabilities``, in a mount namespace whose root is read-only but for
    ``writable`` (as ``readOnlyRootFilesystem`` with hostPath volumes: here the test's directory
    stands for the conf, bin and socket dirs; legacy iptables needs no writable lock file)."""
    bounding = ",".join(["-all", *(f"+{c.lower()}" for c in capabilities)])
    binds = " && ".join(f"mount --bind '{path}' '{path}'" for path in writable)
    script = f"mount --make-rslave / && {binds} && mount -o remount,bind,ro / && exec \"$@\""
    return ["unshare", "--mount", "--", "sh", "-c", script, "sh",
            "setpriv", f"--bounding-set={bounding}", "--inh-caps=-all", "--", *argv]


def start_confined_agent(tmp_path, capabilities: tuple[str, ...], netconf: dict) -> subprocess.Popen:
    sock = netconf["agent_socket"]
    config = tmp_path / "agent-netconf.json"
    config.write_text(json.dumps(netconf))
    argv = [MESHCNI, "agent", "--socket", sock, "--config", str(config), "--log-level", "debug"]
    proc = subprocess.Popen(as_in_the_daemon_set(argv, capabilities, (str(tmp_path),)),
                            stderr=subprocess.PIPE, text=True)
    wait_until_listening(proc, sock, output=lambda: proc.stderr.read() if proc.poll() is not None else "")
    return proc


def effective_capabilities(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("CapEff:")).split()[1], 16)


@contextlib.contextmanager
def two_pods(lab) -> Iterator[tuple[str, str]]:
    """Two pod network namespaces, named as runtimes name them: a pinned path, and
    /proc/<pid>/ns/net of a full-privileged process in the other (created before the agent starts:
    a new pinned netns reaches a container only through HostToContainer propagation)."""
    pinned = lab.netns("pinned")
    by_pid = lab.netns("bypid")
    holder = subprocess.Popen(["ip", "netns", "exec", lab.name_of(by_pid), "sleep", "60"])
    try:
        time.sleep(0.2)
        yield pinned, f"/proc/{holder.pid}/ns/net"
    finally:
        holder.kill()
        holder.wait()


def add(netns: str, netconf: dict, agent_pid: int, pod: str) -> subprocess.CompletedProcess[str]:
    """The plugin's ADD, run in the agent's mount namespace: the one the agent trusts besides the
    host's (/proc/1/ns/mnt, which this sandbox cannot read)."""
    nsenter = ("/usr/bin/nsenter", f"--mount=/proc/{agent_pid}/ns/mnt", "--")
    return run_plugin("ADD", netns, netconf, path="/nonexistent", pod=pod, prefix=nsenter)


# Which iptables the agent drives: NET_RAW is needed by the legacy one only (its raw socket).
CASES = [(None, "nft"), (None, "legacy"), ("NET_ADMIN", "nft"), ("NET_RAW", "legacy"), ("SYS_ADMIN", "nft"),
         ("SYS_PTRACE", "nft")]
# What breaks without each, as the plugin's error or the agent's log says it.
BREAKS = {
    "NET_ADMIN": "Could not fetch rule set generation id: Permission denied",  # nf_tables over netlink
    "NET_RAW": "(legacy): ip6tables-restore: unable to initialize table",  # the legacy tables' raw socket
    "SYS_ADMIN": "setns failed: Operation not permitted",  # entering the pod's netns
    # checking the plugin is root in the node's mount namespace (/proc/<pid>/ns/mnt of a process
    # with more capabilities); the agent refuses it and the plugin, on its own, has no iptables here
    "SYS_PTRACE": "peer pid {pid}'s mount namespace cannot be read",
}


def test_every_listed_capability_is_measured():
    assert sorted(missing for missing, _ in CASES if missing) == sorted(INSTALL_CNI_CAPABILITIES)


@pytest.mark.parametrize(("missing", "flavour"), CASES)
def test_the_agent_serves_an_add_with_exactly_the_listed_capabilities(tmp_path, netns_lab, missing, flavour):
    capabilities = tuple(c for c in INSTALL_CNI_CAPABILITIES if c != missing)
    netconf = mesh_netconf(agent_socket=str(tmp_path / "run" / "cni.sock"), iptables_flavour=flavour)
    with two_pods(netns_lab) as namespaces:
        agent = start_confined_agent(tmp_path, capabilities, netconf)
        try:
            assert effective_capabilities(agent.pid) != 0
            results = [add(ns, netconf, agent.pid, f"app-{i}") for i, ns in enumerate(namespaces)]
        finally:
            agent.terminate()
            agent.wait(timeout=10)
        said = agent.stderr.read() + "".join(r.stdout for r in results)
        programmed = [netns_lab.save(ns, flavour=flavour) for ns in namespaces]
    if missing is None:
        assert all(r.returncode == 0 for r in results), said
        assert all("ISTIO_OUTPUT" in rules for rules in programmed), programmed
    else:
        assert all(r.returncode != 0 for r in results), f"{missing} is not needed: {said}"
        assert BREAKS[missing].split("{pid}")[0] in said and BREAKS[missing].split("{pid}")[-1] in said, said


def test_install_cni_does_its_file_work_with_the_listed_capabilities_on_a_read_only_root(tmp_path):
    """Binaries, kubeconfig and the chained entry into root-owned host directories: no
    DAC_OVERRIDE, CHOWN or FOWNER needed (the files are root's own), nothing written elsewhere."""
    conf, bins, source, sa = (tmp_path / d for d in ("net.d", "bin", "plugin", "sa"))
    for d in (conf, bins, source, sa):
        d.mkdir()
    (source / "istio-cni").write_text("#!/bin/sh\n")
    (sa / "token").write_text("t0k3n")
    (sa / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    (conf / "10-ptp.conflist").write_text(json.dumps({"cniVersion": "1.0.0", "name": "k8s-pod-network",
                                                      "plugins": [{"type": "ptp"}]}))
    env = {**os.environ, "MOUNTED_CNI_NET_DIR": str(conf), "MOUNTED_CNI_BIN_DIR": str(bins), "SECONDARY_BIN_DIR": "",
           "MESHCNI_PLUGIN_SOURCE_DIR": str(source), "SERVICE_ACCOUNT_DIR": str(sa),
           "KUBERNETES_SERVICE_HOST": "10.110.0.1", "KUBERNETES_SERVICE_PORT": "443",
           "CNI_NETWORK_CONFIG": json.dumps({"type": "istio-cni", "kubernetes": {"kubeconfig": "__KUBECONFIG_FILEPATH__"}})}
    done = subprocess.run(as_in_the_daemon_set([MESHCNI, "install-cni", "--once"], INSTALL_CNI_CAPABILITIES,
                                               (str(tmp_path),)), env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads((conf / "10-ptp.conflist").read_text())["plugins"][-1]["type"] == "istio-cni"
    assert (bins / "istio-cni").exists() and (conf / "ZZZ-istio-cni-kubeconfig").exists()


def test_the_clean_up_daemon_set_uninstalls_with_its_listed_capabilities_on_a_read_only_root(tmp_path):
    """The clean-up DaemonSet's init container, as rendered (command, environment, capabilities),
    on a node install-cni left - our entry, binary, kubeconfig, a spooled plugin record and the
    socket of an agent that was killed - leaves it clean: no capability is needed."""
    init = rendered_pod_spec()["initContainers"][0]
    context = init["securityContext"]
    assert context["privileged"] is False and context["capabilities"]["drop"] == ["ALL"]
    capabilities = tuple(context["capabilities"].get("add", []))
    assert capabilities == UNINSTALL_CNI_CAPABILITIES
    confined = subprocess.run(as_in_the_daemon_set(["grep", "^CapEff:", "/proc/self/status"], capabilities,
                                                   (str(tmp_path),)), capture_output=True, text=True, check=True)
    assert int(confined.stdout.split()[1], 16) == 0  # really none, as the container runtime would grant

    host = tmp_path / "host"
    env = make_host(host)
    installed = subprocess.run([MESHCNI, "install-cni", "--once"], env=env, capture_output=True, text=True, timeout=60)
    assert installed.returncode == 0, installed.stderr
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    socket_path = str(run / "cni.sock")
    killed = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    killed.bind(socket_path)  # bound, never listening: what an agent killed with SIGKILL leaves
    killed.close()
    record = {"command": "ADD", "pod": "default/spooled", "container": "ctr-spooled", "duration_ms": 180.0,
              "served_by": "plugin", "verdict": "redirected: by the test", "level": "info", "log_level": "info",
              "time": time.time(), "redirected": True}
    assert spool.append(spool.path_for(socket_path), json.dumps(record))

    command = [MESHCNI if word == "meshcni" else word for word in init["command"]]
    command[command.index("--wait-for-agent") + 1] = socket_path  # the node's socket, in this layout
    node_env = {**{v["name"]: v["value"] for v in init["env"]}, "CNI_NET_DIR": str(host / "net.d")}
    cleanup_env = {k: v for k, v in env.items() if k != "CNI_NETWORK_CONFIG"} | node_env
    done = subprocess.run(as_in_the_daemon_set(command, capabilities, (str(tmp_path),)), env=cleanup_env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads((host / "net.d" / "10-ptp.conflist").read_text()) == PRIMARY
    assert sorted(os.listdir(host / "net.d")) == ["10-ptp.conflist"] and os.listdir(host / "bin") == []
    assert '"pod": "default/spooled"' in done.stderr
    assert not run.exists(), done.stdout
