"""The default rules over the simulator's kitchen models: quiet on normal days, right on faults.

The models are the simulator's own pure functions (values at a simulated instant), sampled
every 10 s as the fleet publishes them, with the fault overlay of `simulators.faults`. No
broker, no clock: a simulated day takes a second or two per kitchen.
"""

from __future__ import annotations

from collections import Counter

import pytest

from analytics.events import Clear, Raise, Signal
from analytics.rules import RuleBook, RuleEngine
from devices.registry import Registry
from simulators.faults import FaultPlan
from simulators.kitchen import KitchenModel
from tests.analytics.conftest import T0

INTERVAL_S = 10
SEED = 7


def run(
    registry: Registry,
    book: RuleBook,
    site_id: str,
    hours: float,
    faults: tuple[str, ...] = (),
    seed: int = SEED,
    start_ms: int = T0,
) -> list[Signal]:
    """Every device of the kitchen read every 10 s for `hours`, with a tick after each round."""
    engine = RuleEngine(book, registry)
    kitchen = KitchenModel.from_registry(registry, site_id, seed)
    plan = FaultPlan.build(faults, registry, seed)
    devices = [registry.devices[device_id] for device_id in kitchen.models]
    start_s = start_ms / 1000
    signals: list[Signal] = []
    for step in range(int(hours * 3600 / INTERVAL_S)):
        elapsed = step * INTERVAL_S
        if not plan.offline(site_id, elapsed):
            for i, device in enumerate(devices):
                if plan.silent(device.device_id, elapsed):
                    continue
                # The fleet spreads a round's readings over the interval.
                t = start_s + elapsed + i * INTERVAL_S / len(devices)
                values = plan.overlay(device, kitchen.values(device.device_id, t), elapsed)
                signals += engine.on_reading(device, round(t * 1000), values)
        signals += engine.on_tick(round((start_s + elapsed + INTERVAL_S) * 1000))
    return signals


@pytest.mark.parametrize(
    ("site_id", "seed"),
    [("kitchen-0001", SEED), ("kitchen-0002", SEED), ("kitchen-0003", 12345)],
)
def test_no_alert_on_a_normal_day(
    registry: Registry, book: RuleBook, site_id: str, seed: int
) -> None:
    # Defrost cycles, door openings at rush hour, cooking fumes, the storeroom at dawn.
    assert run(registry, book, site_id, 24, seed=seed) == []


def test_a_warming_fridge_raises_one_cold_chain_alert_then_clears(
    registry: Registry, book: RuleBook
) -> None:
    signals = run(registry, book, "kitchen-0002", 5, ("fridge_warming:kitchen-0002@2h+20m",))
    assert [(type(s), s.kind, s.rule, s.source.device_id) for s in signals] == [
        (Raise, "cold_chain_temperature", "fridge.too_warm", "kitchen-0002-fridge-1"),
        (Clear, "cold_chain_temperature", "fridge.too_warm", "kitchen-0002-fridge-1"),
    ]
    raised, cleared = signals
    fault_start = T0 + 2 * 3600 * 1000
    # 0.5 °C/min from ~3.5 °C passes 8 °C after ~9 min; then 10 min held.
    assert fault_start + 15 * 60_000 < raised.at_ms < fault_start + 22 * 60_000
    assert raised.details["value"] > 8.0
    assert cleared.at_ms > fault_start + 20 * 60_000


def test_a_warming_freezer_raises_one_alert_but_a_short_one_does_not(
    registry: Registry, book: RuleBook
) -> None:
    long = run(registry, book, "kitchen-0002", 5, ("fridge_warming:kitchen-0002-freezer-1@1h+45m",))
    assert [(type(s), s.rule) for s in long] == [
        (Raise, "freezer.too_warm"),
        (Clear, "freezer.too_warm"),
    ]
    # As long above -12 °C as a defrost cycle: not an alert.
    short = run(
        registry, book, "kitchen-0002", 3, ("fridge_warming:kitchen-0002-freezer-1@1h+10m",)
    )
    assert short == []


def test_a_gas_spike_raises_gas_leak_at_once(registry: Registry, book: RuleBook) -> None:
    signals = run(registry, book, "kitchen-0002", 1.5, ("gas_spike:kitchen-0002@1h+2m",))
    raised = [s for s in signals if isinstance(s, Raise)]
    spike_ms = T0 + 3600 * 1000
    assert Counter(r.rule for r in raised) == Counter(
        [
            "gas_detector.above_alarm_level",
            "gas_detector.rising_fast",
        ]
    )
    assert all(r.at_ms < spike_ms + 10_000 for r in raised)
    assert {r.kind for r in raised if r.rule != "gas_detector.rising_fast"} == {"gas_leak"}
    assert Counter(c.rule for c in signals if isinstance(c, Clear)) == Counter(
        r.rule for r in raised
    )


def test_a_silent_kitchen_raises_offline_for_every_device_and_clears_on_return(
    registry: Registry, book: RuleBook
) -> None:
    signals = run(registry, book, "kitchen-0002", 3, ("silent:kitchen-0002@1h+30m",))
    devices = {d.device_id for d in registry.devices_at("kitchen-0002")}
    raised = [s for s in signals if isinstance(s, Raise)]
    cleared = [s for s in signals if isinstance(s, Clear)]
    assert {r.source.device_id for r in raised} == devices
    assert {r.kind for r in raised} == {"device_offline"}
    assert len(raised) == len(devices) == len(cleared)
