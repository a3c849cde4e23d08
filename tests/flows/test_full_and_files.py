"""Full restore and VM files restore through the flow, on a block and an NFS datastore."""

from __future__ import annotations

import pytest
from pyVmomi import vim

from flows.restore import restore_from_snapshot
from lab.seed import disk_marker
from tasks import vsphere as vs
from tests.support.vcenter import find
from tests.support.vsphere_steps import read_datastore_file
from tests.support.world import discard_vm, put_back_original


@pytest.mark.parametrize("ds_name", ["ds-iscsi-02", "ds-nfs-01"])
def test_full_restore_copies_the_vm_back_to_production(lab, lab_blocks, si, http, world, ds_name):
    ds = next(d for d in lab["datastores"] if d["name"] == ds_name)
    vm = ds["vms"][1]
    before = world.snapshot()
    result = restore_from_snapshot(
        vms=[vm],
        snapshot=ds["snapshots"][0],
        operation="full_restore",
        placement={"name_suffix": "-full"},
    )
    try:
        o = result["vms"][0]
        assert o["state"] == "restored, running" and o["restored_as"] == f"{vm}-full"
        restored = find(si, vim.VirtualMachine, f"{vm}-full")
        assert restored.config.files.vmPathName == f"[{ds_name}] {vm}-full/{vm}.vmx"
        assert restored.runtime.powerState == "poweredOn"
        text = read_datastore_file(lab, http, ds_name, f"{vm}-full/{vm}-flat.vmdk")
        assert text == disk_marker(vm, 1)
        # the original is untouched
        original = find(si, vim.VirtualMachine, vm)
        assert original.runtime.powerState == "poweredOn"
        assert read_datastore_file(lab, http, ds_name, f"{vm}/{vm}-flat.vmdk") == disk_marker(vm, 3)
        after = world.snapshot()
        assert after["arrays"] == before["arrays"] and after["datastores"] == before["datastores"]
        assert world.bad_events_since(before["events"]) == []
    finally:
        discard_vm(si, f"{vm}-full")


def test_full_restore_can_replace_the_original_without_deleting_it(lab, lab_blocks, si, http):
    ds = next(d for d in lab["datastores"] if d["name"] == "ds-fc-01")
    vm = ds["vms"][2]
    original = find(si, vim.VirtualMachine, vm)
    uuid = original.config.uuid
    result = restore_from_snapshot(
        vms=[vm],
        snapshot=ds["snapshots"][1],
        operation="full_restore",
        finish={"replace_original": True},
        placement={"name_suffix": "-new"},
    )
    try:
        assert result["vms"][0]["restored_as"] == vm
        now = find(si, vim.VirtualMachine, vm)
        assert now.config.files.vmPathName == f"[ds-fc-01] {vm}-new/{vm}.vmx"
        assert now.config.uuid == uuid  # answered "moved": it takes the original's place
        # network=auto started it disconnected (the original ran); in the original's place
        # it is connected again
        nics = [
            d
            for d in now.config.hardware.device
            if isinstance(d, vim.vm.device.VirtualEthernetCard)
        ]
        assert nics and all(n.connectable.startConnected and n.connectable.connected for n in nics)
        assert "NICs connected again: the original it replaces is off" in result["vms"][0]["notes"]
        assert read_datastore_file(
            lab, http, "ds-fc-01", f"{vm}-new/{vm}-flat.vmdk"
        ) == disk_marker(vm, 2)
        # the original was powered off, renamed and unregistered, and its files are still there
        assert find(si, vim.VirtualMachine, f"{vm}-replaced-new") is None
        assert read_datastore_file(lab, http, "ds-fc-01", f"{vm}/{vm}-flat.vmdk") == disk_marker(
            vm, 3
        )
    finally:
        discard_vm(si, vm)
        put_back_original(si, lab, vm)  # the lab's original, in its host, folder and pool


def _replace_with_a_fault(lab, vclab, fault: dict, suffix: str) -> tuple[str, str]:
    """Run a full restore of a ds-fc-01 VM that replaces the original, with ``fault``
    injected; return the VM's name and the run's error (the run must fail)."""
    ds = next(d for d in lab["datastores"] if d["name"] == "ds-fc-01")
    vm = ds["vms"][1]
    vclab.post("/faults", fault).raise_for_status()
    state = restore_from_snapshot(
        vms=[vm],
        snapshot=ds["snapshots"][0],
        operation="full_restore",
        finish={"replace_original": True},
        placement={"name_suffix": suffix},
        return_state=True,
    )
    assert state.is_failed()
    return vm, str(state.result(raise_on_failure=False))


def test_a_replace_that_fails_puts_the_original_back(lab, lab_blocks, si, world, vclab):
    """Giving the original's name to the restored VM fails: the original gets its name
    back and runs again; the restored VM stays, and the run says so."""
    vm = next(d for d in lab["datastores"] if d["name"] == "ds-fc-01")["vms"][1]
    moref = find(si, vim.VirtualMachine, vm)._moId
    before = world.snapshot()
    try:
        # the first rename (original -> aside) passes, the second (restored -> original) fails
        rename_fault = {"operation": "Rename_Task", "error": "InvalidName", "times": 1, "after": 1}
        vm, text = _replace_with_a_fault(lab, vclab, rename_fault, "-rb")
        assert f"{vm}: rename {vm}-rb to {vm} failed: InvalidName: lab: injected" in text, text
        assert f"kept: VM {vm}-rb" in text, text
        assert "original VM" not in text, text  # it is back as it was
        back = find(si, vim.VirtualMachine, vm)
        assert back is not None and back._moId == moref
        assert back.runtime.powerState == "poweredOn"
        assert find(si, vim.VirtualMachine, f"{vm}-replaced-rb") is None
        restored = find(si, vim.VirtualMachine, f"{vm}-rb")
        assert restored.config.files.vmPathName == f"[ds-fc-01] {vm}-rb/{vm}.vmx"
        after = world.snapshot()
        for key in ("arrays", "datastores", "devices"):
            assert after[key] == before[key], key
    finally:
        vclab.delete("/faults")
        discard_vm(si, f"{vm}-rb")


def test_a_replace_that_cannot_unregister_the_original_says_where_it_is(
    lab, lab_blocks, si, world, vclab
):
    """The restored VM has taken the name; unregistering the original fails: the original
    stays registered (powered off, renamed) and the run reports it as kept."""
    vm = next(d for d in lab["datastores"] if d["name"] == "ds-fc-01")["vms"][1]
    moref = find(si, vim.VirtualMachine, vm)._moId
    before = world.snapshot()
    try:
        unregister_fault = {"operation": "UnregisterVM", "error": "InvalidState", "times": 1}
        vm, text = _replace_with_a_fault(lab, vclab, unregister_fault, "-ur")
        assert f"{vm}: unregister {vm}-replaced-ur failed: InvalidState: lab: inj" in text, text
        assert f"kept: VM {vm}; " in text, text
        assert f"original VM {vm}: renamed {vm}-replaced-ur, not running" in text, text
        aside = find(si, vim.VirtualMachine, f"{vm}-replaced-ur")
        assert aside._moId == moref and aside.runtime.powerState == "poweredOff"
        now = find(si, vim.VirtualMachine, vm)
        assert now.config.files.vmPathName == f"[ds-fc-01] {vm}-ur/{vm}.vmx"
        after = world.snapshot()
        for key in ("arrays", "datastores", "devices"):
            assert after[key] == before[key], key
    finally:
        vclab.delete("/faults")
        discard_vm(si, vm)
        aside = find(si, vim.VirtualMachine, f"{vm}-replaced-ur")
        if aside is not None:  # put the lab's original back as it was
            vs.wait(aside.Rename_Task(newName=vm), 60)
            vs.power_on(aside, "copied", 60)


@pytest.mark.parametrize("ds_name", ["ds-iscsi-01", "ds-nfs-01"])
def test_vm_files_restore_copies_chosen_files(lab, lab_blocks, si, http, world, ds_name):
    ds = next(d for d in lab["datastores"] if d["name"] == ds_name)
    vm = ds["vms"][0]
    before = world.snapshot()
    result = restore_from_snapshot(
        vms=[vm],
        snapshot=ds["snapshots"][0],
        operation="vm_files",
        files={"patterns": ["*.vmdk", "*.vmx"], "target_folder": f"{vm}-files-test"},
    )
    try:
        o = result["vms"][0]
        assert o["state"] == "files copied"
        assert o["files"] == sorted([f"{vm}-flat.vmdk", f"{vm}.vmdk", f"{vm}.vmx"])
        text = read_datastore_file(lab, http, ds_name, f"{vm}-files-test/{vm}-flat.vmdk")
        assert text == disk_marker(vm, 1)
        after = world.snapshot()
        assert after["arrays"] == before["arrays"] and after["vms"] == before["vms"]
        assert after["datastores"] == before["datastores"]
    finally:
        dsobj = find(si, vim.Datastore, ds_name)
        vs.wait(
            si.content.fileManager.DeleteDatastoreFile_Task(
                f"[{ds_name}] {vm}-files-test", vs.datacenter_of(dsobj)
            ),
            60,
        )


def test_a_files_restore_retried_mid_copy_does_not_trip_on_its_own_files(
    lab, lab_blocks, si, http, vclab, world
):
    """A transient fault on the second file: the retry skips the file already copied
    instead of failing with FileAlreadyExists."""
    ds_name = "ds-iscsi-01"
    ds = next(d for d in lab["datastores"] if d["name"] == ds_name)
    vm = ds["vms"][1]
    before = world.snapshot()
    copies = vclab.calls().get("CopyDatastoreFile_Task", 0)
    vclab.post(
        "/faults",
        {"operation": "CopyDatastoreFile_Task", "error": "Timedout", "times": 1, "after": 1},
    ).raise_for_status()
    result = restore_from_snapshot(
        vms=[vm],
        snapshot=ds["snapshots"][0],
        operation="vm_files",
        files={"patterns": ["*.vmdk", "*.vmx"], "target_folder": f"{vm}-files-retry"},
    )
    try:
        o = result["vms"][0]
        assert o["state"] == "files copied", o
        assert o["files"] == sorted([f"{vm}-flat.vmdk", f"{vm}.vmdk", f"{vm}.vmx"])
        # one file and the failed call, then the 2 others: the retry skips the file the
        # first attempt copied whole (same size) and copies again any it cut short
        assert vclab.calls()["CopyDatastoreFile_Task"] == copies + 4
        text = read_datastore_file(lab, http, ds_name, f"{vm}-files-retry/{vm}-flat.vmdk")
        assert text == disk_marker(vm, 1)
        after = world.snapshot()
        assert after["arrays"] == before["arrays"] and after["vms"] == before["vms"]
    finally:
        dsobj = find(si, vim.Datastore, ds_name)
        vs.wait(
            si.content.fileManager.DeleteDatastoreFile_Task(
                f"[{ds_name}] {vm}-files-retry", vs.datacenter_of(dsobj)
            ),
            60,
        )
