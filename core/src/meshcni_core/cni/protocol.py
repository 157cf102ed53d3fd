"""The CNI protocol as a plugin sees it: environment, stdin, CNI_ARGS, versions, results, errors.

Kept import-light - os and sys, and fastjson instead of json; no re, dataclasses, typing or
collections at run time (each costs 2-18 ms of start-up here) - because it runs before anything
else on every pod start.
"""

from __future__ import annotations

import os
import sys

from meshcni_core.cni import fastjson
from meshcni_hooks.errors import MeshcniError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

SUPPORTED_VERSIONS = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
OLD_LAYOUT_VERSIONS = ("0.1.0", "0.2.0")  # results as ip4/ip6 blocks
VERSION_WHEN_MISSING = "0.1.0"  # what libcni assumes for a configuration without cniVersion
COMMANDS = ("ADD", "DEL", "CHECK", "VERSION", "STATUS", "GC")
REQUIRED_ENV = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME"),
}
KNOWN_ARGS = {
    "IgnoreUnknown", "K8S_POD_NAME", "K8S_POD_NAMESPACE", "K8S_POD_INFRA_CONTAINER_ID", "K8S_POD_UID", "IP", "MAC",
}
ID_FIRST = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
ID_REST = ID_FIRST | frozenset("_.-")
IFNAME_FORBIDDEN = frozenset("/: \t\n\r\x0b\x0c")
DNS_LABEL_EDGE = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
DNS_LABEL_INNER = DNS_LABEL_EDGE | frozenset("-")
VERSION_STDIN_WAIT_SECONDS = 0.2
POD_ANNOTATIONS_CAPABILITY = "io.kubernetes.cri.pod-annotations"


class CniError(MeshcniError):
    """A protocol-level failure with a well-known CNI code."""

    stage = "cni"


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


def valid_id(text: str) -> bool:
    """libcni's rule for container IDs and network names: [A-Za-z0-9][A-Za-z0-9_.-]*."""
    return bool(text) and text[0] in ID_FIRST and all(c in ID_REST for c in text[1:])


class CniRequest:
    """One parsed invocation. A plain class: dataclasses would cost ~18 ms of start-up."""

    def __init__(
        self, command: str, container_id: str = "", netns: str = "", ifname: str = "", path: str = "",
        args: dict[str, str] | None = None, netconf: dict[str, Any] | None = None,
    ):
        self.command = command
        self.container_id = container_id
        self.netns = netns
        self.ifname = ifname
        self.path = path
        self.args: dict[str, str] = args if args is not None else {}
        self.netconf: dict[str, Any] = netconf if netconf is not None else {}

    @property
    def cni_version(self) -> str:
        return str(self.netconf.get("cniVersion") or VERSION_WHEN_MISSING)

    @property
    def pod_namespace(self) -> str:
        return self.args.get("K8S_POD_NAMESPACE", "")

    @property
    def pod_name(self) -> str:
        return self.args.get("K8S_POD_NAME", "")

    @property
    def runtime_annotations(self) -> dict[str, str] | None:
        """Pod annotations passed by containerd through runtimeConfig, if any."""
        runtime = self.netconf.get("runtimeConfig")
        if not isinstance(runtime, dict) or POD_ANNOTATIONS_CAPABILITY not in runtime:
            return None
        annotations = runtime[POD_ANNOTATIONS_CAPABILITY]
        if annotations is None:  # containerd sends a Go nil map - null - for a pod without annotations
            return {}
        if not isinstance(annotations, dict):
            raise CniError(f"runtimeConfig.{POD_ANNOTATIONS_CAPABILITY} must be an object", code=7)
        return {str(k): str(v) for k, v in annotations.items()}


def dns_label(text: str) -> bool:
    """RFC 1123 label, as Kubernetes requires of namespace names."""
    return (
        0 < len(text) <= 63 and text[0] in DNS_LABEL_EDGE and text[-1] in DNS_LABEL_EDGE
        and DNS_LABEL_INNER.issuperset(text)
    )


def dns_subdomain(text: str) -> bool:
    """RFC 1123 subdomain, as Kubernetes requires of pod names."""
    return 0 < len(text) <= 253 and all(dns_label(label) for label in text.split("."))


def opaque_id(text: str) -> bool:
    """A pod UID or sandbox id: nothing a Kubernetes runtime sends is longer or holds more."""
    return len(text) <= 128 and (text == "" or valid_id(text))


# What the API server enforces for these values; anything else did not come from a conforming
# runtime. An empty value counts as absent.
ARG_RULES = (
    ("K8S_POD_NAMESPACE", dns_label, "a Kubernetes namespace name (RFC 1123 label)"),
    ("K8S_POD_NAME", dns_subdomain, "a Kubernetes pod name (RFC 1123 subdomain)"),
    ("K8S_POD_UID", opaque_id, "a pod UID (up to 128 of A-Z a-z 0-9 _ . -)"),
    ("K8S_POD_INFRA_CONTAINER_ID", opaque_id, "a container id (up to 128 of A-Z a-z 0-9 _ . -)"),
)


def parse_cni_args(raw: str) -> dict[str, str]:
    """``K=V;K=V`` as kubelet, containerd and CRI-O send it: any order, empty pieces ignored,
    split on the first ``=``; unknown keys are refused unless ``IgnoreUnknown`` is true. The
    Kubernetes values must have the shape the API server gives them."""
    pairs: dict[str, str] = {}
    for piece in raw.split(";"):
        if not piece:
            continue
        if "=" not in piece:
            raise CniError(f"CNI_ARGS: invalid pair {piece!r} (expected KEY=VALUE)", code=4)
        key, value = piece.split("=", 1)
        pairs[key] = value
    ignore = pairs.get("IgnoreUnknown", "false").lower()
    if ignore not in ("1", "true", "0", "false"):
        raise CniError(f"CNI_ARGS: IgnoreUnknown={pairs['IgnoreUnknown']!r} is not a boolean", code=4)
    unknown = sorted(set(pairs) - KNOWN_ARGS)
    if unknown and ignore not in ("1", "true"):
        raise CniError(f"CNI_ARGS: unknown args {unknown} (set IgnoreUnknown=1 to allow them)", code=4)
    for key, valid, what in ARG_RULES:
        value = pairs.get(key, "")
        if value and not valid(value):
            raise CniError(f"CNI_ARGS: {key}={value!r} is not {what}", code=4)
    return pairs


def read_stdin(command: str) -> bytes:
    """All of stdin; for VERSION only what arrives promptly (a hand-run VERSION never blocks)."""
    stream = sys.stdin.buffer
    if command != "VERSION":
        try:
            return stream.read()
        except OSError as exc:
            raise CniError(f"cannot read stdin: {exc}", code=5) from None
    if sys.stdin.isatty():
        return b""
    import select

    chunks = []
    fd = sys.stdin.fileno()
    while select.select([fd], [], [], VERSION_STDIN_WAIT_SECONDS)[0]:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def parse_request(env: Mapping[str, str], stdin: bytes) -> CniRequest:
    command = env.get("CNI_COMMAND", "")
    if not command:
        raise CniError("CNI_COMMAND is not set", f"expected one of {', '.join(COMMANDS)}", code=4)
    if command not in COMMANDS:
        raise CniError(f"unknown CNI_COMMAND: {command}", f"expected one of {', '.join(COMMANDS)}", code=4)
    request = CniRequest(
        command=command,
        container_id=env.get("CNI_CONTAINERID", ""),
        netns=env.get("CNI_NETNS", ""),
        ifname=env.get("CNI_IFNAME", ""),
        path=env.get("CNI_PATH", ""),
    )
    if command == "VERSION":
        return request
    missing = [name for name in REQUIRED_ENV.get(command, ()) if not env.get(name)]
    if missing:
        raise CniError(f"required environment variables missing: {', '.join(missing)}", code=4)
    if request.container_id and not valid_id(request.container_id):
        raise CniError(f"CNI_CONTAINERID {request.container_id!r} has invalid characters", code=4)
    if request.ifname and not _valid_ifname(request.ifname):
        raise CniError(f"CNI_IFNAME {request.ifname!r} is not a valid interface name", code=4)
    request.netconf = _parse_netconf(stdin)
    _check_version(command, request.cni_version)
    request.args = parse_cni_args(env.get("CNI_ARGS", ""))
    return request


def _valid_ifname(name: str) -> bool:
    return 0 < len(name.encode()) <= 15 and name not in (".", "..") and not IFNAME_FORBIDDEN & set(name)


def _parse_netconf(stdin: bytes) -> dict[str, Any]:
    try:
        netconf = fastjson.loads(stdin)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CniError("network configuration on stdin is not valid JSON", str(exc), code=6) from None
    if not isinstance(netconf, dict):
        raise CniError("network configuration on stdin must be a JSON object", code=6)
    name = netconf.get("name")
    if not isinstance(name, str) or not name:
        raise CniError("missing network name", "the network configuration has no 'name'", code=7)
    if not valid_id(name):
        raise CniError(f"network name {name!r} has invalid characters", code=7)
    return netconf


def _check_version(command: str, version: str) -> None:
    if version not in SUPPORTED_VERSIONS:
        raise CniError(
            "incompatible CNI versions",
            f'config is "{version}", plugin supports {list(SUPPORTED_VERSIONS)}',
            code=1,
        )
    minimum = {"CHECK": "0.4.0", "STATUS": "1.1.0", "GC": "1.1.0"}.get(command)
    if minimum and version_tuple(version) < version_tuple(minimum):
        raise CniError(f"config version {version} does not allow {command} (needs {minimum} or newer)", code=1)


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------

INTERFACE_FIELDS_1_1 = ("mtu", "socketPath", "pciID")


def convert_result(result: Mapping[str, Any], to_version: str) -> dict[str, Any]:
    """A previous plugin's result in ``to_version``'s layout, otherwise unchanged (order of
    interfaces, ips with their interface indices, routes and dns are preserved)."""
    if not isinstance(result, dict):
        raise CniError("could not parse prevResult: not a JSON object", code=6)
    out = dict(result)
    try:
        if ("ip4" in out or "ip6" in out) and "ips" not in out:  # the 0.1.0/0.2.0 layout
            out = _upgrade_020(out)
        ips = out.get("ips", [])
        if not isinstance(ips, list) or not all(isinstance(ip, dict) and "address" in ip for ip in ips):
            raise ValueError("'ips' must be a list of objects with an 'address'")
        if version_tuple(to_version) >= (1, 0, 0):
            out["ips"] = [{k: v for k, v in ip.items() if k != "version"} for ip in ips] if "ips" in out else ips
        else:
            out["ips"] = [_with_version(ip) for ip in ips] if "ips" in out else ips
            if isinstance(out.get("interfaces"), list):
                out["interfaces"] = [
                    {k: v for k, v in iface.items() if k not in INTERFACE_FIELDS_1_1}
                    for iface in out["interfaces"]
                ]
        if "ips" not in result and not out["ips"]:
            out.pop("ips")
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise CniError("could not parse prevResult", str(exc), code=6) from None
    if to_version in OLD_LAYOUT_VERSIONS:
        out = _downgrade_to_020(out, to_version)
    out["cniVersion"] = to_version
    return out


def _downgrade_to_020(result: dict[str, Any], version: str) -> dict[str, Any]:
    """The 0.1.0/0.2.0 layout, as libcni converts: the first IPv4 and the first IPv6 address with
    their gateways, routes assigned by destination family, dns; interfaces are dropped."""
    out: dict[str, Any] = {}
    for key, family in (("ip4", "4"), ("ip6", "6")):
        ip = next((i for i in result.get("ips", []) if _family(str(i["address"])) == family), None)
        if ip is None:
            continue
        block: dict[str, Any] = {"ip": ip["address"]}
        if ip.get("gateway"):
            block["gateway"] = ip["gateway"]
        routes = [
            {k: v for k, v in r.items() if k in ("dst", "gw")}
            for r in result.get("routes", []) if _family(str(r.get("dst", ""))) == family
        ]
        if routes:
            block["routes"] = routes
        out[key] = block
    if not out:
        raise CniError(f"cannot convert prevResult to cniVersion {version}", "no valid IP addresses", code=6)
    if result.get("dns"):
        out["dns"] = result["dns"]
    return out


def _family(address: str) -> str:
    return "6" if ":" in address else "4"


def _with_version(ip: dict[str, Any]) -> dict[str, Any]:
    if "version" in ip:
        return ip
    return {"version": _family(str(ip["address"])), **ip}


def _upgrade_020(result: dict[str, Any]) -> dict[str, Any]:
    ips: list[dict[str, Any]] = []
    routes: list[Any] = []
    for key, version in (("ip4", "4"), ("ip6", "6")):
        block = result.get(key)
        if not block:
            continue
        entry = {"version": version, "address": block["ip"]}
        if block.get("gateway"):
            entry["gateway"] = block["gateway"]
        ips.append(entry)
        routes += block.get("routes") or []
    out: dict[str, Any] = {"ips": ips}
    if routes:
        out["routes"] = routes
    if result.get("dns"):
        out["dns"] = result["dns"]
    return out


def empty_result(version: str) -> dict[str, Any]:
    if version in OLD_LAYOUT_VERSIONS:
        raise CniError(
            f"cniVersion {version} cannot express a result without addresses",
            "a secondary attachment (no prevResult) needs cniVersion 0.3.0 or newer",
            code=7,
        )
    return {"cniVersion": version, "dns": {}}


def error_object(exc: MeshcniError, version: str) -> dict[str, Any]:
    obj: dict[str, Any] = {"cniVersion": version or SUPPORTED_VERSIONS[-1], "code": exc.code, "msg": exc.msg}
    if exc.details:
        obj["details"] = exc.details
    return obj


def version_object(requested: str) -> dict[str, Any]:
    version = requested if requested in SUPPORTED_VERSIONS else SUPPORTED_VERSIONS[-1]
    return {"cniVersion": version, "supportedVersions": list(SUPPORTED_VERSIONS)}
