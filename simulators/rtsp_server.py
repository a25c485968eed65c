"""RTSP server for the camera simulator: each camera's `Scene` as live H.264.

    /usr/bin/python3 -m simulators.rtsp_server --port 8554 \\
        --camera kitchen-0001-cam-1:kitchen:lens_covered@10+5,frozen@20+5 \\
        --camera street-0001-cam-1:street --truth data/truth.jsonl

serves rtsp://127.0.0.1:8554/kitchen-0001-cam-1 and .../street-0001-cam-1, over RTP on UDP or
interleaved in the RTSP connection (TCP), whichever the client asks for. Once listening it
prints `ready rtsp://HOST:PORT` on stdout; SIGTERM or SIGINT stop it; bad arguments, a port
in use or missing GStreamer parts exit with status 2 and say why on stderr.

This runs under Debian's Python, which has GStreamer's bindings (python3-gi,
gir1.2-gst-rtsp-server-1.0, x264enc from gstreamer1.0-plugins-ugly) but not the project's
virtual environment, so it imports only the standard library, numpy, gi and
`simulators.scenes`. `simulators.rtsp.RtspCameraServer` starts it from the virtual
environment.

Scene time is wall-clock time since the server started listening (T0, taken just before the
`ready` line), the same for every camera: frame i of a camera is pushed at T0 + i / fps
whether or not anyone is watching, so a client that connects at T0 + 30 s sees scene time 30 s,
and reconnecting does not rewind the scene. The ground truth written with `--truth` uses T0
as the scene's start, so its start_ms / end_ms are the wall-clock times at which the frames
of a happening leave the server (a client sees them after the network and decoder latency).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from simulators.scenes import Scene

EXIT_ERROR = 2
# Debian packages for each thing this needs from GStreamer.
PACKAGES = {
    "gi": "python3-gi",
    "numpy": "python3-numpy",
    "GstRtspServer": "gir1.2-gst-rtsp-server-1.0",
    "appsrc": "gstreamer1.0-plugins-base",
    "x264enc": "gstreamer1.0-plugins-ugly",
    "rtph264pay": "gstreamer1.0-plugins-good",
}
ALL_PACKAGES = " ".join(dict.fromkeys(PACKAGES.values()))
_CAMERA_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class SetupError(Exception):
    """Something that stops the server from starting; the message says what to do."""


@dataclass(frozen=True)
class CameraSpec:
    camera_id: str
    kind: str
    script: str


def parse_camera(text: str) -> CameraSpec:
    """`CAMERA_ID:KIND[:SCRIPT]`, the script in `simulators.scenes.parse_script` syntax."""
    parts = text.split(":", 2)
    if len(parts) < 2 or not _CAMERA_ID_RE.match(parts[0]):
        raise argparse.ArgumentTypeError(
            f"camera {text!r}: expected CAMERA_ID:KIND[:SCRIPT], e.g. "
            "kitchen-0001-cam-1:kitchen:lens_covered@10+5,frozen@20+5 "
            "(ids: letters, digits, '.', '_', '-')"
        )
    return CameraSpec(parts[0], parts[1], parts[2] if len(parts) == 3 else "")


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python3 -m simulators.rtsp_server",
        description=(
            "Serve synthetic kitchen and street cameras as live H.264 over RTSP, one mount per "
            "camera: rtsp://HOST:PORT/CAMERA_ID. Prints 'ready rtsp://HOST:PORT' once listening."
        ),
        epilog=(
            "Scene time 0 is when the server starts listening, for every camera; --truth "
            "records give each happening's start and end in Unix ms on that basis. "
            "Example: --camera kitchen-0001-cam-1:kitchen:lens_covered@10+5,frozen@20+5 --camera "
            "street-0001-cam-1:street:vendor_stopping@30+60"
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument(
        "--port", type=int, default=8554, help="RTSP port; 0 picks a free one (default 8554)"
    )
    parser.add_argument(
        "--camera",
        action="append",
        type=parse_camera,
        default=[],
        metavar="ID:KIND[:SCRIPT]",
        help=(
            "a camera (repeat for more): KIND is kitchen or street; SCRIPT is happenings "
            "KIND@START+DURATION separated by commas, in seconds of scene time"
        ),
    )
    parser.add_argument("--width", type=int, default=640, help="frame width (default 640)")
    parser.add_argument("--height", type=int, default=360, help="frame height (default 360)")
    parser.add_argument("--fps", type=float, default=5.0, help="frame rate (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="varies every scene's details")
    parser.add_argument(
        "--exit-with-stdin",
        action="store_true",
        help="stop when stdin reaches end-of-file (the launcher died or let go of the pipe)",
    )
    parser.add_argument(
        "--truth", metavar="PATH", help="append each happening's ground truth here (JSON lines)"
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="only check that GStreamer and its plugins are usable, then exit (0 if so)",
    )
    args = parser.parse_args(argv)
    if not args.check and not args.camera:
        parser.error("give at least one --camera ID:KIND[:SCRIPT]")
    if not 0 <= args.port <= 65535:
        parser.error(f"--port {args.port} is not a TCP port")
    ids = [c.camera_id for c in args.camera]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        parser.error(f"camera ids given twice: {', '.join(duplicates)}")
    return args


def load_gstreamer() -> tuple[Any, Any, Any]:
    """(Gst, GstRtspServer, GLib), initialised, once every element needed is known to exist."""
    try:
        import gi

        gi.require_version("Gst", "1.0")
        gi.require_version("GstRtspServer", "1.0")
        from gi.repository import GLib, Gst, GstRtspServer
    except (ImportError, ValueError) as error:
        raise SetupError(
            f"GStreamer's Python bindings are not usable ({error}); "
            f"install the Debian packages {ALL_PACKAGES}"
        ) from None
    Gst.init(None)
    missing = [
        name
        for name in ("appsrc", "x264enc", "rtph264pay")
        if Gst.ElementFactory.find(name) is None
    ]
    if missing:
        packages = " ".join(dict.fromkeys(PACKAGES[name] for name in missing))
        raise SetupError(
            f"GStreamer elements missing: {', '.join(missing)}; install the Debian packages "
            f"{packages}"
        )
    return Gst, GstRtspServer, GLib


def pipeline(width: int, height: int, fps: float) -> str:
    """The media factory's launch line: raw frames in, RTP H.264 out (payloader `pay0`).

    appsrc keeps at most two frames and drops the oldest: a live camera shows what is now,
    not what queued up while the encoder was busy. Constrained baseline, as cameras send
    for browsers and WebRTC.
    """
    rate = Fraction(fps).limit_denominator(1001)
    pixels = width * height
    bitrate = min(8000, max(150, round(500 * pixels / (640 * 360))))
    key_every = max(1, round(2 * fps))
    caps = (
        f"video/x-raw,format=I420,width={width},height={height},"
        f"framerate={rate.numerator}/{rate.denominator},pixel-aspect-ratio=1/1,colorimetry=bt601"
    )
    return (
        f"( appsrc name=src is-live=true format=time max-buffers=2 "
        f"leaky-type=downstream caps={caps} "
        f"! x264enc tune=zerolatency speed-preset=ultrafast bitrate={bitrate} "
        f"key-int-max={key_every} byte-stream=true "
        f"! video/x-h264,profile=constrained-baseline "
        f"! rtph264pay name=pay0 pt=96 config-interval=1 )"
    )


class SceneClock:
    """Scene time 0 is T0; frame i is due at T0 + i / fps."""

    def __init__(self, fps: float) -> None:
        self.fps = fps
        self.start()

    def start(self) -> None:
        self.started_mono = time.monotonic()
        self.started_ms = time.time_ns() // 1_000_000

    def due_index(self) -> int:
        """The frame that is due now (the latest whose time has come)."""
        return max(0, math.floor((time.monotonic() - self.started_mono) * self.fps))

    def seconds_until(self, index: int) -> float:
        return self.started_mono + index / self.fps - time.monotonic()


class Feed:
    """Pushes one camera's frames into one prepared media's appsrc, in real time.

    Runs on the GLib main loop: one timer per frame, set for the frame's due time (not a
    fixed interval, which would drift). Late ticks skip to the frame that is due rather than
    catching up in a burst, as a camera would.
    """

    def __init__(self, gst: Any, glib: Any, appsrc: Any, scene: Scene, clock: SceneClock) -> None:
        self._gst, self._glib = gst, glib
        self._appsrc = appsrc
        self._scene = scene
        self._clock = clock
        self._next = clock.due_index()
        self._timer = 0
        self._duration = round(gst.SECOND / scene.fps)
        self.stopped = False

    def start(self) -> None:
        self._schedule()

    def stop(self, *_: Any) -> None:
        self.stopped = True
        if self._timer:
            self._glib.source_remove(self._timer)
            self._timer = 0
        self._appsrc = None

    def _schedule(self) -> None:
        delay_ms = max(0, math.ceil(self._clock.seconds_until(self._next) * 1000))
        self._timer = self._glib.timeout_add(delay_ms, self._tick)

    def _tick(self) -> bool:
        self._timer = 0
        if self.stopped:
            return False
        index = max(self._next, self._clock.due_index())
        running_ns = self._running_time_ns()
        if running_ns is not None:
            buffer = self._gst.Buffer.new_wrapped(self._scene.frame(index).tobytes())
            buffer.pts = running_ns
            buffer.duration = self._duration
            self._appsrc.emit("push-buffer", buffer)
        self._next = index + 1
        self._schedule()
        return False

    def _running_time_ns(self) -> int | None:
        """The pipeline's running time now, or None while it is not playing.

        A live source's buffers carry the running time at capture. appsrc's do-timestamp
        would stamp them, but a buffer pushed while the pipeline is on its way to PLAYING
        (clock set, base time not yet) is stamped with the clock's absolute time, far ahead,
        and the RTP sinks wait for that time while the client sees nothing. Until the
        pipeline plays nobody is watching, so those frames are dropped.
        """
        appsrc = self._appsrc
        if appsrc.current_state != self._gst.State.PLAYING:
            return None
        clock = appsrc.get_clock()
        if clock is None:
            return None
        running = int(clock.get_time()) - int(appsrc.get_base_time())
        return running if running >= 0 else None


class Camera:
    """A mount point's media factory: one shared media, re-made whenever clients return."""

    def __init__(self, gst: Any, glib: Any, rtsp: Any, scene: Scene, clock: SceneClock) -> None:
        self._gst, self._glib = gst, glib
        self.scene = scene
        self._clock = clock
        self.feeds: set[Feed] = set()
        factory = rtsp.RTSPMediaFactory()
        factory.set_launch(pipeline(scene.width, scene.height, scene.fps))
        # One pipeline and encoder for all clients of a camera, as a real camera has.
        factory.set_shared(True)
        # When the last client leaves, the media is unprepared and dropped; the next client
        # gets a fresh one (a new feed, at the current scene time, starting on a key frame).
        factory.set_suspend_mode(rtsp.RTSPSuspendMode.NONE)
        factory.set_eos_shutdown(False)
        factory.connect("media-configure", self._configure)
        self.factory = factory

    def _configure(self, factory: Any, media: Any) -> None:
        appsrc = media.get_element().get_by_name("src")
        feed = Feed(self._gst, self._glib, appsrc, self.scene, self._clock)
        self.feeds.add(feed)

        def unprepared(*_: Any) -> None:
            feed.stop()
            self.feeds.discard(feed)

        media.connect("unprepared", unprepared)
        feed.start()


def serve(args: argparse.Namespace) -> int:
    try:
        from simulators.scenes import Scene, parse_script, write_ground_truth
    except ImportError as error:
        raise SetupError(f"{error}; install the Debian package python3-numpy") from None
    scenes = []
    for spec in args.camera:
        try:
            scenes.append(
                Scene(
                    spec.camera_id,
                    spec.kind,
                    width=args.width,
                    height=args.height,
                    fps=args.fps,
                    script=parse_script(spec.script),
                    seed=args.seed,
                )
            )
        except ValueError as error:
            raise SetupError(f"camera {spec.camera_id}: {error}") from None
    gst, rtsp, glib = load_gstreamer()
    launch = pipeline(args.width, args.height, args.fps)
    try:
        gst.parse_launch(launch.strip("( )"))
    except glib.Error as error:
        raise SetupError(f"the camera pipeline does not build: {error.message}") from None

    server = rtsp.RTSPServer()
    server.set_address(args.host)
    server.set_service(str(args.port))
    clock = SceneClock(args.fps)
    mounts = server.get_mount_points()
    cameras = [Camera(gst, glib, rtsp, scene, clock) for scene in scenes]
    for camera in cameras:
        mounts.add_factory(f"/{camera.scene.camera_id}", camera.factory)
    try:
        source = server.create_source(None)
    except glib.Error as error:
        raise SetupError(f"cannot listen on {args.host}:{args.port}: {error.message}") from None
    source.attach(None)
    # Clients that vanish without TEARDOWN (UDP ones in particular) hold their media until
    # their session times out; reap those promptly.
    pool = server.get_session_pool()
    glib.timeout_add_seconds(2, lambda: pool.cleanup() >= 0)

    loop = glib.MainLoop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        glib.unix_signal_add(glib.PRIORITY_HIGH, signum, lambda *_: loop.quit() or False)
    if args.exit_with_stdin:

        def on_stdin(fd: int, condition: Any) -> bool:
            if condition & (glib.IO_HUP | glib.IO_ERR) or not os.read(fd, 4096):
                loop.quit()  # no orphan server holding its port after its launcher is gone
                return False
            return True

        glib.io_add_watch(
            sys.stdin.fileno(),
            glib.PRIORITY_DEFAULT,
            glib.IO_IN | glib.IO_HUP | glib.IO_ERR,
            on_stdin,
        )

    clock.start()  # scene time 0: now that clients can connect
    if args.truth:
        records = [r for scene in scenes for r in scene.ground_truth(clock.started_ms)]
        try:
            write_ground_truth(args.truth, records)
        except OSError as error:
            raise SetupError(f"cannot write the ground truth to {args.truth}: {error}") from None
    print(f"ready rtsp://{args.host}:{server.get_bound_port()}", flush=True)
    loop.run()
    for camera in cameras:
        for feed in list(camera.feeds):
            feed.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _arguments(argv)
    try:
        if args.check:
            load_gstreamer()
            try:
                import numpy  # noqa: F401
            except ImportError:
                raise SetupError(
                    "numpy is missing; install the Debian package python3-numpy"
                ) from None
            print("ok", flush=True)
            return 0
        return serve(args)
    except SetupError as error:
        print(f"rtsp_server: {error}", file=sys.stderr, flush=True)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
