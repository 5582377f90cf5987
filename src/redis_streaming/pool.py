"""WorkerPool: the consumers of one group spread over N worker processes, supervised from here.

Children are started with multiprocessing's ``spawn`` (a fresh interpreter: no inherited
threads, locks or sockets) and each runs ConsumerWorker threads (or a PartitionedConsumerPool)
under stable names, so a restarted child replays its own pending entries. The parent only
supervises: it restarts a child that dies (with backoff, logging why), stops them all on
:meth:`WorkerPool.stop` (SIGTERM, then SIGKILL at the deadline, naming who it killed), reaps
every child (no zombies) and gathers their counters for one metrics view. A child watches its
parent through multiprocessing's parent sentinel and stops gracefully when the parent dies, so
no child outlives it. This module must never run a handler in the parent process.

What runs in a child, and the messages it sends here, is in ``_pool_child``.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import multiprocessing.connection as mpc
import pickle
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, Final

from . import _codec as codec
from ._backoff import Backoff
from ._errors import InvalidOption
from ._model import ConsumerStatus, StreamStats
from ._pool_child import ChildSpec, HandlerSpec, add_status, child_main, resolve_handler
from ._pool_model import ChildInfo, PoolEvent, describe_exit

logger = logging.getLogger(__name__)

__all__ = ["ChildInfo", "PoolEvent", "WorkerPool"]

#: Restart delays: 0.5 s doubling to 30 s (jittered); reset once a child ran STABLE_AFTER_S.
DEFAULT_RESTART_BACKOFF: Final = Backoff(base_s=0.5, cap_s=30.0)
STABLE_AFTER_S: Final = 10.0
DEFAULT_STOP_TIMEOUT_S: Final = 10.0
#: What a child keeps for itself out of the parent's stop timeout, to report and exit.
_CHILD_MARGIN_S: Final = 0.5

# ---------------------------------------------------------------- the parent


@dataclass
class _Slot:
    index: int
    names: tuple[str, ...]
    name_prefix: str
    proc: BaseProcess | None = None
    conn: Connection | None = None
    started: float = 0.0
    ready: bool = False
    restarts: int = 0
    failures_in_row: int = 0
    restart_at: float | None = None
    finished: bool = False
    last_exit: str | None = None
    error: str | None = None
    statuses: dict[str, ConsumerStatus] = field(default_factory=dict)
    carried: dict[str, ConsumerStatus] = field(default_factory=dict)
    stats: tuple[int, int] = (0, 0)
    carried_stats: tuple[int, int] = (0, 0)
    held: dict[str, list[int]] = field(default_factory=dict)

    @property
    def alive(self) -> bool:
        return self.proc is not None

    def label(self) -> str:
        pid = self.proc.pid if self.proc is not None else None
        return f"worker process {self.index} (pid {pid}: {', '.join(self.names)})"


class WorkerPool:
    """``consumers`` consumers of ``group`` on ``stream_key``, spread over ``processes`` child
    processes that this object supervises.

    Consumer names are ``<name_prefix>-0 .. <name_prefix>-(consumers-1)`` (or
    ``consumer_names``); child ``i`` runs names ``i, i+processes, ...``, always the same ones,
    so a restarted child first re-processes its own pending entries. With ``partitions`` each
    child runs a PartitionedConsumerPool whose members are ``<name_prefix>-<i>-<j>``; the
    leases spread the partitions over every member of every child.

    ``handler`` is a ``"module:function"`` string or a picklable callable (a module-level
    function, or a functools.partial of one): each child imports it. ``worker_options`` go to
    every ConsumerWorker (or to the PartitionedConsumerPool); ``stream_options`` to the
    EventStream (PartitionedStream); ``client_options`` to ``redis.Redis.from_url``.
    ``initializer`` runs first in each child. With ``forward_logs`` (default) a child's log
    records at or above this process's root level are re-emitted here.
    ``on_event`` is called from the supervisor thread with each :class:`PoolEvent`.
    """

    def __init__(
        self,
        redis_url: str,
        stream_key: str,
        group: str,
        handler: HandlerSpec | None = None,
        *,
        processes: int = 2,
        consumers: int | None = None,
        name_prefix: str | None = None,
        consumer_names: Sequence[str] | None = None,
        partitions: int | None = None,
        cluster: bool = False,
        client_options: Mapping[str, Any] | None = None,
        stream_options: Mapping[str, Any] | None = None,
        restart_backoff: Backoff = DEFAULT_RESTART_BACKOFF,
        stop_timeout: float = DEFAULT_STOP_TIMEOUT_S,
        initializer: Callable[[], Any] | None = None,
        forward_logs: bool = True,
        on_event: Callable[[PoolEvent], None] | None = None,
        **worker_options: Any,
    ) -> None:
        self.redis_url = str(redis_url)
        self.stream_key = codec.validate_name(stream_key, "stream key")
        self.group = codec.validate_name(group, "group")
        self.processes = codec.validate_int(processes, "processes", minimum=1, maximum=1024)
        prefix = codec.validate_name(name_prefix or socket.gethostname(), "name_prefix")
        if consumer_names is not None:
            names = [codec.validate_name(n, "consumer") for n in consumer_names]
            if consumers is not None and consumers != len(names):
                raise InvalidOption(f"consumers={consumers} but {len(names)} consumer_names")
            if len(set(names)) != len(names):
                raise InvalidOption(f"consumer_names must be distinct, got {names}")
            if partitions is not None:
                raise InvalidOption("consumer_names cannot be used with partitions")
        else:
            count = self.processes if consumers is None else consumers
            codec.validate_int(count, "consumers", minimum=1, maximum=100_000)
            names = [f"{prefix}-{i}" for i in range(count)]
        if self.processes > len(names):
            raise InvalidOption(
                f"processes={self.processes} is more than the {len(names)} consumers to run "
                "(each process needs at least one)"
            )
        self.partitions = (
            None
            if partitions is None
            else codec.validate_int(partitions, "partitions", minimum=1, maximum=4096)
        )
        self.stop_timeout = codec.validate_seconds(stop_timeout, "stop_timeout") or 0.0
        self.restart_backoff = restart_backoff
        self.on_event = on_event
        self._log_level: int | None = (
            logging.getLogger().getEffectiveLevel() if forward_logs else None
        )
        self.consumer_names = tuple(names)
        self._slots: list[_Slot] = []
        base: dict[str, Any] = {
            "redis_url": self.redis_url,
            "stream_key": self.stream_key,
            "group": self.group,
            "handler": handler,
            "partitions": self.partitions,
            "cluster": bool(cluster),
            "client_options": dict(client_options or {}),
            "stream_options": dict(stream_options or {}),
            "worker_options": dict(worker_options),
            "stop_timeout": self.stop_timeout,
            "initializer": initializer,
        }
        for i in range(self.processes):
            mine = names[i :: self.processes]
            if self.partitions is not None:
                mine = [f"{prefix}-{i}-{j}" for j in range(len(mine))]
            self._slots.append(_Slot(i, tuple(mine), f"{prefix}-{i}"))
        self._base = base
        self._check(handler)
        self._ctx = mp.get_context("spawn")
        # Reentrant: on_event callbacks run on the supervisor thread and may ask children().
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def _check(self, handler: HandlerSpec | None) -> None:
        """Fail here, not in a child: the handler resolves and everything pickles."""
        resolve_handler(handler)
        try:
            pickle.dumps(self._spec(self._slots[0]))
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            raise InvalidOption(
                "WorkerPool arguments must be picklable to reach the worker processes "
                f"(use a module-level handler or 'module:function'): {exc}"
            ) from None

    def _spec(self, slot: _Slot) -> ChildSpec:
        return ChildSpec(
            index=slot.index,
            names=slot.names,
            name_prefix=slot.name_prefix,
            log_level=self._log_level,
            **self._base,
        )

    def __repr__(self) -> str:
        return f"WorkerPool({self.stream_key!r}, group={self.group!r}, processes={self.processes})"

    # ------------------------------------------------------------ lifecycle

    def start(self) -> WorkerPool:
        """Spawn every child and start supervising (once)."""
        with self._lock:
            if self._thread is not None:
                return self
            for slot in self._slots:
                self._spawn(slot)
            self._thread = threading.Thread(
                target=self._supervise, name=f"pool-{self.group}", daemon=True
            )
            self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> list[str]:
        """Stop every child gracefully (SIGTERM: each finishes its batch, acks, exits); after
        ``timeout`` (default ``stop_timeout``) SIGKILL the rest. Returns a description of each
        child it had to kill (empty when all stopped in time). Idempotent."""
        timeout = self.stop_timeout if timeout is None else max(0.0, timeout)
        self._stopping.set()
        with self._lock:
            if self._thread is None:
                return []
            for slot in self._slots:
                slot.restart_at = None
                if slot.proc is not None:
                    slot.proc.terminate()
        killed: list[str] = []
        if not self._done.wait(timeout):
            with self._lock:
                for slot in self._slots:
                    if slot.proc is not None and slot.proc.exitcode is None:
                        busy = f" ({slot.error})" if slot.error else ""
                        killed.append(slot.label() + busy)
                        slot.proc.kill()
            if killed:
                logger.warning("pool %s: killed %s", self.group, "; ".join(killed))
            self._done.wait(10.0)
        thread = self._thread
        if thread is not threading.current_thread():
            thread.join(10.0)
        return killed

    def __enter__(self) -> WorkerPool:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until every child that is meant to run reported its consumers started."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                ok = all(s.ready or s.finished for s in self._slots)
            if ok:
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.01)

    @property
    def running(self) -> bool:
        """True while some child runs or is due to be restarted."""
        with self._lock:
            return self._thread is not None and not self._done.is_set()

    # ------------------------------------------------------------ introspection

    def children(self) -> list[ChildInfo]:
        """One snapshot per child slot."""
        with self._lock:
            return [
                ChildInfo(
                    index=s.index,
                    pid=s.proc.pid if s.proc is not None else None,
                    consumers=s.names,
                    alive=s.proc is not None,
                    ready=s.ready,
                    restarts=s.restarts,
                    last_exit=s.last_exit,
                    partitions={k: list(v) for k, v in s.held.items()},
                )
                for s in self._slots
            ]

    def statuses(self) -> list[ConsumerStatus]:
        """Every consumer's counters, summed over the incarnations of its child (so they
        never go backwards across a restart), ``alive`` while its child reports it alive."""
        out: list[ConsumerStatus] = []
        with self._lock:
            for s in self._slots:
                for name in s.names:
                    now = s.statuses.get(name)
                    before = s.carried.get(name)
                    if now is None:
                        now = ConsumerStatus(name, self.group, 0, 0, 0, 0, 0, False, False)
                    elif s.proc is None:
                        now = replace(now, alive=False)
                    out.append(now if before is None else add_status(now, before))
        order = {name: i for i, name in enumerate(self.consumer_names)}
        return sorted(out, key=lambda st: order.get(st.name, len(order)))

    def stream_stats(self) -> StreamStats:
        """XADDs and XACKs the children made, summed (for metrics' produced/acked)."""
        with self._lock:
            produced = sum(s.stats[0] + s.carried_stats[0] for s in self._slots)
            acked = sum(s.stats[1] + s.carried_stats[1] for s in self._slots)
        return StreamStats(produced=produced, acked=acked)

    # ------------------------------------------------------------ supervision

    def _emit(self, event: PoolEvent) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(event)
        except Exception:  # a bad callback must not stop supervision
            logger.exception("pool %s: on_event callback failed", self.group)

    def _spawn(self, slot: _Slot) -> None:
        """Start the child of ``slot`` (called with the lock held)."""
        recv, send = self._ctx.Pipe(duplex=False)
        proc = self._ctx.Process(
            target=child_main,
            args=(self._spec(slot), send),
            name=f"{self.group}-worker-{slot.index}",
            daemon=False,
        )
        proc.start()
        send.close()  # the child holds the only writer: EOF here means it is gone
        slot.proc, slot.conn = proc, recv
        slot.started, slot.ready, slot.restart_at, slot.error = time.monotonic(), False, None, None
        logger.info("pool %s: started %s", self.group, slot.label())
        self._emit(PoolEvent("started", slot.index, proc.pid, slot.names))

    def _on_message(self, slot: _Slot, msg: tuple[Any, ...]) -> None:
        kind = msg[0]
        if kind == "status":
            with self._lock:
                slot.statuses = {st.name: st for st in msg[1]}
                slot.stats = tuple(msg[2])
                slot.held = dict(msg[3] or {})
        elif kind == "log":
            record: logging.LogRecord = msg[1]
            pid = slot.proc.pid if slot.proc is not None else "?"
            record.msg = f"worker process {slot.index} (pid {pid}): {record.msg}"
            logging.getLogger(record.name).handle(record)
        elif kind == "ready":
            with self._lock:
                slot.ready = True
            pid = slot.proc.pid if slot.proc is not None else None
            self._emit(PoolEvent("ready", slot.index, pid, slot.names))
        elif kind == "error":
            slot.error = str(msg[1])
        elif kind == "stopped":
            slot.error = f"consumers still busy: {', '.join(msg[1])}" if msg[1] else None

    def _drain(self, slot: _Slot) -> bool:
        """Read what the child sent; False once its end is closed."""
        conn = slot.conn
        if conn is None:
            return False
        try:
            while conn.poll():
                self._on_message(slot, conn.recv())
        except (EOFError, OSError):
            return False
        return True

    def _reap(self, slot: _Slot) -> None:
        """The child has ended: read its last words, reap it, decide on a restart."""
        proc = slot.proc
        assert proc is not None
        proc.join(5.0)  # the sentinel fired, so this returns at once; it reaps the zombie
        self._drain(slot)
        if slot.conn is not None:
            slot.conn.close()
        exitcode = proc.exitcode
        cause = describe_exit(exitcode)
        if slot.error:
            cause += f": {slot.error}"
        ran = time.monotonic() - slot.started
        with self._lock:
            label = slot.label()
            pid = proc.pid
            for name, st in slot.statuses.items():
                before = slot.carried.get(name)
                slot.carried[name] = st if before is None else add_status(st, before)
            slot.carried_stats = (
                slot.carried_stats[0] + slot.stats[0],
                slot.carried_stats[1] + slot.stats[1],
            )
            slot.statuses, slot.stats, slot.held = {}, (0, 0), {}
            slot.proc, slot.conn, slot.ready, slot.last_exit = None, None, False, cause
            proc.close()
            if self._stopping.is_set():
                logger.info("pool %s: %s stopped (%s)", self.group, label, cause)
                return
            if exitcode == 0:
                slot.finished = True
                logger.warning("pool %s: %s finished on its own (%s)", self.group, label, cause)
                event = PoolEvent("finished", slot.index, pid, slot.names, cause)
            else:
                slot.failures_in_row = 1 if ran >= STABLE_AFTER_S else slot.failures_in_row + 1
                delay = self.restart_backoff.delay(slot.failures_in_row - 1)
                slot.restart_at = time.monotonic() + delay
                slot.restarts += 1
                logger.warning(
                    "pool %s: %s died after %.1f s (%s); restarting in %.1f s",
                    self.group, label, ran, cause, delay,
                )  # fmt: skip
                event = PoolEvent("exited", slot.index, pid, slot.names, cause, delay)
        self._emit(event)

    def _supervise(self) -> None:
        try:
            while True:
                with self._lock:
                    live = [s for s in self._slots if s.proc is not None]
                    due = [s.restart_at for s in self._slots if s.restart_at is not None]
                if not live and (self._stopping.is_set() or not due):
                    return
                waits: dict[Any, _Slot] = {}
                for s in live:
                    assert s.proc is not None
                    waits[s.proc.sentinel] = s
                    if s.conn is not None:
                        waits[s.conn] = s
                timeout = 0.2 if not due else max(0.0, min(0.2, min(due) - time.monotonic()))
                ready = mpc.wait(list(waits), timeout) if waits else []
                if not waits:
                    time.sleep(timeout)
                ended: list[_Slot] = []
                for obj in ready:
                    s = waits[obj]
                    if obj is s.conn:
                        if not self._drain(s) and s.conn is not None:
                            s.conn.close()
                            s.conn = None  # EOF: the sentinel tells the rest
                    elif s not in ended:
                        ended.append(s)
                for s in ended:
                    self._reap(s)
                now = time.monotonic()
                with self._lock:
                    if self._stopping.is_set():
                        continue
                    for s in self._slots:
                        if s.proc is None and s.restart_at is not None and s.restart_at <= now:
                            self._spawn(s)
        except Exception:  # supervision must not die silently; stop() still works after it
            logger.exception("pool %s: supervisor failed", self.group)
        finally:
            self._done.set()
