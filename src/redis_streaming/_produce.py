"""Producer rounds that never store an event twice: MULTI/EXEC per round trip, a commit marker,
and an exact answer after a dropped connection.

It must not validate or pack events (that is _codec and _fastpath), and it never sends a round
again unless it has proved that the server did not commit it.

A round is ``CLIENT ID`` (first use of a socket only), ``MULTI``, its XADDs, a one-line script
that writes the round's last ID to a marker key (same hash slot, expires after
:data:`MARKER_TTL_MS`), ``EXEC``. The XADDs are streamed as they are packed; the server commits
all of them or none. If the connection fails:

* before EXEC was written, the server drops the transaction with the connection: nothing was
  stored, the round is sent again (up to ``retries`` times, with backoff);
* after EXEC was written, a new connection first kills the old one (``CLIENT KILL ID``, so no
  byte still in flight can commit later), then reads the marker: present means committed, and
  the round's IDs are read back (``XREVRANGE last - COUNT n``); absent means nothing was stored
  and the round is sent again.

When the outcome cannot be proved (the server stays away, CLIENT KILL is refused), the batch
fails with :class:`ProduceError`, which lists the events stored (with IDs), not stored, and
unknown.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import hiredis
import redis
import redis.exceptions as rex

from . import _fastpath as fp
from ._backoff import Backoff
from ._errors import InvalidEvent, ProduceError, ServerError, translate

logger = logging.getLogger(__name__)

MARKER_TTL_MS: Final = 300_000
#: The server's default proto-max-bulk-len (512 MB), used when CONFIG GET is not allowed.
DEFAULT_MAX_BULK: Final = 512 * 1024 * 1024

# Appends the slice's last ID (the newest entry: the slice is a transaction, nothing else can
# be in between) to the round's marker list.
_MARK = (
    "local l = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1) "
    "redis.call('RPUSH', KEYS[2], l[1][1]) redis.call('PEXPIRE', KEYS[2], ARGV[1]) return 1"
)
_MULTI = fp.pack_command(("MULTI",))
_EXEC = fp.pack_command(("EXEC",))
_CLIENT_ID = fp.pack_command(("CLIENT", "ID"))


def marker_key(key: str, token: str) -> str:
    """A key in the same hash slot as ``key`` (so MULTI never meets CROSSSLOT on a cluster)."""
    start = key.find("{")
    if start != -1:
        end = key.find("}", start + 1)
        if end > start + 1:  # key has a hash tag: any suffix keeps it
            return f"{key}:rs-produced:{token}"
    return f"{{{key}}}:rs-produced:{token}"


@dataclass
class Round:
    """One round trip of a batch: the events at batch positions ``indexes``, all to ``key``.

    ``writes`` makes the packed XADD buffers, one per slice, holding ``sizes[i]`` commands
    each (called again for a resend, so it must be deterministic). Each slice is its own
    transaction: the server runs one while the next is still being packed.
    """

    key: str
    indexes: Sequence[int]
    writes: Callable[[], Iterable[bytes]]
    sizes: Sequence[int] = ()

    def __post_init__(self) -> None:
        if not self.sizes:
            self.sizes = (len(self.indexes),)

    @property
    def count(self) -> int:
        return len(self.indexes)


# ---------------------------------------------------------------- server limits


_MAX_BULK: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()


def max_bulk(client: Any) -> int:
    """The server's proto-max-bulk-len, read once per connection pool (CONFIG GET)."""
    pool = getattr(client, "connection_pool", client)
    try:
        return _MAX_BULK[pool]
    except (KeyError, TypeError):
        pass
    limit = DEFAULT_MAX_BULK
    try:
        reply = client.config_get("proto-max-bulk-len")
        value = next(iter(reply.values()), None) if reply else None
        if value is not None:
            limit = int(value)
    except (rex.RedisError, ValueError, TypeError):  # CONFIG renamed or refused: the default
        pass
    with contextlib.suppress(TypeError):  # a pool that cannot be weakly referenced
        _MAX_BULK[pool] = limit
    return limit


def check_sizes(events: Sequence[object], limit: int, label: str = "batch item {}") -> None:
    """Raise InvalidEvent for the first field value or name longer than ``limit`` bytes."""
    for index, item in enumerate(events):
        payload = item[1] if isinstance(item, (tuple, list)) and len(item) == 2 else item
        if not isinstance(payload, dict):
            continue
        for name, value in payload.items():
            for what, text in (("name", name), ("value", value)):
                if isinstance(text, str) and len(text) * 4 > limit:
                    size = len(text.encode("utf-8", "surrogatepass"))
                    if size > limit:
                        raise InvalidEvent(
                            f"{label.format(index)}: payload field {str(name)[:40]!r} {what} is "
                            f"{size} bytes; the server takes at most {limit} "
                            "(proto-max-bulk-len); nothing was sent"
                        )


# ---------------------------------------------------------------- one round trip


def supported(client: object) -> bool:
    """True for the clients rounds can be written through: redis.Redis and RedisCluster."""
    return isinstance(client, (redis.Redis, redis.RedisCluster))


def _node_client(client: Any, key: str) -> redis.Redis:
    """The redis.Redis to write ``key`` through: the client, or its cluster node's client."""
    if isinstance(client, redis.Redis):
        return client
    node = client.get_node_from_key(key)
    return client.get_redis_connection(node)  # type: ignore[no-any-return]


def _connection(node: redis.Redis) -> tuple[Any, int]:
    """A pooled connection and the server's client ID for its socket (asked once per socket)."""
    conn: Any = fp.get_connection(node.connection_pool)
    try:
        if getattr(conn, "_sock", None) is None:
            conn.connect()
        if getattr(conn, "_rs_sock", None) is not conn._sock:
            conn.send_packed_command([_CLIENT_ID], check_health=False)
            [cid] = fp.read_replies(conn, 1)
            conn._rs_sock, conn._rs_id = conn._sock, int(cid)
    except BaseException:
        conn.disconnect()
        node.connection_pool.release(conn)
        raise
    return conn, conn._rs_id


class _Cut(Exception):
    def __init__(self, sent: bool, client_id: int, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.sent = sent
        self.client_id = client_id
        self.cause = cause


def _send(node: redis.Redis, rnd: Round, marker: str, skip: int) -> list[list[Any]]:
    """Send the round's slices from slice ``skip`` on, each as MULTI ... EXEC; returns the
    XADD replies of each slice (an error reply aborts that slice, nothing of it stored)."""
    tail = fp.pack_command(("EVAL", _MARK, "2", rnd.key, marker, str(MARKER_TTL_MS))) + _EXEC
    conn, cid = _connection(node)
    sizes = rnd.sizes[skip:]
    sent = False  # True once one slice's EXEC is written: from then on, settle before resending
    try:
        for n, part in enumerate(rnd.writes()):
            if n >= skip:
                conn.send_packed_command([_MULTI + part + tail], check_health=False)
                sent = True
        replies = fp.read_replies(conn, sum(sizes) + 3 * len(sizes))
    except (OSError, rex.ConnectionError, rex.TimeoutError) as exc:
        conn.disconnect()
        raise _Cut(sent, cid, exc) from exc
    except BaseException:
        conn.disconnect()
        raise
    finally:
        node.connection_pool.release(conn)
    out: list[list[Any]] = []
    at = 0
    for size in sizes:
        queued, result = replies[at + 1 : at + size + 2], replies[at + size + 2]
        at += size + 3
        if isinstance(result, rex.ResponseError):
            # EXECABORT: a command was refused while queued. Name it.
            cause = next((r for r in queued if isinstance(r, rex.ResponseError)), result)
            out.append([cause] * size)
        else:
            ids = result[:size]  # the marker script's reply follows the XADDs'
            if not all([type(r) is str for r in ids]):
                ids = [r if type(r) is str or isinstance(r, Exception) else fp.text(r) for r in ids]
            out.append(ids)
    return out


def _resolve(
    node: redis.Redis, rnd: Round, marker: str, client_id: int
) -> tuple[list[list[str]], bool]:
    """After a cut: the IDs of every slice committed so far (in order), and whether the rest
    is provably not committed (False when CLIENT KILL was refused)."""
    kill = fp.pack_command(("CLIENT", "KILL", "ID", str(client_id)))
    killed, lasts = fp.roundtrip(node, kill + fp.pack_command(("LRANGE", marker, "0", "-1")), 2)
    sure = not isinstance(killed, rex.ResponseError)
    done: list[list[str]] = []
    for size, last in zip(rnd.sizes, lasts or [], strict=False):
        last_id = fp.text(last)
        [rows] = fp.roundtrip(
            node, fp.pack_command(("XREVRANGE", rnd.key, last_id, "-", "COUNT", str(size))), 1
        )
        ids = [fp.text(row[0]) for row in reversed(rows or [])]
        if len(ids) != size or ids[-1] != last_id:
            raise RuntimeError("a slice was committed but trimmed before its IDs were read back")
        done.append(ids)
    return done, sure


# ---------------------------------------------------------------- a slot being migrated

# MULTI cannot follow an ASK redirect (ASKING would be queued, not applied), so a round whose
# slot is half moved goes to the importing node as ASKING + one script with the same XADDs:
# still atomic, but with a single key (a marker key would not exist there yet, and a
# multi-key command on an importing slot gets TRYAGAIN). A cut after it was sent cannot be
# settled, so it is reported as unknown, never sent again.
_REPLAY = (
    "local ids, i = {}, 1 "
    "while i <= #ARGV do local n = tonumber(ARGV[i]) "
    "ids[#ids + 1] = redis.call('XADD', KEYS[1], unpack(ARGV, i + 1, i + n)) "
    "i = i + n + 1 end return ids"
)


def _commands(rnd: Round, skip: int = 0) -> list[list[bytes]]:
    """The round's XADD commands after the first ``skip``, parsed back from their bytes."""
    reader = hiredis.Reader()
    for part in rnd.writes():
        reader.feed(part)
    out = []
    while (cmd := reader.gets()) is not False:
        out.append(cmd)
    return out[skip:]


def _ask_target(client: Any, error: rex.AskError) -> redis.Redis:
    node = client.get_node(host=error.host, port=error.port)
    if node is None:
        client.nodes_manager.initialize()
        node = client.get_node(host=error.host, port=error.port)
    if node is None:
        raise error
    return client.get_redis_connection(node)  # type: ignore[no-any-return]


def _send_one_key(client: Any, rnd: Round, error: rex.ResponseError, skip: int) -> list[Any]:
    """The round as ASKING (after ASK) + a single-key script (see _REPLAY)."""
    asking = isinstance(error, rex.AskError)
    node = _ask_target(client, error) if asking else _node_client(client, rnd.key)  # type: ignore[arg-type]
    argv: list[bytes | str] = []
    for cmd in _commands(rnd, skip):
        args = cmd[2:]  # drop XADD and the key
        argv += [str(len(args)), *args]
    payload = fp.pack_command(("EVAL", _REPLAY, "1", rnd.key, *argv))
    if asking:
        payload = fp.pack_command(("ASKING",)) + payload
    try:
        replies = fp.roundtrip(node, payload, 2 if asking else 1)
    except fp.Interrupted as exc:
        if exc.sent:
            raise _Unknown(f"cut while writing to a migrating slot: {exc}") from exc
        raise
    ids = replies[-1]
    if isinstance(ids, rex.ResponseError):
        raise ids
    return [x if type(x) is str else fp.text(x) for x in ids]


_MIGRATING = (rex.AskError, rex.TryAgainError)
_REROUTE = (rex.MovedError, rex.AskError, rex.TryAgainError, rex.ClusterDownError)


# ---------------------------------------------------------------- a whole batch


def write_rounds(
    client: Any,
    rounds: Sequence[Round],
    total: int,
    *,
    retries: int,
    backoff: Backoff,
    on_moved: Callable[[], None] | None = None,
) -> list[str]:
    """Write every round in order; returns all IDs in batch order.

    Raises ProduceError when a round fails and what it stored cannot be proved; ServerError
    (nothing of that round stored) for an error reply. Either says which events were stored.
    """
    stored: dict[int, str] = {}
    for rnd in rounds:
        try:
            ids = _write_round(client, rnd, retries, backoff, on_moved)
        except _Partial as exc:
            settled = [r for part in exc.done for r in part]
            for index, entry_id in zip(rnd.indexes, settled, strict=False):
                if not isinstance(entry_id, Exception):
                    stored[index] = entry_id
            cause = exc.cause
            unknown = rnd.indexes[len(settled) :] if isinstance(cause, _Unknown) else range(0)
            if not stored and not unknown and isinstance(cause, rex.RedisError):
                raise translate(cause) from cause
            raise ProduceError.build(total, stored, unknown, cause) from cause
        except (rex.RedisError, OSError) as exc:
            if stored:  # an earlier round is in the stream: say so
                raise ProduceError.build(total, stored, range(0), exc) from exc
            raise translate(exc) from exc
        if (
            len(rounds) == 1
            and isinstance(rnd.indexes, range)
            and all([type(r) is str for r in ids])
        ):
            return ids  # the common case: one clean round, already in batch order
        refused = None
        for index, entry_id in zip(rnd.indexes, ids, strict=True):
            if isinstance(entry_id, rex.ResponseError):
                refused = refused or entry_id
            else:
                stored[index] = entry_id
        if refused is not None:
            if not stored:
                raise ServerError(f"XADD to {rnd.key} refused: {refused}; nothing stored")
            raise ProduceError.build(total, stored, range(0), refused)
    return [stored[i] for i in range(total)]


class _Unknown(Exception):
    """The round may or may not be stored."""


class _NotStored(Exception):
    """The round is certainly not stored and may not be retried any more."""


def _write_round(
    client: Any,
    rnd: Round,
    retries: int,
    backoff: Backoff,
    on_moved: Callable[[], None] | None,
) -> list[Any]:
    attempt = 0
    marker = marker_key(rnd.key, os.urandom(12).hex())
    done: list[list[Any]] = []  # replies of the slices known to be settled, in order
    while True:
        cut: _Cut | None = None
        try:
            node = _node_client(client, rnd.key)
            replies = _send(node, rnd, marker, len(done))
            # A slice aborted by a redirect (MOVED, ASK...): keep what came before, follow it.
            moved = next(
                (i for i, part in enumerate(replies) if part and isinstance(part[0], _REROUTE)),
                None,
            )
            done += replies if moved is None else replies[:moved]
            if moved is not None:
                raise replies[moved][0]
        except _Cut as exc:
            cut = exc
        except rex.ResponseError as exc:
            if isinstance(exc, _MIGRATING) and not isinstance(client, redis.Redis):
                try:
                    return [r for part in done for r in part] + _send_one_key(
                        client, rnd, exc, sum(rnd.sizes[: len(done)])
                    )
                except rex.ResponseError as again:
                    exc = again
                except (OSError, rex.ConnectionError, rex.TimeoutError):
                    pass  # not sent (an unknown outcome raised _Unknown): retry the round
            if not isinstance(exc, _REROUTE) or attempt >= retries:
                raise _Partial(done, exc) from exc
            if on_moved is not None and isinstance(exc, rex.MovedError):
                on_moved()
        except (OSError, rex.ConnectionError, rex.TimeoutError) as exc:
            # Failed before anything was written (no connection): nothing more stored.
            cut = _Cut(False, 0, exc)
        else:
            return done[0] if len(done) == 1 else [r for part in done for r in part]
        if cut is not None and cut.sent:
            done = _settle(client, rnd, marker, cut, retries, backoff, done)
            if len(done) == len(rnd.sizes):
                return [r for part in done for r in part]
        if cut is not None and attempt >= retries:
            raise _Partial(done, _NotStored(str(cut.cause)))
        delay = backoff.delay(attempt)
        attempt += 1
        logger.warning(
            "XADD round of %d to %s cut with %d of %d slices committed; the rest again "
            "(%d/%d) in %.2fs",
            rnd.count,
            rnd.key,
            len(done),
            len(rnd.sizes),
            attempt,
            retries,
            delay,
        )
        time.sleep(delay)


class _Partial(Exception):
    """A round failed after ``done`` (its first slices' replies) were settled."""

    def __init__(self, done: list[list[Any]], cause: BaseException) -> None:
        super().__init__(str(cause))
        self.done = done
        self.cause = cause


def _settle(
    client: Any,
    rnd: Round,
    marker: str,
    cut: _Cut,
    retries: int,
    backoff: Backoff,
    done: list[list[Any]],
) -> list[list[Any]]:
    """Find out which slices of a cut round were committed; returns their replies."""
    for attempt in range(retries + 1):
        try:
            committed, sure = _resolve(_node_client(client, rnd.key), rnd, marker, cut.client_id)
        except RuntimeError as exc:
            raise _Partial(done, _Unknown(str(exc))) from cut.cause
        except (rex.RedisError, OSError) as exc:
            if attempt >= retries:
                message = f"{cut.cause}; then could not check the outcome: {exc}"
                raise _Partial(done, _Unknown(message)) from exc
            time.sleep(backoff.delay(attempt))
            continue
        if not sure and len(committed) < len(rnd.sizes):
            raise _Partial(
                [list(ids) for ids in committed],
                _Unknown("CLIENT KILL refused: the old connection may still commit"),
            )
        return [list(ids) for ids in committed]
    raise _Partial(done, _Unknown(str(cut.cause)))  # pragma: no cover
