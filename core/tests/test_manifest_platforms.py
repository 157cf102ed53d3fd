"""Platform extensions: values.cni.platform applies the seed's per-platform settings as defaults."""

import kubernetes_validate
import pytest
from seed_examples import GKE, OPENSHIFT, sets_of

from meshcni_core.install.settings import from_env
from meshcni_core.manifest.render import render
from meshcni_core.manifest.values import ValuesError, resolve
from meshcni_hooks.errors import MeshcniError

# seLinuxOptions: today's Istio openshift profile runs install-cni as spc_t; the seed's line predates it.
WITHOUT_PLATFORM_KEY = ("platform", "seLinuxOptions")


def comparable(resolved):
    return resolved.namespace, {k: v for k, v in resolved.cni.items() if k not in WITHOUT_PLATFORM_KEY}


@pytest.mark.parametrize(("platform", "seed_line"), [("gke", GKE), ("openshift", OPENSHIFT)])
def test_a_platform_is_its_seed_line(platform, seed_line):
    by_platform = resolve(sets=[f"values.cni.platform={platform}"])
    by_seed = resolve(sets=sets_of(seed_line))
    assert comparable(by_platform) == comparable(by_seed)
    assert by_platform.elsewhere == by_seed.elsewhere  # OpenShift's injector annotation, reported


def test_explicit_values_win_over_the_platform_whatever_their_order(tmp_path):
    overlay = tmp_path / "mine.yaml"
    overlay.write_text("apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\n"
                       "spec: {values: {cni: {platform: openshift, cniConfDir: /etc/cni/other}}}\n")
    resolved = resolve([overlay], sets=["values.cni.chained=true"])
    assert (resolved.cni["cniConfDir"], resolved.cni["chained"], resolved.cni["cniBinDir"]) == \
        ("/etc/cni/other", True, "/var/lib/cni/bin")


def test_unknown_platform_names_the_installed_ones():
    with pytest.raises(MeshcniError, match=r"'aks' needs the extension 'platform-aks'.*installed platforms: gke, "
                                           r"openshift"):
        resolve(sets=["values.cni.platform=aks"])


def test_a_malformed_platform_name_is_a_values_error():
    with pytest.raises(ValuesError, match="values.cni.platform: 'Open Shift' is not a platform name"):
        resolve(sets=["values.cni.platform=Open Shift"])


def test_openshift_objects():
    resolved = resolve(sets=["values.cni.platform=openshift", "tag=1.6.0",
                             "values.cni.platformSettings.applicationNamespaces[0]=bookinfo",
                             "values.cni.platformSettings.applicationNamespaces[1]=shop"])
    objects = {(d["kind"], d["metadata"]["name"], d["metadata"].get("namespace")): d for d in render(resolved)}
    scc = objects[("ClusterRole", "istio-cni-scc-privileged", None)]
    assert scc["rules"] == [{"apiGroups": ["security.openshift.io"], "resources": ["securitycontextconstraints"],
                             "resourceNames": ["privileged"], "verbs": ["use"]}]
    binding = objects[("ClusterRoleBinding", "istio-cni-scc-privileged", None)]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "istio-cni", "namespace": "kube-system"}]
    nads = sorted(k[2] for k in objects if k[0] == "NetworkAttachmentDefinition")
    assert nads == ["bookinfo", "shop"]
    # The proxy's UID 1337 needs the anyuid SCC in application namespaces (the seed's manual step).
    anyuid = objects[("ClusterRole", "istio-cni-application-scc-anyuid", None)]
    assert anyuid["rules"][0]["resourceNames"] == ["anyuid"] and anyuid["rules"][0]["verbs"] == ["use"]
    grant = objects[("RoleBinding", "istio-cni-application-scc-anyuid", "shop")]
    assert grant["subjects"] == [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group",
                                  "name": "system:serviceaccounts:shop"}]
    assert grant["roleRef"]["name"] == "istio-cni-application-scc-anyuid"
    assert sorted(k[2] for k in objects if k[0] == "RoleBinding" and k[1] != "istio-cni") == ["bookinfo", "shop"]
    assert objects[("NetworkAttachmentDefinition", "istio-cni", "shop")]["apiVersion"] == "k8s.cni.cncf.io/v1"
    install_cni = objects[("DaemonSet", "istio-cni-node", "kube-system")]["spec"]["template"]["spec"]["containers"][0]
    assert install_cni["securityContext"]["seLinuxOptions"] == {"type": "spc_t"}  # as Istio's openshift profile
    for (kind, _, _), document in objects.items():
        if kind != "NetworkAttachmentDefinition":  # a Multus CRD: not in the Kubernetes schemas
            kubernetes_validate.validate(document, "1.37.0", strict=True)


def test_openshift_refuses_unknown_settings():
    resolved = resolve(sets=["values.cni.platform=openshift", "values.cni.platformSettings.namespaces[0]=x"])
    with pytest.raises(MeshcniError, match="unknown key.s. namespaces for openshift"):
        render(resolved)


def test_gke_adds_no_objects():
    plain = {(d["kind"], d["metadata"]["name"]) for d in render(resolve(sets=sets_of(GKE)))}
    assert {(d["kind"], d["metadata"]["name"]) for d in render(resolve(sets=["values.cni.platform=gke"]))} == plain


@pytest.mark.parametrize("platform", ["gke", "openshift"])
def test_install_cni_is_told_the_platform_so_its_node_checks_run(platform):
    def install_env(resolved):
        [daemon_set] = [d for d in render(resolved) if d["kind"] == "DaemonSet"]
        return {v["name"]: v.get("value") for v in daemon_set["spec"]["template"]["spec"]["containers"][0]["env"]}

    env = install_env(resolve(sets=[f"values.cni.platform={platform}"]))
    assert env["MESHCNI_PLATFORM"] == platform
    assert from_env({k: v for k, v in env.items() if v is not None}).platform == platform
    assert "MESHCNI_PLATFORM" not in install_env(resolve(sets=sets_of(GKE if platform == "gke" else OPENSHIFT)))


def test_openshift_application_scc_can_be_another_or_none():
    def kinds(*sets):
        resolved = resolve(sets=["values.cni.platform=openshift",
                                 "values.cni.platformSettings.applicationNamespaces[0]=shop", *sets])
        return {(d["kind"], d["metadata"]["name"]) for d in render(resolved)}

    assert ("ClusterRole", "istio-cni-application-scc-nonroot") in kinds(
        "values.cni.platformSettings.applicationSCC=nonroot")
    granted_nothing = kinds('values.cni.platformSettings.applicationSCC=""')
    assert not any(name.startswith("istio-cni-application-scc") for _, name in granted_nothing)
    assert ("NetworkAttachmentDefinition", "istio-cni") in granted_nothing
    with pytest.raises(MeshcniError, match="applicationSCC: expected the name of a SecurityContextConstraints"):
        kinds("values.cni.platformSettings.applicationSCC=Any UID")
    with pytest.raises(MeshcniError, match="applicationNamespaces: expected a list of namespace names"):
        kinds("values.cni.platformSettings.applicationNamespaces[1]=Shop_2")
