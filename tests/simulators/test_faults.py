"""Scripted faults: parsing, binding to the inventory, and their overlay on the pure models."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from config.settings import load_settings
from devices.registry import Registry
from ingest.telemetry.contract import Decoder
from simulators.clock import day_start, local_day
from simulators.faults import (
    REASONS,
    FaultError,
    FaultKind,
    FaultPlan,
    FaultSpec,
    bad_messages,
    parse_duration,
)
from simulators.kitchen import KitchenModel

CONTRACT = Path(__file__).resolve().parents[2] / "docs" / "mqtt-contract.md"
START = day_start(local_day(1_795_705_452)) + 11 * 3600  # a simulator started at 11:00


def test_durations() -> None:
    assert parse_duration("90s") == 90
    assert parse_duration("10m") == 600
    assert parse_duration("2h") == 7200
    assert parse_duration("1.5h") == 5400
    assert parse_duration("45") == 45
    with pytest.raises(ValueError, match="'soon'"):
        parse_duration("soon")


def test_spec_parsing() -> None:
    spec = FaultSpec.parse("fridge_warming:kitchen-0007@60s+20m")
    assert spec == FaultSpec(FaultKind.FRIDGE_WARMING, "kitchen-0007", 60.0, 1200.0)
    assert spec.end_s == 1260.0
    assert not spec.active(59.9)
    assert spec.active(60.0)
    assert not spec.active(1260.0)
    assert FaultSpec.parse(str(spec)) == spec


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "expected kind:target@start"),
        ("fridge_warming:kitchen-0007", "expected kind:target@start"),
        ("meltdown:kitchen-0007@1m+1m", "unknown kind 'meltdown'"),
        ("silent:kitchen-0007@soon+1m", "'soon' is not a duration"),
        ("silent:kitchen-0007@1m+5x", "'5x' is not a duration"),
        ("silent:kitchen-0007@1m+0s", "must be positive"),
    ],
)
def test_bad_specs_are_named_in_the_error(text: str, why: str) -> None:
    with pytest.raises(FaultError, match=re.escape(why)) as info:
        FaultSpec.parse(text)
    assert repr(text) in str(info.value)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("silent:kitchen-9999@1m+1m", "'kitchen-9999' is neither a site nor a device"),
        ("gas_spike:kitchen-0007-fridge-1@1m+1m", "needs a gas_detector"),
        ("fridge_warming:kitchen-0007-gas-1@1m+1m", "needs a cold_room/freezer/fridge"),
        ("fridge_warming:grid-0001@1m+1m", "has no fridge"),
    ],
)
def test_targets_must_fit_the_kind(registry: Registry, text: str, why: str) -> None:
    with pytest.raises(FaultError, match=re.escape(why)) as info:
        FaultPlan.build([text], registry)
    assert repr(text) in str(info.value)


def test_site_targets_select_devices(registry: Registry) -> None:
    plan = FaultPlan.build(
        [
            "fridge_warming:kitchen-0007@0s+1h",
            "gas_spike:kitchen-0007@0s+1h",
            "silent:kitchen-0008@10m+5m",
            "silent:kitchen-0009-door-1@10m+5m",
            "silent:grid-0001@10m+5m",
            "malformed:kitchen-0010@0s+1m",
        ],
        registry,
    )
    by_kind = {f.spec.kind: f.devices for f in plan.faults if f.spec.target == "kitchen-0007"}
    assert by_kind[FaultKind.FRIDGE_WARMING] == {"kitchen-0007-fridge-1"}
    assert by_kind[FaultKind.GAS_SPIKE] == {"kitchen-0007-gas-1"}
    # A silenced kitchen loses its gateway link: its devices are not silent themselves.
    assert plan.offline("kitchen-0008", 700)
    assert not plan.offline("kitchen-0008", 300)
    assert not plan.offline("kitchen-0008", 900)
    assert not plan.silent("kitchen-0008-fridge-1", 700)
    assert plan.silent("kitchen-0009-door-1", 700)
    assert not plan.silent("kitchen-0009-fridge-1", 700)
    camera = registry.devices_at("grid-0001")[0].device_id
    assert plan.silent(camera, 700)
    assert not plan.offline("grid-0001", 700)  # street cameras share their links
    assert plan.malformed("kitchen-0010-gas-1", 30)
    assert not plan.malformed("kitchen-0010-gas-1", 60)


def test_fridge_warming_ramps_past_8_c_and_recovers(registry: Registry) -> None:
    plan = FaultPlan.build(["fridge_warming:kitchen-0007@60s+20m"], registry, seed=1)
    model = KitchenModel.from_registry(registry, "kitchen-0007", 1)
    fridge = registry.devices["kitchen-0007-fridge-1"]

    def temp(elapsed: float) -> float:
        values = plan.overlay(fridge, model.values(fridge.device_id, START + elapsed), elapsed)
        assert isinstance(values["temp_c"], float)
        return values["temp_c"]

    def normal(elapsed: float) -> float:
        value = model.values(fridge.device_id, START + elapsed)["temp_c"]
        assert isinstance(value, float)
        return value

    assert temp(30) == normal(30)
    during = [temp(60 + m * 60) for m in range(21)]
    assert during[0] < 8
    assert max(during) > 8
    assert all(t <= 14.0 for t in during)
    assert temp(60 + 19 * 60) > 10
    assert temp(1260 + 3600) < 8  # an hour after the fault the compressor has caught up
    assert temp(1260 + 3 * 3600) == normal(1260 + 3 * 3600)


def test_freezer_warming_stops_at_thawing(registry: Registry) -> None:
    plan = FaultPlan.build(["fridge_warming:kitchen-0007-freezer-1@0s+2h"], registry)
    freezer = registry.devices["kitchen-0007-freezer-1"]
    values = plan.overlay(freezer, {"temp_c": -18.0, "door_open": False}, 3600)
    assert values == {"temp_c": -2.0, "door_open": False}


def test_gas_spike_sets_the_alarm_for_its_duration(registry: Registry) -> None:
    plan = FaultPlan.build(["gas_spike:kitchen-0007@5m+2m"], registry, seed=3)
    model = KitchenModel.from_registry(registry, "kitchen-0007", 3)
    detector = registry.devices["kitchen-0007-gas-1"]
    for elapsed in range(0, 600, 5):
        values = plan.overlay(detector, model.values(detector.device_id, START + elapsed), elapsed)
        level = values["gas_lel_pct"]
        assert isinstance(level, float)
        if 300 <= elapsed < 420:
            assert values["alarm"] is True
            assert 25 <= level <= 40
        else:
            assert values["alarm"] is False
            assert level < 10


def contract_reasons() -> set[str]:
    text = CONTRACT.read_text(encoding="utf-8").split("## Rejections", 1)[1]
    return set(re.findall(r"^\| `([a-z_]+)` \|", text, flags=re.MULTILINE))


def test_bad_messages_cover_every_reason_of_the_contract(registry: Registry) -> None:
    assert set(REASONS) == contract_reasons()
    devices = [*registry.devices_at("kitchen-0002"), registry.devices_at("grid-0002")[0]]
    for device in devices:
        bad = bad_messages(registry, device, 1_795_705_452_003)
        assert {m.reason for m in bad} == set(REASONS), device.device_id
        too_large = next(m for m in bad if m.reason == "too_large")
        assert len(too_large.payload) > 65536
        assert next(m for m in bad if m.reason == "bad_topic").topic.endswith("/readings")


def test_ingest_gives_each_bad_message_its_reason(registry: Registry) -> None:
    decoder = Decoder(registry, load_settings({}).ingest)
    ts_ms = 1_795_705_452_003
    for device in (*registry.devices_at("kitchen-0003"), registry.devices_at("grid-0003")[0]):
        for message in bad_messages(registry, device, ts_ms):
            decoded = decoder.decode(message.topic, message.payload, ts_ms * 1_000_000)
            reasons = [r.reason.value for r in decoded.rejections]
            assert reasons == [message.reason], (device.device_id, message.what, decoded)
            assert not decoded.records
