"""native_nftables on nodes without nft tooling: the install-cni image's own root (no nft, no
libnftables1 package: only what the image carries) and the host bundle on a Python-less Debian root
(iptables, no nftables) program a pod's inet istio-proxy-* tables."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from meshcni_core.install import binaries
from meshcni_testing.netlab import mesh_netconf

pytestmark = [pytest.mark.netns, pytest.mark.e2e]
BUILD = Path(__file__).resolve().parents[2] / "build"
IMAGE = BUILD / "image" / "oci"
BUNDLE = BUILD / "plugin-bundle"
NOPYTHON_ROOT = BUILD / "nopython-root"


def nftables_netconf() -> dict:
    netconf = mesh_netconf(agent_socket="", native_nftables=True)
    netconf["extensions"] = [*netconf["extensions"], "nftables"]
    return netconf


def image_root(into: Path) -> Path:
    """The image's layers unpacked in order, as a runtime would."""
    assert (IMAGE / "index.json").exists(), "run make image (make test does)"
    index = json.loads((IMAGE / "index.json").read_text())
    digest = index["manifests"][0]["digest"].split(":")[1]
    manifest = json.loads((IMAGE / "blobs" / "sha256" / digest).read_text())
    into.mkdir()
    for layer in manifest["layers"]:
        blob = IMAGE / "blobs" / "sha256" / layer["digest"].split(":")[1]
        subprocess.run(["tar", "-xzf", str(blob), "-C", str(into)], check=True)
    return into


def add_in_root(root: Path, plugin: str, pod_netns: str) -> subprocess.CompletedProcess[str]:
    """The plugin's ADD chrooted into ``root`` (its /proc and the pods' netns mounted, privately)."""
    (root / "run" / "netns").mkdir(parents=True, exist_ok=True)
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c0ffee",
           "CNI_NETNS": pod_netns, "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin",
           "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=app-1"}
    script = (f"mount -t proc proc {root}/proc && mount --rbind /run/netns {root}/run/netns && "
              f"exec chroot {root} {plugin}")
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                          input=json.dumps(nftables_netconf()), env=env, capture_output=True, text=True, timeout=120)


def tables(lab, ns: str) -> list[str]:
    listed = subprocess.run(["ip", "netns", "exec", lab.name_of(ns), "nft", "list", "tables"], capture_output=True,
                            text=True, check=True).stdout
    return sorted(line.removeprefix("table ") for line in listed.splitlines())


def no_nft_tooling(root: Path) -> bool:
    """No nft executable, and no libnftables but one that points into the plugin bundle."""
    found = [p for p in root.rglob("libnftables.so*") if p.is_file() or p.is_symlink()]
    into_bundle = all("meshcni-istio-cni" in str(p.resolve()) or "meshcni-istio-cni" in os.readlink(p)
                      for p in found if p.is_symlink())
    return not list(root.rglob("nft")) and into_bundle and all(
        "meshcni-istio-cni" in str(p) for p in found if not p.is_symlink())


def test_the_image_programs_an_nftables_pod_on_its_own(netns_lab, tmp_path):
    root = image_root(tmp_path / "rootfs")
    assert no_nft_tooling(root)
    pod = netns_lab.netns("pod")
    proc = add_in_root(root, "/opt/meshcni/bin/istio-cni", pod)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert tables(netns_lab, pod) == ["inet istio-proxy-filter", "inet istio-proxy-nat"]
    assert netns_lab.save(pod) == "" and netns_lab.save(pod, 6) == ""


def test_the_host_bundle_programs_an_nftables_pod_on_a_root_without_nftables(netns_lab):
    assert (NOPYTHON_ROOT / "usr/sbin/iptables-nft-restore").exists(), "run scripts/make-nopython-root.sh"
    assert no_nft_tooling(NOPYTHON_ROOT)
    bin_dir = NOPYTHON_ROOT / "opt" / "cni" / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    try:
        assert not binaries.install_into(str(BUNDLE), str(bin_dir), (), update=True).problems
        pod = netns_lab.netns("pod")
        proc = add_in_root(NOPYTHON_ROOT, "/opt/cni/bin/istio-cni", pod)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert tables(netns_lab, pod) == ["inet istio-proxy-filter", "inet istio-proxy-nat"]
    finally:
        binaries.remove_from(str(BUNDLE), str(bin_dir), ())
