"""``redis-streaming worker --partitions N``: run a PartitionedConsumerPool until SIGTERM/SIGINT.

Flags are parsed in cli.py; this module only connects (cluster or single server), runs the pool
and reports. It must not print tracebacks: errors reach cli.main as library exceptions.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import time
from typing import Any

import redis.exceptions as rex
from redis.cluster import RedisCluster

from . import cli
from ._cli_input import UsageError
from ._errors import RedisUnavailable, translate
from .partition import PartitionedConsumerPool, PartitionedStream
from .server import display_url, validate_url

logger = logging.getLogger(__name__)


def connect_any(args: argparse.Namespace, socket_timeout: float) -> Any:
    """A RedisCluster client if ``--redis-url`` points at a cluster node, else a redis.Redis."""
    plain = cli.connect(args, socket_timeout=socket_timeout)
    try:
        enabled = bool(plain.info("cluster").get("cluster_enabled"))
    except rex.ResponseError:
        enabled = False  # servers without INFO cluster are not clustered
    if not enabled:
        return plain
    plain.close()
    url = validate_url(args.redis_url)
    try:
        return RedisCluster.from_url(
            url,
            decode_responses=True,
            socket_connect_timeout=args.connect_timeout,
            socket_timeout=socket_timeout,
        )
    except (rex.RedisError, rex.RedisClusterException, OSError) as exc:
        err = translate(exc)
        raise RedisUnavailable(f"cannot use the cluster at {display_url(url)}: {err}") from None


def run(args: argparse.Namespace) -> int:
    """The body of ``worker --partitions N``; returns the exit code."""
    if args.dlq_key:
        raise UsageError("--dlq-key cannot be used with --partitions (each has <partition>:dlq)")
    if args.consumer_names:
        raise UsageError("--consumer-names cannot be used with --partitions; use --name-prefix")
    if args.metrics_port is not None:
        raise UsageError("--metrics-port is not supported with --partitions yet")
    handler = cli.load_handler(args.handler) if args.handler else None
    client = connect_any(args, socket_timeout=max(10.0, args.block_ms / 1000 + 5))
    pstream = PartitionedStream(
        client,
        args.stream_key,
        partitions=args.partitions,
        maxlen_approx=None,
        claim_min_idle_ms=args.claim_idle_ms,
    )
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
    flag = cli._StopFlag()
    flag.install()
    pool.start()
    out = cli.Output(args.json)
    names = [m.name for m in pool.members]
    started = {
        "event": "started",
        "stream": args.stream_key,
        "partitions": pstream.partitions,
        "cluster": isinstance(client, RedisCluster),
        "group": args.group,
        "consumers": names,
        "pid": os.getpid(),
    }
    if out.json:
        out.line(started)
    else:
        out.console().print(
            f"worker pid {os.getpid()}: {len(names)} consumers of group [bold]{args.group}[/] "
            f"over {pstream.partitions} partitions of {args.stream_key}; Ctrl-C or SIGTERM stops"
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
    summary = {
        "event": "stopped",
        "signal": signal.Signals(flag.signal).name if flag.signal else None,
        **totals,
    }
    if out.json:
        out.line(summary)
    else:
        out.console().print(
            "worker stopped: {processed} processed, {reaped} reaped, {failed} failed, "
            "{dead_lettered} dead-lettered".format(**totals)
        )
    return cli.EXIT_OK
