"""Worker processes: a CPU-bound handler (~200 us of pure Python per entry) drained by one
WorkerPool process vs two, side by side in one run (rounds interleaved), with where the time goes.

It measures and asserts nothing. In ``python -m bench`` it is the ``processes`` scenario; alone:
``python -m bench.processes [--entries N] [--repeat R] [--smoke]`` (starts its own Valkey).
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from redis_streaming import Entry, EventStream, WorkerPool

from ._common import Row, Scale, Server, fresh_key, sample_events, start_server

HANDLER_US = 200.0
GROUP = "bench"
RESULTS = Path(__file__).resolve().parent / "results" / "processes.json"


def burn(iterations: int, entry: Entry) -> None:
    """The handler: a fixed amount of pure-Python arithmetic (holds the GIL all along)."""
    x = 0
    for i in range(iterations):
        x += i * i % 7


def calibrate(target_us: float = HANDLER_US) -> tuple[int, float]:
    """Iterations of :func:`burn` that cost ``target_us`` of CPU here; and the measured cost."""
    iterations = 1000
    for _ in range(3):
        samples = []
        for _ in range(15):
            started = time.process_time()
            for _ in range(20):
                burn(iterations, None)  # type: ignore[arg-type]
            samples.append((time.process_time() - started) / 20 * 1e6)
        per = statistics.median(samples)
        iterations = max(1, round(iterations * target_us / per))
    started = time.process_time()
    for _ in range(200):
        burn(iterations, None)  # type: ignore[arg-type]
    return iterations, (time.process_time() - started) / 200 * 1e6


@dataclass
class Drain:
    processes: int
    entries: int
    seconds: float
    produce_s: float
    startup_s: float
    children_cpu_s: float
    server_cpu_s: float
    machine_busy_s: float
    load_1min: float


def _cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system
    return total


def _busy() -> float:
    t = psutil.cpu_times()
    return float(t.user + t.system + t.nice + getattr(t, "irq", 0) + getattr(t, "softirq", 0))


def drain(server: Server, processes: int, entries: int, iterations: int) -> Drain:
    """Start a pool, wait until its children are ready, then time producing ``entries`` and
    the pool acking every one of them."""
    client = server.client()
    key = fresh_key(f"procs{processes}")
    stream = EventStream(client, key, maxlen_approx=None)
    stream.ensure_group(GROUP, "$")
    pool = WorkerPool(
        server.url, key, GROUP, functools.partial(burn, iterations),
        processes=processes, consumers=processes, name_prefix=f"bench{processes}",
        block_ms=100, reap_interval=None, max_deliveries=None, forward_logs=False,
        stream_options={"maxlen_approx": None},
    )  # fmt: skip
    started = time.perf_counter()
    pool.start()
    try:
        if not pool.wait_ready(60):
            raise RuntimeError("worker processes did not start")
        startup = time.perf_counter() - started
        pids = [c.pid for c in pool.children() if c.pid is not None]
        server_pid = server.embedded.pid
        cpu0, srv0, busy0 = _cpu(pids), _cpu([server_pid] if server_pid else []), _busy()
        chunk = sample_events(1000)
        t0 = time.perf_counter()
        left = entries
        while left > 0:
            stream.produce_batch(chunk[: min(1000, left)])
            left -= 1000
        produced = time.perf_counter() - t0
        while True:
            (g,) = [g for g in stream.info_groups() if g.name == GROUP]
            if g.entries_read == entries and g.pending == 0:
                break
            time.sleep(0.005)
        seconds = time.perf_counter() - t0
        cpu1, srv1, busy1 = _cpu(pids), _cpu([server_pid] if server_pid else []), _busy()
    finally:
        pool.stop(10)
        stream.delete_stream()
        client.close()
    return Drain(
        processes, entries, seconds, produced, startup, cpu1 - cpu0, srv1 - srv0, busy1 - busy0,
        psutil.getloadavg()[0],
    )  # fmt: skip


def measure(server: Server, entries: int, repeat: int) -> dict[str, Any]:
    """``repeat`` rounds, each draining with 1 then 2 processes (alternating which goes first)."""
    iterations, handler_us = calibrate()
    rounds: list[dict[str, Drain]] = []
    for r in range(repeat):
        order = (1, 2) if r % 2 == 0 else (2, 1)
        got = {str(p): drain(server, p, entries, iterations) for p in order}
        rounds.append(got)
    return {
        "entries": entries,
        "repeat": repeat,
        "iterations": iterations,
        "handler_us": handler_us,
        "cpus": psutil.cpu_count(),
        "rounds": [{k: asdict(v) for k, v in got.items()} for got in rounds],
    }


def summarize(m: dict[str, Any]) -> dict[str, Any]:
    """Medians per variant, the per-round speed-up, and where each variant's time goes."""
    out: dict[str, Any] = {"handler_us": m["handler_us"], "entries": m["entries"]}
    speedups = [r["1"]["seconds"] / r["2"]["seconds"] for r in m["rounds"]]
    out["speedup_median"] = statistics.median(speedups)
    out["speedups"] = speedups
    n = m["entries"]
    for p in ("1", "2"):
        runs = [r[p] for r in m["rounds"]]
        med = statistics.median(x["seconds"] for x in runs)
        cpu = statistics.median(x["children_cpu_s"] for x in runs)
        out[p] = {
            "seconds": med,
            "events_per_s": n / med,
            "startup_s": statistics.median(x["startup_s"] for x in runs),
            "produce_s": statistics.median(x["produce_s"] for x in runs),
            "children_cpu_s": cpu,
            "handler_cpu_s": n * m["handler_us"] / 1e6,
            "overhead_us_per_entry": (cpu - n * m["handler_us"] / 1e6) / n * 1e6,
            "server_cpu_s": statistics.median(x["server_cpu_s"] for x in runs),
            "machine_busy_s": statistics.median(x["machine_busy_s"] for x in runs),
            "children_cores": cpu / med,
            "cpu_us_per_entry": cpu / n * 1e6,
            "others_busy_cores": statistics.median(
                (x["machine_busy_s"] - x["children_cpu_s"] - x["server_cpu_s"]) / x["seconds"]
                for x in runs
            ),
            "load_1min": statistics.median(x["load_1min"] for x in runs),
        }
    # wall speed-up = (cores the children got, 2 vs 1) x (CPU per entry, 1 vs 2)
    out["cores_ratio"] = out["2"]["children_cores"] / out["1"]["children_cores"]
    out["cpu_ratio"] = out["1"]["cpu_us_per_entry"] / out["2"]["cpu_us_per_entry"]
    return out


def run(server: Server, scale: Scale) -> list[Row]:
    """The ``processes`` scenario of ``python -m bench``."""
    entries = 400 if scale.smoke else 20_000
    repeat = 1 if scale.smoke else max(5, scale.repeat)
    s = summarize(measure(server, entries, repeat))
    note = (
        f"CPU-bound handler of {s['handler_us']:.0f} us/entry (pure Python), {entries} entries "
        f"per drain, rounds interleaved; the speed-up is the median of per-round ratios"
    )
    rows = [
        Row("processes", server.kind, label, s[p]["events_per_s"], "events/s", entries, [], note)
        for p, label in (("1", "1 process"), ("2", "2 processes"))
    ]
    speedup, ratio = "speed-up, 2 vs 1 processes", s["speedup_median"]
    rows.append(
        Row("processes", server.kind, speedup, ratio, "x", entries, s["speedups"], note)
    )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.processes", description=__doc__)
    parser.add_argument("--entries", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--smoke", action="store_true", help="400 entries, one round")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    entries, repeat = (400, 1) if args.smoke else (args.entries, args.repeat)
    with start_server("valkey") as server:
        m = measure(server, entries, repeat)
    m["summary"] = summarize(m)
    m["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    m["load_before"] = psutil.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(m, indent=1))
    print(json.dumps(m["summary"], indent=1))
    print(f"results written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
