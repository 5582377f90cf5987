"""The ``redis-streaming`` command: the parser and ``main`` (the entry point).

Each command family lives in its own module: ``_cli_produce``, ``_cli_worker`` (and
``_cli_partition`` for ``worker --partitions``, ``_cli_processes`` for ``--processes``),
``_cli_read`` (tail, replay), ``_cli_inspect``,
``_cli_trim``, ``_cli_dlq`` and ``_cli_demo``; ``_cli_common`` holds what they share and
``_cli_input`` the pure parsing helpers. None of them imports this module.

It must not hold stream logic of its own (that is EventStream, ConsumerWorker, DeadLetters);
errors become one line on stderr and a non-zero exit, never a traceback.

Exit codes: 0 success, 1 runtime failure, 2 bad input, 3 Redis unreachable (or not Redis),
130 interrupted. Output: rich tables and progress bars when stdout is a terminal, JSON lines
otherwise (or with ``--json``). Logging goes to stderr, or through the same rich console as
the tables when both stdout and stderr are the terminal.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence

import redis.exceptions as rex

from . import (
    _cli_dlq,
    _cli_inspect,
    _cli_processes,
    _cli_produce,
    _cli_read,
    _cli_trim,
    _cli_worker,
)
from ._cli_common import (
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_STREAM_KEY,
    EXIT_BAD_INPUT,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    PROG,
    CliParser,
    fail_line,
    load_handler,
    positive_float,
    setup_logging,
)
from ._cli_demo import add_demo, cmd_quickstart
from ._cli_input import (
    UsageError,
    consumer_names,
    parse_duration,
    parse_event_line,
    parse_handler_spec,
)
from ._cli_inspect import inspect_data
from ._errors import InvalidInput, RedisUnavailable, StreamingError, translate
from .server import DEFAULT_REDIS_URL

logger = logging.getLogger(__name__)

__all__ = [
    "UsageError",
    "build_parser",
    "cmd_quickstart",
    "consumer_names",
    "inspect_data",
    "load_handler",
    "main",
    "parse_duration",
    "parse_event_line",
    "parse_handler_spec",
]


def cmd_worker(args: argparse.Namespace) -> int:
    """``worker``: one group's consumer pool; ``--partitions N`` runs a partitioned pool;
    ``--processes N`` spreads either over supervised worker processes."""
    if args.processes is not None:
        return _cli_processes.run(args)
    if args.partitions is not None:
        from . import _cli_partition  # imports redis.cluster: only when asked for

        return _cli_partition.run(args)
    return _cli_worker.cmd_worker(args)


def _common_flags() -> CliParser:
    common = CliParser(add_help=False)
    common.add_argument(
        "--redis-url", default=DEFAULT_REDIS_URL, help=f"default {DEFAULT_REDIS_URL}"
    )
    common.add_argument(
        "--stream-key", default=DEFAULT_STREAM_KEY, help=f"default {DEFAULT_STREAM_KEY!r}"
    )
    common.add_argument(
        "--connect-timeout",
        type=positive_float,
        default=DEFAULT_CONNECT_TIMEOUT_S,
        metavar="S",
        help="seconds to wait for the server at start (default %(default)s)",
    )
    common.add_argument("--json", action="store_true", help="JSON lines even on a terminal")
    common.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    return common


def build_parser(argv: Sequence[str] = ()) -> CliParser:
    """The argument parser. ``argv`` only decides whether the demo's own flags are loaded."""
    parser = CliParser(
        prog=PROG,
        description="Event pipelines on Redis Streams: produce, consume, inspect, recover.",
        epilog="Exit codes: 0 ok, 1 failure, 2 bad input, 3 Redis unreachable, 130 interrupted.",
    )
    common = _common_flags()
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    Adder = Callable[[argparse.ArgumentParser], None]
    Command = Callable[[argparse.Namespace], int]

    def add(name: str, help_text: str, func: Command, flags: Adder) -> None:
        p: CliParser = sub.add_parser(name, help=help_text, description=help_text, parents=[common])
        p.set_defaults(func=func)
        flags(p)

    add(
        "produce",
        "add N generated events, or JSON lines from stdin",
        _cli_produce.cmd_produce,
        _cli_produce.add_arguments,
    )
    add(
        "worker",
        "run a consumer pool for one group (one deployment per group)",
        cmd_worker,
        _cli_worker.add_arguments,
    )
    add(
        "tail",
        "follow new entries like tail -f (XREAD BLOCK, no group state)",
        _cli_read.cmd_tail,
        _cli_read.add_tail_arguments,
    )
    add(
        "replay",
        "print a range of entries as JSON lines (XRANGE)",
        _cli_read.cmd_replay,
        _cli_read.add_replay_arguments,
    )
    add(
        "inspect",
        "stream, groups (health, lag, pending), consumers and pending entries",
        _cli_inspect.cmd_inspect,
        _cli_inspect.add_arguments,
    )
    add(
        "trim",
        "delete old entries: --maxlen, --minid, --safe and/or --max-age",
        _cli_trim.cmd_trim,
        _cli_trim.add_arguments,
    )

    dlq = sub.add_parser("dlq", help="dead letters: list or redrive", description="dead letters")
    dsub = dlq.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    d: CliParser = dsub.add_parser("list", help="show dead letters", parents=[common])
    d.set_defaults(func=_cli_dlq.cmd_dlq_list)
    _cli_dlq.add_list_arguments(d)
    d = dsub.add_parser("redrive", help="move dead letters back to the stream", parents=[common])
    d.set_defaults(func=_cli_dlq.cmd_dlq_redrive)
    _cli_dlq.add_redrive_arguments(d)

    command = next((a for a in argv if not a.startswith("-")), None)
    add_demo(sub, wanted=command == "demo")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (see the module docstring)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = 0
    try:
        parser = build_parser(argv)
        args = parser.parse_args(argv)
        verbose = int(getattr(args, "verbose", 0) or 0)
        setup_logging(verbose, bool(getattr(args, "json", False)))
        return int(args.func(args))
    except SystemExit as exc:  # argparse (--help, usage errors) already printed its line
        return exc.code if isinstance(exc.code, int) else EXIT_BAD_INPUT
    except InvalidInput as exc:
        fail_line(str(exc))
        return EXIT_BAD_INPUT
    except RedisUnavailable as exc:
        fail_line(str(exc))
        return EXIT_UNAVAILABLE
    except StreamingError as exc:
        fail_line(str(exc))
        return EXIT_FAILURE
    except rex.RedisError as exc:
        fail_line(str(translate(exc)))
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
        fail_line(f"internal error: {type(exc).__name__}: {exc} (run with -v for details)")
        return EXIT_FAILURE
