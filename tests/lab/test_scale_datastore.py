"""``lab up --scale-vms N``: the datastore ds-scale-01 with N powered-off VMs (lab/README.md).

The module starts a lab of its own with 100 scale VMs and reads it back over SOAP
(pyVmomi), WSAPI and the vCenter's datastore file service; the default lab (the session's)
must have none of it.
"""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pyVim.connect import Disconnect
from pyVmomi import vim

from lab import control
from lab import topology as topo
from tests.support.concurrency import call_log, esx_host, last_seq
from tests.support.fixtures import mounted_copy
from tests.support.labs import connect, lab_http, private_lab
from tests.support.storage_ops import HpeOps
from tests.support.vcenter import find
from tests.support.vsphere_steps import read_datastore_file, wait, wait_for_tools

N = 100
SCALE = "ds-scale-01"


@pytest.fixture(scope="module")
def scale_lab(tmp_path_factory) -> Iterator[dict[str, Any]]:
    """A lab started with ``scale_vms=100`` (how long its cold start took is printed)."""
    directory = tmp_path_factory.mktemp("scale-lab")
    start = time.monotonic()
    with private_lab(directory, tools_delay_s=0.2, scale_vms=N) as info:
        print(f"lab up with {N} scale VMs (seeding included): {time.monotonic() - start:.2f}s")
        yield info


@pytest.fixture(scope="module")
def scale_si(scale_lab):
    """A pyVmomi connection to the scale lab's vCenter."""
    si = connect(scale_lab)
    yield si
    Disconnect(si)


def names(n: int) -> list[str]:
    """scale-001 … scale-<n>."""
    return [f"scale-{i:03d}" for i in range(1, n + 1)]


def test_lab_json_lists_the_scale_datastore_and_its_vms(scale_lab) -> None:
    assert scale_lab["scale_vms"] == N
    ds = next(d for d in scale_lab["datastores"] if d["name"] == SCALE)
    assert (ds["array"], ds["volume"], ds["protocol"]) == ("primera1", "DS_SCALE_01", "iscsi")
    assert ds["vms"] == names(N)
    assert len(ds["snapshots"]) == 2
    assert all(re.fullmatch(r"DS_SCALE_01\.daily-\d{8}-\d{4}", s) for s in ds["snapshots"])
    assert [d["name"] for d in scale_lab["datastores"]] == [
        *(d.name for d in topo.DATASTORES),
        SCALE,
    ]
    vms = [v for v in scale_lab["vms"] if v["datastore"] == SCALE]
    assert [v["name"] for v in vms] == names(N)
    for v in vms:
        assert v["vmx"] == f"{v['name']}/{v['name']}.vmx"
        assert (v["folder"], v["pool"], v["case"], v["power_on"]) == (
            "apps",
            "rp-prod",
            None,
            False,
        )
        assert v["path"] == f"lab-dc/vm/apps/{v['name']}"
        assert ipaddress.ip_address(v["ip"]) in ipaddress.ip_network("127.0.0.0/8")
    assert Counter(v["host"] for v in vms) == {"esx-01": 34, "esx-02": 33, "esx-03": 33}
    ips = [v["ip"] for v in scale_lab["vms"]]
    assert len(set(ips)) == len(ips)  # no guest shares another's address
    others = [v for v in scale_lab["vms"] if v["datastore"] != SCALE]
    assert others and all(v["power_on"] for v in others)


def test_primera_holds_the_volume_its_snapshots_and_the_shared_export(scale_lab) -> None:
    ops = HpeOps(
        next(a for a in scale_lab["arrays"] if a["name"] == "primera1"), scale_lab["ca_bundle"]
    )
    vol = ops._ok(ops.http.get(ops.base + "/volumes/DS_SCALE_01")).json()
    assert vol["copyType"] == 1 and not vol["readOnly"]  # a base volume
    snaps = ops._ok(
        ops.http.get(ops.base + "/volumes", params={"query": '"copyOf EQ DS_SCALE_01"'})
    ).json()["members"]
    ds = next(d for d in scale_lab["datastores"] if d["name"] == SCALE)
    assert sorted(s["name"] for s in snaps) == sorted(ds["snapshots"])
    assert all(s["readOnly"] for s in snaps)
    vluns = ops._ok(ops.http.get(ops.base + "/vluns")).json()["members"]
    assert {v["hostname"] for v in vluns if v["volumeName"] == "DS_SCALE_01"} == {
        topo.SHARED_HOST_OBJECT
    }
    http = lab_http(scale_lab)
    fabric = http.get(ops.base.rsplit("/api", 1)[0] + "/lab/fabric", timeout=30).json()
    lun = next(x for x in fabric["luns"] if x["name"] == "DS_SCALE_01")
    assert lun["production"] is True
    iqns = {h["iqn"].lower() for h in scale_lab["hosts"]}
    assert {e["initiator"] for e in lun["exports"]} == iqns


def test_every_host_mounts_it_with_its_vms_registered_and_off(scale_lab, scale_si) -> None:
    ds = find(scale_si, vim.Datastore, SCALE)
    assert ds is not None and ds.summary.accessible
    assert sorted(m.key.name for m in ds.host) == ["esx-01", "esx-02", "esx-03"]
    assert all(m.mountInfo.accessible for m in ds.host)
    assert ds.info.vmfs.name == SCALE
    vms = {vm.name: vm for vm in ds.vm}
    assert sorted(vms) == names(N)
    wanted = {v["name"]: v for v in scale_lab["vms"] if v["datastore"] == SCALE}
    content = scale_si.RetrieveContent()
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
    try:
        collector = content.propertyCollector
        spec = vim.PropertyCollector.FilterSpec(
            objectSet=[
                vim.PropertyCollector.ObjectSpec(
                    obj=view,
                    skip=True,
                    selectSet=[
                        vim.PropertyCollector.TraversalSpec(
                            name="v", path="view", skip=False, type=vim.view.ContainerView
                        )
                    ],
                )
            ],
            propSet=[
                vim.PropertyCollector.PropertySpec(
                    type=vim.VirtualMachine,
                    pathSet=[
                        "name",
                        "parent",
                        "resourcePool",
                        "runtime.powerState",
                        "runtime.host",
                        "config.files.vmPathName",
                    ],
                )
            ],
        )
        rows = {}
        for obj in collector.RetrieveContents([spec]):
            props = {p.name: p.val for p in obj.propSet}
            rows[props["name"]] = props
    finally:
        view.Destroy()
    for name, cfg in wanted.items():
        props = rows[name]
        assert props["config.files.vmPathName"] == f"[{SCALE}] {name}/{name}.vmx"
        assert props["runtime.powerState"] == "poweredOff"
        assert props["parent"].name == "apps"
        assert props["resourcePool"].name == "rp-prod"
        assert props["runtime.host"].name == cfg["host"]
    powered = [
        n for n, p in rows.items() if n not in wanted and p["runtime.powerState"] != "poweredOn"
    ]
    assert powered == []  # the rest of the lab boots as usual


def test_generation_markers_in_the_volume_and_its_snapshots(scale_lab, scale_si) -> None:
    http = lab_http(scale_lab)
    for name in ("scale-001", f"scale-{N:03d}"):
        text = read_datastore_file(scale_lab, http, SCALE, f"{name}/{name}-flat.vmdk", scale_si)
        assert text == f"snaprestore lab disk of {name}\ngeneration: 3\n"
    for snapshot, generation in ((0, 1), (1, 2)):
        with mounted_copy(scale_si, scale_lab, SCALE, host_index=1, snapshot=snapshot) as mc:
            assert sorted(vm.name for vm in mc.ds.vm) == []  # nothing registered from it
            path = "scale-050/scale-050-flat.vmdk"
            text = read_datastore_file(scale_lab, http, mc.ds.name, path, scale_si)
            assert text == f"snaprestore lab disk of scale-050\ngeneration: {generation}\n"


def test_a_scale_vm_powers_on_with_latency_as_a_running_task(scale_lab, scale_si) -> None:
    http = lab_http(scale_lab)
    lab_url = scale_lab["vcenter"]["lab_url"]
    vm = find(scale_si, vim.VirtualMachine, "scale-007")
    cfg = next(v for v in scale_lab["vms"] if v["name"] == "scale-007")
    r = http.post(
        lab_url + "/latency",
        json={"rules": [{"operation": "PowerOnVM_Task", "delay_s": 2}]},
        timeout=30,
    )
    assert r.status_code == 201, r.text
    try:
        since = last_seq(http, lab_url)
        task = vm.PowerOnVM_Task()
        assert task.info.state == vim.TaskInfo.State.running
        assert vm.runtime.powerState == "poweredOff"  # the work comes after the latency
        wait(task, timeout=60)
        assert vm.runtime.powerState == "poweredOn"
        wait_for_tools(vm)
        assert vm.guest.ipAddress == cfg["ip"]
        (call,) = call_log(http, lab_url, since, method="PowerOnVM_Task")
        assert call["vm_host"] == cfg["host"] and "host" not in call  # the VM's host
        assert esx_host(call) == cfg["host"]
        assert call["task_end"] == call["end"] and call["end"] - call["start"] >= 2
    finally:
        http.delete(lab_url + "/latency", timeout=30).raise_for_status()
        if vm.runtime.powerState == "poweredOn":
            wait(vm.PowerOffVM_Task())
    assert vm.runtime.powerState == "poweredOff"


def test_the_default_lab_has_no_scale_datastore(lab, si, http) -> None:
    assert lab["scale_vms"] == 0
    assert SCALE not in {d["name"] for d in lab["datastores"]}
    assert not any(v["name"].startswith("scale-") for v in lab["vms"])
    assert all(v["power_on"] for v in lab["vms"])
    assert find(si, vim.Datastore, SCALE) is None
    primera = next(a for a in lab["arrays"] if a["name"] == "primera1")
    state = http.get(primera["lab_url"] + "/state", timeout=30).json()
    assert "DS_SCALE_01" not in {v["name"] for v in state["volumes"]}


def test_scale_vms_is_validated() -> None:
    for bad in (-1, topo.MAX_SCALE_VMS + 1):
        with pytest.raises(control.LabError):
            control.up(Path("/nonexistent/never-created"), scale_vms=bad)
    assert topo.scale_vm_names(3) == ("scale-001", "scale-002", "scale-003")
    assert topo.scale_guest_ip(1) == "127.0.60.10" and topo.scale_guest_ip(201) == "127.0.61.10"


def test_a_lab_keeps_the_scale_it_was_seeded_with(scale_lab) -> None:
    """Last in the module: it restarts the module's lab."""
    directory = Path(scale_lab["dir"])
    control.down(directory)
    with pytest.raises(control.LabError, match="--scale-vms 100"):
        control.up(directory, tools_delay_s=0.2)
    assert control.running_pids(directory) == {}  # nothing left running
    info = control.up(directory, tools_delay_s=0.2, scale_vms=N)  # on the saved state
    ds = next(d for d in info["datastores"] if d["name"] == SCALE)
    assert ds["vms"] == names(N)
    si = connect(info)
    try:
        assert sorted(vm.name for vm in find(si, vim.Datastore, SCALE).vm) == names(N)
    finally:
        Disconnect(si)


def test_the_command_line_takes_scale_vms(tmp_path) -> None:
    repo = Path(__file__).resolve().parents[2]

    def lab_cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "lab", *args],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=300,
        )

    d = tmp_path / "cli-scale"
    r = lab_cli("up", "--dir", str(d), "--scale-vms", "7")
    try:
        assert r.returncode == 0, r.stderr
        assert "ds-scale-01" in r.stdout and "scale-001 … scale-007 (7, powered off)" in r.stdout
        info = json.loads((d / "lab.json").read_text())
        assert info["scale_vms"] == 7
        status = lab_cli("status", "--dir", str(d))
        assert status.returncode == 0 and "scale-007" in status.stdout
    finally:
        assert lab_cli("down", "--dir", str(d)).returncode == 0
    r = lab_cli("up", "--dir", str(tmp_path / "too-many"), "--scale-vms", "1000")
    assert r.returncode == 1 and "between 0 and 999" in r.stderr
    assert not (tmp_path / "too-many" / "lab.json").exists()
