"""Pure helpers that turn form fields, JSON bodies and query strings into checked values.

No I/O and no FastAPI here: each helper takes a plain mapping and raises an InvalidInput
subclass that names the field, which the app turns into a 4xx JSON answer.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from .. import _codec as codec
from .._errors import InvalidInput, InvalidName, InvalidOption

_TRUE = ("1", "true", "yes", "on", "y")
_FALSE = ("0", "false", "no", "off", "n", "")


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


def _present(params: Mapping[str, Any], key: str) -> bool:
    value = params.get(key)
    return value is not None and value != ""


def get_int(
    params: Mapping[str, Any],
    key: str,
    default: int | None = None,
    *,
    minimum: int = 0,
    maximum: int | None = None,
) -> int:
    """An integer field (int or decimal string); missing uses ``default`` or fails."""
    if not _present(params, key):
        if default is None:
            raise InvalidOption(f"missing field {key!r} (an integer)")
        return default
    raw = params[key]
    if isinstance(raw, str):
        text = raw.strip()
        if not text.lstrip("-").isdigit() or len(text) > 20:
            raise InvalidOption(f"{key} must be an integer, got {raw!r}")
        raw = int(text)
    return codec.validate_int(raw, key, minimum=minimum, maximum=maximum)


def get_str(params: Mapping[str, Any], key: str, default: str | None = None) -> str:
    """A string field; numbers are accepted as their decimal text."""
    if not _present(params, key):
        if default is None:
            raise InvalidOption(f"missing field {key!r}")
        return default
    raw = params[key]
    if isinstance(raw, bool) or not isinstance(raw, (str, int)):
        raise InvalidOption(f"{key} must be a string, got {raw!r}")
    return str(raw)


def get_name(params: Mapping[str, Any], key: str, what: str | None = None) -> str:
    """A required group or consumer name, checked like every name the library takes."""
    if not _present(params, key):
        raise InvalidName(f"missing field {key!r} ({what or key} name)")
    return codec.validate_name(params[key], what or key)


def get_bool(params: Mapping[str, Any], key: str, default: bool) -> bool:
    """A flag: JSON true/false, or one of 1/0, true/false, yes/no, on/off."""
    if key not in params or params[key] is None:
        return default
    raw = params[key]
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise InvalidOption(f"{key} must be true or false, got {raw!r}")


def get_event_type(params: Mapping[str, Any], key: str = "type") -> str | None:
    """The event type to produce: None for random ones, else a short printable string."""
    raw = get_str(params, key, "random")
    if raw == "random":
        return None
    if not raw.strip() or len(raw) > 100 or not raw.isprintable():
        raise InvalidOption(f"{key} must be 1-100 printable characters, got {raw[:40]!r}")
    return raw
