"""AsyncEventStream: EventStream's methods as coroutines over a ``redis.asyncio.Redis``.

A thin shell: validation, commands and reply meaning come from _plans (and the producer plan
from _produce), exactly as in the sync EventStream; only the awaits are written here. It must
not decide anything the sync shell decides differently.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any

import redis.asyncio as aredis

from .. import _caps, _plans, _produce, retention
from .. import _codec as codec
from .. import _fastpath as fp
from .._caps import Capabilities
from .._errors import InvalidOption
from .._model import (
    AckDeleteResult,
    ClaimResult,
    ConsumerInfo,
    Entry,
    GroupInfo,
    PendingEntry,
    StreamInfo,
)
from .._streamcore import (
    DEFAULT_AUTOCLAIM_MAX_PAGES,
    DEFAULT_AUTOCLAIM_PAGE,
    DEFAULT_BLOCK_MS,
    DEFAULT_READ_COUNT,
    DEFAULT_REPLAY_PAGE,
    UNSET,
    StreamCore,
    _Unset,
    now_ms,
)
from ..retention import RetainReport, TrimReport
from . import _drive
from . import _fastpath as afp

logger = logging.getLogger(__name__)


class AsyncEventStream(StreamCore):
    """Produce to, read from, recover and inspect one Redis stream, from asyncio.

    ``AsyncEventStream(client: redis.asyncio.Redis, stream_key, *, maxlen_approx=2000,
    claim_min_idle_ms=5000, approximate=True, retries=3, backoff=None)``: the same options,
    validation, results and errors as :class:`~redis_streaming.EventStream`; every method that
    talks to Redis is a coroutine (``iter_replay`` and ``autoclaim_pages`` are async
    iterators). Not thread-safe across event loops: use one per loop.
    """

    client: aredis.Redis

    async def _run(self, plan: Any) -> Any:
        return await _drive.run(self.client, plan)

    # ------------------------------------------------------------ producing

    def _check_producer(self) -> None:
        # redis-py's own retries would resend an XADD whose reply was lost (stored twice), so
        # only clients the producer plan can drive are used; nothing else is sent.
        if not afp.produces(self.client):
            raise InvalidOption(
                f"AsyncEventStream produces through a redis.asyncio.Redis; got "
                f"{type(self.client).__name__} (for a cluster use the sync PartitionedStream)"
            )

    async def _write(self, rounds: list[_produce.Round], total: int) -> list[str]:
        ids = await afp.write_rounds(
            self.client, rounds, total, retries=self.retries, backoff=self.backoff
        )
        self._count(produced=len(ids))
        return ids

    async def produce(
        self,
        event_type: str,
        payload: Mapping[str, Any] | None = None,
        *,
        maxlen: int | _Unset | None = UNSET,
        approximate: bool | None = None,
    ) -> str:
        """XADD one event (in a MULTI/EXEC round); returns its server-assigned ID.

        Raises InvalidEvent (nothing sent) or ProduceError; never stores the event twice.
        """
        fields = codec.encode_event(event_type, payload, now_ms())
        cap, approx = self._cap(maxlen, approximate)
        self._check_producer()
        limit = await afp.max_bulk(self.client)
        _produce.check_sizes([(event_type, fields)], limit, "event")
        packed = fp.pack_xadd_batch(self.key, [fields], cap, approx)
        return (await self._write([_produce.Round(self.key, (0,), lambda: (packed,))], 1))[0]

    async def produce_batch(
        self,
        events: Iterable[tuple[str, Mapping[str, Any] | None]],
        *,
        maxlen: int | _Unset | None = UNSET,
        approximate: bool | None = None,
    ) -> list[str]:
        """XADD many events; returns their IDs in input order (see EventStream.produce_batch:
        the whole batch is validated first, one MULTI/EXEC per slice, never sent twice)."""
        cap, approx = self._cap(maxlen, approximate)
        batch = codec.batch_list(events)
        if not batch:
            return []
        self._check_producer()
        limit = await afp.max_bulk(self.client)
        rounds = _produce.build_rounds(self.key, batch, now_ms(), cap, approx, limit)
        return await self._write(rounds, len(batch))

    # ------------------------------------------------------------ groups and reading

    async def ensure_group(self, group: str, start_id: str = "$") -> bool:
        """XGROUP CREATE ... MKSTREAM. True if created, False if it already existed."""
        return bool(await self._run(_plans.ensure_group(self.key, group, start_id)))

    async def delete_group(self, group: str) -> bool:
        """XGROUP DESTROY. True if the group existed."""
        return bool(await self._run(_plans.delete_group(self.key, group)))

    async def consume(
        self,
        group: str,
        consumer: str,
        count: int = DEFAULT_READ_COUNT,
        block_ms: int | None = DEFAULT_BLOCK_MS,
    ) -> list[Entry]:
        """XREADGROUP ``>``: up to ``count`` new entries; ``[]`` once ``block_ms`` has passed.
        Raises GroupMissing if the group does not exist."""
        return await self._run(_plans.consume(self.key, group, consumer, count, block_ms))  # type: ignore[no-any-return]

    async def read_own_pel(
        self, group: str, consumer: str, count: int, after: str = "0"
    ) -> tuple[list[Entry], list[str]]:
        """XREADGROUP with a concrete ID: (pending entries after ``after``, trimmed IDs)."""
        return await self._run(_plans.read_own_pel(self.key, group, consumer, count, after))  # type: ignore[no-any-return]

    async def consume_own_pel(
        self, group: str, consumer: str, count: int = DEFAULT_READ_COUNT, after: str = "0"
    ) -> list[Entry]:
        """XREADGROUP ``0``: entries delivered to ``consumer`` but never acked."""
        return await self._run(_plans.consume_own_pel(self.key, group, consumer, count, after))  # type: ignore[no-any-return]

    async def ack(self, group: str, ids: Sequence[str] | str) -> int:
        """XACK the given IDs in one call; returns how many were pending."""
        checked = _plans.checked_ids(group, ids)
        return await self.ack_unchecked(group, checked) if checked else 0

    async def capabilities(self) -> Capabilities:
        """What the server supports beyond Redis 7, asked once per connection pool."""
        known = _caps.cached(self.client)
        if known is None:
            known = _caps.remember(self.client, await self._run(_caps.detect()))
        return known

    async def ack_delete(
        self, group: str, ids: Sequence[str] | str, *, ref: str = "acked"
    ) -> AckDeleteResult:
        """XACKDEL (Redis 8.2+): acknowledge and delete in one command (see
        EventStream.ack_delete for ``ref``). Raises FeatureUnavailable on older servers."""
        checked = _plans.checked_ids(group, ids)
        policy = _plans.validate_ref(ref)
        if not checked:
            return AckDeleteResult()
        (await self.capabilities()).require_xackdel()
        op = _plans.ack_delete(self.key, group, checked, policy)
        result: AckDeleteResult = await self._run(op)
        self._count(acked=result.acked)
        return result

    async def ack_unchecked(self, group: str, ids: Sequence[str]) -> int:
        """XACK without validation, for IDs that came from the server."""
        if not ids:
            return 0
        n = int(await self._run(_plans.ack(self.key, group, list(ids))))
        self._count(acked=n)
        return n

    # ------------------------------------------------------------ recovery

    async def autoclaim_page(
        self, group: str, consumer: str, min_idle_ms: int, start_id: str, count: int
    ) -> tuple[str, list[Entry], list[str]]:
        """One XAUTOCLAIM call: (next cursor, claimed entries, IDs deleted by trimming)."""
        page = await self._run(
            _plans.autoclaim_page(self.key, group, consumer, min_idle_ms, start_id, count)
        )
        self._count(claimed=len(page[1]))
        return page  # type: ignore[no-any-return]

    async def autoclaim_pages(
        self,
        group: str,
        consumer: str,
        *,
        min_idle_ms: int | None = None,
        page_count: int = DEFAULT_AUTOCLAIM_PAGE,
        start_id: str = "0-0",
        max_pages: int = DEFAULT_AUTOCLAIM_MAX_PAGES,
    ) -> AsyncIterator[ClaimResult]:
        """XAUTOCLAIM page by page: one ClaimResult per call (see EventStream.autoclaim_pages)."""
        idle = self.claim_min_idle_ms if min_idle_ms is None else min_idle_ms
        plan = _plans.autoclaim_pages(
            self.key, group, consumer, idle, page_count, start_id, max_pages
        )
        async for page in _drive.iterate(self.client, plan):
            self._count(claimed=len(page.claimed))
            yield page

    async def iter_autoclaim(
        self,
        group: str,
        consumer: str,
        *,
        min_idle_ms: int | None = None,
        page_count: int = DEFAULT_AUTOCLAIM_PAGE,
        start_id: str = "0-0",
        max_pages: int = DEFAULT_AUTOCLAIM_MAX_PAGES,
    ) -> AsyncIterator[tuple[list[Entry], list[str]]]:
        """Only the XAUTOCLAIM pages that claimed or found something."""
        pages = self.autoclaim_pages(
            group, consumer, min_idle_ms=min_idle_ms, page_count=page_count,
            start_id=start_id, max_pages=max_pages,
        )  # fmt: skip
        async for page in pages:
            if page.claimed or page.deleted_ids:
                yield list(page.claimed), list(page.deleted_ids)

    async def autoclaim(
        self,
        group: str,
        consumer: str,
        *,
        min_idle_ms: int | None = None,
        page_count: int = DEFAULT_AUTOCLAIM_PAGE,
        start_id: str = "0-0",
        max_pages: int = DEFAULT_AUTOCLAIM_MAX_PAGES,
    ) -> ClaimResult:
        """Take entries idle longer than ``min_idle_ms``; ``next_start_id`` resumes the sweep."""
        pages = self.autoclaim_pages(
            group, consumer, min_idle_ms=min_idle_ms, page_count=page_count,
            start_id=start_id, max_pages=max_pages,
        )  # fmt: skip
        return _plans.collect_claims(self.key, group, consumer, [p async for p in pages])

    async def claim(
        self, group: str, consumer: str, ids: Sequence[str] | str, min_idle_ms: int
    ) -> list[Entry]:
        """XCLAIM specific IDs for ``consumer`` if idle at least ``min_idle_ms``."""
        op = _plans.claim(self.key, group, consumer, ids, min_idle_ms)
        entries: list[Entry] = [] if op is None else await self._run(op)
        self._count(claimed=len(entries))
        return entries

    async def handover_pending(
        self, group: str, from_consumer: str, to_consumer: str, batch: int = DEFAULT_AUTOCLAIM_PAGE
    ) -> int:
        """Move every pending entry of ``from_consumer`` to ``to_consumer``; returns the count."""
        plan = _plans.handover_pending(self.key, group, from_consumer, to_consumer, batch)
        return int(await self._run(plan))

    async def delete_consumer(self, group: str, consumer: str) -> int:
        """XGROUP DELCONSUMER; returns how many pending entries were destroyed with it."""
        return int(await self._run(_plans.delete_consumer(self.key, group, consumer)))

    # ------------------------------------------------------------ history and retention

    async def replay(
        self, start: str = "-", end: str = "+", count: int | None = 100
    ) -> list[Entry]:
        """XRANGE ``start``..``end`` (inclusive; ``(id`` for exclusive), oldest first."""
        return await self._run(_plans.replay(self.key, start, end, count))  # type: ignore[no-any-return]

    def iter_replay(
        self, start: str = "-", end: str = "+", page: int = DEFAULT_REPLAY_PAGE
    ) -> AsyncIterator[Entry]:
        """Every entry from ``start`` to ``end``, fetched ``page`` at a time (async iterator)."""
        return _drive.iterate(self.client, _plans.iter_replay(self.key, start, end, page))

    async def tail(self, count: int = 10) -> list[Entry]:
        """XREVRANGE: the newest ``count`` entries, newest first."""
        return await self._run(_plans.tail(self.key, count))  # type: ignore[no-any-return]

    async def length(self) -> int:
        """XLEN (0 for a missing stream)."""
        return int(await self._run(_plans.length(self.key)))

    async def trim_maxlen(self, n: int, approximate: bool = True) -> int:
        """XTRIM MAXLEN [~] n; returns how many entries were deleted."""
        return int(await self._run(_plans.trim_maxlen(self.key, n, approximate)))

    async def trim_minid(self, min_id: str, approximate: bool = True) -> int:
        """XTRIM MINID [~] id: delete entries older than ``min_id``; returns the count."""
        return int(await self._run(_plans.trim_minid(self.key, min_id, approximate)))

    async def delete_stream(self) -> bool:
        """DEL the stream key with its groups. True if it existed."""
        return bool(await self._run(_plans.delete_stream(self.key)))

    # ------------------------------------------------------------ inspection

    async def info_stream(self) -> StreamInfo:
        """XINFO STREAM; a missing stream gives ``StreamInfo(exists=False, length=0)``."""
        return await self._run(_plans.info_stream(self.key))  # type: ignore[no-any-return]

    async def info_groups(self) -> list[GroupInfo]:
        """XINFO GROUPS; ``[]`` for a missing stream."""
        return await self._run(_plans.info_groups(self.key))  # type: ignore[no-any-return]

    async def info_consumers(self, group: str) -> list[ConsumerInfo]:
        """XINFO CONSUMERS; ``[]`` for a missing stream or group."""
        return await self._run(_plans.info_consumers(self.key, group))  # type: ignore[no-any-return]

    async def pending(
        self,
        group: str,
        start: str = "-",
        end: str = "+",
        count: int = 20,
        consumer: str | None = None,
        min_idle_ms: int | None = None,
    ) -> list[PendingEntry]:
        """XPENDING's extended form: pending entries with idle time and delivery count."""
        op = _plans.pending(self.key, group, start, end, count, consumer, min_idle_ms)
        return await self._run(op)  # type: ignore[no-any-return]

    # ------------------------------------------------------------ retention

    async def trim_safe(
        self, hard_cap: int | None = None, *, approximate: bool = True
    ) -> TrimReport:
        """Trim what every group has been delivered and acked (see EventStream.trim_safe)."""
        caps = await self.capabilities()
        plan = retention.trim_safe_plan(self.key, hard_cap, approximate, caps=caps)
        return await self._run(plan)  # type: ignore[no-any-return]

    async def retain(
        self, max_age: float | timedelta, *, approximate: bool = True, safe: bool = False
    ) -> RetainReport:
        """Remove entries older than ``max_age`` by the server's clock (see EventStream.retain)."""
        plan = retention.retain_plan(self.key, max_age, approximate, safe)
        return await self._run(plan)  # type: ignore[no-any-return]
