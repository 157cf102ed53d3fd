"""`make demo` keeps working: its table says where every connection went, and it cleans up."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.netns


@pytest.mark.parametrize("flags", [[], ["--no-agent"]], ids=["agent", "in-process"])
def test_demo_table(flags):
    proc = subprocess.run([sys.executable, "-m", "meshcni_testing.demo", *flags], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[0]: line for line in proc.stdout.splitlines() if line.startswith(("bookinfo/", "jobs/", "istio-system/"))}
    assert "proxy :15001 (orig 198.51.100.10:80)" in rows["bookinfo/productpage-v1"]
    assert "proxy :15006 (orig 192.0.2." in rows["bookinfo/productpage-v1"]
    assert "proxy :15006 TPROXY (dst kept 192.0.2." in rows["bookinfo/ratings-v1"]
    assert rows["bookinfo/reviews-v2"].split()[3:5] == ["service,", "direct"]
    assert "passed through" in rows["jobs/legacy-batch"] and "passed through" in rows["istio-system/istio-ingressgateway"]
    assert "ADD failed" in rows["bookinfo/details-v1"]
    assert "'http' is not a port number" in proc.stdout
    assert_demo_namespaces_removed(proc.stdout, pods=len(rows))


def assert_demo_namespaces_removed(output: str, pods: int) -> None:
    """The namespaces the demo says it created (a node, a remote, one per pod) are gone; other
    processes' namespaces, created or removed meanwhile, are none of this test's business."""
    created = output.split("network namespaces removed: ", 1)[1].split()
    roles = sorted(name.split("-", 1)[1] for name in created)
    assert roles == sorted(["node", "remote", *(f"pod{i}" for i in range(pods))]), created
    left = set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout.split())
    assert not left & set(created), f"the demo left network namespaces behind: {sorted(left & set(created))}"
