"""Profile scenario: where a worker's time goes, sampled with pyinstrument.

It must not be read as a throughput figure (sampling slows the code down). It runs the worker's
own read -> handle -> ack steps (_read, _handle) in the main thread, the same calls its thread
makes, because pyinstrument samples the thread it starts in.
"""

from __future__ import annotations

import time
from typing import Any

from redis_streaming import ConsumerWorker, EventStream

from ._common import Scale, Server, fill, fresh_key, sample_events


def _text(profiler: Any) -> str:
    return str(profiler.output_text(unicode=False, color=False, show_all=False, short_mode=False))


def run(server: Server, scale: Scale) -> dict[str, str]:
    from pyinstrument import Profiler

    n = scale.consume_fast
    client = server.client()
    key = fresh_key("profile")
    fill(client, key, n)
    # Fixed reads of 100: this loop calls the worker's steps itself, without the read sizing
    # its thread does (which reaches 100 within a few reads for a no-op handler).
    worker = ConsumerWorker(
        EventStream(client, key, maxlen_approx=None), "g", "p", count=100, batch_budget_ms=None
    )
    profiler = Profiler(interval=0.0005)
    profiler.start()
    fast = True  # the hand-packed read, as the worker thread uses on a plain client
    while worker.processed < n:
        entries, _refused = worker._drive(worker._read(fast))
        ok, _dropped = worker._drive(worker._handle(entries, False))
        worker.processed += len(ok)
        worker._pending_acks.extend(ok)
    worker._drive(worker.flush_acks())
    profiler.stop()
    consume_text = _text(profiler)

    stream = EventStream(client, fresh_key("profile-produce"))
    events = sample_events(scale.batch_size)
    profiler = Profiler(interval=0.0005)
    profiler.start()
    start = time.perf_counter()
    for _ in range(scale.produce_batch // scale.batch_size):
        stream.produce_batch(events)
    profiler.stop()
    _ = time.perf_counter() - start
    return {"consume": consume_text, "produce_batch": _text(profiler)}
