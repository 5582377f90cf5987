"""The demo page in a real Chromium (Debian's /usr/bin/chromium via Playwright's sync API).

Crash, wait past the idle threshold, XAUTOCLAIM to the preselected peer, see the pending table
empty and the live charts move; then, with a long threshold in a 420 px window, why a claim took
nothing, where each answer shows up, and that no header or ID breaks. Every wait is on a page
condition, never a sleep. Every request that is not for localhost is aborted and recorded, and
the tests assert there were none. The screenshots land in test-output/.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, Route, expect, sync_playwright

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
LONG_CLAIM_IDLE_MS = 60_000
#: What the page may load: this machine only (the demo, its charts, its live feed).
LOCAL_URL = re.compile(r"^(https?|wss?)://(127\.0\.0\.1|localhost|\[::1\])(:\d+)?/")

pytestmark = pytest.mark.browser


@pytest.fixture()
def start_demo(private_server: EmbeddedServer, key: str) -> Iterator[Callable[[int], str]]:
    """Start the demo command against a private server with the given claim idle time."""
    procs: list[subprocess.Popen[str]] = []

    def start(claim_idle_ms: int) -> str:
        proc = _start_demo(private_server, key, claim_idle_ms)
        procs.append(proc[0])
        return proc[1]

    try:
        yield start
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
            try:
                assert proc.wait(5) == 0
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()


@pytest.fixture()
def demo_url(start_demo: Callable[[int], str]) -> str:
    """The demo with a short claim idle time."""
    return start_demo(CLAIM_IDLE_MS)


def _start_demo(
    private_server: EmbeddedServer, key: str, claim_idle_ms: int
) -> tuple[subprocess.Popen[str], str]:
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
            str(claim_idle_ms),
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
    return proc, f"http://127.0.0.1:{port}"


@pytest.fixture()
def offsite() -> list[str]:
    """URLs the page tried to load from anywhere but this machine (each one was aborted)."""
    return []


@pytest.fixture()
def page(offsite: list[str], request: pytest.FixtureRequest) -> Iterator[Page]:
    if not os.path.exists(CHROMIUM):  # make test installs it; missing is a broken setup
        raise RuntimeError(f"{CHROMIUM} is missing; run `make test` (it installs chromium)")
    width = getattr(request, "param", 1280)

    def local_only(route: Route) -> None:
        url = route.request.url
        if LOCAL_URL.match(url):
            route.continue_()
        else:
            offsite.append(url)
            route.abort()

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": width, "height": 1000})
        context.route("**/*", local_only)
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


# The largest value on a chart's y axis, from the SVG's text (pygal draws the axis to fit the
# data: all zeros give 1). Read as text: parsing it in the page would apply its inline <style>
# under the page's CSP.
Y_MAX_OF_SVG = r"""(svg) => {
    const start = svg.indexOf('class="axis y');
    if (start < 0) return -1;
    const values = [];
    for (const m of svg.slice(start).matchAll(/<text[^>]*>([^<]*)<\/text>/g)) {
        const n = Number(m[1]);
        if (!Number.isFinite(n)) break;  // the y labels come first, then the x axis'
        values.push(n);
    }
    return values.length ? Math.max(...values) : -1;
}"""

# The y-axis maximum of the chart image the page shows now.
CHART_Y_MAX = f"""async (name) => {{
    const img = document.getElementById(`chart-${{name}}`);
    if (!img || !img.complete || !img.naturalWidth) return -1;
    return ({Y_MAX_OF_SVG})(await (await fetch(img.src)).text());
}}"""

CHART_TEXT = """async (name) => (await fetch(`/charts/${name}.svg`)).text()"""


def chart_seq(page: Page, name: str) -> int:
    return int(page.locator(f"#chart-{name}").get_attribute("data-seq") or 0)


def wait_chart_above(page: Page, name: str, value: float, after_seq: int) -> None:
    """Wait until the page shows a chart image newer than ``after_seq`` whose y axis goes
    above ``value``. The predicate is synchronous (wait_for_function does not await a promise):
    it starts reading the shown image's SVG and answers on a later poll; each newer image the
    page loads is read in turn."""
    page.wait_for_function(
        f"""([name, value, after]) => {{
            const img = document.getElementById(`chart-${{name}}`);
            if (!img.naturalWidth || Number(img.dataset.seq || 0) <= after) return false;
            const seen = (window.__chartYMax ||= {{}});
            const mine = seen[name];
            if (!mine || mine.src !== img.src) {{
                const entry = (seen[name] = {{ src: img.src, value: null }});
                fetch(img.src).then((r) => r.text()).then((svg) => {{
                    entry.value = ({Y_MAX_OF_SVG})(svg);
                }});
                return false;
            }}
            return mine.value !== null && mine.value > value;
        }}""",
        arg=[name, value, after_seq],
    )


def test_crash_then_xautoclaim_in_the_browser(
    page: Page, demo_url: str, private_server: EmbeddedServer, offsite: list[str]
) -> None:
    errors: list[str] = []
    requests: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("request", lambda r: requests.append(r.url))

    # 1. the app runs with --claim-idle-ms 300; the page goes live over SSE and shows the
    #    thresholds it judges by (stuck: twice the claim idle, at least 1 s).
    page.goto(demo_url)
    expect(page.locator("#live")).to_have_text("live")
    expect(card(page, "notifications", "worker-a")).to_be_visible()
    expect(page.locator("#claim-idle")).to_have_text("0.3 s")
    expect(page.locator("#claim-threshold")).to_have_text("0.3 s")
    expect(page.locator("#health-thresholds")).to_contain_text("idle over 1.0 s")
    expect(page.locator("#health-thresholds")).to_contain_text("lag > 1000")
    expect(page.locator("#legend")).to_contain_text("twice")

    # The charts are there before anything happens: SVG images served by the demo itself.
    for name in ("rates", "backlog"):
        expect(page.locator(f"#chart-{name}")).to_be_visible()
        page.wait_for_function(
            "(name) => document.getElementById(`chart-${name}`).naturalWidth > 0", arg=name
        )
        assert page.evaluate(CHART_Y_MAX, name) <= 1  # nothing produced yet: an empty axis
    assert ">produced<" in page.evaluate(CHART_TEXT, "rates")
    backlog = page.evaluate(CHART_TEXT, "backlog")
    for series in ("lag notifications", "pending notifications", "lag analytics"):
        assert f">{series}<" in backlog

    # worker-b sits out for a moment so the crash lands on worker-a for certain.
    card(page, "notifications", "worker-b").get_by_role("button", name="Pause").click()
    expect(card(page, "notifications", "worker-b").locator(".badge.paused")).to_be_visible()
    expect(card(page, "notifications", "worker-b").locator(".card-result")).to_contain_text(
        "paused"
    )

    # 2. produce events; worker-a and worker-c handle them. The answer shows in the panel.
    before = chart_seq(page, "rates")
    page.fill("#produce-count", "10")
    page.get_by_role("button", name="Produce").click()
    expect(page.locator("#produce-result")).to_contain_text("produced 10 events")
    expect(page.locator("#stat-length")).to_have_text("10")
    expect(counter(page, "notifications", "worker-a", "processed")).to_have_text("10")
    expect(counter(page, "analytics", "worker-c", "processed")).to_have_text("10")
    # The rates chart moves off zero (10 events over a few seconds) from the live samples.
    wait_chart_above(page, "rates", 1, before)

    # Stream IDs carry their wall-clock time on hover.
    first_id = page.locator("#tail-body .id").first
    expect(first_id).to_have_attribute("title", re.compile(r"^added \d{4}-\d\d-\d\d \d\d:"))

    # 3. "Crash next 3" on worker-a, then more events: it drops three without acking.
    card(page, "notifications", "worker-a").get_by_role("button", name="Crash next 3").click()
    expect(card(page, "notifications", "worker-a").locator(".badge.drop")).to_have_text(
        "will drop 3"
    )
    expect(card(page, "notifications", "worker-a").locator(".card-result")).to_contain_text(
        "crash asked: drops its next 3"
    )
    before = chart_seq(page, "backlog")
    page.get_by_role("button", name="Produce").click()
    expect(page.locator("#stat-length")).to_have_text("20")
    pending_rows = page.locator("#pending-body tr")
    expect(pending_rows).to_have_count(3)
    expect(counter(page, "notifications", "worker-a", "processed")).to_have_text("17")
    expect(counter(page, "notifications", "worker-a", "pending")).to_have_text("3")
    expect(card(page, "notifications", "worker-a").locator(".badge.drop")).to_have_count(0)
    # The three drops stay listed although seven acks came after them (only 8 are "newest").
    expect(card(page, "notifications", "worker-a").locator(".outcome.dropped")).to_have_count(3)
    # The backlog chart shows the 3 pending entries.
    wait_chart_above(page, "backlog", 2, before)
    card(page, "notifications", "worker-b").get_by_role("button", name="Resume").click()
    expect(card(page, "notifications", "worker-b").locator(".badge.paused")).to_have_count(0)

    # 4. wait (on the page's own numbers) until every pending entry is past the threshold;
    #    the rows say so and are highlighted.
    page.wait_for_function(
        """(threshold) => {
            const rows = [...document.querySelectorAll('#pending-body tr')];
            return rows.length === 3 && rows.every(
                (r) => Number(r.querySelector('[data-field=idle]').dataset.ms) >= threshold);
        }""",
        arg=CLAIM_IDLE_MS,
    )
    expect(page.locator("#pending-body tr.claimable")).to_have_count(3)
    expect(page.locator("#pending-body [data-field=claimable]").first).to_have_text("now")
    expect(page.locator("#pending-body [data-field=idle]").first).to_have_text(
        re.compile(r"^\d+\.\d s$")
    )

    # 5. XAUTOCLAIM goes to the preselected target: the running peer in the group whose
    #    entries are pending (not analytics/worker-c, the first in the list).
    expect(page.locator("#claim-target")).to_have_value("notifications/worker-b")
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
    expect(card(page, "notifications", "worker-b").locator(".outcome.acked").first).to_have_text(
        "acked (reaped)"
    )

    # 7. keep a screenshot, after one more burst the rates chart shows.
    before = chart_seq(page, "rates")
    page.get_by_role("button", name="Produce").click()
    expect(page.locator("#stat-length")).to_have_text("30")
    wait_chart_above(page, "rates", 1, before)
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

    # The page never polled /state: the numbers arrived over the one live feed (the charts are
    # images drawn from the samples that feed takes).
    assert not [u for u in requests if re.search(r"/state\b", u)]
    assert [u for u in requests if u.endswith("/events")]
    assert [u for u in requests if "/charts/rates.svg" in u]

    # When Redis goes away the page says so plainly.
    private_server.kill()
    expect(page.locator("#banner")).to_contain_text("Redis unreachable")
    expect(page.locator("#banner")).to_be_visible()
    assert errors == [], errors
    assert offsite == [], offsite  # nothing was asked of any other host


# Every word of every table header, and every stream ID, on one line (getClientRects gives a
# rectangle per line box a piece of text occupies).
SPLIT_WORDS = r"""() => {
    const split = [];
    for (const th of document.querySelectorAll("th")) {
        const text = th.firstChild;
        if (!text || text.nodeType !== Node.TEXT_NODE) continue;
        const re = /\S+/g;
        let m;
        while ((m = re.exec(text.data))) {
            const range = document.createRange();
            range.setStart(text, m.index);
            range.setEnd(text, m.index + m[0].length);
            if (range.getClientRects().length > 1) split.push(`th: ${m[0]}`);
        }
    }
    for (const id of document.querySelectorAll(".id")) {
        if (id.getClientRects().length > 1) split.push(`id: ${id.textContent}`);
    }
    return split;
}"""


@pytest.mark.parametrize("page", [420], indirect=True)
def test_narrow_page_explains_an_empty_claim(
    page: Page, start_demo: Callable[[int], str], offsite: list[str]
) -> None:
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(start_demo(LONG_CLAIM_IDLE_MS))
    expect(page.locator("#live")).to_have_text("live")
    expect(page.locator("#claim-threshold")).to_have_text("60.0 s")
    expect(page.locator("#health-thresholds")).to_contain_text("idle over 120 s")

    # worker-a drops three entries; worker-b is paused meanwhile so they land on worker-a.
    card(page, "notifications", "worker-b").get_by_role("button", name="Pause").click()
    expect(card(page, "notifications", "worker-b").locator(".badge.paused")).to_be_visible()
    card(page, "notifications", "worker-a").get_by_role("button", name="Crash next 3").click()
    expect(card(page, "notifications", "worker-a").locator(".badge.drop")).to_be_visible()
    page.get_by_role("button", name="Produce").click()
    expect(page.locator("#pending-body tr")).to_have_count(3)
    card(page, "notifications", "worker-b").get_by_role("button", name="Resume").click()

    # None is claimable for a minute: no row is highlighted, each says how long to go.
    expect(page.locator("#pending-body tr.claimable")).to_have_count(0)
    expect(page.locator("#pending-body [data-field=claimable]").first).to_have_text(
        re.compile(r"^in \d+(\.\d)? s$")
    )

    # The preselected target is worker-b of notifications; a claim now takes nothing and the
    # answer (next to the button) says why: pending, but not idle long enough yet.
    expect(page.locator("#claim-target")).to_have_value("notifications/worker-b")
    page.get_by_role("button", name="XAUTOCLAIM to selected").click()
    result = page.locator("#claim-result")
    expect(result).to_contain_text("claimed 0 into notifications/worker-b")
    expect(result).to_contain_text("claimable in")

    # Picked by hand: a consumer of a group with nothing pending. The page says so before the
    # click, and the answer says why nothing was claimed.
    page.select_option("#claim-target", "analytics/worker-c")
    expect(page.locator("#claim-hint")).to_contain_text("analytics has nothing pending")
    page.get_by_role("button", name="XAUTOCLAIM to selected").click()
    expect(result).to_contain_text("claimed 0 into analytics/worker-c")
    expect(result).to_contain_text("no pending entries")

    # Answers and errors appear in the panel that asked, not at the top of the page.
    page.fill("#add-name", "worker-a")
    page.get_by_role("button", name="Add consumer").click()
    expect(page.locator("#add-result.error")).to_contain_text("already runs")
    page.select_option("#trim-by", "minid")
    page.fill("#trim-value", "not-an-id")
    page.get_by_role("button", name="Trim").click()
    expect(page.locator("#trim-result.error")).to_contain_text("/trim")

    # A failed replay clears the rows of the last one, which would pass for its answer.
    page.get_by_role("button", name="Replay").click()
    expect(page.locator("#replay-body tr")).to_have_count(10)
    expect(page.locator("#replay-result")).to_contain_text("replayed 10 entries")
    page.fill("#replay-start", "bogus")
    page.get_by_role("button", name="Replay").click()
    expect(page.locator("#replay-result.error")).to_contain_text("/replay")
    expect(page.locator("#replay-body tr")).to_have_count(0)

    # At 420 px: no header word and no ID is split, and the page does not scroll sideways.
    assert page.evaluate(SPLIT_WORDS) == []
    assert page.evaluate("document.documentElement.scrollWidth") <= 420
    for name in ("rates", "backlog"):
        box = page.locator(f"#chart-{name}").bounding_box()
        assert box is not None and 0 < box["width"] <= 420
    OUTPUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUTPUT / "demo-browser-420.png"), full_page=True)
    assert errors == [], errors
    assert offsite == [], offsite
