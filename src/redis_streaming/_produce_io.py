"""The sync driver of the producer plan (_produce): connections, CLIENT ID, round trips, sleep.

Only I/O: what to send and what a reply or a cut means is decided in _produce. The async twin
is aio/_produce_io.py. It must not decide whether a round is sent again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import hiredis
import redis
import redis.exceptions as rex

from . import _fastpath as fp
from . import _produce, _produce_fanout
from ._backoff import Backoff
from ._produce import Ask, Cut, Exchange, OneKey, Pause, Reroute, Round, Unknown
from ._produce_fanout import Parallel

_CLIENT_ID = fp.pack_command(("CLIENT", "ID"))
_CONNECTION = (OSError, rex.ConnectionError, rex.TimeoutError)


def supported(client: object) -> bool:
    """True for the clients rounds can be written through: redis.Redis and RedisCluster."""
    return isinstance(client, (redis.Redis, redis.RedisCluster))


def max_bulk(client: Any) -> int:
    """The server's proto-max-bulk-len, read once per connection pool (CONFIG GET)."""
    pool = getattr(client, "connection_pool", client)
    known = _produce.cached_max_bulk(pool)
    if known is not None:
        return known
    try:
        reply: Any = client.config_get("proto-max-bulk-len")
    except rex.RedisError as exc:  # CONFIG renamed or refused: the default
        reply = exc
    return _produce.remember_max_bulk(pool, reply)


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
            if isinstance(cid, BaseException):
                raise _produce.client_id_refused(cid)
            conn._rs_sock, conn._rs_id = conn._sock, int(cid)
    except BaseException:
        conn.disconnect()
        node.connection_pool.release(conn)
        raise
    return conn, conn._rs_id


def _exchange(client: Any, step: Exchange) -> list[Any]:
    try:
        node = _node_client(client, step.key)
        conn, cid = _connection(node)
    except _CONNECTION as exc:  # nothing written: no connection
        raise Cut(False, 0, exc) from exc
    sent = False
    try:
        for part in step.parts:
            conn.send_packed_command([part], check_health=False)
            sent = True
        return fp.read_replies(conn, step.replies)
    except _CONNECTION as exc:
        conn.disconnect()
        raise Cut(sent, cid, exc) from exc
    except Exception as exc:  # a garbled reply: what committed is unknown, so settle it
        conn.disconnect()
        if not sent:
            raise
        raise Cut(True, cid, exc) from exc
    except BaseException:
        conn.disconnect()
        raise
    finally:
        node.connection_pool.release(conn)


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


def _send_one_key(client: Any, step: OneKey) -> list[Any]:
    """The round as ASKING (after ASK) + a single-key script (see _REPLAY)."""
    rnd, error = step.rnd, step.error
    asking = isinstance(error, rex.AskError)
    node = _ask_target(client, error) if asking else _node_client(client, rnd.key)  # type: ignore[arg-type]
    argv: list[bytes | str] = []
    for cmd in _commands(rnd, step.skip):
        args = cmd[2:]  # drop XADD and the key
        argv += [str(len(args)), *args]
    payload = fp.pack_command(("EVAL", _REPLAY, "1", rnd.key, *argv))
    if asking:
        payload = fp.pack_command(("ASKING",)) + payload
    try:
        replies = fp.roundtrip(node, payload, 2 if asking else 1)
    except fp.Interrupted as exc:
        if exc.sent:
            raise Unknown(f"cut while writing to a migrating slot: {exc}") from exc
        raise
    ids = replies[-1]
    if isinstance(ids, rex.ResponseError):
        raise ids
    return [x if type(x) is str else fp.text(x) for x in ids]


# ---------------------------------------------------------------- the driver


def _step(client: Any, step: Any, on_moved: Callable[[], None] | None) -> Any:
    if isinstance(step, Exchange):
        return _exchange(client, step)
    if isinstance(step, Ask):
        return fp.roundtrip(_node_client(client, step.key), step.payload, step.replies)
    if isinstance(step, Pause):
        time.sleep(step.seconds)
        return None
    if isinstance(step, Reroute):
        if on_moved is not None:
            on_moved()
        return None
    if isinstance(step, OneKey):
        return _send_one_key(client, step)
    if isinstance(step, Parallel):
        return _parallel(client, step)
    raise TypeError(f"not a producer step: {step!r}")


def write_rounds(
    client: Any,
    rounds: Sequence[Round],
    total: int,
    *,
    retries: int,
    backoff: Backoff,
    on_moved: Callable[[], None] | None = None,
) -> list[str]:
    """Run :func:`_produce.write_rounds_plan` over ``client``; all IDs in batch order."""
    plan = _produce.write_rounds_plan(
        rounds, total, retries=retries, backoff=backoff, cluster=not isinstance(client, redis.Redis)
    )
    return _drive(client, plan, on_moved)  # type: ignore[no-any-return]


def _drive(
    client: Any, plan: _produce_fanout.FanoutPlan, on_moved: Callable[[], None] | None
) -> Any:
    step = next(plan)
    while True:
        try:
            reply = _step(client, step, on_moved)
        except Exception as exc:  # handed to the plan, which decides what it means
            try:
                step = plan.throw(exc)
            except StopIteration as done:
                return done.value
            continue
        try:
            step = plan.send(reply)
        except StopIteration as done:
            return done.value


# ---------------------------------------------------------------- several keys at once


def _parallel(client: Any, step: Parallel) -> list[Any]:
    """Write every exchange, then read each one's replies, so the nodes work at the same
    time. Exchanges to the same node share one connection (written one after the other, read
    back in the same order); one reply list, Cut or exception per exchange."""
    results: list[Any] = [None] * len(step.exchanges)
    held: dict[int, tuple[redis.Redis, Any, int]] = {}  # by id() of the node client
    route: list[int | None] = []  # each exchange's connection (its node client's id())
    written = [False] * len(step.exchanges)  # a byte of this exchange went out
    broken: dict[int, BaseException] = {}
    try:
        for i, ex in enumerate(step.exchanges):
            try:
                node = _node_client(client, ex.key)
                if id(node) not in held:
                    held[id(node)] = (node, *_connection(node))
            except _CONNECTION as exc:  # nothing written: no connection
                results[i] = Cut(False, 0, exc)
                route.append(None)
                continue
            except Exception as exc:  # an error reply to CLIENT ID, a slot with no node...
                results[i] = exc
                route.append(None)
                continue
            route.append(id(node))
            conn, cid = held[id(node)][1:]
            if id(node) in broken:  # an earlier exchange's write failed: this one never went
                results[i] = Cut(False, cid, broken[id(node)])
                continue
            try:
                for part in ex.parts:
                    conn.send_packed_command([part], check_health=False)
                    written[i] = True
            except _CONNECTION as exc:
                conn.disconnect()
                broken[id(node)] = exc
                results[i] = Cut(written[i], cid, exc)
        for i, ex in enumerate(step.exchanges):
            at = route[i]
            if at is None or results[i] is not None:
                continue
            conn, cid = held[at][1:]
            if at in broken:  # written whole, but its connection failed: not known yet
                results[i] = Cut(True, cid, broken[at])
                continue
            try:
                results[i] = fp.read_replies(conn, ex.replies)
            except Exception as exc:  # a cut, a timeout, a garbled reply: settle it
                conn.disconnect()
                broken[at] = exc
                results[i] = Cut(True, cid, exc)
    except BaseException:
        for at, (_node, conn, _cid) in held.items():
            if at not in broken:
                conn.disconnect()  # unread replies must never go back to the pool
        raise
    finally:
        for node, conn, _cid in held.values():
            node.connection_pool.release(conn)
    return results


def write_lanes(
    client: Any,
    lanes: Sequence[Sequence[Round]],
    total: int,
    *,
    retries: int,
    backoff: Backoff,
    on_moved: Callable[[], None] | None = None,
) -> list[str]:
    """Run :func:`_produce_fanout.write_lanes_plan`: each lane's rounds in order, the lanes
    side by side (send to every node, then read every reply); all IDs in batch order."""
    plan = _produce_fanout.write_lanes_plan(
        lanes, total, retries=retries, backoff=backoff, cluster=not isinstance(client, redis.Redis)
    )
    return _drive(client, plan, on_moved)  # type: ignore[no-any-return]
