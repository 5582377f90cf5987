"""``redis-streaming inspect``: the stream, its groups (health, lag, pending), consumers and
pending entries, as tables or one JSON object; with ``--partitions N``, every partition.

Health verdicts use ``HealthThresholds.for_claim_idle(--claim-idle-ms)``, the rule the demo
uses too, and the output shows the thresholds it applied.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from typing import Any

from .. import _codec as codec
from .._lag import format_lag
from ..deadletter import DeadLetters
from ..health import HealthThresholds, check_health
from ..stream import DEFAULT_CLAIM_MIN_IDLE_MS, EventStream, now_ms
from ._common import (
    EXIT_OK,
    Output,
    add_partitions_flag,
    int_at_least,
    ms,
    no_dlq_key_with_partitions,
    open_partitioned,
    open_stream,
    show,
    table,
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pending", type=int_at_least(1), default=10, help="pending rows per group")
    p.add_argument("--dlq-key", help="dead-letter stream (default <stream>:dlq)")
    p.add_argument(
        "--claim-idle-ms",
        type=int_at_least(0),
        default=DEFAULT_CLAIM_MIN_IDLE_MS,
        metavar="MS",
        help="the workers' claim threshold: an entry pending twice as long (at least 1 s) "
        "counts as stuck (default %(default)s, the worker's default)",
    )
    add_partitions_flag(p, "inspect every partition,")


def thresholds_json(claim_idle_ms: int, limits: HealthThresholds) -> dict[str, Any]:
    return {
        "claim_idle_ms": claim_idle_ms,
        "max_pending_idle_ms": limits.max_pending_idle_ms,
        "max_pending": limits.max_pending,
        "max_lag": limits.max_lag,
    }


def thresholds_text(claim_idle_ms: int, limits: HealthThresholds) -> str:
    return (
        f"health thresholds: stuck = oldest pending idle > {ms(limits.max_pending_idle_ms)} "
        f"(2 x --claim-idle-ms {claim_idle_ms}, at least 1 s) or pending > {limits.max_pending}; "
        f"lagging = lag > {limits.max_lag}"
    )


def inspect_data(
    stream: EventStream,
    pending_rows: int,
    dlq_key: str | None,
    thresholds: HealthThresholds | None = None,
) -> dict[str, Any]:
    """Everything ``inspect`` shows about one stream, as one JSON-ready dict."""
    info = stream.info_stream()
    report = check_health(stream, thresholds, dead_letter_key=dlq_key)
    health = {g.name: g for g in report.groups}
    groups = []
    now = now_ms()
    for g in stream.info_groups():
        gh = health.get(g.name)
        consumers = stream.info_consumers(g.name)
        pending = stream.pending(g.name, count=pending_rows) if g.pending else []
        oldest = pending[0].id if pending else None
        groups.append(
            {
                **dataclasses.asdict(g),
                # The lag health worked out (server figure only when sound, else counted);
                # XINFO GROUPS' own figure stays visible as server_lag.
                "lag": gh.lag if gh else None,
                "lag_exact": gh.lag_exact if gh else False,
                "server_lag": g.lag,
                "oldest_pending_id": oldest,
                "oldest_pending_age_ms": (
                    max(0, now - codec.parse_id(oldest)[0]) if oldest else None
                ),
                "status": gh.status if gh else None,
                "reasons": list(gh.reasons) if gh else [],
                "consumers": [dataclasses.asdict(c) for c in consumers],
                "pending_entries": [dataclasses.asdict(p) for p in pending],
            }
        )
    letters = DeadLetters(stream, dlq_key)
    return {
        "stream": dataclasses.asdict(info),
        "groups": groups,
        "dead_letters": {"key": letters.key, "length": letters.length()},
    }


def cmd_inspect(args: argparse.Namespace) -> int:
    """``inspect``: the stream, its groups, consumers and pending entries (tables or JSON)."""
    no_dlq_key_with_partitions(args)
    limits = HealthThresholds.for_claim_idle(args.claim_idle_ms)
    limits_json = thresholds_json(args.claim_idle_ms, limits)
    out = Output(args.json)
    if args.partitions is not None:
        pstream = open_partitioned(args)
        parts = [
            {"partition": i, **inspect_data(s, args.pending, None, limits)}
            for i, s in enumerate(pstream.streams)
        ]
        if out.json:
            out.line({"base_key": pstream.base_key, "partitions": parts, "thresholds": limits_json})
            return EXIT_OK
    else:
        stream = open_stream(args)
        data = inspect_data(stream, args.pending, args.dlq_key, limits)
        if out.json:
            out.line({**data, "thresholds": limits_json})
            return EXIT_OK
        parts = [data]
    console = out.console()
    if not any(p["stream"]["exists"] for p in parts):
        console.print(f"stream [bold]{args.stream_key}[/] does not exist")
        return EXIT_OK
    for t in _tables(parts, args.pending, args.claim_idle_ms, limits):
        show(console, t)
    console.print(thresholds_text(args.claim_idle_ms, limits), soft_wrap=True)
    return EXIT_OK


def _tables(
    parts: Sequence[dict[str, Any]], pending_rows: int, claim_idle_ms: int, limits: Any
) -> list[Any]:
    """The tables for one stream or for every partition (then each row names its partition)."""
    split = "partition" in parts[0]

    def cols(*names: str) -> list[str]:
        return ["partition", *names] if split else list(names)

    def row(p: dict[str, Any], *cells: object) -> list[object]:
        return [p["partition"], *cells] if split else list(cells)

    out = []
    title = f"stream {parts[0]['stream']['key']}" if not split else "partitions"
    out.append(
        table(
            title,
            cols("key", "length", "groups", "first id", "last id", "entries added", "dead letters")
            if split
            else ["length", "groups", "first id", "last id", "entries added", "dead letters"],
            [
                (row(p, p["stream"]["key"]) if split else [])
                + [
                    p["stream"]["length"],
                    p["stream"]["groups"],
                    p["stream"]["first_entry_id"],
                    p["stream"]["last_entry_id"],
                    p["stream"]["entries_added"],
                    p["dead_letters"]["length"],
                ]
                for p in parts
            ],
        )
    )
    groups = [(p, g) for p in parts for g in p["groups"]]
    if not groups:
        return out
    out.append(
        table(
            "groups",
            cols(
                "group",
                "status",
                "consumers",
                "pending",
                "lag",
                "last delivered",
                "oldest pending",
            ),
            [
                row(
                    p,
                    g["name"],
                    g["status"],
                    len(g["consumers"]),
                    g["pending"],
                    "-" if g["lag"] is None else format_lag(g["lag"], g["lag_exact"]),
                    g["last_delivered_id"],
                    ms(g["oldest_pending_age_ms"]) if g["oldest_pending_id"] else "-",
                )
                for p, g in groups
            ],
        )
    )
    rows = [
        row(p, g["name"], c["name"], c["pending"], ms(c["idle_ms"]), ms(c["inactive_ms"]))
        for p, g in groups
        for c in g["consumers"]
    ]
    if rows:
        out.append(
            table("consumers", cols("group", "consumer", "pending", "idle", "inactive"), rows)
        )

    def state(idle_ms: int) -> str:
        if idle_ms > limits.max_pending_idle_ms:
            return "stuck"
        return "claimable" if idle_ms >= claim_idle_ms else ""

    rows = [
        row(
            p,
            g["name"],
            e["id"],
            e["consumer"],
            ms(e["idle_ms"]),
            e["deliveries"],
            state(e["idle_ms"]),
        )
        for p, g in groups
        for e in g["pending_entries"]
    ]
    if rows:
        out.append(
            table(
                f"pending entries (first {pending_rows} per group)",
                cols("group", "id", "consumer", "idle", "deliveries", "state"),
                rows,
            )
        )
    return out
