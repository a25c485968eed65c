"""When a rule may fire: daily windows in district time, optionally only on some weekdays.

The district keeps UTC+8 all year, so local time is a fixed offset from epoch milliseconds.
A window `HH:MM-HH:MM` whose end is not after its start ends the next day (`22:00-06:00`).
Weekdays select windows by the day they *start* on: `22:00-06:00` on `fri` runs from Friday
22:00 to Saturday 06:00. A schedule is a set of half-open periods [start, end) in epoch ms;
touching or overlapping windows merge into one period, so a rule's duration is not cut short
by a boundary that exists only on paper (`18:00-24:00` and `00:00-02:00`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

LOCAL_OFFSET_MS = 8 * 3600 * 1000
DAY_MS = 86_400_000
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# Periods are computed from the windows of a few days around the instant asked about; a
# period that began longer ago than this is seen as beginning here. Durations are bounded by
# one day (see config), so a clipped start never delays a firing.
_LOOKBACK_DAYS = 2
_WINDOW_RE = re.compile(r"^(\d\d):(\d\d)-(\d\d):(\d\d)$")

Period = tuple[int, int]


def local_day(t_ms: int) -> int:
    """Days since 1970-01-01 in district time."""
    return (t_ms + LOCAL_OFFSET_MS) // DAY_MS


def day_start_ms(day: int) -> int:
    """Epoch ms of district midnight starting `day`."""
    return day * DAY_MS - LOCAL_OFFSET_MS


def weekday(day: int) -> int:
    """0 for Monday ... 6 for Sunday; 1970-01-01 was a Thursday."""
    return (day + 3) % 7


@dataclass(frozen=True, slots=True)
class Window:
    """Seconds after local midnight; `end_s` above 86400 when the window ends the next day."""

    start_s: int
    end_s: int

    @classmethod
    def parse(cls, text: str) -> Window:
        match = _WINDOW_RE.match(text.strip())
        if match is None:
            raise ValueError(f"{text!r} is not a window like '22:00-06:00'")
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        if m1 > 59 or m2 > 59 or h1 > 23 or h2 > 24 or (h2 == 24 and m2 != 0):
            raise ValueError(f"{text!r} is not a window of times of day (00:00 to 24:00)")
        start, end = h1 * 3600 + m1 * 60, h2 * 3600 + m2 * 60
        if start == end or (start == 0 and end == 86400):
            # A window as long as the day is better written as no schedule at all.
            raise ValueError(f"{text!r} is empty or the whole day; leave the schedule out")
        if end < start:
            end += 86400
        return cls(start, end)

    def widened(self, early_s: int, late_s: int) -> Window:
        return Window(self.start_s - early_s, self.end_s + late_s)


def parse_hours(text: str) -> tuple[Window, ...]:
    """Opening hours as the inventory writes them: windows separated by ';' (may be empty)."""
    return tuple(Window.parse(part) for part in text.split(";") if part.strip())


@dataclass(frozen=True, slots=True)
class Schedule:
    """Active within `windows` (or, if `invert`, outside them), on `days` if given."""

    windows: tuple[Window, ...]
    invert: bool = False
    days: frozenset[int] | None = None  # weekdays, 0 = Monday

    def period(self, t_ms: int) -> Period | None:
        """The active period containing `t_ms`, or None if the rule is off at `t_ms`."""
        for start, end in _periods(self, local_day(t_ms)):
            if start <= t_ms < end:
                return start, self._true_end(end)
            if start > t_ms:
                break
        return None

    def next_period(self, t_ms: int) -> Period | None:
        """The first active period starting after `t_ms`, looking a week ahead."""
        day = local_day(t_ms)
        for ahead in range(9):
            for start, end in _periods(self, day + ahead):
                if start > t_ms:
                    return start, self._true_end(end)
        return None

    def _true_end(self, end: int) -> int:
        # Periods are computed over a few days only; one that reaches the edge of that range
        # may go on (a site with no opening hours is always "closed").
        for _ in range(16):
            longer = end
            for start, stop in _periods(self, local_day(end - 1)):
                if start < end <= stop:
                    longer = stop
            if longer == end:
                return end
            end = longer
        return end

    def first_due(self, since_ms: int, need_ms: int, until_ms: int) -> int | None:
        """The earliest instant <= `until_ms` at which a condition holding since `since_ms`
        has held `need_ms` inside one active period (counting from the period's start when it
        began outside), or None."""
        t = since_ms
        for _ in range(64):  # periods crossed; bounded so a malformed case cannot spin
            found = self.period(t) or self.next_period(t)
            if found is None or found[0] > until_ms:
                return None
            start, end = found
            due = max(since_ms, start) + need_ms
            if due < end:
                return due if due <= until_ms else None
            t = end
        return None


@lru_cache(maxsize=4096)
def _periods(schedule: Schedule, day: int) -> tuple[Period, ...]:
    """Merged active periods computed from the windows of days around `day`, sorted."""
    first, last = day - _LOOKBACK_DAYS, day + 2
    raw: list[Period] = []
    for d in range(first, last):
        if not schedule.invert and schedule.days is not None and weekday(d) not in schedule.days:
            continue
        base = day_start_ms(d)
        raw.extend((base + w.start_s * 1000, base + w.end_s * 1000) for w in schedule.windows)
    merged = _merge(sorted(raw))
    if not schedule.invert:
        return tuple(merged)
    lo, hi = day_start_ms(first), day_start_ms(last)
    gaps: list[Period] = []
    cursor = lo
    for start, end in merged:
        if start > cursor:
            gaps.append((cursor, min(start, hi)))
        cursor = max(cursor, end)
    if cursor < hi:
        gaps.append((cursor, hi))
    if schedule.days is not None:
        gaps = [g for g in gaps if weekday(local_day(g[0])) in schedule.days]
    return tuple(g for g in gaps if g[0] < g[1])


def _merge(periods: list[Period]) -> list[Period]:
    out: list[Period] = []
    for start, end in periods:
        if out and start <= out[-1][1]:
            if end > out[-1][1]:
                out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out
