"""containerd's CRI plugin on a throwaway node, as kubelet would drive it (reference:
real-cni-clients.md). Only scaffolding lives here; every CNI call comes from containerd itself.

Everything is under one scratch folder: containerd's root, state and sockets, the CNI bin and conf
dirs, the pause image. Teardown ends only processes whose command line names that folder (our
containerd and its shims) and unmounts only mounts under it.

An ``isolated`` node is a whole node of its own, for pods with host paths and hostPID: containerd
runs as pid 1 of a new PID and mount namespace whose /run is the scratch folder's ``node-run``
(so /var/run/netns, where it pins pod namespaces, and /var/run/meshcni are the node's, not this
machine's). Everything the node started dies with its pid 1.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import platform
import shutil
import signal
import subprocess
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PAUSE_IMAGE = "docker.io/meshcni/pause:e2e"
BUSYBOX = "/bin/busybox"
GO_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}


def _blob(directory: Path, data: bytes) -> tuple[str, int]:
    digest = hashlib.sha256(data).hexdigest()
    (directory / digest).write_bytes(data)
    return f"sha256:{digest}", len(data)


def build_pause_image(path: Path) -> None:
    """An OCI image archive whose one layer is Debian's static busybox, running ``sleep``."""
    layer_tar = io.BytesIO()
    with tarfile.open(fileobj=layer_tar, mode="w") as tar:
        info = tar.gettarinfo(BUSYBOX, arcname="bin/busybox")
        with open(BUSYBOX, "rb") as f:
            tar.addfile(info, f)
    raw_layer = layer_tar.getvalue()
    layer = gzip.compress(raw_layer, mtime=0)
    work = path.with_suffix(".d")
    blobs = work / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    layer_digest, layer_size = _blob(blobs, layer)
    config = {
        "architecture": GO_ARCH.get(platform.machine(), platform.machine()), "os": "linux",
        "config": {"Entrypoint": ["/bin/busybox", "sleep", "2147483647"]},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(raw_layer).hexdigest()}"]},
    }
    config_digest, config_size = _blob(blobs, json.dumps(config).encode())
    manifest = {
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": layer_size}],
    }
    manifest_digest, manifest_size = _blob(blobs, json.dumps(manifest).encode())
    index = {"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest, "size": manifest_size,
        "annotations": {"io.containerd.image.name": PAUSE_IMAGE, "org.opencontainers.image.ref.name": "e2e"},
    }]}
    (work / "index.json").write_text(json.dumps(index))
    (work / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    with tarfile.open(path, "w") as tar:
        for item in sorted(work.rglob("*")):
            tar.add(item, arcname=str(item.relative_to(work)), recursive=False)
    shutil.rmtree(work)


CONFIG = """\
version = 2
root = "{w}/root"
state = "{w}/state"
[grpc]
  address = "{w}/containerd.sock"
[ttrpc]
  address = "{w}/containerd.sock.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{image}"
  netns_mounts_under_state_dir = {under_state_dir}
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{bin_dir}"
    conf_dir = "{conf_dir}"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "/usr/sbin/runc"
        SystemdCgroup = false
[plugins."io.containerd.internal.v1.opt"]
  path = "{w}/opt"
"""


@dataclass
class ContainerdNode:
    work: Path
    node_netns: str
    bin_dir: str
    conf_dir: str
    process: subprocess.Popen[bytes] | None = None
    sandboxes: list[str] = field(default_factory=list)
    created: set[str] = field(default_factory=set)
    preexisting_cgroups: set[Path] = field(default_factory=set)
    isolated: bool = False
    _channel: Any = None
    runtime: Any = None
    images: Any = None
    node_pid: int = 0  # containerd's pid as this machine sees it (isolated nodes)

    @property
    def socket(self) -> str:
        return str(self.work / "containerd.sock")

    @property
    def netns_dir(self) -> str:
        """Where this containerd pins pod network namespaces (netns_mounts_under_state_dir)."""
        if self.isolated:
            return "/var/run/netns"  # containerd's default, inside the node
        return str(self.work / "state" / "io.containerd.grpc.v1.cri" / "netns")

    def host_path(self, path: str) -> str:
        """``path`` as the node sees it, reachable from this machine's mount namespace."""
        if not self.isolated:
            return path
        if path.startswith("/var/run/"):  # a symlink to /run: absolute, it would lead back to this machine's
            path = path.removeprefix("/var")
        return f"/proc/{self.node_pid}/root{path}"

    @property
    def log(self) -> str:
        path = self.work / "containerd.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self) -> None:
        self.preexisting_cgroups = set(Path("/sys/fs/cgroup").glob("*/k8s.io"))
        config = self.work / "config.toml"
        config.write_text(CONFIG.format(w=self.work, image=PAUSE_IMAGE, bin_dir=self.bin_dir, conf_dir=self.conf_dir,
                                        under_state_dir=str(not self.isolated).lower()))
        log = open(self.work / "containerd.log", "wb")
        containerd = ["containerd", "--config", str(config)]
        if self.isolated:
            (self.work / "node-run").mkdir()
            # / shared again inside, as on a systemd host: HostToContainer volumes need it
            containerd = ["unshare", "--pid", "--fork", "--kill-child", "--mount", "--propagation", "private",
                          "--mount-proc", "sh", "-c",
                          f'mount --bind "{self.work}/node-run" /run && mount --make-rshared / && exec "$@"',
                          "node-init", *containerd]
        # nsenter, not `ip netns exec`: the latter remounts /sys and runc then finds no cgroups.
        self.process = subprocess.Popen(["nsenter", f"--net={self.node_netns}", *containerd],
                                        stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while not os.path.exists(self.socket):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"containerd did not start:\n{self.log[-3000:]}")
            time.sleep(0.05)
        if self.isolated:
            self.node_pid = int(Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()[0])
        image = self.work / "pause.tar"
        build_pause_image(image)
        self.import_image(image)
        import grpc
        from cri_api.v1 import api_pb2_grpc

        self._channel = grpc.insecure_channel(f"unix://{self.socket}")
        self.runtime = api_pb2_grpc.RuntimeServiceStub(self._channel)
        self.images = api_pb2_grpc.ImageServiceStub(self._channel)

    def import_image(self, archive: Path) -> None:
        """As a node's image pull would leave it: an OCI archive into the CRI's namespace."""
        subprocess.run(["ctr", "-a", self.socket, "-n", "k8s.io", "images", "import", str(archive)],
                       check=True, capture_output=True, timeout=300)

    def run_pod(self, name: str, namespace: str, annotations: dict[str, str], uid: str = "") -> str:
        from cri_api.v1 import api_pb2

        config = api_pb2.PodSandboxConfig(
            metadata=api_pb2.PodSandboxMetadata(name=name, namespace=namespace, uid=uid or f"uid-{namespace}-{name}"),
            hostname=name,
            log_directory=str(self.work / "pod-logs" / name),
            annotations=annotations,
            linux=api_pb2.LinuxPodSandboxConfig(
                security_context=api_pb2.LinuxSandboxSecurityContext(
                    namespace_options=api_pb2.NamespaceOption(network=api_pb2.POD)
                )
            ),
        )
        response = self.runtime.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=config), timeout=120)
        self.sandboxes.append(response.pod_sandbox_id)
        self.created.add(response.pod_sandbox_id)
        return str(response.pod_sandbox_id)

    def netns_of(self, sandbox_id: str) -> str:
        from cri_api.v1 import api_pb2

        status = self.runtime.PodSandboxStatus(api_pb2.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id, verbose=True))
        spec = json.loads(status.info["info"])["runtimeSpec"]
        return next(ns["path"] for ns in spec["linux"]["namespaces"] if ns["type"] == "network")

    def stop_and_remove(self, sandbox_id: str) -> None:
        from cri_api.v1 import api_pb2

        self.runtime.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=120)
        self.runtime.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=120)
        self.sandboxes.remove(sandbox_id)

    def close(self) -> None:
        for sandbox_id in list(self.sandboxes):
            try:
                self.stop_and_remove(sandbox_id)
            except Exception:  # noqa: BLE001 - best effort; the processes and mounts go below anyway
                pass
        if self._channel is not None:
            self._channel.close()
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for pid in _pids_naming(str(self.work)):  # our shims, and nothing else
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
        for mount in sorted((m for m in mounts if m.startswith(str(self.work))), key=len, reverse=True):
            subprocess.run(["umount", "-l", mount], capture_output=True)
        for sandbox_id in self.created:  # cgroupfs driver: /sys/fs/cgroup/<controller>/k8s.io/<id>
            for cgroup in Path("/sys/fs/cgroup").glob(f"*/k8s.io/{sandbox_id}"):
                try:
                    cgroup.rmdir()
                except OSError:
                    pass
        for parent in set(Path("/sys/fs/cgroup").glob("*/k8s.io")) - self.preexisting_cgroups:
            try:
                parent.rmdir()  # only if our containerd created it and it is empty now
            except OSError:
                pass


def _pids_naming(text: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline and int(proc.name) != os.getpid():
            pids.append(int(proc.name))
    return pids
