"""The ``redis-streaming`` command: ``main``, the entry point (``redis_streaming.cli:main``).

The parser is built in ``_parser``; each command family lives in its own module: ``produce``,
``worker`` (and ``partition`` for ``worker --partitions``, ``processes`` for ``--processes``),
``read`` (tail, replay), ``inspect``, ``trim``, ``dlq`` and ``demo``; ``_common`` holds what
they share and ``_input`` the pure parsing helpers. None of them imports this module.

It must not hold stream logic of its own (that is EventStream, ConsumerWorker, DeadLetters);
errors become one line on stderr and a non-zero exit, never a traceback.

Exit codes: 0 success, 1 runtime failure, 2 bad input, 3 Redis unreachable (or not Redis),
130 interrupted. Output: rich tables and progress bars when stdout is a terminal, JSON lines
otherwise (or with ``--json``). Logging goes to stderr, or through the same rich console as
the tables when both stdout and stderr are the terminal.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

import redis.exceptions as rex

from .._errors import InvalidInput, RedisUnavailable, StreamingError, translate
from ._common import (
    EXIT_BAD_INPUT,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    fail_line,
    load_handler,
    setup_logging,
)
from ._input import (
    UsageError,
    consumer_names,
    parse_duration,
    parse_event_line,
    parse_handler_spec,
)
from ._parser import build_parser
from ._parser import cmd_worker as cmd_worker  # as before the split
from .demo import cmd_quickstart
from .inspect import inspect_data

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
