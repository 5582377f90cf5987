"""Dead-consumer cleanup against real servers: idle and empty consumers go, owners stay."""

from __future__ import annotations

import pytest

from redis_streaming import EventStream, InvalidName, InvalidOption
from redis_streaming._model import ConsumerInfo
from redis_streaming.consumers import (
    delete_consumer_if_idle,
    delete_idle_consumers,
    idle_candidates,
)
from waiting import wait_until


def _idle(stream: EventStream, group: str, name: str) -> int:
    for c in stream.info_consumers(group):
        if c.name == name:
            return c.idle_ms
    return -1


def test_idle_candidates_pure() -> None:
    rows = [
        ConsumerInfo("busy", 3, 10_000),
        ConsumerInfo("dead", 0, 10_000),
        ConsumerInfo("fresh", 0, 5),
        ConsumerInfo("me", 0, 10_000),
    ]
    assert [c.name for c in idle_candidates(rows, 1000, keep=["me"])] == ["dead"]


def test_deletes_only_idle_consumers_without_pending(stream: EventStream) -> None:
    stream.produce_batch([("e", {"n": i}) for i in range(6)])
    stream.ensure_group("g", "0")
    stream.consume("g", "owner", count=2, block_ms=None)  # owns 2 pending entries
    done = stream.consume("g", "finished", count=2, block_ms=None)
    stream.ack("g", [e.id for e in done])
    wait_until(lambda: _idle(stream, "g", "finished") >= 100)
    stream.consume("g", "fresh", count=1, block_ms=None)
    stream.ack("g", [e.id for e in stream.consume_own_pel("g", "fresh")])

    listed = delete_idle_consumers(stream, "g", 100, dry_run=True)
    assert listed.deleted == ("finished",)
    assert {c.name for c in stream.info_consumers("g")} == {"owner", "finished", "fresh"}

    result = delete_idle_consumers(stream, "g", 100)
    assert result.deleted == ("finished",)
    names = {c.name for c in stream.info_consumers("g")}
    assert names == {"owner", "fresh"}
    assert len(stream.pending("g", count=10)) == 2  # the owner's entries are untouched


def test_atomic_recheck_keeps_owner_and_active(stream: EventStream) -> None:
    stream.produce_batch([("e", {"n": i}) for i in range(3)])
    stream.ensure_group("g", "0")
    stream.consume("g", "owner", count=1, block_ms=None)
    # Even with no idle requirement, a consumer owning entries is never deleted.
    assert not delete_consumer_if_idle(stream, "g", "owner", 0)
    assert "owner" in {c.name for c in stream.info_consumers("g")}
    # An active consumer (idle below the threshold) is kept by the in-script re-check.
    got = stream.consume("g", "active", count=1, block_ms=None)
    stream.ack("g", [e.id for e in got])
    assert not delete_consumer_if_idle(stream, "g", "active", 60_000)
    assert delete_consumer_if_idle(stream, "g", "active", 0)
    assert not delete_consumer_if_idle(stream, "g", "nobody", 0)
    assert {c.name for c in stream.info_consumers("g")} == {"owner"}


def test_keep_protects_live_workers(stream: EventStream) -> None:
    stream.produce("e", {"n": 1})
    stream.ensure_group("g", "0")
    stream.ack("g", [e.id for e in stream.consume("g", "live", count=1, block_ms=None)])
    wait_until(lambda: _idle(stream, "g", "live") >= 20)
    assert delete_idle_consumers(stream, "g", 10, keep=["live"]).deleted == ()
    assert delete_idle_consumers(stream, "g", 10).deleted == ("live",)


def test_missing_group_and_bad_input(stream: EventStream) -> None:
    assert delete_idle_consumers(stream, "nope", 0).deleted == ()
    with pytest.raises(InvalidOption):
        delete_idle_consumers(stream, "g", -1)
    with pytest.raises(InvalidName):
        delete_idle_consumers(stream, "")
