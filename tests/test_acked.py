"""Redis 8.2's server-side safety: XACKDEL (ack and delete) with its reference policies,
``XTRIM ... ACKED`` under trim_safe, and the worker's ack_mode="delete"; on every server kind.

On Redis 8.2 the features work; on Valkey and Redis 7 they are refused with FeatureUnavailable
before anything is written (nothing is emulated) and trim_safe keeps its two-step path.
Capabilities are detected from the server (COMMAND INFO + HELLO), never from the test.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest
import redis

from redis_streaming import EmbeddedServer, Entry, FeatureUnavailable
from shells import Shell, make_shell
from waiting import wait_until


@pytest.fixture(params=["sync", "async"])
def shell(request: pytest.FixtureRequest, server: EmbeddedServer) -> Iterator[Shell]:
    if not server.running:
        server.start()
    yield from make_shell(request.param, server.port)


def _supported(server: EmbeddedServer) -> bool:
    return server.kind == "redis8"


def _pel(client: redis.Redis, key: str, group: str) -> list[str]:
    return [r["message_id"] for r in client.xpending_range(key, group, "-", "+", 100)]


def test_ack_delete_follows_its_reference_policy(
    shell: Shell, server: EmbeddedServer, client: redis.Redis, key: str
) -> None:
    s = shell.stream(key, maxlen_approx=None)
    a, b, c, d = shell.call(s, "produce_batch", [("t", {"i": i}) for i in range(4)])
    for group in ("g1", "g2"):
        shell.call(s, "ensure_group", group, "0")
        shell.call(s, "consume", group, "c", count=10, block_ms=None)
    client.xack(key, "g2", a)  # g2 is done with a only
    if not _supported(server):
        with pytest.raises(FeatureUnavailable, match=r"Redis 8\.2"):
            shell.call(s, "ack_delete", "g1", [a])
        assert client.xlen(key) == 4 and _pel(client, key, "g1") == [a, b, c, d]
        return
    done = shell.call(s, "ack_delete", "g1", [a, b, "9-9"])  # acked: delete once all acked
    assert (done.deleted, done.kept, done.missing) == ((a,), (b,), ("9-9",))
    assert [i for i, _ in client.xrange(key)] == [b, c, d]  # b stays: g2 still needs it
    assert _pel(client, key, "g1") == [c, d]
    gone = shell.call(s, "ack_delete", "g1", c, ref="keepref")  # delete now, g2 left dangling
    assert gone.deleted == (c,) and c in _pel(client, key, "g2")
    dropped = shell.call(s, "ack_delete", "g1", [d], ref="delref")  # delete and unreference
    assert dropped.deleted == (d,) and d not in _pel(client, key, "g2")
    assert [i for i, _ in client.xrange(key)] == [b]


def test_ack_delete_refuses_a_bad_policy_before_asking_the_server(
    shell: Shell, client: redis.Redis, key: str
) -> None:
    s = shell.stream(key)
    from redis_streaming import InvalidOption

    with pytest.raises(InvalidOption, match="keepref"):
        shell.call(s, "ack_delete", "g", ["1-1"], ref="all")
    assert shell.call(s, "ack_delete", "g", []).acked == 0


def test_trim_safe_is_one_server_checked_command_where_it_can_be(
    shell: Shell, server: EmbeddedServer, client: redis.Redis, key: str
) -> None:
    s = shell.stream(key, maxlen_approx=None)
    ids = shell.call(s, "produce_batch", [("t", {"i": i}) for i in range(10)])
    shell.call(s, "ensure_group", "g", "0")
    got = shell.call(s, "consume", "g", "c", count=6, block_ms=None)
    shell.call(s, "ack", "g", [e.id for e in got[:4]])  # 4 acked, 2 pending, 4 undelivered
    exact = shell.call(s, "trim_safe", approximate=False)
    assert exact.deleted == 4 and exact.remaining == 6 and exact.min_id == ids[4]
    assert exact.server_checked is _supported(server)
    # Redis 8.2's "~ ... ACKED" removes nothing (fixed in 8.6): approximate stays two-step.
    approx = shell.call(s, "trim_safe")
    assert approx.server_checked is False and approx.remaining == 6
    # No groups: nothing says an entry was consumed, so nothing is trimmed (never "ACKED" with
    # no groups, which would remove everything).
    shell.call(s, "delete_group", "g")
    assert shell.call(s, "trim_safe", approximate=False).deleted == 0
    assert client.xlen(key) == 6


def test_worker_ack_mode_delete(
    shell: Shell, server: EmbeddedServer, client: redis.Redis, key: str
) -> None:
    s = shell.stream(key, maxlen_approx=None)
    ids = shell.call(s, "produce_batch", [("t", {"i": i}) for i in range(50)])
    seen: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def record(entry: Entry) -> None:
        with lock:
            seen.append(entry.id)

    w = shell.worker(
        s, "g", "w", record, group_start="0", block_ms=50, reap_interval=None,
        ack_mode="delete", on_error=lambda exc, entry: errors.append(exc),
    )  # fmt: skip
    shell.start(w)
    if not _supported(server):
        wait_until(lambda: not w.is_alive, what="the worker to stop at start")
        assert isinstance(errors[0], FeatureUnavailable) and seen == []
        assert client.xlen(key) == 50
        return
    wait_until(lambda: len(seen) == 50, what="every entry")
    wait_until(lambda: client.xlen(key) == 0, what="acked entries deleted by XACKDEL")
    assert shell.stop(w)
    assert seen == ids and _pel(client, key, "g") == []
    assert w.status().processed == 50 and errors == []


def test_safe_trimming_under_live_workers_never_drops_what_a_group_needs(
    server: EmbeddedServer, client: redis.Redis, key: str
) -> None:
    """Two groups (one slow) consume while a producer writes and a trimmer runs trim_safe in a
    loop: every produced entry must still reach both groups. On Redis 8.2 each trim is one
    server-checked XTRIM ... ACKED."""
    from redis_streaming import ConsumerWorker, EventStream

    stream = EventStream(client, key, maxlen_approx=None)
    stream.ensure_group("fast", "0")
    stream.ensure_group("slow", "0")
    seen: dict[str, set[str]] = {"fast": set(), "slow": set()}
    lock = threading.Lock()
    gate = threading.Semaphore(0)  # the slow group handles one entry per release

    def handler(group: str) -> Callable[[Entry], None]:
        def handle(entry: Entry) -> None:
            if group == "slow":
                gate.acquire()
            with lock:
                seen[group].add(entry.id)

        return handle

    workers = [
        ConsumerWorker(stream, g, "w", handler(g), block_ms=20, reap_interval=None, count=10)
        for g in ("fast", "slow")
    ]
    for w in workers:
        w.start()
    produced: list[str] = []
    reports = []
    try:
        for round_no in range(20):
            produced += stream.produce_batch([("t", {"r": round_no, "i": i}) for i in range(25)])
            for _ in range(20):
                gate.release()  # the slow group falls further behind every round
            reports.append(stream.trim_safe(approximate=False))
        for _ in range(len(produced)):
            gate.release()
        wait_until(lambda: len(seen["slow"]) == len(produced), what="the slow group to finish")
        wait_until(lambda: len(seen["fast"]) == len(produced), what="the fast group to finish")
    finally:
        for _ in range(len(produced)):
            gate.release()
        for w in workers:
            w.stop(10)
    assert seen["fast"] == seen["slow"] == set(produced)  # nothing trimmed before both had it
    assert any(r.deleted for r in reports)
    assert all(r.server_checked is _supported(server) for r in reports if r.min_id)
