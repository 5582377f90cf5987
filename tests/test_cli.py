"""The ``redis-streaming`` command, run as a real subprocess against the real test servers.

Each command's happy path and JSON shape, and every class of bad input: one line on stderr, a
non-zero exit and never a traceback.
"""

from __future__ import annotations

import io
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis

from redis_streaming import DeadLetters, EmbeddedServer, EventStream, cli
from redis_streaming.server import free_port
from waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(TESTS), str(ROOT / "src"), env.get("PYTHONPATH", "")]
    ).rstrip(os.pathsep)
    env.update(extra)
    return env


def run_cli(
    *args: str, stdin: str | None = None, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "redis_streaming", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env or cli_env(),
        cwd=ROOT,
        timeout=timeout,
        check=False,
    )


def start_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "redis_streaming", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env or cli_env(),
        cwd=ROOT,
    )


_readers: dict[int, queue.Queue[str]] = {}


def read_json_line(proc: subprocess.Popen[str], timeout: float = 20.0) -> dict[str, Any]:
    """The next JSON line the process writes to stdout, within ``timeout``.

    A thread per process drains stdout into a queue, so buffered lines are never missed.
    """
    stdout = proc.stdout
    assert stdout is not None
    lines = _readers.get(proc.pid)
    if lines is None:
        lines = _readers[proc.pid] = queue.Queue()

        def pump(q: queue.Queue[str] = lines) -> None:
            for line in stdout:
                q.put(line)
            q.put("")

        threading.Thread(target=pump, daemon=True).start()
    try:
        line = lines.get(timeout=timeout)
    except queue.Empty:
        raise AssertionError(f"no output within {timeout} s") from None
    assert line, f"process ended (rc={proc.poll()}) without output"
    return dict(json.loads(line))


def rest_of_output(proc: subprocess.Popen[str], timeout: float = 30.0) -> tuple[str, str]:
    """Wait for the process to end; its remaining stdout (after read_json_line) and stderr."""
    lines = _readers.pop(proc.pid, None)
    if lines is None:
        return proc.communicate(timeout=timeout)
    assert proc.stderr is not None
    proc.wait(timeout)
    err = proc.stderr.read()
    out = []
    deadline = time.monotonic() + timeout
    while True:
        line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        if not line:
            break
        out.append(line)
    return "".join(out), err


def plain(text: str) -> str:
    """Terminal output without its colour and cursor escape codes."""
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def assert_one_line_error(proc: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("redis-streaming: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.fixture()
def url(server: EmbeddedServer) -> str:
    if not server.running:
        server.start()
    return server.url


@pytest.fixture()
def common(url: str, key: str, client: redis.Redis) -> Iterator[list[str]]:
    """The connection flags for this test's server and stream key (deleted afterwards)."""
    yield ["--redis-url", url, "--stream-key", key]
    client.delete(key, key + ":dlq", key + ":rec", key + ":rec:set")


# ---------------------------------------------------------------- produce


def test_produce_count_prints_json_summary(
    common: list[str], client: redis.Redis, key: str
) -> None:
    proc = run_cli("produce", *common, "-n", "250", "--batch", "40", "--field", "region=eu")
    assert proc.returncode == 0, proc.stderr
    (summary,) = json_lines(proc.stdout)
    assert summary["produced"] == 250
    assert summary["stream"] == key
    assert set(summary) >= {"first_id", "last_id", "seconds", "rate"}
    assert client.xlen(key) == 250
    first = client.xrange(key, count=1)[0]
    assert first[0] == summary["first_id"]
    assert first[1]["type"] == "event" and first[1]["n"] == "0" and first[1]["region"] == "eu"


def test_produce_ids_one_per_line(common: list[str], client: redis.Redis, key: str) -> None:
    proc = run_cli("produce", *common, "-n", "7", "--ids", "--type", "order.created")
    assert proc.returncode == 0, proc.stderr
    ids = proc.stdout.split()
    assert ids == [entry_id for entry_id, _ in client.xrange(key)]
    assert {fields["type"] for _, fields in client.xrange(key)} == {"order.created"}


def test_produce_stdin_json_lines(common: list[str], client: redis.Redis, key: str) -> None:
    lines = "\n".join(
        [
            json.dumps({"type": "order.created", "payload": {"order": 1, "total": 9.5}}),
            "",
            json.dumps({"type": "order.paid", "order": 1}),
            json.dumps({"note": "no type here", "ok": True}),
        ]
    )
    proc = run_cli("produce", *common, "--stdin", "--type", "misc", stdin=lines)
    assert proc.returncode == 0, proc.stderr
    assert json_lines(proc.stdout)[0]["produced"] == 3
    rows = [fields for _, fields in client.xrange(key)]
    assert [r["type"] for r in rows] == ["order.created", "order.paid", "misc"]
    assert rows[0]["order"] == "1" and rows[0]["total"] == "9.5"
    assert rows[2]["ok"] == "true"


@pytest.mark.parametrize(
    ("bad", "needle"),
    [
        ("not json", "line 2: not valid JSON"),
        ("[1, 2]", "line 2: expected a JSON object"),
        ('{"nested": {"a": 1}}', "line 2"),
        ('{"type": ""}', "line 2"),
    ],
)
def test_produce_stdin_bad_line_writes_nothing(
    common: list[str], client: redis.Redis, key: str, bad: str, needle: str
) -> None:
    stdin = json.dumps({"ok": 1}) + "\n" + bad + "\n" + json.dumps({"ok": 3}) + "\n"
    proc = run_cli("produce", *common, "--stdin", stdin=stdin)
    assert_one_line_error(proc, 2, needle)
    assert client.xlen(key) == 0  # bad input loses nothing and writes nothing


def test_produce_progress_bar_and_tables_for_a_person(
    url: str, key: str, client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Terminal()
    monkeypatch.setattr(sys, "stdout", out)
    assert cli.main(["produce", "--redis-url", url, "--stream-key", key, "-n", "300"]) == 0
    assert "produced 300 events" in plain(out.getvalue())
    stream = EventStream(client, key)
    stream.ensure_group("billing", "0")
    stream.consume("billing", "c1", count=5)
    out.seek(0)
    out.truncate()
    assert cli.main(["inspect", "--redis-url", url, "--stream-key", key]) == 0
    text = plain(out.getvalue())
    for word in ("stream", "groups", "consumers", "pending entries", "billing", "c1", "300"):
        assert word in text, word


# ---------------------------------------------------------------- replay and tail


def test_replay_range_as_json_lines(common: list[str], stream: EventStream) -> None:
    ids = stream.produce_batch([("t", {"i": i}) for i in range(30)])
    proc = run_cli("replay", *common, "--page", "7")
    assert proc.returncode == 0, proc.stderr
    rows = json_lines(proc.stdout)
    assert [r["id"] for r in rows] == ids
    assert rows[4] == {
        "id": ids[4],
        "fields": {"type": "t", "ts_ms": rows[4]["fields"]["ts_ms"], "i": "4"},
    }
    proc = run_cli("replay", *common, "--start", ids[10], "--end", ids[19], "--limit", "5")
    assert [r["id"] for r in json_lines(proc.stdout)] == ids[10:15]
    proc = run_cli("replay", *common, "--start", "(" + ids[27])
    assert [r["id"] for r in json_lines(proc.stdout)] == ids[28:]


def _xread_waiting(client: redis.Redis) -> bool:
    return any(c.get("cmd") == "xread" for c in client.client_list())


def test_tail_follows_new_entries_from_dollar(
    common: list[str], stream: EventStream, client: redis.Redis
) -> None:
    stream.produce("old", {"n": 0})
    proc = start_cli("tail", *common, "--limit", "3", "--block-ms", "200")
    try:
        wait_until(lambda: _xread_waiting(client), what="tail to block in XREAD")
        new = stream.produce_batch([("new", {"n": i}) for i in range(1, 4)])
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    rows = json_lines(out)
    assert [r["id"] for r in rows] == new  # "$": nothing older than the start
    assert rows[0]["fields"]["type"] == "new"


def test_tail_from_id_and_sigterm_exits_cleanly(
    common: list[str], stream: EventStream, client: redis.Redis
) -> None:
    ids = stream.produce_batch([("t", {"n": i}) for i in range(5)])
    proc = start_cli("tail", *common, "--from", ids[1], "--block-ms", "10000")
    try:
        rows = [read_json_line(proc) for _ in range(3)]
        assert [r["id"] for r in rows] == ids[2:]
        wait_until(lambda: _xread_waiting(client), what="tail to block in XREAD")
        proc.send_signal(signal.SIGTERM)
        _out, err = rest_of_output(proc)
    finally:
        proc.kill()
    assert proc.returncode == 0
    assert "Traceback" not in err


# ---------------------------------------------------------------- inspect


def test_inspect_json_shape(common: list[str], stream: EventStream, key: str) -> None:
    stream.produce_batch([("t", {"n": i}) for i in range(12)])
    stream.ensure_group("billing", "0")
    stream.ensure_group("audit", "$")
    got = stream.consume("billing", "alice", count=4)
    stream.ack("billing", [got[0].id])
    proc = run_cli("inspect", *common, "--json", "--pending", "2")
    assert proc.returncode == 0, proc.stderr
    (data,) = json_lines(proc.stdout)
    assert data["stream"]["key"] == key and data["stream"]["length"] == 12
    assert data["dead_letters"] == {"key": key + ":dlq", "length": 0}
    groups = {g["name"]: g for g in data["groups"]}
    billing = groups["billing"]
    assert billing["pending"] == 3 and billing["lag"] == 8
    assert billing["oldest_pending_id"] == got[1].id
    assert billing["oldest_pending_age_ms"] >= 0
    assert billing["status"] in ("ok", "lagging", "stuck", "lagging+stuck")
    assert [c["name"] for c in billing["consumers"]] == ["alice"]
    assert billing["consumers"][0]["pending"] == 3
    assert [p["id"] for p in billing["pending_entries"]] == [got[1].id, got[2].id]
    assert set(billing["pending_entries"][0]) == {"id", "consumer", "idle_ms", "deliveries"}
    assert groups["audit"]["pending"] == 0 and groups["audit"]["consumers"] == []


def test_inspect_missing_stream(common: list[str]) -> None:
    proc = run_cli("inspect", *common)
    assert proc.returncode == 0, proc.stderr
    (data,) = json_lines(proc.stdout)
    assert data["stream"]["exists"] is False and data["groups"] == []


# ---------------------------------------------------------------- trim


def test_trim_maxlen_and_minid(
    common: list[str], stream: EventStream, client: redis.Redis, key: str
) -> None:
    ids = stream.produce_batch([("t", {"n": i}) for i in range(50)])
    proc = run_cli("trim", *common, "--maxlen", "40", "--exact")
    assert proc.returncode == 0, proc.stderr
    (res,) = json_lines(proc.stdout)
    assert res["strategy"] == "maxlen" and res["deleted"] == 10 and res["length"] == 40
    proc = run_cli("trim", *common, "--minid", ids[20], "--exact")
    (res,) = json_lines(proc.stdout)
    assert res["strategy"] == "minid" and res["deleted"] == 10 and res["length"] == 30
    assert client.xrange(key, count=1)[0][0] == ids[20]


def test_trim_safe_reports_the_group_holding_back(
    common: list[str], stream: EventStream, client: redis.Redis, key: str
) -> None:
    ids = stream.produce_batch([("t", {"n": i}) for i in range(30)])
    stream.ensure_group("fast", "0")
    stream.ensure_group("slow", "0")
    stream.ack("fast", [e.id for e in stream.consume("fast", "f", count=30)])
    slow = stream.consume("slow", "s", count=10)
    stream.ack("slow", [e.id for e in slow[:5]])  # slow still owes ids[5..9]
    proc = run_cli("trim", *common, "--safe", "--exact")
    assert proc.returncode == 0, proc.stderr
    (res,) = json_lines(proc.stdout)
    assert res["strategy"] == "safe"
    assert res["held_by"] == "slow"
    assert res["deleted"] == 5
    assert client.xrange(key, count=1)[0][0] == ids[5]  # nothing unacked was removed


def test_trim_max_age_keeps_recent(common: list[str], stream: EventStream) -> None:
    stream.produce_batch([("t", {"n": i}) for i in range(5)])
    proc = run_cli("trim", *common, "--max-age", "1h", "--exact")
    assert proc.returncode == 0, proc.stderr
    (res,) = json_lines(proc.stdout)
    assert res["strategy"] == "max-age" and res["deleted"] == 0 and res["length"] == 5
    assert res["max_age_s"] == 3600


# ---------------------------------------------------------------- dead letters


def _dead_letters(stream: EventStream, n: int) -> list[str]:
    ids = stream.produce_batch([("order", {"n": i}) for i in range(n)])
    stream.ensure_group("g", "0")
    dlq = DeadLetters(stream)
    for entry in stream.consume("g", "c", count=n):
        dlq.send("g", "c", entry, deliveries=5, error="ValueError: bad order")
    return ids


def test_dlq_list_json_shape(common: list[str], stream: EventStream) -> None:
    ids = _dead_letters(stream, 3)
    proc = run_cli("dlq", "list", *common)
    assert proc.returncode == 0, proc.stderr
    rows = json_lines(proc.stdout)
    assert [r["original_id"] for r in rows] == ids
    row = rows[0]
    assert row["group"] == "g" and row["consumer"] == "c" and row["deliveries"] == 5
    assert row["reason"] == "max deliveries reached" and row["error"] == "ValueError: bad order"
    assert row["fields"]["type"] == "order" and row["fields"]["n"] == "0"
    assert set(row) == {
        "id",
        "original_id",
        "group",
        "consumer",
        "deliveries",
        "reason",
        "error",
        "at_ms",
        "fields",
    }


def test_dlq_redrive_by_id_then_all(
    common: list[str], stream: EventStream, client: redis.Redis, key: str
) -> None:
    _dead_letters(stream, 3)
    letters = [r["id"] for r in json_lines(run_cli("dlq", "list", *common).stdout)]
    proc = run_cli("dlq", "redrive", *common, "--id", letters[1])
    assert proc.returncode == 0, proc.stderr
    (res,) = json_lines(proc.stdout)
    assert res["redriven"] == 1 and len(res["ids"]) == 1
    assert client.xlen(key + ":dlq") == 2
    back = client.xrange(key, res["ids"][0], res["ids"][0])[0][1]
    assert (
        back["type"] == "order" and back["n"] == "1" and not any(k.startswith("dlq.") for k in back)
    )
    (res,) = json_lines(run_cli("dlq", "redrive", *common, "--all").stdout)
    assert res["redriven"] == 2
    assert client.xlen(key + ":dlq") == 0
    assert client.xlen(key) == 6


# ---------------------------------------------------------------- worker


def test_worker_processes_and_dead_letters_poison(
    common: list[str], url: str, stream: EventStream, client: redis.Redis, key: str
) -> None:
    good = stream.produce_batch([("t", {"n": i}) for i in range(40)])
    poison = stream.produce("t", {"poison": 1})
    good += stream.produce_batch([("t", {"n": i}) for i in range(40, 60)])
    env = cli_env(RS_TEST_RECORD_URL=url, RS_TEST_RECORD_KEY=key + ":rec")
    proc = start_cli(
        "worker", *common, "--group", "billing", "--consumers", "2", "--name-prefix", "w",
        "--handler", "handlers:fail_poison", "--group-start", "0", "--max-deliveries", "2",
        "--reap-interval", "0.2", "--claim-idle-ms", "50", "--block-ms", "100",
        "--metrics-port", "0", env=env,
    )  # fmt: skip
    try:
        started = read_json_line(proc)
        assert started["event"] == "started" and started["consumers"] == ["w-0", "w-1"]
        wait_until(lambda: client.scard(key + ":rec:set") == len(good), what="good entries")
        wait_until(lambda: client.xlen(key + ":dlq") == 1, what="the poison pill to dead-letter")
        body = urllib.request.urlopen(started["metrics_url"], timeout=10).read().decode()
        assert "redis_streaming_processed_total" in body
        assert 'group="billing"' in body
        proc.send_signal(signal.SIGTERM)
        out, err = rest_of_output(proc)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    stopped = json_lines(out)[-1]
    assert stopped["event"] == "stopped" and stopped["signal"] == "SIGTERM"
    assert stopped["processed"] + stopped["reaped"] >= len(good)
    assert stopped["dead_lettered"] == 1 and stopped["stuck"] == []
    letter = client.xrange(key + ":dlq")[0][1]
    assert letter["dlq.original_id"] == poison and letter["dlq.deliveries"] == "2"
    assert "poison pill" in letter["dlq.error"]
    assert client.xpending(key, "billing")["pending"] == 0


def test_worker_explicit_consumer_names(
    common: list[str], stream: EventStream, client: redis.Redis, key: str
) -> None:
    stream.produce_batch([("t", {"n": i}) for i in range(5)])
    proc = start_cli(
        "worker", *common, "-g", "g", "--consumer-names", "east,west", "--group-start", "0",
        "--block-ms", "100",
    )  # fmt: skip
    try:
        assert read_json_line(proc)["consumers"] == ["east", "west"]
        wait_until(lambda: client.xinfo_groups(key)[0]["entries-read"] == 5, what="reads")
        wait_until(lambda: client.xpending(key, "g")["pending"] == 0, what="acks")
        # A consumer exists once it has read; the other may still be starting when the
        # first one has drained all five entries.
        wait_until(lambda: len(client.xinfo_consumers(key, "g")) == 2, what="both consumers")
        proc.send_signal(signal.SIGINT)
        out, err = rest_of_output(proc)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert json_lines(out)[-1]["signal"] == "SIGINT"
    assert sorted(c["name"] for c in client.xinfo_consumers(key, "g")) == ["east", "west"]


# ---------------------------------------------------------------- demo and entry points


def test_demo_help_and_fallback_quickstart(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    proc = run_cli("demo", "--help")
    assert proc.returncode == 0 and "demo" in proc.stdout
    fallback = cli.build_parser([]).parse_args(["demo", "--redis-url", url])
    assert fallback.func is cli.cmd_quickstart
    assert cli.cmd_quickstart(fallback) == 0
    assert "Using Redis at" in capsys.readouterr().out


def test_help_and_console_script() -> None:
    proc = run_cli("--help")
    assert proc.returncode == 0
    for command in ("produce", "worker", "tail", "replay", "inspect", "trim", "dlq", "demo"):
        assert command in proc.stdout
    script = Path(sys.executable).parent / "redis-streaming"
    if script.exists():  # installed by `pip install -e .` (make test does it)
        done = subprocess.run([str(script), "trim", "--help"], capture_output=True, text=True)
        assert done.returncode == 0 and "--max-age" in done.stdout


# ---------------------------------------------------------------- bad input, unreachable server

COMMANDS = ("produce", "worker", "tail", "replay", "inspect", "trim")
BAD_INPUT: Sequence[tuple[list[str], str]] = [
    (["bogus"], "invalid choice"),
    ([], "required"),
    (["worker"], "--group"),
    (["produce", "-n", "abc"], "not an integer"),
    (["produce", "-n", "-1"], ">= 0"),
    (["produce"], "--count N or --stdin"),
    (["produce", "-n", "3", "--stdin"], "--count N or --stdin"),
    (["produce", "-n", "1", "--field", "novalue"], "key=value"),
    (["produce", "-n", "1", "--type", ""], "event type"),
    (["produce", "-n", "1", "--rate", "0"], "> 0"),
    (["tail", "--from", "yesterday"], "malformed stream ID"),
    (["replay", "--start", "1-2-3"], "malformed"),
    (["replay", "--limit", "0"], ">= 1"),
    (["trim"], "--maxlen"),
    (["trim", "--maxlen", "5", "--minid", "1-0"], "not allowed with"),
    (["trim", "--max-age", "3 fortnights"], "not a duration"),
    (["trim", "--max-age", "0s"], "positive"),
    (["trim", "--maxlen", "5", "--hard-cap", "3"], "--hard-cap"),
    (["trim", "--safe", "--minid", "1-0"], "--safe"),
    (["dlq", "redrive"], "--all"),
    (["dlq", "redrive", "--id", "nope"], "malformed"),
    (["dlq"], "required"),
    (["worker", "-g", "billing", "--handler", "no_colon"], "module:function"),
    (["worker", "-g", "billing", "--handler", "a b:c"], "module:function"),
    (["worker", "-g", "billing", "--handler", "no_such_module_xyz:f"], "cannot import"),
    (["worker", "-g", "billing", "--handler", "handlers:missing"], "no attribute"),
    (["worker", "-g", "billing", "--handler", "handlers:not_callable"], "not callable"),
    (["worker", "-g", "billing", "--handler", "broken_handler:f"], "RuntimeError"),
    (["worker", "-g", "bad group"], "group"),
    (["worker", "-g", "g", "--consumer-names", "a,a"], "duplicates"),
    (["worker", "-g", "g", "--consumers", "0"], ">= 1"),
    (["worker", "-g", "g", "--consumers", "3", "--consumer-names", "a,b"], "--consumer-names"),
    (["worker", "-g", "g", "--group-start", "latest"], "malformed"),
    (["worker", "-g", "g", "--reap-interval", "-1"], ">= 0"),
    (["worker", "-g", "g", "--batch-budget-ms", "soon"], "milliseconds"),
    (["worker", "-g", "g", "--batch-budget-ms", "-5"], ">= 0"),
    (["inspect", "--stream-key", ""], "stream key"),
]


@pytest.mark.parametrize("server", ["valkey"], indirect=True)
@pytest.mark.parametrize(
    ("argv", "needle"), BAD_INPUT, ids=lambda v: " ".join(v) if isinstance(v, list) else None
)
def test_bad_input_is_one_line_and_exit_2(
    url: str, tmp_path: Path, argv: list[str], needle: str
) -> None:
    (tmp_path / "broken_handler.py").write_text("raise RuntimeError('boom at import')\n")
    env = cli_env()
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env["PYTHONPATH"]])
    full = list(argv)
    takes_connection = bool(argv) and (argv[0] in COMMANDS or argv[:2] == ["dlq", "redrive"])
    if takes_connection:
        # Point at the real test server, so a check made after connecting still counts as bad
        # input, and so that nothing here can reach a server on port 6379.
        full += ["--redis-url", url]
        if "--stream-key" not in argv:
            full += ["--stream-key", "cli-bad-input"]
    assert_one_line_error(run_cli(*full, env=env), 2, needle)


@pytest.mark.parametrize("argv", [["replay"], ["inspect"], ["produce", "-n", "1"]], ids=str)
def test_server_error_reply_is_one_line_and_exit_1(
    common: list[str], client: redis.Redis, key: str, argv: list[str]
) -> None:
    client.set(key, "not a stream")
    assert_one_line_error(run_cli(*argv, *common), 1, "WRONGTYPE")


def test_bad_redis_url_is_bad_input() -> None:
    proc = run_cli("inspect", "--redis-url", "http://example.com:80/0")
    assert_one_line_error(proc, 2, "not a Redis URL")


@pytest.mark.parametrize(
    "argv",
    [
        ["produce", "-n", "1"],
        ["worker", "-g", "g"],
        ["tail"],
        ["replay"],
        ["inspect"],
        ["trim", "--maxlen", "10"],
        ["dlq", "list"],
        ["dlq", "redrive", "--all"],
    ],
    ids=lambda v: " ".join(v),
)
def test_unreachable_server_is_one_line_and_exit_3(argv: list[str]) -> None:
    port = free_port()  # nothing listens there
    started = time.monotonic()
    proc = run_cli(*argv, "--redis-url", f"redis://127.0.0.1:{port}/0", "--connect-timeout", "1")
    assert_one_line_error(proc, 3, "cannot reach Redis", str(port))
    assert time.monotonic() - started < 30


# ---------------------------------------------------------------- pure helpers (no server)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("500ms", 0.5), ("30m", 1800), ("24h", 86400), ("7d", 604800)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert cli.parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "h", "-5m", "0", "1y", "1.5.2h"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(cli.UsageError):
        cli.parse_duration(text)


def test_parse_event_line_shapes() -> None:
    assert cli.parse_event_line('{"type": "a", "payload": {"x": 1}}', 1, "d") == ("a", {"x": 1})
    assert cli.parse_event_line('{"type": "a", "x": 1}', 1, "d") == ("a", {"x": 1})
    assert cli.parse_event_line('{"x": 1}', 1, "d") == ("d", {"x": 1})
    # "payload" next to other keys is just a field name, and must then be a flat value
    with pytest.raises(cli.UsageError, match="line 4"):
        cli.parse_event_line('{"payload": {"x": 1}, "y": 2}', 4, "d")


def test_consumer_names_are_stable() -> None:
    assert cli.consumer_names("web", 3, None) == ["web-0", "web-1", "web-2"]
    assert cli.consumer_names("web", 3, None) == cli.consumer_names("web", 3, None)
    assert cli.consumer_names(None, 1, " a , b ") == ["a", "b"]
    with pytest.raises(cli.UsageError):
        cli.consumer_names(None, 1, " , ")


def test_parse_handler_spec() -> None:
    assert cli.parse_handler_spec("pkg.mod:fn") == ("pkg.mod", "fn")
    assert cli.parse_handler_spec("mod:Cls.method") == ("mod", "Cls.method")
    for bad in ("mod", ":fn", "mod:", "1mod:fn", "mod:fn()", "a-b:c"):
        with pytest.raises(cli.UsageError):
            cli.parse_handler_spec(bad)
