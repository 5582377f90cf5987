"""PartitionedStream.produce_batch on the fast path under faults, on real 3-master clusters
(Valkey and Redis 7): a slot moved in the middle of batches (ASK, then MOVED), and a node that
goes away in the middle of a batch. Nothing is mocked; cuts go through tests/faults.py.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from redis.cluster import RedisCluster

from faults import FaultProxy
from redis_streaming import LocalCluster, PartitionedStream, ProduceError
from redis_streaming.cluster_server import key_slot
from redis_streaming.server import SERVER_KINDS, server_binary

PARTITIONS = 3


def _binary(kind: str) -> str:
    return server_binary(kind)  # make test installs every kind: a missing one is an error


@pytest.fixture(scope="module", params=SERVER_KINDS)
def lc(request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    cluster = LocalCluster(3, binary=_binary(request.param), kind=request.param).start()
    yield cluster
    cluster.cleanup()


def _events(start: int, count: int) -> list[tuple[str, str, dict[str, Any]]]:
    return [(f"k{n}", "created", {"n": n}) for n in range(start, start + count)]


def _stored(ps: PartitionedStream) -> dict[int, list[tuple[int, str]]]:
    """Per partition: (n, entry ID) of every stored event, read back from the servers."""
    out: dict[int, list[tuple[int, str]]] = {}
    for i in range(len(ps)):
        out[i] = [(int(e.fields["n"]), e.id) for _, e in ps.iter_replay(partitions=[i])]
    return out


def test_slot_moved_during_fast_path_batches_loses_and_duplicates_nothing(lc: LocalCluster) -> None:
    client = lc.client()
    ps = PartitionedStream(client, f"mv{uuid.uuid4().hex[:8]}", partitions=PARTITIONS,
                           maxlen_approx=None)  # fmt: skip
    key = ps.keys[0]
    slot = key_slot(key)
    source = lc.node_for_slot(slot)
    target = next(m for m in lc.masters() if m is not source)
    returned: dict[int, str] = {}
    errors: list[BaseException] = []
    stop = threading.Event()
    batches = [0]
    counter = [0]

    def produce_one(size: int = 600) -> None:
        events = _events(counter[0], size)
        counter[0] += size
        ids = ps.produce_batch(events)  # 600 events: 200 per partition, 10 slices each
        returned.update({n: i for (_, _, p), i in zip(events, ids, strict=True) for n in [p["n"]]})
        batches[0] += 1

    produce_one()  # the stream exists on the source before the move

    def producer() -> None:
        try:
            while not stop.is_set():
                produce_one()
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    # The background producer writes while the slot is half moved: a round that meets the
    # moved stream gets ASK (its transaction aborts, nothing of it stored) and is sent again
    # to the importing node; after SETSLOT NODE a stale slot map gets MOVED.
    asked: list[int] = []
    thread = threading.Thread(target=producer, daemon=True)
    thread.start()

    def half_moved() -> None:
        left = source.call("CLUSTER", "GETKEYSINSLOT", str(slot), "1000")
        if key not in [k.decode() if isinstance(k, bytes) else k for k in left]:  # on target
            seen = batches[0]
            while batches[0] < seen + 2 and not errors:
                threading.Event().wait(0.01)
            asked.append(batches[0] - seen)

    try:
        moved = lc.migrate_slot(slot, target, batch=1, between_batches=half_moved)
        assert moved >= 1
        seen = batches[0]
        while batches[0] < seen + 2 and not errors:
            threading.Event().wait(0.01)
    finally:
        stop.set()
        thread.join(30)
    assert not errors, errors
    assert asked, "no batch was written while the stream sat on the importing node"
    # A client whose slot map still points at the source: its first batch meets MOVED.
    stale = lc.client()
    stale_ps = PartitionedStream(stale, ps.base_key, partitions=PARTITIONS, maxlen_approx=None)
    stale.nodes_manager.slots_cache[slot] = [stale.get_node(source.host, source.port)]
    events = _events(counter[0], 600)
    ids = stale_ps.produce_batch(events)
    returned.update({p["n"]: i for (_, _, p), i in zip(events, ids, strict=True)})
    counter[0] += 600

    stored = _stored(ps)
    all_n = Counter(n for rows in stored.values() for n, _ in rows)
    assert set(all_n) == set(range(counter[0])), "events lost"
    assert max(all_n.values()) == 1, "an event stored twice"
    for i, rows in stored.items():
        for n, entry_id in rows:
            assert returned[n] == entry_id
            assert ps.partition_index(f"k{n}") == i
    assert int(target.call("EXISTS", key)) == 1
    ps.delete()
    client.close()
    stale.close()


def _remapped_client(lc: LocalCluster, port: int, proxy: FaultProxy) -> RedisCluster:
    """A cluster client that reaches the master on ``port`` through ``proxy``."""

    def remap(address: tuple[str, int]) -> tuple[str, int]:
        return ("127.0.0.1", proxy.port) if address[1] == port else address

    return RedisCluster(startup_nodes=lc.startup_nodes, decode_responses=True,
                        address_remap=remap)  # fmt: skip


def _exec_rule(after: int, then: Any) -> Any:
    """Cut the first connection that sends its ``after``-th EXEC (mid-round), once."""
    fired = threading.Event()

    def rule(way: str, chunk: bytes, seen: bytes) -> str:
        if fired.is_set() or way != "up" or seen.count(b"EXEC") < after:
            return "pass"
        fired.set()
        then()
        return "cut"

    return rule


@pytest.mark.parametrize("node_returns", [True, False], ids=["node-back", "node-gone"])
def test_node_cut_mid_batch_caller_learns_exactly_what_was_stored(
    lc: LocalCluster, node_returns: bool
) -> None:
    plain = lc.client()
    ps0 = PartitionedStream(plain, f"cut{uuid.uuid4().hex[:8]}", partitions=PARTITIONS,
                            maxlen_approx=None)  # fmt: skip
    victim = lc.node_for_key(ps0.keys[0])
    proxy = FaultProxy(victim.host, victim.port)
    client = _remapped_client(lc, victim.port, proxy)
    ps = PartitionedStream(client, ps0.base_key, partitions=PARTITIONS, maxlen_approx=None,
                           retries=1)  # fmt: skip
    ps.produce_batch(_events(0, 30))  # connections made, streams exist
    proxy.rule = _exec_rule(4, (lambda: None) if node_returns else proxy.close)
    events = _events(30, 2400)  # ~800 per partition: one round of 40 slices each
    try:
        ids: list[str | None] = list(ps.produce_batch(events))
        unknown: set[int] = set()
        assert node_returns, "the batch cannot finish without the node"
    except ProduceError as exc:
        assert not node_returns, f"a node that came back must settle the cut: {exc}"
        ids, unknown = list(exc.ids), set(exc.unknown)
        # Partitions on the other nodes were written side by side and are all stored.
        for n, (k, _, _) in enumerate(events):
            if lc.node_for_key(ps.partition_for(k)) is not victim:
                assert ids[n] is not None
    assert proxy.cuts >= 1, "the batch was never cut"
    proxy.close()
    stored = {n: entry_id for rows in _stored(ps0).values() for n, entry_id in rows}
    counts = Counter(n for rows in _stored(ps0).values() for n, _ in rows)
    assert max(counts.values()) == 1, "an event stored twice"
    for n, (_, _, payload) in enumerate(events):
        number = payload["n"]
        if ids[n] is not None:
            assert stored.get(number) == ids[n], f"event {n} reported stored, not found"
        elif n not in unknown:
            assert number not in stored, f"event {n} reported not stored, but it is"
    if not node_returns:
        # The unknown events of a round are all stored or none (one transaction per slice,
        # but never half a slice).
        assert unknown
    ps0.delete()
    plain.close()
    client.close()


def test_node_sigkilled_mid_batch_others_stored_and_error_says_so(lc: LocalCluster) -> None:
    """A real SIGKILL at an exact protocol point (the 4th EXEC of a round on its way)."""
    if len(lc.masters()) < 3:
        pytest.skip("an earlier test left fewer masters")
    plain = lc.client()
    ps0 = PartitionedStream(plain, f"kill{uuid.uuid4().hex[:8]}", partitions=PARTITIONS,
                            maxlen_approx=None)  # fmt: skip
    victim = lc.node_for_key(ps0.keys[0])
    proxy = FaultProxy(victim.host, victim.port)
    client = _remapped_client(lc, victim.port, proxy)
    ps = PartitionedStream(client, ps0.base_key, partitions=PARTITIONS, maxlen_approx=None,
                           retries=1)  # fmt: skip
    ps.produce_batch(_events(0, 30))
    proxy.rule = _exec_rule(4, lambda: lc.kill_master(victim))
    events = _events(30, 2400)
    with pytest.raises(ProduceError) as info:
        ps.produce_batch(events)
    err = info.value
    survivors = [i for i in range(len(ps)) if lc.node_for_slot(key_slot(ps.keys[i])) is not victim]
    on_victim = {n for n, (k, _, _) in enumerate(events) if ps.partition_for(k) not in
                 [ps.keys[i] for i in survivors]}  # fmt: skip
    assert err.unknown and set(err.unknown) <= on_victim
    assert set(err.not_stored) <= on_victim
    for n in set(range(len(events))) - on_victim:
        assert err.ids[n] is not None
    numbers = {
        int(e.fields["n"]): e.id for i in survivors for _, e in ps0.iter_replay(partitions=[i])
    }
    for n in set(range(len(events))) - on_victim:
        assert numbers[events[n][2]["n"]] == err.ids[n]
    proxy.close()
    client.close()
    plain.close()
