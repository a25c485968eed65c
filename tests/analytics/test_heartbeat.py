"""Heartbeat rules: silence noticed on ticks alone, cleared by the next sign of life."""

from __future__ import annotations

from collections.abc import Callable

from analytics.events import Clear, Raise, Severity, Source
from analytics.rules import RuleBook, RuleEngine
from devices.registry import Registry
from tests.analytics.conftest import FRIDGE, KITCHEN, Driver, at

Drive = Callable[[RuleBook], Driver]
GATEWAY = "kitchen-0002-gw"
CAMERA = "kitchen-0002-cam-1"
STREET_CAMERA = "street-cam-00001"


def ticks(d: Driver, start: float, end: float, every: float = 1.0) -> list[Raise | Clear]:
    out = []
    t = start
    while t <= end:
        out += d.tick(t)
        t += every
    return out


def test_silence_raises_on_a_tick_and_the_next_message_clears(book: RuleBook, drive: Drive) -> None:
    d = drive(book)
    d.read(FRIDGE, 0, temp_c=4.0)
    assert ticks(d, 1, 599) == []
    raised = ticks(d, 600, 900)
    assert raised == [
        Raise(
            Source(KITCHEN, FRIDGE),
            "device_offline",
            "fridge.silent",
            Severity.MAJOR,
            at(600),
            {"silent_for_s": 600.0, "last_seen_ms": at(0), "since_ms": at(0)},
        )
    ]
    cleared = d.read(FRIDGE, 901, temp_c=4.0)
    assert [(type(s), s.rule, s.at_ms, s.details["reason"]) for s in cleared] == [
        (Clear, "fridge.silent", at(901), "alive")
    ]
    # Silent again: a new alert, counted from the last message.
    assert [r.at_ms for r in ticks(d, 902, 1600, 10)] == [at(1501)]


def test_a_device_never_seen_is_not_tracked(book: RuleBook, drive: Drive) -> None:
    d = drive(book)
    d.read(FRIDGE, 0, temp_c=4.0)
    raised = ticks(d, 0, 86400, 60)
    assert {r.source.device_id for r in raised} == {FRIDGE}


def test_cameras_go_offline_after_three_minutes(book: RuleBook, drive: Drive) -> None:
    d = drive(book)
    d.read(CAMERA, 0, online=True, fps=25.0, bitrate_kbps=1500.0)
    d.read(STREET_CAMERA, 30, online=True, fps=25.0, bitrate_kbps=900.0)
    raised = ticks(d, 1, 300)
    assert [(r.kind, r.rule, r.at_ms) for r in raised] == [
        ("device_offline", "kitchen_camera.silent", at(180)),
        ("device_offline", "street_camera.silent", at(210)),
    ]


def test_a_last_will_does_not_count_as_a_sign_of_life(book: RuleBook, drive: Drive) -> None:
    d = drive(book)
    d.read(GATEWAY, 0, rssi_dbm=-70.0, uptime_s=1000)
    d.status(GATEWAY, 300, online=False)
    assert [(r.rule, r.at_ms) for r in ticks(d, 1, 700, 10)] == [("gateway.silent", at(600))]
    assert [(c.rule, c.at_ms) for c in d.status(GATEWAY, 705, online=True)] == [
        ("gateway.silent", at(705))
    ]


def test_a_last_will_seen_first_starts_tracking(book: RuleBook, drive: Drive) -> None:
    d = drive(book)
    d.status(GATEWAY, 100, online=False)  # e.g. the retained offline found at start-up
    assert [(r.rule, r.at_ms) for r in ticks(d, 0, 800, 10)] == [("gateway.silent", at(700))]


def test_online_status_resets_the_silence(book: RuleBook, drive: Drive) -> None:
    d = drive(book)
    d.read(GATEWAY, 0, rssi_dbm=-70.0, uptime_s=1000)
    d.status(GATEWAY, 500, online=True)
    assert [r.at_ms for r in ticks(d, 1, 1200, 10)] == [at(1100)]


def test_late_older_message_does_not_move_the_silence_back(book: RuleBook, drive: Drive) -> None:
    d = drive(book)
    d.read(GATEWAY, 0, rssi_dbm=-70.0, uptime_s=1000)
    d.status(GATEWAY, 400, online=True)
    d.status(GATEWAY, 100, online=True)  # an old status, delivered late
    assert [r.at_ms for r in ticks(d, 1, 1100, 10)] == [at(1000)]


def test_a_message_after_a_missed_deadline_raises_and_clears(book: RuleBook, drive: Drive) -> None:
    d = drive(book)
    d.read(FRIDGE, 0, temp_c=4.0)
    # No tick ran in between (say the caller was busy): the silence still happened.
    signals = d.read(FRIDGE, 1000, temp_c=4.5)
    assert [(type(s), s.at_ms) for s in signals] == [(Raise, at(600)), (Clear, at(1000))]


def test_resume_restarts_silence_timers_after_ingest_was_not_listening(
    registry: Registry, book: RuleBook
) -> None:
    engine = RuleEngine(book, registry)
    fridge = registry.devices["kitchen-0002-fridge-1"]
    t0 = 1_795_705_452_000
    engine.on_reading(fridge, t0, {"temp_c": 4.0})
    # Ingest was down for an hour; when it is back, the device is not known to be silent.
    back = t0 + 3_600_000
    engine.resume(back)
    assert engine.on_tick(back + 1000) == []
    raised = engine.on_tick(back + 600_000)  # still nothing from it 10 min after the restart
    assert [(s.kind, s.at_ms) for s in raised] == [("device_offline", back + 600_000)]
