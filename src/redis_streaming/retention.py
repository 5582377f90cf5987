"""Retention: trim a stream by age, or only as far as every consumer group has acknowledged.

The limit arithmetic is pure (top half); the I/O helpers are thin (bottom half). It must never
remove an entry a group has not been delivered or has not acked, unless a hard cap says so.

A group still needs every entry it has not been delivered (IDs above its last-delivered-id) and
every entry it was delivered but has not acked (IDs from its oldest pending one up). Its limit is
therefore ``min(oldest pending ID, last-delivered-id + 1)``, and the stream-wide safe limit is the
lowest group limit: ``XTRIM MINID <limit>`` removes only IDs strictly below it. The approximate
form (``MINID ~``) removes whole radix-tree nodes only, so it can remove less, never more.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Final

from . import _codec as codec
from . import _drive
from ._caps import Capabilities
from ._errors import InvalidOption
from ._model import GroupInfo
from ._ops import Batch, Op, Plan, raw_command

if TYPE_CHECKING:
    from .stream import EventStream

logger = logging.getLogger(__name__)

__all__ = [
    "GroupLimit",
    "RetainReport",
    "TrimReport",
    "age_min_id",
    "group_limit",
    "retain",
    "safe_limit",
    "trim_safe",
]

#: trim_safe counts the entries a group holds back up to this many (then reports a lower bound).
DEFAULT_COUNT_CAP: Final = 10_000


@dataclass(frozen=True, slots=True)
class GroupLimit:
    """How far one group allows the stream to be trimmed: IDs below ``limit_id`` are done."""

    name: str
    limit_id: str
    last_delivered_id: str
    oldest_pending_id: str | None
    pending: int
    lag: int | None


@dataclass(frozen=True, slots=True)
class TrimReport:
    """What :meth:`EventStream.trim_safe` did.

    ``min_id``: the safe limit used (None when there were no groups, so nothing was trimmed).
    ``deleted``: entries removed in total; ``forced_deleted`` of them were removed by
    ``hard_cap`` beyond the safe limit, taking entries from ``overridden_groups``.
    ``held_by``: the group whose limit was lowest; ``held_back``: entries still in the stream
    only because of it (what would also have gone had it caught up with the next slowest group,
    or the stream's end); a lower bound when ``held_back_exact`` is False.
    """

    stream: str
    min_id: str | None
    deleted: int
    remaining: int
    held_by: str | None
    held_back: int
    held_back_exact: bool
    groups: tuple[GroupLimit, ...]
    approximate: bool
    hard_cap: int | None = None
    forced_deleted: int = 0
    overridden_groups: tuple[str, ...] = ()
    #: True when the trim was one ``XTRIM ... ACKED`` (Redis 8.2+): the server itself refused to
    #: remove any entry a group had not acknowledged, so no race with groups changing meanwhile.
    server_checked: bool = False


@dataclass(frozen=True, slots=True)
class RetainReport:
    """What :meth:`EventStream.retain` did: entries older than ``min_id`` were removed.

    With ``safe=True`` the limit never passes the safe-trim limit; ``held_by`` then names the
    group that kept entries older than ``max_age`` alive (None if age alone decided).
    """

    stream: str
    max_age_s: float
    min_id: str
    deleted: int
    remaining: int
    approximate: bool
    held_by: str | None = None


# ------------------------------------------------------------------ pure part


def group_limit(group: GroupInfo, oldest_pending_id: str | None) -> GroupLimit:
    """The lowest ID ``group`` still needs (everything below it may go)."""
    after_delivered = codec.id_after(group.last_delivered_id)
    limit = after_delivered
    if oldest_pending_id is not None and codec.parse_id(oldest_pending_id) < codec.parse_id(limit):
        limit = oldest_pending_id
    return GroupLimit(
        name=group.name,
        limit_id=limit,
        last_delivered_id=group.last_delivered_id,
        oldest_pending_id=oldest_pending_id,
        pending=group.pending,
        lag=group.lag,
    )


def safe_limit(limits: Iterable[GroupLimit]) -> tuple[GroupLimit, GroupLimit | None] | None:
    """The group with the lowest limit and the next-lowest one (None if there are no groups).

    Ties go to the first group listed, so reports are stable.
    """
    ordered = sorted(limits, key=lambda g: codec.parse_id(g.limit_id))
    if not ordered:
        return None
    return ordered[0], (ordered[1] if len(ordered) > 1 else None)


def max_age_ms(max_age: float | timedelta) -> int:
    """``max_age`` (seconds or a timedelta) in whole milliseconds; must be >= 0."""
    if isinstance(max_age, timedelta):
        seconds = max_age.total_seconds()
    elif isinstance(max_age, (int, float)) and not isinstance(max_age, bool):
        seconds = float(max_age)
    else:
        raise InvalidOption(f"max_age must be seconds or a timedelta, got {max_age!r}")
    if not seconds >= 0 or seconds == float("inf"):
        raise InvalidOption(f"max_age must be a finite number of seconds >= 0, got {max_age!r}")
    return int(seconds * 1000)


def age_min_id(now_ms: int, max_age: float | timedelta) -> str:
    """The MINID that keeps entries produced within ``max_age`` of ``now_ms``."""
    return f"{max(0, now_ms - max_age_ms(max_age))}-0"


def lower_id(a: str, b: str) -> str:
    """The lower of two IDs."""
    return a if codec.parse_id(a) <= codec.parse_id(b) else b


# ------------------------------------------------------------------ plans (see _ops)
# Written once as generators of commands; ``trim_safe``/``retain`` below run them over a sync
# client, aio.features over an async one.


def group_limits_plan(key: str) -> Plan[list[GroupLimit]]:
    """Every group's limit, read in two round trips (XINFO GROUPS, then pipelined XPENDING)."""
    empty: list[GroupInfo] = []
    groups: list[GroupInfo] = yield Op(
        "xinfo_groups", (key,), parse=codec.parse_groups, missing=empty
    )
    if not groups:
        return []
    summaries = yield Batch([Op("xpending", (key, g.name), missing={}) for g in groups])
    out = []
    for g, summary in zip(groups, summaries, strict=True):
        oldest = summary.get("min") if summary and summary.get("pending") else None
        out.append(group_limit(g, None if oldest is None else codec.to_str(oldest)))
    return out


def _count_from(key: str, start: str, end: str | None, cap: int) -> Plan[tuple[int, bool]]:
    """Entries with start <= ID < end (end None: to the stream's end), counted up to ``cap``."""
    if end is not None and codec.parse_id(end) <= codec.parse_id(start):
        return 0, True
    hi = "+" if end is None else "(" + end
    n = yield raw_command("XRANGE", key, start, hi, "COUNT", cap + 1, parse=lambda r: len(r or ()))
    return min(n, cap), n <= cap


def trim_safe_plan(
    key: str,
    hard_cap: int | None,
    approximate: bool,
    count_cap: int = DEFAULT_COUNT_CAP,
    caps: Capabilities | None = None,
) -> Plan[TrimReport]:
    """:func:`trim_safe` as a plan; arguments validated when called. ``caps``: what the server
    supports (see _caps); with ACKED trimming the trim itself is checked by the server."""
    if hard_cap is not None:
        codec.validate_int(hard_cap, "hard_cap")
    codec.validate_int(count_cap, "count_cap", minimum=1)
    return _trim_safe(key, hard_cap, approximate, count_cap, caps)


def _server_checked(caps: Capabilities | None, approximate: bool) -> bool:
    # Redis 8.2 has ACKED, but "~ ... ACKED" removes nothing there (fixed in 8.6): an
    # approximate trim keeps the two-step path on 8.2; an exact one is a single ACKED XTRIM.
    return caps is not None and caps.acked_trim and (caps.approx_acked_trim or not approximate)


def _trim_safe(
    key: str, hard_cap: int | None, approximate: bool, count_cap: int, caps: Capabilities | None
) -> Plan[TrimReport]:
    limits = yield from group_limits_plan(key)
    lowest = safe_limit(limits)
    deleted = forced = 0
    min_id: str | None = None
    checked = _server_checked(caps, approximate) and lowest is not None
    if lowest is not None:
        min_id = lowest[0].limit_id
        if checked:
            # The limit read above is only an upper bound here: ACKED makes the server keep
            # anything a group has not acknowledged, even one created since the read.
            how = "~" if approximate else "="
            deleted = yield Op(
                "execute_command", ("XTRIM", key, "MINID", how, min_id, "ACKED"), parse=int
            )
        else:
            deleted = yield Op("xtrim", (key,), {"minid": min_id, "approximate": approximate}, int)
    length = yield Op("xlen", (key,), parse=int)
    if hard_cap is not None and length > hard_cap:
        forced = yield Op("xtrim", (key,), {"maxlen": hard_cap, "approximate": False}, int)
        length -= forced
    overridden: tuple[str, ...] = ()
    if forced:
        head = yield raw_command("XRANGE", key, "-", "+", "COUNT", 1)
        first = codec.to_str(head[0][0]) if head else None
        # A group lost entries if the new head is above its limit (or the stream is now empty).
        overridden = tuple(
            g.name
            for g in limits
            if first is None or codec.parse_id(g.limit_id) < codec.parse_id(first)
        )
        logger.warning(
            "hard cap %d on %s removed %d entries beyond the safe limit (groups: %s)",
            hard_cap, key, forced, ", ".join(overridden) or "-",
        )  # fmt: skip
    held_back, exact = 0, True
    held_by = None
    if lowest is not None:
        held_by = lowest[0].name
        nxt = lowest[1].limit_id if lowest[1] is not None else None
        held_back, exact = yield from _count_from(key, lowest[0].limit_id, nxt, count_cap)
    report = TrimReport(
        stream=key,
        min_id=min_id,
        deleted=deleted + forced,
        remaining=length,
        held_by=held_by,
        held_back=held_back,
        held_back_exact=exact,
        groups=tuple(limits),
        approximate=approximate,
        hard_cap=hard_cap,
        forced_deleted=forced,
        overridden_groups=overridden,
        server_checked=checked,
    )
    logger.info(
        "safe trim on %s to %s: %d deleted, %d held back by %s",
        key, min_id, report.deleted, held_back, held_by,
    )  # fmt: skip
    return report


def server_time_op() -> Op:
    """TIME as ms: the server's clock, so age limits do not depend on this host's clock."""
    return Op("time", parse=codec.parse_time_ms)


def retain_plan(
    key: str, max_age: float | timedelta, approximate: bool, safe: bool
) -> Plan[RetainReport]:
    """:func:`retain` as a plan; ``max_age`` validated when called."""
    age_s = max_age_ms(max_age) / 1000.0
    return _retain(key, max_age, age_s, approximate, safe)


def _retain(
    key: str, max_age: float | timedelta, age_s: float, approximate: bool, safe: bool
) -> Plan[RetainReport]:
    min_id = age_min_id((yield server_time_op()), max_age)
    held_by = None
    if safe:
        lowest = safe_limit((yield from group_limits_plan(key)))
        if lowest is not None and lower_id(lowest[0].limit_id, min_id) != min_id:
            min_id = lowest[0].limit_id
            held_by = lowest[0].name
    deleted = yield Op("xtrim", (key,), {"minid": min_id, "approximate": approximate}, int)
    remaining = yield Op("xlen", (key,), parse=int)
    logger.info("retain %.3fs on %s: %d deleted below %s", age_s, key, deleted, min_id)
    return RetainReport(
        stream=key,
        max_age_s=age_s,
        min_id=min_id,
        deleted=deleted,
        remaining=remaining,
        approximate=approximate,
        held_by=held_by,
    )


# ------------------------------------------------------------------ sync entry points


def group_limits(stream: EventStream) -> list[GroupLimit]:
    """Every group's limit, read in two pipelined round trips."""
    return _drive.run(stream.client, group_limits_plan(stream.key))  # type: ignore[no-any-return]


def trim_safe(
    stream: EventStream,
    hard_cap: int | None = None,
    *,
    approximate: bool = True,
    count_cap: int = DEFAULT_COUNT_CAP,
) -> TrimReport:
    """Trim entries every group has been delivered and acked; then apply ``hard_cap``.

    ``hard_cap`` (a maximum length) overrides safety: if the stream is still longer, it is
    trimmed to exactly ``hard_cap`` entries even if a group has not processed them.
    A stream without groups is left alone (nothing says its entries were consumed).
    Commands: XINFO GROUPS, XPENDING per group, XTRIM MINID, XLEN (XTRIM MAXLEN for the cap),
    XRANGE to count what is held back. Raises RedisUnavailable / ServerError.
    """
    plan = trim_safe_plan(stream.key, hard_cap, approximate, count_cap, stream.capabilities())
    return _drive.run(stream.client, plan)  # type: ignore[no-any-return]


def server_time_ms(stream: EventStream) -> int:
    """The server's clock in ms (so age limits do not depend on this host's clock)."""
    return _drive.run(stream.client, server_time_op())  # type: ignore[no-any-return]


def retain(
    stream: EventStream,
    max_age: float | timedelta,
    *,
    approximate: bool = True,
    safe: bool = False,
) -> RetainReport:
    """Remove entries produced more than ``max_age`` ago (by their ID's time, server clock).

    With ``safe=True`` never go past the safe-trim limit (entries older than ``max_age`` that a
    group still needs stay). Commands: TIME, XTRIM MINID, XLEN (and trim_safe's reads).
    """
    plan = retain_plan(stream.key, max_age, approximate, safe)
    return _drive.run(stream.client, plan)  # type: ignore[no-any-return]


def describe_limits(limits: Sequence[GroupLimit]) -> str:
    """One line per group, for logs and the CLI."""
    return "\n".join(
        f"{g.name}: limit {g.limit_id} (last delivered {g.last_delivered_id}, "
        f"oldest pending {g.oldest_pending_id or '-'}, pending {g.pending})"
        for g in limits
    )
