"""``python -m lab up|status|down`` from the command line: start, restart, stop, nothing left."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import requests

from lab.process import alive

REPO = Path(__file__).resolve().parents[2]


def _lab(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lab", *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_up_status_restart_down(tmp_path):
    d = tmp_path / "lab"
    r = _lab("up", "--dir", str(d))
    assert r.returncode == 0, r.stderr
    assert "lab ready in" in r.stdout and "ds-nfs-01" in r.stdout
    info = json.loads((d / "lab.json").read_text())
    pids = info["pids"]
    assert set(pids) == {"vcenter", "primera1", "ontap1"}
    assert all(alive(p) for p in pids.values())

    # a second `up` on a running lab refuses instead of starting twice
    again = _lab("up", "--dir", str(d))
    assert again.returncode == 1 and "already running" in again.stderr

    status = _lab("status", "--dir", str(d))
    assert status.returncode == 0, status.stderr

    # the files that carry the lab's passwords are readable by their owner only
    private = [d / "lab.json", d / "secrets.json", d / "vcenter" / "config.json"]
    private += [d / "arrays" / a["name"] / "config.json" for a in info["arrays"]]
    modes = {str(p.relative_to(d)): oct(p.stat().st_mode & 0o777) for p in private}
    assert modes == {str(p.relative_to(d)): "0o600" for p in private}

    # leave a copy on the array, restart: array state persists, the hosts boot again
    s = requests.Session()
    s.trust_env = False
    s.verify = info["ca_bundle"]
    hpe = next(a for a in info["arrays"] if a["vendor"] == "hpe_primera")
    key = s.post(
        hpe["url"] + "/api/v1/credentials",
        json={"user": hpe["user"], "password": hpe["password"]},
        timeout=30,
    ).json()["key"]
    snap = next(ds for ds in info["datastores"] if ds["array"] == "primera1")["snapshots"][0]
    r = s.post(
        f"{hpe['url']}/api/v1/volumes/{snap}",
        json={"action": "createSnapshot", "parameters": {"name": "sr-persist", "readOnly": False}},
        headers={"X-HP3PAR-WSAPI-SessionKey": key},
        timeout=30,
    )
    assert r.status_code in (200, 201), r.text

    down = _lab("down", "--dir", str(d))
    assert down.returncode == 0, down.stderr
    assert not any(alive(p) for p in pids.values())
    ports = [info["vcenter"]["port"], *(a["port"] for a in info["arrays"])]
    assert not any(_port_open(p) for p in ports)
    assert not (d / "lab.json").exists()

    # an array seeded by another version of the seed is not reused silently
    marker = d / "arrays" / "ontap1" / "seeded"
    current = marker.read_text()
    marker.write_text("yes\n")
    r = _lab("up", "--dir", str(d))
    assert r.returncode == 1 and "--reset" in r.stderr
    assert not (d / "lab.json").exists()
    marker.write_text(current)

    r = _lab("up", "--dir", str(d), "--json")
    assert r.returncode == 0, r.stderr
    info2 = json.loads(r.stdout)
    try:
        hpe2 = next(a for a in info2["arrays"] if a["vendor"] == "hpe_primera")
        state = s.get(hpe2["lab_url"] + "/state", timeout=30).json()
        assert "sr-persist" in [c["name"] for c in state["copies"]]
        vc_state = s.get(info2["vcenter"]["lab_url"] + "/state", timeout=30).json()
        names = {ds["name"] for ds in vc_state["datastores"]}
        assert {"ds-iscsi-01", "ds-fc-01", "ds-nfs-01", "ds-iscsi-02"} <= names
        assert len(vc_state["vms"]) == len(info2["vms"]) == 18  # 12 ordinary, 6 case VMs
    finally:
        assert _lab("down", "--dir", str(d)).returncode == 0
    assert not any(alive(p) for p in info2["pids"].values())


def test_down_on_a_directory_without_a_lab_is_harmless(tmp_path):
    r = _lab("down", "--dir", str(tmp_path / "nothing"))
    assert r.returncode == 0
    assert "nothing was running" in r.stdout
    r = _lab("status", "--dir", str(tmp_path / "nothing"))
    assert r.returncode == 1 and "no running lab" in r.stderr


def test_down_leaves_alone_a_process_that_reused_a_recorded_pid(tmp_path):
    """A stale pids.json must not make `down` kill whatever now holds those pids."""
    stranger = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        d = tmp_path / "stale"
        d.mkdir()
        (d / "pids.json").write_text(json.dumps({"vcenter": stranger.pid}))
        r = _lab("down", "--dir", str(d))
        assert r.returncode == 0, r.stderr
        assert stranger.poll() is None and alive(stranger.pid)
    finally:
        stranger.kill()
        stranger.wait()
