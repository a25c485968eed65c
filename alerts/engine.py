"""The alert engine: telemetry rules on arrival and on a clock tick, their signals into the store.

    ingest writer --records--> RecordQueue --> [alert-rules]  RuleEngine (analytics, pure)
    ingest's MQTT link --up/down--^                  |  signals, rule progress
    camera watch ------------signals--------------> Outbox --> [alert-store]  AlertStore
                                                                  |  counts --> InfluxDB points
                                                                  `--> on_change (SSE, relay)
    [alert-overdue]  reminders and escalations of unacknowledged alerts, every 30 s

Three loops under the service's supervisor. The rules never touch the database: while it is
away, they go on evaluating and their signals wait in the outbox, so ingest keeps storing and
acknowledging; when it returns, `alert-store` stores them in order and the alerts appear.
Both queues are bounded: the record queue in records, the outbox in signals. A full outbox (a
very long database outage) makes the rules wait, then ingest, and the broker keeps the rest.

Ticks run only while ingest is connected to the broker: a deaf ingest would take every device
for silent. Rule progress (held durations, silence timers) goes through the outbox every
`progress_every_s` and at a clean stop, so a restart halfway through a duration keeps it.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from alerts.metrics import AlertMetrics
from alerts.store import AlertStore, Change
from analytics.events import TAXONOMY, Raise, Severity, Signal, Source
from analytics.rules import RuleBook, RuleEngine
from analytics.rules.engine import SNAPSHOT_FORMAT
from config.settings import AlertsSettings
from devices.registry import Registry
from ingest.telemetry.contract import DeviceEvent, Reading, Record, StatusReport
from service.supervisor import Supervisor, ThreadLoop
from timeseries.lineprotocol import Point, encode_point
from timeseries.schema import ALERTS_OPEN

log = logging.getLogger(__name__)

OVERDUE_EVERY_S = 30.0
OUTBOX_MAX = 100_000  # signals waiting for the database; each is a few hundred bytes


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
class _Listening:
    """One of ingest's broker connections came up (True) or went down (False)."""

    up: bool
    link: int


@dataclass(frozen=True, slots=True)
class _Take:
    """This node now ingests partition `link`: its rules start from the stored progress."""

    link: int
    states: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _GiveUp:
    """Partition `link` goes to another node: store its progress, then set `done`."""

    link: int
    done: threading.Event


_STOP = object()


class RecordQueue:
    """Stored records on their way to the rules, bounded in records (not batches).

    `put` waits while the queue is full, which holds ingest's acknowledgements and lets the
    broker keep the rest; a batch larger than the bound is let in alone, so it cannot wait
    forever. Markers (the broker connection, stop) never wait.
    """

    def __init__(self, max_records: int, metrics: AlertMetrics) -> None:
        self._max = max_records
        self._metrics = metrics
        self._items: collections.deque[object] = collections.deque()
        self._records = 0
        self._cond = threading.Condition()

    def __len__(self) -> int:
        return self._records

    def put(self, records: Sequence[Record]) -> None:
        if not records:
            return
        with self._cond:
            if self._records and self._records + len(records) > self._max:
                self._metrics.queue_full.inc()
                while self._records and self._records + len(records) > self._max:
                    self._cond.wait()
            self._items.append(list(records))
            self._records += len(records)
            self._metrics.backlog.set(self._records)
            self._cond.notify_all()

    def connection(self, up: bool, link: int = 0) -> None:
        """Called from paho's thread: must not wait."""
        self._mark(_Listening(up, link))

    def take(self, link: int, states: dict[str, Any]) -> None:
        self._mark(_Take(link, states))

    def give_up(self, link: int) -> threading.Event:
        done = threading.Event()
        self._mark(_GiveUp(link, done))
        return done

    def stop(self) -> None:
        self._mark(_STOP)

    def _mark(self, marker: object) -> None:
        with self._cond:
            self._items.append(marker)
            self._cond.notify_all()

    def get(self, timeout: float) -> object | None:
        """The next batch (a list of records) or marker; None if none came within `timeout`."""
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
                if not self._items:
                    return None
            item = self._items.popleft()
            if isinstance(item, list):
                self._records -= len(item)
                self._metrics.backlog.set(self._records)
                self._cond.notify_all()
            return item


class _Outbox:
    """Signals and rule progress waiting for the database, in order; bounded in signals.

    Progress saved twice in a row is merged: the newer state of a key supersedes the older.
    """

    def __init__(self, max_signals: int, metrics: AlertMetrics) -> None:
        self._max = max_signals
        self._metrics = metrics
        self._items: collections.deque[Signal | dict[str, Any] | threading.Event] = (
            collections.deque()
        )
        self._signals = 0
        self._cond = threading.Condition()
        self.closed = False

    def __len__(self) -> int:
        return self._signals

    def put_signals(self, signals: Sequence[Signal]) -> None:
        if not signals:
            return
        with self._cond:
            if self._signals and self._signals + len(signals) > self._max:
                self._metrics.outbox_full.inc()
                while self._signals and self._signals + len(signals) > self._max:
                    self._cond.wait()
            self._items.extend(signals)
            self._signals += len(signals)
            self._metrics.outbox.set(self._signals)
            self._cond.notify_all()

    def put_progress(self, states: dict[str, Any]) -> None:
        if not states:
            return
        with self._cond:
            if self._items and isinstance(self._items[-1], dict):
                self._items[-1].update(states)
            else:
                self._items.append(dict(states))
            self._cond.notify_all()

    def put_barrier(self, done: threading.Event) -> None:
        """`done` is set once everything put before it is stored."""
        with self._cond:
            self._items.append(done)
            self._cond.notify_all()

    def peek(self, timeout: float) -> Signal | dict[str, Any] | threading.Event | None:
        """The oldest item, waiting up to `timeout` for one (not once closed)."""
        with self._cond:
            if not self._items and not self.closed:
                self._cond.wait(timeout)
            return self._items[0] if self._items else None

    def pop(self) -> None:
        """The item `peek` returned is stored: forget it."""
        with self._cond:
            item = self._items.popleft()
            if not isinstance(item, dict | threading.Event):
                self._signals -= 1
                self._metrics.outbox.set(self._signals)
            self._cond.notify_all()

    def close(self) -> None:
        """Stopping: `peek` no longer waits once the outbox is empty."""
        with self._cond:
            self.closed = True
            self._cond.notify_all()


class AlertEngine:
    def __init__(
        self,
        settings: AlertsSettings,
        registry: Registry,
        book: RuleBook,
        store: AlertStore,
        metrics: AlertMetrics,
        records: RecordQueue,
        points: Callable[[list[str]], None],
        on_change: Callable[[], None] = lambda: None,
        partition_of: Callable[[str], int] | None = None,
    ) -> None:
        """`records` is where ingest puts what it stored; `points` takes line-protocol lines
        (open-alert counts) without waiting; `on_change` is called after alerts changed.

        `partition_of(site_id)`: with several nodes, this node judges only the partitions it
        ingests (`take_partition`, `give_up_partition`), one rule engine each, so that no node
        takes another's devices for silent. Without it, one rule engine judges every device."""
        self._settings = settings
        self._store = store
        self._metrics = metrics
        self._records = records
        self._points = points
        self._on_change = on_change
        self._book = book
        self._registry = registry
        self._partition_of = partition_of
        self._engines: dict[int, RuleEngine] = {}  # by link: 0 alone, else the partition
        self._listening: dict[int, bool] = {}  # since each link's first connection
        if partition_of is None:
            self._engines[0] = self._engine(self._saved_states(lambda site_id: True))
        self._outbox = _Outbox(OUTBOX_MAX, metrics)
        self._remind = {Severity(k): v * 1000 for k, v in settings.remind_after_s.items()}
        self._escalate = {Severity(k): v * 1000 for k, v in settings.escalate_after_s.items()}
        self._counted: set[tuple[str, str, str]] = set()
        self._overdue_stop = threading.Event()
        self._loops: list[ThreadLoop] = []

    # -- life cycle ------------------------------------------------------------------------

    def start(self, supervisor: Supervisor) -> None:
        self._loops = [
            # Ingest waits on the record queue: while the rules are down, nothing is acked.
            supervisor.thread(
                "alert-rules", self._run_rules, stop=self._records.stop, critical=True
            ),
            supervisor.thread("alert-store", self._run_store, stop=self._outbox.close),
            supervisor.thread("alert-overdue", self._run_overdue, stop=self._overdue_stop.set),
        ]

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the rules (their last progress goes to the outbox), then store what waits."""
        for loop in self._loops:
            loop.stop(timeout)
        if len(self._outbox):
            log.error(
                "stopping with %d alert signals not stored (the alert database is away)",
                len(self._outbox),
            )

    def submit_signals(self, signals: Sequence[Signal]) -> None:
        """Signals found elsewhere (the video path's camera watch)."""
        self._outbox.put_signals(signals)

    # -- partitions ------------------------------------------------------------------------

    def take_partition(self, link: int) -> None:
        """Judge partition `link`'s devices from the progress its last owner stored. Call it
        before ingest takes the partition's messages. Raises if the database is away."""
        if self._partition_of is None:
            raise RuntimeError("the engine judges every site: there are no partitions to take")
        states = self._saved_states(lambda site_id: self._link_of(site_id) == link)
        self._records.take(link, states)

    def give_up_partition(self, link: int, timeout: float) -> bool:
        """Stop judging partition `link` once the records ingest took before are evaluated;
        True once its progress is stored (for the next owner), False after `timeout`."""
        return self._records.give_up(link).wait(timeout)

    def _saved_states(self, wanted: Callable[[str], bool]) -> dict[str, Any]:
        # The state table also holds other components' progress (keys without a slash).
        return {
            key: state
            for key, state in self._store.load_rule_states().items()
            if "/" in key and wanted(key.split("/", 1)[0])
        }

    def _engine(self, states: dict[str, Any]) -> RuleEngine:
        engine = RuleEngine(self._book, self._registry)
        engine.load({"format": SNAPSHOT_FORMAT, "instances": states})
        return engine

    def _link_of(self, site_id: str) -> int:
        return 0 if self._partition_of is None else self._partition_of(site_id)

    def _progress(self) -> dict[str, Any]:
        changed: dict[str, Any] = {}
        for engine in self._engines.values():
            changed.update(engine.dirty())
        return changed

    # -- alert-rules -----------------------------------------------------------------------

    def _run_rules(self) -> None:
        tick_s = self._settings.tick_s
        progress_s = self._settings.progress_every_s
        next_tick = time.monotonic()
        next_progress = next_tick + progress_s
        while True:
            now = time.monotonic()
            listening = any(self._listening.values())
            wake = min(next_tick, next_progress) if listening else next_progress
            item = self._records.get(timeout=max(0.0, wake - now))
            if item is _STOP:
                self._outbox.put_progress(self._progress())
                return
            if isinstance(item, _Listening):
                # Kept across a restart of this loop: the connection's state is not the loop's.
                self._listening[item.link] = item.up
                engine = self._engines.get(item.link)
                if item.up and engine is not None:
                    engine.resume(_now_ms())
                    next_tick = time.monotonic()
            elif isinstance(item, _Take):
                self._engines[item.link] = self._engine(item.states)
            elif isinstance(item, _GiveUp):
                given = self._engines.pop(item.link, None)
                self._listening.pop(item.link, None)
                if given is not None:
                    self._outbox.put_progress(given.dirty())
                self._outbox.put_barrier(item.done)
            elif isinstance(item, list):
                self._evaluate(item)
            now = time.monotonic()
            if now >= next_tick and any(self._listening.values()):
                next_tick = now + tick_s
                signals: list[Signal] = []
                for link, engine in self._engines.items():
                    # Ticks only while the link is connected: a deaf ingest would take every
                    # device for silent.
                    if self._listening.get(link):
                        signals += engine.on_tick(_now_ms())
                self._outbox.put_signals(signals)
                self._metrics.rule_ticks.inc()
            if now >= next_progress:
                next_progress = now + progress_s
                self._outbox.put_progress(self._progress())
            self._report_rule_failures()

    def _evaluate(self, records: list[Record]) -> None:
        started = time.perf_counter()
        signals: list[Signal] = []
        for record in records:
            engine = self._engines.get(self._link_of(record.device.site_id))
            if engine is None:
                continue  # its partition was given up meanwhile: the next owner judges it
            ts_ms = record.ts_ns // 1_000_000
            if isinstance(record, Reading):
                signals += engine.on_reading(record.device, ts_ms, record.values)
            elif isinstance(record, StatusReport):
                signals += engine.on_status(record.device, ts_ms, record.online)
            elif record.kind in TAXONOMY:
                signals.append(event_signal(record, self._book))
        self._metrics.rule_seconds.observe(time.perf_counter() - started)
        self._outbox.put_signals(signals)

    def _report_rule_failures(self) -> None:
        for engine in self._engines.values():
            for failure in engine.take_failures():
                self._metrics.rule_errors.labels(failure.rule).inc(failure.count)
                log.error(
                    "rule %s failed %d time(s), last on %s: %s",
                    failure.rule,
                    failure.count,
                    failure.device_id,
                    failure.error,
                )

    # -- alert-store -----------------------------------------------------------------------

    def _run_store(self) -> None:
        """Store what the outbox holds, in order; write open-alert counts now and then.

        A database error ends the run (the supervisor restarts it after a back-off); the
        item being stored stays first in the outbox and is stored on the next run."""
        counts_s = self._settings.counts_every_s
        next_counts = time.monotonic()
        while True:
            now = time.monotonic()
            if now >= next_counts:
                self._write_counts()
                next_counts = time.monotonic() + counts_s
            item = self._outbox.peek(timeout=max(0.0, next_counts - time.monotonic()))
            if item is None:
                if self._outbox.closed:
                    return
                continue
            if isinstance(item, threading.Event):
                item.set()
            elif isinstance(item, dict):
                self._store.save_rule_states(item)
            else:
                self._apply(item)
            self._outbox.pop()

    def _apply(self, signal: Signal) -> None:
        change: Change | None
        if isinstance(signal, Raise):
            change = self._store.raise_(signal)
            self._metrics.alerts_raised.labels(signal.kind).inc()
        else:
            change = self._store.clear(signal)
            if change is not None:
                self._metrics.alerts_cleared.labels(signal.kind).inc()
        if change is not None:
            self._on_change()

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
            self._points(lines)

    # -- alert-overdue ---------------------------------------------------------------------

    def _run_overdue(self) -> None:
        while not self._overdue_stop.wait(OVERDUE_EVERY_S):
            if self._store.overdue(_now_ms(), self._remind, self._escalate):
                self._on_change()


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
