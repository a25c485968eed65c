"""Deterministic generator of the district inventory shipped in config/inventory.

The district this was built for has 254 connected sunshine kitchens and 1,500 street cameras.
The real asset list is not public, so the committed CSV files are this generator's output for
a fixed seed; `python -m devices generate` rewrites them and a test checks they still match.
An operator replaces them with the district's own export in the same columns.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Iterator
from pathlib import Path

KITCHENS = 254
STREET_CAMERAS = 1500
STREET_GRIDS = 250
SEED = 20261126

SUBDISTRICTS = (
    "Chengguan", "Beiyuan", "Nanhu", "Xinhua", "Hongqi",
    "Jinxiu", "Wenhua", "Dongfeng", "Yongan", "Heping",
)  # fmt: skip
STREET_STEMS = (
    "Jiefang", "Renmin", "Zhongshan", "Wenhua", "Xinhua", "Heping", "Jianshe", "Changjiang",
    "Huanghe", "Minzhu", "Youyi", "Shengli", "Gongye", "Yingbin", "Binhe", "Chaoyang",
)  # fmt: skip
STREET_KINDS = ("Road", "Street", "Avenue", "Lane")
CATEGORIES = {
    # Service hours drive the simulators' daily curves (cooking, door openings).
    "school canteen": "06:30-08:30;11:00-13:00;17:00-18:30",
    "restaurant": "10:30-14:00;16:30-21:30",
    "hospital canteen": "06:00-08:30;10:30-13:00;16:30-19:00",
    "elderly canteen": "07:00-08:30;11:00-12:30;17:00-18:00",
    "company canteen": "07:00-09:00;11:30-13:30;17:30-19:00",
}
KITCHEN_SENSORS = (
    ("gateway", "gw", "IoT gateway", "office"),
    ("fridge", "fridge-1", "Refrigerator 1", "prep room"),
    ("freezer", "freezer-1", "Freezer 1", "prep room"),
    ("cold_room", "coldroom-1", "Cold room", "storeroom"),
    ("gas_detector", "gas-1", "Gas detector", "hot kitchen"),
    ("smoke_detector", "smoke-1", "Smoke detector", "hot kitchen"),
    ("disinfection_cabinet", "disinfect-1", "Disinfection cabinet", "washing room"),
    ("door_sensor", "door-1", "Storeroom door", "storeroom"),
)
CAMERA_SPOTS = ("hot kitchen", "prep room", "washing room")

SITE_COLUMNS = (
    "site_id", "kind", "name", "subdistrict", "address",
    "category", "opening_hours", "lat", "lon",
)  # fmt: skip
DEVICE_COLUMNS = ("device_id", "site_id", "type", "name", "location")

CENTRE = (30.5928, 114.3055)


def _street(rng: random.Random) -> str:
    return f"{rng.choice(STREET_STEMS)} {rng.choice(STREET_KINDS)}"


def _point(rng: random.Random) -> tuple[str, str]:
    return (
        f"{CENTRE[0] + rng.uniform(-0.08, 0.08):.5f}",
        f"{CENTRE[1] + rng.uniform(-0.1, 0.1):.5f}",
    )


def kitchens(rng: random.Random) -> Iterator[tuple[dict[str, str], list[dict[str, str]]]]:
    for n in range(1, KITCHENS + 1):
        site_id = f"kitchen-{n:04d}"
        category = rng.choice(list(CATEGORIES))
        subdistrict = rng.choice(SUBDISTRICTS)
        lat, lon = _point(rng)
        site = {
            "site_id": site_id,
            "kind": "kitchen",
            "name": f"{subdistrict} {category.title()} No.{n}",
            "subdistrict": subdistrict,
            "address": f"{rng.randint(1, 400)} {_street(rng)}",
            "category": category,
            "opening_hours": CATEGORIES[category],
            "lat": lat,
            "lon": lon,
        }
        devices = [
            {
                "device_id": f"{site_id}-{suffix}",
                "site_id": site_id,
                "type": dtype,
                "name": name,
                "location": where,
            }
            for dtype, suffix, name, where in KITCHEN_SENSORS
        ]
        for c in range(1, rng.randint(1, 3) + 1):
            devices.append(
                {
                    "device_id": f"{site_id}-cam-{c}",
                    "site_id": site_id,
                    "type": "kitchen_camera",
                    "name": f"Camera {c}",
                    "location": CAMERA_SPOTS[c - 1],
                }
            )
        yield site, devices


def street_grids(rng: random.Random) -> Iterator[tuple[dict[str, str], list[dict[str, str]]]]:
    # Cameras per grid vary (3 to 9) but always add up to STREET_CAMERAS.
    counts = [STREET_CAMERAS // STREET_GRIDS] * STREET_GRIDS
    for _ in range(STREET_GRIDS * 2):
        a, b = rng.randrange(STREET_GRIDS), rng.randrange(STREET_GRIDS)
        if counts[a] < 9 and counts[b] > 3:
            counts[a] += 1
            counts[b] -= 1
    camera = 0
    for n, count in enumerate(counts, start=1):
        site_id = f"grid-{n:04d}"
        subdistrict = SUBDISTRICTS[(n - 1) * len(SUBDISTRICTS) // STREET_GRIDS]
        lat, lon = _point(rng)
        streets = [_street(rng) for _ in range(2)]
        site = {
            "site_id": site_id,
            "kind": "street_grid",
            "name": f"{subdistrict} grid {n}",
            "subdistrict": subdistrict,
            "address": " / ".join(streets),
            "category": "",
            "opening_hours": "",
            "lat": lat,
            "lon": lon,
        }
        devices = []
        for _ in range(count):
            camera += 1
            devices.append(
                {
                    "device_id": f"street-cam-{camera:05d}",
                    "site_id": site_id,
                    "type": "street_camera",
                    "name": f"Street camera {camera}",
                    "location": f"{rng.choice(streets)} no.{rng.randint(1, 300)}",
                }
            )
        yield site, devices


def generate(out_dir: Path, seed: int = SEED) -> tuple[int, int]:
    """Write sites.csv and devices.csv; return (sites, devices) written."""
    rng = random.Random(seed)
    sites: list[dict[str, str]] = []
    devices: list[dict[str, str]] = []
    for site, site_devices in (*kitchens(rng), *street_grids(rng)):
        sites.append(site)
        devices.extend(site_devices)
    for name, columns, rows in (
        ("sites.csv", SITE_COLUMNS, sites),
        ("devices.csv", DEVICE_COLUMNS, devices),
    ):
        with (out_dir / name).open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
    return len(sites), len(devices)
