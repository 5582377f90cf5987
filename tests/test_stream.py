"""EventStream against real servers (every test runs on Valkey and on Redis 7)."""

from __future__ import annotations

import time

import pytest
import redis

from redis_streaming import (
    EventStream,
    GroupMissing,
    InvalidEvent,
    InvalidName,
    InvalidOption,
    InvalidStreamId,
    RedisUnavailable,
)
from redis_streaming.server import free_port
from waiting import wait_until


def idle_past(stream: EventStream, group: str, ms: int) -> None:
    """Wait until every pending entry of ``group`` has been idle at least ``ms``."""
    wait_until(
        lambda: all(p.idle_ms >= ms for p in stream.pending(group, count=10_000)),
        what="pending entries to age",
    )


# ------------------------------------------------------------------ producing


def test_produce_writes_type_ts_and_payload(stream: EventStream) -> None:
    before = int(time.time() * 1000)
    entry_id = stream.produce(
        "order.placed", {"order_id": "o-1", "amount": 12.5, "vip": False, "n": 3}
    )
    [entry] = stream.replay()
    assert entry.id == entry_id
    assert list(entry.fields) == ["type", "ts_ms", "order_id", "amount", "vip", "n"]
    assert entry.type == "order.placed"
    assert entry.payload == {"order_id": "o-1", "amount": "12.5", "vip": "false", "n": "3"}
    assert entry.ts_ms is not None and entry.ts_ms >= before
    assert stream.stats().produced == 1


def test_produce_batch_returns_ids_in_order(stream: EventStream) -> None:
    ids = stream.produce_batch([("a", {"i": i}) for i in range(250)])
    assert len(ids) == 250
    assert [e.id for e in stream.replay(count=1000)] == ids
    assert [e.payload["i"] for e in stream.replay(count=1000)] == [str(i) for i in range(250)]
    assert stream.produce_batch([]) == []
    assert stream.stats().produced == 250


@pytest.mark.parametrize(
    "bad",
    [
        [("ok", {}), ("", {})],
        [("ok", {}), ("t", {"nested": {"a": 1}})],
        [("ok", {}), ("t", {"type": "x"})],
        [("ok", {}), ("t", {"v": None})],
        [("ok", {}), ("t", {3: "x"})],
    ],
)
def test_bad_event_rejects_whole_batch(stream: EventStream, bad: list) -> None:  # type: ignore[type-arg]
    with pytest.raises(InvalidEvent):
        stream.produce_batch(bad)
    assert stream.length() == 0


@pytest.mark.parametrize(
    ("event_type", "payload"),
    [("", {}), (None, {}), ("t", {"a": None}), ("t", {"a": [1]}), ("t", {"ts_ms": "1"})],
)
def test_produce_rejects_bad_events_before_sending(
    stream: EventStream, event_type: object, payload: object
) -> None:
    with pytest.raises(ValueError):
        stream.produce(event_type, payload)  # type: ignore[arg-type]
    assert stream.length() == 0


def test_maxlen_options(client: redis.Redis, key: str) -> None:
    exact = EventStream(client, key, maxlen_approx=10, approximate=False)
    exact.produce_batch([("t", {"i": i}) for i in range(50)])
    assert exact.length() == 10
    uncapped = EventStream(client, key + "u", maxlen_approx=None)
    uncapped.produce_batch([("t", {"i": i}) for i in range(300)])
    assert uncapped.length() == 300
    # Per-call override: exact cap of 5 on one write.
    uncapped.produce("t", {}, maxlen=5, approximate=False)
    assert uncapped.length() == 5
    approx = EventStream(client, key + "a", maxlen_approx=10)
    approx.produce_batch([("t", {"i": i}) for i in range(500)])
    # "~" trims whole macro nodes only: bounded, but usually above the exact cap.
    assert 10 <= approx.length() < 500
    for k in (key, key + "u", key + "a"):
        client.delete(k)


def test_constructor_validates(client: redis.Redis) -> None:
    with pytest.raises(InvalidName):
        EventStream(client, "")
    with pytest.raises(InvalidOption):
        EventStream(client, "k", maxlen_approx=0)
    with pytest.raises(InvalidOption):
        EventStream(client, "k", claim_min_idle_ms=-1)


# ------------------------------------------------------------------ groups and reading


def test_ensure_group_is_idempotent(stream: EventStream) -> None:
    assert stream.ensure_group("g") is True
    assert stream.ensure_group("g") is False  # BUSYGROUP counts as success
    assert [g.name for g in stream.info_groups()] == ["g"]
    assert stream.delete_group("g") is True
    assert stream.delete_group("g") is False
    assert stream.info_groups() == []


def test_group_start_dollar_skips_history(stream: EventStream) -> None:
    stream.produce("old", {})
    stream.ensure_group("new-only", "$")
    stream.ensure_group("all", "0")
    assert stream.consume("new-only", "c", block_ms=None) == []
    assert [e.type for e in stream.consume("all", "c", block_ms=None)] == ["old"]


def test_consume_splits_work_and_ack_counts(stream: EventStream) -> None:
    stream.ensure_group("g", "0")
    ids = stream.produce_batch([("t", {"i": i}) for i in range(30)])
    a = stream.consume("g", "a", count=10, block_ms=None)
    b = stream.consume("g", "b", count=100, block_ms=None)
    assert [e.id for e in a + b] == ids
    assert stream.ack("g", []) == 0
    assert stream.ack("g", [e.id for e in a]) == 10
    assert stream.ack("g", [e.id for e in a]) == 0  # already acked
    assert stream.ack("g", [e.id for e in b]) == 20
    assert stream.stats().acked == 30
    assert stream.info_groups()[0].pending == 0


def test_consume_block_timeout_returns_empty(stream: EventStream) -> None:
    stream.ensure_group("g")
    started = time.monotonic()
    assert stream.consume("g", "c", block_ms=150) == []
    assert time.monotonic() - started >= 0.14


def test_consume_missing_group_raises_group_missing(stream: EventStream) -> None:
    with pytest.raises(GroupMissing):
        stream.consume("nope", "c", block_ms=None)


def test_consume_own_pel_is_the_restart_path(stream: EventStream) -> None:
    stream.ensure_group("g", "0")
    stream.produce_batch([("t", {"i": i}) for i in range(25)])
    got = stream.consume("g", "c", count=25, block_ms=None)
    stream.ack("g", [got[0].id])
    own = stream.consume_own_pel("g", "c", count=10)
    assert [e.id for e in own] == [e.id for e in got[1:11]]
    nxt = stream.consume_own_pel("g", "c", count=100, after=own[-1].id)
    assert [e.id for e in nxt] == [e.id for e in got[11:]]
    assert stream.consume_own_pel("g", "other") == []
    assert stream.ack("g", [e.id for e in own + nxt]) == 24


# ------------------------------------------------------------------ recovery


def test_autoclaim_pages_past_page_count(stream: EventStream) -> None:
    stream.ensure_group("g", "0")
    stream.produce_batch([("t", {"i": i}) for i in range(250)])
    assert len(stream.consume("g", "dead", count=250, block_ms=None)) == 250
    idle_past(stream, "g", 50)
    result = stream.autoclaim("g", "alive", page_count=40, max_pages=10)
    assert len(result.claimed) == 250
    assert result.deleted_ids == ()
    assert {p.consumer for p in stream.pending("g", count=1000)} == {"alive"}
    assert stream.stats().claimed == 250


def test_autoclaim_stops_at_max_pages(stream: EventStream) -> None:
    stream.ensure_group("g", "0")
    stream.produce_batch([("t", {}) for _ in range(100)])
    stream.consume("g", "dead", count=100, block_ms=None)
    idle_past(stream, "g", 50)
    assert len(stream.autoclaim("g", "alive", page_count=10, max_pages=3).claimed) == 30


def test_autoclaim_respects_min_idle(stream: EventStream) -> None:
    stream.ensure_group("g", "0")
    stream.produce("t", {})
    stream.consume("g", "dead", block_ms=None)
    assert stream.autoclaim("g", "alive", min_idle_ms=60_000).claimed == ()


def test_autoclaim_reports_entries_trimmed_under_a_crashed_consumer(stream: EventStream) -> None:
    stream.ensure_group("g", "0")
    ids = stream.produce_batch([("t", {"i": i}) for i in range(10)])
    stream.consume("g", "dead", count=10, block_ms=None)  # then "crashes"
    stream.produce_batch([("t", {}) for _ in range(10)])
    assert stream.trim_maxlen(10, approximate=False) == 10  # MAXLEN outran the consumer
    idle_past(stream, "g", 50)
    result = stream.autoclaim("g", "alive")
    assert result.claimed == ()
    assert sorted(result.deleted_ids) == sorted(ids)
    assert stream.pending("g") == []  # Redis 7+ already dropped them from the PEL


def test_claim_specific_ids(stream: EventStream) -> None:
    stream.ensure_group("g", "0")
    ids = stream.produce_batch([("t", {}) for _ in range(3)])
    stream.consume("g", "a", count=3, block_ms=None)
    assert stream.claim("g", "b", ids[:2], min_idle_ms=60_000) == []
    got = stream.claim("g", "b", ids[:2], min_idle_ms=0)
    assert [e.id for e in got] == ids[:2]
    owners = {p.id: p.consumer for p in stream.pending("g")}
    assert owners == {ids[0]: "b", ids[1]: "b", ids[2]: "a"}
    with pytest.raises(InvalidStreamId):
        stream.claim("g", "b", ["bogus"], 0)


def test_handover_moves_everything_without_bumping_deliveries(stream: EventStream) -> None:
    stream.ensure_group("g", "0")
    stream.produce_batch([("t", {}) for _ in range(230)])
    stream.consume("g", "leaving", count=230, block_ms=None)
    assert stream.handover_pending("g", "leaving", "peer", batch=50) == 230
    rows = stream.pending("g", count=1000)
    assert {r.consumer for r in rows} == {"peer"} and len(rows) == 230
    assert {r.deliveries for r in rows} == {1}
    assert stream.delete_consumer("g", "leaving") == 0  # nothing lost
    with pytest.raises(InvalidOption):
        stream.handover_pending("g", "peer", "peer")


def test_delete_consumer_reports_destroyed_pending(stream: EventStream) -> None:
    stream.ensure_group("g", "0")
    stream.produce_batch([("t", {}) for _ in range(4)])
    stream.consume("g", "c", count=4, block_ms=None)
    assert stream.delete_consumer("g", "c") == 4
    assert stream.delete_consumer("missing-group", "c") == 0


# ------------------------------------------------------------------ history and retention


def test_replay_tail_and_bounds(stream: EventStream) -> None:
    ids = stream.produce_batch([("t", {"i": i}) for i in range(20)])
    assert [e.id for e in stream.replay(ids[5], ids[9])] == ids[5:10]
    assert [e.id for e in stream.replay("(" + ids[5], ids[9])] == ids[6:10]
    assert [e.id for e in stream.replay(count=3)] == ids[:3]
    assert [e.id for e in stream.tail(3)] == ids[:-4:-1]
    assert stream.length() == 20


def test_iter_replay_pages_exclusively(stream: EventStream) -> None:
    ids = stream.produce_batch([("t", {"i": i}) for i in range(1003)])
    assert [e.id for e in stream.iter_replay(page=100)] == ids
    assert [e.id for e in stream.iter_replay(ids[10], ids[20], page=3)] == ids[10:21]
    assert list(EventStream(stream.client, stream.key + "missing").iter_replay()) == []


def test_trim_maxlen_exact_and_approximate(stream: EventStream) -> None:
    stream.produce_batch([("t", {}) for _ in range(1000)])
    approx = stream.trim_maxlen(100, approximate=True)
    # "~" only drops whole radix-tree nodes: never below the cap, possibly nothing at all.
    assert 0 <= approx <= 900 and stream.length() == 1000 - approx >= 100
    assert stream.trim_maxlen(100, approximate=False) == 900 - approx
    assert stream.length() == 100


def test_trim_minid(stream: EventStream) -> None:
    ids = stream.produce_batch([("t", {}) for _ in range(50)])
    assert stream.trim_minid(ids[20], approximate=False) == 20
    assert stream.replay(count=1)[0].id == ids[20]
    assert stream.trim_minid(ids[30], approximate=True) <= 10


@pytest.mark.parametrize(
    ("call", "exc"),
    [
        (lambda s: s.replay("nope"), InvalidStreamId),
        (lambda s: s.replay("-", "1-x"), InvalidStreamId),
        (lambda s: s.replay(count=0), InvalidOption),
        (lambda s: s.tail(-1), InvalidOption),
        (lambda s: s.trim_maxlen(-5), InvalidOption),
        (lambda s: s.trim_minid("yesterday"), InvalidStreamId),
        (lambda s: s.ack("g", ["1-0", "x"]), InvalidStreamId),
        (lambda s: s.ensure_group("g", "latest"), InvalidStreamId),
        (lambda s: s.ensure_group("", "0"), InvalidName),
        (lambda s: s.consume("g", "bad name"), InvalidName),
        (lambda s: s.consume("g", "c", count=0), InvalidOption),
        (lambda s: s.autoclaim("g", "c", start_id="abc"), InvalidStreamId),
        (lambda s: s.autoclaim("g", "c", page_count=0), InvalidOption),
        (lambda s: s.pending("g", count=0), InvalidOption),
        (lambda s: s.pending("g", start="x"), InvalidStreamId),
        (lambda s: s.consume_own_pel("g", "c", after="x"), InvalidStreamId),
    ],
)
def test_bad_arguments_raise_before_any_call(stream: EventStream, call, exc) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(exc) as info:
        call(stream)
    assert isinstance(info.value, ValueError)
    assert stream.length() == 0


# ------------------------------------------------------------------ inspection


def test_inspection_of_missing_stream_is_empty(stream: EventStream) -> None:
    info = stream.info_stream()
    assert info.exists is False and info.length == 0
    assert stream.info_groups() == []
    assert stream.info_consumers("g") == []
    assert stream.pending("g") == []
    assert stream.length() == 0
    assert stream.tail() == []
    assert stream.trim_maxlen(10) == 0


def test_inspection_reports_groups_consumers_pending(stream: EventStream) -> None:
    ids = stream.produce_batch([("t", {}) for _ in range(5)])
    stream.ensure_group("g", "0")
    stream.ensure_group("h", "0")
    stream.consume("g", "c1", count=2, block_ms=None)
    stream.consume("g", "c2", count=1, block_ms=None)
    info = stream.info_stream()
    assert info.exists and info.length == 5 and info.groups == 2
    assert info.first_entry_id == ids[0] and info.last_entry_id == ids[-1]
    groups = {g.name: g for g in stream.info_groups()}
    assert groups["g"].pending == 3 and groups["g"].consumers == 2
    assert groups["g"].last_delivered_id == ids[2]
    assert groups["g"].lag == 2 and groups["h"].lag == 5
    consumers = {c.name: c for c in stream.info_consumers("g")}
    assert consumers["c1"].pending == 2 and consumers["c2"].pending == 1
    assert consumers["c1"].idle_ms >= 0
    rows = stream.pending("g")
    assert [r.id for r in rows] == ids[:3]
    assert [r.consumer for r in rows] == ["c1", "c1", "c2"]
    assert all(r.deliveries == 1 for r in rows)
    assert [r.id for r in stream.pending("g", consumer="c2")] == [ids[2]]
    assert stream.pending("g", min_idle_ms=60_000) == []
    assert stream.info_consumers("no-such-group") == []


def test_stats_and_reset(stream: EventStream) -> None:
    stream.produce("t", {})
    assert stream.stats().produced == 1
    stream.reset_stats()
    assert stream.stats().produced == 0
    assert stream.delete_stream() is True
    assert stream.delete_stream() is False


def test_unreachable_server_raises_redis_unavailable() -> None:
    client = redis.Redis(port=free_port(), socket_connect_timeout=0.2)
    s = EventStream(client, "k")
    with pytest.raises(RedisUnavailable):
        s.produce("t", {})
    with pytest.raises(RedisUnavailable):
        s.info_stream()


def test_bytes_client_works_too(server, key: str) -> None:  # type: ignore[no-untyped-def]
    raw = redis.Redis(host=server.host, port=server.port)  # decode_responses=False
    s = EventStream(raw, key)
    entry_id = s.produce("t", {"k": "v"})
    s.ensure_group("g", "0")
    [e] = s.consume("g", "c", block_ms=None)
    assert e.id == entry_id and e.fields == {"type": "t", "ts_ms": e.fields["ts_ms"], "k": "v"}
    assert s.info_groups()[0].name == "g"
    assert s.pending("g")[0].consumer == "c"
    s.delete_stream()
