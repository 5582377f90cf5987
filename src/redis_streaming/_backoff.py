"""Bounded, jittered exponential backoff used by workers and producers when Redis is away.

Pure arithmetic: it computes delays and never sleeps; callers wait on their own stop events.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

DEFAULT_BACKOFF_BASE_S = 0.05
DEFAULT_BACKOFF_CAP_S = 2.0


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delay before retry ``attempt`` (0-based): ``base * 2**attempt`` capped, with jitter.

    The jitter draws from the upper half of the window ("equal jitter"), so a fleet of workers
    that lost the same server does not reconnect in lock-step yet never retries instantly.
    """

    base_s: float = DEFAULT_BACKOFF_BASE_S
    cap_s: float = DEFAULT_BACKOFF_CAP_S

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        window = float(min(self.cap_s, self.base_s * (2 ** min(attempt, 30))))
        draw = float((rng or random).random())
        return window / 2 + draw * window / 2
