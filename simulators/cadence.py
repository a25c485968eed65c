"""When each simulated device publishes: evenly spread, never in one burst."""

from __future__ import annotations

from dataclasses import dataclass

FIRST_ROUND_S = 2.0


@dataclass(frozen=True)
class Cadence:
    """`count` devices, each publishing every `interval_s` real seconds.

    Slot `j` is device `j % count`'s round `j // count`. The first round is squeezed into
    `first_round_s` so that every device reports soon after the start, however long the
    interval; from then on device k publishes at `k/count` of each interval, so that a broker
    (and ingest) sees a steady rate instead of a burst per interval. No device waits longer
    than an interval between two readings.
    """

    count: int
    interval_s: float
    first_round_s: float = FIRST_ROUND_S

    @property
    def first_span_s(self) -> float:
        return min(self.first_round_s, self.interval_s)

    def slot_time(self, j: int) -> float:
        """Real seconds after the start at which slot `j` is due; increasing in `j`."""
        rounds, k = divmod(j, self.count)
        if rounds == 0:
            return k * self.first_span_s / self.count
        return self.first_span_s + (rounds - 1 + k / self.count) * self.interval_s

    def item(self, j: int) -> int:
        return j % self.count
