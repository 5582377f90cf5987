"""PartitionedConsumerPool: the members of one group sharing a PartitionedStream's partitions,
coordinated through Redis itself (a heartbeat set and one lease per partition).

Each held partition is read by a ConsumerWorker on the fast path: on a cluster, over the
client of the node that owns the partition's slot, re-bound when the slot moves or its master
fails over. It must not read a partition without holding its lease.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis

from . import _codec as codec
from . import _fastpath
from ._errors import InvalidOption
from ._liveness import poll_until
from ._partition_core import (
    DEFAULT_LEASE_MS,
    HEARTBEAT,
    REDIS_FAILURES,
    RELEASE_LEASE,
    RENEW_LEASE,
    assign,
    validate_tag,
)
from ._workersteps import Steps
from .pool_reader import CombinedReader
from .stream import EventStream
from .worker import ConsumerWorker, Handler

if TYPE_CHECKING:
    from .partition import PartitionedStream

logger = logging.getLogger(__name__)


def node_stream(pstream: PartitionedStream, p: int) -> tuple[EventStream, str | None]:
    """Partition ``p``'s stream over the client a worker should read it through, and the
    node's name: on a cluster, the client of the node owning its slot now (a plain
    ``redis.Redis``, so the worker's hand-packed read applies); otherwise the stream itself.
    """
    stream = pstream.streams[p]
    client = pstream.client
    if not isinstance(client, redis.RedisCluster):
        return stream, None
    node = client.get_node_from_key(stream.key)  # type: ignore[no-untyped-call]
    return stream._with_client(client.get_redis_connection(node)), node.name


# ---------------------------------------------------------------- the consumer pool


@dataclass
class _Lease:
    partition: int
    key: str
    #: monotonic time after which we must assume the lease is gone (never later than Redis)
    valid_until: float
    worker: _LeasedWorker | None = None
    releasing: bool = False
    #: cluster only: the node the worker reads through (None on a single server)
    node: str | None = None


class _LeasedWorker(ConsumerWorker):
    """A ConsumerWorker that only reads while its partition lease has time left."""

    def __init__(self, *args: Any, lease: _Lease, margin_ms: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lease = lease
        self.margin_ms = margin_ms

    def lease_ok(self) -> bool:
        """True if a read started now would end before the lease could expire."""
        left_ms = (self.lease.valid_until - time.monotonic()) * 1000
        return not self.lease.releasing and left_ms > self.block_ms + self.margin_ms

    def _may_read(self) -> bool:
        # Unrenewed (shard failing over) or being handed off: read and reap nothing until
        # renewed (the worker core acks what it handled and looks again shortly).
        return self.lease_ok()

    def _after_start(self) -> Steps:
        # Holding the lease means nobody else in the group reads this partition, so whatever
        # another member left pending here was abandoned (it crashed or handed over): take it.
        yield from self.reap(min_idle_ms=0)


class _GroupedWorker(_LeasedWorker):
    """A _LeasedWorker read by its member's CombinedReader for its node instead of a thread of
    its own: start() joins the reader, stop() leaves it (handled entries acked first)."""

    def __init__(self, *args: Any, reader: CombinedReader, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reader = reader
        self._gone: threading.Event | None = None

    def start(self) -> _GroupedWorker:
        if self._gone is None:
            self._gone = self.reader.add(self)
        return self

    def stop(self, timeout: float | None = None) -> bool:
        self._stop.set()
        self._wake.set()
        gone = self._gone
        if gone is None:
            return True

        def left(wait: float) -> bool:
            self.reader.interrupt()  # a blocked read ends now, not after its BLOCK
            return gone.wait(wait) or not self.reader.is_alive

        return poll_until(left, timeout)

    def resume(self) -> None:
        super().resume()
        self.reader.wake()

    @property
    def is_alive(self) -> bool:
        gone = self._gone
        return gone is not None and not gone.is_set() and self.reader.is_alive


class _Member:
    def __init__(self, name: str) -> None:
        self.name = name
        self.leases: dict[int, _Lease] = {}
        #: workers told to stop whose threads have not ended yet, by partition
        self.retiring: dict[int, _LeasedWorker] = {}
        #: the combined reader of this member's partitions (single server only: key None)
        self.readers: dict[str | None, CombinedReader] = {}


class PartitionedConsumerPool:
    """``consumers`` members of ``group`` sharing the partitions of ``pstream``.

    Members announce themselves in a sorted set (heartbeat with expiry) and every member
    divides the partitions among the live ones with :func:`assign`. A member reads a partition
    only while it holds that partition's lease (SET NX PX, renewed by a compare-and-extend
    script), so two members of one group never read one partition at once, and a member that
    dies (even SIGKILL) loses its leases after ``lease_ms``, when the others take over.
    Each held partition is read by a ConsumerWorker (acks, reaping, dead letters as usual).

    ``lease_ms`` must exceed ``block_ms`` plus the time the handler needs for one batch.
    With ``combine_reads`` (the default) on a single server, a member reads all the partitions
    it holds with one blocking ``XREADGROUP ... STREAMS k1 k2 ..`` (one
    :class:`~redis_streaming.pool_reader.CombinedReader` thread per member; only partitions
    whose lease has time left are in the read), and each partition keeps its own worker state
    (acks, reaping, dead letters). On a cluster every partition has a slot of its own and a
    node refuses multi-key commands across slots (CROSSSLOT), so there, and for clients the
    hand-packed path cannot read through, each partition gets a worker thread of its own.
    Remaining keyword options go to every ConsumerWorker.
    """

    def __init__(
        self,
        pstream: PartitionedStream,
        group: str,
        consumers: int = 1,
        handler: Handler | None = None,
        *,
        name_prefix: str | None = None,
        lease_ms: int = DEFAULT_LEASE_MS,
        group_start: str = "$",
        block_ms: int = 500,
        combine_reads: bool = True,
        **worker_options: Any,
    ) -> None:
        self.pstream = pstream
        self.combine_reads = bool(combine_reads)
        self._combine = False  # decided at start(): see _one_server
        self.group = validate_tag(group, "group")
        codec.validate_int(consumers, "consumers", minimum=1, maximum=1000)
        prefix = name_prefix or f"{socket.gethostname()}-{os.getpid()}"
        validate_tag(prefix, "name_prefix")
        self.members = [_Member(f"{prefix}-{j}") for j in range(consumers)]
        self.handler = handler
        self.lease_ms = codec.validate_int(lease_ms, "lease_ms", minimum=100)
        self.block_ms = codec.validate_block_ms(block_ms)
        # Keep clear of the lease: a read plus a renewal round trip must fit in it.
        self.margin_ms = max(50, self.lease_ms // 10)
        if self.block_ms + self.margin_ms >= self.lease_ms // 2:
            raise InvalidOption(
                f"block_ms={block_ms} is too long for lease_ms={lease_ms}; "
                f"keep block_ms below {self.lease_ms // 2 - self.margin_ms}"
            )
        self.group_start = codec.validate_group_start(group_start)
        self.tick_s = self.lease_ms / 5000
        self.worker_options = worker_options
        # Fail at construction on a bad worker option, not in a thread later.
        ConsumerWorker(pstream.streams[0], self.group, "probe", **worker_options)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._live: list[str] = []
        self._started: list[_LeasedWorker] = []
        self.rebalances = 0

    def __repr__(self) -> str:
        return f"PartitionedConsumerPool({self.pstream.base_key!r}, group={self.group!r})"

    # ------------------------------------------------------------ lifecycle

    def start(self) -> PartitionedConsumerPool:
        """Create the group on every partition, join, and start coordinating (once)."""
        if self._thread is not None:
            return self
        self.pstream.ensure_group(self.group, self.group_start)
        self._combine = self.combine_reads and self._one_server()
        self._tick()
        self._thread = threading.Thread(
            target=self._run, name=f"pool-{self.group}-{self.members[0].name}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every worker, release every lease and leave the member set; idempotent."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        deadline = time.monotonic() + timeout
        with self._lock:
            for m in self.members:
                for reader in m.readers.values():
                    reader.stop(0)  # every member leaves; a blocked read is broken now
                for lease in m.leases.values():
                    lease.releasing = True
                    if lease.worker is not None:
                        lease.worker.stop(0)
                for old in m.retiring.values():
                    old.stop(0)
            for m in self.members:
                for p, lease in list(m.leases.items()):
                    w = lease.worker
                    if w is None or w.stop(max(0.0, deadline - time.monotonic())):
                        self._call(self._eval, RELEASE_LEASE, lease.key, m.name)
                        del m.leases[p]
                for old in m.retiring.values():
                    old.stop(max(0.0, deadline - time.monotonic()))
                m.retiring.clear()
                for reader in m.readers.values():
                    reader.stop(max(0.0, deadline - time.monotonic()))
                m.readers.clear()
            self._call(self._heartbeat, leave=True)

    def __enter__(self) -> PartitionedConsumerPool:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ introspection

    def assignment(self) -> dict[str, list[int]]:
        """Partitions each local member holds now (lease held and worker running)."""
        with self._lock:
            return {
                m.name: sorted(
                    p
                    for p, lease in m.leases.items()
                    if not lease.releasing and lease.worker is not None and lease.worker.is_alive
                )
                for m in self.members
            }

    def live_members(self) -> list[str]:
        """The pool members (of every process) seen alive at the last heartbeat."""
        with self._lock:
            return list(self._live)

    def is_balanced(self) -> bool:
        """True when every local member holds exactly the partitions assigned to it."""
        with self._lock:
            live = list(self._live)
        plan = assign(live, len(self.pstream))
        held = self.assignment()
        return all(held.get(m.name, []) == plan.get(m.name, []) for m in self.members)

    def workers(self) -> list[ConsumerWorker]:
        """The ConsumerWorkers running now, one per held partition."""
        with self._lock:
            return [
                lease.worker
                for m in self.members
                for lease in m.leases.values()
                if lease.worker is not None
            ]

    @property
    def processed(self) -> int:
        """Entries handled and acked by workers that are running now."""
        return sum(w.processed + w.reaped for w in self.workers())

    def totals(self) -> dict[str, int]:
        """Counters summed over every worker this pool ever ran (current and retired)."""
        with self._lock:
            workers = list(self._started)
        out = {"processed": 0, "reaped": 0, "failed": 0, "dead_lettered": 0, "workers": 0}
        for w in workers:
            out["processed"] += w.processed
            out["reaped"] += w.reaped
            out["failed"] += w.failed
            out["dead_lettered"] += w.dead_lettered
            out["workers"] += 1
        return out

    def _one_server(self) -> bool:
        """True when the client talks to one server that is not in cluster mode (a plain
        client on a cluster node would meet CROSSSLOT in a combined read). INFO refused: no."""
        client = self.pstream.client
        if not isinstance(client, redis.Redis):
            return False
        try:
            info = client.info("cluster")
        except REDIS_FAILURES as exc:
            logger.info(
                "pool %s: INFO cluster refused (%s): one read per partition", self.group, exc
            )
            return False
        return str(info.get("cluster_enabled", "0")) in ("0", "")

    # ------------------------------------------------------------ coordination

    def _eval(self, script: str, key: str, *args: Any) -> Any:
        return self.pstream.client.eval(script, 1, key, *args)

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run one coordination call; a Redis failure is logged and returns None."""
        try:
            return fn(*args, **kwargs)
        except REDIS_FAILURES as exc:
            logger.debug("pool %s: %s failed: %s", self.group, getattr(fn, "__name__", fn), exc)
            return None

    def _heartbeat(self, leave: bool = False) -> list[str]:
        raw = self._eval(
            HEARTBEAT,
            self.pstream.members_key(self.group),
            str(self.lease_ms),
            "leave" if leave else "join",
            *[m.name for m in self.members],
        )
        return sorted(codec.to_str(x) for x in raw or ())

    def _run(self) -> None:
        while not self._stop.wait(self.tick_s):
            try:
                self._tick()
            except Exception:  # the coordinator must outlive any one bad tick
                logger.exception("pool %s: coordination tick failed", self.group)

    def _tick(self) -> None:
        live = self._call(self._heartbeat)
        with self._lock:
            if live is not None:
                if live != self._live:
                    logger.info("pool %s: members now %s", self.group, live)
                    self.rebalances += 1
                self._live = live
            plan = assign(self._live, len(self.pstream))
            for m in self.members:
                self._reconcile(m, set(plan.get(m.name, ())))

    def _reconcile(self, m: _Member, want: set[int]) -> None:
        for p, w in list(m.retiring.items()):
            if not w.is_alive:
                del m.retiring[p]
        for p, lease in list(m.leases.items()):
            if p not in want or lease.releasing:
                self._release(m, lease)
            else:
                self._renew(m, lease)
                if p in m.leases and not lease.releasing:
                    self._rebind(m, lease)
        if self._stop.is_set():
            return
        for p in sorted(want - m.leases.keys() - m.retiring.keys()):
            self._acquire(m, p)

    def _acquire(self, m: _Member, p: int) -> None:
        key = self.pstream.lease_key(p, self.group)
        sent = time.monotonic()
        ok = self._call(self.pstream.client.set, key, m.name, nx=True, px=self.lease_ms)
        if not ok:
            return
        lease = _Lease(p, key, sent + self.lease_ms / 1000)
        m.leases[p] = lease
        self._start_worker(m, lease)
        logger.info("pool %s: %s took partition %d", self.group, m.name, p)

    def _start_worker(self, m: _Member, lease: _Lease) -> None:
        try:
            stream, lease.node = node_stream(self.pstream, lease.partition)
        except REDIS_FAILURES as exc:  # no node known for the slot now: try again next tick
            logger.debug("pool %s: no node for partition %d: %s", self.group, lease.partition, exc)
            lease.worker = None
            return
        options: dict[str, Any] = {
            "lease": lease,
            "margin_ms": self.margin_ms,
            "block_ms": self.block_ms,
            "group_start": self.group_start,
            **self.worker_options,
        }
        worker: _LeasedWorker
        # One server only: a cluster node refuses a multi-key command across slots (CROSSSLOT),
        # and every partition has a hash tag, so a slot, of its own.
        if self._combine and lease.node is None and _fastpath.supports(stream.client):
            reader = m.readers.get(lease.node)
            if reader is None or not reader.usable:
                reader = CombinedReader(
                    stream.client, self.block_ms, f"consumer-{self.group}-{m.name}"
                )
                m.readers[lease.node] = reader
            worker = _GroupedWorker(
                stream, self.group, m.name, self.handler, reader=reader, **options
            )
        else:
            worker = _LeasedWorker(stream, self.group, m.name, self.handler, **options)
        lease.worker = worker
        self._started.append(worker)
        worker.start()

    def _rebind(self, m: _Member, lease: _Lease) -> None:
        """Cluster: when the partition's slot now lives on another node (resharding, or a
        replica promoted after a failover), stop its reader and start one on that node. The
        lease stays held throughout, so no other member reads the partition meanwhile."""
        w = lease.worker
        if w is None or (
            isinstance(w, _GroupedWorker) and not w.reader.is_alive and not w._stopping()
        ):  # no worker yet, or its combined reader ended on a bug: the partition needs one
            self._start_worker(m, lease)
            return
        if lease.node is None:
            return
        try:
            node = self.pstream.client.get_node_from_key(lease.key).name
        except REDIS_FAILURES:
            return
        if node == lease.node:
            return
        # stop() breaks a blocked read at once; a handler still busy with a batch finishes it
        # first, and the new reader starts at a later tick.
        if not w.stop(self.block_ms / 1000 + 0.5):
            return
        logger.info(
            "pool %s: partition %d now on %s (was %s); %s reads it there",
            self.group, lease.partition, node, lease.node, m.name,
        )  # fmt: skip
        self._start_worker(m, lease)

    def _renew(self, m: _Member, lease: _Lease) -> None:
        sent = time.monotonic()
        ok = self._call(self._eval, RENEW_LEASE, lease.key, m.name, str(self.lease_ms))
        if ok is None:
            return  # Redis unreachable: the worker stops reading once valid_until passes
        if int(ok) == 1:
            lease.valid_until = sent + self.lease_ms / 1000
            return
        logger.warning("pool %s: %s lost partition %d", self.group, m.name, lease.partition)
        lease.releasing = True
        del m.leases[lease.partition]
        if lease.worker is not None:
            lease.worker.stop(0)
            m.retiring[lease.partition] = lease.worker

    def _release(self, m: _Member, lease: _Lease) -> None:
        """Hand a partition back: stop its worker, and only then delete the lease."""
        lease.releasing = True
        w = lease.worker
        if w is not None and not w.stop(0) and not w.stop(self.block_ms / 1000 + 0.5):
            # Still handling a batch: keep the lease alive so nobody else starts meanwhile.
            self._renew_quiet(m, lease)
            return
        self._call(self._eval, RELEASE_LEASE, lease.key, m.name)
        del m.leases[lease.partition]
        logger.info("pool %s: %s released partition %d", self.group, m.name, lease.partition)

    def _renew_quiet(self, m: _Member, lease: _Lease) -> None:
        sent = time.monotonic()
        if self._call(self._eval, RENEW_LEASE, lease.key, m.name, str(self.lease_ms)) == 1:
            lease.valid_until = sent + self.lease_ms / 1000
