"""Memory scenario: peak RSS of a worker draining N entries and of iter_replay over N entries.

Each measurement runs in a fresh subprocess (``python -m bench.memory MODE URL KEY N``), RSS
sampled every 5 ms with psutil, so one run's allocations cannot hide another's. It must not
hold entries itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

from ._common import Row, Scale, Server, fill, fresh_key


def _rss_mb() -> float:
    import psutil

    return float(psutil.Process().memory_info().rss) / 2**20


def _sampler(peak: list[float], stop: threading.Event) -> None:
    while not stop.wait(0.005):
        peak[0] = max(peak[0], _rss_mb())


def child(mode: str, url: str, key: str, n: int) -> dict[str, float]:
    """Runs inside the subprocess: drain or replay, then report RSS figures as JSON."""
    import redis

    from redis_streaming import ConsumerWorker, EventStream

    client = redis.Redis.from_url(url, decode_responses=True)
    stream = EventStream(client, key, maxlen_approx=None)
    client.ping()
    baseline = _rss_mb()
    peak = [baseline]
    stop = threading.Event()
    sampler = threading.Thread(target=_sampler, args=(peak, stop), daemon=True)
    sampler.start()
    start = time.perf_counter()
    seen = 0
    if mode == "worker":
        worker = ConsumerWorker(stream, "g", "mem", count=100, block_ms=100).start()
        deadline = time.monotonic() + 900
        while worker.processed < n and time.monotonic() < deadline:
            time.sleep(0.01)
        worker.stop(10)
        seen = worker.processed
    else:
        for _entry in stream.iter_replay():
            seen += 1
    elapsed = time.perf_counter() - start
    stop.set()
    sampler.join()
    peak[0] = max(peak[0], _rss_mb())
    return {"baseline_mb": baseline, "peak_mb": peak[0], "seen": seen, "seconds": elapsed}


def _measure(server: Server, mode: str, key: str, n: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.memory", mode, server.url, key, str(n)],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=1200,
        check=True,
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def run(server: Server, scale: Scale) -> list[Row]:
    rows: list[Row] = []
    client = server.client()
    for n in scale.memory_sizes:
        key = fresh_key("mem")
        fill(client, key, n)
        for mode, label in (("worker", "ConsumerWorker drain"), ("replay", "iter_replay")):
            result = _measure(server, mode, key, n)
            grew = result["peak_mb"] - result["baseline_mb"]
            note = (
                f"{label}: baseline {result['baseline_mb']:.1f} MB, +{grew:.1f} MB while working;"
                f" {int(result['seen'])} entries in {result['seconds']:.1f}s"
            )
            rows.append(
                Row(
                    "memory",
                    server.kind,
                    f"{label} peak RSS, {n:,} entries",
                    result["peak_mb"],
                    "MB",
                    n,
                    [result["baseline_mb"]],
                    note,
                )
            )
        client.delete(key)
    return rows


if __name__ == "__main__":
    print(json.dumps(child(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))))
