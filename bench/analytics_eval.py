"""Video analytics scored through the real path: scripted scenes published over WHIP into the
running service, alerts read back from its API, matched against the scenes' ground truth.

    python bench/analytics_eval.py [--seconds 300] [--width 640 --height 360] [--frozen]

Starts its own Mosquitto and InfluxDB on free ports and the real service (`python -m api
serve`, two camera workers, analytics on), with a copy of the inventory where the evaluated
kitchens are open all day or never, and camera profiles with the scenes' zones (the clock, the
stove, the floor, the no-vending zone). Each camera plays one scenario: a happening to find, or
ordinary life that must raise nothing. Prints, per detector: happenings, found, false alarms,
precision, recall, detection latency (median and worst; for dwell, after the dwell time), and
false alarms per camera-hour over all the footage; then every miss and every false alarm.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from camera_streams import children, make_tokens, service_env, wait_healthy  # noqa: E402

from devices.registry import load_registry  # noqa: E402
from simulators.camera_fleet import CameraFleet, CameraPlan  # noqa: E402
from simulators.local_services import Influxd, Mosquitto, free_port  # noqa: E402
from simulators.scenes import Scene  # noqa: E402

INVENTORY = ROOT / "config" / "inventory" / "inventory.toml"
OPEN, CLOSED = "00:00-23:59", ""
DWELL_S = 180.0

# camera, site hours, script, the alert kind its main happening must raise (None: nothing)
SCENARIOS: list[tuple[str, str, str, str | None]] = [
    ("kitchen-0001-cam-1", OPEN, "lens_covered@60+60", "camera_covered"),
    ("kitchen-0002-cam-1", OPEN, "blurred@60+60", "camera_blurred"),
    ("kitchen-0003-cam-1", OPEN, "frozen@60+60", "camera_frozen"),  # needs --frozen
    ("kitchen-0004-cam-1", OPEN, "knocked_aside@60+60", "camera_moved"),
    ("kitchen-0005-cam-1", OPEN, "flame_outside_stove@60+40", "fire_outside_stove"),
    ("kitchen-0006-cam-1", CLOSED, "night_blob@60+40", "rodent"),
    ("kitchen-0007-cam-1", CLOSED, "person_walking@60+10", "after_hours_presence"),
    (
        "kitchen-0008-cam-1",
        OPEN,
        "burner_on@0+300,person_walking@30+6,lights_dimmed@50+30,steam@100+60,"
        "ir_switch@170+40,close_pedestrian@230+4,cloud@250+30,person_walking@200+6",
        None,
    ),
    ("kitchen-0009-cam-1", CLOSED, "lights_dimmed@60+40,ir_switch@120+60,cloud@200+30", None),
    ("street-cam-00001", OPEN, "vendor_stopping@30+230", "street_vending"),
    ("street-cam-00002", OPEN, "vendor_stopping@30+90", None),  # moves on before the dwell
    ("street-cam-00003", OPEN, "lens_covered@60+60", "camera_covered"),
    ("street-cam-00004", OPEN, "knocked_aside@60+60", "camera_moved"),
    (
        "street-cam-00005",
        OPEN,
        "person_walking@30+6,cloud@50+30,lights_dimmed@100+40,ir_switch@160+50,"
        "close_pedestrian@230+4,person_walking@250+6",
        None,
    ),
]
TARGETS = {
    "lens_covered",
    "blurred",
    "frozen",
    "knocked_aside",
    "flame_outside_stove",
    "night_blob",
    "vendor_stopping",
    "person_walking",
}


def prepare(work: Path, frozen: bool) -> tuple[Path, Path]:
    """An inventory copy with the evaluated sites' hours, and profiles with the scenes' zones."""
    inventory = work / "eval-inventory"
    shutil.copytree(INVENTORY.parent, inventory)
    (inventory / "streams.csv").write_text("camera_id,url\n")
    hours = {camera.rsplit("-cam", 1)[0]: h for camera, h, _, _ in SCENARIOS if "kitchen" in camera}
    lines = (inventory / "sites.csv").read_text().splitlines()
    header = lines[0].split(",")
    at = header.index("opening_hours")
    out = [lines[0]]
    for line in lines[1:]:
        cells = line.split(",")
        if cells[0] in hours:
            cells[at] = hours[cells[0]]
        out.append(",".join(cells))
    (inventory / "sites.csv").write_text("\n".join(out) + "\n")
    profiles = work / "profiles"
    profiles.mkdir()
    for scene_kind, camera_type, zones in (
        ("kitchen", "kitchen_camera", (("stove", "stove"), ("floor", "floor"))),
        ("street", "street_camera", (("no_vending", "no_vending"),)),
    ):
        scene = Scene("cam", scene_kind)
        text = [_zone("clock", "mask", scene.zone_polygon("osd", margin_px=4))]
        text += [_zone(name, kind, scene.zone_polygon(name)) for name, kind in zones]
        if frozen:
            text.append("[health]\nfrozen_enabled = true\n")
        (profiles / f"{camera_type}.toml").write_text("\n".join(text))
    return inventory / INVENTORY.name, profiles


def _zone(name: str, kind: str, polygon: list[tuple[float, float]]) -> str:
    corners = ", ".join(f"[{x:.4f}, {y:.4f}]" for x, y in polygon)
    return f'[[zones]]\nname = "{name}"\nkind = "{kind}"\npolygon = [{corners}]\n'


async def publish(base: str, tokens: dict[str, str], truth: Path, args: argparse.Namespace) -> None:
    registry = load_registry(INVENTORY)
    plans = [CameraPlan.for_device(registry.devices[c], s) for c, _, s, _ in SCENARIOS]
    fleet = CameraFleet(
        base, tokens, plans, width=args.width, height=args.height, fps=5.0, truth=truth
    )
    stop = asyncio.Event()
    running = asyncio.create_task(fleet.run(stop))
    started = time.monotonic()
    while time.monotonic() - started < args.seconds:
        left = args.seconds - (time.monotonic() - started)
        print(f"\r  publishing {len(plans)} cameras: {left:4.0f} s left ", end="", flush=True)
        await asyncio.sleep(min(5.0, max(0.0, left)))  # the scenario's wall time
    print()
    await asyncio.sleep(15)  # the last findings, collected and stored
    stop.set()
    await running


def alerts(base: str, admin: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    cursor = None
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {admin}"}) as api:
        while True:
            params: dict[str, Any] = {"limit": 200}
            if cursor:
                params["cursor"] = cursor
            page = api.get("/api/v1/alerts", params=params).json()
            found += page["items"]
            cursor = page["next_cursor"]
            if not cursor:
                return found


def score(
    truth: list[dict[str, Any]], raised: list[dict[str, Any]], seconds: float, frozen: bool
) -> int:
    expected = {camera: kind for camera, _, _, kind in SCENARIOS}
    if not frozen:  # not looked for: the frozen picture is neither found nor missed
        expected = {c: k for c, k in expected.items() if k != "camera_frozen"}
    targets = [t for t in truth if t["kind"] in TARGETS and expected.get(t["camera_id"])]
    video = [a for a in raised if a["rule"].startswith("video.") and a["kind"] != "camera_offline"]
    used: set[int] = set()
    rows: dict[str, dict[str, Any]] = defaultdict(lambda: {"n": 0, "tp": 0, "fp": 0, "lat": []})
    misses = []
    for target in targets:
        kind = expected[target["camera_id"]]
        assert kind is not None
        row = rows[kind]
        row["n"] += 1
        due = target["start_ms"] + (DWELL_S * 1000 if kind == "street_vending" else 0)
        match = next(
            (
                a
                for a in video
                if a["id"] not in used
                and a["device_id"] == target["camera_id"]
                and a["kind"] == kind
                and target["start_ms"] <= a["first_seen_ms"] <= target["end_ms"] + 30_000
            ),
            None,
        )
        if match is None:
            misses.append(f"{target['camera_id']}: {target['kind']} -> {kind} not raised")
            continue
        used.add(match["id"])
        row["tp"] += 1
        row["lat"].append((match["first_seen_ms"] - due) / 1000)
    false_alarms = [a for a in video if a["id"] not in used]
    for alarm in false_alarms:
        rows[alarm["kind"]]["fp"] += 1
    camera_hours = len(SCENARIOS) * seconds / 3600
    print()
    print(
        "| detector | happenings | found | false alarms | precision | recall "
        "| latency median | worst |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for kind in sorted(rows):
        r = rows[kind]
        precision = r["tp"] / (r["tp"] + r["fp"]) if r["tp"] + r["fp"] else float("nan")
        recall = r["tp"] / r["n"] if r["n"] else float("nan")
        lat = r["lat"]
        med = f"{statistics.median(lat):.1f} s" if lat else "-"
        worst = f"{max(lat):.1f} s" if lat else "-"
        print(
            f"| `{kind}` | {r['n']} | {r['tp']} | {r['fp']} | {precision:.2f} | {recall:.2f} "
            f"| {med} | {worst} |"
        )
    print(
        f"\nfalse alarms: {len(false_alarms)} in {camera_hours:.2f} camera-hours "
        f"({len(false_alarms) / camera_hours:.2f} per camera-hour; "
        f"{len(SCENARIOS)} cameras x {seconds:.0f} s)"
    )
    for miss in misses:
        print(f"miss: {miss}")
    for alarm in false_alarms:
        print(
            f"false alarm: {alarm['device_id']} {alarm['kind']} at "
            f"{alarm['first_seen_ms']} ({json.dumps(alarm.get('details', {}))[:160]})"
        )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument(
        "--frozen", action="store_true", help="look for frozen pictures (off by default)"
    )
    args = parser.parse_args()
    cameras = [c for c, _, _, _ in SCENARIOS]
    with tempfile.TemporaryDirectory(prefix="bench-eval-") as tmp:
        work = Path(tmp)
        data = work / "data"
        data.mkdir()
        inventory, profiles = prepare(work, args.frozen)
        admin, tokens = make_tokens(data, cameras)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        with Mosquitto(work / "mosquitto") as broker, Influxd(work / "influxd") as influxd:
            env = service_env(data, broker, influxd, port)
            env.update(
                {
                    "MINGLIANG_PATHS__INVENTORY": str(inventory),
                    "MINGLIANG_ANALYTICS__PROFILES_DIR": str(profiles),
                    "MINGLIANG_CAMERAS__WORKERS": "2",
                }
            )
            log_path = work / "service.log"
            with log_path.open("wb") as log:
                service = subprocess.Popen(
                    [sys.executable, "-m", "api", "serve", "--log-level", "warning"],
                    env=env,
                    cwd=ROOT,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
                try:
                    wait_healthy(base, service, log_path)
                    assert children(service.pid), "no camera workers"
                    truth_path = work / "truth.jsonl"
                    asyncio.run(publish(base, tokens, truth_path, args))
                    truth = [json.loads(line) for line in truth_path.read_text().splitlines()]
                    raised = alerts(base, admin)
                finally:
                    service.terminate()
                    service.wait(30)
    print(
        f"{len(SCENARIOS)} cameras, {args.width}x{args.height} at 5 fps (VP8 over WHIP), "
        f"{args.seconds:.0f} s each; street dwell {DWELL_S:.0f} s"
    )
    return score(truth, raised, args.seconds, args.frozen)


if __name__ == "__main__":
    sys.exit(main())
