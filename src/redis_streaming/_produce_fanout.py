"""Producer rounds to several keys at once: one lane per key, written side by side (send to every
node, then read every reply), each lane keeping _produce's exact per-round contract.

Pure, like _produce: it decides, the drivers do the I/O. It must not change what one round
does (that is _produce._write_round, reused as is) and it never re-sends a round on its own.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import redis.exceptions as rex

from . import _codec as codec
from . import _fastpath as fp
from ._backoff import Backoff
from ._errors import ProduceError, ServerError, translate
from ._produce import (
    _FAILURES,
    Exchange,
    Plan,
    Round,
    Step,
    Unknown,
    _Partial,
    _write_round,
    check_sizes,
    plain_rounds,
)

#: XADDs per MULTI/EXEC slice in a lane when there are several. One plain stream writes small
#: slices so the server starts on the first while the next is packed; several lanes already
#: overlap that way (the server runs lane 1 while lane 2 is packed), and fewer, larger slices
#: cost the server less (one marker script per slice).
LANE_WRITE: Final = 100


def in_order(positions: Sequence[Sequence[int]], groups: Sequence[Sequence[Any]]) -> list[Any]:
    """Grouped items back in batch order (``positions[g][j]`` is where ``groups[g][j]`` was)."""
    out: list[Any] = [None] * sum(map(len, positions))
    for pos, group in zip(positions, groups, strict=True):
        for n, item in zip(pos, group, strict=True):
            out[n] = item
    return out


def build_lanes(
    keys: Sequence[str],
    positions: Sequence[Sequence[int]],
    pairs: Sequence[Sequence[Any]],
    ts_ms: int,
    cap: int | None,
    approximate: bool,
    limit: int,
) -> dict[int, list[Round]]:
    """Each key's rounds (its ``(event_type, payload)`` pairs at batch ``positions``, in batch
    order), by key index; only keys with events. The batch is validated whole first: raises
    InvalidEvent naming the event's position in the batch, before anything is sent."""
    used = [i for i, pos in enumerate(positions) if pos]
    if all(fp.plain(pairs[i], limit) for i in used):  # cannot fail to pack: packed as sent
        write = fp.XADD_WRITE if len(used) == 1 else LANE_WRITE
        return {
            i: plain_rounds(keys[i], pairs[i], positions[i], ts_ms, cap, approximate, write)
            for i in used
        }
    encoded = codec.encode_batch(in_order(positions, pairs), ts_ms)
    check_sizes([(None, f) for f in encoded], limit)
    lanes: dict[int, list[Round]] = {}
    for i in used:
        pos = positions[i]
        for start in range(0, len(pos), fp.XADD_ROUND):
            part = pos[start : start + fp.XADD_ROUND]
            packed = fp.pack_xadd_batch(keys[i], [encoded[n] for n in part], cap, approximate)
            lanes.setdefault(i, []).append(Round(keys[i], part, (packed,).__iter__))
    return lanes


@dataclass(frozen=True, slots=True)
class Parallel:
    """Run these Exchanges together: write each to its key's node (exchanges to one node
    share a connection, written one after the other), then read each one's replies. Reply:
    one item per exchange, in order: its replies, or the exception it ended with (a
    :class:`_produce.Cut` once its bytes may have gone out and its replies were not read)."""

    exchanges: tuple[Exchange, ...]


FanoutPlan = Generator[Step | Parallel, Any, Any]


@dataclass
class _Outcome:
    """What the lanes learned: IDs stored by batch position, and the first failure."""

    stored: dict[int, str] = field(default_factory=dict)
    unknown: list[int] = field(default_factory=list)
    cause: BaseException | None = None
    #: the failure is an error reply that names no partial outcome (translate it as is)
    plain: bool = False
    refused_key: str | None = None

    def fail(self, cause: BaseException, plain: bool, refused_key: str | None = None) -> None:
        if self.cause is None:
            self.cause, self.plain, self.refused_key = cause, plain, refused_key


def _lane(
    rounds: Sequence[Round], out: _Outcome, retries: int, backoff: Backoff, cluster: bool
) -> Plan:
    """One key's rounds, in order (so per-key order holds); stops at its first failure, and
    starts no new round once any lane has failed."""
    for rnd in rounds:
        if out.cause is not None:
            return
        try:
            ids = yield from _write_round(rnd, retries, backoff, cluster)
        except _Partial as exc:
            settled = [r for part in exc.done for r in part]
            for index, entry_id in zip(rnd.indexes, settled, strict=False):
                if not isinstance(entry_id, Exception):
                    out.stored[index] = entry_id
            if isinstance(exc.cause, Unknown):
                out.unknown.extend(rnd.indexes[len(settled) :])
            out.fail(exc.cause, isinstance(exc.cause, rex.RedisError))
            return
        except _FAILURES as exc:  # this round not written; the batch says what others stored
            out.fail(exc, True)
            return
        refused = None
        for index, entry_id in zip(rnd.indexes, ids, strict=True):
            if isinstance(entry_id, rex.ResponseError):
                refused = refused or entry_id
            else:
                out.stored[index] = entry_id
        if refused is not None:
            out.fail(refused, True, rnd.key)
            return


def _interleave(lanes: list[Plan]) -> FanoutPlan:
    """Advance every lane; when all of them wait on an Exchange, ask for them together.

    Any other step (settling a cut, a pause, a re-route, a migrating slot) runs alone, in
    lane order, while the others wait: those are the rare paths.
    """
    pending: dict[int, Step] = {}

    def advance(i: int, reply: Any, error: BaseException | None) -> None:
        lane = lanes[i]
        try:
            step = lane.throw(error) if error is not None else lane.send(reply)
        except StopIteration:
            pending.pop(i, None)
            return
        pending[i] = step

    for i, lane in enumerate(lanes):
        try:
            pending[i] = next(lane)
        except StopIteration:
            continue
    while pending:
        order = sorted(pending)
        if all(isinstance(pending[i], Exchange) for i in order):
            steps = tuple(pending[i] for i in order)
            if len(steps) == 1:
                try:
                    reply: Any = yield steps[0]
                except Exception as exc:  # the lane's own handling decides what it means
                    advance(order[0], None, exc)
                else:
                    advance(order[0], reply, None)
                continue
            results = yield Parallel(steps)  # type: ignore[arg-type]
            for i, result in zip(order, results, strict=True):
                if isinstance(result, BaseException):
                    advance(i, None, result)
                else:
                    advance(i, result, None)
            continue
        i = next(i for i in order if not isinstance(pending[i], Exchange))
        try:
            reply = yield pending[i]
        except Exception as exc:
            advance(i, None, exc)
        else:
            advance(i, reply, None)


def write_lanes_plan(
    lanes: Sequence[Sequence[Round]],
    total: int,
    *,
    retries: int,
    backoff: Backoff,
    cluster: bool,
) -> FanoutPlan:
    """Write every lane (the rounds of one key, in order) side by side; all IDs in batch order.

    The same answers as :func:`_produce.write_rounds_plan`: ServerError or a translated error
    when nothing was stored, else ProduceError listing what was stored, unknown and not
    stored. After one lane fails the others finish the round they have in flight (it may
    already be committed) and start no other.
    """
    out = _Outcome()
    yield from _interleave([_lane(rounds, out, retries, backoff, cluster) for rounds in lanes])
    cause = out.cause
    if cause is None:
        return [out.stored[i] for i in range(total)]
    if not out.stored and not out.unknown:
        if out.refused_key is not None:
            raise ServerError(f"XADD to {out.refused_key} refused: {cause}; nothing stored")
        if out.plain or isinstance(cause, _FAILURES):
            raise translate(cause) from cause
    raise ProduceError.build(total, out.stored, out.unknown, cause) from cause
