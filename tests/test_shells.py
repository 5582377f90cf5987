"""The same scenarios on both shells (sync EventStream/ConsumerWorker and their asyncio twins),
on both server kinds: one core, so one behaviour.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Iterator

import pytest
import redis

from redis_streaming import (
    AsyncConsumerWorker,
    AsyncDeadLetters,
    AsyncEventStream,
    ConsumerWorker,
    DeadLetters,
    EmbeddedServer,
    Entry,
    EventStream,
    InvalidOption,
    InvalidStreamId,
    UndecodableEntry,
)
from redis_streaming.deadletter import metadata, original_pairs
from shells import Shell, make_shell
from waiting import wait_until


@pytest.fixture(params=["sync", "async"])
def shell(request: pytest.FixtureRequest, server: EmbeddedServer) -> Iterator[Shell]:
    if not server.running:
        server.start()
    yield from make_shell(request.param, server.port)


class Seen:
    def __init__(self, fail_types: tuple[str, ...] = ()) -> None:
        self.ids: list[str] = []
        self.values: list[str | None] = []
        self.lock = threading.Lock()
        self.fail_types = fail_types

    def __call__(self, entry: Entry) -> None:
        with self.lock:
            self.ids.append(entry.id)
            self.values.append(entry.fields.get("n"))
        if entry.type in self.fail_types:
            raise RuntimeError(f"cannot handle {entry.type}")


def _pending(client: redis.Redis, key: str, group: str) -> int:
    return int(client.xpending(key, group)["pending"])


# ---------------------------------------------------------------- the stream


def test_produce_read_ack_replay(shell: Shell, client: redis.Redis, key: str) -> None:
    s = shell.stream(key, maxlen_approx=None)
    ids = shell.call(s, "produce_batch", [("order", {"n": i}) for i in range(120)])
    one = shell.call(s, "produce", "order", {"n": "last"})
    assert [i for i, _ in client.xrange(key)] == [*ids, one]
    assert shell.call(s, "length") == 121
    assert shell.call(s, "ensure_group", "g", "0") is True
    assert shell.call(s, "ensure_group", "g", "0") is False  # BUSYGROUP means "already there"
    got = shell.call(s, "consume", "g", "c", count=200, block_ms=None)
    assert [e.id for e in got] == [*ids, one] and got[0].fields["n"] == "0"
    assert shell.call(s, "ack", "g", [e.id for e in got[:100]]) == 100
    assert [e.id for e in shell.call(s, "consume_own_pel", "g", "c", count=50)] == [*ids[100:], one]
    assert [e.id for e in shell.collect(s, "iter_replay", page=7)] == [*ids, one]
    assert [e.id for e in shell.call(s, "replay", "(" + ids[-1], "+")] == [one]
    assert [e.id for e in shell.call(s, "tail", 2)] == [one, ids[-1]]
    assert shell.call(s, "info_stream").length == 121
    assert [g.name for g in shell.call(s, "info_groups")] == ["g"]
    assert [r.id for r in shell.call(s, "pending", "g", count=100)] == [*ids[100:], one]
    assert s.stats().produced == 121 and s.stats().acked == 100


def test_bad_input_is_refused_the_same_way(shell: Shell, client: redis.Redis, key: str) -> None:
    s = shell.stream(key)
    for method, args in [
        ("replay", ("(18446744073709551615-18446744073709551615",)),
        ("ack", ("g", "not-an-id")),
        ("trim_minid", ("1-1\n",)),
    ]:
        with pytest.raises(InvalidStreamId):
            shell.call(s, method, *args)
    with pytest.raises(InvalidOption):
        shell.call(s, "consume", "g", "c", count=2**63)
    with pytest.raises(InvalidOption):
        shell.call(s, "handover_pending", "g", "a", "a")
    assert client.exists(key) == 0  # nothing was sent


def test_paged_autoclaim_resumes_from_the_servers_cursor(
    shell: Shell, client: redis.Redis, key: str
) -> None:
    s = shell.stream(key, maxlen_approx=None)
    ids = shell.call(s, "produce_batch", [("t", {"i": i}) for i in range(250)])
    shell.call(s, "ensure_group", "g", "0")
    shell.call(s, "consume", "g", "dead", count=250, block_ms=None)
    first = shell.call(s, "autoclaim", "g", "alive", min_idle_ms=0, page_count=50, max_pages=2)
    assert len(first.claimed) == 100 and first.next_start_id != "0-0"
    rest = shell.call(
        s, "autoclaim", "g", "alive", min_idle_ms=0, page_count=50, start_id=first.next_start_id
    )
    assert [e.id for e in first.claimed + rest.claimed] == ids
    assert rest.next_start_id == "0-0"
    pages = shell.collect(s, "autoclaim_pages", "g", "other", min_idle_ms=0, page_count=100)
    assert sum(len(p.claimed) for p in pages) == 250
    assert shell.call(s, "handover_pending", "g", "other", "alive", batch=60) == 250
    assert shell.call(s, "delete_consumer", "g", "other") == 0


def test_retention_dead_letters_and_health(shell: Shell, client: redis.Redis, key: str) -> None:
    s = shell.stream(key, maxlen_approx=None)
    ids = shell.call(s, "produce_batch", [("t", {"i": i}) for i in range(10)])
    shell.call(s, "ensure_group", "g", "0")
    got = shell.call(s, "consume", "g", "c", count=4, block_ms=None)
    shell.call(s, "ack", "g", [e.id for e in got])
    report = shell.call(s, "trim_safe", approximate=False)
    assert report.deleted == 4 and report.held_by == "g" and report.remaining == 6
    dl = shell.dead_letters(s)
    [entry] = shell.call(s, "consume", "g", "c", count=1, block_ms=None)
    shell.call(dl, "send", "g", "c", entry, deliveries=3, error="boom")
    assert _pending(client, key, "g") == 0  # dead-lettered and acked in one transaction
    [letter] = shell.call(dl, "list")
    assert metadata(letter)["original_id"] == ids[4]
    assert shell.call(dl, "length") == 1
    [again] = shell.call(dl, "redrive")
    assert client.xrange(key, again, again)[0][1]["i"] == "4"
    health = shell.health(s)
    assert health.exists and health.group("g") is not None and health.dead_letters == 0
    kept = shell.call(s, "retain", 3600.0)
    assert kept.deleted == 0


# ---------------------------------------------------------------- the worker


def test_worker_handles_everything_and_stops_with_an_empty_pel(
    shell: Shell, client: redis.Redis, key: str
) -> None:
    s = shell.stream(key, maxlen_approx=None)
    ids = shell.call(s, "produce_batch", [("t", {"i": i}) for i in range(500)])
    seen = Seen()
    w = shell.worker(s, "g", "w", seen, group_start="0", block_ms=5000, reap_interval=None)
    shell.start(w)
    wait_until(lambda: len(seen.ids) == 500, what="every entry")
    assert shell.stop(w, 5)  # the 5 s blocking read is abandoned, not waited for
    assert seen.ids == ids
    assert _pending(client, key, "g") == 0
    assert w.status().processed == 500 and not w.is_alive


def test_failing_entries_are_dead_lettered_through_the_reaper(
    shell: Shell, client: redis.Redis, key: str
) -> None:
    s = shell.stream(key, maxlen_approx=None, claim_min_idle_ms=10)
    ids = shell.call(s, "produce_batch", [("good", {}), ("poison", {"p": 1}), ("good", {})])
    seen = Seen(fail_types=("poison",))
    w = shell.worker(
        s, "g", "w", seen, group_start="0", block_ms=50, reap_interval=0.05, max_deliveries=2
    )
    shell.start(w)
    dl = shell.dead_letters(s)
    wait_until(lambda: shell.call(dl, "length") == 1, what="the poison pill dead-lettered")
    wait_until(lambda: _pending(client, key, "g") == 0, what="an empty PEL")
    assert shell.stop(w)
    assert seen.ids.count(ids[1]) == 2 and {ids[0], ids[2]} <= set(seen.ids)
    assert w.status().dead_lettered == 1 and w.status().failed == 2


def test_crash_lever_and_a_peers_reaper(shell: Shell, client: redis.Redis, key: str) -> None:
    s = shell.stream(key, maxlen_approx=None, claim_min_idle_ms=30)
    a_seen, b_seen = Seen(), Seen()
    a = shell.worker(s, "g", "a", a_seen, group_start="0", block_ms=50, reap_interval=None)
    assert a.crash_next(3) == 3
    shell.start(a)
    ids = shell.call(s, "produce_batch", [("t", {"i": i}) for i in range(10)])
    wait_until(lambda: a.status().processed == 7, what="the rest handled")
    assert a_seen.ids == ids[3:]
    b = shell.worker(s, "g", "b", b_seen, group_start="0", block_ms=50, reap_interval=0.05)
    shell.start(b)
    wait_until(lambda: sorted(b_seen.ids) == ids[:3], what="the dropped ones reaped")
    wait_until(lambda: _pending(client, key, "g") == 0, what="an empty PEL")
    assert shell.stop(a) and shell.stop(b)
    assert b.status().reaped == 3


def test_worker_survives_flushall_and_recreates_its_group(
    shell: Shell, client: redis.Redis, key: str
) -> None:
    s = shell.stream(key, maxlen_approx=None)
    seen = Seen()
    w = shell.worker(s, "g", "w", seen, group_start="0", block_ms=50, reap_interval=None)
    shell.start(w)
    first = client.xadd(key, {"type": "t", "n": "1"})
    wait_until(lambda: first in seen.ids, what="the first entry")
    client.flushall()
    client.xadd(key, {"type": "t", "n": "2"})  # may reuse the first ID: match on the payload
    wait_until(lambda: "2" in seen.values, what="the entry after FLUSHALL")
    assert w.is_alive
    assert shell.stop(w)


def test_pause_and_resume(shell: Shell, client: redis.Redis, key: str) -> None:
    s = shell.stream(key, maxlen_approx=None)
    seen = Seen()
    w = shell.worker(s, "g", "w", seen, group_start="0", block_ms=50, reap_interval=None)
    shell.start(w)
    wait_until(lambda: client.exists(key) == 1, what="the group created")
    assert shell.pause(w)
    held = client.xadd(key, {"type": "t"})
    assert w.status().paused and held not in seen.ids
    shell.resume(w)
    wait_until(lambda: held in seen.ids, what="the entry after resume")
    assert shell.stop(w)


def test_an_undecodable_entry_is_dead_lettered_byte_exact(
    shell: Shell, client: redis.Redis, key: str
) -> None:
    s = shell.stream(key, maxlen_approx=None, claim_min_idle_ms=10)
    good = shell.call(s, "produce", "t", {"n": 1})
    client.xadd(key, {b"type": b"t", b"v": b"\xff\xfe"})  # type: ignore[dict-item]
    also = shell.call(s, "produce", "t", {"n": 2})
    seen = Seen()
    w = shell.worker(
        s, "g", "w", seen, group_start="0", block_ms=50, reap_interval=0.05, max_deliveries=2
    )
    shell.start(w)
    dl = shell.dead_letters(s)
    wait_until(lambda: shell.call(dl, "length") == 1, what="the bad entry dead-lettered")
    assert shell.stop(w)
    assert seen.ids == [good, also]
    [letter] = shell.call(dl, "list")
    assert isinstance(letter, UndecodableEntry)
    assert (b"v", b"\xff\xfe") in original_pairs(letter)


# ---------------------------------------------------------------- only where the shells differ


def test_public_signatures_match_between_the_shells() -> None:
    for sync_cls, async_cls in [
        (EventStream, AsyncEventStream),
        (ConsumerWorker, AsyncConsumerWorker),
        (DeadLetters, AsyncDeadLetters),
    ]:
        for name, member in inspect.getmembers(sync_cls):
            if name.startswith("_") or not callable(member):
                continue
            twin = getattr(async_cls, name, None)
            assert twin is not None, f"{async_cls.__name__} lacks {name}"
            params = list(inspect.signature(member).parameters)
            twin_params = list(inspect.signature(twin).parameters)
            if name == "__init__" and async_cls is AsyncConsumerWorker:
                twin_params.remove("concurrency")
            assert params == twin_params, (sync_cls.__name__, name)


def test_worker_kinds_refuse_the_other_kind_of_handler(server: EmbeddedServer, key: str) -> None:
    async def handler(entry: Entry) -> None:
        return None

    def sync_handler(entry: Entry) -> None:
        return None

    with pytest.raises(InvalidOption, match="async"):
        ConsumerWorker(EventStream(redis.Redis(port=server.port), key), "g", "c", handler)
    import redis.asyncio as aredis

    stream = AsyncEventStream(aredis.Redis(port=server.port), key)
    with pytest.raises(InvalidOption, match=r"asyncio\.to_thread"):
        AsyncConsumerWorker(stream, "g", "c", sync_handler)  # type: ignore[arg-type]


def test_async_concurrency_runs_handlers_together_and_acks_each(
    server: EmbeddedServer, client: redis.Redis, key: str
) -> None:
    import redis.asyncio as aredis

    async def scenario() -> tuple[int, list[str], list[str]]:
        c = aredis.Redis(port=server.port, decode_responses=True)
        s = AsyncEventStream(c, key, maxlen_approx=None)
        ids = await s.produce_batch([("t", {"i": i}) for i in range(40)])
        running = peak = 0
        done: list[str] = []
        gate = asyncio.Event()

        async def handler(entry: Entry) -> None:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            if peak >= 4:
                gate.set()
            await gate.wait()  # held until four handlers run at once
            running -= 1
            done.append(entry.id)

        w = AsyncConsumerWorker(
            s, "g", "w", handler, concurrency=4, group_start="0", block_ms=50,
            reap_interval=None, batch_budget_ms=None, count=40,
        ).start()  # fmt: skip
        while len(done) < 40:
            await asyncio.sleep(0.01)
        assert await w.stop(5)
        await c.aclose()
        return peak, ids, done

    peak, ids, done = asyncio.run(scenario())
    assert peak == 4 and sorted(done) == sorted(ids)
    assert _pending(client, key, "g") == 0


def test_async_stop_cancels_a_stuck_handler_after_the_timeout(
    server: EmbeddedServer, client: redis.Redis, key: str
) -> None:
    import redis.asyncio as aredis

    async def scenario() -> bool:
        c = aredis.Redis(port=server.port, decode_responses=True)
        s = AsyncEventStream(c, key, maxlen_approx=None)
        await s.produce_batch([("t", {}), ("t", {})])
        entered = asyncio.Event()

        async def handler(entry: Entry) -> None:
            entered.set()
            await asyncio.Event().wait()  # never returns

        w = AsyncConsumerWorker(
            s, "g", "w", handler, group_start="0", block_ms=50, reap_interval=None
        ).start()
        await entered.wait()
        stopped = await w.stop(0.2)
        assert not w.is_alive
        await c.aclose()
        return stopped

    assert asyncio.run(scenario()) is False  # had to cancel
    assert _pending(client, key, "g") == 2  # nothing acked that did not finish


def test_metrics_report_workers_of_either_shell(
    shell: Shell, client: redis.Redis, key: str
) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from redis_streaming.metrics import StreamMetrics

    s = shell.stream(key, maxlen_approx=None)
    w = shell.worker(s, "g", "w", Seen(), group_start="0", block_ms=50, reap_interval=None)
    # StreamMetrics reads health through a sync client; the workers may be of either shell.
    metrics = StreamMetrics(EventStream(client, key), workers=[w])
    registry = CollectorRegistry()
    registry.register(metrics)
    text = generate_latest(registry).decode()
    assert f'redis_streaming_worker_alive{{consumer="w",group="g",stream="{key}"}} 0.0' in text
