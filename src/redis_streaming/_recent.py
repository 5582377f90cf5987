"""A worker's log of its last deliveries, cheap to write once per batch.

A batch that was acked whole is kept as one record (the IDs and types of its last entries, one
timestamp) and turned into :class:`Delivery` objects only when someone asks: the handler loop
pays one small tuple per logged entry, not a frozen dataclass, however small the batches are.
No payload is kept alive. Pure: no I/O, no locks
(the worker core holds its own lock around it).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from ._model import Delivery, Entry

#: One acked batch: (ID, type) of its last entries (at most ``size``), when, whether reaped.
_Batch = tuple[list[tuple[str, str]], int, bool]


class RecentLog:
    """The last ``size`` deliveries (oldest first), written per delivery or per acked batch.

    Memory stays bounded: records no longer needed to make up ``size`` deliveries are dropped
    as new ones arrive, so at most ``2 * size`` deliveries are kept.
    """

    __slots__ = ("_held", "_records", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self._records: deque[Delivery | _Batch] = deque()
        self._held = 0  # deliveries the records stand for

    def add(self, delivery: Delivery) -> None:
        if self.size:
            self._push(delivery, 1)

    def add_acked(self, entries: Sequence[Entry], at_ms: int, reaped: bool) -> None:
        """Every one of ``entries`` was acked at ``at_ms``; only the last ``size`` are kept."""
        if self.size and entries:
            tail = entries[-self.size :] if len(entries) > self.size else entries
            self._push(([(e.id, e.type) for e in tail], at_ms, reaped), len(tail))

    def _push(self, record: Delivery | _Batch, n: int) -> None:
        self._records.append(record)
        self._held += n
        while self._records:
            first = self._records[0]
            weight = 1 if isinstance(first, Delivery) else len(first[0])
            if self._held - weight < self.size:
                break
            self._records.popleft()
            self._held -= weight

    def items(self) -> list[Delivery]:
        """The deliveries, oldest first, as :class:`Delivery` objects (built now)."""
        out: list[Delivery] = []
        for record in self._records:
            if isinstance(record, Delivery):
                out.append(record)
            else:
                pairs, at_ms, reaped = record
                out.extend(Delivery(i, t, "acked", at_ms, reaped) for i, t in pairs)
        return out[-self.size :] if self.size else []
