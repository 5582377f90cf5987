"""Produce scenario: produce() and produce_batch() against raw redis-py and redis-benchmark.

Every variant sends the same command (XADD key MAXLEN ~ 2000 * ...), so only client cost differs.
It must not change any library default to look faster.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time

from redis_streaming import EventStream

from ._common import Row, Scale, Server, fresh_key, interleaved, raw_fields, sample_events

CAP = 2000  # EventStream's default MAXLEN ~ cap, used by every variant


def _raw_single(server: Server, n: int) -> tuple[int, float]:
    client = server.client()
    key = fresh_key("raw1")
    events = [raw_fields(i) for i in range(n)]
    start = time.perf_counter()
    for fields in events:
        client.xadd(key, fields, maxlen=CAP, approximate=True)  # type: ignore[arg-type]
    return n, time.perf_counter() - start


def _raw_pipelined(server: Server, n: int, size: int) -> tuple[int, float]:
    client = server.client()
    key = fresh_key("rawp")
    events = [raw_fields(i) for i in range(size)]
    start = time.perf_counter()
    for _ in range(n // size):
        pipe = client.pipeline(transaction=False)
        for fields in events:
            pipe.xadd(key, fields, maxlen=CAP, approximate=True)  # type: ignore[arg-type]
        pipe.execute()
    return n // size * size, time.perf_counter() - start


def _produce(server: Server, n: int) -> tuple[int, float]:
    stream = EventStream(server.client(), fresh_key("produce"))
    events = sample_events(n)
    start = time.perf_counter()
    for event_type, payload in events:
        stream.produce(event_type, payload)
    return n, time.perf_counter() - start


def _produce_batch(server: Server, n: int, size: int) -> tuple[int, float]:
    stream = EventStream(server.client(), fresh_key("batch"))
    events = sample_events(size)
    start = time.perf_counter()
    for _ in range(n // size):
        stream.produce_batch(events)
    return n // size * size, time.perf_counter() - start


def redis_benchmark_xadd(server: Server, n: int, clients: int = 50) -> float | None:
    """redis-benchmark's pipelined XADD (-P 100) against our private server."""
    binary = shutil.which("redis-benchmark")
    if binary is None:
        return None
    fields = raw_fields(0)
    args = [
        binary,
        "-h",
        "127.0.0.1",
        "-p",
        str(server.port),
        "-n",
        str(n),
        "-P",
        "100",
        "-c",
        str(clients),
        "-q",
        "XADD",
        fresh_key("rb"),
        "MAXLEN",
        "~",
        str(CAP),
        "*",
    ]
    for k, v in fields.items():
        args += [k, v]
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    # -q prints e.g. "XADD ...: 480000.00 requests per second, p50=..." (after \r progress)
    found = re.findall(r"([\d.]+) requests per second", out.stdout)
    return float(found[-1]) if found else None


def run(server: Server, scale: Scale) -> list[Row]:
    size = scale.batch_size
    single, many = scale.produce_single, scale.produce_batch
    rows = interleaved(
        "produce",
        server.kind,
        scale.repeat,
        [
            ("raw redis-py single XADD", single, lambda: _raw_single(server, single), ""),
            ("produce()", single, lambda: _produce(server, single), ""),
            (
                f"raw redis-py pipelined XADD x{size}",
                many,
                lambda: _raw_pipelined(server, many, size),
                "",
            ),
            (
                f"produce_batch() x{size}",
                many,
                lambda: _produce_batch(server, many, size),
                "validates every event first; hand-packed XADDs",
            ),
        ],
    )
    for clients, note in (
        (1, "redis-benchmark, one connection: the ceiling for any single-connection producer"),
        (50, "redis-benchmark, 50 connections: the server's own limit"),
    ):
        rb = redis_benchmark_xadd(server, scale.redis_benchmark_n, clients)
        if rb is not None:
            name = f"redis-benchmark XADD -P 100 ({clients} connection{'s' * (clients > 1)})"
            rows.append(
                Row(
                    "produce",
                    server.kind,
                    name,
                    rb,
                    "events/s",
                    scale.redis_benchmark_n,
                    [rb],
                    note,
                )
            )
    return rows
