"""Installing a self-contained bundle: versioned, atomic, cleaned up."""

from __future__ import annotations

import os
import subprocess


def make_bundle(source, marker: str) -> None:
    bundle = source / "meshcni-istio-cni"
    (bundle / "_internal").mkdir(parents=True, exist_ok=True)
    (bundle / "istio-cni").write_text(f"#!/bin/sh\necho {marker}\n")
    (bundle / "istio-cni").chmod(0o755)
    (bundle / "_internal" / "lib.so").write_text(marker)
    if not (source / "istio-cni").is_symlink():
        (source / "istio-cni").unlink(missing_ok=True)
        os.symlink("meshcni-istio-cni/istio-cni", source / "istio-cni")


def test_bundle_install_upgrade_uninstall(host):
    source = host.root / "plugin"
    make_bundle(source, "v1")
    status = host.installer().reconcile()
    plugin = host.bin_dir / "istio-cni"
    assert plugin.is_symlink() and subprocess.run([plugin], capture_output=True, text=True).stdout == "v1\n"
    v1 = os.readlink(plugin).split("/")[0]
    assert v1.startswith("meshcni-istio-cni-") and "installed bundle" in " ".join(status.actions)
    assert host.installer().reconcile().actions == []  # nothing to do the second time
    make_bundle(source, "v2")
    host.installer().reconcile()
    assert subprocess.run([plugin], capture_output=True, text=True).stdout == "v2\n"
    assert not (host.bin_dir / v1).exists(), "the old bundle is removed once nothing points at it"
    assert not [p for p in host.bin_dir.iterdir() if p.name.startswith(".")]
    host.installer().uninstall()
    assert list(host.bin_dir.iterdir()) == []


def test_a_bundle_is_hashed_once_per_installer(host):
    """The image's bundle does not change under a running install-cni; re-hashing tens of MB on
    every reconcile made each heal slower and the agent bigger."""
    source = host.root / "plugin"
    make_bundle(source, "v1")
    installer = host.installer()
    installer.reconcile()
    first = os.readlink(host.bin_dir / "istio-cni")
    make_bundle(source, "v2")  # what only a new image (a new install-cni process) can bring
    assert installer.reconcile().actions == [] and os.readlink(host.bin_dir / "istio-cni") == first
    host.installer().reconcile()
    assert os.readlink(host.bin_dir / "istio-cni") != first
