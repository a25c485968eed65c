"""Threshold rules: held durations, hysteresis, exactly-once signals, ticks, odd input."""

from __future__ import annotations

from collections.abc import Callable

from analytics.events import Clear, Raise, Severity, Source
from analytics.rules import RuleBook
from tests.analytics.conftest import FRIDGE, KITCHEN, Driver, at

Drive = Callable[[RuleBook], Driver]
GAS = "kitchen-0002-gas-1"
SMOKE = "kitchen-0002-smoke-1"


def test_fires_after_held_duration_and_clears_with_hysteresis(book: RuleBook, drive: Drive) -> None:
    d = drive(book)
    assert d.series(FRIDGE, 0, 590, 10, temp_c=9.0) == []
    fired = d.series(FRIDGE, 600, 1200, 10, temp_c=9.0)
    assert fired == [
        Raise(
            Source(KITCHEN, FRIDGE),
            "cold_chain_temperature",
            "fridge.too_warm",
            Severity.MAJOR,
            at(600),
            {
                "metric": "temp_c",
                "value": 9.0,
                "op": ">",
                "threshold": 8.0,
                "for_s": 600.0,
                "clear_value": 6.0,
                "since_ms": at(0),
            },
        )
    ]
    # Between the clear value and the threshold: still too warm as far as the alert goes.
    assert d.series(FRIDGE, 1210, 2390, 10, temp_c=7.0) == []
    d.series(FRIDGE, 2400, 2690, 10, temp_c=5.0)
    assert d.clears() == []
    cleared = d.series(FRIDGE, 2700, 3600, 10, temp_c=5.0)
    assert [(type(s), s.at_ms) for s in cleared] == [(Clear, at(2700))]
    assert cleared[0].details["reason"] == "cleared"
    assert len(d.raises()) == 1


def test_interrupted_breach_starts_over(book: RuleBook, drive: Drive) -> None:
    d = drive(book)
    d.series(FRIDGE, 0, 500, 10, temp_c=9.0)
    d.read(FRIDGE, 510, temp_c=7.9)
    d.series(FRIDGE, 520, 1110, 10, temp_c=9.0)
    assert d.raises() == []
    assert [r.at_ms for r in d.series(FRIDGE, 1120, 1200, 10, temp_c=9.0)] == [at(1120)]


def test_interrupted_clear_starts_over(book: RuleBook, drive: Drive) -> None:
    d = drive(book)
    d.series(FRIDGE, 0, 600, 10, temp_c=9.0)
    d.series(FRIDGE, 610, 850, 10, temp_c=5.0)
    d.read(FRIDGE, 860, temp_c=6.5)
    d.series(FRIDGE, 870, 1160, 10, temp_c=5.0)
    assert d.clears() == []
    assert [c.at_ms for c in d.series(FRIDGE, 1170, 1200, 10, temp_c=5.0)] == [at(1170)]


def test_a_tick_fires_without_a_message_at_the_exact_time(book: RuleBook, drive: Drive) -> None:
    d = drive(book)
    for t in range(0, 600, 10):
        d.read(FRIDGE, t, temp_c=9.0)
    assert d.tick(599.999) == []
    assert [(r.rule, r.at_ms) for r in d.tick(600)] == [("fridge.too_warm", at(600))]
    assert d.tick(605) == []
    for t in range(610, 900, 10):
        d.read(FRIDGE, t, temp_c=5.0)
    assert [(c.rule, c.at_ms) for c in d.tick(910)] == [("fridge.too_warm", at(910))]


def test_a_late_tick_reports_when_the_duration_elapsed(book: RuleBook, drive: Drive) -> None:
    d = drive(book)
    for t in range(0, 600, 10):
        d.read(FRIDGE, t, temp_c=9.0)
    assert [r.at_ms for r in d.tick(3000) if r.rule == "fridge.too_warm"] == [at(600)]


def test_without_hold_a_value_holds_until_the_next_reading(
    plain_book: RuleBook, drive: Drive
) -> None:
    d = drive(plain_book)
    d.read(FRIDGE, 0, temp_c=9.0)
    assert {(r.rule, r.at_ms) for r in d.tick(600)} == {
        ("fridge.too_warm", at(600)),
        ("fridge.silent", at(600)),  # it has been silent for 10 min too
    }


def test_without_hold_a_reading_after_the_deadline_fires_even_without_ticks(
    plain_book: RuleBook, drive: Drive
) -> None:
    d = drive(plain_book)
    d.read(FRIDGE, 0, temp_c=9.0)
    # Held at 9 °C until this reading says otherwise, 15 min later: it did hold 10 min.
    signals = d.read(FRIDGE, 900, temp_c=7.0)
    assert [(type(s), s.at_ms) for s in signals if s.rule == "fridge.too_warm"] == [
        (Raise, at(600))
    ]


def test_a_reading_vouches_for_its_value_for_the_hold_only(book: RuleBook, drive: Drive) -> None:
    d = drive(book)
    for t in range(0, 300, 10):
        d.read(FRIDGE, t, temp_c=9.0)
    # The fridge goes quiet still warm: unknown after 2 min, so no cold-chain alert on ticks.
    for t in range(300, 1200, 10):
        d.tick(t)
    assert [r.rule for r in d.raises()] == ["fridge.silent"]
    # Back, still warm: the run starts again from this reading, not from before the gap.
    d.series(FRIDGE, 1200, 1790, 10, temp_c=9.0)
    assert [r.rule for r in d.raises()] == ["fridge.silent"]
    assert [r.at_ms for r in d.series(FRIDGE, 1800, 1800, 10, temp_c=9.0)] == [at(1800)]


def test_a_gap_also_stops_a_clear_run(book: RuleBook, drive: Drive) -> None:
    d = drive(book)
    d.series(FRIDGE, 0, 600, 10, temp_c=9.0)
    d.series(FRIDGE, 610, 700, 10, temp_c=5.9)
    for t in range(700, 1500, 10):
        d.tick(t)
    assert d.clears() == []  # 90 s below 6 °C, then unknown: not the 5 min it takes
    d.series(FRIDGE, 1500, 1800, 10, temp_c=5.9)
    assert [(c.rule, c.at_ms) for c in d.clears() if c.rule == "fridge.too_warm"] == [
        ("fridge.too_warm", at(1800))
    ]


def test_bool_alarm_fires_at_once_and_clears_after_its_delay(book: RuleBook, drive: Drive) -> None:
    d = drive(book)
    d.read(SMOKE, 0, smoke_obs_pct_m=0.1, alarm=False)
    raised = d.read(SMOKE, 10, smoke_obs_pct_m=0.1, alarm=True)
    assert [(r.rule, r.kind, r.severity, r.at_ms) for r in raised if isinstance(r, Raise)] == [
        ("smoke_detector.detector_alarm", "smoke", Severity.CRITICAL, at(10))
    ]
    d.read(SMOKE, 20, smoke_obs_pct_m=0.1, alarm=False)
    d.read(SMOKE, 50, smoke_obs_pct_m=0.1, alarm=True)  # back on before the clear delay
    d.read(SMOKE, 60, smoke_obs_pct_m=0.1, alarm=False)
    assert d.tick(119) == []
    assert [(c.rule, c.at_ms) for c in d.tick(120)] == [("smoke_detector.detector_alarm", at(120))]
    assert len(d.raises()) == 1


def test_gas_above_alarm_level_is_immediate_with_hysteresis(book: RuleBook, drive: Drive) -> None:
    d = drive(book)
    d.read(GAS, 0, gas_lel_pct=0.5)
    assert [r.rule for r in d.read(GAS, 10, gas_lel_pct=26.0)] == [
        "gas_detector.above_alarm_level",
        "gas_detector.rising_fast",
    ]
    d.series(GAS, 20, 1000, 10, gas_lel_pct=15.0)  # below the alarm level, above the clear one
    assert [c.rule for c in d.clears()] == ["gas_detector.rising_fast"]
    d.series(GAS, 1010, 1130, 10, gas_lel_pct=5.0)
    assert [(c.rule, c.at_ms) for c in d.clears()][1:] == [
        ("gas_detector.above_alarm_level", at(1130))
    ]


def test_door_left_open_clears_when_closed(book: RuleBook, drive: Drive) -> None:
    d = drive(book)
    d.series(FRIDGE, 0, 400, 10, temp_c=4.0, door_open=True)
    assert [(r.rule, r.at_ms) for r in d.raises()] == [("fridge.door_left_open", at(300))]
    assert [(c.rule, c.at_ms) for c in d.read(FRIDGE, 410, temp_c=4.0, door_open=False)] == [
        ("fridge.door_left_open", at(410))
    ]


def test_out_of_order_readings_are_ignored(book: RuleBook, drive: Drive) -> None:
    d = drive(book)
    d.series(FRIDGE, 0, 300, 10, temp_c=9.0)
    # A late, older reading that would have broken the run, and one that would have cleared.
    assert d.read(FRIDGE, 100, temp_c=4.0) == []
    assert d.read(FRIDGE, 299, temp_c=4.0) == []
    assert d.engine.stats().out_of_order == 2
    assert [r.at_ms for r in d.series(FRIDGE, 310, 600, 10, temp_c=9.0)] == [at(600)]


def test_readings_without_the_metric_or_of_the_wrong_type_change_nothing(
    plain_book: RuleBook, drive: Drive
) -> None:
    d = drive(plain_book)
    d.read(FRIDGE, 0, temp_c=9.0)
    d.read(FRIDGE, 300, humidity_pct=70.0)
    d.read(FRIDGE, 400, temp_c=True)  # a bool is not a temperature
    d.read(FRIDGE, 450, temp_c="cold")
    assert [(r.rule, r.at_ms) for r in d.tick(600)] == [("fridge.too_warm", at(600))]


def test_readings_while_it_holds_raise_once(book: RuleBook, drive: Drive) -> None:
    d = drive(book)
    for i in range(6 * 360):
        d.read(FRIDGE, i * 10, temp_c=12.0 + 0.5 * (i % 2))  # not flat: no stuck-probe alert
        d.tick(i * 10 + 5)
    assert [r.rule for r in d.raises()] == ["fridge.too_warm"]
    assert d.clears() == []


def test_quiet_readings_leave_no_state_to_persist(book: RuleBook, drive: Drive) -> None:
    d = drive(book)
    d.read(FRIDGE, 0, temp_c=4.0, door_open=False)
    d.engine.dirty()
    d.read(FRIDGE, 10, temp_c=4.0, door_open=False)
    changed = d.engine.dirty()
    # The heartbeat moves with every message and the rate with every value; nothing else.
    assert sorted(k.rsplit("/", 1)[1] for k in changed) == ["fridge.silent", "fridge.temp_jump"]
