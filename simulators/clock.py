"""District time and simulated time.

Opening hours in the inventory are local times; the district keeps UTC+8 all year (no daylight
saving), so a fixed offset is exact and keeps the models free of time-zone databases.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta, timezone

DISTRICT_UTC_OFFSET_S = 8 * 3600
DISTRICT_TZ = timezone(timedelta(seconds=DISTRICT_UTC_OFFSET_S))
DAY_S = 86400


def local_day(t: float) -> int:
    """The district's calendar day of epoch time `t`, as days since 1970-01-01 local."""
    return math.floor((t + DISTRICT_UTC_OFFSET_S) / DAY_S)


def day_start(day: int) -> float:
    """Epoch time of local midnight starting `day`."""
    return float(day * DAY_S - DISTRICT_UTC_OFFSET_S)


def seconds_of_day(t: float) -> float:
    """Local seconds since midnight, in [0, 86400)."""
    return (t + DISTRICT_UTC_OFFSET_S) % DAY_S


@dataclass(frozen=True)
class SimClock:
    """Maps real seconds since the simulator started to simulated epoch time.

    Readings are stamped with the wall clock (ingest rejects time stamps far from its own
    clock) while the models run on the simulated clock: at `speed` 60 a day's curves pass in
    24 minutes of real time.
    """

    sim_start: float
    speed: float

    def sim_elapsed(self, real_elapsed: float) -> float:
        return real_elapsed * self.speed

    def sim_time(self, real_elapsed: float) -> float:
        return self.sim_start + real_elapsed * self.speed

    def real_elapsed(self, sim_elapsed: float) -> float:
        return sim_elapsed / self.speed
