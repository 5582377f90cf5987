"""The asyncio API: AsyncEventStream, AsyncConsumerWorker, AsyncPartitionedStream and the
async features.

Thin shells over the same core as the sync API (_plans, _produce, _workercore); import them
from ``redis_streaming`` directly. This package must not hold logic of its own beyond awaiting
I/O.
"""

from __future__ import annotations

from .features import AsyncDeadLetters, AsyncHealthMonitor, check_health
from .partition import AsyncPartitionedStream
from .stream import AsyncEventStream
from .worker import AsyncConsumerWorker

__all__ = [
    "AsyncConsumerWorker",
    "AsyncDeadLetters",
    "AsyncEventStream",
    "AsyncHealthMonitor",
    "AsyncPartitionedStream",
    "check_health",
]
