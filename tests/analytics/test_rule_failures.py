"""A rule whose check raises is skipped and reported; the device's other rules go on."""

from __future__ import annotations

from typing import Any

import pytest

from analytics.events import Raise
from analytics.rules import RuleBook, RuleEngine
from analytics.rules.checks import ThresholdCheck
from devices.registry import Registry
from tests.analytics.conftest import at

GAS = "kitchen-0002-gas-1"
FRIDGE = "kitchen-0002-fridge-1"


def test_a_raising_rule_is_reported_and_the_others_still_fire(
    book: RuleBook, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = ThresholdCheck.on_reading

    def broken(self: ThresholdCheck, *args: Any) -> None:
        if self.name == "gas_detector.above_alarm_level":
            raise ZeroDivisionError("a bug")
        original(self, *args)

    monkeypatch.setattr(ThresholdCheck, "on_reading", broken)
    engine = RuleEngine(book, registry)
    signals = []
    for n in range(3):
        signals += engine.on_reading(registry.devices[GAS], at(n * 10), {"gas_lel_pct": 5.0 * n})
    signals += engine.on_reading(registry.devices[GAS], at(40), {"gas_lel_pct": 60.0})
    # The alarm-level rule is broken; the rising-fast rule of the same device still fires.
    assert [s.rule for s in signals if isinstance(s, Raise)] == ["gas_detector.rising_fast"]
    (failure,) = engine.take_failures()
    assert (failure.rule, failure.count, failure.device_id) == (
        "gas_detector.above_alarm_level", 4, GAS
    )  # fmt: skip
    assert failure.error == "ZeroDivisionError: a bug"
    assert engine.take_failures() == []  # reported once
    # Ticks go on for every other rule.
    engine.on_tick(at(3600))
    assert engine.take_failures() == []
