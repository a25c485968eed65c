"""Schedules: opening hours, windows across midnight, weekdays, and rules that use them."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from analytics.events import Clear, Raise
from analytics.rules import RuleBook, ScheduleSpec
from analytics.rules.schedule import Schedule, Window
from tests.analytics.conftest import BookFactory, Driver, at, hm

Drive = Callable[[RuleBook], Driver]
DOOR = "kitchen-0002-door-1"  # kitchen-0002 is open 10:30-14:00 and 16:30-21:30
HOURS = "10:30-14:00;16:30-21:30"


def spec(**fields: object) -> ScheduleSpec:
    return ScheduleSpec.model_validate(fields)


def test_window_across_midnight() -> None:
    s = spec(windows=["22:00-06:00"]).compile("")
    assert s.period(hm("23:00")) == (hm("22:00"), hm("06:00", day=1))
    assert s.period(hm("03:00", day=1)) == (hm("22:00"), hm("06:00", day=1))
    assert s.period(hm("12:00", day=1)) is None
    assert s.period(hm("06:00", day=1)) is None  # periods are half-open
    assert s.next_period(hm("12:00", day=1)) == (hm("22:00", day=1), hm("06:00", day=2))


def test_weekdays_select_windows_by_the_day_they_start() -> None:
    s = spec(windows=["22:00-06:00"], days=["fri"]).compile("")
    friday, saturday = 4, 5  # days after Monday
    assert s.period(hm("02:00", day=saturday)) == (
        hm("22:00", day=friday),
        hm("06:00", day=saturday),
    )
    assert s.period(hm("02:00", day=friday)) is None  # that night began on Thursday
    assert s.period(hm("23:00", day=saturday)) is None
    assert s.next_period(hm("07:00")) == (hm("22:00", day=friday), hm("06:00", day=saturday))


def test_touching_windows_make_one_period() -> None:
    s = spec(windows=["18:00-24:00", "00:00-02:00"]).compile("")
    assert s.period(hm("23:59")) == (hm("18:00"), hm("02:00", day=1))


def test_open_and_closed_follow_opening_hours() -> None:
    opened = spec(hours="open").compile(HOURS)
    assert opened.period(hm("12:00")) == (hm("10:30"), hm("14:00"))
    assert opened.period(hm("15:00")) is None
    closed = spec(hours="closed").compile(HOURS)
    assert closed.period(hm("15:00")) == (hm("14:00"), hm("16:30"))
    assert closed.period(hm("03:00")) == (hm("21:30", day=-1), hm("10:30"))


def test_margins_widen_the_opening_hours() -> None:
    closed = spec(hours="closed", early_s=7200, late_s=3600).compile(HOURS)
    # Open 08:30-15:00 and 14:30-22:30: one staffed day, closed only at night.
    assert closed.period(hm("15:00")) is None
    assert closed.period(hm("03:00")) == (hm("22:30", day=-1), hm("08:30"))


def test_a_site_without_opening_hours_is_always_closed() -> None:
    closed = spec(hours="closed").compile("")
    period = closed.period(hm("12:00"))
    assert period is not None
    assert period[0] <= hm("00:00", day=-1)
    assert period[1] >= hm("00:00", day=7)  # not cut at the edge of the days looked at
    assert spec(hours="open").compile("").period(hm("12:00")) is None


def test_first_due_counts_only_inside_a_period() -> None:
    s = Schedule((Window.parse("22:00-06:00"),))
    # A condition since 20:00 counts from 22:00; one of 9 h cannot fit an 8 h night.
    assert s.first_due(hm("20:00"), 600_000, hm("23:00")) == hm("22:10")
    assert s.first_due(hm("20:00"), 9 * 3_600_000, hm("12:00", day=3)) is None


@pytest.mark.parametrize(
    "text", ["25:00-06:00", "10:00-10:00", "1000-1100", "00:00-24:00", "10:60-11:00", "24:00-01:00"]
)
def test_bad_windows_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=text):
        Window.parse(text)


# -- rules with schedules ----------------------------------------------------------------------
# Mostly with the default door rule without its hold, so that sparse readings can show the
# schedule alone; the last test drives it as the sensor reports, every 10 s.


def test_storeroom_door_open_at_night_raises(plain_book: RuleBook, drive: Drive) -> None:
    d = drive(plain_book)
    d.read(DOOR, hm_s("01:59"), door_open=False)
    d.read(DOOR, hm_s("02:00"), door_open=True)
    assert rule_events(d.tick(hm_s("02:02:59"))) == []
    assert rule_events(d.tick(hm_s("02:03"))) == [(Raise, hm("02:03"))]
    assert rule_events(d.read(DOOR, hm_s("02:10"), door_open=False)) == [(Clear, hm("02:10"))]


def test_storeroom_door_open_in_service_hours_is_fine(plain_book: RuleBook, drive: Drive) -> None:
    d = drive(plain_book)
    d.read(DOOR, hm_s("12:00"), door_open=True)
    d.tick(hm_s("13:30"))
    assert rule_events(d.signals) == []


def test_a_run_that_starts_before_the_window_counts_from_its_start(
    plain_book: RuleBook, drive: Drive
) -> None:
    d = drive(plain_book)
    d.read(DOOR, hm_s("22:20"), door_open=True)  # still staffed until 22:30
    assert rule_events(d.tick(hm_s("22:32:59"))) == []
    assert rule_events(d.tick(hm_s("22:33"))) == [(Raise, hm("22:33"))]


def test_a_run_cut_by_the_window_closing_does_not_fire(plain_book: RuleBook, drive: Drive) -> None:
    d = drive(plain_book)
    d.read(DOOR, hm_s("08:28"), door_open=True)  # staff arrive at 08:30
    d.tick(hm_s("10:00"))
    assert rule_events(d.signals) == []


def test_an_alert_clears_when_its_window_ends_and_comes_back_in_the_next(
    plain_book: RuleBook, drive: Drive
) -> None:
    d = drive(plain_book)
    d.read(DOOR, hm_s("07:00"), door_open=True)
    assert rule_events(d.tick(hm_s("07:03"))) == [(Raise, hm("07:03"))]
    # Staff arrive: the door being open is no longer an after-hours condition.
    cleared = d.tick(hm_s("08:30"))
    assert rule_events(cleared) == [(Clear, hm("08:30"))]
    assert [c.details["reason"] for c in cleared if isinstance(c, Clear)] == ["schedule"]
    # Still open all day (no new reading says otherwise): after hours again from 22:30.
    assert rule_events(d.tick(hm_s("22:32"))) == []
    assert rule_events(d.tick(hm_s("22:40"))) == [(Raise, hm("22:33"))]


def test_a_late_reading_after_window_changes_replays_them(
    plain_book: RuleBook, drive: Drive
) -> None:
    d = drive(plain_book)
    d.read(DOOR, hm_s("07:00"), door_open=True)
    # No ticks at all: the reading at 09:00 shows what happened in between.
    signals = d.read(DOOR, hm_s("09:00"), door_open=False)
    assert rule_events(signals) == [(Raise, hm("07:03")), (Clear, hm("08:30"))]


def test_explicit_windows_and_weekdays(make_book: BookFactory, drive: Drive) -> None:
    book = make_book(
        """
        [rules.door_sensor.weekend_nights]
        check = "threshold"
        kind = "door_open_after_hours"
        metric = "door_open"
        op = "=="
        value = true
        for_s = 60
        schedule = { windows = ["22:00-06:00"], days = ["sat", "sun"] }
        """
    )
    d = drive(book)
    friday, saturday, sunday, monday = 4, 5, 6, 7
    for day in (friday, saturday, sunday, monday):
        d.read(DOOR, day * 86400 + hm_s("23:00"), door_open=True)
        d.read(DOOR, day * 86400 + hm_s("23:30"), door_open=False)
        d.read(DOOR, (day + 1) * 86400 + hm_s("05:00"), door_open=True)
        d.read(DOOR, (day + 1) * 86400 + hm_s("05:30"), door_open=False)
    raised = [r.at_ms for r in d.raises()]
    assert raised == [
        hm("23:01", day=saturday),
        hm("05:01", day=sunday),
        hm("23:01", day=sunday),
        hm("05:01", day=monday),
    ]


def test_storeroom_door_at_the_sensor_cadence(book: RuleBook, drive: Drive) -> None:
    d = drive(book)
    for t in range(int(hm_s("21:00")), int(hm_s("23:30")), 10):
        d.read(DOOR, t, door_open=t >= hm_s("22:20"))
        d.tick(t + 5)
    assert rule_events(d.signals) == [(Raise, hm("22:33"))]


def hm_s(text: str) -> float:
    """Seconds after Monday midnight of 'HH:MM[:SS]'."""
    return (hm(text) - at(0)) / 1000


def rule_events(signals: list[Raise | Clear]) -> list[tuple[type, int]]:
    return [(type(s), s.at_ms) for s in signals if s.rule == "door_sensor.open_after_hours"]
