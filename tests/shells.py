"""Drive the sync and the async API through one interface, so a scenario is written once and
runs on both shells (tests/test_shells.py).

The async shell owns an event loop in a thread of its own; each call is submitted to it and
waited for, so the tests stay plain functions. No mocks: both shells talk to the same real
server.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import redis
import redis.asyncio as aredis

from redis_streaming import (
    AsyncConsumerWorker,
    AsyncDeadLetters,
    AsyncEventStream,
    ConsumerWorker,
    DeadLetters,
    Entry,
    EventStream,
    check_health,
    check_health_async,
)


class SyncShell:
    name = "sync"

    def __init__(self, port: int) -> None:
        self.client = redis.Redis(port=port, decode_responses=True)

    def stream(self, key: str, **kw: Any) -> EventStream:
        return EventStream(self.client, key, **kw)

    def call(self, obj: Any, method: str, *args: Any, **kw: Any) -> Any:
        return getattr(obj, method)(*args, **kw)

    def collect(self, obj: Any, method: str, *args: Any, **kw: Any) -> list[Any]:
        return list(getattr(obj, method)(*args, **kw))

    def worker(
        self, stream: Any, group: str, name: str, record: Callable[[Entry], None], **kw: Any
    ) -> ConsumerWorker:
        return ConsumerWorker(stream, group, name, record, **kw)

    def start(self, worker: Any) -> None:
        worker.start()

    def stop(self, worker: Any, timeout: float = 10) -> bool:
        return bool(worker.stop(timeout))

    def pause(self, worker: Any) -> bool:
        return bool(worker.pause(wait=True, timeout=5))

    def resume(self, worker: Any) -> None:
        worker.resume()

    def dead_letters(self, stream: Any) -> DeadLetters:
        return DeadLetters(stream)

    def health(self, stream: Any) -> Any:
        return check_health(stream)

    def close(self) -> None:
        self.client.close()


class AsyncShell:
    name = "async"

    def __init__(self, port: int) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.client = aredis.Redis(port=port, decode_responses=True)

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stream(self, key: str, **kw: Any) -> AsyncEventStream:
        return AsyncEventStream(self.client, key, **kw)

    def call(self, obj: Any, method: str, *args: Any, **kw: Any) -> Any:
        return self.run(getattr(obj, method)(*args, **kw))

    def collect(self, obj: Any, method: str, *args: Any, **kw: Any) -> list[Any]:
        async def gather() -> list[Any]:
            return [x async for x in getattr(obj, method)(*args, **kw)]

        return self.run(gather())  # type: ignore[no-any-return]

    def worker(
        self, stream: Any, group: str, name: str, record: Callable[[Entry], None], **kw: Any
    ) -> AsyncConsumerWorker:
        async def handler(entry: Entry) -> None:
            record(entry)

        return AsyncConsumerWorker(stream, group, name, handler, **kw)

    def start(self, worker: Any) -> None:
        async def start() -> None:
            worker.start()

        self.run(start())

    def stop(self, worker: Any, timeout: float = 10) -> bool:
        return bool(self.run(worker.stop(timeout)))

    def pause(self, worker: Any) -> bool:
        return bool(self.run(worker.pause(wait=True, timeout=5)))

    def resume(self, worker: Any) -> None:
        self.loop.call_soon_threadsafe(worker.resume)  # asyncio events belong to their loop

    def dead_letters(self, stream: Any) -> AsyncDeadLetters:
        return AsyncDeadLetters(stream)

    def health(self, stream: Any) -> Any:
        return self.run(check_health_async(stream))

    def close(self) -> None:
        self.run(self.client.aclose())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


Shell = SyncShell | AsyncShell


def make_shell(kind: str, port: int) -> Iterator[Shell]:
    shell: Shell = SyncShell(port) if kind == "sync" else AsyncShell(port)
    try:
        yield shell
    finally:
        shell.close()
