"""The camera watch: dark cameras raise camera_offline, returning frames clear it."""

from __future__ import annotations

import pytest

from analytics.camera_watch import KIND, RULE, CameraWatch
from analytics.events import Clear, Raise, Severity, Source

CAM = Source("kitchen-0001", "kitchen-0001-cam-1")
OTHER = Source("kitchen-0002", "kitchen-0002-cam-1")


def test_a_camera_is_offline_after_the_limit_without_a_frame() -> None:
    watch = CameraWatch(20_000)
    assert watch.frame_seen(CAM, 1_000) == []
    assert watch.tick(20_999) == []
    (raised,) = watch.tick(21_000)
    assert isinstance(raised, Raise)
    assert (raised.kind, raised.rule, raised.severity) == (KIND, RULE, Severity.MAJOR)
    assert raised.at_ms == 21_000 and raised.details["last_frame_ms"] == 1_000
    assert watch.tick(60_000) == []  # raised once, not on every tick
    assert watch.offline() == ["kitchen-0001-cam-1"]
    assert watch.is_offline("kitchen-0001-cam-1") and not watch.is_offline("nobody")


def test_frames_coming_back_clear_it_once() -> None:
    watch = CameraWatch(20_000)
    watch.frame_seen(CAM, 0)
    watch.tick(30_000)
    (cleared,) = watch.frame_seen(CAM, 31_000)
    assert isinstance(cleared, Clear) and cleared.rule == RULE and cleared.at_ms == 31_000
    assert watch.frame_seen(CAM, 32_000) == []
    assert watch.offline() == []
    assert watch.tick(51_999) == [] and len(watch.tick(52_000)) == 1  # counts from the last frame


def test_an_old_frame_time_changes_nothing() -> None:
    watch = CameraWatch(20_000)
    watch.frame_seen(CAM, 10_000)
    watch.tick(40_000)
    assert watch.frame_seen(CAM, 10_000) == []  # the same newest frame, polled again
    assert watch.offline() == ["kitchen-0001-cam-1"]


def test_an_expected_camera_that_never_sends_goes_offline() -> None:
    watch = CameraWatch(20_000)
    watch.expect(OTHER, 5_000)
    watch.expect(OTHER, 15_000)  # expecting again does not restart the clock
    (raised,) = watch.tick(25_000)
    assert raised.source == OTHER and raised.details["last_frame_ms"] is None
    assert watch.watched() == ["kitchen-0002-cam-1"]


def test_a_camera_source_names_its_device() -> None:
    with pytest.raises(ValueError):
        CameraWatch(20_000).expect(Source("kitchen-0001"), 0)
    with pytest.raises(ValueError):
        CameraWatch(0)


def test_an_alert_open_from_before_a_restart_clears_when_frames_return() -> None:
    watch = CameraWatch(20_000)
    watch.restore_offline(CAM, 100_000)
    assert watch.tick(200_000) == []  # already raised, before the restart
    (cleared,) = watch.frame_seen(CAM, 200_500)
    assert isinstance(cleared, Clear) and cleared.source == CAM
