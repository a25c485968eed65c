"""Memory stays flat with 20 live streams.

The service runs as it does in production (`python -m api serve`, two camera workers) with 16
kitchen cameras pushing 640x360 at 5 fps over WHIP and 4 street cameras pulled over RTSP. After
a 2-minute warm-up, the resident memory of the service and its workers is sampled every 10 s;
the median of the last minute must be within 2 % of the median of the first, for each process.
The report also has each worker's malloc heap (in use, and free) from its `camera_worker`
points, which tells a leak from fragmentation.

The measured part lasts MINGLIANG_TEST_SOAK_SECONDS: 300 by default, so that CI runs it; the
full soak is the 30-minute one,

    MINGLIANG_TEST_SOAK_SECONDS=1800 ./mingliang test -s tests/service/test_video_soak.py
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from config.settings import Settings
from devices.registry import load_registry
from simulators.camera_fleet import CameraFleet, CameraPlan
from simulators.cameras import pushed_cameras, served_cameras
from simulators.local_services import Influxd, Mosquitto, free_port, stop_process
from simulators.rtsp import RtspCameraServer
from tests.support import (
    LoopThread,
    inventory_with_local_streams,
    make_camera_token,
    make_settings,
    make_token,
    query,
    wait_until,
)

MEASURED_S = float(os.environ.get("MINGLIANG_TEST_SOAK_SECONDS", "300"))
MAX_GROWTH_PCT = 2.0
WARM_UP_S = 120.0
SAMPLE_EVERY_S = 10.0
WINDOW_S = 60.0
PUSHED, PULLED = 16, 4


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"process {pid} has no VmRSS")


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as fh:
            found += [int(p) for p in fh.read().split()]
    return found


def heap_report(settings: Settings, start_mono: float, end_mono: float) -> dict[str, Any]:
    """Each worker's malloc heap (in use: a leak grows it; free: fragmentation does), first
    minute against last, from the camera_worker points the service wrote."""
    to_ns = time.time_ns() - time.monotonic_ns()
    start_ns, end_ns = int(start_mono * 1e9) + to_ns, int(end_mono * 1e9) + to_ns
    rows = query(
        settings,
        "SELECT heap_in_use_bytes, heap_free_bytes, rss_bytes, worker FROM camera_worker "
        f"WHERE time >= {start_ns} AND time <= {end_ns}",
    )
    out: dict[str, Any] = {}
    for worker in sorted({r["worker"] for r in rows}):
        mine = [r for r in rows if r["worker"] == worker]
        first = [r for r in mine if r["time"] < start_ns + WINDOW_S * 1e9]
        last = [r for r in mine if r["time"] > end_ns - WINDOW_S * 1e9]
        out[f"worker {worker}"] = {
            f"{field}_mib": [
                round(statistics.median(r[field] for r in part) / 2**20, 2)
                for part in (first, last)
            ]
            for field in ("heap_in_use_bytes", "heap_free_bytes", "rss_bytes")
        }
    return out


@pytest.fixture
def rtsp_port() -> int:
    return free_port()


@pytest.fixture
def inventory(tmp_path: Path, rtsp_port: int) -> Path:
    """The district inventory with its four RTSP street cameras on a free local port."""
    return inventory_with_local_streams(tmp_path, rtsp_port)


@pytest.fixture
def settings(tmp_path: Path, broker: Mosquitto, influxd: Influxd, inventory: Path) -> Settings:
    return make_settings(
        tmp_path / "data",
        broker,
        influxd,
        api={"port": free_port()},
        paths={"inventory": str(inventory)},
        cameras={"workers": 2},
    )


def environment(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINGLIANG_")}
    for section, values in {
        "mqtt": {
            "host": settings.mqtt.host,
            "port": settings.mqtt.port,
            "client_id": settings.mqtt.client_id,
        },
        "influx": {"url": settings.influx.url, "database": settings.influx.database},
        "api": {"port": settings.api.port},
        "paths": {"data_dir": settings.data_dir, "inventory": settings.inventory_path},
        "cameras": {"workers": settings.cameras.workers},
    }.items():
        for key, value in values.items():
            env[f"MINGLIANG_{section.upper()}__{key.upper()}"] = str(value)
    return env


@pytest.fixture
def service(settings: Settings, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    log = (tmp_path / "service.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "api", "serve", "--log-level", "warning"],
        env=environment(settings),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{settings.api.port}"

        def healthy() -> bool:
            assert proc.poll() is None, (tmp_path / "service.log").read_text()[-3000:]
            try:
                return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(healthy, 90, "the service to start")
        yield proc
    finally:
        stop_process(proc)
        log.close()


@pytest.mark.timeout(WARM_UP_S + MEASURED_S + 600)
def test_memory_stays_flat_with_twenty_streams(
    settings: Settings, service: subprocess.Popen[bytes], tmp_path: Path, rtsp_port: int
) -> None:
    measured_s = MEASURED_S
    registry = load_registry(settings.inventory_path)
    pulled = served_cameras(registry, rtsp_port)
    assert len(pulled) == PULLED
    pushed = pushed_cameras(registry, PUSHED)
    tokens = {camera: make_camera_token(settings, camera) for camera in pushed}
    base = f"http://127.0.0.1:{settings.api.port}"
    api = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {make_token(settings)}"})
    plans = [CameraPlan.for_device(registry.devices[c]) for c in pushed]

    def online() -> int:
        cameras = api.get("/api/v1/cameras").json()
        return sum(1 for c in cameras if c["online"])

    with (
        RtspCameraServer(pulled, port=rtsp_port, fps=5.0) as _,
        LoopThread() as peers,
        api,
    ):

        async def start() -> tuple[CameraFleet, asyncio.Event]:
            return CameraFleet(base, tokens, plans, fps=5.0), asyncio.Event()

        fleet, stop = peers.run(start())
        running = peers.start(fleet.run(stop))
        wait_until(lambda: online() == PUSHED + PULLED, 120, "all 20 cameras online")
        workers = children(service.pid)
        assert len(workers) == settings.cameras.workers

        def sample() -> dict[str, Any]:
            per = {pid: rss_bytes(pid) for pid in [service.pid, *workers]}
            return {"t": time.monotonic(), "rss": per, "total": sum(per.values())}

        started = time.monotonic()
        samples: list[dict[str, Any]] = []
        end = started + WARM_UP_S + measured_s
        while time.monotonic() < end:
            assert not running.done(), f"the camera fleet stopped: {running.exception()}"
            assert children(service.pid) == workers, "a camera worker was restarted"
            samples.append(sample())
            time.sleep(SAMPLE_EVERY_S)  # the sampling period of the measurement
        assert online() == PUSHED + PULLED, "not every stream lasted the soak"
        peers.loop.call_soon_threadsafe(stop.set)
        running.result(60)

    measured = [s for s in samples if s["t"] >= started + WARM_UP_S]
    first = [s for s in measured if s["t"] < measured[0]["t"] + WINDOW_S]
    last = [s for s in measured if s["t"] > measured[-1]["t"] - WINDOW_S]
    report: dict[str, Any] = {"samples": len(measured), "measured_s": measured_s}
    for name, pick in [("total", lambda s: s["total"])] + [
        (f"pid {pid}", lambda s, pid=pid: s["rss"][pid]) for pid in [service.pid, *workers]
    ]:
        before = statistics.median(pick(s) for s in first)
        after = statistics.median(pick(s) for s in last)
        report[name] = {
            "first_min_mib": round(before / 2**20, 1),
            "last_min_mib": round(after / 2**20, 1),
            "growth_pct": round((after / before - 1) * 100, 2),
        }
    report["heap"] = heap_report(settings, started + WARM_UP_S, measured[-1]["t"])
    (tmp_path / "soak.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    for name, figures in report.items():
        if isinstance(figures, dict) and "growth_pct" in figures:
            growth = figures["growth_pct"]
            assert growth < MAX_GROWTH_PCT, f"{name} grew {growth} %: {report}"
