"""python -m simulators.cameras: simulated cameras, pushing over WHIP and served over RTSP.

WHIP: the first N kitchen cameras of the inventory (or those named with --camera) publish
synthetic kitchen scenes to the service. Their publishing tokens are created in the configured
alert store and kept in `data/camera-tokens.json` for the next run.

RTSP: with --rtsp, the cameras of the inventory's streams file whose URL points at this
machine's --rtsp-port are served by GStreamer's RTSP server, for the service to pull.

Scripted happenings (--script CAMERA=KIND@START+DURATION,...) and their ground truth (--truth)
let analytics be scored; see docs/simulators.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import urlsplit

from alerts.store import AlertStore
from config.settings import ConfigError, Settings, load_settings
from devices.registry import InventoryError, Registry, load_registry
from devices.tokens import TokenStore
from simulators.camera_fleet import SCENE_OF_TYPE, CameraFleet, CameraPlan
from simulators.rtsp import RtspCameraServer, RtspServerError, gstreamer_available


def camera_tokens(settings: Settings, cameras: Sequence[str]) -> dict[str, str]:
    """A valid WHIP token per camera: reused from data/camera-tokens.json, else created."""
    path = settings.data_dir / "camera-tokens.json"
    known: dict[str, str] = {}
    with contextlib.suppress(OSError, ValueError):
        known = dict(json.loads(path.read_text()))
    store = AlertStore(settings.alert_store_url)
    try:
        store.create_schema()
        tokens = TokenStore(store.engine)
        tokens.create_schema()
        result = {}
        for camera in cameras:
            token = known.get(camera)
            if token is None or tokens.verify_camera(token) != camera:
                token = tokens.create_camera(camera)
            result[camera] = token
    finally:
        store.close()
    known.update(result)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(json.dumps(known, indent=1) + "\n")
    return result


def pushed_cameras(registry: Registry, count: int) -> list[str]:
    """The first `count` kitchen cameras that are not pulled over RTSP."""
    return [
        d.device_id
        for d in registry.cameras()
        if d.type == "kitchen_camera" and d.device_id not in registry.streams
    ][:count]


def served_cameras(registry: Registry, port: int) -> dict[str, str]:
    """Inventory cameras whose pull URL points at this machine's `port`: camera -> scene."""
    served = {}
    for camera_id, stream in registry.streams.items():
        url = urlsplit(stream.url)
        if url.hostname in ("127.0.0.1", "localhost") and url.port == port:
            served[camera_id] = SCENE_OF_TYPE[registry.devices[camera_id].type]
    return served


def _scripts(items: Sequence[str]) -> dict[str, str]:
    scripts: dict[str, str] = {}
    for item in items:
        camera, sep, script = item.partition("=")
        if not sep or not camera.strip():
            raise ValueError(f"--script {item!r}: expected CAMERA=KIND@START+DURATION,...")
        scripts[camera.strip()] = script
    return scripts


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m simulators.cameras",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--api", help="the service's base URL (default: from [api])")
    parser.add_argument("--cameras", type=int, default=4, help="kitchen cameras to push")
    parser.add_argument("--camera", action="append", default=[], help="push this camera")
    parser.add_argument("--script", action="append", default=[], help="CAMERA=happenings")
    parser.add_argument("--fps", type=float, default=5.0)
    parser.add_argument("--size", default="640x360", help="WIDTHxHEIGHT")
    parser.add_argument("--codec", choices=("VP8", "H264"), default="VP8")
    parser.add_argument("--truth", type=Path, help="append ground truth here (JSON lines)")
    parser.add_argument("--rtsp", action="store_true", help="also serve the RTSP cameras")
    parser.add_argument("--rtsp-port", type=int, default=8554)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


async def _run(
    fleet: CameraFleet | None, rtsp: RtspCameraServer | None, stop: asyncio.Event
) -> None:
    if rtsp is not None:
        await asyncio.to_thread(rtsp.start)
        print(f"rtsp:     serving {len(rtsp.cameras)} cameras on port {rtsp.port}", flush=True)
    try:
        if fleet is not None:
            print(f"whip:     publishing {len(fleet.scenes)} cameras", flush=True)
            await fleet.run(stop)
        else:
            await stop.wait()
    finally:
        if rtsp is not None:
            await asyncio.to_thread(rtsp.stop)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level="WARNING", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings(os.environ)
        registry = load_registry(settings.inventory_path)
        width, _, height = args.size.partition("x")
        size = (int(width), int(height))
        scripts: Mapping[str, str] = _scripts(args.script)
        pushed = list(args.camera) or pushed_cameras(registry, args.cameras)
        served = served_cameras(registry, args.rtsp_port) if args.rtsp else {}
        for camera in scripts:  # a scripted camera is played, pushed unless it is served
            if camera not in registry.devices:
                raise ValueError(f"--script names {camera!r}, which is not in the inventory")
            if camera not in served and camera not in pushed:
                if camera in registry.streams:
                    raise ValueError(f"--script {camera}: it is pulled over RTSP; add --rtsp")
                pushed.append(camera)
        plans = [CameraPlan.for_device(registry.devices[c], scripts.get(c, "")) for c in pushed]
        rtsp = None
        if args.rtsp:
            problem = gstreamer_available()
            if problem is not None:
                raise ValueError(problem)
            rtsp = RtspCameraServer(
                served,
                port=args.rtsp_port,
                scripts={c: s for c, s in scripts.items() if c in served},
                width=size[0],
                height=size[1],
                fps=args.fps,
                truth=args.truth,
                seed=args.seed,
            )
        fleet = None
        if plans:
            base = args.api or f"http://{settings.api.host}:{settings.api.port}"
            fleet = CameraFleet(
                base,
                camera_tokens(settings, [p.camera_id for p in plans]),
                plans,
                width=size[0],
                height=size[1],
                fps=args.fps,
                codec=args.codec,
                seed=args.seed,
                truth=args.truth,
            )
    except (ConfigError, InventoryError, KeyError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await _run(fleet, rtsp, stop)

    try:
        asyncio.run(run())
    except RtspServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
