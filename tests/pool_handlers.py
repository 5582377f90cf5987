"""Handlers for the worker-process tests (``--handler pool_handlers:<name>``, or WorkerPool's
``handler="pool_handlers:<name>"``): recording like handlers.record, and one that never returns.

They never ack anything themselves: acking is the worker's job.
"""

from __future__ import annotations

import threading

from handlers import record, record_slow
from redis_streaming import Entry

__all__ = ["hang_after_first", "record", "record_slow"]

_forever = threading.Event()


def hang_after_first(entry: Entry) -> None:
    """Record the entry, then block for good: a consumer that cannot finish its batch."""
    record(entry)
    _forever.wait()
