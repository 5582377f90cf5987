"""Entries from replies: strict UTF-8 decoding that never replaces a byte, in every reply shape.

Pure, and imports nothing of this package but the model: _codec re-exports it all. A field that
is not UTF-8 makes an UndecodableEntry holding the exact bytes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ._model import Entry, UndecodableEntry


def to_str(value: Any) -> str:
    """Decode an ID, name or number from a reply; non-UTF-8 bytes are replaced, never raised.

    Only for server-made values and names; entry fields go through :func:`make_entry`.
    """
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _raw_bytes(value: Any) -> bytes:
    # str from a surrogateescape decode (the fast path) turns back into the exact bytes.
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8", "surrogateescape")


def _decoded(value: Any) -> str | None:
    """``value`` as text if it is valid UTF-8, else None (never a replacement character)."""
    if type(value) is str:
        if value.isascii():
            return value
        try:
            value.encode()
        except UnicodeEncodeError:  # lone surrogates: bytes that were not UTF-8
            return None
        return value
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return None
    return str(value)


def _pairs(raw: Any) -> list[tuple[Any, Any]]:
    if isinstance(raw, Mapping):
        return list(raw.items())
    it = iter(raw)
    return list(zip(it, it, strict=True))


def make_entry(entry_id: Any, raw: Any) -> Entry:
    """An entry from its ID and its fields (flat list or mapping, bytes or str).

    Every name and value is decoded as strict UTF-8. If one is not valid, the result is an
    :class:`UndecodableEntry` holding every pair's exact bytes; nothing is replaced.
    """
    eid = to_str(entry_id)
    pairs = _pairs(raw)
    fields: dict[str, str] = {}
    bad = False
    for name, value in pairs:
        key, text = _decoded(name), _decoded(value)
        if key is None or text is None:
            bad = True
        else:
            fields[key] = text
    if not bad:
        return Entry(eid, fields)
    raw_pairs = tuple((_raw_bytes(k), _raw_bytes(v)) for k, v in pairs)
    return UndecodableEntry(eid, fields, raw_pairs)


def parse_entry(raw: Any) -> Entry | None:
    """One ``(id, fields)`` pair from any reply shape; None for a deleted (trimmed) entry."""
    # redis-py turns the nil field list of a deleted entry into {}; a stored entry always has
    # at least one field, so "no fields" means the payload is gone.
    if raw is None or raw[0] is None or not raw[1]:
        return None
    return make_entry(raw[0], raw[1])


def parse_entries(raw: Iterable[Any] | None) -> list[Entry]:
    """A list of ``(id, fields)`` pairs (XRANGE, XCLAIM, ...); deleted entries are skipped."""
    if not raw:
        return []
    out = []
    for item in raw:
        entry = parse_entry(item)
        if entry is not None:
            out.append(entry)
    return out


def _unwrap_entries(value: Any) -> Any:
    # redis-py's RESP3 legacy shape wraps the entry list in one more list.
    if (
        isinstance(value, list)
        and len(value) == 1
        and isinstance(value[0], list)
        and (not value[0] or isinstance(value[0][0], (list, tuple)))
    ):
        return value[0]
    return value


def xread_items(raw: Any) -> list[Any]:
    """The raw ``(id, fields)`` items of an XREAD/XREADGROUP reply, in any redis-py shape."""
    if not raw:
        return []
    values = list(raw.values()) if isinstance(raw, Mapping) else [v for _name, v in raw]
    items: list[Any] = []
    for value in values:
        items.extend(_unwrap_entries(value) or ())
    return items


def parse_xread(raw: Any) -> list[Entry]:
    """XREAD/XREADGROUP reply as entries; entries whose payload was trimmed are skipped."""
    return [make_entry(i[0], i[1]) for i in xread_items(raw) if i[1] is not None]
