"""Payload forms and the publishing cadence (pure parts of the fleet)."""

from __future__ import annotations

import itertools
import json

import pytest

from config.settings import load_settings
from devices.registry import Registry
from ingest.telemetry.contract import Decoder
from simulators.cadence import Cadence
from simulators.clock import day_start, local_day
from simulators.kitchen import KitchenModel
from simulators.payloads import (
    PayloadForm,
    array_payloads,
    device_topic,
    form_for,
    live_payload,
    rfc3339,
)
from simulators.street import street_models

TS_MS = 1_795_705_452_003


def test_rfc3339_uses_the_district_offset() -> None:
    assert rfc3339(1_795_705_452_250) == "2026-11-26T23:04:12.250+08:00"


def test_arrays_respect_reading_and_byte_limits() -> None:
    readings = [(TS_MS + i, {"temp_c": 3.5 + i / 100, "door_open": False}) for i in range(2500)]
    by_count = array_payloads(readings, max_readings=1000, max_bytes=1 << 20)
    assert [len(json.loads(p)) for p in by_count] == [1000, 1000, 500]
    by_size = array_payloads(readings, max_readings=1000, max_bytes=4096)
    assert all(len(p) <= 4096 for p in by_size)
    decoded = [r for p in by_size for r in json.loads(p)]
    assert len(decoded) == 2500
    assert decoded[0] == {"ts": rfc3339(TS_MS), "values": {"temp_c": 3.5, "door_open": False}}


def test_live_payloads_are_accepted_by_ingest(registry: Registry) -> None:
    decoder = Decoder(registry, load_settings({}).ingest)
    model = KitchenModel.from_registry(registry, "kitchen-0002", 5)
    t = day_start(local_day(TS_MS / 1000)) + 12.5 * 3600
    forms = set()
    for device_id, values in model.snapshot(t).items():
        device = registry.devices[device_id]
        forms.add(form_for(device))
        for form in PayloadForm:
            payload = live_payload(device, form, TS_MS, values)
            decoded = decoder.decode(device_topic(device), payload, TS_MS * 1_000_000)
            assert not decoded.rejections, (device_id, form, decoded.rejections)
            assert [r.values for r in decoded.records] == [values]
    assert forms == {PayloadForm.OBJECT, PayloadForm.FLAT}
    camera = next(iter(street_models(registry, 5).values()))
    payload = live_payload(camera.device, PayloadForm.OBJECT, TS_MS, camera.values(t))
    assert json.loads(payload)["device_id"] == camera.device.device_id
    assert not decoder.decode(device_topic(camera.device), payload, TS_MS * 1_000_000).rejections


@pytest.mark.parametrize(("count", "interval"), [(1, 10.0), (7, 0.5), (2525, 10.0), (1500, 60.0)])
def test_cadence_spreads_publications_evenly(count: int, interval: float) -> None:
    cadence = Cadence(count, interval)
    times = [cadence.slot_time(j) for j in range(4 * count)]
    assert times == sorted(times)
    first_round = times[:count]
    assert max(first_round) < min(2.0, interval)
    # Each device: no gap longer than the interval, and a steady pace after the first round.
    for k in range(count):
        own = times[k::count]
        gaps = [b - a for a, b in itertools.pairwise(own)]
        assert all(g <= interval + 1e-9 for g in gaps)
        assert gaps[1:] == pytest.approx([interval] * (len(gaps) - 1))
    later = times[count:]
    if count > 1:
        steps = [b - a for a, b in itertools.pairwise(later)]
        assert max(steps) == pytest.approx(interval / count)
