"""The whole restore storage sequence against the lab, for iSCSI, FC and NFS.

export on the array → target → rescan → unresolved volume → resignature → register →
power on (question answered) → unregister → unmount → detach → unexport → delete,
checking the world (array, hosts, events, call counts) afterwards.
"""

from __future__ import annotations

import pytest
from pyVmomi import vim

from lab.seed import disk_marker
from tests.support.fixtures import copy_name, register
from tests.support.storage_ops import ops_for
from tests.support.vcenter import find, host
from tests.support.vsphere_steps import (
    power_on,
    read_datastore_file,
    rescan,
    scsi_lun,
    unresolved,
    wait,
    wait_for_tools,
)

BAD_EVENTS = ("apd", "device_lost_while_attached", "vmfs_destroyed")


def _rescans_on(vclab, since: int, host_name: str) -> list[str]:
    log = vclab.get(f"/calls/log?since={since}&method=RescanHba")["calls"]
    return [c["arg"] for c in log if c["host"] == host_name]


def _all_rescans(vclab, since: int) -> list[dict]:
    return vclab.get(f"/calls/log?since={since}")["calls"]


BLOCK_CASES = [
    # primera1 has one iSCSI host object for the cluster: a copy exported to it is seen by
    # every host, and vCenter mounts the resignatured copy on all of them
    pytest.param("ds-iscsi-01", "iscsi", True, id="hpe-iscsi-shared-host"),
    pytest.param("ds-fc-01", "fc", False, id="hpe-fc"),
    pytest.param("ds-iscsi-02", "iscsi", False, id="ontap-iscsi"),
]


@pytest.mark.parametrize(("ds_name", "protocol", "shared"), BLOCK_CASES)
def test_block_restore_sequence(lab, si, http, vclab, ds_name, protocol, shared):
    ds_cfg = next(d for d in lab["datastores"] if d["name"] == ds_name)
    array = next(a for a in lab["arrays"] if a["name"] == ds_cfg["array"])
    ops = ops_for(lab, array["name"])
    host_cfg = lab["hosts"][1]
    esx = host(si, host_cfg["name"])
    vm_name = ds_cfg["vms"][0]
    snapshot = ds_cfg["snapshots"][0]  # the older snapshot: generation 1
    since = vclab.get("/calls/log?since=0")["last_seq"]
    events_before = len(vclab.events())

    copy = ops.make_copy(ds_cfg["volume"], snapshot, copy_name(array["vendor"]))
    assert copy.naa and copy.naa != find(si, vim.Datastore, ds_name).info.vmfs.extent[0].diskName

    # presented but not rescanned: the host cannot see it yet
    lun = ops.present(copy, host_cfg, protocol)
    assert lun >= 0
    assert scsi_lun(esx, copy.naa) is None
    assert unresolved(esx, copy.naa) is None

    rescan(esx, protocol)
    assert scsi_lun(esx, copy.naa) is not None
    vol = unresolved(esx, copy.naa)
    assert vol is not None and vol.resolveStatus.resolvable
    assert vol.vmfsLabel == ds_name  # a copy carries the original's label and uuid
    assert vol.vmfsUuid == find(si, vim.Datastore, ds_name).info.vmfs.uuid
    # only this host was told to rescan, and only the adapters of this protocol
    adapters = _rescans_on(vclab, since, host_cfg["name"])
    assert len(adapters) == (1 if protocol == "iscsi" else 2)
    assert all(
        c["host"] == host_cfg["name"] for c in _all_rescans(vclab, since) if "Rescan" in c["method"]
    )
    # other hosts never see the copy
    for other in lab["hosts"]:
        if other["name"] != host_cfg["name"]:
            assert scsi_lun(host(si, other["name"]), copy.naa) is None

    head = next(e for e in vol.extent if e.isHeadExtent)
    spec = vim.host.UnresolvedVmfsResignatureSpec(extentDevicePath=[head.devicePath])
    result = wait(esx.configManager.datastoreSystem.ResignatureUnresolvedVmfsVolume_Task(spec))
    ds = result.result
    assert ds.name.startswith("snap-") and ds.name.endswith("-" + ds_name)
    others = sorted(h["name"] for h in lab["hosts"] if h["name"] != host_cfg["name"])
    # vCenter rescans the other hosts the LUN is exported to, which then mount the copy
    assert sorted(r.host.name for r in result.rescan or []) == (others if shared else [])
    mounted = sorted([host_cfg["name"], *others]) if shared else [host_cfg["name"]]
    assert sorted(m.key.name for m in ds.host) == mounted
    new_name = f"sr-restore-{copy.name}"
    ds.RenameDatastore(newName=new_name)
    assert ds.name == new_name
    assert ds.info.vmfs.name == new_name  # a VMFS datastore's name is its volume label
    assert unresolved(esx, copy.naa) is None

    vm = register(si, lab, new_name, vm_name, esx, f"{vm_name}-restored-{copy.name}")
    assert vm.runtime.host == esx
    assert power_on(vm), "a VM powered on from a copy must ask 'moved or copied'"
    assert vm.runtime.powerState == "poweredOn"
    wait_for_tools(vm)
    text = read_datastore_file(lab, http, new_name, f"{vm_name}/{vm_name}-flat.vmdk")
    assert text == disk_marker(vm_name, 1)  # the snapshot's content, not the current one

    wait(vm.PowerOffVM_Task())
    vm.UnregisterVM()
    uuid = ds.info.vmfs.uuid
    seen_by = [host(si, name) for name in mounted]
    for h in seen_by:  # on every host that mounts it, not just the chosen one
        h.configManager.storageSystem.UnmountVmfsVolume(vmfsUuid=uuid)
    assert find(si, vim.Datastore, new_name) is None
    for h in seen_by:
        h.configManager.storageSystem.DetachScsiLun(lunUuid=scsi_lun(h, copy.naa).uuid)
        assert scsi_lun(h, copy.naa).operationalState == ["off"]
    ops.unpresent(copy)
    for h in seen_by:
        rescan(h, protocol)
        assert scsi_lun(h, copy.naa) is None
    ops.delete(copy)

    # the world afterwards
    new_events = vclab.events()[events_before:]
    assert [e for e in new_events if e["kind"] in BAD_EVENTS] == []
    assert len(_rescans_on(vclab, since, host_cfg["name"])) == 2 * len(adapters)
    state = http.get(array["lab_url"] + "/state", timeout=30).json()
    assert copy.name not in [c["name"] for c in state["copies"]]
    assert all(e["volume"] != copy.name for e in state["exports"])
    assert find(si, vim.VirtualMachine, f"{vm_name}-restored-{copy.name}") is None
    assert find(si, vim.Datastore, ds_name).summary.accessible


def test_nfs_restore_sequence(lab, si, http, vclab):
    ds_cfg = next(d for d in lab["datastores"] if d["protocol"] == "nfs")
    ops = ops_for(lab, ds_cfg["array"])
    host_cfg = lab["hosts"][2]
    esx = host(si, host_cfg["name"])
    vm_name = ds_cfg["vms"][1]
    events_before = len(vclab.events())

    copy = ops.make_copy(ds_cfg["volume"], ds_cfg["snapshots"][1], copy_name("netapp_ontap"))
    server, path = ops.present_nfs(copy, host_cfg)
    name = f"sr-restore-{copy.name}"
    spec = vim.host.NasVolume.Specification(
        remoteHost=server, remotePath=path, localPath=name, accessMode="readWrite", type="NFS"
    )
    ds = esx.configManager.datastoreSystem.CreateNasDatastore(spec)
    assert ds.name == name and ds.summary.accessible
    assert ds.info.nas.remoteHost == server and ds.info.nas.remotePath == path

    vm = register(si, lab, name, vm_name, esx, f"{vm_name}-restored")
    assert power_on(vm)
    wait_for_tools(vm)
    text = read_datastore_file(lab, http, name, f"{vm_name}/{vm_name}-flat.vmdk")
    assert text == disk_marker(vm_name, 2)  # the newer snapshot

    wait(vm.PowerOffVM_Task())
    vm.UnregisterVM()
    esx.configManager.datastoreSystem.RemoveDatastore(datastore=ds)
    assert find(si, vim.Datastore, name) is None
    ops.unpresent(copy)
    ops.delete(copy)

    assert [e for e in vclab.events()[events_before:] if e["kind"] in BAD_EVENTS] == []
    state = http.get(
        next(a for a in lab["arrays"] if a["name"] == ds_cfg["array"])["lab_url"] + "/state",
        timeout=30,
    ).json()
    assert copy.name not in [c["name"] for c in state["copies"]]
