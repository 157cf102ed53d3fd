"""An HTTP server for a port that pods can reach (the monitoring port on the node's IP).

``http.server`` spends a thread per connection and waits for a request as long as each byte
keeps coming. Here a connection gets a thread only while one is free - ``max_connections`` from
other addresses, ``max_per_source`` from any one address, so the node probing itself (kubelet,
from the address the server is bound to) always finds a slot - and must have sent its request
line and headers ``read_deadline`` seconds after it was accepted, or it is shut down. A
connection beyond the limits is closed at once, unread.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class DeadlineHandler(BaseHTTPRequestHandler):
    """Tells the server when the request has been read (the deadline no longer applies)."""

    server: BoundedHTTPServer

    def parse_request(self) -> bool:
        self.server.request_read(self.connection)
        return super().parse_request()


class BoundedHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[DeadlineHandler], max_connections: int = 32,
                 max_per_source: int = 4, read_deadline: float = 5.0):
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, handler)
        self.max_connections = max_connections
        self.max_per_source = max_per_source
        self.read_deadline = read_deadline
        self._lock = threading.Lock()
        self._per_source: Counter[str] = Counter()
        self._reading: dict[Any, float] = {}  # connection -> when its deadline passes
        threading.Thread(target=self._enforce_deadlines, daemon=True, name="meshcni-http-deadlines").start()

    def process_request(self, request: Any, client_address: Any) -> None:
        source = str(client_address[0])
        own = source == self.server_address[0]
        with self._lock:
            others = sum(n for s, n in self._per_source.items() if s != self.server_address[0])
            full = self._per_source[source] >= self.max_per_source or (not own and others >= self.max_connections)
            if not full:
                self._per_source[source] += 1
                self._reading[request] = time.monotonic() + self.read_deadline
        if full:
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._release(request, source)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release(request, str(client_address[0]))

    def request_read(self, request: Any) -> None:
        with self._lock:
            self._reading.pop(request, None)

    def _release(self, request: Any, source: str) -> None:
        with self._lock:
            self._reading.pop(request, None)
            self._per_source[source] -= 1
            if self._per_source[source] <= 0:
                del self._per_source[source]

    def _enforce_deadlines(self) -> None:
        while True:
            time.sleep(0.25)
            now = time.monotonic()
            with self._lock:
                late = [r for r, deadline in self._reading.items() if deadline <= now]
                for request in late:
                    del self._reading[request]
            for request in late:
                try:
                    request.shutdown(socket.SHUT_RDWR)  # the handler's read returns: it ends
                except OSError:
                    pass
