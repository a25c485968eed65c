"""Messages that break the MQTT contract in each way it names, one rejection reason each.

Used by the `malformed` fault, and by ingest's tests as a catalogue of bad input: every
`BadMessage` says which reason of docs/mqtt-contract.md ingest must count it under.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from devices.models import Device, Metric, MetricType
from devices.registry import Registry
from simulators.clock import DISTRICT_TZ
from simulators.payloads import Channel, topic
from simulators.values import Value

# The rejection reasons of docs/mqtt-contract.md, in the order of its table.
REASONS: tuple[str, ...] = (
    "bad_topic",
    "unknown_device",
    "site_mismatch",
    "payload_mismatch",
    "too_large",
    "malformed_json",
    "bad_schema",
    "unknown_metric",
    "wrong_type",
    "non_finite",
    "out_of_range",
    "unknown_kind",
    "bad_timestamp",
    "timestamp_out_of_range",
)


@dataclass(frozen=True)
class BadMessage:
    reason: str  # the rejection reason ingest must give
    topic: str
    payload: bytes
    what: str  # what is wrong, for people reading test output


def _valid_value(metric: Metric) -> Value:
    if metric.type is MetricType.BOOL:
        return False
    if metric.type is MetricType.STRING:
        return ""
    lo = metric.min if metric.min is not None else 0.0
    hi = metric.max if metric.max is not None else lo + 100.0
    mid = (lo + hi) / 2 if metric.min is not None and metric.max is not None else lo
    return int(mid) if metric.type is MetricType.INT else float(mid)


def _wrong_type(metric: Metric) -> object:
    if metric.type is MetricType.BOOL:
        return "yes"
    if metric.type is MetricType.STRING:
        return 42
    return f"{_valid_value(metric)}"  # a number sent as a string


def _out_of_range(metric: Metric) -> object | None:
    if metric.name == "temp_c":
        return -127.0  # what a DS18B20 probe reports when disconnected
    if metric.type in (MetricType.FLOAT, MetricType.INT):
        if metric.min is not None:
            below = metric.min - max(1.0, abs(metric.min))
            return int(below) if metric.type is MetricType.INT else below
        if metric.max is not None:
            above = metric.max + max(1.0, abs(metric.max))
            return int(above) if metric.type is MetricType.INT else above
        return None
    if metric.type is MetricType.STRING:
        return "x" * (metric.max_length + 1)
    return None


def _dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _other(ids: list[str], mine: str) -> str:
    return next((i for i in sorted(ids) if i != mine), f"{mine}-other")


def bad_messages(
    registry: Registry,
    device: Device,
    ts_ms: int,
    *,
    values: Mapping[str, Value] | None = None,
    max_payload_bytes: int = 65536,
    max_past_s: int = 2_592_000,
    max_future_s: int = 300,
) -> tuple[BadMessage, ...]:
    """Bad messages from `device` at wall time `ts_ms`, covering every reason in `REASONS`.

    `values` is a good reading to wrap in the messages whose only fault is elsewhere (topic,
    size, identity); by default a valid value of the device's first metric. The limits are
    ingest's (`[ingest]` in config/default.toml).
    """
    metrics = registry.metrics_of(device)
    first = next(iter(metrics.values()))
    good: dict[str, Value] = dict(values) if values else {first.name: _valid_value(first)}
    numeric = next(
        (m for m in metrics.values() if m.type in (MetricType.FLOAT, MetricType.INT)), first
    )
    ranged = next((m for m in metrics.values() if _out_of_range(m) is not None), first)
    unknown_metric = next(n for n in ("co2_ppm", "co2_ppm_x") if n not in metrics)

    site, dev = device.site_id, device.device_id
    telemetry = topic(site, dev, Channel.TELEMETRY)
    ghost = next(
        f"{site}-ghost-{i}" for i in range(1, 1000) if f"{site}-ghost-{i}" not in registry.devices
    )
    other_site = _other(list(registry.sites), site)
    other_device = _other(list(registry.devices), dev)
    reading = _dumps({"ts": ts_ms, "values": good})
    naive = datetime.fromtimestamp(ts_ms / 1000, DISTRICT_TZ).replace(tzinfo=None)

    def one(reason: str, payload: bytes, what: str, on: str = telemetry) -> BadMessage:
        return BadMessage(reason, on, payload, what)

    out = [
        one(
            "bad_topic",
            reading,
            "unknown channel 'readings'",
            f"v1/sites/{site}/devices/{dev}/readings",
        ),
        one(
            "unknown_device",
            reading,
            f"device {ghost!r} is not in the inventory",
            topic(site, ghost, Channel.TELEMETRY),
        ),
        one(
            "site_mismatch",
            reading,
            f"topic names site {other_site!r}",
            topic(other_site, dev, Channel.TELEMETRY),
        ),
        one(
            "payload_mismatch",
            _dumps({"ts": ts_ms, "device_id": other_device, "values": good}),
            f"payload device_id {other_device!r}",
        ),
        # Valid JSON padded with whitespace: its size is the only thing wrong with it.
        one(
            "too_large",
            reading + b" " * (max_payload_bytes + 1024 - len(reading)),
            f"{max_payload_bytes + 1024} bytes",
        ),
        one("malformed_json", reading[: len(reading) // 2], "truncated JSON"),
        one(
            "malformed_json",
            b'{"ts":%d,"values":{"%s":"\xff\xfe"}}' % (ts_ms, first.name.encode()),
            "not UTF-8",
        ),
        one("bad_schema", _dumps({"ts": ts_ms, "values": 3.9}), '"values" is not an object'),
        one(
            "unknown_metric",
            _dumps({"ts": ts_ms, "values": {unknown_metric: 415.0}}),
            f"{unknown_metric!r} is not a metric of {device.type!r}",
        ),
        one(
            "wrong_type",
            _dumps({"ts": ts_ms, "values": {first.name: _wrong_type(first)}}),
            f"{first.name} of the wrong JSON type",
        ),
        one(
            "non_finite",
            b'{"ts":%d,"values":{"%s":NaN}}' % (ts_ms, numeric.name.encode()),
            "NaN literal",
        ),
        one(
            "non_finite",
            b'{"ts":%d,"values":{"%s":-Infinity}}' % (ts_ms, numeric.name.encode()),
            "-Infinity literal",
        ),
        one(
            "out_of_range",
            _dumps({"ts": ts_ms, "values": {ranged.name: _out_of_range(ranged)}}),
            f"{ranged.name} outside [{ranged.min}, {ranged.max}]",
        ),
        one(
            "unknown_kind",
            _dumps({"ts": ts_ms, "kind": "unicorn_sighting", "severity": "minor"}),
            "event kind 'unicorn_sighting' is not in the taxonomy",
            topic(site, dev, Channel.EVENTS),
        ),
        one(
            "bad_timestamp",
            _dumps({"ts": naive.isoformat(timespec="seconds"), "values": good}),
            "RFC 3339 time stamp without a zone",
        ),
        one(
            "timestamp_out_of_range",
            _dumps({"ts": ts_ms - (max_past_s + 86400) * 1000, "values": good}),
            f"more than {max_past_s} s in the past",
        ),
        one(
            "timestamp_out_of_range",
            _dumps({"ts": ts_ms + (max_future_s + 86400) * 1000, "values": good}),
            f"more than {max_future_s} s in the future",
        ),
    ]
    return tuple(out)
