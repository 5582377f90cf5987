"""What WorkerPool reports about its children: events, snapshots and exit wording (pure).

Public names are re-exported by ``redis_streaming.pool`` and the package.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from typing import Literal

EventKind = Literal["started", "ready", "exited", "finished"]


@dataclass(frozen=True, slots=True)
class PoolEvent:
    """Something that happened to one child: started, ready, exited (restarting), finished."""

    kind: EventKind
    child: int
    pid: int | None
    consumers: tuple[str, ...]
    detail: str = ""
    restart_in: float | None = None


@dataclass(frozen=True, slots=True)
class ChildInfo:
    """A snapshot of one child slot of the pool."""

    index: int
    pid: int | None
    consumers: tuple[str, ...]
    alive: bool
    ready: bool
    restarts: int
    last_exit: str | None
    partitions: dict[str, list[int]] = field(default_factory=dict)


def describe_exit(code: int | None) -> str:
    """``exit code 1`` or ``killed by SIGKILL`` for a Process.exitcode."""
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
