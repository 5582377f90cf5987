"""The worker core's recovery procedures: reaping idle entries, replaying the own PEL, and
dead-lettering, as steps (see _workercore).

Pure like the core: it yields commands and Handle steps and never waits or sends by itself.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import redis.exceptions as rex

from . import _codec as codec
from . import _plans
from ._errors import StreamingError
from ._model import Entry, ReapResult
from ._ops import Batch, Op
from ._streamcore import DEFAULT_AUTOCLAIM_MAX_PAGES, DEFAULT_AUTOCLAIM_PAGE
from ._workersteps import Steps
from .deadletter import REASON_FAILED, REASON_UNDECODABLE, record_trimmed_plan, send_plan

if TYPE_CHECKING:
    from ._workercore import WorkerCore

logger = logging.getLogger("redis_streaming.worker")


def dead_letters(core: WorkerCore, dead: Sequence[tuple[Entry, int, str]], reaped: bool) -> Steps:
    for entry, deliveries, error in dead:
        reason = REASON_UNDECODABLE if entry.undecodable else REASON_FAILED
        plan = send_plan(
            core.stream.key, core._dead_letter_key(), core.group, core.name, entry,
            deliveries, error, reason,
        )  # fmt: skip
        try:
            letter = yield from plan
        except (StreamingError, rex.RedisError) as exc:
            logger.warning("could not dead-letter %s: %s (stays pending)", entry.id, exc)
            core._record(entry, "error", reaped, error)
            continue
        if letter is None:  # no longer pending here: a peer acked or dead-lettered it first
            continue
        core.dead_lettered += 1
        core._record(entry, "dead-lettered", reaped, error)


def recovered(core: WorkerCore, entries: list[Entry], deleted: Sequence[str]) -> Steps:
    """Handle entries taken from a PEL and ack them now; returns (acked, dropped, failed)."""
    failed_before = core.failed
    acked: list[str] = []
    dropped = 0
    if entries and core._pending_acks:
        # Handled already, their acks queued (an XACK was refused): not handled again.
        queued = set(core._pending_acks)
        entries = [e for e in entries if e.id not in queued]
    if entries:
        counts: dict[str, int] = {}
        if core.max_deliveries is not None:
            # Redis's own delivery counter, one pipelined XPENDING per ID.
            ops = [
                Op("xpending_range", (core.stream.key, core.group, e.id, e.id, 1),
                   parse=codec.parse_pending_range, tolerate=True)
                for e in entries
            ]  # fmt: skip
            for rows in (yield Batch(ops)):
                if not isinstance(rows, BaseException):
                    counts.update((row.id, row.deliveries) for row in rows)
        acked, dropped = yield from core._handle(entries, True, counts)
        if acked:
            n = yield core._ack_op(acked)
            core.stream._count(acked=int(n))
        core.reaped += len(acked)
    if deleted:
        if core.max_deliveries is not None:
            yield from record_trimmed_plan(
                core.stream.key, core._dead_letter_key(), core.group, core.name, deleted
            )
        else:
            logger.warning(
                "%d pending entries on %s/%s were trimmed before processing",
                len(deleted), core.stream.key, core.group,
            )  # fmt: skip
            # Nothing is left to process; without the ack an own-PEL re-read keeps them
            # pending forever.
            yield _plans.ack(core.stream.key, core.group, list(deleted))
    return len(acked), dropped, core.failed - failed_before


def reap(core: WorkerCore, min_idle_ms: int | None = None) -> Steps:
    """XAUTOCLAIM idle entries to this consumer and process them; returns a ReapResult.

    Resumes where the last sweep stopped, so a PEL longer than one sweep (young entries in
    front of idle ones included) is covered over successive sweeps.
    """
    if not core._may_read():
        return ReapResult()
    idle = core.claim_min_idle_ms if min_idle_ms is None else min_idle_ms
    claimed = processed = dropped = failed = 0
    deleted_all: list[str] = []
    dl_before = core.dead_lettered
    key = core.stream.key
    for _ in range(DEFAULT_AUTOCLAIM_MAX_PAGES):
        cursor, entries, deleted = yield _plans.autoclaim_page(
            key, core.group, core.name, idle, core._reap_cursor, DEFAULT_AUTOCLAIM_PAGE
        )
        core.stream._count(claimed=len(entries))
        core._reap_cursor = "0-0" if cursor == "0" else cursor
        claimed += len(entries)
        deleted_all.extend(deleted)
        a, d, f = yield from recovered(core, entries, deleted)
        processed, dropped, failed = processed + a, dropped + d, failed + f
        if core._reap_cursor == "0-0":
            break
    if claimed or deleted_all:
        logger.info(
            "%s reaped on %s/%s: %d claimed, %d processed, %d dropped, %d trimmed",
            core.name, key, core.group, claimed, processed, dropped, len(deleted_all),
        )  # fmt: skip
    return ReapResult(
        claimed=claimed,
        processed=processed,
        deleted_ids=tuple(deleted_all),
        dropped=dropped,
        failed=failed,
        dead_lettered=core.dead_lettered - dl_before,
    )


def replay_own_pel(core: WorkerCore) -> Steps:
    """Restart path: handle this consumer's own pending entries once, page by page."""
    after = "0"
    total = 0
    while not core._stopping():
        entries, deleted = yield _plans.read_own_pel(
            core.stream.key, core.group, core.name, core.count, after
        )
        if not entries and not deleted:
            break
        acked, _dropped, _failed = yield from recovered(core, entries, deleted)
        total += acked
        after = max([e.id for e in entries] + list(deleted), key=codec.parse_id)
    if total:
        logger.info(
            "%s re-processed %d own pending entries on %s/%s",
            core.name, total, core.stream.key, core.group,
        )  # fmt: skip
    return total
