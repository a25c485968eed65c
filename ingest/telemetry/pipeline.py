"""The ingest service: MQTT in, validated points durable in InfluxDB or the spool, then acks.

    paho thread:   message -> Decoder -> line protocol -> Batcher
    writer thread: Batcher -> InfluxDB (or spool) -> reject log -> alert rules -> MQTT acks

`IngestService` is a context manager: entering starts paho's thread and the writer (a
critical loop of the supervisor, `telemetry-writer`); leaving stops taking messages, makes what
was taken durable and acknowledges it, then disconnects. Nothing waits on paho's network
thread: a QoS 1 message never finds the batcher full (Receive Maximum bounds what the broker
sends), and a QoS 0 flood beyond that bound is dropped and counted.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from config.settings import MqttSettings, Settings
from devices.registry import Registry
from ingest.telemetry import partitions
from ingest.telemetry.batcher import Ack, Batcher, BatcherClosed, Pending
from ingest.telemetry.contract import Decoder, Record, RejectReason
from ingest.telemetry.metrics import IngestMetrics
from ingest.telemetry.mqtt import SUBSCRIPTION, MqttCollector, MqttMessage
from ingest.telemetry.points import record_point
from ingest.telemetry.rejects import RejectLog, make_record
from ingest.telemetry.spool import Spool
from ingest.telemetry.writer import Writer, WriterLoop
from service.supervisor import Supervisor, ThreadLoop
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
        on_connection: Callable[[bool, int], None] = lambda up, link: None,
        supervisor: Supervisor | None = None,
    ) -> None:
        """`on_records` receives every batch of stored records, in order, before they are
        acknowledged, and `on_connection(up, link)` hears whenever a broker connection comes
        up or goes down (on paho's thread: it must not wait): both for the alert engine. Without
        a `supervisor`, the service makes its own.

        With `cluster.node_id` set, ingest takes no messages until partitions are started
        (`start_partition`): each is a connection of its own (its `link` is the partition's
        number) to its sites' topics. Otherwise one connection takes every site (link 0)."""
        self.settings = settings
        self.registry = registry
        self.supervisor = supervisor or Supervisor()
        self.metrics = metrics or IngestMetrics(self.supervisor.registry)
        data = settings.data_dir
        self._lock = _lock_data_dir(data)
        file_error = self.metrics.rejects_file_errors.inc
        self.rejects = RejectLog(
            data / "rejects" / "rejects.jsonl", settings.rejects, on_error=file_error
        )
        self.dead_letters = RejectLog(
            data / "rejects" / "deadletter.jsonl",
            settings.rejects,
            what="dead-lettered",
            on_error=file_error,
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

        self._on_connection = on_connection
        self._partitions = settings.cluster.partitions if settings.cluster.node_id else None
        self._collectors: dict[int, MqttCollector] = {}
        self._closing: set[int] = set()  # partitions being handed over: take nothing more
        self._inflight: collections.Counter[int] = collections.Counter()  # taken, not acked
        self._links = threading.Condition()
        self._closed = False
        if self._partitions is None:
            self._collectors[0] = self._collector(settings.mqtt, link=0)
        self._loop = WriterLoop(
            self._writer,
            self._batcher,
            self.rejects,
            self._ack,
            self.metrics,
            on_records,
        )
        self._writer_loop: ThreadLoop | None = None
        self._keep = settings.rejects.keep_payload_bytes

    # -- life cycle ------------------------------------------------------------------------

    def __enter__(self) -> IngestService:
        self._writer_loop = self.supervisor.thread(
            "telemetry-writer", self._loop.run, stop=self._batcher.close, critical=True
        )
        for collector in self._collectors.values():
            collector.start()
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
        stopped = True
        if self._writer_loop is not None:
            stopped = self._writer_loop.stop(timeout=self.settings.influx.timeout_s * 3)
        with self._links:
            self._closed = True
            collectors = list(self._collectors.values())
            self._collectors.clear()
        for collector in collectors:
            collector.stop()
        if not stopped:
            # The writer may still be using them; the process is ending anyway, and the
            # broker redelivers whatever it did not acknowledge.
            log.error("the telemetry writer is still busy; leaving its spool and files open")
            return
        self._client.close()
        self._spool.close()
        self.rejects.close()
        self.dead_letters.close()
        self._lock.close()

    def wait_connected(self, timeout: float) -> bool:
        """True once every connection ingest has is up (and subscribed)."""
        deadline = time.monotonic() + timeout
        return all(
            c.wait_connected(max(0.0, deadline - time.monotonic())) for c in self._connections()
        )

    # -- partitions (several nodes) --------------------------------------------------------

    @property
    def partitions(self) -> list[int]:
        """The partitions this node ingests now (empty for a node alone: it takes all)."""
        if self._partitions is None:
            return []
        with self._links:
            return sorted(self._collectors)

    def start_partition(self, partition: int) -> None:
        """Connect to partition `partition`'s session: what the broker kept for it comes first."""
        count = self._partitions
        if count is None:
            raise RuntimeError("ingest takes every site: there are no partitions to start")
        sites = partitions.sites_of(partition, self.registry.sites, count)
        own = partitions.partition_settings(self.settings.mqtt, partition, count)
        others = sorted(set(self.registry.sites) - set(sites))
        collector = self._collector(
            own, link=partition, topics=partitions.topics(sites), forget=partitions.topics(others)
        )
        with self._links:
            if self._closed:
                raise RuntimeError(f"ingest is stopping: partition {partition} not started")
            if partition in self._collectors:
                return
            self._closing.discard(partition)
            self._collectors[partition] = collector
        collector.start()
        log.info("ingesting partition %d (%d sites)", partition, len(sites))

    def stop_partition(self, partition: int, timeout: float = 30.0) -> bool:
        """Hand partition `partition` over: take nothing more from it (what arrives now stays
        unacknowledged, and the broker gives it to the next owner), wait until what was taken
        is durable and acknowledged, then disconnect. False if that took longer than
        `timeout`: the rest is redelivered to the next owner (at least once)."""
        with self._links:
            if partition not in self._collectors:
                return True
            self._closing.add(partition)
            drained = self._links.wait_for(lambda: not self._inflight[partition], timeout)
            collector = self._collectors.pop(partition)
        collector.stop()
        with self._links:
            self._closing.discard(partition)
            self._inflight.pop(partition, None)
        log.info("handed partition %d over%s", partition, "" if drained else " (not drained)")
        return drained

    def _collector(
        self,
        mqtt: MqttSettings,
        link: int,
        topics: Sequence[str] = (SUBSCRIPTION,),
        forget: Sequence[str] = (),
    ) -> MqttCollector:
        def connection(up: bool) -> None:
            self.metrics.mqtt_connected.set(int(up and self._all_connected()))
            self._on_connection(up, link)

        return MqttCollector(
            mqtt, self._on_message, connection, topics=topics, forget=forget, link=link
        )

    def _connections(self) -> list[MqttCollector]:
        with self._links:
            return list(self._collectors.values())

    def _all_connected(self) -> bool:
        """Connected means every connection ingest has: one down is messages not taken."""
        return all(c.connected for c in self._connections())

    def _ack(self, acks: Sequence[Ack]) -> int:
        """Acknowledge on the connection each message came in on (writer thread). The acks go
        out before the messages stop counting as taken, so a partition handed over is drained
        only once its broker has them; never under our lock, which paho's thread takes."""
        by_link: dict[int, list[Ack]] = {}
        for ack in acks:
            by_link.setdefault(ack.link, []).append(ack)
        with self._links:
            collectors = {link: self._collectors.get(link) for link in by_link}
        sent = sum(
            collector.ack(by_link[link])
            for link, collector in collectors.items()
            if collector is not None
        )
        if self._partitions is not None:
            with self._links:
                for link, items in by_link.items():
                    self._inflight[link] -= len(items)
                self._links.notify_all()
        return sent

    def write_points(self, lines: list[str]) -> None:
        """Store points that did not come over MQTT (alert counts, camera health), spooled like
        the rest. Never waits: beyond their own bound the oldest are dropped, and counted."""
        try:
            dropped = self._batcher.offer(lines)
        except BatcherClosed:
            return  # stopping: these are recomputed at the next start
        if dropped:
            self.metrics.internal_dropped.inc(dropped)

    def publish(self, topic: str, payload: bytes) -> bool:
        """Publish at QoS 1 on ingest's MQTT connection; True once the broker has it. Not with
        partitions: their connections come and go (the relay has its own then)."""
        with self._links:
            collector = self._collectors.get(0) if self._partitions is None else None
        return collector is not None and collector.publish(topic, payload)

    def health(self) -> Health:
        alive = self._writer_loop is not None and self._writer_loop.status().up
        return Health(
            mqtt_connected=self._all_connected(),
            influx_up=self._writer.influx_up,
            writer_alive=alive,
            spool_points=self._spool.pending_points,
            spool_bytes=self._spool.pending_bytes,
            pending_messages=len(self._batcher),
        )

    # -- the paho thread -------------------------------------------------------------------

    def _on_message(self, msg: MqttMessage) -> None:
        if self._partitions is not None and msg.ack is not None:
            with self._links:
                if msg.ack.link in self._closing:
                    return  # being handed over: the next owner gets it from the broker
                self._inflight[msg.ack.link] += 1
        parts = msg.topic.split("/")
        channel = parts[-1] if parts[-1] in _CHANNELS else "other"
        self.metrics.received.labels(channel).inc()
        item = Pending(received_ns=msg.received_ns, ack=msg.ack)
        problems: list[tuple[str, str]] = []
        try:
            self._decode(msg, item, problems)
        except Exception as exc:  # a bug must not kill paho's thread; keep the evidence
            log.exception("internal error decoding a message on %s", msg.topic)
            self.metrics.rejected.labels("internal_error").inc()
            problems.append(("internal_error", repr(exc)))
            item.lines.clear()
            item.records.clear()
        if problems:
            item.rejects.append(
                make_record(problems, msg.topic, msg.payload, msg.received_ns, self._keep)
            )
        # Stopping: not acknowledged, so the broker redelivers it after the restart.
        with contextlib.suppress(BatcherClosed):
            # QoS 1 never finds it full (Receive Maximum); a QoS 0 flood is dropped, counted.
            if not self._batcher.put(item, wait=item.ack is not None):
                self.metrics.qos0_dropped.inc()

    def _decode(self, msg: MqttMessage, item: Pending, problems: list[tuple[str, str]]) -> None:
        decoded = self._decoder.decode(msg.topic, msg.payload, msg.received_ns)
        for rejection in decoded.rejections:
            self._reject(problems, rejection.reason.value, rejection.detail)
        for record in decoded.records:
            point = record_point(record)
            try:
                line = encode_point(point)
                self._field_types.claim(point.measurement, point.fields)
            except FieldTypeConflict as exc:
                self._reject(problems, RejectReason.TYPE_CONFLICT.value, str(exc))
                continue
            item.lines.append(line)
            item.records.append(record)
            self.metrics.records.inc()

    def _reject(self, problems: list[tuple[str, str]], reason: str, detail: str) -> None:
        self.metrics.rejected.labels(reason).inc()
        problems.append((reason, detail))
