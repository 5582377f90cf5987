"""Latency scenario: produce-to-handler time at a fixed rate, with blocking reads.

One producer thread paces produce() calls; a ConsumerWorker (default block_ms) records, in its
handler, how long ago each event was sent. It must not busy-poll: the worker blocks in XREADGROUP.
"""

from __future__ import annotations

import statistics
import threading
import time

from redis_streaming import ConsumerWorker, Entry, EventStream

from ._common import Row, Scale, Server, fresh_key, wait_until


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def run(server: Server, scale: Scale) -> list[Row]:
    client = server.client()
    stream = EventStream(client, fresh_key("latency"))
    stream.ensure_group("g", "$")
    latencies: list[float] = []
    lock = threading.Lock()

    def handler(entry: Entry) -> None:
        sent = int(entry.fields["t_ns"])
        with lock:
            latencies.append((time.perf_counter_ns() - sent) / 1e6)

    worker = ConsumerWorker(stream, "g", "w", handler).start()
    total = int(scale.latency_rate * scale.latency_seconds)
    interval = 1.0 / scale.latency_rate
    # Give the worker time to reach its first blocking read, so startup is not measured.
    wait_until(lambda: bool(stream.info_consumers("g")), timeout=10)
    start = time.perf_counter()
    for i in range(total):
        due = start + i * interval
        pause = due - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        stream.produce("tick", {"i": i, "t_ns": time.perf_counter_ns()})
    wait_until(lambda: len(latencies) >= total, timeout=30)
    worker.stop(5)
    if not latencies:
        return []
    note = f"{scale.latency_rate} events/s for {scale.latency_seconds:g}s, block_ms=500"
    rows = [
        Row(
            "latency",
            server.kind,
            "p50 produce-to-handler",
            _percentile(latencies, 0.50),
            "ms",
            len(latencies),
            [],
            note,
        ),
        Row(
            "latency",
            server.kind,
            "p99 produce-to-handler",
            _percentile(latencies, 0.99),
            "ms",
            len(latencies),
            [],
            note,
        ),
        Row(
            "latency",
            server.kind,
            "mean produce-to-handler",
            statistics.fmean(latencies),
            "ms",
            len(latencies),
            [],
            note,
        ),
        Row(
            "latency",
            server.kind,
            "max produce-to-handler",
            max(latencies),
            "ms",
            len(latencies),
            [],
            note,
        ),
    ]
    return rows
