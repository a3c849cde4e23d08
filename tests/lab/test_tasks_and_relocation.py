"""Long-running tasks (fault rules with ``duration_s``) and relocation with disk locators."""

from __future__ import annotations

import pytest
import requests
from pyVmomi import vim, vmodl

from tests.support.fixtures import mounted_copy, register
from tests.support.vcenter import find
from tests.support.vsphere_steps import power_on, read_datastore_file, wait

RUNNING = vim.TaskInfo.State.running


def _disk(vm: vim.VirtualMachine) -> vim.vm.device.VirtualDisk:
    return next(d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk))


def test_a_long_relocation_runs_while_the_vm_refuses_other_tasks(lab, si, http, vclab):
    with (
        mounted_copy(si, lab, "ds-nfs-01", host_index=0) as src,
        mounted_copy(si, lab, "ds-iscsi-02", host_index=0) as dst,
    ):
        vm = register(si, lab, src.ds.name, "file-01", src.esx, "slow-move")
        try:
            rule = {"operation": "RelocateVM_Task", "duration_s": 1.5, "times": 1}
            assert vclab.post("/faults", rule).status_code == 200
            task = vm.RelocateVM_Task(vim.vm.RelocateSpec(datastore=dst.ds))
            info = task.info
            assert info.state == RUNNING  # returned at once
            assert info.name.info.wsdlName == "RelocateVM_Task"  # pyVmomi: a method
            assert info.descriptionId == "VirtualMachine.relocate"
            assert info.entity == vm
            assert task in vm.recentTask and task in si.content.taskManager.recentTask
            assert vm.config.files.vmPathName.startswith(f"[{src.ds.name}]")  # not yet moved

            second = vm.RelocateVM_Task(vim.vm.RelocateSpec(datastore=dst.ds))
            with pytest.raises(vim.fault.TaskInProgress) as err:
                wait(second)
            assert err.value.task == task
            with pytest.raises(vim.fault.TaskInProgress):
                wait(vm.PowerOnVM_Task())
            assert vm.name == "slow-move"  # reading the VM is fine meanwhile

            wait(task, timeout=30)
            assert task.info.state == vim.TaskInfo.State.success
            assert vm.config.files.vmPathName == f"[{dst.ds.name}] slow-move/file-01.vmx"
            relocations = [  # one task per call: the work's own task is not listed
                t
                for t in si.content.taskManager.recentTask
                if t.info.entity == vm and t.info.descriptionId == "VirtualMachine.relocate"
            ]
            assert relocations == [task, second]
            again = vm.RelocateVM_Task(vim.vm.RelocateSpec(datastore=src.ds))
            wait(again)  # once it is over, the VM takes tasks again
            assert vm.config.files.vmPathName.startswith(f"[{src.ds.name}]")
        finally:
            vm.UnregisterVM()


def test_a_long_task_can_end_in_an_injected_error(lab, si, vclab):
    with mounted_copy(si, lab, "ds-nfs-01", host_index=1) as mc:
        vm = register(si, lab, mc.ds.name, "mail-01", mc.esx, "slow-fail")
        try:
            rule = {"operation": "RelocateVM_Task", "duration_s": 0.5, "error": "Timedout"}
            vclab.post("/faults", {**rule, "times": 1}).raise_for_status()
            task = vm.RelocateVM_Task(vim.vm.RelocateSpec(host=mc.esx))
            assert task.info.state == RUNNING
            with pytest.raises(vim.fault.Timedout):
                wait(task)
        finally:
            vm.UnregisterVM()


def test_a_long_datastore_file_copy(lab, si, http, vclab):
    with mounted_copy(si, lab, "ds-nfs-01", host_index=2) as mc:
        dc = find(si, vim.Datacenter, lab["vcenter"]["datacenter"])
        fm = si.content.fileManager
        vclab.post(
            "/faults", {"operation": "CopyDatastoreFile_Task", "duration_s": 0.5, "times": 1}
        ).raise_for_status()
        task = fm.CopyDatastoreFile_Task(
            sourceName=f"[{mc.ds.name}] print-01/print-01.vmx",
            sourceDatacenter=dc,
            destinationName=f"[{mc.ds.name}] print-01/print-01.vmx.bak",
            destinationDatacenter=dc,
        )
        assert task.info.state == RUNNING
        assert task.info.descriptionId == "FileManager.copy"
        assert task.info.name.info.wsdlName == "CopyDatastoreFile_Task"
        with pytest.raises(requests.HTTPError) as err:  # the work is not done yet
            read_datastore_file(lab, http, mc.ds.name, "print-01/print-01.vmx.bak")
        assert err.value.response.status_code == 404
        wait(task)
        original = read_datastore_file(lab, http, mc.ds.name, "print-01/print-01.vmx")
        assert read_datastore_file(lab, http, mc.ds.name, "print-01/print-01.vmx.bak") == original


def test_duration_is_for_task_methods_only(vclab):
    r = vclab.post("/faults", {"operation": "RescanHba", "duration_s": 1})
    assert r.status_code == 400 and "_Task" in r.json()["error"]


def test_relocation_moves_each_disk_to_its_locator_datastore(lab, si, http, vclab):
    with (
        mounted_copy(si, lab, "ds-nfs-01", host_index=0) as home,
        mounted_copy(si, lab, "ds-iscsi-02", host_index=0) as config_ds,
        mounted_copy(si, lab, "ds-fc-01", host_index=0) as disk_ds,
    ):
        vm = register(si, lab, home.ds.name, "file-01", home.esx, "split-move")
        try:
            spec = vim.vm.RelocateSpec(
                datastore=config_ds.ds,
                disk=[vim.vm.RelocateSpec.DiskLocator(diskId=_disk(vm).key, datastore=disk_ds.ds)],
            )
            wait(vm.RelocateVM_Task(spec))
            assert vm.config.files.vmPathName == f"[{config_ds.ds.name}] split-move/file-01.vmx"
            disk = _disk(vm)
            assert disk.backing.fileName == f"[{disk_ds.ds.name}] split-move/file-01.vmdk"
            assert disk.backing.datastore == disk_ds.ds
            assert sorted(ds.name for ds in vm.datastore) == sorted(
                [config_ds.ds.name, disk_ds.ds.name]
            )
            assert vm in config_ds.ds.vm and vm in disk_ds.ds.vm and vm not in home.ds.vm
            vmx = read_datastore_file(lab, http, config_ds.ds.name, "split-move/file-01.vmx")
            absolute = f"/vmfs/volumes/{disk_ds.ds.info.vmfs.uuid}/split-move/file-01.vmdk"
            assert f'scsi0:0.fileName = "{absolute}"' in vmx
            flat = read_datastore_file(lab, http, disk_ds.ds.name, "split-move/file-01-flat.vmdk")
            assert "generation: 1" in flat  # the copy's data moved with the disk
            browser = home.ds.browser
            search = vim.host.DatastoreBrowser.SearchSpec(matchPattern=["*"])
            found = wait(browser.SearchDatastoreSubFolders_Task(f"[{home.ds.name}]", search))
            assert not any(r.folderPath.rstrip("/").endswith("file-01") for r in found)
            assert not power_on(vm)  # vCenter recorded the new location: no question
            wait(vm.PowerOffVM_Task())
        finally:
            vm.UnregisterVM()


def test_relocation_refuses_a_locator_for_a_disk_the_vm_has_not(lab, si):
    with mounted_copy(si, lab, "ds-nfs-01", host_index=1) as mc:
        vm = register(si, lab, mc.ds.name, "file-01", mc.esx, "bad-locator")
        try:
            spec = vim.vm.RelocateSpec(
                disk=[vim.vm.RelocateSpec.DiskLocator(diskId=4242, datastore=mc.ds)]
            )
            task = vm.RelocateVM_Task(spec)
            with pytest.raises(vmodl.fault.InvalidArgument):
                wait(task)
        finally:
            vm.UnregisterVM()
