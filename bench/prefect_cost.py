"""What Prefect itself costs: per trivial task run (with and without a concurrency slot),
and the single-VM restore with no injected latency."""

from __future__ import annotations

import statistics
from datetime import datetime
from typing import Any

from bench import latencies
from bench.runner import Bench, Run
from bench.single import restore_one
from deployments.server import api_request

TAG = "bench-slot"


def _per_task_ms(bench: Bench, n: int, tag: str | None) -> float:
    run = bench.run("tasks", {"n": n, "tag": tag})
    if run.state != "COMPLETED":
        raise RuntimeError(f"the trivial-task flow ended {run.state}: {run.message}")
    return round(run.result["seconds"] / n * 1000, 1)


def _busy_s(run: Run, start: float, end: float) -> float:
    """Seconds in [start, end] during which the lab was serving at least one call of the run."""
    spans = sorted(
        (max(c["start"], start), min(c["end"], end))
        for calls in run.calls.values()
        for c in calls
        if c.get("end") is not None and c["end"] > start and c["start"] < end
    )
    busy, reach = 0.0, start
    for a, b in spans:
        if b > reach:
            busy += b - max(a, reach)
            reach = b
    return busy


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def measure(bench: Bench, runs: int, single_s: float) -> dict[str, Any]:
    """Prefect's per-task cost and its share of the single-VM iSCSI restore (``single_s``)."""
    r = api_request(
        "POST", f"{bench.api_url}/concurrency_limits/", json={"tag": TAG, "concurrency_limit": 4}
    )
    r.raise_for_status()
    plain = _per_task_ms(bench, 30, None)
    slotted = _per_task_ms(bench, 30, TAG)
    latencies.apply(bench.info, bench.http, scale=0)
    figures = []
    for _ in range(runs):
        run = restore_one(bench, "ds-iscsi-01")
        start = run.result["started_at"]
        wall = max(run.vm_seconds())
        end = start + wall
        tasks = [
            t
            for t in bench.task_runs(run.flow_run_id)
            if t.get("end_time") and _ts(t["end_time"]) <= end + 0.05
        ]
        busy = _busy_s(run, start, end)
        figures.append({"wall_s": wall, "lab_busy_s": round(busy, 3), "task_runs": len(tasks)})
    wall = statistics.median(f["wall_s"] for f in figures)
    busy = statistics.median(f["lab_busy_s"] for f in figures)
    tasks = statistics.median(f["task_runs"] for f in figures)
    own = max(wall - busy, 0.0)
    return {
        "per_task_ms": round(own / tasks * 1000, 1),
        "share_of_single_restore": round(own / single_s, 4),
        "zero_latency_restore_s": wall,
        "lab_busy_s": busy,
        "task_runs_to_verified": tasks,
        "trivial_task_ms": plain,
        "trivial_task_with_slot_ms": slotted,
        "runs": figures,
    }
