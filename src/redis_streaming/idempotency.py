"""Idempotent processing on top of at-least-once delivery: run or apply each entry at most once.

OnceGuard fences side effects outside Redis with a SET NX key per (stream, group, entry ID);
apply_and_ack makes a Redis-side projection write and its XACK one transaction. Neither retries
by itself nor runs loops: the worker's redelivery is the retry.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, TypeVar

import redis
import redis.exceptions as rex

from . import _codec as codec
from ._errors import InvalidOption, StreamingError, translate
from ._model import Entry

if TYPE_CHECKING:
    from redis.client import Pipeline

    from .stream import EventStream

logger = logging.getLogger(__name__)

__all__ = ["AlreadyRunning", "OnceGuard", "apply_and_ack"]

DEFAULT_ONCE_PREFIX: Final = "rs:once:"
DEFAULT_APPLIED_PREFIX: Final = "rs:applied:"
DEFAULT_DONE_TTL_S: Final = 86_400.0
DEFAULT_LEASE_S: Final = 60.0
_DONE: Final = "done"
_MAX_WATCH_RETRIES: Final = 50

# Delete the guard only if it still holds our lease token (a failed run must not erase a
# "done" mark or another runner's fresh lease).
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

T = TypeVar("T")


class AlreadyRunning(StreamingError):
    """Another runner holds the lease for this entry; leave it pending and retry later."""


def _ttl_ms(value: float, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise InvalidOption(f"{what} must be a positive number of seconds, got {value!r}")
    return max(1, int(value * 1000))


def guard_key(prefix: str, stream_key: str, group: str, entry_id: str) -> str:
    """The guard key for one (stream, group, entry ID)."""
    return f"{prefix}{stream_key}:{group}:{entry_id}"


class OnceGuard:
    """Run a side effect at most once per (stream, group, entry ID).

    A run first takes a lease, ``SET key <token> NX PX lease``. If the function returns, the key
    becomes ``done`` for ``ttl_s`` (longer than any redelivery can take); if it raises, the lease
    is released so the redelivery runs it again. A runner that dies mid-run blocks others only
    until its lease expires. "At most once" holds for the lifetime of the ``done`` mark.

    Plug into ConsumerWorker with :meth:`wrap`: a duplicate delivery is skipped (and acked).
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = DEFAULT_ONCE_PREFIX,
        ttl_s: float = DEFAULT_DONE_TTL_S,
        lease_s: float = DEFAULT_LEASE_S,
    ) -> None:
        self.client = client
        self.prefix = codec.validate_name(prefix, "prefix")
        self.ttl_ms = _ttl_ms(ttl_s, "ttl_s")
        self.lease_ms = _ttl_ms(lease_s, "lease_s")
        self._release: Any = client.register_script(_RELEASE)

    def key(self, stream_key: str, group: str, entry_id: str) -> str:
        """The guard key for one entry (validated)."""
        codec.validate_name(stream_key, "stream key")
        codec.validate_name(group, "group")
        codec.validate_id(entry_id, "entry ID")
        return guard_key(self.prefix, stream_key, group, entry_id)

    def run(
        self, stream_key: str, group: str, entry_id: str, fn: Callable[[], T]
    ) -> tuple[bool, T | None]:
        """Call ``fn`` unless this entry was already done; returns (ran, fn's result).

        Raises AlreadyRunning if another runner's lease is live, and re-raises whatever ``fn``
        raised after releasing the lease.
        """
        key = self.key(stream_key, group, entry_id)
        token = uuid.uuid4().hex
        try:
            got = self.client.set(key, token, nx=True, px=self.lease_ms)
            if not got:
                current = codec.to_str(self.client.get(key) or b"")
                if current == _DONE:
                    logger.debug("skipping %s on %s/%s: already done", entry_id, stream_key, group)
                    return False, None
                if current:
                    raise AlreadyRunning(
                        f"entry {entry_id} on {stream_key}/{group} is being processed elsewhere"
                    )
                # The lease expired between SET and GET: try once more.
                return self.run(stream_key, group, entry_id, fn)
        except rex.RedisError as exc:
            raise translate(exc) from exc
        try:
            result = fn()
        except BaseException:
            try:
                self._release(keys=[key], args=[token])
            except rex.RedisError as exc:
                # The lease expires on its own; the retry just waits for it.
                logger.warning("could not release guard %s: %s", key, exc)
            raise
        try:
            self.client.set(key, _DONE, px=self.ttl_ms)
        except rex.RedisError as exc:
            raise translate(exc) from exc
        return True, result

    def wrap(
        self, stream_key: str, group: str, handler: Callable[[Entry], Any]
    ) -> Callable[[Entry], bool]:
        """A ConsumerWorker handler that runs ``handler`` at most once per entry.

        It returns True when the handler ran, False for a skipped duplicate.
        """
        codec.validate_name(stream_key, "stream key")
        codec.validate_name(group, "group")

        def once(entry: Entry) -> bool:
            ran, _ = self.run(stream_key, group, entry.id, lambda: handler(entry))
            return ran

        once.__name__ = f"once_{getattr(handler, '__name__', 'handler')}"
        return once

    def is_done(self, stream_key: str, group: str, entry_id: str) -> bool:
        """True if the entry's run completed (and its mark has not expired)."""
        try:
            value = self.client.get(self.key(stream_key, group, entry_id))
        except rex.RedisError as exc:
            raise translate(exc) from exc
        return value is not None and codec.to_str(value) == _DONE

    def forget(self, stream_key: str, group: str, entry_id: str) -> bool:
        """Drop the mark so the entry may run again (e.g. after a redrive)."""
        try:
            return bool(self.client.delete(self.key(stream_key, group, entry_id)))
        except rex.RedisError as exc:
            raise translate(exc) from exc


def apply_and_ack(
    stream: EventStream,
    group: str,
    entry_id: str,
    write: Callable[[Pipeline], Any],
    *,
    prefix: str = DEFAULT_APPLIED_PREFIX,
    ttl_s: float = DEFAULT_DONE_TTL_S,
) -> bool:
    """Apply a Redis-side projection write and XACK the entry in one MULTI/EXEC, once.

    ``write(pipe)`` queues the projection's commands on a transactional pipeline (e.g.
    ``pipe.hincrby("totals", user, amount)``); they run in the same EXEC as the XACK and a
    guard key. The guard is WATCHed first: if it exists the write was applied before (a
    redelivery), so only the XACK is sent; if another client applies the same entry at the same
    moment, EXEC aborts and the re-check sees its guard. Returns True if this call applied it.
    """
    codec.validate_name(group, "group")
    codec.validate_id(entry_id, "entry ID")
    codec.validate_name(prefix, "prefix")
    ttl_ms = _ttl_ms(ttl_s, "ttl_s")
    key = guard_key(prefix, stream.key, group, entry_id)
    try:
        with stream.client.pipeline(transaction=True) as pipe:
            for _ in range(_MAX_WATCH_RETRIES):
                try:
                    pipe.watch(key)  # type: ignore[no-untyped-call]
                    if pipe.exists(key):
                        pipe.unwatch()
                        pipe.reset()
                        stream.ack_unchecked(group, [entry_id])
                        logger.debug(
                            "%s on %s/%s was applied before; acked", entry_id, stream.key, group
                        )
                        return False
                    pipe.multi()
                    pipe.set(key, "1", px=ttl_ms)
                    write(pipe)
                    pipe.xack(stream.key, group, entry_id)
                    replies = pipe.execute()
                except rex.WatchError:
                    continue
                for reply in replies:
                    if isinstance(reply, Exception):
                        raise reply
                stream._count(acked=int(replies[-1]))
                return True
    except rex.RedisError as exc:
        raise translate(exc) from exc
    raise StreamingError(f"could not apply {entry_id} on {stream.key}/{group}: guard kept changing")
