"""The ``redis-streaming`` command: argument parsing and human-facing output only.

Library errors become one-line messages and a non-zero exit; no traceback reaches the user.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from ._errors import StreamingError
from .server import connect_or_embed, display_url


def _cmd_demo(args: argparse.Namespace) -> int:
    from . import quickstart

    url, embedded = connect_or_embed(args.redis_url, embedded=args.embedded)
    try:
        if embedded is not None:
            why = "--embedded given" if args.embedded else "no Redis at localhost:6379"
            print(f"{why}: started the embedded Valkey server at {url}")
        print(f"Using Redis at {display_url(url)}")
        quickstart.run(url)
    finally:
        if embedded is not None:
            embedded.cleanup()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="redis-streaming", description=__doc__)
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the demo")
    demo.add_argument("--redis-url", default=None)
    demo.add_argument("--embedded", action="store_true")
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args))
    except StreamingError as exc:
        print(f"redis-streaming: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
