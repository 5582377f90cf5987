"""Pure helpers that turn form fields, JSON bodies and query strings into checked values.

No I/O and no FastAPI here: each helper takes a plain mapping and raises an InvalidInput
subclass that names the field, which the app turns into a 4xx JSON answer.

What a helper accepts is exactly what the OpenAPI schema (schemas.py) says, because both are
built from the same regular expressions and bounds below: a value the schema calls valid is
accepted, and anything else is refused with a 4xx.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import parse_qsl

from .. import _codec as codec
from .._errors import InvalidInput, InvalidName, InvalidOption, InvalidStreamId

# ---------------------------------------------------------------- what is accepted


def decimal_pattern(low: int, high: int) -> str:
    """A regex (no anchors) matching exactly the decimal text of the integers low..high.

    Canonical text only: no sign, no leading zero, no spaces. ``0 <= low <= high``.
    """
    if not 0 <= low <= high:
        raise ValueError(f"need 0 <= low <= high, got {low}..{high}")
    parts: list[str] = []
    for width in range(len(str(low)), len(str(high)) + 1):
        a = max(low, 10 ** (width - 1) if width > 1 else 0)
        b = min(high, 10**width - 1)
        if a <= b:
            parts.append(_same_width(str(a), str(b)))
    return "|".join(parts)


def _same_width(low: str, high: str) -> str:
    """The regex for every digit string of this width from ``low`` to ``high``."""
    if low == high:
        return low
    rest = len(low) - 1
    if low[1:] == "0" * rest and high[1:] == "9" * rest:  # whole decades: one class
        return _digits(int(low[0]), int(high[0])) + _any_digits(rest)
    if low[0] == high[0]:
        return f"{low[0]}(?:{_same_width(low[1:], high[1:])})"
    parts = [f"{low[0]}(?:{_same_width(low[1:], '9' * rest)})"]
    if int(high[0]) - int(low[0]) > 1:
        parts.append(_digits(int(low[0]) + 1, int(high[0]) - 1) + _any_digits(rest))
    parts.append(f"{high[0]}(?:{_same_width('0' * rest, high[1:])})")
    return "|".join(parts)


def _digits(low: int, high: int) -> str:
    return str(low) if low == high else f"[{low}-{high}]"


def _any_digits(count: int) -> str:
    return "" if count == 0 else "[0-9]" if count == 1 else f"[0-9]{{{count}}}"


def anchored(pattern: str) -> str:
    """``pattern`` matching a whole string (JSON Schema patterns are searched, not matched)."""
    return f"^(?:{pattern})$"


_U64_MAX: Final = 2**64 - 1
_U64: Final = decimal_pattern(0, _U64_MAX)
_U64_BELOW_MAX: Final = decimal_pattern(0, _U64_MAX - 1)
_U64_POSITIVE: Final = decimal_pattern(1, _U64_MAX)
#: A concrete stream ID: ``<ms>`` or ``<ms>-<seq>``, each 0..2**64-1 in canonical decimal.
ID_PATTERN: Final = anchored(f"(?:{_U64})(?:-(?:{_U64}))?")
_ID = f"(?:{_U64})(?:-(?:{_U64}))?"
# An exclusive start needs a successor: anything but the largest ID.
_EXCLUSIVE_START = (
    rf"\((?:(?:{_U64_BELOW_MAX})(?:-(?:{_U64}))?|{_U64_MAX}(?:-(?:{_U64_BELOW_MAX}))?)"
)
# An exclusive end needs a predecessor: anything but 0-0 (or 0).
_EXCLUSIVE_END = rf"\((?:(?:{_U64_POSITIVE})(?:-(?:{_U64}))?|0-(?:{_U64_POSITIVE}))"
#: XRANGE start: empty (= ``-``), ``-``, ``+``, an ID, or ``(`` and an ID with a successor.
START_PATTERN: Final = anchored(rf"|-|\+|{_ID}|{_EXCLUSIVE_START}")
#: XRANGE end: empty (= ``+``), ``-``, ``+``, an ID, or ``(`` and an ID with a predecessor.
END_PATTERN: Final = anchored(rf"|-|\+|{_ID}|{_EXCLUSIVE_END}")
#: A group or consumer name in the demo: 1-200 visible ASCII characters (no spaces).
NAME_PATTERN: Final = anchored("[!-~]{1,200}")
#: An event type to produce: empty or "random" (random types), else 1-100 printable ASCII
#: characters, not starting or ending with a space.
TYPE_PATTERN: Final = anchored("|[!-~]|[!-~][ -~]{0,98}[!-~]")
#: The text forms of a flag (JSON true/false are accepted too).
TRUE_TEXT: Final = ("true", "1", "yes", "on")
FALSE_TEXT: Final = ("false", "0", "no", "off")

#: Integer text the helpers read: canonical decimal, so exactly the documented patterns.
_INTEGER_TEXT = re.compile(r"0|-?[1-9][0-9]*")


class BadBody(InvalidInput):
    """The request body could not be read as JSON or form fields."""


def parse_body(content_type: str, body: bytes) -> dict[str, Any]:
    """A request body as a dict: JSON object or urlencoded form; empty body gives ``{}``."""
    if not body.strip():
        return {}
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind == "multipart/form-data":
        raise BadBody("multipart bodies are not accepted; send JSON or urlencoded form fields")
    text = body.decode("utf-8", "replace")
    if kind == "application/x-www-form-urlencoded":
        return dict(parse_qsl(text, keep_blank_values=True))
    if kind.endswith("json") or text.lstrip().startswith("{"):
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise BadBody(f"request body is not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise BadBody(f"JSON body must be an object, got {type(value).__name__}")
        return value
    return dict(parse_qsl(text, keep_blank_values=True))


def _shown(raw: object) -> str:
    text = repr(raw)
    return text if len(text) <= 60 else text[:57] + "..."


def get_int(
    params: Mapping[str, Any],
    key: str,
    default: int | None = None,
    *,
    minimum: int = 0,
    maximum: int = codec.MAX_INT64,
) -> int:
    """An integer field: a JSON integer (or whole number) or its decimal text.

    A missing key uses ``default`` (or fails without one); null, empty text, booleans,
    fractions and anything outside [minimum, maximum] are refused, naming the value.
    """
    if key not in params:
        if default is None:
            raise InvalidOption(f"missing field {key!r} (an integer)")
        return default
    raw = params[key]
    value: object = raw
    if isinstance(raw, str):
        if _INTEGER_TEXT.fullmatch(raw) is None:
            raise InvalidOption(f"{key} must be an integer, got {_shown(raw)}")
        if len(raw) > 40:  # far past any bound, and int() refuses very long text
            raise InvalidOption(f"{key} must be between {minimum} and {maximum}, got {_shown(raw)}")
        value = int(raw)
    elif isinstance(raw, float) and raw.is_integer():  # JSON Schema calls 5.0 an integer
        value = int(raw)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidOption(f"{key} must be an integer, got {_shown(raw)}")
    return codec.validate_int(value, key, minimum=minimum, maximum=maximum)


def _get_text(params: Mapping[str, Any], key: str, default: str | None) -> str:
    if key not in params:
        if default is None:
            raise InvalidOption(f"missing field {key!r}")
        return default
    raw = params[key]
    if not isinstance(raw, str):
        raise InvalidOption(f"{key} must be a string, got {_shown(raw)}")
    return raw


def get_name(params: Mapping[str, Any], key: str, what: str | None = None) -> str:
    """A required group or consumer name: 1-200 visible ASCII characters, no spaces."""
    if key not in params:
        raise InvalidName(f"missing field {key!r} ({what or key} name)")
    raw = params[key]
    name = codec.validate_name(raw, what or key)
    if re.fullmatch(NAME_PATTERN, name) is None:
        raise InvalidName(
            f"{what or key} name must be 1-200 visible ASCII characters, got {_shown(raw)}"
        )
    return name


def get_bool(params: Mapping[str, Any], key: str, default: bool) -> bool:
    """A flag: JSON true/false, or one of true/false, 1/0, yes/no, on/off."""
    if key not in params:
        return default
    raw = params[key]
    if isinstance(raw, bool):
        return raw
    if raw in TRUE_TEXT:
        return True
    if raw in FALSE_TEXT:
        return False
    raise InvalidOption(f"{key} must be true or false, got {_shown(raw)}")


def get_event_type(params: Mapping[str, Any], key: str = "type") -> str | None:
    """The event type to produce: None for random ones, else 1-100 printable ASCII chars."""
    raw = _get_text(params, key, "random")
    if re.fullmatch(TYPE_PATTERN, raw) is None:
        raise InvalidOption(
            f"{key} must be 1-100 printable ASCII characters without a leading or trailing "
            f"space, got {_shown(raw)}"
        )
    return None if raw in ("", "random") else raw


def get_stream_id(params: Mapping[str, Any], key: str) -> str:
    """A required concrete stream ID (``<ms>-<seq>`` or ``<ms>``) within Redis' range."""
    raw = _get_text(params, key, None)
    if re.fullmatch(ID_PATTERN, raw) is None:
        raise InvalidStreamId(f"malformed {key} {_shown(raw)} (expected <ms>-<seq>)")
    return codec.validate_id(raw, key)


def get_range_bound(params: Mapping[str, Any], key: str) -> str:
    """An XRANGE bound named ``start`` or ``end``; missing or empty gives ``-`` or ``+``."""
    start = key == "start"
    raw = _get_text(params, key, "")
    if re.fullmatch(START_PATTERN if start else END_PATTERN, raw) is None:
        if raw == ("(" + f"{_U64_MAX}-{_U64_MAX}") and start:
            raise InvalidStreamId(f"exclusive start {raw!r} has no successor (no larger ID)")
        if raw in ("(0", "(0-0") and not start:
            raise InvalidStreamId(f"exclusive end {raw!r} has no predecessor (no smaller ID)")
        raise InvalidStreamId(
            f"malformed {key} {_shown(raw)} (expected -, +, <ms>-<seq> or (<ms>-<seq>)"
        )
    return codec.validate_range_bound(raw or ("-" if start else "+"), key)
