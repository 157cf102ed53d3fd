"""The installed istio-cni runs ADD on a host that has no Python at all."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from meshcni_core.install import binaries
from meshcni_testing.apiserver import FakeApiServer
from meshcni_testing.netlab import MESH_STATUS, mesh_netconf

pytestmark = [pytest.mark.netns, pytest.mark.e2e]
BUILD = Path(__file__).resolve().parents[2] / "build"
ROOT = BUILD / "nopython-root"
BUNDLE = BUILD / "plugin-bundle"


@pytest.fixture
def host_bin_dir():
    assert (ROOT / "usr/sbin/iptables-nft-restore").exists(), "run scripts/make-nopython-root.sh (make test does)"
    assert (BUNDLE / "istio-cni").is_symlink(), "run scripts/build-plugin-bundle.sh (make test does)"
    assert not list((ROOT / "usr/bin").glob("python*")) and not list((ROOT / "usr/local/bin").glob("python*"))
    bin_dir = ROOT / "opt" / "cni" / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    try:
        yield bin_dir
    finally:
        binaries.remove_from(str(BUNDLE), str(bin_dir), ())


def run_in_root(conf: dict, pod_netns: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the installed plugin chrooted into the Python-less root, with /proc and the netns mounted."""
    (ROOT / "run" / "netns").mkdir(parents=True, exist_ok=True)
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c0ffee",
           "CNI_NETNS": pod_netns, "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin",
           "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=app-1", **env}
    script = (f"mount -t proc proc {ROOT}/proc && mount --rbind /run/netns {ROOT}/run/netns && "
              f"exec chroot {ROOT} /opt/cni/bin/istio-cni")
    proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                          input=json.dumps(conf), env=env, capture_output=True, text=True, timeout=120)
    assert not os.path.ismount(ROOT / "proc")
    return proc


def test_add_in_a_root_without_python(host_bin_dir, netns_lab):
    report = binaries.install_into(str(BUNDLE), str(host_bin_dir), (), update=True)
    assert not report.problems
    pod = netns_lab.netns("pod")
    conf = mesh_netconf({"sidecar.istio.io/interceptionMode": "TPROXY"}, agent_socket="")
    # A host whose environment points at some Python installation must not change the bundle's.
    proc = run_in_root(conf, pod, PYTHONHOME="/nonexistent", PYTHONPATH="/nonexistent")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["ips"] == conf["prevResult"]["ips"]
    rules = netns_lab.save(pod)
    assert "-A ISTIO_INBOUND -p tcp -j ISTIO_TPROXY" in rules and "-A ISTIO_OUTPUT -j ISTIO_REDIRECT" in rules


def test_pod_lookup_over_tls_in_a_root_without_python(host_bin_dir, netns_lab):
    """No agent and no runtime annotations: the bundled kubernetes client reads the pod over TLS."""
    binaries.install_into(str(BUNDLE), str(host_bin_dir), (), update=True)
    pod = netns_lab.netns("pod")
    conf_dir = ROOT / "etc" / "cni" / "net.d"
    conf_dir.mkdir(parents=True, exist_ok=True)
    with FakeApiServer() as api:  # on the host's loopback, which the chroot shares
        api.add_pod("default", "app-1", containers=["app", "istio-proxy"], init_containers=["istio-validation"],
                    annotations={"sidecar.istio.io/status": MESH_STATUS})
        kubeconfig = json.loads(Path(api.write_kubeconfig(str(conf_dir / "kubeconfig"))).read_text())
        (conf_dir / "ca.crt").write_bytes(Path(api.certs.ca).read_bytes())
        kubeconfig["clusters"][0]["cluster"]["certificate-authority"] = "/etc/cni/net.d/ca.crt"
        (conf_dir / "kubeconfig").write_text(json.dumps(kubeconfig))
        conf = mesh_netconf(agent_socket="", kubernetes={"kubeconfig": "/etc/cni/net.d/kubeconfig"})
        del conf["runtimeConfig"]
        try:
            proc = run_in_root(conf, pod)
        finally:
            for name in ("kubeconfig", "ca.crt"):
                (conf_dir / name).unlink()
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert ("GET", "/api/v1/namespaces/default/pods/app-1") in {(m, p) for m, p, _ in api.requests}
    assert "-A ISTIO_OUTPUT -j ISTIO_REDIRECT" in netns_lab.save(pod)
