"""The values meshcni understands under ``values.cni``: the seed page's table plus meshcni's keys.

One line per key: its field (which types and checks it), its default and what it means. A new key
is one more line in ``CniValues`` (or ``RepairValues``); ``values.validate`` reports every problem
at once, each named by its path.
"""

from __future__ import annotations

import re
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validates_schema

from meshcni_core.install.confdir import CONF_EXTENSIONS
from meshcni_core.schemas.fields import (
    DNS_LABEL,
    AbsolutePath,
    AnyMap,
    Boolean,
    Choice,
    Integer,
    LabelKey,
    LabelValue,
    Matching,
    PlainFileName,
    Text,
    TextList,
    TextMap,
)

SEED_LOG_LEVELS = ("panic", "fatal", "error", "warn", "info", "debug")
PULL_POLICIES = ("Always", "IfNotPresent", "Never")
_EXTENSION_NAME = re.compile(r"^[A-Za-z0-9][-A-Za-z0-9_.]*$")
_ROLE_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?)*$")


def _doc(text: str) -> dict[str, str]:
    return {"doc": text}


class ExtensionSettings(AnyMap):
    """Per-extension settings by extension name; each extension's own schema checks its map."""

    @staticmethod
    def check(value: Any) -> dict[str, Any]:
        if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
            raise ValueError(f"expected a map from extension name to a map of its settings, got {value!r}")
        return {str(k): dict(v) for k, v in value.items()}


class RepairValues(Schema):
    error_messages = {"type": "expected a map"}  # marshmallow's "Invalid input type." reads poorly after a path

    class Meta:
        unknown = RAISE

    enabled = Boolean(load_default=True, metadata=_doc("run the repair controller beside the installer"))
    hub = Text(load_default="", metadata=_doc("repair image registry (empty: the installer's)"))
    tag = Text(load_default="", metadata=_doc("repair image tag (empty: the installer's)"))
    initContainerName = Text(load_default="istio-validation",
                             metadata=_doc("the init container whose failure marks a pod broken"))
    labelPods = Boolean(load_default=True, metadata=_doc("label broken pods"))
    deletePods = Boolean(load_default=True, metadata=_doc("delete broken pods so they are recreated"))
    repairPods = Boolean(load_default=False, metadata=_doc(
        "meshcni (later Istio's repairPods): the node agent applies broken pods' rules again instead; "
        "wins over labelPods and deletePods"))
    createEvents = Boolean(load_default=True,
                           metadata=_doc("Istio 1.4's value; no Istio template used it, nor does meshcni"))
    brokenPodLabelKey = LabelKey(load_default="cni.istio.io/uninitialized", metadata=_doc("label key for broken pods"))
    brokenPodLabelValue = LabelValue(load_default="true", metadata=_doc("label value for broken pods"))
    policy = Matching(_EXTENSION_NAME, "a repair policy name", empty_ok=True, load_default="", metadata=_doc(
        "meshcni: the repair policy by its registered name (meshcni repair --policy), e.g. one an extension in "
        "the repair image registers; wins over labelPods and deletePods; empty: they choose, as in Istio"))

    @validates_schema
    def _one_way_to_choose_the_policy(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data["policy"] == "reprogram" or (data["policy"] and data["repairPods"]):
            raise ValidationError({"policy": [
                f"{data['policy']!r} with repairPods={str(data['repairPods']).lower()}: pods are reprogrammed by "
                "the node agent (repairPods=true, no policy); a policy runs in the repair Deployment"]})


class TaintValues(Schema):
    error_messages = {"type": "expected a map"}

    class Meta:
        unknown = RAISE

    enabled = Boolean(load_default=False, metadata=_doc(
        "nodes are born with the readiness taint (the node's kubelet --register-with-taints); "
        "install-cni lifts it from its own node once ready"))
    key = LabelKey(load_default="cni.istio.io/not-ready",
                   metadata=_doc("the readiness taint's key (effect NoSchedule)"))


class ResourceQuotaValues(Schema):
    error_messages = {"type": "expected a map"}

    class Meta:
        unknown = RAISE

    enabled = Boolean(load_default=False,
                      metadata=_doc("a ResourceQuota admitting system-node-critical pods in the namespace"))
    pods = Integer(minimum=1, load_default=5000, metadata=_doc("how many such pods it admits"))


class CniValues(Schema):
    class Meta:
        unknown = RAISE

    hub = Text(load_default="", metadata=_doc("registry of the install-cni image (empty: spec.hub, then meshcni's)"))
    tag = Text(load_default="", metadata=_doc("tag of the install-cni image (empty: spec.tag, then meshcni's version)"))
    image = Text(load_default="install-cni", metadata=_doc("image name, or a full reference when it contains a /"))
    pullPolicy = Choice(PULL_POLICIES, load_default="Always", metadata=_doc("image pull policy"))
    logLevel = Choice(SEED_LOG_LEVELS, folded=True, load_default="warn", metadata=_doc("the plugin's log level"))
    excludeNamespaces = TextList(load_default=lambda: ["istio-system"],
                                 metadata=_doc("namespaces whose pods are never redirected"))
    cniBinDir = AbsolutePath(load_default="/opt/cni/bin", metadata=_doc("the kubelet's --cni-bin-dir"))
    cniConfDir = AbsolutePath(load_default="/etc/cni/net.d", metadata=_doc("the kubelet's --cni-conf-dir"))
    cniConfFileName = PlainFileName(CONF_EXTENSIONS, empty_ok=True, load_default="", metadata=_doc(
        "conf file (a plain name in cniConfDir) to chain into or write (empty: the first one)"))
    psp_cluster_role = Matching(_ROLE_NAME, "a valid ClusterRole name", max_length=253, empty_ok=True,
                                load_default="", metadata=_doc("ClusterRole bound to the ServiceAccount when set"))
    podAnnotations = TextMap(load_default=dict, metadata=_doc("extra annotations on the DaemonSet's pods"))
    chained = Boolean(load_default=True,
                      metadata=_doc("chain into the existing conf file (false: write a standalone one)"))
    repair = fields.Nested(RepairValues, load_default=lambda: RepairValues().load({}),
                           metadata=_doc("the repair controller"))
    extensions = TextList(Matching(_EXTENSION_NAME, "an extension name"), load_default=list,
                          metadata=_doc("meshcni extensions to enable, by name"))
    backend = Matching(_EXTENSION_NAME, "a backend name", empty_ok=True, load_default="", metadata=_doc(
        "the plugin's backend (netconf backend): auto, iptables-restore, or an installed extension's, "
        "which is then enabled (empty: values.global.nativeNftables decides, else iptables-restore)"))
    platform = Matching(DNS_LABEL, "a platform name", empty_ok=True, load_default="",
                        metadata=_doc("a hosted platform's defaults (gke, openshift), from its extension"))
    platformSettings = AnyMap(load_default=dict, metadata=_doc("settings for the platform's extension"))
    extensionSettings = ExtensionSettings(load_default=dict, metadata=_doc("per-extension settings, by name"))
    taint = fields.Nested(TaintValues, load_default=lambda: TaintValues().load({}),
                          metadata=_doc("the readiness taint"))
    istioOwnedCNIConfig = Boolean(load_default=False, metadata=_doc(
        "chained: write our own conf file (the primary's plugins and ours) instead of editing the primary's"))
    istioOwnedCNIConfigFilename = PlainFileName((".conflist",), empty_ok=True, load_default="",
                                                metadata=_doc("that file's name (empty: 02-istio-cni.conflist)"))
    resources = AnyMap(load_default=lambda: {"requests": {"cpu": "100m", "memory": "100Mi"}},
                       metadata=_doc("install-cni's container resources"))
    resourceQuotas = fields.Nested(ResourceQuotaValues, load_default=lambda: ResourceQuotaValues().load({}),
                                   metadata=_doc("a ResourceQuota for the DaemonSet's priority class"))
    seccompProfile = AnyMap(load_default=dict,
                            metadata=_doc("install-cni's seccompProfile (e.g. type: RuntimeDefault)"))
    seLinuxOptions = AnyMap(load_default=dict,
                            metadata=_doc("install-cni's seLinuxOptions (OpenShift: type: spc_t)"))

    @validates_schema
    def _settings_of_enabled_extensions(self, data: dict[str, Any], **kwargs: Any) -> None:
        strangers = sorted(set(data["extensionSettings"]) - set(data["extensions"]))
        if strangers:
            raise ValidationError({"extensionSettings": {
                name: [f"extension {name!r} is not in values.cni.extensions"] for name in strangers}})


class CniComponent(Schema):
    """``components.cni``: whether to render the CNI, and where."""

    class Meta:
        unknown = RAISE

    enabled = Boolean(load_default=True, metadata=_doc("whether to render the CNI at all"))
    namespace = Matching(DNS_LABEL, "a valid namespace name", max_length=63, load_default="istio-system",
                         metadata=_doc("namespace of its objects"))


CNI_VALUES = CniValues()
CNI_COMPONENT = CniComponent()
