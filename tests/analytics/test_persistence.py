"""Snapshots and deltas: a restart keeps every rule's progress."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from analytics.events import Clear, Raise
from analytics.rules import RuleBook, RuleEngine, SnapshotError
from devices.registry import Registry
from tests.analytics.conftest import FRIDGE, KITCHEN, BookFactory, Driver, at

Drive = Callable[[RuleBook], Driver]
DOOR = "kitchen-0002-door-1"


def restarted(d: Driver, book: RuleBook | None = None) -> Driver:
    """A new engine from the old one's snapshot, through JSON as a store would keep it."""
    text = json.dumps(d.engine.snapshot())
    engine = RuleEngine.restore(book or d.engine.book, d.registry, json.loads(text))
    return Driver(engine)


def test_a_restart_halfway_through_a_duration_fires_on_time(book: RuleBook, drive: Drive) -> None:
    before = drive(book)
    before.series(FRIDGE, 0, 300, 10, temp_c=9.0)
    after = restarted(before)
    after.series(FRIDGE, 310, 590, 10, temp_c=9.0)
    assert after.raises() == []
    fired = after.read(FRIDGE, 600, temp_c=9.0)
    assert [(r.rule, r.at_ms, r.details["since_ms"]) for r in fired] == [
        ("fridge.too_warm", at(600), at(0))
    ]


def test_after_a_restart_a_tick_alone_fires_on_time(plain_book: RuleBook, drive: Drive) -> None:
    before = drive(plain_book)
    before.series(FRIDGE, 0, 300, 10, temp_c=9.0)
    after = restarted(before)
    # The engine was down until well after the deadline: it reports the exact time.
    assert {(r.rule, r.at_ms) for r in after.tick(2000)} == {
        ("fridge.too_warm", at(600)),
        ("fridge.silent", at(900)),
    }


def test_a_raised_alert_is_not_raised_again_after_a_restart(book: RuleBook, drive: Drive) -> None:
    before = drive(book)
    before.series(FRIDGE, 0, 700, 10, temp_c=9.0)
    assert [r.rule for r in before.raises()] == ["fridge.too_warm"]
    after = restarted(before)
    after.series(FRIDGE, 710, 1500, 10, temp_c=9.0)
    assert after.raises() == []
    after.series(FRIDGE, 1510, 1810, 10, temp_c=5.0)
    assert [(c.rule, c.at_ms) for c in after.clears()] == [("fridge.too_warm", at(1810))]


def test_flatline_and_schedule_progress_survive(book: RuleBook, drive: Drive) -> None:
    before = drive(book)
    for t in range(0, 3600, 60):
        before.read(FRIDGE, t, temp_c=4.0)
    before.read(DOOR, 7200, door_open=False)
    before.read(DOOR, 7300, door_open=True)  # 02:01:40, after hours
    after = restarted(before)
    for t in range(3600, 7260, 60):
        after.read(FRIDGE, t, temp_c=4.0)
    after.read(DOOR, 7400, door_open=True)
    after.tick(7480)
    assert sorted((r.rule, r.at_ms) for r in after.raises()) == [
        ("door_sensor.open_after_hours", at(7480)),
        ("fridge.stuck_probe", at(7200)),
    ]


def test_a_false_value_survives_the_snapshot(book: RuleBook, drive: Drive) -> None:
    camera = "kitchen-0002-cam-1"
    before = drive(book)
    before.series(camera, 0, 60, 10, online=False, fps=0.0, bitrate_kbps=0.0)
    assert [r.rule for r in before.raises()] == ["kitchen_camera.video_down"]
    key = f"{KITCHEN}/{camera}/kitchen_camera.video_down"
    assert before.engine.snapshot()["instances"][key]["value"] is False
    after = restarted(before)
    assert after.engine.snapshot() == before.engine.snapshot()


def test_dirty_deltas_rebuild_the_snapshot(book: RuleBook, drive: Drive) -> None:
    d = drive(book)
    store: dict[str, Any] = {}

    def persist() -> None:
        for key, state in d.engine.dirty().items():
            if state is None:
                store.pop(key, None)
            else:
                store[key] = json.loads(json.dumps(state))

    for t in range(0, 2000, 10):
        d.read(FRIDGE, t, temp_c=9.0 if t < 900 else 5.0, door_open=t % 300 == 0)
        d.read(DOOR, t, door_open=t > 1000)
        d.tick(t + 5)
        persist()
    assert store == d.engine.snapshot()["instances"]
    assert d.engine.dirty() == {}
    again = RuleEngine.restore(book, d.registry, {"format": 1, "instances": store})
    assert again.snapshot() == d.engine.snapshot()


def test_states_of_removed_rules_are_dropped_and_their_alerts_cleared(
    book: RuleBook, make_book: BookFactory, drive: Drive
) -> None:
    before = drive(book)
    before.series(FRIDGE, 0, 700, 10, temp_c=9.0)
    smaller = make_book(
        """
        [rules.fridge.silent]
        check = "heartbeat"
        kind = "device_offline"
        silent_for_s = 600
        """
    )
    after = restarted(before, smaller)
    gone = {k: v for k, v in after.engine.dirty().items() if v is None}
    assert sorted(k.rsplit("/", 1)[1] for k in gone) == [
        "fridge.stuck_probe",
        "fridge.temp_jump",
        "fridge.too_warm",
    ]
    cleared = after.tick(710)
    assert [(type(s), s.rule, s.at_ms, s.details["reason"]) for s in cleared] == [
        (Clear, "fridge.too_warm", at(710), "rule removed")
    ]
    assert cleared[0].source.site_id == KITCHEN


def test_changed_parameters_keep_the_progress(
    book: RuleBook, make_book: BookFactory, drive: Drive
) -> None:
    before = drive(book)
    before.series(FRIDGE, 0, 300, 10, temp_c=9.0)
    longer = make_book(
        """
        [rules.fridge.too_warm]
        check = "threshold"
        kind = "cold_chain_temperature"
        metric = "temp_c"
        op = ">"
        value = 8.0
        for_s = 900
        """
    )
    after = restarted(before, longer)
    assert [(r.rule, r.at_ms) for r in after.tick(1000)] == [("fridge.too_warm", at(900))]


def test_forget_clears_a_removed_device(book: RuleBook, drive: Drive) -> None:
    d = drive(book)
    d.series(FRIDGE, 0, 700, 10, temp_c=9.0)
    d.engine.dirty()
    cleared = d.engine.forget(FRIDGE, at(800))
    assert [(c.rule, c.details["reason"]) for c in cleared] == [
        ("fridge.too_warm", "device removed")
    ]
    assert all(v is None for v in d.engine.dirty().values())
    assert d.tick(5000) == []


@pytest.mark.parametrize(
    ("snapshot", "message"),
    [
        ({"format": 2, "instances": {}}, "format"),
        ({"format": 1, "instances": []}, "instances"),
        (
            {"format": 1, "instances": {f"{KITCHEN}/{FRIDGE}/fridge.too_warm": {"check": "x"}}},
            None,
        ),
        (
            {
                "format": 1,
                "instances": {
                    f"{KITCHEN}/{FRIDGE}/fridge.too_warm": {
                        "check": "threshold",
                        "breach_since": "yesterday",
                    }
                },
            },
            "breach_since",
        ),
    ],
)
def test_bad_snapshots(
    book: RuleBook, registry: Registry, snapshot: dict[str, Any], message: str | None
) -> None:
    if message is None:  # a state of another check is dropped, not an error
        engine = RuleEngine.restore(book, registry, snapshot)
        assert engine.stats().dropped_states == 1
        return
    with pytest.raises(SnapshotError, match=message):
        RuleEngine.restore(book, registry, snapshot)


def test_raise_and_clear_pair_up(book: RuleBook, drive: Drive) -> None:
    d = drive(book)
    d.series(FRIDGE, 0, 1000, 10, temp_c=9.0)
    d.series(FRIDGE, 1010, 1400, 10, temp_c=5.0)
    pairs = [(type(s), s.rule) for s in d.signals if s.rule == "fridge.too_warm"]
    assert pairs == [(Raise, "fridge.too_warm"), (Clear, "fridge.too_warm")]
