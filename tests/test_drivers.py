"""Both drivers fed the same recorded reply bytes give the same results.

Replies are recorded once from a real server (raw RESP bytes over a plain socket), then served
by a tiny replay server to the sync driver (_drive, _fastpath) and the async one (aio._drive,
aio._fastpath). Any drift in how the shells read, parse or map errors shows up here, on both
protocols, with and without decode_responses.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from typing import Any

import hiredis
import pytest
import redis
import redis.asyncio as aredis

from redis_streaming import EmbeddedServer, GroupMissing, _drive, _fastpath, _plans
from redis_streaming._ops import Op
from redis_streaming.aio import _drive as adrive
from redis_streaming.aio import _fastpath as afastpath


def _read_replies(sock: socket.socket, count: int) -> bytes:
    reader, data, got = hiredis.Reader(), b"", 0
    while got < count:
        chunk = sock.recv(65536)
        assert chunk, "server closed"
        data += chunk
        reader.feed(chunk)
        while reader.gets() is not False:
            got += 1
    return data


def _record(port: int, protocol: int, payload: bytes) -> tuple[bytes, list[bytes]]:
    """(HELLO's reply, one raw reply per command of ``payload``) from the real server."""
    commands = hiredis.Reader()
    commands.feed(payload)
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(_fastpath.pack_command(("HELLO", str(protocol))))
        hello = _read_replies(sock, 1)
        replies = []
        while (cmd := commands.gets()) is not False:
            sock.sendall(_fastpath.pack_command(tuple(cmd)))
            replies.append(_read_replies(sock, 1))
        return hello, replies


class ReplayServer:
    """Answers the connection handshake with +OK (HELLO with the recorded HELLO reply) and
    every other command with the next recorded reply, in order."""

    def __init__(self, hello: bytes, replies: list[bytes]) -> None:
        self.hello, self.replies = hello, list(replies)
        self.unexpected: list[Any] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._talk, args=(conn,), daemon=True).start()

    def _talk(self, conn: socket.socket) -> None:
        reader = hiredis.Reader()
        with conn:
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                reader.feed(data)
                while (cmd := reader.gets()) is not False:
                    name = cmd[0].upper()
                    if name == b"HELLO":
                        conn.sendall(self.hello)
                    elif name in (b"CLIENT", b"SELECT", b"PING"):
                        conn.sendall(b"+OK\r\n")
                    elif self.replies:
                        conn.sendall(self.replies.pop(0))
                    else:  # more commands than recorded replies: a test failure, made visible
                        self.unexpected.append(cmd)
                        conn.sendall(b"-ERR nothing recorded for this command\r\n")

    def close(self) -> None:
        self.listener.close()


@pytest.fixture()
def recorded(server: EmbeddedServer, client: redis.Redis, key: str) -> Iterator[dict[str, Any]]:
    """A stream with a group, one entry not valid UTF-8, and the raw replies to our commands."""
    if not server.running:
        server.start()
    client.xgroup_create(key, "g", id="0", mkstream=True)
    client.xadd(key, {"type": "t", "n": "1"})
    client.xadd(key, {b"type": b"t", b"v": b"\xff\xfe"})  # type: ignore[dict-item]
    client.xadd(key, {"type": "t", "n": "3"})
    ops = {
        "read": _plans.read_group(key, "g", "c", ">", 10, None),
        "pending": _plans.pending_rows(key, "g", "-", "+", 10, None, None),
        "info": _plans.info_stream(key),
        "groups": _plans.info_groups(key),
        "nogroup": _plans.read_group(key, "missing", "c", ">", 10, None),
    }
    yield {"ops": ops, "port": server.port}


def _args(op: Op) -> tuple[Any, ...]:
    """The wire arguments redis-py would send for ``op`` (via a throwaway pipeline pack)."""
    pipe = redis.Redis(port=1).pipeline(transaction=False)  # queued only, never sent
    getattr(pipe, op.method)(*op.args, **op.kwargs)
    args = pipe.command_stack[0][0]
    return (*str(args[0]).split(), *args[1:])  # redis-py sends "XINFO GROUPS" as two words


def _run_both(
    port: int, hello: bytes, replies: list[bytes], op: Op, protocol: int, decode: bool
) -> Any:
    sync_srv = ReplayServer(hello, replies)
    async_srv = ReplayServer(hello, replies)
    try:
        plan = op
        sync_client = redis.Redis(port=sync_srv.port, protocol=protocol, decode_responses=decode)
        try:
            sync_out: Any = _drive.run(sync_client, plan)
        except Exception as exc:  # compared below: both must fail the same way
            sync_out = exc

        async def go() -> Any:
            c = aredis.Redis(port=async_srv.port, protocol=protocol, decode_responses=decode)
            try:
                return await adrive.run(c, plan)
            except Exception as exc:
                return exc
            finally:
                await c.aclose()

        async_out = asyncio.run(go())
        assert sync_srv.unexpected == async_srv.unexpected == []
        return sync_out, async_out
    finally:
        sync_srv.close()
        async_srv.close()


@pytest.mark.parametrize("protocol", [2, 3])
@pytest.mark.parametrize("decode", [True, False])
def test_both_drivers_read_the_same_bytes_the_same_way(
    recorded: dict[str, Any], key: str, protocol: int, decode: bool
) -> None:
    port = recorded["port"]
    for name, op in recorded["ops"].items():
        hello, replies = _record(port, protocol, _fastpath.pack_command(_args(op)))
        sync_out, async_out = _run_both(port, hello, replies, op, protocol, decode)
        if isinstance(sync_out, Exception):
            assert type(sync_out) is type(async_out) and str(sync_out) == str(async_out), name
            assert name == "nogroup" and isinstance(sync_out, GroupMissing)
        else:
            assert sync_out == async_out, name


@pytest.mark.parametrize("protocol", [2, 3])
def test_both_fast_paths_parse_the_same_worker_read(
    server: EmbeddedServer, client: redis.Redis, key: str, protocol: int
) -> None:
    if not server.running:
        server.start()
    client.xgroup_create(key, "g", id="0", mkstream=True)
    ids = [client.xadd(key, {"type": "t", "n": str(i)}) for i in range(5)]
    client.xadd(key, {b"type": b"t", b"v": b"\xff"})  # type: ignore[dict-item]
    payload = _fastpath.pack_ack_read(key, "g", "c", ["0-1"], 10, None)
    hello, replies = _record(server.port, protocol, payload)
    ack_srv = ReplayServer(hello, replies)
    aack_srv = ReplayServer(hello, replies)
    try:
        sync_client = redis.Redis(port=ack_srv.port, protocol=protocol, decode_responses=True)
        got = _fastpath.roundtrip(sync_client, payload, 2, entries=True, timeout=5)

        async def go() -> list[Any]:
            c = aredis.Redis(port=aack_srv.port, protocol=protocol, decode_responses=True)
            try:
                return await afastpath.roundtrip(c, payload, 2, entries=True, timeout=5)
            finally:
                await c.aclose()

        agot = asyncio.run(go())
    finally:
        ack_srv.close()
        aack_srv.close()
    assert ack_srv.unexpected == aack_srv.unexpected == []
    sync_entries = _fastpath.parse_xreadgroup(got[1], checked=False)
    async_entries = _fastpath.parse_xreadgroup(agot[1], checked=False)
    assert got[0] == agot[0] == 0  # the XACK of an ID that was never pending
    assert sync_entries == async_entries
    assert [e.id for e in sync_entries][:5] == ids
    assert sync_entries[-1].undecodable and async_entries[-1].undecodable
