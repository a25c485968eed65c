"""When a condition a detector sees becomes an alert, and when the alert clears.

A detector says, frame after frame, whether a condition holds. One glimpse is not an alert:
the condition must hold for `raise_after_ms` without a break before it is raised, and be gone
for `clear_after_ms` before it clears. A spell survives a break shorter than `grace_ms` (a key
frame that re-encodes a frozen picture, someone crossing in front of a parked cart). After a
clear, the same condition is not raised again for `cooldown_ms`, so a vendor stepping in and
out of a zone is one case, not twenty.

Pure state: (holds, time) in, "raise" / "clear" / None out.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

Edge = Literal["raise", "clear"]


@dataclass(frozen=True, slots=True)
class Timing:
    raise_after_ms: int
    clear_after_ms: int
    cooldown_ms: int = 0
    grace_ms: int = 0

    def __post_init__(self) -> None:
        if min(self.raise_after_ms, self.clear_after_ms, self.cooldown_ms, self.grace_ms) < 0:
            raise ValueError(f"timings must not be negative: {self}")


class Phase(StrEnum):
    QUIET = "quiet"  # not holding
    PENDING = "pending"  # holding, not yet for long enough
    RAISED = "raised"
    CLEARING = "clearing"  # raised, and not holding since `_gone_since_ms`


class Condition:
    def __init__(self, timing: Timing) -> None:
        self.timing = timing
        self.phase = Phase.QUIET
        self.since_ms: int | None = None  # when the current (or raised) spell began
        self._gone_since_ms = 0
        self._break_since_ms: int | None = None  # a pending spell's current break
        self._quiet_until_ms = 0  # the cool-down after a clear

    def update(self, holds: bool, at_ms: int) -> Edge | None:
        t = self.timing
        if self.phase is Phase.QUIET:
            if holds and at_ms >= self._quiet_until_ms:
                self.phase, self.since_ms = Phase.PENDING, at_ms
                return self._raise_if_due(at_ms)
            return None
        if self.phase is Phase.PENDING:
            if holds:
                if self._break_since_ms is not None and at_ms - self._break_since_ms > t.grace_ms:
                    self.since_ms = at_ms  # the break outlasted the grace: a new spell
                self._break_since_ms = None
                return self._raise_if_due(at_ms)
            if self._break_since_ms is None:
                self._break_since_ms = at_ms
            if at_ms - self._break_since_ms >= t.grace_ms:
                self.reset()
            return None
        if self.phase is Phase.RAISED:
            if not holds:
                self.phase, self._gone_since_ms = Phase.CLEARING, at_ms
                return self._clear_if_due(at_ms)
            return None
        # CLEARING
        if holds:
            self.phase = Phase.RAISED
            return None
        return self._clear_if_due(at_ms)

    def reset(self) -> None:
        """Forget a spell in progress (the picture changed under the detector)."""
        if self.phase is Phase.PENDING:
            self.phase, self.since_ms, self._break_since_ms = Phase.QUIET, None, None

    def restore_raised(self, since_ms: int) -> None:
        """Raised before a restart and not cleared: clears when the condition is gone, and is
        not raised again meanwhile."""
        self.phase, self.since_ms, self._break_since_ms = Phase.RAISED, since_ms, None

    @property
    def raised(self) -> bool:
        return self.phase in (Phase.RAISED, Phase.CLEARING)

    def _raise_if_due(self, at_ms: int) -> Edge | None:
        assert self.since_ms is not None
        if at_ms - self.since_ms < self.timing.raise_after_ms:
            return None
        self.phase, self._break_since_ms = Phase.RAISED, None
        return "raise"

    def _clear_if_due(self, at_ms: int) -> Edge | None:
        if at_ms - self._gone_since_ms < self.timing.clear_after_ms:
            return None
        self.phase, self.since_ms = Phase.QUIET, None
        self._quiet_until_ms = at_ms + self.timing.cooldown_ms
        return "clear"
