"""The public surface is pinned: adding or removing a name is a deliberate change to this list."""

from __future__ import annotations

import importlib
import pathlib

import redis_streaming

EXPECTED = {
    "AckDeleteResult", "FeatureUnavailable", "AlreadyRunning", "AsyncConsumerWorker",
    "AsyncDeadLetters", "AsyncEventStream", "AsyncHealthMonitor", "AsyncPartitionedStream",
    "check_health_async",
    "Backoff", "ChildInfo", "ClaimResult", "ConsumerCleanup", "ConsumerInfo",
    "ConsumerStatus", "ConsumerWorker", "DEFAULT_CLAIM_MIN_IDLE_MS", "DEFAULT_MAXLEN_APPROX",
    "DEFAULT_MAX_DELIVERIES", "DEFAULT_REAP_INTERVAL_S", "DeadLetters", "Delivery",
    "EmbeddedServer", "Entry", "EntryDecodeError", "EventStream", "GroupHealth", "GroupInfo",
    "GroupLimit", "GroupMissing", "HealthMonitor", "HealthReport", "HealthThresholds",
    "InvalidEvent", "InvalidInput", "InvalidName", "InvalidOption", "InvalidStreamId",
    "LocalCluster", "OnceGuard", "PartitionedConsumerPool", "PartitionedStream", "PendingEntry",
    "PoolEvent", "ProduceError", "ReapResult", "RedisUnavailable", "RetainReport", "ServerError",
    "StreamInfo", "StreamStats", "StreamingError", "TrimReport", "UndecodableEntry",
    "WorkerPool", "__version__", "apply_and_ack", "check_health", "connect_or_embed",
    "delete_consumer_if_idle", "delete_idle_consumers",
}  # fmt: skip


def test_exported_names_are_pinned() -> None:
    assert set(redis_streaming.__all__) == EXPECTED
    for name in redis_streaming.__all__:
        assert hasattr(redis_streaming, name), name


def test_package_is_typed() -> None:
    assert (pathlib.Path(redis_streaming.__file__).parent / "py.typed").exists()


def test_input_errors_are_value_errors() -> None:
    for name in ("InvalidInput", "InvalidEvent", "InvalidName", "InvalidOption", "InvalidStreamId"):
        cls = getattr(redis_streaming, name)
        assert issubclass(cls, ValueError) and issubclass(cls, redis_streaming.StreamingError)


def test_every_module_has_a_docstring_and_a_module_logger_only() -> None:
    pkg = pathlib.Path(redis_streaming.__file__).parent
    for path in sorted(pkg.rglob("*.py")):
        rel = path.relative_to(pkg.parent).with_suffix("")
        if rel.name == "__main__":
            continue
        module = importlib.import_module(".".join(rel.parts).replace(".__init__", ""))
        assert module.__doc__ and module.__doc__.strip(), f"{rel} has no docstring"
        source = path.read_text()
        # The library configures no logging handlers; only the CLI front ends may, and pool's
        # own child processes, whose one handler sends their records to the parent's logging.
        allowed = {("cli", "__init__"), ("cli", "_common"), ("redis_streaming", "_pool_child")}
        if rel.parts[-2:] not in allowed and "demo" not in rel.parts:
            assert "basicConfig" not in source and "addHandler" not in source, rel
