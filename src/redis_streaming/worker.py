"""ConsumerWorker: one consumer of one group, running read -> process -> ack in a thread.

It must survive any single entry or Redis failure (log, back off, retry) and never ack an entry
whose handler has not returned. Commands themselves go through EventStream; nothing here parses.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Final, Literal

import redis.exceptions as rex

from . import _codec as codec
from . import _fastpath, _liveness
from ._backoff import Backoff
from ._batching import ReadSizer
from ._errors import (
    EntryDecodeError,
    GroupMissing,
    InvalidOption,
    StreamingError,
    is_nogroup,
    translate,
)
from ._fastpath import read_entries
from ._model import ConsumerStatus, Delivery, DeliveryOutcome, Entry, ReapResult
from .deadletter import REASON_FAILED, REASON_UNDECODABLE, DeadLetters
from .stream import (
    DEFAULT_AUTOCLAIM_MAX_PAGES,
    DEFAULT_AUTOCLAIM_PAGE,
    EventStream,
    now_ms,
)

logger = logging.getLogger(__name__)

DEFAULT_REAP_INTERVAL_S: Final = 5.0
DEFAULT_MAX_DELIVERIES: Final = 5
DEFAULT_RECENT_SIZE: Final = 20
DEFAULT_COUNT: Final = 100
DEFAULT_BATCH_BUDGET_MS: Final = 50.0
#: How long past ``block_ms`` a read may stay silent before its connection is dropped (s).
READ_MARGIN_S: Final = 2.0
_STOP_POLL_S: Final = 0.1  # how often stop() looks for a stalled call while it waits

Handler = Callable[[Entry], Any]
ErrorCallback = Callable[[BaseException, Entry | None], None]
MissingGroupPolicy = Literal["0", "$", "stop"]


def _noop(entry: Entry) -> None:
    return None


def _unawaited(result: Any, handler: Handler) -> InvalidOption:
    """Close an awaitable a sync handler returned (so it never runs half-way) and say why."""
    close = getattr(result, "close", None)
    if callable(close):
        close()
    return InvalidOption(
        f"handler {handler!r} returned an awaitable ({type(result).__name__}); ConsumerWorker "
        "runs sync handlers only, so the entry was not acked (wrap async code with "
        "asyncio.run or run it from a sync function)"
    )


def check_handler(handler: object) -> Handler:
    """A callable that is not a coroutine function; raises InvalidOption naming it."""
    if not callable(handler):
        raise InvalidOption(f"handler must be callable, got {handler!r}")
    # An object whose __call__ is async is just as unrunnable as an async function.
    call = handler if inspect.isroutine(handler) else type(handler).__call__
    if (
        inspect.iscoroutinefunction(handler)
        or inspect.iscoroutinefunction(call)
        or inspect.isasyncgenfunction(handler)
    ):
        raise InvalidOption(
            f"handler {handler!r} is an async function; ConsumerWorker calls handlers "
            "synchronously and would ack an entry whose coroutine never ran"
        )
    return handler


class ConsumerWorker:
    """A thread that reads new entries for ``name`` in ``group`` and hands each to ``handler``.

    Handler contract: return normally and the entry is acked (all entries of one read share one
    XACK, sent together with the next read); raise and it stays pending, to be reclaimed by a
    reaper and retried until ``max_deliveries``, then dead-lettered.

    Options:
        count: the most entries one XREADGROUP asks for.
        batch_budget_ms: adapt the read size so one batch's handler time stays near this
            budget (starting at 10 entries, doubling while full batches finish inside it,
            shrinking at once when one does not): fast handlers get large, cheap reads; slow
            ones keep few entries pending, so peers share the work and nothing waits long
            enough to look idle to a reaper. None reads ``count`` entries every time.
        block_ms: XREADGROUP BLOCK.
        reap_interval: seconds between XAUTOCLAIM sweeps (also one at start); None disables.
        max_deliveries: deliveries after which a failing entry is dead-lettered; None disables.
        dead_letter_key: defaults to ``<stream>:dlq``.
        group_start: where the group starts if this worker has to create it ("$" or an ID).
        on_missing_group: when the group vanishes (FLUSHALL, key deleted): re-create it from
            "0" (everything still in the stream), from "$" (only new entries), or "stop".
        process_own_pel: at start, first re-process this consumer's own pending entries.
        on_error: called with (exception, entry or None) for handler and Redis failures.
    """

    def __init__(
        self,
        stream: EventStream,
        group: str,
        name: str,
        handler: Handler | None = None,
        *,
        count: int = DEFAULT_COUNT,
        batch_budget_ms: float | None = DEFAULT_BATCH_BUDGET_MS,
        block_ms: int = 500,
        reap_interval: float | None = DEFAULT_REAP_INTERVAL_S,
        claim_min_idle_ms: int | None = None,
        max_deliveries: int | None = DEFAULT_MAX_DELIVERIES,
        dead_letter_key: str | None = None,
        group_start: str = "$",
        on_missing_group: MissingGroupPolicy = "0",
        process_own_pel: bool = True,
        on_error: ErrorCallback | None = None,
        recent_size: int = DEFAULT_RECENT_SIZE,
        backoff: Backoff | None = None,
    ) -> None:
        self.stream = stream
        self.group = codec.validate_name(group, "group")
        self.name = codec.validate_name(name, "consumer")
        self.handler: Handler = _noop if handler is None else check_handler(handler)
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
        # The worker's Redis calls go over its own pool when it can make one (see _liveness):
        # every wait bounded whatever the caller's socket_timeout, and breakable by stop().
        own = _liveness.private_client(stream.client, self.block_ms / 1000 + READ_MARGIN_S)
        self._io_stream = stream if own is None else stream._with_client(own)
        self._io = _liveness.IoWatch(own)
        self.dead_letters = DeadLetters(self._io_stream, dead_letter_key)
        self.group_start = codec.validate_group_start(group_start)
        if on_missing_group not in ("0", "$", "stop"):
            raise InvalidOption(
                f"on_missing_group must be '0', '$' or 'stop', got {on_missing_group!r}"
            )
        self.on_missing_group: MissingGroupPolicy = on_missing_group
        self.process_own_pel = process_own_pel
        self.on_error = on_error
        self.backoff = backoff or Backoff()

        self._stop = threading.Event()
        self._wake = threading.Event()
        self._paused = threading.Event()
        self._parked = threading.Event()
        self._process_lock = threading.RLock()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pending_acks: list[str] = []
        self._recent: deque[Delivery] = deque(maxlen=codec.validate_int(recent_size, "recent_size"))
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

    def __repr__(self) -> str:
        return f"ConsumerWorker({self.stream.key!r}, group={self.group!r}, name={self.name!r})"

    # ------------------------------------------------------------ lifecycle

    def start(self) -> ConsumerWorker:
        """Start the thread (once). Returns self so ``w = ConsumerWorker(...).start()`` works."""
        if self._thread is not None:
            return self
        self._thread = threading.Thread(
            target=self._run, name=f"consumer-{self.group}-{self.name}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> bool:
        """Ask the loop to end and wait up to ``timeout`` seconds; idempotent. True once the
        thread has ended.

        A blocking XREADGROUP is broken at once, and any other Redis call that has waited more
        than a second (a stalled or silent connection) is broken too, so the thread ends
        promptly, once the running handler returns, even when the network is stalled. Entries
        read but not yet handled stay in the PEL for a reaper or this name's restart; entries
        already handled are acked before the thread ends (an ack that cannot reach the server
        leaves them pending: delivered again, never lost).
        """
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is None or thread is threading.current_thread():
            return True
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        while True:
            self._io.break_stalled()
            wait = _STOP_POLL_S
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
            thread.join(max(0.0, wait))
            if not thread.is_alive():
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False

    @property
    def is_alive(self) -> bool:
        """True while the worker thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def pause(self, wait: bool = False, timeout: float | None = None) -> bool:
        """Stop fetching new entries. With ``wait``, block until the in-flight batch is done
        and acked (returns False on timeout)."""
        self._paused.set()
        if not wait or not self.is_alive or self._thread is threading.current_thread():
            return True
        return self._parked.wait(timeout)

    def resume(self) -> None:
        """Fetch again after :meth:`pause`."""
        self._paused.clear()
        self._wake.set()

    @property
    def paused(self) -> bool:
        return self._paused.is_set()

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

    def __enter__(self) -> ConsumerWorker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ introspection

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
        """The last deliveries (newest last), each marked acked, dropped, error or dead-lettered."""
        with self._lock:
            return list(self._recent)

    # ------------------------------------------------------------ processing

    def _record(
        self, entry: Entry, outcome: DeliveryOutcome, reaped: bool, error: str | None = None
    ) -> None:
        delivery = Delivery(entry.id, entry.type, outcome, now_ms(), reaped, error)
        with self._lock:
            self._recent.append(delivery)

    def _take_crash(self) -> bool:
        with self._lock:
            if self._crash_queue <= 0:
                return False
            self._crash_queue -= 1
            return True

    def _fail(self, entry: Entry, exc: BaseException, deliveries: int, reaped: bool) -> bool:
        """Count a handler failure; dead-letter if out of deliveries. True if dead-lettered."""
        self.failed += 1
        error = f"{type(exc).__name__}: {exc}"
        logger.warning(
            "handler failed for %s on %s/%s (%s, delivery %d): %s",
            entry.id,
            self.stream.key,
            self.group,
            self.name,
            deliveries,
            error,
        )
        if self.on_error is not None:
            self._safe_callback(exc, entry)
        if self.max_deliveries is not None and deliveries >= self.max_deliveries:
            return self._dead_letter(entry, deliveries, error, reaped)
        self._record(entry, "error", reaped, error)
        return False

    def _dead_letter(self, entry: Entry, deliveries: int, error: str | None, reaped: bool) -> bool:
        try:
            reason = REASON_UNDECODABLE if entry.undecodable else REASON_FAILED
            self.dead_letters.send(
                self.group, self.name, entry, deliveries=deliveries, error=error, reason=reason
            )
        except StreamingError as exc:
            logger.warning("could not dead-letter %s: %s (stays pending)", entry.id, exc)
            self._record(entry, "error", reaped, error)
            return False
        self.dead_lettered += 1
        self._record(entry, "dead-lettered", reaped, error)
        return True

    def _safe_callback(self, exc: BaseException, entry: Entry | None) -> None:
        try:
            assert self.on_error is not None
            self.on_error(exc, entry)
        except Exception:  # the callback must not kill the loop either
            logger.exception("on_error callback raised")

    def _handle(
        self, entries: Sequence[Entry], *, reaped: bool, deliveries: dict[str, int] | None = None
    ) -> tuple[list[str], int]:
        """Run the handler over a batch; returns (IDs to ack, deliveries dropped by crash_next)."""
        self._io.end()  # handlers run: no Redis call of ours is in flight
        ok: list[str] = []
        dropped = 0
        handler = self.handler
        limit = self.max_deliveries
        stopping = self._stop.is_set
        for entry in entries:
            if stopping():
                break  # the rest stays pending for a reaper (or this name's restart)
            n = deliveries.get(entry.id, 1) if deliveries else 1
            if limit is not None and n > limit:
                # Delivered more often than allowed without ever failing cleanly (consumers
                # keep dying on it, crash_next included): dead-letter without running the
                # handler again. Checked before a queued crash, or a consumer that dies on
                # every delivery would never reach the dead letters.
                self._dead_letter(entry, n, "delivered too often without an ack", reaped)
                continue
            if self._crash_queue and self._take_crash():
                dropped += 1
                self.crashed_drops += 1
                self._record(entry, "dropped", reaped)
                continue
            try:
                if entry.undecodable:
                    raise EntryDecodeError(entry)
                result = handler(entry)
                if result is not None and inspect.isawaitable(result):
                    raise _unawaited(result, handler)
            except Exception as exc:
                self._fail(entry, exc, n, reaped)
                continue
            ok.append(entry.id)
        if ok:
            tail = entries[-self._recent.maxlen :] if self._recent.maxlen else ()
            stamp = now_ms()
            good = set(ok) if len(ok) != len(entries) else None
            with self._lock:
                for entry in tail:
                    if good is None or entry.id in good:
                        self._recent.append(Delivery(entry.id, entry.type, "acked", stamp, reaped))
        self._io.begin()
        return ok, dropped

    def _delivery_counts(self, entries: Sequence[Entry]) -> dict[str, int]:
        """Redis's own delivery counter for each entry (one pipelined XPENDING per ID)."""
        if self.max_deliveries is None or not entries:
            return {}
        pipe = self._io_stream.client.pipeline(transaction=False)
        for entry in entries:
            pipe.xpending_range(self.stream.key, self.group, entry.id, entry.id, 1)
        counts: dict[str, int] = {}
        for rows in pipe.execute(raise_on_error=False):
            if isinstance(rows, Exception):
                continue
            for row in codec.parse_pending_range(rows):
                counts[row.id] = row.deliveries
        return counts

    def _process_recovered(
        self, entries: list[Entry], deleted: Sequence[str]
    ) -> tuple[int, int, int]:
        """Handle entries taken from a PEL and ack them now; returns (acked, dropped, failed)."""
        failed_before = self.failed
        acked: list[str] = []
        dropped = 0
        if entries:
            counts = self._delivery_counts(entries)
            acked, dropped = self._handle(entries, reaped=True, deliveries=counts)
            self._io_stream.ack_unchecked(self.group, acked)
            self.reaped += len(acked)
        if deleted:
            if self.max_deliveries is not None:
                self.dead_letters.record_trimmed(self.group, self.name, deleted)
            else:
                logger.warning(
                    "%d pending entries on %s/%s were trimmed before processing",
                    len(deleted),
                    self.stream.key,
                    self.group,
                )
                # Nothing is left to process; without the ack an own-PEL re-read keeps them
                # pending forever.
                self._io_stream.ack_unchecked(self.group, list(deleted))
        return len(acked), dropped, self.failed - failed_before

    def reap_idle_pel(self, min_idle_ms: int | None = None) -> ReapResult:
        """XAUTOCLAIM entries idle past ``min_idle_ms`` to this consumer and process them.

        Claimed entries go through the same path as new ones (crash_next drops included);
        dropped deliveries are not counted as processed. IDs whose payload was trimmed away are
        reported in ``deleted_ids`` and recorded in the dead-letter stream.
        """
        idle = self.claim_min_idle_ms if min_idle_ms is None else min_idle_ms
        claimed = processed = dropped = failed = 0
        deleted_all: list[str] = []
        dl_before = self.dead_lettered
        with self._process_lock:
            # Resume where the last sweep stopped: a PEL longer than one sweep (young entries
            # in front of idle ones included) is covered over successive sweeps.
            for page in self._io_stream.autoclaim_pages(
                self.group,
                self.name,
                min_idle_ms=idle,
                page_count=DEFAULT_AUTOCLAIM_PAGE,
                start_id=self._reap_cursor,
                max_pages=DEFAULT_AUTOCLAIM_MAX_PAGES,
            ):
                self._reap_cursor = page.next_start_id
                entries, deleted = list(page.claimed), page.deleted_ids
                claimed += len(entries)
                deleted_all.extend(deleted)
                try:
                    a, d, f = self._process_recovered(entries, deleted)
                except rex.RedisError as exc:
                    raise translate(exc) from exc
                processed += a
                dropped += d
                failed += f
        if claimed or deleted_all:
            logger.info(
                "%s reaped on %s/%s: %d claimed, %d processed, %d dropped, %d trimmed",
                self.name,
                self.stream.key,
                self.group,
                claimed,
                processed,
                dropped,
                len(deleted_all),
            )
        return ReapResult(
            claimed=claimed,
            processed=processed,
            deleted_ids=tuple(deleted_all),
            dropped=dropped,
            failed=failed,
            dead_lettered=self.dead_lettered - dl_before,
        )

    def _replay_own_pel(self) -> int:
        """Restart path: handle this consumer's own pending entries once, page by page."""
        after = "0"
        total = 0
        while not self._stop.is_set():
            entries, deleted = self._io_stream.read_own_pel(
                self.group, self.name, self.count, after
            )
            if not entries and not deleted:
                break
            with self._process_lock:
                acked, _dropped, _failed = self._process_recovered(entries, deleted)
            total += acked
            after = max([e.id for e in entries] + list(deleted), key=codec.parse_id)
        if total:
            logger.info(
                "%s re-processed %d own pending entries on %s/%s",
                self.name,
                total,
                self.stream.key,
                self.group,
            )
        return total

    # ------------------------------------------------------------ the loop

    def _flush_acks(self) -> None:
        if not self._pending_acks:
            return
        try:
            self._io_stream.ack_unchecked(self.group, self._pending_acks)
            self._pending_acks = []
        except (rex.RedisError, StreamingError) as exc:
            logger.warning(
                "could not ack %d entries on %s/%s: %s",
                len(self._pending_acks),
                self.stream.key,
                self.group,
                exc,
            )

    def _block_now(self) -> int:
        # Never block past the next reap: a sweep that starts late delays every recovery.
        if self.reap_interval is None:
            return self.block_ms
        left_ms = int((self._next_reap - time.monotonic()) * 1000) + 1
        return max(1, min(self.block_ms, left_ms))

    def _read(self) -> list[Entry]:
        """XREADGROUP ``>``, with the previous batch's XACK in the same round trip."""
        stream = self._io_stream
        acks = self._pending_acks
        if _fastpath.supports(stream.client):
            return self._read_fast(acks)
        read = (
            "XREADGROUP", "GROUP", self.group, self.name, "COUNT", self._sizer.count,
            "BLOCK", self._block_now(), "STREAMS", stream.key, ">",
        )  # fmt: skip
        if not acks:
            return codec.parse_xread(read_entries(stream.client, *read))
        pipe = stream.client.pipeline(transaction=False)
        pipe.xack(stream.key, self.group, *acks)
        read_entries(pipe, *read)  # queued; its reply is read as bytes like any entry read
        acked, raw = pipe.execute(raise_on_error=False)
        if isinstance(acked, Exception):
            raise acked
        self._pending_acks = []
        stream._count(acked=int(acked))
        if isinstance(raw, Exception):
            raise raw
        return codec.parse_xread(raw)

    def _read_fast(self, acks: list[str]) -> list[Entry]:
        # Same commands as the pipeline below, packed by hand and parsed without redis-py's
        # reply callbacks: this is where a worker spends its time between handler calls.
        stream = self._io_stream
        block_ms = self._block_now()
        payload = _fastpath.pack_ack_read(
            stream.key, self.group, self.name, acks, self._sizer.count, block_ms
        )
        flagged = _fastpath.bad_bytes_seen()
        # Our own deadline, not the client's socket_timeout: a connection that goes silent is
        # dropped and re-made instead of hanging the worker (and its stop()).
        deadline = block_ms / 1000 + READ_MARGIN_S
        self._io.begin(blocking=True)  # stop() may break this read at once
        replies = _fastpath.roundtrip(
            stream.client, payload, 2 if acks else 1, entries=True, timeout=deadline
        )
        self._io.begin()
        if acks:
            acked = replies[0]
            if isinstance(acked, Exception):
                raise acked
            self._pending_acks = []
            stream._count(acked=int(acked))
        raw = replies[-1]
        if isinstance(raw, Exception):
            raise raw
        return _fastpath.parse_xreadgroup(raw, checked=_fastpath.bad_bytes_seen() == flagged)

    def _startup(self) -> None:
        self._io_stream.ensure_group(self.group, self.group_start)
        if self.process_own_pel:
            self._replay_own_pel()
        if self.reap_interval is not None:
            self.reap_idle_pel()

    def _on_redis_error(self, exc: BaseException) -> None:
        if self._stop.is_set():  # most likely stop() breaking a call: nothing to report
            logger.debug("%s stopping; call ended with %r", self.name, exc)
            return
        err = translate(exc)
        delay = self.backoff.delay(self._failures_in_row)
        if self._failures_in_row == 0:
            logger.warning(
                "%s on %s/%s: %s; retrying with backoff",
                self.name,
                self.stream.key,
                self.group,
                err,
            )
        else:
            logger.debug("%s still failing (%d): %s", self.name, self._failures_in_row, err)
        self._failures_in_row += 1
        if self.on_error is not None:
            self._safe_callback(err, None)
        self._stop.wait(delay)

    def _on_group_missing(self) -> None:
        # The key or group vanished (FLUSHALL, restart without persistence, DEL): pending acks
        # refer to a PEL that no longer exists.
        self._pending_acks = []
        if self.on_missing_group == "stop":
            logger.error(
                "group %s on %s is gone; stopping %s", self.group, self.stream.key, self.name
            )
            self._stop.set()
            return
        if not self._group_missing_logged:
            logger.warning(
                "group %s on %s vanished (NOGROUP); re-creating it from %s",
                self.group,
                self.stream.key,
                self.on_missing_group,
            )
            self._group_missing_logged = True
        self._io_stream.ensure_group(self.group, self.on_missing_group)

    def _park(self) -> None:
        self._flush_acks()
        self._io.end()
        self._parked.set()
        while self._paused.is_set() and not self._stop.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
        self._parked.clear()

    def _run(self) -> None:
        logger.info("%s started on %s/%s", self.name, self.stream.key, self.group)
        started = False
        self._next_reap = 0.0
        while not self._stop.is_set():
            self._io.begin()
            try:
                if not started:
                    self._startup()
                    started = True
                    self._next_reap = time.monotonic() + (self.reap_interval or 0)
                if self._paused.is_set():
                    self._park()
                    continue
                if self.reap_interval is not None and time.monotonic() >= self._next_reap:
                    self._flush_acks()
                    self.reap_idle_pel()
                    self._next_reap = time.monotonic() + self.reap_interval
                asked = self._sizer.count
                entries = self._read()
                if self._failures_in_row:
                    logger.info("%s reconnected to %s", self.name, self.stream.key)
                    self._failures_in_row = 0
                self._group_missing_logged = False
                if not entries or self._stop.is_set():
                    continue
                with self._process_lock:
                    began = time.perf_counter()
                    ok, _dropped = self._handle(entries, reaped=False)
                    self._sizer.observe(asked, len(entries), time.perf_counter() - began)
                self.processed += len(ok)
                self._pending_acks.extend(ok)
            except (GroupMissing, rex.ResponseError) as exc:
                if isinstance(exc, GroupMissing) or is_nogroup(exc):
                    try:
                        self._on_group_missing()
                    except (rex.RedisError, StreamingError) as again:
                        self._on_redis_error(again)
                else:
                    self._on_redis_error(exc)
            except (rex.RedisError, StreamingError) as exc:
                self._on_redis_error(exc)
            except Exception as exc:  # never let the thread die
                if self._stop.is_set():
                    break  # stop() broke a call: not a failure
                logger.exception("%s: unexpected error in worker loop", self.name)
                self._on_redis_error(exc)
        self._io.begin()
        self._flush_acks()
        self._io.end()
        self._io.close()
        self._parked.set()
        logger.info("%s stopped on %s/%s", self.name, self.stream.key, self.group)
