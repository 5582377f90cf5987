"""Dead-letter stream: where entries go after too many failed deliveries or a lost payload.

It owns the atomic copy-and-ack (MULTI/EXEC) and redrive; it does not decide *when* to
dead-letter (ConsumerWorker does) and runs no loops of its own.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, TypeVar

import redis.exceptions as rex

from . import _codec as codec
from ._errors import InvalidName, translate
from ._fastpath import read_entries
from ._model import Entry, UndecodableEntry
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
    return {
        k[len(META_PREFIX) :]: v for k, v in letter.fields.items() if k.startswith(META_PREFIX)
    }


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
    return [
        (_unescape(k) if escaped else k, v) for k, v in letter.raw if not k.startswith(_META_B)
    ]


class DeadLetters:
    """The dead-letter stream of one EventStream (default key ``<stream>:dlq``)."""

    def __init__(self, stream: EventStream, key: str | None = None) -> None:
        self.stream = stream
        self.key = codec.validate_name(key or default_dlq_key(stream.key), "dead-letter key")
        if self.key == stream.key:
            raise InvalidName(f"dead-letter key must differ from the stream key {key!r}")

    def send(
        self,
        group: str,
        consumer: str,
        entry: Entry,
        *,
        deliveries: int,
        error: str | None,
        reason: str = REASON_FAILED,
    ) -> str:
        """Copy ``entry`` here and XACK it on ``group`` in one MULTI/EXEC; returns the new ID."""
        fields = dead_letter_fields(
            entry.raw if isinstance(entry, UndecodableEntry) else entry.fields,
            original_id=entry.id,
            group=group,
            consumer=consumer,
            deliveries=deliveries,
            reason=reason,
            error=error,
        )
        try:
            pipe = self.stream.client.pipeline(transaction=True)
            pipe.xadd(self.key, fields)
            pipe.xack(self.stream.key, group, entry.id)
            new_id, _acked = pipe.execute()
        except rex.RedisError as exc:
            raise translate(exc) from exc
        logger.warning(
            "dead-lettered %s on %s/%s after %d deliveries (%s): %s",
            entry.id,
            self.stream.key,
            group,
            deliveries,
            reason,
            error,
        )
        return codec.to_str(new_id)

    def record_trimmed(self, group: str, consumer: str, ids: Sequence[str]) -> list[str]:
        """Record IDs whose payload was trimmed unprocessed, and XACK them, in one MULTI/EXEC.

        XAUTOCLAIM already dropped such IDs from the PEL, but a consumer re-reading its own PEL
        (XREADGROUP 0) still holds them: the ack makes both paths leave nothing pending.
        """
        if not ids:
            return []
        try:
            pipe = self.stream.client.pipeline(transaction=True)
            for entry_id in ids:
                pipe.xadd(
                    self.key,
                    dead_letter_fields(
                        None,
                        original_id=entry_id,
                        group=group,
                        consumer=consumer,
                        deliveries=0,
                        reason=REASON_TRIMMED,
                        error=None,
                    ),
                )
            pipe.xack(self.stream.key, group, *ids)
            out = [codec.to_str(x) for x in pipe.execute()[:-1]]
        except rex.RedisError as exc:
            raise translate(exc) from exc
        logger.warning(
            "%d pending entries on %s/%s were trimmed before processing: %s",
            len(ids),
            self.stream.key,
            group,
            ", ".join(ids[:10]),
        )
        return out

    def length(self) -> int:
        """How many dead letters are stored."""
        try:
            return int(self.stream.client.xlen(self.key))
        except rex.RedisError as exc:
            raise translate(exc) from exc

    def list(self, start: str = "-", end: str = "+", count: int | None = 100) -> list[Entry]:
        """Dead letters from ``start`` to ``end``, oldest first."""
        codec.validate_range_bound(start, "start")
        codec.validate_range_bound(end, "end")
        if count is not None:
            codec.validate_int(count, "count", minimum=1)
        try:
            args: tuple[Any, ...] = ("XRANGE", self.key, start, end)
            if count is not None:
                args += ("COUNT", count)
            raw = read_entries(self.stream.client, *args)
        except rex.RedisError as exc:
            raise translate(exc) from exc
        return codec.parse_entries(raw)

    def redrive(
        self,
        ids: Iterable[str] | None = None,
        *,
        start: str = "-",
        end: str = "+",
        count: int | None = None,
    ) -> builtins.list[str]:
        """Move dead letters back onto the main stream (all, by ID, or by range).

        Each page is one MULTI/EXEC of XADD to the stream plus XDEL here, so an entry is
        never both lost and never in both places. Trimmed-payload records carry no event and
        are removed without being re-added. Returns the new IDs on the main stream.
        """
        if ids is not None:
            wanted = [codec.validate_id(i, "dead-letter ID") for i in ids]
            letters = [e for i in wanted for e in self.list(i, i, 1)]
        else:
            letters = self.list(start, end, count)
        if not letters:
            return []
        try:
            pipe = self.stream.client.pipeline(transaction=True)
            movable = []
            for letter in letters:
                pairs = original_pairs(letter)
                if pairs:  # a trimmed-payload record has no event to put back
                    pipe.xadd(self.stream.key, dict(pairs))
                    movable.append(letter.id)
                pipe.xdel(self.key, letter.id)
            results = pipe.execute()
        except rex.RedisError as exc:
            raise translate(exc) from exc
        new_ids = [codec.to_str(r) for r in results if isinstance(r, (bytes, str))]
        logger.info(
            "redrove %d dead letters from %s to %s", len(new_ids), self.key, self.stream.key
        )
        return new_ids
