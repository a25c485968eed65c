"""A kitchen's service hours and the daily rhythm they imply (prep, service, night).

Each minute of the local day falls in one phase: NIGHT (nobody there), STAFF (staff present
between services), PREP (the hour before a service) or SERVICE. Models turn phases into rates
(door openings per hour) and a continuous cooking `activity` in [0, 1].
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import IntEnum
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from simulators.clock import DAY_S, day_start, local_day, seconds_of_day

PREP_S = 3600  # cooks start an hour before service
WIND_DOWN_S = 1200  # and keep cooking for the last orders
STAFF_BEFORE_S = 2 * 3600
STAFF_AFTER_S = 3600
# Used when a kitchen has no opening hours in the inventory: a typical restaurant's.
DEFAULT_HOURS = "11:00-14:00;17:00-21:00"
_WINDOW_RE = re.compile(r"^(\d\d):(\d\d)-(\d\d):(\d\d)$")
_MINUTES = 1440


class Phase(IntEnum):
    NIGHT = 0
    STAFF = 1
    PREP = 2
    SERVICE = 3


@dataclass(frozen=True)
class Rates:
    """Events per hour in each phase."""

    night: float
    staff: float
    prep: float
    service: float

    def per_minute(self, phases: npt.NDArray[np.int8]) -> npt.NDArray[np.float64]:
        table = np.array([self.night, self.staff, self.prep, self.service], dtype=np.float64)
        return table[phases]


@dataclass(frozen=True)
class ServiceHours:
    """Parsed opening hours: windows in local seconds since midnight.

    A window whose end is not after its start ends the next day (e.g. 18:00-02:00); its end
    is then stored above 86400.
    """

    text: str
    windows: tuple[tuple[int, int], ...]
    # Per-minute tables, one extra entry so that interpolation can wrap at midnight.
    phases: npt.NDArray[np.int8] = field(compare=False, repr=False)
    activity_by_minute: npt.NDArray[np.float64] = field(compare=False, repr=False)

    @classmethod
    def parse(cls, text: str) -> ServiceHours:
        return _parse(text.strip() or DEFAULT_HOURS)

    def phase(self, t: float) -> Phase:
        return Phase(int(self.phases[int(seconds_of_day(t) // 60)]))

    def in_service(self, t: float) -> bool:
        return self.phase(t) is Phase.SERVICE

    def activity(self, t: float) -> float:
        """Cooking intensity in [0, 1]: 1 during service, ramping up over the prep hour."""
        minute = seconds_of_day(t) / 60.0
        i = int(minute)
        a = float(self.activity_by_minute[i])
        return a + (float(self.activity_by_minute[i + 1]) - a) * (minute - i)

    def window_ends(self, day: int) -> tuple[float, ...]:
        """Epoch times at which the services of local `day` end."""
        start = day_start(day)
        return tuple(start + end for _, end in self.windows)

    def latest_end_before(self, t: float, delay_s: float) -> float | None:
        """The latest `window end + delay_s` not after `t`, looking back one day."""
        best: float | None = None
        day = local_day(t)
        for d in (day - 1, day):
            for end in self.window_ends(d):
                at = end + delay_s
                if at <= t and (best is None or at > best):
                    best = at
        return best


def _trapezoid(s: float, start: int, end: int) -> float:
    if start <= s < end:
        return 1.0
    if start - PREP_S <= s < start:
        return 0.8 * (s - (start - PREP_S)) / PREP_S
    if end <= s < end + WIND_DOWN_S:
        return 1.0 - (s - end) / WIND_DOWN_S
    return 0.0


@lru_cache(maxsize=64)
def _parse(text: str) -> ServiceHours:
    windows: list[tuple[int, int]] = []
    for part in text.split(";"):
        match = _WINDOW_RE.match(part.strip())
        if match is None:
            raise ValueError(f"opening hours {text!r}: {part!r} is not HH:MM-HH:MM")
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        if h1 > 24 or h2 > 24 or m1 > 59 or m2 > 59:
            raise ValueError(f"opening hours {text!r}: {part!r} is not a time of day")
        start, end = h1 * 3600 + m1 * 60, h2 * 3600 + m2 * 60
        if end <= start:
            end += DAY_S
        windows.append((start, end))
    windows.sort()

    staff = (windows[0][0] - STAFF_BEFORE_S, max(e for _, e in windows) + STAFF_AFTER_S)
    phases = np.zeros(_MINUTES + 1, dtype=np.int8)
    activity = np.zeros(_MINUTES + 1, dtype=np.float64)
    for minute in range(_MINUTES + 1):
        s = (minute % _MINUTES) * 60
        phase = Phase.NIGHT
        act = 0.0
        # Windows of the previous and next day reach into this one (late nights, early prep).
        for shift in (-DAY_S, 0, DAY_S):
            lo, hi = staff[0] + shift, staff[1] + shift
            if lo <= s < hi:
                phase = max(phase, Phase.STAFF)
            for start, end in windows:
                start, end = start + shift, end + shift
                if start <= s < end:
                    phase = Phase.SERVICE
                elif start - PREP_S <= s < start:
                    phase = max(phase, Phase.PREP)
                act = max(act, _trapezoid(s, start, end))
        phases[minute] = phase
        activity[minute] = act
    return ServiceHours(text, tuple(windows), phases, activity)
