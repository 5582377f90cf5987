"""The demo's live charts: samples taken from /state documents, rates, and pygal's SVG.

Pure: no server. A fake clock steps the samples; the browser test checks the charts on the page.
"""

from __future__ import annotations

from typing import Any

from redis_streaming.demo.charts import ChartHistory, sample_from_state


def doc(added: int, processed: dict[str, dict[str, int]], pending: int = 0) -> dict[str, Any]:
    """A /state document with just what the charts read."""
    return {
        "stream": {"entries_added": added},
        "stats": {"produced_total": added},
        "groups": [
            {
                "name": g,
                "lag": 0,
                "pending": pending,
                "consumers_detail": [
                    {"name": c, "processed": n, "reaped": 0} for c, n in consumers.items()
                ],
            }
            for g, consumers in processed.items()
        ],
    }


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def series(history: ChartHistory, name: str) -> dict[str, list[tuple[float, float] | None]]:
    return {title: points for title, _, points in history.series(name)}  # type: ignore[arg-type]


def test_sample_reads_the_state_document() -> None:
    s = sample_from_state(doc(7, {"g": {"a": 3, "b": 4}}, pending=2), 5.0)
    assert (s.t, s.produced, s.processed, s.pending) == (5.0, 7, {"g": {"a": 3, "b": 4}}, {"g": 2})
    no_stream = {**doc(0, {}), "stream": {"entries_added": None}, "stats": {"produced_total": 4}}
    assert sample_from_state(no_stream, 0).produced == 4  # falls back to this process's count


def test_one_sample_per_step_and_a_window() -> None:
    clock = Clock()
    h = ChartHistory(window_s=10, step_s=1.0, clock=clock)
    assert h.record(doc(0, {"g": {"a": 0}}))
    assert not h.record(doc(0, {"g": {"a": 0}}))  # the feed ticks faster than a step
    for _ in range(30):
        clock.now += 1
        h.record(doc(0, {"g": {"a": 0}}))
    assert len(h) == 11  # the last 10 s, both ends included
    assert h.span_s() == 10


def test_the_x_axis_grows_with_the_samples() -> None:
    clock = Clock()
    h = ChartHistory(window_s=300, clock=clock)
    h.record(doc(0, {}))
    spans = {}
    for age in (5, 41, 59, 61, 100, 299, 400):
        clock.now = 1000.0 + age
        h.record(doc(0, {}))
        spans[age] = h.span_s()
    assert spans == {5: 30, 41: 50, 59: 60, 61: 90, 100: 120, 299: 300, 400: 300}


def test_rates_per_second_per_group() -> None:
    clock = Clock()
    h = ChartHistory(clock=clock)
    for i in range(10):  # 2 events a second, group g handles them all, group h half
        h.record(doc(2 * i, {"g": {"a": i, "b": i}, "h": {"c": i}}))
        clock.now += 1
    lines = series(h, "rates")
    assert set(lines) == {"produced", "processed by g", "processed by h"}
    last = {title: points[-1] for title, points in lines.items()}
    assert last["produced"] == (0.0, 2.0)
    assert last["processed by g"] == (0.0, 2.0)
    assert last["processed by h"] == (0.0, 1.0)
    assert lines["produced"][0] == (-8.0, 2.0)  # the first sample has no rate yet


def test_a_removed_consumer_is_no_negative_rate_and_clear_forgets() -> None:
    clock = Clock()
    h = ChartHistory(clock=clock)
    h.record(doc(10, {"g": {"a": 5, "b": 5}}))
    clock.now += 1
    h.record(doc(10, {"g": {"a": 6}}))  # b was removed with its 5; a did one more
    clock.now += 1
    (point,) = [p for p in series(h, "rates")["processed by g"] if p is not None]
    assert point[1] == 1.0
    version = h.version
    h.clear()
    assert len(h) == 0 and h.version > version


def test_a_hole_in_the_samples_breaks_the_lines() -> None:
    clock = Clock()
    h = ChartHistory(clock=clock)
    for step in (0, 1, 2, 30, 31):  # nobody watched for half a minute
        clock.now = 1000.0 + step
        h.record(doc(step, {"g": {"a": step}}, pending=1))
    pending = series(h, "backlog")["pending g"]
    assert None in pending
    assert pending.index(None) == 3


def test_svg_without_data_and_with_data() -> None:
    clock = Clock()
    h = ChartHistory(clock=clock)
    empty = h.render("backlog").decode()  # no group yet: pygal gets no series at all
    assert empty.startswith("<svg") and "waiting for samples" in empty
    for i in range(5):
        h.record(doc(3 * i, {"notifications": {"a": 3 * i}}, pending=i))
        clock.now += 1
    rates = h.render("rates").decode()
    backlog = h.render("backlog").decode()
    assert ">produced<" in rates and ">processed by notifications<" in rates
    assert ">lag notifications<" in backlog and ">pending notifications<" in backlog
    # pygal's tooltip script (loaded from its web site by default) is off: nothing to fetch.
    assert "kozea.github.io" not in rates and 'href="http' not in rates and "src=" not in rates
    assert h.render("rates") is h.render("rates")  # drawn once per sample
