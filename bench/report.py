"""Turn a results file into docs/PERFORMANCE.md tables and the docs/performance.png chart.

Pure formatting over the JSON written by ``python -m bench``; it never measures anything.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from .partitions import NAMES as PARTITION_ROWS

RAW_BATCHED = "raw redis-py XREADGROUP COUNT 100 + one XACK per batch"
WORKER = "ConsumerWorker, default settings"
RAW_PIPE = "raw redis-py pipelined XADD x100"
BATCH = "produce_batch() x100"
FS_DEFAULT = "FastStream StreamSub group, default"
FS_BATCH = "FastStream StreamSub group, batch=True max_records=100"
A_RAW = "raw redis.asyncio XREADGROUP COUNT 100 + one XACK per batch"
A_WORKER = "AsyncConsumerWorker, default settings"
A_RAW_PIPE = "raw redis.asyncio pipeline, 100 XADDs per round trip"
A_BATCH = "AsyncEventStream.produce_batch x100"


def _value(rows: list[dict[str, Any]], server: str, scenario: str, name: str) -> float | None:
    for row in rows:
        if row["server"] == server and row["scenario"] == scenario and row["name"] == name:
            return float(row["value"])
    return None


def _fmt(value: float, unit: str) -> str:
    if unit == "events/s":
        return f"{value:,.0f}"
    if unit == "ms":
        return f"{value:.2f}" if value < 100 else f"{value:.0f}"
    return f"{value:.1f}"


def _row(
    rows: list[dict[str, Any]], server: str, scenario: str, name: str
) -> dict[str, Any] | None:
    for row in rows:
        if row["server"] == server and row["scenario"] == scenario and row["name"] == name:
            return row
    return None


def round_ratios(
    rows: list[dict[str, Any]], server: str, scenario: str, a: str, b: str
) -> list[float]:
    """Per-round ratios of ``a`` to ``b`` (empty unless both ran in the same rounds)."""
    ra, rb = _row(rows, server, scenario, a), _row(rows, server, scenario, b)
    if ra is None or rb is None:
        return []
    xs, ys = ra.get("samples") or [], rb.get("samples") or []
    if len(xs) != len(ys) or not all(ys):
        return []
    return [x / y for x, y in zip(xs, ys, strict=True)]


def ratio(rows: list[dict[str, Any]], server: str, scenario: str, a: str, b: str) -> float | None:
    """``a`` relative to ``b``: the median of per-round ratios when both ran in the same rounds
    (each pair was measured seconds apart, so load changes cancel), else the ratio of values."""
    ra, rb = _row(rows, server, scenario, a), _row(rows, server, scenario, b)
    if ra is None or rb is None or not rb["value"]:
        return None
    paired = round_ratios(rows, server, scenario, a, b)
    if len(paired) >= 2:
        return float(statistics.median(paired))
    return float(ra["value"]) / float(rb["value"])


def targets(rows: list[dict[str, Any]], server: str) -> list[tuple[str, str, str, bool | None]]:
    """(measure, target, measured, met) for the issue's targets on one server."""
    out: list[tuple[str, str, str, bool | None]] = []

    def add_ratio(label: str, goal: float, scenario: str, a: str, b: str) -> None:
        r = ratio(rows, server, scenario, a, b)
        if r is None:
            out.append((label, f">= {goal:g}x", "not measured", None))
            return
        spread = round_ratios(rows, server, scenario, a, b)
        rounds = f" (rounds {min(spread):.2f}-{max(spread):.2f})" if len(spread) > 1 else ""
        out.append((label, f">= {goal:g}x", f"{r:.2f}x{rounds}", r >= goal))

    add_ratio("produce_batch vs raw pipelined redis-py", 2.0, "produce", BATCH, RAW_PIPE)
    add_ratio("worker consume vs raw batched loop", 1.0, "consume", WORKER, RAW_BATCHED)
    add_ratio("worker consume vs FastStream default", 20.0, "consume", WORKER, FS_DEFAULT)
    add_ratio("worker consume vs FastStream batch=True", 2.0, "consume", WORKER, FS_BATCH)
    add_ratio("AsyncConsumerWorker vs raw redis.asyncio loop", 1.0, "async", A_WORKER, A_RAW)
    add_ratio("AsyncConsumerWorker vs FastStream default", 20.0, "async", A_WORKER, FS_DEFAULT)
    add_ratio("AsyncConsumerWorker vs FastStream batch=True", 2.0, "async", A_WORKER, FS_BATCH)
    add_ratio(
        "async produce_batch vs raw redis.asyncio pipeline", 4.0, "async", A_BATCH, A_RAW_PIPE
    )
    es, ps, worker, pool, _threads = PARTITION_ROWS
    add_ratio("partitioned produce_batch vs EventStream, 1 node", 0.8, "partition", ps, es)
    add_ratio("partitioned pool consume vs one ConsumerWorker", 0.8, "partition", pool, worker)
    p99 = _value(rows, server, "latency", "p99 produce-to-handler")
    out.append(
        (
            "p99 latency at 1k events/s",
            "< 5 ms",
            "not measured" if p99 is None else f"{p99:.2f} ms",
            None if p99 is None else p99 < 5,
        )
    )
    worst = _value(rows, server, "recovery", "crash to peer-processed (worst)")
    bound = _value(rows, server, "recovery", "target bound")
    out.append(
        (
            "recovery after a crash",
            "<= claim_min_idle + reap_interval + 100 ms"
            + ("" if bound is None else f" = {bound:.0f} ms"),
            "not measured" if worst is None else f"{worst:.0f} ms",
            None if worst is None or bound is None else worst <= bound,
        )
    )
    return out


def table(rows: list[dict[str, Any]], scenario: str, baseline: str | None = None) -> str:
    """A markdown table of one scenario across servers (columns) with ratios to ``baseline``."""
    servers = sorted(
        {r["server"] for r in rows if r["scenario"] == scenario}, key=lambda s: (s != "valkey", s)
    )
    names: list[str] = []
    units: dict[str, str] = {}
    for r in rows:
        if r["scenario"] == scenario and r["name"] not in names:
            names.append(r["name"])
            units[r["name"]] = r["unit"]
    head = (
        "| "
        + scenario
        + " | "
        + " | ".join(
            f"{s} ({units[names[0]] if names else ''})" + (f" | {s} ratio" if baseline else "")
            for s in servers
        )
        + " |"
    )
    sep = "|---|" + "|".join("---:" + ("|---:" if baseline else "") for _ in servers) + "|"
    lines = [head, sep]
    for name in names:
        cells = []
        for s in servers:
            v = _value(rows, s, scenario, name)
            cells.append("" if v is None else _fmt(v, units[name]))
            if baseline:
                r = ratio(rows, s, scenario, name, baseline)
                cells.append("" if r is None else f"{r:.2f}x")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def notes(rows: list[dict[str, Any]], scenario: str) -> list[str]:
    seen: list[str] = []
    for r in rows:
        if r["scenario"] == scenario and r.get("note") and r["note"] not in seen:
            seen.append(r["note"])
    return seen


def chart(rows: list[dict[str, Any]], path: Path) -> None:
    """Horizontal bars of events/s for produce and consume, one colour per server."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    servers = sorted({r["server"] for r in rows}, key=lambda s: (s != "valkey", s))
    fig, axes = plt.subplots(2, 1, figsize=(10, 8.5))
    for ax, scenario in zip(axes, ("produce", "consume"), strict=True):
        names = []
        for r in rows:
            if r["scenario"] == scenario and r["unit"] == "events/s" and r["name"] not in names:
                names.append(r["name"])
        if not names:
            ax.set_visible(False)
            continue
        height = 0.8 / max(1, len(servers))
        for i, server in enumerate(servers):
            values = [_value(rows, server, scenario, n) or 0 for n in names]
            ys = [j + i * height for j in range(len(names))]
            bars = ax.barh(ys, values, height=height, label=server)
            for bar, v in zip(bars, values, strict=True):
                if v:
                    ax.text(
                        bar.get_width() * 1.05,
                        bar.get_y() + bar.get_height() / 2,
                        f"{v / 1000:,.0f}k" if v >= 1000 else f"{v:.0f}",
                        va="center",
                        fontsize=7,
                    )
        ax.set_yticks([j + height * (len(servers) - 1) / 2 for j in range(len(names))])
        ax.set_yticklabels(names, fontsize=8)
        ax.invert_yaxis()
        ax.set_xscale("log")
        top = max([_value(rows, s, scenario, n) or 1 for s in servers for n in names] or [1])
        ax.set_xlim(right=top * 3)  # room for the value labels
        ax.set_xlabel("events/s (log scale, higher is better)")
        ax.set_title(f"{scenario}: events/s, one process, local server")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper right", fontsize=9)
    fig.tight_layout(rect=(0, 0, 0.93, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


BEGIN = "<!-- bench:begin (generated by python -m bench; edit outside these markers) -->"
END = "<!-- bench:end -->"


def generated(results: dict[str, Any]) -> str:
    """The measured part of PERFORMANCE.md: environment, targets, tables, profile."""
    meta = results["meta"]
    rows = results["results"]
    servers = sorted({r["server"] for r in rows}, key=lambda s: (s != "valkey", s))
    out = [BEGIN, "", "### Run", ""]
    out.append("| | |")
    out.append("|---|---|")
    for key in (
        "date",
        "machine",
        "cpus",
        "python",
        "redis-py",
        "hiredis",
        "faststream",
        "walrus",
        "command",
    ):
        if key in meta:
            out.append(f"| {key} | {meta[key]} |")
    for kind, version in meta.get("servers", {}).items():
        out.append(f"| server {kind} | {version} |")
    out += ["", "### Targets", ""]
    out.append("| measure | target | " + " | ".join(servers) + " |")
    out.append("|---|---|" + "---|" * len(servers))
    per_server = {s: targets(rows, s) for s in servers}
    for i, (label, goal, _m, _ok) in enumerate(per_server[servers[0]] if servers else []):
        cells = []
        for s in servers:
            _l, _g, measured, ok = per_server[s][i]
            mark = "" if ok is None else (" (met)" if ok else " (**not met**)")
            cells.append(measured + mark)
        out.append(f"| {label} | {goal} | " + " | ".join(cells) + " |")
    sections = [
        ("produce", RAW_PIPE, "Producing (ratio: to raw pipelined redis-py)"),
        ("consume", RAW_BATCHED, "Consuming, receive plus ack (ratio: to the raw batched loop)"),
        ("async", A_RAW, "asyncio API (ratio: to the raw redis.asyncio consume loop)"),
        ("latency", None, "Latency"),
        ("recovery", None, "Recovery"),
        ("memory", None, "Memory (peak RSS of a fresh process)"),
        ("processes", None, "Worker processes (CPU-bound handler, 1 vs 2 processes)"),
        ("partition", None, "Partitions on one node (see docs/SCALING.md for the cluster)"),
        ("ackdel", None, "Ack and delete (Redis 8.2+): XACKDEL vs XACK plus a periodic trim"),
    ]
    for scenario, baseline, title in sections:
        if not any(r["scenario"] == scenario for r in rows):
            continue
        out += ["", f"### {title}", "", table(rows, scenario, baseline), ""]
        for note in notes(rows, scenario):
            out.append(f"- {note}")
    profile = results.get("profile") or {}
    for name, text in profile.items():
        kept = [ln for ln in text.splitlines() if ln.strip()]
        timing = ["Duration:" + ln.split("Duration:", 1)[1] for ln in kept if "Duration:" in ln]
        lines = timing + kept[4:44]
        out += ["", f"### Profile: {name} (pyinstrument, wall time)", "", "```", *lines, "```"]
    out += ["", END]
    return "\n".join(out)


def write_doc(results: dict[str, Any], path: Path, template: str) -> None:
    """Replace the generated block of ``path`` (or create it from ``template``)."""
    text = path.read_text() if path.exists() else template
    if BEGIN not in text or END not in text:
        text = template
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    path.write_text(head + generated(results) + tail)
