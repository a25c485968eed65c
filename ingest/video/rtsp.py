"""RTSP pull for cameras that cannot push: FFmpeg's RTSP client (PyAV), one thread per camera.

The thread opens the stream, decodes, and hands every frame to the camera's feed, the same
path WebRTC frames take. When the camera stops sending for `rtsp_timeout_s`, the stream ends
or cannot be opened, it waits and tries again, doubling the wait up to `reconnect_max_s`; the
wait starts over once frames flow again. Demuxing and decoding release the GIL in FFmpeg.
"""

from __future__ import annotations

import logging
import threading
import urllib.parse
from typing import Protocol

import av

from config.redact import redact
from config.settings import CamerasSettings

log = logging.getLogger(__name__)


class FrameSink(Protocol):
    camera_id: str
    reconnects: int

    def deliver(self, image: av.VideoFrame, nbytes: int = 0) -> None: ...


class RtspPuller:
    def __init__(self, url: str, sink: FrameSink, settings: CamerasSettings) -> None:
        self.url = url
        # FFmpeg's messages quote the URL, password included: every message is redacted.
        self._password = urllib.parse.urlsplit(url).password
        self.safe_url = redact(url)
        self._sink = sink
        self._settings = settings
        self._stop = threading.Event()
        self._connected = threading.Event()
        self.last_error: str | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"rtsp-{sink.camera_id}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def connected(self) -> bool:
        return self._connected.is_set()

    def _run(self) -> None:
        wait = self._settings.reconnect_initial_s
        attempts = 0
        while not self._stop.is_set():
            attempts += 1
            try:
                delivered = self._pull_once()
            except Exception as exc:  # a bug must not end the camera's pull for good
                delivered = 0
                # No traceback: its text would quote the URL, password included.
                self.last_error = self._redacted(f"unexpected {type(exc).__name__}: {exc}")
            self._connected.clear()
            if self._stop.is_set():
                return
            if delivered:
                wait = self._settings.reconnect_initial_s
            self._sink.reconnects += 1
            log.warning(
                "camera %s: RTSP %s: %s; reconnecting in %.1f s (attempt %d)",
                self._sink.camera_id,
                self.safe_url,
                self.last_error,
                wait,
                attempts,
            )
            self._stop.wait(wait)
            wait = min(wait * 2, self._settings.reconnect_max_s)

    def _redacted(self, text: str) -> str:
        return redact(text, [self._password, urllib.parse.unquote(self._password or "")])

    def _pull_once(self) -> int:
        """Pull until the stream fails; the number of frames delivered."""
        timeout = self._settings.rtsp_timeout_s
        delivered = 0
        try:
            container = av.open(
                self.url,
                options={
                    "rtsp_transport": self._settings.rtsp_transport,
                    # FFmpeg otherwise studies a 5 fps stream for 5 s before the first frame.
                    "analyzeduration": "1000000",
                },
                timeout=(timeout, timeout),
            )
        except (av.FFmpegError, OSError) as exc:
            self.last_error = self._redacted(f"cannot open: {exc}")
            return 0
        try:
            video = container.streams.video[0] if container.streams.video else None
            if video is None:
                self.last_error = "the stream has no video"
                return 0
            for packet in container.demux(video):
                if self._stop.is_set():
                    break
                nbytes = packet.size
                for frame in packet.decode():
                    self._connected.set()
                    self._sink.deliver(frame, nbytes)
                    nbytes = 0
                    delivered += 1
            else:
                self.last_error = "the stream ended"
        except (av.FFmpegError, OSError) as exc:
            self.last_error = self._redacted(f"stream failed: {exc}")
        finally:
            container.close()
        return delivered
