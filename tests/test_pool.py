"""Worker processes: ``worker --processes N`` and WorkerPool, with real processes and signals.

A child SIGKILLed mid-batch is restarted under its names and every entry is processed at least
once with the PEL drained; SIGTERM to the parent stops every child with nothing finished left
unacked; the parent's own death leaves no child running; a child that cannot stop in time is
killed and named; the parent serves one metrics view of every child's consumers.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from redis_streaming import (
    EmbeddedServer,
    EventStream,
    InvalidOption,
    PartitionedStream,
    PoolEvent,
    WorkerPool,
)
from redis_streaming.metrics import StreamMetrics
from test_cli import cli_env, json_lines, read_json_line, rest_of_output, run_cli, start_cli
from waiting import wait_until

GROUP = "jobs"


@pytest.fixture()
def url(server: EmbeddedServer) -> str:
    if not server.running:
        server.start()
    return server.url


@pytest.fixture()
def keys(client: redis.Redis, key: str) -> Iterator[dict[str, str]]:
    names = {"stream": key, "rec": key + ":rec", "set": key + ":rec:set", "dlq": key + ":dlq"}
    yield names
    client.delete(*names.values())


def pending_ids(client: redis.Redis, key: str, group: str = GROUP) -> set[str]:
    return {r["message_id"] for r in client.xpending_range(key, group, "-", "+", 1_000_000)}


def gone(pid: int, zombie_ok: bool = False) -> bool:
    """The process has ended and (unless ``zombie_ok``) been reaped by its parent."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    state = stat.rsplit(")", 1)[1].split()[0]
    return zombie_ok and state in ("Z", "X")


def next_event(
    proc: subprocess.Popen[str], pred: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """Read JSON lines until one matches ``pred`` (each read bounded by read_json_line)."""
    while True:
        line = read_json_line(proc, timeout=30)
        if pred(line):
            return line


def worker_cli(url: str, keys: dict[str, str], *extra: str) -> subprocess.Popen[str]:
    env = cli_env(RS_TEST_RECORD_URL=url, RS_TEST_RECORD_KEY=keys["rec"])
    return start_cli(
        "worker", "--redis-url", url, "--stream-key", keys["stream"], "--group", GROUP,
        "--group-start", "0", "--block-ms", "100", *extra, env=env,
    )  # fmt: skip


def sigterm(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        out, err = rest_of_output(proc, timeout=30)
    finally:
        proc.kill()
    return proc.returncode, out, err


def produce(client: redis.Redis, key: str, n: int) -> list[str]:
    return EventStream(client, key, maxlen_approx=None).produce_batch(
        [("job", {"n": i}) for i in range(n)]
    )


# ---------------------------------------------------------------- bad flags


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--processes", "0"], "argument --processes: must be >= 1, got 0"),
        (["--processes", "x"], "argument --processes: not an integer"),
        (["--processes", "3", "--consumers", "2"], "--processes 3 is more than the 2 consumers"),
        (["--processes", "2", "--consumer-names", "a"], "--processes 2 is more than the 1"),
        (
            ["--processes", "3", "--consumers", "2", "--partitions", "4"],
            "--processes 3 is more than --consumers 2",
        ),
        (["--processes", "2", "--handler", "no_such_module:f"], "cannot import handler module"),
    ],
)
def test_bad_process_flags_are_one_line(flags: list[str], expected: str) -> None:
    # Checked before connecting: the URL points nowhere.
    proc = run_cli("worker", "--redis-url", "redis://127.0.0.1:1", "--group", "g", *flags)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and expected in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_library_rejects_what_cannot_reach_a_child(url: str) -> None:
    with pytest.raises(InvalidOption, match="more than the 2 consumers"):
        WorkerPool(url, "s", "g", processes=3, consumers=2)
    with pytest.raises(InvalidOption, match="picklable"):
        WorkerPool(url, "s", "g", lambda e: None, processes=1)
    with pytest.raises(InvalidOption, match="distinct"):
        WorkerPool(url, "s", "g", processes=1, consumer_names=["a", "a"])


# ---------------------------------------------------------------- the CLI, real signals


def test_sigkilled_child_is_restarted_and_every_entry_processed(
    url: str, client: redis.Redis, keys: dict[str, str]
) -> None:
    key = keys["stream"]
    produced = produce(client, key, 3000)
    proc = worker_cli(
        url, keys, "--processes", "2", "--consumers", "2", "--name-prefix", "kill",
        "--handler", "pool_handlers:record_slow", "--count", "25", "--reap-interval", "0",
    )  # fmt: skip
    try:
        started = read_json_line(proc)
        assert started["event"] == "started" and started["processes"] == 2
        assert [c["consumers"] for c in started["children"]] == [["kill-0"], ["kill-1"]]
        victim = started["children"][0]["pid"]
        wait_until(lambda: client.llen(keys["rec"]) >= 300, what="work in progress")
        os.kill(victim, signal.SIGKILL)
        exited = next_event(proc, lambda e: e["event"] == "child_exited")
        assert exited["child"] == 0 and exited["pid"] == victim
        assert exited["cause"].startswith("killed by SIGKILL"), exited
        restarted = next_event(proc, lambda e: e["event"] == "child_started")
        assert restarted["child"] == 0 and restarted["consumers"] == ["kill-0"]
        assert restarted["pid"] != victim
        assert gone(victim), "the killed child was left a zombie"
        # Reaping is off: only kill-0's own-PEL replay at its restart can finish its entries.
        wait_until(lambda: client.scard(keys["set"]) == len(produced), what="every entry")
        wait_until(lambda: not pending_ids(client, key), what="an empty PEL")
        code, out, err = sigterm(proc)
    finally:
        proc.kill()
    assert code == 0, err
    assert "Traceback" not in err
    assert "killed by SIGKILL" in err and "restarting in" in err  # the logged cause
    stopped = json_lines(out)[-1]
    assert stopped["event"] == "stopped" and stopped["restarts"] == 1 and stopped["killed"] == []
    assert set(client.smembers(keys["set"])) == set(produced)


def test_sigterm_parent_stops_every_child_and_acks_what_they_finished(
    url: str, client: redis.Redis, keys: dict[str, str]
) -> None:
    key = keys["stream"]
    produced = produce(client, key, 3000)
    proc = worker_cli(
        url, keys, "--processes", "2", "--consumers", "4", "--name-prefix", "term",
        "--handler", "pool_handlers:record_slow", "--count", "25", "--reap-interval", "0",
    )  # fmt: skip
    try:
        started = read_json_line(proc)
        pids = [c["pid"] for c in started["children"]]
        assert [c["consumers"] for c in started["children"]] == [
            ["term-0", "term-2"],
            ["term-1", "term-3"],
        ]
        wait_until(lambda: client.llen(keys["rec"]) >= 300, what="work in progress")
        code, out, err = sigterm(proc)
    finally:
        proc.kill()
    assert code == 0, err
    assert "Traceback" not in err
    assert all(gone(pid) for pid in pids), "a child outlived the parent"
    stopped = json_lines(out)[-1]
    assert stopped["event"] == "stopped" and stopped["signal"] == "SIGTERM"
    assert stopped["killed"] == []
    done = client.lrange(keys["rec"], 0, -1)
    assert len(done) < len(produced), "SIGTERM should have landed mid-stream"
    assert len(done) == len(set(done)) == stopped["processed"]
    assert not set(done) & pending_ids(client, key), "a finished entry was left unacked"


def test_parent_death_leaves_no_child_running(
    url: str, client: redis.Redis, keys: dict[str, str]
) -> None:
    key = keys["stream"]
    produce(client, key, 3000)
    proc = worker_cli(
        url, keys, "--processes", "2", "--name-prefix", "orphan",
        "--handler", "pool_handlers:record_slow", "--count", "25", "--reap-interval", "0",
    )  # fmt: skip
    try:
        pids = [c["pid"] for c in read_json_line(proc)["children"]]
        wait_until(lambda: client.llen(keys["rec"]) >= 200, what="work in progress")
        proc.kill()  # SIGKILL: the parent gets no chance to stop anyone
        proc.wait(10)
        # Orphans are reaped by whoever adopts them; a zombie is no longer running.
        wait_until(lambda: all(gone(p, zombie_ok=True) for p in pids), what="every child gone")
    finally:
        proc.kill()
        rest_of_output(proc, timeout=10)
    # Each child stopped gracefully on its own: what it finished is acked.
    done = set(client.lrange(keys["rec"], 0, -1))
    assert done and not done & pending_ids(client, key)


def test_child_that_cannot_stop_in_time_is_killed_and_named(
    url: str, client: redis.Redis, keys: dict[str, str]
) -> None:
    produce(client, keys["stream"], 10)
    proc = worker_cli(
        url, keys, "--processes", "1", "--name-prefix", "stuck", "--stop-timeout", "1",
        "--handler", "pool_handlers:hang_after_first", "--reap-interval", "0",
    )  # fmt: skip
    try:
        pid = read_json_line(proc)["children"][0]["pid"]
        wait_until(lambda: client.llen(keys["rec"]) >= 1, what="the handler to hang")
        code, out, err = sigterm(proc)
    finally:
        proc.kill()
    assert code == 1
    assert gone(pid)
    (line,) = [ln for ln in err.splitlines() if ln.startswith("redis-streaming: error:")]
    assert f"worker process 0 (pid {pid}: stuck-0" in line and "were killed" in line, err
    assert json_lines(out)[-1]["killed"], out


def test_processes_with_partitions_spread_the_leases(
    url: str, client: redis.Redis, keys: dict[str, str]
) -> None:
    base = keys["stream"]
    pstream = PartitionedStream(client, base, partitions=4, maxlen_approx=None)
    try:
        ids = pstream.produce_batch([(i, "job", {"n": i}) for i in range(400)])
        proc = worker_cli(
            url, keys, "--processes", "2", "--partitions", "4", "--name-prefix", "part",
            "--handler", "pool_handlers:record", "--reap-interval", "0",
        )  # fmt: skip
        try:
            started = read_json_line(proc)
            assert [c["consumers"] for c in started["children"]] == [["part-0-0"], ["part-1-0"]]
            held = next_event(
                proc,
                lambda e: e["event"] == "assignment"
                and sorted(p for ps in e["partitions"].values() for p in ps) == [0, 1, 2, 3]
                and all(e["partitions"].get(m) for m in ("part-0-0", "part-1-0")),
            )
            assert set(held["partitions"]) == {"part-0-0", "part-1-0"}
            # IDs of different partitions may be equal: count by stream, not by ID.
            lengths = pstream.lengths()

            def drained() -> bool:
                groups = [g for gs in pstream.info_groups_by_partition() for g in gs]
                read = [g.entries_read for g in groups]
                return read == lengths and all(g.pending == 0 for g in groups)

            wait_until(drained, what="every partition read and acked")
            code, out, err = sigterm(proc)
        finally:
            proc.kill()
        assert code == 0, err
        assert client.scard(keys["set"]) == len(set(ids))
        assert json_lines(out)[-1]["processed"] == len(ids)
    finally:
        pstream.delete()


# ---------------------------------------------------------------- the library


def test_worker_pool_restarts_and_serves_one_metrics_view(
    url: str,
    client: redis.Redis,
    keys: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RS_TEST_RECORD_URL", url)
    monkeypatch.setenv("RS_TEST_RECORD_KEY", keys["rec"])
    key = keys["stream"]
    produced = produce(client, key, 1000)
    events: list[PoolEvent] = []
    pool = WorkerPool(
        url, key, GROUP, "pool_handlers:record",
        processes=2, consumers=3, name_prefix="lib", group_start="0", block_ms=100,
        on_event=events.append, stream_options={"maxlen_approx": None},
    )  # fmt: skip
    stream = EventStream(client, key, maxlen_approx=None)
    metrics = StreamMetrics(stream, sources=[pool])
    with pool:
        assert pool.wait_ready(30)
        assert [c.consumers for c in pool.children()] == [("lib-0", "lib-2"), ("lib-1",)]
        wait_until(lambda: sum(s.processed for s in pool.statuses()) == 1000, what="counters")
        before = {s.name: s.processed for s in pool.statuses()}
        victim = pool.children()[1].pid
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: pool.children()[1].restarts == 1, what="a restart")
        wait_until(lambda: pool.children()[1].ready, what="the new child")
        child = pool.children()[1]
        assert child.last_exit == "killed by SIGKILL" and child.pid != victim
        assert gone(victim)
        # Counters carry over a restart: they never go backwards.
        assert {s.name: s.processed for s in pool.statuses()} == before
        body = metrics.render()[0].decode()
        for name in ("lib-0", "lib-1", "lib-2"):
            assert f'consumer="{name}",group="{GROUP}",stream="{key}"' in body
        series = [
            ln for ln in body.splitlines() if ln.startswith("redis_streaming_processed_total{")
        ]
        assert sum(float(ln.rsplit(" ", 1)[1]) for ln in series) == 1000.0
        wait_until(lambda: all(s.alive for s in pool.statuses()), what="every consumer alive")
        assert pool.stop(10) == []
    assert set(client.smembers(keys["set"])) == set(produced)
    assert [e.kind for e in events if e.child == 1].count("exited") == 1
    assert not pool.running
