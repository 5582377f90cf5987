"""Tests for the hot path in _fastpath: hand-packed commands and directly parsed replies.

They pin byte-for-byte equality with redis-py/hiredis packing and behaviour parity with the plain
paths on real servers; they measure no speed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import hiredis
import pytest
import redis

from redis_streaming import (
    ConsumerWorker,
    Entry,
    EventStream,
    InvalidEvent,
    StreamingError,
    UndecodableEntry,
)
from redis_streaming import _fastpath as fp
from redis_streaming.server import EmbeddedServer


def _reference(key: str, batch: list[dict[str, str]], cap: int | None, approx: bool) -> bytes:
    prefix = fp.xadd_prefix(key, cap, approx)
    return b"".join(
        hiredis.pack_command((*prefix, *[x for kv in fields.items() for x in kv]))
        for fields in batch
    )


@pytest.mark.parametrize("cap", [None, 7])
@pytest.mark.parametrize("approx", [True, False])
def test_pack_xadd_batch_matches_hiredis(cap: int | None, approx: bool) -> None:
    batch = [
        {"type": "a", "ts_ms": "1", "é": "ü€", "empty": ""},
        {"type": "b", "ts_ms": "2"},
        {"type": "c" * 300, "ts_ms": "3", "x": "y\r\n$5"},
    ]
    assert fp.pack_xadd_batch("kü", batch, cap, approx) == _reference("kü", batch, cap, approx)


def _fused_cases() -> list[list[object]]:
    """Batches mixing the inline fast path with every kind of event it must hand over."""
    valid: list[object] = [
        ("order", {"n": 1, "user": "alice", "amount": 12.5}),
        ("order", {}),
        ("order", None),
        ("ü-type", {"k": "v"}),
        ("t", {"é": "ü€", "b": True, "f": False, "big": 10**30, "neg": -1, "x": "y\r\n$5"}),
        ["listed", {"k": "v"}],
        {"type": "mapped", "k": 3},
        ("t", {"e": ""}),
    ]
    invalid: list[object] = [
        "not a pair",
        ("", {}),
        ("  ", {}),
        (5, {}),
        ("t", ["k", "v"]),
        ("t", {"type": "x"}),
        ("t", {"ts_ms": "1"}),
        ("t", {"": "x"}),
        ("t", {3: "x"}),
        ("t", {"k": None}),
        ("t", {"k": float("nan")}),
        ("t", {"k": [1]}),
        ("t", {"k": "\udc80"}),
        ("\udc80", {}),
        ("t", {"k": 10**5000}),  # past Python's int-to-text digit limit
    ]
    cases: list[list[object]] = [[], valid, valid * 150]
    cases += [[*valid[:3], bad, *valid[3:]] for bad in invalid]
    return cases


@pytest.mark.parametrize("cap", [None, 7])
@pytest.mark.parametrize("batch", _fused_cases())
def test_pack_events_equals_encode_then_pack(batch: list[object], cap: int | None) -> None:
    from redis_streaming._codec import encode_batch

    try:
        expected: bytes | str = fp.pack_xadd_batch("kü", encode_batch(batch, 42), cap, True)
    except InvalidEvent as exc:
        expected = str(exc)
    try:
        rounds, count = fp.pack_events("kü", batch, 42, cap, True)
    except InvalidEvent as exc:
        assert str(exc) == expected
        return
    assert count == len(batch)
    assert len(rounds) == -(-count // fp.XADD_ROUND)
    assert b"".join(rounds) == (expected if batch else b"")


def _plain_cases() -> list[list[object]]:
    one: list[object] = [
        ("order", {"n": 1, "user": "alice", "amount": 12.5}),
        ("order", {}),
        ("t", {"neg": -7, "big": 10**30, "x": "y\r\n$5", "e": "", "f": -0.0}),
        ("other", {"n": 2, "user": "bob"}),
    ]
    return [one, one * 7, one * 251]  # within a slice, across slices, across rounds


@pytest.mark.parametrize("cap", [None, 7])
@pytest.mark.parametrize("batch", _plain_cases())
def test_plain_batches_pack_in_slices_exactly_as_a_whole(
    batch: list[object], cap: int | None
) -> None:
    # A batch plain() accepts is written while it is still being packed, so packing it must
    # not be able to fail, and its slices must add up to what the plain path would send.
    from redis_streaming._codec import encode_batch

    assert fp.plain(batch)
    expected = fp.pack_xadd_batch("kü", encode_batch(batch, 42), cap, True)
    slices = list(fp.iter_packed("kü", batch, 42, cap, True, fp.XADD_WRITE))
    assert len(slices) == -(-len(batch) // fp.XADD_WRITE)
    assert b"".join(slices) == expected


def test_plain_is_false_for_every_mixed_or_invalid_case() -> None:
    assert [fp.plain(batch) for batch in _fused_cases() if batch] == [False] * (
        len(_fused_cases()) - 1
    )


@pytest.mark.parametrize(
    ("event", "is_plain"),
    [
        (("order", {"n": 1, "user": "alice", "amount": 12.5, "neg": -3}), True),
        (("order", {}), True),
        (("order", None), False),  # valid, but encode_event's path handles it
        (("ü-type", {}), False),
        (("t", {"é": "x"}), False),
        (("t", {"k": "ü"}), False),
        (("t", {"k": True}), False),
        (("t", {"k": 10**4001}), False),
        (["t", {}], False),
        ("not a pair", False),
        (("", {}), False),
        (("t", {"type": "x"}), False),
        (("t", {"k": float("inf")}), False),
        (("t", {"k": None}), False),
    ],
)
def test_plain_accepts_only_the_inline_kind(event: object, is_plain: bool) -> None:
    assert fp.plain([("ok", {"a": "b"}), event]) is is_plain


def test_pack_ack_read_with_and_without_acks() -> None:
    read = fp.pack_ack_read("k", "g", "c", [], 10, 500)
    assert read == hiredis.pack_command(
        ("XREADGROUP", "GROUP", "g", "c", "COUNT", "10", "BLOCK", "500", "STREAMS", "k", ">")
    )
    both = fp.pack_ack_read("k", "g", "c", ["1-1", "1-2"], 10, None)
    assert both == hiredis.pack_command(("XACK", "k", "g", "1-1", "1-2")) + hiredis.pack_command(
        ("XREADGROUP", "GROUP", "g", "c", "COUNT", "10", "STREAMS", "k", ">")
    )


def test_parse_xreadgroup_shapes() -> None:
    assert fp.parse_xreadgroup(None) == []
    assert fp.parse_xreadgroup([]) == []
    resp2 = [["k", [["1-1", ["type", "a", "x", "1"]], ["1-2", None]]]]
    assert fp.parse_xreadgroup(resp2) == [Entry("1-1", {"type": "a", "x": "1"})]
    raw_bytes = [[b"k", [[b"1-1", [b"type", b"\xff"]]]]]
    # Never a replacement character: the entry is kept whole, as bytes.
    assert fp.parse_xreadgroup(raw_bytes) == [UndecodableEntry("1-1", {}, ((b"type", b"\xff"),))]
    resp3 = {"k": [["1-3", ["a", "b"]]]}
    assert fp.parse_xreadgroup(resp3) == [Entry("1-3", {"a": "b"})]


def test_entries_built_through_slots_stay_frozen() -> None:
    (entry,) = fp.entries_from_items([["5-0", ["type", "t"]]])
    assert entry == Entry("5-0", {"type": "t"})
    assert entry.type == "t"
    with pytest.raises(AttributeError):
        entry.id = "6-0"  # type: ignore[misc]


def test_supports_only_plain_pooled_clients(server: EmbeddedServer) -> None:
    plain = server.client()
    pinned = server.client(single_connection_client=True)
    try:
        assert fp.supports(plain)
        assert not fp.supports(pinned)
        assert not fp.supports(object())
    finally:
        plain.close()
        pinned.close()


@pytest.fixture(
    params=[(True, 3), (False, 3), (True, 2), (False, 2)],
    ids=["decoded-resp3", "bytes-resp3", "decoded-resp2", "bytes-resp2"],
)
def any_client(server: EmbeddedServer, request: pytest.FixtureRequest) -> Iterator[redis.Redis]:
    decode, protocol = request.param
    client = server.client(decode_responses=decode, protocol=protocol)
    yield client
    client.close()


def test_produce_batch_fast_path_round_trips(any_client: redis.Redis, key: str) -> None:
    stream = EventStream(any_client, key)
    events = [("order", {"n": i, "name": "ü" * (i % 3)}) for i in range(250)]
    ids = stream.produce_batch(events)
    assert len(ids) == 250 and all(isinstance(i, str) for i in ids)
    stored = stream.replay(count=None)
    assert [e.id for e in stored] == ids
    assert stored[5].fields["n"] == "5" and stored[5].fields["name"] == "üü"


def test_produce_batch_splits_huge_batches_into_rounds(any_client: redis.Redis, key: str) -> None:
    stream = EventStream(any_client, key, maxlen_approx=None)
    n = fp.XADD_ROUND * 2 + 17
    ids = stream.produce_batch(("e", {"i": i}) for i in range(n))
    assert len(ids) == n == stream.length()
    assert [e.fields["i"] for e in stream.replay(count=None)] == [str(i) for i in range(n)]


def test_produce_batch_mixed_batch_takes_the_validate_first_path(
    any_client: redis.Redis, key: str
) -> None:
    stream = EventStream(any_client, key, maxlen_approx=None)
    events: list[tuple[str, dict[str, object]]] = [("e", {"i": i}) for i in range(50)]
    events[25] = ("ü", {"i": 25, "flag": True})  # valid, not plain: packed whole, then sent
    assert not fp.plain(events)
    ids = stream.produce_batch(events)
    assert len(ids) == 50 == stream.length()
    got = [(e.type, e.fields["i"]) for e in stream.replay(count=None)]
    assert got == [("ü" if i == 25 else "e", str(i)) for i in range(50)]


def test_bad_text_rejects_the_whole_batch(any_client: redis.Redis, key: str) -> None:
    stream = EventStream(any_client, key)
    events = [("ok", {"n": i}) for i in range(60)] + [("bad", {"x": "\udc80"})]
    with pytest.raises(InvalidEvent, match="batch item 60"):
        stream.produce_batch(events)
    assert stream.length() == 0


def test_error_reply_leaves_connection_in_sync(any_client: redis.Redis, key: str) -> None:
    any_client.set(key, "not a stream")
    stream = EventStream(any_client, key)
    with pytest.raises(StreamingError, match="WRONGTYPE"):
        stream.produce_batch([("a", {})] * 45)
    assert any_client.ping()
    assert EventStream(any_client, key + ":ok").produce_batch([("a", {})]) != []


def test_worker_fast_read_any_client(any_client: redis.Redis, key: str) -> None:
    stream = EventStream(any_client, key)
    seen: list[Entry] = []
    worker = ConsumerWorker(stream, "g", "c", seen.append, block_ms=20, group_start="0")
    stream.produce_batch([("t", {"v": i}) for i in range(30)])
    worker.start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (len(seen) < 30 or stream.pending("g")):
            time.sleep(0.01)
        assert [e.fields["v"] for e in seen] == [str(i) for i in range(30)]
        assert stream.pending("g") == []
    finally:
        worker.stop(5)
