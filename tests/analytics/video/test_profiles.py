"""Camera profiles from layered files: validated, merged, reloaded on edit."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from analytics.video.profile import CameraProfile, ZoneKind
from analytics.video.profiles import ProfileBook, ProfileError, room_of
from devices.registry import Registry

HOT = "kitchen-0001-cam-1"  # hot kitchen
PREP = "kitchen-0001-cam-2"  # prep room


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    # Edits within one clock tick must still count as edits.
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


def street_camera(registry: Registry) -> str:
    return next(d.device_id for d in registry.devices.values() if d.type == "street_camera")


def test_no_files_means_the_built_in_defaults(tmp_path: Path, registry: Registry) -> None:
    book = ProfileBook(tmp_path / "none", registry)
    assert book.profile(HOT) == CameraProfile()
    assert book.layers(HOT) == []
    with pytest.raises(KeyError):
        book.profile("kitchen-0001-fridge-1")  # not a camera


def test_layers_apply_from_general_to_particular(tmp_path: Path, registry: Registry) -> None:
    assert room_of(registry.devices[HOT]) == "hot-kitchen"
    write(tmp_path / "all.toml", "[health]\nlearn_s = 20\nblur_sharpness = 0.3\n")
    write(tmp_path / "kitchen_camera.toml", "[health]\nlearn_s = 30\n")
    write(tmp_path / "rooms" / "hot-kitchen.toml", "[health.covered]\nraise_after_s = 5\n")
    write(
        tmp_path / "cameras" / f"{HOT}.toml",
        '[[zones]]\nname = "stove"\nkind = "stove"\npolygon = [[0, 0.4], [0.4, 0.4], [0.4, 0.8]]\n',
    )
    book = ProfileBook(tmp_path, registry)
    hot, prep, street = book.profile(HOT), book.profile(PREP), book.profile(street_camera(registry))
    assert hot.health.learn_s == 30 and hot.health.blur_sharpness == 0.3
    # One key of a table overrides that key only: the rest stays the default.
    assert hot.health.covered.raise_after_s == 5
    assert hot.health.covered.clear_after_s == CameraProfile().health.covered.clear_after_s
    assert [z.kind for z in hot.zones] == [ZoneKind.STOVE]
    assert prep.health.learn_s == 30 and prep.health.covered.raise_after_s == 8 and not prep.zones
    assert street.health.learn_s == 20
    assert [p.name for p in book.layers(HOT)] == [
        "all.toml",
        "kitchen_camera.toml",
        "hot-kitchen.toml",
        f"{HOT}.toml",
    ]


@pytest.mark.parametrize(
    ("name", "text", "says"),
    [
        ("all.toml", "[health]\nlearn_s = -1\n", "health.learn_s: Input should be greater"),
        ("all.toml", "[health]\nlern_s = 10\n", "health.lern_s: unknown key"),
        ("all.toml", "zones = [", "not valid TOML"),
        (
            "cameras/kitchen-0001-cam-1.toml",
            '[[zones]]\nname = "z"\nkind = "stove"\npolygon = [[0, 0], [1, 1], [0.5, 0.5]]\n',
            "the polygon has no area",
        ),
        (
            "cameras/kitchen-0001-cam-1.toml",
            '[[zones]]\nname = "z"\nkind = "oven"\npolygon = [[0, 0], [1, 0], [1, 1]]\n',
            "zones.0.kind",
        ),
        ("cameras/kitchen-0001-fridge-1.toml", "", "is not a camera of the inventory"),
        ("rooms/ballroom.toml", "", "no camera is in a room 'ballroom'; rooms: hot-kitchen"),
        ("kitchen.toml", "", "not a profile file"),
    ],
)
def test_a_bad_file_is_refused_naming_file_key_and_value(
    tmp_path: Path, registry: Registry, name: str, text: str, says: str
) -> None:
    write(tmp_path / name, text)
    with pytest.raises(ProfileError) as info:
        ProfileBook(tmp_path, registry)
    assert str(tmp_path / name) in str(info.value)
    assert says in str(info.value)


def test_an_edit_applies_and_a_bad_edit_keeps_the_last_good_profile(
    tmp_path: Path, registry: Registry
) -> None:
    write(tmp_path / "kitchen_camera.toml", "[health]\nlearn_s = 30\n")
    book = ProfileBook(tmp_path, registry)
    assert book.refresh() == set()  # nothing changed

    write(tmp_path / "rooms" / "prep-room.toml", "[health]\nlearn_s = 40\n")
    changed = book.refresh()
    preps = {d.device_id for d in registry.cameras() if room_of(d) == "prep-room"}
    assert changed == preps and PREP in changed
    assert book.profile(PREP).health.learn_s == 40 and book.errors == []

    write(tmp_path / "rooms" / "prep-room.toml", "[health]\nlearn_s = 'soon'\n")
    assert book.refresh() == set()
    assert book.profile(PREP).health.learn_s == 40  # the last good one
    assert len(book.errors) == 1 and "prep-room.toml" in book.errors[0]
    assert "learn_s" in book.errors[0] and "'soon'" in book.errors[0]

    (tmp_path / "rooms" / "prep-room.toml").unlink()
    assert book.refresh() == preps
    assert book.profile(PREP).health.learn_s == 30 and book.errors == []
