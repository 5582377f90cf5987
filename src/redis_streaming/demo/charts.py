"""The demo's live charts: a few minutes of /state samples, drawn as SVG by pygal on the server.

The runtime records every /state document it builds (the live feed builds one per tick); at
most one sample a second is kept, for ``WINDOW_S`` seconds. Two charts are drawn from them:

* ``rates``: events per second added to the stream, and processed (acked) by each group;
* ``backlog``: each group's lag (entries not yet delivered to it) and pending (delivered, not
  acked yet).

pygal renders the SVG (no chart code of ours); the page shows it in an ``<img>``, so nothing in
it can run, and it loads nothing from elsewhere (pygal's tooltip script is turned off).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

import pygal
from fastapi import APIRouter
from fastapi.responses import Response
from pygal.style import Style

#: How far back the charts go, in seconds.
WINDOW_S: Final = 300
#: At most one sample per this many seconds.
STEP_S: Final = 1.0
#: Rates are averaged over this many seconds (a burst of 10 events shows as 2/s for 5 s).
RATE_WINDOW_S: Final = 5.0
#: A hole in the samples longer than this breaks the lines instead of joining across it.
GAP_S: Final = 5.0

ChartName = Literal["rates", "backlog"]
CHART_NAMES: Final[tuple[ChartName, ...]] = ("rates", "backlog")

_PRODUCED_COLOR: Final = "#1d2330"
_GROUP_COLORS: Final = ("#2857a4", "#1f7a4d", "#a15c00", "#8e3fa8", "#c7302b", "#0f7c8c")
# A chart of its own may load nothing and run nothing; only its own inline <style> applies.
_SVG_HEADERS: Final = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
}


@dataclass(frozen=True)
class Sample:
    """One moment of the stream: cumulative counters and the groups' gauges."""

    t: float
    produced: int
    #: group -> consumer -> entries it processed and acked (its own reads plus reaped ones)
    processed: Mapping[str, Mapping[str, int]]
    lag: Mapping[str, int | None]
    pending: Mapping[str, int]


def sample_from_state(doc: Mapping[str, Any], t: float) -> Sample:
    """The chart's numbers out of one /state document (pure)."""
    stream = doc.get("stream") or {}
    added = stream.get("entries_added")
    produced = int(added) if added is not None else int(doc["stats"]["produced_total"])
    processed: dict[str, dict[str, int]] = {}
    lag: dict[str, int | None] = {}
    pending: dict[str, int] = {}
    for g in doc.get("groups", []):
        name = g["name"]
        processed[name] = {
            c["name"]: int(c["processed"]) + int(c["reaped"]) for c in g["consumers_detail"]
        }
        lag[name] = g.get("lag")
        pending[name] = int(g["pending"])
    return Sample(t, produced, processed, lag, pending)


def _done(before: Mapping[str, int], after: Mapping[str, int]) -> int:
    """Entries a group processed between two samples, consumer by consumer.

    A consumer new since ``before`` counts from 0; one removed since drops out (its total must
    not read as a negative rate); a counter that went down (a reset) counts as 0.
    """
    return sum(max(0, n - before.get(name, 0)) for name, n in after.items())


class ChartHistory:
    """The last ``window_s`` seconds of samples, and the two SVG charts drawn from them.

    Thread-safe: the live feed records from the server's thread pool.
    """

    def __init__(
        self,
        window_s: float = WINDOW_S,
        step_s: float = STEP_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window_s = window_s
        self.step_s = step_s
        self._clock = clock
        self._lock = threading.Lock()
        self._samples: deque[Sample] = deque()
        self._version = 0
        self._cache: dict[ChartName, tuple[int, bytes]] = {}

    @property
    def version(self) -> int:
        """Goes up with every sample kept (and on clear)."""
        with self._lock:
            return self._version

    def __len__(self) -> int:
        with self._lock:
            return len(self._samples)

    def record(self, doc: Mapping[str, Any]) -> bool:
        """Keep a sample of this /state document unless one was kept less than a step ago."""
        now = self._clock()
        with self._lock:
            if self._samples and now - self._samples[-1].t < self.step_s:
                return False
            self._samples.append(sample_from_state(doc, now))
            while self._samples and now - self._samples[0].t > self.window_s:
                self._samples.popleft()
            self._version += 1
        return True

    def clear(self) -> None:
        """Forget every sample (the demo was reset: its counters start again at 0)."""
        with self._lock:
            self._samples.clear()
            self._version += 1

    def _snapshot(self) -> tuple[float, list[Sample], int]:
        with self._lock:
            return self._clock(), list(self._samples), self._version

    def span_s(self) -> int:
        """The x axis' width: the time the samples cover, rounded up (to 10 s within the first
        minute, then to 30 s), at least 30 s and at most the window."""
        _, samples, _ = self._snapshot()
        age = samples[-1].t - samples[0].t if samples else 0.0
        unit = 10 if age <= 60 else 30
        return int(min(self.window_s, max(30, -(-age // unit) * unit)))

    # ------------------------------------------------------------ series

    @staticmethod
    def _groups(samples: list[Sample]) -> list[str]:
        names: dict[str, None] = {}
        for s in samples:
            names.update(dict.fromkeys(s.pending))
        return list(names)

    def series(
        self, name: ChartName
    ) -> list[tuple[str, str, list[tuple[float, float] | None]]]:
        """(title, color, points) per line: x is seconds before the newest sample (<= 0), so
        both charts drawn from one set of samples agree; None breaks a line."""
        _, samples, _ = self._snapshot()
        now = samples[-1].t if samples else 0.0
        groups = self._groups(samples)
        colors = {g: _GROUP_COLORS[i % len(_GROUP_COLORS)] for i, g in enumerate(groups)}

        def line(value: Callable[[int], float | None]) -> list[tuple[float, float] | None]:
            points: list[tuple[float, float] | None] = []
            for i, s in enumerate(samples):
                if i and s.t - samples[i - 1].t > GAP_S and points and points[-1] is not None:
                    points.append(None)
                y = value(i)
                if y is not None:
                    points.append((round(s.t - now, 1), y))
            return points

        if name == "rates":

            def base(i: int) -> int | None:
                """The sample about RATE_WINDOW_S before sample i (None: not enough history)."""
                j = i
                while j > 0:
                    earlier = samples[j - 1].t
                    if samples[j].t - earlier > GAP_S:
                        break  # a hole: do not average across it
                    if samples[i].t - earlier > RATE_WINDOW_S + 0.5:
                        break
                    j -= 1
                return j if j < i else None

            def rate_produced(i: int) -> float | None:
                j = base(i)
                if j is None:
                    return None
                dt = samples[i].t - samples[j].t
                return round(max(0, samples[i].produced - samples[j].produced) / dt, 2)

            def rate_group(g: str) -> Callable[[int], float | None]:
                def rate(i: int) -> float | None:
                    j = base(i)
                    if j is None or g not in samples[i].processed:
                        return None
                    dt = samples[i].t - samples[j].t
                    done = _done(samples[j].processed.get(g, {}), samples[i].processed[g])
                    return round(done / dt, 2)

                return rate

            out = [(f"processed by {g}", colors[g], line(rate_group(g))) for g in groups]
            # Last, so its dashed line is drawn over a group's line that has the same values.
            return [*out, ("produced", _PRODUCED_COLOR, line(rate_produced))]

        def gauge(g: str, what: str) -> Callable[[int], float | None]:
            def value(i: int) -> float | None:
                s = samples[i]
                v = (s.lag if what == "lag" else s.pending).get(g)
                return None if v is None else float(v)

            return value

        return [
            (f"{what} {g}", colors[g], line(gauge(g, what)))
            for g in groups
            for what in ("lag", "pending")
        ]

    # ------------------------------------------------------------ drawing

    def render(self, name: ChartName, width: int = 640, height: int = 260) -> bytes:
        """The chart as SVG; drawn again only when a sample was added since the last time."""
        version = self.version
        cached = self._cache.get(name)
        if cached is not None and cached[0] == version:
            return cached[1]
        lines = self.series(name)
        span = self.span_s()
        tick = 10 if span <= 60 else 30 if span <= 180 else 60
        style = Style(
            background="transparent",
            plot_background="#ffffff",
            foreground="#1d2330",
            foreground_strong="#1d2330",
            foreground_subtle="#6b7385",
            font_family='system-ui, -apple-system, "Segoe UI", sans-serif',
            label_font_size=11,
            major_label_font_size=11,
            legend_font_size=12,
            no_data_font_size=16,
            colors=tuple(color for _, color, _ in lines) or (_PRODUCED_COLOR,),
            stroke_width="2",
            guide_stroke_color="#e1e4ea",
            major_guide_stroke_color="#e1e4ea",
            transition="0s",
        )
        chart = pygal.XY(
            style=style,
            width=width,
            height=height,
            explicit_size=True,
            js=[],  # pygal's tooltip script would come from a CDN; an <img> runs none anyway
            show_dots=False,
            include_x_axis=True,
            xrange=(-span, 0),
            # pygal 3.1 fails on x_labels without a single series (no group yet): none then.
            x_labels=list(range(-span, 1, tick)) if lines else None,
            x_value_formatter=lambda x: "now" if x == 0 else f"{-x:g} s ago",
            value_formatter=lambda y: f"{y:g}",
            y_title="events / s" if name == "rates" else "entries",
            legend_at_bottom=True,
            legend_at_bottom_columns=3 if name == "rates" else 2,
            truncate_legend=-1,
            margin=6,
            spacing=8,
            no_data_text="waiting for samples…",
            allow_interruptions=True,
            disable_xml_declaration=True,
        )
        for title, _, points in lines:
            if title == "produced" or title.startswith("pending"):
                chart.add(title, points, stroke_style={"dasharray": "6, 4"})
            else:
                chart.add(title, points)
        svg = str(chart.render(is_unicode=True)).encode("utf-8")
        self._cache[name] = (version, svg)
        return svg


def router(history: ChartHistory) -> APIRouter:
    """GET /charts/rates.svg and /charts/backlog.svg (left out of the OpenAPI schema)."""
    api = APIRouter()

    @api.get("/charts/{name}.svg", include_in_schema=False)
    def chart(name: ChartName) -> Response:
        return Response(history.render(name), media_type="image/svg+xml", headers=_SVG_HEADERS)

    return api
