"""Prometheus metrics against real servers: counters and per-group gauges, rendered and served."""

from __future__ import annotations

import urllib.request

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from redis.backoff import NoBackoff
from redis.retry import Retry

from redis_streaming import ConsumerWorker, EmbeddedServer, Entry, EventStream
from redis_streaming.metrics import CONTENT_TYPE, StreamMetrics
from waiting import wait_until


def samples(text: bytes | str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    if isinstance(text, bytes):
        text = text.decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(m: StreamMetrics, name: str, **labels: str) -> float | None:
    return samples(m.render()[0]).get((name, tuple(sorted(labels.items()))))


def test_counters_and_gauges(stream: EventStream) -> None:
    def handler(entry: Entry) -> None:
        if entry.type == "bad":
            raise ValueError("poison")

    stream.ensure_group("g", "0")
    worker = ConsumerWorker(
        stream, "g", "w1", handler, reap_interval=0.05, max_deliveries=2, block_ms=50
    )
    m = StreamMetrics(stream, [worker])
    stream.produce_batch([("ok", {"n": i}) for i in range(5)] + [("bad", {})])
    worker.start()
    try:
        wait_until(lambda: worker.dead_lettered == 1 and worker.processed == 5)
        wait_until(lambda: not stream.pending("g"))
    finally:
        worker.stop(5)
    body, ctype = m.render()
    assert ctype == CONTENT_TYPE
    got = samples(body)
    k = stream.key
    wl = (("consumer", "w1"), ("group", "g"), ("stream", k))
    gl = (("group", "g"), ("stream", k))
    assert got[("redis_streaming_produced_total", (("stream", k),))] == 6
    assert got[("redis_streaming_acked_total", (("stream", k),))] >= 5
    assert got[("redis_streaming_processed_total", wl)] == 5
    assert got[("redis_streaming_failed_total", wl)] == 2
    assert got[("redis_streaming_dead_lettered_total", wl)] == 1
    assert ("redis_streaming_reaped_total", wl) in got
    assert got[("redis_streaming_worker_alive", wl)] == 0
    assert got[("redis_streaming_up", (("stream", k),))] == 1
    assert got[("redis_streaming_stream_length", (("stream", k),))] == 6
    assert got[("redis_streaming_dead_letters", (("stream", k),))] == 1
    assert got[("redis_streaming_group_lag", gl)] == 0
    assert got[("redis_streaming_group_lag_exact", gl)] == 1
    assert got[("redis_streaming_group_pending", gl)] == 0
    assert got[("redis_streaming_group_oldest_pending_age_seconds", gl)] == 0
    assert got[("redis_streaming_group_consumers", gl)] == 1
    assert got[("redis_streaming_group_healthy", gl)] == 1


def test_pending_age_and_lag_gauges(stream: EventStream) -> None:
    stream.produce_batch([("e", {"n": i}) for i in range(4)])
    stream.ensure_group("g", "0")
    stream.consume("g", "c", count=1, block_ms=None)
    m = StreamMetrics(stream)
    gl = {"stream": stream.key, "group": "g"}
    assert value(m, "redis_streaming_group_lag", **gl) == 3
    assert value(m, "redis_streaming_group_pending", **gl) == 1
    wait_until(
        lambda: (value(m, "redis_streaming_group_oldest_pending_age_seconds", **gl) or 0) > 0.01
    )


def test_lag_gauge_counts_what_the_server_cannot_and_flags_a_lower_bound(
    stream: EventStream, client: redis.Redis
) -> None:
    ids = stream.produce_batch([("e", {"n": i}) for i in range(30)])
    stream.ensure_group("g", "0")
    stream.consume("g", "c", count=10, block_ms=None)
    client.xdel(stream.key, *ids[15:21])  # XINFO GROUPS now says lag nil
    gl = {"stream": stream.key, "group": "g"}
    m = StreamMetrics(stream)
    assert value(m, "redis_streaming_group_lag", **gl) == 14
    assert value(m, "redis_streaming_group_lag_exact", **gl) == 1
    capped = StreamMetrics(stream, lag_cap=5)
    assert value(capped, "redis_streaming_group_lag", **gl) == 6
    assert value(capped, "redis_streaming_group_lag_exact", **gl) == 0
    assert value(capped, "redis_streaming_group_healthy", **gl) == 1  # >= 6 is under max_lag


def test_own_registry_per_object_and_worker_removal(stream: EventStream) -> None:
    worker = ConsumerWorker(stream, "g", "w1")
    a = StreamMetrics(stream, [worker], health=False)
    b = StreamMetrics(stream, health=False)
    assert a.registry is not b.registry
    wl = {"stream": stream.key, "group": "g", "consumer": "w1"}
    assert value(a, "redis_streaming_processed_total", **wl) == 0
    assert value(b, "redis_streaming_processed_total", **wl) is None
    a.remove_worker(worker)
    assert value(a, "redis_streaming_processed_total", **wl) is None
    with pytest.raises(TypeError):
        a.add_worker("not a worker")  # type: ignore[arg-type]


def test_serve_on_a_port(stream: EventStream) -> None:
    stream.produce("e", {})
    srv = StreamMetrics(stream).serve(0)
    try:
        with urllib.request.urlopen(srv.url, timeout=5) as resp:
            text = resp.read().decode()
        assert f'redis_streaming_produced_total{{stream="{stream.key}"}} 1.0' in text
    finally:
        srv.close()


def test_scrape_with_redis_down(private_server: EmbeddedServer) -> None:
    client = redis.Redis(
        host=private_server.host,
        port=private_server.port,
        socket_connect_timeout=0.5,
        retry=Retry(NoBackoff(), 0),
    )
    s = EventStream(client, "k", retries=0)
    s.produce("e", {})
    m = StreamMetrics(s)
    private_server.stop()
    got = samples(m.render()[0])
    assert got[("redis_streaming_up", (("stream", "k"),))] == 0
    assert got[("redis_streaming_produced_total", (("stream", "k"),))] == 1
