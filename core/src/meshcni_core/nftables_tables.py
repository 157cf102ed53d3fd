"""Which nftables tables the current network namespace holds, read over netlink.

One ``NFT_MSG_GETTABLE`` dump on a ``NETLINK_NETFILTER`` socket: no ``nft`` binary or libnftables
needed, so the iptables side can see the nftables flavour's tables on any host, and a kernel
without nf_tables answers "not available" instead of a list. The socket belongs to the namespace
it is opened in (enter the pod's first).
"""

from __future__ import annotations

import errno
import socket
import struct

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_GETTABLE = 1
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
NFTA_TABLE_NAME = 1
NFPROTO_UNSPEC = 0
FAMILY_NAMES = {1: "inet", 2: "ip", 3: "arp", 5: "netdev", 7: "bridge", 10: "ip6"}
HEADER = struct.Struct("=IHHII")  # struct nlmsghdr
GENMSG = struct.Struct("=BBH")  # struct nfgenmsg
ATTRIBUTE = struct.Struct("=HH")  # struct nlattr
# Today's Istio names the tables of a pod it programs with native nftables istio-proxy-nat,
# istio-proxy-mangle and istio-proxy-raw; meshcni's nftables flavour keeps those names.
ISTIO_TABLE_PREFIX = "istio-proxy-"


class NftablesUnavailable(Exception):
    """This kernel (or this namespace) answers no nf_tables request."""


def list_tables() -> list[tuple[str, str]]:
    """Every nftables table of the current netns as (family, name), e.g. ("inet", "istio-proxy-nat")."""
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    except OSError as exc:
        raise NftablesUnavailable(f"no netfilter netlink socket: {exc.strerror or exc}") from None
    with sock:
        sock.bind((0, 0))
        kind = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETTABLE
        body = GENMSG.pack(NFPROTO_UNSPEC, 0, 0)
        sock.send(HEADER.pack(HEADER.size + len(body), kind, NLM_F_REQUEST | NLM_F_DUMP, 1, 0) + body)
        tables: list[tuple[str, str]] = []
        while True:
            data = sock.recv(65536)
            offset = 0
            while offset + HEADER.size <= len(data):
                length, msg_type, _, _, _ = HEADER.unpack_from(data, offset)
                if length < HEADER.size:
                    return tables
                if msg_type == NLMSG_DONE:
                    return tables
                if msg_type == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", data, offset + HEADER.size)[0]
                    if code:
                        raise NftablesUnavailable(f"nf_tables answered {errno.errorcode.get(code, code)}")
                    return tables
                table = _table(data[offset + HEADER.size: offset + length])
                if table is not None:
                    tables.append(table)
                offset += (length + 3) & ~3


def _table(payload: bytes) -> tuple[str, str] | None:
    family = GENMSG.unpack_from(payload)[0]
    offset = GENMSG.size
    while offset + ATTRIBUTE.size <= len(payload):
        length, kind = ATTRIBUTE.unpack_from(payload, offset)
        if length < ATTRIBUTE.size:
            return None
        if kind & 0x3FFF == NFTA_TABLE_NAME:
            raw = payload[offset + ATTRIBUTE.size: offset + length]
            return FAMILY_NAMES.get(family, str(family)), raw.split(b"\0", 1)[0].decode("ascii", "replace")
        offset += (length + 3) & ~3
    return None


def istio_tables() -> list[str]:
    """The Istio-named nftables tables of the current netns ("inet istio-proxy-nat", ...); none
    when the kernel has no nf_tables (then nothing can have made them)."""
    try:
        found = list_tables()
    except NftablesUnavailable:
        return []
    return [f"{family} {name}" for family, name in found if name.startswith(ISTIO_TABLE_PREFIX)]


def available() -> bool:
    """Whether nf_tables answers in the current netns (the kernel has it, built in or loadable)."""
    try:
        list_tables()
    except NftablesUnavailable:
        return False
    return True
