"""``istio-iptables``: a drop-in for Istio 1.6's redirect tool, applied to the current netns.

Same flags and environment defaults as ``istio-iptables.sh`` (-p -z -u -g -m -b -d -o -i -x -k),
and today's istio-iptables' ``-c``/``--istio-exclude-interfaces``, ``--redirect-dns`` and
``--capture-all-dns``, producing the rules the CNI plugin produces, plus:

* ``--dry-run``: print the iptables-restore input and ip commands instead of applying them;
* ``--cleanup``: remove every rule, chain and route of ours from the current netns;
* ``--run-validation --skip-rule-apply``: the ``istio-validation`` check (exit 0 when traffic is
  redirected, 126 after ``--probe-timeout`` when it is not).

Unlike the script, a malformed value is an error (exit 2) rather than silently dropped, and the
rules are applied in one transaction per family rather than command by command.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import pwd
import sys
from collections.abc import Mapping, Sequence

from meshcni_core.builtin.annotations import parse_cidr_list, parse_interfaces, parse_port_list
from meshcni_core.builtin.dns_capture import go_bool
from meshcni_core.pipeline import Pipeline
from meshcni_core.rules.spec_check import MAX_U32, RESERVED_ROUTE_TABLES
from meshcni_hooks.errors import AnnotationError, MeshcniError
from meshcni_hooks.ruleargs import is_owner_id
from meshcni_hooks.types import IPNetwork, PodInfo, RedirectSpec, RulePlan, Target

FIRST_PARTY_REDIRECT_EXTENSIONS = ("tproxy", "kubevirt")
RESOLV_CONF = "/etc/resolv.conf"
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="istio-iptables",
        description="Program Istio's sidecar redirect rules in the current network namespace "
        "(drop-in for Istio 1.6's istio-iptables.sh, with today's -c, --redirect-dns and --capture-all-dns).",
    )
    p.add_argument("-p", dest="proxy_port", help="outbound redirect port (env ENVOY_PORT, default 15001)")
    p.add_argument("-z", dest="inbound_capture_port",
                   help="inbound capture port (env INBOUND_CAPTURE_PORT, default 15006)")
    p.add_argument("-u", dest="uid", help="proxy uids, comma-separated (default: uid of ENVOY_USER/istio-proxy "
                   "or 1337, plus 0)")
    p.add_argument("-g", dest="gid", help="proxy gids, comma-separated (default: the uids)")
    p.add_argument("-m", dest="mode", help="inbound interception mode REDIRECT or TPROXY "
                   "(env ISTIO_INBOUND_INTERCEPTION_MODE, default REDIRECT)")
    p.add_argument("-b", dest="include_ports", help="inbound ports to capture, '*' for all, '' for none "
                   "(env ISTIO_INBOUND_PORTS)")
    p.add_argument("-d", dest="exclude_ports", help="inbound ports to leave alone when -b is '*' "
                   "(env ISTIO_LOCAL_EXCLUDE_PORTS)")
    p.add_argument("-o", dest="exclude_outbound_ports", help="outbound ports to leave alone "
                   "(env ISTIO_LOCAL_OUTBOUND_PORTS_EXCLUDE)")
    p.add_argument("-i", dest="include_cidrs", help="outbound CIDRs to capture, '*' for all, '' for none "
                   "(env ISTIO_SERVICE_CIDR)")
    p.add_argument("-x", dest="exclude_cidrs", help="outbound CIDRs to leave alone (env ISTIO_SERVICE_EXCLUDE_CIDR)")
    p.add_argument("-k", dest="kubevirt", help="virtual machine interfaces whose traffic is captured as outbound")
    p.add_argument("-c", "--istio-exclude-interfaces", dest="exclude_interfaces",
                   help="interfaces whose traffic, in or out, is never captured (env ISTIO_EXCLUDE_INTERFACES)")
    p.add_argument("--redirect-dns", nargs="?", const="true", default=None, metavar="BOOL",
                   help="redirect DNS (UDP and TCP port 53) to the proxy's DNS port 15053, the proxy's own "
                   "excepted (env REDIRECT_DNS, else ISTIO_META_DNS_CAPTURE; default false)")
    p.add_argument("--capture-all-dns", nargs="?", const="true", default=None, metavar="BOOL",
                   help="with --redirect-dns: all port-53 traffic, not only to the nameservers of "
                   "/etc/resolv.conf (env CAPTURE_ALL_DNS; the CNI plugin always captures all)")
    p.add_argument("--dry-run", action="store_true", help="print what would be applied, change nothing")
    p.add_argument("--cleanup", action="store_true", help="remove our rules, chains and routes, then exit")
    p.add_argument("--run-validation", action="store_true", help="check that redirection works (istio-validation)")
    p.add_argument("--skip-rule-apply", action="store_true", help="with --run-validation: only validate")
    p.add_argument("--probe-timeout", type=float, default=5.0, metavar="SECONDS",
                   help="how long --run-validation tries before exiting 126 (default 5)")
    p.add_argument("--iptables-flavour", choices=["auto", "nft", "legacy"], default="auto",
                   help="iptables backend of this host (default: detect)")
    return p


def _value(flag: str | None, env: Mapping[str, str], name: str, default: str = "") -> str:
    return flag if flag is not None else env.get(name, default)


def _port(flag: str, text: str) -> int:
    ports = parse_port_list(flag, text, allow_all=False).ports
    if len(ports) != 1:
        raise AnnotationError(flag, text, "expected one port")
    return ports[0]


def _ids(flag: str, text: str) -> tuple[str, ...]:
    ids = tuple(t.strip(" ") for t in text.split(","))
    for ident in ids:
        if not is_owner_id(ident):
            raise AnnotationError(flag, text, f"{ident!r} is not a user or group id (A-Z a-z 0-9 _ . -)")
    return ids


def _u32(name: str, text: str, what: str, reserved: tuple[int, ...] = (0,)) -> int:
    """A decimal firewall mark or routing table number, 1 to 2^32-1, none of ``reserved``."""
    if not (0 < len(text) <= 10 and text.isascii() and text.isdigit()):
        raise AnnotationError(name, text, f"expected a decimal {what}")
    number = int(text)
    if not 0 < number <= MAX_U32 or number in reserved:
        reserved_text = ", ".join(map(str, reserved))
        raise AnnotationError(name, text, f"{what} {number} is outside 1-{MAX_U32} or reserved ({reserved_text})")
    return number


def default_proxy_uids(env: Mapping[str, str]) -> str:
    """The script's default: the uid of ENVOY_USER (istio-proxy), else 1337, then root (0)."""
    try:
        uid = str(pwd.getpwnam(env.get("ENVOY_USER", "istio-proxy")).pw_uid)
    except KeyError:
        uid = "1337"
    return f"{uid},0"


def spec_from_flags(args: argparse.Namespace, env: Mapping[str, str]) -> RedirectSpec:
    uids = _ids("-u", args.uid if args.uid is not None else default_proxy_uids(env))
    dns = dns_from_flags(args, env)
    mode = _value(args.mode, env, "ISTIO_INBOUND_INTERCEPTION_MODE") or "REDIRECT"
    return RedirectSpec(
        mode=mode,
        proxy_port=_port("-p", _value(args.proxy_port, env, "ENVOY_PORT", "15001")),
        inbound_capture_port=_port("-z", _value(args.inbound_capture_port, env, "INBOUND_CAPTURE_PORT", "15006")),
        proxy_uids=uids,
        proxy_gids=_ids("-g", args.gid) if args.gid is not None else uids,
        include_outbound=parse_cidr_list("-i", _value(args.include_cidrs, env, "ISTIO_SERVICE_CIDR"), allow_all=True),
        exclude_outbound=parse_cidr_list("-x", _value(args.exclude_cidrs, env, "ISTIO_SERVICE_EXCLUDE_CIDR"),
                                         allow_all=False),
        include_inbound_ports=parse_port_list("-b", _value(args.include_ports, env, "ISTIO_INBOUND_PORTS"),
                                              allow_all=True),
        exclude_inbound_ports=parse_port_list("-d", _value(args.exclude_ports, env, "ISTIO_LOCAL_EXCLUDE_PORTS"),
                                              allow_all=False).ports,
        exclude_outbound_ports=parse_port_list(
            "-o", _value(args.exclude_outbound_ports, env, "ISTIO_LOCAL_OUTBOUND_PORTS_EXCLUDE"), allow_all=False
        ).ports,
        kubevirt_interfaces=parse_interfaces("-k", args.kubevirt or ""),
        exclude_interfaces=parse_interfaces("-c", _value(args.exclude_interfaces, env, "ISTIO_EXCLUDE_INTERFACES")),
        dns_capture=dns[0],
        dns_servers=dns[1],
        tproxy_mark=_u32("ISTIO_INBOUND_TPROXY_MARK", env.get("ISTIO_INBOUND_TPROXY_MARK", "1337"), "firewall mark"),
        tproxy_route_table=_u32(
            "ISTIO_INBOUND_TPROXY_ROUTE_TABLE", env.get("ISTIO_INBOUND_TPROXY_ROUTE_TABLE", "133"), "routing table",
            RESERVED_ROUTE_TABLES,
        ),
    )


def _bool(flag: str, text: str) -> bool:
    parsed = go_bool(text)
    if parsed is None:
        raise AnnotationError(flag, text, "expected true or false")
    return parsed


def dns_from_flags(args: argparse.Namespace, env: Mapping[str, str]) -> tuple[bool, tuple[IPNetwork, ...]]:
    """``--redirect-dns`` / ``--capture-all-dns`` as today's istio-iptables reads them: without
    capture-all, only DNS to the nameservers of /etc/resolv.conf is redirected."""
    redirect = args.redirect_dns if args.redirect_dns is not None else env.get(
        "REDIRECT_DNS", env.get("ISTIO_META_DNS_CAPTURE", "false"))
    if not _bool("--redirect-dns", redirect):
        return False, ()
    capture_all = _value(args.capture_all_dns, env, "CAPTURE_ALL_DNS", "false")
    if _bool("--capture-all-dns", capture_all):
        return True, ()
    servers = nameservers(RESOLV_CONF)
    if not servers:
        # today's istio-iptables warns and captures no DNS; a drop-in asked to redirect DNS says so
        raise AnnotationError("--redirect-dns", redirect, f"{RESOLV_CONF} lists no nameserver; add --capture-all-dns")
    return True, servers


def nameservers(path: str) -> tuple[IPNetwork, ...]:
    """The ``nameserver`` addresses of a resolv.conf, as host networks (an IPv6 zone is dropped,
    as Istio's resolver library drops it)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            lines = handle.read().splitlines()
    except OSError as exc:
        raise MeshcniError(f"cannot read {path} for --redirect-dns: {exc.strerror}") from None
    found: list[IPNetwork] = []
    for line in lines:
        words = line.split()
        if len(words) >= 2 and words[0] == "nameserver":
            try:
                address = ipaddress.ip_address(words[1].split("%")[0])
            except ValueError:
                continue  # as the C library: a line it cannot read is skipped
            found.append(ipaddress.ip_network(address))
    return tuple(dict.fromkeys(found))


def _pipeline(flavour: str) -> Pipeline:
    from meshcni_core import extensions

    installed = {e.name for e in extensions.installed_extensions()}
    enabled = [name for name in FIRST_PARTY_REDIRECT_EXTENSIONS if name in installed]
    netconf = {"cniVersion": "1.1.0", "name": "istio-iptables", "extensions": enabled, "iptables_flavour": flavour}
    return Pipeline.from_netconf(netconf, dict(os.environ))


def render_dry_run(plan: RulePlan) -> str:
    from meshcni_core.rules.restore import render_transaction

    out = []
    for family in (4, 6):
        text = render_transaction(plan, family, {})
        if text:
            tool = "iptables-restore" if family == 4 else "ip6tables-restore"
            out.append(f"# {tool} --noflush\n{text}")
    out += [f"# ip {' '.join(step.args)}" for step in plan.routes]
    return "\n".join(out)


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    env = dict(os.environ) if env is None else env
    try:
        if args.run_validation:
            return run_validation(args)
        if args.skip_rule_apply:
            print("istio-iptables: --skip-rule-apply only makes sense with --run-validation", file=sys.stderr)
            return EXIT_USAGE
        pipeline = _pipeline(args.iptables_flavour)
        target = Target(netns="", iptables_flavour=args.iptables_flavour)
        if args.cleanup:
            pipeline.backend().teardown(target, None)
            return 0
        spec = spec_from_flags(args, env)
        if spec.mode not in pipeline.modes:
            raise AnnotationError("-m", spec.mode, f"registered modes: {', '.join(sorted(pipeline.modes))}")
        from meshcni_core import netns

        facts = netns.read_facts("")
        plan = pipeline.plan(PodInfo(namespace="", name="istio-iptables", source="flags"), spec, facts)
        if args.dry_run:
            print(render_dry_run(plan))
            return 0
        pipeline.backend().apply(plan, target)
        print(render_dry_run(plan).replace("# iptables-restore --noflush", "# applied (IPv4)").replace(
            "# ip6tables-restore --noflush", "# applied (IPv6)"))
        return 0
    except AnnotationError as exc:
        print(f"istio-iptables: invalid {exc.annotation} value {exc.value!r}: {exc.reason}", file=sys.stderr)
        return EXIT_USAGE
    except MeshcniError as exc:
        print(f"istio-iptables: {exc.msg}", file=sys.stderr)
        if exc.details:
            print(exc.details, file=sys.stderr)
        return 1


def run_validation(args: argparse.Namespace) -> int:
    from meshcni_core import netns
    from meshcni_core.validation import validate

    if not args.skip_rule_apply:
        print("istio-iptables: --run-validation needs --skip-rule-apply (rules are the CNI plugin's job)",
              file=sys.stderr)
        return EXIT_USAGE
    env = os.environ
    ports = (
        _port("-p", _value(args.proxy_port, env, "ENVOY_PORT", "15001")),
        _port("-z", _value(args.inbound_capture_port, env, "INBOUND_CAPTURE_PORT", "15006")),
    )
    facts = netns.read_facts("")
    ipv6_only = facts.ipv6 and not facts.ipv4_addresses
    result = validate(ports, ipv6=ipv6_only, timeout=args.probe_timeout)
    print(result.message, file=sys.stdout if result.passed else sys.stderr)
    return result.exit_code


def run() -> None:
    sys.exit(main())
