"""The ``istio-validation`` init container's check: are this pod's redirect rules in place?

Listen on the proxy's outbound and inbound capture ports on loopback, then repeatedly dial the
inbound passthrough address ``127.0.0.6:15002`` (``[::6]:15002`` for IPv6 pods) from
``127.0.0.1``. Nothing listens on 15002: the dial only succeeds if the rule that sends the proxy
user's loopback traffic to inbound capture is present, so this must run as the proxy's uid
(1337), as the injected init container does. A listener that accepts a connection whose original
destination port is 15002 proves redirection.
"""

from __future__ import annotations

import selectors
import socket
import struct
import time
from dataclasses import dataclass

PROBE_PORT = 15002
SO_ORIGINAL_DST = 80
EXIT_PASSED = 0
EXIT_NOT_REDIRECTED = 126


@dataclass(frozen=True)
class ValidationResult:
    passed: bool
    message: str
    attempts: int

    @property
    def exit_code(self) -> int:
        return EXIT_PASSED if self.passed else EXIT_NOT_REDIRECTED


def _original_port(conn: socket.socket) -> int | None:
    try:
        if conn.family == socket.AF_INET:
            raw = conn.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
            return int(struct.unpack_from("!2xH", raw)[0])
        raw = conn.getsockopt(socket.IPPROTO_IPV6, SO_ORIGINAL_DST, 28)
        return int(struct.unpack_from("!2xH", raw)[0])
    except OSError:
        return None


def validate(ports: tuple[int, ...] = (15001, 15006), ipv6: bool = False, timeout: float = 5.0,
             interval: float = 1.0) -> ValidationResult:
    family = socket.AF_INET6 if ipv6 else socket.AF_INET
    loopback, probe_address = ("::1", "::6") if ipv6 else ("127.0.0.1", "127.0.0.6")
    listeners = []
    selector = selectors.DefaultSelector()
    try:
        for port in dict.fromkeys(ports):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((loopback, port))
            except OSError as exc:
                sock.close()
                return ValidationResult(False, f"cannot listen on {loopback}:{port}: {exc.strerror}", 0)
            sock.listen(8)
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
            listeners.append(sock)
        deadline = time.monotonic() + timeout
        attempts, last_error = 0, ""
        while True:
            attempts += 1
            last_error = _dial(family, loopback, probe_address, min(interval, max(0.05, deadline - time.monotonic())))
            for key, _ in selector.select(timeout=0.2):
                listener = key.fileobj
                assert isinstance(listener, socket.socket)
                try:
                    conn, _ = listener.accept()
                except BlockingIOError:
                    continue
                original = _original_port(conn)
                conn.close()
                if original == PROBE_PORT:
                    return ValidationResult(True, "validation passed", attempts)
            if time.monotonic() >= deadline:
                return ValidationResult(
                    False,
                    f"validation timeout after {timeout:g}s ({attempts} attempts): connections to "
                    f"{probe_address}:{PROBE_PORT} were not redirected ({last_error or 'no redirect seen'}); "
                    "the pod's traffic would bypass the sidecar: the CNI plugin did not program this pod",
                    attempts,
                )
            time.sleep(max(0.0, min(interval, deadline - time.monotonic())))
    finally:
        selector.close()
        for sock in listeners:
            sock.close()


def _dial(family: int, source: str, address: str, timeout: float) -> str:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.bind((source, 0))
        sock.connect((address, PROBE_PORT))
        return ""
    except OSError as exc:
        return f"connect to {address}:{PROBE_PORT}: {exc.strerror or exc}"
    finally:
        sock.close()
