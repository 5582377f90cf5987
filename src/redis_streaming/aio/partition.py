"""AsyncPartitionedStream: PartitionedStream's producing, groups and inspection as coroutines,
over one ``redis.asyncio.Redis``.

A thin shell: the key layout and routing are _partition_core.Layout (as in the sync class),
batches are cut into lanes by _produce_fanout, whose plan aio/_fastpath drives. It must
not decide anything the sync PartitionedStream decides differently.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import redis
import redis.asyncio as aredis
import redis.exceptions as rex

from .. import _codec as codec
from .. import _plans
from .._errors import InvalidOption, StreamingError, translate
from .._model import Entry, GroupInfo, StreamInfo
from .._partition_core import Layout, Routed, merge_by_id, sum_groups
from .._produce_fanout import build_lanes
from .._streamcore import now_ms
from ..deadletter import default_dlq_key
from . import _drive
from . import _fastpath as afp
from .features import AsyncDeadLetters
from .stream import AsyncEventStream

logger = logging.getLogger(__name__)


def _check_client(client: object) -> None:
    """Refuse, before anything is built, a client the async producer plan cannot drive."""
    if afp.produces(client):
        return
    if isinstance(client, (aredis.RedisCluster, redis.RedisCluster)):
        hint = "for a cluster use the sync PartitionedStream over redis.cluster.RedisCluster"
    elif isinstance(client, redis.Redis):
        hint = "for a sync client use PartitionedStream"
    else:
        hint = "pass a redis.asyncio.Redis"
    raise InvalidOption(
        f"AsyncPartitionedStream needs a redis.asyncio.Redis; got {type(client).__name__} ({hint})"
    )


class AsyncPartitionedStream(Routed):
    """N AsyncEventStreams behind one name, on one ``redis.asyncio.Redis`` (one server).

    ``AsyncPartitionedStream(client, base_key, *, partitions=None, tenants=None,
    **stream_options)``: the same keys, routing, validation and errors as
    :class:`~redis_streaming.PartitionedStream` (``<base>:{p0}``..``<base>:{pN-1}``, 8 by
    default, routed by CRC-32 of the key; or ``<base>:{<tenant>}``, routed by the tenant name);
    other keyword options go to every partition's AsyncEventStream. Raises InvalidOption for a
    client that is not a ``redis.asyncio.Redis`` (a cluster needs the sync PartitionedStream),
    InvalidOption/InvalidName for a bad layout. Methods that talk to Redis are coroutines.
    """

    def __init__(
        self,
        client: aredis.Redis,
        base_key: str,
        *,
        partitions: int | None = None,
        tenants: Sequence[str] | None = None,
        **stream_options: Any,
    ) -> None:
        _check_client(client)
        self.layout = Layout.build(base_key, partitions, tenants)
        self.client = client
        self.base_key = self.layout.base_key
        self.tenants = self.layout.tenants
        self.keys: tuple[str, ...] = self.layout.keys
        self.streams: tuple[AsyncEventStream, ...] = tuple(
            AsyncEventStream(client, k, **stream_options) for k in self.keys
        )

    # ------------------------------------------------------------ routing (no I/O)

    def stream(self, i: int) -> AsyncEventStream:
        """The AsyncEventStream of partition ``i``; InvalidOption outside 0..N-1."""
        return self.streams[self.layout.check(i)]

    def dead_letters(self, i: int) -> AsyncDeadLetters:
        """The dead-letter stream of partition ``i`` (``<partition>:dlq``, same hash slot)."""
        return AsyncDeadLetters(self.stream(i))

    # ------------------------------------------------------------ producing

    async def produce(
        self, event_type: str, payload: Mapping[str, Any] | None = None, *, key: str | int
    ) -> str:
        """XADD one event (a MULTI/EXEC round) to the partition of ``key``; returns its ID
        within that partition. Raises InvalidInput (key), InvalidEvent (nothing sent),
        ProduceError or RedisUnavailable; never stores the event twice."""
        return await self.streams[self.partition_index(key)].produce(event_type, payload)

    async def produce_batch(
        self, events_with_keys: Iterable[tuple[str | int, str, Mapping[str, Any] | None]]
    ) -> list[str]:
        """XADD many ``(key, event_type, payload)`` events; returns their IDs in input order.

        The whole batch is routed and validated first: InvalidInput (shape, key) or
        InvalidEvent (payload), nothing sent. Each partition's events go in MULTI/EXEC rounds
        in order (per-partition order holds); the partitions' rounds are written side by side
        on one connection, then every reply is read. The contract is
        AsyncEventStream.produce_batch's: a dropped connection never stores an event twice,
        and ProduceError says which events were stored (with IDs), not stored, or unknown.
        """
        items = codec.batch_list(events_with_keys)
        positions, pairs = self.layout.route(items)
        if not items:
            return []
        first = self.streams[0]
        try:
            limit = await afp.max_bulk(self.client)
            lanes = build_lanes(
                self.keys, positions, pairs, now_ms(), first.maxlen, first.approximate, limit
            )
            ids = await afp.write_lanes(
                self.client,
                list(lanes.values()),
                len(items),
                retries=first.retries,
                backoff=first.backoff,
            )
        except StreamingError:
            raise
        except (rex.RedisError, OSError) as exc:
            raise translate(exc) from exc
        for index, rounds in lanes.items():
            self.streams[index]._count(produced=sum(r.count for r in rounds))
        return ids

    # ------------------------------------------------------------ groups

    async def ensure_group(self, group: str, start_id: str = "$") -> int:
        """XGROUP CREATE ... MKSTREAM on every partition; returns how many were newly created.
        Raises InvalidName/InvalidStreamId before anything is sent."""
        return sum([await s.ensure_group(group, start_id) for s in self.streams])

    async def delete_group(self, group: str) -> int:
        """XGROUP DESTROY on every partition; returns on how many it existed."""
        return sum([await s.delete_group(group) for s in self.streams])

    # ------------------------------------------------------------ inspection

    async def lengths(self) -> list[int]:
        """XLEN of every partition, in partition order (0 for a missing one)."""
        return [await s.length() for s in self.streams]

    async def length(self) -> int:
        """Total entries across partitions (XLEN of each)."""
        return sum(await self.lengths())

    async def info(self) -> list[StreamInfo]:
        """XINFO STREAM of every partition, in partition order."""
        return [await s.info_stream() for s in self.streams]

    async def info_groups_by_partition(self) -> list[list[GroupInfo]]:
        """XINFO GROUPS of every partition, in partition order."""
        return [await s.info_groups() for s in self.streams]

    async def info_groups(self) -> list[GroupInfo]:
        """XINFO GROUPS added up across partitions: pending and lag are totals (lag None if
        any partition's is unknown), one row per group name, sorted by name."""
        return sum_groups(await self.info_groups_by_partition())

    # ------------------------------------------------------------ history

    async def replay(
        self, start: str = "-", end: str = "+", count: int | None = 100
    ) -> list[tuple[int, Entry]]:
        """Up to ``count`` ``(partition, entry)`` pairs from ``start`` to ``end`` (inclusive;
        ``(id`` for exclusive), merged by ID across partitions, oldest first.

        XRANGE ... COUNT ``count`` on every partition (so up to N x ``count`` entries are
        fetched; ``count=None`` fetches every entry of the range at once). IDs come from the
        server's clock, so across partitions this is time order; within one it is exact.
        Raises InvalidStreamId/InvalidOption before anything is sent.
        """
        pages = [await s.replay(start, end, count) for s in self.streams]
        return list(itertools.islice(merge_by_id([iter(p) for p in pages]), count))

    # ------------------------------------------------------------ retention

    async def trim_maxlen(self, n: int, approximate: bool = True) -> int:
        """XTRIM MAXLEN [~] ``n`` on every partition (``n`` each); returns how many entries
        were deleted in total."""
        return sum([await s.trim_maxlen(n, approximate) for s in self.streams])

    async def delete(self) -> int:
        """DEL every partition and its dead letters (one key per command); returns how many
        keys existed."""
        n = 0
        for s in self.streams:
            n += await s.delete_stream()
            n += await _drive.run(self.client, _plans.delete_stream(default_dlq_key(s.key)))
        return n
