"""``redis-streaming trim``: MAXLEN, MINID, safe trim or retain-by-age, with a report of what
went; ``--partitions N`` applies the same trim to every partition (``--maxlen`` per partition)."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from ..stream import EventStream
from ._common import (
    EXIT_OK,
    Output,
    add_partitions_flag,
    duration,
    int_at_least,
    open_partitioned,
    open_stream,
    plural,
    stream_id,
)
from ._input import UsageError


def add_arguments(p: argparse.ArgumentParser) -> None:
    how = p.add_mutually_exclusive_group()
    how.add_argument("--maxlen", type=int_at_least(0), help="keep about N newest entries")
    how.add_argument("--minid", type=stream_id, help="delete entries older than this ID")
    how.add_argument("--max-age", type=duration, help="keep this much time, e.g. 24h")
    p.add_argument(
        "--safe",
        action="store_true",
        help="delete only what every group has acked (alone, or with --max-age)",
    )
    p.add_argument("--exact", action="store_true", help="exact trim instead of ~")
    p.add_argument(
        "--hard-cap", type=int_at_least(1), help="with --safe: never keep more than N entries"
    )
    add_partitions_flag(p, "trim each of")


def check_args(args: argparse.Namespace) -> None:
    """The combinations argparse cannot express (checked before connecting)."""
    if args.hard_cap is not None and (not args.safe or args.max_age is not None):
        raise UsageError("--hard-cap only goes with --safe alone")
    if args.maxlen is None and args.minid is None and args.max_age is None and not args.safe:
        raise UsageError("trim needs one of --maxlen N, --minid ID, --safe, --max-age AGE")
    if args.safe and (args.maxlen is not None or args.minid is not None):
        raise UsageError("--safe goes alone or with --max-age, not with --maxlen/--minid")


def _trim_one(stream: EventStream, args: argparse.Namespace) -> dict[str, Any]:
    before = stream.length()
    result: dict[str, Any]
    if args.maxlen is not None:
        deleted = stream.trim_maxlen(args.maxlen, approximate=not args.exact)
        result = {"strategy": "maxlen", "maxlen": args.maxlen, "deleted": deleted}
    elif args.minid is not None:
        deleted = stream.trim_minid(args.minid, approximate=not args.exact)
        result = {"strategy": "minid", "minid": args.minid, "deleted": deleted}
    elif args.max_age is not None:
        retained = stream.retain(args.max_age, approximate=not args.exact, safe=args.safe)
        result = {
            "strategy": "max-age-safe" if args.safe else "max-age",
            **dataclasses.asdict(retained),
        }
    else:
        report = stream.trim_safe(args.hard_cap, approximate=not args.exact)
        result = {"strategy": "safe", **dataclasses.asdict(report)}
    result.update(stream=stream.key, length_before=before, length=stream.length())
    return result


def _details(result: dict[str, Any]) -> str:
    text = ""
    if result.get("min_id"):
        text += f"; kept IDs >= {result['min_id']}"
    if result.get("held_by"):
        held = result.get("held_back")
        text += f"; held back by group [bold]{result['held_by']}[/]"
        if held is not None:
            text += f" ({held}{'' if result.get('held_back_exact', True) else '+'} entries)"
    if result.get("forced_deleted"):
        text += f"; hard cap deleted {result['forced_deleted']} unfinished entries"
    return text


def cmd_trim(args: argparse.Namespace) -> int:
    """``trim``: MAXLEN, MINID, safe trim or retain-by-age, with a report of what went."""
    check_args(args)
    out = Output(args.json)
    if args.partitions is not None:
        pstream = open_partitioned(args)
        parts = [{"partition": i, **_trim_one(s, args)} for i, s in enumerate(pstream.streams)]
        total = {
            "strategy": parts[0]["strategy"],
            "stream": pstream.base_key,
            "partitions": len(parts),
            "deleted": sum(p["deleted"] for p in parts),
            "length_before": sum(p["length_before"] for p in parts),
            "length": sum(p["length"] for p in parts),
            "by_partition": parts,
        }
        if out.json:
            out.line(total)
            return EXIT_OK
        console = out.console()
        console.print(
            f"trimmed {plural(len(parts), 'partition')} of {pstream.base_key} "
            f"({total['strategy']}): deleted {total['deleted']}, "
            f"length {total['length_before']} -> {total['length']}",
            soft_wrap=True,
        )
        for p in parts:
            console.print(
                f"  {p['stream']}: deleted {p['deleted']}, length {p['length_before']} -> "
                f"{p['length']}{_details(p)}",
                soft_wrap=True,
            )
        return EXIT_OK
    result = _trim_one(open_stream(args), args)
    if out.json:
        out.line(result)
        return EXIT_OK
    out.console().print(
        f"trimmed {result['stream']} ({result['strategy']}): deleted {result['deleted']}, "
        f"length {result['length_before']} -> {result['length']}{_details(result)}",
        soft_wrap=True,
    )
    return EXIT_OK
