"""DemoRuntime: the demo's workers and every lever the page pulls, on top of the library.

It owns the ConsumerWorkers and the locks that keep remove/autoclaim/reset safe; it does not
speak HTTP (app.py does) and re-implements no stream command (EventStream does those).
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import redis

from .. import _codec as codec
from .._model import Entry, ReapResult
from ..deadletter import DeadLetters
from ..health import GroupHealth, HealthThresholds
from ..metrics import StreamMetrics
from ..server import display_url
from ..stream import EventStream
from ..worker import ConsumerWorker
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
    """The stream, its workers, and the operations of the demo page."""

    def __init__(self, config: DemoConfig) -> None:
        self.config = config
        self.client = redis.Redis.from_url(
            config.redis_url,
            decode_responses=True,
            socket_connect_timeout=2.0,
            socket_timeout=5.0,
        )
        self.stream = EventStream(
            self.client,
            config.stream_key,
            maxlen_approx=config.maxlen,
            claim_min_idle_ms=config.claim_idle_ms,
        )
        self.dead_letters = DeadLetters(self.stream)
        self.thresholds = HealthThresholds.for_claim_idle(config.claim_idle_ms)
        self.metrics = StreamMetrics(self.stream, thresholds=self.thresholds)
        #: The live charts' last few minutes, sampled from the /state documents built here.
        self.charts = ChartHistory()
        self._health: dict[str, GroupHealth] = {}
        #: Set when the app is shutting down; live feeds end when they see it.
        self.closing = threading.Event()
        self._lock = threading.Lock()
        self._workers: dict[str, dict[str, ConsumerWorker]] = {}
        self._group_locks: dict[str, threading.Lock] = {}
        self._random = random.Random()

    # ------------------------------------------------------------ lifecycle

    def _handler(self, entry: Entry) -> None:
        if self.config.process_ms:
            time.sleep(self.config.process_ms / 1000)

    def _new_worker(self, group: str, name: str) -> ConsumerWorker:
        return ConsumerWorker(
            self.stream,
            group,
            name,
            self._handler,
            block_ms=500,
            reap_interval=self.config.auto_reap,
            max_deliveries=self.config.max_deliveries,
            recent_size=state.RECENT_KEPT,
            group_start="0",
            on_missing_group="0",
        )

    def _seed(self, keep: bool) -> tuple[int, int]:
        wanted: dict[str, list[str]] = {g: list(names) for g, names in SEED}
        if keep:
            # Carry on with whatever a previous run left: every group and consumer gets a worker.
            for g in self.stream.info_groups():
                names = wanted.setdefault(g.name, [])
                known = [c.name for c in self.stream.info_consumers(g.name)]
                names.extend(n for n in known if n not in names)
        count = 0
        for group, names in wanted.items():
            self.stream.ensure_group(group, "0")
            for name in names:
                worker = self._new_worker(group, name)
                with self._lock:
                    self._workers.setdefault(group, {})[name] = worker
                self.metrics.add_worker(worker)
                worker.start()
                count += 1
        return len(wanted), count

    def start(self) -> StartReport:
        """Reset (unless configured not to), seed the groups and start the workers."""
        cfg = self.config
        self.closing.clear()
        if cfg.reset:
            cfg.announce(f"Deleting existing data on {cfg.stream_key} (use --no-reset to keep it)")
            self.stream.delete_stream()
            self.client.delete(cfg.dlq_key)
        else:
            cfg.announce(f"Keeping existing data on {cfg.stream_key} (--no-reset)")
        groups, consumers = self._seed(keep=not cfg.reset)
        where = display_url(cfg.redis_url)
        cfg.announce(f"Redis {where}, stream {cfg.stream_key} with MAXLEN ~ {cfg.maxlen}")
        cfg.announce(f"Seeded {consumers} consumer(s) across {groups} group(s)")
        return StartReport(cfg.reset, groups, consumers)

    def _all_workers(self) -> list[ConsumerWorker]:
        with self._lock:
            return [w for ws in self._workers.values() for w in ws.values()]

    @staticmethod
    def _stop_all(workers: list[ConsumerWorker]) -> None:
        for w in workers:  # ask all first so they wind down in parallel
            w.stop(0)
        for w in workers:
            if not w.stop(_STOP_TIMEOUT_S):
                logger.warning("%s did not stop within %.0f s", w, _STOP_TIMEOUT_S)

    def stop(self) -> list[state.WorkerView]:
        """Stop every worker (entries read but not handled stay pending); returns final views."""
        self.closing.set()
        workers = self._all_workers()
        self._stop_all(workers)
        with self._lock:
            self._workers.clear()
        views = [state.WorkerView(w.status(), ()) for w in workers]
        self.client.close()
        if views:
            counts = ", ".join(
                f"{v.status.group}/{v.status.name} processed={v.status.processed} "
                f"reaped={v.status.reaped}"
                for v in views
            )
            self.config.announce(f"Stopped {len(views)} worker(s): {counts}")
        return views

    # ------------------------------------------------------------ lookup and locks

    def _group_lock(self, group: str) -> threading.Lock:
        with self._lock:
            return self._group_locks.setdefault(group, threading.Lock())

    @contextlib.contextmanager
    def _locked(self, group: str) -> Iterator[None]:
        with self._group_lock(group):
            yield

    def worker(self, group: str, name: str) -> ConsumerWorker:
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

    def snapshot(self) -> dict[str, Any]:
        """The /state document, from two pipelined round trips; the charts keep a sample."""
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
        doc = state.build_state(raw, views, self.stream.stats(), extra)
        self.charts.record(doc)
        return doc

    def replay(self, start: str, end: str, count: int) -> list[Entry]:
        return self.stream.replay(start, end, count)

    def dead_letters_list(self, count: int) -> list[Entry]:
        return self.dead_letters.list("-", "+", count)

    def render_metrics(self) -> tuple[bytes, str]:
        """Prometheus exposition text for GET /metrics (reads Redis at scrape time)."""
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

    def produce(self, count: int, event_type: str | None) -> list[str]:
        """XADD ``count`` fake orders in one pipelined round trip."""
        codec.validate_int(count, "count", minimum=1, maximum=MAX_PRODUCE)
        return self.stream.produce_batch([self._fake_event(event_type) for _ in range(count)])

    def add_worker(self, group: str, name: str) -> dict[str, Any]:
        """Start a consumer in ``group`` (created from the stream's start if new)."""
        codec.validate_name(group, "group")
        codec.validate_name(name, "consumer")
        with self._locked(group):
            with self._lock:
                if name in self._workers.get(group, {}):
                    raise Conflict(f"consumer {name!r} already runs in group {group!r}")
            created = self.stream.ensure_group(group, "0")
            worker = self._new_worker(group, name)
            with self._lock:
                self._workers.setdefault(group, {})[name] = worker
            self.metrics.add_worker(worker)
            worker.start()
        return {"ok": True, "group": group, "name": name, "created_group": created}

    def remove_worker(self, group: str, name: str) -> dict[str, Any]:
        """Remove a consumer without losing its pending entries.

        Under the group's lock (so two removes in one group run one after the other): pause the
        worker until its in-flight batch is acked, stop it, hand its PEL to a live peer, then
        DELCONSUMER, which must destroy nothing. The last consumer of a group may go only when
        it has nothing pending.
        """
        with self._locked(group):
            worker = self.worker(group, name)
            with self._lock:
                peers = [w for n, w in self._workers[group].items() if n != name and w.is_alive]
            peer = next((w for w in peers if not w.paused), peers[0] if peers else None)
            was_paused = worker.paused
            if not worker.pause(wait=True, timeout=_PAUSE_TIMEOUT_S):
                if not was_paused:
                    worker.resume()
                raise Conflict(
                    f"{name!r} did not finish its in-flight batch in time; try again", "busy"
                )
            if peer is None and self.stream.pending(group, count=1, consumer=name):
                if not was_paused:
                    worker.resume()
                n = len(self.stream.pending(group, count=10_000, consumer=name))
                raise Conflict(
                    f"{name!r} is the last consumer of {group!r} and still has {n} pending "
                    "entries; add another consumer first so they can be handed over",
                    "no-peer",
                )
            worker.stop(_STOP_TIMEOUT_S)
            with self._lock:
                del self._workers[group][name]
            self.metrics.remove_worker(worker)
            moved = self.stream.handover_pending(group, name, peer.name) if peer else 0
            destroyed = self.stream.delete_consumer(group, name)
            if destroyed:
                logger.error(
                    "DELCONSUMER %s on %s/%s destroyed %d pending entries after handover",
                    name,
                    self.stream.key,
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

    def set_paused(self, group: str, name: str, paused: bool) -> dict[str, Any]:
        """Pause (once this answers, the worker fetches nothing more) or resume a worker."""
        worker = self.worker(group, name)
        if paused:
            # Wait out a read already blocked in Redis, or it would still take new entries.
            if not worker.pause(wait=True, timeout=_PAUSE_TIMEOUT_S):
                raise Conflict(f"{name!r} did not finish its in-flight batch in time")
        else:
            worker.resume()
        return {"group": group, "name": name, "paused": worker.paused}

    def crash(self, group: str, name: str, count: int) -> dict[str, Any]:
        """Queue ``count`` drops: ``queued`` is this request's count, ``crash_queued`` the total."""
        worker = self.worker(group, name)
        total = worker.crash_next(count)
        return {"queued": count, "group": group, "name": name, "crash_queued": total}

    def autoclaim(self, group: str, consumer: str, min_idle_ms: int | None) -> dict[str, Any]:
        """XAUTOCLAIM idle entries of ``group`` to ``consumer``, which processes them now."""
        idle = self.config.claim_idle_ms if min_idle_ms is None else min_idle_ms
        with self._locked(group):
            worker = self.worker(group, consumer)
            result: ReapResult = worker.reap_idle_pel(idle)
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

    def trim(self, maxlen: int | None, minid: str | None, approximate: bool) -> dict[str, Any]:
        if maxlen is not None:
            deleted = self.stream.trim_maxlen(maxlen, approximate)
            strategy = f"MAXLEN {'~ ' if approximate else ''}{maxlen}"
        else:
            assert minid is not None
            deleted = self.stream.trim_minid(minid, approximate)
            strategy = f"MINID {'~ ' if approximate else ''}{minid}"
        return {
            "deleted": deleted,
            "maxlen": maxlen,
            "minid": minid,
            "strategy": strategy,
            "approximate": approximate,
            "length": self.stream.length(),
        }

    def reset(self) -> dict[str, Any]:
        """Stop every worker, delete the stream and its dead letters, seed afresh."""
        with self._lock:
            groups = sorted(set(self._workers) | {g for g, _ in SEED})
        with contextlib.ExitStack() as stack:
            for g in groups:  # sorted, so two resets cannot deadlock each other
                stack.enter_context(self._locked(g))
            workers = self._all_workers()
            self._stop_all(workers)
            with self._lock:
                self._workers.clear()
                self._health = {}
            for w in workers:
                self.metrics.remove_worker(w)
            self.stream.delete_stream()
            self.client.delete(self.config.dlq_key)
            self.stream.reset_stats()
            self.charts.clear()
            n_groups, n_consumers = self._seed(keep=False)
        return {"reset": True, "groups": n_groups, "consumers": n_consumers}
