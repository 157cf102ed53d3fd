"""A throwaway node for end-to-end tests: node netns, CNI bin dir and a ptp + istio-cni conflist."""

from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from meshcni_testing.netlab import PLUGIN, Lab

DEBIAN_CNI = "/usr/lib/cni"


@dataclass
class Node:
    lab: Lab
    netns: str
    bin_dir: str
    conf_dir: str
    network: str
    ipam_dir: str

    def primary_conflist(self, version: str = "1.0.0") -> dict:
        """What the primary CNI writes: ptp + host-local only (written, and returned)."""
        conflist = self.conflist(version)
        conflist["plugins"] = conflist["plugins"][:1]
        return self._write(conflist)

    def write_conflist(self, version: str = "1.0.0", **istio_extra: object) -> dict:
        """The primary's chain with istio-cni last (written, and returned)."""
        return self._write(self.conflist(version, **istio_extra))

    def conflist(self, version: str = "1.0.0", **istio_extra: object) -> dict:
        return {
            "cniVersion": version,
            "name": self.network,
            "plugins": [
                {"type": "ptp", "ipMasq": False,
                 "ipam": {"type": "host-local", "ranges": [[{"subnet": "198.51.100.0/24"}]],
                          "routes": [{"dst": "0.0.0.0/0"}], "dataDir": self.ipam_dir}},
                {"type": "istio-cni", "log_level": "debug", "extensions": ["tproxy", "kubevirt"],
                 "kubernetes": {"exclude_namespaces": ["istio-system"]},
                 "capabilities": {"io.kubernetes.cri.pod-annotations": True}, **istio_extra},
            ],
        }

    def _write(self, conflist: dict) -> dict:
        Path(self.conf_dir, "10-e2e.conflist").write_text(json.dumps(conflist, indent=2))
        return conflist


@pytest.fixture
def node(tmp_path, netns_lab):
    bin_dir, conf_dir = tmp_path / "bin", tmp_path / "net.d"
    bin_dir.mkdir()
    conf_dir.mkdir()
    for name in ("ptp", "host-local", "loopback", "portmap"):
        os.symlink(os.path.join(DEBIAN_CNI, name), bin_dir / name)
    os.symlink(PLUGIN, bin_dir / "istio-cni")
    network = f"meshcni-e2e-{netns_lab.token}"
    node = Node(netns_lab, netns_lab.netns("node"), str(bin_dir), str(conf_dir), network, str(tmp_path / "ipam"))
    try:
        yield node
    finally:
        for cached in glob.glob(f"/var/lib/cni/results/{network}-*"):  # libcni's fixed result cache
            os.remove(cached)
