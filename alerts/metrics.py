"""The alert engine's counters, in the service's Prometheus registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class AlertMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.backlog = Gauge(
            "mingliang_alerts_engine_backlog",
            "Stored records waiting for rule evaluation",
            registry=r,
        )
        self.queue_full = Counter(
            "mingliang_alerts_engine_queue_full",
            "Times ingest had to wait because the rules' record queue was full",
            registry=r,
        )
        self.outbox = Gauge(
            "mingliang_alerts_outbox_signals",
            "Alert signals waiting to be stored (grows while the alert database is away)",
            registry=r,
        )
        self.outbox_full = Counter(
            "mingliang_alerts_outbox_full",
            "Times the rules had to wait because the outbox of signals was full",
            registry=r,
        )
        self.rule_seconds = Histogram(
            "mingliang_alerts_rule_seconds",
            "Time to evaluate the rules over one batch of records",
            buckets=_SECONDS,
            registry=r,
        )
        self.rule_ticks = Counter(
            "mingliang_alerts_rule_ticks",
            "Clock ticks on which rules were evaluated without a message arriving",
            registry=r,
        )
        self.rule_errors = Counter(
            "mingliang_alerts_rule_errors",
            "Rule evaluations that raised an exception (the other rules went on), by rule",
            ["rule"],
            registry=r,
        )
        self.alerts_raised = Counter(
            "mingliang_alerts_raised",
            "Raise signals stored (new alerts and repeats), by kind",
            ["kind"],
            registry=r,
        )
        self.alerts_cleared = Counter(
            "mingliang_alerts_cleared",
            "Alerts resolved because their condition cleared, by kind",
            ["kind"],
            registry=r,
        )
