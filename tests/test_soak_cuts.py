"""Random connection cuts under load: a producer and a worker through a proxy that cuts every
connection at random moments, then the server is checked.

Afterwards: every stored event was processed at least once, the PEL drained to 0, no event was
stored twice by a retry, every producer failure said what was stored, and the worker thread is
alive. The run length is ``RS_SOAK_S`` seconds per server kind (default 8; docs/RELIABILITY.md
quotes a longer run). Figures go to test-output/soak_cuts-<kind>.json.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from faults import FaultProxy
from redis_streaming import (
    Backoff,
    ConsumerWorker,
    EmbeddedServer,
    Entry,
    EventStream,
    ProduceError,
    RedisUnavailable,
)
from waiting import wait_until

SOAK_S = float(os.environ.get("RS_SOAK_S", "8"))
BATCH = 25
OUT = Path(__file__).resolve().parent.parent / "test-output"


def _cut_everything(way: str, data: bytes, seen: bytes) -> str:
    return "cut"


class Producer(threading.Thread):
    """produce_batch in a loop; a failed event is sent again only when the error says it was
    not stored (never when it is unknown): the retry an application would write.

    Calls alternate between a stream that retries a cut itself (``retries=3``) and one that
    reports it at once (``retries=0``), so both the library's resend and the error's account
    of a partial batch meet the cuts."""

    def __init__(self, streams: list[EventStream], until: threading.Event) -> None:
        super().__init__(daemon=True)
        self.streams, self.until = streams, until
        self.next_n = 0
        self.stored: dict[int, str] = {}  # payload n -> ID the producer was told
        self.unknown: set[int] = set()
        self.failures: list[str] = []  # failures that did not say what was stored
        self.errors = 0
        self.calls = 0

    def run(self) -> None:
        retry: list[int] = []
        while not self.until.is_set():
            ns = retry or list(range(self.next_n, self.next_n + BATCH))
            if not retry:
                self.next_n += BATCH
            retry = []
            self.calls += 1
            try:
                stream = self.streams[self.calls % len(self.streams)]
                ids = stream.produce_batch([("order", {"n": n}) for n in ns])
            except ProduceError as exc:
                self.errors += 1
                if len(exc.ids) != len(ns) or set(exc.stored) | set(exc.not_stored) | set(
                    exc.unknown
                ) != set(range(len(ns))):
                    self.failures.append(f"incomplete account: {exc!r}")
                for i in exc.stored:
                    self.stored[ns[i]] = exc.ids[i]  # type: ignore[assignment]
                self.unknown.update(ns[i] for i in exc.unknown)
                retry = [ns[i] for i in exc.not_stored]
                continue
            except RedisUnavailable as exc:  # must never happen: it would not say what stored
                self.errors += 1
                self.failures.append(f"no account of the batch: {exc!r}")
                continue
            self.stored.update(zip(ns, ids, strict=True))


def test_random_cuts_lose_nothing_and_duplicate_nothing(
    server: EmbeddedServer, client: redis.Redis, key: str
) -> None:
    if not server.running:
        server.start()
    proxy = FaultProxy(server.host, server.port)
    # No redis-py retries: its own connect retries would ride out every outage, and the test
    # wants failures to reach the library's retry and the producer's error handling.
    via = redis.Redis(
        port=proxy.port, decode_responses=True, socket_timeout=5, retry=Retry(NoBackoff(), 0)
    )
    stream = EventStream(via, key, maxlen_approx=None, retries=3, backoff=Backoff(0.01, 0.05))
    no_retry = EventStream(via, key, maxlen_approx=None, retries=0)
    handled: Counter[str] = Counter()
    lock = threading.Lock()

    def handler(entry: Entry) -> None:
        with lock:
            handled[entry.id] += 1

    worker = ConsumerWorker(
        stream, "g", "soak", handler, block_ms=100, reap_interval=0.2, claim_min_idle_ms=200,
        group_start="0", backoff=Backoff(0.01, 0.05),
    ).start()  # fmt: skip
    until = threading.Event()
    producer = Producer([stream, no_retry], until)
    producer.start()
    chaos = random.Random(int(os.environ.get("RS_SOAK_SEED", "11")))
    began = time.monotonic()
    cuts = rounds = outages = 0
    try:
        while time.monotonic() - began < SOAK_S:
            # The fault schedule itself: cut every connection at random moments; one time in
            # three the server then stays unreachable for a moment (every new connection is
            # cut at its first byte), so retries run out and failures reach the producer.
            time.sleep(chaos.uniform(0.5, 2.0))
            cuts += proxy.cut_all()
            rounds += 1
            if chaos.random() < 1 / 3:
                proxy.rule = _cut_everything
                time.sleep(chaos.uniform(0.2, 0.6))
                proxy.rule = None
                outages += 1
        last_cut = time.monotonic()
        until.set()
        producer.join(30)
        assert not producer.is_alive()
        in_stream = client.xrange(key)
        stored_ids = {entry_id for entry_id, _ in in_stream}

        def drained() -> bool:
            with lock:
                done = stored_ids <= handled.keys()
            return done and client.xpending(key, "g")["pending"] == 0

        wait_until(drained, timeout=60, what="every stored entry processed and the PEL drained")
        recovered_s = time.monotonic() - last_cut
        assert worker.is_alive, "the worker thread died"
    finally:
        until.set()
        worker.stop(10)
        via.close()
        proxy.close()

    per_n = Counter(int(fields["n"]) for _, fields in in_stream)
    twice = sorted(n for n, c in per_n.items() if c > 1)
    assert twice == [], f"stored twice by a retry: {twice[:10]}"
    assert producer.failures == []
    # What the producer was told is exactly what the server holds.
    for n, entry_id in producer.stored.items():
        assert entry_id in stored_ids and per_n[n] == 1, (n, entry_id)
    told = set(producer.stored) | producer.unknown
    assert set(per_n) <= told, "an event the producer was told failed is in the stream"
    redelivered = sum(c - 1 for c in handled.values())
    figures: dict[str, Any] = {
        "server": server.kind,
        "seconds": SOAK_S,
        "cut_rounds": rounds,
        "connections_cut": cuts,
        "outages": outages,
        "produce_calls": producer.calls,
        "produce_failures": producer.errors,
        "events_stored": len(stored_ids),
        "events_unknown_to_producer": len(producer.unknown),
        "stored_twice": len(twice),
        "processed_more_than_once": redelivered,
        "seconds_to_drain_after_last_cut": round(recovered_s, 2),
    }
    OUT.mkdir(exist_ok=True)
    (OUT / f"soak_cuts-{server.kind}.json").write_text(json.dumps(figures, indent=2))
    assert rounds >= 1 and len(stored_ids) > 0
