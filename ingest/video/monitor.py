"""Camera health: every `health_every_s`, each camera's figures to InfluxDB, and dark cameras
to the alert engine.

    workers' /stats --> health points (camera_health, camera_worker) --> ingest's writer
                    `-> CameraWatch (analytics) --> camera_offline raise / clear --> alerts

Rates come from the difference between two polls of the workers' running totals; a worker
that restarted starts its totals again from zero, which is taken as such and not as a
negative rate.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from analytics.camera_watch import CameraWatch
from analytics.events import Signal, Source
from config.settings import CamerasSettings
from devices.registry import Registry
from ingest.video.pool import CameraPool
from ingest.video.stats import CameraStats, WorkerStats
from timeseries.lineprotocol import Point, encode_point
from timeseries.schema import CAMERA_HEALTH, CAMERA_WORKER

log = logging.getLogger(__name__)


class VideoState(BaseModel):
    """A camera's video as of the last poll, as the camera list shows it."""

    model_config = ConfigDict(frozen=True)

    transport: str | None = Field(None, description="whip, rtsp, or None if nothing feeds it.")
    online: bool = Field(
        False, description="Frames are being decoded (and the camera is not held offline)."
    )
    last_frame_ms: int | None = None
    width: int | None = None
    height: int | None = None
    viewers: int = 0


def health_point(cur: CameraStats, prev: CameraStats | None, dt_s: float, now_ms: int) -> Point:
    """One camera's health from two polls `dt_s` apart (prev None: the first poll)."""
    if prev is not None and (
        cur.frames_decoded < prev.frames_decoded or cur.frames_received < prev.frames_received
    ):
        prev = None  # the worker restarted: its totals began again at zero

    def rate(key: str, scale: float = 1.0) -> float:
        if prev is None or dt_s <= 0:
            return 0.0
        return max(0.0, float(getattr(cur, key) - getattr(prev, key)) * scale / dt_s)

    fields: dict[str, Any] = {
        "online": cur.connected and cur.last_frame_ms is not None,
        "fps": round(rate("frames_received"), 3),
        "decoded_fps": round(rate("frames_decoded"), 3),
        "key_frames_per_s": round(rate("key_frames_received"), 3),
        "skipped_per_s": round(rate("frames_skipped"), 3),
        "bitrate_kbps": round(rate("bytes_received", 8 / 1000), 1),
        "viewers": cur.viewers,
        "frames_decoded": cur.frames_decoded,
        "key_frames_only": cur.key_frames_only,
        "reconnects": cur.reconnects,
    }
    if cur.last_frame_ms is not None:
        fields["last_frame_age_s"] = round(max(0, now_ms - cur.last_frame_ms) / 1000, 3)
    if cur.width is not None and cur.height is not None:
        fields["width"] = cur.width
        fields["height"] = cur.height
    if cur.packets_lost is not None and cur.packets_received is not None:
        fields["packets_lost"] = cur.packets_lost
        fields["packets_received"] = cur.packets_received
    if cur.jitter_ms is not None:
        fields["jitter_ms"] = round(cur.jitter_ms, 2)
    tags = {
        "site_id": cur.site_id,
        "camera_id": cur.camera_id,
        "transport": cur.transport or "none",
    }
    return Point(CAMERA_HEALTH, tags, fields, now_ms * 1_000_000)


def worker_point(worker: WorkerStats, now_ms: int, node: str | None = None) -> Point:
    """A camera worker process's memory and load; `node` tells the nodes' worker 0s apart."""
    fields: dict[str, Any] = {
        "rss_bytes": worker.rss_bytes,
        "threads": worker.threads,
        "cameras": sum(1 for c in worker.cameras if c.connected),
        "analytics_frames": worker.analytics_frames,
        "analytics_cpu_s": worker.analytics_cpu_s,
        "findings_dropped": worker.findings_dropped,
    }
    if worker.heap_in_use_bytes is not None and worker.heap_free_bytes is not None:
        fields["heap_in_use_bytes"] = worker.heap_in_use_bytes
        fields["heap_free_bytes"] = worker.heap_free_bytes
    tags = {"worker": str(worker.index)}
    if node is not None:
        tags["node"] = node
    return Point(CAMERA_WORKER, tags, fields, now_ms * 1_000_000)


class CameraMonitor:
    def __init__(
        self,
        settings: CamerasSettings,
        registry: Registry,
        pool: CameraPool,
        points: Callable[[list[str]], None],
        submit: Callable[[Sequence[Signal]], None],
        offline_at_start: Iterable[str] = (),
        owns: Callable[[str], bool] = lambda camera_id: True,
        node: str | None = None,
    ) -> None:
        """`points` takes health points without waiting; `submit` hands signals to the alert
        engine and may wait (it is called off the event loop). `owns(camera_id)`: with several
        nodes, whether this node serves the camera now; a camera served elsewhere, with no
        session left here, is neither watched nor reported here (its owner reports it).
        `node`: this node's id, a tag of its workers' points."""
        self._settings = settings
        self._registry = registry
        self._pool = pool
        self._points = points
        self._submit = submit
        self._owns = owns
        self._node = node
        self.watch = CameraWatch(int(settings.offline_after_s * 1000))
        now_ms = time.time_ns() // 1_000_000
        for camera_id in offline_at_start:  # open camera_offline alerts from before a restart
            device = registry.devices.get(camera_id)
            if device is not None:
                self.watch.restore_offline(Source(device.site_id, camera_id), now_ms)
        for camera_id in registry.streams:  # pulled cameras are expected from the start
            self.watch.expect(Source(registry.devices[camera_id].site_id, camera_id), now_ms)
        self._prev: dict[str, CameraStats] = {}
        self._prev_at = time.monotonic()
        self.polls = 0

    def expect(self, camera_id: str) -> None:
        """Watch a camera from now on (several nodes: this one began pulling it)."""
        device = self._registry.devices[camera_id]
        self.watch.expect(Source(device.site_id, camera_id), time.time_ns() // 1_000_000)

    def latest(self) -> dict[str, CameraStats]:
        """Each camera's figures as of the last poll."""
        return dict(self._prev)

    def video_state(self, camera_id: str) -> VideoState:
        stats = self._prev.get(camera_id)
        if stats is None:
            return VideoState()
        return VideoState(
            transport=stats.transport,
            online=stats.has_video and not self.watch.is_offline(camera_id),
            last_frame_ms=stats.last_frame_ms,
            width=stats.width,
            height=stats.height,
            viewers=stats.viewers,
        )

    async def run(self) -> None:
        """Poll every `health_every_s`; a failure ends the run (the supervisor restarts it)."""
        while True:
            await self.poll()
            await asyncio.sleep(self._settings.health_every_s)  # the poll period

    async def poll(self) -> None:
        workers, down = await self._pool.stats()
        mono = time.monotonic()
        dt_s, self._prev_at = mono - self._prev_at, mono
        now_ms = time.time_ns() // 1_000_000
        signals: list[Signal] = []
        lines = [encode_point(worker_point(w, now_ms, self._node)) for w in workers]
        for cur in (camera for w in workers for camera in w.cameras):
            if cur.transport is None:
                continue  # asked about (a snapshot), never fed: no video to report on
            if not cur.connected and not self._owns(cur.camera_id):
                self._prev.pop(cur.camera_id, None)  # moved to another node, which reports it
                continue
            if cur.last_frame_ms is not None:
                source = Source(cur.site_id, cur.camera_id)
                signals += self.watch.frame_seen(source, cur.last_frame_ms)
            lines.append(
                encode_point(health_point(cur, self._prev.get(cur.camera_id), dt_s, now_ms))
            )
            self._prev[cur.camera_id] = cur
        for camera_id in self.watch.watched():
            here = self._prev.get(camera_id)
            if not self._owns(camera_id) and (here is None or not here.connected):
                self.watch.forget(camera_id)
        signals += self.watch.tick(now_ms)
        if down:
            log.warning("camera workers %s did not report health", down)
        if lines:
            self._points(lines)
        if signals:
            await asyncio.to_thread(self._submit, signals)
        self.polls += 1
