"""The MQTT contract as a pure function: every payload form and every rejection reason."""

from __future__ import annotations

import json

import pytest

from analytics.events import Severity
from config.settings import load_settings
from devices.registry import Registry
from ingest.telemetry.contract import (
    Decoded,
    Decoder,
    DeviceEvent,
    Reading,
    RejectReason,
    StatusReport,
)

NOW_NS = 1_795_705_452_003 * 1_000_000  # 2026-11-26T15:04:12.003Z
NOW_MS = NOW_NS // 1_000_000
FRIDGE = "v1/sites/kitchen-0001/devices/kitchen-0001-fridge-1/telemetry"


@pytest.fixture(scope="module")
def decoder(registry: Registry) -> Decoder:
    return Decoder(registry, load_settings({}).ingest)


def decode(decoder: Decoder, payload: object, topic: str = FRIDGE) -> Decoded:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return decoder.decode(topic, raw, NOW_NS)


def reason(decoded: Decoded) -> RejectReason:
    assert not decoded.records, decoded
    assert len(decoded.rejections) == 1, decoded
    return decoded.rejections[0].reason


def test_object_with_epoch_ms(decoder: Decoder) -> None:
    out = decode(decoder, {"ts": NOW_MS - 5000, "values": {"temp_c": 3.9, "door_open": False}})
    (reading,) = out.records
    assert isinstance(reading, Reading)
    assert reading.device.device_id == "kitchen-0001-fridge-1"
    assert reading.ts_ns == (NOW_MS - 5000) * 1_000_000
    assert reading.values == {"temp_c": 3.9, "door_open": False}
    assert not out.rejections


def test_rfc3339_keeps_zone_and_nanoseconds(decoder: Decoder) -> None:
    out = decode(decoder, {"ts": "2026-11-26T23:04:12.003000001+08:00", "values": {"temp_c": 4}})
    (reading,) = out.records
    assert isinstance(reading, Reading)
    assert reading.ts_ns == NOW_NS + 1
    assert reading.values["temp_c"] == 4.0 and isinstance(reading.values["temp_c"], float)


def test_array_keeps_good_elements_beside_bad_ones(decoder: Decoder) -> None:
    out = decode(
        decoder,
        [
            {"ts": NOW_MS - 2000, "values": {"temp_c": 3.1}},
            {"ts": NOW_MS - 1000, "values": {"temp_c": "warm"}},
            {"ts": NOW_MS, "values": {"temp_c": 3.3}},
        ],
    )
    assert [r.values["temp_c"] for r in out.records if isinstance(r, Reading)] == [3.1, 3.3]
    (rejection,) = out.rejections
    assert rejection.reason is RejectReason.WRONG_TYPE
    assert rejection.detail.startswith("reading [1]: temp_c")


def test_flat_object_takes_receive_time(decoder: Decoder) -> None:
    (reading,) = decode(decoder, {"temp_c": 2.5, "humidity_pct": 71}).records
    assert isinstance(reading, Reading)
    assert reading.ts_ns == NOW_NS
    assert reading.values == {"temp_c": 2.5, "humidity_pct": 71.0}


def test_int_metric_and_string_metric(decoder: Decoder) -> None:
    topic = "v1/sites/kitchen-0001/devices/kitchen-0001-door-1/telemetry"
    (reading,) = decode(decoder, {"values": {"open_count": 12.0, "fault": ""}}, topic).records
    assert isinstance(reading, Reading)
    assert reading.values == {"open_count": 12, "fault": ""}
    assert isinstance(reading.values["open_count"], int)
    assert (
        reason(decode(decoder, {"values": {"open_count": 1.5}}, topic)) is RejectReason.WRONG_TYPE
    )


def test_matching_ids_in_payload_are_accepted(decoder: Decoder) -> None:
    out = decode(
        decoder,
        {"device_id": "kitchen-0001-fridge-1", "site_id": "kitchen-0001", "values": {"temp_c": 1}},
    )
    assert len(out.records) == 1


def test_status_forms(decoder: Decoder) -> None:
    topic = FRIDGE.replace("telemetry", "status")
    (bare,) = decoder.decode(topic, b"offline", NOW_NS).records
    assert isinstance(bare, StatusReport) and not bare.online and bare.ts_ns == NOW_NS
    (obj,) = decode(decoder, {"state": "online", "ts": NOW_MS - 1}, topic).records
    assert isinstance(obj, StatusReport) and obj.online and obj.ts_ns == NOW_NS - 1_000_000
    assert reason(decode(decoder, {"state": "sleepy"}, topic)) is RejectReason.BAD_SCHEMA


def test_event(decoder: Decoder) -> None:
    topic = "v1/sites/kitchen-0001/devices/kitchen-0001-cam-1/events"
    (event,) = decode(
        decoder,
        {"kind": "rodent", "severity": "critical", "details": {"zone": "prep"}, "evidence": ["a"]},
        topic,
    ).records
    assert isinstance(event, DeviceEvent)
    assert (event.kind, event.severity) == ("rodent", Severity.CRITICAL)
    assert json.loads(event.details) == {"zone": "prep"}
    assert reason(decode(decoder, {"kind": "Rodent!"}, topic)) is RejectReason.BAD_SCHEMA
    assert (
        reason(decode(decoder, {"kind": "rodent", "severity": "bad"}, topic))
        is RejectReason.BAD_SCHEMA
    )
    assert reason(decode(decoder, {"kind": "unicorn"}, topic)) is RejectReason.UNKNOWN_KIND
    (default,) = decode(decoder, {"kind": "smoking"}, topic).records
    assert isinstance(default, DeviceEvent) and default.severity is Severity.MAJOR


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("v1/sites/kitchen-0001/devices/kitchen-0001-fridge-1/telemetry/extra", "bad_topic"),
        ("v1/sites/kitchen-0001/devices/kitchen-0001-fridge-1/config", "bad_topic"),
        ("v1/sites/kitchen-0001/devices/no-such-device/telemetry", "unknown_device"),
        ("v1/sites/kitchen-0002/devices/kitchen-0001-fridge-1/telemetry", "site_mismatch"),
    ],
)
def test_topic_rejections(decoder: Decoder, topic: str, expected: str) -> None:
    assert reason(decode(decoder, {"temp_c": 1.0}, topic)) == expected


@pytest.mark.parametrize(
    ("payload", "expected", "says"),
    [
        (b"{not json", "malformed_json", "invalid JSON"),
        (b"\xff\xfe{}", "malformed_json", "not UTF-8"),
        (b'{"temp_c": NaN}', "non_finite", "NaN"),
        (b'{"values": {"temp_c": Infinity}}', "non_finite", "Infinity"),
        (b'{"values": {"temp_c": 1e999}}', "non_finite", "temp_c is inf"),
        (b"42", "bad_schema", "must be a JSON object or array"),
        (b"[]", "bad_schema", "empty array"),
        (b"{}", "bad_schema", "no values"),
        (b'{"values": [1, 2]}', "bad_schema", "must be an object"),
        (b'{"ts": 1795705452003, "temp_c": 1}', "bad_schema", 'under "values"'),
        (b'{"values": {"temp_c": 1}, "colour": "red"}', "bad_schema", "colour"),
        (b'{"values": {"gas_lel_pct": 1}}', "unknown_metric", "gas_lel_pct"),
        (b'{"values": {"temp_c": "3.9"}}', "wrong_type", "must be a number"),
        (b'{"values": {"temp_c": true}}', "wrong_type", "must be a number"),
        (b'{"values": {"door_open": 1}}', "wrong_type", "true or false"),
        (b'{"values": {"temp_c": -127}}', "out_of_range", "outside [-60.0, 250.0]"),
        (b'{"device_id": "kitchen-0002-fridge-1", "temp_c": 1}', "payload_mismatch", "differs"),
        (b'{"site_id": "kitchen-0002", "values": {"temp_c": 1}}', "payload_mismatch", "site_id"),
        (b'{"ts": "yesterday", "values": {"temp_c": 1}}', "bad_timestamp", "RFC 3339"),
        (b'{"ts": "2026-11-26T15:04:12", "values": {"temp_c": 1}}', "bad_timestamp", "zone"),
        (b'{"ts": true, "values": {"temp_c": 1}}', "bad_timestamp", "bool"),
        (b'{"ts": 1795705452, "values": {"temp_c": 1}}', "timestamp_out_of_range", "seconds"),
        (b'{"ts": 1795705452.5, "values": {"temp_c": 1}}', "bad_timestamp", "whole milli"),
        (b'{"ts": 1000000000000, "values": {"temp_c": 1}}', "timestamp_out_of_range", "before"),
        (b'{"ts": 1795715452003, "values": {"temp_c": 1}}', "timestamp_out_of_range", "after"),
    ],
)
def test_payload_rejections(decoder: Decoder, payload: bytes, expected: str, says: str) -> None:
    out = decode(decoder, payload)
    assert reason(out) == expected
    assert says in out.rejections[0].detail


def test_too_large_is_checked_before_parsing(decoder: Decoder) -> None:
    big = json.dumps({"values": {"fault": "x" * 70_000}}).encode()
    out = decode(decoder, big)
    assert reason(out) is RejectReason.TOO_LARGE
    assert str(len(big)) in out.rejections[0].detail


def test_long_string_value_is_out_of_range(decoder: Decoder) -> None:
    assert reason(decode(decoder, {"values": {"fault": "x" * 257}})) is RejectReason.OUT_OF_RANGE


def test_too_many_readings(registry: Registry) -> None:
    small = Decoder(registry, load_settings({}, ingest={"max_readings_per_message": 2}).ingest)
    payload = [{"values": {"temp_c": 1}}] * 3
    assert reason(decode(small, payload)) is RejectReason.BAD_SCHEMA


def test_deeply_nested_json_is_malformed_not_a_crash(decoder: Decoder) -> None:
    assert reason(decode(decoder, b"[" * 50_000)) is RejectReason.MALFORMED_JSON
