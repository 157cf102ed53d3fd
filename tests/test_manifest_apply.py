"""``meshcni manifest apply`` against the API stand-in: exactly the generated objects, idempotent."""

from __future__ import annotations

import subprocess

from meshcni_core.devtools.apiserver import FakeApiServer
from meshcni_core.devtools.processes import MESHCNI
from meshcni_core.manifest.apply import object_path
from meshcni_core.manifest.render import render
from meshcni_core.manifest.values import resolve

OPENSHIFT = ["values.cni.platform=openshift", "values.cni.platformSettings.applicationNamespaces[0]=bookinfo"]


def apply(kubeconfig: str, *extra: str) -> subprocess.CompletedProcess[str]:
    sets = [w for s in OPENSHIFT for w in ("--set", s)]
    return subprocess.run([MESHCNI, "manifest", "apply", "--kubeconfig", kubeconfig, *sets, *extra],
                          capture_output=True, text=True, timeout=120)


def test_apply_creates_exactly_the_generated_objects_then_changes_nothing(tmp_path):
    expected = render(resolve(sets=OPENSHIFT))
    with FakeApiServer() as api:
        kubeconfig = api.write_kubeconfig(str(tmp_path / "kubeconfig"))
        dry = apply(kubeconfig, "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert api.objects == {}
        assert dry.stdout.count("created (dry run)") == len(expected)

        first = apply(kubeconfig)
        assert first.returncode == 0, first.stderr
        assert first.stdout.splitlines()[0] == "ServiceAccount/istio-cni -n kube-system created"
        assert first.stdout.count(" created\n") == len(expected)
        assert set(api.objects) == {object_path(d) for d in expected}
        for document in expected:
            stored = dict(api.objects[object_path(document)])
            stored["metadata"] = {k: v for k, v in stored["metadata"].items() if k not in ("resourceVersion", "uid")}
            assert stored == document
        versions = {path: obj["metadata"]["resourceVersion"] for path, obj in api.objects.items()}

        second = apply(kubeconfig)
        assert second.returncode == 0, second.stderr
        assert second.stdout.count(" unchanged\n") == len(expected)
        assert {path: obj["metadata"]["resourceVersion"] for path, obj in api.objects.items()} == versions

        changed = apply(kubeconfig, "--set", "values.cni.logLevel=debug")
        assert changed.returncode == 0, changed.stderr
        assert sorted(line for line in changed.stdout.splitlines() if line.endswith(" configured")) == [
            "ConfigMap/istio-cni-config -n kube-system configured",
            "DaemonSet/istio-cni-node -n kube-system configured",
        ]
        assert all(m == "PATCH" or m == "GET" for m, _, _ in api.requests)


def test_bad_values_send_nothing(tmp_path):
    with FakeApiServer() as api:
        kubeconfig = api.write_kubeconfig(str(tmp_path / "kubeconfig"))
        refused = apply(kubeconfig, "--set", "values.cni.chained=maybe")
        assert refused.returncode == 2 and refused.stdout == ""
        assert "values.cni.chained: expected true or false" in refused.stderr
        assert api.requests == []


def test_an_unauthorised_identity_fails_naming_the_object(tmp_path):
    with FakeApiServer() as api:
        kubeconfig = api.write_kubeconfig(str(tmp_path / "kubeconfig"), token="wrong")
        refused = apply(kubeconfig)
        assert refused.returncode == 2
        assert "applying ServiceAccount/istio-cni failed: 401" in refused.stderr
