"""A worker's own connections: every wait is bounded, and ``stop()`` can break a stalled one.

A ConsumerWorker must stay alive, and stop when asked, whatever the caller's client settings:
redis-py 5-7 default to ``socket_timeout=None``, so a connection that goes silent (a stalled
proxy, a black-holed route) would block a command forever. For a plain ``redis.Redis`` the worker
therefore talks to Redis over a private pool built from the caller's connection settings, with
two changes:

* ``socket_timeout`` and ``socket_connect_timeout`` are capped at the worker's bound (its
  ``block_ms`` plus a margin), so no command, connect or handshake waits longer than that;
* redis-py's own retries are off: the worker's loop already retries with backoff, and a retry
  inside redis-py would multiply every stalled wait.

:class:`IoWatch` records when the worker thread began its current Redis call. ``stop()`` uses it
to shut down the private pool's sockets when the thread is blocked in a read (the blocking
XREADGROUP, or any call that has waited past a grace period); the blocked call then fails at
once, the loop sees the stop flag and ends. Entries read but not handled stay pending, and acks
are idempotent, so breaking a call never loses anything.

Clients of other kinds (cluster, sentinel, a custom pool) are used as given: their reads still
carry the worker's own read deadline, but a stalled non-read call waits on their timeouts.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from . import _fastpath

# A Redis call other than the blocking read that has waited this long when stop() is called is
# treated as stalled (a healthy one takes milliseconds).
STALL_GRACE_S = 1.0

_POOL_KINDS = (redis.ConnectionPool, redis.BlockingConnectionPool)


def _bounded_kwargs(pool: Any, bound_s: float, no_retry: Any) -> dict[str, Any]:
    """``pool``'s connection settings with every wait capped at ``bound_s`` and no retries."""
    kwargs = dict(pool.connection_kwargs)
    for name in ("socket_timeout", "socket_connect_timeout"):
        given = kwargs.get(name)
        kwargs[name] = bound_s if given is None else min(float(given), bound_s)
    kwargs["retry"] = no_retry
    kwargs.pop("retry_on_timeout", None)
    kwargs.pop("retry_on_error", None)
    return kwargs


def private_client(client: Any, bound_s: float) -> redis.Redis | None:
    """A client over a new pool with the same settings, every wait capped at ``bound_s``
    seconds and no redis-py retries; None when ``client`` is not a plain pooled ``redis.Redis``.
    """
    pool: Any = getattr(client, "connection_pool", None)
    if not _fastpath.supports(client) or type(pool) not in _POOL_KINDS:
        return None
    no_retry = Retry(NoBackoff(), 0)
    kwargs = _bounded_kwargs(pool, bound_s, no_retry)
    own = redis.ConnectionPool(connection_class=pool.connection_class, **kwargs)
    return redis.Redis(connection_pool=own, retry=no_retry)


def private_async_client(client: Any, bound_s: float) -> Any:
    """:func:`private_client` for a ``redis.asyncio.Redis``: the same settings, every wait
    capped at ``bound_s`` and no redis-py retries (a retry inside redis-py would outlive the
    worker's own timeout, since a cancelled attempt is retried uncancelled); None for other
    clients (used as given)."""
    import redis.asyncio as aredis  # the sync shell never needs it loaded
    from redis.asyncio.retry import Retry as AsyncRetry

    pool: Any = getattr(client, "connection_pool", None)
    kinds = (aredis.ConnectionPool, aredis.BlockingConnectionPool)
    if not isinstance(client, aredis.Redis) or type(pool) not in kinds:
        return None
    no_retry = AsyncRetry(NoBackoff(), 0)
    kwargs = _bounded_kwargs(pool, bound_s, no_retry)
    own = aredis.ConnectionPool(connection_class=pool.connection_class, **kwargs)
    return aredis.Redis(connection_pool=own, retry=no_retry)


class IoWatch:
    """When the worker thread's current Redis call began (0.0: not in a call)."""

    __slots__ = ("_lock", "_pool", "blocking", "since")

    def __init__(self, client: redis.Redis | None) -> None:
        self._pool = client.connection_pool if client is not None else None
        self._lock = threading.Lock()
        self.since = 0.0
        self.blocking = False

    def begin(self, blocking: bool = False) -> None:
        self.blocking = blocking
        self.since = time.monotonic()

    def end(self) -> None:
        self.since = 0.0
        self.blocking = False

    def break_stalled(self, grace_s: float = STALL_GRACE_S) -> bool:
        """Shut down the private pool's sockets if the thread is in a blocking read, or in any
        call for longer than ``grace_s``; True if it did. Only the worker's own pool is touched.
        A call that has not taken its connection yet is left alone (False): ask again.
        """
        pool = self._pool
        since = self.since
        if pool is None or not since:
            return False
        if not self.blocking and time.monotonic() - since < grace_s:
            return False
        with self._lock:
            socks = [s for c in _connections(pool) if (s := getattr(c, "_sock", None)) is not None]
            if not socks:
                return False
            self.since = time.monotonic()  # give the next call its own grace
            self.blocking = False
            for sock in socks:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        return True

    def close(self) -> None:
        """Close the private pool's connections (the thread has ended; they reopen on use)."""
        if self._pool is not None:
            with contextlib.suppress(Exception):
                self._pool.disconnect()


def _connections(pool: Any) -> list[Any]:
    in_use: Any = getattr(pool, "_in_use_connections", None)
    if in_use is None:  # BlockingConnectionPool keeps one list
        in_use = getattr(pool, "_connections", ())
    return [c for c in list(in_use) if c is not None]


STOP_POLL_S = 0.1  # how often a stop() looks for a stalled call while it waits


def join_breaking(
    thread: threading.Thread | None, timeout: float | None, watches: Callable[[], Iterable[IoWatch]]
) -> bool:
    """Wait up to ``timeout`` seconds (None: for ever) for ``thread`` to end, breaking the
    stalled calls of ``watches()`` meanwhile (a blocking read at once, any other call once it
    has waited :data:`STALL_GRACE_S`). True once the thread has ended (or was never started)."""
    if thread is None or thread is threading.current_thread():
        return True

    def ended(wait: float) -> bool:
        for watch in watches():
            watch.break_stalled()
        thread.join(wait)
        return not thread.is_alive()

    return poll_until(ended, timeout)


def poll_until(done: Callable[[float], bool], timeout: float | None) -> bool:
    """Call ``done(wait)`` (which may block up to ``wait`` seconds) every :data:`STOP_POLL_S`
    until it is True or ``timeout`` seconds (None: for ever) have passed; its last answer."""
    deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
    while True:
        left = STOP_POLL_S if deadline is None else deadline - time.monotonic()
        if done(max(0.0, min(STOP_POLL_S, left))):
            return True
        if deadline is not None and time.monotonic() >= deadline:
            return False
