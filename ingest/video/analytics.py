"""Video analytics inside a camera worker: frames in, findings out for the alert engine.

    sampler (analytics_fps) --> WorkerAnalytics: CameraAnalytics per camera (analytics/video)
                                     |  raise: snapshot and clip (evidence.py)
                                     v
                               FindingLog  <-- GET /findings?after=N  <-- the service

Analytics run on the sampler's thread, off the event loop. The service collects findings
every `signal_poll_s` and says where it got to, so a finding is handed over until collected; a
worker that keeps more than `outbox_max` uncollected drops the oldest and counts them.
Profiles are re-read every `profile_check_every_s`; an edit applies to the next frame.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from alerts.evidence import EvidenceError, EvidenceStore
from analytics.events import Raise, Signal, Source
from analytics.video.camera import CameraAnalytics
from analytics.video.model import ModelError, Scores, onnx_classifier
from analytics.video.profile import ModelSpec
from analytics.video.profiles import KITCHEN_CAMERA, STREET_CAMERA, ProfileBook
from config.settings import AnalyticsSettings
from devices.models import Device
from devices.registry import Registry
from ingest.video.evidence import CameraEvidence, picture
from ingest.video.frames import Frame
from ingest.video.stats import Finding, Findings

log = logging.getLogger(__name__)


def _no_scores(crop: Any) -> Any:
    """A model that could not be loaded finds nothing."""
    return np.zeros(0, np.float32)


class FindingLog:
    """Findings in order, kept until collected; thread-safe."""

    def __init__(self, max_items: int) -> None:
        self.run = secrets.token_hex(8)
        self._max = max_items
        self._items: deque[Finding] = deque()
        self._seq = 0
        self.dropped = 0
        self._lock = threading.Lock()

    def add(self, signal: Signal) -> None:
        with self._lock:
            self._seq += 1
            self._items.append(_finding(self._seq, signal))
            while len(self._items) > self._max:
                self._items.popleft()
                self.dropped += 1

    def since(self, after: int) -> Findings:
        """Findings after `after`; those up to it are collected and forgotten."""
        with self._lock:
            while self._items and self._items[0].seq <= after:
                self._items.popleft()
            return Findings(
                run=self.run, next=self._seq, dropped=self.dropped, items=list(self._items)
            )


def _finding(seq: int, signal: Signal) -> Finding:
    assert signal.source.device_id is not None
    raised = isinstance(signal, Raise)
    return Finding(
        seq=seq,
        edge="raise" if raised else "clear",
        site_id=signal.source.site_id,
        camera_id=signal.source.device_id,
        kind=signal.kind,
        rule=signal.rule,
        severity=signal.severity.value if isinstance(signal, Raise) else None,
        at_ms=signal.at_ms,
        details=dict(signal.details),
        evidence=list(signal.evidence) if isinstance(signal, Raise) else [],
    )


class StateFiles:
    """Each camera's analytics state on disk, so that a restart takes up where it was: the
    conditions raised (they clear when the picture is right again) and the reference view
    (a camera knocked aside while the worker was down is still found)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.errors = 0

    def _path(self, camera_id: str) -> Path:
        return self.directory / f"{camera_id}.npz"

    def save(self, camera_id: str, state: dict[str, Any]) -> None:
        health = state.get("health")
        meta = {**state, "health": None}
        arrays: dict[str, Any] = {}
        if health is not None:
            meta["health"] = {k: v for k, v in health.items() if k != "reference"}
            arrays["reference"] = np.asarray(health["reference"], np.float16)
        meta_bytes = np.frombuffer(json.dumps(meta).encode(), np.uint8)
        path = self._path(camera_id)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(path.name + ".partial")
            with partial.open("wb") as fh:
                np.savez(fh, meta=meta_bytes, **arrays)
            os.replace(partial, path)
        except OSError as exc:
            self.errors += 1
            log.warning("analytics state of %s not saved: %s", camera_id, exc.strerror)

    def load(self, camera_id: str) -> dict[str, Any] | None:
        path = self._path(camera_id)
        if not path.exists():
            return None
        try:
            with np.load(path) as data:
                state: dict[str, Any] = json.loads(bytes(data["meta"]).decode())
                if state.get("health") is not None:
                    state["health"]["reference"] = data["reference"].astype(np.float32)
            return state
        except (OSError, ValueError, KeyError) as exc:
            self.errors += 1
            log.warning("analytics state of %s unreadable, learnt again: %s", camera_id, exc)
            return None


@dataclass(slots=True)
class _Camera:
    analytics: CameraAnalytics
    evidence: CameraEvidence


@dataclass(slots=True)
class AnalyticsCounts:
    frames: int = 0
    seconds: float = 0.0  # thread CPU time spent on analytics and evidence
    evidence_errors: int = 0


class WorkerAnalytics:
    """The frame consumer of a worker's sampler."""

    def __init__(
        self,
        settings: AnalyticsSettings,
        registry: Registry,
        profiles: ProfileBook,
        evidence: EvidenceStore,
        findings: FindingLog,
        states: StateFiles | None = None,
        save_every_s: float = 600.0,
    ) -> None:
        self._settings = settings
        self._registry = registry
        self._profiles = profiles
        self._store = evidence
        self.findings = findings
        self._cameras: dict[str, _Camera] = {}
        self._next_check = time.monotonic() + settings.profile_check_every_s
        self._reported: list[str] = []
        self._loaded: dict[tuple[object, ...], Scores] = {}
        self._states = states
        self._save_every_s = save_every_s
        self._next_save = time.monotonic() + save_every_s
        self.counts = AnalyticsCounts()

    def __call__(self, frame: Frame) -> None:
        started = time.thread_time()
        try:
            self._analyse(frame)
        finally:
            self.counts.frames += 1
            self.counts.seconds += time.thread_time() - started

    def _analyse(self, frame: Frame) -> None:
        self._check_profiles()
        camera = self._camera(frame.camera_id)
        if camera is None:
            return
        at_ms = frame.received_ns // 1_000_000
        camera.evidence.add(frame, at_ms)
        signals = camera.analytics.observe(frame.luma(), at_ms, lambda width: picture(frame, width))
        for signal in signals:
            if isinstance(signal, Raise):
                signal = self._with_evidence(camera, frame, signal)
            self.findings.add(signal)
        if self._states is not None:
            if signals:  # what is raised must survive a restart at once
                self._states.save(frame.camera_id, camera.analytics.state())
            if time.monotonic() >= self._next_save:
                self._next_save = time.monotonic() + self._save_every_s
                self.save_states()

    def _with_evidence(self, camera: _Camera, frame: Frame, signal: Raise) -> Raise:
        box = signal.details.get("box")
        try:
            names = camera.evidence.raised(frame, signal.at_ms, signal.kind, box)
        except EvidenceError as exc:
            self.counts.evidence_errors += 1
            log.warning("no evidence for %s on %s: %s", signal.kind, frame.camera_id, exc)
            return signal
        return replace(signal, evidence=signal.evidence + names)

    def _camera(self, camera_id: str) -> _Camera | None:
        camera = self._cameras.get(camera_id)
        if camera is None:
            device = self._registry.devices.get(camera_id)
            if device is None:
                return None
            e = self._settings.evidence
            camera = _Camera(
                CameraAnalytics(
                    Source(device.site_id, camera_id),
                    self._profiles.profile(camera_id),
                    round(self._settings.health_every_s * 1000),
                    opening_hours=self._opening_hours(device),
                    street=device.type == STREET_CAMERA,
                    load_model=self._model,
                ),
                CameraEvidence(self._store, e.clip_before_s, e.clip_after_s, e.jpeg_quality),
            )
            saved = self._states.load(camera_id) if self._states is not None else None
            if saved is not None:
                try:
                    camera.analytics.restore(saved)
                except (ValueError, KeyError, TypeError) as exc:
                    log.warning("analytics state of %s not taken up: %s", camera_id, exc)
            self._cameras[camera_id] = camera
        return camera

    def _model(self, spec: ModelSpec) -> Scores:
        """A model's scoring function, loaded once per file and shared by the cameras."""
        key = (str(spec.path), spec.input_width, spec.input_height, spec.scale, spec.mean, spec.rgb)
        scores = self._loaded.get(key)
        if scores is None:
            try:
                scores = onnx_classifier(spec, self._profiles.directory)
            except ModelError as exc:
                log.error("%s; its classes are not looked for", exc)
                scores = _no_scores
            self._loaded[key] = scores
        return scores

    def _opening_hours(self, device: Device) -> str | None:
        """A kitchen camera's site hours ('' if it never opens); None: not a kitchen."""
        if device.type != KITCHEN_CAMERA:
            return None
        site = self._registry.sites.get(device.site_id)
        return site.opening_hours if site is not None else ""

    def _check_profiles(self) -> None:
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + self._settings.profile_check_every_s
        changed = self._profiles.refresh()
        if self._profiles.errors != self._reported:  # once per edit, not on every check
            self._reported = list(self._profiles.errors)
            for problem in self._reported:
                log.error("camera profiles not reloaded, the last good ones stay: %s", problem)
        for camera_id in changed & self._cameras.keys():
            self._cameras[camera_id].analytics.use_profile(self._profiles.profile(camera_id))
        if changed:
            log.info("camera profiles reloaded: %d cameras changed", len(changed))

    def save_states(self) -> None:
        if self._states is None:
            return
        for camera_id, camera in self._cameras.items():
            self._states.save(camera_id, camera.analytics.state())

    def flush(self) -> None:
        """Save the clips being recorded and every camera's state (the worker is stopping)."""
        for camera in self._cameras.values():
            camera.evidence.flush()
        self.save_states()
