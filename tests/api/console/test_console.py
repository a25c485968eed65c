"""What a supervisor does in the console, in real headless Chromium: sign in and out, watch
alerts arrive and handle them, see only their own kitchen, watch a camera live, and read the
page in Chinese or English."""

from __future__ import annotations

import re
import subprocess
from typing import Any

from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.api.console.conftest import (
    CAMERA,
    KITCHEN,
    OTHER_CAMERA,
    OTHER_KITCHEN,
    District,
    new_context,
    screenshot,
    sign_in,
)
from tests.support import wait_until


def gas_alert(district: District, site: str) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        response = district.admin.get("/api/v1/alerts", params={"kind": "gas_leak", "site": site})
        response.raise_for_status()
        items: list[dict[str, Any]] = response.json()["items"]
        return items[0] if items else None

    return wait_until(found, 60, f"the simulator's gas alarm at {site} to be an alert")


def test_sign_in_refuses_a_wrong_token_and_sign_out_ends_the_session(
    context: BrowserContext, district: District
) -> None:
    page = context.new_page()
    page.goto("/console/")
    expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    expect(page.locator("form.signin h1")).to_have_text("登录监管控制台")
    screenshot(page, "sign-in")

    page.fill("#token", "mlt_not-a-token-of-ours")
    page.click("form.signin button[type=submit]")
    refusal = district.admin.post("/api/v1/session", json={"token": "mlt_not-a-token-of-ours"})
    assert refusal.status_code == 401
    expect(page.locator("form.signin .message.error")).to_have_text(refusal.json()["detail"])
    expect(page.locator("#bar")).to_be_hidden()

    sign_in(page, district.supervisor)
    expect(page.locator("#who")).to_contain_text("监管员")
    cookie = next(c for c in context.cookies() if c["name"] == "mingliang_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert page.request.get("/api/v1/alerts").ok  # the session, not a token in the page

    page.click("#signout")
    expect(page.locator("form.signin .message")).to_have_text("已退出登录。")
    assert page.request.get("/api/v1/alerts").status == 401
    page.reload()
    expect(page.locator("form.signin")).to_be_visible()
    expect(page.locator("#bar")).to_be_hidden()


def test_an_alert_arrives_live_and_acknowledging_it_reaches_the_api_and_another_browser(
    browser: Browser, district: District, request: Any
) -> None:
    pages: list[Page] = []
    for _ in range(2):
        page = new_context(browser, district).new_page()
        sign_in(page, district.supervisor)
        expect(page.locator(".live.on")).to_be_visible()  # following the change feed
        pages.append(page)
    first, second = pages
    try:
        kitchens: subprocess.Popen[bytes] = request.getfixturevalue("kitchens")
        assert kitchens.poll() is None, "the kitchen simulator stopped"
        alert = gas_alert(district, KITCHEN)
        row = f"tr[data-alert-id='{alert['id']}']"
        for page in pages:  # no reload: the row comes over Server-Sent Events
            expect(page.locator(row)).to_contain_text("燃气泄漏")
            expect(page.locator(f"{row} td.status")).to_have_text("待处理")
        expect(first.locator("#critical")).to_contain_text("紧急告警")
        screenshot(first, "alerts")

        first.click(f"{row} a")
        expect(first.locator("#alert-status")).to_have_attribute("data-status", "open")
        expect(first.locator("button[data-action='acknowledge']")).to_be_visible()
        first.click("button[data-action='acknowledge']")
        expect(first.locator("#alert-status")).to_have_attribute("data-status", "acknowledged")
        # Offered only what the life cycle allows now.
        expect(first.locator("button[data-action='acknowledge']")).to_have_count(0)
        expect(first.locator("button[data-action='resolve']")).to_be_visible()
        expect(first.locator(".history li[data-action='acknowledged']")).to_be_visible()
        screenshot(first, "alert-detail")

        stored = district.admin.get(f"/api/v1/alerts/{alert['id']}").json()
        assert stored["status"] == "acknowledged"
        assert stored["acknowledged_by"] and stored["acknowledged_by"].startswith("supervisor")
        expect(second.locator(f"{row} td.status")).to_have_text("已确认")
    finally:
        for page in pages:
            page.context.close()


def test_a_supervisor_of_one_kitchen_sees_nothing_of_another(
    context: BrowserContext, district: District, kitchens: subprocess.Popen[bytes]
) -> None:
    theirs = gas_alert(district, OTHER_KITCHEN)
    ours = gas_alert(district, KITCHEN)
    page = context.new_page()
    sign_in(page, district.supervisor)
    page.goto("/console/#/alerts?status=")
    expect(page.locator(f"tr[data-alert-id='{ours['id']}']")).to_be_visible()
    expect(page.locator(f"tr[data-alert-id='{theirs['id']}']")).to_have_count(0)
    site_options = page.locator("select[name='site'] option").all_text_contents()
    assert not any(OTHER_KITCHEN in o for o in site_options)

    page.goto(f"/console/#/alerts/{theirs['id']}")
    expect(page.locator("main .message.error")).to_contain_text(OTHER_KITCHEN)

    page.goto("/console/#/wall")
    expect(page.locator(f".tile[data-camera-id='{CAMERA}']")).to_be_visible()
    expect(page.locator(f".tile[data-camera-id='{OTHER_CAMERA}']")).to_have_count(0)

    # The session itself, calling the API directly, is held to the same scope.
    api = page.request
    assert api.get("/api/v1/alerts", params={"site": OTHER_KITCHEN}).status == 403
    listed = api.get("/api/v1/alerts", params={"limit": 500}).json()["items"]
    assert listed and {a["site_id"] for a in listed} == {KITCHEN}
    assert api.get(f"/api/v1/alerts/{theirs['id']}").status == 403
    assert {c["site_id"] for c in api.get("/api/v1/cameras").json()} == {KITCHEN}
    assert api.get(f"/api/v1/cameras/{OTHER_CAMERA}/snapshot.jpg").status == 403
    assert (
        api.post(
            f"/whep/{OTHER_CAMERA}", headers={"Content-Type": "application/sdp"}, data="v=0"
        ).status
        == 403
    )


def test_the_live_view_plays(context: BrowserContext, district: District) -> None:
    page = context.new_page()
    sign_in(page, district.supervisor)
    page.goto("/console/#/wall")
    tile = page.locator(f".tile[data-camera-id='{CAMERA}']")
    expect(tile.locator(".badge.online")).to_be_visible()
    expect(tile.locator("img")).to_have_attribute("src", re.compile(r"snapshot\.jpg"))
    screenshot(page, "video-wall")

    tile.click()
    page.wait_for_function("() => document.querySelector('#live')?.videoWidth > 0")
    width = page.eval_on_selector("#live", "v => v.videoWidth")
    assert width == 320
    start = page.eval_on_selector("#live", "v => v.currentTime")
    page.wait_for_function(f"() => document.querySelector('#live').currentTime > {start} + 1")
    screenshot(page, "live-view")

    # Leaving the page ends the viewing session on the server.
    page.goto("/console/#/alerts")
    wait_until(
        lambda: (
            next(
                c for c in district.admin.get("/api/v1/cameras").json() if c["camera_id"] == CAMERA
            )["viewers"]
            == 0
        ),
        30,
        "the viewer's place to be freed",
    )


def test_the_page_is_in_chinese_and_switches_to_english(
    context: BrowserContext, district: District, kitchens: subprocess.Popen[bytes]
) -> None:
    page = context.new_page()
    sign_in(page, district.supervisor)
    expect(page.locator("nav [data-nav='alerts']")).to_have_text("告警")
    expect(page.locator("table.alerts th").first).to_have_text("首次发生")
    page.click("#lang")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.locator("nav [data-nav='alerts']")).to_have_text("Alerts")
    expect(page.locator("nav [data-nav='wall']")).to_have_text("Video wall")
    expect(page.locator("table.alerts th").first).to_have_text("First seen")
    expect(page.locator("#signout")).to_have_text("Sign out")

    gas_alert(district, KITCHEN)
    wait_until(
        lambda: any(
            d["last_seen_ms"]
            for d in district.admin.get("/api/v1/devices", params={"site": KITCHEN}).json()[
                "devices"
            ]
        ),
        60,
        "the kitchen's readings in InfluxDB",
    )
    page.goto(f"/console/#/sites/{KITCHEN}")
    expect(page.locator("main h1")).to_be_visible()
    expect(page.locator("main")).to_contain_text("Sensors")
    expect(page.locator("main")).to_contain_text("Gas leak")
    expect(page.locator("figure.chart").first).to_be_visible()
    screenshot(page, "kitchen-page-en")

    page.reload()  # the choice is kept
    expect(page.locator("nav [data-nav='sites']")).to_have_text("Sites")
    page.click("#lang")
    expect(page.locator("nav [data-nav='sites']")).to_have_text("单位")
    page.goto("/console/#/sites")
    expect(page.locator(f"tr[data-site-id='{KITCHEN}']")).to_be_visible()
    screenshot(page, "directory")


def test_the_console_is_served_with_a_strict_policy(district: District) -> None:
    api = district.admin
    assert api.get("/", follow_redirects=False).headers["location"] == "/console/"
    page = api.get("/console/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    script = api.get("/console/assets/js/main.js")
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert script.headers["x-content-type-options"] == "nosniff"
    assert api.get("/console/assets/../../session.py").status_code == 404
    assert api.get("/console/assets/%2e%2e/__init__.py").status_code == 404
