"""``python -m bench``: run the benchmark scenarios against private servers and write results.

It starts its own servers (embedded Valkey; Redis 7 when installed), never uses port 6379, and
reports events/s with ratios measured in the same run. ``--smoke`` only checks that it all runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from . import (
    ackdel,
    asyncio_api,
    consume,
    latency,
    memory,
    partitions,
    processes,
    produce,
    recovery,
    report,
)
from . import profile as profiling
from ._common import Row, Scale, Server, available_servers, start_server

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS: dict[str, Callable[[Server, Scale], list[Row]]] = {
    "produce": produce.run,
    "consume": consume.run,
    "latency": latency.run,
    "recovery": recovery.run,
    "memory": memory.run,
    "async": asyncio_api.run,
    "processes": processes.run,
    "partition": partitions.run,
    "ackdel": ackdel.run,
}

TEMPLATE = (
    """# Performance

How fast redis-streaming produces and consumes, measured side by side with raw redis-py and
peer libraries in the same run. Re-run with `make bench` (or `python -m bench`); it starts its own
private servers. Ratios matter more than absolute numbers: the machine is shared, so every ratio
compares two figures taken minutes apart under the same noise.

![events/s by variant](performance.png)

"""
    + report.BEGIN
    + "\n"
    + report.END
    + "\n"
)


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {platform.system()} {platform.release()}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny sizes, one repeat, Valkey only: checks every scenario runs",
    )
    parser.add_argument(
        "--scenarios",
        default=",".join([*SCENARIOS, "profile"]),
        help="comma-separated subset of: " + ", ".join([*SCENARIOS, "profile"]),
    )
    parser.add_argument(
        "--servers",
        default=None,
        help="comma-separated: valkey, redis7, redis8 (default: all installed; smoke: valkey)",
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs per throughput figure; the median is reported"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="results JSON (default: docs/performance.json, smoke: a temp file)",
    )
    parser.add_argument(
        "--no-docs",
        action="store_true",
        help="do not rewrite docs/PERFORMANCE.md and docs/performance.png",
    )
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error(f"--repeat must be >= 1, got {args.repeat}")
    wanted = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in SCENARIOS and s != "profile"]
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(unknown)}")
    args.scenario_list = wanted
    installed = available_servers()
    servers = (
        [s.strip() for s in args.servers.split(",") if s.strip()]
        if args.servers
        else (["valkey"] if args.smoke else installed)
    )
    missing = [s for s in servers if s not in ("valkey", "redis7", "redis8")]
    if missing:
        parser.error(f"unknown server kind(s): {', '.join(missing)}")
    absent = [s for s in servers if s not in installed]
    if absent:
        parser.error(f"server kind(s) not installed: {', '.join(absent)} (make bench adds them)")
    args.server_list = servers
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    scale = Scale.tiny() if args.smoke else Scale.full(args.repeat)
    out = args.out or (
        Path(tempfile.gettempdir()) / "redis-streaming-bench-smoke.json"
        if args.smoke
        else ROOT / "docs" / "performance.json"
    )
    meta: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": _machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "redis-py": _version("redis"),
        "hiredis": _version("hiredis"),
        "faststream": _version("faststream"),
        "walrus": _version("walrus"),
        "command": "python -m bench" + (" --smoke" if args.smoke else ""),
        "smoke": args.smoke,
        "servers": {},
    }
    rows: list[Row] = []
    profile: dict[str, str] = {}
    for kind in args.server_list:
        with start_server(kind) as server:
            meta["servers"][kind] = server.version
            print(f"== {kind} {server.version} on port {server.port}", flush=True)
            for name in args.scenario_list:
                if name == "profile":
                    if kind == args.server_list[0]:
                        print("   profile ...", flush=True)
                        profile = profiling.run(server, scale)
                    continue
                if name in ("memory", "processes") and kind != args.server_list[0]:
                    continue  # both are about the client processes; one server is enough
                started = time.perf_counter()
                got = SCENARIOS[name](server, scale)
                rows.extend(got)
                print(
                    f"   {name}: {len(got)} figures in {time.perf_counter() - started:.1f}s",
                    flush=True,
                )
                for row in got:
                    print(f"     {row.name}: {row.value:,.2f} {row.unit}", flush=True)
    results = {"meta": meta, "results": [r.as_dict() for r in rows], "profile": profile}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(f"results written to {out}")
    if not args.smoke and not args.no_docs:
        docs = ROOT / "docs"
        report.chart(results["results"], docs / "performance.png")
        report.write_doc(results, docs / "PERFORMANCE.md", TEMPLATE)
        print(f"wrote {docs / 'PERFORMANCE.md'} and {docs / 'performance.png'}")
    if args.smoke:
        # Smoke still renders the chart and tables, into a temp dir, so they cannot rot either.
        tmp = Path(tempfile.mkdtemp(prefix="bench-smoke-"))
        report.chart(results["results"], tmp / "performance.png")
        report.write_doc(results, tmp / "PERFORMANCE.md", TEMPLATE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
