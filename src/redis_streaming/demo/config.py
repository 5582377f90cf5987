"""DemoConfig: every knob of the web demo, with its defaults named once and checked when built.

It must not do I/O: building a config never touches Redis or the network.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from .. import _codec as codec
from .._errors import InvalidOption
from ..server import validate_url
from ..stream import DEFAULT_CLAIM_MIN_IDLE_MS, DEFAULT_MAXLEN_APPROX
from ..worker import DEFAULT_MAX_DELIVERIES as _LIB_MAX_DELIVERIES

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 8083
DEFAULT_STREAM_KEY: Final = "demo:events:orders"
DEFAULT_MAXLEN: Final = DEFAULT_MAXLEN_APPROX
DEFAULT_CLAIM_IDLE_MS: Final = DEFAULT_CLAIM_MIN_IDLE_MS
DEFAULT_PROCESS_MS: Final = 25
DEFAULT_MAX_DELIVERIES: Final = _LIB_MAX_DELIVERIES
DEFAULT_TICK_S: Final = 0.5
DEFAULT_TAIL: Final = 12
DEFAULT_PENDING_ROWS: Final = 50

#: The groups and consumers a fresh demo starts with, all reading from the start of the stream.
SEED: Final[tuple[tuple[str, tuple[str, ...]], ...]] = (
    ("notifications", ("worker-a", "worker-b")),
    ("analytics", ("worker-c",)),
)
EVENT_TYPES: Final = ("order.placed", "order.paid", "order.shipped", "order.cancelled")
MAX_PRODUCE: Final = 500

#: Host names a local tool answers to whatever it is bound to (DNS-rebinding guard).
LOCAL_NAMES: Final = ("localhost", "127.0.0.1", "[::1]")


def _no_announce(line: str) -> None:
    return None


@dataclass(frozen=True)
class DemoConfig:
    """What the demo app talks to and how it behaves.

    ``auto_reap`` is the workers' XAUTOCLAIM timer in seconds; None (the default) leaves
    recovery to the "XAUTOCLAIM to selected" button, which is the lesson of the demo.
    ``allowed_hosts`` adds Host-header names beyond the bound host and localhost (tests use
    "testserver"). ``announce`` receives the start-up lines (the CLI prints them).
    """

    redis_url: str
    stream_key: str = DEFAULT_STREAM_KEY
    maxlen: int = DEFAULT_MAXLEN
    claim_idle_ms: int = DEFAULT_CLAIM_IDLE_MS
    process_ms: int = DEFAULT_PROCESS_MS
    max_deliveries: int | None = DEFAULT_MAX_DELIVERIES
    auto_reap: float | None = None
    reset: bool = True
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    allowed_hosts: tuple[str, ...] = ()
    tick_s: float = DEFAULT_TICK_S
    tail_count: int = DEFAULT_TAIL
    pending_rows: int = DEFAULT_PENDING_ROWS
    announce: Callable[[str], None] = field(default=_no_announce, compare=False, repr=False)

    def __post_init__(self) -> None:
        validate_url(self.redis_url)
        codec.validate_name(self.stream_key, "stream key")
        codec.validate_int(self.maxlen, "maxlen", minimum=1)
        codec.validate_int(self.claim_idle_ms, "claim_idle_ms")
        codec.validate_int(self.process_ms, "process_ms", maximum=60_000)
        if self.max_deliveries is not None:
            codec.validate_int(self.max_deliveries, "max_deliveries", minimum=1)
        if self.auto_reap is not None and not (
            isinstance(self.auto_reap, (int, float))
            and not isinstance(self.auto_reap, bool)
            and self.auto_reap > 0
        ):
            raise InvalidOption(f"auto_reap must be > 0 seconds or None, got {self.auto_reap!r}")
        codec.validate_name(self.host, "host")
        codec.validate_int(self.port, "port", minimum=0, maximum=65535)
        for name in self.allowed_hosts:
            codec.validate_name(name, "allowed host")
        if not (isinstance(self.tick_s, (int, float)) and 0 < self.tick_s <= 60):
            raise InvalidOption(f"tick_s must be in (0, 60] seconds, got {self.tick_s!r}")
        codec.validate_int(self.tail_count, "tail_count", minimum=1, maximum=1000)
        codec.validate_int(self.pending_rows, "pending_rows", minimum=1, maximum=10_000)

    @property
    def dlq_key(self) -> str:
        """The dead-letter stream the workers write to (the library's default name)."""
        return self.stream_key + ":dlq"

    def host_names(self) -> frozenset[str]:
        """Host-header names (without port) the app answers to, lower-cased."""
        names = {self.host.lower(), *LOCAL_NAMES, *(h.lower() for h in self.allowed_hosts)}
        if ":" in self.host and not self.host.startswith("["):
            names.add(f"[{self.host.lower()}]")
        return frozenset(names)
