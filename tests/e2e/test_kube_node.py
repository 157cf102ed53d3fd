"""The whole node with a real kubelet: `meshcni manifest apply` → the DaemonSet controller's pod,
bound by the scheduler, started by kubelet from `make image`'s image → mesh pods redirected → the
node agent's repair reprogramming a pod that started before the plugin was there.

kubelet, kube-controller-manager and kube-scheduler come from the control plane's pinned
k8s.io/kubernetes (scripts/build-kube-node.sh, `make kube-node`) and run against a control plane of
this test's own (a DaemonSet controller would act on every other test's objects). Of the
controller-manager's controllers run those a node needs here: the DaemonSet's, ServiceAccounts',
the root CA ConfigMap's (the pods' projected tokens) and node lifecycle (it lifts the not-ready
taint kubelet registers the node with).
The node is a ContainerdNode(isolated=True): its network, PID and mount namespaces, with kubelet
beside containerd in all three. What this machine cannot give a node is translated, and said here:

- kube-proxy: the API server is on this machine's loopback; ServiceProxy relays 127.0.0.1:PORT
  (kubelet's kubeconfig) and the `kubernetes` Service's address, 198.51.100.1:443 (what kubelet
  gives pods as KUBERNETES_SERVICE_HOST), inside the node to it;
- kernel tunables: kubelet sets vm.overcommit_memory=1, kernel.panic=10 and kernel.panic_on_oops=1
  on a node, which are this machine's own (not namespaced): inside the node's mount namespace those
  three /proc/sys files are bind-mounted over by files already holding kubelet's values;
- cgroups: cgroup v1 (failCgroupV1: false), the cgroupfs driver, no per-QoS hierarchy (cgroupsPerQOS:
  false); every pod's cgroups under a root of the node's own in each hierarchy (cgroupRoot), removed
  afterwards;
- the image: imported into containerd as a pull would leave it, with values.cni.pullPolicy=
  IfNotPresent (no registry here); application containers run the e2e pause image (busybox).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from containerd_node import PAUSE_IMAGE, ContainerdNode
from cri_api.v1 import api_pb2
from kubelet_cri import http_get
from service_proxy import ServiceProxy

from meshcni_testing.certs import issue
from meshcni_testing.controlplane import KUBERNETES_SERVICE_IP, ControlPlane, start_control_plane
from meshcni_testing.kubeconfig import write_kubeconfig
from meshcni_testing.netlab import MESH_STATUS, Lab
from meshcni_testing.processes import MESHCNI

pytestmark = [pytest.mark.netns, pytest.mark.e2e]
ROOT = Path(__file__).resolve().parents[2]
IMAGE = ROOT / "build" / "image"
KUBE_NODE_BIN = ROOT / "build" / "kube-node" / "bin"
CONTROL_PLANE_BIN = ROOT / "build" / "control-plane" / "bin"
NODE_IP = "192.0.2.20"
POD_SUBNET = "203.0.113.0/24"  # the Service range (198.51.100.0/24) is the control plane's
DEBIAN_CNI = "/usr/lib/cni"
CGROUP_HIERARCHIES = sorted(str(p) for p in Path("/sys/fs/cgroup").iterdir()
                            if p.is_dir() and (p / "cgroup.procs").exists())
# kubelet's values for the kernel tunables it would otherwise write (pkg/kubelet/cm: setupKernelTunables).
KUBELET_SYSCTLS = {"vm/overcommit_memory": "1", "kernel/panic": "10", "kernel/panic_on_oops": "1"}
# Istio's istio-validation, in busybox: outbound TCP to anywhere must reach the proxy's port 15001.
# Unredirected, 192.0.2.99 has no route on the node and the connection fails: exit 126, as Istio's.
VALIDATION = ("/bin/busybox nc -l -p 15001 </dev/null >/dev/null & /bin/busybox sleep 0.3; "
              "/bin/busybox nc -w 2 192.0.2.99 80 </dev/null && exit 0; exit 126")


def say(text: str) -> None:
    print(f"kube-node: {text}", flush=True)


@dataclass
class Cluster:
    api: ControlPlane
    runtime: ContainerdNode
    node_name: str
    work: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def log(self, name: str, lines: int = 40) -> str:
        text = (self.work / f"{name}.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def wait(self, what: str, check: Callable[[], Any], timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while not (result := check()):
            for name, process in self.processes.items():
                assert process.poll() is None, f"{name} exited:\n{self.log(name)}"
            assert time.monotonic() < deadline, f"{what}: not after {timeout:.0f} s\nkubelet:\n{self.log('kubelet')}"
            time.sleep(0.5)
        return result

    def pod(self, namespace: str, name: str) -> dict[str, Any]:
        return self.api.request("GET", f"/api/v1/namespaces/{namespace}/pods/{name}")

    def rules(self, namespace: str, name: str) -> str:
        """The iptables rules in the pod's network namespace, found as kubelet's sandbox of the pod."""
        [sandbox] = self.runtime.runtime.ListPodSandbox(api_pb2.ListPodSandboxRequest(filter=api_pb2.PodSandboxFilter(
            state=api_pb2.PodSandboxStateValue(state=api_pb2.SANDBOX_READY),
            label_selector={"io.kubernetes.pod.name": name, "io.kubernetes.pod.namespace": namespace}))).items
        path = self.runtime.host_path(self.runtime.netns_of(sandbox.id))
        done = subprocess.run(["nsenter", f"--net={path}", "iptables-save"], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return "\n".join(line for line in done.stdout.splitlines() if line.startswith("-A"))


def _launch(work: Path, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
    with open(work / f"{name}.log", "wb") as log:
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def _kubelet_config(runtime: ContainerdNode, work: Path, ca: Path, cgroup_root: str) -> Path:
    config = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        "failCgroupV1": False, "cgroupDriver": "cgroupfs", "cgroupsPerQOS": False, "enforceNodeAllocatable": [],
        "cgroupRoot": cgroup_root,
        "containerRuntimeEndpoint": f"unix://{runtime.socket}",
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": False},
                           "x509": {"clientCAFile": str(ca)}},
        "authorization": {"mode": "AlwaysAllow"},
        "address": NODE_IP, "port": 10250, "readOnlyPort": 0, "healthzPort": 0,
        "failSwapOn": False, "resolvConf": "", "makeIPTablesUtilChains": False,
        # this machine's disk is shared: no evictions or image collection on its account
        "evictionHard": {"memory.available": "1Mi", "nodefs.available": "0%", "imagefs.available": "0%",
                         "nodefs.inodesFree": "0%"},
        "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99, "localStorageCapacityIsolation": False,
        "podLogsDir": str(work / "pod-logs"), "volumePluginDir": str(work / "volume-plugins"),
    }
    path = work / "kubelet-config.json"
    path.write_text(json.dumps(config))
    return path


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    for binary in ("kubelet", "kube-controller-manager", "kube-scheduler"):
        assert os.access(KUBE_NODE_BIN / binary, os.X_OK), "run make kube-node (make test does)"
    assert (IMAGE / "install-cni.oci.tar").exists(), "run make image (make test does)"
    lab = Lab()
    api = start_control_plane(CONTROL_PLANE_BIN, tmp_path / "control-plane")
    runtime: ContainerdNode | None = None
    proxies: list[ServiceProxy] = []
    cluster: Cluster | None = None
    try:
        node_netns = lab.netns("node")
        for address in (NODE_IP, KUBERNETES_SERVICE_IP):
            lab.ip(node_netns, "addr", "add", f"{address}/32", "dev", "lo")
        api_port = int(api.url.rsplit(":", 1)[1])
        proxies = [ServiceProxy(node_netns, api_port),
                   ServiceProxy(node_netns, 443, host=KUBERNETES_SERVICE_IP, target_port=api_port)]
        bin_dir, conf_dir = tmp_path / "cni-bin", tmp_path / "cni-net.d"
        bin_dir.mkdir()
        conf_dir.mkdir()
        for plugin in ("ptp", "host-local", "loopback"):
            os.symlink(f"{DEBIAN_CNI}/{plugin}", bin_dir / plugin)
        (conf_dir / "10-primary.conflist").write_text(json.dumps({  # the primary CNI, there before us
            "cniVersion": "1.0.0", "name": f"primary-{lab.token}", "plugins": [
                {"type": "ptp", "ipMasq": False, "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_SUBNET}]],
                                                          "routes": [{"dst": "0.0.0.0/0"}],
                                                          "dataDir": str(tmp_path / "ipam")}}]}))
        (tmp_path / "containerd").mkdir()
        runtime = ContainerdNode(tmp_path / "containerd", node_netns, str(bin_dir), str(conf_dir), isolated=True)
        runtime.start()
        runtime.import_image(IMAGE / "install-cni.oci.tar")
        node_name = f"node-{lab.token}"
        cluster = Cluster(api, runtime, node_name, tmp_path)
        directory = api.directory
        issue(str(directory), "kubelet", f"/CN=system:node:{node_name}/O=system:nodes", "extendedKeyUsage=clientAuth")
        kubelet_kubeconfig = write_kubeconfig(tmp_path / "kubelet.kubeconfig", api.url, api.ca, {
            "client-certificate": str(directory / "kubelet.crt"), "client-key": str(directory / "kubelet.key")})
        admin = str(api.admin_kubeconfig)
        cluster.processes["kube-controller-manager"] = _launch(tmp_path, "kube-controller-manager", [
            str(KUBE_NODE_BIN / "kube-controller-manager"), "--kubeconfig", admin, "--leader-elect=false",
            "--secure-port=0", "--root-ca-file", str(api.ca),
            # node-lifecycle-controller lifts the not-ready taint kubelet registers the node with
            "--controllers=daemonset-controller,serviceaccount-controller,root-ca-certificate-publisher-controller,"
            "node-lifecycle-controller"])
        cluster.processes["kube-scheduler"] = _launch(tmp_path, "kube-scheduler", [
            str(KUBE_NODE_BIN / "kube-scheduler"), "--kubeconfig", admin, "--leader-elect=false", "--secure-port=0"])
        # Every pod's cgroups under one of the node's own in each hierarchy, removed afterwards.
        cgroup_root = f"/meshcni-node-{lab.token}"
        for hierarchy in CGROUP_HIERARCHIES:
            os.mkdir(f"{hierarchy}{cgroup_root}")
        for name, value in KUBELET_SYSCTLS.items():
            (tmp_path / f"sysctl-{name.replace('/', '-')}").write_text(f"{value}\n")
        tunables = " && ".join(f"mount --bind {tmp_path}/sysctl-{name.replace('/', '-')} /proc/sys/{name}"
                               for name in KUBELET_SYSCTLS)
        cluster.processes["kubelet"] = _launch(tmp_path, "kubelet", [
            "nsenter", "-t", str(runtime.node_pid), "--mount", "--pid", "--net", "sh", "-c", f'{tunables} && exec "$@"',
            "kubelet", str(KUBE_NODE_BIN / "kubelet"), "--config", str(_kubelet_config(runtime, tmp_path, api.ca, cgroup_root)),
            "--kubeconfig", str(kubelet_kubeconfig), "--root-dir", str(tmp_path / "kubelet"),
            "--cert-dir", str(tmp_path / "kubelet-pki"), "--hostname-override", node_name, "--node-ip", NODE_IP, "--v=2"])
        yield cluster
    finally:
        if cluster is not None:
            for name in ("kubelet", "kube-scheduler", "kube-controller-manager"):
                process = cluster.processes.get(name)
                if process is not None and process.poll() is None:
                    process.send_signal(signal.SIGTERM)
                    try:
                        process.wait(timeout=20)
                    except subprocess.TimeoutExpired:
                        process.kill()
                        process.wait()
        if runtime is not None:
            if runtime.runtime is not None:  # kubelet's pods: stopped through the CRI (their CNI DEL) and removed
                runtime.sandboxes += [s.id for s in runtime.runtime.ListPodSandbox(api_pb2.ListPodSandboxRequest()).items]
            runtime.close()
            for hierarchy in CGROUP_HIERARCHIES:  # the pods' cgroups, then the node's (each empty now)
                for cgroup in sorted(Path(f"{hierarchy}/meshcni-node-{lab.token}").glob("**/"), reverse=True):
                    try:
                        cgroup.rmdir()
                    except OSError:
                        pass
        for proxy in proxies:
            proxy.close()
        api.stop()
        lab.close()


def application_pod(name: str, namespace: str, *, mesh: bool) -> dict[str, Any]:
    """A pod as the sidecar injector leaves it (with Istio's validation init container) when ``mesh``;
    the containers run the pause image, which is only on the node (never pulled)."""
    container: dict[str, Any] = {"image": PAUSE_IMAGE, "imagePullPolicy": "Never"}
    spec: dict[str, Any] = {"automountServiceAccountToken": False, "terminationGracePeriodSeconds": 0,
                            "containers": [{**container, "name": name}]}
    metadata: dict[str, Any] = {"name": name}
    if mesh:
        spec["containers"].append({**container, "name": "istio-proxy"})
        spec["initContainers"] = [{**container, "name": "istio-validation",
                                   "command": ["/bin/busybox", "sh", "-c", VALIDATION]}]
        metadata["annotations"] = {"sidecar.istio.io/status": MESH_STATUS}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def running(cluster: Cluster, namespace: str, name: str) -> bool:
    return cluster.pod(namespace, name)["status"].get("phase") == "Running"


def validation_failures(cluster: Cluster, namespace: str, name: str) -> int:
    """How often the pod's istio-validation has exited 126: its restarts plus the first run (0: never)."""
    statuses = cluster.pod(namespace, name)["status"].get("initContainerStatuses", [])
    for status in statuses:
        last = (status.get("lastState") or {}).get("terminated") or (status.get("state") or {}).get("terminated")
        if status["name"] == "istio-validation" and last and last.get("exitCode") == 126:
            return int(status.get("restartCount", 0)) + 1
    return 0


def test_manifest_apply_runs_the_node_under_a_real_kubelet(cluster):
    api, node = cluster.api, cluster.node_name
    started = time.monotonic()

    def node_ready() -> bool:
        status, _, text = api.send("GET", f"/api/v1/nodes/{node}")
        return status == 200 and any(c["type"] == "Ready" and c["status"] == "True"
                                     for c in json.loads(text)["status"].get("conditions", []))

    ready = cluster.wait("node Ready", node_ready, 60)
    say(f"kubelet registered {node}, Ready after {time.monotonic() - started:.1f} s")
    assert ready

    # A mesh pod that starts before the plugin is on the node: nothing redirects it, its validation fails.
    api.ensure_namespace("bookinfo")
    api.request("POST", "/api/v1/namespaces/bookinfo/pods", application_pod("productpage", "bookinfo", mesh=True))
    cluster.wait("productpage's validation failing", lambda: validation_failures(cluster, "bookinfo", "productpage"), 60)
    assert cluster.rules("bookinfo", "productpage") == ""
    broken_uid = cluster.pod("bookinfo", "productpage")["metadata"]["uid"]
    say("bookinfo/productpage scheduled and started before the plugin: not redirected, istio-validation exits 126")

    api.ensure_namespace("istio-system")  # as an operator creates it before installing Istio
    reference = (IMAGE / "reference").read_text().strip()
    kubeconfig = str(api.admin_kubeconfig)
    values = [f"values.cni.image={reference}", "values.cni.pullPolicy=IfNotPresent",
              f"values.cni.cniBinDir={cluster.runtime.bin_dir}", f"values.cni.cniConfDir={cluster.runtime.conf_dir}",
              "values.cni.repair.repairPods=true"]
    done = subprocess.run([MESHCNI, "manifest", "apply", "--kubeconfig", kubeconfig,
                           *[word for value in values for word in ("--set", value)]],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    say(f"meshcni manifest apply: {' '.join(done.stdout.split())}")

    daemon_set = "/apis/apps/v1/namespaces/istio-system/daemonsets/istio-cni-node"
    took = cluster.wait("the DaemonSet's pod Ready", lambda: api.request("GET", daemon_set).get(
        "status", {}).get("numberReady") == 1, 180)
    assert took
    [pod] = api.request("GET", "/api/v1/namespaces/istio-system/pods?labelSelector=k8s-app%3Distio-cni-node")["items"]
    assert pod["spec"]["nodeName"] == node and pod["metadata"]["ownerReferences"][0]["kind"] == "DaemonSet"
    conflist = json.loads((Path(cluster.runtime.conf_dir) / "10-primary.conflist").read_text())
    assert conflist["plugins"][-1]["type"] == "istio-cni"
    say(f"DaemonSet → {pod['metadata']['name']} bound to {node} by the scheduler, started by kubelet, ready "
        f"{time.monotonic() - started:.1f} s in: istio-cni chained into the primary conflist")

    api.ensure_namespace("jobs")
    api.request("POST", "/api/v1/namespaces/bookinfo/pods", application_pod("reviews", "bookinfo", mesh=True))
    api.request("POST", "/api/v1/namespaces/jobs/pods", application_pod("batch", "jobs", mesh=False))
    cluster.wait("reviews and batch Running",
                 lambda: running(cluster, "bookinfo", "reviews") and running(cluster, "jobs", "batch"), 90)
    assert "-A ISTIO_OUTPUT -j ISTIO_REDIRECT" in cluster.rules("bookinfo", "reviews")
    assert validation_failures(cluster, "bookinfo", "reviews") == 0  # redirected from its first start
    assert cluster.rules("jobs", "batch") == ""
    say("bookinfo/reviews redirected at ADD (its validation passed first time); jobs/batch passed through")

    cluster.wait("productpage repaired and Running", lambda: running(cluster, "bookinfo", "productpage"), 180)
    assert "-A ISTIO_OUTPUT -j ISTIO_REDIRECT" in cluster.rules("bookinfo", "productpage")
    failures = validation_failures(cluster, "bookinfo", "productpage")
    assert failures >= 2  # the repair predicate: failed, restarted, failed again
    assert cluster.pod("bookinfo", "productpage")["metadata"]["uid"] == broken_uid  # the same pod, not a new one
    port = pod["spec"]["containers"][0]["ports"][0]["containerPort"]
    status, metrics = http_get(cluster.runtime.node_netns, NODE_IP, port, "/metrics", 5)
    assert status == 200, metrics
    assert 'meshcni_repair_actions_total{policy="reprogram",result="reprogrammed"} 1.0' in metrics, \
        [line for line in metrics.splitlines() if "repair" in line]
    say(f"bookinfo/productpage reprogrammed in place by the node agent's repair after {failures} failed "
        f"validations; Running {time.monotonic() - started:.1f} s in, the same pod (not deleted)")
