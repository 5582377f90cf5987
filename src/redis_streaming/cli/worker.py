"""``redis-streaming worker``: N ConsumerWorker threads of one group until SIGTERM/SIGINT.

Flags, the start line (metrics URL, entries a new group at ``$`` skips), the live table
(per consumer counters and rate, the group's pending and lag) and the stop summary.
``worker --partitions N`` runs ``cli.partition`` instead (cli/_parser.py chooses).
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .. import _codec as codec
from .._errors import StreamingError
from .._lag import format_lag
from .._model import ConsumerStatus
from ..health import GroupHealth, HealthThresholds, check_health
from ..stream import DEFAULT_CLAIM_MIN_IDLE_MS, EventStream
from ..worker import (
    DEFAULT_BATCH_BUDGET_MS,
    DEFAULT_COUNT,
    DEFAULT_MAX_DELIVERIES,
    DEFAULT_REAP_INTERVAL_S,
    ConsumerWorker,
)
from ._common import (
    EXIT_FAILURE,
    EXIT_OK,
    Output,
    StopFlag,
    add_partitions_flag,
    fail_line,
    group_start,
    int_at_least,
    load_handler,
    milliseconds,
    open_stream,
    plural,
    seconds,
    table,
)
from ._input import UsageError, consumer_names

logger = logging.getLogger("redis_streaming.cli")

#: How often the live table asks the server for the group's lag and pending (seconds).
GROUP_POLL_S = 1.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-g", "--group", required=True, help="consumer group")
    p.add_argument("-c", "--consumers", type=int_at_least(1), help="consumer threads (default 1)")
    p.add_argument(
        "--handler",
        metavar="MODULE:FUNCTION",
        help="called with one Entry per message; raise to leave it pending (default: no-op)",
    )
    p.add_argument(
        "--processes",
        type=int_at_least(1),
        metavar="N",
        help="spread the consumers over N supervised worker processes (default: this one)",
    )
    p.add_argument("--name-prefix", help="consumer names are PREFIX-0..N-1 (default: hostname)")
    p.add_argument("--consumer-names", metavar="A,B,...", help="explicit consumer names")
    p.add_argument(
        "--count",
        type=int_at_least(1),
        default=DEFAULT_COUNT,
        help="most entries per XREADGROUP (default %(default)s)",
    )
    p.add_argument(
        "--batch-budget-ms",
        type=milliseconds,
        default=DEFAULT_BATCH_BUDGET_MS,
        metavar="MS",
        help="size reads so one batch's handlers take about this long; "
        "0 always reads --count (default %(default)s)",
    )
    p.add_argument("--block-ms", type=int_at_least(1), default=500, help="XREADGROUP BLOCK")
    p.add_argument(
        "--reap-interval",
        type=seconds,
        default=DEFAULT_REAP_INTERVAL_S,
        metavar="S",
        help="seconds between XAUTOCLAIM sweeps; 0 turns them off (default %(default)s)",
    )
    p.add_argument(
        "--claim-idle-ms",
        type=int_at_least(0),
        default=DEFAULT_CLAIM_MIN_IDLE_MS,
        help="idle time before a peer's entry may be claimed (default %(default)s)",
    )
    p.add_argument(
        "--max-deliveries",
        type=int_at_least(0),
        default=DEFAULT_MAX_DELIVERIES,
        help="dead-letter after this many deliveries; 0 turns it off (default %(default)s)",
    )
    p.add_argument("--dlq-key", help="dead-letter stream (default <stream>:dlq)")
    p.add_argument(
        "--group-start",
        type=group_start,
        default="$",
        help="where a new group starts: $ (only new entries, default) or an ID (0: everything)",
    )
    p.add_argument(
        "--on-missing-group",
        choices=("0", "$", "stop"),
        default="0",
        help="when the group vanishes: re-create from 0 or $, or stop (default 0)",
    )
    add_partitions_flag(p, "read")
    p.add_argument(
        "--metrics-port", type=int_at_least(0), help="serve Prometheus /metrics (0: any free port)"
    )
    p.add_argument("--metrics-addr", default="127.0.0.1", help="metrics bind address")
    p.add_argument(
        "--stop-timeout",
        type=seconds,
        default=10.0,
        metavar="S",
        help="seconds to wait for consumers to finish on SIGTERM (default %(default)s)",
    )


def skipped_note(created: bool, start: str, skipped: int, key: str) -> str:
    """The start line's warning when a new group at ``$`` passes over entries already there."""
    if not created or start != "$" or skipped <= 0:
        return ""
    return (
        f"; new group created at $: it skips the {plural(skipped, 'entry', 'entries')} "
        f"already in {key} (--group-start 0 reads them)"
    )


def _metrics_server(
    stream: EventStream, workers: Sequence[ConsumerWorker], args: argparse.Namespace
) -> tuple[str, Callable[[], None]]:
    """Serve /metrics (redis_streaming.metrics) for the pool; returns its URL and its stop."""
    try:
        from ..metrics import StreamMetrics
    except ImportError as exc:
        raise UsageError(f"--metrics-port needs prometheus-client (the cli extra): {exc}") from None
    collector = StreamMetrics(stream, workers, dead_letter_key=args.dlq_key)
    try:
        server = collector.serve(args.metrics_port, addr=args.metrics_addr)
    except OSError as exc:
        raise UsageError(
            f"cannot serve metrics on {args.metrics_addr}:{args.metrics_port}: {exc}"
        ) from None
    logger.info("serving metrics at %s", server.url)
    return str(server.url), server.close


class PoolView:
    """The live table: each consumer's counters and rate, then the group's pending and lag."""

    def __init__(
        self,
        stream: EventStream,
        group: str,
        statuses: Callable[[], Sequence[ConsumerStatus]],
        args: Any,
        where: Callable[[], Mapping[str, str]] | None = None,
    ) -> None:
        self.stream = stream
        self.group = group
        self.statuses = statuses
        self.where = where  # consumer -> the process running it (worker --processes)
        self.dlq_key = args.dlq_key
        self.thresholds = HealthThresholds.for_claim_idle(args.claim_idle_ms)
        self.samples: deque[tuple[float, dict[str, int]]] = deque(maxlen=6)
        self.health: GroupHealth | None = None
        self.health_error: str | None = None
        self.next_poll = 0.0

    def _poll(self, now: float) -> None:
        if now < self.next_poll:
            return
        self.next_poll = now + GROUP_POLL_S
        try:
            report = check_health(self.stream, self.thresholds, dead_letter_key=self.dlq_key)
        except StreamingError as exc:  # the workers report and retry; the table says so
            self.health, self.health_error = None, str(exc)
            return
        self.health, self.health_error = report.group(self.group), None

    def render(self, poll: bool = True) -> Any:
        now = time.monotonic()
        if poll:
            self._poll(now)
        statuses = list(self.statuses())
        done = {st.name: st.processed + st.reaped for st in statuses}
        self.samples.append((now, done))
        then, before = self.samples[0]
        span = now - then

        def rate(name: str | None) -> str:
            if span <= 0:
                return "-"
            if name is None:
                delta = sum(done.values()) - sum(before.values())
            else:
                delta = done[name] - before.get(name, done[name])
            return f"{delta / span:,.0f}/s"

        h = self.health
        pending = {c.name: c.pending for c in h.consumers} if h else {}
        where = self.where() if self.where is not None else {}
        rows: list[list[object]] = [
            [
                st.name,
                *([where.get(st.name, "-")] if self.where is not None else []),
                "running" if st.alive else "stopped",
                st.processed,
                rate(st.name),
                st.reaped,
                st.failed,
                st.dead_lettered,
                pending.get(st.name, "-" if h is None else 0),
                "",
            ]
            for st in statuses
        ]
        rows.append(
            [
                f"group {self.group}",
                *([""] if self.where is not None else []),
                h.status if h else "?",
                sum(st.processed for st in statuses),
                rate(None),
                sum(st.reaped for st in statuses),
                sum(st.failed for st in statuses),
                sum(st.dead_lettered for st in statuses),
                h.pending if h else "?",
                "-" if h is None or h.lag is None else format_lag(h.lag, h.lag_exact),
            ]
        )
        caption = None if self.health_error is None else f"group figures: {self.health_error}"
        columns = [
            "consumer", *(["process"] if self.where is not None else []), "state", "processed",
            "rate", "reaped", "failed", "dead-lettered", "pending", "lag",
        ]  # fmt: skip
        return table("consumers", columns, rows, caption=caption)


def cmd_worker(args: argparse.Namespace) -> int:
    """``worker`` without ``--partitions``: N ConsumerWorker threads of one group until
    SIGTERM/SIGINT, then drain."""
    codec.validate_name(args.group, "group")
    handler = load_handler(args.handler) if args.handler else None
    prefix = args.name_prefix or socket.gethostname()
    names = consumer_names(prefix, args.consumers or 1, args.consumer_names)
    if args.consumers is not None and len(names) != args.consumers:
        raise UsageError(f"--consumers {args.consumers} but {len(names)} --consumer-names")
    reap_interval = args.reap_interval if args.reap_interval > 0 else None
    max_deliveries = args.max_deliveries if args.max_deliveries > 0 else None
    stream = open_stream(
        args,
        claim_min_idle_ms=args.claim_idle_ms,
        socket_timeout=max(10.0, args.block_ms / 1000 + 5),
    )
    workers = [
        ConsumerWorker(
            stream,
            args.group,
            name,
            handler,
            count=args.count,
            batch_budget_ms=args.batch_budget_ms or None,
            block_ms=args.block_ms,
            reap_interval=reap_interval,
            claim_min_idle_ms=args.claim_idle_ms,
            max_deliveries=max_deliveries,
            dead_letter_key=args.dlq_key,
            group_start=args.group_start,
            on_missing_group=args.on_missing_group,
        )
        for name in names
    ]
    # Create the group before any thread races to do it, so a bad start ID fails here; the
    # length read just before says how many entries a new group at "$" passes over.
    length = stream.length()
    created = stream.ensure_group(args.group, args.group_start)
    skipped = length if created and args.group_start == "$" else 0
    metrics_url: str | None = None
    stop_metrics: Callable[[], None] | None = None
    if args.metrics_port is not None:
        metrics_url, stop_metrics = _metrics_server(stream, workers, args)
    flag = StopFlag()
    flag.install()
    for w in workers:
        w.start()
    out = Output(args.json)
    if out.json:
        out.line(
            {
                "event": "started",
                "stream": stream.key,
                "group": args.group,
                "consumers": names,
                "pid": os.getpid(),
                "metrics_url": metrics_url,
                "group_created": created,
                "group_start": args.group_start,
                "skipped_entries": skipped,
            }
        )
    else:
        out.console().print(
            f"worker pid {os.getpid()}: {plural(len(names), 'consumer')} of group "
            f"[bold]{args.group}[/] on {stream.key} ({', '.join(names)})"
            + (f"; metrics at {metrics_url}" if metrics_url else "")
            + skipped_note(created, args.group_start, skipped, stream.key)
            + "; Ctrl-C or SIGTERM stops",
            soft_wrap=True,
        )
    logger.info("worker pool started on %s/%s: %s", stream.key, args.group, ", ".join(names))
    live: Any = None
    view = PoolView(stream, args.group, lambda: [w.status() for w in workers], args)
    if not out.json:
        from rich.live import Live

        live = Live(view.render(), console=out.console(), auto_refresh=False)
        live.start()
    stuck: list[str] = []
    try:
        next_draw = 0.0
        while not flag:
            if not any(w.is_alive for w in workers):
                break  # every worker stopped on its own (on_missing_group="stop")
            if live is not None and time.monotonic() >= next_draw:
                live.update(view.render(), refresh=True)
                next_draw = time.monotonic() + 0.5
            time.sleep(0.1)  # a signal handler may not take locks, so poll its flag
    finally:
        for w in workers:
            w.stop(0)  # ask all at once; each finishes its batch and flushes its acks
        deadline = time.monotonic() + args.stop_timeout
        stuck = [w.name for w in workers if not w.stop(max(0.0, deadline - time.monotonic()))]
        if stop_metrics is not None:
            stop_metrics()
        if live is not None:
            live.update(view.render(poll=False), refresh=True)
            live.stop()
    totals = {"processed": 0, "reaped": 0, "failed": 0, "dead_lettered": 0}
    for w in workers:
        st = w.status()
        totals["processed"] += st.processed
        totals["reaped"] += st.reaped
        totals["failed"] += st.failed
        totals["dead_lettered"] += st.dead_lettered
    if out.json:
        out.line({"event": "stopped", "signal": flag.name, **totals, "stuck": stuck})
    else:
        out.console().print(stopped_line(totals))
    if stuck:
        fail_line(f"consumers did not stop within {args.stop_timeout} s: {', '.join(stuck)}")
        return EXIT_FAILURE
    return EXIT_OK


def stopped_line(totals: dict[str, int]) -> str:
    return (
        "worker stopped: {processed} processed, {reaped} reaped, {failed} failed, "
        "{dead_lettered} dead-lettered".format(**totals)
    )
