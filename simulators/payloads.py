"""Topics and payloads of the MQTT contract (docs/mqtt-contract.md), as the devices send them."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from enum import StrEnum

from devices.models import Device
from simulators.clock import DISTRICT_TZ
from simulators.values import Value

TOPIC_FILTER = "v1/sites/+/devices/+/#"
WILL_PAYLOAD = b"offline"  # the contract's Last Will: a bare string


class Channel(StrEnum):
    TELEMETRY = "telemetry"
    STATUS = "status"
    EVENTS = "events"


class PayloadForm(StrEnum):
    OBJECT = "object"  # {"ts": ms, "values": {...}}
    FLAT = "flat"  # {"temp_c": 3.9}: ingest stamps it with the receive time
    ARRAY = "array"  # [{"ts": "2026-...+08:00", "values": {...}}, ...]: a gateway's backlog


def topic(site_id: str, device_id: str, channel: Channel) -> str:
    return f"v1/sites/{site_id}/devices/{device_id}/{channel}"


def device_topic(device: Device, channel: Channel = Channel.TELEMETRY) -> str:
    return topic(device.site_id, device.device_id, channel)


def form_for(device: Device) -> PayloadForm:
    """Which payload form a device's live readings use.

    Camera heartbeats are flat (health, not measurements: a duplicate does no harm); the
    sensors send `ts` so that a redelivered reading is stored once.
    """
    return PayloadForm.FLAT if device.type == "kitchen_camera" else PayloadForm.OBJECT


def _dumps(obj: object) -> bytes:
    # allow_nan=False: a NaN that slipped through a model must fail here, not at ingest.
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()


def rfc3339(ts_ms: int) -> str:
    """`ts_ms` as the district's local time with its offset, e.g. 2026-11-26T15:04:10.250+08:00."""
    return datetime.fromtimestamp(ts_ms / 1000, DISTRICT_TZ).isoformat(timespec="milliseconds")


def object_payload(
    ts_ms: int, values: Mapping[str, Value], ids: tuple[str, str] | None = None
) -> bytes:
    """The object form; `ids` = (site_id, device_id) adds the optional identity keys."""
    body: dict[str, object] = {"ts": ts_ms, "values": dict(values)}
    if ids is not None:
        body["site_id"], body["device_id"] = ids
    return _dumps(body)


def flat_payload(values: Mapping[str, Value]) -> bytes:
    return _dumps(dict(values))


def array_payloads(
    readings: Iterable[tuple[int, Mapping[str, Value]]], max_readings: int, max_bytes: int
) -> list[bytes]:
    """Readings as array messages, each within the ingest limits on readings and bytes."""
    messages: list[bytes] = []
    chunk: list[bytes] = []
    size = 2
    for ts_ms, values in readings:
        element = _dumps({"ts": rfc3339(ts_ms), "values": dict(values)})
        if chunk and (len(chunk) >= max_readings or size + len(element) + 1 > max_bytes):
            messages.append(b"[" + b",".join(chunk) + b"]")
            chunk, size = [], 2
        chunk.append(element)
        size += len(element) + 1
    if chunk:
        messages.append(b"[" + b",".join(chunk) + b"]")
    return messages


def live_payload(
    device: Device, form: PayloadForm, ts_ms: int, values: Mapping[str, Value]
) -> bytes:
    if form is PayloadForm.FLAT:
        return flat_payload(values)
    if form is PayloadForm.ARRAY:
        return b"[" + _dumps({"ts": rfc3339(ts_ms), "values": dict(values)}) + b"]"
    if device.type == "street_camera":
        # Cameras name themselves in their heartbeats: exercises the optional identity keys.
        return object_payload(ts_ms, values, (device.site_id, device.device_id))
    return object_payload(ts_ms, values)


def status_payload(online: bool, ts_ms: int) -> bytes:
    return _dumps({"state": "online" if online else "offline", "ts": ts_ms})


def event_payload(
    ts_ms: int,
    kind: str,
    severity: str,
    details: Mapping[str, object],
    evidence: Sequence[str] = (),
) -> bytes:
    return _dumps(
        {
            "ts": ts_ms,
            "kind": kind,
            "severity": severity,
            "details": dict(details),
            "evidence": list(evidence),
        }
    )
