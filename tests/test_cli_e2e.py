"""End to end through the ``redis-streaming`` command: real processes, real signals, real servers.

SIGTERM must leave nothing unacked that a worker finished; SIGKILL at random moments must still
end with every produced ID processed at least once and an empty PEL (duplicates are reported).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from redis_streaming import EmbeddedServer, EventStream
from test_cli import (
    ROOT,
    cli_env,
    json_lines,
    read_json_line,
    rest_of_output,
    start_cli,
    wait_until,
)

RESULTS = ROOT / "test-output" / "at_least_once.json"


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


def pending_ids(client: redis.Redis, key: str, group: str) -> set[str]:
    rows = client.xpending_range(key, group, "-", "+", 1_000_000)
    return {row["message_id"] for row in rows}


def pel_size(client: redis.Redis, key: str, group: str) -> int:
    return int(client.xpending(key, group)["pending"])


def stop(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    """SIGTERM, then the exit code, remaining stdout and stderr."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        out, err = rest_of_output(proc, timeout=30)
    finally:
        proc.kill()
    return proc.returncode, out, err


def test_worker_sigterm_leaves_nothing_unacked_it_finished(
    url: str, client: redis.Redis, keys: dict[str, str]
) -> None:
    key = keys["stream"]
    stream = EventStream(client, key, maxlen_approx=None)
    produced = stream.produce_batch([("job", {"n": i}) for i in range(3000)])
    env = cli_env(RS_TEST_RECORD_URL=url, RS_TEST_RECORD_KEY=keys["rec"])
    args = [
        "--redis-url", url, "--stream-key", key, "--group", "jobs", "--consumers", "2",
        "--name-prefix", "term", "--handler", "handlers:record_slow", "--group-start", "0",
        "--count", "25", "--block-ms", "100", "--reap-interval", "0",
    ]  # fmt: skip
    proc = start_cli("worker", *args, env=env)
    try:
        assert read_json_line(proc)["event"] == "started"
        wait_until(lambda: client.llen(keys["rec"]) >= 300, what="work in progress")
        code, out, err = stop(proc)
    finally:
        proc.kill()
    assert code == 0, err
    assert "Traceback" not in err
    stopped = json_lines(out)[-1]
    assert stopped["event"] == "stopped" and stopped["signal"] == "SIGTERM"

    done = client.lrange(keys["rec"], 0, -1)
    assert len(done) < len(produced), "SIGTERM should have landed mid-stream"
    assert len(done) == len(set(done)) == stopped["processed"]
    unacked = pending_ids(client, key, "jobs")
    assert not set(done) & unacked, "a finished entry was left unacked"
    # Whatever is still pending was read but never handled, so a restart owes exactly that.
    proc = start_cli("worker", *args, env=env)
    try:
        wait_until(lambda: client.scard(keys["set"]) == len(produced), what="the rest")
        wait_until(lambda: pel_size(client, key, "jobs") == 0, what="an empty PEL")
        code, _out, err = stop(proc)
    finally:
        proc.kill()
    assert code == 0, err
    assert set(client.smembers(keys["set"])) == set(produced)


@pytest.mark.slow
def test_at_least_once_under_sigkill(
    url: str,
    client: redis.Redis,
    keys: dict[str, str],
    server: EmbeddedServer,
    tmp_path: Path,
) -> None:
    """20,000 events; two `worker` processes (two consumers each) SIGKILLed and restarted."""
    total, kills = 20_000, 8
    seed = int(os.environ.get("RS_CHAOS_SEED", "20261125"))
    rng = random.Random(seed)
    key, group = keys["stream"], "ledger"
    client.xgroup_create(key, group, id="0", mkstream=True)
    env = cli_env(RS_TEST_RECORD_URL=url, RS_TEST_RECORD_KEY=keys["rec"])
    base = ["--redis-url", url, "--stream-key", key]

    def worker(prefix: str) -> subprocess.Popen[str]:
        return start_cli(
            "worker", *base, "--group", group, "--consumers", "2", "--name-prefix", prefix,
            "--handler", "handlers:record", "--count", "50", "--block-ms", "200",
            "--reap-interval", "0.5", "--claim-idle-ms", "500", "--max-deliveries", "0",
            env=env,
        )  # fmt: skip

    prefixes = ["alpha", "beta"]
    workers = {p: worker(p) for p in prefixes}
    started = time.monotonic()
    # The IDs go to a file: a pipe nobody reads until the end would fill up and stall it.
    ids_file = tmp_path / "produced.txt"
    produce = [sys.executable, "-m", "redis_streaming", "produce", *base, "-n", str(total)]
    with ids_file.open("w") as ids_out:
        producer = subprocess.Popen(
            [*produce, "--batch", "50", "--rate", "2500", "--ids"],
            stdout=ids_out,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
    kill_log: list[dict[str, Any]] = []
    try:
        # Kill at random points of progress (by processed count), not after guessed delays.
        for threshold in sorted(rng.sample(range(total // 20, total * 19 // 20), kills)):
            wait_until(
                lambda t=threshold: client.scard(keys["set"]) >= t,
                timeout=90,
                what=f"{threshold} entries processed",
            )
            victim = rng.choice(prefixes)
            workers[victim].send_signal(signal.SIGKILL)
            workers[victim].wait(10)
            kill_log.append(
                {"at_processed": threshold, "victim": victim, "pel": pel_size(client, key, group)}
            )
            workers[victim] = worker(victim)  # same names: it replays its own PEL first
        _out, err = producer.communicate(timeout=90)
        assert producer.returncode == 0, err
        produced = ids_file.read_text().split()
        assert len(produced) == total == client.xlen(key)

        wait_until(
            lambda: client.scard(keys["set"]) == total and pel_size(client, key, group) == 0,
            timeout=90,
            what="every entry processed and the PEL drained",
        )
        seconds = time.monotonic() - started
        # A worker restarted just before the end may still be importing: a SIGTERM then
        # would meet Python's default handler (exit -15) instead of the worker's own.
        for proc in workers.values():
            assert read_json_line(proc, timeout=60)["event"] == "started"
    finally:
        producer.kill()
        results = [stop(p) for p in workers.values()]
    for code, _out, err in results:
        assert code == 0, err

    processed = client.lrange(keys["rec"], 0, -1)
    counts = Counter(processed)
    assert set(counts) == set(produced), "some produced IDs were never processed"
    assert pel_size(client, key, group) == 0
    assert client.xlen(keys["dlq"]) == 0
    duplicates = sum(n - 1 for n in counts.values())
    report = {
        "server": server.kind,
        "seed": seed,
        "produced": total,
        "processed_distinct": len(counts),
        "deliveries_processed": len(processed),
        "duplicates": duplicates,
        "entries_processed_more_than_once": sum(1 for n in counts.values() if n > 1),
        "kills": kill_log,
        "seconds": round(seconds, 1),
    }
    print(f"\nat-least-once on {server.kind}: {duplicates} duplicates, {len(kill_log)} SIGKILLs")
    RESULTS.parent.mkdir(exist_ok=True)
    try:
        previous = json.loads(RESULTS.read_text())
    except (OSError, ValueError):
        previous = {}
    previous[server.kind] = report
    RESULTS.write_text(json.dumps(previous, indent=2) + "\n")
