"""The alerts' Prometheus series, in the runtime's registry (what /metrics renders)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class AlertMetrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        r = registry if registry is not None else CollectorRegistry(auto_describe=True)
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
