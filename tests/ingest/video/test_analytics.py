"""Analytics inside a camera worker: findings kept until collected, evidence with each raise."""

from __future__ import annotations

import io
from pathlib import Path

import av
import cv2
import numpy as np

from alerts.evidence import EvidenceStore
from analytics.events import Clear, Raise, Severity, Source
from analytics.rules.schedule import day_start_ms
from analytics.video.profiles import ProfileBook
from config.settings import load_settings
from devices.registry import Registry
from ingest.video.analytics import FindingLog, StateFiles, WorkerAnalytics
from ingest.video.collector import to_signal
from ingest.video.frames import Frame
from simulators.scenes import Scene, parse_script

CAMERA = "kitchen-0001-cam-1"
SOURCE = Source("kitchen-0001", CAMERA)


def raise_(at_ms: int) -> Raise:
    return Raise(SOURCE, "camera_covered", "video.camera_covered", Severity.MAJOR, at_ms)


def test_findings_are_kept_until_collected_and_the_oldest_dropped_beyond_the_bound() -> None:
    log = FindingLog(max_items=3)
    for at in range(1, 6):
        log.add(raise_(at))
    found = log.since(0)
    assert [f.at_ms for f in found.items] == [3, 4, 5] and found.dropped == 2
    assert found.next == 5
    # Asked again from the same place (the answer was lost): the same findings.
    assert [f.seq for f in log.since(0).items] == [3, 4, 5]
    log.add(Clear(SOURCE, "camera_covered", "video.camera_covered", 6, {"since_ms": 3}))
    after = log.since(found.next)
    assert [(f.edge, f.at_ms) for f in after.items] == [("clear", 6)]
    assert log.since(after.next).items == []


def test_a_finding_crosses_the_process_boundary_unchanged() -> None:
    log = FindingLog(10)
    signal = Raise(
        SOURCE,
        "camera_moved",
        "video.camera_moved",
        Severity.MINOR,
        42,
        {"scene_match": 0.2, "since_ms": 30},
        ("video/a.jpg", "video/a.webm"),
    )
    log.add(signal)
    (finding,) = log.since(0).items
    assert to_signal(type(finding).model_validate_json(finding.model_dump_json())) == signal


def test_a_covered_lens_in_a_worker_gives_a_finding_with_a_snapshot_and_a_clip(
    tmp_path: Path, registry: Registry
) -> None:
    settings = load_settings(
        {},
        analytics={
            "health_every_s": 0.5,
            "evidence": {"clip_before_s": 4, "clip_after_s": 2},
        },
    )
    store = EvidenceStore(tmp_path / "evidence")
    findings = FindingLog(100)
    analytics = WorkerAnalytics(
        settings.analytics, registry, ProfileBook(tmp_path / "profiles", registry), store, findings
    )
    scene = Scene(
        CAMERA, "kitchen", width=320, height=180, fps=2, script=parse_script("lens_covered@15+60")
    )
    t0 = 1_780_000_000_000
    for index in range(2 * 40):  # 40 s at 2 frames a second
        image = av.VideoFrame.from_ndarray(scene.frame(index), format="yuv420p")
        analytics(Frame(CAMERA, index + 1, (t0 + index * 500) * 1_000_000, image))
    (finding,) = findings.since(0).items
    assert (finding.edge, finding.kind, finding.site_id) == (
        "raise",
        "camera_covered",
        "kitchen-0001",
    )
    assert 15_000 < finding.at_ms - t0 <= 35_000
    snapshot, clip = finding.evidence
    assert store.path(snapshot).read_bytes()[:2] == b"\xff\xd8"
    with av.open(io.BytesIO(store.path(clip).read_bytes())) as container:
        frames = [f.to_ndarray(format="gray") for f in container.decode(video=0)]
    assert 10 <= len(frames) <= 14  # 4 s before and 2 s after, at 2 a second
    assert float(np.mean(frames[-1])) < 40
    assert analytics.counts.frames == 80 and analytics.counts.seconds > 0


def _worker(tmp_path: Path, registry: Registry, findings: FindingLog) -> WorkerAnalytics:
    settings = load_settings({}, analytics={"health_every_s": 0.5})
    return WorkerAnalytics(
        settings.analytics,
        registry,
        ProfileBook(tmp_path / "profiles", registry),
        EvidenceStore(tmp_path / "evidence"),
        findings,
        StateFiles(tmp_path / "state"),
    )


def _feed(analytics: WorkerAnalytics, scene: Scene, seconds: range) -> None:
    t0 = 1_780_000_000_000
    for index in range(seconds.start * 2, seconds.stop * 2):
        image = av.VideoFrame.from_ndarray(scene.frame(index), format="yuv420p")
        analytics(Frame(CAMERA, index + 1, (t0 + index * 500) * 1_000_000, image))


def test_a_restart_keeps_a_raised_alert_raised_until_the_picture_is_right(
    tmp_path: Path, registry: Registry
) -> None:
    scene = Scene(
        CAMERA, "kitchen", width=320, height=180, fps=2, script=parse_script("lens_covered@15+45")
    )
    findings = FindingLog(100)
    before = _worker(tmp_path, registry, findings)
    _feed(before, scene, range(0, 30))
    assert [f.edge for f in findings.since(0).items] == ["raise"]
    # The worker dies (no orderly stop): a new one takes up from the files.
    findings = FindingLog(100)
    after = _worker(tmp_path, registry, findings)
    _feed(after, scene, range(30, 75))
    edges = [(f.edge, f.kind) for f in findings.since(0).items]
    assert edges == [("clear", "camera_covered")]  # no second raise; cleared once uncovered


def test_a_camera_knocked_aside_while_the_worker_was_down_is_still_found(
    tmp_path: Path, registry: Registry
) -> None:
    scene = Scene(
        CAMERA, "kitchen", width=320, height=180, fps=2, script=parse_script("knocked_aside@40+60")
    )
    findings = FindingLog(100)
    before = _worker(tmp_path, registry, findings)
    _feed(before, scene, range(0, 20))
    before.flush()  # an orderly stop saves what was learnt
    after = _worker(tmp_path, registry, findings)
    _feed(after, scene, range(40, 70))  # back up with the camera already knocked aside
    assert [(f.edge, f.kind) for f in findings.since(0).items] == [("raise", "camera_moved")]


def test_a_rodent_at_night_in_a_worker_is_a_finding_with_its_region_drawn(
    tmp_path: Path, registry: Registry
) -> None:
    script = parse_script("night_blob@15+20")
    scene = Scene(CAMERA, "kitchen", width=320, height=180, fps=2, script=script)
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    floor = scene.zone_polygon("floor")
    corners = ", ".join(f"[{x}, {y}]" for x, y in floor)
    (profiles / "kitchen_camera.toml").write_text(
        f'[[zones]]\nname = "floor"\nkind = "floor"\npolygon = [{corners}]\n'
    )
    findings = FindingLog(100)
    settings = load_settings({})
    store = EvidenceStore(tmp_path / "evidence")
    analytics = WorkerAnalytics(
        settings.analytics, registry, ProfileBook(profiles, registry), store, findings
    )
    night = day_start_ms(20395) + 3 * 3600 * 1000  # 03:00: kitchen-0001 is closed
    for index in range(2 * 40):
        image = av.VideoFrame.from_ndarray(scene.frame(index), format="yuv420p")
        analytics(Frame(CAMERA, index + 1, (night + index * 500) * 1_000_000, image))
    (finding,) = [f for f in findings.since(0).items if f.edge == "raise"]
    assert (finding.kind, finding.rule) == ("rodent", "video.rodent")
    x, y, w, h = finding.details["box"]
    assert y + h > floor[0][1] and w * h < 0.01
    snapshot = cv2.imdecode(
        np.frombuffer(store.path(finding.evidence[0]).read_bytes(), np.uint8), cv2.IMREAD_COLOR
    )
    # The region is drawn in red around the rodent, not around the whole picture.
    left, top = round(x * 320), round(y * 180)
    blue, green, red = (int(c) for c in snapshot[top, min(319, left + 1)])
    assert red > 150 and green < 100 and blue < 100
    blue, green, red = (int(c) for c in snapshot[1, 160])
    assert not (red > 150 and green < 100)
