"""The asyncio API: AsyncEventStream, AsyncConsumerWorker and the async features.

Thin shells over the same core as the sync API (_plans, _produce, the worker core); import
them from ``redis_streaming`` directly. This package must not hold logic of its own beyond
awaiting I/O.
"""

from __future__ import annotations

from .stream import AsyncEventStream

__all__ = ["AsyncEventStream"]
