"""Which cameras have gone dark: no decoded frame for `offline_after_ms`.

Pure state: frame times in, camera_offline raises and clears out. The video collectors report
when each camera last delivered a frame; this decides when that has been too long ago.

A camera is watched from when it is expected to send video: when it is set up to be pulled
(RTSP), or from its first push (WHIP). A camera that has never pushed is not known to have
video at all; its MQTT heartbeat rules still watch it.
"""

from __future__ import annotations

from dataclasses import dataclass

from analytics.events import TAXONOMY, Clear, Raise, Signal, Source

KIND = "camera_offline"
RULE = "video.no_frames"


@dataclass(slots=True)
class _Watched:
    source: Source
    last_frame_ms: int | None  # None: expected, no frame yet
    since_ms: int  # when watching began, or the last frame: silence counts from here
    offline: bool = False


class CameraWatch:
    def __init__(self, offline_after_ms: int) -> None:
        if offline_after_ms <= 0:
            raise ValueError("offline_after_ms must be positive")
        self._after = offline_after_ms
        self._cameras: dict[str, _Watched] = {}

    def expect(self, source: Source, now_ms: int) -> None:
        """Start watching a camera (no-op if already watched)."""
        if source.device_id is None:
            raise ValueError("a camera source names its device")
        if source.device_id not in self._cameras:
            self._cameras[source.device_id] = _Watched(source, None, now_ms)

    def restore_offline(self, source: Source, now_ms: int) -> None:
        """A camera whose camera_offline alert is still open from before a restart: the
        next frame clears it, and it is not raised again meanwhile."""
        self.expect(source, now_ms)
        assert source.device_id is not None
        self._cameras[source.device_id].offline = True

    def frame_seen(self, source: Source, at_ms: int) -> list[Signal]:
        """The camera's newest frame was decoded at `at_ms`; clears it if it was offline."""
        self.expect(source, at_ms)
        assert source.device_id is not None
        cam = self._cameras[source.device_id]
        if cam.last_frame_ms is not None and at_ms <= cam.last_frame_ms:
            return []
        cam.last_frame_ms = at_ms
        cam.since_ms = at_ms
        if not cam.offline:
            return []
        cam.offline = False
        return [Clear(cam.source, KIND, RULE, at_ms, {"frames_back_at_ms": at_ms})]

    def tick(self, now_ms: int) -> list[Signal]:
        """Raise camera_offline for every watched camera silent for offline_after_ms."""
        signals: list[Signal] = []
        for cam in self._cameras.values():
            if cam.offline or now_ms - cam.since_ms < self._after:
                continue
            cam.offline = True
            signals.append(
                Raise(
                    source=cam.source,
                    kind=KIND,
                    rule=RULE,
                    severity=TAXONOMY[KIND].severity,
                    at_ms=cam.since_ms + self._after,
                    details={
                        "last_frame_ms": cam.last_frame_ms,
                        "no_frame_for_s": (now_ms - cam.since_ms) / 1000,
                    },
                )
            )
        return signals

    def is_offline(self, camera_id: str) -> bool:
        cam = self._cameras.get(camera_id)
        return cam is not None and cam.offline

    def offline(self) -> list[str]:
        return sorted(cid for cid, cam in self._cameras.items() if cam.offline)

    def watched(self) -> list[str]:
        return sorted(self._cameras)

    def forget(self, camera_id: str) -> None:
        """Stop watching a camera that another node now serves: its silence here says
        nothing. An open camera_offline alert stays for its new owner to clear."""
        self._cameras.pop(camera_id, None)
