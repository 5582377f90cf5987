"""``python -m redis_streaming demo`` as a real subprocess: server choice, banner, flags, shutdown.

Never points at port 6379: the embedded fallback is exercised through ``--embedded``.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from redis_streaming import EmbeddedServer, EventStream
from redis_streaming.server import free_port, ping
from waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent


class Demo:
    """A running demo process with its stdout collected line by line."""

    def __init__(self, *args: str) -> None:
        self.port = free_port()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "redis_streaming", "demo", "--port", str(self.port), *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self.stderr = ""
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def expect(self, pattern: str, timeout: float = 20.0) -> re.Match[str]:
        """Read output until a line matches ``pattern``."""
        for line in self.lines:
            m = re.search(pattern, line)
            if m:
                return m
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            self.lines.append(line)
            m = re.search(pattern, line)
            if m:
                return m
        raise AssertionError(f"no line matching {pattern!r}; got {self.lines} / {self.finish()}")

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> Any:
        r = httpx.get(self.base + path, timeout=10)
        assert r.status_code == 200, r.text
        return r.json()

    def post(self, path: str, body: dict[str, Any]) -> Any:
        r = httpx.post(self.base + path, json=body, timeout=10)
        assert r.status_code == 200, r.text
        return r.json()

    def stop(self, sig: int = signal.SIGTERM, within: float = 5.0) -> float:
        """Send ``sig`` and return how long the process took to exit (must be < ``within``)."""
        started = time.monotonic()
        self.proc.send_signal(sig)
        try:
            self.proc.wait(within)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"demo did not exit within {within} s after {sig}") from None
        took = time.monotonic() - started
        self.finish()
        return took

    def finish(self) -> str:
        if self.proc.poll() is None:
            return ""
        while True:
            try:
                line = self._queue.get(timeout=2)
            except queue.Empty:
                break
            if line is None:
                break
            self.lines.append(line)
        if self.proc.stderr is not None and not self.proc.stderr.closed:
            self.stderr = self.proc.stderr.read()
            self.proc.stderr.close()
        return self.stderr

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture()
def demos() -> Iterator[list[Demo]]:
    running: list[Demo] = []
    yield running
    for demo in running:
        demo.kill()


def run_fail(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "redis_streaming", "demo", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


# ---------------------------------------------------------------- tests


def test_embedded_server_banner_and_sigint_with_a_live_feed(demos: list[Demo], key: str) -> None:
    demo = Demo("--embedded", "--stream-key", key)
    demos.append(demo)
    url = demo.expect(r"Started the embedded Valkey server at (redis://\S+)").group(1)
    demo.expect(rf"Deleting existing data on {re.escape(key)}")
    demo.expect(rf"stream {re.escape(key)} with MAXLEN ~ 2000")
    demo.expect(r"Seeded 3 consumer\(s\) across 2 group\(s\)")
    demo.expect(rf"Demo listening on http://127\.0\.0\.1:{demo.port}")
    assert ping(url)
    doc = demo.get("/state")
    assert doc["redis"]["url"] == url
    assert {g["name"] for g in doc["groups"]} == {"notifications", "analytics"}

    # An open live feed must not hold up shutdown.
    first_event = threading.Event()

    def listen() -> None:
        try:
            with httpx.stream("GET", demo.base + "/events", timeout=30) as r:
                for line in r.iter_lines():
                    if line.startswith("event: state"):
                        first_event.set()
        except httpx.HTTPError:
            pass

    threading.Thread(target=listen, daemon=True).start()
    assert first_event.wait(10)
    took = demo.stop(signal.SIGINT)
    assert demo.proc.returncode == 0, demo.stderr
    assert took < 5.0
    assert "Traceback" not in demo.stderr
    assert not ping(url), "the embedded server must stop with the demo"


@pytest.mark.parametrize(
    "args",
    [
        ("--redis-url", "redis://127.0.0.1:{port}/0"),
        ("--redis-host", "127.0.0.1", "--redis-port", "{port}"),
    ],
    ids=["redis-url", "host-port"],
)
def test_explicit_unreachable_target_is_one_line_error(args: tuple[str, ...]) -> None:
    port = str(free_port())
    result = run_fail("--port", str(free_port()), *(a.format(port=port) for a in args))
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "no Redis answers" in lines[0] and port in lines[0]
    assert "Traceback" not in result.stderr
    assert "embedded" not in result.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--redis-url", "http://example.com"), "not a Redis URL"),
        (("--maxlen", "0"), "maxlen"),
        (("--stream-key", "has space"), "stream key"),
        (("--claim-idle-ms", "-5"), "claim_idle_ms"),
    ],
)
def test_bad_flags_are_one_line_errors(args: tuple[str, ...], needle: str) -> None:
    result = run_fail("--port", str(free_port()), *args)
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert needle in result.stderr and "Traceback" not in result.stderr


def test_busy_port_is_a_one_line_error(server: EmbeddedServer) -> None:
    result = run_fail("--redis-url", server.url, "--port", str(server.port))
    assert result.returncode != 0
    assert "cannot listen" in result.stderr and "Traceback" not in result.stderr


def test_no_reset_keeps_data_and_consumers(
    demos: list[Demo], server: EmbeddedServer, client: redis.Redis, key: str
) -> None:
    stream = EventStream(client, key)
    ids = stream.produce_batch([("order.placed", {"order_id": f"o-{i}"}) for i in range(5)])
    stream.ensure_group("legacy", "0")
    stream.consume("legacy", "old-1", count=2, block_ms=None)  # two entries stay pending

    demo = Demo("--redis-url", server.url, "--stream-key", key, "--no-reset")
    demos.append(demo)
    demo.expect(rf"Keeping existing data on {re.escape(key)}")
    demo.expect(r"Seeded 4 consumer\(s\) across 3 group\(s\)")
    demo.expect(r"Demo listening")
    doc = demo.get("/state")
    assert doc["stream"]["first_entry_id"] == ids[0] and doc["stream"]["length"] == 5
    legacy = next(g for g in doc["groups"] if g["name"] == "legacy")
    assert [c["name"] for c in legacy["consumers_detail"]] == ["old-1"]
    # old-1 is running again, so it re-processes its own pending entries and reads the rest.
    wait_until(
        lambda: (
            next(g for g in demo.get("/state")["groups"] if g["name"] == "legacy")["pending"] == 0
        ),
        what="legacy drained",
    )
    assert demo.stop() < 5.0 and demo.proc.returncode == 0
    assert stream.length() == 5

    again = Demo("--redis-url", server.url, "--stream-key", key)
    demos.append(again)
    again.expect(rf"Deleting existing data on {re.escape(key)}")
    again.expect(r"Seeded 3 consumer\(s\) across 2 group\(s\)")
    again.expect(r"Demo listening")
    assert again.get("/state")["stream"]["length"] == 0
    assert again.stop() < 5.0 and again.proc.returncode == 0


def test_sigterm_mid_batch_exits_0_and_loses_nothing(
    demos: list[Demo], server: EmbeddedServer, client: redis.Redis, key: str
) -> None:
    demo = Demo("--redis-url", server.url, "--stream-key", key, "--process-ms", "20")
    demos.append(demo)
    demo.expect(r"Demo listening")
    demo.post("/produce", {"count": 300})

    def busy() -> bool:
        groups = demo.get("/state")["groups"]
        done = sum(c["processed"] for g in groups for c in g["consumers_detail"])
        return done >= 20

    wait_until(busy, what="workers half-way through the backlog")
    took = demo.stop(signal.SIGTERM)
    assert demo.proc.returncode == 0, demo.stderr
    assert took < 5.0
    assert "Traceback" not in demo.stderr
    line = demo.expect(r"Stopped 3 worker\(s\): (.*)").group(1)
    processed: dict[str, int] = {}
    for grp, p, r in re.findall(r"(\w+)/[\w-]+ processed=(\d+) reaped=(\d+)", line):
        processed[grp] = processed.get(grp, 0) + int(p) + int(r)

    stream = EventStream(client, key)
    assert stream.length() == 300
    groups = {g.name: g for g in stream.info_groups()}
    for name in ("notifications", "analytics"):
        g = groups[name]
        # Every entry handed to the group was either handled (and acked) or is still pending.
        assert g.entries_read is not None
        assert g.entries_read == processed[name] + g.pending, (name, g, processed)
        assert g.entries_read < 300 or g.pending == 0
    assert sum(g.pending for g in groups.values()) + sum(processed.values()) > 0
