"""WHIP publishers received by GStreamer's webrtcbin: the receive path in C, Python once a frame.

    publisher --ICE, DTLS, SRTP--> webrtcbin (libnice; rtpbin: RTCP, jitter buffer, NACK, PLI)
        --> rtpvp8depay | rtph264depay ! h264parse --> vp8dec | avdec_h264 --> appsink
              `-- probe: counts each encoded frame (key or not)          `-- CameraFeed.deliver

aiortc's receive path runs SRTP, RTP, RTCP, the jitter buffer, NACK and REMB in Python, a few
dozen steps per packet, on the worker's event loop: with bench/camera_streams.py that was more
CPU than decoding itself. Here Python runs twice per frame, on GStreamer's streaming threads:
a pad probe counts the encoded frame, the appsink's callback hands the decoded picture to the
camera's feed. Each session is a pipeline of its own; nothing of it runs on the event loop
but the offer and answer.

Every frame is decoded: `cameras.unwatched_decode = "key_frames"` needs aiortc's receiver
(`cameras.webrtc_receiver = "aiortc"`), whose FrameGate decides frame by frame (receive.py).

webrtcbin has no consent freshness checks (RFC 7675) in GStreamer 1.22: a publisher that
vanishes without a DELETE leaves its connection "connected". A session whose publisher has sent
no frame for `cameras.offline_after_s` (the camera is offline by then) ends itself, as aiortc's
does when its ICE consent expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import av
import numpy as np
import numpy.typing as npt

from ingest.video.frames import Picture

log = logging.getLogger(__name__)

GATHER_TIMEOUT_S = 10.0  # ICE candidates of the answer
RTCP_INTERVAL_S = 1.0  # receiver reports: publishers take a silent receiver for a dead one
LATENCY_MS = 100  # jitter buffer: long enough for a retransmission on a LAN or a city fibre
# The decoders, in the order tried, and what goes before them.
_DECODERS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "VP8": (("rtpvp8depay",), ("vp8dec",)),
    "H264": (("rtph264depay", "h264parse"), ("avdec_h264", "openh264dec")),
}


class GstUnavailable(RuntimeError):
    """GStreamer's WebRTC parts are not installed; the message says which packages to add."""


class GstOfferError(ValueError):
    """The offer cannot be answered; the message says why."""


_Gst: Any = None
_GstSdp: Any = None
_GstWebRTC: Any = None
_init_lock = threading.Lock()


def gstreamer() -> tuple[Any, Any, Any]:
    """(Gst, GstSdp, GstWebRTC), initialised once; GstUnavailable when they cannot be."""
    global _Gst, _GstSdp, _GstWebRTC
    with _init_lock:
        if _Gst is None:
            try:
                import gi

                gi.require_version("Gst", "1.0")
                gi.require_version("GstSdp", "1.0")
                gi.require_version("GstWebRTC", "1.0")
                from gi.repository import Gst, GstSdp, GstWebRTC
            except (ImportError, ValueError) as exc:
                raise GstUnavailable(
                    "cameras.webrtc_receiver = 'gstreamer' needs PyGObject and GStreamer's "
                    "WebRTC introspection data (Debian: gir1.2-gst-plugins-bad-1.0); "
                    f"or set cameras.webrtc_receiver = 'aiortc': {exc}"
                ) from exc
            Gst.init(None)
            missing = [
                name
                for name in ("webrtcbin", "nicesrc", "dtlssrtpdec", "rtpvp8depay", "vp8dec")
                if Gst.ElementFactory.find(name) is None
            ]
            if missing:
                raise GstUnavailable(
                    f"GStreamer lacks {', '.join(missing)} (Debian: gstreamer1.0-plugins-bad "
                    "gstreamer1.0-plugins-good gstreamer1.0-nice); or set "
                    "cameras.webrtc_receiver = 'aiortc'"
                )
            _Gst, _GstSdp, _GstWebRTC = Gst, GstSdp, GstWebRTC
    return _Gst, _GstSdp, _GstWebRTC


def decodable_codecs() -> list[str]:
    """The video codecs this machine's GStreamer can depayload and decode."""
    Gst, _, _ = gstreamer()
    return [
        codec
        for codec, (before, decoders) in _DECODERS.items()
        if all(Gst.ElementFactory.find(name) for name in before)
        and any(Gst.ElementFactory.find(name) for name in decoders)
    ]


def offered_video(offer_sdp: str) -> list[int]:
    """Indexes of the offer's video m-lines; GstOfferError if it cannot be parsed or has none."""
    _, GstSdp, _ = gstreamer()
    result, message = GstSdp.SDPMessage.new_from_text(offer_sdp)
    if result != GstSdp.SDPResult.OK or message.medias_len() == 0:
        raise GstOfferError("the SDP offer cannot be parsed, or has no media")
    video = [i for i in range(message.medias_len()) if message.get_media(i).get_media() == "video"]
    if not video:
        raise GstOfferError("the offer has no video")
    return video


class Camera(Protocol):
    """Where a session's frames go (hub.CameraFeed), while it is the camera's publisher."""

    camera_id: str

    @property
    def publisher(self) -> object: ...

    def frame_arrived(self, key: bool, decoded: bool) -> None: ...

    def deliver(
        self, image: av.VideoFrame | Picture, nbytes: int = 0, arrived: bool = True
    ) -> None: ...


class GstPublishSession:
    """One WHIP publisher: a webrtcbin pipeline feeding a camera (see the module's docstring).

    The camera is called on streaming threads, while this session is its publisher;
    `on_end(session)` once, on the event loop, before the pipeline stops."""

    key_frames_only = False

    def __init__(
        self, feed: Camera, on_end: Callable[[GstPublishSession], None], silent_after_s: float
    ) -> None:
        Gst, _, GstWebRTC = gstreamer()
        self.id = secrets.token_urlsafe(12)
        self.feed = feed
        self.camera_id = feed.camera_id
        self._on_end = on_end
        self._silent_after_s = silent_after_s
        self._loop = asyncio.get_running_loop()
        self._closed = False
        self._closing: asyncio.Task[None] | None = None
        self._last_frame = time.monotonic()
        self._watchdog: asyncio.Task[None] | None = None
        self._gathered = asyncio.Event()
        self._warned: set[str] = set()
        self._pipeline = Gst.Pipeline.new(f"whip-{self.camera_id}-{self.id}")
        self._webrtc = Gst.ElementFactory.make("webrtcbin")
        self._webrtc.set_property("bundle-policy", GstWebRTC.WebRTCBundlePolicy.MAX_BUNDLE)
        self._webrtc.set_property("latency", LATENCY_MS)
        self._pipeline.add(self._webrtc)
        self._webrtc.connect("pad-added", self._pad_added)
        self._webrtc.connect("notify::ice-gathering-state", self._gathering_changed)
        self._webrtc.connect("notify::connection-state", self._connection_changed)
        self._pipeline.get_bus().set_sync_handler(self._bus_message)
        self._pipeline.set_state(Gst.State.PLAYING)

    # -- offer and answer (event loop) ------------------------------------------------------

    async def answer(self, offer_sdp: str) -> str:
        """The SDP answer to a publisher's offer, with our ICE candidates; GstOfferError if
        the offer cannot be used."""
        Gst, GstSdp, GstWebRTC = gstreamer()
        video = offered_video(offer_sdp)
        codecs = decodable_codecs()
        preferences = Gst.Caps.from_string(
            ";".join(
                f"application/x-rtp,media=video,encoding-name={codec},clock-rate=90000,"
                "rtcp-fb-nack=(boolean)true,rtcp-fb-nack-pli=(boolean)true"
                for codec in codecs
            )
        )
        _, message = GstSdp.SDPMessage.new_from_text(offer_sdp)
        for index in range(message.medias_len()):
            media = message.get_media(index).get_media()
            if index == video[0]:
                direction = GstWebRTC.WebRTCRTPTransceiverDirection.RECVONLY
                caps = preferences
            else:  # other video, audio, data: answered, but nothing flows
                direction = GstWebRTC.WebRTCRTPTransceiverDirection.INACTIVE
                caps = Gst.Caps.from_string(f"application/x-rtp,media={media}")
            transceiver = self._webrtc.emit("add-transceiver", direction, caps)
            if index == video[0] and transceiver.find_property("do-nack") is not None:
                transceiver.set_property("do-nack", True)  # lost packets are asked for again
        offer = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.OFFER, message)
        await self._call("set-remote-description", offer)
        promise = await self._call("create-answer", None)
        reply = promise.get_reply()
        answer = reply.get_value("answer") if reply is not None else None
        if answer is None:
            raise GstOfferError(f"no answer to the offer: {self._error_of(reply)}")
        chosen = answer.sdp.as_text()
        if not any(f"{codec}/90000" in chosen for codec in codecs):
            raise GstOfferError(f"the offer has no video codec this worker decodes ({codecs})")
        await self._call("set-local-description", answer)
        del reply, promise  # the answer is the promise's: used until here
        self._set_rtcp_interval()
        try:
            await asyncio.wait_for(self._gathered.wait(), GATHER_TIMEOUT_S)
        except TimeoutError as exc:
            raise GstOfferError(f"no ICE candidates within {GATHER_TIMEOUT_S:g} s") from exc
        local = self._webrtc.get_property("local-description")
        self._last_frame = time.monotonic()
        self._watchdog = asyncio.ensure_future(self._until_silent())
        return str(local.sdp.as_text())

    async def _call(self, signal: str, argument: Any) -> Any:
        """Emit one of webrtcbin's promise-taking signals and wait for its promise."""
        Gst, _, _ = gstreamer()
        done = self._loop.create_future()

        def settled(promise: Any) -> None:
            self._loop.call_soon_threadsafe(_settle, done, promise)

        promise = Gst.Promise.new_with_change_func(settled)
        self._webrtc.emit(signal, argument, promise)
        settled_promise = await done
        reply = settled_promise.get_reply()
        if reply is not None and reply.has_field("error"):
            raise GstOfferError(f"{signal}: {self._error_of(reply)}")
        return settled_promise

    @staticmethod
    def _error_of(reply: Any) -> str:
        if reply is None or not reply.has_field("error"):
            return "webrtcbin gave no reason"
        error = reply.get_value("error")
        return str(getattr(error, "message", error))

    def _set_rtcp_interval(self) -> None:
        """Receiver reports every second or so, not every 5 s (RFC 3550's minimum): a
        publisher must tell a live receiver from a dead one quickly."""
        Gst, _, _ = gstreamer()
        for element in _elements(self._webrtc):
            factory = element.get_factory()
            if factory is not None and factory.get_name() == "rtpbin":
                session = element.emit("get-internal-session", 0)
                if session is not None:
                    session.set_property("rtcp-min-interval", int(RTCP_INTERVAL_S * Gst.SECOND))

    # -- frames (streaming threads) ---------------------------------------------------------

    def _pad_added(self, _webrtc: Any, pad: Any) -> None:
        Gst, _, _ = gstreamer()
        caps = pad.get_current_caps()
        structure = caps.get_structure(0) if caps is not None else None
        if structure is None or structure.get_string("media") != "video":
            self._link(pad, [Gst.ElementFactory.make("fakesink")])
            return
        codec = (structure.get_string("encoding-name") or "").upper()
        if codec not in _DECODERS:
            log.warning("camera %s: %s video cannot be decoded here", self.camera_id, codec)
            self._link(pad, [Gst.ElementFactory.make("fakesink")])
            return
        before, decoders = _DECODERS[codec]
        chain = [Gst.ElementFactory.make(name) for name in before]
        depay = chain[0]
        # Packets lost: ask for a key frame, and show no broken pictures until it comes.
        for flag in ("request-keyframe", "wait-for-keyframe"):
            if depay.find_property(flag) is not None:
                depay.set_property(flag, True)
        decoder = next(e for e in (Gst.ElementFactory.make(n) for n in decoders) if e is not None)
        if decoder.find_property("threads") is not None:
            decoder.set_property("threads", 1)  # many cameras share the cores
        if decoder.find_property("max-errors") is not None:
            decoder.set_property("max-errors", -1)  # a bad frame is skipped, not fatal
        convert = Gst.ElementFactory.make("videoconvert")  # passes I420 through untouched
        sink = Gst.ElementFactory.make("appsink")
        sink.set_property("caps", Gst.Caps.from_string("video/x-raw,format=I420"))
        sink.set_property("sync", False)
        sink.set_property("emit-signals", True)
        sink.set_property("max-buffers", 1)
        sink.set_property("drop", True)
        sink.connect("new-sample", self._new_sample)
        chain[-1].get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, self._encoded)
        self._link(pad, [*chain, decoder, convert, sink])

    def _link(self, pad: Any, elements: list[Any]) -> None:
        for element in elements:
            self._pipeline.add(element)
        for upstream, downstream in itertools.pairwise(elements):
            upstream.link(downstream)
        for element in elements:
            element.sync_state_with_parent()
        pad.link(elements[0].get_static_pad("sink"))

    def _encoded(self, _pad: Any, info: Any) -> Any:
        Gst, _, _ = gstreamer()
        buffer = info.get_buffer()
        if buffer is not None and self.feed.publisher is self:
            self.feed.frame_arrived(not buffer.has_flags(Gst.BufferFlags.DELTA_UNIT), True)
        return Gst.PadProbeReturn.OK

    def _new_sample(self, sink: Any) -> Any:
        Gst, _, _ = gstreamer()
        sample = sink.emit("pull-sample")
        if sample is None:
            return Gst.FlowReturn.OK
        self._last_frame = time.monotonic()
        if self.feed.publisher is not self:
            return Gst.FlowReturn.OK  # a newer publisher took over; this one is ending
        structure = sample.get_caps().get_structure(0)
        width, height = structure.get_value("width"), structure.get_value("height")
        if sample.get_buffer().get_size() < i420_size(width, height) or min(width, height) < 2:
            if "size" not in self._warned:
                self._warned.add("size")
                log.warning("camera %s: a %dx%d frame is not I420", self.camera_id, width, height)
            return Gst.FlowReturn.OK
        self.feed.deliver(GstPicture(sample, width, height), arrived=False)
        return Gst.FlowReturn.OK

    # -- the session's end ------------------------------------------------------------------

    def _gathering_changed(self, webrtc: Any, _spec: Any) -> None:
        _, _, GstWebRTC = gstreamer()
        if webrtc.get_property("ice-gathering-state") == GstWebRTC.WebRTCICEGatheringState.COMPLETE:
            self._loop.call_soon_threadsafe(self._gathered.set)

    def _connection_changed(self, webrtc: Any, _spec: Any) -> None:
        _, _, GstWebRTC = gstreamer()
        state = webrtc.get_property("connection-state")
        if state in (
            GstWebRTC.WebRTCPeerConnectionState.FAILED,
            GstWebRTC.WebRTCPeerConnectionState.CLOSED,
        ):
            self._end_soon(f"connection {state.value_nick}")

    def _bus_message(self, _bus: Any, message: Any) -> Any:
        Gst, _, _ = gstreamer()
        if message.type == Gst.MessageType.ERROR:
            error, _debug = message.parse_error()
            source = message.src.get_name() if message.src is not None else "?"
            self._end_soon(f"{source}: {error.message}")
        return Gst.BusSyncReply.DROP  # nobody reads the bus: it must not fill up

    def _end_soon(self, why: str) -> None:
        """Called from any thread: the session ends on the event loop."""

        def end() -> None:
            if not self._closed and self._closing is None:
                log.info("camera %s: publishing session %s ends: %s", self.camera_id, self.id, why)
                self._closing = asyncio.ensure_future(self.close())

        with contextlib.suppress(RuntimeError):  # a closed loop: the session went with it
            self._loop.call_soon_threadsafe(end)

    async def _until_silent(self) -> None:
        while True:
            silent = time.monotonic() - self._last_frame
            if silent > self._silent_after_s:
                self._end_soon(f"no video for {silent:.0f} s")
                return
            await asyncio.sleep(min(5.0, self._silent_after_s - silent + 0.1))  # watchdog period

    async def transport_stats(self) -> tuple[int, int | None, int | None, float | None]:
        """Bytes, RTP packets received and lost, jitter in ms, as webrtcbin counts them."""
        _, _, GstWebRTC = gstreamer()
        promise = await self._call("get-stats", None)
        report = promise.get_reply()
        nbytes, packets, lost, jitter = 0, None, None, None
        for i in range(report.n_fields() if report is not None else 0):
            item = report.get_value(report.nth_field_name(i))
            if not hasattr(item, "get_value"):
                continue
            if item.get_value("type") == GstWebRTC.WebRTCStatsType.INBOUND_RTP and (
                item.get_string("kind") in (None, "video")
            ):
                packets = int(item.get_value("packets-received"))
                lost = int(item.get_value("packets-lost"))
                jitter = float(item.get_value("jitter")) * 1000.0
                if item.has_field("bytes-received"):
                    nbytes = max(nbytes, int(item.get_value("bytes-received")))
        return nbytes, packets, lost, jitter

    def key_wanted(self) -> None:
        """Every frame is decoded: a key frame is never waited for."""

    def key_wanted_threadsafe(self) -> None:
        """Every frame is decoded: a key frame is never waited for."""

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._on_end(self)
        if self._watchdog is not None and self._watchdog is not asyncio.current_task():
            self._watchdog.cancel()
        Gst, _, _ = gstreamer()
        # Stopping joins the streaming threads, whose callbacks may wait for the GIL.
        await asyncio.to_thread(self._pipeline.set_state, Gst.State.NULL)
        self._pipeline.get_bus().set_sync_handler(None)


def _settle(done: asyncio.Future[Any], promise: Any) -> None:
    if not done.done():
        done.set_result(promise)


def _elements(bin_: Any) -> list[Any]:
    """Every element inside a bin, however deep."""
    Gst, _, _ = gstreamer()
    found: list[Any] = []
    iterator = bin_.iterate_recurse()
    while True:
        result, element = iterator.next()
        if result == Gst.IteratorResult.OK:
            found.append(element)
        elif result == Gst.IteratorResult.RESYNC:
            iterator.resync()
            found.clear()
        else:
            return found


def i420_size(width: int, height: int) -> int:
    """Bytes of an I420 picture as GStreamer lays it out by default: rows padded to 4 bytes,
    the chroma planes after an even number of luma rows."""
    rows = (height + 1) & ~1
    return ((width + 3) & ~3) * rows + 2 * ((((width + 1) // 2) + 3) & ~3) * (rows // 2)


def i420_array(data: bytes, width: int, height: int) -> npt.NDArray[np.uint8]:
    """GStreamer's I420 layout (see i420_size) as one (h * 3 / 2, w) array, Y then U then V,
    w and h rounded down to even: an odd size loses its last row or column."""
    even_w, even_h = width - width % 2, height - height % 2
    stride_y = (width + 3) & ~3
    stride_c = ((width + 1) // 2 + 3) & ~3
    rows = (height + 1) & ~1
    size_y, size_c = stride_y * rows, stride_c * (rows // 2)
    raw = np.frombuffer(data, np.uint8, count=size_y + 2 * size_c)
    if stride_y == width == even_w and stride_c * 2 == width and rows == height:
        return raw.reshape(-1, width)  # no padding: the common case, no copy
    y = raw[:size_y].reshape(rows, stride_y)[:even_h, :even_w]
    u = raw[size_y : size_y + size_c].reshape(-1, stride_c)[: even_h // 2, : even_w // 2]
    v = raw[size_y + size_c :].reshape(-1, stride_c)[: even_h // 2, : even_w // 2]
    return np.concatenate([y.ravel(), u.ravel(), v.ravel()]).reshape(-1, even_w)


class GstPicture:
    """A decoded picture still in GStreamer's buffer (a Picture): copied out on first use."""

    __slots__ = ("_frame", "_i420", "_lock", "_sample", "_size", "height", "width")

    def __init__(self, sample: Any, width: int, height: int) -> None:
        self._sample: Any = sample
        self._size = (width, height)
        self.width, self.height = width - width % 2, height - height % 2
        self._i420: npt.NDArray[np.uint8] | None = None
        self._frame: av.VideoFrame | None = None
        self._lock = threading.Lock()

    def i420(self) -> npt.NDArray[np.uint8]:
        with self._lock:
            if self._i420 is None:
                buffer = self._sample.get_buffer()
                self._i420 = i420_array(buffer.extract_dup(0, buffer.get_size()), *self._size)
                self._sample = None  # the decoder may have its buffer back
            return self._i420

    def video_frame(self) -> av.VideoFrame:
        planes = self.i420()
        with self._lock:
            if self._frame is None:
                self._frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
            return self._frame
