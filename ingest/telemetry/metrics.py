"""Ingest counters in Prometheus form, in the service's registry (one per service, so tests can
run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class IngestMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.received = Counter(
            "mingliang_ingest_messages_received",
            "MQTT messages received, by channel (telemetry, status, events, other)",
            ["channel"],
            registry=r,
        )
        self.acked = Counter(
            "mingliang_ingest_messages_acked",
            "QoS 1 messages acknowledged to the broker",
            registry=r,
        )
        self.records = Counter(
            "mingliang_ingest_records_accepted",
            "Readings, status reports and events that passed validation",
            registry=r,
        )
        self.rejected = Counter(
            "mingliang_ingest_rejected",
            "Rejected messages or array elements, by reason (docs/mqtt-contract.md)",
            ["reason"],
            registry=r,
        )
        self.written = Counter(
            "mingliang_ingest_points_written",
            "Points InfluxDB accepted, written directly or replayed from the spool",
            ["path"],
            registry=r,
        )
        self.spooled = Counter(
            "mingliang_ingest_points_spooled",
            "Points written to the on-disk spool because InfluxDB was unavailable",
            registry=r,
        )
        self.dead_lettered = Counter(
            "mingliang_ingest_points_dead_lettered",
            "Points InfluxDB refused (parse error, type conflict), kept in deadletter.jsonl",
            registry=r,
        )
        self.influx_errors = Counter(
            "mingliang_ingest_influx_unavailable",
            "Write attempts that found InfluxDB unavailable",
            registry=r,
        )
        self.spool_points = Gauge(
            "mingliang_ingest_spool_points", "Points waiting in the spool", registry=r
        )
        self.spool_bytes = Gauge(
            "mingliang_ingest_spool_bytes", "Bytes waiting in the spool", registry=r
        )
        self.pending = Gauge(
            "mingliang_ingest_pending_messages",
            "Messages received but not yet durable (not yet acknowledged)",
            registry=r,
        )
        self.mqtt_connected = Gauge(
            "mingliang_ingest_mqtt_connected", "1 while connected to the broker", registry=r
        )
        self.influx_up = Gauge(
            "mingliang_ingest_influx_up", "1 while the last write to InfluxDB succeeded", registry=r
        )
        self.batch_seconds = Histogram(
            "mingliang_ingest_batch_write_seconds",
            "Time to make one batch durable (InfluxDB write or spool append)",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.internal_dropped = Counter(
            "mingliang_ingest_internal_points_dropped",
            "The service's own points (alert counts, camera health) dropped because too many "
            "were waiting for the writer",
            registry=r,
        )
        self.qos0_dropped = Counter(
            "mingliang_ingest_qos0_dropped",
            "QoS 0 messages dropped because the writer was too far behind (QoS 1 never is)",
            registry=r,
        )
        self.rejects_file_errors = Counter(
            "mingliang_ingest_rejects_file_errors",
            "Failed writes or rotations of rejects.jsonl or deadletter.jsonl (see the log)",
            registry=r,
        )
        self.ack_latency = Histogram(
            "mingliang_ingest_ack_latency_seconds",
            "From receiving a message to acknowledging it (durable)",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
