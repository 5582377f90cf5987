"""``redis-streaming demo``: the web demo when it is installed, else the text walk-through."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any

from ..server import display_url
from ._common import EXIT_OK


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
    from .. import quickstart
    from ..server import connect_or_embed

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


def add_demo(sub: Any, wanted: bool) -> None:
    """The ``demo`` subcommand; its flags come from the web demo only when it is run."""
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
