"""Handlers the CLI tests pass to ``redis-streaming worker --handler handlers:<name>``.

They record each processed entry ID in Redis (so a test can count deliveries and duplicates);
they must not ack anything themselves: acking is the worker's job.

Configuration comes from the environment of the worker process:
``RS_TEST_RECORD_URL`` (the Redis that holds the records) and ``RS_TEST_RECORD_KEY`` (a list of
every processed ID, in order; ``<key>:set`` holds the distinct IDs).
"""

from __future__ import annotations

import os
import threading
import time

import redis

from redis_streaming import Entry

_lock = threading.Lock()
_client: redis.Redis | None = None


def _redis() -> redis.Redis:
    global _client
    with _lock:
        if _client is None:
            _client = redis.Redis.from_url(os.environ["RS_TEST_RECORD_URL"])
        return _client


def _key() -> str:
    return os.environ["RS_TEST_RECORD_KEY"]


def record(entry: Entry) -> None:
    """Count one processing of ``entry`` (both writes in one round trip)."""
    key = _key()
    pipe = _redis().pipeline(transaction=False)
    pipe.rpush(key, entry.id)
    pipe.sadd(key + ":set", entry.id)
    pipe.execute()


def record_slow(entry: Entry) -> None:
    """Like record, plus a little simulated work so a signal lands in the middle of a batch."""
    time.sleep(0.002)
    record(entry)


def fail_poison(entry: Entry) -> None:
    """Raise for entries whose payload says ``poison=1``; record the rest."""
    if entry.fields.get("poison") == "1":
        raise RuntimeError(f"poison pill {entry.id}")
    record(entry)


not_callable = 42
