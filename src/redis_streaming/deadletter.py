"""Dead-letter stream: where entries go after too many failed deliveries or a lost payload.

It owns the atomic copy-and-ack (MULTI/EXEC) and redrive; it does not decide *when* to
dead-letter (ConsumerWorker does) and runs no loops of its own.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, TypeVar

from . import _codec as codec
from . import _drive
from ._errors import InvalidName
from ._model import Entry, UndecodableEntry
from ._ops import Batch, Op, Plan, raw_command
from ._streamcore import StreamCore
from .stream import EventStream, now_ms

logger = logging.getLogger(__name__)

DLQ_SUFFIX: Final = ":dlq"
#: Prefix of the metadata fields a dead letter carries next to the original fields.
META_PREFIX: Final = "dlq."
#: Prepended to an original field name that starts with META_PREFIX or with itself, so no
#: original field can collide with the metadata; redrive strips it again.
ESCAPE: Final = "~"
#: ``dlq.format``: 2 = original names escaped with ESCAPE (1, older, had no marker).
FORMAT: Final = "2"
REASON_FAILED: Final = "max deliveries reached"
REASON_TRIMMED: Final = "payload trimmed"
REASON_UNDECODABLE: Final = "not valid UTF-8"

_META_B = META_PREFIX.encode()
_ESCAPE_B = ESCAPE.encode()

Name = TypeVar("Name", str, bytes)


def default_dlq_key(stream_key: str) -> str:
    """``<stream_key>:dlq`` (shares the hash tag of a ``{tagged}`` key, so cluster-safe)."""
    return stream_key + DLQ_SUFFIX


def escape_name(name: Name) -> Name:
    """An original field name as stored in a dead letter (pure; str or bytes)."""
    if isinstance(name, bytes):
        return _ESCAPE_B + name if name.startswith((_META_B, _ESCAPE_B)) else name
    return ESCAPE + name if name.startswith((META_PREFIX, ESCAPE)) else name


def _unescape(name: Name) -> Name:
    return name[1:] if name.startswith(_ESCAPE_B if isinstance(name, bytes) else ESCAPE) else name


def dead_letter_fields(
    fields: Mapping[str, str] | Iterable[tuple[bytes, bytes]] | None,
    *,
    original_id: str,
    group: str,
    consumer: str,
    deliveries: int,
    reason: str,
    error: str | None,
) -> dict[Any, Any]:
    """A dead letter's fields: the original pairs (names escaped, values untouched, bytes kept
    as bytes), then the ``dlq.*`` metadata (pure)."""
    pairs: Iterable[tuple[Any, Any]] = (
        fields.items() if isinstance(fields, Mapping) else (fields or ())
    )
    out: dict[Any, Any] = {escape_name(k): v for k, v in pairs}
    out[META_PREFIX + "original_id"] = original_id
    out[META_PREFIX + "group"] = group
    out[META_PREFIX + "consumer"] = consumer
    out[META_PREFIX + "deliveries"] = str(deliveries)
    out[META_PREFIX + "reason"] = reason
    out[META_PREFIX + "error"] = (error or "")[:2000]
    out[META_PREFIX + "at_ms"] = str(now_ms())
    out[META_PREFIX + "format"] = FORMAT
    return out


def metadata(letter: Entry) -> dict[str, str]:
    """A dead letter's ``dlq.*`` fields, without the prefix (``original_id``, ``reason``, ...)."""
    return {k[len(META_PREFIX) :]: v for k, v in letter.fields.items() if k.startswith(META_PREFIX)}


def original_fields(letter: Entry) -> dict[str, str]:
    """A dead letter's original fields, names unescaped: exactly what was produced.

    For a letter holding bytes that are not UTF-8 use :func:`original_pairs`.
    """
    escaped = META_PREFIX + "format" in letter.fields
    return {
        (_unescape(k) if escaped else k): v
        for k, v in letter.fields.items()
        if not k.startswith(META_PREFIX)
    }


def original_pairs(letter: Entry) -> list[tuple[Any, Any]]:
    """The original ``(name, value)`` pairs of a dead letter, exactly as first stored: str
    pairs, or the exact bytes when the letter is an UndecodableEntry."""
    if not isinstance(letter, UndecodableEntry):
        return list(original_fields(letter).items())
    escaped = META_PREFIX + "format" in letter.fields
    return [(_unescape(k) if escaped else k, v) for k, v in letter.raw if not k.startswith(_META_B)]


# ---------------------------------------------------------------- plans (see _ops)
# Written once; DeadLetters below runs them over a sync client, AsyncDeadLetters over an async one.


def send_plan(
    stream_key: str,
    key: str,
    group: str,
    consumer: str,
    entry: Entry,
    deliveries: int,
    error: str | None,
    reason: str,
) -> Plan[str | None]:
    fields = dead_letter_fields(
        entry.raw if isinstance(entry, UndecodableEntry) else entry.fields,
        original_id=entry.id,
        group=group,
        consumer=consumer,
        deliveries=deliveries,
        reason=reason,
        error=error,
    )
    return _send(stream_key, key, group, entry, fields, deliveries, error, reason)


# Copy-and-ack as one script, gated on the XACK: an entry no longer pending in the group
# (acked, or dead-lettered by a peer, or this very call retried by redis-py after its reply
# was lost) is not copied again. Returns the dead letter's ID, or nil when nothing was done.
_SEND = (
    "if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 1 then "
    "return redis.call('XADD', KEYS[2], '*', unpack(ARGV, 3)) end return false"
)
# Put letters back: each XDEL that removed a letter adds its event to the stream, in one
# script, so a retried call (its reply lost) finds the letters gone and adds nothing twice.
# ARGV holds, per letter: its ID, how many name/value items follow, the items.
_REDRIVE = (
    "local out, i = {}, 1 "
    "while i <= #ARGV do local n = tonumber(ARGV[i + 1]) "
    "if redis.call('XDEL', KEYS[1], ARGV[i]) == 1 and n > 0 then "
    "out[#out + 1] = redis.call('XADD', KEYS[2], '*', unpack(ARGV, i + 2, i + 1 + n)) end "
    "i = i + 2 + n end return out"
)


def _send(
    stream_key: str,
    key: str,
    group: str,
    entry: Entry,
    fields: Mapping[Any, Any],
    deliveries: int,
    error: str | None,
    reason: str,
) -> Plan[str | None]:
    args = [group, entry.id, *(x for pair in fields.items() for x in pair)]
    new_id = yield Op("eval", (_SEND, 2, stream_key, key, *args))
    if new_id is None:
        logger.info(
            "%s on %s/%s was no longer pending: not dead-lettered", entry.id, stream_key, group
        )
        return None
    logger.warning(
        "dead-lettered %s on %s/%s after %d deliveries (%s): %s",
        entry.id, stream_key, group, deliveries, reason, error,
    )  # fmt: skip
    return codec.to_str(new_id)


def record_trimmed_plan(
    stream_key: str, key: str, group: str, consumer: str, ids: Sequence[str]
) -> Plan[list[str]]:
    ops = [
        Op("xadd", (key, dead_letter_fields(
            None, original_id=entry_id, group=group, consumer=consumer, deliveries=0,
            reason=REASON_TRIMMED, error=None,
        )))
        for entry_id in ids
    ]  # fmt: skip
    replies = yield Batch([*ops, Op("xack", (stream_key, group, *ids))], transaction=True)
    logger.warning(
        "%d pending entries on %s/%s were trimmed before processing: %s",
        len(ids), stream_key, group, ", ".join(ids[:10]),
    )  # fmt: skip
    return [codec.to_str(x) for x in replies[:-1]]


def list_op(key: str, start: str, end: str, count: int | None) -> Op:
    codec.validate_range_bound(start, "start")
    codec.validate_range_bound(end, "end")
    if count is not None:
        codec.validate_int(count, "count", minimum=1)
    args: tuple[Any, ...] = ("XRANGE", key, start, end)
    if count is not None:
        args += ("COUNT", count)
    return raw_command(*args, parse=codec.parse_entries)


def redrive_plan(
    stream_key: str,
    key: str,
    ids: Iterable[str] | None,
    start: str,
    end: str,
    count: int | None,
) -> Plan[list[str]]:
    if ids is not None:
        wanted = [codec.validate_id(i, "dead-letter ID") for i in ids]
        return _redrive(stream_key, key, [list_op(key, i, i, 1) for i in wanted])
    return _redrive(stream_key, key, [list_op(key, start, end, count)])


def _redrive(stream_key: str, key: str, reads: list[Op]) -> Plan[list[str]]:
    letters = [e for found in (yield Batch(reads)) for e in found] if reads else []
    if not letters:
        return []
    argv: list[Any] = []
    for letter in letters:
        # A trimmed-payload record has no event to put back (no items): it is only removed.
        items = [x for pair in original_pairs(letter) for x in pair]
        argv += [letter.id, len(items), *items]
    results = yield Op("eval", (_REDRIVE, 2, key, stream_key, *argv))
    new_ids = [codec.to_str(r) for r in results or ()]
    logger.info("redrove %d dead letters from %s to %s", len(new_ids), key, stream_key)
    return new_ids


class DeadLetterKey:
    """The validated dead-letter key of a stream (both DeadLetters shells start here)."""

    def __init__(self, stream: StreamCore, key: str | None = None) -> None:
        self.key = codec.validate_name(key or default_dlq_key(stream.key), "dead-letter key")
        if self.key == stream.key:
            raise InvalidName(f"dead-letter key must differ from the stream key {key!r}")


class DeadLetters(DeadLetterKey):
    """The dead-letter stream of one EventStream (default key ``<stream>:dlq``)."""

    def __init__(self, stream: EventStream, key: str | None = None) -> None:
        super().__init__(stream, key)
        self.stream = stream

    def send(
        self,
        group: str,
        consumer: str,
        entry: Entry,
        *,
        deliveries: int,
        error: str | None,
        reason: str = REASON_FAILED,
    ) -> str | None:
        """XACK ``entry`` on ``group`` and copy it here, in one script (EVAL: XACK, then XADD
        only if the XACK found it pending); returns the dead letter's ID, or None when the
        entry was no longer pending (acked or dead-lettered already): then nothing is written,
        so a retried call never copies it twice. Raises RedisUnavailable or ServerError.
        """
        plan = send_plan(
            self.stream.key, self.key, group, consumer, entry, deliveries, error, reason
        )
        return _drive.run(self.stream.client, plan)  # type: ignore[no-any-return]

    def record_trimmed(self, group: str, consumer: str, ids: Sequence[str]) -> list[str]:
        """Record IDs whose payload was trimmed unprocessed, and XACK them, in one MULTI/EXEC.

        XAUTOCLAIM already dropped such IDs from the PEL, but a consumer re-reading its own PEL
        (XREADGROUP 0) still holds them: the ack makes both paths leave nothing pending.
        """
        if not ids:
            return []
        plan = record_trimmed_plan(self.stream.key, self.key, group, consumer, ids)
        return _drive.run(self.stream.client, plan)  # type: ignore[no-any-return]

    def length(self) -> int:
        """How many dead letters are stored (XLEN)."""
        return int(_drive.run(self.stream.client, Op("xlen", (self.key,), parse=int)))

    def list(self, start: str = "-", end: str = "+", count: int | None = 100) -> list[Entry]:
        """Dead letters from ``start`` to ``end``, oldest first (XRANGE)."""
        return _drive.run(self.stream.client, list_op(self.key, start, end, count))  # type: ignore[no-any-return]

    def redrive(
        self,
        ids: Iterable[str] | None = None,
        *,
        start: str = "-",
        end: str = "+",
        count: int | None = None,
    ) -> builtins.list[str]:
        """Move dead letters back onto the main stream (all, by ID, or by range).

        Each call is one MULTI/EXEC of XADD to the stream plus XDEL here, so an entry is
        never both lost and never in both places. Trimmed-payload records carry no event and
        are removed without being re-added. Returns the new IDs on the main stream.
        """
        plan = redrive_plan(self.stream.key, self.key, ids, start, end, count)
        return _drive.run(self.stream.client, plan)  # type: ignore[no-any-return]
