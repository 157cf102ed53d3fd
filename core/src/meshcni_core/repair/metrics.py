"""Prometheus metrics of the repair controller."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from meshcni_core.repair.controller import RepairController


class RepairCollector(Collector):
    def __init__(self, controller: RepairController):
        self.controller = controller

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        stats = self.controller.stats
        yield CounterMetricFamily("meshcni_repair_broken_pods", "pods found started without redirection",
                                  value=stats.broken_seen)
        repaired = CounterMetricFamily("meshcni_repair_actions", "repairs done, by policy and result",
                                       labels=["policy", "result"])
        for key, count in sorted(stats.repaired.items()):
            policy, _, result = key.partition(":")
            repaired.add_metric([policy, result], count)
        yield repaired
        yield istio_pods_repaired(self.controller.policy.name, stats.repaired, stats.failures)
        yield CounterMetricFamily("meshcni_repair_failures", "failed repair attempts", value=stats.failures)
        yield CounterMetricFamily("meshcni_repair_given_up", "pods given up after max attempts", value=stats.given_up)
        yield GaugeMetricFamily("meshcni_repair_queue_depth", "pods waiting to be repaired",
                                value=self.controller.queue_depth())


def istio_pods_repaired(policy: str, repaired: dict[str, int], failures: int) -> CounterMetricFamily:
    """Istio's ``istio_cni_repair_pods_repaired_total{type,result}``: ``type`` is the policy,
    ``result`` success, skip (the pod already had the repair) or fail (attempts of ``policy``)."""
    family = CounterMetricFamily("istio_cni_repair_pods_repaired", "Total number of pods repaired by repair controller",
                                 labels=["type", "result"])
    totals = {(policy, "success"): 0, (policy, "skip"): 0, (policy, "fail"): failures}
    for key, count in repaired.items():
        used, _, outcome = key.partition(":")
        result = "skip" if outcome.startswith("already") else "success"
        totals[(used, result)] = totals.get((used, result), 0) + count
    for labels, count in sorted(totals.items()):
        family.add_metric(list(labels), count)
    return family
