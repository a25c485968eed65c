"""Synthetic kitchen and street camera pictures, rendered straight to I420 frames.

A `Scene` is one camera's picture as a pure function of the frame number: the same camera id,
kind, size, frame rate, script and seed always give the same bytes. Scripted `Happening`s
(someone walking through, the lens covered, a vendor stopping in a no-vending zone, a flame
outside the stove...) change the picture for a while, and `ground_truth` says where and when,
so that video analytics can be scored against it.

Only the standard library and numpy (1.24 or later) are imported: `simulators.rtsp_server`
runs this under Debian's Python, which has GStreamer but not the virtual environment.

A frame is a uint8 array of shape (height * 3 // 2, width): the Y plane, then U and V at half
resolution, back to back, which is what PyAV's `VideoFrame.from_ndarray(a, format="yuv420p")`
and GStreamer's `video/x-raw,format=I420` take. Colours are BT.601, limited range.

Rendering is kept to about a millisecond a frame at 640x360: backgrounds (with their sensor
noise) are drawn once, and a frame is a copy of one of them with a few sprites pasted on.
"""

from __future__ import annotations

import hashlib
import json
import math
import operator
import os
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "BENIGN_KINDS",
    "HAPPENING_KINDS",
    "SCENE_KINDS",
    "Happening",
    "Scene",
    "parse_script",
    "write_ground_truth",
]

HAPPENING_KINDS: tuple[str, ...] = (
    "person_walking",
    "night_blob",
    "lens_covered",
    "blurred",
    "frozen",
    "knocked_aside",
    "vendor_stopping",
    "flame_outside_stove",
    "burner_on",
    # What must not raise anything: ordinary life in front of a camera.
    "lights_dimmed",
    "ir_switch",
    "cloud",
    "close_pedestrian",
    "steam",
    "car_leaving",
)
# Happenings that are no violation and no camera fault: analytics must stay quiet through them.
BENIGN_KINDS: frozenset[str] = frozenset(
    {
        "person_walking",
        "lights_dimmed",
        "ir_switch",
        "cloud",
        "close_pedestrian",
        "steam",
        "car_leaving",
    }
)
SCENE_KINDS: tuple[str, ...] = ("kitchen", "street")
# Happenings that only make sense in one kind of scene.
ONLY_IN: Mapping[str, str] = {
    "vendor_stopping": "street",
    "flame_outside_stove": "kitchen",
    "burner_on": "kitchen",
    "steam": "kitchen",
    "car_leaving": "street",
}

Plane = npt.NDArray[np.uint8]
Mask = npt.NDArray[np.bool_]
Colour = tuple[int, int, int]  # Y, U, V
Box = tuple[int, int, int, int]  # x, y, w, h in pixels

_NOISE_VARIANTS = 4
_OSD_BITS = 24
_BLUR_K = 15
_DART_S = 0.5  # how long the night mover takes for each straight dash
_FADE_S = 4.0  # how long a cloud takes to pass over the sun, and to move on
_STEAM_RISE = 0.08  # steam rises this share of the frame's height a second
_MIN_WIDTH, _MIN_HEIGHT = 64, 48
_BLACK: Colour = (16, 128, 128)


def _yuv(r: int, g: int, b: int) -> Colour:
    """BT.601 limited-range Y, U, V of an RGB colour."""
    y = 16 + (65.738 * r + 129.057 * g + 25.064 * b) / 256
    u = 128 + (-37.945 * r - 74.494 * g + 112.439 * b) / 256
    v = 128 + (112.439 * r - 94.154 * g - 18.285 * b) / 256
    return (_clamp(y), _clamp(u), _clamp(v))


def _clamp(value: float) -> int:
    return min(255, max(0, round(value)))


# Flame colours: orange and yellow with strong V (red) chroma and low U (blue).
_FLAME_OUTER: Colour = (165, 86, 196)
_FLAME_CORE: Colour = (226, 96, 178)
_GAS_FLAME: Colour = (110, 200, 100)  # a burner's small blue flame


@dataclass(frozen=True)
class Happening:
    """Something scripted in a scene, in scene time (seconds since the stream's first frame)."""

    kind: str
    start_s: float
    duration_s: float

    def __post_init__(self) -> None:
        if self.kind not in HAPPENING_KINDS:
            raise ValueError(
                f"unknown happening kind {self.kind!r}; valid kinds: {', '.join(HAPPENING_KINDS)}"
            )
        if not (math.isfinite(self.start_s) and self.start_s >= 0):
            raise ValueError(f"{self.kind}: start {self.start_s!r} s must be 0 or later")
        if not (math.isfinite(self.duration_s) and self.duration_s > 0):
            raise ValueError(f"{self.kind}: duration {self.duration_s!r} s must be positive")

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s


_ITEM_RE = re.compile(r"^(?P<kind>[^@]+)@(?P<start>[^+]+)\+(?P<duration>.+)$")
_TIME_RE = re.compile(r"^(?P<number>\d+(?:\.\d+)?)(?P<unit>[smh]?)$")
_UNIT_S = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_script(text: str) -> tuple[Happening, ...]:
    """'lens_covered@10+5,person_walking@2+8' -> happenings; empty text -> ().

    Times are seconds of scene time, bare or with a unit like the fault scripts (`90s`, `2m`).
    """
    happenings = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        match = _ITEM_RE.match(item)
        if match is None:
            raise ValueError(
                f"bad happening {item!r}: expected KIND@START+DURATION, e.g. lens_covered@10+5; "
                f"valid kinds: {', '.join(HAPPENING_KINDS)}"
            )
        kind = match["kind"].strip()
        if kind not in HAPPENING_KINDS:
            raise ValueError(
                f"bad happening {item!r}: unknown kind {kind!r}; "
                f"valid kinds: {', '.join(HAPPENING_KINDS)}"
            )
        times = []
        for part in (match["start"], match["duration"]):
            time_match = _TIME_RE.match(part.strip())
            if time_match is None:
                raise ValueError(
                    f"bad happening {item!r}: {part.strip()!r} is not a time like 10, 2.5 or 2m"
                )
            times.append(float(time_match["number"]) * _UNIT_S[time_match["unit"]])
        try:
            happenings.append(Happening(kind, times[0], times[1]))
        except ValueError as error:
            raise ValueError(f"bad happening {item!r}: {error}") from None
    return tuple(happenings)


def write_ground_truth(
    path: str | os.PathLike[str], records: Iterable[Mapping[str, object]]
) -> None:
    """Append the records to `path` as JSON lines (UTF-8), in one write so that processes
    appending to the same file do not interleave their lines."""
    text = "".join(json.dumps(dict(r), ensure_ascii=False) + "\n" for r in records)
    with open(path, "a", encoding="utf-8") as file:
        file.write(text)


def _key(*parts: object) -> int:
    """A 64-bit seed from the parts' text, equal across processes (unlike the salted `hash`)."""
    text = "\x1f".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little")


class _Layer:
    """Y at full resolution, U and V at half, and which pixels are opaque (for sprites).

    Shapes are given in full-resolution pixels and tested at each pixel's centre, at both
    resolutions, so that chroma follows luma edges as closely as 4:2:0 allows.
    """

    def __init__(
        self, width: int, height: int, colour: Colour = _BLACK, opaque: bool = True
    ) -> None:
        self.width, self.height = width, height
        self.y: Plane = np.full((height, width), colour[0], np.uint8)
        self.u: Plane = np.full((height // 2, width // 2), colour[1], np.uint8)
        self.v: Plane = np.full((height // 2, width // 2), colour[2], np.uint8)
        self.alpha: Mask = np.full((height, width), opaque, np.bool_)
        self.alpha_c: Mask = np.full((height // 2, width // 2), opaque, np.bool_)

    def rect(self, x: float, y: float, w: float, h: float, colour: Colour) -> None:
        self.shape(x, y, w, h, colour, lambda yy, xx: np.ones(np.broadcast(yy, xx).shape, bool))

    def ellipse(self, x: float, y: float, w: float, h: float, colour: Colour) -> None:
        cx, cy, rx, ry = x + w / 2, y + h / 2, w / 2, h / 2
        self.shape(
            x, y, w, h, colour, lambda yy, xx: ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
        )

    def flame(
        self, x: float, y: float, w: float, h: float, colour: Colour, lean: float = 0.0
    ) -> None:
        """A teardrop: round at the bottom, narrowing to a tip (moved `lean` * w) at the top."""
        rx = w / 2
        cy = y + h - rx  # centre of the round bottom
        cx = x + rx

        def inside(yy: npt.NDArray[np.float64], xx: npt.NDArray[np.float64]) -> Mask:
            up = np.clip((cy - yy) / max(cy - y, 1.0), 0.0, 1.0)  # 0 at the bulb, 1 at the tip
            centre = cx + lean * w * up**2
            bulb = ((xx - cx) / rx) ** 2 + ((yy - cy) / rx) ** 2 <= 1
            tongue = (yy <= cy) & (np.abs(xx - centre) <= rx * (1 - up) ** 1.3)
            return np.asarray(bulb | tongue, dtype=np.bool_)

        self.shape(x, y, w, h, colour, inside)

    def shape(
        self,
        x: float,
        y: float,
        w: float,
        h: float,
        colour: Colour,
        inside: Callable[[npt.NDArray[np.float64], npt.NDArray[np.float64]], Mask],
    ) -> None:
        for planes, alpha, scale in (
            ((self.y,), self.alpha, 1),
            ((self.u, self.v), self.alpha_c, 2),
        ):
            rows, cols = alpha.shape
            x0, x1 = max(0, math.floor(x / scale)), min(cols, math.ceil((x + w) / scale))
            y0, y1 = max(0, math.floor(y / scale)), min(rows, math.ceil((y + h) / scale))
            if x0 >= x1 or y0 >= y1:
                continue
            yy = (np.arange(y0, y1, dtype=np.float64)[:, None] + 0.5) * scale
            xx = (np.arange(x0, x1, dtype=np.float64)[None, :] + 0.5) * scale
            mask = inside(yy, xx) & (yy >= y) & (yy < y + h) & (xx >= x) & (xx < x + w)
            values = colour[:1] if scale == 1 else colour[1:]
            for plane, value in zip(planes, values, strict=True):
                plane[y0:y1, x0:x1][mask] = value
            alpha[y0:y1, x0:x1] |= mask

    def lines(self, rows: slice, cols: slice, colour: Colour) -> None:
        """Thin grey lines (grout, paving joints) as strided luma slices; being grey, they
        leave the chroma as it is."""
        self.y[rows, cols] = colour[0]

    def darkened(self) -> _Layer:
        """How this layer looks at night, unlit."""
        night = _Layer(self.width, self.height, opaque=False)
        night.y[:] = np.clip(16 + (self.y.astype(np.float32) - 16) * 0.13 + 4, 0, 255).astype(
            np.uint8
        )
        for src, dst in ((self.u, night.u), (self.v, night.v)):
            dst[:] = np.clip(128 + (src.astype(np.float32) - 128) * 0.3, 0, 255).astype(np.uint8)
        night.alpha[:] = self.alpha
        night.alpha_c[:] = self.alpha_c
        return night


def _paste(planes: tuple[Plane, Plane, Plane], sprite: _Layer, x: int, y: int) -> None:
    """Draw the sprite's opaque pixels with its top left corner at (x, y), clipped to the frame.

    The corner is rounded down to even coordinates so that its chroma lines up with its luma.
    """
    x -= x % 2
    y -= y % 2
    fy, fu, fv = planes
    height, width = fy.shape
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + sprite.width, width), min(y + sprite.height, height)
    if x0 >= x1 or y0 >= y1:
        return
    sx, sy = x0 - x, y0 - y
    w, h = x1 - x0, y1 - y0
    np.copyto(
        fy[y0:y1, x0:x1],
        sprite.y[sy : sy + h, sx : sx + w],
        where=sprite.alpha[sy : sy + h, sx : sx + w],
    )
    cx0, cy0, csx, csy, cw, ch = x0 // 2, y0 // 2, sx // 2, sy // 2, w // 2, h // 2
    where = sprite.alpha_c[csy : csy + ch, csx : csx + cw]
    np.copyto(
        fu[cy0 : cy0 + ch, cx0 : cx0 + cw], sprite.u[csy : csy + ch, csx : csx + cw], where=where
    )
    np.copyto(
        fv[cy0 : cy0 + ch, cx0 : cx0 + cw], sprite.v[csy : csy + ch, csx : csx + cw], where=where
    )


class _BoxBlur:
    """Blurs planes of one shape in place with a k x k box, edges extended.

    Window sums by doubling (sums of 2, 4, 8 neighbours, then 15 = 8 + 4 + 2 + 1) take a few
    array additions, several times faster than running sums; uint16 holds 15 * 15 * 255. The
    work arrays are allocated once: fresh half-megabyte arrays each frame come from the
    allocator as new pages, and faulting those in cost more than the arithmetic.
    """

    def __init__(self, shape: tuple[int, int], k: int) -> None:
        height, width = shape
        self.k, self.r = k, k // 2
        ph, pw = height + 2 * self.r, width + 2 * self.r
        self.padded = np.empty((ph, pw), np.uint16)
        sizes = [2**n for n in range(1, k.bit_length()) if 2**n <= k]
        self.across = {m: np.empty((ph, pw - m + 1), np.uint16) for m in sizes}
        self.rows = np.empty((ph, width), np.uint16)
        self.down = {m: np.empty((ph - m + 1, width), np.uint16) for m in sizes}
        self.out = np.empty((height, width), np.uint16)

    def __call__(self, plane: Plane) -> None:
        r, k = self.r, self.k
        height, width = plane.shape
        padded = self.padded
        padded[r : r + height, r : r + width] = plane
        padded[:r, r : r + width] = plane[0]
        padded[r + height :, r : r + width] = plane[-1]
        padded[:, :r] = padded[:, r : r + 1]
        padded[:, r + width :] = padded[:, r + width - 1 : r + width]
        _window_sums(padded, k, 1, self.across, self.rows)
        _window_sums(self.rows, k, 0, self.down, self.out)
        self.out += (k * k) // 2
        self.out //= k * k
        np.copyto(plane, self.out, casting="unsafe")


def _window_sums(
    a: npt.NDArray[np.uint16],
    k: int,
    axis: int,
    scratch: Mapping[int, npt.NDArray[np.uint16]],
    out: npt.NDArray[np.uint16],
) -> None:
    """Sums of k consecutive values along `axis` into `out` (k - 1 shorter than `a`)."""

    def part(x: npt.NDArray[np.uint16], start: int, length: int) -> npt.NDArray[np.uint16]:
        return x[start : start + length] if axis == 0 else x[:, start : start + length]

    out_len = out.shape[axis]
    sums = {1: a}
    m = 1
    while m * 2 <= k:
        length = sums[m].shape[axis] - m
        sums[2 * m] = np.add(part(sums[m], 0, length), part(sums[m], m, length), out=scratch[2 * m])
        m *= 2
    out[:] = 0
    offset = 0
    for size in sorted(sums, reverse=True):
        if k & size:
            out += part(sums[size], offset, out_len)
            offset += size


def _shift(plane: Plane, dx: int, dy: int, fill: int) -> None:
    """Move the picture by (dx, dy) in place; what comes into view is `fill`."""
    moved = plane.copy()
    plane[:] = fill
    height, width = plane.shape
    src_y, dst_y = (
        (slice(0, height - dy), slice(dy, height))
        if dy >= 0
        else (slice(-dy, height), slice(0, height + dy))
    )
    src_x, dst_x = (
        (slice(0, width - dx), slice(dx, width))
        if dx >= 0
        else (slice(-dx, width), slice(0, width + dx))
    )
    plane[dst_y, dst_x] = moved[src_y, src_x]


def _person(height: int, clothes: Colour, legs_apart: bool) -> _Layer:
    """Someone seen from the side-ish: head, body with arms, two legs."""
    h = height + height % 2
    w = round(h * 0.4)
    w += w % 2
    person = _Layer(w, h, opaque=False)
    skin = _yuv(205, 165, 135)
    trousers = _yuv(45, 45, 55)
    shoes = _yuv(25, 22, 20)
    head = h * 0.17
    person.ellipse(w / 2 - head / 2, 0, head, head * 1.1, skin)
    person.ellipse(w / 2 - head / 2, -head * 0.05, head, head * 0.5, _yuv(40, 30, 25))  # hair
    body_top, body_h = head * 1.05, h * 0.42
    person.rect(w * 0.18, body_top, w * 0.64, body_h, clothes)
    person.rect(w * 0.06, body_top + h * 0.03, w * 0.14, body_h * 0.8, clothes)  # arms
    person.rect(w * 0.80, body_top + h * 0.03, w * 0.14, body_h * 0.8, clothes)
    legs_top = body_top + body_h
    legs_h = h - legs_top
    spread = w * 0.14 if legs_apart else 0.0
    for centre in (w * 0.36 - spread, w * 0.64 + spread):
        person.rect(centre - w * 0.12, legs_top, w * 0.24, legs_h - h * 0.03, trousers)
        person.rect(centre - w * 0.14, h - h * 0.04, w * 0.3, h * 0.04, shoes)
    return person


def _vendor(height: int, clothes: Colour, legs_apart: bool) -> _Layer:
    """A street vendor pushing a cart with a striped canopy: the person on the left."""
    person = _person(height, clothes, legs_apart)
    cart_w = round(height * 0.8)
    cart_w += cart_w % 2
    vendor = _Layer(person.width + cart_w, person.height, opaque=False)
    h = vendor.height
    cx = person.width
    wheel = h * 0.16
    vendor.rect(cx + cart_w * 0.08, h * 0.18, cart_w * 0.04, h * 0.30, _yuv(90, 90, 90))  # poles
    vendor.rect(cx + cart_w * 0.88, h * 0.18, cart_w * 0.04, h * 0.30, _yuv(90, 90, 90))
    stripes = 6
    for i in range(stripes):
        colour = _yuv(200, 40, 40) if i % 2 == 0 else _yuv(235, 235, 230)
        vendor.rect(cx + i * cart_w / stripes, h * 0.08, cart_w / stripes + 1, h * 0.12, colour)
    vendor.rect(cx + cart_w * 0.02, h * 0.48, cart_w * 0.96, h * 0.36, _yuv(50, 120, 175))
    vendor.rect(cx + cart_w * 0.02, h * 0.48, cart_w * 0.96, h * 0.05, _yuv(190, 190, 195))
    for wx in (cx + cart_w * 0.12, cx + cart_w * 0.72):
        vendor.ellipse(wx, h - wheel, wheel, wheel, _yuv(25, 25, 28))
    vendor.rect(cx - cart_w * 0.1, h * 0.5, cart_w * 0.14, h * 0.04, _yuv(90, 90, 90))  # handle
    # the person last, so the handle is held in front of the body
    for plane, src in ((vendor.y, person.y), (vendor.u, person.u), (vendor.v, person.v)):
        rows, cols = src.shape
        target = plane[:rows, :cols]
        mask = person.alpha if plane is vendor.y else person.alpha_c
        np.copyto(target, src, where=mask)
    vendor.alpha[: person.height, : person.width] |= person.alpha
    vendor.alpha_c[: person.height // 2, : person.width // 2] |= person.alpha_c
    return vendor


def _car(width: int, height: int) -> _Layer:
    """A small car seen from the side: body, cabin with windows, two wheels."""
    car = _Layer(width, height, opaque=False)
    body = _yuv(150, 30, 35)
    car.rect(0, height * 0.45, width, height * 0.35, body)
    car.rect(width * 0.2, height * 0.1, width * 0.55, height * 0.4, body)
    glass = _yuv(70, 90, 110)
    car.rect(width * 0.25, height * 0.15, width * 0.2, height * 0.3, glass)
    car.rect(width * 0.5, height * 0.15, width * 0.2, height * 0.3, glass)
    tyre = _yuv(25, 25, 28)
    for cx in (0.22, 0.78):
        car.ellipse(width * cx - height * 0.2, height * 0.6, height * 0.4, height * 0.4, tyre)
    return car


def _flames(
    width: int, height: int, colour_outer: Colour, colour_core: Colour | None, n: int, seed: int
) -> list[_Layer]:
    """`n` flickering variants of a flame filling a (width x height) box at their tallest."""
    rng = np.random.default_rng(seed)
    variants = []
    for _ in range(n):
        layer = _Layer(width, height, opaque=False)
        scale = rng.uniform(0.72, 1.0)
        lean = rng.uniform(-0.25, 0.25)
        fh, fw = height * scale, width * rng.uniform(0.8, 1.0)
        layer.flame((width - fw) / 2, height - fh, fw, fh, colour_outer, lean)
        if colour_core is not None:
            layer.flame(
                (width - fw * 0.5) / 2, height - fh * 0.6, fw * 0.5, fh * 0.6, colour_core, lean
            )
        variants.append(layer)
    return variants


def _even(value: float) -> int:
    return 2 * round(value / 2)


@dataclass(frozen=True)
class _Plan:
    """A happening with what the scene needs to draw it, fixed when the scene is built."""

    happening: Happening
    first: int  # first frame it is active in
    stop: int  # first frame after it
    region: Box | None
    key: int


class Scene:
    """One synthetic camera: `frame(i)` is the I420 picture at scene time i / fps."""

    zones: dict[str, Box]

    def __init__(
        self,
        camera_id: str,
        kind: str,
        *,
        width: int = 640,
        height: int = 360,
        fps: float = 5.0,
        script: Sequence[Happening] = (),
        seed: int = 0,
    ) -> None:
        if kind not in SCENE_KINDS:
            raise ValueError(f"scene kind {kind!r}: expected one of {', '.join(SCENE_KINDS)}")
        if width % 2 or height % 2 or width < _MIN_WIDTH or height < _MIN_HEIGHT:
            raise ValueError(
                f"frame size {width}x{height}: width and height must be even, "
                f"at least {_MIN_WIDTH}x{_MIN_HEIGHT}"
            )
        if not (math.isfinite(fps) and fps > 0):
            raise ValueError(f"fps {fps!r} must be positive")
        for happening in script:
            if not isinstance(happening, Happening) or happening.kind not in HAPPENING_KINDS:
                raise ValueError(
                    f"unknown happening {happening!r}; valid kinds: {', '.join(HAPPENING_KINDS)}"
                )
            needed = ONLY_IN.get(happening.kind)
            if needed is not None and needed != kind:
                raise ValueError(f"{happening.kind} happens in {needed} scenes, not in a {kind}")
        self.camera_id = camera_id
        self.kind = kind
        self.width, self.height, self.fps = width, height, float(fps)
        self.script: tuple[Happening, ...] = tuple(script)
        self.seed = seed
        self._key = _key(camera_id, kind, width, height, seed)
        self.zones = {}
        background = _Layer(width, height)
        if kind == "kitchen":
            self._draw_kitchen(background)
        else:
            self._draw_street(background)
        self.zones["osd"] = self._osd_box()
        self._plans = tuple(self._plan(h, n) for n, h in enumerate(self.script))
        scripted = {h.kind for h in self.script}
        self._day = self._with_noise(background, 2)
        self._night: list[tuple[Plane, Plane, Plane]] = []
        if "night_blob" in scripted:
            self._night = self._with_noise(background.darkened(), 1)
        self._covered: list[tuple[Plane, Plane, Plane]] = []
        if "lens_covered" in scripted:
            self._covered = self._with_noise(_Layer(width, height, _BLACK), 3, offset=2)
        self._sprites: dict[str, list[_Layer]] = {}
        self._prepare_sprites()
        self._local = threading.local()

    # -- the public API -------------------------------------------------------------------

    def frame(self, index: int) -> npt.NDArray[np.uint8]:
        """The I420 frame number `index` (scene time index / fps), a new array each call."""
        index = operator.index(index)
        if index < 0:
            raise ValueError(f"frame index {index} is negative")
        # A frozen camera repeats the frame it froze on; freezes may overlap, hence the loop.
        while True:
            froze_at = min(
                (
                    p.first
                    for p in self._plans
                    if p.happening.kind == "frozen" and p.first <= index < p.stop
                ),
                default=index,
            )
            if froze_at == index:
                return self._render(index)
            index = froze_at

    def truth(self, index: int) -> tuple[str, ...]:
        """The kinds of the happenings scripted to be active in frame `index`, in script order."""
        index = operator.index(index)
        kinds = [p.happening.kind for p in self._plans if p.first <= index < p.stop]
        return tuple(dict.fromkeys(kinds))

    def ground_truth(self, started_at_ms: int) -> list[dict[str, object]]:
        """One record per happening, for a stream whose first frame (scene time 0) was at
        `started_at_ms` (Unix ms): when, and the box [x, y, w, h] in the picture where it
        happens, or None for what affects the whole picture."""
        return [
            {
                "camera_id": self.camera_id,
                "kind": p.happening.kind,
                "start_ms": started_at_ms + round(p.happening.start_s * 1000),
                "end_ms": started_at_ms + round(p.happening.end_s * 1000),
                "region": list(p.region) if p.region is not None else None,
            }
            for p in self._plans
        ]

    def zone_polygon(self, name: str, margin_px: int = 0) -> list[tuple[float, float]]:
        """A zone's box as corners in fractions of the picture (what analytics profiles take),
        grown by `margin_px` on every side and kept inside the picture."""
        x, y, w, h = self.zones[name]
        x0, y0 = max(0, x - margin_px) / self.width, max(0, y - margin_px) / self.height
        x1 = min(self.width, x + w + margin_px) / self.width
        y1 = min(self.height, y + h + margin_px) / self.height
        return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]

    # -- building -------------------------------------------------------------------------

    def _box(self, fx: float, fy: float, fw: float, fh: float) -> Box:
        """A box given as fractions of the frame, on even pixels."""
        w, h = self.width, self.height
        x, y = _even(fx * w), _even(fy * h)
        return (x, y, _even((fx + fw) * w) - x, _even((fy + fh) * h) - y)

    def _osd_box(self) -> Box:
        cell = self._osd_cell()
        return (cell, cell, (_OSD_BITS + 2) * cell, 4 * cell)

    def _osd_cell(self) -> int:
        return max(2, _even(self.width / 160))

    def _draw_kitchen(self, bg: _Layer) -> None:
        w, h = self.width, self.height
        floor_top = _even(0.64 * h)
        tile = max(4, _even(w / 24))
        bg.rect(0, 0, w, floor_top, _yuv(214, 214, 204))
        grout = _yuv(150, 152, 146)
        bg.lines(slice(0, floor_top, tile), slice(None), grout)
        bg.lines(slice(1, floor_top, tile), slice(None), grout)
        bg.lines(slice(0, floor_top), slice(0, None, tile), grout)
        bg.lines(slice(0, floor_top), slice(1, None, tile), grout)
        bg.rect(0, floor_top, w, h - floor_top, _yuv(122, 108, 96))
        floor_tile = tile * 2
        bg.lines(slice(floor_top, h, floor_tile // 2), slice(None), _yuv(95, 85, 76))
        bg.lines(slice(floor_top, h), slice(0, None, floor_tile), _yuv(95, 85, 76))

        doorway = self._box(0.80, 0.10, 0.14, 0.54)
        bg.rect(doorway[0] - 4, doorway[1] - 4, doorway[2] + 8, doorway[3] + 4, _yuv(120, 90, 60))
        bg.rect(*doorway, _yuv(40, 36, 34))
        self.zones["doorway"] = doorway

        hood = self._box(0.03, 0.04, 0.37, 0.13)
        self.zones["hood"] = hood
        bg.rect(*hood, _yuv(170, 174, 178))
        bg.rect(hood[0], hood[1] + hood[3] - 4, hood[2], 4, _yuv(120, 122, 126))
        stove = self._box(0.04, 0.36, 0.34, 0.42)
        sx, sy, sw, sh = stove
        bg.rect(*stove, _yuv(48, 48, 54))
        hob_h = _even(sh * 0.25)
        bg.rect(sx, sy, sw, hob_h, _yuv(32, 32, 36))
        for i in range(2):  # oven doors with handles
            dx = sx + sw * (0.05 + 0.48 * i)
            bg.rect(dx, sy + hob_h + sh * 0.08, sw * 0.42, sh * 0.55, _yuv(70, 70, 76))
            bg.rect(
                dx + sw * 0.05, sy + hob_h + sh * 0.12, sw * 0.32, sh * 0.03, _yuv(180, 180, 185)
            )
        self._burners: list[Box] = []
        for i in range(3):
            bw, bh = sw * 0.22, hob_h * 0.55
            bx = sx + sw * (i + 0.5) / 3 - bw / 2
            by = sy + hob_h * 0.3
            bg.ellipse(bx, by, bw, bh, _yuv(80, 80, 84))
            bg.ellipse(bx + bw * 0.2, by + bh * 0.2, bw * 0.6, bh * 0.6, _yuv(18, 18, 20))
            self._burners.append((round(bx), round(by), round(bw), round(bh)))
        self.zones["stove"] = stove

        table = self._box(0.44, 0.50, 0.30, 0.06)
        tx, ty, tw, th = table
        legs_bottom = _even(0.86 * h)
        for lx in (tx + 4, tx + tw - 10):
            bg.rect(lx, ty + th, 6, legs_bottom - ty - th, _yuv(130, 134, 138))
        bg.rect(tx, ty + th + (legs_bottom - ty - th) * 0.7, tw, 4, _yuv(150, 154, 158))  # shelf
        bg.rect(tx, ty, tw, th, _yuv(188, 192, 198))
        bg.rect(tx, ty + th - 3, tw, 3, _yuv(140, 144, 150))
        bg.rect(tx + tw * 0.08, ty - 4, tw * 0.3, 6, _yuv(205, 170, 120))  # cutting board
        bg.ellipse(tx + tw * 0.55, ty - 14, tw * 0.16, 16, _yuv(225, 225, 230))  # bowl
        self.zones["worktable"] = (tx, ty, tw, legs_bottom - ty)
        self.zones["floor"] = (0, floor_top, w, h - floor_top)

    def _draw_street(self, bg: _Layer) -> None:
        w, h = self.width, self.height
        shop_bottom = _even(0.38 * h)
        kerb_top = _even(0.62 * h)
        road_top = _even(0.645 * h) if _even(0.645 * h) > kerb_top else kerb_top + 2
        bg.rect(0, 0, w, shop_bottom, _yuv(176, 160, 140))
        sign = self._box(0.05, 0.03, 0.90, 0.08)
        bg.rect(*sign, _yuv(180, 38, 40))
        for i in range(6):  # the shop's name, as blocks
            bg.rect(
                sign[0] + sign[2] * (0.2 + i * 0.1),
                sign[1] + sign[3] * 0.25,
                sign[2] * 0.06,
                sign[3] * 0.5,
                _yuv(240, 225, 200),
            )
        for fx in (0.06, 0.58):
            window = self._box(fx, 0.14, 0.36, 0.22)
            bg.rect(window[0] - 3, window[1] - 3, window[2] + 6, window[3] + 6, _yuv(225, 225, 220))
            bg.rect(*window, _yuv(62, 76, 92))
            bg.rect(window[0] + window[2] // 2 - 1, window[1], 3, window[3], _yuv(225, 225, 220))
        door = self._box(0.44, 0.13, 0.12, 0.25)
        bg.rect(*door, _yuv(105, 70, 45))
        self.zones["shop_front"] = (0, 0, w, shop_bottom)

        bg.rect(0, shop_bottom, w, kerb_top - shop_bottom, _yuv(170, 165, 156))
        joint = max(4, _even(w / 18))
        bg.lines(slice(shop_bottom, kerb_top, joint // 2), slice(None), _yuv(138, 134, 127))
        bg.lines(slice(shop_bottom, kerb_top), slice(0, None, joint), _yuv(138, 134, 127))
        self.zones["pavement"] = (0, shop_bottom, w, kerb_top - shop_bottom)
        bg.rect(0, kerb_top, w, road_top - kerb_top, _yuv(208, 208, 202))
        bg.rect(0, road_top, w, h - road_top, _yuv(84, 84, 90))
        bg.rect(0, road_top, w, 2, _yuv(50, 50, 54))
        dash, gap = _even(w * 0.08), _even(w * 0.06)
        lane_y = _even(0.82 * h)
        for x in range(gap // 2, w, dash + gap):
            bg.rect(x, lane_y, dash, max(2, _even(h * 0.015)), _yuv(232, 232, 228))
        self.zones["road"] = (0, road_top, w, h - road_top)

        zone = self._box(0.55, 0.41, 0.30, 0.20)
        zx, zy, zw, zh = zone
        yellow = _yuv(232, 200, 40)

        def hatch(yy: npt.NDArray[np.float64], xx: npt.NDArray[np.float64]) -> Mask:
            return np.asarray(((xx + yy) % 18) < 3, dtype=np.bool_)

        bg.shape(zx, zy, zw, zh, yellow, hatch)
        edge = 3
        for box in (
            (zx, zy, zw, edge),
            (zx, zy + zh - edge, zw, edge),
            (zx, zy, edge, zh),
            (zx + zw - edge, zy, edge, zh),
        ):
            bg.rect(*box, yellow)
        self.zones["no_vending"] = zone

    def _with_noise(
        self, layer: _Layer, amplitude: int, offset: int = 0
    ) -> list[tuple[Plane, Plane, Plane]]:
        """A few copies of the picture with different low-amplitude luma noise, cycled by frame."""
        rng = np.random.default_rng((self._key, amplitude, offset))
        variants = []
        for _ in range(_NOISE_VARIANTS):
            noise = rng.integers(-amplitude, amplitude + 1, size=layer.y.shape, dtype=np.int16)
            noise += rng.integers(0, offset + 1, size=layer.y.shape, dtype=np.int16)
            y = np.clip(layer.y.astype(np.int16) + noise, 0, 255).astype(np.uint8)
            variants.append((y, layer.u, layer.v))
        return variants

    def _plan(self, happening: Happening, n: int) -> _Plan:
        first = math.ceil(happening.start_s * self.fps - 1e-9)
        stop = math.ceil(happening.end_s * self.fps - 1e-9)
        key = _key(self._key, happening.kind, happening.start_s, happening.duration_s, n)
        region: Box | None = None
        kind = happening.kind
        if kind == "person_walking":
            ph, bottom = self._walker_size()
            region = (0, bottom - ph, self.width, ph)
        elif kind == "night_blob":
            region = self.zones["floor"] if self.kind == "kitchen" else self._box(0, 0.38, 1, 0.62)
        elif kind == "vendor_stopping":
            x, y = self._vendor_stop()
            vh = self._vendor_height()
            region = (x, y, self._vendor_width(), vh)
        elif kind == "flame_outside_stove":
            region = self._flame_spot(key)
        elif kind == "close_pedestrian":
            region = (0, 0, self.width, self.height)
        elif kind == "car_leaving":
            region = self.zones["no_vending"]
        elif kind == "steam":
            region = self._steam_box()
        return _Plan(happening, first, stop, region, key)

    def _steam_box(self) -> Box:
        """Steam rises from the hob to the hood."""
        sx, sy, sw, _ = self.zones["stove"]
        _, hy, _, hh = self.zones["hood"]
        top = hy + hh
        return (sx, top, sw, sy - top)

    def _walker_size(self) -> tuple[int, int]:
        """A walking person's height and the row their feet are on."""
        if self.kind == "kitchen":
            return _even(0.50 * self.height), _even(0.92 * self.height)
        return _even(0.26 * self.height), _even(0.52 * self.height)

    def _vendor_height(self) -> int:
        return _even(0.26 * self.height)

    def _vendor_width(self) -> int:
        height = self._vendor_height()
        person = round(height * 0.4)
        cart = round(height * 0.8)
        return person + person % 2 + cart + cart % 2

    def _vendor_stop(self) -> tuple[int, int]:
        """Where the vendor's box stops: centred in the no-vending zone, standing in it."""
        zx, zy, zw, zh = self.zones["no_vending"]
        x = _even(zx + (zw - self._vendor_width()) / 2)
        bottom = _even(zy + zh * 0.85)
        return x, bottom - self._vendor_height()

    def _flame_spot(self, key: int) -> Box:
        """A fire that should not be there: on the worktable or on the floor by the door."""
        fw, fh = _even(0.06 * self.width), _even(0.20 * self.height)
        if key % 2 == 0:
            tx, ty, tw, _ = self.zones["worktable"]
            return (_even(tx + tw * 0.6 - fw / 2), ty - fh + 2, fw, fh)
        dx, dy, _, dh = self.zones["doorway"]
        return (_even(dx - fw * 1.5), _even(dy + dh + 0.1 * self.height - fh), fw, fh)

    def _prepare_sprites(self) -> None:
        self._darts: dict[int, list[tuple[float, float]]] = {}
        self._gas_flames: list[_Layer] = []
        self._gas_at = (0, 0)
        self._steam = np.zeros((1, 1), np.float32)
        if self.kind == "kitchen":
            bx, by, bw, bh = self._burners[0]
            fw, fh = _even(bw * 0.6), _even(bh * 1.1)
            self._gas_flames = _flames(fw, fh, _GAS_FLAME, None, 3, self._key)
            self._gas_at = (bx + (bw - fw) // 2, by + bh // 2 - fh)
        for plan in self._plans:
            kind = plan.happening.kind
            rng = np.random.default_rng(plan.key)
            if kind == "person_walking":
                palette = [
                    _yuv(40, 60, 120),
                    _yuv(150, 40, 40),
                    _yuv(40, 110, 60),
                    _yuv(60, 60, 64),
                    _yuv(235, 235, 235),
                ]
                clothes = palette[int(rng.integers(len(palette)))]
                height, _ = self._walker_size()
                walkers = [_person(height, clothes, apart) for apart in (False, True)]
                self._sprites[f"person{plan.key}"] = walkers
                self._sprites[f"person-night{plan.key}"] = [s.darkened() for s in walkers]
            elif kind == "vendor_stopping":
                vendors = [
                    _vendor(self._vendor_height(), _yuv(70, 90, 60), apart)
                    for apart in (False, True)
                ]
                self._sprites[f"vendor{plan.key}"] = vendors
                self._sprites[f"vendor-night{plan.key}"] = [s.darkened() for s in vendors]
            elif kind == "flame_outside_stove":
                assert plan.region is not None
                _, _, fw, fh = plan.region
                self._sprites[f"flame{plan.key}"] = _flames(
                    fw, fh, _FLAME_OUTER, _FLAME_CORE, 6, plan.key
                )
            elif kind == "car_leaving":
                _, _, zw, zh = self.zones["no_vending"]
                self._sprites[f"car{plan.key}"] = [_car(_even(zw * 0.8), _even(zh * 0.7))]
            elif kind == "close_pedestrian":
                # Someone passing right in front of the lens: taller than the picture.
                close = _person(_even(1.8 * self.height), _yuv(50, 55, 70), False)
                self._sprites[f"close{plan.key}"] = [close, close.darkened()]
            elif kind == "steam":
                assert plan.region is not None
                _, _, sw, sh = plan.region
                field = rng.random((sh * 2 + 8, sw // 4 + 2))
                # Soft plumes: a coarse random field, smoothed along both axes, stretched up.
                for axis in (0, 1):
                    field = (field + np.roll(field, 1, axis) + np.roll(field, -1, axis)) / 3
                plumes = np.kron(field, np.ones((1, 4)))[:, :sw]
                self._steam = np.clip((plumes - 0.45) * 2.2, 0, 1).astype(np.float32)
            elif kind == "night_blob":
                bw, bh = max(4, _even(self.width / 80)), max(4, _even(self.height / 60))
                blob = _Layer(bw, bh, opaque=False)
                blob.ellipse(0, 0, bw, bh, _yuv(205, 200, 190))
                self._sprites[f"blob{plan.key}"] = [blob]
                assert plan.region is not None
                zx, zy, zw, zh = plan.region
                legs = math.ceil(plan.happening.duration_s / _DART_S) + 2
                xs = zx + rng.uniform(0, zw - bw, size=legs)
                ys = zy + rng.uniform(0, zh - bh, size=legs)
                self._darts[plan.key] = list(zip(xs.tolist(), ys.tolist(), strict=True))

    # -- rendering ------------------------------------------------------------------------

    def _render(self, index: int) -> npt.NDArray[np.uint8]:
        w, h = self.width, self.height
        flat = np.empty(w * h * 3 // 2, np.uint8)
        planes: tuple[Plane, Plane, Plane] = (
            flat[: w * h].reshape(h, w),
            flat[w * h : w * h * 5 // 4].reshape(h // 2, w // 2),
            flat[w * h * 5 // 4 :].reshape(h // 2, w // 2),
        )
        active = {p.happening.kind for p in self._plans if p.first <= index < p.stop}
        if "lens_covered" in active:
            # Nothing reaches the sensor; the frame number in the lowest bits of a few pixels
            # still makes consecutive frames differ, as a real sensor's noise would.
            for dst, src in zip(planes, self._covered[index % _NOISE_VARIANTS], strict=True):
                dst[:] = src
            bits = ((index >> np.arange(_OSD_BITS)) & 1).astype(np.uint8)
            planes[0][-1, :_OSD_BITS] = (planes[0][-1, :_OSD_BITS] & 0xFE) | bits
            return flat.reshape(h * 3 // 2, w)
        night = "night_blob" in active
        base = (self._night if night else self._day)[index % _NOISE_VARIANTS]
        for dst, src in zip(planes, base, strict=True):
            dst[:] = src
        t = index / self.fps
        if "burner_on" in active:
            flicker = self._gas_flames[(index * 7 + index // 3) % len(self._gas_flames)]
            _paste(planes, flicker, *self._gas_at)
        for plan in self._plans:
            self._draw(plan, planes, t, index, night)
        for plan in self._plans:
            if plan.first <= index < plan.stop:
                self._light(plan, planes, t, index)
        if "blurred" in active:
            luma_blur, chroma_blur = self._blurs()
            luma_blur(planes[0])
            chroma_blur(planes[1])
            chroma_blur(planes[2])
        for plan in self._plans:
            if plan.happening.kind == "knocked_aside" and plan.first <= index < plan.stop:
                dx, dy = self._knock(plan.key)
                _shift(planes[0], dx, dy, 16)
                _shift(planes[1], dx // 2, dy // 2, 128)
                _shift(planes[2], dx // 2, dy // 2, 128)
                break
        self._draw_osd(planes, index)
        return flat.reshape(h * 3 // 2, w)

    def _light(self, plan: _Plan, planes: tuple[Plane, Plane, Plane], t: float, index: int) -> None:
        """Changes of light over the whole picture (after the sprites, before the optics)."""
        kind = plan.happening.kind
        fy, fu, fv = planes
        if kind == "lights_dimmed":
            gain, chroma = 0.45, 0.7
        elif kind == "cloud":
            into, left = t - plan.happening.start_s, plan.happening.end_s - t
            gain = 1.0 - 0.35 * min(1.0, into / _FADE_S, left / _FADE_S)
            chroma = 1.0
        elif kind == "ir_switch":
            # Infrared night mode: no colour, flatter and brighter under the camera's own lamps.
            fy[:] = np.clip(fy.astype(np.int16) * 7 // 10 + 40, 16, 235).astype(np.uint8)
            fu[:] = 128
            fv[:] = 128
            return
        elif kind == "steam":
            assert plan.region is not None
            x, y, w, h = plan.region
            rise = round((t - plan.happening.start_s) * _STEAM_RISE * self.height)
            rows = (np.arange(h) + rise) % self._steam.shape[0]
            density = self._steam[rows, :w] * 0.85
            patch = fy[y : y + h, x : x + w].astype(np.float32)
            fy[y : y + h, x : x + w] = (patch + (225 - patch) * density).astype(np.uint8)
            return
        else:
            return
        grain = self._grain(index)
        lit = (fy.astype(np.float32) - 16) * gain + 16 + grain
        fy[:] = np.clip(lit, 16, 235).astype(np.uint8)
        for plane in (fu, fv):
            plane[:] = (128 + (plane.astype(np.int16) - 128) * chroma).astype(np.uint8)

    def _grain(self, index: int) -> npt.NDArray[np.int16]:
        """Sensor noise that dim light brings out (the camera turns its gain up)."""
        grains: list[npt.NDArray[np.int16]] | None = getattr(self, "_grains", None)
        if grains is None:
            rng = np.random.default_rng((self._key, 7))
            shape = (self.height, self.width)
            grains = [rng.integers(-3, 4, size=shape, dtype=np.int16) for _ in range(4)]
            self._grains = grains
        return grains[index % len(grains)]

    def _blurs(self) -> tuple[_BoxBlur, _BoxBlur]:
        """This thread's blurs for luma and chroma (their work arrays cannot be shared)."""
        blurs: tuple[_BoxBlur, _BoxBlur] | None = getattr(self._local, "blurs", None)
        if blurs is None:
            w, h = self.width, self.height
            blurs = (_BoxBlur((h, w), _BLUR_K), _BoxBlur((h // 2, w // 2), _BLUR_K // 2))
            self._local.blurs = blurs
        return blurs

    def _knock(self, key: int) -> tuple[int, int]:
        """The knocked camera's picture moves ~20 % across and ~10 % up or down."""
        dx, dy = _even(0.2 * self.width), _even(0.1 * self.height)
        return (dx if key & 1 else -dx, dy if key & 2 else -dy)

    def _draw(
        self, plan: _Plan, planes: tuple[Plane, Plane, Plane], t: float, index: int, night: bool
    ) -> None:
        happening = plan.happening
        kind = happening.kind
        lit = "-night" if night else ""
        active = plan.first <= index < plan.stop
        if kind == "vendor_stopping":
            # Seen walking in before and away after: the happening is the stop itself.
            sprites = self._sprites[f"vendor{lit}{plan.key}"]
            stop_x, top = self._vendor_stop()
            speed = 0.12 * self.width  # pixels a second
            walking = sprites[(index // 2) % 2]
            if active:
                _paste(planes, sprites[0], stop_x, top)
            elif index < plan.first:
                x = stop_x - (happening.start_s - t) * speed
                _paste(planes, walking, round(x), top)
            else:
                x = stop_x + (t - happening.end_s) * speed
                _paste(planes, walking, round(x), top)
        elif kind == "car_leaving":
            # Parked in the zone from the start (so in the background analytics learn), it
            # drives off during the happening and is gone after.
            if index >= plan.stop:
                return
            car = self._sprites[f"car{plan.key}"][0]
            zx, zy, zw, zh = self.zones["no_vending"]
            x = zx + (zw - car.width) // 2
            y = zy + zh - car.height - 2
            if active:
                x += round((t - happening.start_s) / happening.duration_s * (self.width - zx))
            _paste(planes, car, x, y)
        elif not active:
            return
        elif kind == "person_walking":
            sprite = self._sprites[f"person{lit}{plan.key}"][(index // 2) % 2]
            progress = (t - happening.start_s) / happening.duration_s
            span = self.width + sprite.width
            leftwards = plan.key & 1
            x = (self.width - progress * span) if leftwards else (progress * span - sprite.width)
            _, bottom = self._walker_size()
            _paste(planes, sprite, round(x), bottom - sprite.height)
        elif kind == "close_pedestrian":
            sprite = self._sprites[f"close{plan.key}"][1 if night else 0]
            progress = (t - happening.start_s) / happening.duration_s
            span = self.width + sprite.width
            x = progress * span - sprite.width
            _paste(planes, sprite, round(x), round(-0.25 * self.height))
        elif kind == "night_blob":
            x, y = self._dart(plan, t - happening.start_s)
            _paste(planes, self._sprites[f"blob{plan.key}"][0], x, y)
        elif kind == "flame_outside_stove":
            assert plan.region is not None
            flames = self._sprites[f"flame{plan.key}"]
            pick = (index * 5 + (index * index) // 7 + plan.key) % len(flames)
            _paste(planes, flames[pick], plan.region[0], plan.region[1])

    def _dart(self, plan: _Plan, since_s: float) -> tuple[int, int]:
        """Where the small fast thing is: straight dashes between random points."""
        points = self._darts[plan.key]
        leg = min(int(since_s / _DART_S), len(points) - 2)
        frac = since_s / _DART_S - leg
        (x0, y0), (x1, y1) = points[leg], points[leg + 1]
        return round(x0 + (x1 - x0) * frac), round(y0 + (y1 - y0) * frac)

    def _draw_osd(self, planes: tuple[Plane, Plane, Plane], index: int) -> None:
        """The camera's overlay, burnt in after the optics: a bar whose cells spell the frame
        number in binary, so that no two consecutive frames are the same (and a frozen stream
        shows)."""
        x, y, w, h = self.zones["osd"]
        cell = self._osd_cell()
        luma = planes[0]
        luma[y : y + h, x : x + w] = 16
        planes[1][y // 2 : (y + h) // 2, x // 2 : (x + w) // 2] = 128
        planes[2][y // 2 : (y + h) // 2, x // 2 : (x + w) // 2] = 128
        bits = (index >> np.arange(_OSD_BITS)) & 1
        row = np.repeat(np.where(bits == 1, 235, 40).astype(np.uint8), cell)
        luma[y + cell : y + 3 * cell, x + cell : x + cell + _OSD_BITS * cell] = row
