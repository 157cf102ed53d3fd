"""install-cni's /metrics after a mixed run of real istio-cni executions: the counts equal what
was sent, the ADD latency histogram is sane, and Istio's install metrics are there."""

from __future__ import annotations

import json
import os

import pytest
from node_agent import PRIMARY, InstallCni
from prometheus_client.parser import text_string_to_metric_families

from meshcni_testing.netlab import cni, mesh_netconf

pytestmark = pytest.mark.netns
BAD = {"traffic.sidecar.istio.io/includeOutboundIPRanges": "not-a-cidr"}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def requests(scraped: dict, **labels: str) -> float:
    key = ("meshcni_cni_requests_total", tuple(sorted(labels.items())))
    return scraped.get(key, 0.0)


def test_counts_equal_what_was_sent_and_the_add_histogram_is_sane(host, netns_lab):
    (host.conf_dir / "10-ptp.conflist").write_text(json.dumps(PRIMARY))
    socket = str(host.root / "run" / "cni.sock")
    agent = InstallCni(host, socket)
    try:
        agent.wait_for(lambda: 'istio_cni_install_ready 1.0' in agent.metrics(), "install-cni never got ready")
        eligible = []
        for i in range(3):
            ns = netns_lab.netns(f"m{i}")
            assert cni("ADD", ns, mesh_netconf(agent_socket=socket), pod=f"mesh-{i}").returncode == 0
            eligible.append((ns, f"mesh-{i}"))
        # Two runs the plugin serves itself: its netconf names a socket beside the agent's where
        # nobody listens (as during an upgrade's gap), so their records go through the spool.
        unserved = str(host.root / "run" / "not-listening.sock")
        for i in range(2):
            assert cni("ADD", netns_lab.netns(f"p{i}"), mesh_netconf(mesh=False, agent_socket=unserved),
                       pod=f"plain-{i}").returncode == 0
        codes = set()
        for i in range(2):
            result = cni("ADD", netns_lab.netns(f"b{i}"), mesh_netconf(BAD, agent_socket=socket), pod=f"bad-{i}")
            assert result.returncode != 0
            codes.add(json.loads(result.stdout)["code"])
        for ns, pod in eligible:
            assert cni("DEL", ns, mesh_netconf(agent_socket=socket), pod=pod).returncode == 0
        (code,) = codes

        def scraped() -> dict:
            return samples(agent.metrics())

        # The pass-throughs were answered by the plugin itself and reach the agent through the spool.
        agent.wait_for(lambda: requests(scraped(), command="ADD", result="passed_through", code="",
                                        served_by="plugin") == 2, "the spooled runs were not counted")
        now = scraped()
        assert requests(now, command="ADD", result="redirected", code="", served_by="agent") == 3
        assert requests(now, command="ADD", result="failed", code=str(code), served_by="agent") == 2
        assert requests(now, command="DEL", result="ok", code="", served_by="agent") == 3
        total = sum(v for (name, _), v in now.items() if name == "meshcni_cni_requests_total")
        assert total == 3 + 2 + 2 + 3, "nothing else was counted"

        for served_by, count in (("agent", 5), ("plugin", 2)):
            labels = (("served_by", served_by),)
            assert now[("meshcni_cni_add_seconds_count", labels)] == count
            buckets = sorted((float(dict(lbl)["le"]), v) for (name, lbl), v in now.items()
                             if name == "meshcni_cni_add_seconds_bucket" and dict(lbl)["served_by"] == served_by)
            values = [v for _, v in buckets]
            assert values == sorted(values) and buckets[-1] == (float("inf"), count)
            # Timed from the plugin process's start, so the interpreter's start-up is in it: never 5 ms.
            assert buckets[0] == (0.005, 0.0)
            assert 0.005 * count < now[("meshcni_cni_add_seconds_sum", labels)] < 60 * count

        assert now[("istio_cni_install_ready", ())] == 1.0
        assert now[("istio_cni_installs_total", (("result", "SUCCESS"),))] >= 1
    finally:
        agent.stop()


def test_installs_are_counted_by_istio_s_results(host):
    from prometheus_client import CollectorRegistry, generate_latest

    from meshcni_core.install.monitoring import InstallerCollector

    installer = host.installer()
    registry = CollectorRegistry()
    registry.register(InstallerCollector(installer))
    source = host.root / "plugin"
    os.rename(source, host.root / "plugin-away")
    installer.reconcile()  # no plugin to copy
    os.rename(host.root / "plugin-away", source)
    (host.root / "serviceaccount" / "token").unlink()
    installer.reconcile()  # binary copied, no token for the kubeconfig
    (host.root / "serviceaccount" / "token").write_text("tok\n")
    installer.reconcile()  # no primary configuration to chain into
    (host.conf_dir / "10-ptp.conflist").write_text(json.dumps(PRIMARY))
    installer.reconcile()
    installer.reconcile()  # nothing to do: not counted
    scraped = samples(generate_latest(registry).decode())
    assert {dict(labels)["result"]: value for (name, labels), value in scraped.items()
            if name == "istio_cni_installs_total"} == {
        "COPY_BINARIES_FAILURE": 1.0, "CREATE_KUBECONFIG_FAILURE": 1.0, "CREATE_CNI_CONFIG_FAILURE": 1.0,
        "SUCCESS": 1.0}
    assert scraped[("istio_cni_install_ready", ())] == 1.0
