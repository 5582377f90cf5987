"""``redis-streaming dlq list`` and ``dlq redrive``: look at dead letters, move them back."""

from __future__ import annotations

import argparse

from .._errors import StreamingError
from ..deadletter import DeadLetters
from ._common import (
    EXIT_OK,
    Output,
    int_at_least,
    open_stream,
    plural,
    range_bound,
    show,
    stream_id,
    table,
)
from ._input import UsageError, dead_letter_json


class UnknownDeadLetters(StreamingError):
    """``dlq redrive --id`` named IDs the dead-letter stream does not hold (exit code 1)."""


def add_list_arguments(d: argparse.ArgumentParser) -> None:
    d.add_argument("--dlq-key", help="dead-letter stream (default <stream>:dlq)")
    d.add_argument("--start", type=range_bound, default="-")
    d.add_argument("--end", type=range_bound, default="+")
    d.add_argument("--limit", type=int_at_least(1), default=100, help="at most N (default 100)")


def add_redrive_arguments(d: argparse.ArgumentParser) -> None:
    d.add_argument("--dlq-key", help="dead-letter stream (default <stream>:dlq)")
    d.add_argument("--id", action="append", type=stream_id, help="dead-letter ID (repeatable)")
    d.add_argument("--start", type=range_bound, help="first dead-letter ID of a range")
    d.add_argument("--end", type=range_bound, help="last dead-letter ID of a range")
    d.add_argument("--all", action="store_true", help="redrive every dead letter")
    d.add_argument("--limit", type=int_at_least(1), help="with a range or --all: at most N")


def cmd_dlq_list(args: argparse.Namespace) -> int:
    """``dlq list``: dead letters with their metadata and original fields."""
    stream = open_stream(args)
    letters = DeadLetters(stream, args.dlq_key)
    rows = [dead_letter_json(e) for e in letters.list(args.start, args.end, args.limit)]
    out = Output(args.json)
    if out.json:
        for row in rows:
            out.line(row)
        return EXIT_OK
    console = out.console()
    if not rows:
        console.print(f"no dead letters in {letters.key}")
        return EXIT_OK
    show(
        console,
        table(
            f"dead letters in {letters.key} ({letters.length()} total)",
            ["id", "original id", "group", "deliveries", "why"],
            [
                [
                    r["id"],
                    r["original_id"],
                    r["group"],
                    r["deliveries"],
                    f"{r['reason']}: {r['error'][:200]}" if r["error"] else r["reason"],
                ]
                for r in rows
            ],
        ),
    )
    return EXIT_OK


def cmd_dlq_redrive(args: argparse.Namespace) -> int:
    """``dlq redrive``: move chosen dead letters back onto the stream.

    With ``--id``, every ID must name a dead letter: if one does not, nothing is moved and the
    unknown IDs are reported (exit code 1), so a typo cannot pass for "nothing to do".
    """
    ranged = args.start is not None or args.end is not None
    chosen = sum([bool(args.id), ranged, args.all])
    if chosen != 1:
        raise UsageError(
            "choose which dead letters to redrive: --id ID..., --start/--end, or --all"
        )
    stream = open_stream(args)
    letters = DeadLetters(stream, args.dlq_key)
    if args.id:
        wanted = list(dict.fromkeys(args.id))
        unknown = [i for i in wanted if not letters.list(i, i, 1)]
        if unknown:
            raise UnknownDeadLetters(
                f"no dead letter {', '.join(unknown)} in {letters.key}; nothing redriven "
                f"(`dlq list` shows the IDs it holds)"
            )
        new_ids = letters.redrive(wanted)
    else:
        new_ids = letters.redrive(start=args.start or "-", end=args.end or "+", count=args.limit)
    out = Output(args.json)
    result = {"dlq": letters.key, "stream": stream.key, "redriven": len(new_ids), "ids": new_ids}
    if out.json:
        out.line(result)
    else:
        out.console().print(
            f"redrove {plural(len(new_ids), 'dead letter')} from {letters.key} to {stream.key}"
        )
    return EXIT_OK
