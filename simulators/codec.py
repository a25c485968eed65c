"""Scenes as a real camera would deliver them: through an H.264 encoder and back.

Detectors are judged on real footage, which is compressed: blocking, smoothed noise, frames
repeated exactly between key frames when nothing moves. Running the synthetic scenes through
libx264 at a camera's bitrate and decoding them again gives the analytics that picture, not a
clean render. `decoded(scene, ...)` yields (frame index, luma) at the analytics' rate.
"""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction
from typing import Any

import av
import numpy as np
import numpy.typing as npt

from simulators.scenes import Scene

Luma = npt.NDArray[np.uint8]


def decoded(
    scene: Scene,
    seconds: float,
    *,
    bitrate_kbps: int = 512,
    gop_s: float = 2.0,
    every: int = 1,
    start_s: float = 0.0,
    colour: bool = False,
) -> Iterator[Any]:
    """Encode the scene's frames from `start_s` for `seconds` with libx264 (a camera's usual
    settings: baseline-like, key frame every `gop_s`), decode them, and yield every `every`th
    frame's (scene frame index, luma), or with `colour` (index, luma, BGR)."""
    fps = round(scene.fps)
    if abs(scene.fps - fps) > 1e-9 or fps <= 0:
        raise ValueError(f"the scene's frame rate {scene.fps} must be a whole number")
    encoder = av.CodecContext.create("libx264", "w")
    encoder.width, encoder.height = scene.width, scene.height
    encoder.pix_fmt = "yuv420p"
    encoder.time_base = Fraction(1, fps)
    encoder.framerate = Fraction(fps, 1)
    encoder.bit_rate = bitrate_kbps * 1000
    encoder.gop_size = max(1, round(gop_s * fps))
    encoder.options = {"preset": "veryfast", "tune": "zerolatency", "bf": "0"}
    decoder = av.CodecContext.create("h264", "r")
    first = round(start_s * fps)
    count = round(seconds * fps)
    indices = iter(range(first, first + count))

    def out(packets: list[av.Packet[Any]]) -> Iterator[Any]:
        for packet in packets:
            for image in decoder.decode(packet):
                index = next(indices)
                if (index - first) % every == 0:
                    plane = image.planes[0]
                    rows = np.frombuffer(memoryview(plane), np.uint8).reshape(-1, plane.line_size)
                    luma = rows[: image.height, : image.width].copy()
                    if colour:
                        yield index, luma, image.to_ndarray(format="bgr24")
                    else:
                        yield index, luma

    for n in range(first, first + count):
        frame = av.VideoFrame.from_ndarray(scene.frame(n), format="yuv420p")
        frame.pts = n
        yield from out(encoder.encode(frame))
    yield from out(encoder.encode(None))
