"""The values meshcni understands under ``values.cni``: the seed page's table plus meshcni's keys.

Each option types and checks one value; ``check`` returns the normalised value or raises
``ValueError`` with a message that reads after the option's path.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

SEED_LOG_LEVELS = ("panic", "fatal", "error", "warn", "info", "debug")
PULL_POLICIES = ("Always", "IfNotPresent", "Never")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _text(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str):
        hint = "; quote it so YAML keeps it as text" if isinstance(value, int | float) else ""
        raise ValueError(f"expected a string, got {value!r}{hint}")
    return value


def boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError(f"expected true or false, got {value!r}")


def _choice(*choices: str, folded: bool = False) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        text = _text(value)
        wanted = text.lower() if folded else text
        if wanted not in choices:
            raise ValueError(f"{text!r} is not one of {', '.join(choices)}")
        return wanted
    return check


def _absolute_path(value: Any) -> str:
    text = _text(value)
    if not text.startswith("/") or "\0" in text:
        raise ValueError(f"expected an absolute host path, got {text!r}")
    return text.rstrip("/") or "/"


def _conf_file_name(value: Any) -> str:
    text = _text(value)
    if text and ("/" in text or not text.endswith((".conf", ".conflist"))):
        raise ValueError(f"expected a file name ending in .conf or .conflist, got {text!r}")
    return text


def _conflist_name(value: Any) -> str:
    text = _conf_file_name(value)
    if text and not text.endswith(".conflist"):
        raise ValueError(f"expected a file name ending in .conflist, got {text!r}")
    return text


def _string_list(value: Any) -> list[str]:
    if not isinstance(value, list):
        raise ValueError(f"expected a list of strings, got {value!r}")
    return [_text(item) for item in value]


def _string_map(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"expected a map of strings, got {value!r}")
    out = {}
    for key, item in value.items():
        if isinstance(item, bool) or not isinstance(item, str | int | float):
            raise ValueError(f"key {key!r}: expected a string, got {item!r}")
        out[str(key)] = item if isinstance(item, str) else str(item)
    return out


def _label_key(value: Any) -> str:
    text = _text(value)
    prefix, _, name = text.rpartition("/")
    if (prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix))) or len(name) > 63 \
            or not _LABEL_NAME.match(name):
        raise ValueError(f"{text!r} is not a valid label key")
    return text


def _label_value(value: Any) -> str:
    text = _text(value) if not isinstance(value, bool) else str(value).lower()
    if len(text) > 63 or not _LABEL_VALUE.match(text):
        raise ValueError(f"{text!r} is not a valid label value")
    return text


def _role_name(value: Any) -> str:
    text = _text(value)
    if text and not _DNS_SUBDOMAIN.match(text.lower()):
        raise ValueError(f"{text!r} is not a valid ClusterRole name")
    return text


def namespace_name(value: Any) -> str:
    text = _text(value)
    if len(text) > 63 or not _DNS_LABEL.match(text):
        raise ValueError(f"{text!r} is not a valid namespace name")
    return text


def _extension_names(value: Any) -> list[str]:
    names = _string_list(value)
    for name in names:
        if not re.match(r"^[A-Za-z0-9][-A-Za-z0-9_.]*$", name):
            raise ValueError(f"{name!r} is not an extension name")
    return names


def _extension_settings(value: Any) -> dict[str, dict[str, Any]]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise ValueError(f"expected a map from extension name to a map of its settings, got {value!r}")
    return {str(k): dict(v) for k, v in value.items()}


def _platform_name(value: Any) -> str:
    text = _text(value)
    if text and not _DNS_LABEL.match(text):
        raise ValueError(f"{text!r} is not a platform name")
    return text


def _string_any_map(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"expected a map, got {value!r}")
    return {str(k): v for k, v in value.items()}


def _positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).isdigit() or int(value) < 1:
        raise ValueError(f"expected a positive whole number, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class Option:
    check: Callable[[Any], Any]
    default: Any
    doc: str
    children: dict[str, Option] = field(default_factory=dict)


REPAIR_OPTIONS: dict[str, Option] = {
    "enabled": Option(boolean, True, "run the repair controller beside the installer"),
    "hub": Option(_text, "", "repair image registry (empty: the installer's)"),
    "tag": Option(_text, "", "repair image tag (empty: the installer's)"),
    "initContainerName": Option(_text, "istio-validation", "the init container whose failure marks a pod broken"),
    "labelPods": Option(boolean, True, "label broken pods"),
    "deletePods": Option(boolean, True, "delete broken pods so they are recreated"),
    "repairPods": Option(boolean, False, "meshcni (later Istio's repairPods): the node agent applies broken pods' "
                                         "rules again instead; wins over labelPods and deletePods"),
    "createEvents": Option(boolean, True, "Istio 1.4's value; no Istio template used it, nor does meshcni"),
    "brokenPodLabelKey": Option(_label_key, "cni.istio.io/uninitialized", "label key for broken pods"),
    "brokenPodLabelValue": Option(_label_value, "true", "label value for broken pods"),
}

TAINT_OPTIONS: dict[str, Option] = {
    "enabled": Option(boolean, False, "nodes are born with the readiness taint (the node's kubelet "
                                      "--register-with-taints); install-cni lifts it from its own node once ready"),
    "key": Option(_label_key, "cni.istio.io/not-ready", "the readiness taint's key (effect NoSchedule)"),
}

RESOURCE_QUOTA_OPTIONS: dict[str, Option] = {
    "enabled": Option(boolean, False, "a ResourceQuota admitting system-node-critical pods in the namespace"),
    "pods": Option(_positive_int, 5000, "how many such pods it admits"),
}

CNI_OPTIONS: dict[str, Option] = {
    "hub": Option(_text, "", "registry of the install-cni image (empty: spec.hub, then meshcni's)"),
    "tag": Option(_text, "", "tag of the install-cni image (empty: spec.tag, then meshcni's version)"),
    "image": Option(_text, "install-cni", "image name, or a full reference when it contains a /"),
    "pullPolicy": Option(_choice(*PULL_POLICIES), "Always", "image pull policy"),
    "logLevel": Option(_choice(*SEED_LOG_LEVELS, folded=True), "warn", "the plugin's log level"),
    "excludeNamespaces": Option(_string_list, ["istio-system"], "namespaces whose pods are never redirected"),
    "cniBinDir": Option(_absolute_path, "/opt/cni/bin", "the kubelet's --cni-bin-dir"),
    "cniConfDir": Option(_absolute_path, "/etc/cni/net.d", "the kubelet's --cni-conf-dir"),
    "cniConfFileName": Option(_conf_file_name, "", "conf file to chain into or write (empty: the first one)"),
    "psp_cluster_role": Option(_role_name, "", "ClusterRole bound to the istio-cni ServiceAccount when set"),
    "podAnnotations": Option(_string_map, {}, "extra annotations on the DaemonSet's pods"),
    "chained": Option(boolean, True, "chain into the existing conf file (false: write a standalone one)"),
    "repair": Option(lambda v: v, None, "the repair controller", children=REPAIR_OPTIONS),
    "extensions": Option(_extension_names, [], "meshcni extensions to enable, by name"),
    "platform": Option(_platform_name, "", "a hosted platform's defaults (gke, openshift), from its extension"),
    "platformSettings": Option(_string_any_map, {}, "settings for the platform's extension"),
    "extensionSettings": Option(_extension_settings, {}, "per-extension settings, by extension name"),
    "taint": Option(lambda v: v, None, "the readiness taint", children=TAINT_OPTIONS),
    "istioOwnedCNIConfig": Option(boolean, False, "chained: write our own conf file (the primary's plugins "
                                                  "and ours) instead of editing the primary's"),
    "istioOwnedCNIConfigFilename": Option(_conflist_name, "", "that file's name (empty: 02-istio-cni.conflist)"),
    "resources": Option(_string_any_map, {"requests": {"cpu": "100m", "memory": "100Mi"}},
                        "install-cni's container resources"),
    "resourceQuotas": Option(lambda v: v, None, "a ResourceQuota for the DaemonSet's priority class",
                             children=RESOURCE_QUOTA_OPTIONS),
    "seccompProfile": Option(_string_any_map, {}, "install-cni's seccompProfile (e.g. type: RuntimeDefault)"),
    "seLinuxOptions": Option(_string_any_map, {}, "install-cni's seLinuxOptions (OpenShift: type: spc_t)"),
}


def suggestion(key: str, known: list[str] | tuple[str, ...] | set[str] | dict[str, Any]) -> str:
    names = list(known)
    folded = {n.lower().replace("_", ""): n for n in names}
    match = folded.get(key.lower().replace("_", "").replace("-", ""))
    if match is None:
        close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
        match = close[0] if close else None
    return f" (did you mean {match!r}?)" if match else ""


def defaults(options: dict[str, Option]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, option in options.items():
        if option.children:
            out[name] = defaults(option.children)
        else:
            default = option.default
            out[name] = list(default) if isinstance(default, list) else dict(default) \
                if isinstance(default, dict) else default
    return out
