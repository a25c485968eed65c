"""Decoded records as InfluxDB points: the telemetry part of the schema (docs/schema.md)."""

from __future__ import annotations

from ingest.telemetry.contract import DeviceEvent, Reading, Record, StatusReport
from timeseries.lineprotocol import Point
from timeseries.schema import DEVICE_EVENT, DEVICE_STATUS, TELEMETRY


def record_point(record: Record) -> Point:
    """The InfluxDB point for a decoded record."""
    device = record.device
    tags = {"site_id": device.site_id, "device_id": device.device_id, "device_type": device.type}
    if isinstance(record, Reading):
        return Point(TELEMETRY, tags, record.values, record.ts_ns)
    if isinstance(record, StatusReport):
        return Point(DEVICE_STATUS, tags, {"online": record.online}, record.ts_ns)
    assert isinstance(record, DeviceEvent)
    return Point(
        DEVICE_EVENT,
        {**tags, "kind": record.kind},
        {
            "severity": record.severity.value,
            "details": record.details,
            "evidence": record.evidence,
        },
        record.ts_ns,
    )
