"""The real istio-cni on a node that cannot run the selected backend, or asked for a backend
nothing provides: one CNI error object naming what is missing, and nothing applied."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from hidden_library import without_libnftables
from meshcni_testing.netlab import PLUGIN, mesh_netconf

pytestmark = pytest.mark.netns


def run_plugin(command: str, netns_path: str, netconf: dict, path: str | None = None) -> subprocess.CompletedProcess[str]:
    """istio-cni as a runtime runs it, with ``PATH`` replaced when given (a node without those tools)."""
    env = {**os.environ, "CNI_COMMAND": command, "CNI_CONTAINERID": "c0ffee", "CNI_NETNS": netns_path,
           "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin",
           "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=app-1;K8S_POD_UID=uid-1"}
    if path is not None:
        env["PATH"] = path
    return subprocess.run([PLUGIN], input=json.dumps(netconf), env=env, capture_output=True, text=True, timeout=60)


def nothing_of_ours(lab, ns: str) -> bool:
    return all(lab.save(ns, family, flavour) == "" for family in (4, 6) for flavour in ("nft", "legacy"))


def test_a_node_without_iptables_fails_add_with_one_error_naming_it(netns_lab, tmp_path):
    ns = netns_lab.netns("pod")
    proc = run_plugin("ADD", ns, mesh_netconf(), path=str(tmp_path))  # an empty directory: no iptables at all
    assert proc.returncode != 0
    error = json.loads(proc.stdout)
    assert error["code"] == 105
    assert "backend 'iptables-restore' cannot run on this node" in error["msg"]
    assert "iptables-restore, ip6tables-restore, iptables-save and ip6tables-save" in error["msg"]
    assert "install iptables" in error["msg"]
    assert nothing_of_ours(netns_lab, ns)


def test_auto_on_a_node_where_no_backend_can_run_lists_each_backend(netns_lab, tmp_path):
    ns = netns_lab.netns("pod")
    proc = run_plugin("ADD", ns, mesh_netconf(backend="auto"), path=str(tmp_path))
    error = json.loads(proc.stdout)
    assert error["code"] == 105 and "backend auto: no registered backend can run on this node" in error["msg"]
    assert "iptables-restore cannot run here" in error.get("details", "")
    assert nothing_of_ours(netns_lab, ns)


def test_auto_on_a_node_with_iptables_uses_iptables_restore(netns_lab):
    ns = netns_lab.netns("pod")
    proc = run_plugin("ADD", ns, mesh_netconf(backend="auto", log_level="info"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "backend auto: using iptables-restore" in proc.stderr
    assert "ISTIO_REDIRECT" in netns_lab.save(ns)


def test_native_nftables_without_an_extension_providing_it_is_a_config_error(netns_lab):
    ns = netns_lab.netns("pod")
    netconf = mesh_netconf(native_nftables=True)
    netconf["extensions"] = [e for e in netconf["extensions"] if e != "nftables"]
    proc = run_plugin("ADD", ns, netconf)
    error = json.loads(proc.stdout)
    assert error["code"] == 7
    assert "netconf key native_nftables=true asks for a backend that no enabled extension provides" in error["msg"]
    assert "not programmed with iptables instead" in error["msg"]
    assert nothing_of_ours(netns_lab, ns)


def test_iptables_restore_refuses_a_netns_holding_the_nftables_flavour(netns_lab):
    ns = netns_lab.netns("pod")
    name = netns_lab.name_of(ns)
    subprocess.run(["ip", "netns", "exec", name, "nft", "add table inet istio-proxy-nat"], check=True)
    proc = run_plugin("ADD", ns, mesh_netconf(backend="iptables-restore"))
    error = json.loads(proc.stdout)
    assert error["code"] == 105
    assert "already holds the nftables redirect tables inet istio-proxy-nat" in error["msg"]
    assert nothing_of_ours(netns_lab, ns)
    tables = subprocess.run(["ip", "netns", "exec", name, "nft", "list", "tables"], capture_output=True, text=True)
    assert tables.stdout.split() == ["table", "inet", "istio-proxy-nat"]


def test_native_nftables_on_a_node_without_libnftables_fails_add_naming_it(netns_lab):
    """The library hidden for real (an empty file bind-mounted over it, in a private mount namespace)."""
    ns = netns_lab.netns("pod")
    netconf = mesh_netconf(native_nftables=True)
    netconf["extensions"].append("nftables")
    env = {**os.environ, "CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c0ffee", "CNI_NETNS": ns, "CNI_IFNAME": "eth0",
           "CNI_PATH": "/opt/cni/bin",
           "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=app-1;K8S_POD_UID=uid-1"}
    proc = subprocess.run(without_libnftables([PLUGIN]), input=json.dumps(netconf), env=env, capture_output=True,
                          text=True, timeout=60)
    error = json.loads(proc.stdout)
    assert error["code"] == 105
    assert error["msg"].startswith("backend 'nftables' cannot run on this node (netconf key native_nftables=true): "
                                   "libnftables.so.1 not found or not loadable")
    assert "install Debian's libnftables1" in error["msg"]
    tables = subprocess.run(["ip", "netns", "exec", netns_lab.name_of(ns), "nft", "list", "tables"],
                            capture_output=True, text=True, check=True)
    assert tables.stdout == "" and nothing_of_ours(netns_lab, ns)


def test_auto_on_a_node_without_iptables_picks_nftables_and_says_why(netns_lab, tmp_path):
    ns = netns_lab.netns("pod")
    netconf = mesh_netconf(backend="auto", log_level="info")
    netconf["extensions"].append("nftables")
    proc = run_plugin("ADD", ns, netconf, path=str(tmp_path))  # no iptables executables at all
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert ("backend auto: using nftables, the first registered backend this node can run (iptables-restore "
            "cannot run here: iptables-restore, ip6tables-restore, iptables-save and ip6tables-save") in proc.stderr
    tables = subprocess.run(["ip", "netns", "exec", netns_lab.name_of(ns), "nft", "list", "tables"],
                            capture_output=True, text=True, check=True).stdout
    assert "table inet istio-proxy-nat" in tables and nothing_of_ours(netns_lab, ns)
