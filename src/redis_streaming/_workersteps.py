"""The steps the worker core yields and the shells interpret, and the worker's defaults.

Pure data: no I/O, no decisions (those are _workercore's).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from ._model import Entry
from ._ops import Batch, Emit, Op

DEFAULT_REAP_INTERVAL_S: Final = 5.0
DEFAULT_MAX_DELIVERIES: Final = 5
DEFAULT_RECENT_SIZE: Final = 20
DEFAULT_COUNT: Final = 100
DEFAULT_BATCH_BUDGET_MS: Final = 50.0
#: How long past ``block_ms`` a read may stay silent before its connection is dropped (s).
READ_MARGIN_S: Final = 2.0

ErrorCallback = Callable[[BaseException, Entry | None], None]
MissingGroupPolicy = Literal["0", "$", "stop"]


@dataclass(frozen=True, slots=True)
class FastRead:
    """Send the hand-packed XACK + XREADGROUP and read ``replies`` raw replies within
    ``timeout`` seconds (the worker's own deadline, whatever the client's socket_timeout)."""

    payload: bytes
    replies: int
    timeout: float


@dataclass(frozen=True, slots=True)
class Handle:
    """Run the handler over ``entries`` (see :meth:`WorkerCore.verdict`); reply: Handled."""

    entries: Sequence[Entry]
    reaped: bool
    deliveries: Mapping[str, int] | None = None


@dataclass(frozen=True, slots=True)
class Handled:
    ok: list[str]
    dead: list[tuple[Entry, int, str]]
    dropped: int


@dataclass(frozen=True, slots=True)
class Wait:
    """Back off for ``seconds``, or less if the worker is stopped meanwhile."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Park:
    """Wait while paused (acks already flushed)."""


Step = Op | Batch | Emit | FastRead | Handle | Wait | Park
Steps = Generator[Step, Any, Any]
