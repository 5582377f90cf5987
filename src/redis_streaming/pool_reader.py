"""CombinedReader: one thread and one blocking XREADGROUP for several ConsumerWorkers.

The thread shell of :func:`_workermulti.combined_loop`. Its members are ConsumerWorkers of one
group and one consumer name whose streams live on one server (a pool member's partitions on
one node); each keeps its own handler loop, acks, reaping and dead letters, run on its own
shell, and only the read is shared. It must not decide what a reply means (the core does).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import redis

from . import _drive, _liveness, _wire
from ._workermulti import Members, Sub, combined_loop
from ._workersteps import READ_MARGIN_S, FastRead, Wait
from .worker import ConsumerWorker

logger = logging.getLogger(__name__)


class CombinedReader(Members):
    """Reads the streams of its member workers with one XREADGROUP over ``client``'s server.

    ``block_ms`` bounds every wait of the shared read (plus a margin, as a worker's own). Use
    :meth:`add` to hand it a worker (it starts the thread on first use) and the worker's
    ``stop`` to take it out; :meth:`stop` ends the thread.
    """

    def __init__(self, client: redis.Redis, block_ms: int, name: str = "reader") -> None:
        own = _liveness.private_client(client, block_ms / 1000 + READ_MARGIN_S)
        self._client = client if own is None else own
        self._io = _liveness.IoWatch(own)
        self.name = name
        self._members: list[ConsumerWorker] = []
        self._left: dict[int, threading.Event] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._broke = False
        self._conn: Any = None  # the read connection, held between a read's send and receive
        self.reads = 0  #: combined XREADGROUPs sent so far

    def __repr__(self) -> str:
        return f"CombinedReader({self.name!r}, members={len(self._members)})"

    # ------------------------------------------------------------ membership

    def add(self, worker: ConsumerWorker) -> threading.Event:
        """Read ``worker``'s stream from the next read on; returns the event set once it has
        left (stopped, its handled entries acked). Starts the thread on first use."""
        with self._lock:
            if self._stop.is_set():
                raise RuntimeError(f"{self!r} is stopped")
            left = threading.Event()
            self._left[id(worker)] = left
            self._members.append(worker)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
        self._wake.set()
        return left

    def current(self) -> list[Any]:
        with self._lock:
            return list(self._members)

    def leave(self, member: Any) -> None:
        with self._lock:
            if member in self._members:
                self._members.remove(member)
            left = self._left.pop(id(member), None)
        if left is not None:
            left.set()

    def stopping(self) -> bool:
        return self._stop.is_set()

    def park(self, member: Any, parked: bool) -> None:
        event = member._parked  # what ConsumerWorker.pause(wait=True) waits on
        if parked:
            event.set()
        else:
            event.clear()

    def interrupted(self) -> bool:
        broke, self._broke = self._broke, False
        return broke

    def wake(self) -> None:
        """Look at the members again now (one left or joined) instead of after a wait."""
        self._wake.set()

    def interrupt(self) -> None:
        """A member is leaving: break a blocked read at once instead of waiting out its BLOCK.
        What that read delivered is handled from the members' own PELs (see _workermulti)."""
        self._wake.set()
        with self._lock:  # said before the break, so the failed read finds it said
            said, self._broke = self._broke, True
            if not self._io.break_stalled(grace_s=float("inf")):
                self._broke = said  # not in a blocking read: nothing (more) was broken

    @property
    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def usable(self) -> bool:
        """True while :meth:`add` can take a worker (not stopped, thread not ended)."""
        return not self._stop.is_set() and (self._thread is None or self._thread.is_alive())

    def stop(self, timeout: float | None = None) -> bool:
        """End the thread: a blocked read is broken at once; every member leaves after its
        running handler returns (handled entries acked). True once the thread has ended."""
        self._stop.set()
        self._wake.set()
        for m in self.current():
            m._stop.set()
        return _liveness.join_breaking(
            self._thread, timeout, lambda: [self._io, *(m._io for m in self.current())]
        )

    # ------------------------------------------------------------ interpreting the core's steps

    def _run(self) -> None:
        try:
            self._drive(combined_loop(self))
        except Exception:  # the members' own policies handle their errors; this is a bug
            logger.exception("%s: combined read loop ended", self.name)
        finally:
            self._drop_connection()  # a read may still be in flight
            self._io.end()
            self._io.close()
            for m in self.current():
                self.leave(m)

    def _drive(self, steps: Any) -> Any:
        return _drive.interpret(steps, self._step)

    def _write(self, payload: bytes) -> None:
        self._io.begin()
        try:
            if self._conn is None:
                self._conn = _wire.get_connection(self._client.connection_pool)
            self.reads += 1
            _wire.send(self._conn, payload)
        except BaseException:
            self._drop_connection()
            raise
        finally:
            self._io.end()

    def _read(self, step: FastRead) -> list[Any]:
        if self._conn is None:
            raise _wire.Interrupted("the read was not sent", False)
        self._io.begin(blocking=True)  # stop() may break this read at once
        try:
            return _wire.receive(self._conn, step.replies, entries=True, timeout=step.timeout)
        except BaseException:
            self._drop_connection()
            raise
        finally:
            self._io.end()

    def _drop_connection(self) -> None:
        """Give the read connection back closed (unread replies must never be reused)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.disconnect()
            self._client.connection_pool.release(conn)

    def _step(self, step: Any) -> Any:
        io = self._io
        if isinstance(step, Sub):
            io.end()
            return step.member._drive(step.steps)  # type: ignore[attr-defined]
        if isinstance(step, FastRead):  # the core splits a read: write now, read later
            return self._write(step.payload) if step.payload else self._read(step)
        if isinstance(step, Wait):
            io.end()
            self._wake.wait(step.seconds)
            self._wake.clear()
            return None
        raise TypeError(f"not a combined-reader step: {step!r}")
