"""Frozen, typed result objects returned by redis-streaming.

Pure data: no I/O, no parsing of server replies (that lives in _codec).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "ClaimResult",
    "ConsumerInfo",
    "ConsumerStatus",
    "Delivery",
    "Entry",
    "GroupInfo",
    "PendingEntry",
    "ReapResult",
    "StreamInfo",
    "StreamStats",
    "UndecodableEntry",
]

#: Fields every entry written by this library carries before its payload.
RESERVED_FIELDS = ("type", "ts_ms")


@dataclass(frozen=True, slots=True)
class Entry:
    """One stream entry: its ID and its flat map of string fields."""

    id: str
    fields: Mapping[str, str]

    @property
    def type(self) -> str:
        """The event type (``type`` field), or "" for entries written by other tools."""
        return self.fields.get("type", "")

    @property
    def ts_ms(self) -> int | None:
        """Producer wall-clock time in ms since the epoch, if the entry carries it."""
        raw = self.fields.get("ts_ms")
        try:
            return int(raw) if raw is not None else None
        except ValueError:
            return None

    @property
    def payload(self) -> dict[str, str]:
        """The fields without the reserved ``type`` and ``ts_ms``."""
        return {k: v for k, v in self.fields.items() if k not in RESERVED_FIELDS}

    @property
    def id_ms(self) -> int:
        """The millisecond part of the ID: when the server accepted the entry."""
        return int(self.id.partition("-")[0])

    @property
    def undecodable(self) -> bool:
        """True for an :class:`UndecodableEntry` (a field that is not valid UTF-8)."""
        return False


@dataclass(frozen=True, slots=True)
class UndecodableEntry(Entry):
    """An entry with a field name or value that is not valid UTF-8, kept exactly as stored.

    ``raw`` holds every ``(name, value)`` pair as the server's bytes, in stream order;
    ``fields`` holds only the pairs that decode, so ``type`` still shows when it is readable.
    Nothing is replaced or dropped silently: read ``raw`` for the entry itself. A worker never
    passes one to its handler; it reports it and dead-letters it with these bytes.
    """

    raw: tuple[tuple[bytes, bytes], ...] = ()

    @property
    def undecodable(self) -> bool:
        return True

    @property
    def bad_fields(self) -> tuple[bytes, ...]:
        """The raw names of the fields whose name or value is not valid UTF-8."""
        return tuple(name for name, value in self.raw if not _utf8(name) or not _utf8(value))


def _utf8(raw: bytes) -> bool:
    try:
        raw.decode()
    except UnicodeDecodeError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """XINFO STREAM, reduced to what callers use. A missing stream gives ``exists=False``."""

    key: str
    exists: bool
    length: int = 0
    groups: int = 0
    first_entry_id: str | None = None
    last_entry_id: str | None = None
    last_generated_id: str | None = None
    entries_added: int | None = None
    max_deleted_entry_id: str | None = None


@dataclass(frozen=True, slots=True)
class GroupInfo:
    """One row of XINFO GROUPS. ``lag`` is None when the server cannot compute it."""

    name: str
    consumers: int
    pending: int
    last_delivered_id: str
    entries_read: int | None = None
    lag: int | None = None


@dataclass(frozen=True, slots=True)
class ConsumerInfo:
    """One row of XINFO CONSUMERS. ``inactive_ms`` exists on Redis/Valkey 7.2+."""

    name: str
    pending: int
    idle_ms: int
    inactive_ms: int | None = None


@dataclass(frozen=True, slots=True)
class PendingEntry:
    """One row of XPENDING's extended form."""

    id: str
    consumer: str
    idle_ms: int
    deliveries: int


@dataclass(frozen=True, slots=True)
class AckDeleteResult:
    """What XACKDEL did with each ID: ``deleted`` (acked here and removed from the stream),
    ``kept`` (acked here, but the entry stays: another group still references it, under the
    ``acked`` policy), ``missing`` (no such entry, or not pending in this group)."""

    deleted: tuple[str, ...] = ()
    kept: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()

    @property
    def acked(self) -> int:
        return len(self.deleted) + len(self.kept)


@dataclass(frozen=True, slots=True)
class ClaimResult:
    """What XAUTOCLAIM moved to a consumer.

    ``deleted_ids`` are entries that were pending but whose payload had been trimmed away;
    Redis 7+ already removed them from the PEL, so nobody will ever see them again.
    """

    claimed: tuple[Entry, ...] = ()
    deleted_ids: tuple[str, ...] = ()
    next_start_id: str = "0-0"


@dataclass(frozen=True, slots=True)
class ReapResult:
    """What ConsumerWorker.reap_idle_pel did: entries claimed, processed (acked), lost to trim."""

    claimed: int = 0
    processed: int = 0
    deleted_ids: tuple[str, ...] = ()
    dropped: int = 0
    failed: int = 0
    dead_lettered: int = 0


@dataclass(frozen=True, slots=True)
class ConsumerStatus:
    """A snapshot of one ConsumerWorker's counters and switches."""

    name: str
    group: str
    processed: int
    reaped: int
    failed: int
    crashed_drops: int
    crash_queued: int
    paused: bool
    alive: bool
    dead_lettered: int = 0


DeliveryOutcome = Literal["acked", "dropped", "error", "dead-lettered"]


@dataclass(frozen=True, slots=True)
class Delivery:
    """One recent delivery seen by a worker and what became of it."""

    id: str
    type: str
    outcome: DeliveryOutcome
    at_ms: int
    reaped: bool = False
    error: str | None = None


@dataclass(frozen=True, slots=True)
class StreamStats:
    """Counters kept by one EventStream object (this process only)."""

    produced: int = 0
    acked: int = 0
    claimed: int = 0
