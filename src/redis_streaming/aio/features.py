"""Async dead letters and health: the same plans as DeadLetters and check_health, awaited.

Thin shells over deadletter's and health's plans; nothing is decided here.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
from collections.abc import Iterable, Sequence

from .._model import Entry
from .._ops import Op
from ..deadletter import (
    REASON_FAILED,
    DeadLetterKey,
    list_op,
    record_trimmed_plan,
    redrive_plan,
    send_plan,
)
from ..health import (
    DEFAULT_LAG_CAP,
    HealthReport,
    HealthThresholds,
    MonitorCore,
    check_health_plan,
    report_changes,
)
from . import _drive
from .stream import AsyncEventStream

logger = logging.getLogger(__name__)


class AsyncDeadLetters(DeadLetterKey):
    """The dead-letter stream of one AsyncEventStream (default key ``<stream>:dlq``); the
    same methods as :class:`~redis_streaming.DeadLetters`, as coroutines."""

    def __init__(self, stream: AsyncEventStream, key: str | None = None) -> None:
        super().__init__(stream, key)
        self.stream = stream

    async def send(
        self,
        group: str,
        consumer: str,
        entry: Entry,
        *,
        deliveries: int,
        error: str | None,
        reason: str = REASON_FAILED,
    ) -> str | None:
        """XACK and copy ``entry`` in one script; None if it was no longer pending (see
        DeadLetters.send)."""
        plan = send_plan(
            self.stream.key, self.key, group, consumer, entry, deliveries, error, reason
        )
        return await _drive.run(self.stream.client, plan)  # type: ignore[no-any-return]

    async def record_trimmed(self, group: str, consumer: str, ids: Sequence[str]) -> list[str]:
        """Record IDs whose payload was trimmed unprocessed, and XACK them (MULTI/EXEC)."""
        if not ids:
            return []
        plan = record_trimmed_plan(self.stream.key, self.key, group, consumer, ids)
        return await _drive.run(self.stream.client, plan)  # type: ignore[no-any-return]

    async def length(self) -> int:
        """How many dead letters are stored (XLEN)."""
        return int(await _drive.run(self.stream.client, Op("xlen", (self.key,), parse=int)))

    async def list(self, start: str = "-", end: str = "+", count: int | None = 100) -> list[Entry]:
        """Dead letters from ``start`` to ``end``, oldest first (XRANGE)."""
        op = list_op(self.key, start, end, count)
        return await _drive.run(self.stream.client, op)  # type: ignore[no-any-return]

    async def redrive(
        self,
        ids: Iterable[str] | None = None,
        *,
        start: str = "-",
        end: str = "+",
        count: int | None = None,
    ) -> builtins.list[str]:
        """Move dead letters back onto the main stream (one MULTI/EXEC of XADD + XDEL)."""
        plan = redrive_plan(self.stream.key, self.key, ids, start, end, count)
        return await _drive.run(self.stream.client, plan)  # type: ignore[no-any-return]


async def check_health(
    stream: AsyncEventStream,
    thresholds: HealthThresholds | None = None,
    *,
    dead_letter_key: str | None = None,
    previous: HealthReport | None = None,
    lag_cap: int = DEFAULT_LAG_CAP,
) -> HealthReport:
    """:func:`redis_streaming.check_health` over an async client (same commands and report)."""
    client = stream.client
    plan = check_health_plan(
        stream.key, thresholds, dead_letter_key, previous, lag_cap, hasattr(client, "get_nodes")
    )
    return await _drive.run(client, plan)  # type: ignore[no-any-return]


class AsyncHealthMonitor(MonitorCore):
    """check_health that remembers its last report (lag growth across checks), for asyncio.

    Concurrent :meth:`check` calls are serialized with an asyncio lock.
    """

    def __init__(
        self,
        stream: AsyncEventStream,
        thresholds: HealthThresholds | None = None,
        *,
        dead_letter_key: str | None = None,
        lag_cap: int = DEFAULT_LAG_CAP,
    ) -> None:
        super().__init__(stream, thresholds, dead_letter_key=dead_letter_key, lag_cap=lag_cap)
        self.stream = stream
        self._lock = asyncio.Lock()

    async def check(self) -> HealthReport:
        """A fresh report whose lag trend includes the previous checks."""
        async with self._lock:
            report = await check_health(
                self.stream,
                self.thresholds,
                dead_letter_key=self.dead_letter_key,
                previous=self._last,
                lag_cap=self.lag_cap,
            )
            report_changes(self.stream.key, self._last, report)
            self._last = report
            return report
