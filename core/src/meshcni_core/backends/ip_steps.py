"""Running the ``ip`` commands of a plan's route steps (``RouteStep.args``/``pre``/``undo``/``show``)
in the current network namespace.

Two ways, the same effect on the kernel: exec'ing ``ip`` (the default: the per-pod ``istio-cni``
and ``istio-iptables`` start cold, and importing pyroute2 costs them far more than a few execs),
or netlink through pyroute2 in a process that stays warm: the node agent calls
:func:`use_netlink` once at start (docs/performance.md has the numbers). Netlink serves the shapes
the core and the first-party modes produce (a ``fwmark`` policy rule, a ``local default`` route,
flushing a numbered table, an address on a device); any other command, and every ``show`` (CHECK
compares ``ip``'s own text), is exec'd. Either way the caller gets what ``ip`` would have
returned: exit status 0, or 2 with ``RTNETLINK answers: <reason>``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import threading
from collections.abc import Callable, Iterator
from typing import Any

_netlink: Any = None  # pyroute2's IPRoute class once use_netlink() ran; None: exec ``ip``
_sessions = threading.local()  # each agent thread serves one netns at a time

AF_INET, AF_INET6 = 2, 10  # socket's values, without importing socket on the in-process plugin's path
FAMILY_FLAGS = {("-4",): AF_INET, ("-6",): AF_INET6, ("-f", "inet"): AF_INET, ("-f", "inet6"): AF_INET6}
RT_SCOPE_HOST = 254
RTPROT_BOOT = 3  # what ``ip route add`` records as the route's origin


def use_netlink(enabled: bool = True) -> None:
    """Serve the known shapes through pyroute2 from now on in this process (imports it now), or,
    with ``enabled=False``, exec ``ip`` again."""
    global _netlink
    if not enabled:
        _netlink = None
        return
    from pyroute2 import IPRoute

    _netlink = IPRoute


@contextlib.contextmanager
def session() -> Iterator[None]:
    """The steps run inside share one netlink socket, opened at the first step that uses it, in
    the network namespace this thread is in then (enter the pod's netns first)."""
    outer = getattr(_sessions, "sockets", None)
    _sessions.sockets = []
    try:
        yield
    finally:
        for ipr in _sessions.sockets:
            ipr.close()
        _sessions.sockets = outer


def run_ip(args: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
    call = _netlink_call(args) if _netlink is not None else None
    if call is None:
        return subprocess.run(["ip", *args], capture_output=True, text=True)
    from pyroute2.netlink.exceptions import NetlinkError

    shared = getattr(_sessions, "sockets", None)
    try:
        if shared is None:
            with _netlink() as ipr:
                call(ipr)
        else:
            if not shared:
                shared.append(_netlink())
            call(shared[0])
    except NetlinkError as exc:
        return subprocess.CompletedProcess(["ip", *args], 2, "", f"RTNETLINK answers: {os.strerror(exc.code)}")
    return subprocess.CompletedProcess(["ip", *args], 0, "", "")


def _netlink_call(args: tuple[str, ...]) -> Callable[[Any], None] | None:
    """The pyroute2 calls doing what ``ip *args`` does, or None to exec ``ip``."""
    flags = next((flags for flags in FAMILY_FLAGS if args[: len(flags)] == flags), None)
    if flags is None or len(args) < len(flags) + 2:
        return None
    family, rest = FAMILY_FLAGS[flags], args[len(flags):]
    obj, command = rest[0], rest[1]
    options = dict(zip(rest[2::2], rest[3::2], strict=False)) if len(rest) % 2 == 0 else {}
    if obj == "rule" and command in ("add", "del") and options.keys() == {"fwmark", "lookup"}:
        fwmark, rule_table = _number(options["fwmark"]), _number(options["lookup"])
        if fwmark is None or rule_table is None:
            return None
        return lambda ipr: _rule(ipr, command, family, fwmark, rule_table)
    if obj == "route" and command == "flush" and options.keys() == {"table"}:
        flushed = _number(options["table"])
        return None if flushed is None else lambda ipr: ipr.flush_routes(table=flushed, family=family)
    if (obj == "route" and command in ("add", "replace") and len(rest) == 8 and rest[2:4] == ("local", "default")
            and rest[4] == "dev" and rest[6] == "table"):
        route_device, route_table = rest[5], _number(rest[7])
        default = "0.0.0.0/0" if family == AF_INET else "::/0"
        return None if route_table is None else lambda ipr: ipr.route(
            command, type="local", dst=default, oif=_index(route_device), table=route_table, family=family,
            scope=RT_SCOPE_HOST, proto=RTPROT_BOOT)
    if obj == "addr" and command in ("add", "replace", "del") and len(rest) == 5 and rest[3] == "dev":
        address, _, length = rest[2].partition("/")
        prefixlen = _number(length) if length else (32 if family == AF_INET else 128)
        device = rest[4]
        return None if prefixlen is None else lambda ipr: ipr.addr(
            command, index=_index(device), address=address, prefixlen=prefixlen, family=family)
    return None


def _rule(ipr: Any, command: str, family: int, fwmark: int, table: int) -> None:
    """``ip rule add|del fwmark M lookup T``. pyroute2 puts every rule at priority 32000 unless
    told; ``ip`` leaves the choice to the kernel (one below the second rule's, fib_default_rule_pref)
    and deletes the first rule matching whatever its priority, so both are done as ``ip`` does."""
    rules = sorted(ipr.get_rules(family=family), key=lambda r: r.get("priority") or 0)
    if command == "add":
        second = rules[1].get("priority") or 0 if len(rules) > 1 else 0
        ipr.rule("add", family=family, fwmark=fwmark, table=table, priority=max(second - 1, 0))
        return
    for rule in rules:
        if rule.get("fwmark") == fwmark and rule.get("table") == table:
            ipr.rule("del", family=family, fwmark=fwmark, table=table, priority=rule.get("priority") or 0)
            return
    from pyroute2.netlink.exceptions import NetlinkError

    raise NetlinkError(errno.ENOENT)


def _index(device: str) -> int:
    import socket  # only on the agent's netlink path; an ioctl in this thread's netns, no netlink dump

    try:
        return socket.if_nametoindex(device)
    except OSError:
        from pyroute2.netlink.exceptions import NetlinkError

        raise NetlinkError(errno.ENODEV) from None


def _number(text: str) -> int | None:
    try:
        return int(text, 0)
    except ValueError:
        return None
