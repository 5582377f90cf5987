"""The async driver: runs _ops commands and plans over a ``redis.asyncio.Redis``.

The twin of ``_drive``, line for line; only the awaits differ. Errors are mapped at one point:
an error reply goes to the op's ``recover``, any other redis-py error through ``translate``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator
from typing import Any

import redis.exceptions as rex

from .._errors import translate
from .._ops import Batch, Emit, Op


async def execute(client: Any, step: Op | Batch) -> Any:
    """One round trip; the parsed reply (a list of them for a Batch)."""
    if isinstance(step, Batch):
        pipe = client.pipeline(transaction=step.transaction)
        for op in step.ops:
            getattr(pipe, op.method)(*op.args, **op.kwargs)
        try:
            replies = await pipe.execute(raise_on_error=False)
        except rex.RedisError as exc:
            raise translate(exc) from exc
        return step.finish(replies)
    kwargs = step.kwargs
    if step.node_key is not None and hasattr(client, "get_node_from_key"):
        kwargs = {**kwargs, "target_nodes": client.get_node_from_key(step.node_key)}
    try:
        raw = await getattr(client, step.method)(*step.args, **kwargs)
    except rex.ResponseError as exc:
        return step.recover(exc)
    except (rex.RedisError, rex.RedisClusterException) as exc:
        if step.tolerate:
            return exc
        raise translate(exc) from exc
    return step.finish(raw)


async def run(client: Any, plan: Op | Batch | Generator[Any, Any, Any]) -> Any:
    """Run a plan (or one op) to its end; its result."""
    if isinstance(plan, (Op, Batch)):
        return await execute(client, plan)
    try:
        step = next(plan)
        while True:
            if isinstance(step, Emit):
                raise TypeError("a plan that emits values must be driven by iterate()")
            step = plan.send(await execute(client, step))
    except StopIteration as done:
        return done.value


async def iterate(client: Any, plan: Generator[Any, Any, Any]) -> AsyncIterator[Any]:
    """Run a plan lazily, yielding each value it emits (one round trip per page asked)."""
    try:
        step = next(plan)
        while True:
            if isinstance(step, Emit):
                yield step.value
                step = next(plan)
            else:
                step = plan.send(await execute(client, step))
    except StopIteration:
        return
