"""ReadSizer: the pure policy behind a worker's adaptive read size (no server, no clock)."""

from __future__ import annotations

from redis_streaming._batching import START_COUNT, ReadSizer


def test_fixed_when_budget_is_none() -> None:
    sizer = ReadSizer(100, None)
    assert sizer.count == 100
    assert sizer.observe(100, 100, 60.0) == 100


def test_starts_small_and_doubles_on_full_fast_batches() -> None:
    sizer = ReadSizer(100, 0.05)
    assert sizer.count == START_COUNT
    seen = [sizer.observe(sizer.count, sizer.count, 1e-6 * sizer.count) for _ in range(5)]
    assert seen == [20, 40, 80, 100, 100]


def test_start_never_exceeds_max() -> None:
    assert ReadSizer(3, 0.05).count == 3


def test_partial_batch_does_not_grow() -> None:
    sizer = ReadSizer(100, 0.05)
    assert sizer.observe(10, 4, 1e-6) == START_COUNT  # the stream ran dry: no sign of backlog


def test_growth_stops_at_what_fits_the_budget() -> None:
    sizer = ReadSizer(1000, 0.05)
    sizer.count = 40
    # 2 ms per entry: 25 entries fit in 50 ms, so the read shrinks to 25 at once ...
    assert sizer.observe(40, 40, 0.080) == 25
    # ... and a full batch on budget does not grow it past that.
    assert sizer.observe(25, 25, 0.050) == 25


def test_slow_handler_shrinks_to_one_and_recovers() -> None:
    sizer = ReadSizer(100, 0.05)
    assert sizer.observe(10, 10, 3.0) == 1  # 300 ms per entry: one at a time
    assert sizer.observe(1, 1, 0.5) == 1
    assert sizer.observe(1, 1, 1e-5) == 2  # fast again: grows back by doubling
    assert sizer.observe(2, 2, 2e-5) == 4


def test_empty_read_changes_nothing() -> None:
    sizer = ReadSizer(100, 0.05)
    assert sizer.observe(10, 0, 0.0) == START_COUNT


def test_zero_elapsed_time_counts_as_fast() -> None:
    sizer = ReadSizer(100, 0.05)
    assert sizer.observe(10, 10, 0.0) == 20
