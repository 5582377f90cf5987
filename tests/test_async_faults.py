"""Faults on purpose, on the asyncio shell: a cut producer round is settled, never resent
blindly; a stalled connection never hangs an AsyncConsumerWorker or its stop().

Same real TCP proxy as the sync fault tests (tests/faults.py); the client has no socket timeout.
"""

from __future__ import annotations

import asyncio
import time

import redis
import redis.asyncio as aredis

from faults import FaultProxy
from redis_streaming import (
    AsyncConsumerWorker,
    AsyncEventStream,
    Backoff,
    Entry,
    RedisUnavailable,
)
from redis_streaming import _fastpath as fp
from test_produce_faults import Once

FAST = Backoff(base_s=0.01, cap_s=0.05)


def test_async_round_cut_after_exec_is_settled_not_duplicated(
    proxy: FaultProxy, client: redis.Redis, key: str
) -> None:
    async def scenario() -> list[str]:
        c = aredis.Redis(port=proxy.port, decode_responses=True)
        s = AsyncEventStream(c, key, maxlen_approx=None, backoff=FAST)
        await s.produce("warm", {})  # the connection and its CLIENT ID exist before the cut
        # Cut once the first slice's EXEC reply (its IDs + the marker's reply) is on its way.
        proxy.rule = Once("down", b"*%d\r\n" % (fp.XADD_WRITE + 1))
        ids = await s.produce_batch([("order", {"n": i}) for i in range(100)])
        await c.aclose()
        return ids

    ids = asyncio.run(scenario())
    assert proxy.rule is not None and proxy.rule.fired  # type: ignore[attr-defined]
    stored = client.xrange(key)
    assert len(stored) == 101 and [i for i, _ in stored[1:]] == ids
    assert [f["n"] for _, f in stored[1:]] == [str(i) for i in range(100)]


def test_async_worker_survives_a_stall_and_stop_is_bounded(
    proxy: FaultProxy, client: redis.Redis, key: str
) -> None:
    errors: list[BaseException] = []
    seen: list[str] = []

    async def scenario() -> float:
        c = aredis.Redis(port=proxy.port, decode_responses=True)
        s = AsyncEventStream(c, key, maxlen_approx=None)

        async def handler(entry: Entry) -> None:
            seen.append(entry.id)

        w = AsyncConsumerWorker(
            s, "g", "w", handler, group_start="0", block_ms=100, reap_interval=None,
            backoff=FAST, on_error=lambda exc, entry: errors.append(exc),
        ).start()  # fmt: skip
        first = client.xadd(key, {"type": "t"})
        while seen != [first]:
            await asyncio.sleep(0.01)
        proxy.stall()
        while not errors:  # the read's own deadline (block_ms + 2 s) ends the silent wait
            await asyncio.sleep(0.01)
        assert isinstance(errors[0], RedisUnavailable)
        began = time.monotonic()
        stopped = await w.stop(5)
        took = time.monotonic() - began
        proxy.unstall()
        assert stopped and not w.is_alive
        await c.aclose()
        return took

    took = asyncio.run(scenario())
    assert took < 5
