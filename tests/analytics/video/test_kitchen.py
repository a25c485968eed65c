"""Kitchen detectors on scripted scenes through a real encoder: each fires in its scenario,
and stays quiet in ordinary kitchen life, the must-not-fire scenes included."""

from __future__ import annotations

import pytest

from analytics.rules.schedule import day_start_ms
from analytics.video.profile import KitchenProfile
from simulators.scenes import Scene
from tests.analytics.video.scenes import profile_for, run

HOURS = "10:30-14:00;16:30-21:30"
MONDAY = 20395  # local day number of Monday 2025-11-03
NIGHT = day_start_ms(MONDAY) + 3 * 3600 * 1000  # 03:00: closed (staff hours end 22:30)
NOON = day_start_ms(MONDAY) + 12 * 3600 * 1000  # open


def kitchen(script: str, seconds: float, at: int) -> list[tuple[str, float]]:
    return run("kitchen", script, seconds, opening_hours=HOURS, start_ms=at).raised()


def test_a_rodent_on_the_floor_at_night_is_raised_within_seconds() -> None:
    raised = kitchen("night_blob@15+20", 40, NIGHT)
    assert [k for k, _ in raised] == ["rodent"], raised
    assert 15 < raised[0][1] <= 15 + 10


def test_someone_in_the_closed_kitchen_is_raised_and_not_while_it_is_open() -> None:
    raised = kitchen("person_walking@15+8", 30, NIGHT)
    assert [k for k, _ in raised] == ["after_hours_presence"], raised
    assert 15 < raised[0][1] <= 15 + 8
    assert kitchen("person_walking@15+8", 30, NOON) == []


def test_a_flame_outside_the_stove_is_raised_open_or_closed() -> None:
    for at in (NOON, NIGHT):
        raised = kitchen("flame_outside_stove@15+15", 35, at)
        assert [k for k, _ in raised] == ["fire_outside_stove"], raised
        assert 15 < raised[0][1] <= 15 + 10


@pytest.mark.parametrize("at", [NOON, NIGHT], ids=["open", "closed"])
def test_ordinary_kitchen_life_raises_nothing(at: int) -> None:
    # A burner flickers on the stove all along; staff walk by while open.
    script = "burner_on@0+135,lights_dimmed@15+15,steam@35+25,ir_switch@65+20,cloud@90+20"
    if at == NOON:
        script += ",person_walking@115+6,close_pedestrian@125+4"
    assert kitchen(script, 135, at) == []


def test_a_burner_left_with_nobody_at_the_stove_is_raised_and_staff_keep_it_quiet() -> None:
    scene = Scene("cam-1", "kitchen", fps=5)
    short = profile_for(scene).model_copy(update={"kitchen": KitchenProfile(unattended_s=30)})
    # The burner flickers all along; nobody comes for a minute.
    result = run("kitchen", "burner_on@0+60", 60, profile=short, opening_hours=HOURS, start_ms=NOON)
    raised = result.raised()
    assert [k for k, _ in raised] == ["flame_unattended"], raised
    assert 30 <= raised[0][1] <= 40
    # The burner off: nothing to attend to.
    assert run("kitchen", "", 60, profile=short, opening_hours=HOURS, start_ms=NOON).raised() == []
    # A cook passes the stove every 20 s: never unattended for 30 s.
    staff = "burner_on@0+60," + ",".join(f"person_walking@{t}+6" for t in range(5, 60, 20))
    result = run("kitchen", staff, 60, profile=short, opening_hours=HOURS, start_ms=NOON)
    assert result.raised() == []
