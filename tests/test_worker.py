"""ConsumerWorker against real servers: the read -> process -> ack loop and its levers."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from redis_streaming import (
    ConsumerWorker,
    EmbeddedServer,
    Entry,
    EventStream,
    InvalidName,
    InvalidOption,
)
from redis_streaming._codec import parse_id
from redis_streaming.deadletter import metadata
from waiting import wait_until


class Recorder:
    """A handler that records every entry it saw, thread-safely."""

    def __init__(self, fail_types: tuple[str, ...] = ()) -> None:
        self.seen: list[str] = []
        self.fail_types = fail_types
        self.lock = threading.Lock()

    def __call__(self, entry: Entry) -> None:
        with self.lock:
            self.seen.append(entry.id)
        if entry.type in self.fail_types:
            raise RuntimeError(f"cannot handle {entry.type}")


@pytest.fixture()
def workers() -> Iterator[list[ConsumerWorker]]:
    started: list[ConsumerWorker] = []
    yield started
    for w in started:
        w.stop(5)


def make(
    workers: list[ConsumerWorker],
    stream: EventStream,
    group: str,
    name: str,
    handler: Any,
    **kw: Any,
) -> ConsumerWorker:
    kw.setdefault("block_ms", 50)
    kw.setdefault("reap_interval", None)
    kw.setdefault("group_start", "0")
    w = ConsumerWorker(stream, group, name, handler, **kw)
    workers.append(w)
    return w


def group_pending(stream: EventStream, group: str) -> int:
    return next((g.pending for g in stream.info_groups() if g.name == group), -1)


def test_two_groups_each_see_everything_and_consumers_split(
    stream: EventStream, workers: list[ConsumerWorker]
) -> None:
    ids = stream.produce_batch([("t", {"i": i}) for i in range(300)])
    rec_a, rec_b, rec_c = Recorder(), Recorder(), Recorder()
    a = make(workers, stream, "notifications", "worker-a", rec_a, count=7).start()
    b = make(workers, stream, "notifications", "worker-b", rec_b, count=7).start()
    c = make(workers, stream, "analytics", "worker-c", rec_c).start()
    wait_until(lambda: len(rec_a.seen) + len(rec_b.seen) == 300 and len(rec_c.seen) == 300)
    assert sorted(rec_a.seen + rec_b.seen, key=parse_id) == ids
    assert rec_c.seen == ids  # a single consumer sees its group's entries in order
    wait_until(lambda: group_pending(stream, "notifications") == 0, what="acks")
    wait_until(lambda: group_pending(stream, "analytics") == 0, what="acks")
    assert a.status().processed + b.status().processed == 300
    assert c.status().processed == 300
    assert all(d.outcome == "acked" for d in c.recent())
    assert c.recent()[-1].id == ids[-1]


def test_one_xack_per_read_batch(
    server: EmbeddedServer, stream: EventStream, workers: list[ConsumerWorker]
) -> None:
    stream.ensure_group("g", "0")
    stream.produce_batch([("t", {}) for _ in range(500)])
    admin = server.client()
    admin.config_resetstat()
    w = make(workers, stream, "g", "c", None, count=100, batch_budget_ms=None).start()
    wait_until(lambda: group_pending(stream, "g") == 0 and stream.info_groups()[0].lag == 0)
    w.stop(5)
    stats = admin.info("commandstats")
    xack_calls = stats["cmdstat_xack"]["calls"]
    assert xack_calls <= 6, f"{xack_calls} XACK calls for 500 entries in batches of 100"
    assert w.status().processed == 500
    admin.close()


def test_read_size_grows_to_count_for_a_fast_handler(
    stream: EventStream, workers: list[ConsumerWorker]
) -> None:
    stream.produce_batch([("t", {"i": i}) for i in range(3000)])
    rec = Recorder()
    w = make(workers, stream, "g", "c", rec, count=100)
    assert w.read_count == 10  # before any handler time has been seen
    w.start()
    wait_until(lambda: len(rec.seen) == 3000)
    assert w.read_count == 100


def test_read_size_shrinks_to_one_when_a_batch_overruns_its_budget(
    stream: EventStream, workers: list[ConsumerWorker]
) -> None:
    stream.produce_batch([("t", {"i": i}) for i in range(50)])
    rec = Recorder()
    # A budget of one nanosecond: every batch overruns it, whatever the handler costs.
    w = make(workers, stream, "g", "c", rec, count=100, batch_budget_ms=1e-6).start()
    wait_until(lambda: len(rec.seen) == 50)
    assert w.read_count == 1
    wait_until(lambda: group_pending(stream, "g") == 0, what="acks")


def test_fixed_read_size_without_a_budget(stream: EventStream) -> None:
    assert ConsumerWorker(stream, "g", "c", count=37, batch_budget_ms=None).read_count == 37


def test_handler_errors_leave_entries_pending_and_the_loop_alive(
    stream: EventStream, workers: list[ConsumerWorker]
) -> None:
    ids = stream.produce_batch([("bad" if i % 5 == 0 else "good", {"i": i}) for i in range(50)])
    errors: list[BaseException] = []
    rec = Recorder(fail_types=("bad",))
    w = make(
        workers,
        stream,
        "g",
        "c",
        rec,
        max_deliveries=None,
        on_error=lambda e, _entry: errors.append(e),
    ).start()
    wait_until(lambda: len(rec.seen) == 50)
    wait_until(lambda: group_pending(stream, "g") == 10, what="only the failures pending")
    assert w.is_alive
    status = w.status()
    assert status.failed == 10 and status.processed == 40
    assert {p.id for p in stream.pending("g", count=100)} == set(ids[::5])
    assert len(errors) == 10 and all(isinstance(e, RuntimeError) for e in errors)
    assert any(d.outcome == "error" for d in w.recent())
    later = stream.produce("good", {})
    wait_until(lambda: later in rec.seen, what="entries after failures to flow")


def test_crash_next_then_reap_recovers_every_dropped_entry(
    stream: EventStream, workers: list[ConsumerWorker]
) -> None:
    rec_a, rec_b = Recorder(), Recorder()
    a = make(workers, stream, "g", "worker-a", rec_a, claim_min_idle_ms=100)
    b = make(workers, stream, "g", "worker-b", rec_b, claim_min_idle_ms=100)
    assert a.crash_next(3) == 3
    assert a.status().crash_queued == 3
    a.start()
    ids = stream.produce_batch([("t", {"i": i}) for i in range(10)])
    wait_until(lambda: a.status().crashed_drops == 3)
    wait_until(lambda: a.status().processed == 7)
    dropped = [d.id for d in a.recent() if d.outcome == "dropped"]
    assert dropped == ids[:3] and rec_a.seen == ids[3:]
    assert a.status().crash_queued == 0
    wait_until(lambda: {p.id for p in stream.pending("g")} == set(dropped), what="acks of the rest")
    wait_until(lambda: all(p.idle_ms >= 100 for p in stream.pending("g")), what="idle")
    b.start()
    result = b.reap_idle_pel()
    assert result.claimed == 3 and result.processed == 3 and result.deleted_ids == ()
    assert set(rec_b.seen) == set(dropped)
    assert b.status().reaped == 3
    assert stream.pending("g") == []
    assert all(d.reaped for d in b.recent())


def test_dropped_deliveries_during_reap_are_not_counted_processed(
    stream: EventStream, workers: list[ConsumerWorker]
) -> None:
    stream.ensure_group("g", "0")
    stream.produce_batch([("t", {}) for _ in range(4)])
    stream.consume("g", "dead", count=4, block_ms=None)
    wait_until(lambda: all(p.idle_ms >= 60 for p in stream.pending("g")))
    b = make(workers, stream, "g", "b", Recorder(), claim_min_idle_ms=50)
    b.crash_next(1)
    result = b.reap_idle_pel()
    assert (result.claimed, result.processed, result.dropped) == (4, 3, 1)
    assert b.status().reaped == 3
    assert len(stream.pending("g")) == 1


def test_crash_lever_on_every_delivery_reaches_the_dead_letters(
    stream: EventStream, workers: list[ConsumerWorker]
) -> None:
    """A consumer that dies on every delivery is what dead letters are for: the delivery limit
    is checked before a queued crash, so repeated crash_next still ends in the dead letters."""
    stream.ensure_group("g", "0")
    [eid] = stream.produce_batch([("t", {"k": "v"})])
    rec = Recorder()
    w = make(workers, stream, "g", "w", rec, claim_min_idle_ms=1, max_deliveries=2)
    w.crash_next(100)
    stream.consume("g", "w", count=1, block_ms=None)  # delivery 1
    wait_until(lambda: all(p.idle_ms >= 1 for p in stream.pending("g")), what="idle")
    assert w.reap_idle_pel().dropped == 1  # delivery 2: the crash lever drops it
    assert len(stream.pending("g")) == 1
    wait_until(lambda: all(p.idle_ms >= 1 for p in stream.pending("g")), what="idle")
    w.reap_idle_pel()  # delivery 3 exceeds max_deliveries=2: dead-lettered, lever untouched
    assert stream.pending("g") == []
    assert rec.seen == []
    assert w.status().crashed_drops == 1 and w.status().crash_queued == 99
    [dead] = w.dead_letters.list()
    meta = metadata(dead)
    assert (meta["original_id"], meta["deliveries"]) == (eid, "3")


def test_restart_under_same_name_processes_own_pel_once(
    stream: EventStream, workers: list[ConsumerWorker]
) -> None:
    stream.ensure_group("g", "0")
    ids = stream.produce_batch([("t", {}) for _ in range(25)])
    stream.consume("g", "same", count=25, block_ms=None)  # a previous life fetched, then died
    rec = Recorder()
    w = make(workers, stream, "g", "same", rec, count=10).start()
    wait_until(lambda: len(rec.seen) == 25)
    wait_until(lambda: stream.pending("g") == [])
    assert rec.seen == ids
    wait_until(lambda: w.status().reaped == 25, what="the reaped count (set after the ack)")


def test_stop_is_prompt_idempotent_and_leaves_unprocessed_pending(
    stream: EventStream, workers: list[ConsumerWorker]
) -> None:
    gate = threading.Event()
    started = threading.Event()
    seen: list[str] = []

    def slow(entry: Entry) -> None:
        seen.append(entry.id)
        started.set()
        gate.wait(10)

    ids = stream.produce_batch([("t", {}) for _ in range(5)])
    w = make(workers, stream, "g", "c", slow, count=5).start()
    assert started.wait(10)
    assert w.stop(timeout=0) is False  # still inside the handler
    gate.set()
    assert w.stop(timeout=5) is True
    assert w.stop(timeout=5) is True  # idempotent
    assert not w.is_alive
    assert seen == ids[:1]
    # The finished entry was acked on the way out; the fetched-but-unprocessed ones wait.
    assert [p.id for p in stream.pending("g")] == ids[1:]


def test_stop_ends_a_blocked_read_within_block_ms(
    stream: EventStream, workers: list[ConsumerWorker]
) -> None:
    w = make(workers, stream, "g", "c", None, block_ms=300).start()
    wait_until(lambda: stream.info_consumers("g"), what="the first read")
    t0 = time.monotonic()
    assert w.stop(timeout=5)
    elapsed = time.monotonic() - t0
    assert elapsed < 0.3 + 1.0, f"stop took {elapsed:.2f}s with block_ms=300"


def test_pause_waits_for_the_batch_and_resume_continues(
    stream: EventStream, workers: list[ConsumerWorker]
) -> None:
    rec = Recorder()
    w = make(workers, stream, "g", "c", rec).start()
    first = stream.produce("t", {})
    wait_until(lambda: first in rec.seen)
    assert w.pause(wait=True, timeout=5) is True
    assert w.status().paused
    wait_until(lambda: stream.pending("g") == [], what="acks flushed on pause")
    second = stream.produce("t", {})
    assert second not in rec.seen and w.is_alive
    assert stream.info_groups()[0].lag == 1  # nobody fetched it while paused
    w.resume()
    wait_until(lambda: second in rec.seen)


def test_worker_survives_a_server_restart(
    private_server: EmbeddedServer, workers: list[ConsumerWorker]
) -> None:
    client = redis.Redis(host=private_server.host, port=private_server.port, decode_responses=True)
    stream = EventStream(client, "orders")
    rec = Recorder()
    make(workers, stream, "g", "c", rec, block_ms=100).start()
    before = stream.produce("t", {})
    wait_until(lambda: before in rec.seen)
    private_server.restart()  # no persistence: the stream and its group are gone
    after = None

    def produce_after_restart() -> bool:
        nonlocal after
        try:
            after = stream.produce("t", {})
        except Exception:
            return False
        return True

    wait_until(produce_after_restart, what="server back")
    wait_until(lambda: after in rec.seen, timeout=15, what="worker to resume after restart")
    assert workers[0].is_alive
    client.close()


def test_constructor_rejects_bad_options(stream: EventStream) -> None:
    with pytest.raises(InvalidName):
        ConsumerWorker(stream, "", "c")
    with pytest.raises(InvalidName):
        ConsumerWorker(stream, "g", "has space")
    with pytest.raises(InvalidOption):
        ConsumerWorker(stream, "g", "c", count=0)
    with pytest.raises(InvalidOption):
        ConsumerWorker(stream, "g", "c", reap_interval=0)
    with pytest.raises(InvalidOption):
        ConsumerWorker(stream, "g", "c", max_deliveries=0)
    for budget in (0, -1.0, float("inf"), float("nan"), True, "50"):
        with pytest.raises(InvalidOption, match="batch_budget_ms"):
            ConsumerWorker(stream, "g", "c", batch_budget_ms=budget)  # type: ignore[arg-type]
    with pytest.raises(InvalidOption):
        ConsumerWorker(stream, "g", "c", on_missing_group="later")  # type: ignore[arg-type]
    w = ConsumerWorker(stream, "g", "c")
    with pytest.raises(InvalidOption):
        w.crash_next(-1)
