"""The node agent inside install-cni's container reads the kubeconfig where that container sees it."""

from meshcni_core.install.installer import Installer
from meshcni_core.install.settings import from_env
from meshcni_testing.hostlayout import make_host


def test_the_agent_netconf_names_the_mounted_kubeconfig_the_conf_file_the_hosts(tmp_path):
    env = make_host(tmp_path)
    env["CNI_NET_DIR"] = "/etc/cni/net.d"  # the host's path; MOUNTED_CNI_NET_DIR is the container's
    installer = Installer(from_env(env))
    assert installer.entry()["kubernetes"]["kubeconfig"] == "/etc/cni/net.d/ZZZ-istio-cni-kubeconfig"  # for the plugin
    assert installer.netconf()["kubernetes"]["kubeconfig"] == str(tmp_path / "net.d" / "ZZZ-istio-cni-kubeconfig")
