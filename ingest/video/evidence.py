"""What a camera worker keeps to prove an alert: a snapshot with the region drawn, and a short
clip from seconds before the alert to seconds after, as WebM that any browser plays.

Each camera keeps a ring of its last `before_s` of small JPEG pictures (taken at the analytics
rate, a few KB each), so the seconds before an alert are there when it is raised; the seconds
after are collected as they come, then the clip is encoded (VP8) and saved. Memory per camera
is the ring: about `before_s * rate` pictures of 10 to 20 KB.
"""

from __future__ import annotations

import io
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import av
import cv2
import numpy as np
import numpy.typing as npt

from alerts.evidence import EvidenceError, EvidenceStore
from analytics.video.image import shrink
from ingest.video.frames import Frame

log = logging.getLogger(__name__)

CLIP_WIDTH = 320  # enough to see what happened; small enough to keep seconds of it per camera
_RED = (40, 40, 230)
Box = tuple[float, float, float, float]  # x, y, w, h as fractions of the picture


def picture(frame: Frame, width: int | None = None) -> npt.NDArray[np.uint8]:
    """The frame in BGR, scaled to `width` (and even height) if given.

    Decoders give planar YUV 4:2:0 in video range, which OpenCV turns into BGR (BT.601, as
    libswscale does) in a tenth of a millisecond; libswscale is as quick on one frame, but a
    new frame each time costs it a new scaler, 0.7 ms. Other formats go through libswscale."""
    image = frame.image
    size = None
    if width is not None and width < image.width:
        size = (width, max(2, round(image.height * width / image.width / 2) * 2))
    if image.format.name == "yuv420p" and image.width % 2 == 0 and image.height % 2 == 0:
        if size is not None:
            return _small_from_planes(frame, *size)
        return np.asarray(cv2.cvtColor(image.to_ndarray(), cv2.COLOR_YUV2BGR_I420), np.uint8)
    if size is None:
        return np.asarray(image.to_ndarray(format="bgr24"), np.uint8)
    small = image.reformat(width=size[0], height=size[1], format="bgr24")
    return np.asarray(small.to_ndarray(), np.uint8)


def _small_from_planes(frame: Frame, width: int, height: int) -> npt.NDArray[np.uint8]:
    """A small BGR picture made at its own size: each plane shrunk first (a few hundredths
    of a millisecond), then converted, rather than converting the whole frame."""
    y = shrink(frame.plane(0), width, height)
    chroma = np.empty((height // 2, width // 2, 2), np.uint8)
    chroma[..., 0] = shrink(frame.plane(1), width // 2, height // 2)
    chroma[..., 1] = shrink(frame.plane(2), width // 2, height // 2)
    nv12 = np.concatenate([y, chroma.reshape(height // 2, width)])
    return np.asarray(cv2.cvtColor(nv12, cv2.COLOR_YUV2BGR_NV12), np.uint8)


def annotate(image: npt.NDArray[np.uint8], box: Box | None, label: str) -> None:
    """Draw the region (the whole picture if None) and a label, in place."""
    h, w = image.shape[:2]
    thick = max(2, w // 320)
    if box is None:
        x0, y0, x1, y1 = 0, 0, w - 1, h - 1
    else:
        bx, by, bw, bh = box
        x0, y0 = round(bx * w), round(by * h)
        x1, y1 = round((bx + bw) * w), round((by + bh) * h)
    cv2.rectangle(image, (x0, y0), (x1, y1), _RED, thick)
    scale = max(0.4, w / 1280)
    (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    ty = min(h - 2, max(th + 4, y0 + th + 6))
    tx = min(max(0, x0 + 4), max(0, w - tw - 4))
    cv2.rectangle(image, (tx - 2, ty - th - 4), (tx + tw + 2, ty + base), _RED, -1)
    cv2.putText(image, label, (tx, ty - 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1)


def jpeg(image: npt.NDArray[np.uint8], quality: int) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise EvidenceError("a picture could not be encoded as JPEG")
    return bytes(data)


def encode_clip(pictures: Sequence[bytes], fps: float) -> bytes:
    """JPEG pictures, in order, as a WebM (VP8) clip at `fps`."""
    if not pictures:
        raise EvidenceError("a clip needs at least one picture")
    images: list[npt.NDArray[np.uint8]] = []
    for data in pictures:
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if decoded is None:
            raise EvidenceError("a picture of the clip could not be decoded")
        images.append(np.asarray(decoded, np.uint8))
    height, width = images[0].shape[:2]
    out_buffer = io.BytesIO()
    rate = max(1, round(fps))
    with av.open(out_buffer, "w", format="webm") as container:
        stream = container.add_stream("libvpx", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"deadline": "realtime", "cpu-used": "8", "crf": "20", "b": "0"}
        for n, shot in enumerate(images):
            if shot.shape[:2] != (height, width):  # the camera changed resolution meanwhile
                shot = np.asarray(cv2.resize(shot, (width, height)), np.uint8)
            frame = av.VideoFrame.from_ndarray(shot, format="bgr24")
            frame.pts = n
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out_buffer.getvalue()


@dataclass
class _Clip:
    name: str
    until_ms: int
    pictures: list[bytes] = field(default_factory=list)


class CameraEvidence:
    """One camera's ring of recent pictures and the clips being recorded."""

    def __init__(self, store: EvidenceStore, before_s: float, after_s: float, quality: int) -> None:
        self._store = store
        self._before_ms = round(before_s * 1000)
        self._after_ms = round(after_s * 1000)
        self._quality = quality
        self._ring: deque[tuple[int, bytes]] = deque()
        self._recording: list[_Clip] = []
        self.rate = 2.0  # pictures a second, measured from the ring

    def add(self, frame: Frame, at_ms: int, image: npt.NDArray[np.uint8] | None = None) -> None:
        """Keep a small picture of this frame (taken at the analytics rate)."""
        small = picture(frame, CLIP_WIDTH) if image is None else image
        data = jpeg(small, self._quality)
        self._ring.append((at_ms, data))
        while self._ring and self._ring[0][0] < at_ms - self._before_ms:
            self._ring.popleft()
        if len(self._ring) >= 2:
            span = self._ring[-1][0] - self._ring[0][0]
            if span > 0:
                self.rate = (len(self._ring) - 1) * 1000 / span
        for clip in self._recording:
            clip.pictures.append(data)
        self._finish(at_ms)

    def raised(self, frame: Frame, at_ms: int, kind: str, box: Box | None) -> tuple[str, ...]:
        """Save the snapshot now and start the clip; the evidence names (the clip's file
        appears `after_s` later)."""
        label = f"{kind} {frame.camera_id}"
        snapshot = picture(frame)
        annotate(snapshot, box, label)
        snap_name = self._store.name_for(frame.camera_id, at_ms, kind, "jpg")
        self._store.save(snap_name, jpeg(snapshot, self._quality))
        clip_name = self._store.name_for(frame.camera_id, at_ms, kind, "webm")
        clip = _Clip(clip_name, at_ms + self._after_ms)
        clip.pictures = [data for _, data in self._ring]
        self._recording.append(clip)
        return (snap_name, clip_name)

    def flush(self) -> None:
        """Save every clip being recorded with what it has (the camera stopped, the worker is
        stopping)."""
        self._finish(None)

    def _finish(self, now_ms: int | None) -> None:
        done = [c for c in self._recording if now_ms is None or now_ms >= c.until_ms]
        if not done:
            return
        self._recording = [c for c in self._recording if c not in done]
        for clip in done:
            try:
                self._store.save(clip.name, encode_clip(clip.pictures, self.rate))
            except (EvidenceError, av.FFmpegError, cv2.error) as exc:
                log.warning("clip %s not saved: %s", clip.name, exc)
