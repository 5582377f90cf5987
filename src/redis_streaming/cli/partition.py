"""``redis-streaming worker --partitions N``: run a PartitionedConsumerPool until SIGTERM/SIGINT.

Flags are parsed in cli/worker.py; this module only connects (cluster or single server), runs
the pool and reports. It must not print tracebacks: errors reach cli.main as library exceptions.
"""

from __future__ import annotations

import argparse
import os
import socket
import time

from redis.cluster import RedisCluster

from .. import _codec as codec
from ..partition import PartitionedConsumerPool
from ._common import (
    EXIT_OK,
    Output,
    StopFlag,
    load_handler,
    no_dlq_key_with_partitions,
    open_partitioned,
    plural,
)
from ._input import UsageError
from .worker import skipped_note, stopped_line


def run(args: argparse.Namespace) -> int:
    """The body of ``worker --partitions N``; returns the exit code."""
    codec.validate_name(args.group, "group")
    no_dlq_key_with_partitions(args)
    if args.consumer_names:
        raise UsageError("--consumer-names cannot be used with --partitions; use --name-prefix")
    if args.metrics_port is not None:
        raise UsageError("--metrics-port is not supported with --partitions yet")
    handler = load_handler(args.handler) if args.handler else None
    pstream = open_partitioned(
        args,
        claim_min_idle_ms=args.claim_idle_ms,
        socket_timeout=max(10.0, args.block_ms / 1000 + 5),
    )
    client = pstream.client
    pool = PartitionedConsumerPool(
        pstream,
        args.group,
        consumers=args.consumers or 1,
        handler=handler,
        name_prefix=args.name_prefix or socket.gethostname(),
        block_ms=args.block_ms,
        group_start=args.group_start,
        count=args.count,
        batch_budget_ms=args.batch_budget_ms or None,
        reap_interval=args.reap_interval if args.reap_interval > 0 else None,
        claim_min_idle_ms=args.claim_idle_ms,
        max_deliveries=args.max_deliveries if args.max_deliveries > 0 else None,
        on_missing_group=args.on_missing_group,
    )
    # Create the groups first (as the single-stream worker does), counting what "$" skips.
    created = skipped = 0
    for s in pstream.streams:
        length = s.length()
        if s.ensure_group(args.group, args.group_start):
            created += 1
            skipped += length if args.group_start == "$" else 0
    flag = StopFlag()
    flag.install()
    pool.start()
    out = Output(args.json)
    names = [m.name for m in pool.members]
    started = {
        "event": "started",
        "stream": args.stream_key,
        "partitions": pstream.partitions,
        "cluster": isinstance(client, RedisCluster),
        "group": args.group,
        "consumers": names,
        "pid": os.getpid(),
        "group_created": created > 0,
        "group_start": args.group_start,
        "skipped_entries": skipped,
    }
    if out.json:
        out.line(started)
    else:
        out.console().print(
            f"worker pid {os.getpid()}: {plural(len(names), 'consumer')} of group "
            f"[bold]{args.group}[/] over {plural(pstream.partitions, 'partition')} of "
            f"{args.stream_key}"
            + skipped_note(created > 0, args.group_start, skipped, args.stream_key)
            + "; Ctrl-C or SIGTERM stops",
            soft_wrap=True,
        )
    shown: dict[str, list[int]] = {}
    try:
        while not flag:
            held = pool.assignment()
            if held != shown:
                shown = held
                if out.json:
                    out.line({"event": "assignment", "partitions": held})
                else:
                    out.console().print(f"partitions held: {held}")
            time.sleep(0.1)  # a signal handler may not take locks, so poll its flag
    finally:
        pool.stop(args.stop_timeout)
    totals = pool.totals()
    summary = {"event": "stopped", "signal": flag.name, **totals}
    if out.json:
        out.line(summary)
    else:
        out.console().print(stopped_line(totals))
    return EXIT_OK
