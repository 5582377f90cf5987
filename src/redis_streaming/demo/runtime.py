"""DemoRuntime: the demo's workers and every lever the page pulls, on top of the library.

It owns the AsyncConsumerWorkers (tasks on the app's event loop, no threads) and the per-group
asyncio locks that keep remove/autoclaim/reset safe; it does not speak HTTP (the routes do) and
re-implements no stream command (AsyncEventStream does those).

Every lever is a coroutine run on the app's loop. The read-only views that do blocking work
(the /state snapshot's two pipelines, the Prometheus scrape) run in the thread pool on a sync
client: they only read Redis and the workers' thread-safe counters, and touch no asyncio object.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aredis

from .. import _codec as codec
from .._model import ConsumerStatus, Entry, ReapResult, StreamStats
from ..aio import AsyncConsumerWorker, AsyncDeadLetters, AsyncEventStream
from ..health import GroupHealth, HealthThresholds
from ..metrics import StreamMetrics
from ..server import display_url
from ..stream import EventStream
from . import state
from .charts import ChartHistory
from .config import EVENT_TYPES, MAX_PRODUCE, SEED, DemoConfig

logger = logging.getLogger(__name__)

_PAUSE_TIMEOUT_S = 5.0
_STOP_TIMEOUT_S = 3.0
_CUSTOMERS = ("ada", "grace", "linus", "margaret", "ken", "barbara", "dennis", "frances")


class NotFound(LookupError):
    """An unknown consumer or group (the app answers 404)."""


class Conflict(RuntimeError):
    """The request cannot be done in the current state (the app answers 409).

    ``reason`` is a short machine-readable word (the guide's ``no-peer``, or ``busy``, ...).
    """

    def __init__(self, message: str, reason: str = "conflict") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class StartReport:
    """What start() did, for the banner."""

    reset: bool
    groups: int
    consumers: int


class DemoRuntime:
    """The stream, its workers (asyncio tasks), and the operations of the demo page.

    :meth:`start`, :meth:`stop` and every lever must run on the app's event loop; the workers
    are created there. :meth:`snapshot` and :meth:`render_metrics` block, and are meant for the
    thread pool.
    """

    def __init__(self, config: DemoConfig) -> None:
        self.config = config
        options: dict[str, Any] = {
            "decode_responses": True,
            "socket_connect_timeout": 2.0,
            "socket_timeout": 5.0,
        }
        #: Sync client for the blocking read-only views (/state, /metrics) in the thread pool.
        self.client = redis.Redis.from_url(config.redis_url, **options)
        self.stream = EventStream(
            self.client,
            config.stream_key,
            maxlen_approx=config.maxlen,
            claim_min_idle_ms=config.claim_idle_ms,
        )
        #: The asyncio client the workers and the levers use (connects lazily, on the loop).
        self.aclient: aredis.Redis = aredis.Redis.from_url(config.redis_url, **options)
        self.astream = AsyncEventStream(
            self.aclient,
            config.stream_key,
            maxlen_approx=config.maxlen,
            claim_min_idle_ms=config.claim_idle_ms,
        )
        self.dead_letters = AsyncDeadLetters(self.astream, config.dlq_key)
        self.thresholds = HealthThresholds.for_claim_idle(config.claim_idle_ms)
        self.metrics = StreamMetrics(
            self.stream, thresholds=self.thresholds, dead_letter_key=config.dlq_key
        )
        self.metrics.add_source(self)  # the workers' counters, read at scrape time
        #: The live charts' last few minutes, sampled from the /state documents built here.
        self.charts = ChartHistory()
        self._health: dict[str, GroupHealth] = {}
        #: Set when the app is shutting down; live feeds end when they see it (any thread).
        self.closing = threading.Event()
        #: Guards the worker registry, which the thread-pool views read.
        self._lock = threading.Lock()
        self._workers: dict[str, dict[str, AsyncConsumerWorker]] = {}
        #: Serialise remove/autoclaim/reset per group (loop only).
        self._group_locks: dict[str, asyncio.Lock] = {}
        #: (group, consumer) -> how many removes of it are under way (loop only).
        self._leaving: dict[tuple[str, str], int] = {}
        self._random = random.Random()

    # ------------------------------------------------------------ lifecycle

    async def _handler(self, entry: Entry) -> None:
        if self.config.process_ms:
            await asyncio.sleep(self.config.process_ms / 1000)

    def _start_worker(self, group: str, name: str) -> AsyncConsumerWorker:
        worker = AsyncConsumerWorker(
            self.astream,
            group,
            name,
            self._handler,
            block_ms=500,
            reap_interval=self.config.auto_reap,
            max_deliveries=self.config.max_deliveries,
            dead_letter_key=self.config.dlq_key,
            recent_size=state.RECENT_KEPT,
            group_start="0",
            on_missing_group="0",
        )
        with self._lock:
            self._workers.setdefault(group, {})[name] = worker
        worker.start()
        return worker

    async def _seed(self, keep: bool) -> tuple[int, int]:
        wanted: dict[str, list[str]] = {g: list(names) for g, names in SEED}
        if keep:
            # Carry on with whatever a previous run left: every group and consumer gets a worker.
            for g in await self.astream.info_groups():
                names = wanted.setdefault(g.name, [])
                known = [c.name for c in await self.astream.info_consumers(g.name)]
                names.extend(n for n in known if n not in names)
        count = 0
        for group, names in wanted.items():
            await self.astream.ensure_group(group, "0")
            for name in names:
                self._start_worker(group, name)
                count += 1
        return len(wanted), count

    async def start(self) -> StartReport:
        """Reset (unless configured not to), seed the groups and start the worker tasks."""
        cfg = self.config
        self.closing.clear()
        if cfg.reset:
            cfg.announce(f"Deleting existing data on {cfg.stream_key} (use --no-reset to keep it)")
            await self.astream.delete_stream()
            await self.aclient.delete(cfg.dlq_key)
        else:
            cfg.announce(f"Keeping existing data on {cfg.stream_key} (--no-reset)")
        groups, consumers = await self._seed(keep=not cfg.reset)
        where = display_url(cfg.redis_url)
        cfg.announce(f"Redis {where}, stream {cfg.stream_key} with MAXLEN ~ {cfg.maxlen}")
        cfg.announce(f"Seeded {consumers} consumer(s) across {groups} group(s)")
        return StartReport(cfg.reset, groups, consumers)

    def _all_workers(self) -> list[AsyncConsumerWorker]:
        with self._lock:
            return [w for ws in self._workers.values() for w in ws.values()]

    @staticmethod
    async def _stop_all(workers: list[AsyncConsumerWorker]) -> None:
        """Stop them side by side: reads in flight are abandoned, running handlers finish."""
        stopped = await asyncio.gather(*(w.stop(_STOP_TIMEOUT_S) for w in workers))
        for w, ok in zip(workers, stopped, strict=True):
            if not ok:
                logger.warning("%s did not stop within %.0f s; cancelled", w, _STOP_TIMEOUT_S)

    async def stop(self) -> list[state.WorkerView]:
        """Stop every worker (entries read but not handled stay pending); returns final views."""
        self.closing.set()
        workers = self._all_workers()
        try:
            await self._stop_all(workers)
        finally:
            with self._lock:
                self._workers.clear()
            await self.aclient.aclose()
            self.client.close()
        views = [state.WorkerView(w.status(), ()) for w in workers]
        if views:
            counts = ", ".join(
                f"{v.status.group}/{v.status.name} processed={v.status.processed} "
                f"reaped={v.status.reaped}"
                for v in views
            )
            self.config.announce(f"Stopped {len(views)} worker(s): {counts}")
        return views

    # ------------------------------------------------------------ lookup and locks

    def _group_lock(self, group: str) -> asyncio.Lock:
        return self._group_locks.setdefault(group, asyncio.Lock())

    def worker(self, group: str, name: str) -> AsyncConsumerWorker:
        """The running worker ``name`` of ``group``; NotFound if there is none."""
        codec.validate_name(group, "group")
        codec.validate_name(name, "consumer")
        with self._lock:
            ws = self._workers.get(group)
            if ws is None:
                raise NotFound(f"unknown group {group!r}")
            worker = ws.get(name)
        if worker is None:
            raise NotFound(f"unknown consumer {name!r} in group {group!r}")
        return worker

    # ------------------------------------------------------------ reading

    def statuses(self) -> Sequence[ConsumerStatus]:
        """Every worker's counters (for StreamMetrics, as a status source; thread-safe)."""
        return [w.status() for w in self._all_workers()]

    def stream_stats(self) -> StreamStats:
        """Produced/acked/claimed through the workers' and levers' stream (thread-safe)."""
        return self.astream.stats()

    def snapshot(self) -> dict[str, Any]:
        """The /state document, from two pipelined round trips; the charts keep a sample.

        Blocking (sync client): call it from the thread pool.
        """
        cfg = self.config
        raw = state.gather(
            self.client,
            cfg.stream_key,
            cfg.dlq_key,
            tail_count=cfg.tail_count,
            pending_rows=cfg.pending_rows,
        )
        with self._lock:
            workers = {g: dict(ws) for g, ws in self._workers.items()}
        views = {
            g: {n: state.WorkerView(w.status(), w.recent()) for n, w in ws.items()}
            for g, ws in workers.items()
        }
        with self._lock:
            health = state.classify(raw, self.thresholds, self._health)
            self._health = {h.name: h for h in health}
        extra = {
            "config": {
                "stream_key": cfg.stream_key,
                "maxlen": cfg.maxlen,
                "claim_idle_ms": cfg.claim_idle_ms,
                "process_ms": cfg.process_ms,
                "max_deliveries": cfg.max_deliveries,
                "auto_reap_s": cfg.auto_reap,
                "event_types": list(EVENT_TYPES),
            },
            "redis": {"url": display_url(cfg.redis_url)},
            "health": state.health_json(
                health, state.thresholds_json(self.thresholds, cfg.claim_idle_ms)
            ),
            "charts": {"names": ["rates", "backlog"], "window_s": self.charts.window_s},
        }
        doc = state.build_state(raw, views, self.astream.stats(), extra)
        self.charts.record(doc)
        return doc

    async def replay(self, start: str, end: str, count: int) -> list[Entry]:
        return await self.astream.replay(start, end, count)

    async def dead_letters_list(self, count: int) -> list[Entry]:
        return await self.dead_letters.list("-", "+", count)

    def render_metrics(self) -> tuple[bytes, str]:
        """Prometheus exposition text for GET /metrics (blocking: reads Redis at scrape time)."""
        return self.metrics.render()

    # ------------------------------------------------------------ levers

    def _fake_event(self, event_type: str | None) -> tuple[str, dict[str, Any]]:
        r = self._random
        return (
            event_type or r.choice(EVENT_TYPES),
            {
                "order_id": f"ord-{r.randrange(10_000, 99_999)}",
                "customer": r.choice(_CUSTOMERS),
                "amount": f"{r.uniform(5, 500):.2f}",
            },
        )

    async def produce(self, count: int, event_type: str | None) -> list[str]:
        """XADD ``count`` fake orders in one pipelined round trip."""
        codec.validate_int(count, "count", minimum=1, maximum=MAX_PRODUCE)
        events = [self._fake_event(event_type) for _ in range(count)]
        return await self.astream.produce_batch(events)

    async def add_worker(self, group: str, name: str) -> dict[str, Any]:
        """Start a consumer in ``group`` (created from the stream's start if new)."""
        codec.validate_name(group, "group")
        codec.validate_name(name, "consumer")
        async with self._group_lock(group):
            with self._lock:
                if name in self._workers.get(group, {}):
                    raise Conflict(f"consumer {name!r} already runs in group {group!r}")
            created = await self.astream.ensure_group(group, "0")
            self._start_worker(group, name)
        return {"ok": True, "group": group, "name": name, "created_group": created}

    async def remove_worker(self, group: str, name: str) -> dict[str, Any]:
        """Remove a consumer without losing its pending entries.

        Under the group's lock (so two removes in one group run one after the other): pause the
        worker until its in-flight batch is acked, stop it, hand its PEL to a live peer, then
        DELCONSUMER, which must destroy nothing. The peer is one not waiting to be removed
        itself if there is one (unpaused first), so concurrent removes do not hand entries to
        each other. The last consumer of a group may go only when it has nothing pending.
        """
        self.worker(group, name)  # NotFound before a lock is made for an unknown group
        me = (group, name)
        self._leaving[me] = self._leaving.get(me, 0) + 1
        try:
            async with self._group_lock(group):
                return await self._remove(group, name)
        finally:
            self._leaving[me] -= 1
            if not self._leaving[me]:
                del self._leaving[me]

    async def _remove(self, group: str, name: str) -> dict[str, Any]:
        worker = self.worker(group, name)
        was_paused = worker.paused
        if not await worker.pause(wait=True, timeout=_PAUSE_TIMEOUT_S):
            if not was_paused:
                worker.resume()
            raise Conflict(
                f"{name!r} did not finish its in-flight batch in time; try again", "busy"
            )
        # Chosen once this one is parked: removes queued meanwhile are known by now.
        with self._lock:
            peers = [w for n, w in self._workers[group].items() if n != name and w.is_alive]
        peers.sort(key=lambda w: ((group, w.name) in self._leaving, w.paused))
        peer = peers[0] if peers else None
        if peer is None and await self.astream.pending(group, count=1, consumer=name):
            if not was_paused:
                worker.resume()
            n = len(await self.astream.pending(group, count=10_000, consumer=name))
            raise Conflict(
                f"{name!r} is the last consumer of {group!r} and still has {n} pending "
                "entries; add another consumer first so they can be handed over",
                "no-peer",
            )
        if not await worker.stop(_STOP_TIMEOUT_S):
            logger.warning("%s did not stop within %.0f s; cancelled", worker, _STOP_TIMEOUT_S)
        with self._lock:
            del self._workers[group][name]
        moved = await self.astream.handover_pending(group, name, peer.name) if peer else 0
        destroyed = await self.astream.delete_consumer(group, name)
        if destroyed:
            logger.error(
                "DELCONSUMER %s on %s/%s destroyed %d pending entries after handover",
                name,
                self.astream.key,
                group,
                destroyed,
            )
        return {
            "removed": True,
            "handed_over_to": peer.name if peer else None,
            "handed_over_count": moved,
            "group": group,
            "name": name,
            "destroyed": destroyed,
        }

    async def set_paused(self, group: str, name: str, paused: bool) -> dict[str, Any]:
        """Pause (once this answers, the worker fetches nothing more) or resume a worker."""
        worker = self.worker(group, name)
        if paused:
            # Wait out a read already blocked in Redis, or it would still take new entries.
            if not await worker.pause(wait=True, timeout=_PAUSE_TIMEOUT_S):
                raise Conflict(f"{name!r} did not finish its in-flight batch in time")
        else:
            worker.resume()
        return {"group": group, "name": name, "paused": worker.paused}

    def crash(self, group: str, name: str, count: int) -> dict[str, Any]:
        """Queue ``count`` drops: ``queued`` is this request's count, ``crash_queued`` the total."""
        worker = self.worker(group, name)
        total = worker.crash_next(count)
        return {"queued": count, "group": group, "name": name, "crash_queued": total}

    async def autoclaim(self, group: str, consumer: str, min_idle_ms: int | None) -> dict[str, Any]:
        """XAUTOCLAIM idle entries of ``group`` to ``consumer``, which processes them now."""
        idle = self.config.claim_idle_ms if min_idle_ms is None else min_idle_ms
        self.worker(group, consumer)  # NotFound before a lock is made for an unknown group
        async with self._group_lock(group):
            worker = self.worker(group, consumer)
            result: ReapResult = await worker.reap_idle_pel(idle)
        return {
            "group": group,
            "consumer": consumer,
            "claimed": result.claimed,
            "processed": result.processed,
            "dropped": result.dropped,
            "failed": result.failed,
            "dead_lettered": result.dead_lettered,
            "deleted": list(result.deleted_ids),
            "min_idle_ms": idle,
        }

    async def trim(
        self, maxlen: int | None, minid: str | None, approximate: bool
    ) -> dict[str, Any]:
        if maxlen is not None:
            deleted = await self.astream.trim_maxlen(maxlen, approximate)
            strategy = f"MAXLEN {'~ ' if approximate else ''}{maxlen}"
        else:
            assert minid is not None
            deleted = await self.astream.trim_minid(minid, approximate)
            strategy = f"MINID {'~ ' if approximate else ''}{minid}"
        return {
            "deleted": deleted,
            "maxlen": maxlen,
            "minid": minid,
            "strategy": strategy,
            "approximate": approximate,
            "length": await self.astream.length(),
        }

    async def reset(self) -> dict[str, Any]:
        """Stop every worker, delete the stream and its dead letters, seed afresh."""
        with self._lock:
            groups = sorted(set(self._workers) | {g for g, _ in SEED})
        async with contextlib.AsyncExitStack() as stack:
            for g in groups:  # sorted, so two resets cannot deadlock each other
                await stack.enter_async_context(self._group_lock(g))
            workers = self._all_workers()
            await self._stop_all(workers)
            with self._lock:
                self._workers.clear()
                self._health = {}
            await self.astream.delete_stream()
            await self.aclient.delete(self.config.dlq_key)
            self.astream.reset_stats()
            self.stream.reset_stats()
            self.charts.clear()
            n_groups, n_consumers = await self._seed(keep=False)
        return {"reset": True, "groups": n_groups, "consumers": n_consumers}
