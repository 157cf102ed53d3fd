"""Framing between ``istio-cni`` and the agent: a 4-byte big-endian length, then UTF-8 JSON.

Import-light on purpose (it runs in the plugin on every pod start): no ``socket``, ``struct`` or
``json`` - ``int.to_bytes`` and fastjson do the work.
"""

from __future__ import annotations

from meshcni_core.cni import fastjson

TYPE_CHECKING = False
if TYPE_CHECKING:
    import _socket
    from typing import Any

MAX_FRAME = 16 * 1024 * 1024
HEADER_SIZE = 4


def encode_frame(obj: Any) -> bytes:
    data = fastjson.dumps(obj).encode()
    return len(data).to_bytes(HEADER_SIZE, "big") + data


def send_frame(sock: _socket.socket, obj: Any) -> None:
    sock.sendall(encode_frame(obj))


def recv_frame(sock: _socket.socket) -> Any:
    size = int.from_bytes(_recv_exactly(sock, HEADER_SIZE), "big")
    if size > MAX_FRAME:
        raise ValueError(f"frame of {size} bytes is larger than {MAX_FRAME}")
    return fastjson.loads(_recv_exactly(sock, size))


def _recv_exactly(sock: _socket.socket, size: int) -> bytes:
    chunks, remaining = [], size
    while remaining:
        chunk = sock.recv(min(remaining, 65536))
        if not chunk:
            raise ConnectionError("connection closed mid-frame")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)
