"""Framing between ``istio-cni`` and the agent: a 4-byte big-endian length, then UTF-8 JSON."""

from __future__ import annotations

import json
import socket
import struct
from typing import Any

MAX_FRAME = 16 * 1024 * 1024
HEADER = struct.Struct("!I")


def send_frame(sock: socket.socket, obj: Any) -> None:
    data = json.dumps(obj).encode()
    sock.sendall(HEADER.pack(len(data)) + data)


def recv_frame(sock: socket.socket) -> Any:
    (size,) = HEADER.unpack(_recv_exactly(sock, HEADER.size))
    if size > MAX_FRAME:
        raise ValueError(f"frame of {size} bytes is larger than {MAX_FRAME}")
    return json.loads(_recv_exactly(sock, size))


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    chunks, remaining = [], size
    while remaining:
        chunk = sock.recv(min(remaining, 65536))
        if not chunk:
            raise ConnectionError("connection closed mid-frame")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)
