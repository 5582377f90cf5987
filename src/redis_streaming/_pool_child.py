"""What runs inside one WorkerPool child process (pool.py is the parent, the supervisor).

A child is started with multiprocessing's ``spawn`` and runs :func:`child_main`: ConsumerWorker
threads (or a PartitionedConsumerPool) under the names in its :class:`ChildSpec`, until
SIGTERM or the parent's death (watched through multiprocessing's parent sentinel), then
drains. This module never imports pool.py (no cycle); pool.py imports it.

Child -> parent messages (one-way pipe, pickled tuples)::

    ("ready",)                               workers started
    ("status", statuses, (produced, acked), held)   every REPORT_INTERVAL_S and at the end
    ("log", LogRecord)                       the child's log records, re-emitted in the parent
    ("error", text)                          why the child could not start (then it exits 1)
    ("stopped", busy)                        after SIGTERM: consumers still finishing ([] when done)
"""

from __future__ import annotations

import copy
import logging
import multiprocessing as mp
import multiprocessing.connection as mpc
import os
import pickle
import signal
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from types import FrameType
from typing import Any, Final

import redis

from ._errors import InvalidOption
from ._model import ConsumerStatus, Entry
from .partition import PartitionedConsumerPool, PartitionedStream
from .stream import EventStream
from .worker import ConsumerWorker

# The pool's logger, as before the split: a child's records keep the name "redis_streaming.pool".
logger = logging.getLogger("redis_streaming.pool")

#: How often a child sends its consumers' counters to the parent (seconds).
REPORT_INTERVAL_S: Final = 0.25

HandlerSpec = Callable[[Entry], Any] | str


@dataclass(frozen=True)
class ChildSpec:
    """Everything a child needs, pickled to it at spawn."""

    index: int
    redis_url: str
    stream_key: str
    group: str
    handler: HandlerSpec | None
    names: tuple[str, ...]
    partitions: int | None
    cluster: bool
    name_prefix: str
    client_options: dict[str, Any]
    stream_options: dict[str, Any]
    worker_options: dict[str, Any]
    stop_timeout: float
    log_level: int | None
    initializer: Callable[[], Any] | None


def resolve_handler(spec: HandlerSpec | None) -> Callable[[Entry], Any] | None:
    """A callable handler from a callable or a ``module:function`` string (imported here)."""
    if spec is None or callable(spec):
        return spec
    module_name, sep, attr = str(spec).partition(":")
    if not sep or not module_name or not attr:
        raise InvalidOption(f"handler must be 'module:function', got {spec!r}")
    import importlib

    target: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        target = getattr(target, part)
    if not callable(target):
        raise InvalidOption(f"handler {spec!r} is not callable")
    return target  # type: ignore[no-any-return]


class _Sender:
    """The child's end of the pipe, shared by its threads; a dead parent silences it."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.lock = threading.Lock()
        self.broken = False

    def send(self, msg: tuple[Any, ...]) -> None:
        with self.lock:
            if self.broken:
                return
            try:
                self.conn.send(msg)
            except (OSError, EOFError, pickle.PicklingError):
                self.broken = True


class _ForwardLogs(logging.Handler):
    """Sends the child's records to the parent, where its own logging handles them."""

    def __init__(self, sender: _Sender) -> None:
        super().__init__()
        self.sender = sender

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = self.format(record)  # message plus traceback: the rest may not pickle
            record = copy.copy(record)
            record.msg, record.args, record.exc_info, record.exc_text = msg, None, None, None
            record.stack_info = None
            self.sender.send(("log", record))
        except Exception:
            self.handleError(record)


def child_main(spec: ChildSpec, conn: Connection) -> None:
    """A child's body: run its consumers until SIGTERM or the parent's death, then drain."""
    stop = {"signal": 0}

    def on_term(signum: int, frame: FrameType | None) -> None:
        stop["signal"] = signum  # polled below: a signal handler takes no locks

    signal.signal(signal.SIGTERM, on_term)
    # Ctrl-C reaches the whole process group; the parent turns it into an orderly SIGTERM.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sender = _Sender(conn)
    if spec.log_level is not None:
        root = logging.getLogger()
        for h in list(root.handlers):
            root.removeHandler(h)
        root.addHandler(_ForwardLogs(sender))
        root.setLevel(spec.log_level)
    try:
        if spec.initializer is not None:
            spec.initializer()
        run = _start_consumers(spec)
    except Exception as exc:  # reported to the parent, which logs it as the cause
        sender.send(("error", f"{type(exc).__name__}: {exc}"))
        conn.close()
        raise SystemExit(1) from None
    sender.send(("ready",))
    parent = mp.parent_process()
    watch = [parent.sentinel] if parent is not None else []
    orphan = False
    next_report = 0.0
    while not stop["signal"]:
        if watch and mpc.wait(watch, 0.1):
            orphan = True
            logger.warning("worker process %d: parent died; stopping", spec.index)
            break
        if not watch:
            time.sleep(0.1)
        if not run.alive():
            break  # every consumer stopped on its own (on_missing_group="stop")
        if time.monotonic() >= next_report:
            sender.send(run.report())
            next_report = time.monotonic() + REPORT_INTERVAL_S
    # Each consumer finishes the batch in its hands and flushes its acks. The parent enforces
    # the stop timeout (SIGKILL, naming this child); only an orphan enforces its own.
    deadline = time.monotonic() + spec.stop_timeout
    run.begin_stop(spec.stop_timeout)
    told = False
    while busy := run.busy():
        if not told:
            sender.send(run.report())
            sender.send(("stopped", busy))
            told = True
        if orphan and time.monotonic() >= deadline:
            os._exit(1)  # stuck threads are daemons, but a handler may hold the interpreter
        if watch and mpc.wait(watch, 0.1):
            orphan = True
        if not watch:
            time.sleep(0.1)
    sender.send(run.report())
    sender.send(("stopped", []))
    conn.close()
    # Exit 0 whether SIGTERM, the parent's death or the consumers themselves ended it: the
    # parent knows whether it asked.


class _Run:
    """The consumers one child runs: ConsumerWorker threads, or a PartitionedConsumerPool."""

    def __init__(self, workers: Sequence[Any], pool: Any = None) -> None:
        self.workers = list(workers)
        self.pool = pool
        # Every partition worker seen: one that lost its lease keeps its final counters here.
        self.seen: dict[int, Any] = {}

    def alive(self) -> bool:
        if self.pool is not None:
            return True
        return any(w.is_alive for w in self.workers)

    def report(self) -> tuple[Any, ...]:
        if self.pool is None:
            statuses = [w.status() for w in self.workers]
            streams = {id(w.stream): w.stream for w in self.workers}
            held: dict[str, list[int]] | None = None
        else:
            for w in self.pool.workers():
                self.seen.setdefault(id(w), w)
            statuses = _per_member(self.pool, self.seen.values())
            streams = {id(s): s for s in self.pool.pstream.streams}
            held = self.pool.assignment()
        produced = acked = 0
        for s in streams.values():
            st = s.stats()
            produced += st.produced
            acked += st.acked
        return ("status", statuses, (produced, acked), held)

    def begin_stop(self, timeout: float) -> None:
        """Ask every consumer to stop (a partitioned pool also releases its leases)."""
        if self.pool is not None:
            self.pool.stop(timeout)
        for w in self.workers:
            w.stop(0)  # ask all at once; each finishes its batch and flushes its acks

    def busy(self) -> list[str]:
        """Consumers whose thread has not ended yet (asking again breaks a stalled call)."""
        workers = self.pool.workers() if self.pool is not None else self.workers
        return [w.name for w in workers if not w.stop(0)]


def _per_member(pool: Any, workers: Iterable[Any]) -> list[ConsumerStatus]:
    """One status per pool member: the sum over every partition worker it ran."""
    out: dict[str, ConsumerStatus] = {
        m.name: ConsumerStatus(m.name, pool.group, 0, 0, 0, 0, 0, False, True) for m in pool.members
    }
    for w in workers:
        st, acc = w.status(), out.get(w.name)
        if acc is not None:
            out[w.name] = add_status(acc, st)
    return list(out.values())


def add_status(a: ConsumerStatus, b: ConsumerStatus) -> ConsumerStatus:
    return replace(
        a,
        processed=a.processed + b.processed,
        reaped=a.reaped + b.reaped,
        failed=a.failed + b.failed,
        crashed_drops=a.crashed_drops + b.crashed_drops,
        dead_lettered=a.dead_lettered + b.dead_lettered,
    )


def _start_consumers(spec: ChildSpec) -> _Run:
    handler = resolve_handler(spec.handler)
    options = {"decode_responses": True, **spec.client_options}
    if spec.partitions is None:
        client = redis.Redis.from_url(spec.redis_url, **options)
        stream = EventStream(client, spec.stream_key, **spec.stream_options)
        workers = [
            ConsumerWorker(stream, spec.group, name, handler, **spec.worker_options)
            for name in spec.names
        ]
        for w in workers:
            w.start()
        return _Run(workers)
    from redis.cluster import RedisCluster  # only a partitioned child on a cluster needs it

    pclient: Any = (
        RedisCluster.from_url(spec.redis_url, **options)
        if spec.cluster
        else redis.Redis.from_url(spec.redis_url, **options)
    )
    pstream = PartitionedStream(
        pclient, spec.stream_key, partitions=spec.partitions, **spec.stream_options
    )
    pool = PartitionedConsumerPool(
        pstream,
        spec.group,
        consumers=len(spec.names),
        handler=handler,
        name_prefix=spec.name_prefix,
        **spec.worker_options,
    )
    pool.start()
    return _Run([], pool)
