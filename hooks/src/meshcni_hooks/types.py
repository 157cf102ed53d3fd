"""Frozen values that cross hook boundaries.

No Kubernetes client object, netns handle or iptables library object ever crosses a hook: only
these dataclasses, built from ``ipaddress`` networks, ints and strings.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
T = TypeVar("T")


@dataclass(frozen=True)
class ContainerInfo:
    """One container of the pod's spec, as much of it as eligibility and the redirect need."""

    name: str
    init: bool = False  # listed under spec.initContainers
    restart_policy: str = ""  # an init container's own restartPolicy; "Always" makes it a native sidecar
    run_as_user: int | None = None  # the container's securityContext (not the pod's)
    run_as_group: int | None = None
    # The literal value of the container's env ISTIO_META_DNS_CAPTURE (None: not set, or set with
    # valueFrom): today's Istio reads DNS capture from istio-proxy's env.
    env_dns_capture: str | None = None

    @property
    def native_sidecar(self) -> bool:
        """An init container that keeps running beside the app (Kubernetes 1.28+ sidecars)."""
        return self.init and self.restart_policy == "Always"


@dataclass(frozen=True)
class PodInfo:
    """What the plugin knows about the pod being set up.

    ``containers`` / ``init_containers`` are ``None`` when the source could not tell (the
    runtime passed only annotations); eligibility then asks the API server.
    ``container_specs`` holds every init container and container of the spec, in spec order
    (init containers first); it is empty when only names (or only annotations) were known.
    """

    namespace: str
    name: str
    uid: str = ""
    annotations: Mapping[str, str] = field(default_factory=dict)
    containers: tuple[str, ...] | None = None
    init_containers: tuple[str, ...] | None = None
    source: str = "unknown"  # "runtime-config", "api", "test", ...
    container_specs: tuple[ContainerInfo, ...] = ()
    pod_run_as_user: int | None = None  # the pod-level securityContext.runAsUser


@dataclass(frozen=True)
class PluginConfig:
    """The plugin's view of its netconf entry, after defaults."""

    cni_version: str
    network_name: str
    exclude_namespaces: tuple[str, ...] = ()
    kubeconfig: str = ""
    k8s_api_root: str = ""
    node_name: str = ""
    cni_bin_dir: str = "/opt/cni/bin"
    intercept_type: str = "iptables"
    log_level: str = "info"
    extensions: tuple[str, ...] = ()
    # The netconf's ``backend``: a registered backend's name, "auto" (the first usable one on this
    # host), or "" (not named: a backend whose ``netconf_switch`` is true, else iptables-restore).
    backend: str = ""
    iptables_flavour: str = "auto"  # "auto", "nft" or "legacy"
    pod_lookup_timeout: float = 30.0
    attachment: str = "chained"  # "chained" or "secondary" (Multus: no prevResult expected)
    # Extension name -> that extension's own frozen settings value, as its claim's
    # ``parse_settings`` returned it (validated once, when the pipeline is built).
    extension_settings: Mapping[str, object] = field(default_factory=dict)
    dns_capture: bool = False  # the mesh-wide default (meshConfig.defaultConfig.proxyMetadata.ISTIO_META_DNS_CAPTURE)
    # The netconf's top-level true/false keys by name (Istio's switches such as ``native_nftables``),
    # read by the backend selection through ``BackendInfo.netconf_switch``.
    switches: Mapping[str, bool] = field(default_factory=dict)

    def settings(self, extension: str, kind: type[T]) -> T | None:
        """The validated settings of ``extension`` if they are a ``kind``, else ``None``."""
        value = self.extension_settings.get(extension)
        return value if isinstance(value, kind) else None


class VerdictKind(enum.Enum):
    REDIRECT = "redirect"
    SKIP = "skip"


@dataclass(frozen=True)
class Verdict:
    """One rule's vote on whether a pod is redirected. Any SKIP wins."""

    kind: VerdictKind
    rule: str  # short name of the rule that decided, e.g. "excluded-namespace"
    reason: str  # a sentence for logs and `meshcni explain`
    source: str = "builtin"

    @classmethod
    def skip(cls, rule: str, reason: str, source: str = "builtin") -> Verdict:
        return cls(VerdictKind.SKIP, rule, reason, source)

    @classmethod
    def redirect(cls, rule: str, reason: str, source: str = "builtin") -> Verdict:
        return cls(VerdictKind.REDIRECT, rule, reason, source)


@dataclass(frozen=True)
class PortList:
    """An ordered, de-duplicated list of TCP ports, or "all ports" (Istio's ``*``)."""

    all: bool = False
    ports: tuple[int, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.all and not self.ports


@dataclass(frozen=True)
class CidrList:
    """An ordered list of networks, or "every address" (Istio's ``*``)."""

    all: bool = False
    networks: tuple[IPNetwork, ...] = ()

    def of_family(self, family: int) -> tuple[IPNetwork, ...]:
        return tuple(n for n in self.networks if n.version == family)


@dataclass(frozen=True)
class RedirectSpec:
    """Everything that shapes a pod's redirect rules, with where each value came from."""

    mode: str = "REDIRECT"
    proxy_port: int = 15001
    inbound_capture_port: int = 15006
    proxy_uids: tuple[str, ...] = ("1337",)
    proxy_gids: tuple[str, ...] = ("1337",)
    include_outbound: CidrList = CidrList(all=True)
    exclude_outbound: CidrList = CidrList()
    include_inbound_ports: PortList = PortList(all=True)
    exclude_inbound_ports: tuple[int, ...] = (15020, 15021, 15090)
    exclude_outbound_ports: tuple[int, ...] = (15020,)
    include_outbound_ports: tuple[int, ...] = ()  # TCP ports always sent to the proxy, whatever the address
    dns_capture: bool = False  # redirect the app's DNS (UDP and TCP port 53) to the proxy's DNS listener
    dns_port: int = 15053
    dns_servers: tuple[IPNetwork, ...] = ()  # with dns_capture: only DNS to these hosts; empty: all of it
    exclude_interfaces: tuple[str, ...] = ()  # traffic in or out through these is never captured
    origins: Mapping[str, str] = field(default_factory=dict)  # field name -> "annotation <key>" or "default"
    # What enabled extensions parsed for this pod from the annotations and settings they claim:
    # one frozen value per extension, read back with :meth:`params`.
    extension_params: tuple[ExtensionParams, ...] = ()

    def params(self, kind: type[T]) -> T | None:
        """The parameters of type ``kind`` an extension contributed for this pod, or ``None``."""
        for item in self.extension_params:
            if isinstance(item.value, kind):
                return item.value
        return None


@dataclass(frozen=True)
class ExtensionParams:
    """One extension's own redirect parameters for one pod (its frozen ``value``), with where each
    of its fields came from (``origins``: field name -> "annotation <key>", "setting <key>" or
    "default"), which ``meshcni explain`` shows."""

    extension: str
    value: Any
    origins: Mapping[str, str] = field(default_factory=dict)


class ParamsParser(Protocol):
    def __call__(self, annotations: Mapping[str, str], settings: Any) -> ExtensionParams | None: ...


@dataclass(frozen=True)
class DropInOption:
    """How the ``istio-iptables`` drop-in feeds a claim: ``flag`` (e.g. ``-k``) supplies the value of
    the claimed ``annotation``; environment variable ``env`` supplies settings key ``setting``."""

    flag: str = ""
    annotation: str = ""
    env: str = ""
    setting: str = ""
    help: str = ""
    metavar: str = "VALUE"  # how ``--help`` names the flag's value


@dataclass(frozen=True)
class Claim:
    """What an extension owns: the pod annotations it reads and its ``extension_settings`` block.

    ``extension`` is the name the extension is enabled under (its entry point's name); its
    settings live under ``extension_settings.<extension>`` in the netconf. ``parse_settings`` turns
    that raw block (``{}`` when absent) into the extension's own frozen value once per pipeline
    and raises ``SettingError`` for a bad one. ``parse`` turns a pod's annotations plus those
    settings into :class:`ExtensionParams` (or ``None``: nothing for this pod) and raises
    ``AnnotationError`` for a bad value. A pod annotation that only a disabled extension claims
    fails the ADD, naming the extension to enable.
    """

    extension: str
    annotations: tuple[str, ...] = ()
    parse: ParamsParser | None = None
    parse_settings: Callable[[Mapping[str, object]], object] | None = None
    drop_in: tuple[DropInOption, ...] = ()
    description: str = ""


@dataclass(frozen=True)
class NetnsFacts:
    """What was read from the pod's network namespace before building rules."""

    interfaces: tuple[str, ...] = ()
    ipv4_addresses: tuple[str, ...] = ()
    ipv6_addresses: tuple[str, ...] = ()  # global-scope only (link-local is ignored)
    ipv6_stack: bool = True  # False when the kernel has no IPv6 at all (booted with ipv6.disable=1)

    @property
    def ipv6(self) -> bool:
        return bool(self.ipv6_addresses)


@dataclass(frozen=True)
class Rule:
    """One iptables rule in ``iptables-save`` canonical form.

    ``head`` rules are inserted at position 1 of their chain in the order listed (so a later head
    rule ends up above an earlier one), exactly as ``iptables -I CHAIN 1`` would; the others are
    appended in order.
    """

    family: int  # 4 or 6
    table: str  # "nat", "mangle", "filter"
    chain: str
    args: tuple[str, ...]
    head: bool = False
    source: str = "builtin"

    @property
    def text(self) -> str:
        return " ".join(self.args)


@dataclass(frozen=True)
class ChainDecl:
    """A user chain we own; declaring it creates it or flushes it."""

    family: int
    table: str
    name: str


@dataclass(frozen=True)
class ChainFlush:
    """A built-in chain we flush before adding our rules (Istio's IPv6 lock-down flushes INPUT)."""

    family: int
    table: str
    chain: str


@dataclass(frozen=True)
class RouteStep:
    """An ``ip`` command run in the pod netns (an extension's policy routing, the ``::6`` address).

    ``undo`` is the command that reverses it on DEL; ``pre`` runs first and may fail (it makes
    ``args`` idempotent, e.g. deleting an ``ip rule`` before adding it). CHECK runs ``show`` and
    expects ``expect`` in its output.
    """

    family: int
    args: tuple[str, ...]
    undo: tuple[str, ...] = ()
    pre: tuple[str, ...] = ()
    show: tuple[str, ...] = ()
    expect: str = ""
    ignore_errors: bool = False
    source: str = "builtin"


@dataclass(frozen=True)
class RulePlan:
    """The complete, ordered result of rule build: what apply must make true in the netns."""

    chains: tuple[ChainDecl, ...] = ()
    flushes: tuple[ChainFlush, ...] = ()
    rules: tuple[Rule, ...] = ()
    routes: tuple[RouteStep, ...] = ()

    def families(self) -> tuple[int, ...]:
        seen = {c.family for c in self.chains} | {r.family for r in self.rules}
        seen |= {f.family for f in self.flushes}
        return tuple(sorted(seen))

    def chain_rules(self, family: int, table: str, chain: str) -> list[Rule]:
        """Rules of one chain in the final order ``iptables-save`` lists them."""
        mine = [r for r in self.rules if (r.family, r.table, r.chain) == (family, table, chain)]
        heads = [r for r in mine if r.head]
        return list(reversed(heads)) + [r for r in mine if not r.head]

    def tables(self, family: int) -> list[str]:
        order: list[str] = []
        items: list[ChainDecl | ChainFlush | Rule] = [*self.chains, *self.flushes, *self.rules]
        for item in items:
            if item.family == family and item.table not in order:
                order.append(item.table)
        return order


@dataclass(frozen=True)
class Target:
    """Where rules are applied: a network namespace path (``CNI_NETNS``) or ``""`` for the
    current namespace (the ``istio-iptables`` drop-in)."""

    netns: str
    container_id: str = ""
    ifname: str = ""
    iptables_flavour: str = "auto"


class InboundBuilder(Protocol):
    def __call__(self, spec: RedirectSpec, family: int) -> tuple[list[ChainDecl], list[Rule], list[RouteStep]]: ...


@dataclass(frozen=True)
class RedirectMode:
    """A registered interception mode (``sidecar.istio.io/interceptionMode`` value).

    ``build_inbound`` returns the inbound chains, rules and routes for one address family; the
    core adds the shared REDIRECT chains and the outbound rules around them.
    """

    name: str
    build_inbound: InboundBuilder
    description: str = ""
    provider: str = "builtin"


class Backend(Protocol):
    """How rule plans are made true in a netns. Implementations must be all-or-nothing."""

    name: str

    def apply(self, plan: RulePlan, target: Target) -> None: ...

    def teardown(self, target: Target, hints: RulePlan | None) -> None: ...

    def missing(self, plan: RulePlan, target: Target) -> list[str]: ...

    def host_problems(self) -> list[str]:
        """What this host lacks to use this backend, each message naming the missing thing and its
        fix (e.g. "libnftables.so.1 not found: install Debian's libnftables1"); ``[]``: usable.
        Cheap, with no side effect on any netns; may cache on the instance. A selected backend
        with problems fails ADD listing them (nothing applied) and keeps install-cni not ready."""
        ...

    def transaction(self, plan: RulePlan) -> str:
        """The exact text this backend hands the kernel for ``plan`` (``iptables-restore`` input
        per family, an nft script, ...), as ``meshcni explain`` prints it."""
        ...


@dataclass(frozen=True)
class BackendInfo:
    """A registered backend. ``netconf_switch`` names a top-level boolean netconf key (one of
    Istio's, such as ``native_nftables``) that selects this backend when true and the netconf
    names no ``backend``."""

    name: str
    factory: Callable[[], Backend]
    description: str = ""
    provider: str = "builtin"
    netconf_switch: str = ""


@dataclass(frozen=True)
class BrokenPod:
    """A pod the repair controller found started without its redirect rules."""

    namespace: str
    name: str
    uid: str
    resource_version: str
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RepairSettings:
    broken_pod_label_key: str = "cni.istio.io/uninitialized"
    broken_pod_label_value: str = "true"


class RepairActions(Protocol):
    """What a repair policy may do to a pod; the core implements it against the API server."""

    def label(self, pod: BrokenPod, labels: Mapping[str, str]) -> None:
        """Merge-patch these labels onto the pod (nothing else of it is written), only if its UID
        and resourceVersion are still ``pod``'s."""

    def delete(self, pod: BrokenPod) -> None:
        """Delete the pod only if its UID and resourceVersion are still ``pod``'s, so that a
        replacement created under the same name is never hit."""

    def event(self, pod: BrokenPod, reason: str, message: str) -> None:
        """Record a Kubernetes Event on the pod."""

    def reprogram(self, pod: BrokenPod) -> str:
        """Apply the pod's redirect rules again inside its network namespace, as an ADD would, and
        say what was done. Only the node agent can (it runs on the pod's node, among its network
        namespaces); elsewhere this raises ``MeshcniError``."""


class RepairAct(Protocol):
    def __call__(self, pod: BrokenPod, actions: RepairActions, settings: RepairSettings) -> str: ...


@dataclass(frozen=True)
class RepairPolicy:
    """A repair action for pods that started without redirection (``meshcni repair``).

    ``act`` returns a short description of what it did, e.g. ``"labelled"`` or ``"deleted"``.
    """

    name: str
    act: RepairAct
    description: str = ""
    provider: str = "builtin"


@dataclass(frozen=True)
class Platform:
    """A hosted platform's install defaults (``values.cni.platform``, ``meshcni manifest``).

    ``defaults`` is an IstioOperator ``spec`` fragment, applied after meshcni's defaults and before
    the operator's ``-f`` files and ``--set`` flags, so explicit values still win.
    """

    name: str
    defaults: Mapping[str, Any]
    description: str = ""
    provider: str = "builtin"


@dataclass(frozen=True)
class NodeFacts:
    """What ``meshcni install-cni`` found on its node, for a platform's install-time checks.

    Gathered on every reconcile, after the binaries are in place and before our conf entry is
    written; directories are the paths mounted into the installer's container unless named host.
    """

    platform: str
    host_conf_dir: str  # CNI_NET_DIR: where the runtime reads conf files on the host
    conf_dir: str
    bin_dir: str  # the main bin dir (the host's cniBinDir)
    bin_files: frozenset[str]  # file names in ``bin_dir`` (empty when it does not exist)
    chained: bool
    conf_files: tuple[str, ...]  # conf files present, in the order the runtime considers them
    target_file: str  # the file our entry is written into; "" while there is none
    network_name: str  # the "name" of the network our entry belongs to ("" while unknown)
    primary_plugin_types: tuple[str, ...]  # plugin and IPAM types the runtime runs before ours


@dataclass(frozen=True)
class ManifestValues:
    """The resolved install values, as manifest hooks see them (Istio's key names under ``cni``)."""

    namespace: str
    cni: Mapping[str, Any]
    platform: str = ""


@dataclass(frozen=True)
class Outcome:
    """What one CNI command did, for reporting hooks."""

    command: str
    pod: PodInfo | None
    redirected: bool
    verdicts: tuple[Verdict, ...] = ()
    plan: RulePlan | None = None
    error: str = ""
    duration_ms: float = 0.0
    extra: Mapping[str, str] = field(default_factory=dict)
