"""Retention against real servers: safe trim never drops undelivered or unacked entries."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta

import pytest
import redis

from redis_streaming import (
    ConsumerWorker,
    DeadLetters,
    Entry,
    EventStream,
    InvalidOption,
    TrimReport,
)
from redis_streaming._model import GroupInfo
from redis_streaming.retention import age_min_id, group_limit, safe_limit
from waiting import wait_until


def _ids(stream: EventStream) -> list[str]:
    return [e.id for e in stream.replay("-", "+", count=None)]


# ------------------------------------------------------------------ pure math


def test_group_limit_takes_lower_of_pending_and_next_undelivered() -> None:
    g = GroupInfo("g", 1, 2, "5-0")
    assert group_limit(g, "3-1").limit_id == "3-1"
    assert group_limit(g, None).limit_id == "5-1"
    never_read = GroupInfo("fresh", 0, 0, "0-0")
    assert group_limit(never_read, None).limit_id == "0-1"


def test_safe_limit_picks_lowest_and_next() -> None:
    a = group_limit(GroupInfo("a", 1, 0, "9-0"), None)
    b = group_limit(GroupInfo("b", 1, 1, "9-0"), "4-0")
    c = group_limit(GroupInfo("c", 1, 0, "6-0"), None)
    lowest, nxt = safe_limit([a, b, c]) or (None, None)
    assert lowest is not None and lowest.name == "b"
    assert nxt is not None and nxt.name == "c"
    assert safe_limit([]) is None


def test_age_min_id() -> None:
    assert age_min_id(10_000, 3) == "7000-0"
    assert age_min_id(10_000, timedelta(milliseconds=500)) == "9500-0"
    assert age_min_id(100, 3600) == "0-0"
    with pytest.raises(InvalidOption, match="max_age"):
        age_min_id(1, -1)
    with pytest.raises(InvalidOption, match="max_age"):
        age_min_id(1, "1h")  # type: ignore[arg-type]


# ------------------------------------------------------------------ against the servers


def test_safe_trim_keeps_unacked_and_undelivered(stream: EventStream) -> None:
    ids = stream.produce_batch([("e", {"n": i}) for i in range(300)])
    stream.ensure_group("fast", "0")
    stream.ensure_group("slow", "0")
    # fast: everything delivered, all acked except one in the middle.
    got = stream.consume("fast", "f1", count=300, block_ms=None)
    assert len(got) == 300
    stream.ack("fast", [e.id for e in got if e.id != ids[150]])
    # slow: 200 delivered, 100 of them acked, 100 undelivered.
    got = stream.consume("slow", "s1", count=200, block_ms=None)
    stream.ack("slow", [e.id for e in got[:100]])

    report = stream.trim_safe(approximate=False)
    assert report.min_id == ids[100]
    assert report.held_by == "slow"
    assert report.deleted == 100
    assert report.remaining == 200
    # slow held back ids[100..149]; fast would have allowed trimming up to ids[150].
    assert report.held_back == 50 and report.held_back_exact
    left = _ids(stream)
    assert left == ids[100:]
    names = {g.name: g for g in report.groups}
    assert names["fast"].limit_id == ids[150]
    assert names["slow"].oldest_pending_id == ids[100]

    # Every pending entry of every group is still readable.
    for group in ("fast", "slow"):
        for row in stream.pending(group, count=1000):
            assert stream.replay(row.id, row.id, 1), (group, row.id)


def test_safe_trim_approximate_never_removes_more(stream: EventStream) -> None:
    ids = stream.produce_batch([("e", {"n": i}) for i in range(1000)])
    stream.ensure_group("g", "0")
    got = stream.consume("g", "c", count=700, block_ms=None)
    stream.ack("g", [e.id for e in got[:600]])
    report = stream.trim_safe()  # MINID ~ : whole nodes only
    assert report.approximate
    left = set(_ids(stream))
    assert set(ids[600:]) <= left
    assert report.deleted <= 600
    assert report.deleted + report.remaining == 1000


def test_group_that_never_read_blocks_everything(stream: EventStream) -> None:
    ids = stream.produce_batch([("e", {"n": i}) for i in range(20)])
    stream.ensure_group("done", "0")
    stream.ack("done", [e.id for e in stream.consume("done", "c", count=20, block_ms=None)])
    stream.ensure_group("idle", "0")
    report = stream.trim_safe(approximate=False)
    assert report.deleted == 0
    assert report.held_by == "idle"
    assert report.held_back == 20
    assert _ids(stream) == ids


def test_group_created_at_end_allows_full_trim(stream: EventStream) -> None:
    stream.produce_batch([("e", {"n": i}) for i in range(20)])
    stream.ensure_group("late", "$")
    report = stream.trim_safe(approximate=False)
    assert report.deleted == 20
    assert report.remaining == 0
    assert report.held_back == 0


def test_no_groups_means_no_trim(stream: EventStream) -> None:
    stream.produce_batch([("e", {"n": i}) for i in range(5)])
    report = stream.trim_safe(approximate=False)
    assert report.min_id is None and report.held_by is None
    assert report.deleted == 0 and report.remaining == 5


def test_missing_stream(stream: EventStream) -> None:
    report = stream.trim_safe()
    assert report.deleted == 0 and report.remaining == 0 and report.groups == ()


def test_hard_cap_overrides_safety(stream: EventStream) -> None:
    ids = stream.produce_batch([("e", {"n": i}) for i in range(100)])
    stream.ensure_group("g", "0")
    stream.consume("g", "c", count=10, block_ms=None)  # ids[0..9] pending, rest undelivered
    report = stream.trim_safe(hard_cap=30, approximate=False)
    assert report.remaining == 30
    assert report.forced_deleted == 70
    assert report.overridden_groups == ("g",)
    assert _ids(stream) == ids[70:]
    # A cap that the safe trim already satisfies forces nothing.
    again = stream.trim_safe(hard_cap=1000, approximate=False)
    assert again.forced_deleted == 0 and again.overridden_groups == ()
    with pytest.raises(InvalidOption, match="hard_cap"):
        stream.trim_safe(hard_cap=-1)


def test_retain_by_age(client: redis.Redis, key: str) -> None:
    s = EventStream(client, key, maxlen_approx=None)
    try:
        now = int(client.time()[0]) * 1000
        for age_s in (7200, 3600, 60, 0):
            client.xadd(key, {"type": "e", "age": str(age_s)}, id=f"{now - age_s * 1000}-0")
        report = s.retain(timedelta(minutes=30), approximate=False)
        assert report.deleted == 2 and report.remaining == 2
        assert [e.fields["age"] for e in s.replay()] == ["60", "0"]
        assert report.max_age_s == 1800.0
        with pytest.raises(InvalidOption):
            s.retain(-5)
    finally:
        s.delete_stream()


def test_retain_safe_respects_groups(client: redis.Redis, key: str) -> None:
    s = EventStream(client, key, maxlen_approx=None)
    try:
        now = int(client.time()[0]) * 1000
        for age_s in (7200, 3600, 60):
            client.xadd(key, {"type": "e", "age": str(age_s)}, id=f"{now - age_s * 1000}-0")
        s.ensure_group("g", "0")
        s.consume("g", "c", count=1, block_ms=None)  # the 2 h old entry is pending
        report = s.retain(1800, approximate=False, safe=True)
        assert report.deleted == 0 and report.held_by == "g"
        unsafe = s.retain(1800, approximate=False)
        assert unsafe.deleted == 2
    finally:
        s.delete_stream()


def test_safe_trim_under_live_workers_loses_nothing(stream: EventStream) -> None:
    """Trim in a loop while two groups consume: one pauses, one drops deliveries."""
    seen: dict[str, set[str]] = {"fast": set(), "late": set()}
    lock = threading.Lock()

    def recorder(group: str) -> Callable[[Entry], None]:
        def handle(entry: Entry) -> None:
            with lock:
                seen[group].add(entry.id)

        return handle

    workers = {}
    for group in seen:
        stream.ensure_group(group, "0")
        workers[group] = ConsumerWorker(
            stream,
            group,
            f"{group}-1",
            recorder(group),
            count=20,
            reap_interval=0.05,
            claim_min_idle_ms=50,
            block_ms=50,
        )
    workers["fast"].crash_next(30)  # leave entries pending for the reaper to pick up
    stop = threading.Event()
    reports: list[TrimReport] = []

    def trimmer() -> None:
        exact = False
        while not stop.is_set():
            reports.append(stream.trim_safe(approximate=exact))
            exact = not exact

    for w in workers.values():
        w.start()
    t = threading.Thread(target=trimmer)
    t.start()
    ids: list[str] = []
    try:
        ids.extend(stream.produce_batch([("e", {"n": i}) for i in range(1000)]))
        wait_until(lambda: sum(r.deleted for r in reports) > 0, what="a trim removed entries")
        assert workers["late"].pause(wait=True, timeout=10)
        ids.extend(stream.produce_batch([("e", {"n": i}) for i in range(1000)]))
        wait_until(
            lambda: any(r.held_by == "late" and r.held_back > 0 for r in reports[-5:]),
            what="the paused group holds the trim back",
        )
        workers["late"].resume()
        wait_until(
            lambda: (
                all(set(ids) <= s for s in seen.values())
                and not stream.pending("fast")
                and not stream.pending("late")
            ),
            timeout=30,
            what="both groups processed everything",
        )
    finally:
        stop.set()
        t.join(10)
        for w in workers.values():
            w.stop(5)
    assert DeadLetters(stream).length() == 0  # no "payload trimmed" records
    assert stream.trim_safe(approximate=False).remaining == 0
