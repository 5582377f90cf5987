"""The ``redis-streaming demo`` subcommand: flags, server choice, banner, uvicorn, clean exit.

Every failure a user can cause ends as one line on stderr and a non-zero exit, never a
traceback. It holds no demo logic: that is DemoRuntime's, served by create_app.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
from types import FrameType
from typing import Any

from .._errors import InvalidInput, StreamingError
from ..server import connect_or_embed, display_url
from .config import (
    DEFAULT_CLAIM_IDLE_MS,
    DEFAULT_HOST,
    DEFAULT_MAX_DELIVERIES,
    DEFAULT_MAXLEN,
    DEFAULT_PORT,
    DEFAULT_PROCESS_MS,
    DEFAULT_STREAM_KEY,
    DemoConfig,
)

_GRACEFUL_S = 3
_PROG = "redis-streaming demo"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the demo's flags to ``parser`` (the ``demo`` subparser of the main command)."""
    web = parser.add_argument_group("web server")
    web.add_argument("--host", default=DEFAULT_HOST, help="address to bind (default %(default)s)")
    web.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default %(default)s)")
    web.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="extra Host-header name to answer to (repeatable; localhost always works)",
    )
    red = parser.add_argument_group("Redis")
    red.add_argument(
        "--redis-url",
        default=None,
        help="redis:// or rediss:// URL with user, password and db (must answer)",
    )
    red.add_argument("--redis-host", default=None, help="Redis host (default localhost)")
    red.add_argument("--redis-port", type=int, default=None, help="Redis port (default 6379)")
    red.add_argument(
        "--embedded",
        action="store_true",
        help="always start the embedded Valkey server instead of looking for a Redis",
    )
    demo = parser.add_argument_group("demo")
    demo.add_argument("--stream-key", default=DEFAULT_STREAM_KEY, help="(default %(default)s)")
    demo.add_argument(
        "--maxlen", type=int, default=DEFAULT_MAXLEN, help="MAXLEN ~ cap (default %(default)s)"
    )
    demo.add_argument(
        "--claim-idle-ms",
        type=int,
        default=DEFAULT_CLAIM_IDLE_MS,
        help="idle time before XAUTOCLAIM may take an entry (default %(default)s)",
    )
    demo.add_argument(
        "--process-ms",
        type=int,
        default=DEFAULT_PROCESS_MS,
        help="simulated processing time per entry (default %(default)s)",
    )
    demo.add_argument(
        "--auto-reap",
        type=float,
        default=None,
        metavar="SECONDS",
        help="let every worker XAUTOCLAIM on a timer (default: only on request)",
    )
    demo.add_argument(
        "--max-deliveries",
        type=int,
        default=DEFAULT_MAX_DELIVERIES,
        help="deliveries before an entry is dead-lettered (default %(default)s)",
    )
    demo.add_argument(
        "--no-reset", action="store_true", help="keep the stream and groups from a previous run"
    )


def _target(args: argparse.Namespace) -> str | None:
    if args.redis_url:
        return str(args.redis_url)
    if args.redis_host is None and args.redis_port is None:
        return None
    host = args.redis_host or "localhost"
    port = 6379 if args.redis_port is None else args.redis_port
    if not 0 < port < 65536:
        raise InvalidInput(f"--redis-port must be 1-65535, got {port}")
    return f"redis://{host}:{port}/0"


def _say(line: str) -> None:
    print(line, flush=True)


def _fail(message: str) -> int:
    print(f"{_PROG}: error: {message}", file=sys.stderr, flush=True)
    return 2


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def run(args: argparse.Namespace) -> int:
    """Run the demo until SIGINT or SIGTERM; 0 on a clean stop, 2 on a usage/connect error."""
    import uvicorn

    from .app import create_app

    try:
        target = _target(args)
        if not 0 <= args.port < 65536:
            raise InvalidInput(f"--port must be 0-65535, got {args.port}")
        # Validate every flag before starting any server, so a typo costs nothing.
        DemoConfig(
            redis_url=target or "redis://localhost:6379/0",
            stream_key=args.stream_key,
            maxlen=args.maxlen,
            claim_idle_ms=args.claim_idle_ms,
            process_ms=args.process_ms,
            max_deliveries=args.max_deliveries,
            auto_reap=args.auto_reap,
            host=args.host,
            port=args.port,
            allowed_hosts=tuple(args.allow_host),
        )
        url, embedded = connect_or_embed(target, embedded=args.embedded)
    except StreamingError as exc:
        return _fail(str(exc))

    try:
        if embedded is not None:
            why = "--embedded given" if args.embedded else "no Redis answered at localhost:6379"
            _say(f"Started the embedded Valkey server at {url} ({why})")
        try:
            sock = _bind(args.host, args.port)
        except OSError as exc:
            return _fail(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}")
        port = int(sock.getsockname()[1])
        if args.host not in ("127.0.0.1", "localhost", "::1"):
            _say(
                f"Warning: listening on {args.host}: anyone who can reach this port can drive "
                "the demo. Requests must name the host via --allow-host NAME."
            )
        config = DemoConfig(
            redis_url=url,
            stream_key=args.stream_key,
            maxlen=args.maxlen,
            claim_idle_ms=args.claim_idle_ms,
            process_ms=args.process_ms,
            max_deliveries=args.max_deliveries,
            auto_reap=args.auto_reap,
            reset=not args.no_reset,
            host=args.host,
            port=port,
            allowed_hosts=tuple(args.allow_host),
            announce=_say,
        )
        app = create_app(config)
        runtime = app.state.runtime
        shown = f"[{args.host}]" if ":" in args.host else args.host

        class _Server(uvicorn.Server):
            def handle_exit(self, sig: int, frame: FrameType | None) -> None:
                runtime.closing.set()  # ends the live feeds so shutdown is not held up
                super().handle_exit(sig, frame)

            async def startup(self, sockets: Any = None) -> None:
                await super().startup(sockets=sockets)
                if self.started:
                    _say(f"Demo listening on http://{shown}:{port}  (Ctrl+C to stop)")

        server = _Server(
            uvicorn.Config(
                app,
                log_level="warning",
                access_log=False,
                lifespan="on",
                timeout_graceful_shutdown=_GRACEFUL_S,
            )
        )
        # uvicorn re-raises the signal it caught once it has stopped; with these handlers in
        # place that re-raise is a no-op and we exit 0 instead of dying by the signal.
        previous = {s: signal.signal(s, _ignore) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            server.run(sockets=[sock])
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            sock.close()
        if not server.started:
            return _fail(f"the demo could not start against {display_url(url)} (see log above)")
        _say("Stopped: workers stopped; anything fetched but not acked stays pending")
        return 0
    finally:
        if embedded is not None:
            embedded.cleanup()


def _ignore(sig: int, frame: FrameType | None) -> None:
    return None


def main(argv: list[str] | None = None) -> int:
    """Run the demo on its own (``python -m redis_streaming.demo.cli``)."""
    parser = argparse.ArgumentParser(prog=_PROG, description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
