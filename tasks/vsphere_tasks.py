"""Prefect tasks for the vSphere side of a restore: one task per step, named for the UI.

Tasks take the vCenter block and plain references (names, managed object ids), never
live pyVmomi objects, so they can be retried and logged.
"""

from __future__ import annotations

from typing import Literal

from prefect import task
from pydantic import BaseModel
from pyVmomi import vim

from blocks.models import CopyTag, IscsiPortal
from blocks.settings import settings
from blocks.vcenter import VCenterCredentials
from tasks import vsphere as vs
from tasks.retry import step_options
from tasks.sweep import TAG_FIELD, tag_field_key, tag_of, uses_files_on


class DatastoreRef(BaseModel):
    """A datastore the restore mounted."""

    name: str
    moref: str
    kind: Literal["vmfs", "nfs"]
    vmfs_uuid: str | None = None
    naa: str | None = None


class VmRef(BaseModel):
    """A virtual machine the restore registered."""

    name: str
    moref: str


class DatastoreUser(VmRef):
    """A VM that uses a datastore: its files live there, or only some of its disks do."""

    lives_on: bool  # its .vmx is on the datastore
    run: str | None = None  # the restore run whose tag it carries


def _vm(vc: VCenterCredentials, ref: VmRef) -> vim.VirtualMachine:
    return vs.moref(vc.connect(), vim.VirtualMachine, ref.moref)


def _ds(vc: VCenterCredentials, ref: DatastoreRef) -> vim.Datastore:
    return vs.moref(vc.connect(), vim.Datastore, ref.moref)


def _tag(si: vim.ServiceInstance, entity: object, tag: CopyTag) -> None:
    """Mark ``entity`` with snaprestore's tag in a custom attribute."""
    cfm = si.content.customFieldsManager
    field = next((f for f in cfm.field or [] if f.name == TAG_FIELD), None)
    if field is None:
        try:
            field = cfm.AddCustomFieldDef(name=TAG_FIELD)
        except vim.fault.DuplicateName:
            field = next(f for f in cfm.field if f.name == TAG_FIELD)
    cfm.SetField(entity=entity, key=field.key, value=tag.encode())


def _datastore_ref(ds: vim.Datastore) -> DatastoreRef:
    info = ds.info
    if isinstance(info, vim.host.VmfsDatastoreInfo):
        return DatastoreRef(
            name=ds.name,
            moref=ds._moId,
            kind="vmfs",
            vmfs_uuid=info.vmfs.uuid,
            naa=info.vmfs.extent[0].diskName,
        )
    return DatastoreRef(name=ds.name, moref=ds._moId, kind="nfs")


@task(**step_options("make the array's iSCSI portals static targets of {host}"))
def ensure_static_targets(
    vcenter: VCenterCredentials, host: str, portals: list[IscsiPortal]
) -> int:
    """Make the array's portals static targets of the host's software iSCSI adapter."""
    added = vs.ensure_static_targets(vs.get_host(vcenter.connect(), host), portals)
    print(f"{host}: {len(added)} static target(s) added")
    return len(added)


@task(**step_options("rescan {protocol} adapters of {host}"))
def rescan_adapters(vcenter: VCenterCredentials, host: str, protocol: str) -> list[str]:
    """Rescan the host's adapters of ``protocol`` (never the other hosts)."""
    h = vs.get_host(vcenter.connect(), host)
    devices = vs.adapters_for(h, protocol)
    if not devices:
        raise vs.VSphereError(f"host {host} has no {protocol} adapter")
    vs.rescan(h, devices)
    print(f"{host}: rescanned {', '.join(devices)}")
    return devices


@task(**step_options("find the copy {naa} on {host}"))
def find_copy_device(vcenter: VCenterCredentials, host: str, naa: str) -> str:
    """Check that the host sees the copy as an unresolved VMFS volume; return its label."""
    h = vs.get_host(vcenter.connect(), host)
    if vs.vmfs_on(h, naa) is not None:
        return "mounted"
    vol = vs.unresolved_volume(h, naa)
    if vol is None:
        seen = vs.scsi_lun(h, naa) is not None
        raise vs.VSphereError(
            f"{host} {'sees device' if seen else 'does not see'} {naa} but finds no unresolved "
            "VMFS copy on it"
            + ("" if seen else ": check that the array presented it and the adapter was rescanned")
        )
    return vol.vmfsLabel


@task(**step_options("resignature {naa} on {host} as {name}"))
def resignature_copy(
    vcenter: VCenterCredentials, host: str, naa: str, name: str, tag: CopyTag
) -> DatastoreRef:
    """Resignature the VMFS copy, name the datastore ``name`` and tag it; idempotent."""
    si = vcenter.connect()
    ds = vs.resignature(vs.get_host(si, host), naa, name, settings().task_timeout_s)
    _tag(si, ds, tag)
    return _datastore_ref(ds)


@task(**step_options("mount {server}:{path} on {host} as {name}"))
def mount_nfs(
    vcenter: VCenterCredentials, host: str, server: str, path: str, name: str, tag: CopyTag
) -> DatastoreRef:
    """Mount the exported copy as an NFS datastore on the host and tag it; idempotent."""
    si = vcenter.connect()
    ds = vs.mount_nfs(vs.get_host(si, host), server, path, name)
    _tag(si, ds, tag)
    return _datastore_ref(ds)


@task(**step_options("register {new_name} from [{datastore}] {vmx}"))
def register_vm(
    vcenter: VCenterCredentials, host: str, datastore: str, vmx: str, new_name: str, tag: CopyTag
) -> VmRef:
    """Register the .vmx from the copy as ``new_name`` on the host and tag it."""
    si = vcenter.connect()
    vm = vs.register_vm(vs.get_host(si, host), datastore, vmx, new_name, settings().task_timeout_s)
    try:
        _tag(si, vm, tag)
    except Exception:
        vm.UnregisterVM()  # untagged, cleanup could not tell it from someone else's VM
        raise
    return VmRef(name=vm.name, moref=vm._moId)


@task(**step_options("disconnect the NICs of {vm.name}"))
def disconnect_nics(vcenter: VCenterCredentials, vm: VmRef) -> int:
    """Make every NIC of the VM start disconnected (isolated boot)."""
    return vs.disconnect_nics(_vm(vcenter, vm), settings().task_timeout_s)


@task(**step_options("power on {vm.name}"))
def power_on_vm(vcenter: VCenterCredentials, vm: VmRef, answer: Literal["copied", "moved"]) -> bool:
    """Power the VM on, answering "moved or copied" with ``answer``; True if it was asked."""
    asked = vs.power_on(_vm(vcenter, vm), answer, settings().task_timeout_s)
    if asked:
        print(f"{vm.name}: answered the moved-or-copied question: {answer}")
    return asked


@task(**step_options("wait for VMware Tools in {vm.name}", retries=0))
def wait_for_tools(vcenter: VCenterCredentials, vm: VmRef, want_ip: bool) -> dict:
    """Wait for the guest's tools heartbeat (and IP); return what was seen."""
    seen = vs.wait_for_tools(_vm(vcenter, vm), settings().tools_timeout_s, want_ip)
    print(f"{vm.name}: tools {seen['tools']}, heartbeat {seen['heartbeat']}, ip {seen['ip']}")
    return seen


@task(**step_options("move {vm.name} to {datastore}"))
def relocate_vm(vcenter: VCenterCredentials, vm: VmRef, datastore: str) -> None:
    """Move the VM's files to ``datastore`` (Storage vMotion when it runs)."""
    si = vcenter.connect()
    vs.relocate(_vm(vcenter, vm), vs.get_datastore(si, datastore), settings().task_timeout_s)


@task(**step_options("copy {patterns} of [{source}] {folder} to [{target}] {target_folder}"))
def copy_vm_files(
    vcenter: VCenterCredentials,
    source: str,
    folder: str,
    patterns: list[str],
    target: str,
    target_folder: str,
) -> list[str]:
    """Copy the VM's files matching ``patterns`` from the copy datastore to the target."""
    si = vcenter.connect()
    return vs.copy_files(
        si,
        vs.get_datastore(si, source),
        folder,
        patterns,
        vs.get_datastore(si, target),
        target_folder,
        settings().task_timeout_s,
    )


@task(**step_options("rename {vm.name} to {new_name}"))
def rename_vm(vcenter: VCenterCredentials, vm: VmRef, new_name: str) -> VmRef:
    """Rename the VM in the inventory."""
    obj = _vm(vcenter, vm)
    if obj.name != new_name:
        vs.wait(obj.Rename_Task(newName=new_name), settings().task_timeout_s)
    return VmRef(name=new_name, moref=vm.moref)


@task(**step_options("read the power state of {vm.name}"))
def power_state(vcenter: VCenterCredentials, vm: VmRef) -> str:
    """Return the VM's power state: poweredOn, poweredOff or suspended."""
    return str(_vm(vcenter, vm).runtime.powerState)


@task(**step_options("power off {vm.name}"))
def power_off_vm(vcenter: VCenterCredentials, vm: VmRef) -> bool:
    """Power the VM off; False if it was already off."""
    return vs.power_off(_vm(vcenter, vm), settings().task_timeout_s)


@task(**step_options("unregister {vm.name}"))
def unregister_vm(vcenter: VCenterCredentials, vm: VmRef) -> bool:
    """Unregister the VM (its files stay); False if it was already gone."""
    return vs.unregister(_vm(vcenter, vm))


@task(**step_options("unmount {datastore.name} from {host}"))
def unmount_vmfs(vcenter: VCenterCredentials, host: str, datastore: DatastoreRef) -> bool:
    """Unmount the VMFS datastore from the host (never RemoveDatastore: it destroys VMFS)."""
    return vs.unmount_vmfs(vs.get_host(vcenter.connect(), host), datastore.vmfs_uuid or "")


@task(**step_options("detach {naa} from {host}"))
def detach_lun(vcenter: VCenterCredentials, host: str, naa: str) -> bool:
    """Detach the copy's device from the host before the array withdraws it."""
    return vs.detach_lun(vs.get_host(vcenter.connect(), host), naa)


@task(**step_options("remove NFS datastore {datastore.name} from {host}"))
def remove_nas_datastore(vcenter: VCenterCredentials, host: str, datastore: DatastoreRef) -> bool:
    """Unmount the NFS datastore from the host."""
    return vs.remove_nas(vs.get_host(vcenter.connect(), host), _ds(vcenter, datastore))


@task(**step_options("find what {host} mounted from the copy"))
def find_copy_datastores(
    vcenter: VCenterCredentials, host: str, naa: str | None, nfs: tuple[str, str] | None
) -> list[DatastoreRef]:
    """Return the datastores the host mounted from the copy (by device or export)."""
    h = vs.get_host(vcenter.connect(), host)
    return [_datastore_ref(ds) for ds in vs.copy_datastores(h, naa, nfs)]


@task(**step_options("list the VMs using {datastore.name}"))
def vms_using_datastore(
    vcenter: VCenterCredentials, datastore: DatastoreRef
) -> list[DatastoreUser]:
    """Return every VM with a file on the datastore (its .vmx, or a disk), and its run tag."""
    si = vcenter.connect()
    key = tag_field_key(si)
    users = []
    for vm in _ds(vcenter, datastore).vm:
        vmx = vm.config.files.vmPathName if vm.config else ""
        lives_on = (vmx or "").startswith(f"[{datastore.name}]")
        if not lives_on and not uses_files_on(vm, datastore.name):
            continue  # vSphere still lists it, but no device of it is on the datastore
        tag = tag_of(vm.customValue, key)
        users.append(
            DatastoreUser(
                name=vm.name, moref=vm._moId, lives_on=lives_on, run=tag.run if tag else None
            )
        )
    return users
