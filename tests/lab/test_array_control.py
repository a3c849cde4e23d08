"""One array of a running lab stopped and started again: what the hosts see meanwhile.

An array that is down contributes nothing to a rescan (its datastores go all-paths-down)
and the rescan succeeds; once it is back it pushes its fabric and the paths come back
without another rescan.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pyVmomi import vim

from lab import control
from lab.process import alive, stop
from tests.support.vcenter import find, host
from tests.support.vsphere_steps import sw_iscsi

REPO = Path(__file__).resolve().parents[2]
ONTAP_DATASTORES = ("ds-iscsi-02", "ds-nfs-01")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lab", *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )


def _pids(lab) -> dict[str, int]:
    return json.loads((Path(lab["dir"]) / "pids.json").read_text())


def _accessible(si, lab) -> dict[str, list[bool]]:
    return {
        name: [m.mountInfo.accessible for m in find(si, vim.Datastore, name).host]
        for name in ONTAP_DATASTORES
    }


def _ontap_vms(lab) -> list[str]:
    return sorted({v["name"] for v in lab["vms"] if v["datastore"] in ONTAP_DATASTORES})


def _connection(si, names: list[str]) -> set[str]:
    return {find(si, vim.VirtualMachine, n).runtime.connectionState for n in names}


def _kinds(vclab, since: int) -> list[tuple[str, str, str]]:
    return sorted((e["kind"], e["host"], e["datastore"]) for e in vclab.events()[since:])


def _expected(kind: str, lab) -> list[tuple[str, str, str]]:
    return sorted((kind, h["name"], ds) for h in lab["hosts"] for ds in ONTAP_DATASTORES)


def test_stop_part_and_start_part_of_one_array(lab, si, vclab):
    directory = Path(lab["dir"])
    before = len(vclab.events())
    old_pid = _pids(lab)["ontap1"]
    r = _cli("stop-part", "ontap1", "--dir", str(directory))
    assert r.returncode == 0, r.stderr
    try:
        assert not alive(old_pid) and "ontap1" not in _pids(lab)
        status = _cli("status", "--dir", str(directory))
        assert status.returncode == 1 and "NOT RUNNING: ontap1" in status.stdout
        assert "ontap1" in vclab.state()["arrays_down"]
        # the hosts' paths to the stopped array are dead: all paths down, at once
        assert _kinds(vclab, before) == _expected("apd", lab)
        assert _accessible(si, lab) == {n: [False, False, False] for n in ONTAP_DATASTORES}
        assert find(si, vim.Datastore, "ds-iscsi-01").summary.accessible
        assert _connection(si, _ontap_vms(lab)) == {"inaccessible"}
        assert find(si, vim.VirtualMachine, "app-01").runtime.connectionState == "connected"
        # rescans and mounts do not fail because an array is down
        esx = host(si, "esx-01")
        esx.configManager.storageSystem.RescanHba(hbaDevice=sw_iscsi(esx).device)
        esx.configManager.storageSystem.RescanAllHba()
        spec = vim.host.NasVolume.Specification(
            remoteHost="127.0.40.11",
            remotePath="/ds_nfs_01",
            localPath="array-down-nfs",
            accessMode="readWrite",
        )
        with pytest.raises(vim.fault.PlatformConfigFault) as err:
            esx.configManager.datastoreSystem.CreateNasDatastore(spec)
        assert "Unable to connect to NFS server" in err.value.msg
        with pytest.raises(control.LabError):
            control.stop_part(directory, "ontap1")  # not running
    finally:
        marker = len(vclab.events())
        pid = control.start_part(directory, "ontap1")
    assert alive(pid) and pid != old_pid
    assert _pids(lab)["ontap1"] == pid
    assert json.loads((directory / "lab.json").read_text())["pids"]["ontap1"] == pid
    # the array pushed its fabric on start: paths are back without a rescan
    assert _kinds(vclab, marker) == _expected("apd_exit", lab)
    assert _accessible(si, lab) == {n: [True, True, True] for n in ONTAP_DATASTORES}
    assert _connection(si, _ontap_vms(lab)) == {"connected"}
    assert vclab.state()["arrays_down"] == {}
    assert _cli("status", "--dir", str(directory)).returncode == 0
    with pytest.raises(control.LabError):
        control.start_part(directory, "ontap1")  # already running
    with pytest.raises(control.LabError):
        control.stop_part(directory, "vcenter")  # only arrays are parts


def test_an_array_that_died_is_noticed_at_the_next_rescan(lab, si, vclab):
    """Nobody tells the vCenter: the rescan finds the array gone, succeeds, and its mounted
    datastores go all-paths-down; the array's push on start brings them back."""
    directory = Path(lab["dir"])
    esx = host(si, "esx-02")
    production = find(si, vim.Datastore, "ds-iscsi-02").info.vmfs.extent[0].diskName
    before = len(vclab.events())
    stop(_pids(lab)["ontap1"])  # a crash, as far as the vCenter knows
    try:
        assert vclab.events()[before:] == []  # not noticed yet
        esx.configManager.storageSystem.RescanHba(hbaDevice=sw_iscsi(esx).device)
        assert "ontap1" in vclab.state()["arrays_down"]
        assert _kinds(vclab, before) == _expected("apd", lab)
        # the device in use stays, dead, on the rescanned host
        states = {d.canonicalName: d.operationalState for d in esx.config.storageDevice.scsiLun}
        assert states[production] == ["lostCommunication"]
    finally:
        marker = len(vclab.events())
        r = _cli("start-part", "ontap1", "--dir", str(directory))
        assert r.returncode == 0, r.stderr
    assert _kinds(vclab, marker) == _expected("apd_exit", lab)
    states = {d.canonicalName: d.operationalState for d in esx.config.storageDevice.scsiLun}
    assert states[production] == ["ok"]
    assert _connection(si, _ontap_vms(lab)) == {"connected"}
