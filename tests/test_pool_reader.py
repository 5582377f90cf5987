"""A pool member's partitions on one server are read with one XREADGROUP (CombinedReader), and
every pool guarantee still holds: leases, rebalancing, dead letters, NOGROUP and FLUSHALL.

Real servers of every kind; no sleeps stand in for a condition (see waiting.wait_until).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from redis_streaming import Entry, PartitionedConsumerPool, PartitionedStream
from redis_streaming.deadletter import original_fields
from redis_streaming.pool_reader import CombinedReader
from redis_streaming.server import SERVER_KINDS, EmbeddedServer
from waiting import wait_until

PARTS = 6
OPTS: dict[str, Any] = {"lease_ms": 1500, "block_ms": 100, "group_start": "0"}


@pytest.fixture()
def ps(client: redis.Redis) -> Iterator[PartitionedStream]:
    stream = PartitionedStream(client, f"pr{uuid.uuid4().hex[:8]}", partitions=PARTS)
    yield stream
    stream.delete()
    for i in range(PARTS):
        client.delete(stream.lease_key(i, "g"))
    client.delete(stream.members_key("g"))


class Seen:
    """A handler recording each payload ``n`` and checking the lease of its partition."""

    def __init__(self, ps: PartitionedStream, fail: set[int] = frozenset()) -> None:  # type: ignore[assignment]
        self.ps, self.fail = ps, fail
        self.counts: Counter[int] = Counter()
        self.violations: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, entry: Entry) -> None:
        n, p = int(entry.payload["n"]), self.ps.partition_index(entry.payload["k"])
        member = threading.current_thread().name.removeprefix("consumer-g-")
        holder = self.ps.client.get(self.ps.lease_key(p, "g"))
        if holder != member:
            self.violations.append(f"{member} handled p{p} while {holder} held it")
        if n in self.fail:
            raise RuntimeError(f"poison {n}")
        with self.lock:
            self.counts[n] += 1

    def done(self, upto: int) -> bool:
        with self.lock:
            return all(self.counts[n] for n in range(upto) if n not in self.fail)


def produce(ps: PartitionedStream, start: int, count: int) -> None:
    ps.produce_batch(
        [(f"k{n}", "evt", {"n": n, "k": f"k{n}"}) for n in range(start, start + count)]
    )


def pending(ps: PartitionedStream, i: int) -> int:
    return int(ps.client.xpending(ps.keys[i], "g")["pending"])


def holds_all(pool: PartitionedConsumerPool) -> str:
    """Wait until the pool's only member holds every partition; its name."""
    name = pool.members[0].name
    wait_until(lambda: pool.assignment() == {name: list(range(PARTS))}, what="all leases")
    return name


def readers(pool: PartitionedConsumerPool) -> list[CombinedReader]:
    return [r for m in pool.members for r in m.readers.values()]


def test_one_member_reads_every_partition_with_one_xreadgroup(
    server: EmbeddedServer, ps: PartitionedStream
) -> None:
    seen = Seen(ps)
    stats = server.client(decode_responses=True)
    with PartitionedConsumerPool(ps, "g", 1, seen, reap_interval=None, **OPTS) as pool:
        holds_all(pool)
        [reader] = readers(pool)
        wait_until(lambda: reader.reads > 0, what="the first combined read")
        reads_before = reader.reads
        calls_before = stats.info("commandstats").get("cmdstat_xreadgroup", {}).get("calls", 0)
        produce(ps, 0, 1200)
        assert min(ps.lengths()) > 0  # every partition has entries to read
        wait_until(lambda: seen.done(1200), what="1200 events")
        wait_until(lambda: all(pending(ps, i) == 0 for i in range(PARTS)))
        calls = stats.info("commandstats")["cmdstat_xreadgroup"]["calls"] - calls_before
        reads = reader.reads - reads_before
    # Every XREADGROUP the server saw came from the one reader (the server is shared by other
    # tests run one at a time, and this pool has no reaper; a blocked read that is served runs
    # again, so counts twice), and far fewer than one per partition per batch: the six
    # partitions were read together.
    assert 0 < calls <= 2 * reads + 1
    assert reads < 1200 // 200 * PARTS
    assert sum(seen.counts.values()) == 1200 and not seen.violations
    assert pool.totals()["processed"] == 1200
    assert not reader.is_alive


def test_a_combined_read_shares_its_count_among_the_busy_partitions(ps: PartitionedStream) -> None:
    # count=60 per read: while every partition has a backlog, a combined read asks each
    # stream for ceil(60 / 6) entries, so one read holds about what one worker's would (the
    # handler-time budget and the live-entry count stay a worker's).
    produce(ps, 0, 1800)
    by_read: Counter[int] = Counter()

    def handler(entry: Entry) -> None:  # runs on the reader's thread, so the reader exists
        by_read[readers(pool)[0].reads] += 1  # one read's entries share one read count

    pool = PartitionedConsumerPool(
        ps, "g", 1, handler, reap_interval=None, count=60, batch_budget_ms=None, **OPTS
    )
    with pool:
        wait_until(lambda: sum(by_read.values()) >= 1800, what="1800 events")
    sizes = sorted(by_read.values(), reverse=True)
    assert sum(sizes) == 1800, sizes
    # A read sent after the previous batch was handled (no backlog then: no read-ahead) shares
    # its read count with that batch, so two reads may show as one: hence 2 x 60, where a read
    # of 60 from each of the 6 partitions would bring 360.
    assert sizes[0] <= 60 * PARTS and all(n <= 2 * 60 for n in sizes[1:]), (sizes, by_read)
    assert len(sizes) >= 1800 // 120


def test_a_lone_busy_partition_gets_the_whole_count(ps: PartitionedStream) -> None:
    # Every event has one key, so one partition has the backlog and five stay quiet: once the
    # quiet ones have shown they deliver nothing, that partition is read 60 at a time again.
    ps.produce_batch([("same-key", "evt", {"n": n}) for n in range(600)])
    by_read: Counter[int] = Counter()

    def handler(entry: Entry) -> None:
        by_read[readers(pool)[0].reads] += 1

    pool = PartitionedConsumerPool(
        ps, "g", 1, handler, reap_interval=None, count=60, batch_budget_ms=None, **OPTS
    )
    with pool:
        wait_until(lambda: sum(by_read.values()) >= 600, what="600 events")
    assert sum(by_read.values()) == 600
    assert len(by_read) <= 600 // 60 + 3, by_read  # not 600 / ceil(60 / 6) = 60 reads


def test_a_quiet_first_partition_does_not_shrink_the_read(ps: PartitionedStream) -> None:
    # Default count and handler budget. p0 (the member read first) gets nothing, so its own
    # adaptive read size never grows; the read size comes from the busy members' (with p0's
    # it stayed at 10, shared by five: 2 entries per stream per read).
    keys = [k for k in (f"k{n}" for n in range(8000)) if ps.partition_index(k) != 0][:1200]
    ps.produce_batch([(k, "evt", {"n": n}) for n, k in enumerate(keys)])
    by_read: Counter[int] = Counter()

    def handler(entry: Entry) -> None:
        by_read[readers(pool)[0].reads] += 1

    pool = PartitionedConsumerPool(ps, "g", 1, handler, reap_interval=None, **OPTS)
    with pool:
        wait_until(lambda: sum(by_read.values()) >= 1200, what="1200 events")
    assert sum(by_read.values()) == 1200
    assert len(by_read) <= 1200 // 40, by_read  # reads of about 100, after the ramp-up


def test_members_join_and_leave_with_combined_reads_and_lose_nothing(
    client: redis.Redis, ps: PartitionedStream
) -> None:
    seen = Seen(ps)
    a = PartitionedConsumerPool(ps, "g", 1, seen, name_prefix="a", reap_interval=0.3, **OPTS)
    b = PartitionedConsumerPool(ps, "g", 1, seen, name_prefix="b", reap_interval=0.3, **OPTS)
    with a:
        wait_until(lambda: a.assignment() == {"a-0": list(range(PARTS))})
        produce(ps, 0, 300)
        with b:  # joins: a hands half of its partitions over, its reader keeps the rest
            wait_until(lambda: a.is_balanced() and b.is_balanced() and b.assignment()["b-0"])
            produce(ps, 300, 300)
            wait_until(lambda: seen.done(600), what="600 events across two members")
            assert len(readers(a)[0].current()) == len(a.assignment()["a-0"]) < PARTS
        wait_until(lambda: a.assignment() == {"a-0": list(range(PARTS))}, what="a takes all back")
        produce(ps, 600, 300)
        wait_until(lambda: seen.done(900), what="900 events")
        wait_until(lambda: all(pending(ps, i) == 0 for i in range(PARTS)))
    assert not seen.violations
    assert set(seen.counts) == set(range(900))


def test_a_lost_lease_takes_only_that_partition_out_of_the_read(
    client: redis.Redis, ps: PartitionedStream
) -> None:
    seen = Seen(ps)
    with PartitionedConsumerPool(ps, "g", 1, seen, reap_interval=None, **OPTS) as pool:
        name = holds_all(pool)
        lost = ps.partition_index("k0")
        client.set(ps.lease_key(lost, "g"), "intruder", px=60_000)  # someone else holds it now
        wait_until(lambda: lost not in pool.assignment()[name], what="the lease loss noticed")
        produce(ps, 0, 600)
        kept = [n for n in range(600) if ps.partition_index(f"k{n}") != lost]
        wait_until(lambda: all(seen.counts[n] for n in kept), what="the other partitions")
        assert [n for n in seen.counts if ps.partition_index(f"k{n}") == lost] == []
        assert pending(ps, lost) == 0  # never even delivered to us
        assert len(readers(pool)[0].current()) == PARTS - 1
    assert not [v for v in seen.violations if "intruder" not in v]


def test_poison_entries_are_dead_lettered_per_partition(
    client: redis.Redis, ps: PartitionedStream
) -> None:
    seen = Seen(ps, fail={7, 8})
    with PartitionedConsumerPool(
        ps, "g", 1, seen, reap_interval=0.2, claim_min_idle_ms=50, max_deliveries=2, **OPTS
    ):
        produce(ps, 0, 60)
        wait_until(lambda: seen.done(60), what="the good events")
        wait_until(lambda: sum(ps.dead_letter_counts()) == 2, what="two dead letters")
    letters = [original_fields(d) for i in range(PARTS) for d in ps.dead_letters(i).list()]
    assert sorted(f["n"] for f in letters) == ["7", "8"]
    for fields in letters:  # in the dead-letter stream of the event's own partition
        i = ps.partition_index(fields["k"])
        assert [original_fields(d)["k"] for d in ps.dead_letters(i).list()].count(fields["k"]) == 1


@pytest.mark.parametrize("private_server", SERVER_KINDS, indirect=True)
def test_group_destroyed_on_one_partition_and_flushall_are_repaired(
    private_server: EmbeddedServer,
) -> None:
    client = private_server.client(decode_responses=True)
    ps = PartitionedStream(client, "orders", partitions=PARTS)
    seen = Seen(ps)
    with PartitionedConsumerPool(ps, "g", 1, seen, reap_interval=None, **OPTS) as pool:
        name = holds_all(pool)
        produce(ps, 0, 120)
        wait_until(lambda: seen.done(120))
        client.xgroup_destroy(ps.keys[2], "g")  # NOGROUP for one key of the combined read
        wait_until(lambda: any(g.name == "g" for g in ps.stream(2).info_groups()), what="repair")
        produce(ps, 120, 120)
        wait_until(lambda: seen.done(240), what="events after the repair")
        client.flushall()  # streams, groups and leases gone
        # Until its next renewal the member still trusts its leases (at-least-once holds; a
        # peer could read too): wait until Redis holds them again before checking them.
        wait_until(lambda: ps.lease_holders("g") == [name] * PARTS, what="leases again")
        wait_until(lambda: all(ps.stream(i).info_groups() for i in range(PARTS)), what="groups")
        produce(ps, 240, 120)
        wait_until(lambda: seen.done(360), what="events after FLUSHALL")
    assert not seen.violations


def test_a_paused_partition_is_parked_out_of_the_read_and_resumes(ps: PartitionedStream) -> None:
    seen = Seen(ps)
    with PartitionedConsumerPool(ps, "g", 1, seen, reap_interval=0.2, **OPTS) as pool:
        holds_all(pool)
        held = ps.partition_index("k0")
        [worker] = [w for w in pool.workers() if w.stream.key == ps.keys[held]]
        produce(ps, 0, 60)
        wait_until(lambda: seen.done(60))
        assert worker.pause(wait=True, timeout=5)  # parked, its acks flushed
        assert pending(ps, held) == 0
        produce(ps, 60, 300)
        others = [n for n in range(60, 360) if ps.partition_index(f"k{n}") != held]
        wait_until(lambda: all(seen.counts[n] for n in others), what="the other partitions")
        paused = [n for n in range(60, 360) if ps.partition_index(f"k{n}") == held]
        assert paused and not any(seen.counts[n] for n in paused)
        assert pending(ps, held) == 0  # not even delivered while paused
        worker.resume()
        wait_until(lambda: seen.done(360), what="the paused partition after resume")
    assert not seen.violations


def test_stop_breaks_the_shared_blocked_read_at_once(ps: PartitionedStream) -> None:
    pool = PartitionedConsumerPool(
        ps, "g", 1, Seen(ps), lease_ms=10_000, block_ms=3000, group_start="0", reap_interval=None
    ).start()
    holds_all(pool)
    [reader] = readers(pool)
    wait_until(lambda: reader.reads > 0 and reader._io.blocking, what="a blocked read")
    began = time.monotonic()
    pool.stop()
    # A 3 s BLOCK was in flight: stop() broke it instead of waiting it out.
    assert time.monotonic() - began < 1.5
    assert not reader.is_alive and ps.lease_holders("g") == [None] * PARTS
