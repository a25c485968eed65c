"""The rule engine: readings, status reports and clock ticks in, `Raise`/`Clear` signals out.

Pure: no clock, no I/O. The caller passes time (`on_tick(now_ms)`) and persists progress by
applying `dirty()` after each call; `RuleEngine.restore` rebuilds an engine from the result.
A rule that raises is skipped for that input and reported by `take_failures()`; the other
rules of the device go on.

Cost: a reading touches only its device's rule instances; a tick pops the instances whose
next transition is due from a heap, so it costs nothing while nothing is due. An instance has
at most one live heap entry: when its deadline moves later (a heartbeat's, on every message)
the old entry stays, and when it pops, the instance is looked at and pushed again for its new
deadline. That keeps the heap at about one entry per instance instead of one per message.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from analytics.events import Clear, Signal, Source
from analytics.rules.checks import (
    Check,
    FlatlineCheck,
    HeartbeatCheck,
    Instance,
    RateCheck,
    ThresholdCheck,
    Value,
)
from analytics.rules.config import (
    FlatlineRule,
    HeartbeatRule,
    RateRule,
    Rule,
    RuleBook,
    ThresholdRule,
)
from devices.models import Device
from devices.registry import Registry

SNAPSHOT_FORMAT = 1


class SnapshotError(ValueError):
    """A snapshot that is not one this engine wrote; names the key."""


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def compile_rule(rule: Rule, device_type: str, opening_hours: str) -> Check:
    """The rule as a check for one site (the site's opening hours feed an `hours` schedule)."""
    name = f"{device_type}.{rule.id}"
    schedule = rule.schedule.compile(opening_hours) if rule.schedule is not None else None
    common = (name, rule.kind, rule.severity, schedule)
    if isinstance(rule, ThresholdRule):
        ordering = rule.op in (">", ">=", "<", "<=")
        # Without hysteresis the clear boundary is the threshold itself.
        clear_value = rule.clear_value if rule.clear_value is not None else rule.value
        return ThresholdCheck(
            *common,
            _ms(rule.for_s),
            _ms(rule.clear_for_s),
            None if rule.hold_s is None else _ms(rule.hold_s),
            rule.metric,
            rule.op,
            rule.value,
            float(clear_value) if ordering else None,
        )
    if isinstance(rule, HeartbeatRule):
        return HeartbeatCheck(*common, _ms(rule.silent_for_s), None, None)
    if isinstance(rule, FlatlineRule):
        return FlatlineCheck(*common, _ms(rule.for_s), None, None, rule.metric, rule.tolerance)
    assert isinstance(rule, RateRule)
    return RateCheck(
        *common,
        _ms(rule.for_s),
        _ms(rule.clear_for_s),
        None,
        rule.metric,
        rule.max_per_min,
        _ms(rule.max_gap_s),
        _ms(rule.min_interval_s),
    )


@dataclass(eq=False, slots=True)
class _Device:
    device: Device
    instances: tuple[Instance, ...]
    last_ts: int | None = None  # newest reading: older ones are out of order


@dataclass(frozen=True, slots=True)
class _Orphan:
    """An open alert restored from a snapshot whose rule or device is gone."""

    source: Source
    kind: str
    rule: str


@dataclass(frozen=True, slots=True)
class RuleFailure:
    """A rule that raised: how often since the last `take_failures`, and the newest case."""

    rule: str
    count: int
    device_id: str
    error: str


@dataclass(frozen=True)
class EngineStats:
    instances: int = 0
    heap: int = 0
    readings: int = 0
    out_of_order: int = 0
    dropped_states: int = 0
    open_alerts: int = 0


@dataclass(eq=False)
class RuleEngine:
    """Evaluates a rule book over the devices of a registry. Not thread-safe."""

    book: RuleBook
    registry: Registry
    _devices: dict[str, _Device] = field(default_factory=dict, init=False, repr=False)
    _checks: dict[tuple[int, str], Check] = field(default_factory=dict, init=False, repr=False)
    _heap: list[tuple[int, int, Instance]] = field(default_factory=list, init=False, repr=False)
    _seq: itertools.count[int] = field(default_factory=itertools.count, init=False, repr=False)
    _dirty: dict[str, Instance | None] = field(default_factory=dict, init=False, repr=False)
    _orphans: list[_Orphan] = field(default_factory=list, init=False, repr=False)
    _readings: int = field(default=0, init=False, repr=False)
    _out_of_order: int = field(default=0, init=False, repr=False)
    _dropped: int = field(default=0, init=False, repr=False)
    # Since when ingest has been listening without a break (see resume()).
    _listening_since: int = field(default=0, init=False, repr=False)
    _failures: dict[str, RuleFailure] = field(default_factory=dict, init=False, repr=False)

    # -- input -------------------------------------------------------------------------------

    def on_reading(self, device: Device, ts_ms: int, values: Mapping[str, Value]) -> list[Signal]:
        """Evaluate a telemetry reading on arrival.

        A reading older than the newest one already seen from the device is ignored: the
        durations are runs in time, and an old value arriving late would cut or restart them.
        """
        dev = self._device(device)
        if dev.last_ts is not None and ts_ms < dev.last_ts:
            self._out_of_order += 1
            return []
        dev.last_ts = ts_ms
        self._readings += 1
        out: list[Signal] = []
        for inst in dev.instances:
            before = inst.fingerprint()
            try:
                inst.check.on_reading(inst, ts_ms, values, out)
            except Exception as exc:  # one broken rule must not silence the others
                self._failed(inst, exc)
            self._not_before_listening(inst)
            if inst.fingerprint() != before:
                self._changed(inst, ts_ms)
        return out

    def on_status(self, device: Device, ts_ms: int, online: bool) -> list[Signal]:
        """A status report (`online` false: a Last Will). Only heartbeats look at it."""
        out: list[Signal] = []
        for inst in self._device(device).instances:
            before = inst.fingerprint()
            try:
                inst.check.on_status(inst, ts_ms, online, out)
            except Exception as exc:
                self._failed(inst, exc)
            self._not_before_listening(inst)
            if inst.fingerprint() != before:
                self._changed(inst, ts_ms)
        return out

    def on_tick(self, now_ms: int) -> list[Signal]:
        """Fire and clear what has come due by `now_ms` without a message arriving."""
        out: list[Signal] = [
            Clear(o.source, o.kind, o.rule, now_ms, {"reason": "rule removed"})
            for o in self._orphans
        ]
        self._orphans.clear()
        heap = self._heap
        while heap and heap[0][0] <= now_ms:
            at, _, inst = heapq.heappop(heap)
            if inst.wake != at:
                continue  # superseded by an earlier entry that has already been handled
            inst.wake = None
            before = inst.fingerprint()
            try:
                inst.check.advance(inst, now_ms, out)
                if inst.fingerprint() != before:
                    self._dirty[inst.key] = inst
                self._schedule(inst, now_ms)
            except Exception as exc:
                self._failed(inst, exc)  # not scheduled again: a reading will wake it
        return out

    def resume(self, now_ms: int) -> None:
        """Nobody was listening until `now_ms` (ingest started, or its broker came back).

        Silence before then proves nothing about the devices, so silence timers restart from
        `now_ms`: otherwise every device would be reported offline at once after an outage
        of ingest itself (and a broker's backlog of old messages would not help).
        """
        self._listening_since = max(self._listening_since, now_ms)
        for dev in self._devices.values():
            for inst in dev.instances:
                if self._not_before_listening(inst):
                    self._changed(inst, now_ms)

    def _not_before_listening(self, inst: Instance) -> bool:
        """A silence timer starts no earlier than ingest began listening; True if moved.

        Also covers devices first heard of in a backlog the broker kept for ingest: their
        last message may be old, but nobody was there to hear the silence after it.
        """
        if (
            inst.check.check == "heartbeat"
            and not inst.active
            and inst.breach_since is not None
            and inst.breach_since < self._listening_since
        ):
            inst.breach_since = self._listening_since
            return True
        return False

    def forget(self, device_id: str, now_ms: int) -> list[Signal]:
        """Drop a device (gone from the inventory): its open alerts clear, its states go."""
        dev = self._devices.pop(device_id, None)
        if dev is None:
            return []
        out: list[Signal] = []
        for inst in dev.instances:
            if inst.active:
                check = inst.check
                details = {"reason": "device removed"}
                out.append(Clear(inst.source, check.kind, check.name, now_ms, details))
            inst.wake = None  # its heap entries become stale
            self._dirty[inst.key] = None
        return out

    # -- persistence -------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Every instance's progress, JSON-serialisable; instances with none are left out."""
        instances = {
            inst.key: inst.to_state()
            for dev in self._devices.values()
            for inst in dev.instances
            if not inst.blank
        }
        return {"format": SNAPSHOT_FORMAT, "instances": instances}

    def dirty(self) -> dict[str, dict[str, Any] | None]:
        """States changed since the last call, by instance key; None for a state to delete.

        Applying these to a stored copy of `snapshot()["instances"]` keeps it equal to a fresh
        snapshot, so the caller can persist progress on every tick at the cost of what changed.
        """
        changed = {
            key: None if inst is None or inst.blank else inst.to_state()
            for key, inst in self._dirty.items()
        }
        self._dirty.clear()
        return changed

    @classmethod
    def restore(cls, book: RuleBook, registry: Registry, snapshot: Mapping[str, Any]) -> RuleEngine:
        engine = cls(book, registry)
        engine.load(snapshot)
        return engine

    def load(self, snapshot: Mapping[str, Any]) -> None:
        """Take the states of a snapshot (or of a store kept up to date from `dirty()`).

        States whose device or rule is no longer in the inventory or the book are dropped and
        reported as deleted by the next `dirty()`; those that had an open alert are cleared by
        the next `on_tick`. Rules whose parameters changed keep their progress.
        """
        if snapshot.get("format") != SNAPSHOT_FORMAT:
            raise SnapshotError(
                f"format: expected {SNAPSHOT_FORMAT} (got {snapshot.get('format')!r})"
            )
        instances = snapshot.get("instances")
        if not isinstance(instances, Mapping):
            raise SnapshotError(f"instances: expected an object (got {type(instances).__name__})")
        for key, state in instances.items():
            if not isinstance(state, Mapping):
                raise SnapshotError(f"instances.{key}: expected an object (got {state!r})")
            inst = self._instance_for(key)
            if inst is None:
                self._drop(key, state)
                continue
            try:
                inst.load_state(state)
            except ValueError as exc:
                if state.get("check") != inst.check.check:
                    self._drop(key, state)  # the rule changed its check: start afresh
                    continue
                raise SnapshotError(f"instances.{key}: {exc}") from exc
            dev = self._devices[key.split("/", 2)[1]]
            latest = inst.latest_ts()
            if latest is not None and (dev.last_ts is None or latest > dev.last_ts):
                dev.last_ts = latest
            if inst.wake is not None:
                inst.wake = None
            self._schedule(inst, latest if latest is not None else 0)

    # -- introspection -----------------------------------------------------------------------

    def take_failures(self) -> list[RuleFailure]:
        """Rules that raised since the last call (the caller logs and counts them)."""
        failures = list(self._failures.values())
        self._failures.clear()
        return failures

    def stats(self) -> EngineStats:
        instances = [i for d in self._devices.values() for i in d.instances]
        return EngineStats(
            instances=len(instances),
            heap=len(self._heap),
            readings=self._readings,
            out_of_order=self._out_of_order,
            dropped_states=self._dropped,
            open_alerts=sum(1 for i in instances if i.active),
        )

    def open_alerts(self) -> list[str]:
        """Keys of the instances whose alert is raised."""
        return [i.key for d in self._devices.values() for i in d.instances if i.active]

    # -- internals ---------------------------------------------------------------------------

    def _failed(self, inst: Instance, exc: Exception) -> None:
        rule = inst.check.name
        before = self._failures.get(rule)
        self._failures[rule] = RuleFailure(
            rule,
            (before.count if before else 0) + 1,
            inst.source.device_id or inst.source.site_id,
            f"{type(exc).__name__}: {exc}",
        )

    def _device(self, device: Device) -> _Device:
        dev = self._devices.get(device.device_id)
        if dev is not None and (dev.device is device or dev.device == device):
            return dev
        fresh = _Device(device, tuple(self._instances(device)))
        if dev is not None:
            self._carry_over(dev, fresh)
        self._devices[device.device_id] = fresh
        return fresh

    def _carry_over(self, old: _Device, new: _Device) -> None:
        """The device changed (moved site, new type): keep what still applies, drop the rest."""
        fresh = {inst.key: inst for inst in new.instances}
        new.last_ts = old.last_ts
        for inst in old.instances:
            inst.wake = None  # its heap entries become stale
            successor = fresh.get(inst.key)
            state = inst.to_state()
            if successor is not None and successor.check.check == inst.check.check:
                successor.load_state(state)
                self._changed(successor, inst.latest_ts() or 0)
            elif not inst.blank:
                self._drop(inst.key, state)

    def _instances(self, device: Device) -> list[Instance]:
        site = self.registry.sites.get(device.site_id)
        hours = site.opening_hours if site is not None else ""
        source = Source(device.site_id, device.device_id)
        out = []
        for rule in self.book.rules_for(device):
            # Only schedules on opening hours differ by site; key the cache accordingly.
            by_site = rule.schedule is not None and rule.schedule.hours is not None
            cache_key = (id(rule), device.site_id if by_site else "")
            check = self._checks.get(cache_key)
            if check is None:
                check = compile_rule(rule, device.type, hours)
                self._checks[cache_key] = check
            out.append(Instance(f"{source.key}/{check.name}", check, source))
        return out

    def _instance_for(self, key: str) -> Instance | None:
        parts = key.split("/")
        if len(parts) != 3:
            return None
        site_id, device_id, _ = parts
        device = self.registry.devices.get(device_id)
        if device is None or device.site_id != site_id:
            return None
        for inst in self._device(device).instances:
            if inst.key == key:
                return inst
        return None

    def _drop(self, key: str, state: Mapping[str, Any]) -> None:
        self._dropped += 1
        self._dirty[key] = None
        parts = key.split("/")
        kind = state.get("kind")
        if state.get("active") is True and len(parts) == 3 and isinstance(kind, str):
            self._orphans.append(_Orphan(Source(parts[0], parts[1]), kind, parts[2]))

    def _changed(self, inst: Instance, now: int) -> None:
        self._dirty[inst.key] = inst
        self._schedule(inst, now)

    def _schedule(self, inst: Instance, now: int) -> None:
        at = inst.check.wake(inst, now)
        if at is not None and (inst.wake is None or at < inst.wake):
            inst.wake = at
            heapq.heappush(self._heap, (at, next(self._seq), inst))
