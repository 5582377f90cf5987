"""LocalCluster: a real Redis Cluster on this machine (masters + replicas) for tests and benchmarks.

It starts, joins, breaks (SIGKILL, failover) and reshards server processes only; it knows nothing
about streams and must never touch a server it did not start (no port 6379, no shared data).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

import redis
from redis.cluster import ClusterNode, RedisCluster

from ._errors import InvalidOption, RedisUnavailable
from .server import EmbeddedServer, free_port, valkey_binary

logger = logging.getLogger(__name__)

SLOTS: Final = 16384
DEFAULT_NODE_TIMEOUT_MS: Final = 2000
_FORM_TIMEOUT_S: Final = 30.0


def _wait(pred: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll ``pred`` until it is true or raise RedisUnavailable naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if pred():
                return
        except (redis.RedisError, OSError):
            pass  # a node still booting or just killed: keep polling until the deadline
        if time.monotonic() >= deadline:
            raise RedisUnavailable(
                f"local cluster: timed out after {timeout:.0f}s waiting for {what}"
            )
        time.sleep(interval)


def slot_ranges(masters: int) -> list[tuple[int, int]]:
    """Split the 16384 hash slots into ``masters`` contiguous inclusive ranges (pure)."""
    if masters < 1:
        raise InvalidOption(f"a cluster needs at least 1 master, got {masters}")
    step = SLOTS // masters
    out = []
    for i in range(masters):
        first = i * step
        last = SLOTS - 1 if i == masters - 1 else (i + 1) * step - 1
        out.append((first, last))
    return out


class ClusterNodeProcess:
    """One cluster node: an EmbeddedServer with cluster mode on, plus its cluster node ID."""

    def __init__(self, binary: str, kind: str, node_timeout_ms: int) -> None:
        self.bus_port = free_port()
        self.server = EmbeddedServer(binary, kind=kind)
        # The bus port is chosen explicitly: port+10000 may be taken or exceed 65535.
        self.server.extra_args = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            str(self.server.dir / "nodes.conf"),
            "--cluster-node-timeout",
            str(node_timeout_ms),
            "--cluster-port",
            str(self.bus_port),
            # A replica whose link was down a while must still be allowed to take over.
            "--cluster-replica-validity-factor",
            "0",
            # Replicas attach in tests; the default 5 s wait before a full sync only slows them.
            "--repl-diskless-sync-delay",
            "0",
        ]
        self.node_id = ""

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def host(self) -> str:
        return self.server.host

    @property
    def running(self) -> bool:
        return self.server.running

    def client(self, **kwargs: Any) -> redis.Redis:
        """A plain (non-cluster) client to this node alone, decoding replies."""
        kwargs.setdefault("decode_responses", True)
        kwargs.setdefault("socket_timeout", 5.0)
        return redis.Redis(host=self.host, port=self.port, **kwargs)

    def call(self, *args: Any) -> Any:
        """Run one command on this node only (cluster admin commands)."""
        c = self.client()
        try:
            return c.execute_command(*args)  # type: ignore[no-untyped-call]
        finally:
            c.close()

    def info(self, section: str) -> dict[str, Any]:
        c = self.client()
        try:
            return dict(c.info(section))
        finally:
            c.close()

    def start(self) -> None:
        self.server.start()
        self.node_id = str(self.call("CLUSTER", "MYID"))

    def __repr__(self) -> str:
        return f"ClusterNodeProcess({self.server.kind}, port={self.port}, id={self.node_id[:8]})"


def _replicate(node: ClusterNodeProcess, master: ClusterNodeProcess) -> bool:
    return bool(node.call("CLUSTER", "REPLICATE", master.node_id) == "OK")


def _in_sync(node: ClusterNodeProcess) -> bool:
    return bool(node.info("replication").get("master_link_status") == "up")


def _key_on(ranges: Sequence[tuple[int, int]]) -> str:
    """A key whose hash slot falls in one of ``ranges`` (pure; a few tries per range)."""
    for i in range(SLOTS * 64):
        key = f"{{localcluster-sync-{i}}}"
        slot = key_slot(key)
        if any(lo <= slot <= hi for lo, hi in ranges):
            return key
    raise InvalidOption(f"no key found for slot ranges {list(ranges)!r}")


def _streaming(master: ClusterNodeProcess, replicas: int, key: str) -> bool:
    """True once ``replicas`` replicas acknowledge a write just made on ``master``.

    ``master_link_status:up`` on a replica is not enough: after a diskless full sync Redis 7.0
    may hold the replication stream back for a while (seconds on a loaded machine), and a
    master killed then takes every write since the sync with it.
    """
    c = master.client()
    try:
        c.set(key, "1")
        acked = int(c.wait(replicas, 200))
        c.delete(key)
        return acked >= replicas
    finally:
        c.close()


class LocalCluster:
    """A local Redis Cluster of ``masters`` masters and ``replicas`` replicas per master.

    Every node is a private server process on a free port with its own temp dir and no
    persistence. ``binary`` defaults to the embedded Valkey; Debian's redis-server 7 works too.
    Use as a context manager, or call start()/cleanup().
    """

    def __init__(
        self,
        masters: int = 3,
        replicas: int = 0,
        *,
        binary: str | None = None,
        kind: str | None = None,
        node_timeout_ms: int = DEFAULT_NODE_TIMEOUT_MS,
    ) -> None:
        if masters < 1 or replicas < 0:
            raise InvalidOption(f"need masters >= 1 and replicas >= 0, got {masters}/{replicas}")
        self.binary = binary or valkey_binary()
        self.kind = kind or ("valkey" if "valkey" in self.binary.rsplit("/", 1)[-1] else "redis")
        self.node_timeout_ms = node_timeout_ms
        self.masters_wanted = masters
        self.replicas_wanted = replicas
        self.nodes: list[ClusterNodeProcess] = []
        self._killed_slots: dict[str, list[int]] = {}

    # ------------------------------------------------------------ lifecycle

    def _new_node(self) -> ClusterNodeProcess:
        node = ClusterNodeProcess(self.binary, self.kind, self.node_timeout_ms)
        node.start()
        self.nodes.append(node)
        return node

    def start(self) -> LocalCluster:
        """Start the masters, assign slots, add the replicas, wait for ``cluster_state:ok``."""
        if self.nodes:
            return self
        try:
            masters = [self._new_node() for _ in range(self.masters_wanted)]
            first = masters[0]
            for node in masters[1:]:
                first.call("CLUSTER", "MEET", node.host, str(node.port), str(node.bus_port))
            for node, (lo, hi) in zip(masters, slot_ranges(len(masters)), strict=True):
                node.call("CLUSTER", "ADDSLOTSRANGE", str(lo), str(hi))
            self._wait_known(len(masters))
            self.wait_ok()
            if self.replicas_wanted:
                self.add_replicas(self.replicas_wanted)
        except BaseException:
            self.cleanup()
            raise
        logger.info("local %s cluster ready: %s", self.kind, self.nodes)
        return self

    def _wait_known(self, count: int) -> None:
        def everyone_knows_everyone() -> bool:
            for node in self.nodes:
                if not node.running:
                    continue
                lines = str(node.call("CLUSTER", "NODES")).strip().splitlines()
                live = [ln for ln in lines if "handshake" not in ln and "noaddr" not in ln]
                if len(live) < count:
                    return False
            return True

        _wait(everyone_knows_everyone, _FORM_TIMEOUT_S, f"{count} nodes to meet")

    def add_replicas(self, per_master: int = 1) -> list[ClusterNodeProcess]:
        """Start ``per_master`` replicas for every current master and wait until they sync."""
        added: list[tuple[ClusterNodeProcess, ClusterNodeProcess]] = []
        masters = self.masters()
        first = masters[0]
        for master in masters:
            for _ in range(per_master):
                node = self._new_node()
                first.call("CLUSTER", "MEET", node.host, str(node.port), str(node.bus_port))
                added.append((node, master))
        self._wait_known(len([n for n in self.nodes if n.running]))
        out = []
        for node, master in added:
            # The new node learns the master's ID through gossip; retry until it has.
            _wait(
                functools.partial(_replicate, node, master),
                _FORM_TIMEOUT_S,
                f"replica {node.port} to attach to {master.port}",
            )
            out.append(node)
        for node in out:
            _wait(
                functools.partial(_in_sync, node),
                _FORM_TIMEOUT_S,
                f"replica {node.port} to sync",
            )
        for master in masters:
            owned = [(lo, hi) for lo, hi, nid in self._slot_owners(master) if nid == master.node_id]
            count = sum(1 for _node, m in added if m is master)
            _wait(
                functools.partial(_streaming, master, count, _key_on(owned)),
                _FORM_TIMEOUT_S,
                f"replicas of {master.port} to acknowledge writes",
            )
        self.wait_ok()
        return out

    def wait_ok(self, timeout: float = _FORM_TIMEOUT_S) -> None:
        """Wait until every running node says ``cluster_state:ok`` and agrees on slot owners."""

        def all_ok() -> bool:
            owners = None
            for node in self.nodes:
                if not node.running:
                    continue
                info = str(node.call("CLUSTER", "INFO"))
                if "cluster_state:ok" not in info or "cluster_slots_assigned:16384" not in info:
                    return False
                mine = self._slot_owners(node)
                if owners is None:
                    owners = mine
                elif mine != owners:
                    return False
            return owners is not None

        _wait(all_ok, timeout, "cluster_state:ok on every node")

    def stop(self) -> None:
        """Stop every node (SIGTERM); idempotent."""
        for node in self.nodes:
            node.server.stop()

    def cleanup(self) -> None:
        """Stop every node and delete their temp dirs."""
        for node in self.nodes:
            node.server.cleanup()
        self.nodes = []

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    # ------------------------------------------------------------ topology

    @staticmethod
    def _slot_owners(node: ClusterNodeProcess) -> list[tuple[int, int, str]]:
        rows = []
        for line in str(node.call("CLUSTER", "NODES")).strip().splitlines():
            parts = line.split()
            if "master" not in parts[2] or "fail" in parts[2]:
                continue
            for spec in parts[8:]:
                if spec.startswith("["):
                    continue  # a migration in progress, not an owned range
                lo, _, hi = spec.partition("-")
                rows.append((int(lo), int(hi or lo), parts[0]))
        return sorted(rows)

    def _by_id(self, node_id: str) -> ClusterNodeProcess:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise KeyError(node_id)

    def _any_running(self) -> ClusterNodeProcess:
        for node in self.nodes:
            if node.running:
                return node
        raise RedisUnavailable("local cluster: no node is running")

    def masters(self) -> list[ClusterNodeProcess]:
        """Running nodes that currently serve slots, in slot order."""
        owners = self._slot_owners(self._any_running())
        seen: list[ClusterNodeProcess] = []
        for _lo, _hi, node_id in owners:
            node = self._by_id(node_id)
            if node not in seen and node.running:
                seen.append(node)
        return seen

    def replicas_of(self, master: ClusterNodeProcess) -> list[ClusterNodeProcess]:
        """Running nodes replicating ``master``."""
        out = []
        for line in str(self._any_running().call("CLUSTER", "NODES")).strip().splitlines():
            parts = line.split()
            if parts[3] == master.node_id and "slave" in parts[2]:
                node = self._by_id(parts[0])
                if node.running:
                    out.append(node)
        return out

    def node_for_slot(self, slot: int) -> ClusterNodeProcess:
        """The master serving ``slot`` now."""
        for lo, hi, node_id in self._slot_owners(self._any_running()):
            if lo <= slot <= hi:
                return self._by_id(node_id)
        raise KeyError(slot)

    def node_for_key(self, key: str) -> ClusterNodeProcess:
        """The master serving ``key`` now."""
        return self.node_for_slot(key_slot(key))

    @property
    def startup_nodes(self) -> list[ClusterNode]:
        return [
            ClusterNode(n.host, n.port)  # type: ignore[no-untyped-call]
            for n in self.nodes
            if n.running
        ]

    @property
    def url(self) -> str:
        """``redis://host:port/0`` of one running node (from_url discovers the rest)."""
        node = self._any_running()
        return f"redis://{node.host}:{node.port}/0"

    def client(self, **kwargs: Any) -> RedisCluster:
        """A RedisCluster client (decode_responses=True unless given) over every running node."""
        kwargs.setdefault("decode_responses", True)
        kwargs.setdefault("socket_timeout", 5.0)
        kwargs.setdefault("socket_connect_timeout", 1.0)
        return RedisCluster(startup_nodes=self.startup_nodes, **kwargs)

    # ------------------------------------------------------------ faults and resharding

    def kill_master(self, master: ClusterNodeProcess) -> None:
        """SIGKILL a master, as a crash would. Its replica takes over after the node timeout."""
        self._killed_slots[master.node_id] = [
            lo for lo, _hi, node_id in self._slot_owners(master) if node_id == master.node_id
        ]
        logger.warning("killing master %s", master)
        master.server.kill()

    def wait_promoted(
        self, old_master: ClusterNodeProcess, timeout: float = 30.0
    ) -> ClusterNodeProcess:
        """Wait until a former replica of ``old_master`` serves its slots; returns it."""
        slots = self._killed_slots.get(old_master.node_id)
        if not slots:
            raise InvalidOption(f"{old_master} was not killed by kill_master or served no slots")
        probe = slots[0]
        result: list[ClusterNodeProcess] = []

        def promoted() -> bool:
            try:
                node = self.node_for_slot(probe)
            except KeyError:  # the slot shows as unowned while the old master is marked failed
                return False
            if node.node_id == old_master.node_id or not node.running:
                return False
            result[:] = [node]
            return True

        _wait(promoted, timeout, f"a replica of {old_master.port} to be promoted", 0.1)
        self.wait_ok(timeout)
        return result[0]

    def spread(self, keys: Sequence[str]) -> int:
        """Move the slots of ``keys`` so they sit round robin on the masters; returns moves.

        Hash tags such as ``{p0}``..``{p5}`` can land unevenly (4/1/1 on 3 masters); an
        operator fixes that by moving slots, which is what this does.
        """
        masters = self.masters()
        moves = 0
        slots = [key_slot(k) for k in keys]
        for slot, index in zip(slots, plan_spread(slots, len(masters)), strict=True):
            if self.node_for_slot(slot) is not masters[index]:
                self.migrate_slot(slot, masters[index])
                moves += 1
        return moves

    def migrate_slot(
        self,
        slot: int,
        target: ClusterNodeProcess,
        *,
        batch: int = 10,
        between_batches: Callable[[], None] | None = None,
    ) -> int:
        """Move ``slot`` with its keys to ``target`` (IMPORTING/MIGRATING, MIGRATE, SETSLOT NODE).

        ``between_batches`` runs after each MIGRATE so a caller can let traffic hit the slot
        while it is half moved (clients then see ASK). Returns how many keys moved.
        """
        source = self.node_for_slot(slot)
        if source is target:
            return 0
        target.call("CLUSTER", "SETSLOT", str(slot), "IMPORTING", source.node_id)
        source.call("CLUSTER", "SETSLOT", str(slot), "MIGRATING", target.node_id)
        moved = 0
        while True:
            keys = source.call("CLUSTER", "GETKEYSINSLOT", str(slot), str(batch))
            if not keys:
                break
            source.call("MIGRATE", target.host, str(target.port), "", "0", "5000", "KEYS", *keys)
            moved += len(keys)
            if between_batches is not None:
                between_batches()
        # Target first, then source, then everyone else: the documented safe order.
        for node in [target, source, *[m for m in self.masters() if m not in (target, source)]]:
            node.call("CLUSTER", "SETSLOT", str(slot), "NODE", target.node_id)
        self.wait_ok()
        logger.info("migrated slot %d (%d keys) from %s to %s", slot, moved, source, target)
        return moved


def plan_spread(slots: Sequence[int], masters: int) -> list[int]:
    """Which master (by index) each slot should live on so they spread round robin (pure)."""
    return [i % masters for i in range(len(slots))]


def key_slot(key: str | bytes) -> int:
    """The hash slot of ``key`` (CRC16 of its hash tag), as the server computes it."""
    from redis.crc import key_slot as _slot

    return int(_slot(key.encode() if isinstance(key, str) else key))


def cluster_kinds() -> Sequence[str]:
    """The server kinds a LocalCluster can run here."""
    from .server import redis_binary

    return ("valkey", "redis7") if redis_binary() else ("valkey",)
