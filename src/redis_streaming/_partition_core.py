"""The pure half of partitioning: routing by a stable hash, dividing partitions among pool
members, merging partitions by ID, adding up group rows, and the lease scripts' text.

No I/O and no clock: partition.py (PartitionedStream) and partition_pool.py (the consumer
pool) do the talking to Redis.
"""

from __future__ import annotations

import heapq
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import redis.exceptions as rex

from . import _codec as codec
from ._errors import InvalidInput, InvalidName, InvalidOption, StreamingError
from ._model import Entry, GroupInfo

DEFAULT_PARTITIONS: Final = 8
DEFAULT_LEASE_MS: Final = 5000
MAX_PARTITIONS: Final = 4096

#: Anything a cluster client may raise while a shard fails over or a slot moves.
REDIS_FAILURES: Final = (rex.RedisError, rex.RedisClusterException, StreamingError, OSError)

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
    try:
        return zlib.crc32(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidInput(f"partition key is not valid Unicode text: {key!r}") from None


def partition_index(key: str | int, partitions: int) -> int:
    """The partition (0..partitions-1) that ``key`` routes to."""
    return hash_key(key) % partitions


def validate_tag(value: object, what: str) -> str:
    """A name usable inside or before a ``{hash tag}``: no braces, so the tag stays ours."""
    name = codec.validate_name(value, what)
    if "{" in name or "}" in name:
        raise InvalidName(f"{what} must not contain '{{' or '}}' (hash tags are added): {name!r}")
    return name


@dataclass(frozen=True)
class Layout:
    """A partitioned stream's keys and routing (pure): ``<base>:{p0}``..``{pN-1}`` routed by
    CRC-32 of the key, or ``<base>:{<tenant>}`` routed by the tenant name."""

    base_key: str
    keys: tuple[str, ...]
    tenants: tuple[str, ...] | None
    tenant_index: Mapping[str, int]

    @classmethod
    def build(
        cls, base_key: object, partitions: int | None, tenants: Sequence[str] | None
    ) -> Layout:
        """Validate a layout; raises InvalidName (base key, tenant) or InvalidOption."""
        base = validate_tag(base_key, "base key")
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
            keys = tuple(f"{base}:{{{t}}}" for t in names)
            return cls(base, keys, tuple(names), {t: i for i, t in enumerate(names)})
        n = DEFAULT_PARTITIONS if partitions is None else partitions
        codec.validate_int(n, "partitions", minimum=1, maximum=MAX_PARTITIONS)
        return cls(base, tuple(f"{base}:{{p{i}}}" for i in range(n)), None, {})

    def index(self, key: str | int) -> int:
        """Which partition ``key`` goes to (tenant mode: the tenant's own partition)."""
        if self.tenants is not None:
            index = self.tenant_index.get(str(key))
            if index is None:
                raise InvalidInput(f"unknown tenant {key!r}; known: {list(self.tenants)}")
            return index
        return partition_index(key, len(self.keys))

    def check(self, i: object) -> int:
        """``i`` if it is a partition number; InvalidOption otherwise."""
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < len(self.keys):
            raise InvalidOption(f"partition must be 0..{len(self.keys) - 1}, got {i!r}")
        return i

    def route(self, items: Sequence[object]) -> tuple[list[list[int]], list[list[Any]]]:
        """:func:`route` for this layout."""
        return route(items, len(self.keys), self.tenant_index or None)

    def describe(self) -> str:
        """``'orders', partitions=8`` or ``'orders', tenants=[...]`` (for reprs)."""
        mode = f"tenants={list(self.tenants)}" if self.tenants else f"partitions={len(self.keys)}"
        return f"{self.base_key!r}, {mode}"


class Routed:
    """What a partitioned stream (sync or async) answers from its :class:`Layout` alone."""

    layout: Layout
    keys: tuple[str, ...]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.layout.describe()})"

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def partitions(self) -> int:
        """How many partitions (stream keys) there are."""
        return len(self.keys)

    def partition_index(self, key: str | int) -> int:
        """Which partition ``key`` goes to (tenant mode: the tenant's own partition). Raises
        InvalidInput for an unknown tenant or a key that is not non-empty text or an int."""
        return self.layout.index(key)

    def partition_for(self, key: str | int) -> str:
        """The stream key of the partition ``key`` routes to (stable across processes)."""
        return self.keys[self.layout.index(key)]


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

RENEW_LEASE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

RELEASE_LEASE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# Scores are expiry times on the server's clock, so hosts with skewed clocks still agree.
HEARTBEAT: Final = """
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


def route(
    items: Sequence[object], partitions: int, tenants: Mapping[str, int] | None
) -> tuple[list[list[int]], list[list[tuple[Any, Any]]]]:
    """Group ``(key, event_type, payload)`` items by partition, in batch order.

    Returns, per partition (all ``partitions`` of them, empty lists included), the batch
    positions of its events and their ``(event_type, payload)``. The same answers and errors
    as :func:`partition_index` per item, with the common case (a str key, hash mode) inlined:
    this runs once per event on the producer's hot path.
    """
    positions: list[list[int]] = [[] for _ in range(partitions)]
    pairs: list[list[tuple[Any, Any]]] = [[] for _ in range(partitions)]
    crc = zlib.crc32
    for n, item in enumerate(items):
        if not isinstance(item, tuple) or len(item) != 3:
            raise InvalidInput(f"event {n} must be (key, event_type, payload), got {item!r}")
        key, event_type, payload = item
        if tenants is not None:
            index = tenants.get(str(key))
            if index is None:
                raise InvalidInput(f"unknown tenant {key!r}; known: {list(tenants)}")
        elif type(key) is str and key and key.isascii():
            index = crc(key.encode()) % partitions
        else:
            try:
                index = hash_key(key) % partitions
            except InvalidInput as exc:
                raise InvalidInput(f"event {n}: {exc}") from None
        positions[index].append(n)
        pairs[index].append((event_type, payload))
    return positions, pairs
