"""A worker never hangs on a silent connection, and stop() stays bounded whatever the network.

Every client here has ``socket_timeout=None`` (redis-py 5-7's default), so nothing but the
worker's own deadlines and stop()'s breaking of stalled calls can end a wait. The network faults
come from a real TCP proxy (tests/faults.py): a stall (no bytes move either way, connections
stay open) and a black hole (bytes are read and thrown away).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from faults import FaultProxy
from redis_streaming import Backoff, ConsumerWorker, EmbeddedServer, EventStream, RedisUnavailable
from test_cli import cli_env, read_json_line, rest_of_output, start_cli
from waiting import wait_until

FAST_BACKOFF = Backoff(base_s=0.01, cap_s=0.05)
# stop() breaks a blocked read at once and any other call after about a second: these bounds
# are generous so a loaded CI machine cannot fail them, and far below the waits they replace.
STOP_BOUND_S = 5.0


@pytest.fixture()
def silent(proxy: FaultProxy) -> Iterator[redis.Redis]:
    c = redis.Redis(port=proxy.port, decode_responses=True, socket_timeout=None)
    yield c
    c.close()


def _black_hole(way: str, data: bytes, seen: bytes) -> str:
    return "drop"


class Seen:
    def __init__(self) -> None:
        self.ids: list[str] = []
        self.errors: list[BaseException] = []

    def handler(self, entry: Any) -> None:
        self.ids.append(entry.id)

    def on_error(self, exc: BaseException, entry: Any) -> None:
        self.errors.append(exc)


def _worker(stream: EventStream, seen: Seen, **kw: Any) -> ConsumerWorker:
    kw.setdefault("block_ms", 60_000)  # a blocked read that would outlast any test
    kw.setdefault("reap_interval", None)
    return ConsumerWorker(
        stream, "g", "w", seen.handler, group_start="0", backoff=FAST_BACKOFF,
        on_error=seen.on_error, **kw,
    ).start()  # fmt: skip


def _timed_stop(worker: ConsumerWorker) -> float:
    began = time.monotonic()
    assert worker.stop(STOP_BOUND_S), "stop() did not end the worker within its bound"
    return time.monotonic() - began


def _drained(client: redis.Redis, key: str) -> Callable[[], bool]:
    return lambda: client.xpending(key, "g")["pending"] == 0


def test_stop_breaks_a_blocked_read_at_once(
    silent: redis.Redis, client: redis.Redis, key: str
) -> None:
    stream = EventStream(silent, key, maxlen_approx=None)
    seen = Seen()
    worker = _worker(stream, seen)
    ids = [client.xadd(key, {"type": "t"}) for _ in range(3)]
    wait_until(lambda: seen.ids == ids, what="the entries")
    wait_until(_drained(client, key), what="their acks, sent with the next (blocking) read")
    _timed_stop(worker)  # BLOCK 60000 is in flight: stop() must not wait for it
    assert seen.errors == [], "breaking a read on stop is not a failure to report"
    assert client.xpending(key, "g")["pending"] == 0


@pytest.mark.parametrize("fault", ["stall", "black hole"])
def test_stop_during_a_silent_connection_is_bounded(
    fault: str, proxy: FaultProxy, silent: redis.Redis, client: redis.Redis, key: str
) -> None:
    stream = EventStream(silent, key, maxlen_approx=None)
    seen = Seen()
    worker = _worker(stream, seen)
    ids = [client.xadd(key, {"type": "t"}) for _ in range(3)]
    wait_until(lambda: seen.ids == ids, what="the entries")
    wait_until(_drained(client, key), what="their acks")
    if fault == "stall":
        proxy.stall()
    else:
        proxy.rule = _black_hole
    # Handled but not yet acked when the network goes silent: the ack cannot arrive, so the
    # entry must stay pending (delivered again later), never be lost.
    late = client.xadd(key, {"type": "t"})
    _timed_stop(worker)
    assert not worker.is_alive
    proxy.unstall()
    proxy.rule = None
    pending = {row["message_id"] for row in client.xpending_range(key, "g", "-", "+", 10)}
    assert pending <= {late}


@pytest.mark.parametrize("fault", ["stall", "black hole"])
def test_silent_connection_is_dropped_reported_and_recovered(
    fault: str, proxy: FaultProxy, silent: redis.Redis, client: redis.Redis, key: str
) -> None:
    stream = EventStream(silent, key, maxlen_approx=None)
    seen = Seen()
    worker = _worker(stream, seen, block_ms=100)
    try:
        first = client.xadd(key, {"type": "t"})
        wait_until(lambda: seen.ids == [first], what="the first entry")
        if fault == "stall":
            proxy.stall()
        else:
            proxy.rule = _black_hole
        # The read's own deadline (block_ms + READ_MARGIN_S) ends the wait and reports it.
        wait_until(lambda: seen.errors, what="the silent read reported")
        assert isinstance(seen.errors[0], RedisUnavailable)
        assert worker.is_alive
        proxy.unstall()
        proxy.rule = None
        later = client.xadd(key, {"type": "t"})
        wait_until(lambda: seen.ids == [first, later], what="the entry after the fault")
        wait_until(_drained(client, key), what="an empty PEL")
    finally:
        proxy.unstall()
        proxy.rule = None
    _timed_stop(worker)


def test_reconnect_into_a_stall_does_not_hang_stop(
    proxy: FaultProxy, silent: redis.Redis, client: redis.Redis, key: str
) -> None:
    """The worker's connect and handshake wait on its own bounds, not the client's None."""
    stream = EventStream(silent, key, maxlen_approx=None)
    seen = Seen()
    worker = _worker(stream, seen, block_ms=100)
    first = client.xadd(key, {"type": "t"})
    wait_until(lambda: seen.ids == [first], what="the first entry")
    proxy.stall()
    proxy.cut_all()  # the worker reconnects, through a proxy that accepts and then says nothing
    wait_until(lambda: seen.errors, what="the cut reported")
    _timed_stop(worker)
    proxy.unstall()


def test_stall_in_the_reaper_does_not_hang_stop(
    proxy: FaultProxy, silent: redis.Redis, client: redis.Redis, key: str
) -> None:
    stream = EventStream(silent, key, maxlen_approx=None)
    seen = Seen()
    worker = _worker(stream, seen, block_ms=50, reap_interval=0.05, claim_min_idle_ms=10)
    first = client.xadd(key, {"type": "t"})
    wait_until(lambda: seen.ids == [first], what="the first entry")
    calls = stream.client  # the caller's client is untouched by the worker's own pool
    proxy.stall()
    wait_until(lambda: seen.errors, what="a silent call reported")
    _timed_stop(worker)
    proxy.unstall()
    assert calls.connection_pool.connection_kwargs.get("socket_timeout") is None


def test_cli_worker_sigterm_during_a_stall_exits_cleanly(
    proxy: FaultProxy, client: redis.Redis, key: str, server: EmbeddedServer
) -> None:
    url = f"redis://127.0.0.1:{proxy.port}/0"
    ids = [client.xadd(key, {"type": "job", "n": str(i)}) for i in range(20)]
    env = cli_env(RS_TEST_RECORD_URL=server.url, RS_TEST_RECORD_KEY=key + ":rec")
    args = [
        "--redis-url", url, "--stream-key", key, "--group", "g", "--consumers", "2",
        "--handler", "handlers:record", "--group-start", "0", "--block-ms", "5000",
        "--stop-timeout", "8", "--json",
    ]  # fmt: skip
    proc = start_cli("worker", *args, env=env)
    try:
        assert read_json_line(proc)["event"] == "started"
        wait_until(lambda: client.scard(key + ":rec:set") == len(ids), what="every job")
        wait_until(_drained(client, key), what="the acks")
        proxy.stall()
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _out, err = rest_of_output(proc, timeout=30)
        took = time.monotonic() - began
    finally:
        proxy.unstall()
        proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert took < 8 + STOP_BOUND_S, f"SIGTERM took {took:.1f} s during a stall"
    client.delete(key + ":rec", key + ":rec:set")
