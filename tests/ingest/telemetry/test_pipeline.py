"""Ingest against the real broker and InfluxDB: payload forms, bad input, escaping, dead letters."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from config.settings import Settings
from devices.registry import Registry
from ingest.telemetry.contract import Decoder
from ingest.telemetry.pipeline import DataDirInUse, IngestService
from simulators.local_services import Influxd, Mosquitto
from tests.support import Publisher, count, make_settings, query, wait_until

FRIDGE = "kitchen-0001-fridge-1"
DOOR = "kitchen-0001-door-1"


def topic(device: str, channel: str = "telemetry", site: str = "kitchen-0001") -> str:
    return f"v1/sites/{site}/devices/{device}/{channel}"


@pytest.fixture
def broker(own_broker: Mosquitto) -> Mosquitto:
    """These tests count what ingest stores: no retained leftovers of other tests."""
    return own_broker


@pytest.fixture
def settings(tmp_path: Path, broker: Mosquitto, influxd: Influxd) -> Settings:
    return make_settings(tmp_path, broker, influxd)


@pytest.fixture
def service(settings: Settings, registry: Registry) -> Iterator[IngestService]:
    with IngestService(settings, registry) as svc:
        assert svc.wait_connected(15), "ingest did not connect to the broker"
        yield svc


@pytest.fixture
def device(broker: Mosquitto) -> Iterator[Publisher]:
    publisher = Publisher(broker)
    yield publisher
    publisher.close()


def rejected(service: IngestService, reason: str) -> float:
    value = service.supervisor.registry.get_sample_value(
        "mingliang_ingest_rejected_total", {"reason": reason}
    )
    return value or 0.0


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def test_every_payload_form_is_stored(
    service: IngestService, settings: Settings, device: Publisher
) -> None:
    base = now_ms() - 60_000
    before = time.time_ns()
    device.publish(topic(FRIDGE), {"ts": base, "values": {"temp_c": 3.9, "door_open": False}})
    device.publish(
        topic(FRIDGE),
        [
            {"ts": base + 1000, "values": {"temp_c": 4.0}},
            {"ts": base + 2000, "values": {"temp_c": 4.1, "humidity_pct": 70}},
        ],
    )
    china = timezone(timedelta(hours=8))
    rfc = datetime.fromtimestamp((base + 3000) / 1000, china).isoformat(timespec="milliseconds")
    device.publish(topic(FRIDGE), {"ts": rfc, "values": {"temp_c": 4.2}})
    device.publish(topic(FRIDGE), {"temp_c": 4.3, "humidity_pct": 71.5})  # flat: receive time
    device.publish(topic(DOOR), {"ts": base, "values": {"open_count": 7, "door_open": True}})
    device.publish(topic(FRIDGE, "status"), "offline", retain=True)
    device.publish(topic(DOOR, "status"), {"state": "online", "ts": base})
    device.publish(
        topic("kitchen-0001-cam-1", "events"),
        {"ts": base, "kind": "rodent", "severity": "critical", "details": {"zone": "prep"}},
    )
    device.flush()

    where = f"WHERE device_id = '{FRIDGE}'"
    wait_until(lambda: count(settings, "telemetry", "temp_c", where) == 5, 15, "5 fridge readings")
    after = time.time_ns()  # the broker acknowledges the publisher before it delivers to ingest
    rows = query(settings, f"SELECT temp_c, humidity_pct, door_open FROM telemetry {where}")
    ms = 1_000_000
    assert [(r["time"], r["temp_c"]) for r in rows[:4]] == [
        (base * ms, 3.9), ((base + 1000) * ms, 4.0), ((base + 2000) * ms, 4.1),
        ((base + 3000) * ms, 4.2),
    ]  # fmt: skip
    assert rows[0]["door_open"] is False and rows[2]["humidity_pct"] == 70.0
    flat = rows[4]
    assert before <= flat["time"] <= after and flat["humidity_pct"] == 71.5

    door = query(
        settings, f"SELECT open_count, door_open FROM telemetry WHERE device_id = '{DOOR}'"
    )
    assert door == [{"time": base * ms, "open_count": 7, "door_open": True}]

    wait_until(lambda: count(settings, "device_status", "online") == 2, 15, "2 status reports")
    status = {
        r["device_id"]: r["online"]
        for r in query(settings, "SELECT online, device_id FROM device_status")
    }
    assert status == {FRIDGE: False, DOOR: True}

    wait_until(lambda: count(settings, "device_event", "severity") == 1, 15, "the event")
    (event,) = query(settings, "SELECT * FROM device_event")
    assert (event["kind"], event["severity"], event["site_id"]) == (
        "rodent", "critical", "kitchen-0001"
    )  # fmt: skip
    assert json.loads(event["details"]) == {"zone": "prep"}
    assert rejected(service, "bad_schema") == 0


BAD_INPUT = [
    ("bad_topic", topic(FRIDGE, "config"), b'{"temp_c": 1}'),
    ("unknown_device", topic("kitchen-0001-fridge-9"), b'{"temp_c": 1}'),
    ("site_mismatch", topic(FRIDGE, site="kitchen-0002"), b'{"temp_c": 1}'),
    ("payload_mismatch", topic(FRIDGE), b'{"device_id": "kitchen-0002-fridge-1", "temp_c": 1}'),
    ("too_large", topic(FRIDGE), json.dumps({"fault": "x" * 70_000}).encode()),
    ("malformed_json", topic(FRIDGE), b'{"temp_c": 1,'),
    ("bad_schema", topic(FRIDGE), b'"just a string"'),
    ("unknown_metric", topic(FRIDGE), b'{"gas_lel_pct": 3}'),
    ("wrong_type", topic(FRIDGE), b'{"temp_c": "cold"}'),
    ("non_finite", topic(FRIDGE), b'{"temp_c": NaN}'),
    ("out_of_range", topic(FRIDGE), b'{"temp_c": -127}'),
    ("bad_timestamp", topic(FRIDGE), b'{"ts": "noon", "values": {"temp_c": 1}}'),
    ("timestamp_out_of_range", topic(FRIDGE), b'{"ts": 1500000000000, "values": {"temp_c": 1}}'),
    ("unknown_kind", topic("kitchen-0001-cam-1", "events"), b'{"kind": "unicorn_sighting"}'),
]


def test_each_bad_input_is_rejected_counted_and_kept_while_good_data_flows(
    service: IngestService, settings: Settings, device: Publisher
) -> None:
    good = 0
    base = now_ms() - 10_000
    for _round in range(3):  # several of each, to see counting, not just a flag
        for _, bad_topic, payload in BAD_INPUT:
            device.publish(topic(FRIDGE), {"ts": base + good, "values": {"temp_c": 3.0}})
            good += 1
            device.publish(bad_topic, payload)
        device.publish(topic(FRIDGE), {"ts": base + good, "values": {"temp_c": 3.0}})
        good += 1
    device.flush()

    where = f"WHERE device_id = '{FRIDGE}'"
    wait_until(lambda: count(settings, "telemetry", "temp_c", where) == good, 20, "good readings")
    for reason, bad_topic, _ in BAD_INPUT:
        wait_until(lambda r=reason: rejected(service, r) == 3, 10, f"3 rejections for {reason}")
        recent = service.rejects.recent(reason)
        assert len(recent) == 3 and recent[0].topic == bad_topic and recent[0].detail
    stored = [json.loads(line) for line in service.rejects.path.read_text().splitlines()]
    assert sorted({r["reason"] for r in stored}) == sorted(r for r, _, _ in BAD_INPUT)
    assert len(stored) == 3 * len(BAD_INPUT)
    # Acknowledged, so the file is the only copy left: every payload is kept whole.
    for reason, _, payload in BAD_INPUT:
        kept = next(r for r in stored if r["reason"] == reason)
        assert kept["payload_encoding"] == "utf-8" and not kept["truncated"]
        assert kept["payload"].encode() == payload, reason
        assert kept["problems"][0] == {"reason": reason, "detail": kept["detail"]}
    # The API's list shows an excerpt of the large one.
    (shown, *_) = service.rejects.recent("too_large")
    assert shown.payload_bytes > 70_000 and len(shown.payload) == 512 and shown.truncated


def test_a_message_that_hits_a_bug_is_acknowledged_only_once_kept_whole(
    service: IngestService,
    settings: Settings,
    device: Publisher,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    original = Decoder.decode

    def buggy(self: Decoder, topic: str, payload: bytes, received_ns: int) -> Any:
        if b"trigger" in payload:
            raise KeyError("a bug in the decoder")
        return original(self, topic, payload, received_ns)

    monkeypatch.setattr(Decoder, "decode", buggy)
    payload = json.dumps({"ts": now_ms(), "values": {"fault": "trigger " + "x" * 3000}})
    device.publish(topic(DOOR), payload)
    device.publish(topic(FRIDGE), {"ts": now_ms(), "values": {"temp_c": 4.0}})
    device.flush()
    where = f"WHERE device_id = '{FRIDGE}'"
    wait_until(lambda: count(settings, "telemetry", "temp_c", where) == 1, 20, "the good one")
    wait_until(lambda: rejected(service, "internal_error") == 1, 20, "the bug counted")

    def kept_on_disk() -> list[dict[str, Any]]:  # counted on arrival, written by the writer
        lines = service.rejects.path.read_text().splitlines()
        return [r for r in map(json.loads, lines) if r["reason"] == "internal_error"]

    (kept,) = wait_until(kept_on_disk, 20, "the message kept in the rejects file")
    assert kept["payload"] == payload and "a bug in the decoder" in kept["detail"]
    wait_until(lambda: service.health().pending_messages == 0, 20, "both acknowledged")


def test_flood_of_bad_messages_never_stalls_the_collector(
    service: IngestService, settings: Settings, device: Publisher
) -> None:
    # One well-known bridge stops consuming after 1,000 bad messages.
    for _ in range(3000):
        device.publish(topic(FRIDGE), b"\x00garbage")
    base = now_ms()
    for i in range(10):
        device.publish(topic(FRIDGE), {"ts": base + i, "values": {"temp_c": 5.0}})
    device.flush()
    where = f"WHERE device_id = '{FRIDGE}'"
    wait_until(lambda: count(settings, "telemetry", "temp_c", where) == 10, 20, "good readings")
    wait_until(lambda: rejected(service, "malformed_json") == 3000, 10, "3,000 rejections")


TRICKY = 'comma, space =equals "quotes" back\\slash \\" and a\nnewline, tab\t and 中文 end\\'


def test_string_with_special_characters_round_trips_exactly(
    service: IngestService, settings: Settings, device: Publisher
) -> None:
    ts = now_ms()
    device.publish(topic(DOOR), {"ts": ts, "values": {"fault": TRICKY}})
    device.flush()
    where = f"WHERE device_id = '{DOOR}'"
    wait_until(lambda: count(settings, "telemetry", "fault", where) == 1, 15, "the string")
    (row,) = query(settings, f"SELECT fault FROM telemetry {where}")
    assert row["fault"] == TRICKY


def test_influx_refusal_is_dead_lettered_and_the_rest_of_the_batch_stored(
    service: IngestService, settings: Settings, device: Publisher, influxd: Influxd
) -> None:
    ts = now_ms()
    device.publish(topic(FRIDGE), {"ts": ts - 5000, "values": {"temp_c": 1.0}})
    device.flush()
    where = f"WHERE device_id = '{FRIDGE}'"
    wait_until(lambda: count(settings, "telemetry", "temp_c", where) == 1, 15, "first reading")
    # Another writer makes humidity_pct a string behind ingest's back.
    response = httpx.post(
        f"{influxd.url}/write",
        params={"db": settings.influx.database},
        content=f'telemetry,device_id=other humidity_pct="wet" {ts * 1_000_000}',
    )
    assert response.status_code == 204

    device.publish_many(
        (topic(FRIDGE), {"ts": ts + i, "values": {"temp_c": 2.0, "humidity_pct": 50.0}})
        if i == 7
        else (topic(FRIDGE), {"ts": ts + i, "values": {"temp_c": 2.0}})
        for i in range(20)
    )
    device.flush()
    wait_until(lambda: count(settings, "telemetry", "temp_c", where) == 20, 15, "19 + 1 readings")
    dead = wait_until(lambda: service.dead_letters.recent(), 10, "a dead letter")
    assert len(dead) == 1
    assert "field type conflict" in dead[0].detail and "humidity_pct=50.0" in dead[0].payload
    assert (
        service.supervisor.registry.get_sample_value("mingliang_ingest_points_dead_lettered_total")
        == 1
    )
    # The stream goes on after the refusal.
    device.publish(topic(FRIDGE), {"ts": ts + 100, "values": {"temp_c": 2.5}})
    device.flush()
    wait_until(lambda: count(settings, "telemetry", "temp_c", where) == 21, 15, "the next reading")


def test_two_ingests_cannot_share_a_data_folder(
    service: IngestService, settings: Settings, registry: Registry
) -> None:
    with pytest.raises(DataDirInUse, match=str(settings.data_dir)):
        IngestService(settings, registry)
