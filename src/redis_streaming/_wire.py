"""The wire side of the fast path: borrow a pooled connection, send packed bytes, read raw
replies with hiredis, with a deadline; and the flagging UTF-8 handler those reads decode with.

Only I/O and its bookkeeping; packing and parsing are _fastpath's (which re-exports these
names). It must never send anything other than what it is given.
"""

from __future__ import annotations

import codecs
import contextlib
import functools
import inspect
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import redis
import redis.exceptions as rex


def text(value: Any) -> str:
    # IDs and status replies only: the server makes them, always ASCII.
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


# A decode_responses client's hiredis reader decodes in C. For the reads below it decodes with
# this handler instead of "strict": a bad byte becomes a lone surrogate (surrogateescape, so the
# bytes can be recovered exactly) and bumps a counter, so a reply with no bad byte anywhere
# costs no per-field check. A count bumped by another thread only means one extra check.
_BAD_UTF8 = "redis_streaming.flag_utf8"
_bad_bytes = [0]


def _flag_and_escape(exc: UnicodeError) -> tuple[str | bytes, int]:
    _bad_bytes[0] += 1
    return codecs.lookup_error("surrogateescape")(exc)


codecs.register_error(_BAD_UTF8, _flag_and_escape)


def bad_bytes_seen() -> int:
    """How many bad UTF-8 sequences the fast readers have escaped so far (compare before and
    after a read: equal means every str in its reply is valid text)."""
    return _bad_bytes[0]


def read_entries(client: Any, *args: Any) -> Any:
    """Send a command whose reply carries entry fields; the reply is read as bytes.

    redis-py's callbacks still shape it, but a ``decode_responses`` client cannot fail on a
    field that is not UTF-8: _codec.make_entry decodes strictly and keeps such an entry whole.
    """
    return client.execute_command(*args, NEVER_DECODE=True)


def supports(client: object) -> bool:
    """True for a plain ``redis.Redis`` with a connection pool (not cluster, not pinned)."""
    return (
        isinstance(client, redis.Redis)
        and getattr(client, "connection", None) is None
        and getattr(client, "connection_pool", None) is not None
    )


try:  # the marker redis-py's hiredis reader returns while a reply is incomplete
    from redis._parsers.hiredis import NOT_ENOUGH_DATA as NOT_ENOUGH_DATA
except ImportError:  # pragma: no cover - another redis-py layout: use read_response
    NOT_ENOUGH_DATA = None


def read_replies(
    conn: Any, replies: int, raw: bool = False, timeout: float | None = None
) -> list[Any]:
    parser: Any = getattr(conn, "_parser", None)
    reader = getattr(parser, "_reader", None)
    if reader is None or NOT_ENOUGH_DATA is None or not hasattr(parser, "read_from_socket"):
        # No hiredis reader to drive directly: let redis-py read each reply (slower), as bytes
        # when entries are read so a bad byte cannot raise half-way through a reply.
        out: list[Any] = []
        for _ in range(replies):
            try:
                out.append(conn.read_response(disable_decoding=raw))
            except rex.ResponseError as exc:
                out.append(exc)
        return out
    # redis-py's hiredis reader returns error replies as exception objects; reading it
    # directly skips per-reply bookkeeping that costs more than the parse itself. RESP3 push
    # frames (invalidations, maintenance notices) go to redis-py's own handler, as it would.
    push_type = getattr(parser, "_hiredis_PushNotificationType", None)
    # ``timeout`` bounds each wait for bytes whatever the client's socket_timeout (None in
    # redis-py 5-7 by default): a silent connection then raises TimeoutError, never hangs.
    fill = (
        parser.read_from_socket
        if timeout is None
        else functools.partial(parser.read_from_socket, timeout)
    )
    gets = reader.gets
    out = []
    append = out.append
    while len(out) < replies:
        reply = gets()
        while reply is NOT_ENOUGH_DATA:
            fill()
            reply = gets()
        kind = type(reply)
        if kind is str or kind is bytes:  # the common reply (an XADD's ID): skip the checks
            append(reply)
            continue
        if isinstance(reply, rex.ConnectionError):
            raise reply
        if push_type is not None and isinstance(reply, push_type):
            parser.handle_push_response(reply)
            continue
        append(reply)
    return out


class Interrupted(rex.ConnectionError):
    """A round trip's connection failed; ``sent`` is True once every byte had been written."""

    def __init__(self, message: str, sent: bool) -> None:
        super().__init__(message)
        self.sent = sent


_NEEDS_COMMAND_NAME: dict[type, bool] = {}


def get_connection(pool: Any) -> Any:
    """A connection from ``pool``; redis-py before 5.3 requires a command name, later ones
    warn when given one."""
    kind = type(pool)
    needs = _NEEDS_COMMAND_NAME.get(kind)
    if needs is None:
        param = inspect.signature(pool.get_connection).parameters.get("command_name")
        needs = _NEEDS_COMMAND_NAME[kind] = (
            param is not None and param.default is inspect.Parameter.empty
        )
    return pool.get_connection("_") if needs else pool.get_connection()


def _escape_bad_bytes(conn: Any) -> Callable[[], None] | None:
    """Switch a decoding hiredis reader to the flagging handler; returns the undo, if any."""
    encoder = getattr(conn, "encoder", None)
    reader = getattr(getattr(conn, "_parser", None), "_reader", None)
    if encoder is None or reader is None or not getattr(encoder, "decode_responses", False):
        return None
    encoding, errors = encoder.encoding, encoder.encoding_errors
    reader.set_encoding(encoding=encoding, errors=_BAD_UTF8)
    return lambda: reader.set_encoding(encoding=encoding, errors=errors)


def roundtrip(
    client: redis.Redis,
    payload: bytes | Iterable[bytes],
    replies: int,
    *,
    entries: bool = False,
    timeout: float | None = None,
) -> list[Any]:
    """Send ``payload`` (one buffer, or buffers written as they are produced) and read
    ``replies`` raw replies, in order.

    Error replies are returned as ResponseError objects, after every reply has been read, so
    the connection goes back to the pool in sync. A connection that fails mid-way is closed
    and :class:`Interrupted` says whether the whole payload had been written. ``entries``:
    the replies carry entry fields, so a decoding reader escapes bad bytes instead of raising
    (see :data:`_BAD_UTF8`). ``timeout``: the longest wait for reply bytes, in seconds.
    """
    pool = client.connection_pool
    conn: Any = get_connection(pool)
    try:
        send(conn, payload)
        return receive(conn, replies, entries=entries, timeout=timeout)
    finally:
        pool.release(conn)


@contextlib.contextmanager
def _closed_on_failure(conn: Any, sent: bool) -> Iterator[None]:
    """Close ``conn`` on any failure (unread replies must never be reused); a connection
    failure becomes :class:`Interrupted` saying whether everything had been written."""
    try:
        yield
    except (OSError, rex.ConnectionError, rex.TimeoutError) as exc:
        conn.disconnect()
        raise Interrupted(f"connection lost during a round trip: {exc}", sent) from exc
    except BaseException:
        conn.disconnect()
        raise


def send(conn: Any, payload: bytes | Iterable[bytes]) -> None:
    """Write ``payload`` on ``conn``; a failure closes it and raises :class:`Interrupted`."""
    with _closed_on_failure(conn, sent=False):
        if isinstance(payload, bytes):
            conn.send_packed_command([payload], check_health=False)
        else:
            for part in payload:
                conn.send_packed_command([part], check_health=False)


def receive(
    conn: Any, replies: int, *, entries: bool = False, timeout: float | None = None
) -> list[Any]:
    """Read ``replies`` raw replies of what was sent on ``conn`` (see :func:`roundtrip`); a
    failure closes it and raises :class:`Interrupted` (everything had been written)."""
    undo = _escape_bad_bytes(conn) if entries else None
    try:
        with _closed_on_failure(conn, sent=True):
            return read_replies(conn, replies, raw=entries, timeout=timeout)
    finally:
        if undo is not None:
            with contextlib.suppress(Exception):  # a reader gone with a reconnect: nothing to undo
                undo()
