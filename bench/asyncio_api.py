"""Async scenario: the asyncio API against raw redis.asyncio and FastStream, in one run.

Consume: drain N pre-produced entries (no-op handler, receive plus ack) with AsyncConsumerWorker,
a raw redis.asyncio loop (XREADGROUP COUNT 100 + one XACK per batch) and FastStream's stream
subscriber (default and batch). Produce: AsyncEventStream.produce_batch against a raw
redis.asyncio pipeline of the same XADDs. It must not give any variant a head start.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import redis.asyncio as aredis

from redis_streaming import AsyncConsumerWorker, AsyncEventStream, Entry
from redis_streaming.worker import DEFAULT_COUNT

from ._common import Row, Scale, Server, fill, fresh_key, interleaved, raw_fields, sample_events
from .consume import _faststream

COUNT = DEFAULT_COUNT
CAP = 2000  # EventStream's default MAXLEN ~ cap, used by every produce variant


def _client(server: Server) -> aredis.Redis:
    return aredis.Redis(port=server.port, decode_responses=True)


def _raw_consume(server: Server, n: int) -> tuple[int, float]:
    key = fresh_key("araw")
    fill(server.client(), key, n)

    async def main() -> tuple[int, float]:
        client = _client(server)
        done = 0
        start = time.perf_counter()
        while done < n:
            reply = await client.xreadgroup("g", "c", {key: ">"}, count=COUNT, block=100)
            if not reply:
                continue
            ids = [entry_id for entry_id, _fields in reply[0][1]]
            await client.xack(key, "g", *ids)
            done += len(ids)
        elapsed = time.perf_counter() - start
        await client.aclose()
        return done, elapsed

    return asyncio.run(main())


def _worker(server: Server, n: int, **options: Any) -> tuple[int, float]:
    key = fresh_key("aworker")
    sync_client = server.client()
    fill(sync_client, key, n)

    async def main() -> tuple[int, float]:
        client = _client(server)
        stream = AsyncEventStream(client, key, maxlen_approx=None)
        finished = asyncio.Event()
        seen = 0

        async def handler(entry: Entry) -> None:
            nonlocal seen
            seen += 1
            if seen >= n:
                finished.set()

        worker = AsyncConsumerWorker(stream, "g", "w", handler, **options)
        start = time.perf_counter()
        worker.start()
        await asyncio.wait_for(finished.wait(), timeout=600)
        # The last batch's XACK rides on the next read; stop the clock once the server has it.
        while (await client.xpending(key, "g"))["pending"]:
            await asyncio.sleep(0.001)
        elapsed = time.perf_counter() - start
        await worker.stop(5)
        await client.aclose()
        return worker.processed, elapsed

    return asyncio.run(main())


def _raw_produce(server: Server, n: int, size: int) -> tuple[int, float]:
    key = fresh_key("arawp")
    events = [raw_fields(i) for i in range(size)]

    async def main() -> tuple[int, float]:
        client = _client(server)
        start = time.perf_counter()
        for _ in range(n // size):
            pipe = client.pipeline(transaction=False)
            for fields in events:
                pipe.xadd(key, fields, maxlen=CAP, approximate=True)  # type: ignore[arg-type]
            await pipe.execute()
        elapsed = time.perf_counter() - start
        await client.aclose()
        return n // size * size, elapsed

    return asyncio.run(main())


def _produce_batch(server: Server, n: int, size: int) -> tuple[int, float]:
    key = fresh_key("abatch")
    events = sample_events(size)

    async def main() -> tuple[int, float]:
        client = _client(server)
        stream = AsyncEventStream(client, key)
        start = time.perf_counter()
        for _ in range(n // size):
            await stream.produce_batch(events)
        elapsed = time.perf_counter() - start
        await client.aclose()
        return n // size * size, elapsed

    return asyncio.run(main())


RAW_CONSUME = f"raw redis.asyncio XREADGROUP COUNT {COUNT} + one XACK per batch"
WORKER = "AsyncConsumerWorker, default settings"
FS_DEFAULT = "FastStream StreamSub group, default"
FS_BATCH = f"FastStream StreamSub group, batch=True max_records={COUNT}"


def run(server: Server, scale: Scale) -> list[Row]:
    fast, fs = scale.consume_fast, scale.consume_faststream
    size, total = scale.batch_size, scale.produce_batch
    return interleaved(
        "async",
        server.kind,
        scale.repeat,
        [
            (RAW_CONSUME, fast, lambda: _raw_consume(server, fast), ""),
            (
                WORKER,
                fast,
                lambda: _worker(server, fast),
                "AsyncConsumerWorker: the same core as ConsumerWorker (reaper, max_deliveries, "
                "dead letters; acks ride with the next read), async def handler",
            ),
            (
                f"AsyncConsumerWorker count={COUNT}, fixed reads",
                fast,
                lambda: _worker(server, fast, count=COUNT, batch_budget_ms=None),
                "",
            ),
            (FS_DEFAULT, fs, lambda: _faststream(server, fs, False), ""),
            (FS_BATCH, fast // 2, lambda: _faststream(server, fast // 2, True), ""),
            (
                f"raw redis.asyncio pipeline, {size} XADDs per round trip",
                total,
                lambda: _raw_produce(server, total, size),
                "",
            ),
            (
                f"AsyncEventStream.produce_batch x{size}",
                total,
                lambda: _produce_batch(server, total, size),
                "MULTI/EXEC per slice with the commit marker: never stored twice",
            ),
        ],
    )
