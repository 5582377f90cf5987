"""ConsumerWorker: one consumer of one group, running read -> process -> ack in a thread.

The thread shell of the worker core (_workercore): it interprets the core's steps with blocking
calls (_drive for commands, the fast-path round trip for the read, ``threading.Event`` for
waits) and runs the per-entry handler loop. It must never ack an entry whose handler has not
returned, and decides nothing the async shell decides differently.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Callable
from typing import Any

from . import _drive, _fastpath, _liveness
from ._backoff import Backoff
from ._errors import InvalidOption
from ._model import Entry, ReapResult
from ._ops import Batch, Op
from ._workercore import WorkerCore
from ._workersteps import DEFAULT_BATCH_BUDGET_MS as DEFAULT_BATCH_BUDGET_MS
from ._workersteps import DEFAULT_COUNT as DEFAULT_COUNT
from ._workersteps import DEFAULT_MAX_DELIVERIES as DEFAULT_MAX_DELIVERIES
from ._workersteps import DEFAULT_REAP_INTERVAL_S as DEFAULT_REAP_INTERVAL_S
from ._workersteps import DEFAULT_RECENT_SIZE as DEFAULT_RECENT_SIZE
from ._workersteps import READ_MARGIN_S as READ_MARGIN_S
from ._workersteps import ErrorCallback as ErrorCallback
from ._workersteps import FastRead, Handle, Handled, Park, Steps, Wait
from ._workersteps import MissingGroupPolicy as MissingGroupPolicy
from .deadletter import DeadLetters
from .stream import EventStream

logger = logging.getLogger(__name__)


Handler = Callable[[Entry], Any]


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


class ConsumerWorker(WorkerCore):
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
        ack_mode: "ack" (XACK) or "delete" (XACKDEL, Redis 8.2+: acknowledge and delete in
            one command; on an older server the worker stops at start with FeatureUnavailable,
            reported through on_error; nothing is emulated).
        delete_ref: with ack_mode="delete", what happens to other groups: "acked" (default:
            an entry is deleted only once every group has acked it), "keepref" (deleted now;
            other groups can no longer read it) or "delref" (deleted and dropped from every
            group's PEL). Dead-lettered entries are acked (XACK), not deleted.
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
        ack_mode: str = "ack",
        delete_ref: str = "acked",
    ) -> None:
        super().__init__(
            stream, group, name, count=count, batch_budget_ms=batch_budget_ms,
            block_ms=block_ms, reap_interval=reap_interval, claim_min_idle_ms=claim_min_idle_ms,
            max_deliveries=max_deliveries, group_start=group_start,
            on_missing_group=on_missing_group, process_own_pel=process_own_pel,
            on_error=on_error, recent_size=recent_size, backoff=backoff,
            ack_mode=ack_mode, delete_ref=delete_ref,
        )  # fmt: skip
        self.stream: EventStream = stream
        self.handler: Handler = _noop if handler is None else check_handler(handler)
        # The worker's Redis calls go over its own pool when it can make one (see _liveness):
        # every wait bounded whatever the caller's socket_timeout, and breakable by stop().
        own = _liveness.private_client(stream.client, self.block_ms / 1000 + READ_MARGIN_S)
        self._io_stream = stream if own is None else stream._with_client(own)
        self._io = _liveness.IoWatch(own)
        self.dead_letters = DeadLetters(self._io_stream, dead_letter_key)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._paused = threading.Event()
        self._parked = threading.Event()
        self._process_lock = threading.RLock()
        self._thread: threading.Thread | None = None

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
        return _liveness.join_breaking(self._thread, timeout, lambda: (self._io,))

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

    def __enter__(self) -> ConsumerWorker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _stopping(self) -> bool:
        return self._stop.is_set()

    def _dead_letter_key(self) -> str:
        return self.dead_letters.key

    # ------------------------------------------------------------ interpreting the core's steps

    def _drive(self, steps: Steps) -> Any:
        """Run core steps to their end in this thread; their result."""
        return _drive.interpret(steps, self._step)

    def _step(self, step: Any) -> Any:
        io = self._io
        client = self._io_stream.client
        if isinstance(step, (Op, Batch)):
            io.begin()
            return _drive.execute(client, step)
        if isinstance(step, FastRead):
            io.begin(blocking=True)  # stop() may break this read at once
            reply = _fastpath.roundtrip(
                client, step.payload, step.replies, entries=True, timeout=step.timeout
            )
            io.begin()
            return reply
        if isinstance(step, Handle):
            io.end()  # handlers run: no Redis call of ours is in flight
            with self._process_lock:
                handled = self._handle_batch(step)
            io.begin()
            return handled
        if isinstance(step, Wait):
            io.end()
            self._stop.wait(step.seconds)
            return None
        if isinstance(step, Park):
            io.end()
            self._parked.set()
            while self._paused.is_set() and not self._stop.is_set():
                self._wake.wait(1.0)
                self._wake.clear()
            self._parked.clear()
            return None
        raise TypeError(f"not a worker step: {step!r}")

    def _handle_batch(self, step: Handle) -> Handled:
        """The per-entry handler loop (the async shell awaits the handler instead)."""
        ok: list[str] = []
        dead: list[tuple[Entry, int, str]] = []
        dropped = 0
        handler = self.handler
        deliveries = step.deliveries
        reaped = step.reaped
        stopping = self._stop.is_set
        for entry in step.entries:
            if stopping():
                break  # the rest stays pending for a reaper (or this name's restart)
            n = deliveries.get(entry.id, 1) if deliveries else 1
            bad = type(entry) is not Entry and entry.undecodable  # no property call per entry
            if self._crash_queue or n > 1 or bad:
                verdict = self.verdict(entry, n, reaped)
                if verdict == "dead":
                    dead.append((entry, n, "delivered too often without an ack"))
                    continue
                if verdict == "drop":
                    dropped += 1
                    continue
            try:
                if bad:
                    raise self.decode_error(entry)
                result = handler(entry)
                if result is not None and inspect.isawaitable(result):
                    raise _unawaited(result, handler)
            except Exception as exc:
                error = self.failure(entry, exc, n, reaped)
                if error is not None:
                    dead.append((entry, n, error))
                continue
            ok.append(entry.id)
        self.record_acked(step.entries, ok, reaped)
        return Handled(ok, dead, dropped)

    def reap_idle_pel(self, min_idle_ms: int | None = None) -> ReapResult:
        """XAUTOCLAIM entries idle past ``min_idle_ms`` to this consumer and process them.

        Claimed entries go through the same path as new ones (crash_next drops included);
        dropped deliveries are not counted as processed. IDs whose payload was trimmed away are
        reported in ``deleted_ids`` and recorded in the dead-letter stream. Raises
        RedisUnavailable / ServerError.
        """
        with self._process_lock:
            return self._drive(self.reap(min_idle_ms))  # type: ignore[no-any-return]

    def _run(self) -> None:
        try:
            self._drive(self.loop(_fastpath.supports(self._io_stream.client)))
        finally:
            self._io.end()
            self._io.close()
            self._parked.set()
