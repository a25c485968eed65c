"""The four checks as small state machines over one rule instance (a rule on a device).

Every check follows the same pattern. While the alert is not raised, `breach_since` is the
start of the current run of the condition (None when the last observation did not meet it);
while raised, `clear_since` is the start of the run of the clear condition. A run that has
lasted its duration toggles the alert. Values are held between observations (zero-order
hold): on a clock tick a run goes on as long as no newer observation ends it, which is what
lets a held duration fire, or a silence be noticed, without any message arriving.

Transition times are exact, not the time of the tick that noticed them: a threshold held from
t0 for `for_s` raises at t0 + for_s whether the tick or a reading comes one second or an hour
later, so results do not depend on tick cadence or on a restart in between.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from analytics.events import Clear, Raise, Severity, Signal, Source
from analytics.rules.schedule import DAY_MS, Schedule

Value = float | int | bool | str
Out = list[Signal]
_WAKE_HORIZON_MS = 8 * DAY_MS
_MAX_STEPS = 16  # transitions one advance may make (a raise and a clear per schedule period)


class Instance:
    """The mutable progress of one rule on one device; JSON-serialisable via `to_state`."""

    __slots__ = (
        "active",
        "base_ts",
        "base_value",
        "breach_since",
        "check",
        "clear_since",
        "high",
        "key",
        "low",
        "period_end",
        "raised_at",
        "seen",
        "source",
        "value",
        "wake",
    )

    STATE: ClassVar[tuple[str, ...]] = (
        "active",
        "breach_since",
        "clear_since",
        "raised_at",
        "period_end",
        "value",
        "seen",
        "base_ts",
        "base_value",
        "low",
        "high",
    )
    _INTS: ClassVar[frozenset[str]] = frozenset(
        {"breach_since", "clear_since", "raised_at", "period_end", "seen", "base_ts"}
    )
    _NUMBERS: ClassVar[frozenset[str]] = frozenset({"base_value", "low", "high"})

    def __init__(self, key: str, check: Check, source: Source) -> None:
        self.key = key
        self.check = check
        self.source = source
        self.wake: int | None = None  # time of this instance's live entry in the engine's heap
        self.active = False
        self.breach_since: int | None = None
        self.clear_since: int | None = None
        self.raised_at: int | None = None
        self.period_end: int | None = None
        self.value: Value | None = None
        self.seen: int | None = None  # last reading, kept while a run depends on it
        self.base_ts: int | None = None
        self.base_value: float | None = None
        self.low: float | None = None
        self.high: float | None = None

    def fingerprint(self) -> tuple[Any, ...]:
        return (
            self.active,
            self.breach_since,
            self.clear_since,
            self.raised_at,
            self.period_end,
            self.value,
            self.seen,
            self.base_ts,
            self.base_value,
            self.low,
            self.high,
        )

    @property
    def blank(self) -> bool:
        return not self.active and all(v is None for v in self.fingerprint()[1:])

    def latest_ts(self) -> int | None:
        times = [self.breach_since, self.clear_since, self.raised_at, self.seen, self.base_ts]
        known = [t for t in times if t is not None]
        return max(known) if known else None

    def to_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"check": self.check.check}
        for name in self.STATE:
            value = getattr(self, name)
            # `value` may be a legitimate False (a camera's `online`); `active` is False by default.
            if value is not None and not (name == "active" and value is False):
                state[name] = value
        if self.active:
            # So that an alert whose rule has gone from the book can still be cleared.
            state["kind"] = self.check.kind
        return state

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Take a state from `to_state`; ValueError if it is not one."""
        if state.get("check") != self.check.check:
            raise ValueError(f"state of a {state.get('check')!r} check, not {self.check.check!r}")
        unknown = set(state) - {*self.STATE, "check", "kind"}
        if unknown:
            raise ValueError(f"unknown field(s) {sorted(unknown)}")
        active = state.get("active", False)
        if not isinstance(active, bool):
            raise ValueError(f"active must be true or false, got {active!r}")
        for name in self._INTS:
            value = state.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"{name} must be epoch milliseconds, got {value!r}")
        for name in self._NUMBERS:
            value = state.get(name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float)
            ):
                raise ValueError(f"{name} must be a number, got {value!r}")
        value = state.get("value")
        if value is not None and not isinstance(value, bool | int | float | str):
            raise ValueError(f"value must be a number, true/false or text, got {value!r}")
        for name in self.STATE:
            setattr(self, name, state.get(name, False if name == "active" else None))


@dataclass(frozen=True, eq=False)
class Check:
    """One rule compiled for one site (its schedule needs the site's opening hours)."""

    check: ClassVar[str]
    # Whether a run reaching its duration fires on a tick, or only when a reading shows it.
    fires_between_readings: ClassVar[bool] = True

    name: str  # stable rule id in signals: "<device type>.<rule id>"
    kind: str
    severity: Severity
    schedule: Schedule | None
    for_ms: int
    clear_ms: int | None  # None: the alert clears only on an observation
    hold_ms: int | None  # how long a reading vouches for its value; None: until the next

    # -- what each check implements ----------------------------------------------------------

    def on_reading(self, inst: Instance, ts: int, values: Mapping[str, Value], out: Out) -> None:
        raise NotImplementedError

    def on_status(self, inst: Instance, ts: int, online: bool, out: Out) -> None:
        """Only the heartbeat cares about status reports."""

    def details(self, inst: Instance) -> dict[str, Any]:
        return {}

    # -- shared machinery --------------------------------------------------------------------

    def advance(self, inst: Instance, t: int, out: Out) -> None:
        """Apply every transition due by `t`, at the instant each became due."""
        runs_until = self._vouched_until(inst, t)
        for _ in range(_MAX_STEPS):
            if inst.active:
                at, reason = None, ""
                if inst.clear_since is not None and self.clear_ms is not None:
                    due = inst.clear_since + self.clear_ms
                    if due <= runs_until:
                        at, reason = due, "cleared"
                end = inst.period_end
                if end is not None and end <= t and (at is None or end < at):
                    at, reason = end, "schedule"
                if at is None:
                    return
                self.clear(inst, at, reason, out)
            else:
                if inst.breach_since is None or not self.fires_between_readings:
                    return
                at = self.due(inst.breach_since, runs_until)
                if at is None:
                    return
                self.raise_(inst, at, out)

    def _vouched_until(self, inst: Instance, t: int) -> int:
        """How far the last reading's value may be held for runs (but not for schedules)."""
        if self.hold_ms is None or inst.seen is None:
            return t
        return min(t, inst.seen + self.hold_ms)

    def due(self, since: int, until: int) -> int | None:
        """When a run that started at `since` has lasted `for_ms` in schedule, if by `until`."""
        if self.schedule is None:
            at = since + self.for_ms
            return at if at <= until else None
        return self.schedule.first_due(since, self.for_ms, until)

    def wake(self, inst: Instance, now: int) -> int | None:
        """The next time a tick must look at `inst`, if any."""
        runs_until = self._vouched_until(inst, now + _WAKE_HORIZON_MS)
        if inst.active:
            times = [inst.period_end]
            if inst.clear_since is not None and self.clear_ms is not None:
                due = inst.clear_since + self.clear_ms
                times.append(due if due <= runs_until else None)
            known = [t for t in times if t is not None]
            return min(known) if known else None
        if inst.breach_since is None or not self.fires_between_readings:
            return None
        return self.due(inst.breach_since, runs_until)

    def raise_(self, inst: Instance, at: int, out: Out) -> None:
        inst.active = True
        inst.raised_at = at
        inst.clear_since = None
        period = self.schedule.period(at) if self.schedule is not None else None
        inst.period_end = period[1] if period is not None else None
        details = {**self.details(inst), "since_ms": inst.breach_since}
        out.append(Raise(inst.source, self.kind, self.name, self.severity, at, details))

    def clear(self, inst: Instance, at: int, reason: str, out: Out) -> None:
        raised = inst.raised_at
        # A late message can prove the end of a condition before a tick noticed its start.
        at = max(at, raised) if raised is not None else at
        details = {**self.details(inst), "reason": reason, "raised_ms": raised}
        out.append(Clear(inst.source, self.kind, self.name, at, details))
        inst.active = False
        inst.raised_at = None
        inst.period_end = None
        if inst.breach_since is None:
            inst.value = inst.seen = None
        if reason == "schedule" and inst.breach_since is not None:
            # The condition goes on, but only counts again from the next period's start.
            inst.breach_since = max(inst.breach_since, at)


def _is_number(v: object) -> bool:
    return type(v) in (float, int)


def _number(values: Mapping[str, Value], metric: str) -> float | None:
    """The metric's value as a float, or None if the reading has no number for it."""
    v = values.get(metric)
    return float(v) if v is not None and _is_number(v) else None


_ORDER: Mapping[str, Callable[[Any, Any], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}


@dataclass(frozen=True, eq=False)
class ThresholdCheck(Check):
    check: ClassVar[str] = "threshold"

    metric: str
    op: str
    threshold: Value
    clear_value: float | None

    def _accepts(self, v: object) -> bool:
        if isinstance(self.threshold, bool):
            return isinstance(v, bool)
        if isinstance(self.threshold, str):
            return isinstance(v, str)
        return _is_number(v)

    def breached(self, v: Value) -> bool:
        return _ORDER[self.op](v, self.threshold)

    def clearing(self, v: Value) -> bool:
        # `clear_value` is resolved at compile time: the threshold itself unless hysteresis.
        if self.op in (">", ">=") and self.clear_value is not None:
            return float(v) < self.clear_value
        if self.op in ("<", "<=") and self.clear_value is not None:
            return float(v) > self.clear_value
        return not self.breached(v)

    def on_reading(self, inst: Instance, ts: int, values: Mapping[str, Value], out: Out) -> None:
        v = values.get(self.metric)
        if v is None or not self._accepts(v):
            return
        if self.hold_ms is not None and inst.seen is not None and ts - inst.seen > self.hold_ms:
            # A gap longer than the hold: the value is unknown since the last reading's hold
            # ran out, so the runs end there and start afresh from this reading.
            self.advance(inst, inst.seen + self.hold_ms, out)
            inst.breach_since = inst.clear_since = None
        self.advance(inst, ts, out)
        if self.breached(v):
            if inst.breach_since is None:
                inst.breach_since = ts
        else:
            inst.breach_since = None
        if self.clearing(v):
            if inst.clear_since is None:
                inst.clear_since = ts
        else:
            inst.clear_since = None
        # Kept only while they matter, so that readings of a quiet device change no state.
        live = inst.active or inst.breach_since is not None
        inst.value = v if live else None
        inst.seen = ts if live else None
        self.advance(inst, ts, out)

    def details(self, inst: Instance) -> dict[str, Any]:
        out: dict[str, Any] = {
            "metric": self.metric,
            "value": inst.value,
            "op": self.op,
            "threshold": self.threshold,
            "for_s": self.for_ms / 1000,
        }
        if self.clear_value is not None:
            out["clear_value"] = self.clear_value
        return out


@dataclass(frozen=True, eq=False)
class HeartbeatCheck(Check):
    """`breach_since` is the last sign of life: silence is always running once seen."""

    check: ClassVar[str] = "heartbeat"

    def on_reading(self, inst: Instance, ts: int, values: Mapping[str, Value], out: Out) -> None:
        self._alive(inst, ts, out)

    def on_status(self, inst: Instance, ts: int, online: bool, out: Out) -> None:
        if online:
            self._alive(inst, ts, out)
        elif inst.breach_since is None:
            # Seen (a retained Last Will, say) but not alive: the silence counts from here.
            inst.breach_since = ts

    def _alive(self, inst: Instance, ts: int, out: Out) -> None:
        if inst.breach_since is not None and ts < inst.breach_since:
            return  # older than a sign of life already counted
        self.advance(inst, ts, out)
        if inst.active:
            self.clear(inst, ts, "alive", out)
        inst.breach_since = ts

    def details(self, inst: Instance) -> dict[str, Any]:
        return {"silent_for_s": self.for_ms / 1000, "last_seen_ms": inst.breach_since}


@dataclass(frozen=True, eq=False)
class FlatlineCheck(Check):
    """`breach_since` is the start of the band [low, high] the readings have stayed in."""

    check: ClassVar[str] = "flatline"
    fires_between_readings: ClassVar[bool] = False

    metric: str
    tolerance: float

    def on_reading(self, inst: Instance, ts: int, values: Mapping[str, Value], out: Out) -> None:
        x = _number(values, self.metric)
        if x is None:
            return
        self.advance(inst, ts, out)
        if inst.breach_since is None or inst.low is None or inst.high is None:
            inst.breach_since, inst.low, inst.high = ts, x, x
        else:
            low, high = min(inst.low, x), max(inst.high, x)
            if high - low > self.tolerance:
                if inst.active:
                    inst.value = x
                    self.clear(inst, ts, "moved", out)
                inst.breach_since, inst.low, inst.high = ts, x, x
            else:
                inst.low, inst.high = low, high
        if not inst.active and self.due(inst.breach_since, ts) is not None:
            inst.value = x
            # Raised at the reading that shows it: a device that stops reporting is the
            # heartbeat's business, not a flat line.
            self.raise_(inst, ts, out)
        if not inst.active:
            inst.value = None

    def details(self, inst: Instance) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "value": inst.value,
            "low": inst.low,
            "high": inst.high,
            "tolerance": self.tolerance,
            "for_s": self.for_ms / 1000,
        }


@dataclass(frozen=True, eq=False)
class RateCheck(Check):
    """`base_ts`/`base_value` is the reading the next rate is measured from."""

    check: ClassVar[str] = "rate"

    metric: str
    max_per_min: float
    max_gap_ms: int
    min_interval_ms: int

    def on_reading(self, inst: Instance, ts: int, values: Mapping[str, Value], out: Out) -> None:
        x = _number(values, self.metric)
        if x is None:
            return
        self.advance(inst, ts, out)
        base_ts, base_value = inst.base_ts, inst.base_value
        if base_ts is None or base_value is None or ts - base_ts > self.max_gap_ms:
            # First reading, or after a gap: a rate over the gap would average away a jump or
            # blow up a glitch, so the rule pauses and the reading becomes the new baseline.
            inst.base_ts, inst.base_value = ts, x
            return
        dt = ts - base_ts
        if dt < self.min_interval_ms:
            return
        rate = abs(x - base_value) * 60_000.0 / dt
        inst.base_ts, inst.base_value = ts, x
        if rate > self.max_per_min:
            if inst.breach_since is None:
                inst.breach_since = ts
            inst.clear_since = None
        else:
            if inst.clear_since is None:
                inst.clear_since = ts
            inst.breach_since = None
        inst.value = round(rate, 6) if inst.active or inst.breach_since is not None else None
        self.advance(inst, ts, out)

    def details(self, inst: Instance) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "rate_per_min": inst.value,
            "max_per_min": self.max_per_min,
            "value": inst.base_value,
        }
