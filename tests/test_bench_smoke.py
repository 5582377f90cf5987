"""Smoke test for the benchmark command: every scenario runs at tiny sizes and writes results.

It asserts no timings (performance is measured by ``python -m bench``, never in tests).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_smoke_runs_every_scenario(tmp_path: Path) -> None:
    out = tmp_path / "smoke.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert out.exists()
    results = json.loads(out.read_text())
    scenarios = {row["scenario"] for row in results["results"]}
    assert scenarios == {
        "produce", "consume", "latency", "recovery", "memory", "async", "processes", "partition",
    }  # fmt: skip
    for row in results["results"]:
        assert row["value"] > 0, row
    assert set(results["profile"]) == {"consume", "produce_batch"}
    assert results["meta"]["smoke"] is True


def test_bench_rejects_unknown_scenario() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--scenarios", "nope"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "unknown scenario" in proc.stderr
    assert "Traceback" not in proc.stderr
