"""The rendered DaemonSet runs a node: `make image`'s image, started through containerd's CRI from the
pod template `meshcni manifest generate` prints, as kubelet would (tests/e2e/kubelet_cri.py).

The node is a node of its own (ContainerdNode(isolated=True)): its network namespace, and a PID
and mount namespace whose /run is the test's, so hostNetwork, hostPID and every hostPath of the
template (the CNI dirs are the test's, through values.cni.cniBinDir/cniConfDir) reach only what
the test created. Application pods then start through the same CRI; their ADD runs the istio-cni
that install-cni copied out of the image, served by the agent inside the install-cni container.

With OpenShift's values istio-cni is not chained: install-cni writes its own network into Multus's
conf dir, and Multus (not on this machine) runs it for the pods that name it; the test does that
part as Multus does (class Multus). SELinux options reach containerd as kubelet sends them; this
machine has no SELinux, so nothing is labelled (tests/e2e/kubelet_cri.py: selinux_options).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from containerd_node import ContainerdNode
from cri_api.v1 import api_pb2
from kubelet_cri import Node, container_config, http_get, probe, sandbox_config, selinux_enabled
from service_proxy import ServiceProxy

from meshcni_testing.controlplane import ControlPlane
from meshcni_testing.netlab import MESH_STATUS
from meshcni_testing.processes import MESHCNI

pytestmark = [pytest.mark.netns, pytest.mark.e2e]
IMAGE = Path(__file__).resolve().parents[2] / "build" / "image"
CNITOOL = str(Path(__file__).resolve().parents[2] / "build" / "tools" / "cnitool")
NODE_IP = "192.0.2.10"  # the node's address, and so the hostNetwork pod's IP that kubelet probes
NODE_NAME = "node-1"


def rendered(*sets: str) -> dict[str, dict[str, Any]]:
    flags = [word for value in sets for word in ("--set", value)]
    done = subprocess.run([MESHCNI, "manifest", "generate", *flags], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return {f"{doc['kind']}/{doc['metadata']['name']}": doc for doc in yaml.safe_load_all(done.stdout)}


def put(api: ControlPlane, document: dict[str, Any], request: pytest.FixtureRequest) -> None:
    """Creates or replaces the object; after the test, one it created is deleted and one that was
    there before is put back (the API server is shared by the session's tests)."""
    group_version = document["apiVersion"]
    base = f"/api/{group_version}" if "/" not in group_version else f"/apis/{group_version}"
    namespace = document["metadata"].get("namespace")
    if namespace:
        api.ensure_namespace(namespace)
        base += f"/namespaces/{namespace}"
    path = f"{base}/{document['kind'].lower()}s/{document['metadata']['name']}"
    status, _, _ = api.send("GET", path)
    before = api.create(f"{base}/{document['kind'].lower()}s", document)
    if status == 404:
        request.addfinalizer(lambda: api.request("DELETE", path))
        return

    def replace(content: dict[str, Any]) -> None:
        current = api.request("GET", path)["metadata"]["resourceVersion"]
        api.request("PUT", path, {**content, "metadata": {**content["metadata"], "resourceVersion": current}})

    if {k: v for k, v in before.items() if k not in ("metadata", "kind", "apiVersion")} != \
            {k: v for k, v in document.items() if k not in ("metadata", "kind", "apiVersion")}:
        replace(document)
        kept = {key: value for key, value in before.items() if key != "metadata"}
        kept["metadata"] = {"name": before["metadata"]["name"], "labels": before["metadata"].get("labels", {}),
                            **({"namespace": namespace} if namespace else {})}
        request.addfinalizer(lambda: replace(kept))


def rules_in(runtime: ContainerdNode, sandbox: str) -> str:
    path = runtime.host_path(runtime.netns_of(sandbox))
    done = subprocess.run(["nsenter", f"--net={path}", "iptables-save"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    return "\n".join(line for line in out.splitlines() if line.startswith("-A"))


class Multus:
    """What OpenShift's Multus does for a pod after its default network (here containerd's primary
    conflist): for each network its ``k8s.v1.cni.cncf.io/networks`` annotation names, the conf of that
    name from Multus's conf dir is ADDed with the next interface (net1...), on the node (its mount and
    network and PID namespaces, where the pod's netns, the agent's socket and /proc are). libcni's cnitool plays
    Multus's libcni; the pod's DEL comes before its sandbox goes, as Multus's does."""

    ANNOTATION = "k8s.v1.cni.cncf.io/networks"

    def __init__(self, runtime: ContainerdNode, conf_dir: str, bin_dir: str):
        self.runtime, self.conf_dir, self.bin_dir = runtime, conf_dir, bin_dir
        self.attached: list[tuple[str, str, str]] = []  # (network, interface, netns) to DEL at the end

    def attach(self, sandbox: str, name: str, namespace: str, uid: str, annotations: dict[str, str]) -> int:
        """ADDs the networks the pod names; returns how many."""
        networks = [n.strip() for n in annotations.get(self.ANNOTATION, "").split(",") if n.strip()]
        pod_netns = self.runtime.netns_of(sandbox)
        for index, network in enumerate(networks, start=1):
            args = f"IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={name};" \
                   f"K8S_POD_INFRA_CONTAINER_ID={sandbox};K8S_POD_UID={uid}"
            done = self._cnitool("add", network, f"net{index}", pod_netns, args)
            assert done.returncode == 0, done.stdout + done.stderr
            self.attached.append((network, f"net{index}", pod_netns))
        return len(networks)

    def detach_all(self) -> None:
        for network, interface, pod_netns in self.attached:
            self._cnitool("del", network, interface, pod_netns, "IgnoreUnknown=1")

    def _cnitool(self, command: str, network: str, interface: str, pod_netns: str,
                 args: str) -> subprocess.CompletedProcess[str]:
        env = {"PATH": os.environ["PATH"], "NETCONFPATH": self.conf_dir, "CNI_PATH": self.bin_dir,
               "CNI_IFNAME": interface, "CNI_ARGS": args}
        return subprocess.run(["nsenter", "-t", str(self.runtime.node_pid), "--mount", "--net", "--pid", CNITOOL, command,
                               network, pod_netns], env=env, capture_output=True, text=True, timeout=60)


class DaemonSetPod:
    """One pod of a DaemonSet on this node, its containers started and probed as kubelet does."""

    def __init__(self, runtime: ContainerdNode, daemon_set: dict[str, Any], config_maps: dict[str, dict[str, str]],
                 node: Node, netns_path: str, work: Path, suffix: str, api: ControlPlane):
        self.runtime, self.node, self.netns_path = runtime, node, netns_path
        self.template = daemon_set["spec"]["template"]
        self.grace = self.template["spec"].get("terminationGracePeriodSeconds", 30)
        self.name = f"{daemon_set['metadata']['name']}-{suffix}"
        namespace = daemon_set["metadata"]["namespace"]
        sa = work / f"sa-{suffix}"  # the projected service-account volume kubelet writes
        sa.mkdir()
        account = self.template["spec"]["serviceAccountName"]
        (sa / "token").write_text(api.mint_token(namespace, account))
        (sa / "ca.crt").write_bytes(api.ca.read_bytes())
        (sa / "namespace").write_text(namespace)
        logs = work / f"logs-{suffix}"
        config = sandbox_config(self.template, self.name, namespace, f"uid-{suffix}", str(logs))
        self.sandbox = runtime.runtime.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=config), timeout=120).pod_sandbox_id
        runtime.sandboxes.append(self.sandbox)
        runtime.created.add(self.sandbox)
        [self.container_spec] = self.template["spec"]["containers"]
        request = api_pb2.CreateContainerRequest(
            pod_sandbox_id=self.sandbox, sandbox_config=config,
            config=container_config(self.template, self.container_spec, node, config_maps, sa, "install-cni.log"))
        self.container = runtime.runtime.CreateContainer(request, timeout=120).container_id
        runtime.created.add(self.container)
        runtime.runtime.StartContainer(api_pb2.StartContainerRequest(container_id=self.container), timeout=60)
        self.log = logs / "install-cni.log"

    def probe(self, kind: str) -> bool:
        return probe(self.container_spec[kind], self.container_spec, self.node.ip, self.netns_path)

    def served_adds(self) -> float:
        """ADDs the node agent in this pod answered, from its /metrics."""
        port = self.container_spec["ports"][0]["containerPort"]
        status, body = http_get(self.netns_path, self.node.ip, port, "/metrics", 5)
        assert status == 200, body
        return sum(float(line.split()[-1]) for line in body.splitlines()
                   if line.startswith("meshcni_cni_requests_total{")
                   and 'command="ADD"' in line and 'served_by="agent"' in line)

    def running(self) -> bool:
        status = self.runtime.runtime.ContainerStatus(api_pb2.ContainerStatusRequest(container_id=self.container))
        return bool(status.status.state == api_pb2.CONTAINER_RUNNING)

    def wait_alive(self) -> None:
        """The liveness probe passes before kubelet's restart threshold runs out."""
        liveness = self.container_spec["livenessProbe"]
        budget = liveness.get("initialDelaySeconds", 0) + \
            liveness.get("periodSeconds", 10) * liveness.get("failureThreshold", 3)
        start = time.monotonic()
        while not self.probe("livenessProbe"):
            assert self.running(), f"install-cni exited:\n{self.log.read_text()[-3000:]}"
            assert time.monotonic() - start < budget, f"kubelet would restart it:\n{self.log.read_text()[-3000:]}"
            time.sleep(0.2)

    def wait_ready(self, timeout: float = 60) -> float:
        """Seconds until the readiness probe first passes, polled at the template's period."""
        start = time.monotonic()
        while not self.probe("readinessProbe"):
            assert self.running(), f"install-cni exited:\n{self.log.read_text()[-3000:]}"
            assert time.monotonic() - start < timeout, f"not ready:\n{self.log.read_text()[-3000:]}"
            time.sleep(0.2)
        return time.monotonic() - start

    def delete(self) -> None:
        """What a rollout does to the old pod: SIGTERM, the grace period, then the sandbox goes."""
        self.runtime.runtime.StopContainer(api_pb2.StopContainerRequest(container_id=self.container, timeout=self.grace),
                                           timeout=self.grace + 30)
        self.runtime.runtime.RemoveContainer(api_pb2.RemoveContainerRequest(container_id=self.container), timeout=60)
        self.runtime.stop_and_remove(self.sandbox)


@pytest.fixture
def cluster_node(node, tmp_path):
    image = IMAGE / "install-cni.oci.tar"
    assert image.exists(), "run make image (make test does)"
    node.lab.ip(node.netns, "addr", "add", f"{NODE_IP}/32", "dev", "lo")  # the node's own address
    os.unlink(Path(node.bin_dir) / "istio-cni")  # only the copy install-cni takes out of the image
    work = tmp_path / "containerd"
    work.mkdir()
    runtime = ContainerdNode(work, node.netns, node.bin_dir, node.conf_dir, isolated=True)
    try:
        runtime.start()
        runtime.import_image(image)
        yield runtime
    finally:
        runtime.close()


# The defaults, GKE's settings from the seed page (its namespace, the platform extension that only the
# image's CLI carries and whose node check runs in the container), and OpenShift's (kube-system, not
# chained: a Multus network of its own, SELinux type spc_t), each with the test's CNI dirs.
VALUES = {"defaults": [], "gke": ["components.cni.namespace=kube-system", "values.cni.platform=gke"],
          "openshift": ["values.cni.platform=openshift"]}
IDENTITY = ("ServiceAccount/istio-cni", "ClusterRole/istio-cni", "ClusterRoleBinding/istio-cni",
            "ClusterRole/istio-cni-scc-privileged", "ClusterRoleBinding/istio-cni-scc-privileged")  # the last: OpenShift's


def say(text: str) -> None:
    """What `make demo-cluster` shows (pytest -s) of the node's life."""
    print(f"demo-cluster: {text}", flush=True)


@pytest.mark.parametrize("case", VALUES)
def test_the_rendered_daemon_set_runs_the_node(case, node, cluster_node, tmp_path, control_plane, request):
    runtime = cluster_node
    api = control_plane
    reference = (IMAGE / "reference").read_text().strip()
    multus_conf_dir = tmp_path / "multus-net.d"  # OpenShift's /etc/cni/multus/net.d, beside the runtime's conf dir
    multus_conf_dir.mkdir()
    conf_dir = str(multus_conf_dir) if case == "openshift" else node.conf_dir
    objects = rendered(*VALUES[case], f"values.cni.image={reference}", f"values.cni.cniBinDir={node.bin_dir}",
                       f"values.cni.cniConfDir={conf_dir}")
    say(f"meshcni manifest generate ({case}): {', '.join(objects)}")
    daemon_set = objects["DaemonSet/istio-cni-node"]
    install_cni = daemon_set["spec"]["template"]["spec"]["containers"][0]
    chained = {e["name"]: e.get("value") for e in install_cni["env"]}["CHAINED_CNI_PLUGIN"] == "true"
    assert chained == (case != "openshift")
    assert install_cni["image"] == reference
    assert objects["Deployment/istio-cni-repair"]["spec"]["template"]["spec"]["containers"][0]["image"] == reference
    found = runtime.images.ImageStatus(api_pb2.ImageStatusRequest(image=api_pb2.ImageSpec(image=reference))).image
    assert list(found.repo_digests) == [f"ghcr.io/meshcni/install-cni@{(IMAGE / 'digest').read_text().strip()}"]
    config_maps = {doc["metadata"]["name"]: doc["data"] for key, doc in objects.items() if key.startswith("ConfigMap/")}
    api_port = int(api.url.rsplit(":", 1)[1])
    kubelet = Node(name=NODE_NAME, ip=NODE_IP, api_host="127.0.0.1", api_port=api_port)
    service = ServiceProxy(node.netns, api_port)
    request.addfinalizer(service.close)
    say(f"image {reference} imported into the node's containerd (as a pull leaves it)")
    for kind in IDENTITY:
        if kind in objects:
            put(api, objects[kind], request)  # the node agent's identity, as `meshcni manifest apply` leaves it
    if "seLinuxOptions" in install_cni["securityContext"]:
        assert not selinux_enabled()  # else this run would prove the label too: say so below instead
        say(f"seLinuxOptions {install_cni['securityContext']['seLinuxOptions']} handed to containerd as kubelet does; "
            "this host has no SELinux, so it labels nothing")
    multus = Multus(runtime, str(multus_conf_dir), node.bin_dir)
    request.addfinalizer(multus.detach_all)
    mesh_annotations = {"sidecar.istio.io/status": MESH_STATUS}
    if not chained:  # the injector's annotation that makes Multus run istio-cni (meshcni prints it for istioctl)
        mesh_annotations[Multus.ANNOTATION] = "istio-cni"
    pods = {name: f"{name}-{node.lab.token}" for name in ("productpage", "batch", "reviews", "ratings")}
    uids: dict[str, str] = {}
    annotations_of: dict[str, dict[str, str]] = {}
    for name, unique in pods.items():  # what the scheduler bound to this node; kubelet then starts them
        namespace, containers, annotations_of[name] = ("jobs", ("batch",), {}) if name == "batch" else \
            ("bookinfo", (name, "istio-proxy"), mesh_annotations)
        api.ensure_namespace(namespace)
        uids[name] = api.create_pod(namespace, unique, node=NODE_NAME, containers=containers,
                                    annotations=annotations_of[name])["metadata"]["uid"]
        request.addfinalizer(lambda namespace=namespace, unique=unique: api.delete_pod_now(namespace, unique))

    def start(name: str) -> tuple[str, int]:
        """The pod's sandbox, its default network from containerd's conflist (with istio-cni when
        chained), then what Multus adds; the sandbox and how many istio-cni ADDs ran for it."""
        namespace = "jobs" if name == "batch" else "bookinfo"
        sandbox = runtime.run_pod(pods[name], namespace, annotations_of[name], uids[name])
        delegated = multus.attach(sandbox, pods[name], namespace, uids[name], annotations_of[name])
        return sandbox, 1 if chained else delegated

    conflist = Path(node.conf_dir) / "10-e2e.conflist"
    first = DaemonSetPod(runtime, daemon_set, config_maps, kubelet, node.netns, tmp_path, "a", api)
    first.wait_alive()
    if chained:
        # No primary CNI configuration yet: alive (before kubelet would restart it), but not ready, as
        # the plugin cannot be chained.
        for _ in range(5):
            assert not first.probe("readinessProbe")
            time.sleep(0.5)
        say(f"pod {first.name} running from the DaemonSet's template: alive, not ready (no primary CNI config yet)")
        node.primary_conflist()  # the primary CNI writes its conflist: install-cni chains the plugin in
        took = first.wait_ready()
        say(f"primary conflist written: {first.name} ready {took:.1f} s later, istio-cni chained into it")
        assert json.loads(conflist.read_text())["plugins"][-1]["type"] == "istio-cni"  # ready means chained
    else:
        node.primary_conflist()  # the default network, which Multus runs first
        took = first.wait_ready()
        own = json.loads((multus_conf_dir / "istio-cni.conf").read_text())
        assert (own["name"], own["type"], own["attachment"]) == ("istio-cni", "istio-cni", "secondary")
        assert [p["type"] for p in json.loads(conflist.read_text())["plugins"]] == ["ptp"]  # not chained into it
        say(f"pod {first.name} ready {took:.1f} s after start: istio-cni.conf written into Multus's conf dir, "
            "the default network left alone")
    installed = Path(node.bin_dir) / "istio-cni"
    assert installed.is_symlink() and os.readlink(installed).startswith("meshcni-istio-cni-")  # the image's bundle
    time.sleep(0.5)  # containerd reloads its CNI configuration asynchronously on the write

    meshed, adds = start("productpage")
    assert "-A ISTIO_OUTPUT -j ISTIO_REDIRECT" in rules_in(runtime, meshed)
    plain, plain_adds = start("batch")
    assert rules_in(runtime, plain) == ""
    assert first.served_adds() == adds + plain_adds  # every ADD was answered by the agent in the install-cni container
    say(f"bookinfo/{pods['productpage']}: redirected; jobs/{pods['batch']}: passed through (the agent served "
        f"{adds + plain_adds} ADD{'s' if adds + plain_adds > 1 else ''})")

    # A rollout: the old pod is deleted (SIGTERM, grace period), its successor starts later.
    first.delete()
    if chained:
        assert json.loads(conflist.read_text())["plugins"][-1]["type"] == "istio-cni"  # still chained
    else:
        assert (multus_conf_dir / "istio-cni.conf").exists()  # Multus still finds the network
    assert "-A ISTIO_OUTPUT -j ISTIO_REDIRECT" in rules_in(runtime, meshed)  # no pod dropped
    during, _ = start("reviews")
    assert "-A ISTIO_OUTPUT -j ISTIO_REDIRECT" in rules_in(runtime, during)  # the plugin works without its agent
    second = DaemonSetPod(runtime, daemon_set, config_maps, kubelet, node.netns, tmp_path, "b", api)
    second.wait_ready()
    say(f"rollout: {first.name} deleted, bookinfo/{pods['reviews']} redirected meanwhile, {second.name} ready")
    after, after_adds = start("ratings")
    assert "-A ISTIO_OUTPUT -j ISTIO_REDIRECT" in rules_in(runtime, after)
    for sandbox in (meshed, plain, during, after):
        status = runtime.runtime.PodSandboxStatus(api_pb2.PodSandboxStatusRequest(pod_sandbox_id=sandbox)).status
        assert status.state == api_pb2.SANDBOX_READY
    assert second.probe("livenessProbe")
    assert second.served_adds() == after_adds
    say(f"bookinfo/{pods['ratings']}: redirected by {second.name}'s agent; no pod dropped")
