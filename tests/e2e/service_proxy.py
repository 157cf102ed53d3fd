"""kube-proxy's part for a throwaway node: the real API server, on this machine's loopback, reached at
an address and port inside the node's network namespace."""

from __future__ import annotations

import socket
import threading

from meshcni_core import netns


class ServiceProxy:
    """Listens on ``host``:``port`` in ``node_netns`` (the same port as the API server's on this
    machine's loopback unless ``target_port`` says otherwise) and relays each connection there:
    127.0.0.1 for what talks to the API server from the node (kubelet, a hostNetwork pod given
    127.0.0.1), the `kubernetes` Service's address for pods given that by kubelet."""

    def __init__(self, node_netns: str, port: int, *, host: str = "127.0.0.1", target_port: int = 0):
        with netns.entered(node_netns):  # a socket stays in the namespace it was made in
            self.listener = socket.create_server((host, port))
        self.target_port = target_port or port
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                inside, _ = self.listener.accept()
                outside = socket.create_connection(("127.0.0.1", self.target_port), timeout=10)
                outside.settimeout(None)  # the timeout was for connecting: a watch stays quiet for minutes
            except OSError:
                return
            for a, b in ((inside, outside), (outside, inside)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.closed = True
        self.listener.close()
