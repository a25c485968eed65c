"""Flat-line and rate-of-change rules."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from analytics.events import Clear, Raise
from analytics.rules import RuleBook
from tests.analytics.conftest import FRIDGE, Driver, at

Drive = Callable[[RuleBook], Driver]
GAS = "kitchen-0002-gas-1"


def only(signals: Sequence[Raise | Clear], rule: str) -> list[tuple[type, int]]:
    return [(type(s), s.at_ms) for s in signals if s.rule == rule]


# -- flatline ----------------------------------------------------------------------------------


def test_flatline_fires_on_the_reading_that_completes_it_and_clears_when_it_moves(
    book: RuleBook, drive: Drive
) -> None:
    d = drive(book)
    for i in range(0, 7300, 60):
        d.read(FRIDGE, i, temp_c=4.0 + (0.05 if i % 120 else 0.0))  # within the 0.1 band
        d.tick(i + 30)
    assert only(d.signals, "fridge.stuck_probe") == [(Raise, at(7200))]
    raised = next(r for r in d.raises() if r.rule == "fridge.stuck_probe")
    assert raised.kind == "sensor_flatline"
    assert (raised.details["low"], raised.details["high"]) == (4.0, 4.05)
    assert raised.details["since_ms"] == at(0)
    moved = d.read(FRIDGE, 7320, temp_c=4.3)
    assert only(moved, "fridge.stuck_probe") == [(Clear, at(7320))]
    assert moved[0].details["reason"] == "moved"


def test_flatline_never_fires_on_a_cycling_fridge(book: RuleBook, drive: Drive) -> None:
    d = drive(book)
    for i in range(0, 86400, 10):
        saw = ((i % 1500) / 1500) * 1.0  # a 25-minute compressor cycle, 1 °C deep
        d.read(FRIDGE, i, temp_c=round(3.5 + saw, 2))
    assert d.signals == []


def test_flatline_is_not_judged_while_the_device_is_silent(book: RuleBook, drive: Drive) -> None:
    d = drive(book)
    for i in range(0, 3600, 60):
        d.read(FRIDGE, i, temp_c=4.0)
    d.tick(20000)  # silent for hours: a heartbeat alert, not a flat line
    assert [r.rule for r in d.raises()] == ["fridge.silent"]


# -- rate --------------------------------------------------------------------------------------


def test_rate_fires_on_a_jump_and_clears_after_normal_rates(book: RuleBook, drive: Drive) -> None:
    d = drive(book)
    d.series(FRIDGE, 0, 100, 10, temp_c=4.0)
    jump = d.read(FRIDGE, 110, temp_c=9.0)  # 5 °C in 10 s: 30 °C/min
    assert only(jump, "fridge.temp_jump") == [(Raise, at(110))]
    assert jump[0].details["rate_per_min"] == 30.0
    assert jump[0].details["max_per_min"] == 20.0
    d.series(FRIDGE, 120, 710, 10, temp_c=9.0)
    assert only(d.clears(), "fridge.temp_jump") == []
    d.series(FRIDGE, 720, 800, 10, temp_c=9.0)
    assert only(d.clears(), "fridge.temp_jump") == [(Clear, at(720))]  # normal since 120


def test_rate_is_paused_across_a_gap(book: RuleBook, drive: Drive) -> None:
    d = drive(book)
    d.series(FRIDGE, 0, 100, 10, temp_c=4.0)
    # 5 min without readings, then a value 10 °C higher: no rate is made across the gap...
    d.read(FRIDGE, 400, temp_c=14.0)
    d.read(FRIDGE, 410, temp_c=14.2)
    assert only(d.signals, "fridge.temp_jump") == []
    # ...and the reading after the gap is the new baseline: a jump from it still counts.
    assert only(d.read(FRIDGE, 420, temp_c=4.0), "fridge.temp_jump") == [(Raise, at(420))]


def test_a_gap_does_not_turn_a_jump_into_a_tiny_rate(book: RuleBook, drive: Drive) -> None:
    d = drive(book)
    d.read(FRIDGE, 0, temp_c=4.0)
    d.read(FRIDGE, 100, temp_c=4.1)  # within max_gap_s: a real rate, 0.06 °C/min
    d.read(FRIDGE, 110, temp_c=12.0)
    assert only(d.signals, "fridge.temp_jump") == [(Raise, at(110))]


def test_readings_too_close_together_keep_the_older_baseline(book: RuleBook, drive: Drive) -> None:
    d = drive(book)
    d.read(FRIDGE, 0, temp_c=4.0)
    d.read(FRIDGE, 10, temp_c=4.1)
    d.read(FRIDGE, 10.2, temp_c=4.3)  # 0.2 °C in 0.2 s would be 60 °C/min of noise
    d.read(FRIDGE, 20, temp_c=4.4)
    assert only(d.signals, "fridge.temp_jump") == []


def test_a_steady_warming_is_not_a_rapid_change(book: RuleBook, drive: Drive) -> None:
    d = drive(book)
    for i in range(0, 3600, 10):
        d.read(FRIDGE, i, temp_c=3.5 + 0.5 * i / 60)  # the fridge_warming fault: 0.5 °C/min
    assert only(d.signals, "fridge.temp_jump") == []


def test_gas_rising_fast_is_a_rapid_change(book: RuleBook, drive: Drive) -> None:
    d = drive(book)
    d.read(GAS, 0, gas_lel_pct=0.5)
    signals = d.read(GAS, 10, gas_lel_pct=3.0)  # 15 %LEL/min, still far below the alarm level
    assert [(s.rule, s.kind) for s in signals] == [("gas_detector.rising_fast", "rapid_change")]
