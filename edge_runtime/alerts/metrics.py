"""The alerts' Prometheus series, in the runtime's registry (what /metrics renders)."""
from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily

PRECISION = "lvm_alert_rule_precision"
PRECISION_HELP = ("A rule's precision per stream over its last verdicts (alerts.precision_verdicts): right "
                  "(confirmed or customer_fixed) / all; no series before its first verdict")


class AlertMetrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        r = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self._registry = r
        self.raised = Counter("lvm_alerts_raised", "New alerts put in the outbox", ["stream", "rule"], registry=r)
        self.delivered = Counter("lvm_alerts_delivered", "Alerts a sink acknowledged", ["sink"], registry=r)
        self.delivery_errors = Counter("lvm_alerts_delivery_errors", "Failed delivery attempts", ["sink"], registry=r)
        self.pending = Gauge("lvm_alerts_pending", "Alerts a sink has not acknowledged yet", ["sink"], registry=r)
        self.broker_connected = Gauge("lvm_alerts_broker_connected",
                                      "1 while every stream's MQTT connection is up", registry=r)
        self.evaluation_errors = Counter("lvm_alerts_evaluation_errors", "Rule evaluations that failed",
                                         ["stream"], registry=r)
        # with alerts.scans pos: a feed that stops while the lane streams makes every bag an alert
        self.pos_scans = Counter("lvm_alerts_pos_scans", "New till scans received (alerts.scans pos)",
                                 ["stream"], registry=r)
        self.held = Counter("lvm_alerts_held", "New alerts the verifier held (stored, not sent or nudged)",
                            ["stream", "rule"], registry=r)
        self.cleared = Counter("lvm_alerts_cleared", "Item alerts cleared: the item scanned or put back after the "
                               "alert (edge_runtime/alerts/cleared.py)", ["stream", "rule", "why"], registry=r)
        self.verdicts = Counter("lvm_alert_verdicts", "Verdicts staff gave on alerts, by outcome",
                                ["stream", "rule", "outcome"], registry=r)

    def watch_precision(self, precision: Callable[[], dict[tuple[str, str], float]]) -> None:
        """Serve ``lvm_alert_rule_precision{stream,rule}`` from ``precision()`` ((stream, rule) -> precision,
        read at each scrape from the outbox, which owns the verdicts)."""
        self._registry.register(_PrecisionCollector(precision))


class _PrecisionCollector:
    def __init__(self, precision: Callable[[], dict[tuple[str, str], float]]) -> None:
        self._precision = precision

    def describe(self):
        return [GaugeMetricFamily(PRECISION, PRECISION_HELP, labels=["stream", "rule"])]

    def collect(self):
        g = GaugeMetricFamily(PRECISION, PRECISION_HELP, labels=["stream", "rule"])
        for (stream, rule), value in sorted(self._precision().items()):
            g.add_metric([stream, rule], value)
        yield g
