"""AsyncPartitionedStream on real servers of every kind: it routes and stores like the sync
PartitionedStream, refuses a bad batch before sending anything, and a connection cut in the
middle of a multi-partition batch never stores an event twice.

Faults come from the real TCP proxy of tests/faults.py; no mocks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest
import redis
import redis.asyncio as aredis

from faults import FaultProxy
from redis_streaming import (
    AsyncPartitionedStream,
    Backoff,
    EmbeddedServer,
    InvalidEvent,
    InvalidInput,
    InvalidName,
    InvalidOption,
    PartitionedStream,
    ProduceError,
)
from redis_streaming._codec import parse_id
from redis_streaming._produce_fanout import LANE_WRITE
from test_produce_faults import Once

T = TypeVar("T")
FAST = Backoff(base_s=0.01, cap_s=0.02)


def run(port: int, body: Callable[[aredis.Redis], Coroutine[Any, Any, T]], timeout: float = 5) -> T:
    """Run ``body(client)`` on a fresh event loop with its own redis.asyncio client."""

    async def main() -> T:
        c = aredis.Redis(port=port, decode_responses=True, socket_timeout=timeout)
        try:
            return await body(c)
        finally:
            await c.aclose()

    return asyncio.run(main())


def _check_stored(
    client: redis.Redis,
    ps: PartitionedStream,
    batch: list[tuple[str, str, dict[str, Any]]],
    ids: list[str] | tuple[str | None, ...],
    before: int = 0,
) -> None:
    """Each partition holds exactly the batch's stored events (after ``before`` older ones),
    in input order, under the returned IDs, with their fields."""
    for p, key in enumerate(ps.keys):
        mine = [n for n, (k, _, _) in enumerate(batch) if ps.partition_index(k) == p]
        mine = [n for n in mine if ids[n] is not None]
        stored = client.xrange(key)[before:] if p == ps.partition_index("a") else client.xrange(key)
        assert [entry_id for entry_id, _ in stored] == [ids[n] for n in mine], key
        for n, (_, fields) in zip(mine, stored, strict=True):
            _, event_type, payload = batch[n]
            assert fields["type"] == event_type
            assert {k: fields[k] for k in payload} == {k: str(v) for k, v in payload.items()}


# ---------------------------------------------------------------- producing


@pytest.mark.parametrize("events", [900, 2300])  # slices of LANE_WRITE; 2300: several rounds
def test_batch_routes_and_stores_like_the_sync_stream(
    server: EmbeddedServer, client: redis.Redis, key: str, events: int
) -> None:
    sync = PartitionedStream(client, key, partitions=3)
    batch = [(f"order-{n % 37}", "created", {"n": n}) for n in range(events)]
    batch[5] = ("order-5", "renamed", {"n": 5, "name": "café"})  # not plain: encoded whole first

    async def body(c: aredis.Redis) -> tuple[list[str], list[int], list[int]]:
        ps = AsyncPartitionedStream(c, key, partitions=3, maxlen_approx=None)
        assert ps.keys == sync.keys and len(ps) == ps.partitions == 3
        assert [ps.partition_for(k) for k, _, _ in batch] == [
            sync.partition_for(k) for k, _, _ in batch
        ]
        ids = await ps.produce_batch(batch)
        return ids, [s.stats().produced for s in ps.streams], await ps.lengths()

    ids, produced, lengths = run(server.port, body)
    assert len(ids) == events
    _check_stored(client, sync, batch, ids)
    assert produced == lengths == [client.xlen(k) for k in sync.keys]
    assert sum(lengths) == events and min(lengths) > LANE_WRITE


def test_plain_batch_on_several_partitions_is_in_input_order(
    server: EmbeddedServer, client: redis.Redis, key: str
) -> None:
    sync = PartitionedStream(client, key, partitions=8)
    batch = [(f"k{n}", "t", {"n": n}) for n in range(300)]

    async def body(c: aredis.Redis) -> list[str]:
        ps = AsyncPartitionedStream(c, key, partitions=8, maxlen_approx=None)
        return await ps.produce_batch(iter(batch))  # any iterable

    ids = run(server.port, body)
    _check_stored(client, sync, batch, ids)


def test_tenant_mode_and_produce_one(server: EmbeddedServer, client: redis.Redis, key: str) -> None:
    async def body(c: aredis.Redis) -> tuple[list[str], str, str]:
        ps = AsyncPartitionedStream(c, key, tenants=["acme", "globex"], maxlen_approx=None)
        assert ps.keys == (f"{key}:{{acme}}", f"{key}:{{globex}}")
        assert ps.tenants == ("acme", "globex")
        assert ps.partition_index("globex") == 1 and "tenants" in repr(ps)
        ids = await ps.produce_batch(
            [("globex", "a", {"n": 0}), ("acme", "b", {"n": 1}), ("globex", "c", {"n": 2})]
        )
        with pytest.raises(InvalidInput, match="unknown tenant 'initech'"):
            await ps.produce_batch([("acme", "a", {}), ("initech", "a", {})])
        with pytest.raises(InvalidInput, match="unknown tenant"):
            await ps.produce("a", {}, key="initech")
        one = await ps.produce("d", {"n": 3}, key="acme")
        return ids, one, ps.stream(0).key

    ids, one, first = run(server.port, body)
    assert first == f"{key}:{{acme}}"
    assert [i for i, _ in client.xrange(f"{key}:{{globex}}")] == [ids[0], ids[2]]
    assert [(i, f["type"]) for i, f in client.xrange(f"{key}:{{acme}}")] == [
        (ids[1], "b"),
        (one, "d"),
    ]


def test_produce_one_goes_to_the_keys_partition(
    server: EmbeddedServer, client: redis.Redis, key: str
) -> None:
    async def body(c: aredis.Redis) -> tuple[str, str]:
        ps = AsyncPartitionedStream(c, key, partitions=4)
        return ps.partition_for("order-7"), await ps.produce("paid", {"n": 7}, key="order-7")

    where, entry_id = run(server.port, body)
    [(stored_id, fields)] = client.xrange(where)
    assert stored_id == entry_id and fields["type"] == "paid" and fields["n"] == "7"
    assert where == PartitionedStream(client, key, partitions=4).partition_for("order-7")


# ---------------------------------------------------------------- bad input, nothing sent

GOOD = ("a", "t", {"n": 1})


@pytest.mark.parametrize(
    ("batch", "error", "match"),
    [
        ([GOOD, ("\ud800", "t", {})], InvalidInput, "event 1: partition key is not valid Unicode"),
        ([GOOD, ("b", "t")], InvalidInput, "event 1 must be"),
        ([GOOD, ["b", "t", {}]], InvalidInput, "event 1 must be"),
        ([GOOD, (True, "t", {})], InvalidInput, "event 1: partition key must be a str or int"),
        ([GOOD, ("", "t", {})], InvalidInput, "must not be empty"),
        ([GOOD, ("b", "", {})], InvalidEvent, "event type must not be empty"),
        ([GOOD, ("b", "t", "text")], InvalidEvent, "payload must be a mapping"),
        ([("a", "t", {"v": "é"}), ("b", "t", {"v": object()})], InvalidEvent, "1"),
        ("not a batch", InvalidEvent, "a batch must be a list"),
    ],
)
def test_bad_batch_is_refused_before_anything_is_sent(
    server: EmbeddedServer,
    client: redis.Redis,
    key: str,
    batch: Any,
    error: type[Exception],
    match: str,
) -> None:
    async def body(c: aredis.Redis) -> list[int]:
        ps = AsyncPartitionedStream(c, key, partitions=4)
        with pytest.raises(error, match=match):
            await ps.produce_batch(batch)
        assert await ps.produce_batch([]) == []
        return await ps.lengths()

    assert run(server.port, body) == [0, 0, 0, 0]
    assert client.keys(f"*{key}*") == []


def test_bad_single_event_is_refused(server: EmbeddedServer, client: redis.Redis, key: str) -> None:
    async def body(c: aredis.Redis) -> None:
        ps = AsyncPartitionedStream(c, key, partitions=2)
        with pytest.raises(InvalidInput, match="not valid Unicode"):
            await ps.produce("t", {}, key="\ud800")
        with pytest.raises(InvalidEvent, match="payload must be a mapping"):
            await ps.produce("t", "text", key="a")  # type: ignore[arg-type]
        with pytest.raises(InvalidOption, match=r"partition must be 0\.\.1"):
            ps.stream(2)

    run(server.port, body)
    assert client.keys(f"*{key}*") == []


@pytest.mark.parametrize(
    ("base", "options"),
    [
        ("orders", {"partitions": 0}),
        ("orders", {"partitions": True}),
        ("orders", {"tenants": "acme"}),
        ("orders", {"tenants": ["a", "a"]}),
        ("orders", {"tenants": []}),
        ("orders", {"partitions": 3, "tenants": ["a", "b"]}),
        ("orders", {"tenants": ["a{b}"]}),
        ("or{ders", {}),
        ("orders", {"maxlen_approx": 0}),
    ],
)
def test_bad_layout_is_refused_as_by_the_sync_class(
    server: EmbeddedServer, client: redis.Redis, base: str, options: dict[str, Any]
) -> None:
    with pytest.raises((InvalidOption, InvalidName)) as sync_error:
        PartitionedStream(client, base, **options)

    async def body(c: aredis.Redis) -> None:
        with pytest.raises(type(sync_error.value)) as async_error:
            AsyncPartitionedStream(c, base, **options)
        assert str(async_error.value) == str(sync_error.value)

    run(server.port, body)


def test_clients_it_cannot_drive_are_refused(server: EmbeddedServer, client: redis.Redis) -> None:
    with pytest.raises(InvalidOption, match=r"got Redis \(for a sync client use PartitionedStream"):
        AsyncPartitionedStream(client, "orders")  # type: ignore[arg-type]
    with pytest.raises(InvalidOption, match=r"pass a redis\.asyncio\.Redis"):
        AsyncPartitionedStream("redis://localhost", "orders")  # type: ignore[arg-type]

    async def body(c: aredis.Redis) -> None:
        cluster = aredis.RedisCluster(host=server.host, port=server.port)  # never connected
        try:
            with pytest.raises(InvalidOption, match="for a cluster use the sync PartitionedStream"):
                AsyncPartitionedStream(cluster, "orders")  # type: ignore[arg-type]
        finally:
            await cluster.aclose()

    run(server.port, body)


# ---------------------------------------------------------------- groups and inspection


def test_groups_inspection_replay_and_retention(
    server: EmbeddedServer, client: redis.Redis, key: str
) -> None:
    async def body(c: aredis.Redis) -> None:
        ps = AsyncPartitionedStream(c, key, partitions=3, maxlen_approx=None)
        assert await ps.ensure_group("g", "0") == 3
        assert await ps.ensure_group("g", "0") == 0
        ids = await ps.produce_batch([(f"k{n}", "t", {"n": n}) for n in range(60)])
        assert await ps.length() == 60 and sum(await ps.lengths()) == 60
        assert [i.length for i in await ps.info()] == await ps.lengths()
        [row] = await ps.info_groups()
        assert row.name == "g" and row.pending == 0 and row.lag == 60
        assert [len(g) for g in await ps.info_groups_by_partition()] == [1, 1, 1]
        got = await ps.stream(1).consume("g", "c", count=100, block_ms=None)
        [row] = await ps.info_groups()
        assert row.pending == len(got) > 0
        # replay: merged by ID across partitions, at most ``count``
        everything = await ps.replay(count=None)
        assert sorted(e.id for _, e in everything) == sorted(ids)
        assert [e.id for _, e in everything] == sorted(ids, key=parse_id)
        first = await ps.replay(count=7)
        assert first == everything[:7]
        assert all(ps.keys[p] == ps.partition_for(f"k{e.fields['n']}") for p, e in everything)
        after = everything[9][1].id  # exclusive, in every partition
        later = await ps.replay("(" + after, "+", count=5)
        assert later == [pe for pe in everything if parse_id(pe[1].id) > parse_id(after)][:5]
        with pytest.raises(InvalidOption):
            await ps.replay(count=0)
        assert await ps.trim_maxlen(5, approximate=False) == 60 - 15
        assert await ps.lengths() == [5, 5, 5]
        assert await ps.dead_letters(0).length() == 0
        await c.xadd(ps.keys[0] + ":dlq", {"type": "x"})  # a dead letter to delete with it
        assert await ps.delete_group("g") == 3 and await ps.delete_group("g") == 0
        assert await ps.delete() == 4
        assert await ps.length() == 0

    run(server.port, body)
    # only the producer's commit markers are left (they expire on their own)
    assert [k for k in client.keys(f"*{key}*") if ":rs-produced:" not in k] == []


# ---------------------------------------------------------------- a cut in the middle


class Silence(Once):
    """From the chunk holding ``trigger`` on, nothing more of that connection reaches the
    server (a peer gone silent: the client's read can only time out). A connection is known
    by the bytes it sent before the trigger, so later connections pass."""

    def __init__(self, trigger: bytes) -> None:
        super().__init__("up", trigger, "drop")
        self.prefix: bytes | None = None

    def __call__(self, way: str, data: bytes, seen: bytes) -> str:
        if self.prefix is not None:
            silent = way == "up" and seen.startswith(self.prefix)
            return "drop" if silent else "pass"
        if super().__call__(way, data, seen) == "drop":
            self.prefix = seen[: len(seen) - len(data)]
            return "drop"
        return "pass"


def _warm_and_cut(proxy: FaultProxy, rule: Once, key: str, timeout: float) -> tuple[Any, list[Any]]:
    """Produce once (so the connection has its CLIENT ID), set ``rule``, produce a batch of
    400 over 2 partitions; returns the batch's IDs or its ProduceError, and the batch."""
    batch = [(f"k{n}", "order", {"n": n}) for n in range(400)]

    async def body(c: aredis.Redis) -> Any:
        ps = AsyncPartitionedStream(c, key, partitions=2, maxlen_approx=None, backoff=FAST)
        await ps.produce("warm", {}, key="a")
        sizes = [sum(ps.partition_index(k) == p for k, _, _ in batch) for p in range(2)]
        assert min(sizes) > LANE_WRITE  # both lanes have a second slice after the cut one
        proxy.rule = rule
        try:
            return await ps.produce_batch(batch)
        except ProduceError as exc:
            return exc

    return run(proxy.port, body, timeout), batch


@pytest.mark.parametrize(
    "rule",
    [
        # after the first slice's EXEC ran: its reply (IDs + the marker's) is lost on the way
        lambda: Once("down", b"*%d\r\n" % (LANE_WRITE + 1)),
        # before the server saw any EXEC of the batch: nothing of it committed
        lambda: Once("up", b"EXEC\r\n"),
        # the connection goes silent from the first EXEC on: the read times out
        lambda: Silence(b"EXEC\r\n"),
    ],
    ids=["after-exec", "before-exec", "exec-lost"],
)
def test_a_cut_mid_batch_never_stores_an_event_twice(
    proxy: FaultProxy, client: redis.Redis, key: str, rule: Callable[[], Once]
) -> None:
    cut = rule()
    outcome, batch = _warm_and_cut(proxy, cut, key, timeout=0.5)
    assert cut.fired
    ps = PartitionedStream(client, key, partitions=2)
    if isinstance(outcome, ProduceError):  # allowed, if it says exactly what is stored
        assert outcome.unknown == ()
        ids: tuple[str | None, ...] | list[str] = outcome.ids
    else:
        ids = outcome
        assert len(ids) == 400
    stored = [i for i in ids if i is not None]
    assert sum(client.xlen(k) for k in ps.keys) == 1 + len(stored)  # the warm-up + each once
    _check_stored(client, ps, batch, ids, before=1)
