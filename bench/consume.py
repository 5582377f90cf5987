"""Consume scenario: drain N pre-produced entries with a no-op handler, receive plus ack.

Compares ConsumerWorker (every feature on) with raw redis-py loops, FastStream and walrus. Each
variant gets its own stream and group; the clock runs from the first read until every entry is
acked. It must not give any variant a head start (all start from group ID 0, all from a fill).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from redis_streaming import ConsumerWorker, EventStream
from redis_streaming.worker import DEFAULT_COUNT

from ._common import Row, Scale, Server, fill, fresh_key, interleaved, wait_until

COUNT = DEFAULT_COUNT  # the raw loop's XREADGROUP COUNT: the most a default worker reads at once


def _raw_batched(server: Server, n: int) -> tuple[int, float]:
    client = server.client()
    key = fresh_key("raw")
    fill(client, key, n)
    done = 0
    start = time.perf_counter()
    while done < n:
        reply = client.xreadgroup("g", "c", {key: ">"}, count=COUNT, block=100)
        if not reply:
            continue
        ids = [entry_id for entry_id, _fields in reply[0][1]]
        client.xack(key, "g", *ids)
        done += len(ids)
    return done, time.perf_counter() - start


def _raw_guide(server: Server, n: int) -> tuple[int, float]:
    # The Redis guide's loop: read a batch, then one XACK round trip per processed entry.
    client = server.client()
    key = fresh_key("guide")
    fill(client, key, n)
    done = 0
    start = time.perf_counter()
    while done < n:
        reply = client.xreadgroup("g", "c", {key: ">"}, count=10, block=100)
        if not reply:
            continue
        for entry_id, _fields in reply[0][1]:
            client.xack(key, "g", entry_id)
            done += 1
    return done, time.perf_counter() - start


def _worker(server: Server, n: int, **options: Any) -> tuple[int, float]:
    client = server.client()
    key = fresh_key("worker")
    fill(client, key, n)
    stream = EventStream(client, key, maxlen_approx=None)
    worker = ConsumerWorker(stream, "g", "w", **options)
    start = time.perf_counter()
    worker.start()
    wait_until(lambda: worker.processed >= n, timeout=600, poll=0.005)
    # The last batch's XACK rides on the next read; stop the clock once the server has it.
    wait_until(lambda: not client.xpending(key, "g")["pending"], timeout=60, poll=0.001)
    elapsed = time.perf_counter() - start
    worker.stop(5)
    return worker.processed, elapsed


def _faststream(server: Server, n: int, batch: bool) -> tuple[int, float]:
    from faststream.redis import RedisBroker, StreamSub

    client = server.client()
    key = fresh_key("faststream")
    fill(client, key, n)
    logging.getLogger("faststream").setLevel(logging.ERROR)

    async def main() -> tuple[int, float]:
        broker = RedisBroker(server.url, logger=None)
        done = asyncio.Event()
        seen = 0
        sub = StreamSub(
            key, group="g", consumer="c", batch=batch, max_records=COUNT if batch else None
        )

        if batch:

            @broker.subscriber(stream=sub)
            async def handle_batch(msgs: list[Any]) -> None:
                nonlocal seen
                seen += len(msgs)
                if seen >= n:
                    done.set()
        else:

            @broker.subscriber(stream=sub)
            async def handle_one(msg: Any) -> None:
                nonlocal seen
                seen += 1
                if seen >= n:
                    done.set()

        start = time.perf_counter()
        async with broker:
            await broker.start()
            await asyncio.wait_for(done.wait(), timeout=600)
            # FastStream acks after the handler returns; wait for the last ack to land.
            while client.xpending(key, "g")["pending"]:
                await asyncio.sleep(0.001)
            elapsed = time.perf_counter() - start
        return seen, elapsed

    return asyncio.run(main())


def _walrus(server: Server, n: int) -> tuple[int, float]:
    from walrus import Database

    client = server.client()
    key = fresh_key("walrus")
    fill(client, key, n, group=None)
    db = Database(host="127.0.0.1", port=server.port)
    group = db.consumer_group("g", {key: "0"}, consumer="c")
    group.create()
    stream = group.streams[key]
    done = 0
    start = time.perf_counter()
    while done < n:
        batch = stream.read(count=COUNT, block=100)
        if not batch:
            continue
        stream.ack(*[entry_id for entry_id, _data in batch])
        done += len(batch)
    elapsed = time.perf_counter() - start
    db.close()
    return done, elapsed


def run(server: Server, scale: Scale) -> list[Row]:
    fast, slow, fs = scale.consume_fast, scale.consume_slow, scale.consume_faststream
    return interleaved(
        "consume",
        server.kind,
        scale.repeat,
        [
            (
                f"raw redis-py XREADGROUP COUNT {COUNT} + one XACK per batch",
                fast,
                lambda: _raw_batched(server, fast),
                "",
            ),
            (
                "ConsumerWorker, default settings",
                fast,
                lambda: _worker(server, fast),
                "ConsumerWorker: reaper, max_deliveries and dead letters on; each batch's XACK "
                f"rides with the next read; reads adapt from 10 up to count={COUNT}",
            ),
            (
                f"ConsumerWorker count={COUNT}, fixed reads",
                fast,
                lambda: _worker(server, fast, count=COUNT, batch_budget_ms=None),
                "",
            ),
            (
                "ConsumerWorker count=10, fixed reads (the old default)",
                fast,
                lambda: _worker(server, fast, count=10, batch_budget_ms=None),
                "",
            ),
            (
                "raw redis-py, guide loop (one XACK per entry)",
                slow,
                lambda: _raw_guide(server, slow),
                "",
            ),
            (
                "FastStream StreamSub group, default",
                fs,
                lambda: _faststream(server, fs, False),
                f"FastStream default drains {fs:,} entries; batch=True drains {fast // 2:,}",
            ),
            (
                f"FastStream StreamSub group, batch=True max_records={COUNT}",
                fast // 2,
                lambda: _faststream(server, fast // 2, True),
                "",
            ),
            (
                f"walrus ConsumerGroup read(count={COUNT}) + ack",
                fast,
                lambda: _walrus(server, fast),
                "",
            ),
        ],
    )
