"""A host whose libnftables cannot be loaded: the backend says what is missing and how to get it,
and an ADD fails naming it with nothing applied. The library is hidden for real, in a private
mount namespace of the process under test (an empty file bound over it)."""

from __future__ import annotations

import ctypes.util
import json
import os
import subprocess
import sys

import pytest

from meshcni_testing.netlab import PLUGIN, cni, mesh_netconf

pytestmark = pytest.mark.netns


def library_path() -> str:
    listing = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, check=True).stdout
    path = next(line.split("=>")[1].strip() for line in listing.splitlines() if "libnftables.so.1 " in line)
    return os.path.realpath(path)


def without_libnftables(tmp_path, *argv: str) -> str:
    """An executable running ``argv`` where libnftables.so.1 is an empty file."""
    assert ctypes.util.find_library("nftables"), "the test needs libnftables installed to hide it"
    script = tmp_path / "without-libnftables"
    script.write_text(
        "#!/bin/sh\n"
        "exec unshare -m --propagation private sh -c 'mount --bind /dev/null \"$0\" && exec \"$@\"' "
        f"{library_path()} {' '.join(argv)} \"$@\"\n"
    )
    script.chmod(0o755)
    return str(script)


def test_host_problems_name_the_library_and_its_package(tmp_path):
    probe = "from meshcni_backend_nftables.backend import NftablesBackend; print(NftablesBackend().host_problems())"
    wrapper = without_libnftables(tmp_path, sys.executable, "-c")
    problems = subprocess.run([wrapper, probe], capture_output=True, text=True, check=True).stdout
    assert "libnftables.so.1 not found or not loadable" in problems and "libnftables1" in problems
    # and with the library in place, nothing is missing
    healthy = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert healthy.strip() == "[]"


def test_an_add_fails_naming_the_library_and_applies_nothing(tmp_path, netns_lab):
    ns = netns_lab.netns("pod")
    conf = mesh_netconf({}, backend="nftables")
    conf["extensions"] = [*conf["extensions"], "nftables"]
    proc = cni("ADD", ns, conf, plugin=without_libnftables(tmp_path, PLUGIN))
    assert proc.returncode != 0, proc.stdout + proc.stderr
    error = json.loads(proc.stdout)
    assert "libnftables.so.1" in error["msg"] + error.get("details", "")
    assert "libnftables1" in error["msg"] + error.get("details", "")
    listing = subprocess.run(["ip", "netns", "exec", netns_lab.name_of(ns), "nft", "list", "ruleset"],
                             capture_output=True, text=True, check=True).stdout
    assert listing == "" and netns_lab.save(ns) == "" and netns_lab.save(ns, 6) == ""


def test_status_reports_the_node_unable_to_serve_add(tmp_path):
    conf = {**mesh_netconf({}, backend="nftables"), "cniVersion": "1.1.0"}
    conf["extensions"] = [*conf["extensions"], "nftables"]
    assert cni("STATUS", "", conf).returncode == 0
    proc = cni("STATUS", "", conf, plugin=without_libnftables(tmp_path, PLUGIN))
    error = json.loads(proc.stdout)
    assert proc.returncode != 0 and error["code"] == 50
    assert "libnftables.so.1" in error["details"] and "libnftables1" in error["details"]
