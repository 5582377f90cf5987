"""The demo's /state snapshot: two pipelined round trips, then shaped as JSON-ready dicts.

Only ``gather`` does I/O; everything else is pure and parses through ``redis_streaming._codec``,
with lag worked out by ``redis_streaming._lag``. It must not change anything on the server.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis
import redis.exceptions as rex

from .. import _codec as codec
from .. import _lag
from .._errors import is_missing_key, translate
from .._fastpath import read_entries
from .._lag import Lag
from .._model import (
    ConsumerInfo,
    ConsumerStatus,
    Delivery,
    Entry,
    GroupInfo,
    PendingEntry,
    StreamInfo,
    StreamStats,
    UndecodableEntry,
)
from ..health import GroupHealth, HealthThresholds, classify_group

#: How many of a consumer's newest deliveries the page shows.
RECENT_SHOWN = 8
#: How many deliveries each demo worker remembers (the worker's ``recent_size``).
RECENT_KEPT = 100
#: Older deliveries that were not acked (dropped, error, dead-lettered) stay listed after the
#: newest ones, up to this many, until RECENT_KEPT newer deliveries push them out: a crash
#: stays visible while you go and reclaim what it dropped.
PROBLEMS_SHOWN = 5
#: How many dead letters the snapshot carries (GET /dlq pages through the rest).
DLQ_SHOWN = 10


@dataclass(frozen=True)
class WorkerView:
    """What the app knows about one of its running workers."""

    status: ConsumerStatus
    recent: Sequence[Delivery]


@dataclass(frozen=True)
class Raw:
    """Parsed server-side facts for one snapshot."""

    server_time_ms: int
    info: StreamInfo
    groups: list[GroupInfo]
    tail: list[Entry]
    consumers: dict[str, list[ConsumerInfo]]
    pending: dict[str, list[PendingEntry]]
    dlq_length: int
    dlq_tail: list[Entry]
    lags: dict[str, Lag]


def _ok(value: Any, empty: Any) -> Any:
    """A pipeline result, with "no such key"/NOGROUP replies read as empty."""
    if isinstance(value, rex.ResponseError) and is_missing_key(value):
        return empty
    if isinstance(value, BaseException):
        raise translate(value)
    return value


def gather(
    client: redis.Redis,
    key: str,
    dlq_key: str,
    *,
    tail_count: int,
    pending_rows: int,
    lag_cap: int = _lag.DEFAULT_LAG_CAP,
) -> Raw:
    """Read everything the page shows: one pipeline for the stream, one for its groups.

    The second one also counts the entries ahead of any group whose lag the server cannot vouch
    for (``lag_cap`` at most), so the lag shown is right without a third round trip.
    """
    try:
        pipe = client.pipeline(transaction=False)
        pipe.time()
        _lag.queue_hello(pipe)
        read_entries(pipe, "XINFO", "STREAM", key)  # entry fields are read as bytes
        pipe.xinfo_groups(key)
        read_entries(pipe, "XREVRANGE", key, "+", "-", "COUNT", tail_count)
        pipe.xlen(dlq_key)
        read_entries(pipe, "XREVRANGE", dlq_key, "+", "-", "COUNT", DLQ_SHOWN)
        now_raw, hello, info_raw, groups_raw, tail_raw, dlq_len, dlq_raw = pipe.execute(
            raise_on_error=False
        )
        seconds, micros = _ok(now_raw, (0, 0))
        info = codec.parse_stream_info(key, _ok(info_raw, None))
        groups = codec.parse_groups(_ok(groups_raw, []))
        decided = _lag.resolve(groups, info, _lag.parse_hello(hello))
        counting: list[str] = []
        replies: list[Any] = []
        consumers: dict[str, list[ConsumerInfo]] = {}
        pending: dict[str, list[PendingEntry]] = {}
        if groups:
            pipe = client.pipeline(transaction=False)
            counting = _lag.queue_counts(pipe, key, groups, decided, lag_cap)
            for g in groups:
                pipe.xinfo_consumers(key, g.name)
                pipe.xpending_range(key, g.name, "-", "+", pending_rows)
            replies = pipe.execute(raise_on_error=False)
            n = len(counting)
            for i, g in enumerate(groups):
                consumers[g.name] = codec.parse_consumers(_ok(replies[n + 2 * i], []))
                pending[g.name] = codec.parse_pending_range(_ok(replies[n + 2 * i + 1], []))
        lags = _lag.finish(
            decided, counting, [_ok(r, []) for r in replies[: len(counting)]], lag_cap
        )
    except rex.RedisError as exc:
        raise translate(exc) from exc
    return Raw(
        server_time_ms=int(seconds) * 1000 + int(micros) // 1000,
        info=info,
        groups=groups,
        tail=codec.parse_entries(_ok(tail_raw, [])),
        consumers=consumers,
        pending=pending,
        dlq_length=codec.to_int(_ok(dlq_len, 0)),
        dlq_tail=codec.parse_entries(_ok(dlq_raw, [])),
        lags=lags,
    )


# ---------------------------------------------------------------- pure shaping


def entry_json(entry: Entry) -> dict[str, Any]:
    """An entry as the page and the guide's scripts read it."""
    out: dict[str, Any] = {
        "id": entry.id,
        "type": entry.type,
        "ts_ms": entry.ts_ms,
        "fields": dict(entry.fields),
    }
    if isinstance(entry, UndecodableEntry):  # fields holds the pairs that decode; raw all
        out["undecodable"] = True
        # As the CLI shows them: UTF-8, each undecodable byte written \xNN.
        out["raw"] = [
            [n.decode("utf-8", "backslashreplace"), v.decode("utf-8", "backslashreplace")]
            for n, v in entry.raw
        ]
    return out


def delivery_json(d: Delivery, kept: bool = False) -> dict[str, Any]:
    """A recent delivery; ``acked`` and ``note`` are the guide's keys, the rest ours.

    ``kept`` marks an older delivery that was not acked, listed after the newest ones.
    """
    return {
        "id": d.id,
        "type": d.type,
        "acked": d.outcome == "acked",
        "note": d.error or ("" if d.outcome == "acked" else d.outcome),
        "outcome": d.outcome,
        "at_ms": d.at_ms,
        "reaped": d.reaped,
        "error": d.error,
        "kept": kept,
    }


def recent_json(recent: Sequence[Delivery]) -> list[dict[str, Any]]:
    """The newest RECENT_SHOWN deliveries (newest first), then up to PROBLEMS_SHOWN older ones
    that were not acked (newest first), so a dropped delivery is not pushed out of sight by the
    next handful of acks."""
    newest = list(recent)[-RECENT_SHOWN:][::-1]
    older = list(recent)[:-RECENT_SHOWN] if len(recent) > RECENT_SHOWN else []
    problems = [d for d in older if d.outcome != "acked"][-PROBLEMS_SHOWN:][::-1]
    return [delivery_json(d) for d in newest] + [delivery_json(d, kept=True) for d in problems]


def consumer_json(
    info: ConsumerInfo | None, group: str, name: str, view: WorkerView | None
) -> dict[str, Any]:
    """One consumer: Redis's view (pending, idle) merged with the worker's counters."""
    st = view.status if view is not None else None
    return {
        "name": name,
        "group": group,
        "pending": info.pending if info is not None else 0,
        "idle_ms": info.idle_ms if info is not None else None,
        "inactive_ms": info.inactive_ms if info is not None else None,
        "managed": view is not None,
        "processed": st.processed if st else 0,
        "reaped": st.reaped if st else 0,
        "failed": st.failed if st else 0,
        "crashed_drops": st.crashed_drops if st else 0,
        "dead_lettered": st.dead_lettered if st else 0,
        "crash_queued": st.crash_queued if st else 0,
        "will_drop": bool(st and st.crash_queued > 0),
        "paused": bool(st and st.paused),
        "alive": bool(st and st.alive),
        "recent": recent_json(view.recent) if view is not None else [],
    }


def group_json(
    group: GroupInfo,
    consumers: Iterable[ConsumerInfo],
    workers: Mapping[str, WorkerView],
    lag: Lag | None,
) -> dict[str, Any]:
    """One group with its consumers, by name (as the guide sorts them, and stable while a new
    worker becomes known to Redis); running workers not yet known to Redis are listed too.

    ``lag`` is the figure ``_lag`` worked out (``lag_exact`` False: at least that many);
    ``server_lag`` is what XINFO GROUPS said, shown for comparison only.
    """
    by_name = {c.name: c for c in consumers}
    names = sorted(by_name.keys() | workers.keys())
    return {
        "name": group.name,
        "pending": group.pending,
        "lag": lag.value if lag is not None else None,
        "lag_exact": lag is not None and lag.exact,
        "server_lag": group.lag,
        "last_delivered_id": group.last_delivered_id,
        "entries_read": group.entries_read,
        "consumers": len(names),
        "consumers_detail": [
            consumer_json(by_name.get(n), group.name, n, workers.get(n)) for n in names
        ],
    }


def classify(
    raw: Raw, thresholds: HealthThresholds, previous: Mapping[str, GroupHealth]
) -> list[GroupHealth]:
    """The health view of every group, from the replies already gathered (no extra I/O)."""
    out = []
    for g in raw.groups:
        rows = raw.pending.get(g.name) or []
        out.append(
            classify_group(
                g,
                raw.info,
                rows[0] if rows else None,  # XPENDING lists by ID: the first is the oldest
                raw.consumers.get(g.name, []),
                raw.server_time_ms,
                thresholds,
                previous.get(g.name),
                lag=raw.lags.get(g.name),
            )
        )
    return out


def thresholds_json(thresholds: HealthThresholds, claim_idle_ms: int) -> dict[str, Any]:
    """The limits behind every verdict, as the page shows them next to the numbers."""
    return {
        "claim_idle_ms": claim_idle_ms,
        "max_pending_idle_ms": thresholds.max_pending_idle_ms,
        "max_pending": thresholds.max_pending,
        "max_lag": thresholds.max_lag,
        "growth_samples": thresholds.growth_samples,
    }


def health_json(
    health: Sequence[GroupHealth], thresholds: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The health panel's data: overall ok, one row per group, and (given) the thresholds."""
    out: dict[str, Any] = {
        "ok": all(h.status == "ok" for h in health),
        "groups": [
            {
                "name": h.name,
                "status": h.status,
                "lag": h.lag,
                "lag_exact": h.lag_exact,
                "pending": h.pending,
                "oldest_pending_id": h.oldest_pending_id,
                "oldest_pending_age_ms": h.oldest_pending_age_ms,
                "oldest_pending_idle_ms": h.oldest_pending_idle_ms,
                "reasons": list(h.reasons),
            }
            for h in health
        ],
    }
    if thresholds is not None:
        out["thresholds"] = dict(thresholds)
    return out


def build_state(
    raw: Raw,
    workers: Mapping[str, Mapping[str, WorkerView]],
    stats: StreamStats,
    extra: Mapping[str, Any],
) -> dict[str, Any]:
    """The whole /state document (guide keys first, extras after)."""
    info = raw.info
    return {
        "ok": True,
        "stream": {
            "key": info.key,
            "exists": info.exists,
            "length": info.length,
            "first_entry_id": info.first_entry_id,
            "last_entry_id": info.last_entry_id,
            "last_generated_id": info.last_generated_id,
            "entries_added": info.entries_added,
        },
        "tail": [entry_json(e) for e in raw.tail],
        "groups": [
            group_json(
                g, raw.consumers.get(g.name, ()), workers.get(g.name, {}), raw.lags.get(g.name)
            )
            for g in raw.groups
        ],
        "pending": [
            {
                "group": g,
                "id": p.id,
                "consumer": p.consumer,
                "idle_ms": p.idle_ms,
                "deliveries": p.deliveries,
            }
            for g, rows in raw.pending.items()
            for p in rows
        ],
        "stats": {
            "produced_total": stats.produced,
            "acked_total": stats.acked,
            "claimed_total": stats.claimed,
        },
        "dlq": {
            "length": raw.dlq_length,
            "entries": [entry_json(e) for e in raw.dlq_tail],
        },
        **extra,
    }
