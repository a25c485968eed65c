"""What video analytics cost: CPU per stream-second with analytics on, beside the same streams
with analytics off, in one run.

    python bench/analytics_cost.py [--streams 8] [--seconds 60] [--rounds 3]

Each round starts the real service twice (`python -m api serve`, one camera worker, its own
Mosquitto and InfluxDB), once with `analytics.enabled = false` and once with the defaults
(health at `analytics.health_every_s`, the evidence ring at `cameras.analytics_fps`), and has
the same simulated cameras (kitchen scenes, 640x360, 5 fps, VP8 over WHIP) publish for
--seconds. CPU of the service and its worker over that window, per stream-second. Prints each
round, the medians, and the ratio on / off: the target is at most 1.20.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from camera_streams import (  # noqa: E402
    DATABASE,
    children,
    ingest_round,
    make_tokens,
    service_env,
    wait_healthy,
)

from devices.registry import load_registry  # noqa: E402
from simulators.cameras import pushed_cameras  # noqa: E402
from simulators.local_services import Influxd, Mosquitto, free_port  # noqa: E402

INVENTORY = ROOT / "config" / "inventory" / "inventory.toml"


@contextlib.contextmanager
def service(
    work: Path, name: str, broker: Mosquitto, influxd: Influxd, analytics: bool
) -> Iterator[tuple[str, list[int], Path]]:
    data = work / name / "data"
    data.mkdir(parents=True)
    port = free_port()
    env = service_env(data, broker, influxd, port, analytics=analytics)
    log_path = work / name / "service.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "api", "serve", "--log-level", "warning"],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(base, process, log_path)
            yield base, [process.pid, *children(process.pid)], data
        finally:
            process.terminate()
            process.wait(30)


def analytics_share(influx: str, seconds: float, streams: int) -> str:
    """What the workers' analytics counted of their own CPU over the window (thread time of
    the analytics calls), per stream-second and per analysed frame."""
    q = (
        "SELECT spread(analytics_cpu_s), spread(analytics_frames) FROM camera_worker "
        f"WHERE time > now() - {int(seconds) + 12}s GROUP BY worker"
    )
    answer = httpx.get(f"{influx}/query", params={"db": DATABASE, "q": q}, timeout=10).json()
    cpu = frames = 0.0
    for series in answer["results"][0].get("series", []):
        cpu += float(series["values"][0][1] or 0)
        frames += float(series["values"][0][2] or 0)
    if not frames:
        return "no analytics counts in InfluxDB"
    return (
        f"{1000 * cpu / (streams * seconds):.2f} ms per stream-second, "
        f"{1000 * cpu / frames:.2f} ms per frame, {frames / (streams * seconds):.2f} frames/s"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    cameras = pushed_cameras(load_registry(INVENTORY), args.streams)
    off_ms: list[float] = []
    on_ms: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-analytics-") as tmp:
        work = Path(tmp)
        with Mosquitto(work / "mosquitto") as broker, Influxd(work / "influxd") as influxd:
            for n in range(1, args.rounds + 1):
                figures = {}
                for analytics in (False, True):
                    name = f"round{n}-{'on' if analytics else 'off'}"
                    with service(work, name, broker, influxd, analytics) as (base, pids, data):
                        admin, tokens = make_tokens(data, cameras)
                        per_core, _ = asyncio.run(
                            ingest_round(
                                base, admin, tokens, cameras, pids, args.seconds, influxd.url
                            )
                        )
                        if analytics:
                            share = analytics_share(influxd.url, args.seconds, len(cameras))
                    figures[analytics] = 1000 / per_core  # CPU ms per stream-second
                off_ms.append(figures[False])
                on_ms.append(figures[True])
                print(
                    f"round {n}: analytics off {figures[False]:6.2f} ms   "
                    f"on {figures[True]:6.2f} ms CPU per stream-second   "
                    f"ratio {figures[True] / figures[False]:.3f}"
                )
                print(f"         of which analytics itself (worker's own count): {share}")
    off, on = statistics.median(off_ms), statistics.median(on_ms)
    print(
        f"median:  analytics off {off:.2f} ms   on {on:.2f} ms CPU per stream-second   "
        f"ratio {on / off:.3f}   ({len(cameras)} streams, {args.seconds:.0f} s per round)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
