"""A camera worker's figures as it reports them: one typed model from the worker's counters,
over the loopback HTTP between the processes, to the health points and the camera list."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable
from typing import Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field

Transport = Literal["whip", "rtsp"]


class CameraStats(BaseModel):
    """Totals since the worker started; rates come from two polls (ingest/video/monitor.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    camera_id: str
    site_id: str
    transport: Transport | None = Field(description="None while nothing feeds the camera.")
    connected: bool = Field(description="A publisher's session or an RTSP pull is up.")
    frames_decoded: int = Field(ge=0)
    frames_received: int = Field(
        0,
        ge=0,
        description="Frames that arrived: encoded frames put together from RTP (WHIP), "
        "frames decoded (RTSP). The camera's own frame rate, whatever was decoded.",
    )
    key_frames_received: int = Field(0, ge=0, description="Of frames_received: key frames.")
    frames_not_decoded: int = Field(
        0, ge=0, description="Of frames_received: skipped by a worker decoding key frames only."
    )
    key_frames_only: bool = Field(
        False, description="Nobody watches: only the key frames analytics need are decoded."
    )
    frames_skipped: int = Field(ge=0, description="Replaced in the analytics slot unread.")
    bytes_received: int = Field(ge=0)
    packets_received: int | None = Field(ge=0, description="RTP figures: WHIP only.")
    packets_lost: int | None
    jitter_ms: float | None = Field(ge=0)
    width: int | None = Field(ge=1)
    height: int | None = Field(ge=1)
    last_frame_ms: int | None = Field(description="Wall clock of the newest decoded frame.")
    viewers: int = Field(ge=0)
    takeovers: int = Field(ge=0)
    reconnects: int = Field(ge=0)

    @property
    def has_video(self) -> bool:
        """Connected and decoding: a frame (so its size) is known."""
        return self.connected and self.last_frame_ms is not None and self.width is not None


class WorkerStats(BaseModel):
    """A camera worker process: its memory, so that growth shows before it hurts, and its
    cameras."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    index: int = Field(ge=0)
    pid: int = Field(ge=1)
    rss_bytes: int = Field(ge=0, description="Resident memory of the process.")
    heap_in_use_bytes: int | None = Field(
        ge=0, description="Bytes malloc has handed out (glibc only): grows with a leak."
    )
    heap_free_bytes: int | None = Field(
        ge=0, description="Bytes malloc holds but has not handed out: grows with fragmentation."
    )
    threads: int = Field(ge=1)
    cameras: list[CameraStats]
    analytics_frames: int = Field(ge=0, description="Frames video analytics looked at.")
    analytics_cpu_s: float = Field(ge=0, description="CPU seconds analytics took.")
    findings_dropped: int = Field(ge=0, description="Findings lost, never collected.")


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd",
            "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost",
        )
    ]  # fmt: skip


def _mallinfo2() -> Callable[[], _MallInfo2] | None:
    try:
        function = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):  # not glibc, or older than 2.33
        return None
    function.restype = _MallInfo2
    return cast(Callable[[], _MallInfo2], function)


_MALLINFO2 = _mallinfo2()


_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


def fix_mmap_threshold(size: int) -> bool:
    """Serve allocations of `size` bytes or more from mmap, and give them back on free.

    glibc raises its mmap threshold to the size of any mmapped block that is freed, so after
    the first decoded frame is freed, frames come from the heap instead; frames of changing
    sizes between smaller blocks then fragment it, and the heap's free space grows for as
    long as the worker runs (0.3 MiB a minute with 10 cameras, measured). A fixed threshold
    keeps frames out of the heap. False where this is not glibc."""
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, size))


def trim_heap() -> bool:
    """Give the heap's free pages back to the system (glibc's malloc_trim: whole free pages
    anywhere in every arena, not only at the top). False where this is not glibc."""
    try:
        malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return False
    malloc_trim(0)
    return True


def process_memory() -> tuple[int, int | None, int | None, int]:
    """(resident bytes, heap bytes in use, heap bytes free, threads) of this process."""
    rss = 0
    with open("/proc/self/statm") as statm:
        rss = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    threads = len(os.listdir("/proc/self/task"))
    if _MALLINFO2 is None:
        return rss, None, None, threads
    info = _MALLINFO2()
    # Small blocks (uordblks) plus large ones malloc mapped on their own (hblkhd).
    return rss, int(info.uordblks + info.hblkhd), int(info.fordblks), threads


class Finding(BaseModel):
    """A detector's raise or clear, from the worker that saw it to the alert engine."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seq: int = Field(ge=1, description="Order within the worker's run.")
    edge: Literal["raise", "clear"]
    site_id: str
    camera_id: str
    kind: str
    rule: str
    severity: str | None = Field(description="Raises only.")
    at_ms: int
    details: dict[str, Any]
    evidence: list[str]


class Findings(BaseModel):
    """What a worker has found since `after`; `run` changes when the worker restarts, and
    `dropped` counts findings lost because nobody collected them in time."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    run: str
    next: int = Field(ge=0, description="Ask for findings after this one next time.")
    dropped: int = Field(ge=0)
    items: list[Finding]
