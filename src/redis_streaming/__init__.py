"""redis-streaming: event pipelines on Redis Streams.

The public API. Everything not listed in ``__all__`` is private and may change.
"""

from ._backoff import Backoff
from ._errors import (
    GroupMissing,
    InvalidEvent,
    InvalidInput,
    InvalidName,
    InvalidOption,
    InvalidStreamId,
    RedisUnavailable,
    ServerError,
    StreamingError,
)
from ._model import (
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
)
from .cluster_server import LocalCluster
from .deadletter import DeadLetters
from .partition import PartitionedConsumerPool, PartitionedStream
from .server import EmbeddedServer, connect_or_embed
from .stream import DEFAULT_CLAIM_MIN_IDLE_MS, DEFAULT_MAXLEN_APPROX, EventStream
from .worker import DEFAULT_MAX_DELIVERIES, DEFAULT_REAP_INTERVAL_S, ConsumerWorker

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_CLAIM_MIN_IDLE_MS",
    "DEFAULT_MAXLEN_APPROX",
    "DEFAULT_MAX_DELIVERIES",
    "DEFAULT_REAP_INTERVAL_S",
    "Backoff",
    "ClaimResult",
    "ConsumerInfo",
    "ConsumerStatus",
    "ConsumerWorker",
    "DeadLetters",
    "Delivery",
    "EmbeddedServer",
    "Entry",
    "EventStream",
    "GroupInfo",
    "GroupMissing",
    "InvalidEvent",
    "InvalidInput",
    "InvalidName",
    "InvalidOption",
    "InvalidStreamId",
    "LocalCluster",
    "PartitionedConsumerPool",
    "PartitionedStream",
    "PendingEntry",
    "ReapResult",
    "RedisUnavailable",
    "ServerError",
    "StreamInfo",
    "StreamStats",
    "StreamingError",
    "__version__",
    "connect_or_embed",
]
