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
        yield CounterMetricFamily("meshcni_repair_failures", "failed repair attempts", value=stats.failures)
        yield CounterMetricFamily("meshcni_repair_given_up", "pods given up after max attempts", value=stats.given_up)
        yield GaugeMetricFamily("meshcni_repair_queue_depth", "pods waiting to be repaired",
                                value=self.controller.queue_depth())
