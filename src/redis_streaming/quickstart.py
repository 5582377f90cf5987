"""A short end-to-end walk through the pattern: produce, two groups consume, crash, reclaim, replay.

It prints what happens; it is the text twin of the web demo and must stay under a screenful.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import redis

from ._model import Entry
from .stream import EventStream
from .worker import ConsumerWorker


def run(url: str, stream_key: str = "quickstart:orders", echo: bool = True) -> dict[str, int]:
    """Run the walk-through against ``url``; returns the final counters."""

    def say(msg: str) -> None:
        if echo:
            print(msg, flush=True)

    client = redis.Redis.from_url(url, decode_responses=True)
    stream = EventStream(client, stream_key, maxlen_approx=10_000, claim_min_idle_ms=200)
    stream.delete_stream()
    for group in ("notifications", "analytics"):
        stream.ensure_group(group, "0")
    ids = stream.produce_batch(
        [("order.placed", {"order_id": f"o-{i}", "amount": 10 + i}) for i in range(20)]
    )
    say(f"produced {len(ids)} events to {stream_key}: {ids[0]} .. {ids[-1]}")

    seen: dict[str, int] = {"notifications": 0, "analytics": 0}

    def counter(group: str) -> Callable[[Entry], None]:
        def handle(entry: Entry) -> None:
            seen[group] += 1

        return handle

    a = ConsumerWorker(
        stream,
        "notifications",
        "worker-a",
        counter("notifications"),
        block_ms=50,
        reap_interval=None,
    )
    b = ConsumerWorker(
        stream,
        "notifications",
        "worker-b",
        counter("notifications"),
        block_ms=50,
        reap_interval=None,
    )
    c = ConsumerWorker(
        stream, "analytics", "worker-c", counter("analytics"), block_ms=50, reap_interval=None
    )
    a.crash_next(3)
    a.start()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and a.crashed_drops < 3:
        time.sleep(0.01)
    b.start()
    c.start()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and stream.info_groups()[0].lag not in (0, None):
        time.sleep(0.05)
    time.sleep(0.3)  # let the pending entries age past claim_min_idle_ms (200 ms)
    pending = stream.pending("notifications")
    say(f"worker-a dropped {a.crashed_drops} deliveries; notifications has {len(pending)} pending")
    result = b.reap_idle_pel()
    say(f"worker-b XAUTOCLAIMed {result.claimed} and processed {result.processed}")
    for w in (a, b, c):
        w.stop(2)
    for g in stream.info_groups():
        say(f"group {g.name}: pending={g.pending} lag={g.lag} last={g.last_delivered_id}")
    first = stream.replay("-", "+", count=3)
    say("replay of the first 3: " + ", ".join(f"{e.id} {e.type} {e.payload}" for e in first))
    say(f"processed: notifications={seen['notifications']} analytics={seen['analytics']}")
    return seen
