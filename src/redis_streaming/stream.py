"""EventStream: one Redis stream key, one method per Redis command family, over redis.Redis.

It must not start threads or loop forever: the read -> process -> ack loop lives in worker.py.
All validation and reply parsing is delegated to _codec so an asyncio twin can share it.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import timedelta
from typing import Any, ParamSpec, TypeVar

import redis
import redis.exceptions as rex

from . import _caps, _drive, _fastpath, _plans, _produce, _produce_io, retention
from . import _codec as codec
from ._caps import Capabilities
from ._errors import (
    translate,
)
from ._model import (
    AckDeleteResult,
    ClaimResult,
    ConsumerInfo,
    Entry,
    GroupInfo,
    PendingEntry,
    StreamInfo,
)
from ._streamcore import DEFAULT_AUTOCLAIM_MAX_PAGES as DEFAULT_AUTOCLAIM_MAX_PAGES
from ._streamcore import DEFAULT_AUTOCLAIM_PAGE as DEFAULT_AUTOCLAIM_PAGE
from ._streamcore import DEFAULT_BLOCK_MS as DEFAULT_BLOCK_MS
from ._streamcore import DEFAULT_CLAIM_MIN_IDLE_MS as DEFAULT_CLAIM_MIN_IDLE_MS
from ._streamcore import DEFAULT_MAXLEN_APPROX as DEFAULT_MAXLEN_APPROX
from ._streamcore import DEFAULT_PRODUCE_RETRIES as DEFAULT_PRODUCE_RETRIES
from ._streamcore import DEFAULT_READ_COUNT as DEFAULT_READ_COUNT
from ._streamcore import DEFAULT_REPLAY_PAGE as DEFAULT_REPLAY_PAGE
from ._streamcore import MAX_AUTOCLAIM_PAGE as MAX_AUTOCLAIM_PAGE
from ._streamcore import UNSET as UNSET
from ._streamcore import StreamCore, _Unset
from ._streamcore import now_ms as now_ms
from .retention import RetainReport, TrimReport

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")


def _redis_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Re-raise redis-py errors as this library's exceptions (see _errors.translate)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except rex.RedisError as exc:
            raise translate(exc) from exc

    return wrapper


def _refresh_slots(client: Any) -> Callable[[], None] | None:
    """For a cluster client: re-read the slot map (after MOVED/ASK); None otherwise."""
    nodes = getattr(client, "nodes_manager", None)
    return None if nodes is None else nodes.initialize


class EventStream(StreamCore):
    """Produce to, read from, recover and inspect one Redis stream (sync; no threads).

    ``EventStream(client: redis.Redis | redis.RedisCluster, stream_key, *, maxlen_approx=2000,
    claim_min_idle_ms=5000, approximate=True, retries=3, backoff=None)``. ``maxlen_approx``
    caps the stream on every XADD (``MAXLEN ~ n``; ``None`` for no cap, ``approximate=False``
    for an exact cap). ``claim_min_idle_ms`` is how long an entry must sit unacknowledged
    before :meth:`autoclaim` may take it from another consumer.
    """

    client: redis.Redis

    def _write(self, rounds: Sequence[_produce.Round], total: int) -> list[str]:
        """Write rounds so that no event is ever stored twice (see _produce)."""
        ids = _produce_io.write_rounds(
            self.client,
            rounds,
            total,
            retries=self.retries,
            backoff=self.backoff,
            on_moved=_refresh_slots(self.client),
        )
        self._count(produced=len(ids))
        return ids

    @_redis_errors
    def produce(
        self,
        event_type: str,
        payload: Mapping[str, Any] | None = None,
        *,
        maxlen: int | _Unset | None = UNSET,
        approximate: bool | None = None,
    ) -> str:
        """XADD one event (in a MULTI/EXEC round); returns its server-assigned ID.

        Raises InvalidEvent for an event that cannot be stored (nothing is sent), and
        ProduceError (a RedisUnavailable) if the connection failed and the event may or may
        not be stored; it is never stored twice (docs/RELIABILITY.md, "Producing").
        """
        fields = codec.encode_event(event_type, payload, now_ms())
        cap, approx = self._cap(maxlen, approximate)
        if not _produce_io.supported(self.client):
            return codec.to_str(self.client.xadd(self.key, fields, maxlen=cap, approximate=approx))  # type: ignore[arg-type]
        limit = _produce_io.max_bulk(self.client)
        _produce.check_sizes([(event_type, fields)], limit, "event")
        packed = _fastpath.pack_xadd_batch(self.key, [fields], cap, approx)
        return self._write([_produce.Round(self.key, (0,), lambda: (packed,))], 1)[0]

    @_redis_errors
    def produce_batch(
        self,
        events: Iterable[tuple[str, Mapping[str, Any] | None]],
        *,
        maxlen: int | _Unset | None = UNSET,
        approximate: bool | None = None,
    ) -> list[str]:
        """XADD many events; returns their IDs in input order.

        The whole batch is validated first (against the server's proto-max-bulk-len too): one
        bad event raises InvalidEvent naming its index and field, and nothing is written.
        Each round trip of up to 1000 events is one MULTI/EXEC, so a dropped connection never
        leaves a round half-stored, and no round is sent twice: ProduceError says which
        events are stored (with IDs) if the batch cannot be finished.
        """
        cap, approx = self._cap(maxlen, approximate)
        batch = codec.batch_list(events)
        if not batch:
            return []
        if not _produce_io.supported(self.client):
            encoded = codec.encode_batch(batch, now_ms())
            pipe = self.client.pipeline(transaction=True)
            for fields in encoded:
                pipe.xadd(self.key, fields, maxlen=cap, approximate=approx)  # type: ignore[arg-type]
            ids = [codec.to_str(x) for x in pipe.execute()]
            self._count(produced=len(ids))
            return ids
        limit = _produce_io.max_bulk(self.client)
        rounds = _produce.build_rounds(self.key, batch, now_ms(), cap, approx, limit)
        return self._write(rounds, len(batch))

    # ------------------------------------------------------------ groups and reading

    def _run(self, plan: Any) -> Any:
        return _drive.run(self.client, plan)

    def ensure_group(self, group: str, start_id: str = "$") -> bool:
        """XGROUP CREATE ... MKSTREAM. True if created, False if it already existed (BUSYGROUP)."""
        return bool(self._run(_plans.ensure_group(self.key, group, start_id)))

    def delete_group(self, group: str) -> bool:
        """XGROUP DESTROY. True if the group existed."""
        return bool(self._run(_plans.delete_group(self.key, group)))

    def consume(
        self,
        group: str,
        consumer: str,
        count: int = DEFAULT_READ_COUNT,
        block_ms: int | None = DEFAULT_BLOCK_MS,
    ) -> list[Entry]:
        """XREADGROUP ``>``: up to ``count`` new entries; ``[]`` once ``block_ms`` has passed.

        ``block_ms=None`` does not block. Raises GroupMissing if the group does not exist.
        """
        return self._run(_plans.consume(self.key, group, consumer, count, block_ms))  # type: ignore[no-any-return]

    def read_own_pel(
        self, group: str, consumer: str, count: int, after: str = "0"
    ) -> tuple[list[Entry], list[str]]:
        """XREADGROUP with a concrete ID: this consumer's pending entries after ``after``.

        Returns the readable entries and the IDs whose payload was trimmed away (nil fields).
        """
        return self._run(_plans.read_own_pel(self.key, group, consumer, count, after))  # type: ignore[no-any-return]

    def consume_own_pel(
        self, group: str, consumer: str, count: int = DEFAULT_READ_COUNT, after: str = "0"
    ) -> list[Entry]:
        """XREADGROUP ``0``: entries delivered to ``consumer`` but never acked (restart path).

        Page by passing the last returned ID as ``after``. Entries whose payload was trimmed
        away are skipped here; ConsumerWorker dead-letters them.
        """
        return self._run(_plans.consume_own_pel(self.key, group, consumer, count, after))  # type: ignore[no-any-return]

    def ack(self, group: str, ids: Sequence[str] | str) -> int:
        """XACK the given IDs (a list, or one ID as a str) in one call; returns how many were
        pending. No call for an empty list; anything else raises InvalidStreamId."""
        checked = _plans.checked_ids(group, ids)
        return self.ack_unchecked(group, checked) if checked else 0

    def capabilities(self) -> Capabilities:
        """What the server supports beyond Redis 7 (ACKED trimming, XACKDEL), asked once per
        connection pool (a probe of each command + HELLO) and cached."""
        known = _caps.cached(self.client)
        return (
            known if known is not None else _caps.remember(self.client, self._run(_caps.detect()))
        )

    def ack_delete(
        self, group: str, ids: Sequence[str] | str, *, ref: str = "acked"
    ) -> AckDeleteResult:
        """XACKDEL (Redis 8.2+): acknowledge the IDs in ``group`` and delete them, in one command.

        ``ref`` says what happens to other groups: ``"acked"`` (default) deletes an entry only
        once every group has acknowledged it (else it is only acked: ``kept``); ``"keepref"``
        deletes it now, leaving other groups' pending references dangling (they can no longer
        read it); ``"delref"`` deletes it and removes it from every group's PEL. Raises
        FeatureUnavailable on older servers (nothing is emulated), InvalidStreamId/InvalidOption.
        """
        checked = _plans.checked_ids(group, ids)
        policy = _plans.validate_ref(ref)
        if not checked:
            return AckDeleteResult()
        self.capabilities().require_xackdel()
        result: AckDeleteResult = self._run(_plans.ack_delete(self.key, group, checked, policy))
        self._count(acked=result.acked)
        return result

    def ack_unchecked(self, group: str, ids: Sequence[str]) -> int:
        """XACK without validation, for IDs that came from the server (worker hot path)."""
        if not ids:
            return 0
        n = int(self._run(_plans.ack(self.key, group, list(ids))))
        self._count(acked=n)
        return n

    # ------------------------------------------------------------ recovery

    def autoclaim_page(
        self, group: str, consumer: str, min_idle_ms: int, start_id: str, count: int
    ) -> tuple[str, list[Entry], list[str]]:
        """One XAUTOCLAIM call: (next cursor, claimed entries, IDs deleted by trimming)."""
        page = self._run(
            _plans.autoclaim_page(self.key, group, consumer, min_idle_ms, start_id, count)
        )
        self._count(claimed=len(page[1]))
        return page  # type: ignore[no-any-return]

    def autoclaim_pages(
        self,
        group: str,
        consumer: str,
        *,
        min_idle_ms: int | None = None,
        page_count: int = DEFAULT_AUTOCLAIM_PAGE,
        start_id: str = "0-0",
        max_pages: int = DEFAULT_AUTOCLAIM_MAX_PAGES,
    ) -> Iterator[ClaimResult]:
        """XAUTOCLAIM page by page: one ClaimResult per call, empty pages included.

        Each result's ``next_start_id`` is the server's cursor after that page; the last one
        is ``"0-0"`` only when the server said the sweep of the PEL is complete, otherwise it
        is where to resume. One call scans at most ``10 * page_count`` PEL entries (a server
        limit), so a page may claim nothing and still move the cursor.
        """
        idle = self.claim_min_idle_ms if min_idle_ms is None else min_idle_ms
        plan = _plans.autoclaim_pages(
            self.key, group, consumer, idle, page_count, start_id, max_pages
        )
        for page in _drive.iterate(self.client, plan):
            self._count(claimed=len(page.claimed))
            yield page

    def iter_autoclaim(
        self,
        group: str,
        consumer: str,
        *,
        min_idle_ms: int | None = None,
        page_count: int = DEFAULT_AUTOCLAIM_PAGE,
        start_id: str = "0-0",
        max_pages: int = DEFAULT_AUTOCLAIM_MAX_PAGES,
    ) -> Iterator[tuple[list[Entry], list[str]]]:
        """XAUTOCLAIM page by page, following the cursor until 0-0 or ``max_pages``; yields
        only the pages that claimed or found something (see :meth:`autoclaim_pages`)."""
        pages = self.autoclaim_pages(
            group, consumer, min_idle_ms=min_idle_ms, page_count=page_count,
            start_id=start_id, max_pages=max_pages,
        )  # fmt: skip
        for page in pages:
            if page.claimed or page.deleted_ids:
                yield list(page.claimed), list(page.deleted_ids)

    def autoclaim(
        self,
        group: str,
        consumer: str,
        *,
        min_idle_ms: int | None = None,
        page_count: int = DEFAULT_AUTOCLAIM_PAGE,
        start_id: str = "0-0",
        max_pages: int = DEFAULT_AUTOCLAIM_MAX_PAGES,
    ) -> ClaimResult:
        """Take entries idle longer than ``min_idle_ms`` (default: ``claim_min_idle_ms``).

        Pages through XAUTOCLAIM's cursor, at most ``max_pages`` calls of ``page_count``.
        ``next_start_id`` is ``"0-0"`` when the server finished the sweep, else the cursor to
        pass as ``start_id`` to resume: resuming claims the rest exactly once. ``deleted_ids``
        lists pending entries whose payload was trimmed before anyone processed them (Redis 7+
        drops them from the PEL).
        """
        pages = self.autoclaim_pages(
            group, consumer, min_idle_ms=min_idle_ms, page_count=page_count,
            start_id=start_id, max_pages=max_pages,
        )  # fmt: skip
        return _plans.collect_claims(self.key, group, consumer, list(pages))

    def claim(
        self, group: str, consumer: str, ids: Sequence[str] | str, min_idle_ms: int
    ) -> list[Entry]:
        """XCLAIM specific IDs (a list, or one ID as a str) for ``consumer`` if idle at least
        ``min_idle_ms``; returns the entries claimed (trimmed ones are left out)."""
        op = _plans.claim(self.key, group, consumer, ids, min_idle_ms)
        entries: list[Entry] = [] if op is None else self._run(op)
        self._count(claimed=len(entries))
        return entries

    def handover_pending(
        self, group: str, from_consumer: str, to_consumer: str, batch: int = DEFAULT_AUTOCLAIM_PAGE
    ) -> int:
        """Move every pending entry of ``from_consumer`` to ``to_consumer``; returns the count.

        XPENDING ... CONSUMER finds them and XCLAIM ... 0 JUSTID moves them, page by page,
        without bumping their delivery counters. Entries trimmed away meanwhile drop out.
        """
        plan = _plans.handover_pending(self.key, group, from_consumer, to_consumer, batch)
        return int(self._run(plan))

    def delete_consumer(self, group: str, consumer: str) -> int:
        """XGROUP DELCONSUMER; returns how many pending entries were destroyed with it.

        Hand its entries over first (:meth:`handover_pending`) unless losing them is intended.
        """
        return int(self._run(_plans.delete_consumer(self.key, group, consumer)))

    # ------------------------------------------------------------ history and retention

    def replay(self, start: str = "-", end: str = "+", count: int | None = 100) -> list[Entry]:
        """XRANGE ``start``..``end`` (inclusive; ``(id`` for exclusive), oldest first."""
        return self._run(_plans.replay(self.key, start, end, count))  # type: ignore[no-any-return]

    def iter_replay(
        self, start: str = "-", end: str = "+", page: int = DEFAULT_REPLAY_PAGE
    ) -> Iterator[Entry]:
        """Every entry from ``start`` to ``end``, fetched ``page`` at a time (bounded memory)."""
        return _drive.iterate(self.client, _plans.iter_replay(self.key, start, end, page))

    def tail(self, count: int = 10) -> list[Entry]:
        """XREVRANGE: the newest ``count`` entries, newest first."""
        return self._run(_plans.tail(self.key, count))  # type: ignore[no-any-return]

    def length(self) -> int:
        """XLEN (0 for a missing stream)."""
        return int(self._run(_plans.length(self.key)))

    def trim_maxlen(self, n: int, approximate: bool = True) -> int:
        """XTRIM MAXLEN [~] n; returns how many entries were deleted."""
        return int(self._run(_plans.trim_maxlen(self.key, n, approximate)))

    def trim_minid(self, min_id: str, approximate: bool = True) -> int:
        """XTRIM MINID [~] id: delete entries older than ``min_id``; returns the count."""
        return int(self._run(_plans.trim_minid(self.key, min_id, approximate)))

    def delete_stream(self) -> bool:
        """DEL the stream key with its groups. True if it existed."""
        return bool(self._run(_plans.delete_stream(self.key)))

    # ------------------------------------------------------------ inspection

    def info_stream(self) -> StreamInfo:
        """XINFO STREAM; a missing stream gives ``StreamInfo(exists=False, length=0)``."""
        return self._run(_plans.info_stream(self.key))  # type: ignore[no-any-return]

    def info_groups(self) -> list[GroupInfo]:
        """XINFO GROUPS; ``[]`` for a missing stream."""
        return self._run(_plans.info_groups(self.key))  # type: ignore[no-any-return]

    def info_consumers(self, group: str) -> list[ConsumerInfo]:
        """XINFO CONSUMERS; ``[]`` for a missing stream or group."""
        return self._run(_plans.info_consumers(self.key, group))  # type: ignore[no-any-return]

    def _pending_rows(
        self,
        group: str,
        start: str,
        end: str,
        count: int,
        consumer: str | None,
        min_idle_ms: int | None,
    ) -> list[PendingEntry]:
        op = _plans.pending_rows(self.key, group, start, end, count, consumer, min_idle_ms)
        return self._run(op)  # type: ignore[no-any-return]

    def pending(
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
        return self._run(op)  # type: ignore[no-any-return]

    # ------------------------------------------------------------ retention (see retention.py)

    def trim_safe(self, hard_cap: int | None = None, *, approximate: bool = True) -> TrimReport:
        """Trim what every group has been delivered and acked; ``hard_cap`` caps the length anyway.

        Returns a report naming the group that held the trim back and by how many entries.
        """
        plan = retention.trim_safe_plan(self.key, hard_cap, approximate, caps=self.capabilities())
        return _drive.run(self.client, plan)  # type: ignore[no-any-return]

    def retain(
        self, max_age: float | timedelta, *, approximate: bool = True, safe: bool = False
    ) -> RetainReport:
        """Remove entries older than ``max_age`` (seconds or timedelta, by the server's clock).

        ``safe=True`` never removes what a group still needs.
        """
        return _drive.run(  # type: ignore[no-any-return]
            self.client, retention.retain_plan(self.key, max_age, approximate, safe)
        )
