"""Installing a self-contained bundle: versioned, atomic, cleaned up."""

from __future__ import annotations

import os
import subprocess
import time

from meshcni_core.install import binaries


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
    assert (host.bin_dir / v1).is_dir(), "a plugin started from the old bundle may still be running"
    retired = time.time() - binaries.RETIRED_GRACE_SECONDS - 1
    os.utime(host.bin_dir / v1, (retired, retired))
    host.installer().reconcile()
    assert not (host.bin_dir / v1).exists(), "the old bundle is removed once its grace period is over"
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


def test_a_plugin_running_from_the_old_bundle_finishes_while_the_new_one_is_installed(host):
    """The bundle's launcher resolves its own directory at start and loads files from it later
    (CPython imports lazily); an upgrade in between must not take those files away."""
    source = host.root / "plugin"
    make_bundle(source, "v1")
    launcher = source / "meshcni-istio-cni" / "istio-cni"
    launcher.write_text('#!/bin/sh\nhere=$(dirname "$(readlink -f "$0")")\nsleep 1\ncat "$here/_internal/lib.so"\n')
    host.installer().reconcile()
    running = subprocess.Popen([host.bin_dir / "istio-cni"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.3)  # started from v1
    make_bundle(source, "v2")
    host.installer().reconcile()
    out, err = running.communicate(timeout=10)
    assert (running.returncode, out) == (0, "v1"), err
