"""An XACK answered with an error reply (here an ACL that denies XACK while XREADGROUP works)
costs no entry: the entries read in the same round trip are handled, the acks stay queued and
go out again with later reads, and once XACK is allowed again every entry is acked, each handled
exactly once. Holds for the sync worker (hand-packed and pipelined paths), the async worker and
the pool's combined read. Real servers of every kind.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
import redis.asyncio as aredis

from redis_streaming import (
    AsyncConsumerWorker,
    AsyncEventStream,
    Backoff,
    ConsumerWorker,
    Entry,
    EventStream,
    PartitionedConsumerPool,
    PartitionedStream,
)
from redis_streaming.server import EmbeddedServer
from waiting import wait_until

FAST = Backoff(base_s=0.01, cap_s=0.05)
N = 40


@pytest.fixture()
def limited(server: EmbeddedServer, client: redis.Redis) -> Iterator[dict[str, Any]]:
    """Connection settings of a user who may do everything but XACK."""
    user = f"noack{uuid.uuid4().hex[:6]}"
    client.execute_command("ACL", "SETUSER", user, "on", ">pw", "~*", "&*", "+@all", "-xack")
    yield {"host": server.host, "port": server.port, "username": user, "password": "pw"}
    client.execute_command("ACL", "DELUSER", user)


class Seen:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.errors: list[BaseException] = []
        self.lock = threading.Lock()

    def __call__(self, entry: Entry) -> None:
        with self.lock:  # by payload: IDs repeat across partitions
            self.counts[entry.payload["n"]] += 1

    def on_error(self, exc: BaseException, entry: Entry | None) -> None:
        self.errors.append(exc)


def _allow_xack(client: redis.Redis, limited: dict[str, Any]) -> None:
    client.execute_command("ACL", "SETUSER", limited["username"], "+xack")


def _check(seen: Seen, produced: int, pending: Callable[[], int]) -> None:
    assert sorted(seen.counts) == sorted(str(n) for n in range(produced))
    assert set(seen.counts.values()) == {1}  # nothing handled twice, nothing lost
    assert seen.errors and "xack" in str(seen.errors[0]).lower()
    assert pending() == 0


@pytest.mark.parametrize("pinned", [False, True], ids=["hand-packed", "pipelined"])
def test_sync_worker(client: redis.Redis, limited: dict[str, Any], key: str, pinned: bool) -> None:
    # single_connection_client pins one connection: the worker reads through redis-py then.
    lim = redis.Redis(decode_responses=True, single_connection_client=pinned, **limited)
    stream = EventStream(lim, key)
    stream.ensure_group("g", "0")
    EventStream(client, key).produce_batch([("t", {"n": n}) for n in range(N)])
    seen = Seen()
    # The reaper runs every 50 ms and claims entries idle for 20 ms: the handled entries whose
    # acks are queued are claimed back too, and must not be handled again.
    worker = ConsumerWorker(
        stream, "g", "w", seen, count=10, block_ms=20, reap_interval=0.05,
        claim_min_idle_ms=20, backoff=FAST, on_error=seen.on_error,
    )  # fmt: skip
    pending = lambda: int(client.xpending(key, "g")["pending"])  # noqa: E731
    with worker:
        wait_until(lambda: len(seen.counts) == N and seen.errors, what="all handled")
        assert pending() == N  # every ack refused so far
        EventStream(client, key).produce_batch([("t", {"n": n}) for n in range(N, 2 * N)])
        wait_until(lambda: len(seen.counts) == 2 * N, what="reads go on meanwhile")
        _allow_xack(client, limited)
        wait_until(lambda: pending() == 0, what="the queued acks to go out")
    _check(seen, 2 * N, pending)
    lim.close()


def test_async_worker(client: redis.Redis, limited: dict[str, Any], key: str) -> None:
    EventStream(client, key).produce_batch([("t", {"n": n}) for n in range(N)])
    seen = Seen()
    pending = lambda: int(client.xpending(key, "g")["pending"])  # noqa: E731

    async def until(pred: Callable[[], Any]) -> None:
        for _ in range(2000):
            if pred():
                return
            await asyncio.sleep(0.01)
        raise AssertionError("condition not met in 20 s")

    async def handle(entry: Entry) -> None:
        seen(entry)

    async def scenario() -> None:
        lim = aredis.Redis(decode_responses=True, **limited)
        stream = AsyncEventStream(lim, key)
        await stream.ensure_group("g", "0")
        worker = AsyncConsumerWorker(
            stream, "g", "w", handle, count=10, block_ms=20, reap_interval=None,
            backoff=FAST, on_error=seen.on_error,
        ).start()  # fmt: skip
        await until(lambda: len(seen.counts) == N and seen.errors)
        assert pending() == N
        _allow_xack(client, limited)
        await until(lambda: pending() == 0)
        await worker.stop(5)
        await lim.aclose()

    asyncio.run(scenario())
    _check(seen, N, pending)


def test_pool_combined_read(client: redis.Redis, limited: dict[str, Any]) -> None:
    lim = redis.Redis(decode_responses=True, **limited)
    ps = PartitionedStream(lim, f"ar{uuid.uuid4().hex[:8]}", partitions=3)
    PartitionedStream(client, ps.base_key, partitions=3).produce_batch(
        [(f"k{n}", "t", {"n": n}) for n in range(N)]
    )
    seen = Seen()

    def pending() -> int:
        return sum(int(client.xpending(k, "g")["pending"]) for k in ps.keys)

    pool = PartitionedConsumerPool(
        ps, "g", 1, seen, lease_ms=1500, block_ms=50, group_start="0", reap_interval=None,
        count=10, backoff=FAST, on_error=seen.on_error,
    )  # fmt: skip
    try:
        with pool:
            wait_until(lambda: len(seen.counts) == N and seen.errors, what="all handled")
            assert pending() == N
            _allow_xack(client, limited)
            wait_until(lambda: pending() == 0, what="the queued acks to go out")
        _check(seen, N, pending)
    finally:
        ps.delete()
        for i in range(3):
            client.delete(ps.lease_key(i, "g"))
        client.delete(ps.members_key("g"))
        lim.close()


def test_one_partitions_refused_xack_holds_up_no_other(
    client: redis.Redis, server: EmbeddedServer
) -> None:
    # An ACL selector allows XACK on every partition but p0. p0's refusal is reported (once
    # logged, on_error each time) but not backed off on the reader the partitions share, so
    # the other five are drained at full speed (with a backoff per refusal, climbing to its
    # 2 s cap, 1,500 entries took 16 s).
    base = f"one{uuid.uuid4().hex[:6]}"
    admin = PartitionedStream(client, base, partitions=6)
    user = f"part{uuid.uuid4().hex[:6]}"
    allow = "(" + " ".join(["+xack", *(f"~{k}" for k in admin.keys[1:])]) + ")"
    client.execute_command(
        "ACL", "SETUSER", user, "on", ">pw", "~*", "&*", "+@all", "-xack", allow
    )  # fmt: skip
    lim = redis.Redis(
        host=server.host, port=server.port, username=user, password="pw", decode_responses=True
    )
    ps = PartitionedStream(lim, base, partitions=6)
    keys = [f"k{n}" for n in range(6000)]
    on_p0 = [k for k in keys if ps.partition_index(k) == 0][:5]
    healthy = [k for k in keys if ps.partition_index(k) != 0][:1500]
    admin.produce_batch([(k, "t", {"n": -1 - i}) for i, k in enumerate(on_p0)])
    admin.produce_batch([(k, "t", {"n": n}) for n, k in enumerate(healthy)])
    seen = Seen()
    pool = PartitionedConsumerPool(
        ps, "g", 1, seen, lease_ms=1500, block_ms=50, group_start="0", reap_interval=None,
        on_error=seen.on_error,
    )  # fmt: skip
    try:
        with pool:
            wait_until(
                lambda: all(seen.counts[str(n)] for n in range(1500)), timeout=5,
                what="the healthy partitions drained while p0's XACK is refused",
            )  # fmt: skip
            assert seen.errors and "permission" in str(seen.errors[0]).lower()
        assert all(client.xpending(k, "g")["pending"] == 0 for k in ps.keys[1:])
        assert int(client.xpending(ps.keys[0], "g")["pending"]) == len(on_p0)
        assert set(seen.counts.values()) == {1}
    finally:
        admin.delete()
        for i in range(6):
            client.delete(ps.lease_key(i, "g"))
        client.delete(ps.members_key("g"))
        client.execute_command("ACL", "DELUSER", user)
        lim.close()


def test_acks_that_went_through_are_counted_when_the_read_is_refused(
    client: redis.Redis, limited: dict[str, Any], key: str
) -> None:
    # The XACK of a round trip succeeds and its XREADGROUP is refused: the acks are done and
    # counted (stream.stats().acked), not queued again for a second XACK that finds nothing.
    lim = redis.Redis(decode_responses=True, **limited)
    client.execute_command("ACL", "SETUSER", limited["username"], "+xack")
    stream = EventStream(lim, key)
    stream.ensure_group("g", "0")
    EventStream(client, key).produce_batch([("t", {"n": n}) for n in range(10)])
    seen = Seen()

    def handler(entry: Entry) -> None:
        if not seen.counts:  # the next read (carrying this batch's acks) is refused
            client.execute_command("ACL", "SETUSER", limited["username"], "-xreadgroup")
        seen(entry)

    worker = ConsumerWorker(
        stream, "g", "w", handler, count=10, block_ms=20, reap_interval=None, backoff=FAST,
        on_error=seen.on_error,
    )  # fmt: skip
    with worker:
        wait_until(lambda: seen.errors, what="the refused read")
        assert int(client.xpending(key, "g")["pending"]) == 0  # the XACK went through
        client.execute_command("ACL", "SETUSER", limited["username"], "+xreadgroup")
    assert stream.stats().acked == 10
    assert sorted(seen.counts) == [str(n) for n in range(10)]
    lim.close()
