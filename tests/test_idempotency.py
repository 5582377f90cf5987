"""Idempotent processing against real servers: side effects and projections apply once."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
import redis

from redis_streaming import ConsumerWorker, Entry, EventStream, InvalidOption, InvalidStreamId
from redis_streaming.idempotency import AlreadyRunning, OnceGuard, apply_and_ack
from waiting import wait_until


@pytest.fixture()
def guard(client: redis.Redis, key: str) -> OnceGuard:
    return OnceGuard(client, prefix=f"once:{key}:", ttl_s=60, lease_s=5)


def test_runs_once_per_group_and_entry(guard: OnceGuard, key: str) -> None:
    calls: list[str] = []
    assert guard.run(key, "g", "1-0", lambda: calls.append("a")) == (True, None)
    assert guard.run(key, "g", "1-0", lambda: calls.append("b")) == (False, None)
    assert guard.run(key, "other", "1-0", lambda: calls.append("c"))[0]
    assert guard.run(key, "g", "2-0", lambda: 42) == (True, 42)
    assert calls == ["a", "c"]
    assert guard.is_done(key, "g", "1-0")
    ttl = guard.client.pttl(guard.key(key, "g", "1-0"))
    assert 0 < ttl <= 60_000


def test_failure_releases_the_guard(guard: OnceGuard, key: str) -> None:
    attempts = []

    def flaky() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("boom")
        return "ok"

    with pytest.raises(RuntimeError, match="boom"):
        guard.run(key, "g", "5-0", flaky)
    assert not guard.is_done(key, "g", "5-0")
    assert guard.client.exists(guard.key(key, "g", "5-0")) == 0
    assert guard.run(key, "g", "5-0", flaky) == (True, "ok")
    assert len(attempts) == 2


def test_live_lease_blocks_and_expired_lease_frees(client: redis.Redis, key: str) -> None:
    guard = OnceGuard(client, prefix=f"once:{key}:", ttl_s=60, lease_s=0.2)
    k = guard.key(key, "g", "7-0")
    client.set(k, "someone-elses-token")  # a runner that died mid-run
    with pytest.raises(AlreadyRunning):
        guard.run(key, "g", "7-0", lambda: None)
    client.pexpire(k, 50)  # its lease runs out
    wait_until(lambda: client.exists(k) == 0)
    assert guard.run(key, "g", "7-0", lambda: None)[0]
    guard.forget(key, "g", "7-0")
    assert not guard.is_done(key, "g", "7-0")


def test_bad_options(client: redis.Redis, guard: OnceGuard, key: str) -> None:
    with pytest.raises(InvalidOption):
        OnceGuard(client, ttl_s=0)
    with pytest.raises(InvalidOption):
        OnceGuard(client, lease_s=-1)
    with pytest.raises(InvalidStreamId):
        guard.run(key, "g", "not-an-id", lambda: None)


def test_wrapped_handler_skips_redelivered_side_effect(
    stream: EventStream, guard: OnceGuard
) -> None:
    side_effects: list[str] = []
    handler = guard.wrap(stream.key, "g", lambda e: side_effects.append(e.id))
    stream.ensure_group("g", "0")
    first = stream.produce("charge", {"amount": 5})
    # A consumer ran the side effect, then died before its XACK: the entry stays pending.
    got = stream.consume("g", "dead", count=1, block_ms=None)
    assert handler(got[0]) is True
    stream.produce("charge", {"amount": 7})
    worker = ConsumerWorker(
        stream, "g", "alive", handler, reap_interval=0.05, claim_min_idle_ms=50, block_ms=50
    ).start()
    try:
        wait_until(lambda: worker.reaped >= 1 and worker.processed >= 1)
        wait_until(lambda: not stream.pending("g"))
    finally:
        worker.stop(5)
    assert side_effects.count(first) == 1
    assert len(side_effects) == 2


def _projection(entry: Entry) -> Callable[[Any], None]:
    def write(pipe: Any) -> None:
        pipe.hincrby(entry.fields["_proj"], entry.fields["user"], int(entry.fields["amount"]))

    return write


def test_apply_and_ack_applies_once(stream: EventStream, client: redis.Redis) -> None:
    proj = stream.key + ":totals"
    try:
        stream.ensure_group("g", "0")
        stream.produce("pay", {"user": "ann", "amount": 5, "_proj": proj})
        entry = stream.consume("g", "c1", count=1, block_ms=None)[0]
        assert apply_and_ack(stream, "g", entry.id, _projection(entry), ttl_s=60)
        assert stream.pending("g") == []
        # A redelivery (e.g. the entry was claimed before the ack landed) changes nothing.
        assert not apply_and_ack(stream, "g", entry.id, _projection(entry), ttl_s=60)
        assert client.hget(proj, "ann") == "5"
    finally:
        client.delete(proj)
        client.delete(f"rs:applied:{stream.key}:g:{entry.id}")


def test_apply_and_ack_concurrent_redelivery(stream: EventStream, client: redis.Redis) -> None:
    proj = stream.key + ":totals"
    prefix = f"applied:{stream.key}:"
    try:
        stream.ensure_group("g", "0")
        ids = stream.produce_batch([("pay", {"user": "bob", "amount": 1, "_proj": proj})] * 20)
        entries = stream.consume("g", "c1", count=20, block_ms=None)
        applied: list[bool] = []
        lock = threading.Lock()

        def apply_all() -> None:
            for e in entries:
                r = apply_and_ack(stream, "g", e.id, _projection(e), prefix=prefix, ttl_s=60)
                with lock:
                    applied.append(r)

        threads = [threading.Thread(target=apply_all) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert applied.count(True) == len(ids)
        assert client.hget(proj, "bob") == "20"
        assert stream.pending("g") == []
    finally:
        client.delete(proj)
        for k in client.scan_iter(match=prefix + "*"):
            client.delete(k)
