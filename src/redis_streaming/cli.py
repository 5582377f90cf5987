"""The ``redis-streaming`` command: argument parsing, process wiring and human/script output.

It must not hold stream logic of its own (that is EventStream, ConsumerWorker, DeadLetters);
errors become one line on stderr and a non-zero exit, never a traceback.

Exit codes: 0 success, 1 runtime failure, 2 bad input, 3 Redis unreachable, 130 interrupted.
Output: rich tables and progress bars when stdout is a terminal, JSON lines otherwise (or with
``--json``). Logging goes to stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import logging
import math
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import FrameType
from typing import Any, Final, NoReturn, TextIO

import redis
import redis.exceptions as rex

from . import _codec as codec
from ._cli_input import (
    UsageError,
    consumer_names,
    dead_letter_json,
    entry_json,
    parse_duration,
    parse_event_line,
    parse_fields,
    parse_handler_spec,
)
from ._errors import InvalidInput, RedisUnavailable, StreamingError, translate
from ._fastpath import read_entries
from ._lag import format_lag
from ._model import Entry
from .deadletter import DeadLetters
from .server import DEFAULT_REDIS_URL, display_url, validate_url
from .stream import DEFAULT_CLAIM_MIN_IDLE_MS, EventStream, now_ms
from .worker import (
    DEFAULT_BATCH_BUDGET_MS,
    DEFAULT_COUNT,
    DEFAULT_MAX_DELIVERIES,
    DEFAULT_REAP_INTERVAL_S,
    ConsumerWorker,
)

logger = logging.getLogger(__name__)

__all__ = [
    "UsageError",
    "build_parser",
    "consumer_names",
    "load_handler",
    "main",
    "parse_duration",
    "parse_event_line",
    "parse_handler_spec",
]

PROG: Final = "redis-streaming"
DEFAULT_STREAM_KEY: Final = "events"
DEFAULT_CONNECT_TIMEOUT_S: Final = 2.0
EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_BAD_INPUT: Final = 2
EXIT_UNAVAILABLE: Final = 3
EXIT_INTERRUPTED: Final = 130


class CliParser(argparse.ArgumentParser):
    """argparse with one-line errors: ``redis-streaming: error: ...`` and exit code 2."""

    def error(self, message: str) -> NoReturn:
        _fail_line(message)
        raise SystemExit(EXIT_BAD_INPUT)


# ---------------------------------------------------------------- helpers (pure ones: _cli_input)


def _fail_line(message: str) -> None:
    one_line = " ".join(str(message).split())
    print(f"{PROG}: error: {one_line}", file=sys.stderr, flush=True)


def load_handler(spec: str) -> Callable[[Entry], Any]:
    """Import ``module:function`` (the current directory is importable, as with uvicorn)."""
    module_name, attr = parse_handler_spec(spec)
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any import-time failure is a bad --handler, reported on one line
        raise UsageError(
            f"cannot import handler module {module_name!r}: {type(exc).__name__}: {exc}"
        ) from None
    target: Any = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise UsageError(f"handler {spec!r}: {module_name} has no attribute {attr!r}") from None
    if not callable(target):
        raise UsageError(f"handler {spec!r} is not callable ({type(target).__name__})")
    return target  # type: ignore[no-any-return]


# ---------------------------------------------------------------- argparse types


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    convert.__name__ = "integer"
    return convert


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def _milliseconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of milliseconds: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    value = _seconds(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return value


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _stream_id(text: str) -> str:
    try:
        return codec.validate_id(text, "stream ID")
    except InvalidInput as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _range_bound(text: str) -> str:
    try:
        return codec.validate_range_bound(text, "range bound")
    except InvalidInput as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _group_start(text: str) -> str:
    try:
        return codec.validate_group_start(text)
    except InvalidInput as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# ---------------------------------------------------------------- output


class Output:
    """Where results go: rich for a person at a terminal, JSON lines for a script."""

    def __init__(self, force_json: bool, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self.json = force_json or not self.stream.isatty() or not _have_rich()

    def line(self, obj: Mapping[str, Any]) -> None:
        """Write one JSON line and flush (followers such as ``tail`` need it at once)."""
        self.stream.write(json.dumps(obj, separators=(",", ":"), default=str) + "\n")
        self.stream.flush()

    def console(self) -> Any:
        from rich.console import Console

        return Console(file=self.stream, highlight=False)


def _have_rich() -> bool:
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


def _table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> Any:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for col in columns:
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*["" if v is None else str(v) for v in row])
    return table


def _ms(value: int | None) -> str:
    if value is None:
        return "-"
    if value < 1000:
        return f"{value} ms"
    if value < 120_000:
        return f"{value / 1000:.1f} s"
    if value < 7_200_000:
        return f"{value / 60_000:.1f} min"
    return f"{value / 3_600_000:.1f} h"


# ---------------------------------------------------------------- connection


def connect(args: argparse.Namespace, socket_timeout: float | None = 10.0) -> redis.Redis:
    """A client for ``--redis-url``, checked with one PING so an unreachable server fails fast."""
    url = validate_url(args.redis_url)
    timeout = args.connect_timeout
    try:
        client = redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_connect_timeout=timeout,
            socket_timeout=socket_timeout,
        )
    except ValueError as exc:
        raise UsageError(f"bad --redis-url {display_url(url)!r}: {exc}") from None
    try:
        client.ping()
    except (rex.RedisError, OSError) as exc:
        client.close()
        err = translate(exc)
        if isinstance(err, RedisUnavailable):
            raise RedisUnavailable(f"cannot reach Redis at {display_url(url)}: {err}") from None
        raise err from None
    return client


def open_stream(args: argparse.Namespace, **kwargs: Any) -> EventStream:
    """An EventStream on ``--stream-key`` over a checked connection (no MAXLEN cap by default)."""
    socket_timeout = kwargs.pop("socket_timeout", 10.0)
    client = connect(args, socket_timeout=socket_timeout)
    kwargs.setdefault("maxlen_approx", None)
    return EventStream(client, args.stream_key, **kwargs)


class _StopFlag:
    """Set by SIGTERM/SIGINT; the main thread polls it (no locks taken in a signal handler)."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def __bool__(self) -> bool:
        return self.signal is not None

    def install(self) -> None:
        def handler(signum: int, frame: FrameType | None) -> None:
            self.signal = signum

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)


class _Interrupted(Exception):
    """Raised from a signal handler to break out of a blocking call (tail)."""


def _raise_on_signals() -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        raise _Interrupted(signum)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


# ---------------------------------------------------------------- produce


def _stdin_events(default_type: str) -> list[tuple[str, dict[str, Any]]]:
    """Read and validate every stdin line before anything is written (bad input loses nothing)."""
    events = []
    for lineno, line in enumerate(sys.stdin, 1):
        if line.strip():
            events.append(parse_event_line(line, lineno, default_type))
    return events


def _generated_events(
    count: int, event_type: str, fields: Mapping[str, str]
) -> Iterator[tuple[str, dict[str, Any]]]:
    for i in range(count):
        yield event_type, {"n": i, **fields}


def cmd_produce(args: argparse.Namespace) -> int:
    """``produce``: N generated events or stdin's JSON lines, in pipelined batches."""
    if (args.count is None) == (not args.stdin):
        raise UsageError("give either --count N or --stdin")
    fields = parse_fields(args.field)
    codec.encode_event(args.type, {"n": 0, **fields}, 0)
    source: Iterator[tuple[str, dict[str, Any]]]
    if args.stdin:
        events = _stdin_events(args.type)
        total, source = len(events), iter(events)
    else:
        total = int(args.count)
        source = _generated_events(total, args.type, fields)
    # With --rate, small batches keep the pace smooth instead of bursting a whole batch.
    batch_size = min(args.batch, max(1, int(args.rate / 10))) if args.rate else args.batch
    stream = open_stream(args)
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
            TextColumn(f"producing to [bold]{stream.key}[/]"),
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
            ids = stream.produce_batch(batch, maxlen=args.maxlen, approximate=not args.exact)
            if first is None and ids:
                first = ids[0]
            if ids:
                last = ids[-1]
            produced += len(ids)
            if args.ids:
                out.stream.write("".join(i + "\n" for i in ids))
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
    summary = {
        "stream": stream.key,
        "produced": produced,
        "first_id": first,
        "last_id": last,
        "seconds": round(seconds, 3),
        "rate": round(produced / seconds, 1) if seconds > 0 else None,
    }
    if args.ids:
        return EXIT_OK  # stdout carries only the IDs
    if out.json:
        out.line(summary)
    else:
        out.console().print(
            f"produced [bold]{produced}[/] events to {stream.key} "
            f"({first} .. {last}) in {seconds:.2f} s"
        )
    return EXIT_OK


# ---------------------------------------------------------------- worker


def _metrics_server(
    stream: EventStream, workers: Sequence[ConsumerWorker], args: argparse.Namespace
) -> Callable[[], None]:
    """Serve /metrics (redis_streaming.metrics) for the pool; returns the function to stop it."""
    try:
        from .metrics import StreamMetrics
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
    args.metrics_url = server.url
    return server.close


def _pool_table(workers: Sequence[ConsumerWorker]) -> Any:
    rows = []
    for w in workers:
        st = w.status()
        state = "running" if st.alive else "stopped"
        rows.append([st.name, state, st.processed, st.reaped, st.failed, st.dead_lettered])
    return _table(
        "consumers", ["consumer", "state", "processed", "reaped", "failed", "dead-lettered"], rows
    )


def _pool_totals(workers: Sequence[ConsumerWorker]) -> dict[str, int]:
    totals = {"processed": 0, "reaped": 0, "failed": 0, "dead_lettered": 0}
    for w in workers:
        st = w.status()
        totals["processed"] += st.processed
        totals["reaped"] += st.reaped
        totals["failed"] += st.failed
        totals["dead_lettered"] += st.dead_lettered
    return totals


def cmd_worker(args: argparse.Namespace) -> int:
    """``worker``: N ConsumerWorker threads of one group until SIGTERM/SIGINT, then drain."""
    codec.validate_name(args.group, "group")
    if getattr(args, "partitions", None) is not None:
        from . import _cli_partition  # a PartitionedConsumerPool over <stream>:{p0}..{pN-1}

        return _cli_partition.run(args)
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
    # Create the group before any thread races to do it, so a bad start ID fails here.
    stream.ensure_group(args.group, args.group_start)
    stop_metrics: Callable[[], None] | None = None
    if args.metrics_port is not None:
        stop_metrics = _metrics_server(stream, workers, args)
    flag = _StopFlag()
    flag.install()
    for w in workers:
        w.start()
    out = Output(args.json)
    started = {
        "event": "started",
        "stream": stream.key,
        "group": args.group,
        "consumers": names,
        "pid": os.getpid(),
        "metrics_url": getattr(args, "metrics_url", None),
    }
    if out.json:
        out.line(started)
    else:
        out.console().print(
            f"worker pid {os.getpid()}: {len(names)} consumers of group [bold]{args.group}[/] "
            f"on {stream.key} ({', '.join(names)}); Ctrl-C or SIGTERM stops"
        )
    logger.info("worker pool started on %s/%s: %s", stream.key, args.group, ", ".join(names))
    live: Any = None
    if not out.json:
        from rich.live import Live

        live = Live(_pool_table(workers), console=out.console(), auto_refresh=False)
        live.start()
    try:
        next_draw = 0.0
        while not flag:
            if not any(w.is_alive for w in workers):
                break  # every worker stopped on its own (on_missing_group="stop")
            if live is not None and time.monotonic() >= next_draw:
                live.update(_pool_table(workers), refresh=True)
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
            live.update(_pool_table(workers), refresh=True)
            live.stop()
    totals = _pool_totals(workers)
    summary: dict[str, Any] = {
        "event": "stopped",
        "signal": signal.Signals(flag.signal).name if flag.signal else None,
        **totals,
        "stuck": stuck,
    }
    if out.json:
        out.line(summary)
    else:
        out.console().print(
            "worker stopped: {processed} processed, {reaped} reaped, {failed} failed, "
            "{dead_lettered} dead-lettered".format(**totals)
        )
    if stuck:
        _fail_line(f"consumers did not stop within {args.stop_timeout} s: {', '.join(stuck)}")
        return EXIT_FAILURE
    return EXIT_OK


# ---------------------------------------------------------------- tail and replay


def cmd_tail(args: argparse.Namespace) -> int:
    """``tail``: XREAD BLOCK in a loop, one JSON line per entry, no group state."""
    stream = open_stream(args, socket_timeout=args.block_ms / 1000 + 10)
    out = Output(True)
    if args.from_id is not None:
        last = args.from_id
    else:
        # Resolve "$" once: re-sending "$" on every XREAD would skip entries added in between.
        info = stream.info_stream()
        last = info.last_generated_id or "0-0"
    seen = 0
    _raise_on_signals()
    try:
        while args.limit is None or seen < args.limit:
            want = args.batch if args.limit is None else min(args.batch, args.limit - seen)
            try:
                raw = read_entries(
                    stream.client, "XREAD", "COUNT", want, "BLOCK", args.block_ms,
                    "STREAMS", stream.key, last,
                )  # fmt: skip
            except rex.RedisError as exc:
                raise translate(exc) from exc
            entries = codec.parse_xread(raw)
            for entry in entries:
                out.line(entry_json(entry))
            if entries:
                last = entries[-1].id
                seen += len(entries)
    except _Interrupted:
        pass
    return EXIT_OK


def cmd_replay(args: argparse.Namespace) -> int:
    """``replay``: an XRANGE range as JSON lines, fetched page by page."""
    stream = open_stream(args)
    out = Output(True)
    for n, entry in enumerate(stream.iter_replay(args.start, args.end, page=args.page)):
        if args.limit is not None and n >= args.limit:
            break
        out.line(entry_json(entry))
    return EXIT_OK


# ---------------------------------------------------------------- inspect


def inspect_data(stream: EventStream, pending_rows: int, dlq_key: str | None) -> dict[str, Any]:
    """Everything ``inspect`` shows, as one JSON-ready dict."""
    from .health import check_health

    info = stream.info_stream()
    health = {g.name: g for g in check_health(stream, dead_letter_key=dlq_key).groups}
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
    stream = open_stream(args)
    data = inspect_data(stream, args.pending, args.dlq_key)
    out = Output(args.json)
    if out.json:
        out.line(data)
        return EXIT_OK
    console = out.console()
    s = data["stream"]
    if not s["exists"]:
        console.print(f"stream [bold]{stream.key}[/] does not exist")
        return EXIT_OK
    console.print(
        _table(
            f"stream {stream.key}",
            ["length", "groups", "first id", "last id", "entries added", "dead letters"],
            [
                [
                    s["length"],
                    s["groups"],
                    s["first_entry_id"],
                    s["last_entry_id"],
                    s["entries_added"],
                    data["dead_letters"]["length"],
                ]
            ],
        )
    )
    groups = data["groups"]
    if groups:
        console.print(
            _table(
                "groups",
                [
                    "group",
                    "status",
                    "consumers",
                    "pending",
                    "lag",
                    "last delivered",
                    "oldest pending",
                ],
                [
                    [
                        g["name"],
                        g["status"],
                        len(g["consumers"]),
                        g["pending"],
                        "-" if g["lag"] is None else format_lag(g["lag"], g["lag_exact"]),
                        g["last_delivered_id"],
                        _ms(g["oldest_pending_age_ms"]) if g["oldest_pending_id"] else "-",
                    ]
                    for g in groups
                ],
            )
        )
        rows = [
            [g["name"], c["name"], c["pending"], _ms(c["idle_ms"]), _ms(c["inactive_ms"])]
            for g in groups
            for c in g["consumers"]
        ]
        if rows:
            console.print(
                _table("consumers", ["group", "consumer", "pending", "idle", "inactive"], rows)
            )
        rows = [
            [g["name"], p["id"], p["consumer"], _ms(p["idle_ms"]), p["deliveries"]]
            for g in groups
            for p in g["pending_entries"]
        ]
        if rows:
            console.print(
                _table(
                    f"pending entries (first {args.pending} per group)",
                    ["group", "id", "consumer", "idle", "deliveries"],
                    rows,
                )
            )
    return EXIT_OK


# ---------------------------------------------------------------- trim


def cmd_trim(args: argparse.Namespace) -> int:
    """``trim``: MAXLEN, MINID, safe trim or retain-by-age, with a report of what went."""
    stream = open_stream(args)
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
    out = Output(args.json)
    if out.json:
        out.line(result)
        return EXIT_OK
    text = (
        f"trimmed {stream.key} ({result['strategy']}): deleted {result['deleted']}, "
        f"length {before} -> {result['length']}"
    )
    if result.get("min_id"):
        text += f"; kept IDs >= {result['min_id']}"
    if result.get("held_by"):
        held = result.get("held_back")
        text += f"; held back by group [bold]{result['held_by']}[/]"
        if held is not None:
            text += f" ({held}{'' if result.get('held_back_exact', True) else '+'} entries)"
    if result.get("forced_deleted"):
        text += f"; hard cap deleted {result['forced_deleted']} unfinished entries"
    out.console().print(text)
    return EXIT_OK


# ---------------------------------------------------------------- dead letters


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
    console.print(
        _table(
            f"dead letters in {letters.key} ({letters.length()} total)",
            ["id", "original id", "group", "deliveries", "reason", "error", "type"],
            [
                [
                    r["id"],
                    r["original_id"],
                    r["group"],
                    r["deliveries"],
                    r["reason"],
                    (r["error"] or "")[:60],
                    r["fields"].get("type", ""),
                ]
                for r in rows
            ],
        )
    )
    return EXIT_OK


def cmd_dlq_redrive(args: argparse.Namespace) -> int:
    """``dlq redrive``: move chosen dead letters back onto the stream."""
    ranged = args.start is not None or args.end is not None
    chosen = sum([bool(args.id), ranged, args.all])
    if chosen != 1:
        raise UsageError(
            "choose which dead letters to redrive: --id ID..., --start/--end, or --all"
        )
    stream = open_stream(args)
    letters = DeadLetters(stream, args.dlq_key)
    if args.id:
        new_ids = letters.redrive(args.id)
    else:
        new_ids = letters.redrive(start=args.start or "-", end=args.end or "+", count=args.limit)
    out = Output(args.json)
    result = {"dlq": letters.key, "stream": stream.key, "redriven": len(new_ids), "ids": new_ids}
    if out.json:
        out.line(result)
    else:
        out.console().print(
            f"redrove {len(new_ids)} dead letters from {letters.key} to {stream.key}"
        )
    return EXIT_OK


# ---------------------------------------------------------------- demo


def _demo_module() -> tuple[Any, str | None]:
    """``(redis_streaming.demo.cli, None)``, or ``(None, why)`` when the web demo can't load.

    A missing demo package or a missing dependency of it (fastapi, uvicorn: the ``demo`` extra)
    selects the text walk-through instead; any other import error is a real bug and propagates.
    """
    try:
        return importlib.import_module("redis_streaming.demo.cli"), None
    except ModuleNotFoundError as exc:
        return None, str(exc)


def cmd_quickstart(args: argparse.Namespace) -> int:
    """``demo`` without the web demo: the text walk-through of redis_streaming.quickstart."""
    from . import quickstart
    from .server import connect_or_embed

    why = getattr(args, "demo_unavailable", None)
    if why:
        print(f"web demo unavailable ({why}); running the text walk-through", file=sys.stderr)
    url, embedded = connect_or_embed(args.redis_url, embedded=args.embedded)
    try:
        if embedded is not None:
            why = "--embedded given" if args.embedded else "no Redis at localhost:6379"
            print(f"{why}: started the embedded Valkey server at {url}")
        print(f"Using Redis at {display_url(url)}")
        quickstart.run(url, stream_key=args.stream_key)
    finally:
        if embedded is not None:
            embedded.cleanup()
    return EXIT_OK


def _add_demo(sub: Any, wanted: bool) -> None:
    help_text = "run the demo (web UI when installed, else a short walk-through)"
    why: str | None = None
    if wanted:
        module, why = _demo_module()
        if module is not None:
            demo = sub.add_parser("demo", help=help_text, description=help_text)
            module.add_arguments(demo)
            demo.set_defaults(func=module.run)
            return
    demo = sub.add_parser("demo", help=help_text, description=help_text)
    demo.set_defaults(demo_unavailable=why)
    demo.add_argument(
        "--redis-url",
        default=None,
        help="Redis to use (default: localhost:6379 if it answers, else an embedded Valkey)",
    )
    demo.add_argument("--stream-key", default="quickstart:orders", help="stream key")
    demo.add_argument("--embedded", action="store_true", help="always start the embedded Valkey")
    demo.set_defaults(func=cmd_quickstart)


# ---------------------------------------------------------------- parser


def build_parser(argv: Sequence[str] = ()) -> CliParser:
    """The argument parser. ``argv`` only decides whether the demo's own flags are loaded."""
    parser = CliParser(
        prog=PROG,
        description="Event pipelines on Redis Streams: produce, consume, inspect, recover.",
        epilog="Exit codes: 0 ok, 1 failure, 2 bad input, 3 Redis unreachable, 130 interrupted.",
    )
    common = CliParser(add_help=False)
    common.add_argument(
        "--redis-url", default=DEFAULT_REDIS_URL, help=f"default {DEFAULT_REDIS_URL}"
    )
    common.add_argument(
        "--stream-key", default=DEFAULT_STREAM_KEY, help=f"default {DEFAULT_STREAM_KEY!r}"
    )
    common.add_argument(
        "--connect-timeout",
        type=_positive_float,
        default=DEFAULT_CONNECT_TIMEOUT_S,
        metavar="S",
        help="seconds to wait for the server at start (default %(default)s)",
    )
    common.add_argument("--json", action="store_true", help="JSON lines even on a terminal")
    common.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_text: str, func: Callable[[argparse.Namespace], int]) -> CliParser:
        p: CliParser = sub.add_parser(name, help=help_text, description=help_text, parents=[common])
        p.set_defaults(func=func)
        return p

    p = add("produce", "add N generated events, or JSON lines from stdin", cmd_produce)
    p.add_argument("-n", "--count", type=_int_at_least(0), help="generate this many events")
    p.add_argument("--stdin", action="store_true", help="read one JSON object per line")
    p.add_argument("--type", default="event", help="event type (default %(default)r)")
    p.add_argument(
        "--field", action="append", default=[], metavar="K=V", help="extra payload field"
    )
    p.add_argument("--batch", type=_int_at_least(1), default=100, help="XADDs per round trip")
    p.add_argument("--rate", type=_positive_float, help="at most this many events per second")
    p.add_argument("--maxlen", type=_int_at_least(1), help="cap the stream (MAXLEN ~ N)")
    p.add_argument("--exact", action="store_true", help="exact MAXLEN instead of ~")
    p.add_argument("--ids", action="store_true", help="print each new ID on its own line")

    p = add("worker", "run a consumer pool for one group (one deployment per group)", cmd_worker)
    p.add_argument("-g", "--group", required=True, help="consumer group")
    p.add_argument("-c", "--consumers", type=_int_at_least(1), help="consumer threads (default 1)")
    p.add_argument(
        "--handler",
        metavar="MODULE:FUNCTION",
        help="called with one Entry per message; raise to leave it pending (default: no-op)",
    )
    p.add_argument("--name-prefix", help="consumer names are PREFIX-0..N-1 (default: hostname)")
    p.add_argument("--consumer-names", metavar="A,B,...", help="explicit consumer names")
    p.add_argument(
        "--count",
        type=_int_at_least(1),
        default=DEFAULT_COUNT,
        help="most entries per XREADGROUP (default %(default)s)",
    )
    p.add_argument(
        "--batch-budget-ms",
        type=_milliseconds,
        default=DEFAULT_BATCH_BUDGET_MS,
        metavar="MS",
        help="size reads so one batch's handlers take about this long; "
        "0 always reads --count (default %(default)s)",
    )
    p.add_argument("--block-ms", type=_int_at_least(1), default=500, help="XREADGROUP BLOCK")
    p.add_argument(
        "--reap-interval",
        type=_seconds,
        default=DEFAULT_REAP_INTERVAL_S,
        metavar="S",
        help="seconds between XAUTOCLAIM sweeps; 0 turns them off (default %(default)s)",
    )
    p.add_argument(
        "--claim-idle-ms",
        type=_int_at_least(0),
        default=DEFAULT_CLAIM_MIN_IDLE_MS,
        help="idle time before a peer's entry may be claimed (default %(default)s)",
    )
    p.add_argument(
        "--max-deliveries",
        type=_int_at_least(0),
        default=DEFAULT_MAX_DELIVERIES,
        help="dead-letter after this many deliveries; 0 turns it off (default %(default)s)",
    )
    p.add_argument("--dlq-key", help="dead-letter stream (default <stream>:dlq)")
    p.add_argument(
        "--group-start", type=_group_start, default="$", help="if the group is created: $ or an ID"
    )
    p.add_argument(
        "--on-missing-group",
        choices=("0", "$", "stop"),
        default="0",
        help="when the group vanishes: re-create from 0 or $, or stop (default 0)",
    )
    p.add_argument(
        "--partitions",
        type=_int_at_least(1),
        metavar="N",
        help="read <stream>:{p0}..{pN-1} with a partitioned pool (Redis Cluster or one server)",
    )
    p.add_argument(
        "--metrics-port", type=_int_at_least(0), help="serve Prometheus /metrics (0: any free port)"
    )
    p.add_argument("--metrics-addr", default="127.0.0.1", help="metrics bind address")
    p.add_argument(
        "--stop-timeout",
        type=_seconds,
        default=10.0,
        metavar="S",
        help="seconds to wait for consumers to finish on SIGTERM (default %(default)s)",
    )

    p = add("tail", "follow new entries like tail -f (XREAD BLOCK, no group state)", cmd_tail)
    p.add_argument("--from", dest="from_id", type=_stream_id, help="start after this ID")
    p.add_argument("--block-ms", type=_int_at_least(1), default=5000, help="XREAD BLOCK")
    p.add_argument("--batch", type=_int_at_least(1), default=100, help="XREAD COUNT")
    p.add_argument("--limit", type=_int_at_least(1), help="exit after this many entries")

    p = add("replay", "print a range of entries as JSON lines (XRANGE)", cmd_replay)
    p.add_argument("--start", type=_range_bound, default="-", help="first ID, - or (ID")
    p.add_argument("--end", type=_range_bound, default="+", help="last ID, + or (ID")
    p.add_argument("--limit", type=_int_at_least(1), help="at most this many entries")
    p.add_argument("--page", type=_int_at_least(1), default=500, help="XRANGE COUNT per call")

    p = add("inspect", "stream, groups (lag, pending), consumers and pending entries", cmd_inspect)
    p.add_argument("--pending", type=_int_at_least(1), default=10, help="pending rows per group")
    p.add_argument("--dlq-key", help="dead-letter stream (default <stream>:dlq)")

    p = add("trim", "delete old entries: --maxlen, --minid, --safe and/or --max-age", cmd_trim)
    how = p.add_mutually_exclusive_group()
    how.add_argument("--maxlen", type=_int_at_least(0), help="keep about N newest entries")
    how.add_argument("--minid", type=_stream_id, help="delete entries older than this ID")
    how.add_argument("--max-age", type=_duration, help="keep this much time, e.g. 24h")
    p.add_argument(
        "--safe",
        action="store_true",
        help="delete only what every group has acked (alone, or with --max-age)",
    )
    p.add_argument("--exact", action="store_true", help="exact trim instead of ~")
    p.add_argument(
        "--hard-cap", type=_int_at_least(1), help="with --safe: never keep more than N entries"
    )

    dlq = sub.add_parser("dlq", help="dead letters: list or redrive", description="dead letters")
    dsub = dlq.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    d: CliParser = dsub.add_parser("list", help="show dead letters", parents=[common])
    d.set_defaults(func=cmd_dlq_list)
    d.add_argument("--dlq-key", help="dead-letter stream (default <stream>:dlq)")
    d.add_argument("--start", type=_range_bound, default="-")
    d.add_argument("--end", type=_range_bound, default="+")
    d.add_argument("--limit", type=_int_at_least(1), default=100, help="at most N (default 100)")
    d = dsub.add_parser("redrive", help="move dead letters back to the stream", parents=[common])
    d.set_defaults(func=cmd_dlq_redrive)
    d.add_argument("--dlq-key", help="dead-letter stream (default <stream>:dlq)")
    d.add_argument("--id", action="append", type=_stream_id, help="dead-letter ID (repeatable)")
    d.add_argument("--start", type=_range_bound, help="first dead-letter ID of a range")
    d.add_argument("--end", type=_range_bound, help="last dead-letter ID of a range")
    d.add_argument("--all", action="store_true", help="redrive every dead letter")
    d.add_argument("--limit", type=_int_at_least(1), help="with a range or --all: at most N")

    command = next((a for a in argv if not a.startswith("-")), None)
    _add_demo(sub, wanted=command == "demo")
    return parser


def _check_trim_args(args: argparse.Namespace) -> None:
    if args.command != "trim":
        return
    if args.hard_cap is not None and (not args.safe or args.max_age is not None):
        raise UsageError("--hard-cap only goes with --safe alone")
    if args.maxlen is None and args.minid is None and args.max_age is None and not args.safe:
        raise UsageError("trim needs one of --maxlen N, --minid ID, --safe, --max-age AGE")
    if args.safe and (args.maxlen is not None or args.minid is not None):
        raise UsageError("--safe goes alone or with --max-age, not with --maxlen/--minid")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (see the module docstring)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = 0
    try:
        parser = build_parser(argv)
        args = parser.parse_args(argv)
        verbose = int(getattr(args, "verbose", 0) or 0)
        logging.basicConfig(
            level=logging.WARNING - 10 * min(verbose, 2),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )
        _check_trim_args(args)
        return int(args.func(args))
    except SystemExit as exc:  # argparse (--help, usage errors) already printed its line
        return exc.code if isinstance(exc.code, int) else EXIT_BAD_INPUT
    except InvalidInput as exc:
        _fail_line(str(exc))
        return EXIT_BAD_INPUT
    except RedisUnavailable as exc:
        _fail_line(str(exc))
        return EXIT_UNAVAILABLE
    except StreamingError as exc:
        _fail_line(str(exc))
        return EXIT_FAILURE
    except rex.RedisError as exc:
        _fail_line(str(translate(exc)))
        return EXIT_UNAVAILABLE if isinstance(translate(exc), RedisUnavailable) else EXIT_FAILURE
    except BrokenPipeError:
        # The reader went away (``| head``); point stdout at /dev/null so the exit flush is quiet.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug: still one line, the traceback only with -v
        if verbose:
            logger.exception("internal error")
        _fail_line(f"internal error: {type(exc).__name__}: {exc} (run with -v for details)")
        return EXIT_FAILURE
