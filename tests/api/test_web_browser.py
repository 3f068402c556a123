"""The web UI in a real browser: Debian's Chromium, headless, driven by Playwright.

A landlord logs in, enrols a tenant by tapping the card at the unit's reader
(a FIFO line reader, as a serial reader would write), sees the tenant's next
tap appear on the live events page without reloading, and sees the alert the
residence rules raise for a newcomer. Screenshots go to a temporary folder, or
to `docs/screenshots/` with RENTGATE_UPDATE_SCREENSHOTS=1 (how the README's
pictures are made).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright

from tests.support import REPO
from tests.support.web import PASSWORD, WebGateway

CHROMIUM = Path("/usr/bin/chromium")
DOCS = REPO / "docs" / "screenshots"
NEW_CARD = "0E0E0E0E"
NEW_TENANT = {"name": "王小明", "id_number": "330106199003071236"}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM.exists(), "needs Debian's chromium: scripts/setup --dev installs it"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox"], headless=True
        )
        yield launched
        launched.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    if os.environ.get("RENTGATE_UPDATE_SCREENSHOTS") == "1":
        DOCS.mkdir(parents=True, exist_ok=True)
        return DOCS
    return tmp_path


def _page(browser: Browser, web: WebGateway, *, phone: bool = False) -> tuple[Page, list[str]]:
    context = browser.new_context(
        base_url=web.url,
        ignore_https_errors=True,  # the gateway's own self-signed certificate
        locale="zh-CN",
        viewport={"width": 390, "height": 844} if phone else {"width": 1280, "height": 860},
        device_scale_factor=1,
    )
    page = context.new_page()
    errors: list[str] = []

    def console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(message.text)

    page.on("console", console)
    return page, errors


def _log_in(page: Page, account: str) -> None:
    page.goto("/ui/login")
    page.fill("input[name=name]", account)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    expect(page).to_have_url(f"{page.url.split('/ui/')[0]}/ui/")


def test_landlord_enrols_by_tap_sees_the_live_event_and_the_alert(
    browser: Browser, web: WebGateway, shots: Path
) -> None:
    page, errors = _page(browser, web)
    _log_in(page, "landlord_a")
    expect(page.locator("#link-state")).to_have_text("已连接")
    page.screenshot(path=str(shots / "dashboard.png"), full_page=True)

    # Enrol by tap: arm the capture at the unit's reader, tap the card there.
    page.click("header nav a[href='/ui/tenants']")
    page.click("#enrol-link")
    page.fill("input[name=name]", NEW_TENANT["name"])
    page.fill("input[name=id_number]", NEW_TENANT["id_number"])
    page.select_option("#tap-door", "unit-101")
    page.click("#tap-button")
    expect(page.locator("#tap-state")).to_have_text("请在读卡器上刷卡…")
    threading.Timer(0.5, web.tap, ("unit-101", NEW_CARD)).start()
    expect(page.locator("#tap-state")).to_contain_text("已读到卡", timeout=15_000)
    expect(page.locator("#tap-state")).to_contain_text("0E0*0E0E")
    page.screenshot(path=str(shots / "enrol-by-tap.png"), full_page=True)
    page.click("#enrol-submit")
    expect(page.locator("[role=status]")).to_have_text("已保存")
    expect(page.locator("#cards")).to_contain_text("0E0*0E0E")
    expect(page.locator("#id-number")).to_have_text("330***********1236")
    page.screenshot(path=str(shots / "tenant.png"), full_page=True)
    web.wait_for_index()

    # The live events page: the tenant's next tap appears without a reload.
    page.click("a[href='/ui/events']")
    expect(page.locator("#live-state")).to_be_visible()
    rows_before = page.locator("#events tbody tr").count()
    page.wait_for_timeout(500)  # the stream is open before the tap
    web.tap("front", NEW_CARD)
    fresh = page.locator("#events tbody tr.fresh").first
    expect(fresh).to_contain_text("通过", timeout=15_000)
    expect(fresh).to_contain_text("front")
    expect(fresh).to_contain_text("0E0*0E0E")
    assert page.locator("#events tbody tr").count() > rows_before
    page.screenshot(path=str(shots / "live-events.png"), full_page=True)

    # The newcomer was seen: the rules raise "register within 3 days".
    due = "#alerts [data-rule='registration.due']"
    for _attempt in range(20):
        page.goto("/ui/alerts")
        alert = page.locator(due).filter(has_text="330***********1236")
        if alert.count():
            break
        page.wait_for_timeout(500)
    expect(alert).to_contain_text("新租户须在入住 3 日内办理居住登记")
    expect(alert).to_contain_text("请带租户到派出所或通过平台办理居住登记")
    page.screenshot(path=str(shots / "alerts.png"), full_page=True)

    # English is one tap away, and stays chosen.
    page.click("a.lang")
    expect(alert).to_contain_text("A new tenant must register within 3 days")
    page.goto("/ui/")
    expect(page.locator("#link-state")).to_have_text("connected")
    assert errors == []


def test_the_tenant_list_reads_on_a_phone(browser: Browser, web: WebGateway, shots: Path) -> None:
    page, errors = _page(browser, web, phone=True)
    _log_in(page, "landlord_a")
    page.goto("/ui/tenants")
    table = page.locator("#tenants")
    expect(table).to_contain_text("张三")
    expect(table).not_to_contain_text("李四")  # landlord B's tenant
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, "no sideways scrolling on a phone"
    page.screenshot(path=str(shots / "tenants-phone.png"), full_page=True)
    assert errors == []


def test_a_wrong_password_is_refused_politely(browser: Browser, web: WebGateway) -> None:
    page, _errors = _page(browser, web)
    page.goto("/ui/login")
    page.fill("input[name=name]", "landlord_a")
    page.fill("input[name=password]", "not the password")
    page.click("button[type=submit]")
    expect(page.locator("[role=alert]")).to_have_text("用户名或密码错误")
    page.goto("/ui/tenants")
    expect(page).to_have_url(f"{web.url}/ui/login")
