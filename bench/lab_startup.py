"""How fast the lab starts and how much memory it holds: ``python -m bench.lab_startup``.

Writes bench/results/lab_startup.json with the cold start (first start, seeding the
arrays), warm starts (restart on saved state), the resident memory of each lab process
and the latency of a few vSphere calls through pyVmomi.
"""

from __future__ import annotations

import argparse
import json
import platform
import ssl
import statistics
import tempfile
import time
from pathlib import Path

from pyVim.connect import Disconnect, SmartConnect

from lab import control

RESULTS = Path(__file__).parent / "results"


def rss_mb(pid: int) -> float:
    """Return the resident set size of ``pid`` in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def soap_latency_ms(info: dict, calls: int) -> dict[str, float]:
    """Return the median latency (ms) of a property read and a rescan, over ``calls`` each."""
    vc = info["vcenter"]
    si = SmartConnect(
        host=vc["host"],
        port=vc["port"],
        user=vc["user"],
        pwd=vc["password"],
        sslContext=ssl.create_default_context(cafile=info["ca_bundle"]),
    )
    try:
        content = si.RetrieveContent()
        host = content.rootFolder.childEntity[0].hostFolder.childEntity[0].host[0]
        storage = host.configManager.storageSystem
        device = next(
            a.device for a in storage.storageDeviceInfo.hostBusAdapter if a.device == "vmhba64"
        )
        out = {}
        for name, fn in {
            "read_host_name": lambda: host.name,
            "rescan_hba": lambda: storage.RescanHba(hbaDevice=device),
        }.items():
            samples = []
            for _ in range(calls):
                start = time.perf_counter()
                fn()
                samples.append((time.perf_counter() - start) * 1000)
            out[name] = round(statistics.median(samples), 2)
        return out
    finally:
        Disconnect(si)


def main() -> None:
    """Measure and write the figures."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--warm-starts", type=int, default=3)
    parser.add_argument("--calls", type=int, default=50)
    args = parser.parse_args()
    control.build_vcsim()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "lab"
        start = time.monotonic()
        info = control.up(d)
        cold = time.monotonic() - start
        memory = {name: round(rss_mb(pid), 1) for name, pid in info["pids"].items()}
        latency = soap_latency_ms(info, args.calls)
        control.down(d)
        warm = []
        for _ in range(args.warm_starts):
            start = time.monotonic()
            control.up(d)
            warm.append(time.monotonic() - start)
            control.down(d)
    figures = {
        "machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count()},
        "cold_start_s": round(cold, 2),
        "warm_start_s": [round(w, 2) for w in warm],
        "rss_mb": memory,
        "soap_median_ms": latency,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "lab_startup.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
