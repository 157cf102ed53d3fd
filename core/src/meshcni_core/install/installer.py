"""Make the node right, keep it right, and undo it.

``reconcile()`` puts the plugin binaries into the host's CNI bin dirs, writes the plugin's
kubeconfig, and chains our entry into the configuration the runtime uses (or writes our own file
in standalone mode), changing only what differs. ``watch()`` re-runs it on every change in the
conf dir, the bin dirs and the service-account dir, and backs off when another agent keeps undoing
our edit. ``uninstall()`` leaves every conf file as it was before us.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from meshcni_core.install import binaries, chaining, confdir, kubeconfig, writers
from meshcni_core.install.files import (
    remove_quietly,
    remove_stale_temp_files,
    render_json,
    same_bytes,
    write_atomic,
)
from meshcni_core.install.settings import InstallSettings
from meshcni_core.install.template import TemplateError, render_entry
from meshcni_hooks.types import NodeFacts

log = logging.getLogger("meshcni.install")
MAX_BACKOFF_SECONDS = 60.0
RESYNC_SECONDS = 60.0  # also re-check without any event (missed events, token expiry)


@dataclass
class Status:
    problems: list[str] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    conf_file: str = ""

    @property
    def ready(self) -> bool:
        return not self.problems


@dataclass
class Counters:
    installs: int = 0  # conf entry written where it was missing
    config_repairs: int = 0  # re-written after somebody else changed the file
    binary_copies: int = 0
    kubeconfig_writes: int = 0
    edit_wars: int = 0
    edit_wars_by_file: dict[tuple[str, str], int] = field(default_factory=dict)  # (file, component) -> wars
    install_results: dict[str, int] = field(default_factory=dict)  # istio_cni_installs_total{result}


@dataclass(frozen=True)
class EditWar:
    """Who is fighting us: the file that keeps changing, how often, and who when known."""

    file: str
    rewrites: int
    window: float
    component: str  # from the file's name
    writers: tuple[writers.Writer, ...] = ()  # processes seen with a file open in the conf dir

    def __str__(self) -> str:
        seen = f", writer seen: {', '.join(map(str, self.writers))}" if self.writers else ""
        return (f"{self.file} changed {self.rewrites} times in {self.window:.0f}s "
                f"(component: {self.component}{seen}); backing off")


NodeCheck = Callable[[NodeFacts], list[str]]
EditWarListener = Callable[[EditWar], None]


class Installer:
    def __init__(self, settings: InstallSettings, node_check: NodeCheck | None = None):
        """``node_check`` is the platform's install-time check (``meshcni_core.platforms.node_checker``)."""
        self.settings = settings
        self.node_check = node_check
        self.counters = Counters()
        self.status = Status(problems=["not reconciled yet"])
        self.edit_war = False
        self._writes: dict[str, deque[float]] = {}
        self._written: set[str] = set()
        self._bundle_hashes: dict[str, str] = {}
        self._lock = threading.Lock()
        self.on_edit_war: EditWarListener | None = None  # install-cni records a Node Event
        self.writers = writers.WriterWatch((settings.mounted_cni_net_dir, settings.cni_net_dir))
        self._owned_written: dict[str, Any] | None = None  # what we last wrote into our own file

    # -- the pieces -----------------------------------------------------------------------------

    def template_text(self) -> tuple[str, str]:
        s = self.settings
        if s.network_config_file and os.path.exists(s.network_config_file):
            with open(s.network_config_file) as f:
                return f.read(), s.network_config_file
        if s.network_config:
            return s.network_config, "CNI_NETWORK_CONFIG"
        raise TemplateError("no netconf template: set CNI_NETWORK_CONFIG or CNI_NETWORK_CONFIG_FILE")

    def entry(self) -> dict[str, Any]:
        s = self.settings
        text, source = self.template_text()
        entry = render_entry(text, {
            "__KUBECONFIG_FILEPATH__": s.kubeconfig_host_path,
            "__KUBECONFIG_FILENAME__": s.kubeconfig_file_name,
            "__KUBERNETES_SERVICE_HOST__": s.service_host,
            "__KUBERNETES_SERVICE_PORT__": s.service_port,
            "__KUBERNETES_NODE_NAME__": s.node_name,
            "__LOG_LEVEL__": s.log_level,
        }, source)
        if not s.chained:
            entry.setdefault("attachment", "secondary")  # its own network (Multus): no prevResult
        if s.require_agent:
            entry.setdefault("require_agent", True)  # CNI 1.1 STATUS: not ready without the agent
        return entry

    def netconf(self) -> dict[str, Any]:
        """Our entry as the plugin receives it: what the node agent's pipeline runs with. The agent
        runs in install-cni's container, where the kubeconfig is at its mounted path, not the host's."""
        entry = self.entry()
        kubernetes = entry.get("kubernetes")
        if isinstance(kubernetes, dict) and kubernetes.get("kubeconfig") == self.settings.kubeconfig_host_path:
            entry["kubernetes"] = {**kubernetes, "kubeconfig": self.settings.kubeconfig_mounted_path}
        return {"cniVersion": entry.get("cniVersion", "1.0.0"), "name": entry.get("name", "k8s-pod-network"), **entry}

    def install_binaries(self, status: Status) -> bool:
        """Copy the plugin into every bin dir; True when it is in place in the main one."""
        s = self.settings
        if not os.path.isdir(s.plugin_source_dir):
            status.problems.append(f"plugin source dir {s.plugin_source_dir} does not exist")
            return False
        in_place = False
        for directory in s.bin_dirs():
            main = directory == s.mounted_cni_bin_dir
            if not os.path.isdir(directory):
                if main:
                    status.problems.append(f"CNI bin dir {directory} does not exist")
                continue
            if not os.access(directory, os.W_OK):
                status.problems.append(f"CNI bin dir {directory} is not writable (read-only mount or SELinux?)")
                continue
            try:
                report = binaries.install_into(s.plugin_source_dir, directory, s.skip_binaries, s.update_binaries,
                                               self._bundle_hashes)
            except OSError as exc:
                status.problems.append(f"cannot install the plugin into {directory}: {exc}")
                continue
            status.problems += report.problems
            status.actions += report.actions
            self.counters.binary_copies += sum(a.startswith("installed") for a in report.actions)
            in_place = in_place or (main and not report.problems)
        return in_place

    def write_kubeconfig(self, status: Status) -> None:
        s = self.settings
        try:
            with open(s.token_file) as f:
                token = f.read().strip()
        except OSError as exc:
            status.problems.append(f"no service account token at {s.token_file}: {exc.strerror}")
            return
        if not s.service_host or not s.service_port:
            status.problems.append("KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must be set")
            return
        ca = None
        if not s.skip_tls_verify:
            try:
                with open(s.kube_ca_file, "rb") as f:
                    ca = f.read()
            except OSError as exc:
                status.problems.append(f"CA file {s.kube_ca_file} unreadable ({exc.strerror}); "
                                       "set KUBE_CA_FILE, or SKIP_TLS_VERIFY=true")
                return
        server = kubeconfig.server_url(s.service_protocol, s.service_host, s.service_port)
        data = kubeconfig.render(server, token, ca, s.skip_tls_verify)
        path = s.kubeconfig_mounted_path
        if same_bytes(path, data) and os.lstat(path).st_mode & 0o777 == s.kubeconfig_mode:
            return
        write_atomic(path, data, mode=s.kubeconfig_mode)
        self.counters.kubeconfig_writes += 1
        status.actions.append(f"wrote kubeconfig {path}")  # never its content: it holds the token

    def chain_config(self, status: Status) -> None:
        s = self.settings
        try:
            entry = self.entry()
        except TemplateError as exc:
            status.problems.append(str(exc))
            return
        if not s.chained:
            if self._node_problems(status, s.standalone_conf_name, str(entry.get("name", "")), ()):
                return
            self._write_if_changed(os.path.join(s.mounted_cni_net_dir, s.standalone_conf_name), entry, status)
            status.conf_file = s.standalone_conf_name
            return
        target = self._chained_target(status)
        content = target.content if target is not None and target.content is not None else {}
        if self._node_problems(status, target.name if target is not None else "", str(content.get("name", "")),
                               chaining.plugin_types(content)):
            return
        if target is None:
            return
        try:
            result = chaining.chain(target.name, target.content or {}, entry)
        except chaining.ChainError as exc:
            status.problems.append(str(exc))
            return
        if s.owned_conf_name:
            self._write_owned(target, result, status)
            return
        if target.link_target and result.replaces:
            status.problems.append(
                f"{target.name} is a symlink to a single-plugin file ({target.link_target}); chaining would "
                f"replace the link with {result.name}: have the primary CNI write a .conflist")
            return
        status.conf_file = result.name
        path = target.write_path if result.name == target.name else os.path.join(s.mounted_cni_net_dir, result.name)
        self._write_if_changed(path, result.content, status)
        if result.replaces and result.replaces != result.name:
            remove_quietly(os.path.join(s.mounted_cni_net_dir, result.replaces))  # only once the list exists

    def _write_owned(self, primary: confdir.ConfFile, chained: chaining.Chained, status: Status) -> None:
        """Our own list - the primary's plugins, then ours - under a name the runtime loads first."""
        s = self.settings
        if s.owned_conf_name.encode() >= primary.name.encode():
            status.problems.append(
                f"{s.owned_conf_name} (ISTIO_OWNED_CNI_CONFIG_FILENAME) does not sort before the primary's "
                f"{primary.name}: the runtime would load the primary's file, unredirected; choose a name that does")
            return
        content = chaining.owned_copy(primary.name, chained.content)
        path = os.path.join(s.mounted_cni_net_dir, s.owned_conf_name)
        current = confdir.read_conf(s.mounted_cni_net_dir, s.owned_conf_name).content
        # Our file as we left it: the primary's file is what changed. Otherwise someone changed ours.
        changing = primary.name if current is not None and current == self._owned_written else s.owned_conf_name
        status.conf_file = s.owned_conf_name
        if self._write_if_changed(path, content, status, changing):
            self._owned_written = content

    def _node_problems(self, status: Status, target_file: str, network_name: str,
                       primary_plugin_types: tuple[str, ...]) -> bool:
        """Run the platform's checks; True (and the problems recorded) when the entry must not be written."""
        if self.node_check is None:
            return False
        s = self.settings
        try:
            bin_files = frozenset(os.listdir(s.mounted_cni_bin_dir))
        except OSError:
            bin_files = frozenset()
        problems = self.node_check(NodeFacts(
            platform=s.platform, host_conf_dir=s.cni_net_dir, conf_dir=s.mounted_cni_net_dir,
            bin_dir=s.mounted_cni_bin_dir, bin_files=bin_files, chained=s.chained,
            conf_files=tuple(confdir.conf_files(s.mounted_cni_net_dir)), target_file=target_file,
            network_name=network_name, primary_plugin_types=primary_plugin_types,
        ))
        status.problems += problems
        return bool(problems)

    def _chained_target(self, status: Status) -> confdir.ConfFile | None:
        s = self.settings
        directory = s.mounted_cni_net_dir
        if s.cni_conf_name:
            name = s.cni_conf_name
            # Istio's rule: a configured .conf that became a .conflist (our own conversion) is that list.
            if name.endswith(".conf") and not os.path.exists(os.path.join(directory, name)):
                if os.path.exists(os.path.join(directory, name + "list")):
                    name += "list"
            if not os.path.exists(os.path.join(directory, name)):
                status.problems.append(f"waiting for {name} (CNI_CONF_NAME) in {directory}")
                return None
            conf = confdir.read_conf(directory, name, s.conf_link_dirs)
            if not conf.valid:
                status.problems.append(f"{name} is not a valid CNI configuration: {conf.problem}")
                return None
            first = confdir.discover(directory, s.conf_link_dirs, skip=s.owned_conf_name).chosen
            if first is not None and first.name != conf.name and not s.owned_conf_name:
                log.warning("CNI_CONF_NAME %s is not the file the runtime uses (%s)", conf.name, first.name)
            return conf
        found = confdir.discover(directory, s.conf_link_dirs, skip=s.owned_conf_name)
        for warning in found.warnings():
            status.problems.append(warning)
        if found.chosen is None:
            if found.refused_link is None:
                status.problems.append(f"waiting for the primary CNI to write its configuration into {directory}")
            return None
        if chaining.is_ours(found.chosen.content) and not found.chosen.is_list:
            status.problems.append(f"{found.chosen.name} is a standalone istio-cni file; nothing to chain into")
            return None
        return found.chosen

    def _write_if_changed(self, path: str, content: dict[str, Any], status: Status, changing: str = "") -> bool:
        """Replace ``path`` (never following a link at it) unless it already holds ``content``;
        True when written. ``changing``: the file whose changes made this write necessary."""
        directory, name = os.path.split(path)
        if confdir.read_conf(directory, name).content == content:
            if name == self.settings.owned_conf_name:
                self._owned_written = content
            return False
        if self._edit_war(path, changing or name):
            status.problems.append(f"edit war over {name}: {changing or name} keeps changing under us; backing off")
            return False
        write_atomic(path, render_json(content))
        if path in self._written:
            self.counters.config_repairs += 1  # we had put it there: somebody changed it since
        else:
            self.counters.installs += 1
        self._written.add(path)
        status.actions.append(f"wrote {path}")
        return True

    def _edit_war(self, path: str, changing: str) -> bool:
        """True while we are re-patching one file too often (someone keeps undoing us)."""
        now = time.monotonic()
        writes = self._writes.setdefault(path, deque())
        window, limit = self.settings.edit_war_window, self.settings.edit_war_rewrites
        while writes and now - writes[0] > window:
            writes.popleft()
        if len(writes) >= limit:
            if not self.edit_war:
                self._report_edit_war(EditWar(changing, len(writes), window, writers.component_of(changing),
                                              tuple(self.writers.scan())))
            self.edit_war = True
            return True
        writes.append(now)
        self.edit_war = False
        return False

    def _report_edit_war(self, war: EditWar) -> None:
        self.counters.edit_wars += 1
        key = (war.file, war.component)
        self.counters.edit_wars_by_file[key] = self.counters.edit_wars_by_file.get(key, 0) + 1
        log.warning("edit war: %s", war)
        if self.on_edit_war is not None:
            self.on_edit_war(war)

    # -- whole operations -----------------------------------------------------------------------

    def reconcile(self) -> Status:
        """Binaries first (a config must never name a missing plugin), then kubeconfig, then config."""
        with self._lock:
            status = Status()
            failed_at = "COPY_BINARIES_FAILURE"  # Istio's install results, by the first step that failed
            try:
                if self.install_binaries(status):
                    failed_at = "CREATE_KUBECONFIG_FAILURE"
                    self.write_kubeconfig(status)
                    failed_at = failed_at if status.problems else "CREATE_CNI_CONFIG_FAILURE"
                    self.chain_config(status)
            except OSError as exc:
                status.problems.append(f"{type(exc).__name__}: {exc}")
            if status.problems or status.actions:  # an install (or repair) was needed
                result = failed_at if status.problems else "SUCCESS"
                self.counters.install_results[result] = self.counters.install_results.get(result, 0) + 1
            for action in status.actions:
                log.info("%s", action)
            for problem in status.problems:
                log.warning("not ready: %s", problem)
            self.status = status
            return status

    def uninstall(self) -> list[str]:
        """Remove our entry from every conf file (restoring converted .conf files), our standalone
        file, the kubeconfig and the binaries. Returns what was done."""
        s = self.settings
        done: list[str] = []
        with self._lock:
            for name in confdir.conf_files(s.mounted_cni_net_dir):
                done += self._uninstall_from(name)
            if remove_quietly(s.kubeconfig_mounted_path):
                done.append(f"removed {s.kubeconfig_mounted_path}")
            for directory in s.bin_dirs():
                if os.path.isdir(directory):
                    done += binaries.remove_from(s.plugin_source_dir, directory, s.skip_binaries)
        return done

    def _uninstall_from(self, name: str) -> list[str]:
        """Take our entry out of one conf file. A restore name that would leave the conf dir (or
        name another file in it) is refused and logged: the list then only loses our entry, so no
        pod's chain names the plugin being removed."""
        directory = self.settings.mounted_cni_net_dir
        conf = confdir.read_conf(directory, name, self.settings.conf_link_dirs)
        if conf.refused_link:
            log.warning("%s left as it is: it is %s", conf.path, conf.problem)
        if conf.content is None:
            return []
        if (not conf.is_list and chaining.is_ours(conf.content)) or \
                (chaining.is_owned_copy(conf.content) and not conf.link_target):
            remove_quietly(conf.path)  # our standalone or owned file (a link there: only the link goes)
            return [f"removed {conf.path}"]
        restored = chaining.unchain(name, conf.content, keep_name=bool(conf.link_target))
        if restored is None:
            return []
        if restored.name != name:  # a conversion undone: the .conf is back, then the list goes
            path = os.path.join(directory, restored.name)
            write_atomic(path, render_json(restored.content))
            remove_quietly(conf.path)
            return [f"restored {path}"]
        if not restored.content.get("plugins"):
            remove_quietly(conf.path)
            return [f"removed {conf.path}"]
        write_atomic(conf.write_path, render_json(restored.content))
        if restored.refused:
            log.warning("%s; removed our entry from it in place instead", restored.refused)
            return [f"removed our entry from {conf.write_path}; left as a list ({restored.refused})"]
        return [f"restored {conf.write_path}"]

    # -- watching -------------------------------------------------------------------------------

    def watch(self, stop: threading.Event) -> None:
        """Reconcile now and on every relevant change until ``stop`` is set."""
        for directory in [self.settings.mounted_cni_net_dir, *self.settings.bin_dirs()]:
            for name in remove_stale_temp_files(directory):
                log.info("removed %s left by an earlier run in %s", name, directory)
        from inotify_simple import INotify
        from inotify_simple import flags as f

        inotify = INotify()
        mask = f.CREATE | f.DELETE | f.MODIFY | f.MOVED_TO | f.MOVED_FROM | f.CLOSE_WRITE | f.ATTRIB | f.DELETE_SELF
        s = self.settings
        watched = [d for d in [s.mounted_cni_net_dir, *s.conf_link_dirs, *s.bin_dirs(), s.service_account_dir]
                   if os.path.isdir(d)]
        for directory in watched:
            inotify.add_watch(directory, mask)
        backoff = 0.0
        try:
            while not stop.is_set():
                self.reconcile()
                backoff = min(max(backoff * 2, 0.5), MAX_BACKOFF_SECONDS) if self.edit_war else 0.0
                if backoff:
                    stop.wait(backoff)
                deadline = time.monotonic() + RESYNC_SECONDS
                while not stop.is_set() and time.monotonic() < deadline:
                    events = inotify.read(timeout=200)
                    if events:
                        self.writers.note_event()
                        stop.wait(0.02)  # let a burst of writes settle, then reconcile once
                        inotify.read(timeout=0)
                        break
        finally:
            inotify.close()


def describe(status: Status) -> str:
    return json.dumps({"ready": status.ready, "problems": status.problems, "conf_file": status.conf_file})
