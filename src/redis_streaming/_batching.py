"""How many entries a worker asks for per read: pure policy, no I/O, no clock.

A large read is cheap per entry (one round trip, one XACK for the lot), but every entry it
fetches sits in the consumer's pending list until the whole batch is handled: the tail of a
slow batch looks idle to peers' XAUTOCLAIM, and one consumer hoards work its peers could share.
:class:`ReadSizer` keeps one batch's handler time near a budget: it doubles the read size while
full batches finish well inside the budget, and cuts it at once to what fits when one does not.
"""

from __future__ import annotations

from typing import Final

START_COUNT: Final = 10  # the first read, before any handler time has been seen


class ReadSizer:
    """Adaptive XREADGROUP COUNT between 1 and ``max_count``.

    ``budget_s`` None turns adaptation off: every read asks for ``max_count``.
    """

    __slots__ = ("budget_s", "count", "max_count")

    def __init__(self, max_count: int, budget_s: float | None) -> None:
        self.max_count = max_count
        self.budget_s = budget_s
        self.count = max_count if budget_s is None else min(max_count, START_COUNT)

    def observe(self, asked: int, handled: int, seconds: float) -> int:
        """Record that a read of ``asked`` entries returned ``handled`` entries whose handlers
        took ``seconds`` in all; returns the count for the next read."""
        if self.budget_s is None or handled <= 0:
            return self.count
        per_entry = seconds / handled
        fits = self.max_count if per_entry <= 0 else int(self.budget_s / per_entry)
        if fits < self.count:
            self.count = max(1, fits)  # over budget: shrink right away
        elif handled >= asked:
            # Only a full batch says more is waiting; grow gradually so one fast batch
            # followed by slow entries cannot overshoot far.
            self.count = min(self.max_count, fits, self.count * 2)
        return self.count
