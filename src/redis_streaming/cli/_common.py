"""What every ``redis-streaming`` command shares: exit codes, one-line errors, flag types,
output (rich or JSON lines), logging set-up, connecting, and stop signals.

The command modules (``cli.produce``, ``cli.worker``, ...) import this; it imports none of
them, nor the package ``__init__`` (so the CLI modules form no import cycle).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import math
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from types import FrameType
from typing import Any, Final, NoReturn, TextIO

import redis
import redis.exceptions as rex

from .. import _codec as codec
from .._errors import InvalidInput, RedisUnavailable, translate
from .._model import Entry
from ..partition import MAX_PARTITIONS, PartitionedStream
from ..server import display_url, validate_url
from ..stream import EventStream
from ._input import UsageError, parse_duration, parse_handler_spec

logger = logging.getLogger("redis_streaming.cli")

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
        fail_line(message)
        raise SystemExit(EXIT_BAD_INPUT)


class NotRedis(RedisUnavailable):
    """The URL answers, but not in the Redis protocol (another kind of server)."""


def fail_line(message: str) -> None:
    """The one line an error becomes: ``redis-streaming: error: <message>`` on stderr."""
    one_line = " ".join(str(message).split())
    print(f"{PROG}: error: {one_line}", file=sys.stderr, flush=True)


def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 consumer``, ``2 consumers`` (``many`` for irregular plurals)."""
    return f"{n} {word if n == 1 else (many or word + 's')}"


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


def int_at_least(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be <= {maximum}, got {value}")
        return value

    convert.__name__ = "integer"
    return convert


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def milliseconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of milliseconds: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def positive_float(text: str) -> float:
    value = seconds(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return value


def duration(text: str) -> float:
    try:
        return parse_duration(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def stream_id(text: str) -> str:
    try:
        return codec.validate_id(text, "stream ID")
    except InvalidInput as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def range_bound(text: str) -> str:
    try:
        return codec.validate_range_bound(text, "range bound")
    except InvalidInput as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def group_start(text: str) -> str:
    try:
        return codec.validate_group_start(text)
    except InvalidInput as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_partitions_flag(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--partitions",
        type=int_at_least(1, MAX_PARTITIONS),
        metavar="N",
        help=f"{what} <stream>:{{p0}}..{{pN-1}} (PartitionedStream; Redis Cluster or one server)",
    )


# ---------------------------------------------------------------- output

_shared: tuple[TextIO, Any] | None = None


def shared_console(stream: TextIO) -> Any:
    """The one rich Console writing to ``stream``: tables, live displays and log lines share it,
    so a log line is printed above a live table instead of through it."""
    global _shared
    if _shared is None or _shared[0] is not stream:
        from rich.console import Console

        _shared = (stream, Console(file=stream, highlight=False))
    return _shared[1]


class Output:
    """Where results go: rich for a person at a terminal, JSON lines for a script."""

    def __init__(self, force_json: bool, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self.json = force_json or not self.stream.isatty() or not have_rich()

    def line(self, obj: Mapping[str, Any]) -> None:
        """Write one JSON line and flush (followers such as ``tail`` need it at once)."""
        self.stream.write(json.dumps(obj, separators=(",", ":"), default=str) + "\n")
        self.stream.flush()

    def console(self) -> Any:
        return shared_console(self.stream)


def have_rich() -> bool:
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


#: Columns whose values (stream IDs, keys, names) must never be split across lines.
UNSPLIT_COLUMNS: Final = frozenset(
    {
        "id", "original id", "first id", "last id", "last delivered", "oldest pending id",
        "key", "stream", "group", "consumer", "type",
    }
)  # fmt: skip


def table(
    title: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[object]],
    caption: str | None = None,
) -> Any:
    """A rich Table whose ID and name columns never wrap (the other columns fold instead).

    ``needed_width`` is the narrowest it can be drawn without splitting one of them; print it
    with :func:`show`, which draws it that wide on a narrower terminal rather than cut an ID.
    """
    from rich.table import Table

    cells = [["" if v is None else str(v) for v in row] for row in rows]
    t = Table(title=title, title_justify="left", caption=caption, caption_justify="left")
    needed = 1 + 3 * len(columns)  # borders and one space of padding each side
    for n, col in enumerate(columns):
        if col in UNSPLIT_COLUMNS:
            width = max([len(col), *(len(row[n]) for row in cells)])
            t.add_column(col, no_wrap=True, min_width=width)
            needed += width
        else:  # folds, but never narrower than a word of its header or a short value
            longest = max([0, *(len(row[n]) for row in cells)])
            width = max([*(len(word) for word in col.split()), min(longest, 12)])
            t.add_column(col, overflow="fold", min_width=width)
            needed += width
    for row in cells:
        t.add_row(*row)
    t.needed_width = needed  # type: ignore[attr-defined]
    return t


def show(console: Any, renderable: Any) -> None:
    """Print a :func:`table` (or anything); wider than the terminal if an ID would be split."""
    needed = getattr(renderable, "needed_width", 0)
    if needed > console.width:
        console.print(renderable, width=needed, crop=False)
    else:
        console.print(renderable)


def ms(value: int | None) -> str:
    if value is None:
        return "-"
    if value < 1000:
        return f"{value} ms"
    if value < 120_000:
        return f"{value / 1000:.1f} s"
    if value < 7_200_000:
        return f"{value / 60_000:.1f} min"
    return f"{value / 3_600_000:.1f} h"


# ---------------------------------------------------------------- logging

_HANDLER_MARK: Final = "_redis_streaming_cli"


def setup_logging(verbose: int, force_json: bool) -> None:
    """WARNING (-v INFO, -vv DEBUG) to stderr; on a terminal, through the shared rich console.

    When stdout and stderr are both the terminal, log lines go through the console that draws
    the tables (rich.logging.RichHandler), so they land above a live table instead of tearing
    it. The library itself configures no logging.
    """
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, _HANDLER_MARK, False):
            root.removeHandler(h)
    handler: logging.Handler
    if not force_json and sys.stdout.isatty() and sys.stderr.isatty() and have_rich():
        from rich.logging import RichHandler

        handler = RichHandler(console=shared_console(sys.stdout), show_path=False, markup=False)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    setattr(handler, _HANDLER_MARK, True)
    root.addHandler(handler)
    root.setLevel(logging.WARNING - 10 * min(verbose, 2))


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
    except rex.InvalidResponse as exc:
        # Something answered, but not in RESP: a NATS, HTTP, SSH... port.
        client.close()
        raise NotRedis(
            f"{display_url(url)} is not a Redis server: it answered PING with something that "
            f"is not the Redis protocol ({exc}); check --redis-url"
        ) from None
    except (rex.RedisError, OSError) as exc:
        client.close()
        err = translate(exc)
        if isinstance(err, RedisUnavailable):
            raise RedisUnavailable(f"cannot reach Redis at {display_url(url)}: {err}") from None
        raise err from None
    return client


def connect_any(args: argparse.Namespace, socket_timeout: float) -> Any:
    """A RedisCluster client if ``--redis-url`` points at a cluster node, else a redis.Redis."""
    from redis.cluster import RedisCluster

    plain = connect(args, socket_timeout=socket_timeout)
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


def open_stream(args: argparse.Namespace, **kwargs: Any) -> EventStream:
    """An EventStream on ``--stream-key`` over a checked connection (no MAXLEN cap by default)."""
    socket_timeout = kwargs.pop("socket_timeout", 10.0)
    client = connect(args, socket_timeout=socket_timeout)
    kwargs.setdefault("maxlen_approx", None)
    return EventStream(client, args.stream_key, **kwargs)


def open_partitioned(args: argparse.Namespace, **kwargs: Any) -> PartitionedStream:
    """``--partitions N`` streams under ``--stream-key`` (cluster or one server)."""
    socket_timeout = kwargs.pop("socket_timeout", 10.0)
    kwargs.setdefault("maxlen_approx", None)
    # Check the base key before connecting, so a bad one is bad input whatever the server.
    codec.validate_name(args.stream_key, "stream key")
    client = connect_any(args, socket_timeout=socket_timeout)
    return PartitionedStream(client, args.stream_key, partitions=args.partitions, **kwargs)


def no_dlq_key_with_partitions(args: argparse.Namespace) -> None:
    if getattr(args, "partitions", None) is not None and getattr(args, "dlq_key", None):
        raise UsageError("--dlq-key cannot be used with --partitions (each has <partition>:dlq)")


# ---------------------------------------------------------------- signals


class StopFlag:
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

    @property
    def name(self) -> str | None:
        return signal.Signals(self.signal).name if self.signal else None


class Interrupted(Exception):
    """Raised from a signal handler to break out of a blocking call (tail)."""


def raise_on_signals() -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(signum)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
