"""Failure modes users of other Redis Streams clients hit, each pinned as a kind (issue 10).

Lost XAUTOCLAIM cursors, entries that are not UTF-8, handlers that return awaitables and
dead letters that must give back exactly what was produced. Every test runs on both server
kinds; the decoding tests also on both client kinds (decode_responses on and off) and both
wire protocols (RESP2, RESP3).
"""

from __future__ import annotations

import asyncio
import gc
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from redis_streaming import (
    ConsumerWorker,
    DeadLetters,
    EmbeddedServer,
    Entry,
    EntryDecodeError,
    EventStream,
    InvalidOption,
    UndecodableEntry,
)
from redis_streaming.deadletter import REASON_UNDECODABLE, original_pairs
from waiting import wait_until

BAD = b"\xff\xfe"


@pytest.fixture(
    params=[(True, 2), (True, 3), (False, 2), (False, 3)],
    ids=["decoded-resp2", "decoded-resp3", "bytes-resp2", "bytes-resp3"],
)
def any_client(server: EmbeddedServer, request: pytest.FixtureRequest) -> Iterator[redis.Redis]:
    if not server.running:
        server.start()
    decode, protocol = request.param
    c = redis.Redis(
        host=server.host, port=server.port, decode_responses=decode, protocol=protocol
    )
    yield c
    c.close()


@pytest.fixture()
def raw(server: EmbeddedServer) -> Iterator[redis.Redis]:
    c = redis.Redis(host=server.host, port=server.port)
    yield c
    c.close()


@pytest.fixture()
def bstream(any_client: redis.Redis, key: str) -> Iterator[EventStream]:
    s = EventStream(any_client, key, maxlen_approx=None, claim_min_idle_ms=50)
    yield s
    any_client.delete(key, key + ":dlq")


# ---------------------------------------------------------------- 1. XAUTOCLAIM cursor


def test_paged_autoclaim_returns_the_server_cursor_and_resumes_exactly_once(
    stream: EventStream,
) -> None:
    ids = stream.produce_batch([("t", {"n": i}) for i in range(250)])
    stream.ensure_group("g", "0")
    assert len(stream.consume("g", "dead", count=250, block_ms=None)) == 250

    first = stream.autoclaim("g", "alive", min_idle_ms=0, page_count=50, max_pages=2)
    assert len(first.claimed) == 100
    assert first.next_start_id != "0-0"  # the sweep is not over: this is where to resume
    claimed = [e.id for e in first.claimed]
    cursor = first.next_start_id
    while cursor != "0-0":
        page = stream.autoclaim(
            "g", "alive", min_idle_ms=0, page_count=50, max_pages=2, start_id=cursor
        )
        claimed += [e.id for e in page.claimed]
        cursor = page.next_start_id
    assert claimed == ids  # every entry once, in order
    owners = {p.consumer for p in stream.pending("g", count=300)}
    assert owners == {"alive"}


def test_autoclaim_pages_report_empty_pages_and_the_final_cursor(stream: EventStream) -> None:
    stream.produce_batch([("t", {}) for _ in range(30)])
    stream.ensure_group("g", "0")
    stream.consume("g", "dead", count=30, block_ms=None)
    pages = list(stream.autoclaim_pages("g", "c", min_idle_ms=10**9, page_count=5))
    # Nothing is idle that long: pages claim nothing, yet the last one ends the sweep.
    assert all(not p.claimed for p in pages)
    assert pages[-1].next_start_id == "0-0"


def test_reaper_reaches_idle_entries_behind_any_number_of_young_ones(
    stream: EventStream, client: redis.Redis
) -> None:
    # One XAUTOCLAIM scans at most 10 * COUNT PEL entries; a sweep of the worker makes 10
    # calls of 100, so 25,000 young entries in front need three sweeps to get past.
    young, old = 25_000, 40
    stream.produce_batch([("t", {"n": i}) for i in range(young + old)])
    stream.ensure_group("g", "0")
    delivered = stream.consume("g", "dead", count=young + old, block_ms=None)
    old_ids = [e.id for e in delivered[young:]]
    # Make the last ones look long idle (XCLAIM ... IDLE), the rest stay freshly delivered.
    client.xclaim(stream.key, "g", "dead", 0, old_ids, idle=10**7, justid=True)
    seen: list[str] = []
    worker = ConsumerWorker(
        stream, "g", "reaper", handler=lambda e: seen.append(e.id), claim_min_idle_ms=60_000
    )
    claimed = 0
    for _ in range(4):
        claimed += worker.reap_idle_pel().claimed
    assert sorted(seen) == sorted(old_ids)
    assert claimed == old


# ---------------------------------------------------------------- 2. undecodable entries


def _five_with_a_bad_third(s: EventStream, raw: redis.Redis) -> list[str]:
    ids = [s.produce("a", {"n": 1}), s.produce("b", {"n": 2})]
    ids.append(raw.xadd(s.key, {b"type": b"bad", b"v": BAD}).decode())
    ids += [s.produce("d", {"n": 4}), s.produce("e", {"n": 5})]
    return ids


def test_worker_handles_good_entries_and_dead_letters_the_bad_one_byte_exact(
    bstream: EventStream, raw: redis.Redis
) -> None:
    bstream.ensure_group("g", "0")
    ids = _five_with_a_bad_third(bstream, raw)
    handled: list[str] = []
    errors: list[BaseException] = []
    worker = ConsumerWorker(
        bstream, "g", "w", handler=lambda e: handled.append(e.type), max_deliveries=2,
        reap_interval=0.05, claim_min_idle_ms=20, block_ms=50,
        on_error=lambda exc, entry: errors.append(exc),
    )  # fmt: skip
    with worker:
        wait_until(lambda: worker.dead_lettered == 1, what="the bad entry dead-lettered")
    assert handled == ["a", "b", "d", "e"]
    assert errors and all(isinstance(e, EntryDecodeError) for e in errors)
    assert errors[0].entry_id == ids[2] and ids[2] in str(errors[0])
    assert bstream.pending("g") == []
    [letter] = DeadLetters(bstream).list()
    assert isinstance(letter, UndecodableEntry)
    assert letter.fields["dlq.reason"] == REASON_UNDECODABLE
    assert letter.fields["dlq.original_id"] == ids[2]
    assert original_pairs(letter) == [(b"type", b"bad"), (b"v", BAD)]
    # Redrive puts the exact bytes back on the stream.
    [new_id] = DeadLetters(bstream).redrive()
    assert raw.xrange(bstream.key, new_id, new_id)[0][1] == {b"type": b"bad", b"v": BAD}


def test_every_read_path_returns_the_bad_entry_whole(
    bstream: EventStream, raw: redis.Redis
) -> None:
    ids = _five_with_a_bad_third(bstream, raw)
    raw.xadd(bstream.key, {BAD: b"name is bad"})  # a field name that is not UTF-8
    expect = UndecodableEntry(ids[2], {"type": "bad"}, ((b"type", b"bad"), (b"v", BAD)))

    def check(entries: list[Entry]) -> None:
        bad = [e for e in entries if e.undecodable]
        assert bad[0] == expect
        assert isinstance(bad[-1], UndecodableEntry) and bad[-1].raw == ((BAD, b"name is bad"),)
        assert bad[-1].bad_fields == (BAD,)
        assert [e.type for e in entries if not e.undecodable] == ["a", "b", "d", "e"]

    check(bstream.replay())
    check(list(bstream.iter_replay(page=2)))
    check(list(reversed(bstream.tail(10))))
    bstream.ensure_group("g", "0")
    check(bstream.consume("g", "c1", count=10, block_ms=None))
    check(bstream.consume_own_pel("g", "c1", count=10))
    check(list(bstream.autoclaim("g", "c2", min_idle_ms=0).claimed))
    all_ids = [e.id for e in bstream.replay()]
    check(bstream.claim("g", "c3", all_ids, 0))
    info = bstream.info_stream()
    assert info.length == 6 and info.last_entry_id == bstream.tail(1)[0].id


def test_bytes_client_never_replaces_bad_bytes(bstream: EventStream, raw: redis.Redis) -> None:
    raw.xadd(bstream.key, {b"type": b"t", b"v": b"caf\xe9"})  # Latin-1, not UTF-8
    [entry] = bstream.replay()
    assert isinstance(entry, UndecodableEntry)
    assert "\ufffd" not in "".join(entry.fields.values())
    assert entry.raw[1] == (b"v", b"caf\xe9")


# ---------------------------------------------------------------- 4. awaitable handlers


async def _async_handler(entry: Entry) -> None:
    return None


class _AsyncCallable:
    async def __call__(self, entry: Entry) -> None:
        return None


@pytest.mark.parametrize("handler", [_async_handler, _AsyncCallable(), "not callable"])
def test_async_or_uncallable_handler_is_refused_when_built(
    stream: EventStream, handler: Any
) -> None:
    with pytest.raises(InvalidOption, match="handler"):
        ConsumerWorker(stream, "g", "w", handler=handler)


def test_handler_returning_an_awaitable_fails_and_is_not_acked(stream: EventStream) -> None:
    stream.ensure_group("g", "0")
    entry_id = stream.produce("t", {})
    errors: list[BaseException] = []
    worker = ConsumerWorker(
        stream, "g", "w", handler=lambda e: _async_handler(e), reap_interval=None,
        block_ms=50, max_deliveries=None, on_error=lambda exc, e: errors.append(exc),
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # "coroutine was never awaited"
        with worker:
            wait_until(lambda: worker.failed == 1, what="the failure counted")
        gc.collect()
    assert worker.processed == 0
    assert isinstance(errors[0], InvalidOption) and "awaitable" in str(errors[0])
    assert [p.id for p in stream.pending("g")] == [entry_id]
    assert asyncio.iscoroutinefunction(_async_handler)


# ---------------------------------------------------------------- 6. dead-letter format


def test_dead_letter_and_redrive_give_back_fields_named_like_metadata(
    stream: EventStream, client: redis.Redis
) -> None:
    payload = {"dlq.reason": "mine", "dlq.trace": "t-1", "~x": "tilde", "dlq.format": "9"}
    stream.ensure_group("g", "0")
    stream.produce("order", payload)
    [entry] = stream.consume("g", "c", block_ms=None)
    dlq = DeadLetters(stream)
    dlq.send("g", "c", entry, deliveries=3, error="boom")
    [letter] = dlq.list()
    assert letter.fields["dlq.reason"] == "max deliveries reached"  # ours, not overwritten
    [new_id] = dlq.redrive()
    [back] = stream.replay(new_id, new_id)
    assert dict(back.fields) == dict(entry.fields)
    assert back.payload == payload
