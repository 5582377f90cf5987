"""The consumer worker written once: options, counters, and the loop as a step machine.

Every decision of the read -> handle -> ack loop lives here (start-up, own-PEL replay, when to
reap, the read size, what a reply means, delivery limits, dead letters, the NOGROUP and
error policies). The loop is a generator of steps: _ops commands, a hand-packed :class:`FastRead`,
:class:`Handle` (run the handler over one batch), :class:`Wait` and :class:`Park`. The thread
shell (worker.py) and the asyncio shell (aio/worker.py) only interpret steps; the per-entry
handler loop is the one piece each writes itself (``handler(e)`` vs ``await handler(e)``).
It must not do I/O or wait by itself.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import redis.exceptions as rex

from . import _caps, _fastpath, _plans, _workerrecovery
from . import _codec as codec
from ._backoff import Backoff
from ._batching import ReadSizer
from ._errors import (
    EntryDecodeError,
    FeatureUnavailable,
    GroupMissing,
    InvalidOption,
    StreamingError,
    is_nogroup,
    translate,
)
from ._model import ConsumerStatus, Delivery, DeliveryOutcome, Entry
from ._ops import Batch, Op
from ._recent import RecentLog
from ._streamcore import StreamCore, now_ms
from ._workersteps import (
    READ_MARGIN_S,
    ErrorCallback,
    FastRead,
    Handle,
    Handled,
    MissingGroupPolicy,
    Park,
    Steps,
    Wait,
)

logger = logging.getLogger("redis_streaming.worker")


class WorkerCore:
    """Options, state and the step machine shared by ConsumerWorker and AsyncConsumerWorker."""

    def __init__(
        self,
        stream: StreamCore,
        group: str,
        name: str,
        *,
        count: int,
        batch_budget_ms: float | None,
        block_ms: int,
        reap_interval: float | None,
        claim_min_idle_ms: int | None,
        max_deliveries: int | None,
        group_start: str,
        on_missing_group: MissingGroupPolicy,
        process_own_pel: bool,
        on_error: ErrorCallback | None,
        recent_size: int,
        backoff: Backoff | None,
        ack_mode: str = "ack",
        delete_ref: str = "acked",
    ) -> None:
        self.stream = stream
        self.group = codec.validate_name(group, "group")
        self.name = codec.validate_name(name, "consumer")
        self.count = codec.validate_int(count, "count", minimum=1, maximum=100_000)
        if batch_budget_ms is not None and (
            isinstance(batch_budget_ms, bool)
            or not isinstance(batch_budget_ms, (int, float))
            or not 0 < batch_budget_ms < float("inf")
        ):
            raise InvalidOption(
                f"batch_budget_ms must be a positive number or None, got {batch_budget_ms!r}"
            )
        self._sizer = ReadSizer(
            self.count, None if batch_budget_ms is None else batch_budget_ms / 1000
        )
        self.block_ms = codec.validate_block_ms(block_ms)
        self.reap_interval = codec.validate_seconds(reap_interval, "reap_interval")
        self.claim_min_idle_ms = (
            stream.claim_min_idle_ms
            if claim_min_idle_ms is None
            else codec.validate_int(claim_min_idle_ms, "claim_min_idle_ms")
        )
        self.max_deliveries = (
            None
            if max_deliveries is None
            else codec.validate_int(max_deliveries, "max_deliveries", minimum=1)
        )
        self.group_start = codec.validate_group_start(group_start)
        if on_missing_group not in ("0", "$", "stop"):
            raise InvalidOption(
                f"on_missing_group must be '0', '$' or 'stop', got {on_missing_group!r}"
            )
        self.on_missing_group: MissingGroupPolicy = on_missing_group
        self.process_own_pel = process_own_pel
        if on_error is not None and not callable(on_error):
            raise InvalidOption(f"on_error must be callable, got {on_error!r}")
        self.on_error = on_error
        self.backoff = backoff or Backoff()
        if ack_mode not in ("ack", "delete"):
            raise InvalidOption(f"ack_mode must be 'ack' or 'delete', got {ack_mode!r}")
        self.ack_mode = ack_mode
        self.delete_ref = _plans.validate_ref(delete_ref)
        self._lock = threading.Lock()
        self._pending_acks: list[str] = []
        self._recent = RecentLog(codec.validate_int(recent_size, "recent_size"))
        self._crash_queue = 0
        self._group_missing_logged = False
        self._failures_in_row = 0
        self._next_reap = 0.0
        self._reap_cursor = "0-0"
        self.processed = 0
        self.reaped = 0
        self.failed = 0
        self.crashed_drops = 0
        self.dead_lettered = 0

    # ------------------------------------------------------------ what the shells provide

    def _stopping(self) -> bool:
        raise NotImplementedError

    @property
    def paused(self) -> bool:
        raise NotImplementedError

    @property
    def is_alive(self) -> bool:
        raise NotImplementedError

    def _dead_letter_key(self) -> str:
        raise NotImplementedError

    def _may_read(self) -> bool:
        """Subclasses may hold reads back (a partition lease about to lapse); while False the
        loop acks what it handled, reads and reaps nothing, and looks again shortly."""
        return True

    def _after_start(self) -> Steps:
        """Subclasses may add start-up steps (after the group, own PEL and first reap)."""
        return
        yield

    # ------------------------------------------------------------ levers and introspection

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}({self.stream.key!r}, group={self.group!r}, name={self.name!r})"

    @property
    def read_count(self) -> int:
        """The COUNT the next XREADGROUP will ask for (see ``batch_budget_ms``)."""
        return self._sizer.count

    def crash_next(self, n: int = 1) -> int:
        """Drop the next ``n`` deliveries without acking, as if the process died mid-message.

        Returns how many drops are queued in total.
        """
        codec.validate_int(n, "n", minimum=0, maximum=10_000)
        with self._lock:
            self._crash_queue += n
            return self._crash_queue

    def status(self) -> ConsumerStatus:
        """A snapshot of this worker's counters and switches."""
        return ConsumerStatus(
            name=self.name,
            group=self.group,
            processed=self.processed,
            reaped=self.reaped,
            failed=self.failed,
            crashed_drops=self.crashed_drops,
            crash_queued=self._crash_queue,
            paused=self.paused,
            alive=self.is_alive,
            dead_lettered=self.dead_lettered,
        )

    def recent(self) -> list[Delivery]:
        """The last ``recent_size`` deliveries and what became of each, oldest first."""
        with self._lock:
            return self._recent.items()

    def _record(
        self, entry: Entry, outcome: DeliveryOutcome, reaped: bool, error: str | None = None
    ) -> None:
        delivery = Delivery(entry.id, entry.type, outcome, now_ms(), reaped, error)
        with self._lock:
            self._recent.add(delivery)

    def _take_crash(self) -> bool:
        with self._lock:
            if self._crash_queue <= 0:
                return False
            self._crash_queue -= 1
            return True

    # ------------------------------------------------------------ the shells' handler loops

    def verdict(self, entry: Entry, deliveries: int, reaped: bool) -> str | None:
        """Before running the handler on one delivery: ``"dead"`` (delivered more often than
        allowed: dead-letter it unrun), ``"drop"`` (a queued crash_next), ``"undecodable"``,
        or None (run the handler). The delivery limit comes first: a consumer that dies on
        every delivery is exactly what dead letters are for."""
        limit = self.max_deliveries
        if limit is not None and deliveries > limit:
            return "dead"
        if self._crash_queue and self._take_crash():
            self.crashed_drops += 1
            self._record(entry, "dropped", reaped)
            return "drop"
        if entry.undecodable:
            return "undecodable"
        return None

    def decode_error(self, entry: Entry) -> EntryDecodeError:
        return EntryDecodeError(entry)

    def failure(
        self, entry: Entry, exc: BaseException, deliveries: int, reaped: bool
    ) -> str | None:
        """Count a handler failure; the error text if the entry is out of deliveries (to be
        dead-lettered), else None (it stays pending for a retry)."""
        self.failed += 1
        error = f"{type(exc).__name__}: {exc}"
        logger.warning(
            "handler failed for %s on %s/%s (%s, delivery %d): %s",
            entry.id, self.stream.key, self.group, self.name, deliveries, error,
        )  # fmt: skip
        if self.on_error is not None:
            self._safe_callback(exc, entry)
        if self.max_deliveries is not None and deliveries >= self.max_deliveries:
            return error
        self._record(entry, "error", reaped, error)
        return None

    def record_acked(self, entries: Sequence[Entry], ok: list[str], reaped: bool) -> None:
        """Log the acked ones (``ok``: their IDs) of ``entries`` among the recent deliveries."""
        if not ok:
            return
        if len(ok) != len(entries):
            good = set(ok)
            entries = [e for e in entries[-self._recent.size :] if e.id in good]
        stamp = now_ms()
        with self._lock:
            self._recent.add_acked(entries, stamp, reaped)

    def _safe_callback(self, exc: BaseException, entry: Entry | None) -> None:
        try:
            assert self.on_error is not None
            self.on_error(exc, entry)
        except Exception:  # the callback must not kill the loop either
            logger.exception("on_error callback raised")

    # ------------------------------------------------------------ procedures

    def _handle(self, entries: Sequence[Entry], reaped: bool, counts: Any = None) -> Steps:
        """Handle one batch; returns (IDs to ack, deliveries dropped)."""
        done: Handled = yield Handle(entries, reaped, counts)
        if done.dead:
            yield from _workerrecovery.dead_letters(self, done.dead, reaped)
        return done.ok, done.dropped

    def reap(self, min_idle_ms: int | None = None) -> Steps:
        """XAUTOCLAIM idle entries to this consumer and process them; returns a ReapResult
        (see _workerrecovery.reap)."""
        return _workerrecovery.reap(self, min_idle_ms)

    def flush_acks(self) -> Steps:
        if not self._pending_acks:
            return
        try:
            n = yield self._ack_op(self._pending_acks)
            self.stream._count(acked=int(n))
            self._pending_acks = []
        except (rex.RedisError, StreamingError, OSError) as exc:
            logger.warning(
                "could not ack %d entries on %s/%s: %s",
                len(self._pending_acks), self.stream.key, self.group, exc,
            )  # fmt: skip

    # ------------------------------------------------------------ the loop

    def _block_now(self) -> int:
        # Never block past the next reap: a sweep that starts late delays every recovery.
        if self.reap_interval is None:
            return self.block_ms
        left_ms = int((self._next_reap - time.monotonic()) * 1000) + 1
        return max(1, min(self.block_ms, left_ms))

    def _ack_op(self, ids: list[str]) -> Op:
        """XACK, or XACKDEL in ``ack_mode="delete"``; its reply is how many were acked."""
        if self.ack_mode == "ack":
            return _plans.ack(self.stream.key, self.group, ids)
        args = _plans.ack_delete_args(self.stream.key, self.group, ids, self.delete_ref)
        return Op("execute_command", args, parse=_plans.acked_count)

    def _read(self, fast: bool) -> Steps:
        """XREADGROUP ``>``, with the previous batch's XACK in the same round trip; returns
        ``(entries, refused)``: ``refused`` is the XACK's error reply, if it got one (the acks
        then stay queued for the next read, and the entries are handled all the same)."""
        key, acks = self.stream.key, self._pending_acks
        count, block_ms = self._sizer.count, self._block_now()
        if fast:
            if acks and self.ack_mode == "delete":
                args = _plans.ack_delete_args(key, self.group, acks, self.delete_ref)
                payload = _fastpath.pack_command(args) + _fastpath.pack_ack_read(
                    key, self.group, self.name, (), count, block_ms
                )
            else:
                payload = _fastpath.pack_ack_read(key, self.group, self.name, acks, count, block_ms)
            flagged = _fastpath.bad_bytes_seen()
            replies = yield FastRead(payload, 2 if acks else 1, block_ms / 1000 + READ_MARGIN_S)
            refused = self._settle_acks(replies[0]) if acks else None
            raw = replies[-1]
            if isinstance(raw, Exception):
                raise raw
            checked = _fastpath.bad_bytes_seen() == flagged
            return _fastpath.parse_xreadgroup(raw, checked=checked), refused
        read = _plans.read_group(key, self.group, self.name, ">", count, block_ms)
        if not acks:
            return (yield read), None
        acked, entries = yield Batch([replace(self._ack_op(acks), tolerate=True), read])
        return entries, self._settle_acks(acked)

    def _settle_acks(self, reply: Any) -> Exception | None:
        """The reply to the XACK sent with a read: counted and the queue emptied, or, for an
        error reply, the queue kept (sent again with the next read) and the error returned."""
        if isinstance(reply, Exception):
            return reply
        self._pending_acks = []
        self.stream._count(
            acked=_plans.acked_count(reply) if isinstance(reply, list) else int(reply)
        )
        return None

    def _error_delay(self, exc: BaseException) -> float | None:
        """The error policy: log once, report, back off. None when stopping (a broken call)."""
        if self._stopping():
            logger.debug("%s stopping; call ended with %r", self.name, exc)
            return None
        err = translate(exc)
        delay = self.backoff.delay(self._failures_in_row)
        if self._failures_in_row == 0:
            logger.warning(
                "%s on %s/%s: %s; retrying with backoff", self.name, self.stream.key, self.group,
                err,
            )  # fmt: skip
        else:
            logger.debug("%s still failing (%d): %s", self.name, self._failures_in_row, err)
        self._failures_in_row += 1
        if self.on_error is not None:
            self._safe_callback(err, None)
        return delay

    def report_failure(self, exc: BaseException) -> None:
        """The error policy without its backoff (logged once, ``on_error``): for a failure
        that must not hold up a read other partitions share (a refused XACK)."""
        self._error_delay(exc)

    def _group_missing(self) -> Steps:
        # The key or group vanished (FLUSHALL, restart without persistence, DEL): pending acks
        # refer to a PEL that no longer exists.
        self._pending_acks = []
        if self.on_missing_group == "stop":
            logger.error(
                "group %s on %s is gone; stopping %s", self.group, self.stream.key, self.name
            )
            return True
        if not self._group_missing_logged:
            logger.warning(
                "group %s on %s vanished (NOGROUP); re-creating it from %s",
                self.group, self.stream.key, self.on_missing_group,
            )  # fmt: skip
            self._group_missing_logged = True
        yield from _plans.ensure_group(self.stream.key, self.group, self.on_missing_group)
        return False

    def start_steps(self) -> Steps:
        """Start-up: capabilities, the group, this name's own PEL, a first reap, then the
        subclass's own steps (see _after_start)."""
        if self.ack_mode == "delete":
            (yield from _caps.detect()).require_xackdel()
        yield from _plans.ensure_group(self.stream.key, self.group, self.group_start)
        if self.process_own_pel:
            yield from _workerrecovery.replay_own_pel(self)
        if self.reap_interval is not None:
            yield from self.reap()
        yield from self._after_start()
        self._next_reap = time.monotonic() + (self.reap_interval or 0)

    def reap_if_due(self) -> Steps:
        """The periodic reap, when ``reap_interval`` has passed since the last one."""
        if self.reap_interval is not None and time.monotonic() >= self._next_reap:
            yield from self.flush_acks()
            yield from self.reap()
            self._next_reap = time.monotonic() + self.reap_interval

    def read_back(self) -> None:
        """A read came back: the connection works again."""
        if self._failures_in_row:
            logger.info("%s reconnected to %s", self.name, self.stream.key)
            self._failures_in_row = 0
        self._group_missing_logged = False

    def take(self, entries: Sequence[Entry], asked: int) -> Steps:
        """Handle a batch of new entries read with COUNT ``asked``; queue the acks."""
        began = time.perf_counter()
        ok, _dropped = yield from self._handle(entries, False)
        self._sizer.observe(asked, len(entries), time.perf_counter() - began)
        self.processed += len(ok)
        self._pending_acks.extend(ok)

    def on_failure(self, exc: Exception) -> Steps:
        """The loop's error policy for ``exc``; returns True when the loop must end."""
        if isinstance(exc, FeatureUnavailable):  # nothing to retry: this server cannot do it
            logger.error("%s cannot run on %s: %s", self.name, self.stream.key, exc)
            if self.on_error is not None:
                self._safe_callback(exc, None)
            return True
        problem: BaseException = exc
        if isinstance(exc, GroupMissing) or (
            isinstance(exc, rex.ResponseError) and is_nogroup(exc)
        ):
            try:
                return (yield from self._group_missing())
            except (rex.RedisError, StreamingError) as again:
                problem = again
        elif not isinstance(exc, (rex.RedisError, StreamingError, OSError)):
            if self._stopping():
                return True  # a broken call while stopping: not a failure
            logger.exception("%s: unexpected error in worker loop", self.name)
        delay = self._error_delay(problem)
        if delay is None:
            return True
        yield Wait(delay)
        return False

    def loop(self, fast: bool) -> Steps:
        """The worker's whole life, as steps; ends when stopped (or NOGROUP with "stop")."""
        logger.info("%s started on %s/%s", self.name, self.stream.key, self.group)
        started = False
        self._next_reap = 0.0
        while not self._stopping():
            try:
                if not started:
                    yield from self.start_steps()
                    started = True
                if self.paused:
                    yield from self.flush_acks()
                    yield Park()
                    continue
                yield from self.reap_if_due()
                if not self._may_read():
                    yield from self.flush_acks()
                    yield Wait(0.05)
                    continue
                asked = self._sizer.count
                entries, refused = yield from self._read(fast)
                if refused is None:
                    self.read_back()
                if entries and not self._stopping():
                    yield from self.take(entries, asked)
                if refused is not None:  # after the entries: one refused XACK costs none
                    raise refused
            except Exception as exc:  # never let the loop die: the error policy decides
                if (yield from self.on_failure(exc)):
                    break
        yield from self.flush_acks()
        logger.info("%s stopped on %s/%s", self.name, self.stream.key, self.group)
