"""Ack-and-delete scenario (Redis 8.2+): XACKDEL per batch against XACK plus a periodic trim.

Both variants drain N pre-produced entries with a ConsumerWorker and end with the processed
entries removed from the stream: one with ``ack_mode="delete"`` (XACKDEL ... ACKED rides with
the next read), one acking with XACK while a thread runs ``trim_safe(approximate=False)`` every
100 ms (until the stream is empty). On servers without XACKDEL it reports nothing.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from redis_streaming import ConsumerWorker, EventStream

from ._common import Row, Scale, Server, fill, fresh_key, interleaved, wait_until

TRIM_EVERY_S = 0.1


def _drain(server: Server, n: int, delete: bool) -> tuple[int, float]:
    client = server.client()
    key = fresh_key("ackdel" if delete else "acktrim")
    fill(client, key, n)
    stream = EventStream(client, key, maxlen_approx=None)
    options: dict[str, Any] = {"ack_mode": "delete"} if delete else {}
    worker = ConsumerWorker(stream, "g", "w", reap_interval=None, **options)
    stop = threading.Event()

    def trimmer() -> None:
        while not stop.wait(TRIM_EVERY_S):
            stream.trim_safe(approximate=False)

    thread = None if delete else threading.Thread(target=trimmer, daemon=True)
    start = time.perf_counter()
    worker.start()
    if thread is not None:
        thread.start()
    # Done when every entry is processed, acked and gone from the stream.
    wait_until(lambda: worker.processed >= n and client.xlen(key) == 0, timeout=600, poll=0.002)
    elapsed = time.perf_counter() - start
    stop.set()
    worker.stop(5)
    if thread is not None:
        thread.join(5)
    client.delete(key)
    return worker.processed, elapsed


def run(server: Server, scale: Scale) -> list[Row]:
    if not EventStream(server.client(), "bench:probe").capabilities().xackdel:
        return []
    n = scale.consume_fast // 2
    return interleaved(
        "ackdel",
        server.kind,
        scale.repeat,
        [
            (
                "ConsumerWorker XACK + trim_safe(exact) every 100 ms",
                n,
                lambda: _drain(server, n, False),
                "the clock stops when every entry is processed and gone from the stream",
            ),
            (
                'ConsumerWorker ack_mode="delete" (XACKDEL ACKED)',
                n,
                lambda: _drain(server, n, True),
                "",
            ),
        ],
    )
