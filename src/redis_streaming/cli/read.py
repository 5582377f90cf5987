"""``redis-streaming tail`` and ``replay``: entries as JSON lines, with no group state.

With ``--partitions N`` both read every partition of a PartitionedStream: ``replay`` merges
them by ID, ``tail`` follows each partition in a thread of its own (on a cluster they live on
different nodes, so one XREAD cannot cover them). Each line then names its ``partition``.
"""

from __future__ import annotations

import argparse
import queue
import threading
from typing import Any

import redis.exceptions as rex

from .. import _codec as codec
from .._errors import translate
from .._fastpath import read_entries
from .._model import Entry
from ..stream import EventStream
from ._common import (
    EXIT_OK,
    Interrupted,
    Output,
    StopFlag,
    add_partitions_flag,
    int_at_least,
    open_partitioned,
    open_stream,
    raise_on_signals,
    range_bound,
    stream_id,
)
from ._input import entry_json


def add_tail_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from", dest="from_id", type=stream_id, help="start after this ID")
    p.add_argument("--block-ms", type=int_at_least(1), default=5000, help="XREAD BLOCK")
    p.add_argument("--batch", type=int_at_least(1), default=100, help="XREAD COUNT")
    p.add_argument("--limit", type=int_at_least(1), help="exit after this many entries")
    add_partitions_flag(p, "follow every partition")


def add_replay_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--start", type=range_bound, default="-", help="first ID, - or (ID")
    p.add_argument("--end", type=range_bound, default="+", help="last ID, + or (ID")
    p.add_argument("--limit", type=int_at_least(1), help="at most this many entries")
    p.add_argument("--page", type=int_at_least(1), default=500, help="XRANGE COUNT per call")
    add_partitions_flag(p, "merge by ID every partition")


def _xread(stream: EventStream, count: int, block_ms: int, last: str) -> list[Entry]:
    try:
        raw = read_entries(
            stream.client, "XREAD", "COUNT", count, "BLOCK", block_ms, "STREAMS", stream.key, last
        )
    except rex.RedisError as exc:
        raise translate(exc) from exc
    return codec.parse_xread(raw)


def _start_after(stream: EventStream, from_id: str | None) -> str:
    if from_id is not None:
        return from_id
    # Resolve "$" once: re-sending "$" on every XREAD would skip entries added in between.
    return stream.info_stream().last_generated_id or "0-0"


def cmd_tail(args: argparse.Namespace) -> int:
    """``tail``: XREAD BLOCK in a loop, one JSON line per entry, no group state."""
    if args.partitions is not None:
        return _tail_partitions(args)
    stream = open_stream(args, socket_timeout=args.block_ms / 1000 + 10)
    out = Output(True)
    last = _start_after(stream, args.from_id)
    seen = 0
    raise_on_signals()
    try:
        while args.limit is None or seen < args.limit:
            want = args.batch if args.limit is None else min(args.batch, args.limit - seen)
            entries = _xread(stream, want, args.block_ms, last)
            for entry in entries:
                out.line(entry_json(entry))
            if entries:
                last = entries[-1].id
                seen += len(entries)
    except Interrupted:
        pass
    return EXIT_OK


def _tail_partitions(args: argparse.Namespace) -> int:
    pstream = open_partitioned(args, socket_timeout=args.block_ms / 1000 + 10)
    starts = [_start_after(s, args.from_id) for s in pstream.streams]
    out = Output(True)
    found: queue.Queue[tuple[int, Any]] = queue.Queue(maxsize=10 * args.batch)
    done = threading.Event()

    def hand_over(item: tuple[int, Any]) -> None:
        while not done.is_set():
            try:
                found.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def follow(i: int, stream: EventStream, last: str) -> None:
        try:
            while not done.is_set():
                for entry in _xread(stream, args.batch, args.block_ms, last):
                    hand_over((i, entry))
                    last = entry.id
        except Exception as exc:  # reported by the main thread, which raises it
            hand_over((i, exc))

    flag = StopFlag()
    flag.install()  # before any XREAD, so a signal never meets the default handler
    for i, (stream, last) in enumerate(zip(pstream.streams, starts, strict=True)):
        threading.Thread(
            target=follow, args=(i, stream, last), name=f"tail-{stream.key}", daemon=True
        ).start()
    seen = 0
    try:
        while not flag and (args.limit is None or seen < args.limit):
            try:
                i, item = found.get(timeout=0.1)  # a signal handler only sets the flag
            except queue.Empty:
                continue
            if isinstance(item, Exception):
                raise item
            out.line({"partition": i, **entry_json(item)})
            seen += 1
    finally:
        done.set()  # followers blocked in XREAD are daemon threads: they end with the process
    return EXIT_OK


def cmd_replay(args: argparse.Namespace) -> int:
    """``replay``: an XRANGE range as JSON lines, fetched page by page."""
    out = Output(True)
    if args.partitions is not None:
        pstream = open_partitioned(args)
        merged = pstream.iter_replay(args.start, args.end, page=args.page)
        for n, (i, entry) in enumerate(merged):
            if args.limit is not None and n >= args.limit:
                break
            out.line({"partition": i, **entry_json(entry)})
        return EXIT_OK
    stream = open_stream(args)
    for n, entry in enumerate(stream.iter_replay(args.start, args.end, page=args.page)):
        if args.limit is not None and n >= args.limit:
            break
        out.line(entry_json(entry))
    return EXIT_OK
