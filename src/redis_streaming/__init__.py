"""redis-streaming: event pipelines on Redis Streams.

The public API. Everything not listed in ``__all__`` is private and may change.
"""

from ._backoff import Backoff
from ._errors import (
    EntryDecodeError,
    FeatureUnavailable,
    GroupMissing,
    InvalidEvent,
    InvalidInput,
    InvalidName,
    InvalidOption,
    InvalidStreamId,
    ProduceError,
    RedisUnavailable,
    ServerError,
    StreamingError,
)
from ._model import (
    AckDeleteResult,
    ClaimResult,
    ConsumerInfo,
    ConsumerStatus,
    Delivery,
    Entry,
    GroupInfo,
    PendingEntry,
    ReapResult,
    StreamInfo,
    StreamStats,
    UndecodableEntry,
)
from .aio import (
    AsyncConsumerWorker,
    AsyncDeadLetters,
    AsyncEventStream,
    AsyncHealthMonitor,
    AsyncPartitionedStream,
)
from .aio import check_health as check_health_async
from .cluster_server import LocalCluster
from .consumers import ConsumerCleanup, delete_consumer_if_idle, delete_idle_consumers
from .deadletter import DeadLetters
from .health import GroupHealth, HealthMonitor, HealthReport, HealthThresholds, check_health
from .idempotency import AlreadyRunning, OnceGuard, apply_and_ack
from .partition import PartitionedConsumerPool, PartitionedStream
from .pool import ChildInfo, PoolEvent, WorkerPool
from .retention import GroupLimit, RetainReport, TrimReport
from .server import EmbeddedServer, connect_or_embed
from .stream import DEFAULT_CLAIM_MIN_IDLE_MS, DEFAULT_MAXLEN_APPROX, EventStream
from .worker import DEFAULT_MAX_DELIVERIES, DEFAULT_REAP_INTERVAL_S, ConsumerWorker

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_CLAIM_MIN_IDLE_MS",
    "DEFAULT_MAXLEN_APPROX",
    "DEFAULT_MAX_DELIVERIES",
    "DEFAULT_REAP_INTERVAL_S",
    "AckDeleteResult",
    "AlreadyRunning",
    "AsyncConsumerWorker",
    "AsyncDeadLetters",
    "AsyncEventStream",
    "AsyncHealthMonitor",
    "AsyncPartitionedStream",
    "Backoff",
    "ChildInfo",
    "ClaimResult",
    "ConsumerCleanup",
    "ConsumerInfo",
    "ConsumerStatus",
    "ConsumerWorker",
    "DeadLetters",
    "Delivery",
    "EmbeddedServer",
    "Entry",
    "EntryDecodeError",
    "EventStream",
    "FeatureUnavailable",
    "GroupHealth",
    "GroupInfo",
    "GroupLimit",
    "GroupMissing",
    "HealthMonitor",
    "HealthReport",
    "HealthThresholds",
    "InvalidEvent",
    "InvalidInput",
    "InvalidName",
    "InvalidOption",
    "InvalidStreamId",
    "LocalCluster",
    "OnceGuard",
    "PartitionedConsumerPool",
    "PartitionedStream",
    "PendingEntry",
    "PoolEvent",
    "ProduceError",
    "ReapResult",
    "RedisUnavailable",
    "RetainReport",
    "ServerError",
    "StreamInfo",
    "StreamStats",
    "StreamingError",
    "TrimReport",
    "UndecodableEntry",
    "WorkerPool",
    "__version__",
    "apply_and_ack",
    "check_health",
    "check_health_async",
    "connect_or_embed",
    "delete_consumer_if_idle",
    "delete_idle_consumers",
]
