"""The motion gate on compressed scenes: people move, light does not."""

from __future__ import annotations

from analytics.video.motion import Box, MotionGate
from simulators.codec import decoded
from simulators.scenes import Scene, parse_script
from tests.analytics.video.scenes import profile_for


def watch(kind: str, script: str, seconds: float) -> tuple[Scene, dict[float, tuple[Box, ...]]]:
    """Each analysed frame's motion boxes, by scene time; the clock masked as in a profile."""
    scene = Scene("cam", kind, width=640, height=360, fps=5, script=parse_script(script), seed=2)
    gate = MotionGate()
    keep = profile_for(scene).mask(*MotionGate.size(scene.width, scene.height))
    seen = {}
    for index, luma in decoded(scene, seconds, every=2):
        seen[index / 5] = gate.observe(luma, keep).boxes
    return scene, seen


def outside(scene: Scene, zone: str, boxes: tuple[Box, ...]) -> tuple[Box, ...]:
    """The boxes whose centre is not in the zone (grown upwards: flames rise above a hob)."""
    zx, zy, zw, zh = scene.zones[zone]
    x0, x1 = zx / scene.width, (zx + zw) / scene.width
    y0, y1 = zy / scene.height - 0.1, (zy + zh) / scene.height

    def inside(box: Box) -> bool:
        cx, cy = box[0] + box[2] / 2, box[1] + box[3] / 2
        return x0 <= cx <= x1 and y0 <= cy <= y1

    return tuple(b for b in boxes if not inside(b))


def test_a_person_walking_is_motion_and_the_still_street_is_not() -> None:
    _, seen = watch("street", "person_walking@10+6", 24)
    assert all(seen[t] for t in seen if 10.5 <= t < 15.5), seen
    assert not any(seen[t] for t in seen if t < 9.5 or t >= 17), seen


def test_a_burner_on_the_stove_is_no_motion_anywhere_else() -> None:
    scene, seen = watch("kitchen", "burner_on@0+20", 20)
    assert not any(outside(scene, "stove", boxes) for boxes in seen.values())


def test_light_switched_and_infrared_are_not_motion() -> None:
    _, seen = watch("street", "lights_dimmed@10+10,ir_switch@25+10", 40)
    assert not any(seen.values()), [t for t, boxes in seen.items() if boxes]


def test_a_rodent_at_night_is_small_motion_on_the_floor() -> None:
    scene, seen = watch("kitchen", "night_blob@5+20", 25)
    found = [b for t, boxes in seen.items() if t >= 6 for b in outside(scene, "stove", boxes)]
    assert len(found) >= 20
    floor_top = scene.zones["floor"][1] / scene.height
    for _x, y, w, h in found:
        assert w * h < 0.01 and y + h > floor_top
