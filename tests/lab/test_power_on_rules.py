"""What a .vmx's disk names resolve to, and what power-on does with the disks.

A restored VM that opens production data, or a disk that is missing, must show: the lab
records ``production_file_opened`` and fails the power-on with FileNotFound as ESXi does.
"""

from __future__ import annotations

import pytest
import requests
from pyVmomi import vim

from lab.vmx import nas_volume_id
from tests.support.fixtures import mounted_copy, register
from tests.support.vcenter import find
from tests.support.vsphere_steps import (
    power_on,
    read_datastore_file,
    scsi_lun,
    wait,
    write_datastore_file,
)

OPENED = "production_file_opened"


def _disks(vm: vim.VirtualMachine) -> list[vim.vm.device.VirtualDisk]:
    return sorted(
        (d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk)),
        key=lambda d: d.unitNumber,
    )


def _edit_vmx(lab, http, ds: str, path: str, drop: str = "", add: dict[str, str] | None = None):
    """Rewrite a .vmx through /folder: drop the lines starting with ``drop``, set ``add``."""
    lines = read_datastore_file(lab, http, ds, path).splitlines()
    kept = [line for line in lines if not (drop and line.startswith(drop))]
    for key, value in (add or {}).items():
        kept = [line for line in kept if not line.startswith(f"{key} ")]
        kept.append(f'{key} = "{value}"')
    write_datastore_file(lab, http, ds, path, "\n".join(kept) + "\n")


def _isolate(lab, http, ds: str, path: str) -> None:
    """Start the VM's NIC disconnected (no guest IP conflict with its production twin)."""
    _edit_vmx(lab, http, ds, path, add={"ethernet0.startConnected": "FALSE"})


def _discard(vm: vim.VirtualMachine) -> None:
    if vm.runtime.powerState == "poweredOn":
        wait(vm.PowerOffVM_Task())
    vm.UnregisterVM()


def test_no_production_vm_opening_its_own_disks_is_an_event(vclab):
    """multi-01 opens its disk on ds-fc-01 and rdm-01 its production LUN at boot: both live
    on production storage."""
    assert vclab.events((OPENED,)) == []


def test_a_naive_restore_of_multi_01_opens_production_data_and_without_disk_1_it_does_not(
    lab, si, http, vclab
):
    """The negative control: a copy of ds-iscsi-01 registered with multi-01's .vmx as is
    reaches into production ds-fc-01 (an absolute path); without disk 1 it stays on the copy."""
    before = len(vclab.events())
    with mounted_copy(si, lab, "ds-iscsi-01", host_index=1) as mc:
        vmx = "multi-01/multi-01.vmx"
        _isolate(lab, http, mc.ds.name, vmx)
        vm = register(si, lab, mc.ds.name, "multi-01", mc.esx, "naive-multi")
        disk1 = _disks(vm)[1]
        assert disk1.backing.fileName == "[ds-fc-01] multi-01/multi-01_1.vmdk"
        assert disk1.backing.datastore == find(si, vim.Datastore, "ds-fc-01")
        power_on(vm)
        opened = vclab.events((OPENED,))[-1:]
        assert [(e["vm"], e["host"], e["datastore"]) for e in opened] == [
            ("naive-multi", mc.esx.name, "ds-fc-01")
        ]
        assert "multi-01/multi-01_1.vmdk" in opened[0]["detail"]
        _discard(vm)

        marker = len(vclab.events())
        _edit_vmx(lab, http, mc.ds.name, vmx, drop="scsi0:1.")
        vm = register(si, lab, mc.ds.name, "multi-01", mc.esx, "fixed-multi")
        assert len(_disks(vm)) == 1
        power_on(vm)
        assert vm.runtime.powerState == "poweredOn"
        assert vclab.events((OPENED,)) == opened  # nothing new
        assert vclab.events()[marker:] == []
        _discard(vm)
    kinds = [e["kind"] for e in vclab.events()[before:]]
    assert kinds == [OPENED]


def test_an_absolute_path_resolves_to_the_datastore_with_that_volume_id(lab, si, http):
    """abs-01's copy names its disk by the production volume's id: it opens production."""
    with mounted_copy(si, lab, "ds-iscsi-02") as mc:
        vm = register(si, lab, mc.ds.name, "abs-01", mc.esx, "abs-copy")
        try:
            (disk,) = _disks(vm)
            assert disk.backing.fileName == "[ds-iscsi-02] abs-01/abs-01.vmdk"
            assert disk.backing.datastore == find(si, vim.Datastore, "ds-iscsi-02")
            # rewritten to the copy's own volume id, the same file resolves to the copy
            own = f"/vmfs/volumes/{mc.ds.info.vmfs.uuid}/abs-01/abs-01.vmdk"
            vm.UnregisterVM()
            _edit_vmx(lab, http, mc.ds.name, "abs-01/abs-01.vmx", add={"scsi0:0.fileName": own})
            vm = register(si, lab, mc.ds.name, "abs-01", mc.esx, "abs-copy")
            (disk,) = _disks(vm)
            assert disk.backing.fileName == f"[{mc.ds.name}] abs-01/abs-01.vmdk"
            assert disk.backing.datastore == mc.ds
        finally:
            vm.UnregisterVM()


def test_an_absolute_path_may_name_an_nfs_volume_id(lab, si, http):
    """/vmfs/volumes/<id> of an NFS datastore (the lab's rule: lab.vmx.nas_volume_id)."""
    nfs = find(si, vim.Datastore, "ds-nfs-01")
    volume_id = nas_volume_id(nfs.info.nas.remoteHost, nfs.info.nas.remotePath)
    with mounted_copy(si, lab, "ds-nfs-01", host_index=1) as mc:
        path = f"/vmfs/volumes/{volume_id}/mail-01/mail-01.vmdk"
        _edit_vmx(lab, http, mc.ds.name, "mail-01/mail-01.vmx", add={"scsi0:0.fileName": path})
        vm = register(si, lab, mc.ds.name, "mail-01", mc.esx, "nfs-absolute")
        try:
            (disk,) = _disks(vm)
            assert disk.backing.fileName == "[ds-nfs-01] mail-01/mail-01.vmdk"
            assert disk.backing.datastore == nfs
        finally:
            vm.UnregisterVM()


def test_a_path_no_datastore_resolves_stays_raw_and_power_on_cannot_find_it(lab, si, http, vclab):
    with mounted_copy(si, lab, "ds-nfs-01") as mc:
        raw = "/vmfs/volumes/0badc0de-00000000-0000-000000000000/gone/gone.vmdk"
        _edit_vmx(
            lab,
            http,
            mc.ds.name,
            "file-01/file-01.vmx",
            add={"scsi0:1.present": "TRUE", "scsi0:1.fileName": raw},
        )
        vm = register(si, lab, mc.ds.name, "file-01", mc.esx, "raw-path")
        try:
            missing = _disks(vm)[1]
            assert missing.backing.fileName == raw and missing.backing.datastore is None
            with pytest.raises(vim.fault.FileNotFound) as err:
                power_on(vm)
            assert err.value.msg == f"File {raw} was not found"
            assert vm.runtime.powerState == "poweredOff"
        finally:
            vm.UnregisterVM()


def test_power_on_fails_when_a_disk_file_is_missing(lab, si):
    with mounted_copy(si, lab, "ds-nfs-01") as mc:
        dc = find(si, vim.Datacenter, "lab-dc")
        flat = f"[{mc.ds.name}] mail-01/mail-01-flat.vmdk"
        wait(si.content.fileManager.DeleteDatastoreFile_Task(name=flat, datacenter=dc))
        vm = register(si, lab, mc.ds.name, "mail-01", mc.esx, "no-flat")
        try:
            with pytest.raises(vim.fault.FileNotFound) as err:
                power_on(vm)
            assert err.value.msg == f"File {flat} was not found"
        finally:
            vm.UnregisterVM()


def test_power_on_fails_when_a_disk_s_datastore_is_not_accessible(lab, si, vclab):
    """A disk on a datastore that went APD cannot be opened; the VM's own datastore is fine."""
    with (
        mounted_copy(si, lab, "ds-nfs-01", host_index=2) as home,
        mounted_copy(si, lab, "ds-fc-01", host_index=2) as other,
    ):
        vm = register(si, lab, home.ds.name, "print-01", home.esx, "apd-disk")
        other_name = other.ds.name
        spec = vim.vm.device.VirtualDeviceSpec(
            operation="add",
            device=vim.vm.device.VirtualDisk(
                key=-1,
                controllerKey=_disks(vm)[0].controllerKey,
                unitNumber=1,
                capacityInKB=1024,
                backing=vim.vm.device.VirtualDisk.FlatVer2BackingInfo(
                    fileName=f"[{other.ds.name}] web-02/web-02.vmdk", diskMode="persistent"
                ),
            ),
        )
        wait(vm.ReconfigVM_Task(vim.vm.ConfigSpec(deviceChange=[spec])))
        cfg = next(h for h in lab["hosts"] if h["name"] == other.esx.name)
        other.ops.unpresent(other.copy)  # APD on the disk's datastore
        try:
            with pytest.raises(vim.fault.FileNotFound) as err:
                power_on(vm)
            assert f"[{other.ds.name}] web-02/web-02.vmdk" in err.value.msg
            assert "not accessible" in err.value.msg
        finally:
            other.ops.present(other.copy, cfg, "fc")  # paths back: apd_exit
            vm.UnregisterVM()
    kinds = [e["kind"] for e in vclab.events() if e.get("datastore") == other_name]
    assert kinds == ["apd", "apd_exit"]


def test_a_restored_rdm_vm_maps_the_production_lun(lab, si, vclab):
    naa = lab["rdm_luns"][0]["naa"]
    with mounted_copy(si, lab, "ds-iscsi-02", host_index=0) as mc:
        vm = register(si, lab, mc.ds.name, "rdm-01", mc.esx, "rdm-copy")
        try:
            rdm = _disks(vm)[1].backing
            assert isinstance(rdm, vim.vm.device.VirtualDisk.RawDiskMappingVer1BackingInfo)
            assert rdm.fileName == f"[{mc.ds.name}] rdm-01/rdm-01_1.vmdk"
            assert rdm.deviceName == f"/vmfs/devices/disks/{naa}"
            wait(vm.ReconfigVM_Task(vim.vm.ConfigSpec(annotation="reconfigured")))
            assert isinstance(_disks(vm)[1].backing, type(rdm))  # a reconfiguration keeps it
            nic = next(
                d
                for d in vm.config.hardware.device
                if isinstance(d, vim.vm.device.VirtualEthernetCard)
            )
            nic.connectable.startConnected = False
            edit = vim.vm.device.VirtualDeviceSpec(operation="edit", device=nic)
            wait(vm.ReconfigVM_Task(vim.vm.ConfigSpec(deviceChange=[edit])))
            power_on(vm)
            event = vclab.events((OPENED,))[-1]
            assert (event["vm"], event["naa"], event["host"]) == ("rdm-copy", naa, mc.esx.name)
            assert "RDM_SQL_01" in event["detail"]
        finally:
            if vm.runtime.powerState == "poweredOn":
                wait(vm.PowerOffVM_Task())
            vm.UnregisterVM()


def test_an_rdm_whose_lun_the_host_does_not_see_cannot_power_on(lab, si, vclab):
    naa = lab["rdm_luns"][0]["naa"]
    before = len(vclab.events())
    with mounted_copy(si, lab, "ds-iscsi-02", host_index=1) as mc:
        storage = mc.esx.configManager.storageSystem
        lun = scsi_lun(mc.esx, naa)
        storage.DetachScsiLun(lunUuid=lun.uuid)  # no RDM VM on this host: allowed
        vm = register(si, lab, mc.ds.name, "rdm-01", mc.esx, "rdm-blind")
        try:
            with pytest.raises(vim.fault.FileNotFound) as err:
                power_on(vm)
            assert naa in err.value.msg and mc.esx.name in err.value.msg
            assert f"[{mc.ds.name}] rdm-01/rdm-01_1.vmdk" in err.value.msg
        finally:
            vm.UnregisterVM()
            storage.AttachScsiLun(lunUuid=lun.uuid)
        assert scsi_lun(mc.esx, naa).operationalState == ["ok"]
    assert vclab.events()[before:] == []


def test_a_virtual_compatibility_rdm(lab, si, http):
    with mounted_copy(si, lab, "ds-iscsi-02") as mc:
        path = "rdm-01/rdm-01_1.vmdk"
        text = read_datastore_file(lab, http, mc.ds.name, path)
        text = text.replace("vmfsPassthroughRawDeviceMap", "vmfsRawDeviceMap")
        write_datastore_file(lab, http, mc.ds.name, path, text)
        vm = register(si, lab, mc.ds.name, "rdm-01", mc.esx, "rdm-virtual")
        try:
            disk = _disks(vm)[1]
            rdm = disk.backing
            assert rdm.compatibilityMode == "virtualMode" and rdm.diskMode == "persistent"
            # removing the RDM with its files deletes the mapping files, not the LUN
            remove = vim.vm.device.VirtualDeviceSpec(
                operation="remove", fileOperation="destroy", device=disk
            )
            wait(vm.ReconfigVM_Task(vim.vm.ConfigSpec(deviceChange=[remove])))
            assert len(_disks(vm)) == 1
            for name in (path, "rdm-01/rdm-01_1-rdmp.vmdk"):
                with pytest.raises(requests.HTTPError):
                    read_datastore_file(lab, http, mc.ds.name, name)
            assert read_datastore_file(lab, http, mc.ds.name, "rdm-01/rdm-01.vmx")  # the rest
            assert scsi_lun(mc.esx, lab["rdm_luns"][0]["naa"]).operationalState == ["ok"]
        finally:
            vm.UnregisterVM()


def test_a_vm_is_inaccessible_while_its_datastore_is_in_apd(lab, si, vclab):
    with mounted_copy(si, lab, "ds-iscsi-02", host_index=2) as mc:
        vm = register(si, lab, mc.ds.name, "log-01", mc.esx, "apd-vm")
        cfg = next(h for h in lab["hosts"] if h["name"] == mc.esx.name)
        try:
            assert vm.runtime.connectionState == "connected"
            mc.ops.unpresent(mc.copy)
            assert vm.runtime.connectionState == "inaccessible"
            assert vm.summary.runtime.connectionState == "inaccessible"
            mc.ops.present(mc.copy, cfg, "iscsi")
            assert vclab.events()[-1]["kind"] == "apd_exit"
            assert vm.runtime.connectionState == "connected"
            assert vm.summary.runtime.connectionState == "connected"
        finally:
            vm.UnregisterVM()
    production = find(si, vim.VirtualMachine, "log-01")
    assert production.runtime.connectionState == "connected"
