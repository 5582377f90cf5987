"""Faults on purpose: the producer never duplicates and says what it stored; a stalled
connection never hangs a worker.

Connections are cut by a real TCP proxy (tests/faults.py) at exact protocol points: before the
server saw EXEC, and after it executed EXEC but before its reply arrived.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from faults import FaultProxy
from redis_streaming import (
    Backoff,
    ConsumerWorker,
    EmbeddedServer,
    EventStream,
    InvalidEvent,
    PartitionedStream,
    ProduceError,
    RedisUnavailable,
)
from redis_streaming import _fastpath as fp
from redis_streaming._produce_fanout import LANE_WRITE
from redis_streaming.server import SERVER_KINDS
from waiting import wait_until

ALL_KINDS = pytest.mark.parametrize("private_server", SERVER_KINDS, indirect=True)
FAST_BACKOFF = Backoff(base_s=0.01, cap_s=0.02)


@pytest.fixture()
def via_proxy(proxy: FaultProxy) -> Iterator[redis.Redis]:
    c = redis.Redis(port=proxy.port, decode_responses=True, socket_timeout=5)
    yield c
    c.close()


def _events(n: int, note: str = "") -> list[tuple[str, dict[str, object]]]:
    return [("order", {"n": i, "note": note}) for i in range(n)]


def _stored(client: redis.Redis, key: str) -> list[str]:
    return [entry_id for entry_id, _ in client.xrange(key)]


class Once:
    """A proxy rule that fires one verdict once, when ``trigger`` matches."""

    def __init__(self, way: str, trigger: bytes, verdict: str = "cut") -> None:
        self.way, self.trigger, self.verdict, self.fired = way, trigger, verdict, False

    def __call__(self, way: str, data: bytes, seen: bytes) -> str:
        if self.fired or way != self.way or self.trigger not in seen[-len(data) - 16 :]:
            return "pass"
        self.fired = True
        return self.verdict


@ALL_KINDS
def test_value_over_the_servers_bulk_limit_is_refused_before_sending(
    private_server: EmbeddedServer,
) -> None:
    client = private_server.client(decode_responses=True)
    client.config_set("proto-max-bulk-len", 1024 * 1024)
    stream = EventStream(client, "big")
    big = "x" * (2 * 1024 * 1024)
    batch = [("s", {"v": "s1"}), ("s", {"v": big}), ("s", {"v": "s3"})]
    with pytest.raises(InvalidEvent, match=r"batch item 1: payload field 'v' value is 2097152"):
        stream.produce_batch(batch)
    with pytest.raises(InvalidEvent, match="event: payload field 'v'"):
        stream.produce("s", {"v": big})
    with pytest.raises(InvalidEvent, match="batch item 1"):  # the non-ASCII (slow) path too
        stream.produce_batch([("s", {"v": "é"}), ("s", {"v": "é" * (600 * 1024)})])
    assert client.xlen("big") == 0


def test_cut_after_exec_committed_returns_the_ids_without_resending(
    via_proxy: redis.Redis, client: redis.Redis, proxy: FaultProxy, key: str
) -> None:
    stream = EventStream(via_proxy, key, maxlen_approx=None, backoff=FAST_BACKOFF)
    stream.produce("warm", {})  # the connection has its client ID already
    # A plain batch of 100 goes as 5 transactions of 20. The server runs the first EXEC (and
    # maybe more); the connection dies when the first 21-element reply comes back.
    proxy.rule = Once("down", b"*%d\r\n" % (fp.XADD_WRITE + 1))
    ids = stream.produce_batch(_events(100))
    assert proxy.rule.fired
    assert _stored(client, key)[1:] == ids  # every event once, IDs read back exactly


def test_cut_before_exec_resends_the_round_once(
    via_proxy: redis.Redis, client: redis.Redis, proxy: FaultProxy, key: str
) -> None:
    stream = EventStream(via_proxy, key, maxlen_approx=None, backoff=FAST_BACKOFF)
    stream.produce("warm", {})
    proxy.rule = Once("up", b"EXEC")  # the write carrying EXEC never reaches the server
    ids = stream.produce_batch(_events(100))
    assert proxy.rule.fired
    assert _stored(client, key)[1:] == ids
    assert len(ids) == 100


def test_failure_that_cannot_be_finished_says_exactly_what_was_stored(
    via_proxy: redis.Redis, client: redis.Redis, proxy: FaultProxy, key: str
) -> None:
    stream = EventStream(via_proxy, key, maxlen_approx=None, retries=2, backoff=FAST_BACKOFF)
    stream.produce("warm", {})
    first_round_done = [False]

    def rule(way: str, data: bytes, seen: bytes) -> str:
        # Let the first round of 1000 through, then cut every write of the second round.
        if way == "down" and b"*1001\r\n" in data:
            first_round_done[0] = True
        if first_round_done[0] and way == "up" and b"XADD" in data:
            return "cut"
        return "pass"

    proxy.rule = rule
    with pytest.raises(ProduceError) as info:
        # Not ASCII, so packed whole first: rounds of 1000, one transaction each.
        stream.produce_batch(_events(1500, note="é"))
    err = info.value
    assert err.stored == tuple(range(1000)) and err.not_stored == tuple(range(1000, 1500))
    assert err.unknown == ()
    assert _stored(client, key)[1:] == [x for x in err.ids if x is not None]
    assert "1000 stored, 500 not stored" in str(err)


def test_partitioned_batch_cut_after_exec_is_not_duplicated(
    via_proxy: redis.Redis, client: redis.Redis, proxy: FaultProxy, key: str
) -> None:
    ps = PartitionedStream(via_proxy, key, partitions=2, maxlen_approx=None)
    for s in ps.streams:
        s.backoff = FAST_BACKOFF
    ps.produce("warm", {}, key="a")
    batch = [(f"k{i}", "order", {"n": i}) for i in range(400)]
    sizes = [sum(ps.partition_index(k) == p for k, _, _ in batch) for p in range(2)]
    # Cut once a partition's first slice (LANE_WRITE XADDs + the marker) has run, before its
    # reply arrives: partitions are written side by side, each in slices of LANE_WRITE.
    assert min(sizes) > LANE_WRITE
    proxy.rule = Once("down", b"*%d\r\n" % (LANE_WRITE + 1))
    ids = ps.produce_batch(batch)
    assert proxy.rule.fired
    # IDs are per partition key: the same ID may appear in both partitions.
    assert len({(ps.partition_for(k), i) for (k, _, _), i in zip(batch, ids, strict=True)}) == 400
    assert sum(client.xlen(k) for k in ps.keys) == 401  # 400 + the warm-up event, none twice
    for (k, _, payload), entry_id in zip(batch, ids, strict=True):
        [(_, fields)] = client.xrange(ps.partition_for(k), entry_id, entry_id)
        assert fields["n"] == str(payload["n"])


def test_a_stalled_connection_never_hangs_a_blocked_worker(
    proxy: FaultProxy, client: redis.Redis, key: str
) -> None:
    # socket_timeout=None (redis-py 5-7's default): only the worker's own deadline can help.
    silent = redis.Redis(port=proxy.port, decode_responses=True, socket_timeout=None)
    stream = EventStream(silent, key, maxlen_approx=None)
    seen: list[str] = []
    errors: list[BaseException] = []
    worker = ConsumerWorker(
        stream, "g", "w", handler=lambda e: seen.append(e.id), block_ms=100,
        reap_interval=None, group_start="0", backoff=FAST_BACKOFF,
        on_error=lambda exc, entry: errors.append(exc),
    ).start()  # fmt: skip
    try:
        ids = [client.xadd(key, {"type": "t", "n": str(i)}) for i in range(3)]
        wait_until(lambda: seen == ids, what="the first entries")
        wait_until(lambda: client.xpending(key, "g")["pending"] == 0, what="their acks")
        proxy.stall()
        # The blocked read times out (block_ms + READ_MARGIN_S) and is reported, although the
        # connection never answers. (A reconnect's handshake still waits on the client's own
        # socket_timeout: see docs/RELIABILITY.md.)
        wait_until(lambda: errors, what="the silent read reported")
        assert isinstance(errors[0], RedisUnavailable)
        assert worker.is_alive
        # Once the stall ends, the worker reconnects and goes on.
        proxy.unstall()
        later = client.xadd(key, {"type": "t"})
        wait_until(lambda: seen == [*ids, later], what="the entry after the stall")
        assert worker.is_alive
    finally:
        proxy.unstall()
        worker.stop(10)
        silent.close()


def test_every_commit_marker_expires(client: redis.Redis, key: str) -> None:
    """The slice that creates a round's marker list sets its expiry (later slices only append),
    so no marker outlives MARKER_TTL_MS, whichever slices committed."""
    from redis_streaming._produce import MARKER_TTL_MS

    stream = EventStream(client, key, maxlen_approx=None)
    stream.produce_batch(_events(3 * fp.XADD_WRITE + 1))
    markers = list(client.scan_iter(match=f"{{{key}}}:rs-produced:*"))
    assert len(markers) == 1
    [marker] = markers
    assert client.llen(marker) == 4  # one last ID per committed slice
    assert 0 < client.pttl(marker) <= MARKER_TTL_MS


class _RefuseClientIdAfterCut:
    """Cut the connection once the lanes have committed a few slices, and at that moment make
    the server refuse CLIENT ID (an ACL change; a -LOADING after a restart takes the same path),
    so the retry's new connection is refused before it writes anything."""

    def __init__(self, admin: redis.Redis, slice_size: int) -> None:
        self.admin, self.fired = admin, False
        self.exec_reply = b"*%d\r\n" % (slice_size + 1)  # a slice's XADD IDs + the marker's

    def __call__(self, way: str, data: bytes, seen: bytes) -> str:
        if not self.fired and way == "down" and seen.count(self.exec_reply) >= 2:
            self.fired = True
            self.admin.execute_command("ACL", "SETUSER", "default", "-client|id")
            return "cut"
        return "pass"


@ALL_KINDS
@pytest.mark.parametrize("partitioned", [False, True])
def test_refused_reconnect_after_a_cut_still_says_what_was_stored(
    private_server: EmbeddedServer, partitioned: bool
) -> None:
    admin = private_server.client(decode_responses=True)
    proxy = FaultProxy(private_server.host, private_server.port)
    try:
        via = redis.Redis(host="127.0.0.1", port=proxy.port, decode_responses=True)
        proxy.rule = rule = _RefuseClientIdAfterCut(
            admin, LANE_WRITE if partitioned else fp.XADD_WRITE
        )
        if partitioned:
            ps = PartitionedStream(via, "p", partitions=2, maxlen_approx=None, retries=2)
            keys, call = (
                ps.keys,
                lambda: ps.produce_batch([(f"k{n}", "o", {"n": n}) for n in range(4000)]),
            )
        else:
            es = EventStream(via, "s", maxlen_approx=None, retries=2)
            keys, call = (es.key,), lambda: es.produce_batch([("o", {"n": n}) for n in range(4000)])
        with pytest.raises(ProduceError) as info:
            call()
        assert rule.fired
        err = info.value
        stored = sum(admin.xlen(k) for k in keys)
        assert 0 < stored == len(err.stored) and err.unknown == ()
        assert len(err.not_stored) == 4000 - stored
        assert "CLIENT ID refused" in str(err.__cause__)
        on_server = sorted(entry_id for k in keys for entry_id, _ in admin.xrange(k))
        assert on_server == sorted(x for x in err.ids if x is not None)  # each stored once
    finally:
        admin.execute_command("ACL", "SETUSER", "default", "+client|id")
        proxy.close()
