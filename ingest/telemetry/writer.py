"""Makes batches durable: into InfluxDB when it answers, else into the spool, replayed in order.

While the spool holds anything, new batches are appended behind it rather than written
directly, so points reach InfluxDB in the order they arrived. A batch InfluxDB refuses (HTTP
4xx) is split in halves until the refused lines are isolated; those are dead-lettered with
InfluxDB's reason and the rest written. Writing a point again is harmless: InfluxDB keeps one
point per series and time stamp.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from config.settings import SpoolSettings
from ingest.telemetry.batcher import Ack, Batcher, Pending
from ingest.telemetry.contract import Record
from ingest.telemetry.metrics import IngestMetrics
from ingest.telemetry.rejects import RejectLog, make_record
from ingest.telemetry.spool import Spool, SpoolFull, SpoolIOError, SpoolRecord
from timeseries.influx import InfluxRejected, InfluxUnavailable, InfluxWriteClient, split_lines
from timeseries.lineprotocol import FieldTypes

log = logging.getLogger(__name__)


class Backoff:
    """Exponential wait between attempts at an unavailable InfluxDB."""

    def __init__(self, initial_s: float, max_s: float) -> None:
        self._initial = initial_s
        self._max = max_s
        self._delay = 0.0
        self.next_try = 0.0

    @property
    def waiting(self) -> bool:
        return time.monotonic() < self.next_try

    def failed(self) -> None:
        self._delay = min(self._max, self._delay * 2 if self._delay else self._initial)
        self.next_try = time.monotonic() + self._delay

    def succeeded(self) -> None:
        self._delay = 0.0
        self.next_try = 0.0


class Writer:
    """Owns the InfluxDB client and the spool; used from one thread only (see `run`)."""

    def __init__(
        self,
        client: InfluxWriteClient,
        spool: Spool,
        dead_letters: RejectLog,
        field_types: FieldTypes,
        metrics: IngestMetrics,
        settings: SpoolSettings,
    ) -> None:
        self._client = client
        self._spool = spool
        self._dead_letters = dead_letters
        self._field_types = field_types
        self._metrics = metrics
        self._backoff = Backoff(settings.retry_initial_s, settings.retry_max_s)
        self._prepared = False  # database created and field types read
        self.influx_up = False
        self._update_spool_gauges()

    @property
    def spool(self) -> Spool:
        return self._spool

    # -- InfluxDB --------------------------------------------------------------------------

    def _prepare(self) -> None:
        """Once InfluxDB answers: create the database, learn the stored field types."""
        if self._prepared:
            return
        try:
            self._client.ensure_database()
        except InfluxRejected as exc:
            log.error("cannot create the database, writing anyway: %s", exc)
        try:
            self._field_types.seed(self._client.field_types())
        except InfluxRejected as exc:
            log.warning("cannot read stored field types (conflicts will be dead-lettered): %s", exc)
        self._prepared = True

    def _deliver(self, lines: Sequence[bytes], path: str) -> None:
        """Write lines, dead-lettering any InfluxDB refuses. Raises InfluxUnavailable."""
        self._prepare()
        try:
            self._client.write(b"\n".join(lines))
        except InfluxRejected as exc:
            if len(lines) == 1:
                self._dead_letter(lines[0], str(exc))
                return
            half = len(lines) // 2
            self._deliver(lines[:half], path)
            self._deliver(lines[half:], path)
            return
        self._metrics.written.labels(path).inc(len(lines))

    def _dead_letter(self, line: bytes, reason: str) -> None:
        record = make_record([("influx_rejected", reason)], "", line, time.time_ns(), len(line))
        if not self._dead_letters.add([record]):
            # Not acknowledged then: the broker keeps the message until the disk takes it.
            raise SpoolIOError(f"cannot keep a point InfluxDB refused in {self._dead_letters.path}")
        self._metrics.dead_lettered.inc()

    def _mark_up(self, up: bool, error: Exception | None = None) -> None:
        if up:
            if not self.influx_up:
                log.info("InfluxDB is accepting writes")
            self._backoff.succeeded()
        else:
            self._metrics.influx_errors.inc()
            if self.influx_up or not self._backoff.next_try:
                log.warning("InfluxDB unavailable, spooling to disk: %s", error)
            self._backoff.failed()
        self.influx_up = up
        self._metrics.influx_up.set(1 if up else 0)

    def connect(self) -> None:
        """Prepare InfluxDB now rather than at the first batch; if it is away, that is fine."""
        try:
            self._prepare()
            self._mark_up(True)
        except InfluxUnavailable as exc:
            self._mark_up(False, exc)

    # -- durability ------------------------------------------------------------------------

    def persist(self, lines: list[str]) -> None:
        """Durable on return: in InfluxDB or in the spool. Raises SpoolFull if neither."""
        if not lines:
            return
        encoded = [line.encode() for line in lines]
        if self._spool.empty and not self._backoff.waiting:
            try:
                self._deliver(encoded, "direct")
                self._mark_up(True)
                return
            except InfluxUnavailable as exc:
                self._mark_up(False, exc)
        self._spool.append(b"\n".join(encoded), len(encoded))
        self._metrics.spooled.inc(len(encoded))
        self._update_spool_gauges()

    def drain_one(self) -> bool:
        """Replay the oldest spool record if InfluxDB may be tried; True if one was replayed."""
        if self._spool.empty or self._backoff.waiting:
            return False
        record: SpoolRecord | None = self._spool.peek()
        if record is None:
            return False
        try:
            self._deliver(split_lines(record.payload), "replay")
        except InfluxUnavailable as exc:
            self._mark_up(False, exc)
            return False
        self._spool.commit(record)
        self._mark_up(True)
        self._update_spool_gauges()
        if self._spool.empty:
            log.info("spool drained: InfluxDB has every spooled point")
        return True

    def retry_in(self) -> float:
        """Seconds until InfluxDB should be tried again (0 if it may be tried now)."""
        return max(0.0, self._backoff.next_try - time.monotonic())

    def _update_spool_gauges(self) -> None:
        self._metrics.spool_points.set(self._spool.pending_points)
        self._metrics.spool_bytes.set(self._spool.pending_bytes)


class WriterLoop:
    """The writer thread's body: take due batches, make them durable, then acknowledge them.

    `run` is started by the supervisor, and again after a failure: a batch that was in hand
    when it failed is handled first on the next run (writing a point twice is harmless), so a
    failure costs time, never messages.
    """

    def __init__(
        self,
        writer: Writer,
        batcher: Batcher,
        rejects: RejectLog,
        ack: Callable[[Sequence[Ack]], int],
        metrics: IngestMetrics,
        on_records: Callable[[Sequence[Record]], None] | None = None,
    ) -> None:
        self._writer = writer
        self._batcher = batcher
        self._rejects = rejects
        self._ack = ack
        self._metrics = metrics
        self._on_records = on_records
        self._in_hand: list[Pending] = []

    def run(self) -> None:
        """Until the batcher is closed and empty."""
        self._writer.connect()
        if self._in_hand:
            self._handle(self._in_hand)
        while True:
            backlog = not self._writer.spool.empty
            wait = self._writer.retry_in() if backlog else 1.0
            batch = self._batcher.take(timeout=wait)
            if batch:
                self._in_hand = batch
                self._handle(batch)
            elif self._batcher.closed and not len(self._batcher):
                return
            while self._writer.drain_one():
                if len(self._batcher):
                    break  # keep new messages flowing while a long backlog replays

    def _handle(self, batch: list[Pending]) -> None:
        lines = [line for item in batch for line in item.lines]
        started = time.monotonic()
        while True:
            try:
                self._writer.persist(lines)
                break
            except (SpoolFull, SpoolIOError) as exc:
                # Nothing is acknowledged, so the broker keeps these messages; make room by
                # replaying, or wait for InfluxDB.
                if self._batcher.closed:
                    log.error(
                        "stopping with %d messages not durable; the broker keeps them", len(batch)
                    )
                    self._in_hand = []
                    return
                log.error("cannot spool, holding messages at the broker: %s", exc)
                if not self._writer.drain_one():
                    time.sleep(max(0.1, self._writer.retry_in()))  # wait for InfluxDB to return
        self._metrics.batch_seconds.observe(time.monotonic() - started)
        kept = self._rejects.add([r for item in batch for r in item.rejects])
        if self._on_records is not None:
            self._on_records([r for item in batch for r in item.records])
        # A refused message is acknowledged only once the rejects file has it: until then
        # the broker's copy is the only one.
        acks = [i.ack for i in batch if i.ack is not None and (kept or not i.rejects)]
        if not kept:
            log.error("refused messages not kept on disk; left unacknowledged with the broker")
        self._metrics.acked.inc(self._ack(acks))
        self._in_hand = []
        now_ns = time.time_ns()
        for item in batch:
            if item.ack is not None:
                self._metrics.ack_latency.observe((now_ns - item.received_ns) / 1e9)
        self._metrics.pending.set(len(self._batcher))
