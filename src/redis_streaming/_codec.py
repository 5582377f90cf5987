"""Pure encoding, validation and reply parsing shared by every sync/async front end.

Nothing here touches a socket: functions take Python values or already-read replies and return
values or raise InvalidInput subclasses. Reply parsers accept the RESP2 and RESP3 shapes redis-py
produces (with or without decode_responses), so callers never branch on protocol.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from math import isfinite
from typing import Any

from ._entries import make_entry as make_entry
from ._entries import parse_entries as parse_entries
from ._entries import parse_entry as parse_entry
from ._entries import parse_xread as parse_xread
from ._entries import to_str as to_str
from ._entries import xread_items as xread_items
from ._errors import InvalidEvent, InvalidName, InvalidOption, InvalidStreamId
from ._model import (
    RESERVED_FIELDS,
    ConsumerInfo,
    Entry,
    GroupInfo,
    PendingEntry,
    StreamInfo,
)

_MAX_U64 = 2**64 - 1
#: The largest integer Redis takes for a count, length or time (a signed 64-bit "long long").
MAX_INT64 = 2**63 - 1
#: The longest BLOCK this library sends (a day): past about 2**63 - now Redis says "out of range".
MAX_BLOCK_MS = 86_400_000
_ID_RE = re.compile(r"([0-9]{1,20})(?:-([0-9]{1,20}))?")  # ASCII digits only; fullmatch
_MAX_NAME = 200

# ---------------------------------------------------------------- decoding primitives


def to_int(value: Any, default: int = 0) -> int:
    """An integer from a reply value; None becomes ``default``."""
    if value is None:
        return default
    return int(value)


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _opt_str(value: Any) -> str | None:
    return None if value is None else to_str(value)


# ---------------------------------------------------------------- validation


def validate_name(value: object, what: str = "name") -> str:
    """A group, consumer or key name: a non-empty str of printable, non-space characters."""
    if not isinstance(value, str):
        raise InvalidName(f"{what} must be a string, got {type(value).__name__}: {value!r}")
    if not value:
        raise InvalidName(f"{what} must not be empty")
    if len(value) > _MAX_NAME:
        raise InvalidName(f"{what} is longer than {_MAX_NAME} characters: {value[:40]!r}...")
    if not value.isprintable() or any(ch.isspace() for ch in value):
        raise InvalidName(f"{what} may not contain spaces or control characters: {value!r}")
    return value


def validate_int(
    value: object, what: str, *, minimum: int = 0, maximum: int | None = MAX_INT64
) -> int:
    """An int within [minimum, maximum]; bools and floats with a fraction are refused.

    ``maximum`` defaults to the largest value Redis accepts (2**63 - 1), so nothing past it is
    ever sent.
    """
    # A float is refused even when whole: callers send the value they passed, and Redis takes
    # "1.0" as no integer at all.
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidOption(f"{what} must be an integer, got {value!r}")
    if value < minimum:
        raise InvalidOption(f"{what} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise InvalidOption(f"{what} must be <= {maximum}, got {value}")
    return value


def parse_id(value: str) -> tuple[int, int]:
    """``"<ms>-<seq>"`` or ``"<ms>"`` as a comparable tuple. Raises InvalidStreamId."""
    if not isinstance(value, str):
        raise InvalidStreamId(f"stream ID must be a string, got {value!r}")
    m = _ID_RE.fullmatch(value)
    if m is None:
        raise InvalidStreamId(f"malformed stream ID {value!r} (expected <ms>-<seq>)")
    ms = int(m.group(1))
    seq = int(m.group(2)) if m.group(2) is not None else 0
    if ms > _MAX_U64 or seq > _MAX_U64:
        raise InvalidStreamId(f"stream ID {value!r} is out of range")
    return ms, seq


def format_id(parts: tuple[int, int]) -> str:
    """The inverse of parse_id."""
    return f"{parts[0]}-{parts[1]}"


def validate_id(value: object, what: str = "stream ID") -> str:
    """A concrete stream ID (``<ms>-<seq>`` or ``<ms>``)."""
    if not isinstance(value, str):
        raise InvalidStreamId(f"{what} must be a string, got {value!r}")
    try:
        parse_id(value)
    except InvalidStreamId:
        raise InvalidStreamId(f"malformed {what} {value!r} (expected <ms>-<seq>)") from None
    return value


def validate_range_bound(value: object, what: str = "range bound") -> str:
    """An XRANGE bound: ``-``, ``+``, a concrete ID, or an exclusive ``(<id>``.

    An exclusive bound must have a neighbour: ``(`` of the largest ID as a start (nothing
    comes after it) or ``(0-0`` as an end (nothing before it) is refused, as Redis would.
    When ``what`` is neither "start" nor "end", both are refused.
    """
    if value in ("-", "+"):
        return str(value)
    if isinstance(value, str) and value.startswith("("):
        try:
            parts = parse_id(value[1:])
        except InvalidStreamId:
            raise InvalidStreamId(
                f"malformed exclusive {what} {value!r} (expected (<ms>-<seq>)"
            ) from None
        if parts == (_MAX_U64, _MAX_U64) and what != "end":
            raise InvalidStreamId(f"exclusive {what} {value!r} has no successor (no larger ID)")
        if parts == (0, 0) and what != "start":
            raise InvalidStreamId(f"exclusive {what} {value!r} has no predecessor (no smaller ID)")
        return value
    return validate_id(value, what)


def validate_block_ms(value: object) -> int:
    """XREADGROUP's BLOCK in ms: 1 to :data:`MAX_BLOCK_MS`."""
    return validate_int(value, "block_ms", minimum=1, maximum=MAX_BLOCK_MS)


def validate_seconds(value: object, what: str, *, allow_none: bool = True) -> float | None:
    """A positive, finite number of seconds (int or float), or None where that is allowed."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidOption(f"{what} must be a number of seconds, got {value!r}")
    if not (0 < value < 10**9):  # NaN and inf fail too; ~31 years is past any sane interval
        raise InvalidOption(f"{what} must be > 0 and < 1e9 seconds, got {value!r}")
    return float(value)


def validate_ids(value: object, what: str = "entry ID") -> list[str]:
    """One stream ID or a list/tuple of them (a single str is one ID, never its characters)."""
    if isinstance(value, str):
        return [validate_id(value, what)]
    if not isinstance(value, (list, tuple)):
        raise InvalidStreamId(
            f"{what}s must be a stream ID or a list of them, got {type(value).__name__}: "
            f"{value!r:.80}"
        )
    return [validate_id(v, what) for v in value]


def validate_group_start(value: object) -> str:
    """A group's start ID: ``$`` (only new entries), ``0`` or a concrete ID."""
    if value == "$":
        return "$"
    return validate_id(value, "group start ID")


def id_after(value: str) -> str:
    """The smallest ID strictly greater than ``value`` (for servers without ``(`` ranges)."""
    ms, seq = parse_id(value)
    if seq < _MAX_U64:
        return format_id((ms, seq + 1))
    return format_id((ms + 1, 0))


def id_min(ids: Iterable[str]) -> str | None:
    """The lowest of the given IDs, or None if there are none."""
    best: tuple[int, int] | None = None
    for raw in ids:
        cur = parse_id(raw)
        if best is None or cur < best:
            best = cur
    return None if best is None else format_id(best)


# ---------------------------------------------------------------- events


def _sendable(text: str) -> bool:
    # Lone surrogates cannot be encoded as UTF-8; catch them here, before any byte is sent.
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _encode_value(key: str, value: object) -> str:
    kind = type(value)
    # Exact-type fast paths for the common cases; subclasses take the checks below.
    if kind is str and value.isascii():  # type: ignore[attr-defined]
        return value  # type: ignore[return-value]
    if kind is int:
        return str(value)
    if isinstance(value, str):
        if not _sendable(value):
            raise InvalidEvent(f"payload field {key!r} is not valid Unicode text: {value!r}")
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidEvent(f"payload field {key!r} is not a finite number: {value!r}")
        return repr(value)
    if value is None:
        raise InvalidEvent(f"payload field {key!r} is None; send a string such as '' instead")
    raise InvalidEvent(
        f"payload field {key!r} must be str, int, float or bool, "
        f"got {type(value).__name__} (nested values are not allowed)"
    )


def encode_event(
    event_type: object, payload: Mapping[Any, Any] | None, ts_ms: int
) -> dict[str, str]:
    """Validate one event and return its stream fields: type, ts_ms, then the payload.

    Raises InvalidEvent naming the offending value; nothing is partially built.
    """
    if not isinstance(event_type, str):
        raise InvalidEvent(f"event type must be a string, got {event_type!r}")
    if not event_type.strip():
        raise InvalidEvent("event type must not be empty")
    if not _sendable(event_type):
        raise InvalidEvent(f"event type is not valid Unicode text: {event_type!r}")
    if payload is None:
        payload = {}
    # type() first: the ABC isinstance check costs more than the rest of a small event.
    if type(payload) is not dict and not isinstance(payload, Mapping):
        raise InvalidEvent(f"payload must be a mapping of str to str, got {type(payload).__name__}")
    fields = {"type": event_type, "ts_ms": str(ts_ms)}
    key: Any = None
    try:
        for key, value in payload.items():
            # One combined test for the common, valid key; _check_key says what is wrong.
            if type(key) is not str or not key or key in RESERVED_FIELDS or not key.isascii():
                _check_key(key)
            kind = type(value)
            if kind is str and value.isascii():
                fields[key] = value
            elif kind is int:
                fields[key] = str(value)
            elif kind is float and isfinite(value):
                fields[key] = repr(value)
            else:
                fields[key] = _encode_value(key, value)
    except InvalidEvent:
        raise
    except ValueError as exc:  # str() of an int past Python's digit limit
        raise InvalidEvent(f"payload field {key!r} cannot be sent as text: {exc}") from None
    return fields


def _check_key(key: object) -> None:
    """Raise InvalidEvent if ``key`` cannot be a payload field name."""
    if not isinstance(key, str):
        raise InvalidEvent(f"payload keys must be strings, got {key!r}")
    if not key:
        raise InvalidEvent("payload keys must not be empty")
    if key in RESERVED_FIELDS:
        raise InvalidEvent(f"payload key {key!r} is reserved (type and ts_ms are set for you)")
    if not _sendable(key):
        raise InvalidEvent(f"payload key {key!r} is not valid Unicode text")


def batch_list(events: object) -> list[Any]:
    """A batch as a list; anything that is not an iterable of events raises InvalidEvent."""
    if isinstance(events, list):
        return events
    if isinstance(events, (str, bytes, Mapping)) or not isinstance(events, Iterable):
        raise InvalidEvent(
            f"a batch must be a list (or iterable) of (event_type, payload) pairs, "
            f"got {type(events).__name__}: {events!r:.80}"
        )
    return list(events)


def encode_batch(events: Iterable[object], ts_ms: int) -> list[dict[str, str]]:
    """Validate a whole batch of ``(event_type, payload)`` pairs before anything is sent."""
    out: list[dict[str, str]] = []
    for index, item in enumerate(events):
        pair: tuple[Any, Any]
        # Pairs first: they are the common case and cheaper to recognise than a Mapping.
        if isinstance(item, (tuple, list)) and len(item) == 2:
            pair = (item[0], item[1])
        elif isinstance(item, Mapping):
            pair = (
                item.get("type"),
                {k: v for k, v in item.items() if k != "type"},
            )
        else:
            raise InvalidEvent(f"batch item {index} must be (event_type, payload), got {item!r}")
        try:
            out.append(encode_event(pair[0], pair[1], ts_ms))
        except InvalidEvent as exc:
            raise InvalidEvent(f"batch item {index}: {exc}") from None
    return out


# ---------------------------------------------------------------- entries


def parse_autoclaim(raw: Any) -> tuple[str, list[Entry], list[str]]:
    """XAUTOCLAIM's ``[next_start, entries, deleted_ids]`` (deleted is absent before Redis 7)."""
    next_start = to_str(raw[0])
    entries = parse_entries(raw[1])
    deleted = [to_str(x) for x in raw[2]] if len(raw) > 2 and raw[2] else []
    return next_start, entries, deleted


# ---------------------------------------------------------------- inspection


def _get(d: Mapping[Any, Any], key: str) -> Any:
    if key in d:
        return d[key]
    return d.get(key.encode())


def _entry_id(raw: Any) -> str | None:
    if raw is None:
        return None
    if isinstance(raw, (list, tuple)):
        return None if raw[0] is None else to_str(raw[0])
    return to_str(raw)


def parse_stream_info(key: str, raw: Mapping[Any, Any] | None) -> StreamInfo:
    """XINFO STREAM as a StreamInfo (``raw=None`` for a missing stream)."""
    if not raw:
        return StreamInfo(key=key, exists=False)
    if isinstance(raw, (list, tuple)):  # RESP2 (redis-py < 8's default protocol): flat pairs
        raw = dict(zip(raw[::2], raw[1::2], strict=True))
    return StreamInfo(
        key=key,
        exists=True,
        length=to_int(_get(raw, "length")),
        groups=to_int(_get(raw, "groups")),
        first_entry_id=_entry_id(_get(raw, "first-entry")),
        last_entry_id=_entry_id(_get(raw, "last-entry")),
        last_generated_id=_opt_str(_get(raw, "last-generated-id")),
        entries_added=_opt_int(_get(raw, "entries-added")),
        max_deleted_entry_id=_opt_str(_get(raw, "max-deleted-entry-id")),
    )


def parse_groups(raw: Iterable[Mapping[Any, Any]] | None) -> list[GroupInfo]:
    """XINFO GROUPS rows."""
    return [
        GroupInfo(
            name=to_str(_get(row, "name")),
            consumers=to_int(_get(row, "consumers")),
            pending=to_int(_get(row, "pending")),
            last_delivered_id=to_str(_get(row, "last-delivered-id")),
            entries_read=_opt_int(_get(row, "entries-read")),
            lag=_opt_int(_get(row, "lag")),
        )
        for row in raw or ()
    ]


def parse_consumers(raw: Iterable[Mapping[Any, Any]] | None) -> list[ConsumerInfo]:
    """XINFO CONSUMERS rows."""
    return [
        ConsumerInfo(
            name=to_str(_get(row, "name")),
            pending=to_int(_get(row, "pending")),
            idle_ms=to_int(_get(row, "idle")),
            inactive_ms=_opt_int(_get(row, "inactive")),
        )
        for row in raw or ()
    ]


def parse_pending_range(raw: Iterable[Any] | None) -> list[PendingEntry]:
    """XPENDING's extended form, as dicts (redis-py) or raw 4-element rows."""
    out = []
    for row in raw or ():
        if isinstance(row, Mapping):
            out.append(
                PendingEntry(
                    id=to_str(_get(row, "message_id")),
                    consumer=to_str(_get(row, "consumer")),
                    idle_ms=to_int(_get(row, "time_since_delivered")),
                    deliveries=to_int(_get(row, "times_delivered")),
                )
            )
        else:
            out.append(PendingEntry(to_str(row[0]), to_str(row[1]), int(row[2]), int(row[3])))
    return out


def parse_time_ms(raw: Any) -> int:
    """The server's TIME reply (seconds, microseconds) as milliseconds since the epoch."""
    seconds, micros = raw
    return int(seconds) * 1000 + int(micros) // 1000
