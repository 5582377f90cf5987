"""Partition scenario: a PartitionedStream and its pool side by side with one EventStream and one
ConsumerWorker on the same server, in the same run (interleaved rounds), events/s and client CPU.

It measures only; the ratios are read in docs/SCALING.md and PERFORMANCE.md, never asserted.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from redis_streaming import (
    ConsumerWorker,
    EventStream,
    PartitionedConsumerPool,
    PartitionedStream,
)

from ._common import Row, Scale, Server, interleaved, wait_until

PARTITIONS = 6
BATCH = 500
#: every consumer variant reads with the same settings
READ = {"count": 200, "block_ms": 100, "reap_interval": None}

#: the scenario's rows (report.py reads the issue's targets from them)
NAMES: tuple[str, str, str, str, str] = (
    f"EventStream.produce_batch() x{BATCH}",
    f"PartitionedStream.produce_batch() x{BATCH}, {PARTITIONS} partitions",
    "ConsumerWorker, one stream",
    f"PartitionedConsumerPool, {PARTITIONS} partitions, one member",
    f"PartitionedConsumerPool, {PARTITIONS} partitions, one member, combine_reads=False",
)

Measured = tuple[int, float, float]  # events, wall seconds, client CPU seconds (all threads)


def keyed_events(n: int) -> list[tuple[str, str, dict[str, Any]]]:
    return [(f"order-{i}", "created", {"n": i, "amount": i % 100}) for i in range(n)]


def _timed(fn: Callable[[], int]) -> Measured:
    cpu, wall = time.process_time(), time.perf_counter()
    done = fn()
    return done, time.perf_counter() - wall, time.process_time() - cpu


def produce_stream(client: Any, n: int, batch: int = BATCH) -> Measured:
    """EventStream.produce_batch of ``batch`` events at a time, ``n`` events in all."""
    stream = EventStream(client, f"bench:es:{uuid.uuid4().hex[:8]}", maxlen_approx=None)
    events = [(t, p) for _k, t, p in keyed_events(batch)]

    def go() -> int:
        for _ in range(n // batch):
            stream.produce_batch(events)
        return n // batch * batch

    try:
        return _timed(go)
    finally:
        client.delete(stream.key)


def produce_partitioned(client: Any, n: int, batch: int = BATCH) -> Measured:
    """PartitionedStream.produce_batch (``PARTITIONS`` partitions), the same events."""
    ps = PartitionedStream(
        client, f"bench:ps{uuid.uuid4().hex[:8]}", partitions=PARTITIONS, maxlen_approx=None
    )
    events = keyed_events(batch)

    def go() -> int:
        for _ in range(n // batch):
            ps.produce_batch(events)
        return n // batch * batch

    try:
        return _timed(go)
    finally:
        ps.delete()


def produce_cluster_pipeline(client: Any, n: int, batch: int = BATCH) -> Measured:
    """redis-py's own RedisCluster pipeline doing the same XADDs to the same partition keys
    (the fields PartitionedStream would store, encoded up front: only the client's cost for
    sending them is timed)."""
    ps = PartitionedStream(
        client, f"bench:rp{uuid.uuid4().hex[:8]}", partitions=PARTITIONS, maxlen_approx=None
    )
    now = int(time.time() * 1000)
    writes = [
        (ps.partition_for(k), {"type": t, "ts_ms": str(now), **{a: str(b) for a, b in p.items()}})
        for k, t, p in keyed_events(batch)
    ]

    def go() -> int:
        for _ in range(n // batch):
            pipe = client.pipeline(transaction=False)
            for key, fields in writes:
                pipe.xadd(key, fields)
            pipe.execute()
        return n // batch * batch

    try:
        return _timed(go)
    finally:
        ps.delete()


def _fill_partitioned(client: Any, n: int) -> PartitionedStream:
    ps = PartitionedStream(
        client, f"bench:pc{uuid.uuid4().hex[:8]}", partitions=PARTITIONS, maxlen_approx=None
    )
    events = keyed_events(1000)
    for _ in range(max(1, n // 1000)):
        ps.produce_batch(events)
    ps.ensure_group("g", "0")
    return ps


def consume_worker(client: Any, n: int) -> Measured:
    """One ConsumerWorker draining ``n`` pre-produced entries of one stream (read + ack)."""
    stream = EventStream(client, f"bench:cw:{uuid.uuid4().hex[:8]}", maxlen_approx=None)
    events = [(t, p) for _k, t, p in keyed_events(1000)]
    for _ in range(max(1, n // 1000)):
        stream.produce_batch(events)
    stream.ensure_group("g", "0")
    total = max(1, n // 1000) * 1000
    worker = ConsumerWorker(stream, "g", "w", **READ)  # type: ignore[arg-type]

    def go() -> int:
        worker.start()
        wait_until(lambda: worker.processed >= total, timeout=600, poll=0.005)
        wait_until(lambda: not client.xpending(stream.key, "g")["pending"], timeout=60, poll=0.002)
        return worker.processed

    try:
        return _timed(go)
    finally:
        worker.stop(5)
        stream.delete_stream()


def consume_pool(client: Any, n: int, combine_reads: bool = True) -> Measured:
    """A PartitionedConsumerPool (one member, ``PARTITIONS`` partitions) draining ``n`` entries;
    ``combine_reads=False``: one worker thread per partition instead of one shared read."""
    ps = _fill_partitioned(client, n)
    total = max(1, n // 1000) * 1000
    pool = PartitionedConsumerPool(
        ps, "g", consumers=1, name_prefix="bench", group_start="0", lease_ms=5000,
        combine_reads=combine_reads, **READ,
    )  # fmt: skip

    def drained() -> bool:
        # The cheap check first, as consume_worker does: polling XINFO on every partition
        # every 5 ms would cost the measured process more than the reads it measures.
        if pool.totals()["processed"] < total:
            return False
        groups = ps.info_groups()
        return bool(groups) and groups[0].pending == 0

    def go() -> int:
        pool.start()
        wait_until(drained, timeout=600, poll=0.005)
        return pool.totals()["processed"]

    try:
        return _timed(go)
    finally:
        pool.stop()
        ps.delete()


def run(server: Server, scale: Scale) -> list[Row]:
    """Rows for the main benchmark: one node, the partitioned path vs the plain one."""
    n = scale.produce_batch // 2
    m = scale.consume_fast // 2
    cpu: dict[str, list[float]] = {}

    def keep(name: str, fn: Callable[[], Measured]) -> Callable[[], tuple[int, float]]:
        def call() -> tuple[int, float]:
            done, seconds, used = fn()
            cpu.setdefault(name, []).append(used / max(done, 1) * 1e6)
            return done, seconds

        return call

    names = NAMES
    rows = interleaved(
        "partition",
        server.kind,
        scale.repeat,
        [
            (names[0], n, keep(names[0], lambda: produce_stream(server.client(), n)), ""),
            (
                names[1],
                n,
                keep(names[1], lambda: produce_partitioned(server.client(), n)),
                "partitions written side by side on the hand-packed path",
            ),
            (names[2], m, keep(names[2], lambda: consume_worker(server.client(), m)), ""),
            (
                names[3],
                m,
                keep(names[3], lambda: consume_pool(server.client(), m)),
                "one XREADGROUP for all partitions; every variant reads count=200, "
                "block_ms=100, no reaper",
            ),
            (
                names[4],
                m,
                keep(names[4], lambda: consume_pool(server.client(), m, combine_reads=False)),
                "one worker thread (and blocking read) per partition",
            ),
        ],
    )
    for name in names:
        samples = sorted(cpu.get(name, [0.0]))
        rows.append(
            Row(
                "partition",
                server.kind,
                f"{name}: client CPU",
                samples[len(samples) // 2],
                "µs/event",
                0,
                samples,
            )
        )
    return rows
