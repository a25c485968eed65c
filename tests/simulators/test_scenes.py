"""Synthetic camera scenes: the I420 layout, determinism, and that each happening shows."""

from __future__ import annotations

import ast
import hashlib
import itertools
import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
import pytest

from simulators.scenes import (
    HAPPENING_KINDS,
    Happening,
    Scene,
    parse_script,
    write_ground_truth,
)

SCENES_PY = Path(__file__).resolve().parents[2] / "simulators" / "scenes.py"
W, H, FPS = 640, 360, 5.0

Frame = npt.NDArray[np.uint8]


def luma(frame: Frame) -> npt.NDArray[np.int32]:
    return frame[:H].astype(np.int32)


def chroma(frame: Frame) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int32]]:
    flat = frame.reshape(-1)
    u = flat[W * H : W * H * 5 // 4].reshape(H // 2, W // 2)
    v = flat[W * H * 5 // 4 :].reshape(H // 2, W // 2)
    return u.astype(np.int32), v.astype(np.int32)


def below_osd(scene: Scene, plane: npt.NDArray[np.int32]) -> npt.NDArray[np.int32]:
    """The picture under the camera's overlay bar, which stays crisp whatever the optics do."""
    _, y, _, h = scene.zones["osd"]
    return plane[y + h :]


def laplacian_energy(plane: npt.NDArray[np.int32]) -> float:
    lap = (
        4 * plane[1:-1, 1:-1]
        - plane[:-2, 1:-1]
        - plane[2:, 1:-1]
        - plane[1:-1, :-2]
        - plane[1:-1, 2:]
    )
    return float(np.mean(lap.astype(np.float64) ** 2))


def changed_box(a: Frame, b: Frame, scene: Scene) -> tuple[int, int, int, int] | None:
    """Bounding box [x, y, w, h] of the luma pixels that differ, ignoring the overlay bar."""
    diff = luma(a) != luma(b)
    ox, oy, ow, oh = scene.zones["osd"]
    diff[oy : oy + oh, ox : ox + ow] = False
    rows, cols = np.nonzero(diff)
    if rows.size == 0:
        return None
    return (
        int(cols.min()),
        int(rows.min()),
        int(cols.max()) + 1 - int(cols.min()),
        int(rows.max()) + 1 - int(rows.min()),
    )


def inside(inner: tuple[int, int, int, int], outer: tuple[int, int, int, int] | list[int]) -> bool:
    x, y, w, h = inner
    ox, oy, ow, oh = outer
    return ox <= x and oy <= y and x + w <= ox + ow and y + h <= oy + oh


def kitchen(script: str = "", camera_id: str = "kitchen-0001-cam-1") -> Scene:
    return Scene(camera_id, "kitchen", script=parse_script(script))


def street(script: str = "", camera_id: str = "street-0001-cam-1") -> Scene:
    return Scene(camera_id, "street", script=parse_script(script))


@pytest.mark.parametrize("kind", ["kitchen", "street"])
def test_frames_are_i420_that_pyav_takes(kind: str) -> None:
    scene = Scene("cam-1", kind, script=parse_script("burner_on@0+1" if kind == "kitchen" else ""))
    frame = scene.frame(0)
    assert frame.shape == (H * 3 // 2, W)
    assert frame.dtype == np.uint8
    assert frame.flags.c_contiguous
    video = av.VideoFrame.from_ndarray(frame, format="yuv420p")
    assert (video.width, video.height) == (W, H)
    assert np.array_equal(video.to_ndarray(), frame)
    # Chroma is neutral on the grey parts and coloured elsewhere, so the planes are where
    # they should be: a colour-swapped or shifted layout would not give both.
    u, v = chroma(frame)
    assert np.median(u) in range(120, 137) and np.median(v) in range(120, 137)
    assert max(np.abs(u - 128).max(), np.abs(v - 128).max()) > 40

    small = Scene("cam-1", kind, width=320, height=240).frame(3)
    assert small.shape == (360, 320)


def test_same_inputs_same_bytes_and_cameras_differ() -> None:
    script = "person_walking@0+3,flame_outside_stove@1+2"
    a, b = kitchen(script), kitchen(script)
    for i in (0, 1, 7, 12, 40):
        assert a.frame(i).tobytes() == b.frame(i).tobytes()
    other = kitchen(script, camera_id="kitchen-0002-cam-1")
    assert a.frame(7).tobytes() != other.frame(7).tobytes()
    reseeded = Scene("kitchen-0001-cam-1", "kitchen", script=parse_script(script), seed=1)
    assert a.frame(7).tobytes() != reseeded.frame(7).tobytes()


@pytest.mark.parametrize("scene", [kitchen(), street()], ids=["kitchen", "street"])
def test_consecutive_frames_are_never_identical(scene: Scene) -> None:
    frames = [scene.frame(i).tobytes() for i in range(30)]
    assert len(set(frames)) == 30
    # ...while the picture itself stays still: only noise and the overlay change.
    still = np.abs(luma(scene.frame(0)) - luma(scene.frame(29)))
    assert float(np.mean(below_osd(scene, still))) < 3


def test_frozen_repeats_the_first_frame_byte_for_byte() -> None:
    scene = kitchen("frozen@2+3,person_walking@0+10")
    first, stop = round(2 * FPS), round(5 * FPS)
    frozen = scene.frame(first).tobytes()
    assert scene.frame(first - 1).tobytes() != frozen
    for i in range(first, stop):
        assert scene.frame(i).tobytes() == frozen
        assert "frozen" in scene.truth(i)
    assert scene.frame(stop).tobytes() != frozen
    assert scene.frame(stop + 1).tobytes() != scene.frame(stop).tobytes()
    assert "frozen" not in scene.truth(stop)


@pytest.mark.parametrize("scene", [kitchen("lens_covered@1+2"), street("lens_covered@1+2")])
def test_lens_covered_is_dark_and_flat(scene: Scene) -> None:
    for i in (5, 8, 14):
        frame = scene.frame(i)
        y = luma(frame)
        assert y.mean() < 30
        assert y.std() < 4
        u, v = chroma(frame)
        assert np.abs(u - 128).max() <= 2 and np.abs(v - 128).max() <= 2
    assert scene.frame(5).tobytes() != scene.frame(6).tobytes()
    assert luma(scene.frame(15)).mean() > 80  # uncovered again


@pytest.mark.parametrize("kind", ["kitchen", "street"])
def test_blurred_loses_its_detail(kind: str) -> None:
    scene = Scene("cam-1", kind, script=parse_script("blurred@1+1"))
    sharp = laplacian_energy(below_osd(scene, luma(scene.frame(4))))
    blurred = laplacian_energy(below_osd(scene, luma(scene.frame(6))))
    assert blurred < sharp / 20
    # The same scene, only unsharp: overall brightness is kept.
    assert abs(luma(scene.frame(6)).mean() - luma(scene.frame(4)).mean()) < 3
    assert laplacian_energy(below_osd(scene, luma(scene.frame(10)))) > sharp * 0.8


@pytest.mark.parametrize("scene", [kitchen("night_blob@2+4"), street("night_blob@2+4")])
def test_night_is_dark_with_a_small_fast_mover(scene: Scene) -> None:
    day = luma(scene.frame(9)).mean()
    (record,) = scene.ground_truth(0)
    region = record["region"]
    assert isinstance(region, list)
    rx, ry, rw, rh = region
    centres = []
    for i in range(10, 30):
        y = luma(scene.frame(i))
        assert y.mean() < 45
        assert y.mean() < day * 0.4
        # The mover is the only bright thing in its area: a few dozen pixels.
        bright = np.argwhere(y[ry : ry + rh, rx : rx + rw] > 150)
        assert 10 <= len(bright) <= 100
        centres.append(bright.mean(axis=0))
    steps = [float(np.hypot(*(b - a))) for a, b in itertools.pairwise(centres)]
    assert np.median(steps) > 10  # pixels per frame: fast, and always on the move
    assert luma(scene.frame(30)).mean() > 80


def test_flame_outside_the_stove_is_orange_and_flickers() -> None:
    scene = kitchen("flame_outside_stove@1+3")
    (record,) = scene.ground_truth(0)
    region = record["region"]
    assert isinstance(region, list)
    x, y, w, h = region
    sx, sy, sw, sh = scene.zones["stove"]
    assert x >= sx + sw or x + w <= sx or y >= sy + sh or y + h <= sy  # not on the stove

    def orange_share(frame: Frame) -> float:
        u, v = chroma(frame)
        u_box = u[y // 2 : (y + h) // 2, x // 2 : (x + w) // 2]
        v_box = v[y // 2 : (y + h) // 2, x // 2 : (x + w) // 2]
        return float(np.mean((v_box > 165) & (u_box < 110)))

    assert orange_share(scene.frame(4)) == 0
    lit = [scene.frame(i) for i in range(5, 20)]
    assert min(orange_share(f) for f in lit) > 0.2
    assert all(luma(f)[y : y + h, x : x + w].max() > 200 for f in lit)
    shapes = {(luma(f)[y : y + h, x : x + w] > 150).tobytes() for f in lit}
    assert len(shapes) > 3
    assert orange_share(scene.frame(20)) == 0


def test_a_burner_on_has_its_own_small_blue_flame_and_off_none() -> None:
    scene = kitchen("burner_on@0+1")
    sx, sy, sw, sh = scene.zones["stove"]

    def blue(index: int) -> int:
        u, _ = chroma(scene.frame(index))
        return int(np.count_nonzero(u[sy // 2 : (sy + sh) // 2, sx // 2 : (sx + sw) // 2] > 170))

    assert blue(0) > 20
    assert blue(10) == 0  # turned off after a second


def test_knocked_aside_moves_the_whole_picture() -> None:
    scene, still = street("knocked_aside@1+2"), street()
    normal = np.abs(luma(scene.frame(4)) - luma(still.frame(4))).mean()
    knocked = np.abs(luma(scene.frame(6)) - luma(still.frame(6))).mean()
    assert normal == 0
    assert knocked > 20
    # Some fifth of the width and a tenth of the height came into view, in one plain colour.
    y = luma(scene.frame(6))
    flat_cols = [c for c in range(W) if np.ptp(below_osd(scene, y)[:, c]) == 0]
    assert 0.15 * W <= len(flat_cols) <= 0.25 * W
    assert np.abs(luma(scene.frame(15)) - luma(still.frame(15))).mean() == 0


@pytest.mark.parametrize("scene", [kitchen("person_walking@1+4"), street("person_walking@1+4")])
def test_person_walks_across_inside_the_region(scene: Scene) -> None:
    still = Scene(scene.camera_id, scene.kind)
    (record,) = scene.ground_truth(0)
    region = record["region"]
    assert isinstance(region, list)
    lefts = []
    for i in range(6, 25, 3):
        box = changed_box(scene.frame(i), still.frame(i), scene)
        assert box is not None
        assert inside(box, region)
        assert box[3] > region[3] * 0.8  # a whole person, head to foot
        lefts.append(box[0])
    assert lefts == sorted(lefts) or lefts == sorted(lefts, reverse=True)
    assert abs(lefts[-1] - lefts[0]) > W / 2
    assert changed_box(scene.frame(4), still.frame(4), scene) is None
    assert changed_box(scene.frame(26), still.frame(26), scene) is None


def test_vendor_walks_in_stops_in_the_no_vending_zone_and_leaves() -> None:
    scene = street("vendor_stopping@10+4")
    still = street()
    (record,) = scene.ground_truth(0)
    region = record["region"]
    assert isinstance(region, list)
    zx, zy, zw, zh = scene.zones["no_vending"]
    x, y, w, h = region
    assert zx <= x and x + w <= zx + zw and zy < y + h <= zy + zh  # standing in the zone

    stopped = [changed_box(scene.frame(i), still.frame(i), scene) for i in range(50, 70)]
    assert all(box is not None and inside(box, region) for box in stopped)
    assert len(set(stopped)) == 1  # not moving
    assert scene.truth(50) == ("vendor_stopping",)
    walking_in = changed_box(scene.frame(45), still.frame(45), scene)
    assert walking_in is not None and walking_in[0] < x
    assert scene.truth(45) == ()
    leaving = changed_box(scene.frame(72), still.frame(72), scene)
    assert leaving is not None and leaving[0] > x
    assert scene.truth(72) == ()
    assert changed_box(scene.frame(0), still.frame(0), scene) is None
    assert changed_box(scene.frame(100), still.frame(100), scene) is None


def test_truth_lists_the_active_happenings() -> None:
    scene = street("person_walking@1+4,lens_covered@3+1,person_walking@4+2")
    assert scene.truth(0) == ()
    assert scene.truth(5) == ("person_walking",)  # from exactly 1 s
    assert scene.truth(15) == ("person_walking", "lens_covered")
    assert scene.truth(20) == ("person_walking",)  # the second walker, once
    assert scene.truth(30) == ()


def test_ground_truth_records_and_file(tmp_path: Path) -> None:
    scene = kitchen("lens_covered@10+5,flame_outside_stove@2.5+1")
    records = scene.ground_truth(1_800_000_000_000)
    assert records[0] == {
        "camera_id": "kitchen-0001-cam-1",
        "kind": "lens_covered",
        "start_ms": 1_800_000_010_000,
        "end_ms": 1_800_000_015_000,
        "region": None,
    }
    assert records[1]["start_ms"] == 1_800_000_002_500
    assert records[1]["end_ms"] == 1_800_000_003_500
    assert isinstance(records[1]["region"], list) and len(records[1]["region"]) == 4

    path = tmp_path / "truth.jsonl"
    write_ground_truth(path, records)
    write_ground_truth(path, street("vendor_stopping@1+1").ground_truth(0))
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["kind"] for line in lines] == [
        "lens_covered",
        "flame_outside_stove",
        "vendor_stopping",
    ]
    assert json.loads(lines[0]) == records[0]


def test_parse_script() -> None:
    assert parse_script("") == ()
    assert parse_script("  ") == ()
    assert parse_script("lens_covered@10+5, person_walking@2+8") == (
        Happening("lens_covered", 10, 5),
        Happening("person_walking", 2, 8),
    )
    assert parse_script("frozen@1.5m+30s") == (Happening("frozen", 90, 30),)
    assert Happening("blurred", 2, 3).end_s == 5
    with pytest.raises(ValueError, match=r"'smoke@1\+2'.*lens_covered"):
        parse_script("lens_covered@1+2,smoke@1+2")
    with pytest.raises(ValueError, match=r"'frozen@soon\+2'"):
        parse_script("frozen@soon+2")
    with pytest.raises(ValueError, match=r"'frozen'.*KIND@START\+DURATION"):
        parse_script("frozen")
    with pytest.raises(ValueError, match=r"'frozen@1\+0'.*positive"):
        parse_script("frozen@1+0")


def test_bad_scenes_are_refused() -> None:
    with pytest.raises(ValueError, match="'garage'"):
        Scene("cam", "garage")
    with pytest.raises(ValueError, match="even"):
        Scene("cam", "street", width=641)
    with pytest.raises(ValueError, match="even"):
        Scene("cam", "street", height=361)
    with pytest.raises(ValueError, match="fps"):
        Scene("cam", "street", fps=0)
    with pytest.raises(ValueError, match="vendor_stopping"):
        Scene("cam", "kitchen", script=parse_script("vendor_stopping@1+1"))
    with pytest.raises(ValueError, match="unknown happening kind 'smoke'"):
        Happening("smoke", 1, 1)
    with pytest.raises(ValueError, match="negative"):
        kitchen().frame(-1)
    assert set(HAPPENING_KINDS) >= {"frozen", "vendor_stopping", "flame_outside_stove"}


def test_imports_only_the_standard_library_and_numpy() -> None:
    # Debian's Python runs this module for the RTSP server, without the virtual environment.
    tree = ast.parse(SCENES_PY.read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported - set(sys.stdlib_module_names) == {"numpy"}


def test_same_bytes_under_debians_python_and_numpy() -> None:
    python = "/usr/bin/python3"
    check = subprocess.run(
        [python, "-c", "import numpy"], capture_output=True, timeout=60, check=False
    )
    if check.returncode != 0:
        pytest.skip(f"{python} has no numpy (Debian package python3-numpy)")
    code = (
        "import hashlib, sys\n"
        "from simulators.scenes import Scene, parse_script\n"
        "s = Scene('cam-7', 'street', script=parse_script(sys.argv[1]))\n"
        "print(hashlib.sha256(b''.join(s.frame(i).tobytes() for i in range(12))).hexdigest())\n"
    )
    script = "vendor_stopping@0.4+1,night_blob@1+0.6,blurred@1.4+0.4,knocked_aside@2+0.2"
    result = subprocess.run(
        [python, "-s", "-c", code, script],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env={"PYTHONPATH": str(SCENES_PY.parents[1]), "PATH": "/usr/bin:/bin"},
    )
    scene = Scene("cam-7", "street", script=parse_script(script))
    ours = hashlib.sha256(b"".join(scene.frame(i).tobytes() for i in range(12))).hexdigest()
    assert result.stdout.strip() == ours
