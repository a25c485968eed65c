"""A simulated camera that pushes its picture over WHIP (RFC 9725), as a real WebRTC camera does.

    SceneTrack (frames at the camera's rate) --> aiortc --> POST /whip/{camera_id} --> ingest

The publisher reconnects with backoff when the session fails or is refused for a reason
that can pass (a restarting worker); a refused token is reported and retried slowly, since
an operator may install a new one.

With several service nodes, a node that does not own the camera answers 307 with the owner's
endpoint (RFC 9725 section 4.5); the publisher follows it itself, because HTTP clients drop
the token on a redirect to another origin. A session is taken for dead when the receiver's
RTCP reports stop for `silent_after_s` (a node that died sends none); the publisher then
offers again, trying its endpoints in turn when one cannot be reached.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import av
import httpx
import numpy as np
import numpy.typing as npt
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)

log = logging.getLogger(__name__)

Render = Callable[[int], npt.NDArray[np.uint8]]  # frame index -> I420 picture
MAX_REDIRECTS = 5
_CLOCK = 90_000


class WhipError(Exception):
    """The WHIP endpoint refused the offer; the message carries its status and reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"WHIP endpoint answered {status}: {reason}")
        self.status = status


@dataclass(frozen=True)
class SceneClock:
    """When a camera's frame 0 was due: scene time runs on across reconnections."""

    loop_time: float
    wall_ms: int

    @classmethod
    def now(cls) -> SceneClock:
        return cls(asyncio.get_running_loop().time(), time.time_ns() // 1_000_000)


class SceneTrack(MediaStreamTrack):
    """Frames of a rendered scene at a fixed rate, paced by the event loop's clock.

    Frame i is due at clock + i / fps; a track made after a reconnection carries on from the
    frame due now, so the picture (and the ground truth) keeps to the scene's timeline.
    """

    kind = "video"

    def __init__(self, render: Render, fps: float, clock: SceneClock | None = None) -> None:
        super().__init__()
        self._render = render
        self._fps = fps
        self.clock = clock
        self._index: int | None = None

    async def recv(self) -> av.VideoFrame:
        loop = asyncio.get_running_loop()
        if self.clock is None:
            self.clock = SceneClock.now()
        if self._index is None:
            self._index = max(0, math.ceil((loop.time() - self.clock.loop_time) * self._fps))
        delay = self.clock.loop_time + self._index / self._fps - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)  # pacing at the camera's frame rate
        frame = av.VideoFrame.from_ndarray(self._render(self._index), format="yuv420p")
        frame.pts = round(self._index * _CLOCK / self._fps)
        frame.time_base = fractions.Fraction(1, _CLOCK)
        self._index += 1
        return frame


@dataclass
class PublisherStats:
    connects: int = 0
    failures: int = 0
    last_error: str | None = None


class WhipPublisher:
    """Publishes one camera to a WHIP endpoint, reconnecting until stopped."""

    def __init__(
        self,
        endpoint: str | Sequence[str],
        token: str,
        track: Callable[[], MediaStreamTrack],
        *,
        codec: str = "VP8",
        retry_initial_s: float = 0.5,
        retry_max_s: float = 10.0,
        client: httpx.AsyncClient | None = None,
        silent_after_s: float = 6.0,
    ) -> None:
        """`endpoint`: the camera's WHIP URL, or the same URL at each of several nodes."""
        if codec not in ("VP8", "H264"):
            raise ValueError(f"codec must be VP8 or H264, not {codec!r}")
        self.endpoints = [endpoint] if isinstance(endpoint, str) else list(endpoint)
        if not self.endpoints:
            raise ValueError("a publisher needs at least one endpoint")
        self.endpoint = self.endpoints[0]
        self._silent_after_s = silent_after_s
        self._token = token
        self._make_track = track
        self._codec = codec
        self._retry = (retry_initial_s, retry_max_s)
        self._client = client
        self._pc: RTCPeerConnection | None = None
        self._location: str | None = None
        self.stats = PublisherStats()
        self.connected = asyncio.Event()

    async def connect(self) -> None:
        """One session: offer, answer; raises WhipError or httpx errors."""
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self._pc = pc
        transceiver = pc.addTransceiver(self._make_track(), direction="sendonly")
        wanted = f"video/{self._codec}"
        codecs = RTCRtpSender.getCapabilities("video").codecs
        transceiver.setCodecPreferences([c for c in codecs if c.mimeType == wanted])
        await pc.setLocalDescription(await pc.createOffer())
        client = self._client or httpx.AsyncClient(timeout=30)
        try:
            response, url = await self._offer(client, pc.localDescription.sdp)
        except httpx.TransportError:
            await pc.close()
            self._next_endpoint()  # that node cannot be reached: try another next time
            raise
        finally:
            if self._client is None:
                await client.aclose()
        if response.status_code != 201:
            await pc.close()
            raise WhipError(response.status_code, reason(response))
        self._location = str(httpx.URL(url).join(response.headers["location"]))
        await pc.setRemoteDescription(RTCSessionDescription(response.text, "answer"))
        self.stats.connects += 1

    async def _offer(self, client: httpx.AsyncClient, sdp: str) -> tuple[httpx.Response, str]:
        """POST the offer, following the nodes' redirects to the camera's owner."""
        url = self.endpoint
        headers = {"Content-Type": "application/sdp", "Authorization": f"Bearer {self._token}"}
        for _ in range(MAX_REDIRECTS):
            response = await client.post(url, content=sdp, headers=headers)
            if response.status_code not in (307, 308) or "location" not in response.headers:
                return response, url
            url = str(httpx.URL(url).join(response.headers["location"]))
        raise WhipError(response.status_code, f"more than {MAX_REDIRECTS} redirects")

    def _next_endpoint(self) -> None:
        index = self.endpoints.index(self.endpoint)
        self.endpoint = self.endpoints[(index + 1) % len(self.endpoints)]

    async def run(self, stop: asyncio.Event) -> None:
        """Publish until `stop` is set, reconnecting with backoff."""
        wait = self._retry[0]
        while not stop.is_set():
            try:
                await self.connect()
                await self._hold(stop)
                wait = self._retry[0]
            except (WhipError, httpx.HTTPError, ConnectionError, OSError) as exc:
                self.stats.failures += 1
                self.stats.last_error = str(exc)
                log.warning("%s: %s; retrying in %.1f s", self.endpoint, exc, wait)
                self.connected.clear()
                await self._end_session()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), wait)
                wait = min(wait * 2, self._retry[1])
        await self.close()

    async def _hold(self, stop: asyncio.Event) -> None:
        """Keep the session until `stop`; ConnectionError if it ends first."""
        pc = self._pc
        assert pc is not None
        ended = asyncio.Event()

        @pc.on("connectionstatechange")
        def _changed() -> None:
            if pc.connectionState == "connected":
                self.connected.set()
            if pc.connectionState in ("failed", "closed"):
                ended.set()

        await _first(stop.wait(), ended.wait(), self._until_silent(pc))
        if not stop.is_set():
            raise ConnectionError("the WebRTC session ended")

    async def _until_silent(self, pc: RTCPeerConnection) -> None:
        """Returns when the receiver has sent no RTCP report for `silent_after_s`: a receiver
        that died says nothing, and ICE would take half a minute to notice."""
        last = time.monotonic()
        seen: object = None
        while True:
            await asyncio.sleep(1.0)  # the watchdog's period
            stamps = []
            for sender in pc.getSenders():
                report = await sender.getStats()
                stamps += [s.timestamp for s in report.values() if s.type == "remote-inbound-rtp"]
            newest = max(stamps, default=None)
            if newest != seen or pc.connectionState != "connected":
                seen, last = newest, time.monotonic()
            elif time.monotonic() - last > self._silent_after_s:
                silent = self._silent_after_s
                log.warning("%s: no RTCP from the receiver for %.0f s", self.endpoint, silent)
                return

    async def _end_session(self) -> None:
        if self._pc is not None:
            await self._pc.close()
            self._pc = None

    async def close(self) -> None:
        """End the session: DELETE its resource (RFC 9725 section 4.2), close the peer."""
        location, self._location = self._location, None
        await delete_session(location, self._token)
        self.connected.clear()
        await self._end_session()


async def _first(*aws: object) -> None:
    tasks = [asyncio.ensure_future(a) for a in aws]  # type: ignore[call-overload]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


async def delete_session(location: str | None, token: str) -> None:
    """DELETE a WHIP or WHEP session resource; the server may already have ended it."""
    if location is None:
        return
    with contextlib.suppress(httpx.HTTPError):
        async with httpx.AsyncClient(timeout=5) as client:
            await client.delete(location, headers={"Authorization": f"Bearer {token}"})


def reason(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = None
    return str(detail or response.text[:200] or response.reason_phrase)
