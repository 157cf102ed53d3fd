"""install-cni keeps the node not ready while the selected backend cannot run here: /readyz lists
what is missing and our conf entry is not written, so no pod is sent to a plugin that would fail."""

from __future__ import annotations

import json
import subprocess

from test_install_cni import MESHCNI, Running, env_for

from hidden_library import without_libnftables

PRIMARY = {"cniVersion": "1.0.0", "name": "k8s-pod-network", "plugins": [{"type": "ptp"}]}
NFTABLES_TEMPLATE = json.dumps({"type": "istio-cni", "native_nftables": True, "extensions": ["nftables"],
                                "kubernetes": {"kubeconfig": "__KUBECONFIG_FILEPATH__"}})


def primary(host):
    path = host.conf_dir / "10-ptp.conflist"
    path.write_text(json.dumps(PRIMARY))
    return path


def test_a_node_without_iptables_is_not_ready_and_readyz_says_what_is_missing(host, tmp_path):
    conflist = primary(host)
    before = conflist.read_bytes()
    empty = tmp_path / "empty-path"
    empty.mkdir()
    agent = Running(host, PATH=str(empty))
    try:
        agent.wait_problem("backend iptables-restore: iptables-restore, ip6tables-restore, iptables-save and "
                           "ip6tables-save (nft or legacy) not found on PATH: install iptables")
        assert conflist.read_bytes() == before  # not chained: the runtime keeps running pods without us
    finally:
        agent.stop()
    # the same node with its tools: ready, and chained
    agent = Running(host)
    try:
        agent.wait_ready(True)
        assert json.loads(conflist.read_text())["plugins"][-1]["type"] == "istio-cni"
    finally:
        agent.stop()


def test_native_nftables_on_a_node_without_libnftables_is_not_ready(host):
    conflist = primary(host)
    before = conflist.read_bytes()
    env = {**env_for(host), "CNI_NETWORK_CONFIG": NFTABLES_TEMPLATE}
    proc = subprocess.run(without_libnftables([MESHCNI, "install-cni", "--once"]), env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    status = json.loads(proc.stdout)
    assert not status["ready"]
    [problem] = [p for p in status["problems"] if p.startswith("backend ")]
    assert problem.startswith("backend nftables: libnftables.so.1 not found or not loadable")
    assert "install Debian's libnftables1" in problem
    assert conflist.read_bytes() == before
    proc = subprocess.run([MESHCNI, "install-cni", "--once"], env=env, capture_output=True, text=True, timeout=120)
    assert json.loads(proc.stdout)["ready"], proc.stdout  # with the library, the same node is ready


def test_a_switch_no_installed_extension_provides_keeps_the_node_not_ready(host):
    primary(host)
    template = json.dumps({"type": "istio-cni", "native_nftables": True,
                           "kubernetes": {"kubeconfig": "__KUBECONFIG_FILEPATH__"}})
    proc = subprocess.run([MESHCNI, "install-cni", "--once"], env={**env_for(host), "CNI_NETWORK_CONFIG": template},
                          capture_output=True, text=True, timeout=120)
    problems = json.loads(proc.stdout)["problems"]
    assert any(p.startswith("the plugin's configuration cannot be served: netconf key native_nftables=true asks "
                            "for a backend that no enabled extension provides: enable the 'nftables' extension")
               for p in problems), problems


