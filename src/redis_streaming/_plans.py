"""One plan per EventStream method: validation, the commands, how replies become results.

Pure (see :mod:`_ops`): the sync EventStream and the async AsyncEventStream both call these and
only run what they return, so validation, paging and error meaning are written once. Each
function validates its arguments when called (before anything is sent), then returns an
:class:`~._ops.Op` or a generator plan. It must not do I/O nor keep state between calls.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from typing import Any, Final

from . import _codec as codec
from ._errors import InvalidOption
from ._model import (
    AckDeleteResult,
    ClaimResult,
    ConsumerInfo,
    Entry,
    GroupInfo,
    PendingEntry,
    StreamInfo,
)
from ._ops import Emit, Op, Plan, Step, raw_command

logger = logging.getLogger(__name__)

#: XAUTOCLAIM allocates COUNT IDs up front: a huge COUNT fails with "COUNT too high".
MAX_AUTOCLAIM_PAGE: Final = 100_000


# ---------------------------------------------------------------- groups


def ensure_group(key: str, group: str, start_id: str) -> Plan[bool]:
    codec.validate_name(group, "group")
    start = codec.validate_group_start(start_id)
    return _ensure_group(key, group, start)


def _ensure_group(key: str, group: str, start: str) -> Plan[bool]:
    created = yield Op(
        "xgroup_create", (key, group), {"id": start, "mkstream": True}, busygroup=False
    )
    if created is False:
        return False
    logger.info("created group %s on %s from %s", group, key, start)
    return True


def delete_group(key: str, group: str) -> Op:
    codec.validate_name(group, "group")
    return Op("xgroup_destroy", (key, group), parse=bool, missing=False)


def delete_consumer(key: str, group: str, consumer: str) -> Op:
    codec.validate_name(group, "group")
    codec.validate_name(consumer, "consumer")
    return Op("xgroup_delconsumer", (key, group, consumer), parse=int, missing=0)


# ---------------------------------------------------------------- reading


def read_group(
    key: str, group: str, consumer: str, start: str, count: int, block_ms: int | None
) -> Op:
    """XREADGROUP (unvalidated: callers validate or pass server-given values)."""
    args: tuple[Any, ...] = ("XREADGROUP", "GROUP", group, consumer, "COUNT", count)
    if block_ms is not None:
        args += ("BLOCK", block_ms)
    return raw_command(*args, "STREAMS", key, start, parse=codec.parse_xread)


def consume(key: str, group: str, consumer: str, count: int, block_ms: int | None) -> Op:
    codec.validate_name(group, "group")
    codec.validate_name(consumer, "consumer")
    codec.validate_int(count, "count", minimum=1)
    if block_ms is not None:
        codec.validate_block_ms(block_ms)
    return read_group(key, group, consumer, ">", count, block_ms)


def _own_pel(raw: Any) -> tuple[list[Entry], list[str]]:
    entries: list[Entry] = []
    deleted: list[str] = []
    for item in codec.xread_items(raw):
        entry = codec.parse_entry(item)
        if entry is None:
            deleted.append(codec.to_str(item[0]))
        else:
            entries.append(entry)
    return entries, deleted


def read_own_pel(key: str, group: str, consumer: str, count: int, after: str) -> Op:
    """XREADGROUP with a concrete ID: (readable entries, IDs whose payload was trimmed)."""
    return raw_command(
        "XREADGROUP", "GROUP", group, consumer, "COUNT", count, "STREAMS", key, after,
        parse=_own_pel,
    )  # fmt: skip


def consume_own_pel(key: str, group: str, consumer: str, count: int, after: str) -> Op:
    codec.validate_name(group, "group")
    codec.validate_name(consumer, "consumer")
    codec.validate_int(count, "count", minimum=1)
    codec.validate_id(after, "after")
    op = read_own_pel(key, group, consumer, count, after)
    return Op(op.method, op.args, op.kwargs, parse=lambda raw: _own_pel(raw)[0])


def ack(key: str, group: str, ids: list[str]) -> Op:
    """XACK of IDs known to be valid (at least one)."""
    return Op("xack", (key, group, *ids), parse=int)


#: XACKDEL / XTRIM reference policies: ``keepref`` deletes the entry and leaves other groups'
#: PEL references dangling (they can no longer read it); ``delref`` deletes it and removes it
#: from every group's PEL; ``acked`` deletes it only once every group has acknowledged it.
REF_POLICIES: Final = ("keepref", "delref", "acked")


def validate_ref(ref: object) -> str:
    if ref not in REF_POLICIES:
        raise InvalidOption(f"ref must be one of {', '.join(REF_POLICIES)}, got {ref!r}")
    return str(ref)


def ack_delete_args(key: str, group: str, ids: list[str], ref: str) -> tuple[str, ...]:
    return ("XACKDEL", key, group, ref.upper(), "IDS", str(len(ids)), *ids)


def _ackdel_result(ids: list[str]) -> Any:
    def parse(codes: Any) -> AckDeleteResult:
        out: dict[int, list[str]] = {1: [], 2: [], -1: []}
        for entry_id, code in zip(ids, codes, strict=True):
            out.get(int(code), out[-1]).append(entry_id)
        return AckDeleteResult(tuple(out[1]), tuple(out[2]), tuple(out[-1]))

    return parse


def ack_delete(key: str, group: str, ids: list[str], ref: str) -> Op:
    """XACKDEL of IDs known to be valid (at least one): an AckDeleteResult."""
    return Op("execute_command", ack_delete_args(key, group, ids, ref), parse=_ackdel_result(ids))


def acked_count(codes: Any) -> int:
    """How many IDs an XACKDEL reply says were acknowledged (deleted or kept)."""
    return sum(1 for code in codes if int(code) in (1, 2))


def checked_ids(group: str, ids: object) -> list[str]:
    codec.validate_name(group, "group")
    return codec.validate_ids(ids)


# ---------------------------------------------------------------- recovery


def autoclaim_page(
    key: str, group: str, consumer: str, min_idle_ms: int, start_id: str, count: int
) -> Op:
    """One XAUTOCLAIM: (next cursor, claimed entries, IDs deleted by trimming)."""
    return raw_command(
        "XAUTOCLAIM", key, group, consumer, min_idle_ms, start_id, "COUNT", count,
        parse=codec.parse_autoclaim,
    )  # fmt: skip


def autoclaim_pages(
    key: str,
    group: str,
    consumer: str,
    min_idle_ms: int,
    page_count: int,
    start_id: str,
    max_pages: int,
) -> Plan[None]:
    """Emits one ClaimResult per XAUTOCLAIM call, following the server's cursor."""
    codec.validate_name(group, "group")
    codec.validate_name(consumer, "consumer")
    codec.validate_int(page_count, "page_count", minimum=1, maximum=MAX_AUTOCLAIM_PAGE)
    codec.validate_int(max_pages, "max_pages", minimum=1)
    codec.validate_id(start_id, "start_id")
    codec.validate_int(min_idle_ms, "min_idle_ms")
    return _autoclaim_pages(key, group, consumer, min_idle_ms, page_count, start_id, max_pages)


def _autoclaim_pages(
    key: str,
    group: str,
    consumer: str,
    idle: int,
    page_count: int,
    cursor: str,
    max_pages: int,
) -> Plan[None]:
    for _ in range(max_pages):
        cursor, entries, deleted = yield autoclaim_page(
            key, group, consumer, idle, cursor, page_count
        )
        if cursor == "0":
            cursor = "0-0"
        yield Emit(ClaimResult(tuple(entries), tuple(deleted), cursor))
        if cursor == "0-0":
            return


def collect_claims(key: str, group: str, consumer: str, pages: list[ClaimResult]) -> ClaimResult:
    """autoclaim()'s result: every page's claims, the last cursor."""
    claimed = [e for page in pages for e in page.claimed]
    deleted = [i for page in pages for i in page.deleted_ids]
    cursor = pages[-1].next_start_id if pages else "0-0"
    if claimed or deleted:
        logger.info(
            "autoclaim on %s/%s to %s: %d claimed, %d deleted, next %s",
            key, group, consumer, len(claimed), len(deleted), cursor,
        )  # fmt: skip
    return ClaimResult(tuple(claimed), tuple(deleted), cursor)


def claim(key: str, group: str, consumer: str, ids: object, min_idle_ms: int) -> Op | None:
    """XCLAIM specific IDs; None when there is nothing to claim."""
    codec.validate_name(group, "group")
    codec.validate_name(consumer, "consumer")
    codec.validate_int(min_idle_ms, "min_idle_ms")
    checked = codec.validate_ids(ids)
    if not checked:
        return None
    return raw_command(
        "XCLAIM", key, group, consumer, min_idle_ms, *checked, parse=codec.parse_entries
    )


def handover_pending(key: str, group: str, src: str, dst: str, batch: int) -> Plan[int]:
    codec.validate_name(group, "group")
    codec.validate_name(src, "from_consumer")
    codec.validate_name(dst, "to_consumer")
    codec.validate_int(batch, "batch", minimum=1)
    if src == dst:
        raise InvalidOption(f"cannot hand {src!r}'s entries over to itself")
    return _handover(key, group, src, dst, batch)


def _handover(key: str, group: str, src: str, dst: str, batch: int) -> Plan[int]:
    moved = 0
    previous_first: str | None = None
    while True:
        rows: list[PendingEntry] = yield pending_rows(key, group, "-", "+", batch, src, None)
        if not rows:
            break
        ids = [row.id for row in rows]
        if ids[0] == previous_first:
            # Nothing moved last round: XCLAIM refused them all; stop instead of spinning.
            logger.warning("handover on %s/%s stalled at %s", key, group, ids[0])
            break
        previous_first = ids[0]
        claimed = yield Op("xclaim", (key, group, dst, 0, ids), {"justid": True})
        moved += len(claimed)
    if moved:
        logger.info(
            "handed %d pending entries on %s/%s from %s to %s", moved, key, group, src, dst
        )
    return moved


# ---------------------------------------------------------------- history and retention


def xrange(command: str, key: str, start: str, end: str, count: int | None) -> Op:
    args: tuple[Any, ...] = (command, key, start, end)
    if count is not None:
        args += ("COUNT", count)
    return raw_command(*args, parse=codec.parse_entries)


def replay(key: str, start: str, end: str, count: int | None) -> Op:
    codec.validate_range_bound(start, "start")
    codec.validate_range_bound(end, "end")
    if count is not None:
        codec.validate_int(count, "count", minimum=1)
    return xrange("XRANGE", key, start, end, count)


def iter_replay(key: str, start: str, end: str, page: int) -> Plan[None]:
    """Emits every entry from ``start`` to ``end``, fetched ``page`` at a time."""
    codec.validate_range_bound(start, "start")
    codec.validate_range_bound(end, "end")
    codec.validate_int(page, "page", minimum=1)
    return _iter_replay(key, start, end, page)


def _iter_replay(key: str, cursor: str, end: str, page: int) -> Plan[None]:
    while True:
        entries: list[Entry] = yield xrange("XRANGE", key, cursor, end, page)
        for entry in entries:
            yield Emit(entry)
        if len(entries) < page:
            return
        cursor = "(" + entries[-1].id


def tail(key: str, count: int) -> Op:
    codec.validate_int(count, "count", minimum=1)
    return xrange("XREVRANGE", key, "+", "-", count)


def length(key: str) -> Op:
    return Op("xlen", (key,), parse=int)


def trim_maxlen(key: str, n: int, approximate: bool) -> Op:
    codec.validate_int(n, "maxlen")
    return Op("xtrim", (key,), {"maxlen": n, "approximate": approximate}, parse=int)


def trim_minid(key: str, min_id: str, approximate: bool) -> Op:
    codec.validate_id(min_id, "min_id")
    return Op("xtrim", (key,), {"minid": min_id, "approximate": approximate}, parse=int)


def delete_stream(key: str) -> Op:
    return Op("delete", (key,), parse=bool)


# ---------------------------------------------------------------- inspection


def info_stream(key: str) -> Op:
    """XINFO STREAM; a missing stream gives ``StreamInfo(exists=False, length=0)``."""

    def parse(raw: Any) -> StreamInfo:
        return codec.parse_stream_info(key, raw)

    return raw_command("XINFO", "STREAM", key, parse=parse, missing=parse(None))


def info_groups(key: str) -> Op:
    empty: list[GroupInfo] = []
    return Op("xinfo_groups", (key,), parse=codec.parse_groups, missing=empty)


def info_consumers(key: str, group: str) -> Op:
    codec.validate_name(group, "group")
    empty: list[ConsumerInfo] = []
    return Op("xinfo_consumers", (key, group), parse=codec.parse_consumers, missing=empty)


def pending_rows(
    key: str,
    group: str,
    start: str,
    end: str,
    count: int,
    consumer: str | None,
    min_idle_ms: int | None,
) -> Op:
    empty: list[PendingEntry] = []
    return Op(
        "xpending_range",
        (key, group, start, end, count),
        {"consumername": consumer, "idle": min_idle_ms},
        parse=codec.parse_pending_range,
        missing=empty,
    )


def pending(
    key: str,
    group: str,
    start: str,
    end: str,
    count: int,
    consumer: str | None,
    min_idle_ms: int | None,
) -> Op:
    codec.validate_name(group, "group")
    codec.validate_range_bound(start, "start")
    codec.validate_range_bound(end, "end")
    codec.validate_int(count, "count", minimum=1)
    if consumer is not None:
        codec.validate_name(consumer, "consumer")
    if min_idle_ms is not None:
        codec.validate_int(min_idle_ms, "min_idle_ms")
    return pending_rows(key, group, start, end, count, consumer, min_idle_ms)


# The type the shells' ``plan`` arguments accept.
Runnable = Op | Generator[Step, Any, Any]
