"""The cameras one worker process owns: publishers in, frames to slots, viewers out.

    WHIP publisher --RTP--> aiortc --> FrameGate --> DecodePool (threads) --> CameraFeed.deliver
    RTSP camera  <--pull--  RtspPuller (thread) ---------------------------------'    |
                         FrameSlot (analytics, snapshot, MJPEG) <--------------------'
                         ViewerTrack (WHEP) <-- the event loop, while viewers watch

Every decoded frame goes to one place per consumer that holds only the newest frame, so a slow
consumer skips frames (counted) instead of queueing them. A publisher's frames are decoded as
receive.py decides: every frame while someone watches live, otherwise only the key frames
analytics need (receive.py says how). aiortc's own receiver queues decoded frames without bound,
so every received track is consumed at once, audio included (and video, should aiortc's
receiver not be one receive.py can take over).

A second publisher for a live camera takes over: the older session is closed. A camera that
reboots reconnects before its old session has timed out, and must not be locked out for the
30 s that ICE takes to notice; a publisher needs the camera's token either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Sequence

import av
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError
from aiortc.stats import RTCInboundRtpStreamStats, RTCTransportStats

from config.settings import CamerasSettings
from devices.models import CAMERA_TYPES
from devices.registry import Registry
from ingest.video.frames import Frame, FrameSlot
from ingest.video.receive import DecodePool, FrameGate, gate_receiver
from ingest.video.rtsp import RtspPuller
from ingest.video.sampler import FrameConsumer, FrameSampler
from ingest.video.stats import CameraStats

log = logging.getLogger(__name__)


class VideoError(Exception):
    """A video request cannot be served; the message says why."""


class UnknownCamera(VideoError):
    pass


class NotOwned(VideoError):
    """The camera belongs to another worker."""


class BadOffer(VideoError):
    pass


class NoVideo(VideoError):
    """The camera sends no video right now."""


class ViewerLimit(VideoError):
    pass


class UnknownSession(VideoError):
    pass


class NotYours(VideoError):
    """The session belongs to another viewer."""


ANY_OWNER = "*"  # an administrator: may end any viewer's session


# Bytes received on the transport, RTP packets received and lost, jitter in ms.
TransportFigures = tuple[int, int | None, int | None, float | None]


class ViewerTrack(MediaStreamTrack):
    """A live view of one camera: always the newest frame, older ones skipped."""

    kind = "video"

    def __init__(self, feed: CameraFeed) -> None:
        super().__init__()
        self._feed = feed
        self._frame: av.VideoFrame | None = None
        self._ready = asyncio.Event()
        self.skipped = 0

    def offer(self, image: av.VideoFrame) -> None:
        """Called on the event loop for every frame of the camera."""
        if self._ready.is_set():
            self.skipped += 1
        self._frame = image
        self._ready.set()

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        await self._ready.wait()
        self._ready.clear()
        if self.readyState != "live" or self._frame is None:
            raise MediaStreamError
        return self._frame

    def stop(self) -> None:
        super().stop()
        self._ready.set()  # wake recv() so that it sees the end
        self._feed.viewers.discard(self)


class CameraFeed:
    """One camera in this worker: its slot, its counters and its viewers."""

    def __init__(self, camera_id: str, site_id: str, loop: asyncio.AbstractEventLoop) -> None:
        self.camera_id = camera_id
        self.site_id = site_id
        self.slot = FrameSlot(camera_id)
        self.viewers: set[ViewerTrack] = set()
        self.mjpeg_viewers = 0
        self.joining = 0  # WHEP viewers admitted whose answer is still being made
        self.transport: str | None = None
        self.takeovers = 0
        self.reconnects = 0
        self._loop = loop
        self._lock = threading.Lock()
        self._seq = 0
        self._last_ns: int | None = None
        self._size: tuple[int, int] | None = None
        self._bytes = 0
        self._fanout_pending = False
        # Encoded frames that arrived, of them key frames, and those not decoded (event loop).
        self._arrived = 0
        self._keys = 0
        self._not_decoded = 0
        self.slot.on_taken = self._taken
        # Set by the WHIP session feeding the camera: its transport's figures.
        self.transport_stats: Callable[[], Awaitable[TransportFigures]] | None = None
        self.rtsp_connected: Callable[[], bool] | None = None
        self.publisher: PublishSession | None = None

    def deliver(self, image: av.VideoFrame, nbytes: int = 0, arrived: bool = True) -> None:
        """A decoded frame of this camera; callable from any thread. `arrived` False: its
        arrival was counted already (frame_arrived)."""
        now = time.time_ns()
        with self._lock:
            if arrived:
                self._arrived += 1
            self._seq += 1
            seq = self._seq
            self._last_ns = now
            self._size = (int(image.width), int(image.height))
            self._bytes += nbytes
        self.slot.put(Frame(self.camera_id, seq, now, image))
        if self.viewers and not self._fanout_pending:
            # One pending hand-over at most: a stalled loop must not pile up callbacks.
            self._fanout_pending = True
            self._loop.call_soon_threadsafe(self._fan_out)

    def frame_arrived(self, key: bool, decoded: bool) -> None:
        """An encoded frame put together (on the event loop); decoded or not."""
        with self._lock:
            self._arrived += 1
            self._keys += key
            self._not_decoded += not decoded

    def watched(self) -> bool:
        """Someone watches live (WHEP, MJPEG, or a WHEP viewer joining): decode every frame."""
        return bool(self.viewers) or self.mjpeg_viewers > 0 or self.joining > 0

    def wake(self) -> None:
        """A viewer joins: a publisher decoding key frames only sends one now (event loop)."""
        if self.publisher is not None:
            self.publisher.gate.key_wanted()

    def _taken(self) -> None:
        """Analytics took the newest frame (their thread): key frames only? Ask for the next."""
        publisher = self.publisher
        if publisher is not None:
            publisher.gate.key_wanted_threadsafe()

    def _fan_out(self) -> None:
        self._fanout_pending = False
        frame = self.slot.latest()
        if frame is not None:
            for viewer in list(self.viewers):
                viewer.offer(frame.image)

    @property
    def live(self) -> bool:
        return self.publisher is not None or bool(self.rtsp_connected and self.rtsp_connected())

    def viewer_count(self) -> int:
        return len(self.viewers) + self.mjpeg_viewers + self.joining

    async def stats(self) -> CameraStats:
        packets = lost = None
        jitter = None
        extra_bytes = 0
        if self.transport_stats is not None:
            with contextlib.suppress(Exception):  # a session closing under us: no figures
                extra_bytes, packets, lost, jitter = await self.transport_stats()
        with self._lock:
            seq, last_ns, size, nbytes = self._seq, self._last_ns, self._size, self._bytes
            arrived, keys, not_decoded = self._arrived, self._keys, self._not_decoded
        publisher = self.publisher
        return CameraStats(
            camera_id=self.camera_id,
            site_id=self.site_id,
            transport=self.transport,
            connected=self.live,
            frames_decoded=seq,
            frames_received=arrived,
            key_frames_received=keys,
            frames_not_decoded=not_decoded,
            key_frames_only=publisher is not None and publisher.gate.sparse,
            frames_skipped=self.slot.counts().skipped,
            bytes_received=nbytes + extra_bytes,
            packets_received=packets,
            packets_lost=lost,
            jitter_ms=jitter,
            width=size[0] if size else None,
            height=size[1] if size else None,
            last_frame_ms=None if last_ns is None else last_ns // 1_000_000,
            viewers=self.viewer_count(),
            takeovers=self.takeovers,
            reconnects=self.reconnects,
        )


# a=candidate:<foundation> <component> <transport> <priority> <address> <port> typ ...
_MDNS_CANDIDATE = re.compile(r"^a=candidate:\S+ \d+ \S+ \d+ \S+\.local \d+ ", re.IGNORECASE)


def without_mdns_candidates(sdp: str) -> str:
    """The offer without host candidates named by mDNS.

    Browsers hide their local addresses behind random `<uuid>.local` names. A server can
    rarely resolve those (aioice asks and waits a second per offer before it gives up), and
    does not need them: the browser's connectivity checks reach the candidates of our answer,
    and we reply to where they came from. Dropped, a browser's live view starts a second
    sooner."""
    return "".join(
        line for line in sdp.splitlines(keepends=True) if not _MDNS_CANDIDATE.match(line)
    )


class _PeerSession:
    """A peer connection serving one camera, ended by close() or by the peer going away."""

    def __init__(self, feed: CameraFeed) -> None:
        self.id = secrets.token_urlsafe(12)
        self.feed = feed
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self._closed = False

        @self.pc.on("connectionstatechange")
        async def _on_state() -> None:
            if self.pc.connectionState in ("failed", "closed"):
                await self.close()

    async def _take_offer(self, offer_sdp: str) -> list[RTCRtpTransceiver]:
        """Apply the offer; its video transceivers (BadOffer if it cannot be used)."""
        try:
            offer = RTCSessionDescription(without_mdns_candidates(offer_sdp), "offer")
            await self.pc.setRemoteDescription(offer)
        except Exception as exc:  # aiortc's parser fails in many ways on a bad offer
            raise BadOffer(f"the SDP offer cannot be used: {exc!r}") from exc
        video = [t for t in self.pc.getTransceivers() if t.kind == "video"]
        if not video:
            raise BadOffer("the offer has no video")
        return video

    async def _answer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        return str(self.pc.localDescription.sdp)

    def _ended(self) -> None:
        """What the session's owner must forget; called once, before the peer is closed."""

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._ended()
        await self.pc.close()


class PublishSession(_PeerSession):
    """One WHIP publisher: a peer connection whose tracks feed a camera."""

    def __init__(
        self,
        feed: CameraFeed,
        on_end: Callable[[PublishSession], None],
        pool: DecodePool,
        settings: CamerasSettings,
    ) -> None:
        super().__init__(feed)
        self._on_end = on_end
        self._tasks: set[asyncio.Task[None]] = set()
        self.gate = FrameGate(
            self,
            pool,
            asyncio.get_running_loop(),
            analytics_fps=settings.analytics_fps,
            key_frames_when_unwatched=settings.unwatched_decode == "key_frames",
        )

        @self.pc.on("track")
        def _on_track(track: MediaStreamTrack) -> None:
            # Consume every track at once: aiortc queues decoded frames without bound.
            consume = self._video(track) if track.kind == "video" else self._drain(track)
            task = asyncio.ensure_future(consume)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def answer(self, offer_sdp: str) -> str:
        video = await self._take_offer(offer_sdp)
        gate_receiver(video[0].receiver, self.gate)  # the first video track feeds the camera
        for transceiver in self.pc.getTransceivers():
            transceiver.direction = "recvonly" if transceiver.kind == "video" else "inactive"
        return await self._answer()

    # -- the FrameGate's sink: this camera, while this session publishes it -----------------

    def watched(self) -> bool:
        return self.feed.watched()

    def frame_arrived(self, key: bool, decoded: bool) -> None:
        if self.feed.publisher is self:
            self.feed.frame_arrived(key, decoded)

    def decoded(self, image: av.VideoFrame) -> None:
        if self.feed.publisher is self:
            self.feed.deliver(image, arrived=False)

    async def _video(self, track: MediaStreamTrack) -> None:
        """aiortc's own decoded frames: none once the gate took over its receiver."""
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                if isinstance(frame, av.VideoFrame) and self.feed.publisher is self:
                    self.feed.deliver(frame)

    async def _drain(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                await track.recv()

    async def transport_stats(self) -> TransportFigures:
        report = await self.pc.getStats()
        nbytes, packets, lost, jitter = 0, None, None, None
        for item in report.values():
            if isinstance(item, RTCInboundRtpStreamStats) and item.kind == "video":
                packets, lost = item.packetsReceived, item.packetsLost
                jitter = item.jitter / 90.0  # RTP video clock: 90 kHz
            elif isinstance(item, RTCTransportStats):
                nbytes = max(nbytes, item.bytesReceived)
        return nbytes, packets, lost, jitter

    def _ended(self) -> None:
        self._on_end(self)
        self.gate.close()
        for task in list(self._tasks):
            task.cancel()


class ViewSession(_PeerSession):
    """One WHEP viewer of a camera; `owner` is who may end it (besides an administrator)."""

    def __init__(self, feed: CameraFeed, owner: str, on_end: Callable[[ViewSession], None]) -> None:
        super().__init__(feed)
        self.track = ViewerTrack(feed)
        self.owner = owner
        self._on_end = on_end

    async def answer(self, offer_sdp: str) -> str:
        video = (await self._take_offer(offer_sdp))[0]
        video.sender.replaceTrack(self.track)
        video.direction = "sendonly"
        for transceiver in self.pc.getTransceivers():
            if transceiver is not video:
                transceiver.direction = "inactive"
        answer = await self._answer()
        self.feed.viewers.add(self.track)
        return answer

    def _ended(self) -> None:
        self.track.stop()
        self._on_end(self)


class CameraHub:
    """The cameras of one worker. Use as an async context manager on the worker's loop."""

    def __init__(
        self,
        settings: CamerasSettings,
        registry: Registry,
        owns: Callable[[str], bool] = lambda camera_id: True,
        consumers: Sequence[FrameConsumer] = (),
    ) -> None:
        self._settings = settings
        self._registry = registry
        self._owns = owns
        self._feeds: dict[str, CameraFeed] = {}
        self._publishers: dict[str, PublishSession] = {}
        self._views: dict[str, ViewSession] = {}
        self._pullers: dict[str, RtspPuller] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        # Analytics take frames at analytics_fps, each consumer on its own sampler thread.
        self._samplers = [
            FrameSampler(self._slots, settings.analytics_fps, consumer) for consumer in consumers
        ]
        self._decoders = DecodePool(settings.decode_threads)

    async def __aenter__(self) -> CameraHub:
        self._loop = asyncio.get_running_loop()
        for camera_id, stream in sorted(self._registry.streams.items()):
            if self._owns(camera_id):
                self.start_pull(camera_id, stream.url)
        for sampler in self._samplers:
            sampler.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.gather(*(asyncio.to_thread(s.stop) for s in self._samplers))
        for publisher in list(self._publishers.values()):
            await publisher.close()
        for view in list(self._views.values()):
            await view.close()
        await asyncio.gather(*(asyncio.to_thread(p.stop) for p in self._pullers.values()))
        await asyncio.to_thread(self._decoders.close)

    # -- pulled cameras --------------------------------------------------------------------

    def start_pull(self, camera_id: str, url: str) -> None:
        """Pull the camera over RTSP from `url` (no-op if it is pulled already); with several
        nodes, the node that owns it asks when it takes it over."""
        if camera_id in self._pullers:
            return
        feed = self.feed(camera_id)
        feed.transport = "rtsp"
        puller = RtspPuller(url, feed, self._settings)
        feed.rtsp_connected = puller.connected
        self._pullers[camera_id] = puller
        puller.start()

    async def stop_pull(self, camera_id: str) -> bool:
        """Stop pulling the camera (another node took it over); False if it was not pulled."""
        puller = self._pullers.pop(camera_id, None)
        if puller is None:
            return False
        await asyncio.to_thread(puller.stop)
        feed = self._feeds.get(camera_id)
        if feed is not None and feed.transport == "rtsp":
            feed.transport = None
            feed.rtsp_connected = None
        return True

    # -- cameras ---------------------------------------------------------------------------

    def feed(self, camera_id: str) -> CameraFeed:
        """The camera's feed, made on first use; UnknownCamera / NotOwned otherwise."""
        found = self._feeds.get(camera_id)
        if found is not None:
            return found
        device = self._registry.devices.get(camera_id)
        if device is None or device.type not in CAMERA_TYPES:
            raise UnknownCamera(f"no camera {camera_id!r} in the inventory")
        if not self._owns(camera_id):
            raise NotOwned(f"camera {camera_id!r} belongs to another worker")
        assert self._loop is not None, "use CameraHub as an async context manager"
        made = CameraFeed(camera_id, device.site_id, self._loop)
        self._feeds[camera_id] = made
        return made

    def _slots(self) -> list[FrameSlot]:
        return [feed.slot for feed in list(self._feeds.values())]

    def slot(self, camera_id: str) -> FrameSlot:
        return self.feed(camera_id).slot

    async def stats(self) -> list[CameraStats]:
        return [await feed.stats() for feed in list(self._feeds.values())]

    # -- WHIP ------------------------------------------------------------------------------

    async def publish(self, camera_id: str, offer_sdp: str) -> tuple[str, str]:
        """Accept a WHIP offer: (session id, SDP answer). A live publisher is replaced."""
        feed = self.feed(camera_id)
        if feed.transport == "rtsp":
            raise BadOffer(f"camera {camera_id!r} is pulled over RTSP; it cannot also push")
        session = PublishSession(feed, self._publisher_ended, self._decoders, self._settings)
        try:
            answer = await session.answer(offer_sdp)
        except BaseException:
            await session.close()
            raise
        old = feed.publisher
        feed.publisher = session
        feed.transport = "whip"
        feed.transport_stats = session.transport_stats
        self._publishers[session.id] = session
        if old is not None:
            feed.takeovers += 1
            log.info("camera %s: a new publisher takes over from session %s", camera_id, old.id)
            await old.close()
        return session.id, answer

    async def unpublish(self, camera_id: str, session_id: str) -> None:
        session = self._publishers.get(session_id)
        if session is None or session.feed.camera_id != camera_id:
            raise UnknownSession(f"no publishing session {session_id!r} for {camera_id!r}")
        await session.close()

    def _publisher_ended(self, session: PublishSession) -> None:
        self._publishers.pop(session.id, None)
        if session.feed.publisher is session:
            session.feed.publisher = None
            session.feed.transport_stats = None

    # -- WHEP and MJPEG viewers -------------------------------------------------------------

    def _admit_viewer(self, feed: CameraFeed) -> None:
        if not feed.live or feed.slot.latest() is None:
            raise NoVideo(f"camera {feed.camera_id!r} sends no video right now")
        cap = self._settings.viewers_per_camera
        if feed.viewer_count() >= cap:
            raise ViewerLimit(
                f"camera {feed.camera_id!r} already has {cap} viewers, its limit; try later"
            )
        total = sum(f.viewer_count() for f in self._feeds.values())
        if total >= self._settings.viewers_per_worker:
            raise ViewerLimit(
                f"this worker already serves {total} viewers, its limit "
                f"(cameras.viewers_per_worker); try later"
            )

    async def view(self, camera_id: str, offer_sdp: str, owner: str) -> tuple[str, str]:
        """Accept a WHEP offer: (session id, SDP answer).

        The place is taken before the answer is made (which awaits), so that offers arriving
        together cannot all pass the caps."""
        feed = self.feed(camera_id)
        self._admit_viewer(feed)
        feed.joining += 1
        feed.wake()
        try:
            session = ViewSession(feed, owner, self._view_ended)
            try:
                answer = await session.answer(offer_sdp)
            except BaseException:
                await session.close()
                raise
        finally:
            feed.joining -= 1
        self._views[session.id] = session
        return session.id, answer

    async def unview(self, camera_id: str, session_id: str, owner: str) -> None:
        """End a viewing session; only its owner, or ANY_OWNER, may."""
        session = self._views.get(session_id)
        if session is None or session.feed.camera_id != camera_id:
            raise UnknownSession(f"no viewing session {session_id!r} for {camera_id!r}")
        if owner not in (session.owner, ANY_OWNER):
            raise NotYours(f"viewing session {session_id!r} was started by someone else")
        await session.close()

    def _view_ended(self, session: ViewSession) -> None:
        self._views.pop(session.id, None)

    def admit_mjpeg(self, camera_id: str) -> tuple[CameraFeed, Callable[[], None]]:
        """Count an MJPEG viewer against the caps; call the release (once or more) when done."""
        feed = self.feed(camera_id)
        self._admit_viewer(feed)
        feed.mjpeg_viewers += 1
        feed.wake()
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                feed.mjpeg_viewers -= 1

        return feed, release
