"""``meshcni``: what an operator runs on a node.

Subcommands available in this release:

* ``meshcni install-cni`` - the DaemonSet's main process: installs the plugin on the host, keeps
  it chained into the node's CNI configuration, and serves it as the node agent;
* ``meshcni uninstall-cni`` - removes everything install-cni put on the host;
* ``meshcni idle`` - waits for SIGTERM (the clean-up DaemonSet's container, manifest/node_cleanup.py);
* ``meshcni repair`` - find pods that started without redirection and label or delete them
  (Istio 1.6's istio-cni-repair flags and REPAIR_* variables; ``meshcni repair --help``);
* ``meshcni agent`` - the node agent alone, serving ``istio-cni`` requests over a Unix socket;
* ``meshcni explain`` - what istio-cni would do for a pod, and why;
* ``meshcni extensions`` - installed extensions beside the enabled ones;
* ``meshcni manifest values`` - Istio's CNI values resolved istioctl's way (``-f`` IstioOperator
  files, ``--set`` paths) and validated, printed as one IstioOperator document;
* ``meshcni manifest generate`` - the Kubernetes objects for those values;
* ``meshcni manifest apply`` - those objects, server-side applied.

install-cni and uninstall-cni read Istio's install-cni environment variables (docs/installer.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from meshcni_core.logs import LEVEL_NAMES
from meshcni_hooks.errors import MeshcniError

if TYPE_CHECKING:
    from meshcni_core.install.installer import Installer

DEFAULT_SOCKET = "/var/run/meshcni/cni.sock"
LOG_LEVEL_HELP = ("the agent's own lines (default info); each istio-cni run's line is logged at the plugin entry's "
                  "log_level, including runs the plugin served alone, replayed from the spool beside the socket")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="meshcni", description="meshcni node tooling")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    agent = sub.add_parser("agent", help="serve istio-cni requests warm over a Unix socket")
    agent.add_argument("--socket", default=DEFAULT_SOCKET, help=f"socket path (default {DEFAULT_SOCKET}); "
                       "istio-cni uses the netconf key agent_socket, with the same default")
    agent.add_argument("--config", required=True, metavar="FILE",
                       help="the plugin configuration requests run with: istio-cni's netconf, or a conflist "
                            "holding it (a client's netconf supplies only its per-request parts)")
    add_agent_options(agent)
    agent.add_argument("--log-level", default="info", choices=LEVEL_NAMES, help=LOG_LEVEL_HELP)

    install = sub.add_parser("install-cni", help="install and keep the plugin on this node, and serve it",
                             description="Configured by Istio's install-cni environment variables and meshcni's "
                             "MESHCNI_* ones (docs/installer.md), e.g. MESHCNI_PLATFORM=gke to run a "
                             "hosted platform's node checks before the plugin is chained.")
    install.add_argument("--socket", default=DEFAULT_SOCKET, help=f"agent socket (default {DEFAULT_SOCKET})")
    add_agent_options(install)
    install.add_argument("--monitoring-address", default=os.environ.get("POD_IP") or "127.0.0.1",
                         help="address for /readyz, /healthz, /metrics: the one kubelet probes (default $POD_IP, "
                              "which the DaemonSet sets; else 127.0.0.1)")
    install.add_argument("--monitoring-port", type=int, default=8000, help="port for /readyz, /healthz, /metrics "
                         "(default 8000; 0 picks a free one)")
    install.add_argument("--once", action="store_true", help="reconcile once and exit: 0 when ready, 1 when not")
    install.add_argument("--log-level", default="info", choices=LEVEL_NAMES, help=LOG_LEVEL_HELP)

    uninstall = sub.add_parser("uninstall-cni", help="remove everything install-cni put on this node",
                               description="Configured by the same environment variables as install-cni.")
    uninstall.add_argument("--wait-for-agent", metavar="SOCKET",
                           help="first wait until no agent serves SOCKET (install-cni, while it runs, would "
                                "chain the plugin back); the clean-up DaemonSet passes the agent's socket")
    uninstall.add_argument("--socket", help=f"the agent's socket (default: the --wait-for-agent one, else "
                                f"{DEFAULT_SOCKET}): plugin log records still in the "
                                "spool beside it are logged to stderr, then the spool, a socket file nobody "
                                "serves and the emptied directory are removed")
    sub.add_parser("idle", help="do nothing until SIGTERM: the clean-up DaemonSet's container, Ready once its "
                               "init container uninstalled the plugin from the node")
    sub.add_parser("repair", help="label or delete pods that started without redirection (see meshcni repair --help)",
                   add_help=False)

    explain = sub.add_parser("explain", help="what istio-cni would do for a pod, and why")
    which = explain.add_mutually_exclusive_group(required=True)
    which.add_argument("--pod", metavar="FILE", help="a Pod manifest (YAML or JSON)")
    which.add_argument("--pod-ref", metavar="NAMESPACE/NAME", help="a pod read from the API server")
    explain.add_argument("--kubeconfig", help="for --pod-ref (default $KUBECONFIG)")
    explain.add_argument("--netconf", metavar="FILE", help="the plugin's netconf, or a conflist holding it "
                         "(default: Istio's defaults, istio-system excluded, first-party extensions enabled)")
    add_value_sources(explain, "instead of --netconf: install values, whose rendered netconf template is used")
    explain.add_argument("--dual-stack", action="store_true", help="explain for a pod with IPv4 and IPv6 addresses")
    explain.add_argument("--output", choices=["text", "json"], default="text")

    ext = sub.add_parser("extensions", help="list installed extensions and which are enabled")
    source = ext.add_mutually_exclusive_group()
    source.add_argument("--netconf", metavar="FILE", help="a netconf or conflist whose istio-cni entry enables them")
    source.add_argument("--enable", metavar="NAMES", default="", help="comma-separated names to treat as enabled")
    ext.add_argument("--output", choices=["table", "json"], default="table")

    manifest = sub.add_parser("manifest", help="Istio's CNI install values, the istioctl way")
    manifest_sub = manifest.add_subparsers(dest="manifest_command", required=True, metavar="SUBCOMMAND")
    values = manifest_sub.add_parser(
        "values", help="resolve and validate the values; print them as an IstioOperator document",
        description="Layers, later winning: meshcni's defaults, each -f file in order, each --set in order. "
                    "Every problem is reported with its path; nothing is printed then, and the exit status is 2. "
                    "Values meant for other Istio components are listed on stderr.")
    add_value_sources(values)
    values.add_argument("--output", choices=["yaml", "json"], default="yaml")
    generate = manifest_sub.add_parser(
        "generate", help="print the Kubernetes objects for the values, as multi-document YAML",
        description="The values are resolved exactly as by 'meshcni manifest values' (same -f and --set); "
                    "nothing is printed when they are invalid, and the exit status is 2.")
    add_value_sources(generate)
    apply = manifest_sub.add_parser(
        "apply", help="server-side apply the generated objects, and prune what is no longer generated",
        description="Generates exactly as 'meshcni manifest generate' and applies each object with "
                    "fieldManager=meshcni as a member of the ApplySet ConfigMap/istio-cni-applyset in "
                    "kube-system; then deletes the members the values no longer generate. A namespace they go into "
                    "that does not exist is created first, and the server checks every object before the first is "
                    "written (nothing is half-applied). Values that no longer "
                    "install the CNI (components.cni.enabled=false) also bring the DaemonSet istio-cni-uninstall, "
                    "which removes the plugin from every node; a later apply removes it once it is Ready "
                    "everywhere. Prints whether each object was created, configured, unchanged or pruned.")
    add_value_sources(apply)
    apply.add_argument("--kubeconfig", help="default $KUBECONFIG, else ~/.kube/config")
    apply.add_argument("--dry-run", action="store_true",
                       help="the server checks and reports; nothing is stored or deleted")
    return parser


def add_agent_options(parser: argparse.ArgumentParser) -> None:
    from meshcni_core.netns import RUNTIME_NETNS_DIRS

    parser.add_argument("--netns-dir", action="append", metavar="DIR", dest="netns_dirs",
                        help="a directory where the runtime pins pod network namespaces; a CNI_NETNS is accepted "
                             "only directly inside one, or as /proc/<pid>/ns/net; repeatable (default: "
                             f"{' '.join(RUNTIME_NETNS_DIRS)})")
    parser.add_argument("--max-connections", type=int, default=512, metavar="N",
                        help="connections the agent keeps open at once; beyond, it declines new ones unread and "
                             "their plugins serve in-process (default 512)")


def agent_limits(args: argparse.Namespace) -> dict[str, Any]:
    from meshcni_core.agent.server import Limits
    from meshcni_core.netns import RUNTIME_NETNS_DIRS

    if args.max_connections < 1:
        raise MeshcniError("--max-connections must be at least 1")
    return {"limits": Limits(max_connections=args.max_connections),
            "netns_dirs": tuple(args.netns_dirs or RUNTIME_NETNS_DIRS)}


def add_value_sources(parser: argparse.ArgumentParser, purpose: str = "") -> None:
    parser.add_argument("-f", "--filename", action="append", default=[], metavar="FILE",
                        help="an IstioOperator file (install.istio.io/v1alpha1); repeatable"
                             + (f"; {purpose}" if purpose else ""))
    parser.add_argument("--set", action="append", default=[], metavar="PATH=VALUE", dest="sets",
                        help="an istioctl path such as values.cni.cniBinDir=/x or "
                             "components.cni.namespace=kube-system; escape dots in keys with a backslash; "
                             "key[N] indexes a list; repeatable. The seed page's shorthands (cni.enabled, "
                             "cniBinDir, cniConfDir, ... for values.cni.*) are read as their canonical path, "
                             "reported on stderr")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["repair"]:
        from meshcni_core.cli import repair

        return repair.main(argv[1:])
    if argv[:1] in (["manifest"], ["explain"]):
        argv = _seed_spellings(argv)
    args = build_parser().parse_args(argv)
    try:
        if args.command == "agent":
            return run_agent(args)
        if args.command == "install-cni":
            return run_install(args)
        if args.command == "uninstall-cni":
            return run_uninstall(args.socket or args.wait_for_agent or DEFAULT_SOCKET, args.wait_for_agent)
        if args.command == "idle":
            from meshcni_core.cli.cleanup import idle

            return idle()
        if args.command == "explain":
            return run_explain(args)
        if args.command == "manifest":
            commands = {"generate": run_manifest_generate, "apply": run_manifest_apply, "values": run_manifest_values}
            return commands[args.manifest_command](args)
        return list_extensions(args)
    except MeshcniError as exc:
        print(f"meshcni: {exc.msg}", file=sys.stderr)
        if exc.details:
            print(exc.details, file=sys.stderr)
        return 2


def run_agent(args: argparse.Namespace) -> int:
    from meshcni_core.agent.config import AgentConfigError, load_file
    from meshcni_core.agent.server import Agent, preload
    from meshcni_core.logs import configure_logging

    configure_logging(args.log_level)
    try:
        config = load_file(args.config)
    except AgentConfigError as exc:
        raise MeshcniError(str(exc)) from None
    preload()
    Agent(args.socket, lambda: config, **agent_limits(args)).run()
    return 0


def _installer(with_platform_checks: bool = True) -> Installer:
    """Uninstalling runs without the platform's checks: it must work even without its extension."""
    from meshcni_core.install.installer import Installer
    from meshcni_core.install.settings import SettingsError, from_env

    try:
        settings = from_env()
    except SettingsError as exc:
        raise MeshcniError("invalid settings:\n" + "\n".join(f"  {p}" for p in exc.problems)) from None
    if settings.platform and with_platform_checks:
        from meshcni_core.platforms import node_checker

        return Installer(settings, node_check=node_checker(settings.platform))
    return Installer(settings)


def run_install(args: argparse.Namespace) -> int:
    import threading

    from prometheus_client import CollectorRegistry

    from meshcni_core.agent.server import Agent, preload
    from meshcni_core.install import monitoring
    from meshcni_core.install.backend_check import with_backend_check
    from meshcni_core.logs import configure_logging

    configure_logging(args.log_level)
    installer = _installer()
    registry = CollectorRegistry()
    agent = Agent(args.socket, installer.netconf, readiness=lambda: list(installer.status.problems),
                  metrics=monitoring.RequestMetrics(registry), **agent_limits(args))
    installer.node_check = with_backend_check(installer.node_check, lambda: agent.pipeline(installer.netconf(), {}))
    repair = None
    if installer.settings.repair_enabled:  # built before anything starts: a refused setting is a clean exit 2
        from meshcni_core.cli.repair import controller_from_env
        from meshcni_core.repair.reprogram import NETNS_DIR, Reprogrammer

        reprogrammer = Reprogrammer(lambda: agent.pipeline(installer.netconf(), {}),
                                    os.environ.get("MESHCNI_NETNS_DIR") or NETNS_DIR)
        repair = controller_from_env(os.environ, installer.settings.node_name, reprogrammer)
    if args.once:
        status = installer.reconcile()
        print(json.dumps({"ready": status.ready, "problems": status.problems, "conf_file": status.conf_file}))
        return 0 if status.ready else 1
    preload()
    server = monitoring.serve(installer, registry, args.monitoring_address, args.monitoring_port)
    print(f"monitoring on {args.monitoring_address} port {server.server_address[1]}", file=sys.stderr, flush=True)
    stop = threading.Event()
    watcher = threading.Thread(target=installer.watch, args=(stop,), daemon=True, name="meshcni-install-watch")
    watcher.start()
    threading.Thread(target=start_pod_cache, args=(agent, installer, registry, stop), daemon=True,
                     name="meshcni-pod-cache-start").start()
    start_node_ops(agent, installer, args.socket, stop)
    if repair is not None:
        from meshcni_core.repair.metrics import RepairCollector

        registry.register(RepairCollector(repair))
        threading.Thread(target=repair.run, args=(stop,), daemon=True, name="meshcni-repair").start()
    try:
        agent.run(stop)  # until SIGTERM: the plugin and its entry stay, so new pods stay redirected
    finally:
        stop.set()
        server.shutdown()
        watcher.join(timeout=5)
    return 0


def start_node_ops(agent: Any, installer: Installer, socket_path: str, stop: Any) -> None:
    """Events about this node (edit wars) and, when configured, its readiness taint (lifted once
    ready, put back while the node cannot serve pods)."""
    import logging
    import threading

    from meshcni_core.install import node_events, taint

    s = installer.settings
    api = lambda: agent.api_clients.get(s.kubeconfig_mounted_path)  # noqa: E731 - read when needed

    def edit_war_event(war: Any) -> None:
        try:
            node_events.record(api(), s.node_name, "CNIConfigEditWar", str(war), kind="Warning")
        except Exception as exc:  # noqa: BLE001 - no kubeconfig yet: the log line stands alone
            logging.getLogger("meshcni.install").warning("cannot record the edit war on node %s: %s",
                                                         s.node_name, exc)

    # Reported from inside a reconcile: the API call must not hold it up.
    installer.on_edit_war = lambda war: threading.Thread(target=edit_war_event, args=(war,), daemon=True,
                                                         name="meshcni-edit-war-event").start()
    if s.readiness_taint:
        threading.Thread(target=taint.guard, daemon=True, name="meshcni-readiness-taint",
                         args=(api, s.node_name, s.readiness_taint,
                               lambda: taint.agent_answers_ready(socket_path, installer.netconf()),
                               lambda: list(installer.status.problems), stop, s.readiness_taint_grace)).start()


def start_pod_cache(agent: Any, installer: Installer, registry: Any, stop: Any) -> None:
    """Watch this node's pods through the kubeconfig install-cni writes, once it exists."""
    from prometheus_client import Gauge

    from meshcni_core.pods.cache import PodCache

    path = installer.settings.kubeconfig_mounted_path
    while not os.path.exists(path):
        if stop.wait(0.5):
            return
    cache = PodCache(lambda: agent.api_clients.get(path), installer.settings.node_name).start()
    agent.pod_cache = cache
    gauge = Gauge("meshcni_pod_cache_pods", "pods of this node in the agent's cache", registry=registry)
    gauge.set_function(lambda: len(cache))
    stop.wait()
    cache.stop()


def _seed_spellings(argv: list[str]) -> list[str]:
    """The seed page's typeset ``--set`` (an en dash, U+2013) read as ``--set`` (reported); ``--setPATH=V``
    (a lost space) refused with the spelling meant."""
    from meshcni_core.manifest.aliases import typeset_dashes

    argv, notes = typeset_dashes(argv)
    for note in notes:
        print(f"meshcni: {note}", file=sys.stderr)
    glued = [word for word in argv if word.startswith("--set") and word[5:6] not in ("", "=")]
    if glued:
        print(f"meshcni: unknown option {glued[0]!r}: did you mean '--set {glued[0][5:]}'?", file=sys.stderr)
        sys.exit(2)
    return argv


def _resolved_values(args: argparse.Namespace) -> Any:
    from meshcni_core.manifest.values import resolve

    resolved = resolve(args.filename, args.sets)
    for note in resolved.shorthands:
        print(f"meshcni: {note}", file=sys.stderr)
    for note in resolved.elsewhere:
        print(f"meshcni: not rendered by meshcni, pass it to istioctl: {note}", file=sys.stderr)
    return resolved


def run_manifest_generate(args: argparse.Namespace) -> int:
    from meshcni_core.manifest.render import render, to_yaml

    resolved = _resolved_values(args)
    documents = render(resolved)
    if not documents:
        print("meshcni: components.cni.enabled is false: nothing to render", file=sys.stderr)
    print(to_yaml(documents), end="")
    return 0


def run_manifest_apply(args: argparse.Namespace) -> int:
    from meshcni_core.manifest.apply import apply_all
    from meshcni_core.manifest.node_cleanup import UNINSTALL_DAEMON_SET, uninstall_daemon_set
    from meshcni_core.manifest.render import render
    from meshcni_core.pods.lookup import ApiClients

    resolved = _resolved_values(args)
    documents = render(resolved)  # everything is validated before anything is sent
    kubeconfig = args.kubeconfig or os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
    if not os.path.exists(kubeconfig):
        raise MeshcniError(f"no kubeconfig at {kubeconfig}: pass --kubeconfig or set KUBECONFIG")
    cleanup = uninstall_daemon_set(resolved)
    cleaning = False
    clients = ApiClients(credential_plugins=True)
    for applied in apply_all(clients.get(kubeconfig), documents, dry_run=args.dry_run, node_cleanup=cleanup):
        print(applied)
        cleaning |= applied.kind == "DaemonSet" and applied.name == UNINSTALL_DAEMON_SET and \
            not applied.action.startswith("pruned")
    if cleaning:
        print(f"meshcni: DaemonSet/{UNINSTALL_DAEMON_SET} -n {resolved.namespace} removes the plugin from every "
              "node (Ready on a node = that node is clean); apply again once it is Ready everywhere to remove it",
              file=sys.stderr)
    return 0


def run_manifest_values(args: argparse.Namespace) -> int:
    from meshcni_core.manifest.values import OPERATOR_API_VERSIONS

    resolved = _resolved_values(args)
    document = {"apiVersion": OPERATOR_API_VERSIONS[0], "kind": "IstioOperator", "spec": resolved.as_operator_spec()}
    if args.output == "json":
        print(json.dumps({**document, "image": resolved.image, "repairImage": resolved.repair_image}, indent=2))
        return 0
    import yaml

    print(f"# install-cni image: {resolved.image}\n# repair image: {resolved.repair_image}")
    print(yaml.safe_dump(document, sort_keys=False), end="")
    return 0


def default_explain_netconf() -> dict[str, object]:
    """Istio's netconf with every installed extension that changes capture enabled."""
    from meshcni_core.extensions import installed_redirect_extensions

    return {"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "istio-cni",
            "extensions": installed_redirect_extensions(), "kubernetes": {"exclude_namespaces": ["istio-system"]}}


def run_explain(args: argparse.Namespace) -> int:
    import yaml

    from meshcni_core import explain
    from meshcni_core.pipeline import Pipeline
    from meshcni_core.pods.lookup import pod_from_manifest

    netconf: dict[str, Any] = default_explain_netconf()
    if args.netconf and (args.filename or args.sets):
        raise MeshcniError("give either --netconf or install values (-f/--set), not both")
    if args.filename or args.sets:
        from meshcni_core.manifest.render import network_config

        resolved = _resolved_values(args)
        netconf = network_config(resolved.cni, resolved.dns_capture, resolved.native_nftables)
    elif args.netconf:
        with open(args.netconf) as f:
            doc = json.load(f)
        entries = doc.get("plugins", [doc]) if isinstance(doc, dict) else []
        entry = next((e for e in entries if isinstance(e, dict) and e.get("type") == "istio-cni"), None)
        if entry is None:
            raise MeshcniError(f"{args.netconf} has no istio-cni entry")
        netconf = {"cniVersion": doc.get("cniVersion", "1.0.0"), "name": doc.get("name", "net"), **entry}
    if args.pod:
        with open(args.pod) as f:
            pod = pod_from_manifest(yaml.safe_load(f))
    else:
        from meshcni_core.pods.lookup import ApiClients, fetch_pod

        namespace, _, name = args.pod_ref.partition("/")
        pod = fetch_pod(args.kubeconfig or os.environ.get("KUBECONFIG", ""), namespace, name, timeout=10,
                        clients=ApiClients(credential_plugins=True))  # the operator's own kubeconfig
    facts = explain.DUAL_STACK_POD if args.dual_stack else explain.IPV4_POD
    report = explain.explain(pod, Pipeline.from_netconf(netconf, {}), facts)
    print(json.dumps(report, indent=2) if args.output == "json" else explain.render_text(report))
    return 0


def run_uninstall(socket_path: str, wait_for_agent: str | None = None) -> int:
    """The plugin's files first (so no new run spools a record), then the agent's state."""
    from meshcni_core.cli.cleanup import remove_agent_state, wait_for_agent_to_stop
    from meshcni_core.logs import configure_logging

    configure_logging("info")  # the replayed plugin records
    installer = _installer(with_platform_checks=False)  # bad settings fail before any wait
    if wait_for_agent:
        wait_for_agent_to_stop(wait_for_agent)
    for action in [*installer.uninstall(), *remove_agent_state(socket_path)]:
        print(action, flush=True)
    return 0


def enabled_from_netconf(path: str) -> list[str]:
    with open(path) as f:
        conf = json.load(f)
    entries = conf.get("plugins", [conf]) if isinstance(conf, dict) else []
    for entry in entries:
        if isinstance(entry, dict) and entry.get("type") == "istio-cni":
            return list(entry.get("extensions", []))
    raise MeshcniError(f"{path} has no istio-cni entry")


def list_extensions(args: argparse.Namespace) -> int:
    from meshcni_core import extensions

    enabled = enabled_from_netconf(args.netconf) if args.netconf else [n for n in args.enable.split(",") if n]
    pm = extensions.new_manager(enabled)
    rows = []
    for ext in extensions.installed_extensions():
        plugin = pm.get_plugin(ext.name)
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or []) if plugin is not None else []
        position = enabled.index(ext.name) + 1 if ext.name in enabled else None
        rows.append({
            "name": ext.name, "enabled": position is not None, "position": position,
            "distribution": ext.distribution, "version": ext.version, "target": ext.target, "hooks": hooks,
        })
    if args.output == "json":
        print(json.dumps(rows, indent=2))
        return 0
    name_width = max([16, *(len(str(row["name"])) + 1 for row in rows)])
    dist_width = max([28, *(len(str(row["distribution"])) + 1 for row in rows)])
    print(f"{'NAME':<{name_width}} {'ENABLED':<8} {'DISTRIBUTION':<{dist_width}} {'VERSION':<9} HOOKS")
    for row in rows:
        flag = f"#{row['position']}" if row["enabled"] else "no"
        hooks_text = ", ".join(row["hooks"]) if row["enabled"] else "(not imported)"  # type: ignore[arg-type]
        print(f"{row['name']:<{name_width}} {flag:<8} {row['distribution']:<{dist_width}} {row['version']:<9} "
              f"{hooks_text}")
    return 0


def run() -> None:
    sys.exit(main())
