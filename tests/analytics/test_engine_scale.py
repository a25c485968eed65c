"""The engine at district scale: state stays proportional to devices, not to messages."""

from __future__ import annotations

from typing import Any

from analytics.rules import RuleBook, RuleEngine
from devices.registry import Registry
from tests.analytics.conftest import FRIDGE, at

TYPICAL: dict[str, dict[str, Any]] = {
    "gateway": {"rssi_dbm": -70.0, "uptime_s": 1000},
    "fridge": {"temp_c": 3.5, "humidity_pct": 70.0, "door_open": False, "battery_pct": 90.0},
    "freezer": {"temp_c": -18.0, "door_open": False, "battery_pct": 90.0},
    "cold_room": {"temp_c": 2.0, "humidity_pct": 85.0, "door_open": False, "battery_pct": 90.0},
    "gas_detector": {"gas_lel_pct": 0.4, "alarm": False},
    "smoke_detector": {"smoke_obs_pct_m": 0.1, "alarm": False, "battery_pct": 90.0},
    "disinfection_cabinet": {"temp_c": 25.0, "running": False, "cycle_min": 0.0},
    "door_sensor": {"door_open": False, "open_count": 10, "battery_pct": 90.0},
    "kitchen_camera": {"online": True, "fps": 25.0, "bitrate_kbps": 1500.0},
    "street_camera": {"online": True, "fps": 25.0, "bitrate_kbps": 900.0},
}


def test_the_heap_holds_about_one_entry_per_instance(book: RuleBook, registry: Registry) -> None:
    engine = RuleEngine(book, registry)
    devices = list(registry.devices.values())
    for step in range(30):
        t = 12 * 3600 + step * 10  # Monday noon: service hours, no schedule boundaries
        for i, device in enumerate(devices):
            values = dict(TYPICAL[device.type])
            if "temp_c" in values:
                values["temp_c"] += 0.2 * (step % 2)  # not flat
            assert engine.on_reading(device, at(t + i * 0.002), values) == []
        assert engine.on_tick(at(t + 10)) == []
    stats = engine.stats()
    assert stats.readings == 30 * len(devices)
    # Heartbeat deadlines move with every message; they are re-pushed only when they pop.
    assert stats.heap <= stats.instances
    assert engine.dirty()  # progress to persist: heartbeats and rate baselines
    assert engine.on_tick(at(12 * 3600 + 400)) == []


def test_an_updated_device_record_keeps_its_progress(book: RuleBook, registry: Registry) -> None:
    engine = RuleEngine(book, registry)
    fridge = registry.devices[FRIDGE]
    for t in range(0, 300, 10):
        engine.on_reading(fridge, at(t), {"temp_c": 9.0})
    renamed = fridge.model_copy(update={"name": "Fridge by the window"})
    signals = []
    for t in range(300, 610, 10):
        signals += engine.on_reading(renamed, at(t), {"temp_c": 9.0})
    assert [(s.rule, s.at_ms) for s in signals] == [("fridge.too_warm", at(600))]
