"""``python -m bench --out FILE``: the benchmark of restore speed, Prefect's cost and memory.

Starts its own labs and Prefect servers (a patched SQLite one, and PostgreSQL for the
backend comparison), runs everything, stops them, prints a short table and writes one
JSON file. The latencies it injects are in bench/latencies.py. Figures, never pass/fail:
the targets are in README.md ("Speed").
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

from bench import inventory, latencies, prefect_cost, restore_timing, scale, single
from bench.runner import started
from blocks.settings import settings


def machine() -> dict[str, Any]:
    """Where the figures come from."""
    cpu = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        cpu = next(
            (
                ln.split(":", 1)[1].strip()
                for ln in cpuinfo.read_text().splitlines()
                if ln.startswith("model name")
            ),
            "",
        )
    mem_kb = 0
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        mem_kb = int(meminfo.read_text().split()[1])
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "memory_gb": round(mem_kb / 2**20, 1),
        "python": platform.python_version(),
        "prefect": version("prefect"),
        "date": time.strftime("%Y-%m-%d"),
    }


def backends(bench, tmp: Path, runs: int) -> dict[str, Any]:
    """The demo's restore (three VMs, API-triggered, served deployments) on the patched
    SQLite server and on PostgreSQL, one after the other against the same lab."""
    from tests.support.postgres import start_postgres

    latencies.clear(bench.info, bench.http)
    out: dict[str, Any] = {}
    pg = start_postgres()
    try:
        pg.create_database("bench")
        for name, url in (("sqlite", None), ("postgresql", pg.url("bench"))):
            got = restore_timing.measure(bench.info, tmp / name, url, runs)
            bad = [r for r in got if r["state"] != "COMPLETED"]
            if bad:
                raise RuntimeError(f"demo restore on {name}: {bad[0]}")
            out[name] = {
                "wall_s": statistics.median(r["api_to_end_s"] for r in got),
                "flow_run_s": statistics.median(r["flow_run_time_s"] for r in got),
                "runs": got,
            }
    finally:
        pg.stop()
    out["ratio_sqlite_to_postgresql"] = round(
        out["sqlite"]["wall_s"] / out["postgresql"]["wall_s"], 3
    )
    return out


def table(fig: dict[str, Any]) -> str:
    """A short human summary of the figures."""
    lines = ["single VM, instant recovery (flow start → Tools heartbeat)"]
    for p, f in fig.get("single", {}).items():
        lines.append(
            f"  {p:6} {f['wall_s']:6.2f} s  critical path {f['critical_path_s']:5.1f} s  "
            f"ratio {f['ratio']:.2f}"
        )
    if fig.get("scale"):
        lines.append("N VMs from one snapshot (iSCSI)")
        for f in fig["scale"]:
            lines.append(
                f"  N={f['n']:<4} {f['wall_s']:6.2f} s  bound {f['lower_bound_s']:6.2f} s  "
                f"x bound {f['ratio_to_bound']:.2f}  x single {f['ratio_to_single']:.2f}  "
                f"copies {f['copies']}  resignatures {f['resignatures']}  "
                f"peak {f['peak_rss_mb']:.0f} MB"
            )
    if "prefect" in fig:
        f = fig["prefect"]
        lines.append(
            f"Prefect: {f['per_task_ms']} ms per task run on the restore's path, "
            f"{f['share_of_single_restore'] * 100:.1f} % of the single-VM restore "
            f"(trivial task {f['trivial_task_ms']} ms, with a slot "
            f"{f['trivial_task_with_slot_ms']} ms)"
        )
    if "backends" in fig:
        b = fig["backends"]
        lines.append(
            f"demo restore: SQLite {b['sqlite']['wall_s']} s, PostgreSQL "
            f"{b['postgresql']['wall_s']} s (x{b['ratio_sqlite_to_postgresql']})"
        )
    for f in fig.get("inventory", []):
        lines.append(
            f"inventory {f['vms']} VMs / {f['datastores']} datastores: janitor survey "
            f"{f['janitor_survey']['vcenter_calls']} calls, catalog listing "
            f"{f['catalog_listing']['vcenter_calls']} calls"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark; write the figures to ``--out``."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("bench/results/bench.json"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 10, 50, 100])
    parser.add_argument("--runs", type=int, default=3, help="repetitions of the short runs")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=["single", "scale", "prefect", "backends", "inventory"],
        default=["single", "scale", "prefect", "backends", "inventory"],
    )
    args = parser.parse_args(argv)
    s = settings()
    fig: dict[str, Any] = {
        "machine": machine(),
        "latencies_s": latencies.LATENCY_S,
        "limits": {
            "max_parallel_vms": s.max_parallel_vms,
            "host_concurrency": s.host_concurrency,
            "array_concurrency": s.array_concurrency,
        },
    }
    with tempfile.TemporaryDirectory(prefix="snaprestore-bench-") as tmp_s:
        tmp = Path(tmp_s)
        with started(tmp / "main", scale_vms=max(args.sizes)) as bench:
            if {"single", "scale", "prefect"} & set(args.only):
                fig["single"] = single.measure(bench, args.runs)
            single_s = fig["single"]["iscsi"]["wall_s"] if "single" in fig else 10.0
            if "scale" in args.only:
                fig["scale"] = scale.measure(bench, args.sizes, single_s)
            if "prefect" in args.only:
                fig["prefect"] = prefect_cost.measure(bench, args.runs, single_s)
            if "inventory" in args.only:
                fig["inventory"] = [inventory.measure(bench)]
            if "backends" in args.only:
                fig["backends"] = backends(bench, tmp / "backends", args.runs)
        if "inventory" in args.only:
            with started(tmp / "small", scale_vms=0) as small:
                fig["inventory"].insert(0, inventory.measure(small))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(fig, indent=2) + "\n")
    print(table(fig))
    print(f"figures written to {args.out}")


if __name__ == "__main__":
    main()
