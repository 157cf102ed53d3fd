"""``istio-iptables``: a drop-in for Istio 1.6's redirect tool, applied to the current netns.

Same flags and environment defaults as ``istio-iptables.sh`` (-p -z -u -g -m -b -d -o -i -x, and
the flags and variables installed extensions contribute through their claims' drop-in options,
such as -k), and today's istio-iptables' ``-c``/``--istio-exclude-interfaces``, ``--redirect-dns``
and ``--capture-all-dns``, producing the rules the CNI plugin produces with every installed
extension that provides a mode or such an option enabled, plus:

* ``--dry-run``: print the iptables-restore input and ip commands instead of applying them;
* ``--cleanup``: remove every iptables rule, chain and route of ours from the current netns (a pod the
  nftables flavour programmed keeps its tables, and is told so);
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
from dataclasses import replace

from meshcni_core.builtin.annotations import parse_cidr_list, parse_interfaces, parse_port_list
from meshcni_core.builtin.dns_capture import go_bool
from meshcni_core.pipeline import Pipeline
from meshcni_hooks.errors import AnnotationError, MeshcniError, SettingError
from meshcni_hooks.ruleargs import is_owner_id
from meshcni_hooks.types import Claim, DropInOption, IPNetwork, PodInfo, RedirectSpec, RulePlan, Target

RESOLV_CONF = "/etc/resolv.conf"
EXIT_USAGE = 2


def redirect_extensions() -> tuple[list[str], list[Claim]]:
    """Installed extensions that provide an interception mode or drop-in options, and their claims."""
    from meshcni_core import extensions
    from meshcni_core.hookcalls import HookCalls

    names = extensions.installed_redirect_extensions()
    claims = HookCalls(extensions.new_manager(names)).claims() if names else []
    return names, claims


def _dest(option: DropInOption) -> str:
    return "ext_" + option.flag.lstrip("-").replace("-", "_")


def build_parser(claims: Sequence[Claim] = ()) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="istio-iptables",
        description="Program Istio's sidecar redirect rules in the current network namespace "
        "(drop-in for Istio 1.6's istio-iptables.sh, with today's -c, --redirect-dns and --capture-all-dns).",
    )
    p.add_argument("-p", dest="proxy_port", help="outbound redirect port (env ENVOY_PORT, default 15001)")
    p.add_argument("-z", dest="inbound_capture_port",
                   help="inbound capture port, also TPROXY's target as in today's Istio (env INBOUND_CAPTURE_PORT, "
                   "default 15006)")
    p.add_argument("-u", dest="uid", help="proxy uids, comma-separated (default: uid of ENVOY_USER/istio-proxy "
                   "or 1337, plus 0)")
    p.add_argument("-g", dest="gid", help="proxy gids, comma-separated (default: the uids)")
    p.add_argument("-m", dest="mode", help="inbound interception mode: REDIRECT or one an installed extension "
                   "registers (env ISTIO_INBOUND_INTERCEPTION_MODE, default REDIRECT)")
    p.add_argument("-b", dest="include_ports", help="inbound ports to capture, '*' for all, '' for none "
                   "(env ISTIO_INBOUND_PORTS)")
    p.add_argument("-d", dest="exclude_ports", help="inbound ports to leave alone when -b is '*' "
                   "(env ISTIO_LOCAL_EXCLUDE_PORTS)")
    p.add_argument("-o", dest="exclude_outbound_ports", help="outbound ports to leave alone "
                   "(env ISTIO_LOCAL_OUTBOUND_PORTS_EXCLUDE)")
    p.add_argument("-q", dest="include_outbound_ports", help="outbound TCP ports always sent to the proxy "
                   "(today's istio-iptables; env ISTIO_OUTBOUND_PORTS)")
    p.add_argument("-i", dest="include_cidrs", help="outbound CIDRs to capture, '*' for all, '' for none "
                   "(env ISTIO_SERVICE_CIDR)")
    p.add_argument("-x", dest="exclude_cidrs", help="outbound CIDRs to leave alone (env ISTIO_SERVICE_EXCLUDE_CIDR)")
    p.add_argument("-c", "--istio-exclude-interfaces", dest="exclude_interfaces",
                   help="interfaces whose traffic, in or out, is never captured (env ISTIO_EXCLUDE_INTERFACES)")
    p.add_argument("--redirect-dns", nargs="?", const="true", default=None, metavar="BOOL",
                   help="redirect DNS (UDP and TCP port 53) to the proxy's DNS port 15053, the proxy's own "
                   "excepted (env REDIRECT_DNS, else ISTIO_META_DNS_CAPTURE; default false)")
    p.add_argument("--capture-all-dns", nargs="?", const="true", default=None, metavar="BOOL",
                   help="with --redirect-dns: all port-53 traffic, not only to the nameservers of "
                   "/etc/resolv.conf (env CAPTURE_ALL_DNS; the CNI plugin always captures all)")
    for claim in claims:
        for option in claim.drop_in:
            if option.flag:
                p.add_argument(option.flag, dest=_dest(option), metavar=option.metavar,
                               help=f"{option.help} (extension {claim.extension})")
    p.add_argument("--dry-run", action="store_true", help="print what would be applied, change nothing")
    p.add_argument("--cleanup", action="store_true",
                   help="remove our iptables rules, chains and routes, then exit (nftables tables stay)")
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
        include_outbound_ports=parse_port_list(
            "-q", _value(args.include_outbound_ports, env, "ISTIO_OUTBOUND_PORTS"), allow_all=False
        ).ports,
        exclude_interfaces=parse_interfaces("-c", _value(args.exclude_interfaces, env, "ISTIO_EXCLUDE_INTERFACES")),
        dns_capture=dns[0],
        dns_servers=dns[1],
    )


def with_extension_flags(spec: RedirectSpec, args: argparse.Namespace, pipeline: Pipeline,
                         claims: Sequence[Claim]) -> RedirectSpec:
    """Each extension flag's value as the annotation it stands for, parsed by its extension; an
    error names the flag."""
    flag_of = {o.annotation: o.flag for c in claims for o in c.drop_in if o.flag and o.annotation}
    annotations = {o.annotation: getattr(args, _dest(o)) for c in claims for o in c.drop_in
                   if o.flag and o.annotation and getattr(args, _dest(o)) is not None}
    try:
        params = pipeline.claims.params(annotations, pipeline.config.extension_settings)
    except AnnotationError as exc:
        raise AnnotationError(flag_of.get(exc.annotation, exc.annotation), exc.value, exc.reason) from None
    return replace(spec, extension_params=params)


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


def settings_from_env(claims: Sequence[Claim], env: Mapping[str, str]) -> dict[str, dict[str, str]]:
    settings: dict[str, dict[str, str]] = {}
    for claim in claims:
        for option in claim.drop_in:
            if option.env and option.setting and option.env in env:
                settings.setdefault(claim.extension, {})[option.setting] = env[option.env]
    return settings


def _pipeline(flavour: str, enabled: Sequence[str], claims: Sequence[Claim], env: Mapping[str, str]) -> Pipeline:
    netconf = {"cniVersion": "1.1.0", "name": "istio-iptables", "extensions": list(enabled),
               "iptables_flavour": flavour, "extension_settings": settings_from_env(claims, env)}
    try:
        return Pipeline.from_netconf(netconf, dict(os.environ))
    except SettingError as exc:  # name the variable that supplied the bad setting
        for claim in claims:
            for option in claim.drop_in:
                if option.env and exc.setting == f"extension_settings.{claim.extension}.{option.setting}":
                    raise AnnotationError(option.env, str(exc.value), exc.reason) from None
        raise


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
    enabled, claims = redirect_extensions()
    args = build_parser(claims).parse_args(argv)
    env = dict(os.environ) if env is None else env
    try:
        if args.run_validation:
            return run_validation(args)
        if args.skip_rule_apply:
            print("istio-iptables: --skip-rule-apply only makes sense with --run-validation", file=sys.stderr)
            return EXIT_USAGE
        pipeline = _pipeline(args.iptables_flavour, enabled, claims, env)
        target = Target(netns="", iptables_flavour=args.iptables_flavour)
        if args.cleanup:
            pipeline.backend().teardown(target, pipeline.teardown_hints(target, None))
            note_nftables_left_alone()
            return 0
        spec = with_extension_flags(spec_from_flags(args, env), args, pipeline, claims)
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


def note_nftables_left_alone() -> None:
    """--cleanup removes iptables rules only: a pod the nftables flavour programmed keeps its
    tables (its own backend's DEL removes them). Say so rather than leave it unsaid."""
    from meshcni_core.nftables_tables import istio_tables

    left = istio_tables()
    if left:
        print(f"istio-iptables: --cleanup removes iptables rules only; left the nftables tables {', '.join(left)} "
              "alone (the pod's CNI DEL, or nft delete table, removes them)", file=sys.stderr)


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
