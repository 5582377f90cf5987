"""Health view against real servers: lag vs stuck classification, two round trips, JSON-ready."""

from __future__ import annotations

import json

import pytest
import redis

from redis_streaming import EventStream, InvalidOption
from redis_streaming._model import GroupInfo, StreamInfo
from redis_streaming.health import HealthMonitor, HealthThresholds, check_health, classify_group
from waiting import wait_until


def test_missing_stream(stream: EventStream) -> None:
    report = check_health(stream)
    assert not report.exists and report.groups == () and report.ok
    assert report.dead_letter_key == stream.key + ":dlq"


def test_numbers_per_group(stream: EventStream) -> None:
    ids = stream.produce_batch([("e", {"n": i}) for i in range(10)])
    stream.ensure_group("g", "0")
    stream.ensure_group("idle", "$")
    stream.consume("g", "c1", count=3, block_ms=None)
    report = check_health(stream)
    assert report.exists and report.length == 10
    g = report.group("g")
    assert g is not None
    assert (g.pending, g.lag, g.oldest_pending_id) == (3, 7, ids[0])
    assert g.oldest_pending_deliveries == 1
    assert g.oldest_pending_age_ms is not None and g.oldest_pending_age_ms >= 0
    assert [(c.name, c.pending) for c in g.consumers] == [("c1", 3)]
    assert g.status == "ok"
    other = report.group("idle")
    assert other is not None and other.lag == 0 and other.pending == 0
    assert other.oldest_pending_id is None and other.max_consumer_idle_ms is None
    assert report.group("nope") is None
    json.dumps(report.to_dict())  # the demo and CLI serve this as-is


def test_lagging_over_threshold(stream: EventStream) -> None:
    stream.produce_batch([("e", {"n": i}) for i in range(10)])
    stream.ensure_group("g", "0")
    report = check_health(stream, HealthThresholds(max_lag=5))
    g = report.group("g")
    assert g is not None and g.status == "lagging" and g.lagging and not g.stuck
    assert "lag 10 > 5" in g.reasons[0]
    assert not report.ok


def test_lag_growing_across_checks(stream: EventStream) -> None:
    stream.ensure_group("g", "0")
    monitor = HealthMonitor(stream, HealthThresholds(max_lag=10**6, growth_samples=2))
    statuses = []
    for _ in range(3):
        stream.produce("e", {})
        report = monitor.check()
        g = report.group("g")
        assert g is not None
        statuses.append(g.status)
    assert statuses == ["ok", "ok", "lagging"]
    assert monitor.last is report
    g = report.group("g")
    assert g is not None and g.lag_history == (1, 2, 3)
    # Once consumers catch up, the trend breaks and the group is healthy again.
    stream.ack("g", [e.id for e in stream.consume("g", "c", count=10, block_ms=None)])
    g = monitor.check().group("g")
    assert g is not None and g.status == "ok"


def test_stuck_when_pending_is_never_reclaimed(stream: EventStream) -> None:
    stream.produce_batch([("e", {"n": i}) for i in range(5)])
    stream.ensure_group("g", "0")
    stream.consume("g", "crashed", count=5, block_ms=None)  # never acked, nobody reaps
    limits = HealthThresholds(max_pending=100, max_pending_idle_ms=50)
    wait_until(lambda: (g := check_health(stream, limits).group("g")) is not None and g.stuck)
    g = check_health(stream, limits).group("g")
    assert g is not None and g.status == "stuck" and not g.lagging
    assert "nobody reclaims" in g.reasons[0]
    by_count = check_health(stream, HealthThresholds(max_pending=2)).group("g")
    assert by_count is not None and by_count.stuck and "pending 5 > 2" in by_count.reasons[0]


def test_dead_letters_counted(stream: EventStream, client: redis.Redis) -> None:
    client.xadd(stream.key + ":dlq", {"dlq.reason": "x"})
    assert check_health(stream).dead_letters == 1


def test_lag_fallback_when_server_cannot_compute() -> None:
    info = StreamInfo("k", True, length=5, last_generated_id="9-0")
    caught_up = GroupInfo("g", 1, 0, "9-0", entries_read=None, lag=None)
    g = classify_group(caught_up, info, None, [], 10_000, HealthThresholds())
    assert g.lag == 0
    behind = GroupInfo("g", 1, 0, "3-0", entries_read=None, lag=None)
    g = classify_group(behind, info, None, [], 10_000, HealthThresholds())
    assert g.lag is None and g.status == "ok" and g.lag_history == ()


def test_bad_thresholds() -> None:
    with pytest.raises(InvalidOption):
        HealthThresholds(max_lag=-1)
    with pytest.raises(InvalidOption):
        HealthThresholds(growth_samples=1000)
