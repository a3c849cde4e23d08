"""The README's demo, non-interactively: everything starts, a restore runs through the REST
API, the report is printed, and everything stops."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from lab.process import alive
from tests.deployments.conftest import REPO


def test_the_demo_runs_end_to_end_and_stops_everything(tmp_path):
    d = tmp_path / "demo"
    r = subprocess.run(
        [sys.executable, "-m", "deployments", "demo", "--dir", str(d), "--stop-at-end"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = r.stdout
    assert r.returncode == 0, out + r.stderr
    assert "triggering restore-from-snapshot/default through the REST API" in out
    assert "=== restore completed" in out
    for vm in ("app-01", "app-02", "db-01"):
        assert f"\n{vm}" in out  # one report line per VM
    assert "verified" in out
    cleaned = re.search(r"cleaned up: (\d+) of (\d+) side effects undone", out)
    assert cleaned is not None and cleaned[1] == cleaned[2] and int(cleaned[1]) >= 6, out
    assert "[  NO]" not in out
    assert "run in the UI: http://127.0.0.1:" in out
    assert "stopped: deployments, Prefect server, lab" in out
    # nothing keeps running
    assert not (d / "demo.json").exists() and not (d / "lab.json").exists()
    left = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and alive(int(proc.name)):
            try:
                environ = (proc / "environ").read_bytes() + (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if str(d).encode() in environ:
                left.append(proc.name)
    assert left == [], f"demo processes still running: {left}"
