"""Scaling benchmark: produce and consume events/s on a 1-shard vs a 3-shard local Redis Cluster.

It starts its own clusters (never port 6379) and reports where CPU time goes; it asserts nothing.
Run: ``python -m bench.scaling`` (``--smoke`` for a quick check, ``--events N`` to size it).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from redis_streaming import LocalCluster, PartitionedConsumerPool, PartitionedStream

from . import partitions as side

PRODUCERS = 2  # one per core of this machine
CONSUMERS = 2
BATCH = 500
PARTITIONS = 6
GROUP = "bench"
RESULTS = Path(__file__).resolve().parent / "results" / "scaling.json"


@dataclass
class PhaseResult:
    shards: int
    phase: str
    events: int
    seconds: float
    events_per_s: float
    client_cpu_s: float
    server_cpu_s: list[float]
    machine_cpu_pct: float
    #: busy core-seconds of the whole machine during the phase (clients, servers and the rest)
    machine_busy_s: float
    other_busy_s: float
    #: kernel time spent on (mostly loopback) network interrupts, part of "other"
    softirq_s: float
    #: the busiest processes on the machine during the phase: (description, CPU seconds)
    top_processes: list[tuple[str, float]]


def _cluster(url: str) -> Any:
    from redis.cluster import RedisCluster

    return RedisCluster.from_url(url, decode_responses=True)


def _produce(url: str, base: str, start: int, count: int, ready: Any, go: Any) -> float:
    client = _cluster(url)
    ps = PartitionedStream(client, base, partitions=PARTITIONS, maxlen_approx=None)
    batches = [
        [
            (f"order-{n}", "created", {"n": n, "amount": n % 100})
            for n in range(i, min(i + BATCH, start + count))
        ]
        for i in range(start, start + count, BATCH)
    ]
    ready.set()
    go.wait()
    cpu = time.process_time()
    for batch in batches:
        ps.produce_batch(batch)
    return time.process_time() - cpu


def _consume(url: str, base: str, name: str, ready: Any, go: Any, done: Any) -> float:
    client = _cluster(url)
    ps = PartitionedStream(client, base, partitions=PARTITIONS, maxlen_approx=None)
    pool = PartitionedConsumerPool(
        ps,
        GROUP,
        consumers=1,
        handler=None,
        name_prefix=name,
        group_start="0",
        count=200,
        block_ms=100,
        reap_interval=None,
    )
    ready.set()
    go.wait()
    cpu = time.process_time()
    pool.start()
    done.wait()
    pool.stop()
    return time.process_time() - cpu


def _proc_cpu() -> dict[int, tuple[str, float]]:
    out = {}
    for proc in psutil.process_iter(["name", "cmdline", "cpu_times"]):
        try:
            t = proc.info["cpu_times"]
            cmd = " ".join((proc.info["cmdline"] or [])[:3])[-60:] or proc.info["name"]
            out[proc.pid] = (cmd, t.user + t.system)
        except (psutil.Error, TypeError, AttributeError):
            continue
    return out


def _top(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]
) -> list[tuple[str, float]]:
    deltas = [
        (f"{name} [{pid}]", round(cpu - before.get(pid, (name, 0.0))[1], 2))
        for pid, (name, cpu) in after.items()
    ]
    return sorted(deltas, key=lambda d: -d[1])[:6]


def _softirq() -> float:
    return float(getattr(psutil.cpu_times(), "softirq", 0.0))


def _busy() -> float:
    t = psutil.cpu_times()
    return float(t.user + t.system + getattr(t, "nice", 0.0) + getattr(t, "softirq", 0.0))


def _server_cpu(lc: LocalCluster) -> list[float]:
    out = []
    for node in lc.masters():
        pid = node.server.pid
        if pid is not None:
            t = psutil.Process(pid).cpu_times()
            out.append(t.user + t.system)
    return out


def _phase(
    lc: LocalCluster, shards: int, phase: str, events: int, base: str, ps: PartitionedStream
) -> PhaseResult:
    ctx = mp.get_context("spawn")
    manager = ctx.Manager()
    go, done = manager.Event(), manager.Event()
    readies = [manager.Event() for _ in range(PRODUCERS if phase == "produce" else CONSUMERS)]
    url = lc.url
    with ctx.Pool(len(readies)) as procs:
        if phase == "produce":
            share = events // PRODUCERS
            jobs = [
                procs.apply_async(_produce, (url, base, i * share, share, readies[i], go))
                for i in range(PRODUCERS)
            ]
        else:
            jobs = [
                procs.apply_async(_consume, (url, base, f"c{i}", readies[i], go, done))
                for i in range(CONSUMERS)
            ]
        for r in readies:
            r.wait(60)
        cpu_before = _server_cpu(lc)
        busy_before = _busy()
        irq_before = _softirq()
        procs_before = _proc_cpu()
        psutil.cpu_percent(None)
        start = time.perf_counter()
        go.set()
        if phase == "produce":
            client_cpu = sum(j.get(600) for j in jobs)
            seconds = time.perf_counter() - start
        else:
            while True:
                groups = ps.info_groups()
                if groups and groups[0].lag == 0 and groups[0].pending == 0:
                    break
                time.sleep(0.02)
            seconds = time.perf_counter() - start
            done.set()
            client_cpu = sum(j.get(60) for j in jobs)
        machine = psutil.cpu_percent(None)
        busy = _busy() - busy_before
        irq = _softirq() - irq_before
        top = _top(procs_before, _proc_cpu())
        server = [round(b - a, 2) for a, b in zip(cpu_before, _server_cpu(lc), strict=True)]
    manager.shutdown()
    return PhaseResult(
        shards=shards,
        phase=phase,
        events=events,
        seconds=round(seconds, 3),
        events_per_s=round(events / seconds),
        client_cpu_s=round(client_cpu, 2),
        server_cpu_s=server,
        machine_cpu_pct=machine,
        machine_busy_s=round(busy, 2),
        other_busy_s=round(busy - client_cpu - sum(server), 2),
        softirq_s=round(irq, 2),
        top_processes=top,
    )


def run(events: int, shard_counts: tuple[int, ...] = (1, 3), repeat: int = 1) -> list[PhaseResult]:
    """Each shard count: ``repeat`` rounds of produce-then-consume on a fresh partitioned stream."""
    results = []
    for shards in shard_counts:
        with LocalCluster(shards) as lc:
            # {p0}..{p5} hash 4/1/1 onto 3 masters; move slots so each master gets 2.
            keys = PartitionedStream(None, "x", partitions=PARTITIONS).keys
            moved = lc.spread(keys)
            print(f"{shards} shard(s): moved {moved} partition slots to spread them", flush=True)
            client = lc.client()
            for _ in range(repeat):
                base = f"scale{uuid.uuid4().hex[:6]}"
                ps = PartitionedStream(client, base, partitions=PARTITIONS, maxlen_approx=None)
                ps.ensure_group(GROUP, "0")
                for phase in ("produce", "consume"):
                    res = _phase(lc, shards, phase, events, base, ps)
                    _print(res)
                    results.append(res)
                ps.delete()
            client.close()
    return results


def _print(res: PhaseResult) -> None:
    print(
        f"{res.shards} shard(s) {res.phase:8s} {res.events_per_s:>8,d} events/s "
        f"({res.seconds:.2f}s; client CPU {res.client_cpu_s:.1f}s, "
        f"server CPU {res.server_cpu_s}, machine busy {res.machine_busy_s:.1f}s "
        f"of which other {res.other_busy_s:.1f}s, softirq {res.softirq_s:.1f}s)",
        flush=True,
    )
    for name, cpu in res.top_processes:
        print(f"    {cpu:6.2f}s  {name}")


def summary(results: list[PhaseResult]) -> list[dict[str, Any]]:
    """Best and median events/s per (shards, phase): the best is the least disturbed round."""
    rows = []
    for key in sorted({(r.shards, r.phase) for r in results}):
        rates = sorted(r.events_per_s for r in results if (r.shards, r.phase) == key)
        rows.append(
            {
                "shards": key[0],
                "phase": key[1],
                "best": rates[-1],
                "median": rates[len(rates) // 2],
                "rounds": len(rates),
            }
        )
    return rows


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def compare(events: int, repeat: int) -> dict[str, Any]:
    """The issue's ratios, side by side in one process (interleaved rounds, medians).

    1 node (a 1-master cluster's node through a plain ``redis.Redis``): PartitionedStream vs
    EventStream produce_batch, and the pool vs one ConsumerWorker. 3 masters (slots spread
    2/2/2): PartitionedStream.produce_batch vs redis-py's RedisCluster pipeline doing the same
    XADDs, and the pool's client CPU per event there vs on the single node.
    """
    samples: dict[str, list[tuple[float, float]]] = {}  # name -> [(events/s, µs CPU/event)]

    def record(name: str, measured: tuple[int, float, float]) -> None:
        done, seconds, cpu = measured
        samples.setdefault(name, []).append((done / seconds, cpu / max(done, 1) * 1e6))

    with LocalCluster(1) as one, LocalCluster(3) as three:
        three.spread(PartitionedStream(None, "x", partitions=side.PARTITIONS).keys)
        single = one.masters()[0].client(decode_responses=True)
        cluster = three.client()
        for _ in range(repeat):
            record("1 node: EventStream.produce_batch", side.produce_stream(single, events))
            record(
                "1 node: PartitionedStream.produce_batch", side.produce_partitioned(single, events)
            )
            record(
                "3 masters: PartitionedStream.produce_batch",
                side.produce_partitioned(cluster, events),
            )
            record(
                "3 masters: RedisCluster pipeline XADDs",
                side.produce_cluster_pipeline(cluster, events),
            )
            record("1 node: ConsumerWorker", side.consume_worker(single, events))
            record("1 node: PartitionedConsumerPool", side.consume_pool(single, events))
            record("3 masters: PartitionedConsumerPool", side.consume_pool(cluster, events))
        cluster.close()
        single.close()
    rows = {
        name: {
            "events_per_s": round(_median([r for r, _ in got])),
            "client_cpu_us_per_event": round(_median([c for _, c in got]), 2),
            "rounds": [[round(r), round(c, 2)] for r, c in got],
        }
        for name, got in samples.items()
    }

    def ratio(a: str, b: str, what: str = "events_per_s") -> float:
        pairs = zip(samples[a], samples[b], strict=True)
        index = 0 if what == "events_per_s" else 1
        return round(_median([x[index] / y[index] for x, y in pairs]), 2)

    ratios = {
        "produce, 1 node: PartitionedStream / EventStream (events/s)": ratio(
            "1 node: PartitionedStream.produce_batch", "1 node: EventStream.produce_batch"
        ),
        "produce, 3 masters: PartitionedStream / RedisCluster pipeline (events/s)": ratio(
            "3 masters: PartitionedStream.produce_batch", "3 masters: RedisCluster pipeline XADDs"
        ),
        "consume, 1 node: pool / ConsumerWorker (events/s)": ratio(
            "1 node: PartitionedConsumerPool", "1 node: ConsumerWorker"
        ),
        "consume: pool client CPU per event, 3 masters / 1 node": ratio(
            "3 masters: PartitionedConsumerPool", "1 node: PartitionedConsumerPool", "cpu"
        ),
    }
    print(f"\nside by side ({repeat} interleaved rounds, medians; {events:,} events each):")
    for name, row in rows.items():
        print(
            f"  {name:48s} {row['events_per_s']:>9,d} events/s  "
            f"{row['client_cpu_us_per_event']:5.2f} µs client CPU/event"
        )
    for name, value in ratios.items():
        print(f"  {name:76s} {value:.2f}")
    return {"rows": rows, "ratios": ratios}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scaling", description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--smoke", action="store_true", help="2,000 events, just check it runs")
    parser.add_argument("--repeat", type=int, default=3, help="rounds per shard count")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    events = 2_000 if args.smoke else args.events
    print(
        f"scaling: {events:,} events, {PARTITIONS} partitions, {PRODUCERS} producer and "
        f"{CONSUMERS} consumer processes, {os.cpu_count()} CPUs",
        flush=True,
    )
    side_by_side = compare(events, 1 if args.smoke else max(1, args.repeat))
    results = run(events, repeat=1 if args.smoke else max(1, args.repeat))
    rows = summary(results)
    print("\nshards  phase     best events/s  median events/s  (rounds)")
    for row in rows:
        print(
            f"{row['shards']:>6}  {row['phase']:8s} {row['best']:>14,d} {row['median']:>16,d}"
            f"  ({row['rounds']})"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    doc = {"side_by_side": side_by_side, "summary": rows, "rounds": [asdict(r) for r in results]}
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
