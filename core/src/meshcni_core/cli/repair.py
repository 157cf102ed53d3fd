"""``meshcni repair``: Istio 1.6's istio-cni-repair, with its flags and REPAIR_* variables.

Each flag can also be set as ``REPAIR_`` + the upper-cased flag name, hyphens kept (the Istio chart
sets ``REPAIR_NODE-NAME``, ``REPAIR_DELETE-PODS``, ...); a flag wins over its variable
(``repair.flags``). ``--policy`` names any registered repair policy (``repair.policies``); Istio's
``--repair-pods`` (policy ``reprogram``) wins over ``--delete-pods`` (``delete``), which wins over
``--label-pods`` (``label``); with none, broken pods are only reported.
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
from meshcni_core.repair.flags import BOOLEAN_FLAGS, chosen_policy, load
from meshcni_core.repair.predicate import BrokenPodFilter
from meshcni_core.schemas.boolean import SPELLINGS_HELP
from meshcni_hooks.errors import MeshcniError
from meshcni_hooks.types import RepairPolicy, RepairSettings

log = logging.getLogger("meshcni.repair")
TEXT_FLAGS = {
    "node-name": "default: every node", "sidecar-annotation": "default sidecar.istio.io/status",
    "init-container-name": "default istio-validation", "init-container-termination-message": "default: any",
    "init-container-exit-code": "default 126 (0 = any)", "label-selectors": "default: none",
    "field-selectors": "default: none", "broken-pod-label-key": "default cni.istio.io/uninitialized",
    "broken-pod-label-value": "default true",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="meshcni repair", description=(
        "Find pods whose istio-validation init container shows they started without traffic redirection, "
        "and label or delete them. Every flag can also be set as REPAIR_<FLAG-NAME> (e.g. REPAIR_NODE-NAME). "
        f"Booleans read {SPELLINGS_HELP}; anything else is an error."))
    for name, help_text in TEXT_FLAGS.items():
        p.add_argument(f"--{name}", default=None, help=help_text)
    boolean_flags = (("delete-pods", "default false; policy delete"), ("label-pods", "default false; policy label"),
                     ("run-as-daemon", "default false"))
    for name, help_text in boolean_flags:
        p.add_argument(f"--{name}", nargs="?", const="true", default=None, metavar="BOOL", help=help_text)
    p.add_argument("--repair-pods", nargs="?", const="true", default=None, metavar="BOOL",
                   help="default false; apply broken pods' rules again instead of labelling or deleting them - "
                        "only inside the node agent (install-cni with REPAIR_ENABLED=true), which reaches their "
                        "network namespaces")
    p.add_argument("--policy", default=None, metavar="NAME",
                   help="the repair policy by its registered name (built in: label, reprogram; extension "
                        "repair-delete: delete; or a third party's); instead of the Istio flags above")
    p.add_argument("--extensions", default=None, metavar="NAMES",
                   help="comma-separated extensions to take policies from (default: the one installed extension "
                        "that registers the chosen policy)")
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
    """Flag, else REPAIR_<FLAG> variable, else Istio's default; checked and typed (repair.flags)."""
    flags = {name: getattr(args, name.replace("-", "_"))
             for name in (*TEXT_FLAGS, *BOOLEAN_FLAGS, "policy", "extensions")}
    return load(flags, env)


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
    """The policy the settings name (by its registered name), or None: report only."""
    from meshcni_core.repair.policies import select

    name = chosen_policy(values)
    return select(name, values["extensions"]) if name else None


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
        node_name=values["node_name"] or node_name, label_selectors=values["label_selectors"],
        field_selectors=values["field_selectors"], dry_run=policy is None,
        filter=BrokenPodFilter(values["sidecar_annotation"], values["init_container_name"],
                               values["init_container_termination_message"], values["init_container_exit_code"]),
        settings=RepairSettings(values["broken_pod_label_key"], values["broken_pod_label_value"]),
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
        if chosen_policy(values) == "reprogram":
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
        node_name=values["node_name"], label_selectors=values["label_selectors"],
        field_selectors=values["field_selectors"], dry_run=args.dry_run or policy is None,
        max_attempts=args.max_attempts,
        filter=BrokenPodFilter(values["sidecar_annotation"], values["init_container_name"],
                               values["init_container_termination_message"], values["init_container_exit_code"],
                               early=args.early_detection),
        settings=RepairSettings(values["broken_pod_label_key"], values["broken_pod_label_value"]),
    )
    report_only = RepairPolicy("report", lambda pod, actions, settings: "reported")
    controller = RepairController(factory, options, policy or report_only, ApiRepairActions)
    if not values["run_as_daemon"]:
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
