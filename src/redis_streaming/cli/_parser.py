"""The ``redis-streaming`` argument parser: every command, its flags and the function it runs.

Each command family adds its own flags (``add_arguments``) and runs its command in its own
module; this module only wires them together, and ``main`` (the package ``__init__``) calls
:func:`build_parser`. Like the command modules, it never imports the package ``__init__``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from ..server import DEFAULT_REDIS_URL
from . import dlq, inspect, processes, produce, read, trim, worker
from ._common import DEFAULT_CONNECT_TIMEOUT_S, DEFAULT_STREAM_KEY, PROG, CliParser, positive_float
from .demo import add_demo

__all__ = ["build_parser", "cmd_worker"]


def cmd_worker(args: argparse.Namespace) -> int:
    """``worker``: one group's consumer pool; ``--partitions N`` runs a partitioned pool;
    ``--processes N`` spreads either over supervised worker processes."""
    if args.processes is not None:
        return processes.run(args)
    if args.partitions is not None:
        from . import partition  # imports redis.cluster: only when asked for

        return partition.run(args)
    return worker.cmd_worker(args)


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
        produce.cmd_produce,
        produce.add_arguments,
    )
    add(
        "worker",
        "run a consumer pool for one group (one deployment per group)",
        cmd_worker,
        worker.add_arguments,
    )
    add(
        "tail",
        "follow new entries like tail -f (XREAD BLOCK, no group state)",
        read.cmd_tail,
        read.add_tail_arguments,
    )
    add(
        "replay",
        "print a range of entries as JSON lines (XRANGE)",
        read.cmd_replay,
        read.add_replay_arguments,
    )
    add(
        "inspect",
        "stream, groups (health, lag, pending), consumers and pending entries",
        inspect.cmd_inspect,
        inspect.add_arguments,
    )
    add(
        "trim",
        "delete old entries: --maxlen, --minid, --safe and/or --max-age",
        trim.cmd_trim,
        trim.add_arguments,
    )

    dlq_parser = sub.add_parser(
        "dlq", help="dead letters: list or redrive", description="dead letters"
    )
    dsub = dlq_parser.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    d: CliParser = dsub.add_parser("list", help="show dead letters", parents=[common])
    d.set_defaults(func=dlq.cmd_dlq_list)
    dlq.add_list_arguments(d)
    d = dsub.add_parser("redrive", help="move dead letters back to the stream", parents=[common])
    d.set_defaults(func=dlq.cmd_dlq_redrive)
    dlq.add_redrive_arguments(d)

    command = next((a for a in argv if not a.startswith("-")), None)
    add_demo(sub, wanted=command == "demo")
    return parser
