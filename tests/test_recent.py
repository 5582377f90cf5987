"""RecentLog (the worker's last deliveries) against a plain bounded list: same answers,
bounded memory, whatever mix of single deliveries and acked batches arrives."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from redis_streaming import Delivery, Entry
from redis_streaming._recent import RecentLog

#: one write: an error delivery (an int: its number), or an acked batch (a list of numbers)
writes = st.lists(
    st.one_of(st.integers(0, 10_000), st.lists(st.integers(0, 10_000), max_size=60)),
    max_size=40,
)


def _entry(n: int) -> Entry:
    return Entry(f"{n}-0", {"type": f"t{n % 3}"})


@given(size=st.integers(0, 25), ops=writes)
def test_matches_a_bounded_list(size: int, ops: list[int | list[int]]) -> None:
    log, model = RecentLog(size), []
    for at, op in enumerate(ops):
        if isinstance(op, int):
            d = Delivery(f"{op}-0", "x", "error", at, False, "boom")
            log.add(d)
            model.append(d)
        else:
            log.add_acked([_entry(n) for n in op], at, True)
            model.extend(Delivery(f"{n}-0", f"t{n % 3}", "acked", at, True) for n in op)
        # never more than size entries plus one record's worth kept alive
        assert log._held < 2 * size + 1 or not size
    assert log.items() == (model[-size:] if size else [])


def test_one_record_per_batch() -> None:
    log = RecentLog(20)
    for b in range(100):
        log.add_acked([_entry(b * 200 + i) for i in range(200)], b, False)
    assert len(log._records) == 1  # the last batch alone covers 20 deliveries
    got = log.items()
    assert [d.id for d in got] == [f"{19_800 + 180 + i}-0" for i in range(20)]
    assert {d.outcome for d in got} == {"acked"} and got[-1].at_ms == 99
