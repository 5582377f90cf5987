"""The hot path: commands packed into one RESP buffer, replies parsed straight into Entry objects.

Packing and parsing are pure; only :func:`roundtrip` and :func:`read_entries` do I/O.
roundtrip borrows a connection from a plain ``redis.Redis``'s own pool (on a cluster, a node's
client) and must never send anything other than what the plain redis-py path sends.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from math import isfinite
from typing import Any

from ._codec import encode_batch, make_entry
from ._errors import InvalidEvent
from ._model import RESERVED_FIELDS, Entry
from ._wire import NOT_ENOUGH_DATA as NOT_ENOUGH_DATA
from ._wire import Interrupted as Interrupted
from ._wire import _escape_bad_bytes as _escape_bad_bytes
from ._wire import bad_bytes_seen as bad_bytes_seen
from ._wire import get_connection as get_connection
from ._wire import read_entries as read_entries
from ._wire import read_replies as read_replies
from ._wire import roundtrip as roundtrip
from ._wire import supports as supports
from ._wire import text as text

logger = logging.getLogger(__name__)

_hiredis_pack: Callable[[Any], Any] | None
try:  # hiredis packs a command in C, about 3x faster than building the bytes in Python
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # pragma: no cover - hiredis ships with redis[hiredis], a dependency
    _hiredis_pack = None


def _pack_py(args: Sequence[str | bytes]) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        raw = arg.encode() if isinstance(arg, str) else arg
        parts.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(parts)


def pack_command(args: tuple[str | bytes, ...]) -> bytes:
    """One command as RESP bytes (str arguments are sent as UTF-8)."""
    if _hiredis_pack is not None:
        return bytes(_hiredis_pack(args))
    return _pack_py(args)


def xadd_prefix(key: str, maxlen: int | None, approximate: bool) -> tuple[str, ...]:
    """The arguments every XADD of one batch shares: key, optional MAXLEN cap, ``*``."""
    if maxlen is None:
        return ("XADD", key, "*")
    if approximate:
        return ("XADD", key, "MAXLEN", "~", str(maxlen), "*")
    return ("XADD", key, "MAXLEN", str(maxlen), "*")


_FIELD_CACHE: dict[str, str] = {}
_FIELD_CACHE_MAX = 4096  # field names repeat across events; cap the cache for odd workloads


def _bulk(text: str) -> str:
    return f"${len(text.encode())}\r\n{text}\r\n"


def _pack_xaddtext(
    prefix: tuple[str, ...], batch: Sequence[Mapping[str, str]], exact: bool
) -> str:
    prefix_text = "".join([_bulk(arg) for arg in prefix])
    headers: dict[int, str] = {}
    names = _FIELD_CACHE
    out: list[str] = []
    put = out.append
    for fields in batch:
        n = len(fields)
        head = headers.get(n)
        if head is None:
            head = headers[n] = f"*{len(prefix) + 2 * n}\r\n{prefix_text}"
        put(head)
        for name, value in fields.items():
            packed = names.get(name)
            if packed is None:
                packed = _bulk(name)
                if len(names) < _FIELD_CACHE_MAX:
                    names[name] = packed
            put(packed)
            # RESP lengths count UTF-8 bytes; the optimistic pass counts characters, which is
            # the same for ASCII (checked once over the whole text by the caller).
            size = len(value.encode()) if exact else len(value)
            put(f"${size}\r\n{value}\r\n")
    return "".join(out)


def pack_xadd_batch(
    key: str, batch: Sequence[Mapping[str, str]], maxlen: int | None, approximate: bool
) -> bytes:
    """All XADDs of a batch as one buffer, ready for a single ``sendall``.

    Built as one str and encoded once: the shared prefix is formatted once, field names come
    from a small cache, and value lengths are taken as character counts, re-done with byte
    counts only if the text turns out not to be ASCII. About twice as fast as packing each
    command separately.
    """
    prefix = xadd_prefix(key, maxlen, approximate)
    text = _pack_xaddtext(prefix, batch, exact=False)
    if not text.isascii():
        text = _pack_xaddtext(prefix, batch, exact=True)
    return text.encode()


# Validated event types and payload field names, packed as RESP bulk strings. Separate from
# _FIELD_CACHE, which also holds names (type, ts_ms) a payload may not use.
_TYPE_CACHE: dict[str, str] = {}
_PAYLOAD_NAMES: dict[str, str] = {}


def _packed_type(event_type: str) -> str | None:
    """The RESP bulk for a plain ASCII event type, or None if it needs the full checks."""
    packed = _TYPE_CACHE.get(event_type)
    if packed is None:
        if not event_type.isascii() or not event_type.strip():
            return None
        packed = f"$4\r\ntype\r\n{_bulk(event_type)}"
        if len(_TYPE_CACHE) < _FIELD_CACHE_MAX:
            _TYPE_CACHE[event_type] = packed
    return packed


def pack_events(
    key: str,
    events: Iterable[object],
    ts_ms: int,
    maxlen: int | None,
    approximate: bool,
) -> tuple[list[bytes], int]:
    """Validate ``(event_type, payload)`` pairs and pack their XADDs in a single pass.

    Returns the buffers to send (one per :data:`XADD_ROUND` commands) and the event count.
    Equivalent to ``codec.encode_batch`` followed by :func:`pack_xadd_batch`, byte for byte and
    error for error, but without building a field dict per event: the common case (a str type,
    a dict payload of ASCII str keys and ASCII str, int or finite float values) is checked and
    packed inline; anything else goes through ``codec.encode_event`` for its exact checks and
    messages. Nothing is sent by this function, so a bad event rejects the whole batch.
    """
    batch = events if isinstance(events, list) else list(events)
    return list(iter_packed(key, batch, ts_ms, maxlen, approximate, XADD_ROUND)), len(batch)


def iter_packed(
    key: str,
    events: Sequence[object],
    ts_ms: int,
    maxlen: int | None,
    approximate: bool,
    size: int,
) -> Iterator[bytes]:
    """The XADDs of ``events`` packed ``size`` to a buffer, lazily (see :func:`pack_events`).

    An invalid event raises InvalidEvent when its buffer is reached, so consume it completely
    before sending anything, unless :func:`plain` said every event is valid.
    """
    prefix = xadd_prefix(key, maxlen, approximate)
    prefix_text = "".join([_bulk(arg) for arg in prefix])
    ts_part = _bulk("ts_ms") + _bulk(str(ts_ms))
    heads: dict[int, str] = {}
    names = _PAYLOAD_NAMES
    types = _TYPE_CACHE
    out: list[str] = []
    put = out.append
    in_buffer = 0
    for index, item in enumerate(events):
        if in_buffer == size:
            yield "".join(out).encode()
            out.clear()
            in_buffer = 0
        in_buffer += 1
        if type(item) is tuple and len(item) == 2:
            event_type, payload = item
            type_part = types.get(event_type) if type(event_type) is str else None
            if type_part is None and type(event_type) is str:
                type_part = _packed_type(event_type)
        else:
            type_part = payload = None
        if type_part is None or type(payload) is not dict:
            put(_pack_slow(prefix, item, index, ts_ms))
            continue
        head = heads.get(len(payload))
        if head is None:
            head = f"*{len(prefix) + 4 + 2 * len(payload)}\r\n{prefix_text}"
            heads[len(payload)] = head
        start = len(out)
        put(f"{head}{type_part}{ts_part}")
        try:
            for name, value in payload.items():
                packed = names.get(name)
                if packed is not None:
                    kind = type(value)
                    if kind is str:
                        if value.isascii():
                            put(f"{packed}${len(value)}\r\n{value}\r\n")
                            continue
                    elif kind is int:
                        text = str(value)
                        put(f"{packed}${len(text)}\r\n{text}\r\n")
                        continue
                    elif kind is float and isfinite(value):
                        text = repr(value)
                        put(f"{packed}${len(text)}\r\n{text}\r\n")
                        continue
                piece = _field_piece(name, value)
                if piece is None:  # not the common case: redo the event through encode_event
                    break
                put(piece)
            else:
                continue
        except ValueError:  # str() of an int past Python's digit limit: encode_event says so
            pass
        del out[start:]
        put(_pack_slow(prefix, item, index, ts_ms))
    if out:
        yield "".join(out).encode()


_PLAIN_INT = 10**4000  # str() of a larger int can raise (sys.int_info.default_max_str_digits)


def plain(events: Sequence[object], limit: int | None = None) -> bool:
    """True if every event is of the common kind :func:`iter_packed` packs inline.

    Such a batch cannot fail to pack, so its XADDs may be written while the rest is still
    being packed. False (some event needs the full checks, or is invalid) means: pack it all
    first with :func:`pack_events`. ``limit``: a str value longer than this many bytes is
    not plain either (the server's proto-max-bulk-len). Pure; only caches valid names.
    """
    cap = _PLAIN_INT if limit is None else limit
    names = _PAYLOAD_NAMES
    types = _TYPE_CACHE
    for item in events:
        if type(item) is not tuple or len(item) != 2:
            return False
        event_type, payload = item
        if type(event_type) is not str or type(payload) is not dict:
            return False
        if event_type not in types and _packed_type(event_type) is None:
            return False
        for name, value in payload.items():
            if name not in names and _field_piece(name, 0) is None:
                return False
            kind = type(value)
            if kind is str:
                if not value.isascii() or len(value) > cap:
                    return False
            elif kind is int:
                if not -_PLAIN_INT < value < _PLAIN_INT:
                    return False
            elif kind is not float or not isfinite(value):
                return False
    return True


def _field_piece(name: object, value: object) -> str | None:
    """One payload field packed, if it is plain: an ASCII str name (not reserved) and an
    ASCII str, int or finite float value; None sends the event down the slow path."""
    if type(name) is not str or not name or name in RESERVED_FIELDS or not name.isascii():
        return None
    packed = _PAYLOAD_NAMES.get(name)
    if packed is None:
        packed = _bulk(name)
        if len(_PAYLOAD_NAMES) < _FIELD_CACHE_MAX:
            _PAYLOAD_NAMES[name] = packed
    kind = type(value)
    if kind is str and value.isascii():  # type: ignore[attr-defined]
        text: str = value  # type: ignore[assignment]
    elif kind is int:
        text = str(value)
    elif kind is float and isfinite(value):  # type: ignore[arg-type]
        text = repr(value)
    else:
        return None
    return f"{packed}${len(text)}\r\n{text}\r\n"


def _pack_slow(prefix: tuple[str, ...], item: object, index: int, ts_ms: int) -> str:
    # Anything but the common case: encode_event's exact checks and messages, UTF-8 lengths.
    try:
        fields = encode_batch([item], ts_ms)[0]
    except InvalidEvent as exc:
        raise InvalidEvent(str(exc).replace("batch item 0", f"batch item {index}", 1)) from None
    return _pack_xaddtext(prefix, [fields], exact=True)


def pack_ack_read(
    key: str,
    group: str,
    consumer: str,
    acks: Sequence[str],
    count: int,
    block_ms: int | None,
    start: str = ">",
) -> bytes:
    """An optional XACK of ``acks`` followed by XREADGROUP, for one round trip."""
    read: tuple[str, ...] = ("XREADGROUP", "GROUP", group, consumer, "COUNT", str(count))
    if block_ms is not None:
        read += ("BLOCK", str(block_ms))
    read += ("STREAMS", key, start)
    if not acks:
        return pack_command(read)
    return pack_command(("XACK", key, group, *acks)) + pack_command(read)


def _slot_setters() -> tuple[Callable[[Entry, Any], None], Callable[[Entry, Any], None]] | None:
    # A frozen dataclass __init__ goes through object.__setattr__ per field; the slot
    # descriptors set the same two attributes for a quarter less per entry. Only valid while
    # Entry has exactly these two slots, so anything else falls back to the constructor.
    if tuple(f.name for f in dataclasses.fields(Entry)) != ("id", "fields"):
        return None
    slots = Entry.__dict__
    try:
        return slots["id"].__set__, slots["fields"].__set__
    except (KeyError, AttributeError):
        return None


_SETTERS = _slot_setters()


def entries_from_items(items: Sequence[Any], checked: bool = True) -> list[Entry]:
    """``[id, [field, value, ...]]`` items as entries; items with nil fields (trimmed) skipped.

    Decoded (str) replies take the fast branch: one dict built from the flat list in C and the
    entry's two slots set directly. ``checked=False`` says the str replies may hold escaped
    bad bytes (see :data:`_BAD_UTF8`): each entry is then checked, and one that is not valid
    UTF-8 becomes an UndecodableEntry. Bytes replies are always decoded strictly.
    """
    out: list[Entry] = []
    append = out.append
    if _SETTERS is not None:
        set_id, set_fields = _SETTERS
        new = object.__new__
    for item in items:
        eid, flat = item[0], item[1]
        if flat is None:
            continue
        if checked and type(eid) is str and type(flat) is list:
            # zip() without strict=: a keyword argument costs zip about 0.2 us per entry here.
            it = iter(flat)
            if _SETTERS is None:
                append(Entry(eid, dict(zip(it, it))))  # noqa: B905
                continue
            entry = new(Entry)
            set_id(entry, eid)
            set_fields(entry, dict(zip(it, it)))  # noqa: B905
            append(entry)
        else:
            append(make_entry(eid, flat))
    return out


def parse_xreadgroup(raw: Any, checked: bool = True) -> list[Entry]:
    """A raw (no redis-py callbacks) XREADGROUP reply: RESP2 list or RESP3 map, or nil.

    ``checked``: see :func:`entries_from_items`.
    """
    if not raw:
        return []
    if isinstance(raw, Mapping):
        streams: Any = raw.values()
    else:
        streams = [s[1] for s in raw]
    entries: list[Entry] = []
    for items in streams:
        if items:
            entries.extend(entries_from_items(items, checked))
    return entries


XADD_ROUND = 1000  # commands per round trip: bounds both buffers for huge batches
XADD_WRITE = 25  # commands per write: the server works on one write while we pack the next


