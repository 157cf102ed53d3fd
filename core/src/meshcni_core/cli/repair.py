"""``meshcni repair``: Istio 1.6's istio-cni-repair, with its flags and REPAIR_* variables.

Each flag can also be set as ``REPAIR_`` + the upper-cased flag name, hyphens kept (the Istio chart
sets ``REPAIR_NODE-NAME``, ``REPAIR_DELETE-PODS``, ...); a flag wins over its variable.
``--repair-pods`` (later Istio's repairPods: program the pod again, node agent only) wins over
``--delete-pods``, which wins over ``--label-pods``; with none, broken pods are only reported.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from meshcni_core.logs import LEVEL_NAMES
from meshcni_core.repair.predicate import BrokenPodFilter
from meshcni_hooks.errors import MeshcniError
from meshcni_hooks.types import RepairPolicy, RepairSettings

DEFAULTS: dict[str, Any] = {
    "node-name": "", "sidecar-annotation": "sidecar.istio.io/status", "init-container-name": "istio-validation",
    "init-container-termination-message": "", "init-container-exit-code": 126, "label-selectors": "",
    "field-selectors": "", "repair-pods": False, "delete-pods": False, "label-pods": False, "run-as-daemon": False,
    "broken-pod-label-key": "cni.istio.io/uninitialized", "broken-pod-label-value": "true",
}
TRUE, FALSE = {"true", "1", "yes", "t"}, {"false", "0", "no", "f"}
DELETE_EXTENSION = "repair-delete"
log = logging.getLogger("meshcni.repair")


def boolean(text: str) -> bool:
    value = text.strip().lower()
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not a boolean")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="meshcni repair", description=(
        "Find pods whose istio-validation init container shows they started without traffic redirection, "
        "and label or delete them. Every flag can also be set as REPAIR_<FLAG-NAME> (e.g. REPAIR_NODE-NAME)."))
    for name in ("node-name", "sidecar-annotation", "init-container-name", "init-container-termination-message",
                 "label-selectors", "field-selectors", "broken-pod-label-key", "broken-pod-label-value"):
        p.add_argument(f"--{name}", default=None, help=f"default {DEFAULTS[name]!r}")
    p.add_argument("--init-container-exit-code", type=int, default=None, help="default 126 (0 = any)")
    for name in ("delete-pods", "label-pods", "run-as-daemon"):
        p.add_argument(f"--{name}", nargs="?", const=True, type=boolean, default=None, help="default false")
    p.add_argument("--repair-pods", nargs="?", const=True, type=boolean, default=None,
                   help="default false; apply broken pods' rules again instead of labelling or deleting them - "
                        "only inside the node agent (install-cni with REPAIR_ENABLED=true), which reaches their "
                        "network namespaces")
    p.add_argument("--kubeconfig", default=None, help="kubeconfig file (default: $KUBECONFIG, else in-cluster)")
    p.add_argument("--early-detection", action="store_true",
                   help="also act on the validation container's first failure, without waiting for a restart")
    p.add_argument("--dry-run", action="store_true", help="report what would be done, change nothing")
    p.add_argument("--max-attempts", type=int, default=5, help="attempts per pod before giving up (default 5)")
    p.add_argument("--monitoring-port", type=int, default=0,
                   help="serve Prometheus metrics on this port in daemon mode (default: off)")
    p.add_argument("--log-level", default="info", choices=LEVEL_NAMES)
    return p


def settings(args: argparse.Namespace, env: Mapping[str, str]) -> dict[str, Any]:
    """Flag, else REPAIR_<FLAG> variable, else Istio's default."""
    values: dict[str, Any] = {}
    for name, default in DEFAULTS.items():
        flag = getattr(args, name.replace("-", "_"))
        raw = env.get(f"REPAIR_{name.upper()}")
        if flag is not None:
            values[name] = flag
        elif raw is not None and raw != "":
            try:
                values[name] = boolean(raw) if isinstance(default, bool) else type(default)(raw)
            except (ValueError, argparse.ArgumentTypeError):
                raise MeshcniError(f"REPAIR_{name.upper()}={raw!r} is not a valid {type(default).__name__}") from None
        else:
            values[name] = default
    return values


def api_client_factory(kubeconfig: str | None) -> Any:
    from kubernetes import client, config

    if kubeconfig:
        from meshcni_core.pods.lookup import ApiClients

        clients = ApiClients(credential_plugins=True)  # the operator's own kubeconfig
        clients.get(kubeconfig)  # fail now, with a clear message, if it cannot be loaded
        return lambda: clients.get(kubeconfig)
    configuration = client.Configuration()
    config.load_incluster_config(client_configuration=configuration)
    api_client = client.ApiClient(configuration)
    return lambda: api_client


def choose_policy(values: Mapping[str, Any]) -> RepairPolicy | None:
    from meshcni_core import extensions

    if values["repair-pods"]:
        return extensions.repair_policies(extensions.new_manager())["reprogram"]
    if not values["delete-pods"] and not values["label-pods"]:
        return None
    enabled = []
    if values["delete-pods"]:
        installed = {e.name for e in extensions.installed_extensions()}
        if DELETE_EXTENSION not in installed:
            raise MeshcniError("--delete-pods needs the repair-delete extension: install meshcni-repair-delete")
        enabled.append(DELETE_EXTENSION)
    policies = extensions.repair_policies(extensions.new_manager(enabled))
    return policies["delete" if values["delete-pods"] else "label"]


def controller_from_env(env: Mapping[str, str], node_name: str,
                        reprogrammer: Callable[[Mapping[str, Any]], str]) -> Any:
    """The repair daemon as install-cni runs it when REPAIR_ENABLED is true: configured by the
    REPAIR_* variables, scoped to this node, with the agent's own identity (in-cluster or
    $KUBECONFIG) - never the plugin's kubeconfig, which needs no write access. ``reprogrammer``
    programs a pod of this node again (``repair.reprogram.Reprogrammer``)."""
    from meshcni_core.repair.actions import NodeRepairActions
    from meshcni_core.repair.controller import RepairController, RepairOptions

    values = settings(build_parser().parse_args([]), env)
    policy = choose_policy(values)
    # Reprogramming writes nothing through the API: the agent's read-only identity is enough.
    if policy is not None and policy.name != "reprogram" and not env.get("KUBECONFIG"):
        raise MeshcniError(
            f"repair policy {policy.name!r} inside the node agent needs KUBECONFIG naming a separate repair "
            "identity: the agent's own token is also the plugin's, which must not be able to change pods"
        )
    report_only = RepairPolicy("report", lambda pod, actions, settings: "reported")
    options = RepairOptions(
        node_name=values["node-name"] or node_name, label_selectors=values["label-selectors"],
        field_selectors=values["field-selectors"], dry_run=policy is None,
        filter=BrokenPodFilter(values["sidecar-annotation"], values["init-container-name"],
                               values["init-container-termination-message"], values["init-container-exit-code"]),
        settings=RepairSettings(values["broken-pod-label-key"], values["broken-pod-label-value"]),
    )
    return RepairController(api_client_factory(env.get("KUBECONFIG")), options, policy or report_only,
                            lambda api_client: NodeRepairActions(api_client, reprogrammer))


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    from meshcni_core.logs import configure_logging
    from meshcni_core.repair.actions import ApiRepairActions
    from meshcni_core.repair.controller import RepairController, RepairOptions

    args = build_parser().parse_args(argv)
    env = os.environ if env is None else env
    configure_logging(args.log_level)
    logging.getLogger("meshcni.repair").setLevel(logging.getLogger("meshcni").level)
    try:
        values = settings(args, env)
        if values["repair-pods"]:
            raise MeshcniError("--repair-pods applies rules inside pods' network namespaces, which only the node "
                               "agent reaches: set REPAIR_ENABLED=true and REPAIR_REPAIR-PODS=true on install-cni "
                               "(values.cni.repair.repairPods=true)")
        policy = choose_policy(values)
        factory = api_client_factory(args.kubeconfig or env.get("KUBECONFIG"))
    except MeshcniError as exc:
        print(f"meshcni repair: {exc.msg}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - kubeconfig / in-cluster loading errors vary
        print(f"meshcni repair: cannot reach the API server: {exc}", file=sys.stderr)
        return 2
    options = RepairOptions(
        node_name=values["node-name"], label_selectors=values["label-selectors"],
        field_selectors=values["field-selectors"], dry_run=args.dry_run or policy is None,
        max_attempts=args.max_attempts,
        filter=BrokenPodFilter(values["sidecar-annotation"], values["init-container-name"],
                               values["init-container-termination-message"], values["init-container-exit-code"],
                               early=args.early_detection),
        settings=RepairSettings(values["broken-pod-label-key"], values["broken-pod-label-value"]),
    )
    report_only = RepairPolicy("report", lambda pod, actions, settings: "reported")
    controller = RepairController(factory, options, policy or report_only, ApiRepairActions)
    if not values["run-as-daemon"]:
        outcomes = controller.run_once()
        print(json.dumps(outcomes, indent=2, sort_keys=True))
        return 1 if any(o.startswith("failed") for o in outcomes.values()) else 0
    if args.monitoring_port:
        from prometheus_client import CollectorRegistry, start_http_server

        from meshcni_core.repair.metrics import RepairCollector

        registry = CollectorRegistry()
        registry.register(RepairCollector(controller))
        start_http_server(args.monitoring_port, registry=registry)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    controller.run(stop)
    return 0


def run() -> None:
    sys.exit(main())
