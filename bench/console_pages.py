"""How fast the console's pages answer with the whole simulated district running, beside the
same pages once the district has gone quiet, in one run.

    python bench/console_pages.py [--rounds 5] [--settle 90]

Starts its own Mosquitto and InfluxDB, the real service (`python -m api serve`, camera workers
as configured), the kitchen simulator for every kitchen and street camera of the inventory
(`python -m simulators`) and the camera simulator (`python -m simulators.cameras`: WHIP
cameras and the RTSP street cameras), waits until every kitchen reports, then opens each page
--rounds times in headless Chromium (Debian's, driven by Playwright) as an administrator (the
widest view). A page counts as answered when it has rendered with its data (`main` no longer
busy: alerts listed, charts drawn, tiles placed; the live view when the video plays). Then the
simulators stop, and the same pages are timed again over the same data with nothing arriving.
Prints per page the median and worst time under load, the median when quiet and their ratio;
the target is under 1 s under load.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from playwright.sync_api import Page, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from camera_streams import make_tokens  # noqa: E402

from simulators.browser import CHROMIUM_ARGS, BrowserMissing, chromium  # noqa: E402
from simulators.local_services import Influxd, Mosquitto, free_port, stop_process  # noqa: E402
from simulators.rtsp import gstreamer_available  # noqa: E402

KITCHEN = "kitchen-0001"
CAMERA = "kitchen-0001-cam-1"


def pages(alert_id: int | None) -> dict[str, str]:
    found = {
        "alerts": "#/alerts",
        "directory (kitchens)": "#/sites",
        "directory (street grids)": "#/sites?kind=street_grid",
        "kitchen page": f"#/sites/{KITCHEN}",
        "video wall": f"#/wall?site={KITCHEN}",
        "video wall (all)": "#/wall",
    }
    if alert_id is not None:
        found["alert detail"] = f"#/alerts/{alert_id}"
    return found


def env_for(data: Path, broker: Mosquitto, influxd: Influxd, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINGLIANG_")}
    env.update(
        {
            "MINGLIANG_MQTT__HOST": broker.host,
            "MINGLIANG_MQTT__PORT": str(broker.port),
            "MINGLIANG_INFLUX__URL": influxd.url,
            "MINGLIANG_API__PORT": str(port),
            "MINGLIANG_PATHS__DATA_DIR": str(data),
        }
    )
    return env


@contextlib.contextmanager
def process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        child = subprocess.Popen(
            [sys.executable, *args], env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        yield child
    finally:
        stop_process(child)


def wait_for(what: str, check: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():  # type: ignore[operator]
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.5)  # polling interval of a condition


def timed(page: Page, base: str, route: str) -> float:
    page.goto("about:blank")  # a whole page load each time, not a change of the address's #
    started = time.perf_counter()
    page.goto(f"{base}/console/{route}")
    page.wait_for_selector("main[aria-busy='false'] .page > *", state="attached")
    return time.perf_counter() - started


def timed_live(page: Page, base: str) -> tuple[float, float]:
    """The live view: until the page has its WebRTC answer, and until the video plays."""
    page.goto("about:blank")
    started = time.perf_counter()
    page.goto(f"{base}/console/#/live/{CAMERA}")
    page.wait_for_selector("main[aria-busy='false'] .page > *", state="attached")
    answered = time.perf_counter() - started
    page.wait_for_function("() => document.querySelector('#live')?.videoWidth > 0")
    return answered, time.perf_counter() - started


def measure(
    page: Page, base: str, routes: dict[str, str], rounds: int, live: bool
) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in routes}
    if live:
        times["live view (answered)"] = []
        times["live view (video playing)"] = []
    for _ in range(rounds):
        for name, route in routes.items():
            times[name].append(timed(page, base, route))
        if live:
            answered, playing = timed_live(page, base)
            times["live view (answered)"].append(answered)
            times["live view (video playing)"].append(playing)
            page.goto(f"{base}/console/#/alerts")  # ends the viewing session
    return times


def shoot(page: Page, base: str, routes: dict[str, str], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    page.set_viewport_size({"width": 1366, "height": 860})
    for name, route in routes.items():
        timed(page, base, route)
        page.wait_for_timeout(2500)  # the wall's pictures arrive after the page answers
        slug = "".join(c if c.isalnum() else "-" for c in name).strip("-")
        page.screenshot(path=str(folder / f"{slug}.png"))
    print(f"screenshots in {folder}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="visits of each page per phase")
    parser.add_argument(
        "--settle", type=float, default=90, help="seconds to let the district run before timing"
    )
    parser.add_argument(
        "--screenshots",
        type=Path,
        help="save a screenshot of each page under load in this folder",
    )
    args = parser.parse_args()
    try:
        browser_path = chromium()
    except BrowserMissing as exc:
        raise SystemExit(str(exc)) from exc
    with tempfile.TemporaryDirectory(prefix="console-bench-") as folder:
        work = Path(folder)
        data = work / "data"
        data.mkdir()
        with contextlib.ExitStack() as stack:
            broker = stack.enter_context(Mosquitto(work / "mosquitto"))
            influxd = stack.enter_context(Influxd(work / "influxd"))
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            env = env_for(data, broker, influxd, port)
            service = stack.enter_context(
                process(["-m", "api", "serve", "--log-level", "warning"], env, work / "api.log")
            )
            wait_for("the service", lambda: httpx.get(f"{base}/healthz").status_code == 200, 90)
            if service.poll() is not None:
                raise SystemExit((work / "api.log").read_text()[-3000:])
            token, _ = make_tokens(data, [])
            api = stack.enter_context(
                httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"})
            )
            kitchens = stack.enter_context(
                process(
                    ["-m", "simulators", "--fault", f"gas_spike:{KITCHEN}@10s+1h"],
                    env,
                    work / "kitchens.log",
                )
            )
            camera_args = ["-m", "simulators.cameras", "--cameras", "8"]
            if gstreamer_available() is None:
                camera_args.append("--rtsp")
            cameras = stack.enter_context(process(camera_args, env, work / "cameras.log"))
            sites = api.get("/api/v1/sites", params={"kind": "kitchen"}).json()["count"]
            print(f"district: {sites} kitchens, street cameras, 8 WHIP + RTSP cameras; waiting")
            wait_for(
                "every kitchen to report",
                lambda: (
                    api.get("/api/v1/sites", params={"kind": "kitchen"}).json()["reporting"]
                    == sites
                ),
                300,
            )
            time.sleep(args.settle)  # the district running for a while: data and alerts pile up
            alerts = api.get("/api/v1/alerts", params={"kind": "gas_leak"}).json()["items"]
            routes = pages(alerts[0]["id"] if alerts else None)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=browser_path, args=CHROMIUM_ARGS
                )
                context = browser.new_context(locale="zh-CN", timezone_id="Asia/Shanghai")
                context.set_default_timeout(60_000)
                page = context.new_page()
                page.goto(f"{base}/console/")
                page.fill("#token", token)
                page.click("form.signin button[type=submit]")
                page.wait_for_selector("#bar:not([hidden])")
                loaded = measure(page, base, routes, args.rounds, live=True)
                if args.screenshots:
                    shoot(page, base, routes, args.screenshots)
                for child in (cameras, kitchens):
                    stop_process(child)
                time.sleep(5)  # the last messages drain
                quiet = measure(page, base, routes, args.rounds, live=False)
                browser.close()
    print(f"\n{'page':28} {'loaded median':>14} {'worst':>8} {'quiet median':>13} {'ratio':>6}")
    for name, values in loaded.items():
        median = statistics.median(values)
        still = quiet.get(name)
        quiet_text = f"{statistics.median(still) * 1000:10.0f} ms" if still else "           —"
        ratio = f"{median / statistics.median(still):6.2f}" if still else "     —"
        print(
            f"{name:28} {median * 1000:11.0f} ms {max(values) * 1000:5.0f} ms {quiet_text} {ratio}"
        )
    pages_only = {k: v for k, v in loaded.items() if k != "live view (video playing)"}
    worst = max(statistics.median(v) for v in pages_only.values())
    print(f"\nslowest page median under load: {worst * 1000:.0f} ms (target: under 1000 ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
