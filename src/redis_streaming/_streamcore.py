"""What the sync EventStream and the async AsyncEventStream share: options, defaults, counters.

Pure: validated configuration and the thread-safe produced/acked/claimed counters. It must not
send anything (the shells run _plans and the producer plan).
"""

from __future__ import annotations

import copy
import threading
import time
from typing import Any, Final, Self

from . import _codec as codec
from ._backoff import Backoff
from ._model import StreamStats
from ._plans import MAX_AUTOCLAIM_PAGE

__all__ = ["MAX_AUTOCLAIM_PAGE", "UNSET", "StreamCore", "now_ms"]

DEFAULT_MAXLEN_APPROX: Final = 2000
DEFAULT_CLAIM_MIN_IDLE_MS: Final = 5000
DEFAULT_READ_COUNT: Final = 10
DEFAULT_BLOCK_MS: Final = 500
DEFAULT_AUTOCLAIM_PAGE: Final = 100
DEFAULT_AUTOCLAIM_MAX_PAGES: Final = 10
DEFAULT_REPLAY_PAGE: Final = 500
DEFAULT_PRODUCE_RETRIES: Final = 3


class _Unset:
    """Marker for "use the stream's default" in per-call options."""


UNSET: Final = _Unset()


def now_ms() -> int:
    """Wall-clock milliseconds since the epoch (the ``ts_ms`` field)."""
    return time.time_ns() // 1_000_000


class StreamCore:
    """One stream's key and options, validated when built; the base of both stream shells.

    ``maxlen_approx`` caps the stream on every XADD (``MAXLEN ~ n``; ``None`` for no cap,
    ``approximate=False`` for an exact cap). ``claim_min_idle_ms`` is how long an entry must sit
    unacknowledged before ``autoclaim`` may take it from another consumer.
    """

    def __init__(
        self,
        client: Any,
        stream_key: str,
        *,
        maxlen_approx: int | None = DEFAULT_MAXLEN_APPROX,
        claim_min_idle_ms: int = DEFAULT_CLAIM_MIN_IDLE_MS,
        approximate: bool = True,
        retries: int = DEFAULT_PRODUCE_RETRIES,
        backoff: Backoff | None = None,
    ) -> None:
        self.client = client
        self.key = codec.validate_name(stream_key, "stream key")
        self.retries = codec.validate_int(retries, "retries", maximum=100)
        self.backoff = backoff or Backoff()
        self.maxlen = (
            None
            if maxlen_approx is None
            else codec.validate_int(maxlen_approx, "maxlen", minimum=1)
        )
        self.approximate = bool(approximate)
        self.claim_min_idle_ms = codec.validate_int(claim_min_idle_ms, "claim_min_idle_ms")
        self._lock = threading.Lock()
        self._tally = [0, 0, 0]  # produced, acked, claimed: shared with _with_client twins

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}({self.key!r}, maxlen={self.maxlen}, approximate={self.approximate})"

    # ------------------------------------------------------------ counters

    def _with_client(self, client: Any) -> Self:
        """The same stream (key, options, counters) over another client: a worker's own."""
        twin = copy.copy(self)
        twin.client = client
        return twin

    def _count(self, produced: int = 0, acked: int = 0, claimed: int = 0) -> None:
        with self._lock:
            tally = self._tally
            tally[0] += produced
            tally[1] += acked
            tally[2] += claimed

    def stats(self) -> StreamStats:
        """Produced, acked and claimed totals seen through this object (thread-safe)."""
        with self._lock:
            return StreamStats(*self._tally)

    def reset_stats(self) -> None:
        """Zero the counters returned by :meth:`stats`."""
        with self._lock:
            self._tally[:] = [0, 0, 0]

    def _cap(
        self, maxlen: int | _Unset | None, approximate: bool | None
    ) -> tuple[int | None, bool]:
        cap = self.maxlen if isinstance(maxlen, _Unset) else maxlen
        if cap is not None:
            cap = codec.validate_int(cap, "maxlen", minimum=1)
        return cap, self.approximate if approximate is None else approximate

