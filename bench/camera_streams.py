"""Camera streams per CPU core through the whole ingest path, beside decoding them alone.

    python bench/camera_streams.py [--streams 8] [--seconds 60] [--rounds 3]
                                   [--mmap-threshold BYTES] [--trim-every S] [--no-analytics]
                                   [--key-frames] [--decode-threads N] [--fps 5]
                                   [--bitrate KBITS]

Starts its own Mosquitto and InfluxDB on free ports and the real service
(`python -m api serve`, one camera worker). Each round, twice over the same scenes (the
simulator's kitchen scenes, 640x360, 5 fps, VP8 as aiortc encodes it):

  * baseline:  the streams are encoded ahead of time, then decoded alone by the decoder the
               service uses (libvpx through PyAV); CPU time of this process while decoding;
  * ingest:    the same number of simulated cameras publish over WHIP to the service for
               --seconds; CPU time of the service process and its worker over that window
               (WebRTC, SRTP, jitter buffer, decode, latest-frame slots, health to InfluxDB).
               The publishers run in this process and are not counted.

Nobody watches the cameras. The workers decode every frame, unless --key-frames
(`cameras.unwatched_decode = "key_frames"`, docs/video.md): then, at --fps 8 and up (four
times analytics' 2 fps), they ask for and decode only the key frames analytics need. The
baseline always decodes every frame of a stream encoded without requested key frames; when
the workers asked for key frames the live bit rate is higher than the camera's own (a note
says so) and the baseline cannot aim at it, so compare the ingest figures of two runs, with and
without --key-frames, rather than the ratio.

The simulated cameras' encoders aim at the bit rate the service's REMB feedback asks for, which
depends on how evenly the service takes their packets in (a busy event loop looks like a
congested link), so two versions of the service may be sent different bit rates; --bitrate
pins their target (aiortc clamps it to 250 to 1500 kbit/s; the kitchen
scenes come out at about 0.4 of it) so that two versions of the service compare at one rate.

Streams per core = stream-seconds of video / CPU seconds spent. Prints each round (with the
CPU split: the workers' decoder and analytics threads, their event loops, the API process; and
per stream-second the frames that arrived, were decoded and were analysed, from the health
points), the medians and the ratio ingest / baseline: the share of a core's decoding capacity
the whole ingest path keeps.
"""

from __future__ import annotations

import argparse
import asyncio
import calendar
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import av  # noqa: E402
import httpx  # noqa: E402
from aiortc.codecs import vpx  # noqa: E402
from aiortc.mediastreams import VIDEO_TIME_BASE  # noqa: E402
from procfs import cpu_seconds, rss_bytes  # noqa: E402

from alerts.store import AlertStore  # noqa: E402
from devices.registry import load_registry  # noqa: E402
from devices.tokens import Role, TokenStore  # noqa: E402
from simulators.camera_fleet import CameraFleet, CameraPlan  # noqa: E402
from simulators.cameras import pushed_cameras  # noqa: E402
from simulators.local_services import Influxd, Mosquitto, free_port  # noqa: E402
from simulators.scenes import Scene  # noqa: E402

INVENTORY = ROOT / "config" / "inventory" / "inventory.toml"
WIDTH, HEIGHT, FPS = 640, 360, 5.0
DATABASE = "bench_cameras"


def cpu_split(service: int, workers: list[int]) -> dict[str, float]:
    """CPU seconds so far: the API process, the workers' event loops (WebRTC, SRTP, RTP and
    jitter buffers in Python) and their other threads (decoders, pulls, JPEG)."""
    loops = sum(cpu_seconds(w, w) for w in workers)
    return {
        "api": cpu_seconds(service),
        "loop": loops,
        "threads": sum(cpu_seconds(w) for w in workers) - loops,
    }


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as fh:
            found += [int(p) for p in fh.read().split()]
    return found


def encode_streams(cameras: list[str], seconds: float, bitrate: int) -> list[list[bytes]]:
    """Each camera's scene encoded with aiortc's VP8 settings at `bitrate`: packets per stream."""
    streams = []
    frames = int(seconds * FPS)
    for camera in cameras:
        scene = Scene(camera, "kitchen", width=WIDTH, height=HEIGHT, fps=FPS)
        codec = av.CodecContext.create("libvpx", "w")
        codec.width, codec.height, codec.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        codec.time_base = VIDEO_TIME_BASE  # rate control needs the frames' real spacing
        codec.bit_rate = bitrate
        codec.gop_size, codec.qmin, codec.qmax = 3000, 2, 56
        codec.options = {
            "bufsize": str(bitrate),
            "cpu-used": "-6",
            "deadline": "realtime",
            "lag-in-frames": "0",
            "minrate": str(bitrate),
            "maxrate": str(bitrate),
            "noise-sensitivity": "4",
            "static-thresh": "1",
        }
        packets: list[bytes] = []
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(scene.frame(i), format="yuv420p")
            frame.pts = round(i * 90_000 / FPS)  # as SceneTrack stamps them
            frame.time_base = VIDEO_TIME_BASE
            packets += [bytes(p) for p in codec.encode(frame)]
        packets += [bytes(p) for p in codec.encode(None)]
        streams.append(packets)
    return streams


def _epoch(rfc3339: str) -> float:
    """Seconds since the epoch of InfluxDB's time stamps (2026-11-26T10:00:00.123Z)."""
    stamp = rfc3339.rstrip("Z")
    whole, _, fraction = stamp.partition(".")
    seconds = calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S"))
    return seconds + (float(f"0.{fraction}") if fraction else 0.0)


def kbps(streams: list[list[bytes]], seconds: float) -> float:
    return sum(len(p) for packets in streams for p in packets) * 8 / 1000 / seconds / len(streams)


def decode_only(streams: list[list[bytes]], seconds: float) -> float:
    """Streams per core when only decoding, with the decoder aiortc uses."""
    started = time.process_time()
    for packets in streams:
        decoder = av.CodecContext.create("libvpx", "r")
        for data in packets:
            for frame in decoder.decode(av.Packet(data)):
                frame.planes[0]  # touch the picture, as the slot does
    cpu = time.process_time() - started
    return len(streams) * seconds / cpu


def pushed_only_inventory(folder: Path) -> Path:
    """The inventory without its RTSP cameras: only the WHIP publishers load the service."""
    shutil.copytree(INVENTORY.parent, folder)
    (folder / "streams.csv").write_text("camera_id,url\n")
    return folder / INVENTORY.name


def service_env(
    data: Path,
    broker: Mosquitto,
    influxd: Influxd,
    port: int,
    mmap_threshold: int | None = None,
    trim_every_s: float | None = None,
    analytics: bool = True,
    key_frames: bool = False,
    decode_threads: int | None = None,
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINGLIANG_")}
    if key_frames:
        env["MINGLIANG_CAMERAS__UNWATCHED_DECODE"] = "key_frames"
    if decode_threads is not None:
        env["MINGLIANG_CAMERAS__DECODE_THREADS"] = str(decode_threads)
    if mmap_threshold is not None:
        env["MINGLIANG_CAMERAS__MALLOC_MMAP_THRESHOLD_BYTES"] = str(mmap_threshold)
    if trim_every_s is not None:
        env["MINGLIANG_CAMERAS__MALLOC_TRIM_EVERY_S"] = str(trim_every_s)
    env["MINGLIANG_ANALYTICS__ENABLED"] = "true" if analytics else "false"
    env.update(
        {
            "MINGLIANG_MQTT__HOST": broker.host,
            "MINGLIANG_MQTT__PORT": str(broker.port),
            "MINGLIANG_INFLUX__URL": influxd.url,
            "MINGLIANG_INFLUX__DATABASE": DATABASE,
            "MINGLIANG_API__PORT": str(port),
            "MINGLIANG_PATHS__DATA_DIR": str(data),
            "MINGLIANG_CAMERAS__WORKERS": "1",
            "MINGLIANG_PATHS__INVENTORY": str(pushed_only_inventory(data.parent / "inventory")),
        }
    )
    return env


def wait_healthy(base: str, service: subprocess.Popen[bytes], log: Path) -> None:
    """Until the service answers /healthz; its log's end if it dies or takes over 90 s."""
    deadline = time.monotonic() + 90
    while True:
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if service.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(log.read_text()[-3000:])
        time.sleep(0.2)  # polling the service's start


def make_tokens(data: Path, cameras: list[str]) -> tuple[str, dict[str, str]]:
    store = AlertStore(f"sqlite:///{data / 'alerts.db'}")
    try:
        store.create_schema()
        tokens = TokenStore(store.engine)
        tokens.create_schema()
        admin, _ = tokens.create(f"bench-{time.time_ns()}", Role.ADMIN, None)
        return admin, {c: tokens.create_camera(c) for c in cameras}
    finally:
        store.close()


async def ingest_round(
    base: str,
    admin: str,
    tokens: dict[str, str],
    cameras: list[str],
    pids: list[int],
    seconds: float,
    influx: str,
) -> tuple[float, float]:
    """Streams per core of the service while `cameras` publish for `seconds`, and the mean
    bit rate per stream its health points saw (kbit/s)."""
    registry = load_registry(INVENTORY)
    plans = [CameraPlan.for_device(registry.devices[c]) for c in cameras]
    fleet = CameraFleet(base, tokens, plans, width=WIDTH, height=HEIGHT, fps=FPS)
    stop = asyncio.Event()
    running = asyncio.create_task(fleet.run(stop))
    headers = {"Authorization": f"Bearer {admin}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=10) as api:

        async def online() -> int:
            cams = (await api.get("/api/v1/cameras")).json()
            return sum(1 for c in cams if c["online"] and c["camera_id"] in tokens)

        deadline = time.monotonic() + 60
        while await online() < len(cameras):
            if time.monotonic() > deadline:
                raise SystemExit("not every camera came online within 60 s")
            await asyncio.sleep(0.5)  # polling the service
        await asyncio.sleep(5)  # settle: key frames, bit-rate ramp-up
        before = cpu_split(pids[0], pids[1:])
        started = time.monotonic()
        await asyncio.sleep(seconds)  # the measured window
        after = cpu_split(pids[0], pids[1:])
        rss_mib = {pid: rss_bytes(pid) / 2**20 for pid in pids}
        split = {k: after[k] - before[k] for k in after}
        cpu = sum(split.values())
        elapsed = time.monotonic() - started
        still = await online()
        await asyncio.sleep(6)  # the last health point of the window
        window = f"time > now() - {int(elapsed) + 6}s"
        q = (
            "SELECT mean(bitrate_kbps), mean(fps), mean(decoded_fps), mean(key_frames_per_s), "
            "last(key_frames_only) FROM camera_health "
            f"WHERE {window} AND transport = 'whip'; "
            f"SELECT analytics_frames, analytics_cpu_s FROM camera_worker WHERE {window}"
        )
        async with httpx.AsyncClient(timeout=10) as client:
            result = (await client.get(f"{influx}/query", params={"db": DATABASE, "q": q})).json()
        _, bitrate, fps, decoded_fps, key_fps, key_frames = result["results"][0]["series"][0][
            "values"
        ][0]
        bitrate = float(bitrate)
        # None from a service without these figures (before 2026-12)
        fps, decoded_fps, key_fps = fps or 0.0, decoded_fps or 0.0, key_fps or 0.0
        analysed = analytics_ms = 0.0  # per stream-second, between the first and last point
        points = result["results"][1].get("series", [{"values": []}])[0]["values"]
        if len(points) >= 2:
            (t0, f0, c0), (t1, f1, c1) = points[0], points[-1]
            span_s = (_epoch(t1) - _epoch(t0)) * len(cameras)
            analysed, analytics_ms = (f1 - f0) / span_s, 1000 * (c1 - c0) / span_s
    stop.set()
    await running
    if still < len(cameras):
        raise SystemExit(f"only {still} of {len(cameras)} cameras stayed online")
    stream_s = len(cameras) * elapsed
    per_stream_s = {k: 1000 * v / stream_s for k, v in split.items()}
    print(
        "         CPU ms per stream-second: "
        f"worker threads {per_stream_s['threads']:.2f} (of which analytics {analytics_ms:.2f}), "
        f"worker event loop (WebRTC in Python) {per_stream_s['loop']:.2f}, "
        f"API process {per_stream_s['api']:.2f}"
    )
    print(
        f"         frames per stream-second: arrived {fps:.2f} (key frames {key_fps:.2f}), "
        f"decoded {decoded_fps:.2f}, analysed {analysed:.2f}"
        + ("   (key frames asked for: live bit rate above the camera's own)" if key_frames else "")
    )
    workers_mib = sum(rss_mib[pid] for pid in pids[1:])
    print(
        f"         resident memory: API process {rss_mib[pids[0]]:.0f} MiB, "
        f"camera workers {workers_mib:.0f} MiB ({workers_mib / len(cameras):.1f} MiB a stream)"
    )
    return len(cameras) * elapsed / cpu, bitrate


def main() -> int:
    global FPS
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--mmap-threshold",
        type=int,
        help="the workers' cameras.malloc_mmap_threshold_bytes (0: glibc's moving default)",
    )
    parser.add_argument(
        "--trim-every", type=float, help="the workers' cameras.malloc_trim_every_s (0: never)"
    )
    parser.add_argument(
        "--no-analytics", action="store_true", help="video analytics off (the path alone)"
    )
    parser.add_argument(
        "--key-frames",
        action="store_true",
        help="decode only the key frames analytics need (cameras.unwatched_decode)",
    )
    parser.add_argument("--decode-threads", type=int, help="the workers' cameras.decode_threads")
    parser.add_argument("--fps", type=float, default=FPS, help="the cameras' frame rate")
    parser.add_argument(
        "--bitrate", type=int, help="pin the cameras' encoder target (kbit/s), not REMB's"
    )
    args = parser.parse_args()
    FPS = args.fps
    if args.bitrate is not None:  # the publishers run in this process: pin their encoders
        vpx.DEFAULT_BITRATE = vpx.MIN_BITRATE = vpx.MAX_BITRATE = args.bitrate * 1000
    registry = load_registry(INVENTORY)
    cameras = pushed_cameras(registry, args.streams)
    with tempfile.TemporaryDirectory(prefix="bench-cameras-") as tmp:
        work = Path(tmp)
        data = work / "data"
        data.mkdir()
        admin, tokens = make_tokens(data, cameras)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        with Mosquitto(work / "mosquitto") as broker, Influxd(work / "influxd") as influxd:
            log = (work / "service.log").open("wb")
            service = subprocess.Popen(
                [sys.executable, "-m", "api", "serve", "--log-level", "warning"],
                env=service_env(
                    data,
                    broker,
                    influxd,
                    port,
                    args.mmap_threshold,
                    args.trim_every,
                    not args.no_analytics,
                    args.key_frames,
                    args.decode_threads,
                ),
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                wait_healthy(base, service, work / "service.log")
                pids = [service.pid, *children(service.pid)]
                baseline, ingest = [], []
                for n in range(1, args.rounds + 1):
                    i, live_kbps = asyncio.run(
                        ingest_round(base, admin, tokens, cameras, pids, args.seconds, influxd.url)
                    )
                    # The same scenes, encoded as aiortc does at the bit rate the live
                    # sessions ran at, decoded alone.
                    target = live_kbps
                    for _ in range(3):  # libvpx undershoots on calm scenes: aim until it fits
                        encoded = encode_streams(cameras, args.seconds, int(target * 1000))
                        got = kbps(encoded, args.seconds)
                        if abs(got - live_kbps) < 0.1 * live_kbps:
                            break
                        target *= live_kbps / got
                    b = decode_only(encoded, args.seconds)
                    baseline.append(b)
                    ingest.append(i)
                    print(
                        f"round {n}: ingest {i:6.1f} streams/core at {live_kbps:5.0f} kbit/s   "
                        f"decode only {b:6.1f} streams/core at "
                        f"{kbps(encoded, args.seconds):5.0f} kbit/s   ratio {i / b:.3f}"
                    )
            finally:
                service.terminate()
                service.wait(30)
                log.close()
    b, i = statistics.median(baseline), statistics.median(ingest)
    print(
        f"median:  decode only {b:6.1f} streams/core   ingest {i:6.1f} streams/core   "
        f"ratio {i / b:.3f}   ({WIDTH}x{HEIGHT}, {FPS:g} fps, {len(cameras)} streams, "
        f"{args.seconds:.0f} s per round)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
