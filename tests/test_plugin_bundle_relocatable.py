"""The self-contained istio-cni (build/plugin-bundle) is relocatable: no ELF in it searches a path of
the build machine (its Python's prefix, e.g. /root/.pyenv/...) or anything else outside the bundle,
and a copy of it in another directory loads its own libraries only, glibc's aside."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from meshcni_testing.netlab import MESH_STATUS, mesh_netconf

pytestmark = pytest.mark.netns
BUNDLE = Path(__file__).resolve().parents[1] / "build" / "plugin-bundle" / "meshcni-istio-cni"
# The C library the bundle leaves to the host (scripts/build-plugin-bundle.sh copies every other one).
GLIBC = ("libc.so.", "libm.so.", "libpthread.so.", "libdl.so.", "librt.so.", "libutil.so.", "libresolv.so.",
         "ld-linux")


@pytest.fixture(scope="module")
def bundle() -> Path:
    assert (BUNDLE / "istio-cni").is_file(), "run scripts/build-plugin-bundle.sh (make test does)"
    return BUNDLE


def elf_files(root: Path) -> list[Path]:
    found = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            with open(path, "rb") as f:
                if f.read(4) == b"\x7fELF":
                    found.append(path)
    return found


def search_paths(elf: Path) -> list[str]:
    """The DT_RPATH and DT_RUNPATH entries of ``elf``, as the dynamic loader reads them."""
    done = subprocess.run(["readelf", "-d", str(elf)], capture_output=True, text=True, check=True)
    entries = []
    for line in done.stdout.splitlines():
        if "(RPATH)" in line or "(RUNPATH)" in line:
            entries += line.split("[", 1)[1].rstrip("]").split(":")
    return entries


def outside(entry: str, elf: Path, root: Path) -> bool:
    if not entry.startswith("$ORIGIN"):
        return True  # absolute (the build machine's) or relative to wherever the process runs
    resolved = Path(os.path.normpath(entry.replace("$ORIGIN", str(elf.parent), 1)))
    return not resolved.is_relative_to(root)


def test_no_elf_in_the_bundle_searches_for_libraries_outside_it(bundle):
    elves = elf_files(bundle)
    assert len(elves) > 50  # the launchers, libpython, the extension modules and their libraries
    paths = {elf: search_paths(elf) for elf in elves}
    escaping = {str(elf.relative_to(bundle)): entries for elf, entries in paths.items()
                if any(outside(entry, elf, bundle) for entry in entries)}
    assert escaping == {}


def test_a_copy_in_another_directory_runs_on_its_own_libraries(bundle, tmp_path, control_plane, netns_lab):
    """The copy's ADD looks its pod up over TLS (ssl, hashlib, json... from lib-dynload, libssl and
    libcrypto from the bundle's lib/); every library the loader maps is the copy's or glibc's."""
    copy = tmp_path / "elsewhere" / "meshcni-istio-cni"
    shutil.copytree(bundle, copy, symlinks=True)
    namespace, pod_name = "bundle-copy", f"app-{netns_lab.token}"
    control_plane.ensure_namespace(namespace)
    control_plane.grant(namespace, "pod-reader", [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}])
    token = control_plane.mint_token(namespace, "pod-reader")
    control_plane.create_pod(namespace, pod_name, node="node-1", containers=("app", "istio-proxy"),
                             annotations={"sidecar.istio.io/status": MESH_STATUS})
    try:
        kubeconfig = control_plane.write_kubeconfig(tmp_path / "kubeconfig", token=token)
        conf = mesh_netconf(agent_socket="", kubernetes={"kubeconfig": str(kubeconfig)})
        del conf["runtimeConfig"]  # no annotations from the runtime: the plugin reads the pod from the API
        pod = netns_lab.netns("pod")
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c0ffee",
               "CNI_NETNS": pod, "CNI_IFNAME": "eth0", "CNI_PATH": str(copy),
               "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={pod_name}",
               "LD_DEBUG": "files", "LD_DEBUG_OUTPUT": str(tmp_path / "loader")}
        done = subprocess.run([str(copy / "istio-cni")], input=json.dumps(conf), env=env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
    finally:
        control_plane.delete_pod_now(namespace, pod_name)
    assert "-A ISTIO_OUTPUT -j ISTIO_REDIRECT" in netns_lab.save(pod)
    # One trace per process: the plugin's (the launcher exec()s the interpreter in the same process),
    # not those of the programs it runs (iptables-restore, nsenter: the host's, with the host's libraries).
    plugin_traces = [text for trace in tmp_path.glob("loader.*")
                     if f"calling init: {copy}/lib/libpython" in (text := trace.read_text())]
    assert len(plugin_traces) == 1
    loaded = {line.split("calling init:", 1)[1].strip() for line in plugin_traces[0].splitlines()
              if "calling init:" in line}
    assert any(path.endswith("/libssl.so.3") for path in loaded), sorted(loaded)  # the TLS lookup ran here
    foreign = sorted(path for path in loaded if not Path(path).is_relative_to(copy)
                     and not Path(path).name.startswith(GLIBC))
    assert foreign == []
