"""Breaking ESXi's storage ordering rules fails in the lab the way it fails on ESXi."""

from __future__ import annotations

import os

import pytest
from pyVmomi import vim

from tests.support.fixtures import copy_name, mounted_copy, register
from tests.support.storage_ops import Copy, ops_for
from tests.support.vcenter import find, host
from tests.support.vsphere_steps import (
    attach_disk,
    detach_disk,
    rescan,
    scsi_lun,
    sw_iscsi,
    unresolved,
    wait,
)

BAD = ("apd", "device_lost_while_attached", "vmfs_destroyed")


def test_unmount_with_a_vm_registered_is_refused(lab, si):
    with mounted_copy(si, lab, "ds-iscsi-01") as mc:
        vm = register(si, lab, mc.ds.name, mc.ds_cfg["vms"][0], mc.esx, "rules-unmount-vm")
        storage = mc.esx.configManager.storageSystem
        with pytest.raises(vim.fault.ResourceInUse) as err:
            storage.UnmountVmfsVolume(vmfsUuid=mc.ds.info.vmfs.uuid)
        assert "rules-unmount-vm" in err.value.msg
        assert find(si, vim.Datastore, mc.ds.name) is not None
        vm.UnregisterVM()


def test_detach_while_mounted_is_refused_and_takes_the_lun_uuid(lab, si):
    with mounted_copy(si, lab, "ds-fc-01") as mc:
        storage = mc.esx.configManager.storageSystem
        lun = scsi_lun(mc.esx, mc.copy.naa)
        with pytest.raises(vim.fault.ResourceInUse):
            storage.DetachScsiLun(lunUuid=lun.uuid)
        with pytest.raises(vim.fault.NotFound) as err:
            storage.DetachScsiLun(lunUuid=mc.copy.naa)  # the naa name is not the uuid
        assert "ScsiLun.uuid" in err.value.msg
        assert scsi_lun(mc.esx, mc.copy.naa).operationalState == ["ok"]


def test_unmount_twice_and_detach_twice_are_invalid_state(lab, si):
    with mounted_copy(si, lab, "ds-iscsi-02") as mc:
        storage = mc.esx.configManager.storageSystem
        uuid, name = mc.ds.info.vmfs.uuid, mc.ds.name
        storage.UnmountVmfsVolume(vmfsUuid=uuid)
        with pytest.raises(vim.fault.InvalidState):
            storage.UnmountVmfsVolume(vmfsUuid=uuid)
        lun = scsi_lun(mc.esx, mc.copy.naa)
        storage.DetachScsiLun(lunUuid=lun.uuid)
        with pytest.raises(vim.fault.InvalidState):
            storage.DetachScsiLun(lunUuid=lun.uuid)
        # an unmounted volume is not mounted again by a rescan
        rescan(mc.esx, "iscsi")
        assert find(si, vim.Datastore, name) is None


def test_unpresenting_a_mounted_lun_puts_the_datastore_in_apd(lab, si, vclab):
    before = len(vclab.events())
    with mounted_copy(si, lab, "ds-iscsi-02") as mc:  # an igroup of this host only
        name = mc.ds.name
        mc.ops.unpresent(mc.copy)  # wrong order: the datastore is still mounted
        ds = find(si, vim.Datastore, name)
        assert ds.summary.accessible is False
        assert ds.host[0].mountInfo.inaccessibleReason == "AllPathsDown_Start"
        events = vclab.events()[before:]
        assert [e["kind"] for e in events] == ["apd"]
        assert events[0]["datastore"] == name and events[0]["naa"] == mc.copy.naa
        assert scsi_lun(mc.esx, mc.copy.naa).operationalState == ["lostCommunication"]
        # nothing can be registered from an inaccessible datastore
        with pytest.raises(vim.fault.InvalidDatastore):
            register(si, lab, name, mc.ds_cfg["vms"][0], mc.esx, "rules-apd-vm")
        mc.ops.present(mc.copy, next(h for h in lab["hosts"] if h["name"] == mc.esx.name), "iscsi")
        assert find(si, vim.Datastore, name).summary.accessible
        assert vclab.events()[-1]["kind"] == "apd_exit"
        assert scsi_lun(mc.esx, mc.copy.naa).operationalState == ["ok"]


def test_removing_the_static_target_under_a_mounted_copy_is_apd_until_it_is_back(
    lab, si, vclab, http
):
    """The paths go with the host's static target, and come back when it is re-added."""
    before = len(vclab.events())
    with mounted_copy(si, lab, "ds-iscsi-02", host_index=1) as mc:
        adapter = sw_iscsi(mc.esx)
        storage = mc.esx.configManager.storageSystem
        iqns = _portal_iqns(lab, http, mc)
        portal = next(t for t in adapter.configuredStaticTarget if t.iScsiName in iqns)
        target = vim.host.InternetScsiHba.StaticTarget(
            address=portal.address, port=portal.port, iScsiName=portal.iScsiName
        )
        storage.RemoveInternetScsiStaticTargets(iScsiHbaDevice=adapter.device, targets=[target])
        assert find(si, vim.Datastore, mc.ds.name).summary.accessible is False
        assert scsi_lun(mc.esx, mc.copy.naa).operationalState == ["lostCommunication"]
        storage.AddInternetScsiStaticTargets(iScsiHbaDevice=adapter.device, targets=[target])
        assert find(si, vim.Datastore, mc.ds.name).summary.accessible
        assert scsi_lun(mc.esx, mc.copy.naa).operationalState == ["ok"]
        events = vclab.events()[before:]
        assert [e["kind"] for e in events if e["datastore"] == mc.ds.name] == ["apd", "apd_exit"]
        # the portal also carries the production datastore: why snaprestore never removes
        # a static target it did not add
        production = [e["kind"] for e in events if e["datastore"] == "ds-iscsi-02"]
        assert production == ["apd", "apd_exit"]


def _portal_iqns(lab, http, mc) -> set[str]:
    """The target names of the iSCSI portals through which the array presents the copy."""
    array = next(a for a in lab["arrays"] if a["name"] == mc.ds_cfg["array"])
    fabric = http.get(array["lab_url"] + "/fabric", timeout=30).json()
    luns = [lun for lun in fabric["luns"] if lun["naa"] == mc.copy.naa]
    return {t["iqn"] for lun in luns for t in lun["iscsi_targets"]}


def test_unpresenting_an_attached_device_is_recorded(lab, si, vclab):
    before = len(vclab.events())
    with mounted_copy(si, lab, "ds-fc-01") as mc:
        storage = mc.esx.configManager.storageSystem
        storage.UnmountVmfsVolume(vmfsUuid=mc.ds.info.vmfs.uuid)
        mc.ops.unpresent(mc.copy)  # not detached first
        kinds = [e["kind"] for e in vclab.events()[before:]]
        assert kinds == ["device_lost_while_attached"]
        assert scsi_lun(mc.esx, mc.copy.naa).operationalState == ["lostCommunication"]


def test_remove_datastore_on_vmfs_destroys_the_volume(lab, si, vclab, http):
    before = len(vclab.events())
    with mounted_copy(si, lab, "ds-iscsi-02") as mc:
        name = mc.ds.name
        content = next(d for d in vclab.state()["datastores"] if d["name"] == name)["content_dir"]
        mc.esx.configManager.datastoreSystem.RemoveDatastore(datastore=mc.ds)
        assert find(si, vim.Datastore, name) is None
        assert os.listdir(content) == []  # the copy's VMFS volume is gone
        assert [e["kind"] for e in vclab.events()[before:]] == ["vmfs_destroyed"]


def test_resignature_mounts_on_every_host_that_sees_the_lun(lab, si):
    """Presenting to two hosts mounts the copy on both: why a copy goes to one host only."""
    ds_cfg = next(d for d in lab["datastores"] if d["name"] == "ds-fc-01")
    ops = ops_for(lab, "primera1")
    copy = ops.make_copy(ds_cfg["volume"], ds_cfg["snapshots"][0], copy_name("hpe_primera"))
    esx = [host(si, h["name"]) for h in lab["hosts"][:2]]
    try:
        for h_cfg, h in zip(lab["hosts"][:2], esx, strict=True):
            ops.present(copy, h_cfg, "fc")
            rescan(h, "fc")
        vol = unresolved(esx[0], copy.naa)
        spec = vim.host.UnresolvedVmfsResignatureSpec(extentDevicePath=[vol.extent[0].devicePath])
        ds = wait(
            esx[0].configManager.datastoreSystem.ResignatureUnresolvedVmfsVolume_Task(spec)
        ).result
        assert sorted(m.key.name for m in ds.host) == ["esx-01", "esx-02"]
        for h in esx:
            h.configManager.storageSystem.UnmountVmfsVolume(vmfsUuid=ds.info.vmfs.uuid)
            h.configManager.storageSystem.DetachScsiLun(lunUuid=scsi_lun(h, copy.naa).uuid)
    finally:
        ops.unpresent(copy)
        for h in esx:
            rescan(h, "fc")
        ops.delete(copy)


def test_nfs_mount_needs_an_export_rule_for_this_host_with_root(lab, si):
    ds_cfg = next(d for d in lab["datastores"] if d["protocol"] == "nfs")
    ops = ops_for(lab, ds_cfg["array"])
    copy = ops.make_copy(ds_cfg["volume"], ds_cfg["snapshots"][0], copy_name("netapp_ontap"))
    try:
        server, path = ops.present_nfs(copy, lab["hosts"][0])  # rule for esx-01 only
        other = host(si, lab["hosts"][1]["name"])
        spec = vim.host.NasVolume.Specification(
            remoteHost=server, remotePath=path, localPath="sr-rules-nfs", accessMode="readWrite"
        )
        with pytest.raises(vim.fault.PlatformConfigFault) as err:
            other.configManager.datastoreSystem.CreateNasDatastore(spec)
        assert "denied" in err.value.msg
        spec.remoteHost = "127.0.40.99"  # nothing serves NFS there
        with pytest.raises(vim.fault.PlatformConfigFault) as err:
            other.configManager.datastoreSystem.CreateNasDatastore(spec)
        assert "Unable to connect" in err.value.msg
        assert find(si, vim.Datastore, "sr-rules-nfs") is None
    finally:
        ops.unpresent(copy)
        ops.delete(copy)

    copy = ops.make_copy(ds_cfg["volume"], ds_cfg["snapshots"][0], copy_name("netapp_ontap"))
    try:
        server, path = ops.present_nfs(copy, lab["hosts"][0], root=False)  # root squashed
        esx = host(si, lab["hosts"][0]["name"])
        spec = vim.host.NasVolume.Specification(
            remoteHost=server, remotePath=path, localPath="sr-rules-nfs", accessMode="readWrite"
        )
        with pytest.raises(vim.fault.PlatformConfigFault) as err:
            esx.configManager.datastoreSystem.CreateNasDatastore(spec)
        assert "root" in err.value.msg
    finally:
        ops.unpresent(copy)
        ops.delete(copy)


def test_a_lun_is_invisible_without_the_target_or_a_rescan(lab, si, vclab):
    """(b) the portal must be a static target, (c) the adapter rescanned after (a) and (b)."""
    ds_cfg = next(d for d in lab["datastores"] if d["name"] == "ds-iscsi-01")
    ops = ops_for(lab, "primera1")
    host_cfg = lab["hosts"][2]
    esx = host(si, host_cfg["name"])
    storage = esx.configManager.storageSystem
    adapter = sw_iscsi(esx)
    hpe_targets = [t for t in adapter.configuredStaticTarget if t.address.startswith("127.0.30.")]
    assert hpe_targets
    before = len(vclab.events())
    copy = ops.make_copy(ds_cfg["volume"], ds_cfg["snapshots"][0], copy_name("hpe_primera"))
    try:
        storage.RemoveInternetScsiStaticTargets(iScsiHbaDevice=adapter.device, targets=hpe_targets)
        # the production datastore on this host lost its paths with the targets
        assert [e["kind"] for e in vclab.events()[before:]] == ["apd"]
        ops.present(copy, host_cfg, "iscsi")
        storage.RescanHba(hbaDevice=adapter.device)
        assert scsi_lun(esx, copy.naa) is None  # exported, rescanned, but no target
        new = [
            vim.host.InternetScsiHba.StaticTarget(
                address=t.address, port=t.port, iScsiName=t.iScsiName
            )
            for t in hpe_targets
        ]
        storage.AddInternetScsiStaticTargets(iScsiHbaDevice=adapter.device, targets=new)
        assert scsi_lun(esx, copy.naa) is None  # target added, not rescanned yet
        assert find(si, vim.Datastore, "ds-iscsi-01").summary.accessible  # paths are back
        with pytest.raises(vim.fault.HostConfigFault):  # a duplicate target is refused
            storage.AddInternetScsiStaticTargets(iScsiHbaDevice=adapter.device, targets=new[:1])
        storage.RescanHba(hbaDevice=adapter.device)
        assert unresolved(esx, copy.naa) is not None
        storage.DetachScsiLun(lunUuid=scsi_lun(esx, copy.naa).uuid)
    finally:
        ops.unpresent(copy)
        storage.RescanHba(hbaDevice=adapter.device)
        ops.delete(copy)
    assert scsi_lun(esx, copy.naa) is None
    kinds = [e["kind"] for e in vclab.events()[before:]]
    assert kinds == ["apd", "apd_exit"]


def test_send_targets_are_discovered_at_rescan_and_removed_with_their_targets(lab, si, vclab):
    """Uses primera1's second portal: production LUNs keep a path through the first one."""
    esx = host(si, lab["hosts"][0]["name"])
    storage = esx.configManager.storageSystem
    device = sw_iscsi(esx).device
    portal = "127.0.30.12"

    def targets_at(addr):
        return [t for t in sw_iscsi(esx).configuredStaticTarget if t.address == addr]

    original = targets_at(portal)
    assert [t.discoveryMethod for t in original] == ["staticMethod"]
    as_static = [
        vim.host.InternetScsiHba.StaticTarget(
            address=portal, port=3260, iScsiName=original[0].iScsiName
        )
    ]
    send = [vim.host.InternetScsiHba.SendTarget(address=portal, port=3260)]
    before = len(vclab.events())
    storage.RemoveInternetScsiStaticTargets(iScsiHbaDevice=device, targets=as_static)
    storage.AddInternetScsiSendTargets(iScsiHbaDevice=device, targets=send)
    assert targets_at(portal) == []  # discovery happens at rescan
    storage.RescanHba(hbaDevice=device)
    found = targets_at(portal)
    assert [(t.iScsiName, t.discoveryMethod) for t in found] == [
        (original[0].iScsiName, "sendTargetMethod")
    ]
    storage.RemoveInternetScsiSendTargets(iScsiHbaDevice=device, targets=send)
    assert targets_at(portal) == []  # what the send target discovered goes with it
    storage.AddInternetScsiStaticTargets(iScsiHbaDevice=device, targets=as_static)
    assert [t.discoveryMethod for t in targets_at(portal)] == ["staticMethod"]
    assert vclab.events()[before:] == []  # the first portal kept production reachable
    assert find(si, vim.Datastore, "ds-iscsi-01").summary.accessible


def test_rescan_all_hba_rescans_one_host_only(lab, si, vclab):
    ds_cfg = next(d for d in lab["datastores"] if d["name"] == "ds-fc-01")
    ops = ops_for(lab, "primera1")
    host_cfg = lab["hosts"][0]
    esx = host(si, host_cfg["name"])
    copy = ops.make_copy(ds_cfg["volume"], ds_cfg["snapshots"][1], copy_name("hpe_primera"))
    since = vclab.get("/calls/log?since=0")["last_seq"]
    try:
        ops.present(copy, host_cfg, "fc")
        esx.configManager.storageSystem.RescanAllHba()
        assert unresolved(esx, copy.naa) is not None
        calls = vclab.get(f"/calls/log?since={since}&method=RescanAllHba")["calls"]
        assert [c["host"] for c in calls] == [host_cfg["name"]]
        esx.configManager.storageSystem.DetachScsiLun(lunUuid=scsi_lun(esx, copy.naa).uuid)
    finally:
        ops.unpresent(copy)
        esx.configManager.storageSystem.RescanAllHba()
        ops.delete(copy)
    assert scsi_lun(esx, copy.naa) is None


def test_removing_an_nfs_datastore_with_a_vm_registered_is_refused(lab, si):
    with mounted_copy(si, lab, "ds-nfs-01", host_index=2) as mc:
        vm = register(si, lab, mc.ds.name, mc.ds_cfg["vms"][0], mc.esx, "rules-nfs-vm")
        with pytest.raises(vim.fault.ResourceInUse):
            mc.esx.configManager.datastoreSystem.RemoveDatastore(datastore=mc.ds)
        assert mc.ds.summary.accessible
        vm.UnregisterVM()


def test_the_first_nfs_export_rule_that_matches_a_host_decides(lab, si):
    """ONTAP applies the first matching rule: a read-only catch-all placed before a host's
    read-write rule wins, and the host's mount is refused until the catch-all goes."""
    ds_cfg = next(d for d in lab["datastores"] if d["protocol"] == "nfs")
    ops = ops_for(lab, ds_cfg["array"])
    copy = ops.make_copy(ds_cfg["volume"], ds_cfg["snapshots"][0], copy_name("netapp_ontap"))
    esx = host(si, lab["hosts"][0]["name"])
    try:
        server, path = ops.present_nfs(copy, lab["hosts"][0])  # rule 1: esx-01 rw, root
        rules = f"{ops.base}/protocols/nfs/export-policies/{_policy_id(ops, copy)}/rules"
        ops._ok(
            ops.http.post(
                rules,
                json={
                    "index": 1,
                    "clients": [{"match": "0.0.0.0/0"}],
                    "protocols": ["nfs3"],
                    "ro_rule": ["sys"],
                    "rw_rule": ["never"],
                    "superuser": ["none"],
                },
            )
        )
        spec = vim.host.NasVolume.Specification(
            remoteHost=server, remotePath=path, localPath="sr-rules-first", accessMode="readWrite"
        )
        with pytest.raises(vim.fault.PlatformConfigFault) as err:
            esx.configManager.datastoreSystem.CreateNasDatastore(spec)
        assert "read-write, with root access" in err.value.msg
        assert find(si, vim.Datastore, "sr-rules-first") is None

        ops._ok(ops.http.delete(f"{rules}/1"))  # the catch-all goes; esx-01's rule decides
        ds = esx.configManager.datastoreSystem.CreateNasDatastore(spec)
        assert ds.summary.accessible
        esx.configManager.datastoreSystem.RemoveDatastore(datastore=ds)
    finally:
        if (left := find(si, vim.Datastore, "sr-rules-first")) is not None:
            esx.configManager.datastoreSystem.RemoveDatastore(datastore=left)
        ops.unpresent(copy)
        ops.delete(copy)


def _policy_id(ops, copy) -> int:
    return ops._records("/protocols/nfs/export-policies", name=copy.extra["policy"], fields="id")[
        0
    ]["id"]


def test_an_nfs_export_mounts_once_per_host(lab, si):
    with mounted_copy(si, lab, "ds-nfs-01", host_index=2) as mc:
        nas = mc.ds.info.nas
        spec = vim.host.NasVolume.Specification(
            remoteHost=nas.remoteHost,
            remotePath=nas.remotePath,
            localPath="sr-rules-twice",
            accessMode="readWrite",
        )
        with pytest.raises(vim.fault.AlreadyExists) as err:
            mc.esx.configManager.datastoreSystem.CreateNasDatastore(spec)
        assert mc.ds.name in err.value.msg
        assert find(si, vim.Datastore, "sr-rules-twice") is None
        assert mc.ds.summary.accessible


def test_unmount_is_refused_while_a_vm_elsewhere_uses_a_disk_on_the_volume(lab, si):
    """A VM living on another datastore but with a disk on the copy also pins it."""
    with mounted_copy(si, lab, "ds-iscsi-01") as mc:
        prod = next(
            vm
            for d in lab["datastores"]
            if d["name"] == "ds-fc-01"
            for vm in (find(si, vim.VirtualMachine, n) for n in d["vms"])
            if vm.runtime.host == mc.esx
        )
        vm_dir = mc.ds_cfg["vms"][0]
        added = attach_disk(prod, f"[{mc.ds.name}] {vm_dir}/{vm_dir}.vmdk")
        assert prod in mc.ds.vm and mc.ds in prod.datastore  # vSphere lists disk users too
        storage = mc.esx.configManager.storageSystem
        try:
            with pytest.raises(vim.fault.ResourceInUse) as err:
                storage.UnmountVmfsVolume(vmfsUuid=mc.ds.info.vmfs.uuid)
            assert prod.name in err.value.msg
        finally:
            detach_disk(prod, added)
        assert prod not in mc.ds.vm and mc.ds not in prod.datastore
        assert prod.runtime.powerState == "poweredOn"


def test_a_read_only_snapshot_exported_as_is_cannot_be_resignatured(lab, si):
    """The product must present a read-write copy: a host that sees the array's read-only
    snapshot itself finds the unresolved volume but cannot write a new signature on it."""
    ds_cfg = next(d for d in lab["datastores"] if d["name"] == "ds-fc-01")
    ops = ops_for(lab, "primera1")
    snap = ops.snapshot_full_name(ds_cfg["volume"], ds_cfg["snapshots"][0])
    wwn = ops._ok(ops.http.get(f"{ops.base}/volumes/{snap}")).json()["wwn"]
    exported = Copy(name=snap, naa="naa." + wwn.lower())
    h_cfg = lab["hosts"][0]
    esx = host(si, h_cfg["name"])
    try:
        ops.present(exported, h_cfg, "fc")
        rescan(esx, "fc")
        vol = unresolved(esx, exported.naa)
        spec = vim.host.UnresolvedVmfsResignatureSpec(extentDevicePath=[vol.extent[0].devicePath])
        with pytest.raises(vim.fault.HostConfigFault) as err:
            wait(esx.configManager.datastoreSystem.ResignatureUnresolvedVmfsVolume_Task(spec))
        assert "read-only" in err.value.msg
        assert not [d for d in esx.datastore if d.name.startswith("snap-")]
    finally:
        if (lun := scsi_lun(esx, exported.naa)) is not None:
            esx.configManager.storageSystem.DetachScsiLun(lunUuid=lun.uuid)
        ops.unpresent(exported)
        rescan(esx, "fc")
    assert scsi_lun(esx, exported.naa) is None
