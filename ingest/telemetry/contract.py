"""The MQTT contract (docs/mqtt-contract.md) as a pure function: topic + payload -> records.

`Decoder.decode` never raises on bad input: every problem becomes a `Rejection` with a reason
from `RejectReason`, and the good readings of an array payload are kept beside the bad ones.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from analytics.events import TAXONOMY, Severity
from config.settings import IngestSettings
from devices.models import Device, Metric, MetricType
from devices.registry import Registry
from timeseries.lineprotocol import FieldValue


class RejectReason(StrEnum):
    BAD_TOPIC = "bad_topic"
    UNKNOWN_DEVICE = "unknown_device"
    SITE_MISMATCH = "site_mismatch"
    PAYLOAD_MISMATCH = "payload_mismatch"
    TOO_LARGE = "too_large"
    MALFORMED_JSON = "malformed_json"
    BAD_SCHEMA = "bad_schema"
    UNKNOWN_METRIC = "unknown_metric"
    WRONG_TYPE = "wrong_type"
    NON_FINITE = "non_finite"
    OUT_OF_RANGE = "out_of_range"
    BAD_TIMESTAMP = "bad_timestamp"
    TIMESTAMP_OUT_OF_RANGE = "timestamp_out_of_range"
    UNKNOWN_KIND = "unknown_kind"
    TYPE_CONFLICT = "type_conflict"


class Channel(StrEnum):
    TELEMETRY = "telemetry"
    STATUS = "status"
    EVENTS = "events"


@dataclass(frozen=True, slots=True)
class Reading:
    device: Device
    ts_ns: int
    values: Mapping[str, FieldValue]


@dataclass(frozen=True, slots=True)
class StatusReport:
    device: Device
    ts_ns: int
    online: bool


@dataclass(frozen=True, slots=True)
class DeviceEvent:
    device: Device
    ts_ns: int
    kind: str
    severity: Severity
    details: str  # JSON text
    evidence: str  # JSON text


Record = Reading | StatusReport | DeviceEvent


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: RejectReason
    detail: str


@dataclass(frozen=True, slots=True)
class Decoded:
    records: tuple[Record, ...]
    rejections: tuple[Rejection, ...]


class _Reject(Exception):
    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(detail)
        self.rejection = Rejection(reason, detail)


TOPIC_RE = re.compile(r"^v1/sites/([^/]+)/devices/([^/]+)/(telemetry|status|events)$")
KIND_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
NS_PER_MS = 1_000_000
# Epoch milliseconds below this are before 2001-09-09: almost surely epoch seconds sent by
# mistake, which deserve a hint rather than a bare "too old".
_MS_LOOKS_LIKE_SECONDS = 1_000_000_000_000
_READING_KEYS = {"ts", "values", "device_id", "site_id"}


def _no_constants(name: str) -> float:
    raise _Reject(RejectReason.NON_FINITE, f"{name} is not a number JSON allows")


def _parse_json(payload: bytes) -> Any:
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Reject(
            RejectReason.MALFORMED_JSON, f"not UTF-8: {exc.reason} at byte {exc.start}"
        ) from None
    try:
        return json.loads(text, parse_constant=_no_constants)
    except json.JSONDecodeError as exc:
        raise _Reject(RejectReason.MALFORMED_JSON, f"invalid JSON: {exc}") from None
    except RecursionError:
        raise _Reject(RejectReason.MALFORMED_JSON, "invalid JSON: nested too deeply") from None


class Decoder:
    """Validates messages against the inventory and the contract's limits."""

    def __init__(self, registry: Registry, limits: IngestSettings) -> None:
        self._registry = registry
        self._limits = limits
        self._metrics: dict[str, dict[str, Metric]] = {
            t.name: {m: registry.metrics[m] for m in t.metrics}
            for t in registry.device_types.values()
        }

    def decode(self, topic: str, payload: bytes, received_ns: int) -> Decoded:
        try:
            device, channel = self._route(topic)
            if len(payload) > self._limits.max_payload_bytes:
                raise _Reject(
                    RejectReason.TOO_LARGE,
                    f"payload is {len(payload)} bytes, the limit is "
                    f"{self._limits.max_payload_bytes}",
                )
            if channel is Channel.STATUS:
                return Decoded((self._status(device, payload, received_ns),), ())
            data = _parse_json(payload)
            if channel is Channel.EVENTS:
                return Decoded((self._event(device, data, received_ns),), ())
            return self._telemetry(device, data, received_ns)
        except _Reject as rej:
            return Decoded((), (rej.rejection,))

    # -- routing ---------------------------------------------------------------------------

    def _route(self, topic: str) -> tuple[Device, Channel]:
        match = TOPIC_RE.match(topic)
        if match is None:
            raise _Reject(
                RejectReason.BAD_TOPIC,
                f"topic {topic[:200]!r} is not v1/sites/{{site}}/devices/{{device}}/"
                "telemetry|status|events",
            )
        site_id, device_id, channel = match.groups()
        device = self._registry.devices.get(device_id)
        if device is None:
            raise _Reject(
                RejectReason.UNKNOWN_DEVICE, f"device {device_id[:100]!r} is not in the inventory"
            )
        if device.site_id != site_id:
            raise _Reject(
                RejectReason.SITE_MISMATCH,
                f"device {device_id!r} belongs to site {device.site_id!r}, topic says "
                f"{site_id[:100]!r}",
            )
        return device, Channel(channel)

    def _check_ids(self, device: Device, obj: Mapping[str, Any]) -> None:
        for key, expected in (("device_id", device.device_id), ("site_id", device.site_id)):
            if key in obj and obj[key] != expected:
                raise _Reject(
                    RejectReason.PAYLOAD_MISMATCH,
                    f"payload {key} {str(obj[key])[:100]!r} differs from the topic's {expected!r}",
                )

    # -- time ------------------------------------------------------------------------------

    def _timestamp(self, raw: Any, received_ns: int) -> int:
        if raw is None:
            return received_ns
        if isinstance(raw, bool) or not isinstance(raw, int | float | str):
            raise _Reject(
                RejectReason.BAD_TIMESTAMP,
                f"ts must be epoch milliseconds or an RFC 3339 string, got {type(raw).__name__}",
            )
        if isinstance(raw, str):
            ts_ns = _rfc3339_ns(raw)
        else:
            if isinstance(raw, float) and not math.isfinite(raw):
                raise _Reject(RejectReason.BAD_TIMESTAMP, "ts is not finite")
            if isinstance(raw, float) and not raw.is_integer():
                raise _Reject(RejectReason.BAD_TIMESTAMP, f"ts {raw} is not whole milliseconds")
            ts_ns = int(raw) * NS_PER_MS
            if 0 < raw < _MS_LOOKS_LIKE_SECONDS and received_ns > _MS_LOOKS_LIKE_SECONDS * 10**6:
                raise _Reject(
                    RejectReason.TIMESTAMP_OUT_OF_RANGE,
                    f"ts {raw} is in {_year(ts_ns)}: it looks like epoch seconds, ts must be "
                    "epoch milliseconds",
                )
        if ts_ns < received_ns - self._limits.max_past_s * 10**9:
            raise _Reject(
                RejectReason.TIMESTAMP_OUT_OF_RANGE,
                f"ts {raw!r} is more than {self._limits.max_past_s} s before the receive time",
            )
        if ts_ns > received_ns + self._limits.max_future_s * 10**9:
            raise _Reject(
                RejectReason.TIMESTAMP_OUT_OF_RANGE,
                f"ts {raw!r} is more than {self._limits.max_future_s} s after the receive time",
            )
        return ts_ns

    # -- telemetry -------------------------------------------------------------------------

    def _telemetry(self, device: Device, data: Any, received_ns: int) -> Decoded:
        if isinstance(data, list):
            if not data:
                raise _Reject(RejectReason.BAD_SCHEMA, "empty array: no readings")
            if len(data) > self._limits.max_readings_per_message:
                raise _Reject(
                    RejectReason.BAD_SCHEMA,
                    f"{len(data)} readings in one message, the limit is "
                    f"{self._limits.max_readings_per_message}",
                )
            records: list[Record] = []
            rejections: list[Rejection] = []
            for index, element in enumerate(data):
                try:
                    if not isinstance(element, dict) or "values" not in element:
                        raise _Reject(
                            RejectReason.BAD_SCHEMA,
                            'array elements must be objects {"ts": ..., "values": {...}}',
                        )
                    records.append(self._reading(device, element, received_ns))
                except _Reject as rej:
                    detail = f"reading [{index}]: {rej.rejection.detail}"
                    rejections.append(Rejection(rej.rejection.reason, detail))
            return Decoded(tuple(records), tuple(rejections))
        if not isinstance(data, dict):
            raise _Reject(
                RejectReason.BAD_SCHEMA,
                f"telemetry must be a JSON object or array, got {type(data).__name__}",
            )
        if "values" in data:
            return Decoded((self._reading(device, data, received_ns),), ())
        self._check_ids(device, data)
        flat = {k: v for k, v in data.items() if k not in ("device_id", "site_id")}
        if "ts" in flat:
            raise _Reject(
                RejectReason.BAD_SCHEMA,
                'a payload with "ts" must carry its metrics under "values"',
            )
        return Decoded((self._build_reading(device, flat, received_ns),), ())

    def _reading(self, device: Device, obj: dict[str, Any], received_ns: int) -> Reading:
        self._check_ids(device, obj)
        extra = set(obj) - _READING_KEYS
        if extra:
            raise _Reject(RejectReason.BAD_SCHEMA, f"unexpected key(s) {sorted(extra)[:5]}")
        values = obj["values"]
        if not isinstance(values, dict):
            raise _Reject(RejectReason.BAD_SCHEMA, '"values" must be an object of metrics')
        ts_ns = self._timestamp(obj.get("ts"), received_ns)
        return self._build_reading(device, values, ts_ns)

    def _build_reading(self, device: Device, values: dict[str, Any], ts_ns: int) -> Reading:
        if not values:
            raise _Reject(RejectReason.BAD_SCHEMA, "no values")
        catalogue = self._metrics[device.type]
        checked: dict[str, FieldValue] = {}
        for name, value in values.items():
            metric = catalogue.get(name)
            if metric is None:
                raise _Reject(
                    RejectReason.UNKNOWN_METRIC,
                    f"{str(name)[:64]!r} is not a metric of device type {device.type!r} "
                    f"(known: {', '.join(catalogue)})",
                )
            checked[name] = _check_value(metric, value)
        return Reading(device, ts_ns, checked)

    # -- status and events -----------------------------------------------------------------

    def _status(self, device: Device, payload: bytes, received_ns: int) -> StatusReport:
        bare = payload.strip().lower()
        if bare in (b"online", b"offline"):
            return StatusReport(device, received_ns, bare == b"online")
        data = _parse_json(payload)
        if not isinstance(data, dict) or data.get("state") not in ("online", "offline"):
            raise _Reject(
                RejectReason.BAD_SCHEMA,
                'status must be "online", "offline" or {"state": "online"|"offline", "ts": ...}',
            )
        self._check_ids(device, data)
        extra = set(data) - {"state", "ts", "device_id", "site_id"}
        if extra:
            raise _Reject(RejectReason.BAD_SCHEMA, f"unexpected key(s) {sorted(extra)[:5]}")
        return StatusReport(
            device, self._timestamp(data.get("ts"), received_ns), data["state"] == "online"
        )

    def _event(self, device: Device, data: Any, received_ns: int) -> DeviceEvent:
        if not isinstance(data, dict):
            raise _Reject(RejectReason.BAD_SCHEMA, "an event must be a JSON object")
        self._check_ids(device, data)
        extra = set(data) - {
            "ts",
            "kind",
            "severity",
            "details",
            "evidence",
            "device_id",
            "site_id",
        }
        if extra:
            raise _Reject(RejectReason.BAD_SCHEMA, f"unexpected key(s) {sorted(extra)[:5]}")
        kind = data.get("kind")
        if not isinstance(kind, str) or not KIND_RE.match(kind):
            raise _Reject(RejectReason.BAD_SCHEMA, f"event kind must be snake_case, got {kind!r}")
        if kind not in TAXONOMY:
            raise _Reject(
                RejectReason.UNKNOWN_KIND,
                f"event kind {kind!r} is not in the taxonomy (docs/alerts.md)",
            )
        try:
            severity = Severity(data.get("severity", TAXONOMY[kind].severity))
        except ValueError:
            raise _Reject(
                RejectReason.BAD_SCHEMA,
                f"severity must be one of {', '.join(Severity)}, got {data.get('severity')!r}",
            ) from None
        details = data.get("details", {})
        evidence = data.get("evidence", [])
        if not isinstance(details, dict):
            raise _Reject(RejectReason.BAD_SCHEMA, "event details must be an object")
        if not isinstance(evidence, list) or not all(isinstance(e, str) for e in evidence):
            raise _Reject(RejectReason.BAD_SCHEMA, "event evidence must be a list of strings")
        return DeviceEvent(
            device=device,
            ts_ns=self._timestamp(data.get("ts"), received_ns),
            kind=kind,
            severity=severity,
            details=json.dumps(details, ensure_ascii=False, sort_keys=True),
            evidence=json.dumps(evidence, ensure_ascii=False),
        )


def _check_value(metric: Metric, value: Any) -> FieldValue:
    name = metric.name
    if metric.type is MetricType.BOOL:
        if not isinstance(value, bool):
            raise _Reject(
                RejectReason.WRONG_TYPE, f"{name} must be true or false, got {value!r:.64}"
            )
        return value
    if metric.type is MetricType.STRING:
        if not isinstance(value, str):
            raise _Reject(RejectReason.WRONG_TYPE, f"{name} must be a string, got {value!r:.64}")
        if len(value) > metric.max_length:
            raise _Reject(
                RejectReason.OUT_OF_RANGE,
                f"{name} is {len(value)} characters long, the limit is {metric.max_length}",
            )
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Reject(RejectReason.WRONG_TYPE, f"{name} must be a number, got {value!r:.64}")
    if isinstance(value, float) and not math.isfinite(value):
        raise _Reject(RejectReason.NON_FINITE, f"{name} is {value}")
    number: float | int
    if metric.type is MetricType.INT:
        if isinstance(value, float) and not value.is_integer():
            raise _Reject(RejectReason.WRONG_TYPE, f"{name} must be a whole number, got {value}")
        number = int(value)
    else:
        number = float(value)
    if (metric.min is not None and number < metric.min) or (
        metric.max is not None and number > metric.max
    ):
        raise _Reject(
            RejectReason.OUT_OF_RANGE,
            f"{name} {number} is outside [{metric.min}, {metric.max}] {metric.unit}".rstrip(),
        )
    return number


def _rfc3339_ns(text: str) -> int:
    # fromisoformat accepts more than RFC 3339 (no zone, week dates...); insist on a full date,
    # a time and a zone so that a reading is never silently stored in the server's zone.
    match = _RFC3339_RE.match(text)
    if len(text) > 40 or match is None:
        raise _Reject(
            RejectReason.BAD_TIMESTAMP,
            f"ts {text[:40]!r} is not RFC 3339 with a zone (e.g. 2026-11-26T15:04:05.123+08:00)",
        )
    try:
        # datetime keeps microseconds only: parse without the fraction, add it back in ns.
        whole = datetime.fromisoformat((match["base"] + match["zone"]).upper()).timestamp()
    except ValueError as exc:
        raise _Reject(RejectReason.BAD_TIMESTAMP, f"ts {text!r}: {exc}") from None
    return int(whole) * 10**9 + int(((match["frac"] or "") + "000000000")[:9])


_RFC3339_RE = re.compile(
    r"^(?P<base>\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d)(?:\.(?P<frac>\d{1,9}))?"
    r"(?P<zone>[Zz]|[+-]\d\d:\d\d)$"
)


def _year(ts_ns: int) -> int:
    return datetime.fromtimestamp(ts_ns // 10**9, UTC).year
