"""The sync driver: runs :mod:`_ops` commands and plans over a ``redis.Redis`` (or cluster).

Only I/O lives here; every decision is in the plan. Errors are mapped at one point: an error
reply goes to the op's ``recover``, any other redis-py error through ``translate``. The async
twin is ``aio/_drive.py``, line for line.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from typing import Any

import redis.exceptions as rex

from ._errors import translate
from ._ops import Batch, Emit, Op


def execute(client: Any, step: Op | Batch) -> Any:
    """One round trip; the parsed reply (a list of them for a Batch)."""
    if isinstance(step, Batch):
        pipe = client.pipeline(transaction=step.transaction)
        for op in step.ops:
            getattr(pipe, op.method)(*op.args, **op.kwargs)
        try:
            replies = pipe.execute(raise_on_error=False)
        except rex.ResponseError as exc:  # EXECABORT: a command was refused while queued
            raise translate(exc) from exc
        except rex.RedisError as exc:
            raise translate(exc) from exc
        return step.finish(replies)
    kwargs = step.kwargs
    if step.node_key is not None and hasattr(client, "get_node_from_key"):
        kwargs = {**kwargs, "target_nodes": client.get_node_from_key(step.node_key)}
    try:
        raw = getattr(client, step.method)(*step.args, **kwargs)
    except rex.ResponseError as exc:
        return step.recover(exc)
    except (rex.RedisError, rex.RedisClusterException) as exc:
        if step.tolerate:
            return exc
        raise translate(exc) from exc
    return step.finish(raw)


def run(client: Any, plan: Op | Batch | Generator[Any, Any, Any]) -> Any:
    """Run a plan (or one op) to its end; its result."""
    if isinstance(plan, (Op, Batch)):
        return execute(client, plan)
    try:
        step = next(plan)
        while True:
            if isinstance(step, Emit):
                raise TypeError("a plan that emits values must be driven by iterate()")
            step = plan.send(execute(client, step))
    except StopIteration as done:
        return done.value


def iterate(client: Any, plan: Generator[Any, Any, Any]) -> Iterator[Any]:
    """Run a plan lazily, yielding each value it emits (one round trip per page asked)."""
    try:
        step = next(plan)
        while True:
            if isinstance(step, Emit):
                yield step.value
                step = next(plan)
            else:
                step = plan.send(execute(client, step))
    except StopIteration:
        return


def interpret(steps: Generator[Any, Any, Any], step_reply: Callable[[Any], Any]) -> Any:
    """Run a core's steps to their end (a worker loop, a reap): each step's reply is
    ``step_reply(step)``, and an exception it raises is thrown into the steps, which decide
    what it means. Returns the steps' result."""
    try:
        step = next(steps)
        while True:
            try:
                reply = step_reply(step)
            except Exception as exc:
                step = steps.throw(exc)
                continue
            step = steps.send(reply)
    except StopIteration as done:
        return done.value
