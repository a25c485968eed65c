"""Camera health points from two polls of a worker's running totals, and whose they are."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from config.settings import load_settings
from devices.registry import Registry
from ingest.video.monitor import CameraMonitor, health_point, worker_point
from ingest.video.stats import CameraStats, WorkerStats
from timeseries.lineprotocol import encode_point
from timeseries.schema import CAMERA_HEALTH, CAMERA_WORKER


def stats(**over: Any) -> CameraStats:
    base: dict[str, Any] = {
        "camera_id": "kitchen-0001-cam-1",
        "site_id": "kitchen-0001",
        "transport": "whip",
        "connected": True,
        "frames_decoded": 100,
        "frames_received": 100,
        "frames_skipped": 60,
        "bytes_received": 1_000_000,
        "packets_received": 900,
        "packets_lost": 3,
        "jitter_ms": 1.25,
        "width": 640,
        "height": 360,
        "last_frame_ms": 9_800,
        "viewers": 1,
        "takeovers": 0,
        "reconnects": 0,
    }
    return CameraStats(**{**base, **over})


def test_rates_come_from_the_difference_of_two_polls() -> None:
    prev = stats()
    cur = stats(
        frames_decoded=125, frames_received=125, frames_skipped=75, bytes_received=1_250_000
    )
    point = health_point(cur, prev, 5.0, 10_000)
    assert point.measurement == CAMERA_HEALTH
    assert point.tags == {
        "site_id": "kitchen-0001",
        "camera_id": "kitchen-0001-cam-1",
        "transport": "whip",
    }
    f = point.fields
    assert f["fps"] == 5.0 and f["skipped_per_s"] == 3.0 and f["bitrate_kbps"] == 400.0
    assert f["decoded_fps"] == 5.0 and f["key_frames_only"] is False
    assert f["online"] is True and f["last_frame_age_s"] == 0.2
    assert (f["width"], f["height"], f["packets_lost"], f["jitter_ms"]) == (640, 360, 3, 1.25)
    assert point.ts_ns == 10_000 * 1_000_000
    line = encode_point(point)
    assert line.startswith(
        "camera_health,camera_id=kitchen-0001-cam-1,site_id=kitchen-0001,transport=whip "
    )
    assert "fps=5.0," in line and "width=640i," in line  # rates float, counts integer


def test_fps_is_the_camera_rate_when_only_key_frames_are_decoded() -> None:
    """Nobody watches: 25 frames arrived in 5 s, 10 of them decoded (key frames)."""
    prev = stats(key_frames_only=True)
    cur = stats(
        frames_received=125,
        frames_decoded=110,
        key_frames_received=10,
        frames_not_decoded=15,
        key_frames_only=True,
    )
    f = health_point(cur, prev, 5.0, 10_000).fields
    assert (f["fps"], f["decoded_fps"], f["key_frames_only"]) == (5.0, 2.0, True)
    assert f["key_frames_per_s"] == 2.0


def test_a_restarted_worker_does_not_give_negative_rates() -> None:
    point = health_point(stats(frames_decoded=10, bytes_received=5_000), stats(), 5.0, 10_000)
    assert point.fields["fps"] == 0.0 and point.fields["bitrate_kbps"] == 0.0


def test_an_rtsp_camera_without_rtp_figures_and_no_frame_yet() -> None:
    cur = stats(
        transport="rtsp",
        connected=False,
        packets_received=None,
        packets_lost=None,
        jitter_ms=None,
        width=None,
        height=None,
        last_frame_ms=None,
        frames_decoded=0,
    )
    f = health_point(cur, None, 5.0, 10_000).fields
    assert f["online"] is False
    assert not {"packets_lost", "jitter_ms", "width", "last_frame_age_s"} & f.keys()


def worker(index: int, *cameras: CameraStats) -> WorkerStats:
    return WorkerStats(
        index=index,
        pid=1000 + index,
        rss_bytes=150 << 20,
        heap_in_use_bytes=None,
        heap_free_bytes=None,
        threads=12,
        cameras=list(cameras),
        analytics_frames=0,
        analytics_cpu_s=0.0,
        findings_dropped=0,
    )


class Workers:
    """Stands in for the CameraPool: the workers' figures the monitor polls."""

    def __init__(self, *workers: WorkerStats) -> None:
        self.workers = list(workers)

    async def stats(self) -> tuple[list[WorkerStats], list[int]]:
        return self.workers, []


def monitor(
    registry: Registry, pool: Workers, owned: set[str], node: str | None
) -> tuple[CameraMonitor, list[str], list[Any]]:
    lines: list[str] = []
    signals: list[Any] = []
    settings = load_settings({}).cameras
    made = CameraMonitor(
        settings,
        registry.with_streams([]),
        pool,  # type: ignore[arg-type]
        lines.extend,
        signals.extend,
        owns=owned.__contains__,
        node=node,
    )
    return made, lines, signals


def test_each_nodes_workers_are_their_own_series(registry: Registry) -> None:
    mon, lines, _ = monitor(registry, Workers(worker(0), worker(1)), set(), "node-a")
    asyncio.run(mon.poll())
    assert sorted(line.split(" ")[0] for line in lines) == [
        f"{CAMERA_WORKER},node=node-a,worker=0",
        f"{CAMERA_WORKER},node=node-a,worker=1",
    ]
    assert encode_point(worker_point(worker(0), 10_000)).startswith(f"{CAMERA_WORKER},worker=0 ")


def test_a_camera_that_moved_to_another_node_is_neither_reported_nor_alerted_here(
    registry: Registry,
) -> None:
    """Node A served the camera, then its publisher moved to node B: A's worker still has
    the camera's feed, disconnected. Only B may write its health and raise camera_offline."""
    camera = "kitchen-0001-cam-1"
    now_ms = time.time_ns() // 1_000_000
    live = stats(camera_id=camera, last_frame_ms=now_ms)
    pool = Workers(worker(0, live))
    owned = {camera}
    mon, lines, signals = monitor(registry, pool, owned, "node-a")

    async def scenario() -> None:
        await mon.poll()
        assert any(line.startswith(f"{CAMERA_HEALTH},") for line in lines)
        owned.clear()  # the camera's owner is now node B
        pool.workers = [worker(0, stats(camera_id=camera, connected=False, last_frame_ms=now_ms))]
        lines.clear()
        await mon.poll()
        assert not any(line.startswith(f"{CAMERA_HEALTH},") for line in lines)
        assert camera not in mon.watch.watched()
        assert mon.latest() == {}

    asyncio.run(scenario())
    assert signals == []
