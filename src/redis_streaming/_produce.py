"""Producer rounds that never store an event twice: MULTI/EXEC per slice, a commit marker,
and an exact answer after a dropped connection. Written once, as a plan (see _ops).

It must not validate or pack events (that is _codec and _fastpath), it does no I/O (the sync
driver is _produce_io, the async one aio/_produce_io), and it never sends a round again unless
it has proved that the server did not commit it.

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
import functools
import logging
import os
import weakref
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import redis.exceptions as rex

from . import _fastpath as fp
from ._backoff import Backoff
from ._errors import InvalidEvent, ProduceError, ServerError, StreamingError, translate

logger = logging.getLogger(__name__)

MARKER_TTL_MS: Final = 300_000
#: The server's default proto-max-bulk-len (512 MB), used when CONFIG GET is not allowed.
DEFAULT_MAX_BULK: Final = 512 * 1024 * 1024

# Appends the slice's last ID (the newest entry: the slice is a transaction, nothing else can
# be in between) to the round's marker list; the slice that creates the list sets its expiry
# (one Lua call fewer per slice than expiring it every time: about 10% of produce_batch).
_MARK = (
    "local l = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1) "
    "if redis.call('RPUSH', KEYS[2], l[1][1]) == 1 then "
    "redis.call('PEXPIRE', KEYS[2], ARGV[1]) end return 1"
)
_MULTI = fp.pack_command(("MULTI",))
_EXEC = fp.pack_command(("EXEC",))
_CLIENT_ID = fp.pack_command(("CLIENT", "ID"))


def client_id_refused(reply: BaseException) -> ServerError:
    """The producer needs CLIENT ID (and CLIENT KILL after a cut) to prove what a cut round
    committed; a server or ACL that refuses it gets this error, before anything is written."""
    return ServerError(
        f"CLIENT ID refused ({reply}); the producer needs CLIENT ID and CLIENT KILL to settle "
        "a dropped connection without storing an event twice: allow them for this user"
    )


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


def cached_max_bulk(pool: Any) -> int | None:
    """The server's proto-max-bulk-len remembered for this connection pool, if asked before."""
    try:
        return _MAX_BULK[pool]
    except (KeyError, TypeError):
        return None


def remember_max_bulk(pool: Any, reply: Any) -> int:
    """Parse CONFIG GET proto-max-bulk-len (an exception: refused or renamed) and cache it."""
    limit = DEFAULT_MAX_BULK
    if not isinstance(reply, BaseException):
        try:
            value = next(iter(reply.values()), None) if reply else None
            if value is not None:
                limit = int(value)
        except (ValueError, TypeError, AttributeError):
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


# ---------------------------------------------------------------- building rounds


def _slices(count: int, size: int) -> list[int]:
    """How many commands each buffer of iter_packed(..., size) holds for ``count`` events."""
    return [min(size, count - i) for i in range(0, count, size)]


def plain_rounds(
    key: str,
    batch: Sequence[Any],
    indexes: Sequence[int],
    ts_ms: int,
    cap: int | None,
    approximate: bool,
    write: int = fp.XADD_WRITE,
) -> list[Round]:
    """The rounds for ``batch`` (its events at batch positions ``indexes``), which
    :func:`_fastpath.plain` has proved cannot fail to pack: packed while being sent, ``write``
    XADDs per slice (each slice its own MULTI/EXEC)."""
    step = fp.XADD_ROUND
    rounds: list[Round] = []
    for start in range(0, len(batch), step):
        chunk = batch[start : start + step]
        writes = functools.partial(fp.iter_packed, key, chunk, ts_ms, cap, approximate, write)
        rounds.append(
            Round(key, indexes[start : start + len(chunk)], writes, _slices(len(chunk), write))
        )
    return rounds


def build_rounds(
    key: str,
    batch: Sequence[Any],
    ts_ms: int,
    cap: int | None,
    approximate: bool,
    limit: int,
) -> list[Round]:
    """produce_batch's rounds for ``batch`` (validated whole before anything is sent).

    A batch of plain events is packed slice by slice while earlier slices are on the wire;
    any other batch is validated and packed in one pass first. Raises InvalidEvent.
    """
    step = fp.XADD_ROUND
    rounds: list[Round] = []
    if fp.plain(batch, limit):
        return plain_rounds(key, batch, range(len(batch)), ts_ms, cap, approximate)
    check_sizes(batch, limit)
    buffers, count = fp.pack_events(key, batch, ts_ms, cap, approximate)
    for n, buffer in enumerate(buffers):
        start = n * step
        rounds.append(Round(key, range(start, min(start + step, count)), (buffer,).__iter__))
    return rounds


# ---------------------------------------------------------------- what the drivers do


@dataclass(frozen=True, slots=True)
class Exchange:
    """Write ``parts`` in order on a connection to the node of ``key`` (whose server-side
    CLIENT ID the driver knows) and read ``replies`` replies, error replies as objects.

    On a connection failure the driver raises :class:`Cut` saying whether any part was
    written and the connection's client ID.
    """

    key: str
    parts: Iterable[bytes]
    replies: int


@dataclass(frozen=True, slots=True)
class Ask:
    """A plain round trip to the node of ``key`` (fast-path roundtrip): ``replies`` replies."""

    key: str
    payload: bytes
    replies: int


@dataclass(frozen=True, slots=True)
class Pause:
    """Wait ``seconds`` before the next attempt (time.sleep / asyncio.sleep)."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Reroute:
    """Re-read a cluster's slot map (after MOVED)."""


@dataclass(frozen=True, slots=True)
class OneKey:
    """Cluster only: send the round's XADDs after the first ``skip`` as one single-key script,
    to the ASK target or the key's node (a slot being migrated); replies the IDs."""

    rnd: Round
    error: rex.ResponseError
    skip: int


Step = Exchange | Ask | Pause | Reroute | OneKey


class Cut(Exception):
    """An Exchange's connection failed; ``sent``: at least one part had been written."""

    def __init__(self, sent: bool, client_id: int, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.sent = sent
        self.client_id = client_id
        self.cause = cause


class Unknown(Exception):
    """The round may or may not be stored (a cut that could not be settled)."""


class _NotStored(Exception):
    """The round is certainly not stored and may not be retried any more."""


class _Partial(Exception):
    """A round failed after ``done`` (its first slices' replies) were settled."""

    def __init__(self, done: list[list[Any]], cause: BaseException) -> None:
        super().__init__(str(cause))
        self.done = done
        self.cause = cause


_MIGRATING = (rex.AskError, rex.TryAgainError)
_REROUTE = (rex.MovedError, rex.AskError, rex.TryAgainError, rex.ClusterDownError)
#: What ends a round before it was written: a Redis error, a socket error, our own (CLIENT ID
#: refused), or a cluster client's (no node for a slot). An earlier round may be stored.
_FAILURES = (rex.RedisError, rex.RedisClusterException, OSError, StreamingError)
_CONNECTION = (OSError, rex.ConnectionError, rex.TimeoutError)

Plan = Generator[Step, Any, Any]


# ---------------------------------------------------------------- one round


def _send(rnd: Round, marker: str, skip: int) -> Plan:
    """Send the round's slices from slice ``skip`` on, each as MULTI ... EXEC; returns the
    XADD replies of each slice (an error reply aborts that slice, nothing of it stored)."""
    tail = fp.pack_command(("EVAL", _MARK, "2", rnd.key, marker, str(MARKER_TTL_MS))) + _EXEC
    sizes = rnd.sizes[skip:]
    parts = (_MULTI + part + tail for n, part in enumerate(rnd.writes()) if n >= skip)
    replies = yield Exchange(rnd.key, parts, sum(sizes) + 3 * len(sizes))
    out: list[list[Any]] = []
    at = 0
    for size in sizes:
        result = replies[at + size + 2]
        if isinstance(result, rex.ResponseError):
            # EXECABORT: a command was refused while queued. Name it.
            queued = replies[at + 1 : at + size + 2]
            cause = next((r for r in queued if isinstance(r, rex.ResponseError)), result)
            out.append([cause] * size)
        else:
            out.append(_ids(result[:size]))  # the marker script's reply follows the XADDs'
        at += size + 3
    return out


def _ids(replies: list[Any]) -> list[Any]:
    """XADD replies as str IDs (error replies kept as they are)."""
    if replies and type(replies[0]) is bytes:
        try:  # a client without decode_responses: IDs are ASCII, one decode for the slice
            return b"\0".join(replies).decode().split("\0")
        except TypeError:  # an error reply among them
            pass
    elif all([type(r) is str for r in replies]):
        return replies
    return [r if type(r) is str or isinstance(r, Exception) else fp.text(r) for r in replies]


def _resolve(rnd: Round, marker: str, client_id: int) -> Plan:
    """After a cut: the IDs of every slice committed so far (in order), and whether the rest
    is provably not committed (False when CLIENT KILL was refused)."""
    kill = fp.pack_command(("CLIENT", "KILL", "ID", str(client_id)))
    killed, lasts = yield Ask(rnd.key, kill + fp.pack_command(("LRANGE", marker, "0", "-1")), 2)
    sure = not isinstance(killed, rex.ResponseError)
    done: list[list[str]] = []
    for size, last in zip(rnd.sizes, lasts or [], strict=False):
        last_id = fp.text(last)
        [rows] = yield Ask(
            rnd.key, fp.pack_command(("XREVRANGE", rnd.key, last_id, "-", "COUNT", str(size))), 1
        )
        ids = [fp.text(row[0]) for row in reversed(rows or [])]
        if len(ids) != size or ids[-1] != last_id:
            raise RuntimeError("a slice was committed but trimmed before its IDs were read back")
        done.append(ids)
    return done, sure


def _settle(
    rnd: Round, marker: str, cut: Cut, retries: int, backoff: Backoff, done: list[list[Any]]
) -> Plan:
    """Find out which slices of a cut round were committed; returns their replies."""
    for attempt in range(retries + 1):
        try:
            committed, sure = yield from _resolve(rnd, marker, cut.client_id)
        except RuntimeError as exc:
            raise _Partial(done, Unknown(str(exc))) from cut.cause
        except (rex.RedisError, OSError) as exc:
            if attempt >= retries:
                message = f"{cut.cause}; then could not check the outcome: {exc}"
                raise _Partial(done, Unknown(message)) from exc
            yield Pause(backoff.delay(attempt))
            continue
        if not sure and len(committed) < len(rnd.sizes):
            raise _Partial(
                [list(ids) for ids in committed],
                Unknown("CLIENT KILL refused: the old connection may still commit"),
            )
        return [list(ids) for ids in committed]
    raise _Partial(done, Unknown(str(cut.cause)))  # pragma: no cover


def _write_round(rnd: Round, retries: int, backoff: Backoff, cluster: bool) -> Plan:
    attempt = 0
    marker = marker_key(rnd.key, os.urandom(12).hex())
    done: list[list[Any]] = []  # replies of the slices known to be settled, in order
    while True:
        cut: Cut | None = None
        try:
            replies = yield from _send(rnd, marker, len(done))
            # A slice aborted by a redirect (MOVED, ASK...): keep what came before, follow it.
            moved = next(
                (i for i, part in enumerate(replies) if part and isinstance(part[0], _REROUTE)),
                None,
            )
            done += replies if moved is None else replies[:moved]
            if moved is not None:
                raise replies[moved][0]
        except Cut as exc:
            cut = exc
        except rex.ResponseError as exc:
            if isinstance(exc, _MIGRATING) and cluster:
                try:
                    rest = yield OneKey(rnd, exc, sum(rnd.sizes[: len(done)]))
                    return [r for part in done for r in part] + rest
                except Unknown as unsure:
                    raise _Partial(done, unsure) from unsure
                except rex.ResponseError as again:
                    exc = again
                except _CONNECTION:
                    pass  # not sent (an unknown outcome raised Unknown): retry the round
            if not isinstance(exc, _REROUTE) or attempt >= retries:
                raise _Partial(done, exc) from exc
            if isinstance(exc, rex.MovedError):
                yield Reroute()
        except _FAILURES as exc:  # no new connection (CLIENT ID refused...): the rest not sent
            raise _Partial(done, exc) from exc
        else:
            return done[0] if len(done) == 1 else [r for part in done for r in part]
        if cut is not None and cut.sent:
            done = yield from _settle(rnd, marker, cut, retries, backoff, done)
            if len(done) == len(rnd.sizes):
                return [r for part in done for r in part]
        if cut is not None and attempt >= retries:
            raise _Partial(done, _NotStored(str(cut.cause)))
        delay = backoff.delay(attempt)
        attempt += 1
        logger.warning(
            "XADD round of %d to %s cut with %d of %d slices committed; the rest again "
            "(%d/%d) in %.2fs",
            rnd.count, rnd.key, len(done), len(rnd.sizes), attempt, retries, delay,
        )  # fmt: skip
        yield Pause(delay)


# ---------------------------------------------------------------- a whole batch


def write_rounds_plan(
    rounds: Sequence[Round], total: int, *, retries: int, backoff: Backoff, cluster: bool
) -> Plan:
    """Write every round in order; returns all IDs in batch order.

    Raises ProduceError when a round fails and what it stored cannot be proved; ServerError
    (nothing of that round stored) for an error reply. Either says which events were stored.
    """
    stored: dict[int, str] = {}
    for rnd in rounds:
        try:
            ids = yield from _write_round(rnd, retries, backoff, cluster)
        except _Partial as exc:
            settled = [r for part in exc.done for r in part]
            for index, entry_id in zip(rnd.indexes, settled, strict=False):
                if not isinstance(entry_id, Exception):
                    stored[index] = entry_id
            cause = exc.cause
            unknown = rnd.indexes[len(settled) :] if isinstance(cause, Unknown) else range(0)
            if not stored and not unknown and isinstance(cause, _FAILURES):
                raise translate(cause) from cause
            raise ProduceError.build(total, stored, unknown, cause) from cause
        except _FAILURES as exc:  # this round not written (e.g. CLIENT ID refused on a new socket)
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
