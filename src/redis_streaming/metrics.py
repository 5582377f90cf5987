"""Prometheus metrics for a stream and its workers, gathered at scrape time by a custom collector.

It must add no cost to the produce/consume hot path: counters are read from EventStream.stats(),
ConsumerWorker.status() and the health view only when someone scrapes. Needs prometheus-client
(the ``demo`` or ``cli`` extra).

Stable API (used by the demo's GET /metrics and the CLI's ``worker --metrics-port``):

    m = StreamMetrics(stream, workers=[...], dead_letter_key=None, thresholds=None)
    m.add_worker(w); m.remove_worker(w)
    m.add_source(pool)                       # consumers of other processes (a WorkerPool)
    body, content_type = m.render()          # exposition text for an HTTP handler
    srv = m.serve(port, addr="127.0.0.1")    # background HTTP server; srv.port, srv.close()

Exported series (all prefixed ``redis_streaming_``):

    produced_total{stream}                         XADDs made through these EventStream objects
    acked_total{stream}                            XACKs made through them
    processed_total{stream,group,consumer}         handler returned, entry acked
    failed_total{stream,group,consumer}            handler raised
    reaped_total{stream,group,consumer}            entries taken from a PEL and acked
    dead_lettered_total{stream,group,consumer}     entries moved to the dead-letter stream
    worker_alive{stream,group,consumer}            1 while the worker (thread or task) runs

(A source's consumers, e.g. a WorkerPool's child processes, are reported in the same series,
one per consumer, from the counters the children last sent to the parent.)
    stream_length{stream}, dead_letters{stream}    XLEN of the stream and of its dead-letter stream
    group_lag{stream,group}                        entries not yet delivered to the group
    group_lag_exact{stream,group}                  1, or 0 when group_lag is a lower bound
    group_pending{stream,group}                    delivered, not acked
    group_oldest_pending_age_seconds{stream,group} age of the oldest pending entry (by its ID)
    group_consumers{stream,group}                  consumers known to the group
    group_healthy{stream,group}                    1 when the health view says "ok"
    up{stream}                                     1 when the last scrape reached Redis
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Final, Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import start_http_server
from prometheus_client.registry import Collector

from . import _codec as codec
from ._errors import StreamingError
from ._model import ConsumerStatus, StreamStats
from ._streamcore import StreamCore
from ._workercore import WorkerCore
from .health import DEFAULT_LAG_CAP, HealthMonitor, HealthThresholds
from .stream import EventStream

logger = logging.getLogger(__name__)

__all__ = ["CONTENT_TYPE", "MetricsServer", "StreamMetrics"]

PREFIX: Final = "redis_streaming"
#: The Content-Type to send with :meth:`StreamMetrics.render`'s body.
CONTENT_TYPE: Final = CONTENT_TYPE_LATEST


class StatusSource(Protocol):
    """Consumers counted in other processes (a WorkerPool): their counters and stream stats."""

    def statuses(self) -> Sequence[ConsumerStatus]: ...

    def stream_stats(self) -> StreamStats: ...


class MetricsServer:
    """A running metrics HTTP server (one daemon thread); :meth:`close` stops it."""

    def __init__(self, port: int, addr: str, registry: CollectorRegistry) -> None:
        self._httpd, self._thread = start_http_server(port, addr, registry)
        self.addr = addr
        self.port = int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """``http://addr:port/metrics``."""
        return f"http://{self.addr}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving and free the port (idempotent)."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)


class StreamMetrics(Collector):
    """A Prometheus collector for one stream, its dead letters and the workers added to it.

    Each instance owns its CollectorRegistry (``self.registry``), so several can live in one
    process (tests, a demo with many streams) without name clashes. Pass ``health=False`` to
    skip the per-group Redis reads (two pipelined round trips per scrape); ``lag_cap`` bounds how
    many entries a scrape counts for a group whose lag the server cannot vouch for.
    """

    def __init__(
        self,
        stream: EventStream,
        workers: Iterable[WorkerCore] = (),
        *,
        dead_letter_key: str | None = None,
        thresholds: HealthThresholds | None = None,
        health: bool = True,
        registry: CollectorRegistry | None = None,
        lag_cap: int = DEFAULT_LAG_CAP,
        sources: Iterable[StatusSource] = (),
    ) -> None:
        self.stream = stream
        self._workers: list[WorkerCore] = []
        self._sources: list[StatusSource] = []
        self._lock = threading.Lock()
        for w in workers:
            self.add_worker(w)
        for src in sources:
            self.add_source(src)
        self.monitor: HealthMonitor | None = (
            HealthMonitor(stream, thresholds, dead_letter_key=dead_letter_key, lag_cap=lag_cap)
            if health
            else None
        )
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def add_worker(self, worker: WorkerCore) -> None:
        """Include ``worker``'s counters (a ConsumerWorker or an AsyncConsumerWorker) from the
        next scrape on. Raises TypeError for anything else."""
        if not isinstance(worker, WorkerCore):
            raise TypeError(
                f"expected a ConsumerWorker or AsyncConsumerWorker, got {type(worker).__name__}"
            )
        with self._lock:
            if worker not in self._workers:
                self._workers.append(worker)

    def remove_worker(self, worker: WorkerCore) -> None:
        """Stop reporting ``worker`` (its counters vanish from the next scrape)."""
        with self._lock:
            if worker in self._workers:
                self._workers.remove(worker)

    def add_source(self, source: StatusSource) -> None:
        """Also report the consumers ``source`` counts (e.g. a WorkerPool's processes)."""
        with self._lock:
            if source not in self._sources:
                self._sources.append(source)

    @property
    def workers(self) -> Sequence[WorkerCore]:
        with self._lock:
            return tuple(self._workers)

    # -------------------------------------------------------------- collection

    def describe(self) -> Iterable[Metric]:
        # Describing nothing keeps registration free of a scrape (and of Redis I/O).
        return ()

    def collect(self) -> Iterator[Metric]:
        key = self.stream.key
        workers = self.workers
        # Workers may hold their own EventStream objects; count each object once.
        streams: dict[int, StreamCore] = {id(self.stream): self.stream}
        for w in workers:
            streams.setdefault(id(w.stream), w.stream)
        produced = acked = 0
        for es in streams.values():
            st = es.stats()
            produced += st.produced
            acked += st.acked
        with self._lock:
            sources = tuple(self._sources)
        remote: list[ConsumerStatus] = []
        for src in sources:
            remote.extend(src.statuses())
            st = src.stream_stats()
            produced += st.produced
            acked += st.acked
        c = CounterMetricFamily(f"{PREFIX}_produced", "Entries produced (XADD).", labels=["stream"])
        c.add_metric([key], produced)
        yield c
        c = CounterMetricFamily(
            f"{PREFIX}_acked", "Entries acknowledged (XACK).", labels=["stream"]
        )
        c.add_metric([key], acked)
        yield c

        labels = ["stream", "group", "consumer"]
        families = {
            "processed": CounterMetricFamily(
                f"{PREFIX}_processed", "Entries whose handler returned.", labels=labels
            ),
            "failed": CounterMetricFamily(
                f"{PREFIX}_failed", "Handler calls that raised.", labels=labels
            ),
            "reaped": CounterMetricFamily(
                f"{PREFIX}_reaped", "Entries recovered from a PEL and acked.", labels=labels
            ),
            "dead_lettered": CounterMetricFamily(
                f"{PREFIX}_dead_lettered", "Entries moved to the dead-letter stream.", labels=labels
            ),
        }
        alive = GaugeMetricFamily(
            f"{PREFIX}_worker_alive", "1 while the worker (thread or task) runs.", labels=labels
        )
        for w in workers:
            ws = w.status()
            lv = [w.stream.key, ws.group, ws.name]
            families["processed"].add_metric(lv, ws.processed)
            families["failed"].add_metric(lv, ws.failed)
            families["reaped"].add_metric(lv, ws.reaped)
            families["dead_lettered"].add_metric(lv, ws.dead_lettered)
            alive.add_metric(lv, 1 if ws.alive else 0)
        for ws in remote:
            lv = [key, ws.group, ws.name]
            families["processed"].add_metric(lv, ws.processed)
            families["failed"].add_metric(lv, ws.failed)
            families["reaped"].add_metric(lv, ws.reaped)
            families["dead_lettered"].add_metric(lv, ws.dead_lettered)
            alive.add_metric(lv, 1 if ws.alive else 0)
        yield from families.values()
        yield alive

        if self.monitor is None:
            return
        up = GaugeMetricFamily(
            f"{PREFIX}_up", "1 when the scrape reached Redis.", labels=["stream"]
        )
        try:
            report = self.monitor.check()
        except StreamingError as exc:
            logger.warning("metrics scrape could not read %s: %s", key, exc)
            up.add_metric([key], 0)
            yield up
            return
        up.add_metric([key], 1)
        yield up
        g = GaugeMetricFamily(f"{PREFIX}_stream_length", "XLEN of the stream.", labels=["stream"])
        g.add_metric([key], report.length)
        yield g
        g = GaugeMetricFamily(
            f"{PREFIX}_dead_letters", "XLEN of the dead-letter stream.", labels=["stream"]
        )
        g.add_metric([key], report.dead_letters)
        yield g
        glabels = ["stream", "group"]
        lag = GaugeMetricFamily(
            f"{PREFIX}_group_lag",
            "Entries not yet delivered to the group (a lower bound when group_lag_exact is 0).",
            labels=glabels,
        )
        lag_exact = GaugeMetricFamily(
            f"{PREFIX}_group_lag_exact",
            "1 when group_lag is exact, 0 when the count stopped at its cap (at least that many).",
            labels=glabels,
        )
        pending = GaugeMetricFamily(
            f"{PREFIX}_group_pending", "Entries delivered but not acked.", labels=glabels
        )
        age = GaugeMetricFamily(
            f"{PREFIX}_group_oldest_pending_age_seconds",
            "Age of the group's oldest pending entry, from its ID (0 when nothing is pending).",
            labels=glabels,
        )
        consumers = GaugeMetricFamily(
            f"{PREFIX}_group_consumers", "Consumers known to the group.", labels=glabels
        )
        healthy = GaugeMetricFamily(
            f"{PREFIX}_group_healthy",
            "1 when the group is neither lagging nor stuck.",
            labels=glabels,
        )
        for gh in report.groups:
            lv = [key, gh.name]
            if gh.lag is not None:
                lag.add_metric(lv, gh.lag)
                lag_exact.add_metric(lv, 1 if gh.lag_exact else 0)
            pending.add_metric(lv, gh.pending)
            age.add_metric(lv, (gh.oldest_pending_age_ms or 0) / 1000.0)
            consumers.add_metric(lv, len(gh.consumers))
            healthy.add_metric(lv, 1 if gh.status == "ok" else 0)
        yield from (lag, lag_exact, pending, age, consumers, healthy)

    # -------------------------------------------------------------- exposition

    def render(self) -> tuple[bytes, str]:
        """The current exposition text and its Content-Type, for an HTTP ``/metrics`` handler."""
        return generate_latest(self.registry), CONTENT_TYPE

    def serve(self, port: int = 0, addr: str = "127.0.0.1") -> MetricsServer:
        """Serve ``/metrics`` on ``addr:port`` from a daemon thread (port 0 picks a free one)."""
        codec.validate_int(port, "metrics port", maximum=65535)
        return MetricsServer(port, addr, self.registry)
