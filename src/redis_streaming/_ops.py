"""Redis commands as data: what to send, how to read the reply, what an error reply means.

Pure: an :class:`Op` names a redis-py client method and its arguments (the same method exists
on ``redis.Redis``, ``redis.asyncio.Redis`` and their pipelines, so both drivers send the same
bytes), the parser for its reply, and the value that stands for BUSYGROUP or a missing key or
group. Multi-step procedures are generators that yield ops and receive parsed replies
(:data:`Plan`); the sync driver (``_drive``) and the async one (``aio._drive``) run them. This
module must not import redis-py's client classes nor do any I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from ._errors import is_busygroup, is_missing_key, translate

R = TypeVar("R")


class _Raise:
    def __repr__(self) -> str:
        return "RAISE"


#: "No value stands for this error reply: raise it (translated)."
RAISE: Final = _Raise()
#: Read the reply as bytes (redis-py's NEVER_DECODE): replies that carry entry fields.
RAW: Final[Mapping[str, Any]] = {"NEVER_DECODE": True}


@dataclass(frozen=True, slots=True)
class Op:
    """One command: ``client.<method>(*args, **kwargs)``, its reply through ``parse``.

    ``busygroup`` / ``missing``: the value returned instead of raising when the server answers
    BUSYGROUP, or that the key or group does not exist (NOGROUP, "no such key").
    """

    method: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    parse: Callable[[Any], Any] | None = None
    busygroup: Any = RAISE
    missing: Any = RAISE
    #: Any error reply is handed to the plan as the exception object (a probe, like HELLO).
    tolerate: bool = False
    #: On a cluster client, send to the node holding this key (a keyless command like HELLO).
    node_key: str | None = None

    def finish(self, raw: Any) -> Any:
        return raw if self.parse is None else self.parse(raw)

    def recover(self, exc: BaseException) -> Any:
        """The value an error reply stands for, or raise it as this library's exception."""
        if self.tolerate:
            return exc
        if self.busygroup is not RAISE and is_busygroup(exc):
            return self.busygroup
        if self.missing is not RAISE and is_missing_key(exc):
            return self.missing
        raise translate(exc) from exc


def raw_command(*args: Any, parse: Callable[[Any], Any] | None = None, **kw: Any) -> Op:
    """A command sent as given (``execute_command``) whose reply is read as bytes."""
    return Op("execute_command", args, RAW, parse, **kw)


@dataclass(frozen=True, slots=True)
class Batch:
    """Several ops in one round trip: a pipeline, or MULTI/EXEC when ``transaction``.

    The reply is the list of each op's parsed reply. The first error reply is raised (through
    that op's ``recover``); in a transaction nothing was applied then.
    """

    ops: Sequence[Op]
    transaction: bool = False

    def finish(self, replies: Sequence[Any]) -> list[Any]:
        out = []
        for op, reply in zip(self.ops, replies, strict=True):
            out.append(op.recover(reply) if isinstance(reply, Exception) else op.finish(reply))
        return out


@dataclass(frozen=True, slots=True)
class Emit:
    """A value a procedure hands to its caller mid-way (one page of an iterator)."""

    value: Any


Step = Op | Batch | Emit
#: A procedure: yields steps, receives each Op's or Batch's parsed reply, returns its result.
Plan = Generator[Step, Any, R]


def single(op: Op) -> Plan[Any]:
    """A plan of one op (so every method can be driven the same way)."""
    return (yield op)
