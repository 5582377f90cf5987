"""``redis-streaming worker --processes N``: the consumers spread over N supervised processes.

Flags are parsed in cli/worker.py; this module checks them, runs a WorkerPool (pool.py: the
children, restarts, stop, counters), serves the pool's metrics and draws its table from here.
It must not print tracebacks: errors reach cli.main as library exceptions or UsageError.
"""

from __future__ import annotations

import argparse
import logging
import os
import queue
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

from .. import _codec as codec
from ..pool import PoolEvent, WorkerPool
from ._common import (
    EXIT_FAILURE,
    EXIT_OK,
    Output,
    StopFlag,
    fail_line,
    load_handler,
    no_dlq_key_with_partitions,
    open_partitioned,
    open_stream,
    plural,
)
from ._input import UsageError, consumer_names
from .worker import PoolView, skipped_note, stopped_line

logger = logging.getLogger("redis_streaming.cli")


def _counts(args: argparse.Namespace) -> list[str] | None:
    """Check --processes against the consumers; the names, or None with --partitions."""
    if args.partitions is not None:
        if args.consumer_names:
            raise UsageError("--consumer-names cannot be used with --partitions; use --name-prefix")
        if args.metrics_port is not None:
            raise UsageError("--metrics-port is not supported with --partitions yet")
        total = args.consumers or args.processes
        if args.processes > total:
            raise UsageError(
                f"--processes {args.processes} is more than --consumers {total} "
                "(each process runs at least one consumer)"
            )
        return None
    prefix = args.name_prefix or socket.gethostname()
    names = consumer_names(prefix, args.consumers or args.processes, args.consumer_names)
    if args.consumers is not None and len(names) != args.consumers:
        raise UsageError(f"--consumers {args.consumers} but {len(names)} --consumer-names")
    if args.processes > len(names):
        given = "--consumer-names" if args.consumer_names else "--consumers"
        raise UsageError(
            f"--processes {args.processes} is more than the {len(names)} consumers of "
            f"{given} (each process runs at least one consumer)"
        )
    return names


def run(args: argparse.Namespace) -> int:
    """The body of ``worker --processes N``; returns the exit code."""
    codec.validate_name(args.group, "group")
    no_dlq_key_with_partitions(args)
    names = _counts(args)
    if args.handler:
        load_handler(args.handler)  # a bad --handler is one line here, not N dying children
    socket_timeout = max(10.0, args.block_ms / 1000 + 5)
    options: dict[str, Any] = {
        "count": args.count,
        "batch_budget_ms": args.batch_budget_ms or None,
        "block_ms": args.block_ms,
        "reap_interval": args.reap_interval if args.reap_interval > 0 else None,
        "claim_min_idle_ms": args.claim_idle_ms,
        "max_deliveries": args.max_deliveries if args.max_deliveries > 0 else None,
        "group_start": args.group_start,
        "on_missing_group": args.on_missing_group,
    }
    stream = pstream = None
    cluster = False
    if args.partitions is None:
        stream = open_stream(
            args, claim_min_idle_ms=args.claim_idle_ms, socket_timeout=socket_timeout
        )
        options["dead_letter_key"] = args.dlq_key
        # Create the group before any child races to do it, so a bad start ID fails here.
        length = stream.length()
        created = int(stream.ensure_group(args.group, args.group_start))
        skipped = length if created and args.group_start == "$" else 0
    else:
        from redis.cluster import RedisCluster  # only when asked for, as cli.partition

        pstream = open_partitioned(
            args, claim_min_idle_ms=args.claim_idle_ms, socket_timeout=socket_timeout
        )
        cluster = isinstance(pstream.client, RedisCluster)
        created = skipped = 0
        for s in pstream.streams:
            length = s.length()
            if s.ensure_group(args.group, args.group_start):
                created += 1
                skipped += length if args.group_start == "$" else 0
    events: queue.SimpleQueue[PoolEvent] = queue.SimpleQueue()
    pool = WorkerPool(
        args.redis_url,
        args.stream_key,
        args.group,
        args.handler,
        processes=args.processes,
        consumers=args.consumers,
        name_prefix=args.name_prefix or socket.gethostname(),
        consumer_names=names,
        partitions=args.partitions,
        cluster=cluster,
        client_options={
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": args.connect_timeout,
        },
        stream_options={"claim_min_idle_ms": args.claim_idle_ms, "maxlen_approx": None},
        stop_timeout=args.stop_timeout,
        on_event=events.put,
        **options,
    )
    metrics_url: str | None = None
    stop_metrics: Callable[[], None] | None = None
    if args.metrics_port is not None and stream is not None:
        metrics_url, stop_metrics = _metrics(stream, pool, args)
    flag = StopFlag()
    flag.install()
    pool.start()
    out = Output(args.json)
    children = pool.children()
    if out.json:
        out.line(
            {
                "event": "started",
                "stream": args.stream_key,
                "partitions": args.partitions,
                "group": args.group,
                "consumers": list(pool.consumer_names),
                "processes": args.processes,
                "children": [
                    {"child": c.index, "pid": c.pid, "consumers": list(c.consumers)}
                    for c in children
                ],
                "pid": os.getpid(),
                "metrics_url": metrics_url,
                "group_created": created > 0,
                "group_start": args.group_start,
                "skipped_entries": skipped,
            }
        )
    else:
        key = (
            stream.key
            if stream is not None
            else f"{plural(args.partitions, 'partition')} of {args.stream_key}"
        )
        out.console().print(
            f"worker pid {os.getpid()}: {plural(len(pool.consumer_names), 'consumer')} of group "
            f"[bold]{args.group}[/] on {key} in {plural(args.processes, 'process', 'processes')} "
            f"({'; '.join(f'pid {c.pid}: ' + ', '.join(c.consumers) for c in children)})"
            + (f"; metrics at {metrics_url}" if metrics_url else "")
            + skipped_note(created > 0, args.group_start, skipped, args.stream_key)
            + "; Ctrl-C or SIGTERM stops",
            soft_wrap=True,
        )
    live: Any = None
    view = None
    if stream is not None:
        view = PoolView(stream, args.group, pool.statuses, args, where=_where(pool))
    if not out.json and view is not None:
        from rich.live import Live

        live = Live(view.render(), console=out.console(), auto_refresh=False)
        live.start()
    killed: list[str] = []
    held: dict[str, list[int]] = {}
    try:
        next_draw = 0.0
        while not flag and pool.running:
            while not events.empty():
                _report(out, events.get())
            if pstream is not None:
                now = {k: v for c in pool.children() for k, v in c.partitions.items()}
                if now != held:
                    held = now
                    if out.json:
                        out.line({"event": "assignment", "partitions": held})
                    else:
                        out.console().print(f"partitions held: {held}")
            if live is not None and view is not None and time.monotonic() >= next_draw:
                live.update(view.render(), refresh=True)
                next_draw = time.monotonic() + 0.5
            time.sleep(0.1)  # a signal handler may not take locks, so poll its flag
    finally:
        killed = pool.stop(args.stop_timeout)
        while not events.empty():
            _report(out, events.get())
        if stop_metrics is not None:
            stop_metrics()
        if live is not None and view is not None:
            live.update(view.render(poll=False), refresh=True)
            live.stop()
    totals = {"processed": 0, "reaped": 0, "failed": 0, "dead_lettered": 0}
    for st in pool.statuses():
        totals["processed"] += st.processed
        totals["reaped"] += st.reaped
        totals["failed"] += st.failed
        totals["dead_lettered"] += st.dead_lettered
    restarts = sum(c.restarts for c in pool.children())
    if out.json:
        out.line(
            {
                "event": "stopped",
                "signal": flag.name,
                **totals,
                "restarts": restarts,
                "killed": killed,
            }
        )
    else:
        out.console().print(stopped_line(totals) + f", {plural(restarts, 'restart')}")
    if killed:
        fail_line(
            f"worker processes still running after {args.stop_timeout} s were killed: "
            + "; ".join(killed)
        )
        return EXIT_FAILURE
    return EXIT_OK


def _where(pool: WorkerPool) -> Callable[[], Mapping[str, str]]:
    """consumer name -> ``#i pid P`` (or ``#i restarting``) for the table's process column."""

    def where() -> Mapping[str, str]:
        out: dict[str, str] = {}
        for c in pool.children():
            label = f"#{c.index} pid {c.pid}" if c.pid is not None else f"#{c.index} down"
            for name in c.consumers:
                out[name] = label
        return out

    return where


def _report(out: Output, event: PoolEvent) -> None:
    """A child's start, readiness, death or end: a JSON line (a log line covers the terminal)."""
    if not out.json:
        return
    line: dict[str, Any] = {
        "event": f"child_{event.kind}",
        "child": event.child,
        "pid": event.pid,
        "consumers": list(event.consumers),
    }
    if event.detail:
        line["cause"] = event.detail
    if event.restart_in is not None:
        line["restart_in"] = round(event.restart_in, 3)
    out.line(line)


def _metrics(stream: Any, pool: WorkerPool, args: argparse.Namespace) -> tuple[str, Any]:
    """Serve /metrics for the whole pool from this process (the children's counters)."""
    try:
        from ..metrics import StreamMetrics
    except ImportError as exc:
        raise UsageError(f"--metrics-port needs prometheus-client (the cli extra): {exc}") from None
    collector = StreamMetrics(stream, (), dead_letter_key=args.dlq_key, sources=[pool])
    try:
        server = collector.serve(args.metrics_port, addr=args.metrics_addr)
    except OSError as exc:
        raise UsageError(
            f"cannot serve metrics on {args.metrics_addr}:{args.metrics_port}: {exc}"
        ) from None
    logger.info("serving metrics at %s", server.url)
    return str(server.url), server.close
