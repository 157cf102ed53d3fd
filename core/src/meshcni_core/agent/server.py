"""``meshcni agent``: serves istio-cni's ADD/DEL/CHECK over a root-only Unix socket.

Everything the plugin needs is imported once; pipelines (plugin manager, loaded extensions,
backend tools) are built from the agent's own configuration (agent/config.py) and kept warm, so
an ADD costs the rule work plus one socket round trip.

One asyncio loop accepts connections, checks the peer (agent/peer.py) and reads each request
under a deadline and a size limit; only complete requests reach the pool of worker threads, so
idle or slow clients hold a file descriptor, never a thread. ``setns`` moves only the worker
thread into the pod's network namespace, which is opened once per request
(``netns.open_request_netns``) and held for it.

When the agent cannot take a connection (a refused peer, or ``max_connections`` already open)
it reads nothing, answers ``{"served": false, "reason": ...}`` and closes it: the plugin knows for
certain that the agent will not act on its request and serves it in-process. (An end without a
reply is different: the agent may have the request, so the plugin fails the command instead.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import stat
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from meshcni_core import netns
from meshcni_core.agent import config as agent_config
from meshcni_core.agent.peer import PeerPolicy, peer_of
from meshcni_core.agent.plugin_log import PluginLog
from meshcni_core.agent.wire import HEADER_SIZE, encode_frame
from meshcni_core.cni import fastjson, outcome, spool
from meshcni_core.cni.commands import CniCommands, config_key
from meshcni_core.cni.plugin import handle, render_error
from meshcni_core.cni.protocol import CniError, CniRequest
from meshcni_core.pipeline import Pipeline
from meshcni_core.pods.cache import PodCache
from meshcni_core.pods.lookup import ApiClients
from meshcni_hooks.netns import held

if TYPE_CHECKING:
    from meshcni_core.install.monitoring import RequestMetrics

log = logging.getLogger("meshcni.agent")

PIPELINES_KEPT = 4  # configurations change only when install-cni rewrites its entry
DIFFERENCES_REPORTED = 32


@dataclass(frozen=True)
class Limits:
    """What one agent gives its clients. A plugin sends its request right after connecting,
    and a request is a netconf with the pod's annotations (Kubernetes caps those at 256 KiB)."""

    max_connections: int = 512  # open at once (being read, waiting or served)
    workers: int = 32  # requests served at once
    read_deadline: float = 10.0  # seconds from accept to the request's last byte
    write_deadline: float = 10.0
    max_request_bytes: int = 1024 * 1024


# SIGTERM: how long requests already connected may still take (inside the 5 s grace period the
# rendered DaemonSet gives install-cni before kubelet's SIGKILL), and how long the listen backlog
# must stay empty before the agent stops.
DRAIN_LIMIT = 4.0
QUIET_BEFORE_STOP = 0.2


class Agent:
    """``config`` returns the plugin configuration pipelines run with (install-cni: the entry it
    writes; ``meshcni agent``: its ``--config`` file). ``readiness`` (problems that make STATUS
    answer "not available") and ``metrics`` come from ``meshcni install-cni``."""

    def __init__(self, socket_path: str, config: Callable[[], Mapping[str, Any]],
                 readiness: Callable[[], list[str]] | None = None, metrics: RequestMetrics | None = None,
                 limits: Limits = Limits(), netns_dirs: tuple[str, ...] = netns.RUNTIME_NETNS_DIRS,
                 peers: PeerPolicy | None = None):
        self.socket_path = socket_path
        self._bound_inode = -1  # the inode of the socket this agent bound at socket_path
        self.config = config
        self.limits = limits
        self.netns_dirs = netns_dirs
        self.peers = peers or PeerPolicy()
        self.api_clients = ApiClients()
        self._pipelines: OrderedDict[str, Pipeline] = OrderedDict()
        self._lock = threading.Lock()
        self._differences_seen: set[tuple[str, ...]] = set()
        self.commands = CniCommands(self.pipeline, readiness=readiness, enter_netns=self.enter_request_netns)
        self.plugin_log = PluginLog(spool.path_for(socket_path), metrics)
        self.pod_cache: PodCache | None = None  # set by install-cni once its kubeconfig exists

    def pipeline(self, netconf: Mapping[str, Any], env: Mapping[str, str]) -> Pipeline:
        """The warm pipeline for a configuration. Built without the request's environment: one
        pipeline serves every request of that configuration (see meshcni_load_config)."""
        own = agent_config.own_part(netconf)
        key = config_key(own)
        with self._lock:
            cached = self._pipelines.get(key)
            if cached is None:
                cached = Pipeline.from_netconf(own, {})  # logging stays the agent's own
                cached.api_clients = self.api_clients
                self._pipelines[key] = cached
                while len(self._pipelines) > PIPELINES_KEPT:
                    self._pipelines.popitem(last=False)
            self._pipelines.move_to_end(key)
            cached.pod_cache = self.pod_cache
        return cached

    # -- one request ------------------------------------------------------------------------

    def serve_request(self, request: Mapping[str, Any]) -> dict[str, Any]:
        env = {k: v for k, v in request["env"].items() if k.startswith("CNI_")}
        outcome.begin()
        code, stdout = self._serve(env, request["stdin"].encode("utf-8", "surrogateescape"))
        if not request["from_this_process"]:  # install-cni's own STATUS probes are no plugin run
            self.plugin_log.served(env, code, stdout, request, lambda: self.config().get("log_level"))
        return {"code": code, "stdout": stdout}

    def _serve(self, env: dict[str, str], stdin: bytes) -> tuple[int, str]:
        version = ""
        try:
            client_netconf = fastjson.loads(stdin)
        except ValueError:
            return handle(env, stdin, self.commands)  # the plugin's own error for unparsable input
        if isinstance(client_netconf, dict):
            version = str(client_netconf.get("cniVersion", ""))
            try:
                netconf, differing = agent_config.for_request(self.config(), client_netconf)
            except Exception as exc:  # noqa: BLE001 - any reason the agent has no configuration
                return 1, render_error(CniError(f"node agent has no plugin configuration: {exc}", code=11), version)
            self._report_difference(differing)
            stdin = fastjson.dumps(netconf).encode()
        return handle(env, stdin, self.commands)

    @contextlib.contextmanager
    def enter_request_netns(self, request: CniRequest) -> Iterator[None]:
        """The request's netns, opened once and checked (docs/security.md) and held while a
        command works in it. Asked only once a command needs it: a pod passed through, or a DEL
        whose netns is gone, never has its path opened."""
        if not request.netns:
            yield  # the pipeline reports the missing netns
            return
        fd = netns.open_request_netns(request.netns, self.netns_dirs)
        try:
            with held(request.netns, fd):
                yield
        finally:
            os.close(fd)

    def _report_difference(self, differing: list[str]) -> None:
        if not differing:
            return
        key = tuple(differing)
        with self._lock:
            if key in self._differences_seen or len(self._differences_seen) >= DIFFERENCES_REPORTED:
                return
            self._differences_seen.add(key)
        log.warning("a plugin sent a netconf that differs from the agent's configuration in %s; "
                    "serving with the agent's own (this happens briefly while install-cni updates its entry)",
                    ", ".join(differing))

    # -- the socket -------------------------------------------------------------------------

    def run(self, stop: threading.Event | None = None) -> None:
        """Serve until SIGTERM/SIGINT; ``stop`` is set then too (for threads beside the agent)."""
        listener = self.listen()
        stop = stop or threading.Event()
        self.plugin_log.start(stop)  # replays what plugins spooled while no agent served
        try:
            asyncio.run(_Server(self, listener, stop).serve())
        finally:
            listener.close()
            self.release_socket_path()
            log.info("stopped")

    def release_socket_path(self) -> None:
        """Unlink our socket's path, unless a newer agent (the next install-cni of a rollout) has
        bound its own socket there since."""
        with contextlib.suppress(FileNotFoundError):
            if os.lstat(self.socket_path).st_ino == self._bound_inode:
                os.unlink(self.socket_path)

    def listen(self) -> socket.socket:
        prepare_socket_directory(os.path.dirname(self.socket_path) or ".")
        _remove_stale_socket(self.socket_path)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # the socket is created 0600: root's plugin only
        try:
            listener.bind(self.socket_path)
        finally:
            os.umask(old_umask)
        self._bound_inode = os.lstat(self.socket_path).st_ino
        # A plugin's connect() on a full backlog fails at once and it does the whole ADD in-process
        # (~800 ms): with a backlog of 5 and 32 pods starting together, p99 went from 0.3 s to 3.5 s.
        listener.listen(512)
        return listener


class _Server:
    def __init__(self, agent: Agent, listener: socket.socket, stop: threading.Event):
        self.agent = agent
        self.limits = agent.limits
        self.listener = listener
        self.stop = stop
        self.open_connections = 0
        self.workers = ThreadPoolExecutor(self.limits.workers, thread_name_prefix="meshcni-agent")
        self._last_warning: dict[str, float] = {}

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        stopping = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stopping.set)
        server = await asyncio.start_unix_server(self.on_connection, sock=self.listener)
        log.info("serving istio-cni requests on %s", self.agent.socket_path)
        try:
            await stopping.wait()
            await self._drain()
        finally:
            self.stop.set()
            server.close()
            self.workers.shutdown(wait=False, cancel_futures=True)

    async def _drain(self) -> None:
        """On SIGTERM (a DaemonSet rollout), answer every plugin already connected before stopping:
        a plugin whose request was written cannot serve it itself (agent/client.py), so cutting it
        off would fail its pod's ADD. The path goes first, so plugins starting now find no agent
        and serve in-process; connections still in the listen backlog are accepted until none has
        come for QUIET_BEFORE_STOP seconds."""
        self.agent.release_socket_path()
        loop = asyncio.get_running_loop()
        give_up = loop.time() + DRAIN_LIMIT
        quiet_since = loop.time()
        while loop.time() < give_up:
            if self.open_connections:
                quiet_since = loop.time()
            elif loop.time() - quiet_since >= QUIET_BEFORE_STOP:
                return
            await asyncio.sleep(0.02)
        log.warning("stopping with %d requests still being served after %gs", self.open_connections, DRAIN_LIMIT)

    async def on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            peer = peer_of(writer.get_extra_info("socket"))
            refusal = self.agent.peers.refusal(peer)
            if refusal:
                self._warn("peer", f"refused a connection: {refusal}")
                await self._decline(writer, "this agent serves only root processes of the host")
                return
            if self.open_connections >= self.limits.max_connections:
                self._warn("full", f"{self.open_connections} connections open (the limit): declined one unread; "
                                   "its plugin serves the request in-process")
                await self._decline(writer, f"{self.open_connections} connections open (the limit)")
                return
            self.open_connections += 1
            try:
                await self._exchange(reader, writer, peer.pid == os.getpid())
            finally:
                self.open_connections -= 1
        except TimeoutError:  # before OSError, its base class
            self._warn("deadline", "dropped a connection that sent no complete request in time")
        except (OSError, ValueError, KeyError, TypeError, AttributeError, asyncio.IncompleteReadError) as exc:
            self._warn("malformed", f"dropped a request: {type(exc).__name__}: {exc}")
        finally:
            writer.transport.abort()

    async def _decline(self, writer: asyncio.StreamWriter, reason: str) -> None:
        """Tell the plugin, before reading anything, that this request will not be acted on."""
        writer.write(encode_frame({"served": False, "reason": reason}))
        await asyncio.wait_for(writer.drain(), self.limits.write_deadline)

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        from_this_process: bool) -> None:
        accepted_ns = time.monotonic_ns()
        request = await asyncio.wait_for(self._read_request(reader), self.limits.read_deadline)
        request["accepted_ns"] = accepted_ns
        request["from_this_process"] = from_this_process  # set here, never taken from the client
        loop = asyncio.get_running_loop()
        reply = await loop.run_in_executor(self.workers, self.agent.serve_request, request)
        writer.write(encode_frame(reply))
        await asyncio.wait_for(writer.drain(), self.limits.write_deadline)

    async def _read_request(self, reader: asyncio.StreamReader) -> dict[str, Any]:
        size = int.from_bytes(await reader.readexactly(HEADER_SIZE), "big")
        if size > self.limits.max_request_bytes:
            raise ValueError(f"request of {size} bytes is larger than {self.limits.max_request_bytes}")
        request = fastjson.loads(await reader.readexactly(size))
        env, stdin = request["env"], request["stdin"]
        if not (isinstance(env, dict) and all(isinstance(v, str) for v in env.values()) and isinstance(stdin, str)):
            raise ValueError("a request is {env: {name: string}, stdin: string}")
        return {"env": env, "stdin": stdin, "started_ns": request.get("started_ns")}

    def _warn(self, kind: str, message: str) -> None:
        """At most one warning of a kind every 10 s: a flood must not flood the log too."""
        now = time.monotonic()
        if now - self._last_warning.get(kind, -60.0) >= 10.0:
            self._last_warning[kind] = now
            log.warning("%s", message)


def prepare_socket_directory(directory: str) -> None:
    """The socket's directory, root's own and 0700: created so, repaired when it exists with a
    wider mode, refused when it belongs to someone else (they could swap the socket under us)."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    st = os.lstat(directory)
    if not stat.S_ISDIR(st.st_mode):
        raise SystemExit(f"meshcni agent: {directory} is not a directory")
    if st.st_uid != os.geteuid():
        raise SystemExit(f"meshcni agent: {directory} belongs to uid {st.st_uid}, not to the agent "
                         f"(uid {os.geteuid()}); remove it or give it to root")
    if stat.S_IMODE(st.st_mode) != 0o700:
        log.warning("socket directory %s had mode %o: set to 700", directory, stat.S_IMODE(st.st_mode))
        os.chmod(directory, 0o700)


def _remove_stale_socket(path: str) -> None:
    """Remove a socket left by a crashed agent; refuse to start beside a live one."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise SystemExit(f"meshcni agent: {path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)
        return
    finally:
        probe.close()
    raise SystemExit(f"meshcni agent: another agent is already serving {path}")


def preload() -> None:
    """Import what requests will need, so the first pod does not pay for it; then move every
    object made so far out of the garbage collector's scans (gc.freeze), as long-running Python
    servers do: the kubernetes client alone brings a large, permanent object graph."""
    import gc

    import kubernetes.client
    import kubernetes.config
    import kubernetes.watch  # noqa: F401

    import meshcni_core.backends.iptables_restore
    import meshcni_core.pipeline  # noqa: F401
    from meshcni_core.backends import ip_steps

    ip_steps.use_netlink()  # route steps through netlink, not ``ip`` execs (docs/performance.md)

    gc.collect()
    gc.freeze()
