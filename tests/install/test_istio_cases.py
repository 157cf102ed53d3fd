"""Istio's eleven install-cni cases (istio-cni-behavior.md §5.11), with meshcni's improvements:
a converted .conf keeps its name and cniVersion, and uninstall gives the .conf back."""

from __future__ import annotations

import json
import shutil

import pytest

from meshcni_core.install import chaining

CASES = [  # (files in order, CNI_CONF_NAME, expected result file)
    (["calico.conflist"], "00-calico.conflist", "00-calico.conflist"),
    (["minikube_cni.conf"], "00-minikube_cni.conf", "00-minikube_cni.conflist"),
    (["calico.conflist", "minikube_cni.conf"], "", "00-calico.conflist"),
    (["minikube_cni.conf", "calico.conflist"], "", "00-minikube_cni.conflist"),
    (["non_json.conf", "minikube_cni.conf", "calico.conflist"], "", "01-minikube_cni.conflist"),
    (["non_json.conf", "calico.conflist", "minikube_cni.conf"], "", "01-calico.conflist"),
    (["bad_minikube_cni.conf", "minikube_cni.conf", "calico.conflist"], "", "01-minikube_cni.conflist"),
    (["bad_minikube_cni.conf", "calico.conflist", "minikube_cni.conf"], "", "01-calico.conflist"),
    (["noname_calico.conflist", "noplugins_calico.conflist", "minikube_cni.conf", "calico.conflist"], "",
     "02-minikube_cni.conflist"),
    (["noname_calico.conflist", "noplugins_calico.conflist", "calico.conflist", "minikube_cni.conf"], "",
     "02-calico.conflist"),
    (["calico.conflist"], "00-calico.conf", "00-calico.conflist"),
]


def load(reference, name):
    return json.loads((reference / name).read_text())


@pytest.mark.parametrize(("files", "conf_name", "result"), CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_istio_install_case(host, reference, files, conf_name, result):
    for index, name in enumerate(files):
        shutil.copy(reference / f"istio-fixture-pre-{name}", host.conf_dir / f"0{index}-{name}")
    before = host.files()
    status = host.installer(cni_conf_name=conf_name).reconcile()
    assert status.conf_file == result
    doc = json.loads((host.conf_dir / result).read_text())
    assert doc["plugins"][-1].pop("require_agent") is True  # ours: STATUS needs the node agent
    if "calico" in result:
        assert doc == load(reference, "istio-fixture-expected-10-calico.conflist-istioconfig")
    else:
        istio = load(reference, "istio-fixture-expected-minikube_cni.conflist.expected")
        original = load(reference, "istio-fixture-pre-minikube_cni.conf")
        # Istio renamed the network "k8s-pod-network" and forced cniVersion 0.3.0; we keep both.
        assert doc["name"] == original["name"] == "rkt.kubernetes.io" and "cniVersion" not in doc
        assert doc["plugins"][0] == original == istio["plugins"][0]
        assert {k: v for k, v in doc["plugins"][1].items() if k != chaining.MARKER} == istio["plugins"][1]
        assert not (host.conf_dir / result.replace(".conflist", ".conf")).exists()
    assert (host.bin_dir / "istio-cni").exists()
    host.installer(cni_conf_name=conf_name).uninstall()
    assert host.files() == before  # Istio left a converted .conflist named k8s-pod-network behind
    assert not (host.bin_dir / "istio-cni").exists()
