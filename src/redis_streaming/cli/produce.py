"""``redis-streaming produce``: N generated events or stdin's JSON lines, in pipelined batches,
to one stream or (``--partitions N``) spread over a PartitionedStream by a key."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator, Mapping
from typing import Any

from .. import _codec as codec
from ._common import (
    EXIT_OK,
    Output,
    add_partitions_flag,
    int_at_least,
    open_partitioned,
    open_stream,
    plural,
    positive_float,
)
from ._input import UsageError, parse_event_line, parse_fields

Event = tuple[str, dict[str, Any]]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-n", "--count", type=int_at_least(0), help="generate this many events")
    p.add_argument("--stdin", action="store_true", help="read one JSON object per line")
    p.add_argument("--type", default="event", help="event type (default %(default)r)")
    p.add_argument(
        "--field", action="append", default=[], metavar="K=V", help="extra payload field"
    )
    p.add_argument("--batch", type=int_at_least(1), default=100, help="XADDs per round trip")
    p.add_argument("--rate", type=positive_float, help="at most this many events per second")
    p.add_argument("--maxlen", type=int_at_least(1), help="cap the stream (MAXLEN ~ N)")
    p.add_argument("--exact", action="store_true", help="exact MAXLEN instead of ~")
    p.add_argument("--ids", action="store_true", help="print each new ID on its own line")
    add_partitions_flag(p, "spread the events over")
    p.add_argument(
        "--key-field",
        metavar="FIELD",
        help="with --partitions: route each event by this payload field "
        "(default: by its position, which spreads them evenly)",
    )


def _stdin_events(default_type: str) -> list[Event]:
    """Read and validate every stdin line before anything is written (bad input loses nothing)."""
    events = []
    for lineno, line in enumerate(sys.stdin, 1):
        if line.strip():
            events.append(parse_event_line(line, lineno, default_type))
    return events


def _generated_events(count: int, event_type: str, fields: Mapping[str, str]) -> Iterator[Event]:
    for i in range(count):
        yield event_type, {"n": i, **fields}


def _routing_key(event: Event, position: int, key_field: str | None) -> str | int:
    if key_field is None:
        return position
    value = event[1].get(key_field)
    if value is None:
        raise UsageError(
            f"the event at position {position} (from 0) has no field {key_field!r} for --key-field"
        )
    return str(value)


def cmd_produce(args: argparse.Namespace) -> int:
    """``produce``: N generated events or stdin's JSON lines, in pipelined batches."""
    if (args.count is None) == (not args.stdin):
        raise UsageError("give either --count N or --stdin")
    partitioned = args.partitions is not None
    if args.key_field is not None and not partitioned:
        raise UsageError("--key-field only goes with --partitions")
    fields = parse_fields(args.field)
    codec.encode_event(args.type, {"n": 0, **fields}, 0)
    source: Iterator[Event]
    if args.stdin:
        events = _stdin_events(args.type)
        if args.key_field is not None:  # check every line's key before writing any
            for n, event in enumerate(events):
                _routing_key(event, n, args.key_field)
        total, source = len(events), iter(events)
    else:
        if args.key_field is not None and args.key_field != "n" and args.key_field not in fields:
            raise UsageError(f"--key-field {args.key_field!r}: generated events have no such field")
        total = int(args.count)
        source = _generated_events(total, args.type, fields)
    # With --rate, small batches keep the pace smooth instead of bursting a whole batch.
    batch_size = min(args.batch, max(1, int(args.rate / 10))) if args.rate else args.batch
    if partitioned:
        pstream = open_partitioned(args, maxlen_approx=args.maxlen, approximate=not args.exact)
        key = pstream.base_key
        by_partition = [0] * pstream.partitions
    else:
        stream = open_stream(args)
        key = stream.key
    out = Output(args.json)
    started = time.monotonic()
    first: str | None = None
    last: str | None = None
    produced = 0
    progress: Any = None
    task: Any = None
    if not out.json and not args.ids and total:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        progress = Progress(
            TextColumn(f"producing to [bold]{key}[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:>10}"),
            TimeElapsedColumn(),
            console=out.console(),
        )
        progress.start()
        task = progress.add_task("produce", total=total, rate="")
    try:
        while produced < total:
            batch = [next(source) for _ in range(min(batch_size, total - produced))]
            lines: list[str]
            if partitioned:
                routed = [
                    (_routing_key(e, produced + n, args.key_field), e[0], e[1])
                    for n, e in enumerate(batch)
                ]
                ids = pstream.produce_batch(routed)
                where = [pstream.partition_index(r[0]) for r in routed]
                for p in where:
                    by_partition[p] += 1
                lines = [f"{pstream.keys[p]} {i}\n" for p, i in zip(where, ids, strict=True)]
            else:
                ids = stream.produce_batch(batch, maxlen=args.maxlen, approximate=not args.exact)
                lines = [i + "\n" for i in ids]
            if first is None and ids:
                first = ids[0]
            if ids:
                last = ids[-1]
            produced += len(ids)
            if args.ids:
                out.stream.write("".join(lines))
                out.stream.flush()
            elapsed = time.monotonic() - started
            if progress is not None:
                rate = f"{produced / elapsed:,.0f}/s" if elapsed > 0 else ""
                progress.update(task, completed=produced, rate=rate)
            if args.rate:
                # Pace to --rate events per second on average since the start.
                ahead = produced / args.rate - elapsed
                if ahead > 0:
                    time.sleep(ahead)
    finally:
        if progress is not None:
            progress.stop()
    seconds = time.monotonic() - started
    summary: dict[str, Any] = {"stream": key, "produced": produced}
    if partitioned:
        summary.update(partitions=len(by_partition), by_partition=by_partition)
    else:
        summary.update(first_id=first, last_id=last)
    summary.update(
        seconds=round(seconds, 3), rate=round(produced / seconds, 1) if seconds > 0 else None
    )
    if args.ids:
        return EXIT_OK  # stdout carries only the IDs
    if out.json:
        out.line(summary)
    elif partitioned:
        out.console().print(
            f"produced [bold]{plural(produced, 'event')}[/] over "
            f"{plural(len(by_partition), 'partition')} of {key} "
            f"({', '.join(map(str, by_partition))}) in {seconds:.2f} s"
        )
    else:
        out.console().print(
            f"produced [bold]{plural(produced, 'event')}[/] to {key} ({first} .. {last}) "
            f"in {seconds:.2f} s"
        )
    return EXIT_OK
