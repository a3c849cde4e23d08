"""The lab's inventory for real estates: VM folders, resource pools, and the case VMs.

Read over SOAP with pyVmomi (and the datastores' files through vCenter's /folder service);
checked against lab.json.
"""

from __future__ import annotations

import re

import pytest
from pyVmomi import vim, vmodl

from lab import topology as topo
from lab.seed import disk_marker
from tests.support.fixtures import mounted_copy
from tests.support.vcenter import find, host
from tests.support.vsphere_steps import read_datastore_file, scsi_lun, wait, wait_for_tools


def _vm_at(si, path: str) -> vim.VirtualMachine:
    vm = si.content.searchIndex.FindByInventoryPath(path)
    assert isinstance(vm, vim.VirtualMachine), path
    return vm


def _disks(vm: vim.VirtualMachine) -> list[vim.vm.device.VirtualDisk]:
    return sorted(
        (d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk)),
        key=lambda d: d.unitNumber,
    )


def test_lab_json_lists_the_cases_every_production_vm_and_the_networks(lab, http):
    assert lab["cases"] == {
        "multi_datastore_vm": "multi-01",
        "absolute_path_vm": "abs-01",
        "rdm_vm": "rdm-01",
        "duplicate_name_vm": "dup-01",
        "dhcp_vm": "dhcp-01",
        "shared_host_object": "lab-cluster-iscsi",
        "shared_igroup": "lab-cluster",
    }
    assert lab["networks"] == {"production": ["VM Network"], "isolated": ["isolated-pg"]}
    names = [v["name"] for v in lab["vms"]]
    ordinary = [vm for d in lab["datastores"] for vm in d["vms"]]
    assert names == [*ordinary, "multi-01", "abs-01", "rdm-01", "dup-01", "dup-01", "dhcp-01"]
    ips = [v["ip"] for v in lab["vms"]]
    assert len(set(ips)) == len(ips) and all(ip.startswith("127.0.50.") for ip in ips)
    app = lab["vms"][0]
    assert {k: app[k] for k in ("name", "datastore", "vmx", "folder", "path", "pool")} == {
        "name": "app-01",
        "datastore": "ds-iscsi-01",
        "vmx": "app-01/app-01.vmx",
        "folder": "apps",
        "path": "lab-dc/vm/apps/app-01",
        "pool": "rp-prod",
    }
    assert {v["host"] for v in lab["vms"]} == {h["name"] for h in lab["hosts"]}
    primera = next(a for a in lab["arrays"] if a["name"] == "primera1")
    volumes = http.get(primera["lab_url"] + "/state", timeout=30).json()["volumes"]
    rdm = next(v for v in volumes if v["name"] == "RDM_SQL_01")
    assert lab["rdm_luns"] == [{"array": "primera1", "volume": "RDM_SQL_01", "naa": rdm["naa"]}]


def test_vm_folders_and_resource_pools(si, lab):
    dc = find(si, vim.Datacenter, lab["vcenter"]["datacenter"])
    folders = {f.name for f in dc.vmFolder.childEntity if isinstance(f, vim.Folder)}
    assert folders >= set(topo.VM_FOLDERS)
    root = find(si, vim.ClusterComputeResource, lab["vcenter"]["cluster"]).resourcePool
    assert sorted(p.name for p in root.resourcePool) == ["rp-infra", "rp-prod"]


def test_every_production_vm_lives_in_its_folder_and_pool_on_its_host(si, lab):
    for cfg in lab["vms"]:
        vm = _vm_at(si, cfg["path"])
        assert vm.name == cfg["name"]
        assert vm.parent.name == cfg["folder"] and vm.resourcePool.name == cfg["pool"]
        assert vm in vm.resourcePool.vm
        assert vm.runtime.host.name == cfg["host"]
        assert vm.config.files.vmPathName == f"[{cfg['datastore']}] {cfg['vmx']}"
        assert vm.runtime.powerState == "poweredOn" and vm.runtime.question is None
        assert vm.runtime.connectionState == "connected"
        wait_for_tools(vm)
        assert vm.guest.ipAddress == cfg["ip"]


def test_a_vm_with_a_disk_on_another_datastore(si, lab, http):
    cfg = next(v for v in lab["vms"] if v["case"] == "multi_datastore_vm")
    vm = _vm_at(si, cfg["path"])
    fc = find(si, vim.Datastore, "ds-fc-01")
    d0, d1 = _disks(vm)
    assert d0.backing.fileName == "[ds-iscsi-01] multi-01/multi-01.vmdk"
    assert d1.backing.fileName == "[ds-fc-01] multi-01/multi-01_1.vmdk"
    assert d1.backing.datastore == fc
    assert sorted(ds.name for ds in vm.datastore) == ["ds-fc-01", "ds-iscsi-01"]
    assert vm in fc.vm
    vmx = read_datastore_file(lab, http, "ds-iscsi-01", "multi-01/multi-01.vmx")
    absolute = f"/vmfs/volumes/{fc.info.vmfs.uuid}/multi-01/multi-01_1.vmdk"
    assert f'scsi0:1.fileName = "{absolute}"' in vmx
    flat = read_datastore_file(lab, http, "ds-fc-01", "multi-01/multi-01_1-flat.vmdk")
    assert flat == "snaprestore lab disk of multi-01 (disk 1)\ngeneration: 3\n"
    assert flat == disk_marker("multi-01", 3, disk=1)


@pytest.mark.parametrize("snapshot", [0, 1])
def test_both_snapshots_of_ds_fc_01_hold_disk_1_of_multi_01(si, lab, http, snapshot):
    with mounted_copy(si, lab, "ds-fc-01", snapshot=snapshot) as mc:
        flat = read_datastore_file(lab, http, mc.ds.name, "multi-01/multi-01_1-flat.vmdk")
        assert flat == disk_marker("multi-01", snapshot + 1, disk=1)


def test_a_vm_that_names_its_disk_by_absolute_path(si, lab, http):
    cfg = next(v for v in lab["vms"] if v["case"] == "absolute_path_vm")
    vm = _vm_at(si, cfg["path"])
    ds = find(si, vim.Datastore, "ds-iscsi-02")
    (disk,) = _disks(vm)
    assert disk.backing.fileName == "[ds-iscsi-02] abs-01/abs-01.vmdk"
    assert disk.backing.datastore == ds
    vmx = read_datastore_file(lab, http, "ds-iscsi-02", "abs-01/abs-01.vmx")
    absolute = f"/vmfs/volumes/{ds.info.vmfs.uuid}/abs-01/abs-01.vmdk"
    assert f'scsi0:0.fileName = "{absolute}"' in vmx


def test_a_vm_with_a_physical_rdm_of_a_production_lun(si, lab, http):
    cfg = next(v for v in lab["vms"] if v["case"] == "rdm_vm")
    naa = lab["rdm_luns"][0]["naa"]
    vm = _vm_at(si, cfg["path"])
    d0, d1 = _disks(vm)
    assert isinstance(d0.backing, vim.vm.device.VirtualDisk.FlatVer2BackingInfo)
    rdm = d1.backing
    assert isinstance(rdm, vim.vm.device.VirtualDisk.RawDiskMappingVer1BackingInfo)
    assert rdm.fileName == "[ds-iscsi-02] rdm-01/rdm-01_1.vmdk"
    assert rdm.datastore == find(si, vim.Datastore, "ds-iscsi-02")
    assert rdm.compatibilityMode == "physicalMode"
    assert rdm.diskMode == "independent_persistent"
    assert rdm.deviceName == f"/vmfs/devices/disks/{naa}"
    for h in lab["hosts"]:  # the LUN is a device of every host, and no datastore
        lun = scsi_lun(host(si, h["name"]), naa)
        assert lun is not None and lun.uuid == rdm.lunUuid
        assert lun.operationalState == ["ok"]
    for ds in find(si, vim.Datacenter, "lab-dc").datastore:
        if ds.summary.type == "VMFS":
            assert naa not in [e.diskName for e in ds.info.vmfs.extent]
    descriptor = read_datastore_file(lab, http, "ds-iscsi-02", "rdm-01/rdm-01_1.vmdk")
    assert 'createType="vmfsPassthroughRawDeviceMap"' in descriptor
    assert re.search(r'^RW \d+ VMFSRDM "rdm-01_1-rdmp.vmdk"$', descriptor, re.M)
    assert f'ddb.sr-lab.lun = "{naa}"' in descriptor
    assert read_datastore_file(lab, http, "ds-iscsi-02", "rdm-01/rdm-01_1-rdmp.vmdk")


def test_detaching_the_lun_of_a_registered_rdm_is_refused(si, lab):
    cfg = next(v for v in lab["vms"] if v["case"] == "rdm_vm")
    esx = host(si, cfg["host"])
    lun = scsi_lun(esx, lab["rdm_luns"][0]["naa"])
    with pytest.raises(vim.fault.ResourceInUse) as err:
        esx.configManager.storageSystem.DetachScsiLun(lunUuid=lun.uuid)
    assert "rdm-01" in err.value.msg
    assert scsi_lun(esx, lun.canonicalName).operationalState == ["ok"]


def test_two_vms_with_one_name_in_two_folders(si, lab):
    dups = [v for v in lab["vms"] if v["case"] == "duplicate_name_vm"]
    assert [(v["name"], v["folder"], v["vmx"]) for v in dups] == [
        ("dup-01", "team-a", "dup-01/dup-01.vmx"),
        ("dup-01", "team-b", "dup-01_1/dup-01.vmx"),
    ]
    vms = [_vm_at(si, v["path"]) for v in dups]
    assert vms[0] != vms[1] and vms[0].config.uuid != vms[1].config.uuid
    assert [vm.guest.ipAddress for vm in vms] == [v["ip"] for v in dups]
    assert dups[0]["ip"] != dups[1]["ip"]


def test_duplicate_names_are_refused_per_folder_only(si, lab):
    dc = find(si, vim.Datacenter, lab["vcenter"]["datacenter"])
    folders = {f.name: f for f in dc.vmFolder.childEntity if isinstance(f, vim.Folder)}
    cluster = find(si, vim.ClusterComputeResource, "lab-cluster")
    pool = next(p for p in cluster.resourcePool.resourcePool if p.name == "rp-infra")
    with mounted_copy(si, lab, "ds-iscsi-02") as mc:
        path = f"[{mc.ds.name}] dup-01/dup-01.vmx"
        with pytest.raises(vim.fault.DuplicateName):
            wait(
                folders["team-a"].RegisterVM_Task(
                    path=path, asTemplate=False, pool=pool, host=mc.esx
                )
            )
        vm = wait(
            folders["apps"].RegisterVM_Task(path=path, asTemplate=False, pool=pool, host=mc.esx)
        )
        try:
            assert vm.name == "dup-01"  # the .vmx's displayName, in another folder
            assert vm.parent == folders["apps"] and vm.resourcePool == pool
        finally:
            vm.UnregisterVM()


def test_register_honours_the_folder_and_the_pool(si, lab):
    dc = find(si, vim.Datacenter, lab["vcenter"]["datacenter"])
    infra = next(f for f in dc.vmFolder.childEntity if f.name == "infra")
    cluster = find(si, vim.ClusterComputeResource, "lab-cluster")
    pools = {p.name: p for p in cluster.resourcePool.resourcePool}
    with mounted_copy(si, lab, "ds-nfs-01") as mc:
        path = f"[{mc.ds.name}] file-01/file-01.vmx"
        bogus = vim.ResourcePool("resgroup-lab-bogus", si._stub)
        with pytest.raises(vmodl.fault.ManagedObjectNotFound):
            wait(infra.RegisterVM_Task(path=path, asTemplate=False, pool=bogus, host=mc.esx))
        vm = wait(
            infra.RegisterVM_Task(
                path=path, name="cases-placed", asTemplate=False, pool=pools["rp-prod"], host=mc.esx
            )
        )
        try:
            assert vm.parent == infra and vm.resourcePool == pools["rp-prod"]
            assert vm in pools["rp-prod"].vm and vm in infra.childEntity
        finally:
            vm.UnregisterVM()
