"""/docs (Swagger UI) renders in Chromium with no network beyond this machine.

Its script and styles come from the fastapi-offline package the demo extra installs, served by
the demo itself. Every request Chromium tries off 127.0.0.1 is aborted and recorded: there must
be none, and the page must still render the API and run an operation.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest
import uvicorn
from playwright.sync_api import Page, Route, expect, sync_playwright

from redis_streaming import EmbeddedServer
from redis_streaming.demo import DemoConfig, create_app
from waiting import wait_until

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
LOCAL_HOSTS = ("127.0.0.1", "localhost")

pytestmark = pytest.mark.browser


@pytest.fixture()
def demo_url(private_server: EmbeddedServer, key: str) -> Iterator[str]:
    """The demo app under uvicorn on a free port, against a private server."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = create_app(DemoConfig(redis_url=private_server.url, stream_key=key, port=port))
    srv = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_until(lambda: srv.started or not thread.is_alive(), what="uvicorn to start")
    assert srv.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        app.state.runtime.closing.set()
        srv.should_exit = True
        thread.join(30)
        sock.close()


@pytest.fixture()
def offline_page() -> Iterator[tuple[Page, list[str]]]:
    """A Chromium page that can reach only this machine; off-host requests are listed."""
    if not os.path.exists(CHROMIUM):  # make test installs it; missing is a broken setup
        raise RuntimeError(f"{CHROMIUM} is missing; run `make test` (it installs chromium)")
    blocked: list[str] = []

    def only_local(route: Route) -> None:
        if urlsplit(route.request.url).hostname in LOCAL_HOSTS:
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort("internetdisconnected")

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 1000})
        context.route("**/*", only_local)
        page = context.new_page()
        page.set_default_timeout(15_000)
        try:
            yield page, blocked
        finally:
            context.close()
            browser.close()


def test_swagger_ui_renders_offline(demo_url: str, offline_page: tuple[Page, list[str]]) -> None:
    page, blocked = offline_page
    errors: list[str] = []
    requested: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("request", lambda r: requested.append(r.url))

    response = page.goto(f"{demo_url}/docs")
    assert response is not None and response.ok
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("redis-streaming demo")
    operations = page.locator(".opblock")
    expect(operations.first).to_be_visible()
    expect(operations).to_have_count(15)
    expect(page.locator(".opblock-summary-path", has_text="/autoclaim")).to_be_visible()

    # Try one operation from the page: the request goes to the demo and the answer shows.
    page.locator('.opblock-summary-get:has([data-path="/state"])').click()
    page.get_by_role("button", name="Try it out").click()
    page.get_by_role("button", name="Execute").click()
    status = page.locator(".live-responses-table tr.response .response-col_status")
    expect(status).to_have_text("200")

    assert blocked == [], blocked
    assert all(urlsplit(u).hostname in LOCAL_HOSTS for u in requested), requested
    assert any("/static-offline-docs/swagger-ui-bundle.js" in u for u in requested)
    assert errors == [], errors


def test_redoc_is_off_rather_than_half_online(demo_url: str) -> None:
    # ReDoc's bundle fetches its logo from its vendor's CDN, so the demo does not serve it.
    assert httpx.get(f"{demo_url}/redoc").status_code == 404
