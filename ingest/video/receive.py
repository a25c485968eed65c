"""A publisher's video from RTP packets to decoded frames, decoding only what someone needs.

aiortc's receiver decodes every frame, in a thread of its own per track, and hands each frame
to the event loop, which hands it on to the camera's slot. This takes over from where aiortc's
jitter buffer has put an encoded frame together:

    SRTP, RTP, RTCP, NACK, REMB (aiortc) --> jitter buffer --> FrameGate --> DecodePool --> feed
                                                                 `--> not decoded (counted)

Every frame is decoded while someone watches the camera live (a WHEP or MJPEG viewer, or one
joining). Otherwise only analytics need frames, at `cameras.analytics_fps`; when that is well
below the stream's frame rate (`analytics_fps * SPARSE_MARGIN <=` the rate its RTP time stamps
say) and
`cameras.unwatched_decode` is "key_frames", the gate asks the publisher for a key frame (RTCP
PLI) each time analytics took the camera's newest frame, decodes the key frames and skips the
frames between: those depend on the frames before them (VP8, H.264), so once one is skipped
nothing can be decoded until the next key frame. A viewer who joins asks for a key frame at
once and gets every frame from it on.

A publisher that does not answer key frame requests is not left undecoded: the gate skips
frames only after a requested key frame came (within `KEY_WAIT_S`), goes back to decoding
every frame when one does not come, and asks again every `KEY_RETRY_S` while it waits.

The decoders run on a few threads shared by the worker's cameras (`cameras.decode_threads`),
each camera always on the same thread, and hand decoded frames straight to the camera's feed
(thread-safe), not through the event loop. The REMB estimator gets a quicker rate counter with
the same figures (QuickRateCounter).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import av
from aiortc import RTCRtpReceiver
from aiortc import clock as aiortc_clock
from aiortc.codecs import depayload, get_decoder, is_rtx
from aiortc.jitterbuffer import JitterFrame
from aiortc.rate import RateBucket, RateCounter, RemoteBitrateEstimator
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtcrtpreceiver import StreamStatistics
from aiortc.rtp import RTCP_PSFB_APP, RtcpPsfbPacket, RtpPacket, pack_remb_fci, unwrap_rtx

log = logging.getLogger(__name__)

KEY_RETRY_S = 1.0  # a key frame asked for and not come: ask again after this long
KEY_WAIT_S = 2.0  # ... and decode every frame again meanwhile, if it has not come after this
# Key frames only if analytics_fps * this <= the stream's frame rate. A key frame costs several
# inter frames: measured with the simulator's kitchen scenes (640x360, VP8), key frames asked
# for at 2 fps of a 5 fps stream tripled the bit rate (150 to 485 kbit/s) and cost as much to
# decode as all 5 frames; the receive path's cost grows with the bit rate. Worth it from about
# four times analytics_fps (8 fps and up at the default 2 fps; IP cameras send 15 to 25).
SPARSE_MARGIN = 4.0

# aiortc's receiver keeps its state in name-mangled attributes; the receive path below uses
# them as aiortc 1.16 names them, and falls back to aiortc's own path when one is missing.
_PRIVATE = "_RTCRtpReceiver__"
_NEEDED = (
    "active_ssrc",
    "codecs",
    "jitter_buffer",
    "nack_generator",
    "remote_bitrate_estimator",
    "remote_streams",
    "rtcp_ssrc",
    "rtx_ssrc",
    "timestamp_mapper",
)


def is_key_frame(codec: str, data: bytes) -> bool:
    """Whether an encoded frame (as aiortc depayloads it) can be decoded on its own."""
    if not data:
        return False
    name = codec.lower()
    if name == "vp8":
        return not data[0] & 0x01  # the frame tag's P bit: 0 for a key frame (RFC 6386 9.1)
    if name == "h264":  # Annex B: an IDR slice (NAL type 5) somewhere in the access unit
        at = data.find(b"\x00\x00\x01")
        while at >= 0 and at + 3 < len(data):
            if data[at + 3] & 0x1F == 5:
                return True
            at = data.find(b"\x00\x00\x01", at + 3)
        return False
    return False


class QuickRateCounter(RateCounter):
    """aiortc's RateCounter (the REMB estimator's incoming bit rate), with the same figures
    from a queue of the milliseconds that had packets instead of a bucket per millisecond:
    aiortc's emptied the window one millisecond at a time in Python (some 200 steps for each
    burst of a 5 fps stream) and made 1000 buckets at each reset; that was a third of the
    receive path's Python time per packet."""

    def __init__(self, window_size: int, scale: int = 8000) -> None:
        self._entries: deque[list[int]] = deque()  # [ms, count, value], oldest first
        super().__init__(window_size, scale)

    def add(self, value: int, now_ms: int) -> None:
        if self._origin_ms is None:
            self._origin_ms = now_ms
        else:
            self._erase_old(now_ms)
        entries = self._entries
        if entries and entries[-1][0] == now_ms:
            entries[-1][1] += 1
            entries[-1][2] += value
        else:
            entries.append([now_ms, 1, value])
        self._total.count += 1
        self._total.value += value

    def reset(self) -> None:
        self._entries.clear()
        self._buckets = []
        self._origin_index = 0
        self._origin_ms = None
        self._total = RateBucket()

    def _erase_old(self, now_ms: int) -> None:
        new_origin_ms = now_ms - self._window_size + 1
        assert self._origin_ms is not None
        if self._origin_ms >= new_origin_ms:
            return
        entries = self._entries
        while entries and entries[0][0] < new_origin_ms:
            _, count, value = entries.popleft()
            self._total.count -= count
            self._total.value -= value
        self._origin_ms = new_origin_ms


def quick_estimator(estimator: RemoteBitrateEstimator) -> None:
    """Give a REMB estimator the quick rate counter (before its first packet)."""
    old = estimator.incoming_bitrate
    estimator.incoming_bitrate = QuickRateCounter(old._window_size, old._scale)


class FrameSink(Protocol):
    """Where a gate's camera is: what it needs, and where decoded frames go."""

    def watched(self) -> bool:
        """Someone watches live: every frame must be decoded."""

    def frame_arrived(self, key: bool, decoded: bool) -> None:
        """Counts one encoded frame put together (on the event loop)."""

    def decoded(self, image: av.VideoFrame) -> None:
        """A decoded frame (on a decoder thread)."""


@dataclass(eq=False)
class DecodeStream:
    """One publisher's decoder: used only by its lane's thread, in the order frames came."""

    lane: int
    on_frame: Callable[[av.VideoFrame], None]
    on_error: Callable[[], None]
    closed: bool = False
    _decoder: Any = field(default=None, repr=False)
    _codec: str | None = None

    def decode(self, codec: RTCRtpCodecParameters, encoded: JitterFrame) -> None:
        if self.closed:
            return
        if codec.name != self._codec:
            self._decoder = get_decoder(codec)
            self._codec = codec.name
        try:
            frames = self._decoder.decode(encoded)
        except av.FFmpegError as exc:
            log.warning("a %s frame could not be decoded: %s", codec.name, exc)
            self.on_error()
            return
        for frame in frames:
            if isinstance(frame, av.VideoFrame) and not self.closed:
                self.on_frame(frame)

    def close(self) -> None:
        self.closed = True


class DecodePool:
    """A few decoder threads shared by a worker's cameras."""

    def __init__(self, threads: int) -> None:
        if threads < 1:
            raise ValueError("a decode pool needs at least one thread")
        self._queues: list[queue.SimpleQueue[tuple[DecodeStream, Any, JitterFrame] | None]] = [
            queue.SimpleQueue() for _ in range(threads)
        ]
        self._threads: list[threading.Thread] = []
        self._next = 0
        self._lock = threading.Lock()

    def stream(
        self, on_frame: Callable[[av.VideoFrame], None], on_error: Callable[[], None]
    ) -> DecodeStream:
        with self._lock:
            if not self._threads:
                self._start()
            lane = self._next
            self._next = (self._next + 1) % len(self._queues)
        return DecodeStream(lane, on_frame, on_error)

    def submit(self, stream: DecodeStream, codec: Any, encoded: JitterFrame) -> None:
        self._queues[stream.lane].put((stream, codec, encoded))

    def _start(self) -> None:
        for i, jobs in enumerate(self._queues):
            thread = threading.Thread(
                target=self._run, args=(jobs,), name=f"video-decode-{i}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    @staticmethod
    def _run(jobs: queue.SimpleQueue[tuple[DecodeStream, Any, JitterFrame] | None]) -> None:
        while (job := jobs.get()) is not None:
            stream, codec, encoded = job
            try:
                stream.decode(codec, encoded)
            except Exception:  # one camera's bad frame must not stop the others' decoding
                log.exception("decoding failed")

    def close(self, timeout: float = 10.0) -> None:
        for jobs in self._queues:
            jobs.put(None)
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []


class FrameGate:
    """Decides, frame by frame, which of a publisher's frames are decoded. Event loop only,
    except `key_wanted_threadsafe`."""

    def __init__(
        self,
        sink: FrameSink,
        pool: DecodePool,
        loop: asyncio.AbstractEventLoop,
        *,
        analytics_fps: float,
        key_frames_when_unwatched: bool,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._sink = sink
        self._loop = loop
        self._analytics_fps = analytics_fps
        self._allowed = key_frames_when_unwatched
        self._stream = pool.stream(sink.decoded, self._decode_failed)
        self._pool = pool
        self._send_pli: Callable[[], None] | None = None
        self._decode_error = False
        self._stale = False  # a frame was skipped: nothing decodes until the next key frame
        self._key_asked_at: float | None = None
        self._answers_pli = False  # a key frame asked for came: frames may be skipped
        self._last_stamp: int | None = None
        self._last_key = 0.0
        self._interval: float | None = None  # mean time between frames, s (EWMA)
        self.sparse = False  # decoding key frames only, as of the newest frame
        self.key_requests = 0

    # -- what the receive path calls --------------------------------------------------------

    def bind(self, send_pli: Callable[[], None]) -> None:
        self._send_pli = send_pli

    def pli_due(self) -> bool:
        """A decode failed since the last packet: the picture is lost until a key frame."""
        if self._decode_error:
            self._decode_error = False
            self._key_asked(self._clock())
            return True
        return False

    def frame(self, codec: RTCRtpCodecParameters, encoded: JitterFrame) -> None:
        now = self._clock()
        # The camera's frame rate from its RTP time stamps: frames that arrive bunched (a
        # busy loop, a late packet) do not make it look faster than it is.
        if self._last_stamp is not None and encoded.timestamp > self._last_stamp:
            gap = (encoded.timestamp - self._last_stamp) / codec.clockRate
            self._interval = gap if self._interval is None else 0.9 * self._interval + 0.1 * gap
        self._last_stamp = encoded.timestamp
        key = is_key_frame(codec.name, encoded.data)
        self.sparse = self._sparse_wanted()
        asked = self._key_asked_at
        if key:
            if asked is not None:
                self._answers_pli = True
            self._key_asked_at = None
            self._last_key = now
            self._stale = False
            self._decode(codec, encoded, key)
            return
        if asked is not None and now - asked > KEY_WAIT_S:
            self._answers_pli = False  # not answered: decode every frame (from a key frame)
        if self.sparse and self._answers_pli:
            self._stale = True
        if self._stale:
            self._sink.frame_arrived(key=False, decoded=False)
            if asked is not None:
                if now - asked > KEY_RETRY_S:
                    self.request_key_frame()  # lost, or not answered yet
            elif not self.sparse or now - self._last_key >= 2.0 / self._analytics_fps:
                self.request_key_frame()  # watched again; or nobody took a frame for long
            return
        self._decode(codec, encoded, key)
        if self.sparse and (asked is None or now - asked > KEY_RETRY_S):
            self.request_key_frame()  # does the publisher answer? Frames are skipped once it did

    # -- what the camera calls ----------------------------------------------------------------

    def key_wanted(self) -> None:
        """Analytics took the newest frame, or a viewer joined: the next key frame, please."""
        if self._key_asked_at is None and (self.sparse or self._stale):
            self.request_key_frame()

    def key_wanted_threadsafe(self) -> None:
        if self.sparse:
            self._loop.call_soon_threadsafe(self.key_wanted)

    def request_key_frame(self) -> None:
        self._key_asked(self._clock())
        if self._send_pli is not None:
            self._send_pli()

    def close(self) -> None:
        self._stream.close()

    # -- inside ---------------------------------------------------------------------------------

    def _key_asked(self, now: float) -> None:
        self._key_asked_at = now
        self.key_requests += 1

    def _sparse_wanted(self) -> bool:
        if not self._allowed or self._interval is None or self._sink.watched():
            return False
        return self._analytics_fps * SPARSE_MARGIN * self._interval <= 1.0

    def _decode(self, codec: RTCRtpCodecParameters, encoded: JitterFrame, key: bool) -> None:
        self._sink.frame_arrived(key=key, decoded=True)
        self._pool.submit(self._stream, codec, encoded)

    def _decode_failed(self) -> None:  # on a decoder thread; read on the loop
        self._decode_error = True


class GatedReceiver(RTCRtpReceiver):
    """aiortc's receiver, from the jitter buffer on: encoded frames go to a FrameGate instead
    of a decoder thread of its own. Everything before (SRTP, RTP statistics for the receiver
    reports, NACK, REMB) is aiortc's, as aiortc 1.16 does it."""

    _gate: FrameGate
    _media_ssrc: int | None  # the SSRC of the video (not its retransmissions): PLIs name it

    async def _handle_rtp_packet(self, packet: RtpPacket, arrival_time_ms: int) -> None:
        if not self._enabled:
            return
        state = self.__dict__
        rtcp_ssrc = state[_PRIVATE + "rtcp_ssrc"]
        estimator = state[_PRIVATE + "remote_bitrate_estimator"]
        if estimator is not None and packet.extensions.abs_send_time is not None:
            remb = estimator.add(
                abs_send_time=packet.extensions.abs_send_time,
                arrival_time_ms=arrival_time_ms,
                payload_size=len(packet.payload) + packet.padding_size,
                ssrc=packet.ssrc,
            )
            if rtcp_ssrc is not None and remb is not None:
                await self._send_rtcp(
                    RtcpPsfbPacket(
                        fmt=RTCP_PSFB_APP, ssrc=rtcp_ssrc, media_ssrc=0, fci=pack_remb_fci(*remb)
                    )
                )
        codecs = state[_PRIVATE + "codecs"]
        codec = codecs.get(packet.payload_type)
        if codec is None:
            return
        streams = state[_PRIVATE + "remote_streams"]
        stats = streams.get(packet.ssrc)
        if stats is None:
            stats = streams[packet.ssrc] = StreamStatistics(codec.clockRate)
        stats.add(packet)
        if is_rtx(codec):
            original_ssrc = state[_PRIVATE + "rtx_ssrc"].get(packet.ssrc)
            apt = codec.parameters.get("apt")
            if (
                original_ssrc is None
                or len(packet.payload) < 2
                or not isinstance(apt, int)
                or apt not in codecs
            ):
                return
            packet = unwrap_rtx(packet, payload_type=apt, ssrc=original_ssrc)
            codec = codecs[apt]
        nack = state[_PRIVATE + "nack_generator"]
        if nack is not None and nack.add(packet):
            await self._send_rtcp_nack(packet.ssrc, sorted(nack.missing))
        try:
            packet._data = depayload(codec, packet.payload) if packet.payload else b""  # type: ignore[attr-defined]
        except ValueError:
            return
        pli, encoded = state[_PRIVATE + "jitter_buffer"].add(packet)
        gate = self._gate
        if gate.pli_due():
            pli = True
        if pli:
            await self._send_rtcp_pli(packet.ssrc)
        if encoded is not None:
            self._media_ssrc = packet.ssrc
            state[_PRIVATE + "active_ssrc"][packet.ssrc] = aiortc_clock.current_datetime()
            encoded.timestamp = state[_PRIVATE + "timestamp_mapper"].map(encoded.timestamp)
            gate.frame(codec, encoded)


def gate_receiver(receiver: RTCRtpReceiver, gate: FrameGate) -> bool:
    """Route a video receiver's frames through `gate`; False (aiortc's own path stays) when
    this aiortc keeps its receiver's state otherwise than expected."""
    if type(receiver) is not RTCRtpReceiver or any(
        _PRIVATE + name not in receiver.__dict__ for name in _NEEDED
    ):
        log.warning("aiortc's receiver is not as expected: every frame is decoded")
        return False
    estimator = receiver.__dict__[_PRIVATE + "remote_bitrate_estimator"]
    if isinstance(estimator, RemoteBitrateEstimator) and hasattr(
        estimator.incoming_bitrate, "_window_size"
    ):
        quick_estimator(estimator)
    receiver.__class__ = GatedReceiver
    assert isinstance(receiver, GatedReceiver)
    receiver._gate = gate
    receiver._media_ssrc = None
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()

    def send_pli() -> None:
        ssrc = receiver._media_ssrc
        if ssrc is not None:
            task = loop.create_task(receiver._send_rtcp_pli(ssrc))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    gate.bind(send_pli)
    return True
