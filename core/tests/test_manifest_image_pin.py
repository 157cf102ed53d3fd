"""`meshcni manifest generate` pins the install-cni image by the digest `make image` writes."""

import subprocess

import yaml

from meshcni_testing.processes import MESHCNI

DIGEST = "sha256:" + "0123456789abcdef" * 4


def generate(*sets: str) -> subprocess.CompletedProcess[str]:
    flags = [word for value in sets for word in ("--set", value)]
    return subprocess.run([MESHCNI, "manifest", "generate", *flags], capture_output=True, text=True, timeout=60)


def images(done: subprocess.CompletedProcess[str]) -> dict[str, str]:
    assert done.returncode == 0, done.stderr
    return {f"{doc['kind']}/{doc['metadata']['name']}": doc["spec"]["template"]["spec"]["containers"][0]["image"]
            for doc in yaml.safe_load_all(done.stdout) if doc["kind"] in ("DaemonSet", "Deployment")}


def test_a_full_reference_with_a_digest_pins_the_daemon_set_and_the_repair_deployment():
    reference = f"registry.example/meshcni/install-cni:0.1.0@{DIGEST}"  # what build/image/reference holds
    assert images(generate(f"values.cni.image={reference}")) == {
        "DaemonSet/istio-cni-node": reference, "Deployment/istio-cni-repair": reference}


def test_a_digest_as_the_tag_pins_hub_and_name():
    assert images(generate("values.cni.hub=registry.example/meshcni", f"values.cni.tag={DIGEST}")) == {
        "DaemonSet/istio-cni-node": f"registry.example/meshcni/install-cni@{DIGEST}",
        "Deployment/istio-cni-repair": f"registry.example/meshcni/install-cni@{DIGEST}"}
    tag_and_digest = images(generate("hub=registry.example/meshcni", f"tag=0.1.0@{DIGEST}"))
    assert set(tag_and_digest.values()) == {f"registry.example/meshcni/install-cni:0.1.0@{DIGEST}"}


def test_a_malformed_digest_is_refused_before_anything_is_printed():
    for bad in (f"registry.example/install-cni@{DIGEST[:-1]}", f"registry.example/install-cni@{DIGEST.upper()}",
                "registry.example/install-cni@md5:0123"):
        done = generate(f"values.cni.image={bad}")
        assert done.returncode == 2 and done.stdout == "", bad
        assert "values.cni.image:" in done.stderr and "64 lower-case hex digits" in done.stderr
    done = generate(f"values.cni.tag=1.0@{DIGEST[:20]}")
    assert done.returncode == 2 and "values.cni.image:" in done.stderr
