"""UDP helpers for the DNS capture tests: a responder that answers every datagram with its own
label (run as a given UID, in a given netns), and a one-shot query from inside a netns.

The stand-in proxy's DNS listener must run as the proxy's UID: today's Istio puts the replies it
sends from port 15053 into conntrack zone 2 by their owner, and a reply in another zone would not
be translated back to the server's address the app asked.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from meshcni_core import netns

RESPONDER = """
import os, socket, sys
address, port, uid, label = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4].encode()
os.setgroups([]); os.setgid(uid); os.setuid(uid)
family = socket.AF_INET6 if ":" in address else socket.AF_INET
sock = socket.socket(family, socket.SOCK_DGRAM)
sock.bind((address, port))
print("ready", flush=True)
while True:
    data, peer = sock.recvfrom(512)
    sock.sendto(label + b" " + data, peer)
"""


class Responders:
    """UDP responders started by a test; ``close`` ends exactly those processes."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, ns: str, address: str, port: int, label: str, uid: int = 0) -> None:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", os.path.basename(ns), sys.executable, "-c", RESPONDER, address, str(port),
             str(uid), label],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.procs.append(proc)
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"UDP responder {label} did not start: {proc.stderr.read() if proc.stderr else ''}")

    def close(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()
        self.procs.clear()


def udp_query(ns: str, address: str, port: int, uid: int | None = None, timeout: float = 2.0) -> str:
    """Send one datagram from inside ``ns`` (as ``uid`` when given) on a connected socket, so only
    a reply from ``address:port`` itself is accepted; return the responder's label, or
    ``"no answer"``."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: enter the netns, drop to uid, report through the pipe
        code = 1
        try:
            os.close(read_end)
            with netns.entered(ns):
                if uid is not None:
                    os.setgroups([])
                    os.setgid(uid)
                    os.setuid(uid)
                family = socket.AF_INET6 if ":" in address else socket.AF_INET
                sock = socket.socket(family, socket.SOCK_DGRAM)
                sock.settimeout(timeout)
                sock.connect((address, port))
                sock.send(b"query")
                try:
                    answer = sock.recv(512).split(b" ")[0]
                except OSError:
                    answer = b"no answer"
                os.write(write_end, answer)
                code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        answer = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"UDP query to {address}:{port} could not be sent")
    return answer
