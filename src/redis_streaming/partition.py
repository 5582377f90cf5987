"""Partitioned streams on Redis Cluster: N stream keys routed by a stable hash, and a consumer pool.

Every command touches exactly one key (or keys sharing one hash tag), so nothing can fail with
CROSSSLOT; coordination lives in Redis itself (leases, heartbeats), never in a service of our own.

Key layout for ``base_key="orders"`` with 4 partitions and group ``billing``::

    orders:{p0} .. orders:{p3}        the partition streams (hash tag = the partition)
    orders:{p2}:dlq                   dead letters of partition 2 (same slot as its stream)
    orders:{p2}:lease:billing         who in group billing may read partition 2 (SET NX PX)
    orders:members:billing            live pool members: a sorted set scored by expiry time

In tenant mode (``tenants=["acme", "globex"]``) the partitions are ``orders:{acme}`` and
``orders:{globex}`` and an event's key must name one of them.
"""

from __future__ import annotations

import heapq
import logging
import os
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

import redis
import redis.exceptions as rex

from . import _codec as codec
from . import _fastpath, _produce, _produce_io
from ._errors import InvalidInput, InvalidName, InvalidOption, StreamingError, translate
from ._model import ClaimResult, Entry, GroupInfo, ReapResult, StreamInfo
from .deadletter import DeadLetters
from .retention import TrimReport, trim_safe
from .stream import EventStream, now_ms
from .worker import ConsumerWorker, Handler

logger = logging.getLogger(__name__)

DEFAULT_PARTITIONS: Final = 8
DEFAULT_LEASE_MS: Final = 5000
MAX_PARTITIONS: Final = 4096

#: Anything a cluster client may raise while a shard fails over or a slot moves.
REDIS_FAILURES: Final = (rex.RedisError, rex.RedisClusterException, StreamingError, OSError)

AnyClient = Any  # redis.Redis or redis.cluster.RedisCluster: the same command methods

# ---------------------------------------------------------------- pure routing and assignment


def hash_key(key: str | int) -> int:
    """CRC-32 of the key's UTF-8 bytes: stable across processes, machines and versions.

    Python's ``hash()`` is salted per process, so it must never route events.
    """
    if isinstance(key, bool) or not isinstance(key, (str, int)):
        raise InvalidInput(f"partition key must be a str or int, got {key!r}")
    text = str(key)
    if not text:
        raise InvalidInput("partition key must not be empty")
    return zlib.crc32(text.encode("utf-8"))


def partition_index(key: str | int, partitions: int) -> int:
    """The partition (0..partitions-1) that ``key`` routes to."""
    return hash_key(key) % partitions


def validate_tag(value: object, what: str) -> str:
    """A name usable inside or before a ``{hash tag}``: no braces, so the tag stays ours."""
    name = codec.validate_name(value, what)
    if "{" in name or "}" in name:
        raise InvalidName(f"{what} must not contain '{{' or '}}' (hash tags are added): {name!r}")
    return name


def assign(members: Iterable[str], partitions: int) -> dict[str, list[int]]:
    """Deterministic division of partitions among live members: sorted names, round robin.

    Every member computes the same answer from the same member list, with no coordinator.
    """
    live = sorted(set(members))
    out: dict[str, list[int]] = {m: [] for m in live}
    if not live:
        return out
    for p in range(partitions):
        out[live[p % len(live)]].append(p)
    return out


def _tag(index: int, entries: Iterator[Entry]) -> Iterator[tuple[tuple[int, int], int, Entry]]:
    for entry in entries:
        yield codec.parse_id(entry.id), index, entry


def merge_by_id(sources: Sequence[Iterator[Entry]]) -> Iterator[tuple[int, Entry]]:
    """Merge per-partition iterators (each in ID order) into one, oldest ID first."""
    tagged = [_tag(i, it) for i, it in enumerate(sources)]
    for _key, index, entry in heapq.merge(*tagged, key=lambda t: (t[0], t[1])):
        yield index, entry


def sum_groups(per_partition: Sequence[Sequence[GroupInfo]]) -> list[GroupInfo]:
    """One row per group name, added up across partitions (``lag`` None if any is unknown)."""
    rows: dict[str, GroupInfo] = {}
    for groups in per_partition:
        for g in groups:
            prev = rows.get(g.name)
            if prev is None:
                rows[g.name] = g
                continue
            last = max(prev.last_delivered_id, g.last_delivered_id, key=codec.parse_id)
            rows[g.name] = GroupInfo(
                name=g.name,
                consumers=max(prev.consumers, g.consumers),
                pending=prev.pending + g.pending,
                last_delivered_id=last,
                entries_read=None
                if prev.entries_read is None or g.entries_read is None
                else prev.entries_read + g.entries_read,
                lag=None if prev.lag is None or g.lag is None else prev.lag + g.lag,
            )
    return [rows[name] for name in sorted(rows)]


# ---------------------------------------------------------------- Lua: single-key, cluster-safe

_RENEW: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_RELEASE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# Scores are expiry times on the server's clock, so hosts with skewed clocks still agree.
_HEARTBEAT: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
for i = 3, #ARGV do
  if ARGV[2] == 'leave' then
    redis.call('ZREM', KEYS[1], ARGV[i])
  else
    redis.call('ZADD', KEYS[1], now + ttl, ARGV[i])
  end
end
redis.call('PEXPIRE', KEYS[1], ttl * 10)
return redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')
"""


# ---------------------------------------------------------------- PartitionedStream


class PartitionedStream:
    """N EventStreams behind one name, on a RedisCluster client (or a plain redis.Redis).

    ``partitions=N`` numbers them ``<base>:{p0}``..``<base>:{pN-1}`` and routes each event by
    CRC-32 of its key; ``tenants=[...]`` names them ``<base>:{<tenant>}`` and routes by the
    tenant name itself. Other keyword options go to every partition's EventStream.
    """

    def __init__(
        self,
        client: AnyClient,
        base_key: str,
        *,
        partitions: int | None = None,
        tenants: Sequence[str] | None = None,
        **stream_options: Any,
    ) -> None:
        self.client = client
        self.base_key = validate_tag(base_key, "base key")
        if tenants is not None:
            if partitions is not None and partitions != len(tenants):
                raise InvalidOption(
                    f"partitions={partitions} contradicts {len(tenants)} tenants; give one"
                )
            if isinstance(tenants, str):
                raise InvalidOption("tenants must be a list of names, not one string")
            names = [validate_tag(t, "tenant") for t in tenants]
            if not names or len(set(names)) != len(names):
                raise InvalidOption(f"tenants must be non-empty and distinct, got {names!r}")
            self.tenants: tuple[str, ...] | None = tuple(names)
            tags = names
        else:
            n = DEFAULT_PARTITIONS if partitions is None else partitions
            codec.validate_int(n, "partitions", minimum=1, maximum=MAX_PARTITIONS)
            self.tenants = None
            tags = [f"p{i}" for i in range(n)]
        self._tenant_index = {t: i for i, t in enumerate(tags)} if self.tenants else {}
        self.keys: tuple[str, ...] = tuple(f"{self.base_key}:{{{tag}}}" for tag in tags)
        # EventStream is typed for redis.Redis; RedisCluster offers the same methods.
        self.streams: tuple[EventStream, ...] = tuple(
            EventStream(cast(redis.Redis, client), k, **stream_options) for k in self.keys
        )

    def __repr__(self) -> str:
        mode = f"tenants={list(self.tenants)}" if self.tenants else f"partitions={len(self)}"
        return f"PartitionedStream({self.base_key!r}, {mode})"

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def partitions(self) -> int:
        return len(self.keys)

    # ------------------------------------------------------------ routing

    def partition_index(self, key: str | int) -> int:
        """Which partition ``key`` goes to (tenant mode: the tenant's own partition)."""
        if self.tenants is not None:
            index = self._tenant_index.get(str(key))
            if index is None:
                raise InvalidInput(f"unknown tenant {key!r}; known: {list(self.tenants)}")
            return index
        return partition_index(key, len(self.keys))

    def partition_for(self, key: str | int) -> str:
        """The stream key of the partition ``key`` routes to (stable across processes)."""
        return self.keys[self.partition_index(key)]

    def slots(self) -> list[int]:
        """The cluster hash slot of each partition (pure: CRC16 of its hash tag)."""
        from redis.crc import key_slot

        return [int(key_slot(k.encode())) for k in self.keys]

    def stream(self, i: int) -> EventStream:
        """The EventStream of partition ``i``."""
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < len(self.keys):
            raise InvalidOption(f"partition must be 0..{len(self.keys) - 1}, got {i!r}")
        return self.streams[i]

    def lease_key(self, i: int, group: str) -> str:
        """The lease key of partition ``i`` for ``group`` (same hash slot as the stream)."""
        return f"{self.stream(i).key}:lease:{group}"

    def members_key(self, group: str) -> str:
        """The sorted set of live consumer-pool members of ``group``."""
        return f"{self.base_key}:members:{group}"

    # ------------------------------------------------------------ producing

    def produce(
        self, event_type: str, payload: Mapping[str, Any] | None = None, *, key: str | int
    ) -> str:
        """XADD one event to the partition of ``key``; returns its ID within that partition."""
        stream = self.streams[self.partition_index(key)]
        try:
            return stream.produce(event_type, payload)
        except REDIS_FAILURES as exc:  # cluster-level errors are not RedisError subclasses
            raise translate(exc) from exc

    def produce_batch(
        self, events_with_keys: Iterable[tuple[str | int, str, Mapping[str, Any] | None]]
    ) -> list[str]:
        """XADD many ``(key, event_type, payload)`` events; returns their IDs in input order.

        The whole batch is validated first (nothing is sent if one event is bad). Each
        partition's events are written in MULTI/EXEC rounds, on a cluster through the node
        that owns the partition: the same contract as EventStream.produce_batch, so a dropped
        connection never stores an event twice and ProduceError says what was stored.
        """
        items = codec.batch_list(events_with_keys)
        indexes: list[int] = []
        pairs: list[tuple[str, Mapping[str, Any] | None]] = []
        for n, item in enumerate(items):
            if not isinstance(item, tuple) or len(item) != 3:
                raise InvalidInput(f"event {n} must be (key, event_type, payload), got {item!r}")
            indexes.append(self.partition_index(item[0]))
            pairs.append((item[1], item[2]))
        encoded = codec.encode_batch(pairs, now_ms())
        if not encoded:
            return []
        first = self.streams[0]
        cap, approx = first.maxlen, first.approximate
        by_partition: dict[int, list[int]] = {}
        for n, index in enumerate(indexes):
            by_partition.setdefault(index, []).append(n)
        try:
            if not _produce_io.supported(self.client):
                return self._produce_pipelined(indexes, encoded, cap, approx)
            _produce.check_sizes([(None, f) for f in encoded], _produce_io.max_bulk(self.client))
            rounds = []
            step = _fastpath.XADD_ROUND
            for index, positions in by_partition.items():
                key = self.keys[index]
                for start in range(0, len(positions), step):
                    part = positions[start : start + step]
                    packed = _fastpath.pack_xadd_batch(key, [encoded[i] for i in part], cap, approx)
                    rounds.append(_produce.Round(key, part, (packed,).__iter__))
            ids = _produce_io.write_rounds(
                self.client,
                rounds,
                len(encoded),
                retries=first.retries,
                backoff=first.backoff,
                on_moved=getattr(getattr(self.client, "nodes_manager", None), "initialize", None),
            )
        except StreamingError:
            raise
        except REDIS_FAILURES as exc:
            raise translate(exc) from exc
        for index, positions in by_partition.items():
            self.streams[index]._count(produced=len(positions))
        return ids

    def _produce_pipelined(
        self, indexes: list[int], encoded: list[dict[str, str]], cap: int | None, approx: bool
    ) -> list[str]:
        # A client that is neither redis.Redis nor RedisCluster: one pipeline, never retried.
        pipe = self.client.pipeline(transaction=False)
        for index, fields in zip(indexes, encoded, strict=True):
            pipe.xadd(self.keys[index], fields, maxlen=cap, approximate=approx)
        return [codec.to_str(x) for x in pipe.execute()]

    # ------------------------------------------------------------ groups

    def ensure_group(self, group: str, start_id: str = "$") -> int:
        """XGROUP CREATE on every partition; returns how many were newly created."""
        return sum(1 for s in self.streams if s.ensure_group(group, start_id))

    def delete_group(self, group: str) -> int:
        """XGROUP DESTROY on every partition; returns how many existed."""
        return sum(1 for s in self.streams if s.delete_group(group))

    # ------------------------------------------------------------ inspection

    def lengths(self) -> list[int]:
        """XLEN of every partition, in partition order."""
        return [s.length() for s in self.streams]

    def length(self) -> int:
        """Total entries across partitions."""
        return sum(self.lengths())

    def info(self) -> list[StreamInfo]:
        """XINFO STREAM of every partition."""
        return [s.info_stream() for s in self.streams]

    def info_groups_by_partition(self) -> list[list[GroupInfo]]:
        """XINFO GROUPS of every partition."""
        return [s.info_groups() for s in self.streams]

    def info_groups(self) -> list[GroupInfo]:
        """XINFO GROUPS added up across partitions: pending and lag are totals."""
        return sum_groups(self.info_groups_by_partition())

    def lease_holders(self, group: str) -> list[str | None]:
        """Which pool member holds each partition's lease for ``group`` (None: nobody)."""
        codec.validate_name(group, "group")
        out: list[str | None] = []
        for i in range(len(self.keys)):
            try:
                raw = self.client.get(self.lease_key(i, group))
            except REDIS_FAILURES as exc:
                raise translate(exc) from exc
            out.append(None if raw is None else codec.to_str(raw))
        return out

    # ------------------------------------------------------------ history

    def iter_replay(
        self,
        start: str = "-",
        end: str = "+",
        *,
        partitions: Iterable[int] | None = None,
        page: int = 500,
    ) -> Iterator[tuple[int, Entry]]:
        """``(partition, entry)`` from every partition, merged by ID (bounded memory).

        IDs come from each shard's own clock, so the merge is time order up to clock skew
        between shards; within one partition it is exact.
        """
        chosen = range(len(self.keys)) if partitions is None else list(partitions)
        sources = [self.stream(i).iter_replay(start, end, page) for i in chosen]
        for j, entry in merge_by_id(sources):
            yield chosen[j], entry

    def replay(
        self, start: str = "-", end: str = "+", count: int | None = 100
    ) -> list[tuple[int, Entry]]:
        """Up to ``count`` ``(partition, entry)`` pairs merged by ID across partitions."""
        if count is not None:
            codec.validate_int(count, "count", minimum=1)
        out: list[tuple[int, Entry]] = []
        for pair in self.iter_replay(start, end, page=min(count or 500, 500)):
            out.append(pair)
            if count is not None and len(out) >= count:
                break
        return out

    # ------------------------------------------------------------ retention and recovery

    def trim_safe(
        self, hard_cap: int | None = None, *, approximate: bool = True
    ) -> list[TrimReport]:
        """Trim each partition only as far as every group has acked (see retention.trim_safe)."""
        return [trim_safe(s, hard_cap, approximate=approximate) for s in self.streams]

    def trim_maxlen(self, n: int, approximate: bool = True) -> int:
        """XTRIM MAXLEN on every partition (``n`` each); returns entries deleted in total."""
        return sum(s.trim_maxlen(n, approximate) for s in self.streams)

    def dead_letters(self, i: int) -> DeadLetters:
        """The dead-letter stream of partition ``i`` (``<partition>:dlq``, same slot)."""
        return DeadLetters(self.stream(i))

    def dead_letter_counts(self) -> list[int]:
        """How many dead letters each partition holds."""
        return [self.dead_letters(i).length() for i in range(len(self.keys))]

    def autoclaim(
        self, group: str, consumer: str, min_idle_ms: int | None = None
    ) -> list[ClaimResult]:
        """XAUTOCLAIM idle pending entries of every partition to ``consumer``."""
        return [s.autoclaim(group, consumer, min_idle_ms=min_idle_ms) for s in self.streams]

    def delete(self) -> int:
        """DEL every partition with its dead letters (one key per command); returns how many."""
        n = 0
        try:
            for k in self.keys:
                n += int(self.client.delete(k)) + int(self.client.delete(k + ":dlq"))
        except REDIS_FAILURES as exc:
            raise translate(exc) from exc
        return n

    def metrics(self, workers: Sequence[ConsumerWorker] = ()) -> list[Any]:
        """One ``metrics.StreamMetrics`` per partition, each with that partition's workers.

        Needs prometheus-client (the ``demo`` or ``cli`` extra).
        """
        from .metrics import StreamMetrics

        return [
            StreamMetrics(s, workers=[w for w in workers if w.stream is s]) for s in self.streams
        ]


# ---------------------------------------------------------------- the consumer pool


@dataclass
class _Lease:
    partition: int
    key: str
    #: monotonic time after which we must assume the lease is gone (never later than Redis)
    valid_until: float
    worker: _LeasedWorker | None = None
    releasing: bool = False


class _LeasedWorker(ConsumerWorker):
    """A ConsumerWorker that only reads while its partition lease has time left."""

    def __init__(self, *args: Any, lease: _Lease, margin_ms: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lease = lease
        self.margin_ms = margin_ms

    def lease_ok(self) -> bool:
        """True if a read started now would end before the lease could expire."""
        left_ms = (self.lease.valid_until - time.monotonic()) * 1000
        return not self.lease.releasing and left_ms > self.block_ms + self.margin_ms

    def _read(self) -> list[Entry]:
        if not self.lease_ok():
            # Unrenewed (shard failing over) or being handed off: read nothing until renewed.
            self._flush_acks()
            self._stop.wait(0.05)
            return []
        return super()._read()

    def reap_idle_pel(self, min_idle_ms: int | None = None) -> ReapResult:
        if not self.lease_ok():
            return ReapResult()
        return super().reap_idle_pel(min_idle_ms)

    def _startup(self) -> None:
        super()._startup()
        # Holding the lease means nobody else in the group reads this partition, so whatever
        # another member left pending here was abandoned (it crashed or handed over): take it.
        self.reap_idle_pel(min_idle_ms=0)


class _Member:
    def __init__(self, name: str) -> None:
        self.name = name
        self.leases: dict[int, _Lease] = {}
        #: workers told to stop whose threads have not ended yet, by partition
        self.retiring: dict[int, _LeasedWorker] = {}


class PartitionedConsumerPool:
    """``consumers`` members of ``group`` sharing the partitions of ``pstream``.

    Members announce themselves in a sorted set (heartbeat with expiry) and every member
    divides the partitions among the live ones with :func:`assign`. A member reads a partition
    only while it holds that partition's lease (SET NX PX, renewed by a compare-and-extend
    script), so two members of one group never read one partition at once, and a member that
    dies (even SIGKILL) loses its leases after ``lease_ms``, when the others take over.
    Each held partition is read by a ConsumerWorker (acks, reaping, dead letters as usual).

    ``lease_ms`` must exceed ``block_ms`` plus the time the handler needs for one batch.
    Remaining keyword options go to every ConsumerWorker.
    """

    def __init__(
        self,
        pstream: PartitionedStream,
        group: str,
        consumers: int = 1,
        handler: Handler | None = None,
        *,
        name_prefix: str | None = None,
        lease_ms: int = DEFAULT_LEASE_MS,
        group_start: str = "$",
        block_ms: int = 500,
        **worker_options: Any,
    ) -> None:
        self.pstream = pstream
        self.group = validate_tag(group, "group")
        codec.validate_int(consumers, "consumers", minimum=1, maximum=1000)
        prefix = name_prefix or f"{socket.gethostname()}-{os.getpid()}"
        validate_tag(prefix, "name_prefix")
        self.members = [_Member(f"{prefix}-{j}") for j in range(consumers)]
        self.handler = handler
        self.lease_ms = codec.validate_int(lease_ms, "lease_ms", minimum=100)
        self.block_ms = codec.validate_block_ms(block_ms)
        # Keep clear of the lease: a read plus a renewal round trip must fit in it.
        self.margin_ms = max(50, self.lease_ms // 10)
        if self.block_ms + self.margin_ms >= self.lease_ms // 2:
            raise InvalidOption(
                f"block_ms={block_ms} is too long for lease_ms={lease_ms}; "
                f"keep block_ms below {self.lease_ms // 2 - self.margin_ms}"
            )
        self.group_start = codec.validate_group_start(group_start)
        self.tick_s = self.lease_ms / 5000
        self.worker_options = worker_options
        # Fail at construction on a bad worker option, not in a thread later.
        ConsumerWorker(pstream.streams[0], self.group, "probe", **worker_options)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._live: list[str] = []
        self._started: list[_LeasedWorker] = []
        self.rebalances = 0

    def __repr__(self) -> str:
        return f"PartitionedConsumerPool({self.pstream.base_key!r}, group={self.group!r})"

    # ------------------------------------------------------------ lifecycle

    def start(self) -> PartitionedConsumerPool:
        """Create the group on every partition, join, and start coordinating (once)."""
        if self._thread is not None:
            return self
        self.pstream.ensure_group(self.group, self.group_start)
        self._tick()
        self._thread = threading.Thread(
            target=self._run, name=f"pool-{self.group}-{self.members[0].name}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every worker, release every lease and leave the member set; idempotent."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        deadline = time.monotonic() + timeout
        with self._lock:
            for m in self.members:
                for lease in m.leases.values():
                    lease.releasing = True
                    if lease.worker is not None:
                        lease.worker.stop(0)
                for old in m.retiring.values():
                    old.stop(0)
            for m in self.members:
                for p, lease in list(m.leases.items()):
                    w = lease.worker
                    if w is None or w.stop(max(0.0, deadline - time.monotonic())):
                        self._call(self._eval, _RELEASE, lease.key, m.name)
                        del m.leases[p]
                for old in m.retiring.values():
                    old.stop(max(0.0, deadline - time.monotonic()))
                m.retiring.clear()
            self._call(self._heartbeat, leave=True)

    def __enter__(self) -> PartitionedConsumerPool:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ introspection

    def assignment(self) -> dict[str, list[int]]:
        """Partitions each local member holds now (lease held and worker running)."""
        with self._lock:
            return {
                m.name: sorted(
                    p
                    for p, lease in m.leases.items()
                    if not lease.releasing and lease.worker is not None and lease.worker.is_alive
                )
                for m in self.members
            }

    def live_members(self) -> list[str]:
        """The pool members (of every process) seen alive at the last heartbeat."""
        with self._lock:
            return list(self._live)

    def is_balanced(self) -> bool:
        """True when every local member holds exactly the partitions assigned to it."""
        with self._lock:
            live = list(self._live)
        plan = assign(live, len(self.pstream))
        held = self.assignment()
        return all(held.get(m.name, []) == plan.get(m.name, []) for m in self.members)

    def workers(self) -> list[ConsumerWorker]:
        """The ConsumerWorkers running now, one per held partition."""
        with self._lock:
            return [
                lease.worker
                for m in self.members
                for lease in m.leases.values()
                if lease.worker is not None
            ]

    @property
    def processed(self) -> int:
        """Entries handled and acked by workers that are running now."""
        return sum(w.processed + w.reaped for w in self.workers())

    def totals(self) -> dict[str, int]:
        """Counters summed over every worker this pool ever ran (current and retired)."""
        with self._lock:
            workers = list(self._started)
        out = {"processed": 0, "reaped": 0, "failed": 0, "dead_lettered": 0, "workers": 0}
        for w in workers:
            out["processed"] += w.processed
            out["reaped"] += w.reaped
            out["failed"] += w.failed
            out["dead_lettered"] += w.dead_lettered
            out["workers"] += 1
        return out

    # ------------------------------------------------------------ coordination

    def _eval(self, script: str, key: str, *args: Any) -> Any:
        return self.pstream.client.eval(script, 1, key, *args)

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run one coordination call; a Redis failure is logged and returns None."""
        try:
            return fn(*args, **kwargs)
        except REDIS_FAILURES as exc:
            logger.debug("pool %s: %s failed: %s", self.group, getattr(fn, "__name__", fn), exc)
            return None

    def _heartbeat(self, leave: bool = False) -> list[str]:
        raw = self._eval(
            _HEARTBEAT,
            self.pstream.members_key(self.group),
            str(self.lease_ms),
            "leave" if leave else "join",
            *[m.name for m in self.members],
        )
        return sorted(codec.to_str(x) for x in raw or ())

    def _run(self) -> None:
        while not self._stop.wait(self.tick_s):
            try:
                self._tick()
            except Exception:  # the coordinator must outlive any one bad tick
                logger.exception("pool %s: coordination tick failed", self.group)

    def _tick(self) -> None:
        live = self._call(self._heartbeat)
        with self._lock:
            if live is not None:
                if live != self._live:
                    logger.info("pool %s: members now %s", self.group, live)
                    self.rebalances += 1
                self._live = live
            plan = assign(self._live, len(self.pstream))
            for m in self.members:
                self._reconcile(m, set(plan.get(m.name, ())))

    def _reconcile(self, m: _Member, want: set[int]) -> None:
        for p, w in list(m.retiring.items()):
            if not w.is_alive:
                del m.retiring[p]
        for p, lease in list(m.leases.items()):
            if p not in want or lease.releasing:
                self._release(m, lease)
            else:
                self._renew(m, lease)
        if self._stop.is_set():
            return
        for p in sorted(want - m.leases.keys() - m.retiring.keys()):
            self._acquire(m, p)

    def _acquire(self, m: _Member, p: int) -> None:
        key = self.pstream.lease_key(p, self.group)
        sent = time.monotonic()
        ok = self._call(self.pstream.client.set, key, m.name, nx=True, px=self.lease_ms)
        if not ok:
            return
        lease = _Lease(p, key, sent + self.lease_ms / 1000)
        lease.worker = _LeasedWorker(
            self.pstream.streams[p],
            self.group,
            m.name,
            self.handler,
            lease=lease,
            margin_ms=self.margin_ms,
            block_ms=self.block_ms,
            group_start=self.group_start,
            **self.worker_options,
        )
        m.leases[p] = lease
        self._started.append(lease.worker)
        lease.worker.start()
        logger.info("pool %s: %s took partition %d", self.group, m.name, p)

    def _renew(self, m: _Member, lease: _Lease) -> None:
        sent = time.monotonic()
        ok = self._call(self._eval, _RENEW, lease.key, m.name, str(self.lease_ms))
        if ok is None:
            return  # Redis unreachable: the worker stops reading once valid_until passes
        if int(ok) == 1:
            lease.valid_until = sent + self.lease_ms / 1000
            return
        logger.warning("pool %s: %s lost partition %d", self.group, m.name, lease.partition)
        lease.releasing = True
        del m.leases[lease.partition]
        if lease.worker is not None:
            lease.worker.stop(0)
            m.retiring[lease.partition] = lease.worker

    def _release(self, m: _Member, lease: _Lease) -> None:
        """Hand a partition back: stop its worker, and only then delete the lease."""
        lease.releasing = True
        w = lease.worker
        if w is not None and not w.stop(0) and not w.stop(self.block_ms / 1000 + 0.5):
            # Still handling a batch: keep the lease alive so nobody else starts meanwhile.
            self._renew_quiet(m, lease)
            return
        self._call(self._eval, _RELEASE, lease.key, m.name)
        del m.leases[lease.partition]
        logger.info("pool %s: %s released partition %d", self.group, m.name, lease.partition)

    def _renew_quiet(self, m: _Member, lease: _Lease) -> None:
        sent = time.monotonic()
        if self._call(self._eval, _RENEW, lease.key, m.name, str(self.lease_ms)) == 1:
            lease.valid_until = sent + self.lease_ms / 1000
