"""A throwaway host layout for installer tests: conf dir, bin dir, service account, plugin."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from meshcni_core.install.installer import Installer, NodeCheck
from meshcni_core.install.settings import InstallSettings

# Real-world conflists, kept in the repository (tests/data/conflists/README.md says where each came from).
REFERENCE = Path(__file__).resolve().parents[1] / "data" / "conflists"
# Istio's test template (istio-cni-behavior.md §5.11).
ISTIO_TEST_TEMPLATE = json.dumps({
    "type": "istio-cni", "log_level": "info",
    "kubernetes": {"kubeconfig": "__KUBECONFIG_FILEPATH__", "cni_bin_dir": "/opt/cni/bin",
                   "exclude_namespaces": ["istio-system"]},
})


@dataclass
class Host:
    root: Path
    settings: InstallSettings

    @property
    def conf_dir(self) -> Path:
        return Path(self.settings.mounted_cni_net_dir)

    @property
    def bin_dir(self) -> Path:
        return Path(self.settings.mounted_cni_bin_dir)

    def installer(self, node_check: NodeCheck | None = None, **overrides: object) -> Installer:
        return Installer(replace(self.settings, **overrides), node_check)  # type: ignore[arg-type]

    def files(self) -> dict[str, object]:
        """Every file in the conf dir, parsed where it is JSON."""
        out: dict[str, object] = {}
        for path in sorted(self.conf_dir.iterdir()):
            text = path.read_text()
            try:
                out[path.name] = json.loads(text)
            except ValueError:
                out[path.name] = text
        return out


@pytest.fixture
def host(tmp_path) -> Host:
    conf, bins, source, sa = (tmp_path / d for d in ("net.d", "bin", "plugin", "serviceaccount"))
    for d in (conf, bins, source, sa):
        d.mkdir()
    (source / "istio-cni").write_text("#!/bin/sh\necho plugin\n")
    (sa / "token").write_text("tok-123\n")
    (sa / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    settings = InstallSettings(
        mounted_cni_net_dir=str(conf), mounted_cni_bin_dir=str(bins), secondary_bin_dir="",
        plugin_source_dir=str(source), service_account_dir=str(sa), kube_ca_file=str(sa / "ca.crt"),
        service_host="10.110.0.1", service_port="443", node_name="worker-node-1",
        network_config=ISTIO_TEST_TEMPLATE,
    )
    return Host(tmp_path, settings)


@pytest.fixture
def reference() -> Path:
    assert REFERENCE.is_dir(), f"the reference conflists are missing from the checkout: {REFERENCE}"
    return REFERENCE
