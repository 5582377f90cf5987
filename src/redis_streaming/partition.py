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

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, cast

import redis

from . import _codec as codec
from . import _produce_io
from ._errors import StreamingError, translate
from ._model import ClaimResult, Entry, GroupInfo, StreamInfo
from ._partition_core import (
    DEFAULT_LEASE_MS,
    DEFAULT_PARTITIONS,
    MAX_PARTITIONS,
    REDIS_FAILURES,
    Layout,
    Routed,
    assign,
    hash_key,
    merge_by_id,
    partition_index,
    sum_groups,
    validate_tag,
)
from ._produce_fanout import build_lanes, in_order
from .deadletter import DeadLetters
from .partition_pool import PartitionedConsumerPool
from .retention import TrimReport, trim_safe
from .stream import EventStream, now_ms
from .worker import ConsumerWorker

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_LEASE_MS",
    "DEFAULT_PARTITIONS",
    "MAX_PARTITIONS",
    "REDIS_FAILURES",
    "PartitionedConsumerPool",
    "PartitionedStream",
    "assign",
    "hash_key",
    "merge_by_id",
    "partition_index",
    "sum_groups",
    "validate_tag",
]

AnyClient = Any  # redis.Redis or redis.cluster.RedisCluster: the same command methods


# ---------------------------------------------------------------- PartitionedStream


class PartitionedStream(Routed):
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
        self.layout = Layout.build(base_key, partitions, tenants)
        self.base_key = self.layout.base_key
        self.tenants: tuple[str, ...] | None = self.layout.tenants
        self.keys: tuple[str, ...] = self.layout.keys
        # EventStream is typed for redis.Redis; RedisCluster offers the same methods.
        self.streams: tuple[EventStream, ...] = tuple(
            EventStream(cast(redis.Redis, client), k, **stream_options) for k in self.keys
        )

    # ------------------------------------------------------------ routing

    def slots(self) -> list[int]:
        """The cluster hash slot of each partition (pure: CRC16 of its hash tag)."""
        from redis.crc import key_slot

        return [int(key_slot(k.encode())) for k in self.keys]

    def stream(self, i: int) -> EventStream:
        """The EventStream of partition ``i``."""
        return self.streams[self.layout.check(i)]

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
        partition's events are written in MULTI/EXEC rounds, in order, on the hand-packed fast
        path; the partitions are written side by side (every node is sent its rounds before
        any reply is read), on a cluster through the node that owns each partition. The
        contract is EventStream.produce_batch's: a dropped connection never stores an event
        twice, and ProduceError says what was stored.
        """
        items = codec.batch_list(events_with_keys)
        positions, pairs = self.layout.route(items)
        if not items:
            return []
        try:
            if not _produce_io.supported(self.client):
                return self._produce_pipelined(positions, pairs)
            first = self.streams[0]
            lanes = build_lanes(
                self.keys, positions, pairs, now_ms(), first.maxlen, first.approximate,
                _produce_io.max_bulk(self.client),
            )  # fmt: skip
            ids = _produce_io.write_lanes(
                self.client,
                list(lanes.values()),
                len(items),
                retries=first.retries,
                backoff=first.backoff,
                on_moved=getattr(getattr(self.client, "nodes_manager", None), "initialize", None),
            )
        except StreamingError:
            raise
        except REDIS_FAILURES as exc:
            raise translate(exc) from exc
        for index, rounds in lanes.items():
            self.streams[index]._count(produced=sum(r.count for r in rounds))
        return ids

    def _produce_pipelined(
        self, positions: list[list[int]], pairs: list[list[tuple[Any, Any]]]
    ) -> list[str]:
        # A client that is neither redis.Redis nor RedisCluster: one pipeline, never retried.
        first = self.streams[0]
        indexes = [0] * sum(map(len, positions))
        for index, pos in enumerate(positions):
            for n in pos:
                indexes[n] = index
        encoded = codec.encode_batch(in_order(positions, pairs), now_ms())
        pipe = self.client.pipeline(transaction=False)
        for index, fields in zip(indexes, encoded, strict=True):
            pipe.xadd(self.keys[index], fields, maxlen=first.maxlen, approximate=first.approximate)
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
            StreamMetrics(s, workers=[w for w in workers if w.stream.key == s.key])
            for s in self.streams
        ]
