"""AsyncConsumerWorker: one consumer of one group, running read -> process -> ack as a task.

The asyncio shell of the worker core (_workercore): the same steps as the thread shell, awaited
(aio._drive for commands, the async fast-path round trip for the read, ``asyncio.Event`` for
waits), and the per-entry loop awaits ``async def`` handlers, up to ``concurrency`` at once. It
must never ack an entry whose handler has not returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import redis.exceptions as rex

from .. import _codec as codec
from .. import _fastpath as fp
from .. import _liveness
from .._backoff import Backoff
from .._errors import InvalidOption
from .._model import Entry, ReapResult
from .._ops import Batch, Op
from .._workercore import WorkerCore
from .._workersteps import (
    DEFAULT_BATCH_BUDGET_MS,
    DEFAULT_COUNT,
    DEFAULT_MAX_DELIVERIES,
    DEFAULT_REAP_INTERVAL_S,
    DEFAULT_RECENT_SIZE,
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
from . import _drive
from . import _fastpath as afp
from .features import AsyncDeadLetters
from .stream import AsyncEventStream

logger = logging.getLogger(__name__)

AsyncHandler = Callable[[Entry], Awaitable[Any]]


def check_async_handler(handler: object) -> AsyncHandler:
    """An ``async def`` callable; anything else raises InvalidOption naming it."""
    if not callable(handler):
        raise InvalidOption(f"handler must be callable, got {handler!r}")
    call = handler if inspect.isroutine(handler) else type(handler).__call__
    if not (inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(call)):
        raise InvalidOption(
            f"handler {handler!r} is not an async function; AsyncConsumerWorker awaits its "
            "handler (run blocking code with `await asyncio.to_thread(fn, entry)`, or use "
            "ConsumerWorker for sync handlers)"
        )
    return handler


async def _noop(entry: Entry) -> None:
    return None


def _cancelling() -> bool:
    """True when the running task itself has been asked to cancel (not a handler's sub-task)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class AsyncConsumerWorker(WorkerCore):
    """A task that reads new entries for ``name`` in ``group`` and awaits ``handler`` on each.

    ``AsyncConsumerWorker(stream: AsyncEventStream, group, name, handler, *, concurrency=1,
    **the options of ConsumerWorker)``. The contract is ConsumerWorker's: an entry is acked
    only after its handler returned (acks of one read go together with the next read), a
    raising handler leaves it pending for the reaper, ``max_deliveries`` dead-letters it.
    ``concurrency``: how many handlers of one read may run at once (1 keeps stream order).
    ``start()`` creates the task (call it inside a running loop); ``await stop(timeout)``
    ends it cooperatively and cancels it only after ``timeout``. Usable as ``async with``.
    """

    def __init__(
        self,
        stream: AsyncEventStream,
        group: str,
        name: str,
        handler: AsyncHandler | None = None,
        *,
        concurrency: int = 1,
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
        if not isinstance(stream, AsyncEventStream):
            raise InvalidOption(f"stream must be an AsyncEventStream, got {stream!r}")
        super().__init__(
            stream, group, name, count=count, batch_budget_ms=batch_budget_ms,
            block_ms=block_ms, reap_interval=reap_interval, claim_min_idle_ms=claim_min_idle_ms,
            max_deliveries=max_deliveries, group_start=group_start,
            on_missing_group=on_missing_group, process_own_pel=process_own_pel,
            on_error=on_error, recent_size=recent_size, backoff=backoff,
            ack_mode=ack_mode, delete_ref=delete_ref,
        )  # fmt: skip
        self.stream: AsyncEventStream = stream
        self.handler: AsyncHandler = _noop if handler is None else check_async_handler(handler)
        self.concurrency = codec.validate_int(concurrency, "concurrency", minimum=1, maximum=10_000)
        # The longest any of the worker's calls may wait (the read has its own deadline).
        self._bound = self.block_ms / 1000 + READ_MARGIN_S
        # The worker's calls go over its own pool (see _liveness): bounded waits and no
        # redis-py retries, whatever the caller's client settings; the caller's is untouched.
        own = _liveness.private_async_client(stream.client, self._bound)
        self._io_stream = stream if own is None else stream._with_client(own)
        self._own_client = own
        self.dead_letters = AsyncDeadLetters(self._io_stream, dead_letter_key)
        self._stop = asyncio.Event()
        self._resumed = asyncio.Event()
        self._parked = asyncio.Event()
        self._paused = False
        self._task: asyncio.Task[None] | None = None
        self._reading: asyncio.Task[list[Any]] | None = None
        self._process_lock = asyncio.Lock()

    # ------------------------------------------------------------ lifecycle

    def start(self) -> AsyncConsumerWorker:
        """Create the task (once; needs a running loop). Returns self."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"consumer-{self.group}-{self.name}"
            )
        return self

    async def stop(self, timeout: float | None = None) -> bool:
        """End the task cooperatively within ``timeout`` seconds, then cancel it; idempotent.

        A blocking XREADGROUP in flight is abandoned at once (its entries stay pending);
        the running handlers finish, handled entries are acked. True if the task ended on its
        own, False if it had to be cancelled.
        """
        self._stop.set()
        self._resumed.set()
        read = self._reading
        if read is not None and not read.done():
            read.cancel()
        task = self._task
        if task is None or task is asyncio.current_task() or task.done():
            return True
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if done:
            return True
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        logger.warning("%s did not stop within %s s; cancelled", self.name, timeout)
        return False

    @property
    def is_alive(self) -> bool:
        """True while the worker task runs."""
        return self._task is not None and not self._task.done()

    async def pause(self, wait: bool = False, timeout: float | None = None) -> bool:
        """Stop fetching new entries. With ``wait``, until the in-flight batch is done and
        acked (False on timeout)."""
        self._paused = True
        self._resumed.clear()
        if not wait or not self.is_alive:
            return True
        try:
            await asyncio.wait_for(self._parked.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def resume(self) -> None:
        """Fetch again after :meth:`pause`."""
        self._paused = False
        self._resumed.set()

    @property
    def paused(self) -> bool:
        return self._paused

    async def __aenter__(self) -> AsyncConsumerWorker:
        return self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _stopping(self) -> bool:
        return self._stop.is_set()

    def _dead_letter_key(self) -> str:
        return self.dead_letters.key

    # ------------------------------------------------------------ interpreting the core's steps

    async def _fast_read(self, step: FastRead) -> list[Any]:
        client = self._io_stream.client
        self._reading = asyncio.ensure_future(
            afp.roundtrip(client, step.payload, step.replies, entries=True, timeout=step.timeout)
        )
        try:
            return await self._reading
        except asyncio.CancelledError:
            me = asyncio.current_task()
            if me is not None and me.cancelling():
                raise  # the task itself is cancelled: let it end
            raise fp.Interrupted("read abandoned by stop()", True) from None
        finally:
            self._reading = None

    async def _drive(self, steps: Steps) -> Any:
        """Run core steps to their end on this task; their result."""
        client = self._io_stream.client
        try:
            step = next(steps)
            while True:
                try:
                    if isinstance(step, (Op, Batch)):
                        try:
                            async with asyncio.timeout(self._bound):
                                reply = await _drive.execute(client, step)
                        except TimeoutError as late:  # the worker's own bound, not the client's
                            raise rex.TimeoutError(f"no reply within {self._bound:.1f} s") from late
                    elif isinstance(step, FastRead):
                        reply = await self._fast_read(step)
                    elif isinstance(step, Handle):
                        async with self._process_lock:
                            reply = await self._handle_batch(step)
                    elif isinstance(step, Wait):
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._stop.wait(), step.seconds)
                        reply = None
                    elif isinstance(step, Park):
                        self._parked.set()
                        while self._paused and not self._stop.is_set():
                            await self._resumed.wait()
                        self._parked.clear()
                        reply = None
                    else:
                        raise TypeError(f"not a worker step: {step!r}")
                except Exception as exc:  # handed to the core, which decides what it means
                    step = steps.throw(exc)
                    continue
                step = steps.send(reply)
        except StopIteration as done:
            return done.value

    async def _one(self, entry: Entry, n: int, reaped: bool) -> str | None:
        """Await the handler on one entry: None if it returned, else its failure's verdict
        (the error text when the entry is to be dead-lettered, "" when it stays pending)."""
        try:
            if entry.undecodable:
                raise self.decode_error(entry)
            result = self.handler(entry)
            if not inspect.isawaitable(result):
                raise InvalidOption(
                    f"handler {self.handler!r} returned {type(result).__name__}, not an "
                    "awaitable; the entry was not acked"
                )
            await result
        except asyncio.CancelledError as exc:
            if _cancelling():
                raise  # this task is being cancelled: let it end
            return self.failure(entry, exc, n, reaped) or ""  # the handler's own sub-task
        except Exception as exc:
            return self.failure(entry, exc, n, reaped) or ""
        return None

    async def _handle_batch(self, step: Handle) -> Handled:
        """The per-entry loop: awaits each handler (up to ``concurrency`` at once)."""
        ok: list[str] = []
        dead: list[tuple[Entry, int, str]] = []
        dropped = 0
        deliveries, reaped = step.deliveries, step.reaped
        runnable: list[tuple[Entry, int]] = []
        for entry in step.entries:
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
            runnable.append((entry, n))
        if self.concurrency == 1:
            # Inline rather than through _one: this loop is where a fast handler's time goes.
            handler, stopping, append = self.handler, self._stop.is_set, ok.append
            for entry, n in runnable:
                if stopping():
                    break  # the rest stays pending for a reaper (or this name's restart)
                try:
                    if type(entry) is not Entry and entry.undecodable:
                        raise self.decode_error(entry)
                    await handler(entry)
                except (Exception, asyncio.CancelledError) as exc:
                    # A CancelledError the handler raised (a sub-task someone cancelled) is a
                    # failure of that entry; only this task's own cancellation ends the loop.
                    if isinstance(exc, asyncio.CancelledError) and _cancelling():
                        raise
                    error = self.failure(entry, exc, n, reaped)
                    if error is not None:
                        dead.append((entry, n, error))
                    continue
                append(entry.id)
        else:
            gate = asyncio.Semaphore(self.concurrency)

            async def guarded(entry: Entry, n: int) -> str | None:
                async with gate:
                    if self._stop.is_set():
                        return ""  # not started: stays pending
                    return await self._one(entry, n, reaped)

            outcomes = await asyncio.gather(*(guarded(e, n) for e, n in runnable))
            for (entry, n), outcome in zip(runnable, outcomes, strict=True):
                if outcome is None:
                    ok.append(entry.id)
                elif outcome:
                    dead.append((entry, n, outcome))
        self.record_acked(step.entries, ok, reaped)
        return Handled(ok, dead, dropped)

    async def reap_idle_pel(self, min_idle_ms: int | None = None) -> ReapResult:
        """XAUTOCLAIM entries idle past ``min_idle_ms`` to this consumer and process them
        (see ConsumerWorker.reap_idle_pel)."""
        return await self._drive(self.reap(min_idle_ms))  # type: ignore[no-any-return]

    async def _run(self) -> None:
        try:
            await self._drive(self.loop(afp.supports(self._io_stream.client)))
        except Exception:  # the core handles every failure it can meet; this is a bug
            logger.exception("%s: worker task failed", self.name)
        finally:
            self._parked.set()
            if self._own_client is not None:
                with contextlib.suppress(Exception):
                    await self._own_client.connection_pool.disconnect()
