"""The ingest service: MQTT in, validated points durable in InfluxDB or the spool, then acks.

    paho thread:   message -> Decoder -> line protocol -> Batcher
    writer thread: Batcher -> InfluxDB (or spool) -> reject log -> MQTT acks

`IngestService` is a context manager: entering starts both threads, leaving stops taking
messages, makes what was taken durable and acknowledges it, then disconnects.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from config.settings import Settings
from devices.registry import Registry
from ingest.telemetry.batcher import Batcher, BatcherClosed, Pending
from ingest.telemetry.contract import Decoder, Record, RejectReason
from ingest.telemetry.metrics import IngestMetrics
from ingest.telemetry.mqtt import MqttCollector, MqttMessage
from ingest.telemetry.points import record_point
from ingest.telemetry.rejects import RejectLog, make_record
from ingest.telemetry.spool import Spool
from ingest.telemetry.writer import Writer, WriterLoop
from timeseries.influx import InfluxWriteClient
from timeseries.lineprotocol import FieldTypeConflict, FieldTypes, encode_point

log = logging.getLogger(__name__)

_CHANNELS = ("telemetry", "status", "events")


@dataclass(frozen=True, slots=True)
class Health:
    mqtt_connected: bool
    influx_up: bool
    writer_alive: bool
    spool_points: int
    spool_bytes: int
    pending_messages: int

    @property
    def ok(self) -> bool:
        """Taking data without losing any (InfluxDB may be away: the spool covers it)."""
        return self.mqtt_connected and self.writer_alive

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": "ok" if self.ok and self.influx_up else "degraded" if self.ok else "down",
            "mqtt": {"connected": self.mqtt_connected},
            "influx": {"up": self.influx_up},
            "writer": {"alive": self.writer_alive, "pending_messages": self.pending_messages},
            "spool": {"points": self.spool_points, "bytes": self.spool_bytes},
        }


class DataDirInUse(Exception):
    """Another ingest process owns this data folder (its spool would be corrupted)."""


def _lock_data_dir(data: Path) -> IO[bytes]:
    data.mkdir(parents=True, exist_ok=True)
    handle = (data / "ingest.lock").open("wb")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise DataDirInUse(
            f"another ingest process uses {data}; give each one its own paths.data_dir"
        ) from None
    return handle  # the lock lives as long as this handle; the kernel drops it if we die


class IngestService:
    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        on_records: Callable[[Sequence[Record]], None] | None = None,
        metrics: IngestMetrics | None = None,
        on_connection: Callable[[bool], None] = lambda up: None,
    ) -> None:
        """`on_records` receives every batch of stored records, in order, and `on_connection`
        hears whenever the broker connection comes up or goes down: both for the alert engine."""
        self.settings = settings
        self.registry = registry
        self.metrics = metrics or IngestMetrics()
        data = settings.data_dir
        self._lock = _lock_data_dir(data)
        self.rejects = RejectLog(data / "rejects" / "rejects.jsonl", settings.rejects)
        self.dead_letters = RejectLog(
            data / "rejects" / "deadletter.jsonl", settings.rejects, what="dead-lettered"
        )
        self._decoder = Decoder(registry, settings.ingest)
        self._field_types = FieldTypes()
        self._spool = Spool(
            data / "spool",
            max_bytes=settings.spool.max_bytes,
            segment_bytes=settings.spool.segment_bytes,
        )
        if not self._spool.empty:
            log.info(
                "spool holds %d points from an earlier run; replaying them first",
                self._spool.pending_points,
            )
        self._client = InfluxWriteClient(settings.influx)
        self._writer = Writer(
            self._client,
            self._spool,
            self.dead_letters,
            self._field_types,
            self.metrics,
            settings.spool,
        )
        self._batcher = Batcher(
            max_points=settings.ingest.batch_max_points,
            max_delay_s=settings.ingest.batch_max_delay_ms / 1000,
            max_messages=settings.mqtt.receive_maximum,
        )

        def connection(up: bool) -> None:
            self.metrics.mqtt_connected.set(int(up))
            on_connection(up)

        self._collector = MqttCollector(settings.mqtt, self._on_message, connection)
        self._loop = WriterLoop(
            self._writer,
            self._batcher,
            self.rejects,
            self._collector.ack,
            self.metrics,
            on_records,
        )
        self._excerpt = settings.rejects.payload_excerpt_bytes

    # -- life cycle ------------------------------------------------------------------------

    def __enter__(self) -> IngestService:
        self._loop.start()
        self._collector.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        # Order matters: stop taking, make what was taken durable and ack it while the
        # connection is still up, then disconnect. Anything not acked is redelivered later.
        self._batcher.close()
        self._loop.join(timeout=self.settings.influx.timeout_s * 3)
        self._collector.stop()
        self._client.close()
        self._spool.close()
        self.rejects.close()
        self.dead_letters.close()
        self._lock.close()

    def wait_connected(self, timeout: float) -> bool:
        return self._collector.wait_connected(timeout)

    def write_lines(self, lines: list[str]) -> None:
        """Store points that did not come over MQTT (alert counts), spooled like the rest."""
        with contextlib.suppress(BatcherClosed):  # stopping: these are recomputed at start
            self._batcher.put(Pending(received_ns=time.time_ns(), ack=None, lines=lines))

    def publish(self, topic: str, payload: bytes) -> bool:
        """Publish at QoS 1 on ingest's MQTT connection; True once the broker has it."""
        return self._collector.publish(topic, payload)

    def health(self) -> Health:
        return Health(
            mqtt_connected=self._collector.connected,
            influx_up=self._writer.influx_up,
            writer_alive=self._loop.failed is None,
            spool_points=self._spool.pending_points,
            spool_bytes=self._spool.pending_bytes,
            pending_messages=len(self._batcher),
        )

    # -- the paho thread -------------------------------------------------------------------

    def _on_message(self, msg: MqttMessage) -> None:
        parts = msg.topic.split("/")
        channel = parts[-1] if parts[-1] in _CHANNELS else "other"
        self.metrics.received.labels(channel).inc()
        item = Pending(received_ns=msg.received_ns, ack=msg.ack)
        try:
            self._decode(msg, item)
        except Exception as exc:  # a bug must not kill paho's thread; keep the evidence
            log.exception("internal error decoding a message on %s", msg.topic)
            self._reject(item, msg, "internal_error", repr(exc))
        # Stopping: not acknowledged, so the broker redelivers it after the restart.
        with contextlib.suppress(BatcherClosed):
            self._batcher.put(item)

    def _decode(self, msg: MqttMessage, item: Pending) -> None:
        decoded = self._decoder.decode(msg.topic, msg.payload, msg.received_ns)
        for rejection in decoded.rejections:
            self._reject(item, msg, rejection.reason.value, rejection.detail)
        for record in decoded.records:
            point = record_point(record)
            try:
                line = encode_point(point)
                self._field_types.claim(point.measurement, point.fields)
            except FieldTypeConflict as exc:
                self._reject(item, msg, RejectReason.TYPE_CONFLICT.value, str(exc))
                continue
            item.lines.append(line)
            item.records.append(record)
            self.metrics.records.inc()

    def _reject(self, item: Pending, msg: MqttMessage, reason: str, detail: str) -> None:
        self.metrics.rejected.labels(reason).inc()
        item.rejects.append(
            make_record(reason, detail, msg.topic, msg.payload, msg.received_ns, self._excerpt)
        )
