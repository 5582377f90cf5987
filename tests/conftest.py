"""Real servers for the whole session: the embedded Valkey and Debian's redis-server 7.x.

No mocks and never port 6379: each server runs on a free port with a temp dir and no persistence.
Each test uses its own uuid stream key, so nothing is flushed between tests.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis

from redis_streaming import EmbeddedServer, EventStream
from redis_streaming.server import redis_binary, valkey_binary

SERVER_KINDS = ("valkey", "redis7")


def _binary(kind: str) -> str:
    if kind == "valkey":
        return valkey_binary()
    path = redis_binary()
    if path is None:  # make test installs it; a missing one is a broken setup, not a skip
        raise RuntimeError("redis-server is not installed; run `make test` (it installs it)")
    return path


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
