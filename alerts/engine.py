"""The alert engine: telemetry rules on arrival and on a clock tick, signals into the store.

    ingest writer --records--> [bounded queue] --> rules (analytics) --> AlertStore
                             clock tick --^    rule progress --^ (every progress_every_s)

Ticks run only while ingest is connected to the broker: a deaf ingest would take every
device for silent.

Its own thread, so that a slow database never stalls MQTT: the queue is bounded and the
writer waits when it is full, which holds acknowledgements and lets the broker keep the rest.
Rule progress (held durations, silence timers) is saved every `progress_every_s` and at a
clean stop, so a restart halfway through a duration keeps it. Every `counts_every_s`,
open-alert counts go to InfluxDB through ingest's own writer (spooled like any point when
InfluxDB is away).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from alerts.store import AlertStore, Change
from analytics.events import TAXONOMY, Raise, Severity, Signal, Source
from analytics.rules import RuleBook, RuleEngine
from analytics.rules.engine import SNAPSHOT_FORMAT
from config.settings import AlertsSettings
from devices.registry import Registry
from ingest.telemetry.contract import DeviceEvent, Reading, Record, StatusReport
from ingest.telemetry.metrics import IngestMetrics
from timeseries.lineprotocol import Point, encode_point
from timeseries.schema import ALERTS_OPEN

log = logging.getLogger(__name__)

_OVERDUE_EVERY_S = 30.0
_STOP = object()
_LISTENING = object()
_DEAF = object()


def event_signal(event: DeviceEvent, book: RuleBook) -> Raise:
    """A device's own event as a signal: one open alert per device and kind, repeats counted.

    When a rule of the same kind watches the device (a smoke detector's `alarm` output and
    its alarm event), the event counts as a repeat of that rule's alert, and the rule's clear
    resolves it: one incident, one alert.
    """
    details: dict[str, Any] = json.loads(event.details)
    device = event.device
    rule = next(
        (f"{device.type}.{r.id}" for r in book.rules_for(device) if r.kind == event.kind),
        f"event.{event.kind}",
    )
    return Raise(
        source=Source(device.site_id, device.device_id),
        kind=event.kind,
        rule=rule,
        severity=event.severity,
        at_ms=event.ts_ns // 1_000_000,
        details=details,
        evidence=tuple(json.loads(event.evidence)),
    )


@dataclass(frozen=True, slots=True)
class _Signals:
    signals: tuple[Signal, ...]


class AlertEngine:
    def __init__(
        self,
        settings: AlertsSettings,
        registry: Registry,
        book: RuleBook,
        store: AlertStore,
        metrics: IngestMetrics,
        write_lines: Callable[[list[str]], None],
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._metrics = metrics
        self._write_lines = write_lines
        self._on_change = on_change
        self._book = book
        self._rules = RuleEngine(book, registry)
        # The state table also holds other components' progress (keys without a slash).
        saved = {k: v for k, v in store.load_rule_states().items() if "/" in k}
        self._rules.load({"format": SNAPSHOT_FORMAT, "instances": saved})
        self._queue: queue.Queue[object] = queue.Queue(maxsize=settings.queue_max)
        self._remind = {Severity(k): v * 1000 for k, v in settings.remind_after_s.items()}
        self._escalate = {Severity(k): v * 1000 for k, v in settings.escalate_after_s.items()}
        self._counted: set[tuple[str, str, str]] = set()
        self._thread = threading.Thread(target=self._run, name="alert-engine", daemon=True)
        self.failed: BaseException | None = None

    # -- life cycle ------------------------------------------------------------------------

    def __enter__(self) -> AlertEngine:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout=30)

    def submit(self, records: Sequence[Record]) -> None:
        """Hand over stored records, in order; waits while the queue is full."""
        if records:
            self._queue.put(list(records))

    def submit_signals(self, signals: Sequence[Signal]) -> None:
        """Hand over signals found elsewhere (the video path's camera watch)."""
        if signals:
            self._queue.put(_Signals(tuple(signals)))

    def connection(self, up: bool) -> None:
        """Ingest's broker connection came up or went down (called from paho's thread).

        While ingest hears nothing, rules do not tick: every device would look silent. When it
        hears again, silence timers restart from then (RuleEngine.resume); held durations
        fire at their own time on the next tick.
        """
        self._queue.put(_LISTENING if up else _DEAF)

    @property
    def backlog(self) -> int:
        return self._queue.qsize()

    # -- the thread ------------------------------------------------------------------------

    def _run(self) -> None:
        tick_s = self._settings.tick_s
        next_tick = time.monotonic()
        next_overdue = next_tick + _OVERDUE_EVERY_S
        next_counts = next_tick
        next_progress = next_tick + self._settings.progress_every_s
        listening = False  # until ingest's first connection
        try:
            while True:
                try:
                    item = self._queue.get(timeout=max(0.0, next_tick - time.monotonic()))
                except queue.Empty:
                    item = None
                if item is _STOP:
                    self._save_progress()
                    return
                if item is _LISTENING:
                    listening = True
                    self._rules.resume(_now_ms())
                elif item is _DEAF:
                    listening = False
                elif isinstance(item, list):
                    self._evaluate(item)
                elif isinstance(item, _Signals):
                    self._apply(item.signals)
                now = time.monotonic()
                if now >= next_tick and listening:
                    next_tick = now + tick_s
                    self._apply(self._rules.on_tick(time.time_ns() // 1_000_000))
                    self._metrics.rule_ticks.inc()
                if now >= next_progress:
                    next_progress = now + self._settings.progress_every_s
                    self._save_progress()
                if now >= next_overdue:
                    next_overdue = now + _OVERDUE_EVERY_S
                    self._publish(self._store.overdue(_now_ms(), self._remind, self._escalate))
                if now >= next_counts:
                    next_counts = now + self._settings.counts_every_s
                    self._write_counts()
                self._metrics.alert_backlog.set(self._queue.qsize())
        except BaseException as exc:
            self.failed = exc
            log.critical("alert engine stopped: %r", exc, exc_info=True)
            raise

    def _evaluate(self, records: list[Record]) -> None:
        started = time.perf_counter()
        signals: list[Signal] = []
        for record in records:
            ts_ms = record.ts_ns // 1_000_000
            if isinstance(record, Reading):
                signals += self._rules.on_reading(record.device, ts_ms, record.values)
            elif isinstance(record, StatusReport):
                signals += self._rules.on_status(record.device, ts_ms, record.online)
            elif record.kind in TAXONOMY:
                signals.append(event_signal(record, self._book))
        self._metrics.rule_seconds.observe(time.perf_counter() - started)
        self._apply(signals)

    def _apply(self, signals: Sequence[Signal]) -> None:
        changes: list[Change] = []
        for signal in signals:
            if isinstance(signal, Raise):
                changes.append(self._store.raise_(signal))
                self._metrics.alerts_raised.labels(signal.kind).inc()
            else:
                change = self._store.clear(signal)
                if change is not None:
                    changes.append(change)
                    self._metrics.alerts_cleared.labels(signal.kind).inc()
        self._publish(changes)

    def _publish(self, changes: Sequence[Change]) -> None:
        if changes:
            self._on_change()

    def _save_progress(self) -> None:
        dirty = self._rules.dirty()
        if dirty:
            self._store.save_rule_states(dirty)

    def _write_counts(self) -> None:
        now_ns = time.time_ns()
        counts = {(s, k, sev): n for s, k, sev, n in self._store.open_counts()}
        # A count that went back to zero must be written as zero, or dashboards keep the last.
        for gone in self._counted - counts.keys():
            counts[gone] = 0
        self._counted = {key for key, n in counts.items() if n}
        lines = [
            encode_point(
                Point(
                    ALERTS_OPEN,
                    {"site_id": site, "kind": kind, "severity": severity},
                    {"count": n},
                    now_ns,
                )
            )
            for (site, kind, severity), n in counts.items()
        ]
        if lines:
            self._write_lines(lines)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
