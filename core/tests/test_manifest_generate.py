"""``meshcni manifest generate``: the objects for the seed's examples and for every option of its table."""

import json
from pathlib import Path

import kubernetes_validate
import pytest
from seed_examples import GKE, OPENSHIFT, SEED_OVERLAY, sets_of

from meshcni_core.builtin.config import load_plugin_config
from meshcni_core.cli.main import build_parser
from meshcni_core.install.settings import from_env
from meshcni_core.install.template import render_entry
from meshcni_core.manifest.node_cleanup import uninstall_daemon_set
from meshcni_core.manifest.render import render, to_yaml
from meshcni_core.manifest.values import ValuesError, resolve

GOLDEN = Path(__file__).parent / "golden" / "manifests"
KUBERNETES_VERSIONS = ("1.29.0", "1.33.0", "1.37.0")
CASES = {
    "defaults": ([], []),
    "seed-overlay": ([SEED_OVERLAY], []),
    "seed-gke": ([], sets_of(GKE)),
    "seed-openshift": ([], sets_of(OPENSHIFT)),
    "repair-label": ([], ["values.cni.repair.deletePods=false"]),
    "node-ops": ([], ["values.cni.taint.enabled=true", "values.cni.resourceQuotas.enabled=true",
                      "values.cni.istioOwnedCNIConfig=true", "values.cni.seccompProfile.type=RuntimeDefault"]),
    "native-nftables": ([], ["values.global.nativeNftables=true"]),
}
FIXED_TAG = ["tag=1.6.0"]  # golden files must not change with meshcni's own version

# One non-default value per option of the seed's table, and exactly the fields it must change:
# (kind/name, path) pairs, paths as dotted keys with list indexes.
DS, CM = "DaemonSet/istio-cni-node", "ConfigMap/istio-cni-config"
CTR = "spec.template.spec.containers[0]"
REPAIR = "Deployment/istio-cni-repair"
RCTR = CTR
OPTION_CHANGES = {
    "values.cni.hub=registry.example/x": {(DS, f"{CTR}.image"), (REPAIR, f"{RCTR}.image")},
    "values.cni.tag=9.9": {(DS, f"{CTR}.image"), (REPAIR, f"{RCTR}.image")},
    "values.cni.pullPolicy=IfNotPresent": {(DS, f"{CTR}.imagePullPolicy"), (REPAIR, f"{RCTR}.imagePullPolicy")},
    "values.cni.logLevel=debug": {(CM, "data.cni_network_config"), (DS, f"{CTR}.env[2].value"),
                                  (DS, f"{CTR}.command[3]")},
    "values.cni.excludeNamespaces[1]=foo": {(CM, "data.cni_network_config")},
    "values.cni.cniBinDir=/home/kubernetes/bin": {(CM, "data.cni_network_config"),
                                                  (DS, "spec.template.spec.volumes[0].hostPath.path")},
    "values.cni.cniConfDir=/etc/cni/multus/net.d": {(DS, f"{CTR}.env[0].value"),
                                                    (DS, "spec.template.spec.volumes[1].hostPath.path")},
    "values.cni.cniConfFileName=istio-cni.conf": "CNI_CONF_NAME added before the other variables",
    "values.cni.psp_cluster_role=restricted-psp": {("RoleBinding/istio-cni-psp", "")},
    "values.cni.podAnnotations.example\\.com/team=net": {(DS, "spec.template.metadata.annotations.example.com/team")},
    "values.cni.chained=false": {(DS, f"{CTR}.env[1].value")},
    # Istio's switch: the netconf only (its extension enabled there); the DaemonSet mounts nothing more or less
    "values.global.nativeNftables=true": {(CM, "data.cni_network_config")},
    "values.cni.backend=iptc": {(CM, "data.cni_network_config")},
    "values.cni.repair.enabled=false": {("ServiceAccount/istio-cni-repair", ""), ("ClusterRole/istio-cni-repair", ""),
                                        ("ClusterRoleBinding/istio-cni-repair", ""), (REPAIR, "")},
    "values.cni.repair.hub=repair.example": {(REPAIR, f"{RCTR}.image")},
    "values.cni.repair.tag=r1": {(REPAIR, f"{RCTR}.image")},
    "values.cni.repair.initContainerName=my-check": {(REPAIR, f"{RCTR}.env[4].value")},
    "values.cni.repair.labelPods=false": {(REPAIR, f"{RCTR}.env[0].value")},
    "values.cni.repair.deletePods=false": {(REPAIR, f"{RCTR}.env[1].value"),
                                           ("ClusterRole/istio-cni-repair", "rules[0].verbs[3]"),
                                           # the label policy: patch narrowed to the label by admission
                                           ("ValidatingAdmissionPolicy/istio-cni-repair-label-only", ""),
                                           ("ValidatingAdmissionPolicyBinding/istio-cni-repair-label-only", "")},
    "values.cni.repair.brokenPodLabelKey=example.com/broken": {(REPAIR, f"{RCTR}.env[5].value")},
    "values.cni.repair.brokenPodLabelValue=yes": {(REPAIR, f"{RCTR}.env[6].value")},
    "values.cni.extensions[0]=tproxy": {(CM, "data.cni_network_config")},
    # A named policy: Istio's flags off, REPAIR_POLICY; it may label (confined) and delete.
    "values.cni.repair.policy=quarantine": {
        (REPAIR, f"{RCTR}.env[0].value"), (REPAIR, f"{RCTR}.env[1].value"),
        (REPAIR, f"{RCTR}.env[7].name"), (REPAIR, f"{RCTR}.env[7].value"),
        ("ClusterRole/istio-cni-repair", "rules[0].verbs[3]"), ("ClusterRole/istio-cni-repair", "rules[0].verbs[4]"),
        ("ValidatingAdmissionPolicy/istio-cni-repair-label-only", ""),
        ("ValidatingAdmissionPolicyBinding/istio-cni-repair-label-only", "")},
    # Repair moves into the DaemonSet's agent, which needs no write access for it.
    "values.cni.repair.repairPods=true": {
        ("ServiceAccount/istio-cni-repair", ""), ("ClusterRole/istio-cni-repair", ""),
        ("ClusterRoleBinding/istio-cni-repair", ""), (REPAIR, ""),
        *((DS, f"{CTR}.env[{i}].{key}") for i in (6, 7, 8) for key in ("name", "value"))},
    # The readiness taint: nodes get/patch, confined by its admission policy; the key install-cni lifts.
    "values.cni.taint.enabled=true": {
        *((("ClusterRole/istio-cni", f"rules[1].{p}")) for p in ("apiGroups[0]", "resources[0]", "verbs[0]", "verbs[1]")),
        (DS, f"{CTR}.env[6].name"), (DS, f"{CTR}.env[6].value"),
        ("ValidatingAdmissionPolicy/istio-cni-node-taint-only", ""),
        ("ValidatingAdmissionPolicyBinding/istio-cni-node-taint-only", "")},
    "values.cni.istioOwnedCNIConfig=true": {(DS, f"{CTR}.env[6].name"), (DS, f"{CTR}.env[6].value")},
    "values.cni.resourceQuotas.enabled=true": {("ResourceQuota/istio-cni-resource-quota", "")},
    "values.cni.seccompProfile.type=RuntimeDefault": {(DS, f"{CTR}.securityContext.seccompProfile.type")},
    "values.cni.resources.limits.memory=1Gi": {(DS, f"{CTR}.resources.limits.memory")},
    "components.cni.namespace=kube-system": "every namespaced object and every subject moves",
}


def generate(files=(), sets=()):
    return render(resolve(files, [*FIXED_TAG, *sets]))


def leaves(value, path=""):
    if isinstance(value, dict):
        return {leaf for key, child in value.items() for leaf in leaves(child, f"{path}.{key}" if path else key)}
    if isinstance(value, list):
        return {leaf for i, child in enumerate(value) for leaf in leaves(child, f"{path}[{i}]")}
    return {(path, json.dumps(value))}


def by_name(documents):
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in documents}


def changed_fields(before, after):
    old, new = by_name(before), by_name(after)
    changes = {(name, "") for name in set(old) ^ set(new)}
    for name in set(old) & set(new):
        for path, _ in leaves(old[name]) ^ leaves(new[name]):
            changes.add((name, path))
    return changes


@pytest.mark.parametrize("case", CASES)
def test_golden_manifests(case, request):
    files, sets = CASES[case]
    text = to_yaml(generate(files, sets))
    path = GOLDEN / f"{case}.yaml"
    if request.config.getoption("--update-golden"):
        path.write_text(text)
    assert text == path.read_text(), f"manifest for {case} changed; review and rerun with --update-golden"


@pytest.mark.parametrize("option", OPTION_CHANGES)
def test_each_option_changes_exactly_its_fields(option):
    before, after = generate(), generate(sets=[option])
    changes = changed_fields(before, after)
    expected = OPTION_CHANGES[option]
    if option.startswith("components.cni.namespace"):
        assert changes and all(p.endswith("namespace") for _, p in changes), changes
        node_events = {"Role/istio-cni", "RoleBinding/istio-cni"}  # events about nodes live in "default"
        assert all(d["metadata"].get("namespace", "kube-system") == "kube-system" for d in after
                   if f"{d['kind']}/{d['metadata']['name']}" not in node_events)
        return
    if option.startswith("values.cni.cniConfFileName"):
        env = by_name(after)[DS]["spec"]["template"]["spec"]["containers"][0]["env"]
        assert env[0] == {"name": "CNI_CONF_NAME", "value": "istio-cni.conf"}
        assert env[1:] == by_name(before)[DS]["spec"]["template"]["spec"]["containers"][0]["env"]
        return
    assert matches(changes, expected), (sorted(changes), sorted(expected))


def matches(changes, expected):
    """Exactly the expected fields changed; an expectation with path "" is a whole object (added or removed)."""
    whole = {name for name, path in expected if path == ""}
    return {c for c in changes if c[0] not in whole} == {e for e in expected if e[0] not in whole} \
        and whole == {name for name, _ in changes if name in whole}


def every_manifest():
    for files, sets in CASES.values():
        yield from generate(files, sets)
        yield node_cleanup(files, sets)
    for option in OPTION_CHANGES:
        yield from generate(sets=[option])
        yield node_cleanup(sets=[option])


def node_cleanup(files=(), sets=()):
    """The clean-up DaemonSet ``manifest apply`` adds when these values are applied with the CNI disabled."""
    return uninstall_daemon_set(resolve(files, [*FIXED_TAG, *sets, "components.cni.enabled=false"]))


def test_golden_node_cleanup(request):
    text = to_yaml([node_cleanup()])
    path = GOLDEN / "node-cleanup.yaml"
    if request.config.getoption("--update-golden"):
        path.write_text(text)
    assert text == path.read_text(), "the clean-up DaemonSet changed; review and rerun with --update-golden"


@pytest.mark.parametrize("case", [*CASES, "values.cni.cniConfFileName=istio-cni.conf", "values.cni.chained=false"])
def test_the_node_cleanup_uninstalls_what_the_install_installed(case):
    """Same host paths, and the same settings for uninstall-cni as install-cni had."""
    files, sets = CASES.get(case, ([], [case]))
    install = by_name(generate(files, sets))[DS]["spec"]["template"]["spec"]
    cleanup = node_cleanup(files, sets)["spec"]["template"]["spec"]
    assert cleanup["volumes"] == [v for v in install["volumes"] if v["name"] not in ("netns-dir", "tmp")]
    mounts = {m["name"]: m["mountPath"] for m in install["containers"][0]["volumeMounts"]}
    assert all(mounts[m["name"]] == m["mountPath"] for m in cleanup["initContainers"][0]["volumeMounts"])
    install_env = {v["name"]: v.get("value") for v in install["containers"][0]["env"]}
    cleanup_env = {v["name"]: v["value"] for v in cleanup["initContainers"][0]["env"]}
    assert cleanup_env == {k: install_env[k] for k in cleanup_env}
    assert from_env(cleanup_env).chained == from_env({**install_env, "CNI_NETWORK_CONFIG": "{}"}).chained
    assert cleanup["initContainers"][0]["image"] == install["containers"][0]["image"]
    assert cleanup["automountServiceAccountToken"] is False and "serviceAccountName" not in cleanup


# API versions newer than the oldest schema checked, and the release that brought each.
INTRODUCED = {"admissionregistration.k8s.io/v1": "1.30.0"}  # ValidatingAdmissionPolicy went GA


def _release(version):
    return tuple(int(part) for part in version.split("."))


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_generated_object_validates_against_the_kubernetes_schema(version):
    checked = 0
    for document in every_manifest():
        introduced = INTRODUCED.get(document["apiVersion"])
        if introduced and _release(version) < _release(introduced):
            with pytest.raises(kubernetes_validate.SchemaNotFoundError):  # it really is not served there
                kubernetes_validate.validate(document, version, strict=True)
            continue
        kubernetes_validate.validate(document, version, strict=True)
        checked += 1
    assert checked


def test_repair_role_grants_only_what_its_policy_uses():
    def verbs(*sets):
        return by_name(generate(sets=list(sets)))["ClusterRole/istio-cni-repair"]["rules"][0]["verbs"]

    assert verbs() == ["get", "list", "watch", "delete"]
    assert verbs("values.cni.repair.deletePods=false") == ["get", "list", "watch", "patch"]
    assert verbs("values.cni.repair.deletePods=false", "values.cni.repair.labelPods=false") == ["get", "list", "watch"]
    plugin_role = by_name(generate())["ClusterRole/istio-cni"]
    assert plugin_role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]


@pytest.mark.parametrize(("policy", "writes"), [("quarantine", ["patch", "delete"]), ("label", ["patch"]),
                                               ("delete", ["delete"])])
def test_a_named_repair_policy_is_what_the_repair_deployment_runs(policy, writes):
    from meshcni_core.cli.repair import build_parser, settings
    from meshcni_core.repair.flags import chosen_policy

    objects = by_name(generate(sets=[f"values.cni.repair.policy={policy}"]))
    env = {v["name"]: v["value"] for v in objects[REPAIR]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["REPAIR_POLICY"] == policy
    assert chosen_policy(settings(build_parser().parse_args([]), env)) == policy  # no contradicting Istio flag
    assert objects["ClusterRole/istio-cni-repair"]["rules"][0]["verbs"] == ["get", "list", "watch", *writes]
    assert ("ValidatingAdmissionPolicy/istio-cni-repair-label-only" in objects) == ("patch" in writes)


@pytest.mark.parametrize("sets", [["values.cni.repair.policy=reprogram"],
                                  ["values.cni.repair.policy=label", "values.cni.repair.repairPods=true"],
                                  ["values.cni.repair.policy=not a name"]])
def test_a_repair_policy_the_deployment_cannot_run_is_refused_by_path(sets):
    with pytest.raises(ValuesError) as refused:
        generate(sets=sets)
    assert any(problem.startswith("values.cni.repair.policy: ") for problem in refused.value.problems)


def test_disabled_component_renders_nothing():
    assert generate(sets=["components.cni.enabled=false"]) == []


def test_the_schema_check_catches_a_wrong_field():
    daemon_set = by_name(generate())[DS]
    daemon_set["spec"]["template"]["spec"]["hostNetwrk"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(daemon_set, KUBERNETES_VERSIONS[-1], strict=True)


@pytest.mark.parametrize("case", [*CASES, "values.cni.logLevel=panic", "values.cni.extensions[0]=tproxy"])
def test_the_installer_and_the_plugin_accept_what_is_rendered(case):
    """The DaemonSet's command line and environment are install-cni's, the ConfigMap's template the plugin's netconf."""
    files, sets = CASES.get(case, ([], [case]))
    objects = by_name(generate(files, sets))
    template = objects[CM]["data"]["cni_network_config"]
    env = {}
    for variable in objects[DS]["spec"]["template"]["spec"]["containers"][0]["env"]:
        source = variable.get("valueFrom", {})
        env[variable["name"]] = template if "configMapKeyRef" in source else \
            "node-a" if "fieldRef" in source else variable["value"]
    settings = from_env(env)
    command = objects[DS]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[0] == "meshcni" and build_parser().parse_args(command[1:]).log_level == settings.log_level
    assert settings.chained == (case != "seed-openshift")
    entry = render_entry(template, {"__KUBECONFIG_FILEPATH__": "/etc/cni/net.d/ZZZ-istio-cni-kubeconfig"}, "configmap")
    config = load_plugin_config(entry)
    assert config.exclude_namespaces == tuple(resolve(files, sets).cni["excludeNamespaces"])
    assert config.log_level == settings.log_level


def test_cli_generate_prints_the_golden_documents_and_refuses_bad_values():
    import subprocess

    from meshcni_testing.processes import MESHCNI

    def run(*args):
        return subprocess.run([MESHCNI, "manifest", "generate", *args], capture_output=True, text=True, timeout=60)

    flags = [w for s in [*FIXED_TAG, *sets_of(OPENSHIFT)] for w in ("--set", s)]
    done = run(*flags)
    assert done.returncode == 0, done.stderr
    assert done.stdout == (GOLDEN / "seed-openshift.yaml").read_text()
    assert "injectedAnnotations" in done.stderr
    refused = run("--set", "values.cni.pullPolicy=Sometimes")
    assert refused.returncode == 2 and refused.stdout == ""
    assert "values.cni.pullPolicy: 'Sometimes' is not one of Always, IfNotPresent, Never" in refused.stderr


def test_repair_pods_is_run_by_the_node_agent_with_its_read_only_identity():
    from meshcni_core.cli.repair import build_parser, choose_policy, settings

    objects = by_name(generate(sets=["values.cni.repair.repairPods=true"]))
    env = {v["name"]: v["value"] for v in objects[DS]["spec"]["template"]["spec"]["containers"][0]["env"] if "value" in v}
    assert env["REPAIR_ENABLED"] == "true"
    assert choose_policy(settings(build_parser().parse_args([]), env)).name == "reprogram"
    assert objects["ClusterRole/istio-cni"]["rules"] == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]


def rendered_netconf(*sets: str) -> dict:
    return json.loads(by_name(generate(sets=list(sets)))[CM]["data"]["cni_network_config"])


def test_native_nftables_reaches_the_netconf_with_the_extension_that_provides_it():
    from meshcni_core.pipeline import Pipeline

    netconf = rendered_netconf("values.global.nativeNftables=true")
    assert netconf["native_nftables"] is True and netconf["extensions"] == ["nftables"]
    pipeline = Pipeline.from_netconf({**netconf, "cniVersion": "1.0.0"}, {})
    assert (pipeline.backend_choice.name, pipeline.backend_choice.reason) == (
        "nftables", "netconf key native_nftables=true")
    assert "native_nftables" not in rendered_netconf("values.global.nativeNftables=false")
    assert resolve(sets=["values.global.nativeNftables=true"]).elsewhere == ()  # read here, not "meant for" Istio
    tproxy_too = rendered_netconf("values.global.nativeNftables=true", "values.cni.extensions[0]=tproxy")
    assert tproxy_too["extensions"] == ["tproxy", "nftables"]


def test_a_backend_value_enables_the_extension_registering_it_and_bad_values_are_named():
    netconf = rendered_netconf("values.cni.backend=iptc")
    assert (netconf["backend"], netconf["extensions"]) == ("iptc", ["iptc"])
    assert "extensions" not in rendered_netconf("values.cni.backend=auto")
    with pytest.raises(ValuesError) as caught:
        resolve(sets=["values.cni.backend=acme-ebpf", "values.global.nativeNftables=maybe"])
    assert caught.value.problems == (
        "values.global.nativeNftables: expected true or false, got 'maybe'",)
    with pytest.raises(ValuesError) as caught:
        resolve(sets=["values.cni.backend=acme-ebpf"])
    assert caught.value.problems == (
        "values.cni.backend: no installed meshcni extension registers the backend 'acme-ebpf'",)
