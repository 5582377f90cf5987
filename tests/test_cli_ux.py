"""What a person at a terminal sees from ``redis-streaming``, and the traps issue 12 removed.

Start lines (metrics URL, a new group at ``$`` that skips entries), one-line errors for a server
that is not Redis and for unknown dead-letter IDs, tables that never split an ID, log lines
printed above the worker's live table, ``--partitions`` on every stream command, and the one
health threshold ``inspect`` shares with the demo. The CLI runs as a real process (on a real
pseudo-terminal where a terminal matters) against the session's real servers.
"""

from __future__ import annotations

import ast
import fcntl
import io
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import termios
import threading
import urllib.request
from collections.abc import Iterator

import pytest
import redis

from redis_streaming import DeadLetters, EmbeddedServer, EventStream, PartitionedStream, cli
from redis_streaming.health import HealthThresholds
from redis_streaming.stream import DEFAULT_CLAIM_MIN_IDLE_MS
from test_cli import (
    ROOT,
    _dead_letters,
    _xread_waiting,
    assert_one_line_error,
    cli_env,
    json_lines,
    plain,
    read_json_line,
    rest_of_output,
    run_cli,
    start_cli,
    wait_until,
)

SRC = ROOT / "src" / "redis_streaming"


@pytest.fixture()
def url(server: EmbeddedServer) -> str:
    if not server.running:
        server.start()
    return server.url


@pytest.fixture()
def common(url: str, key: str, client: redis.Redis) -> Iterator[list[str]]:
    yield ["--redis-url", url, "--stream-key", key]
    client.delete(key, key + ":dlq", key + ":rec", key + ":rec:set")


class Terminal:
    """The CLI as a real process on a pseudo-terminal ``columns`` wide (stdout and stderr)."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, columns: int = 100) -> None:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
        full_env = dict(env or cli_env())
        full_env.update(TERM="xterm-256color", COLUMNS=str(columns), LINES="50")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "redis_streaming", *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=full_env,
            cwd=ROOT,
        )
        os.close(slave)
        self.master = master
        self.raw = bytearray()
        self.lock = threading.Lock()
        self.reader = threading.Thread(target=self._pump, daemon=True)
        self.reader.start()

    def _pump(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # EIO once the process and its terminal are gone
                return
            if not chunk:
                return
            with self.lock:
                self.raw.extend(chunk)

    def bytes(self) -> bytes:
        with self.lock:
            return bytes(self.raw)

    def text(self) -> str:
        return plain(self.bytes().decode("utf-8", "replace"))

    def wait_for(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        return wait_until(lambda: re.search(pattern, self.text()), timeout, repr(pattern))

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(30)
        self.reader.join(10)
        os.close(self.master)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# ---------------------------------------------------------------- 11. start lines


def test_worker_terminal_start_line_table_and_log_lines(
    common: list[str], url: str, stream: EventStream, client: redis.Redis, key: str
) -> None:
    stream.produce_batch([("old", {"n": i}) for i in range(5)])
    env = cli_env(RS_TEST_RECORD_URL=url, RS_TEST_RECORD_KEY=key + ":rec")
    term = Terminal(
        "worker", *common, "-g", "fresh", "--name-prefix", "solo", "--metrics-port", "0",
        "--handler", "handlers:fail_poison", "--block-ms", "100", "--max-deliveries", "0",
        env=env,
    )  # fmt: skip
    try:
        start = term.wait_for(r"worker pid \d+: .*Ctrl-C or SIGTERM stops").group(0)
        assert "1 consumer of group fresh" in start  # not "1 consumers"
        metrics = re.search(r"metrics at (http://127\.0\.0\.1:(\d+)/metrics)", start)
        assert metrics is not None and int(metrics.group(2)) > 0, start
        body = urllib.request.urlopen(metrics.group(1), timeout=10).read().decode()
        assert "redis_streaming_processed_total" in body
        assert "skips the 5 entries already in" in start and "--group-start 0" in start
        # The live table: each consumer's rate, and the group's pending and lag.
        term.wait_for(r"consumer .*state .*processed .*rate .*pending .*lag")
        term.wait_for(r"group fresh")
        # A log line while the table is live is printed through the same console: the table
        # is erased, the line printed, the table drawn again below it.
        before = len(term.bytes())
        poison = stream.produce("t", {"poison": 1})
        term.wait_for("handler failed")
        raw = term.bytes()
        at = raw.index(b"handler failed", before)
        assert b"\x1b[2K" in raw[before:at], "the live table was not erased before the log line"
        assert "WARNING" in plain(raw[before:at].decode("utf-8", "replace"))
        wait_until(lambda: b"consumers" in term.bytes()[at:], what="the table drawn again")
        stream.produce_batch([("t", {"n": i}) for i in range(3)])
        wait_until(lambda: client.scard(key + ":rec:set") == 3, what="the good entries")
        assert term.stop() == 0
    finally:
        term.kill()
    text = term.text()
    assert "Traceback" not in text
    assert "worker stopped: 3 processed" in text
    assert poison in client.xpending_range(key, "fresh", "-", "+", 10)[0]["message_id"]


def test_worker_json_start_line_says_what_a_new_group_skips(
    common: list[str], stream: EventStream, client: redis.Redis, key: str
) -> None:
    stream.produce_batch([("old", {"n": i}) for i in range(7)])
    for expected in ({"group_created": True, "skipped_entries": 7}, {"group_created": False}):
        proc = start_cli("worker", *common, "-g", "late", "--block-ms", "100")
        try:
            started = read_json_line(proc)
            proc.send_signal(signal.SIGTERM)
            rest_of_output(proc)
        finally:
            proc.kill()
        assert started["group_start"] == "$" and started["metrics_url"] is None
        for name, value in expected.items():
            assert started[name] == value, started
        if not expected["group_created"]:
            assert started["skipped_entries"] == 0  # the group was already there


# ---------------------------------------------------------------- 12. errors


@pytest.fixture(params=["banner", "reply"])
def not_redis(request: pytest.FixtureRequest) -> Iterator[str]:
    """A TCP server that is not Redis: a NATS-like banner on connect, or an HTTP-like reply."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                try:
                    if request.param == "banner":
                        conn.sendall(b'INFO {"server_id":"NOTREDIS","version":"2.10"} \r\n')
                        conn.recv(1024)
                    else:
                        conn.recv(1024)
                        conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                except OSError:
                    pass

    threading.Thread(target=serve, daemon=True).start()
    yield f"redis://127.0.0.1:{port}/0"
    listener.close()


@pytest.mark.parametrize(
    "argv",
    [["inspect"], ["produce", "-n", "1"], ["worker", "-g", "g"], ["tail", "--partitions", "2"]],
    ids=" ".join,
)
def test_a_server_that_is_not_redis_is_named_in_one_line(not_redis: str, argv: list[str]) -> None:
    proc = run_cli(*argv, "--redis-url", not_redis, "--connect-timeout", "5")
    assert_one_line_error(proc, 3, not_redis.removesuffix("/0"), "is not a Redis server")


def test_dlq_redrive_unknown_ids_are_reported_and_nothing_moves(
    common: list[str], stream: EventStream, client: redis.Redis, key: str
) -> None:
    _dead_letters(stream, 2)
    known = [e.id for e in DeadLetters(stream).list()]
    proc = run_cli("dlq", "redrive", *common, "--id", "1-1")
    assert_one_line_error(proc, 1, "no dead letter 1-1", key + ":dlq", "nothing redriven")
    proc = run_cli("dlq", "redrive", *common, "--id", known[0], "--id", "2-2", "--id", "3-3")
    assert_one_line_error(proc, 1, "2-2, 3-3")
    assert known[0] not in proc.stderr
    assert client.xlen(key + ":dlq") == 2 and client.xlen(key) == 2  # nothing moved
    (res,) = json_lines(run_cli("dlq", "redrive", *common, "--id", known[0]).stdout)
    assert res["redriven"] == 1


# ---------------------------------------------------------------- 13. tables


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("columns", [80, 50])
def test_tables_never_split_an_id(
    common: list[str], stream: EventStream, monkeypatch: pytest.MonkeyPatch, columns: int
) -> None:
    _dead_letters(stream, 3)
    stream.ensure_group("g2", "0")
    stream.consume("g2", "a-consumer-with-a-long-name", count=2)
    monkeypatch.setenv("COLUMNS", str(columns))
    letters = [e.id for e in DeadLetters(stream).list()]
    entries = [e.id for e in stream.replay()]
    for argv, whole in ((["dlq", "list"], letters + entries), (["inspect"], entries)):
        out = _Tty()
        monkeypatch.setattr(sys, "stdout", out)
        assert cli.main([*argv, *common]) == 0
        text = plain(out.getvalue())
        for entry_id in whole:
            assert re.search(rf"(?<![\d-]){entry_id}(?![\d-])", text), (entry_id, text)
        if argv == ["inspect"]:
            assert "a-consumer-with-a-long-name" in text


# ---------------------------------------------------------------- 14. --partitions


def test_partitions_produce_replay_tail_inspect_trim(
    url: str, client: redis.Redis, key: str
) -> None:
    base = ["--redis-url", url, "--stream-key", key, "--partitions", "3"]
    ps = PartitionedStream(client, key, partitions=3, maxlen_approx=None)
    try:
        (res,) = json_lines(run_cli("produce", *base, "-n", "60").stdout)
        assert res["produced"] == 60 and sum(res["by_partition"]) == 60
        assert ps.lengths() == res["by_partition"] and all(ps.lengths())
        lines = "".join(
            json.dumps({"type": "o", "customer": "c7", "i": i}) + "\n" for i in range(5)
        )
        proc = run_cli("produce", *base, "--stdin", "--key-field", "customer", "--ids", stdin=lines)
        assert proc.returncode == 0, proc.stderr
        pairs = [line.split() for line in proc.stdout.splitlines()]
        assert {k for k, _ in pairs} == {ps.partition_for("c7")}  # one key, one partition

        rows = json_lines(run_cli("replay", *base).stdout)
        assert len(rows) == 65 and {r["partition"] for r in rows} == {0, 1, 2}
        for r in rows:
            assert client.xrange(ps.keys[r["partition"]], r["id"], r["id"])

        proc = start_cli("tail", *base, "--limit", "4", "--block-ms", "200")
        try:
            wait_until(
                lambda: sum(c.get("cmd") == "xread" for c in client.client_list()) >= 3,
                what="one XREAD per partition",
            )
            new = ps.produce_batch([(f"k{i}", "new", {"i": i}) for i in range(4)])
            out, err = proc.communicate(timeout=30)
        finally:
            proc.kill()
        assert proc.returncode == 0, err
        tailed = json_lines(out)
        assert sorted(r["id"] for r in tailed) == sorted(new)
        assert all(r["fields"]["type"] == "new" for r in tailed)

        ps.ensure_group("g", "0")
        (data,) = json_lines(run_cli("inspect", *base, "--json").stdout)
        assert data["base_key"] == key and len(data["partitions"]) == 3
        assert [p["stream"]["key"] for p in data["partitions"]] == list(ps.keys)
        assert all(p["groups"][0]["name"] == "g" for p in data["partitions"])
        assert data["thresholds"]["max_pending_idle_ms"] == 2 * DEFAULT_CLAIM_MIN_IDLE_MS

        (res,) = json_lines(run_cli("trim", *base, "--maxlen", "5", "--exact").stdout)
        assert res["partitions"] == 3 and ps.lengths() == [5, 5, 5]
        assert res["deleted"] == 69 - 15 and res["length"] == 15
    finally:
        ps.delete()


PARTITION_BAD_INPUT = [
    (["inspect", "--partitions", "0"], ">= 1"),
    (["replay", "--partitions", "two"], "not an integer"),
    (["tail", "--partitions", "5000"], "<= 4096"),
    (["trim", "--partitions", "-1", "--maxlen", "3"], ">= 1"),
    (["produce", "-n", "1", "--key-field", "k"], "--key-field only goes with --partitions"),
    (["produce", "-n", "1", "--partitions", "2", "--key-field", "nope"], "no such field"),
    (["produce", "--stdin", "--partitions", "2", "--key-field", "k"], "no field 'k'"),
    (["inspect", "--partitions", "2", "--dlq-key", "x"], "--dlq-key"),
    (["replay", "--partitions", "2", "--stream-key", "a{b}"], "base key"),
]


@pytest.mark.parametrize("server", ["valkey"], indirect=True)
@pytest.mark.parametrize(("argv", "needle"), PARTITION_BAD_INPUT, ids=lambda v: str(v))
def test_partitions_bad_input_is_one_line(url: str, argv: list[str], needle: str) -> None:
    full = [*argv, "--redis-url", url]
    if "--stream-key" not in argv:
        full += ["--stream-key", "cli-bad-partitions"]
    assert_one_line_error(run_cli(*full, stdin='{"a": 1}\n'), 2, needle)


# ---------------------------------------------------------------- 15. one health threshold


def test_inspect_uses_the_shared_stuck_rule_and_shows_it(
    common: list[str], stream: EventStream, client: redis.Redis, key: str
) -> None:
    [entry_id] = stream.produce_batch([("t", {"n": 1})])
    stream.ensure_group("g", "0")
    stream.consume("g", "c", count=1)
    client.xclaim(key, "g", "c", 0, [entry_id], idle=24_800)  # idle 24.8 s, no waiting
    (data,) = json_lines(run_cli("inspect", *common).stdout)
    shared = HealthThresholds.for_claim_idle(DEFAULT_CLAIM_MIN_IDLE_MS)
    assert data["thresholds"] == {
        "claim_idle_ms": DEFAULT_CLAIM_MIN_IDLE_MS,
        "max_pending_idle_ms": shared.max_pending_idle_ms,
        "max_pending": shared.max_pending,
        "max_lag": shared.max_lag,
    }
    assert data["groups"][0]["status"] == "stuck"
    assert "10000 ms" in data["groups"][0]["reasons"][0]
    (data,) = json_lines(run_cli("inspect", *common, "--claim-idle-ms", "20000").stdout)
    assert data["groups"][0]["status"] == "ok"
    assert data["thresholds"]["max_pending_idle_ms"] == 40_000
    # inspect's default is the worker's default claim threshold
    parser = cli.build_parser()
    worker = parser.parse_args(["worker", "-g", "g"]).claim_idle_ms
    assert parser.parse_args(["inspect"]).claim_idle_ms == worker == DEFAULT_CLAIM_MIN_IDLE_MS


def test_inspect_table_shows_thresholds_and_stuck_rows(
    common: list[str], stream: EventStream, client: redis.Redis, key: str
) -> None:
    [entry_id] = stream.produce_batch([("t", {"n": 1})])
    stream.ensure_group("g", "0")
    stream.consume("g", "c", count=1)
    client.xclaim(key, "g", "c", 0, [entry_id], idle=24_800)
    term = Terminal("inspect", *common, columns=120)
    try:
        assert term.proc.wait(30) == 0
        term.reader.join(10)
    finally:
        term.kill()
    text = term.text()
    assert "stuck = oldest pending idle > 10.0 s" in text and "--claim-idle-ms 5000" in text
    rows = [
        line for line in text.splitlines() if entry_id in line and re.search(r"2\d\.\d s", line)
    ]
    assert len(rows) == 1 and "stuck" in rows[0], text


# ---------------------------------------------------------------- module shape


def test_cli_modules_are_small_and_never_import_cli() -> None:
    paths = sorted((SRC / "cli").glob("*.py"))
    submodules = {p.stem for p in paths} - {"__init__"}
    assert {"_parser", "_common", "_input", "produce", "worker"} <= submodules
    for path in paths:
        source = path.read_text()
        assert len(source.splitlines()) <= 500, path.name
        if path.name == "__init__.py":
            continue
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom):
                names = {a.name for a in node.names}
                # from . import X: only sibling modules, never a name of the package __init__
                if node.level == 1 and not node.module:
                    assert names <= submodules, (path.name, names - submodules)
                assert not (node.level == 2 and not node.module and "cli" in names), path.name
                assert not (node.level == 2 and node.module == "cli"), path.name
                assert node.module != "redis_streaming.cli", path.name
                assert not (node.module == "redis_streaming" and "cli" in names), path.name


def test_tail_partitions_exits_on_sigterm(url: str, client: redis.Redis, key: str) -> None:
    proc = start_cli("tail", "--redis-url", url, "--stream-key", key, "--partitions", "2")
    try:
        wait_until(lambda: _xread_waiting(client), what="tail to block in XREAD")
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0 and "Traceback" not in err
