"""Pure helpers of the ``redis-streaming`` command: parse flag values and stdin lines, shape output.

No I/O here (no sockets, files, imports of user code or printing); the command modules do that.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, Final

from .. import _codec as codec
from .._errors import InvalidInput
from .._model import Entry, UndecodableEntry
from ..deadletter import metadata, original_fields, original_pairs

__all__ = [
    "UsageError",
    "consumer_names",
    "dead_letter_json",
    "entry_json",
    "parse_duration",
    "parse_event_line",
    "parse_fields",
    "parse_handler_spec",
]

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_DURATION_UNITS: Final = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class UsageError(InvalidInput):
    """A command-line value the CLI itself rejects (exit code 2)."""


def parse_duration(text: str) -> float:
    """``"24h"``, ``"30m"``, ``"90s"``, ``"500ms"``, ``"7d"`` or bare seconds -> seconds."""
    m = _DURATION_RE.match(text or "")
    if m is None:
        raise UsageError(f"not a duration: {text!r} (examples: 90s, 30m, 24h, 7d)")
    seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2) or "s"]
    if seconds <= 0:
        raise UsageError(f"duration must be positive: {text!r}")
    return seconds


def parse_handler_spec(spec: str) -> tuple[str, str]:
    """``"package.module:function"`` -> (module, attribute path). Raises UsageError."""
    module, sep, attr = (spec or "").partition(":")
    if not sep or not module or not attr:
        raise UsageError(f"--handler must look like module:function, got {spec!r}")
    if not all(part.isidentifier() for part in module.split(".")) or not all(
        part.isidentifier() for part in attr.split(".")
    ):
        raise UsageError(f"--handler must look like module:function, got {spec!r}")
    return module, attr


def parse_event_line(line: str, lineno: int, default_type: str) -> tuple[str, dict[str, Any]]:
    """One stdin JSON line -> (event type, payload), validated as the library would encode it.

    Accepted shapes: ``{"type": "t", "payload": {...}}`` or a flat object whose optional
    ``type`` key names the event type (else ``default_type``) and whose other keys are the payload.
    """
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"stdin line {lineno}: not valid JSON ({exc.msg} at column {exc.colno})"
        ) from None
    if not isinstance(obj, dict):
        raise UsageError(f"stdin line {lineno}: expected a JSON object, got {type(obj).__name__}")
    event_type = obj.pop("type", default_type)
    if set(obj) == {"payload"} and isinstance(obj["payload"], dict):
        payload: dict[str, Any] = obj["payload"]
    else:
        payload = obj
    try:
        codec.encode_event(event_type, payload, 0)
    except InvalidInput as exc:
        raise UsageError(f"stdin line {lineno}: {exc}") from None
    return event_type, payload


def parse_fields(pairs: Sequence[str]) -> dict[str, str]:
    """``["k=v", ...]`` from ``--field`` -> a dict; raises UsageError for a pair without ``=``."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--field must look like key=value, got {pair!r}")
        out[key] = value
    return out


def consumer_names(prefix: str | None, count: int, explicit: str | None) -> list[str]:
    """Stable consumer names: ``--consumer-names a,b`` or ``<prefix>-0 .. <prefix>-(n-1)``.

    Stable names let a restarted worker replay its own pending entries first.
    """
    if explicit:
        names = [n.strip() for n in explicit.split(",") if n.strip()]
        if not names:
            raise UsageError("--consumer-names is empty")
        if len(set(names)) != len(names):
            raise UsageError(f"--consumer-names has duplicates: {explicit!r}")
    else:
        base = prefix or "worker"
        names = [f"{base}-{i}" for i in range(count)]
    for name in names:
        codec.validate_name(name, "consumer name")
    return names


def entry_json(entry: Entry) -> dict[str, Any]:
    """The JSON line shape of an entry: ``{"id": ..., "fields": {...}}``.

    An entry that is not valid UTF-8 also gets ``"undecodable": true`` and ``"raw"``: every
    ``[name, value]`` pair with each bad byte shown as ``\\xNN`` (``fields`` has the pairs
    that decode).
    """
    out: dict[str, Any] = {"id": entry.id, "fields": dict(entry.fields)}
    if isinstance(entry, UndecodableEntry):
        out["undecodable"] = True
        out["raw"] = [[shown(n), shown(v)] for n, v in entry.raw]
    return out


def shown(raw: bytes) -> str:
    """Bytes as text for people: UTF-8, with each undecodable byte written ``\\xNN``."""
    return raw.decode("utf-8", "backslashreplace")


def dead_letter_json(entry: Entry) -> dict[str, Any]:
    """The JSON line shape of a dead letter: its metadata plus the original fields."""
    meta = metadata(entry)
    deliveries = meta.get("deliveries", "")
    return {
        "id": entry.id,
        "original_id": meta.get("original_id"),
        "group": meta.get("group"),
        "consumer": meta.get("consumer"),
        "deliveries": int(deliveries) if deliveries.isdigit() else None,
        "reason": meta.get("reason"),
        "error": meta.get("error") or None,
        "at_ms": int(meta["at_ms"]) if meta.get("at_ms", "").isdigit() else None,
        **_original_json(entry),
    }


def _original_json(letter: Entry) -> dict[str, Any]:
    if not isinstance(letter, UndecodableEntry):
        return {"fields": original_fields(letter)}
    pairs = original_pairs(letter)
    return {
        "fields": original_fields(letter),
        "undecodable": True,
        "raw": [[shown(n), shown(v)] for n, v in pairs],
    }
