"""The exception tree of redis-streaming, and the one place that maps redis-py errors into it.

It must not do I/O; every other module raises these and matches server errors only through here.

    StreamingError                     root of everything this library raises
    ├── InvalidInput (ValueError)      a caller passed a bad value; nothing was sent to Redis
    │   ├── InvalidEvent               event type or payload cannot be encoded as a flat map
    │   ├── InvalidStreamId            not a stream ID such as "1700000000000-0"
    │   ├── InvalidName                empty or unusable group/consumer/key name
    │   └── InvalidOption              a count, size or threshold out of range
    ├── RedisUnavailable               the server could not be reached or timed out
    │   └── ProduceError               a batch failed part-way: says exactly what was stored
    ├── GroupMissing                   NOGROUP: the stream or its group does not exist (any more)
    ├── EntryDecodeError               a stored entry is not valid UTF-8 (names its ID)
    └── ServerError                    any other error reply from the server
        └── FeatureUnavailable         the server lacks a needed command (Redis 8.2's XACKDEL)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import redis.exceptions as rex

__all__ = [
    "EntryDecodeError",
    "FeatureUnavailable",
    "GroupMissing",
    "InvalidEvent",
    "InvalidInput",
    "InvalidName",
    "InvalidOption",
    "InvalidStreamId",
    "ProduceError",
    "RedisUnavailable",
    "ServerError",
    "StreamingError",
    "is_busygroup",
    "is_missing_key",
    "is_nogroup",
    "translate",
]


class StreamingError(Exception):
    """Root of every exception raised by redis-streaming."""


class InvalidInput(StreamingError, ValueError):
    """A caller passed a value that cannot be used; nothing was sent to Redis."""


class InvalidEvent(InvalidInput):
    """An event type or payload that cannot be stored as a flat map of strings."""


class InvalidStreamId(InvalidInput):
    """A string that is not a valid stream ID (``<ms>-<seq>``, ``<ms>``, or a range token)."""


class InvalidName(InvalidInput):
    """An empty or unusable stream key, group name or consumer name."""


class InvalidOption(InvalidInput):
    """A numeric option (count, size, idle threshold, ...) outside its allowed range."""


class RedisUnavailable(StreamingError):
    """The Redis server could not be reached, or the connection dropped or timed out."""


class ProduceError(RedisUnavailable):
    """A batch failed part-way; this says exactly what of it is in the stream.

    ``ids`` has one slot per event of the batch: its ID if stored, else None. ``stored``,
    ``not_stored`` and ``unknown`` are batch indexes; ``unknown`` is empty unless the server
    could not be asked afterwards (then those events are either all stored or none).
    Nothing is ever sent twice, so sending ``not_stored`` again cannot duplicate.
    """

    def __init__(
        self,
        message: str,
        ids: Sequence[str | None],
        unknown: Sequence[int] = (),
    ) -> None:
        super().__init__(message)
        unsure = set(unknown)
        self.ids: tuple[str | None, ...] = tuple(ids)
        self.unknown: tuple[int, ...] = tuple(sorted(unsure))
        self.stored: tuple[int, ...] = tuple(i for i, x in enumerate(ids) if x is not None)
        self.not_stored: tuple[int, ...] = tuple(
            i for i, x in enumerate(ids) if x is None and i not in unsure
        )

    @classmethod
    def build(
        cls, total: int, stored: Mapping[int, str], unknown: Sequence[int], cause: BaseException
    ) -> ProduceError:
        """From the IDs known so far (batch index -> ID) and the failure that stopped it."""
        ids = [stored.get(i) for i in range(total)]
        known = sum(x is not None for x in ids)
        lost = total - known - len(unknown)
        message = (
            f"batch of {total} failed ({_message(cause) or type(cause).__name__}): "
            f"{known} stored, {lost} not stored"
            + (f", {len(unknown)} unknown (indexes in .unknown)" if unknown else "")
        )
        return cls(message, ids, unknown)


class GroupMissing(StreamingError):
    """The server answered NOGROUP: the stream key or the consumer group does not exist."""


class EntryDecodeError(StreamingError):
    """A stored entry has a field name or value that is not valid UTF-8.

    ``entry_id`` names it; ``entry`` is the :class:`UndecodableEntry` with its exact bytes.
    ConsumerWorker reports this through ``on_error`` instead of running the handler.
    """

    def __init__(self, entry: Any) -> None:
        self.entry = entry
        self.entry_id: str = entry.id
        names = ", ".join(repr(n) for n in entry.bad_fields) or "?"
        super().__init__(f"entry {entry.id} is not valid UTF-8 (fields {names})")


class ServerError(StreamingError):
    """Any other error reply from the server."""


class FeatureUnavailable(ServerError):
    """The server lacks a command this call needs (XACKDEL, ``XTRIM ... ACKED``: Redis 8.2+).

    Raised before anything is written; nothing is emulated in its place.
    """


def _message(err: BaseException) -> str:
    return str(err.args[0]) if err.args else str(err)


def is_busygroup(err: BaseException) -> bool:
    """True when ``err`` is the server's "consumer group name already exists" reply."""
    return isinstance(err, rex.ResponseError) and _message(err).startswith("BUSYGROUP")


def is_nogroup(err: BaseException) -> bool:
    """True when ``err`` says the stream key or the group does not exist."""
    return isinstance(err, rex.ResponseError) and _message(err).startswith("NOGROUP")


def is_missing_key(err: BaseException) -> bool:
    """True when a read-only inspection failed only because the key or group is absent."""
    if not isinstance(err, rex.ResponseError):
        return False
    msg = _message(err)
    return msg.startswith("NOGROUP") or "no such key" in msg.lower()


def translate(err: BaseException) -> StreamingError:
    """Map a redis-py exception to this library's tree (the only place that does so)."""
    if isinstance(err, StreamingError):
        return err
    if isinstance(err, (rex.ConnectionError, rex.TimeoutError, OSError)):
        return RedisUnavailable(_message(err) or type(err).__name__)
    if is_nogroup(err):
        return GroupMissing(_message(err))
    return ServerError(_message(err) or type(err).__name__)
