"""Camera health: every `health_every_s`, each camera's figures to InfluxDB, and dark cameras
to the alert engine.

    workers' /stats --> health points (camera_health) --> ingest's writer (spooled like any point)
                    `-> CameraWatch (analytics) -------> camera_offline raise / clear --> alerts

Rates come from the difference between two polls of the workers' running totals; a worker
that restarted starts its totals again from zero, which is taken as such and not as a
negative rate.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from analytics.camera_watch import CameraWatch
from analytics.events import Signal, Source
from config.settings import CamerasSettings
from devices.registry import Registry
from ingest.video.pool import CameraPool
from timeseries.lineprotocol import Point, encode_point
from timeseries.schema import CAMERA_HEALTH

log = logging.getLogger(__name__)


class VideoState(NamedTuple):
    """A camera's video as of the last poll, as the camera list shows it."""

    transport: str | None = None
    online: bool = False  # a feed is connected and the watch does not hold it offline
    last_frame_ms: int | None = None
    width: int | None = None
    height: int | None = None
    viewers: int = 0


def health_point(
    cur: Mapping[str, Any], prev: Mapping[str, Any] | None, dt_s: float, now_ms: int
) -> Point:
    """One camera's health from two polls `dt_s` apart (prev None: the first poll)."""
    if prev is not None and cur["frames_decoded"] < prev["frames_decoded"]:
        prev = None  # the worker restarted: its totals began again at zero

    def rate(key: str, scale: float = 1.0) -> float:
        before = prev[key] if prev is not None and prev.get(key) is not None else 0
        if prev is None or dt_s <= 0 or cur.get(key) is None:
            return 0.0
        return max(0.0, float(cur[key] - before) * scale / dt_s)

    fields: dict[str, Any] = {
        "online": cur["connected"] and cur["last_frame_ms"] is not None,
        "fps": round(rate("frames_decoded"), 3),
        "skipped_per_s": round(rate("frames_skipped"), 3),
        "bitrate_kbps": round(rate("bytes_received", 8 / 1000), 1),
        "viewers": int(cur["viewers"]),
        "frames_decoded": int(cur["frames_decoded"]),
        "reconnects": int(cur["reconnects"]),
    }
    if cur["last_frame_ms"] is not None:
        fields["last_frame_age_s"] = round(max(0, now_ms - cur["last_frame_ms"]) / 1000, 3)
    if cur["width"] is not None:
        fields["width"] = int(cur["width"])
        fields["height"] = int(cur["height"])
    if cur["packets_lost"] is not None:
        fields["packets_lost"] = int(cur["packets_lost"])
        fields["packets_received"] = int(cur["packets_received"])
    if cur["jitter_ms"] is not None:
        fields["jitter_ms"] = round(float(cur["jitter_ms"]), 2)
    tags = {
        "site_id": cur["site_id"],
        "camera_id": cur["camera_id"],
        "transport": cur["transport"] or "none",
    }
    return Point(CAMERA_HEALTH, tags, fields, now_ms * 1_000_000)


class CameraMonitor:
    def __init__(
        self,
        settings: CamerasSettings,
        registry: Registry,
        pool: CameraPool,
        write_lines: Callable[[list[str]], None],
        submit: Callable[[Sequence[Signal]], None],
        offline_at_start: Iterable[str] = (),
    ) -> None:
        self._settings = settings
        self._registry = registry
        self._pool = pool
        self._write_lines = write_lines
        self._submit = submit
        self.watch = CameraWatch(int(settings.offline_after_s * 1000))
        now_ms = time.time_ns() // 1_000_000
        for camera_id in offline_at_start:  # open camera_offline alerts from before a restart
            device = registry.devices.get(camera_id)
            if device is not None:
                self.watch.restore_offline(Source(device.site_id, camera_id), now_ms)
        self._prev: dict[str, dict[str, Any]] = {}
        self._prev_at = time.monotonic()
        self.polls = 0

    def latest(self) -> dict[str, dict[str, Any]]:
        """Each camera's figures as of the last poll."""
        return dict(self._prev)

    def video_state(self, camera_id: str) -> dict[str, Any]:
        stats = self._prev.get(camera_id)
        if stats is None:
            return VideoState()._asdict()
        return VideoState(
            transport=stats["transport"],
            online=bool(stats["connected"]) and not self.watch.is_offline(camera_id),
            last_frame_ms=stats["last_frame_ms"],
            width=stats["width"],
            height=stats["height"],
            viewers=stats["viewers"],
        )._asdict()

    async def run(self) -> None:
        now_ms = time.time_ns() // 1_000_000
        for camera_id in self._registry.streams:  # pulled cameras are expected from the start
            device = self._registry.devices[camera_id]
            self.watch.expect(Source(device.site_id, camera_id), now_ms)
        while True:
            try:
                await self.poll()
            except Exception:  # one bad poll must not end health for good
                log.exception("camera health poll failed")
            await asyncio.sleep(self._settings.health_every_s)  # the poll period

    async def poll(self) -> None:
        stats, down = await self._pool.stats()
        mono = time.monotonic()
        dt_s, self._prev_at = mono - self._prev_at, mono
        now_ms = time.time_ns() // 1_000_000
        signals: list[Signal] = []
        lines: list[str] = []
        for cur in stats:
            if cur["transport"] is None:
                continue  # asked about (a snapshot), never fed: no video to report on
            camera_id = cur["camera_id"]
            if cur["last_frame_ms"] is not None:
                source = Source(cur["site_id"], camera_id)
                signals += self.watch.frame_seen(source, int(cur["last_frame_ms"]))
            lines.append(encode_point(health_point(cur, self._prev.get(camera_id), dt_s, now_ms)))
            self._prev[camera_id] = cur
        signals += self.watch.tick(now_ms)
        if down:
            log.warning("camera workers %s did not report health", down)
        # Both hand over to bounded queues that may make us wait: off the event loop.
        if lines:
            await asyncio.to_thread(self._write_lines, lines)
        if signals:
            await asyncio.to_thread(self._submit, signals)
        self.polls += 1
