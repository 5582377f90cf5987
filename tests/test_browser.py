"""The demo page in a real Chromium (Debian's /usr/bin/chromium via Playwright's sync API).

Crash, wait past the idle threshold, XAUTOCLAIM to a peer, see the pending table empty; every
wait is on a page condition, never a sleep. The screenshot lands in test-output/.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from redis_streaming import EmbeddedServer
from redis_streaming.server import free_port

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "test-output"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
CLAIM_IDLE_MS = 300

pytestmark = pytest.mark.browser


@pytest.fixture()
def demo_url(private_server: EmbeddedServer, key: str) -> Iterator[str]:
    """The demo command running against a private server, with a short claim idle time."""
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "redis_streaming",
            "demo",
            "--port",
            str(port),
            "--redis-url",
            private_server.url,
            "--stream-key",
            key,
            "--claim-idle-ms",
            str(CLAIM_IDLE_MS),
            "--process-ms",
            "5",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "Demo listening" in line:
            break
    else:
        proc.wait()
        raise AssertionError("demo did not start: " + "".join(seen))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(5) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture()
def page() -> Iterator[Page]:
    if not os.path.exists(CHROMIUM):  # make test installs it; missing is a broken setup
        raise RuntimeError(f"{CHROMIUM} is missing; run `make test` (it installs chromium)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 1000})
        pg = context.new_page()
        pg.set_default_timeout(15_000)
        try:
            yield pg
        finally:
            context.close()
            browser.close()


def card(page: Page, group: str, name: str):  # type: ignore[no-untyped-def]
    return page.locator(f'[data-consumer="{group}/{name}"]')


def counter(page: Page, group: str, name: str, field: str):  # type: ignore[no-untyped-def]
    return card(page, group, name).locator(f'[data-field="{field}"]')


def test_crash_then_xautoclaim_in_the_browser(
    page: Page, demo_url: str, private_server: EmbeddedServer
) -> None:
    errors: list[str] = []
    requests: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("request", lambda r: requests.append(r.url))

    # 1. the app runs with --claim-idle-ms 300; the page goes live over SSE.
    page.goto(demo_url)
    expect(page.locator("#live")).to_have_text("live")
    expect(card(page, "notifications", "worker-a")).to_be_visible()
    expect(page.locator("#claim-idle")).to_have_text(str(CLAIM_IDLE_MS))

    # worker-b sits out for a moment so the crash lands on worker-a for certain.
    card(page, "notifications", "worker-b").get_by_role("button", name="Pause").click()
    expect(card(page, "notifications", "worker-b").locator(".badge.paused")).to_be_visible()

    # 2. produce events; worker-a and worker-c handle them.
    page.fill("#produce-count", "10")
    page.get_by_role("button", name="Produce").click()
    expect(page.locator("#stat-length")).to_have_text("10")
    expect(counter(page, "notifications", "worker-a", "processed")).to_have_text("10")
    expect(counter(page, "analytics", "worker-c", "processed")).to_have_text("10")

    # 3. "Crash next 3" on worker-a, then more events: it drops three without acking.
    card(page, "notifications", "worker-a").get_by_role("button", name="Crash next 3").click()
    expect(card(page, "notifications", "worker-a").locator(".badge.drop")).to_have_text(
        "will drop 3"
    )
    page.get_by_role("button", name="Produce").click()
    expect(page.locator("#stat-length")).to_have_text("20")
    pending_rows = page.locator("#pending-body tr")
    expect(pending_rows).to_have_count(3)
    expect(counter(page, "notifications", "worker-a", "processed")).to_have_text("17")
    expect(counter(page, "notifications", "worker-a", "pending")).to_have_text("3")
    expect(card(page, "notifications", "worker-a").locator(".badge.drop")).to_have_count(0)
    card(page, "notifications", "worker-b").get_by_role("button", name="Resume").click()
    expect(card(page, "notifications", "worker-b").locator(".badge.paused")).to_have_count(0)

    # 4. wait (on the page's own numbers) until every pending entry is past the threshold.
    page.wait_for_function(
        """(threshold) => {
            const rows = [...document.querySelectorAll('#pending-body tr')];
            return rows.length === 3 && rows.every(
                (r) => Number(r.querySelector('[data-field=idle]').textContent) >= threshold);
        }""",
        arg=CLAIM_IDLE_MS,
    )

    # 5. XAUTOCLAIM to worker-b.
    page.select_option("#claim-target", "notifications/worker-b")
    page.get_by_role("button", name="XAUTOCLAIM to selected").click()
    expect(page.locator("#claim-result")).to_contain_text("claimed 3, processed 3")

    # 6. the pending table empties and the counts move.
    expect(pending_rows).to_have_count(0)
    expect(page.locator("#pending-empty")).to_be_visible()
    expect(counter(page, "notifications", "worker-b", "reaped")).to_have_text("3")
    expect(counter(page, "notifications", "worker-a", "pending")).to_have_text("0")
    expect(page.locator("#stat-claimed")).to_have_text("3")
    expect(page.locator('[data-group="notifications"] [data-field="group-pending"]')).to_have_text(
        "0"
    )

    # 7. keep a screenshot.
    OUTPUT.mkdir(exist_ok=True)
    shot = OUTPUT / "demo-browser.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000

    # Values from the stream render as text: a script payload does nothing.
    for evil in ("<img src=x onerror=window.__xss=1>", "<script>window.__xss=2</script>"):
        status = page.evaluate(
            """async (type) => (await fetch('/produce', {method: 'POST',
                 headers: {'Content-Type': 'application/json'},
                 body: JSON.stringify({count: 1, type})})).status""",
            evil,
        )
        assert status == 200
    expect(page.locator("#tail-body")).to_contain_text("<script>window.__xss=2</script>")
    expect(page.locator("#tail-body")).to_contain_text("<img src=x onerror=window.__xss=1>")
    assert page.locator("#tail-body img, #tail-body script").count() == 0
    assert page.evaluate("window.__xss") is None

    # The page never polled: everything arrived over the one live feed.
    assert not [u for u in requests if re.search(r"/state\b", u)]
    assert [u for u in requests if u.endswith("/events")]

    # When Redis goes away the page says so plainly.
    private_server.kill()
    expect(page.locator("#banner")).to_contain_text("Redis unreachable")
    expect(page.locator("#banner")).to_be_visible()
    assert errors == [], errors
