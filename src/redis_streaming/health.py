"""Health and lag view of one stream: per group lag, pending, oldest pending age, consumer idle.

Reading is two pipelined round trips; classification is pure and never touches Redis. It must not
change any stream state (no claims, no trims) and keeps no threads.

Stable API (used by the demo and the CLI):

    check_health(stream, thresholds=None, *, dead_letter_key=None, previous=None,
                 lag_cap=DEFAULT_LAG_CAP) -> HealthReport
    HealthMonitor(stream, thresholds=None, *, dead_letter_key=None, lag_cap=...).check()
    HealthReport.to_dict() -> JSON-ready dict

Lag comes from ``_lag`` (the one place it is worked out): the server's figure when it is sound,
else a bounded count of the entries after the group's last-delivered ID, which the second round
trip carries. ``GroupHealth.lag_exact`` is False when that count hit ``lag_cap``.

A group is classified from two independent signals:

* ``lagging`` -- "consumers can't keep up": lag (entries not yet delivered to the group) is above
  ``max_lag`` (a lower bound above it counts), or it has grown over the last ``growth_samples``
  checks in a row (exact figures only).
* ``stuck`` -- "consumers crash without reaping": more than ``max_pending`` entries delivered
  but not acked, or the oldest pending entry has not been (re)delivered for
  ``max_pending_idle_ms`` (a reaper would have claimed it long ago).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal

from . import _codec as codec
from . import _drive, _lag
from ._errors import InvalidOption, is_missing_key, translate
from ._lag import DEFAULT_LAG_CAP, Lag
from ._model import ConsumerInfo, GroupInfo, PendingEntry, StreamInfo
from ._ops import Batch, Op, Plan, raw_command
from ._streamcore import StreamCore

if TYPE_CHECKING:  # annotations only: stream -> retention -> health must not loop back
    from .stream import EventStream

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_LAG_CAP",
    "GroupHealth",
    "HealthMonitor",
    "HealthReport",
    "HealthStatus",
    "HealthThresholds",
    "check_health",
    "classify_group",
]

DEFAULT_MAX_LAG: Final = 1000
DEFAULT_MAX_PENDING: Final = 1000
DEFAULT_MAX_PENDING_IDLE_MS: Final = 60_000
DEFAULT_GROWTH_SAMPLES: Final = 3

HealthStatus = Literal["ok", "lagging", "stuck", "lagging+stuck"]


@dataclass(frozen=True, slots=True)
class HealthThresholds:
    """Limits that turn raw numbers into a status; validated when built.

    ``growth_samples``: lag counts as growing when it rose on each of this many consecutive
    checks (needs a ``previous`` report; ``0`` turns the trend signal off).
    """

    max_lag: int = DEFAULT_MAX_LAG
    max_pending: int = DEFAULT_MAX_PENDING
    max_pending_idle_ms: int = DEFAULT_MAX_PENDING_IDLE_MS
    growth_samples: int = DEFAULT_GROWTH_SAMPLES

    @classmethod
    def for_claim_idle(cls, claim_min_idle_ms: int, **overrides: int) -> HealthThresholds:
        """The one shared rule: an entry pending for twice the claim threshold (at least 1 s)
        counts as stuck, because a healthy reaper would have reclaimed it by then.

        The demo and ``redis-streaming inspect`` both build their thresholds here, so the same
        idle time gets the same verdict everywhere. Raises :class:`InvalidOption` for a value
        out of range.
        """
        codec.validate_int(claim_min_idle_ms, "claim_min_idle_ms")
        idle = max(2 * claim_min_idle_ms, 1000)
        return cls(**{"max_pending_idle_ms": idle, **overrides})

    def __post_init__(self) -> None:
        codec.validate_int(self.max_lag, "max_lag")
        codec.validate_int(self.max_pending, "max_pending")
        codec.validate_int(self.max_pending_idle_ms, "max_pending_idle_ms")
        codec.validate_int(self.growth_samples, "growth_samples", maximum=100)


@dataclass(frozen=True, slots=True)
class GroupHealth:
    """One consumer group's numbers and its classification.

    ``lag`` is the number of entries not yet delivered to the group, worked out by ``_lag``;
    when ``lag_exact`` is False it is a lower bound ("at least"). It is None only when
    :func:`classify_group` was given no count where one was needed. ``oldest_pending_age_ms`` is
    measured from the entry's ID (when it was produced), ``oldest_pending_idle_ms`` from its last
    delivery. ``lag_history`` holds the last few exact lag samples, oldest first, so a later
    check can see a trend.
    """

    name: str
    consumers: tuple[ConsumerInfo, ...]
    pending: int
    lag: int | None
    lag_exact: bool
    last_delivered_id: str
    entries_read: int | None
    oldest_pending_id: str | None
    oldest_pending_age_ms: int | None
    oldest_pending_idle_ms: int | None
    oldest_pending_deliveries: int | None
    max_consumer_idle_ms: int | None
    lag_history: tuple[int, ...]
    lagging: bool
    stuck: bool
    reasons: tuple[str, ...]

    @property
    def status(self) -> HealthStatus:
        """``ok``, ``lagging`` (can't keep up), ``stuck`` (not reaping) or both."""
        if self.lagging and self.stuck:
            return "lagging+stuck"
        if self.lagging:
            return "lagging"
        if self.stuck:
            return "stuck"
        return "ok"


@dataclass(frozen=True, slots=True)
class HealthReport:
    """The health of one stream at ``server_time_ms`` (the server's clock)."""

    stream: str
    exists: bool
    length: int
    last_generated_id: str | None
    dead_letter_key: str
    dead_letters: int
    server_time_ms: int
    groups: tuple[GroupHealth, ...] = ()
    thresholds: HealthThresholds = field(default_factory=HealthThresholds)

    @property
    def ok(self) -> bool:
        """True when every group is ``ok``."""
        return all(g.status == "ok" for g in self.groups)

    def group(self, name: str) -> GroupHealth | None:
        """The named group's health, or None."""
        for g in self.groups:
            if g.name == name:
                return g
        return None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (statuses included) for HTTP APIs and JSON-lines output."""
        out = dataclasses.asdict(self)
        out["ok"] = self.ok
        for row, g in zip(out["groups"], self.groups, strict=True):
            row["status"] = g.status
        return out


# ------------------------------------------------------------------ pure part


def classify_group(
    group: GroupInfo,
    info: StreamInfo,
    oldest: PendingEntry | None,
    consumers: Sequence[ConsumerInfo],
    now_ms: int,
    thresholds: HealthThresholds,
    previous: GroupHealth | None = None,
    *,
    lag: Lag | None = None,
) -> GroupHealth:
    """Combine one group's raw replies into a classified GroupHealth (pure).

    ``lag`` is the group's lag as ``_lag`` found it (with the XRANGE count where one was
    needed); without it, only what XINFO proves is used and the lag may come out unknown.
    """
    found = lag if lag is not None else _lag.from_xinfo(group, info)
    history: tuple[int, ...] = previous.lag_history if previous is not None else ()
    keep = max(thresholds.growth_samples + 1, 1)
    if found is not None and found.exact:
        history = (*history, found.value)[-keep:]
    reasons: list[str] = []
    lagging = False
    if found is not None and found.value > thresholds.max_lag:
        lagging = True
        reasons.append(f"lag {found} > {thresholds.max_lag}")
    n = thresholds.growth_samples
    if n and len(history) > n and all(a < b for a, b in itertools.pairwise(history)):
        lagging = True
        reasons.append(f"lag grew on {n} checks in a row ({history[0]} -> {history[-1]})")
    stuck = False
    if group.pending > thresholds.max_pending:
        stuck = True
        reasons.append(f"pending {group.pending} > {thresholds.max_pending}")
    age = idle = deliveries = None
    if oldest is not None:
        age = max(0, now_ms - int(oldest.id.partition("-")[0]))
        idle = oldest.idle_ms
        deliveries = oldest.deliveries
        if idle > thresholds.max_pending_idle_ms:
            stuck = True
            reasons.append(
                f"oldest pending {oldest.id} idle {idle} ms > {thresholds.max_pending_idle_ms} ms"
                " (nobody reclaims it)"
            )
    return GroupHealth(
        name=group.name,
        consumers=tuple(consumers),
        pending=group.pending,
        lag=found.value if found is not None else None,
        lag_exact=found is not None and found.exact,
        last_delivered_id=group.last_delivered_id,
        entries_read=group.entries_read,
        oldest_pending_id=oldest.id if oldest is not None else None,
        oldest_pending_age_ms=age,
        oldest_pending_idle_ms=idle,
        oldest_pending_deliveries=deliveries,
        max_consumer_idle_ms=max((c.idle_ms for c in consumers), default=None),
        lag_history=history,
        lagging=lagging,
        stuck=stuck,
        reasons=tuple(reasons),
    )


# ------------------------------------------------------------------ I/O part


def reply_or_empty(value: Any, empty: Any) -> Any:
    """A pipelined reply, with "no such key"/NOGROUP as ``empty``; other errors raise."""
    if isinstance(value, Exception):
        if is_missing_key(value):
            return empty
        raise translate(value)
    return value


def check_health_plan(
    key: str,
    thresholds: HealthThresholds | None,
    dead_letter_key: str | None,
    previous: HealthReport | None,
    lag_cap: int,
    cluster: bool,
) -> Plan[HealthReport]:
    """:func:`check_health` as a plan (see _ops); arguments validated when called."""
    if thresholds is not None and not isinstance(thresholds, HealthThresholds):
        raise InvalidOption(f"thresholds must be a HealthThresholds, got {thresholds!r}")
    limits = thresholds or HealthThresholds()
    cap = _lag.validate_cap(lag_cap)
    dlq = codec.validate_name(dead_letter_key or key + ":dlq", "dead-letter key")
    return _check_health(key, limits, dlq, previous, cap, cluster)


def _check_health(
    key: str,
    limits: HealthThresholds,
    dlq: str,
    previous: HealthReport | None,
    cap: int,
    cluster: bool,
) -> Plan[HealthReport]:
    time_op = Op("time", parse=codec.parse_time_ms)
    reads = [
        raw_command("XINFO", "STREAM", key, missing=None),  # first/last entry: read as bytes
        Op("xinfo_groups", (key,), parse=codec.parse_groups, missing=[]),
        Op("xlen", (dlq,), parse=int),
    ]
    if cluster:  # a cluster pipeline cannot carry TIME or HELLO (no key to route them by)
        now = yield time_op
        hello = yield _lag.hello_op(node_key=key)
        raw_info, groups, dead = yield Batch(reads)
    else:
        now, hello, raw_info, groups, dead = yield Batch([time_op, _lag.hello_op(), *reads])
    info = codec.parse_stream_info(key, raw_info)
    decided = _lag.resolve(groups, info, _lag.parse_hello(hello))
    counting: list[str] = []
    rows: list[Any] = []
    if groups:
        counting, ops = _lag.count_ops(key, groups, decided, cap)
        for g in groups:
            ops.append(Op("xpending_range", (key, g.name, "-", "+", 1), missing=[]))
            ops.append(Op("xinfo_consumers", (key, g.name), missing=[]))
        rows = yield Batch(ops)
    n = len(counting)
    lags = _lag.finish(decided, counting, rows[:n], cap)
    out: list[GroupHealth] = []
    for i, g in enumerate(groups):
        pending_rows = codec.parse_pending_range(rows[n + 2 * i])
        consumers = codec.parse_consumers(rows[n + 2 * i + 1])
        before = previous.group(g.name) if previous is not None else None
        oldest = pending_rows[0] if pending_rows else None
        out.append(
            classify_group(g, info, oldest, consumers, now, limits, before, lag=lags.get(g.name))
        )
    return HealthReport(
        stream=key,
        exists=info.exists,
        length=info.length,
        last_generated_id=info.last_generated_id,
        dead_letter_key=dlq,
        dead_letters=dead,
        server_time_ms=now,
        groups=tuple(out),
        thresholds=limits,
    )


def check_health(
    stream: EventStream,
    thresholds: HealthThresholds | None = None,
    *,
    dead_letter_key: str | None = None,
    previous: HealthReport | None = None,
    lag_cap: int = DEFAULT_LAG_CAP,
) -> HealthReport:
    """Read and classify the stream's health in two pipelined round trips.

    Commands: TIME, HELLO, XINFO STREAM, XINFO GROUPS, XLEN of the dead letters; then per group
    XPENDING (oldest entry), XINFO CONSUMERS and, when the server cannot vouch for the lag, a
    bounded XRANGE. Pass the last report as ``previous`` to detect lag growing over time. A
    group whose lag the server cannot vouch for has its entries counted, ``lag_cap`` at most
    (then the lag is a lower bound). Raises RedisUnavailable when the server cannot be reached.
    """
    client = stream.client
    plan = check_health_plan(
        stream.key, thresholds, dead_letter_key, previous, lag_cap, hasattr(client, "get_nodes")
    )
    return _drive.run(client, plan)  # type: ignore[no-any-return]


def report_changes(key: str, last: HealthReport | None, report: HealthReport) -> None:
    """Log each group whose status turned bad (or changed) since ``last``."""
    for g in report.groups:
        if g.status != "ok" and (
            last is None or (prev := last.group(g.name)) is None or prev.status != g.status
        ):
            logger.warning(
                "group %s on %s is %s: %s", g.name, key, g.status, "; ".join(g.reasons)
            )


class MonitorCore:
    """What both health monitors share: validated options and the last report."""

    def __init__(
        self,
        stream: StreamCore,
        thresholds: HealthThresholds | None = None,
        *,
        dead_letter_key: str | None = None,
        lag_cap: int = DEFAULT_LAG_CAP,
    ) -> None:
        if thresholds is not None and not isinstance(thresholds, HealthThresholds):
            raise InvalidOption(f"thresholds must be a HealthThresholds, got {thresholds!r}")
        self.thresholds = thresholds or HealthThresholds()
        self.dead_letter_key = dead_letter_key
        self.lag_cap = _lag.validate_cap(lag_cap)
        self._last: HealthReport | None = None

    @property
    def last(self) -> HealthReport | None:
        """The most recent report, or None before the first check."""
        return self._last


class HealthMonitor(MonitorCore):
    """check_health that remembers its last report, so lag growth shows across checks.

    Thread-safe: a metrics scrape and a web request may call :meth:`check` concurrently.
    """

    def __init__(
        self,
        stream: EventStream,
        thresholds: HealthThresholds | None = None,
        *,
        dead_letter_key: str | None = None,
        lag_cap: int = DEFAULT_LAG_CAP,
    ) -> None:
        super().__init__(stream, thresholds, dead_letter_key=dead_letter_key, lag_cap=lag_cap)
        self.stream = stream
        self._lock = threading.Lock()

    def check(self) -> HealthReport:
        """A fresh report whose lag trend includes the previous checks."""
        with self._lock:
            report = check_health(
                self.stream,
                self.thresholds,
                dead_letter_key=self.dead_letter_key,
                previous=self._last,
                lag_cap=self.lag_cap,
            )
            report_changes(self.stream.key, self._last, report)
            self._last = report
            return report
