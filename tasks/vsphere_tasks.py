"""Prefect tasks for the vSphere side of a restore: one task per step, named for the UI.

Tasks take the vCenter block and plain references (names, managed object ids), never
live pyVmomi objects, so they can be retried and logged.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel
from pyVmomi import vim

from blocks.models import CopyTag, IscsiPortal
from blocks.settings import settings
from blocks.vcenter import VCenterCredentials
from tasks import browse, vmx_edit
from tasks import vsphere as vs
from tasks.retry import step
from tasks.sweep import TAG_FIELD


class DatastoreRef(BaseModel):
    """A datastore the restore mounted."""

    name: str
    moref: str
    kind: Literal["vmfs", "nfs"]
    vmfs_uuid: str | None = None
    naa: str | None = None
    volume_path: str | None = None  # /vmfs/volumes/<id> on its hosts


class VmRef(BaseModel):
    """A virtual machine the restore registered."""

    name: str
    moref: str


def _vm(vc: VCenterCredentials, ref: VmRef) -> vim.VirtualMachine:
    return vs.moref(vc.connect(), vim.VirtualMachine, ref.moref)


def _ds(vc: VCenterCredentials, ref: DatastoreRef) -> vim.Datastore:
    return vs.moref(vc.connect(), vim.Datastore, ref.moref)


def _tag(si: vim.ServiceInstance, entity: object, tag: CopyTag) -> None:
    """Mark ``entity`` with snaprestore's tag in a custom attribute."""
    cfm = vs.service_content(si).customFieldsManager
    field = next((f for f in cfm.field or [] if f.name == TAG_FIELD), None)
    if field is None:
        try:
            field = cfm.AddCustomFieldDef(name=TAG_FIELD)
        except vim.fault.DuplicateName:
            field = next(f for f in cfm.field if f.name == TAG_FIELD)
    cfm.SetField(entity=entity, key=field.key, value=tag.encode())


def _volume_path(ds: vim.Datastore) -> str | None:
    for m in ds.host or []:
        if m.mountInfo is not None and m.mountInfo.path:
            return str(m.mountInfo.path).rstrip("/")
    return None


def _datastore_ref(ds: vim.Datastore) -> DatastoreRef:
    info = ds.info
    if isinstance(info, vim.host.VmfsDatastoreInfo):
        return DatastoreRef(
            name=ds.name,
            moref=ds._moId,
            kind="vmfs",
            vmfs_uuid=info.vmfs.uuid,
            naa=info.vmfs.extent[0].diskName,
            volume_path=_volume_path(ds) or f"/vmfs/volumes/{info.vmfs.uuid}",
        )
    return DatastoreRef(name=ds.name, moref=ds._moId, kind="nfs", volume_path=_volume_path(ds))


@step("make the array's iSCSI portals static targets of {host}")
def ensure_static_targets(
    vcenter: VCenterCredentials, host: str, portals: list[IscsiPortal]
) -> int:
    """Make the array's portals static targets of the host's software iSCSI adapter."""
    added = vs.ensure_static_targets(vs.get_host(vcenter.connect(), host), portals)
    print(f"{host}: {len(added)} static target(s) added")
    return len(added)


@step("rescan {protocol} adapters of {host}")
def rescan_adapters(vcenter: VCenterCredentials, host: str, protocol: str) -> list[str]:
    """Rescan the host's adapters of ``protocol`` (never the other hosts)."""
    h = vs.get_host(vcenter.connect(), host)
    devices = vs.adapters_for(h, protocol)
    if not devices:
        raise vs.VSphereError(f"host {host} has no {protocol} adapter")
    vs.rescan(h, devices)
    print(f"{host}: rescanned {', '.join(devices)}")
    return devices


@step("find the copy {naa} on {host}")
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


@step("resignature {naa} on {host} as {name}")
def resignature_copy(
    vcenter: VCenterCredentials, host: str, naa: str, name: str, tag: CopyTag
) -> DatastoreRef:
    """Resignature the VMFS copy, name the datastore ``name`` and tag it; idempotent."""
    si = vcenter.connect()
    ds = vs.resignature(vs.get_host(si, host), naa, name, settings().task_timeout_s)
    _tag(si, ds, tag)
    return _datastore_ref(ds)


@step("mount {server}:{path} on {host} as {name}")
def mount_nfs(
    vcenter: VCenterCredentials, host: str, server: str, path: str, name: str, tag: CopyTag
) -> DatastoreRef:
    """Mount the exported copy as an NFS datastore on the host and tag it; idempotent."""
    si = vcenter.connect()
    ds = vs.mount_nfs(vs.get_host(si, host), server, path, name)
    _tag(si, ds, tag)
    return _datastore_ref(ds)


@step("register {new_name} from [{datastore}] {vmx}")
def register_vm(
    vcenter: VCenterCredentials,
    host: str,
    datastore: str,
    vmx: str,
    new_name: str,
    tag: CopyTag,
    folder: str | None = None,
    pool: str | None = None,
) -> VmRef:
    """Register the .vmx from the copy as ``new_name`` on the host, in the VM folder and
    resource pool given by managed object id (default: the datacenter's, the cluster's
    root pool), and tag it."""
    si = vcenter.connect()
    vm = vs.register_vm(
        vs.get_host(si, host),
        datastore,
        vmx,
        new_name,
        settings().task_timeout_s,
        folder=vs.moref(si, vim.Folder, folder) if folder else None,
        pool=vs.moref(si, vim.ResourcePool, pool) if pool else None,
    )
    try:
        _tag(si, vm, tag)
    except Exception:
        vm.UnregisterVM()  # untagged, cleanup could not tell it from someone else's VM
        raise
    return VmRef(name=vm.name, moref=vm._moId)


@step("disconnect the NICs of {vm.name}")
def disconnect_nics(vcenter: VCenterCredentials, vm: VmRef) -> int:
    """Make every NIC of the VM start disconnected (isolated boot)."""
    return vs.disconnect_nics(_vm(vcenter, vm), settings().task_timeout_s)


@step("connect the NICs of {vm.name}")
def connect_nics(vcenter: VCenterCredentials, vm: VmRef) -> int:
    """Make every NIC of the VM start connected (it took a stopped original's place)."""
    return vs.connect_nics(_vm(vcenter, vm), settings().task_timeout_s)


@step("connect the NICs of {vm.name} to {mapping}")
def map_nics(vcenter: VCenterCredentials, vm: VmRef, mapping: dict[str, str]) -> list[str]:
    """Move each NIC to the port group ``mapping`` names for its network; the others start
    disconnected. Return one line per NIC changed."""
    si = vcenter.connect()
    networks = {}
    for target in set(mapping.values()):
        found = vs.find_by_name(si, vim.Network, target)
        if found is None:
            raise vs.VSphereError(f"port group {target!r} of network_map not found")
        networks[target] = found
    done = vs.map_nics(
        _vm(vcenter, vm),
        {source: networks[t] for source, t in mapping.items()},
        settings().task_timeout_s,
        vs.portgroup_names(si),
    )
    return [f"{label}: {a} -> {b}" for label, a, b in done]


class VmxRules(BaseModel):
    """:class:`tasks.vmx_edit.Rules` as task input (plain data)."""

    own: list[str]
    redirects: dict[str, str] = {}
    drop: list[str] = []
    drop_unplanned: bool = False
    drop_rdms: bool = False


@step("prepare the .vmx of {vm_name} on {datastore.name}")
def prepare_vmx(
    vcenter: VCenterCredentials,
    datastore: DatastoreRef,
    vm_name: str,
    vmx: str,
    rules: VmxRules,
) -> list[str]:
    """Make the .vmx on the snapshot copy (and its disks' descriptors) open only files of
    this restore's copies, as ``rules`` say (:mod:`tasks.vmx_edit`); return what changed.

    Raises VSphereError naming every file it cannot accept: the VM is then not registered.
    Only files on the copy ``datastore`` are written. Safe to repeat.
    """
    si = vcenter.connect()
    ds = _ds(vcenter, datastore)
    io = _FileIo(vcenter, si, ds)
    text = io.read(vmx)
    folder = vmx.rsplit("/", 1)[0] if "/" in vmx else ""
    r = vmx_edit.Rules(
        own=set(rules.own),
        copy_path=datastore.volume_path or "",
        copy_names={datastore.name},
        redirects=dict(rules.redirects),
        drop=set(rules.drop),
        drop_unplanned=rules.drop_unplanned,
        drop_rdms=rules.drop_rdms,
    )
    out = vmx_edit.rewrite(text, r, folder)
    for device, path in out.own_files:
        if not path.lower().endswith(".vmdk"):
            continue
        try:
            desc_text = io.read(path)
        except browse.DatastoreFileNotFound:
            continue  # no descriptor: vCenter refuses the power-on, naming the missing file
        desc = vmx_edit.descriptor(desc_text)
        if vmx_edit.is_rdm(desc):
            if r.drop_rdms:
                entry = vmx_edit.VmxFileEntry(device=device, value=path, cdrom=False)
                out.text = vmx_edit.drop_device(out.text, entry)
                out.changes.append(f"{device}: raw device mapping {path} removed")
            else:
                out.problems.append(
                    f"{device} ({path}) is a raw device mapping to a LUN that is no snapshot copy"
                )
            continue
        parent = desc.get("parentfilenamehint", "")
        if vmx_edit.split_volume_path(parent) is None:
            continue
        decision, new = vmx_edit.target(parent, r, path.rsplit("/", 1)[0])
        if decision in ("copy", "keep"):
            continue  # already a copy's file (a retried step)
        if decision == "redirect" and new:
            io.write(path, vmx_edit.set_entry(desc_text, "parentFileNameHint", new))
            out.changes.append(f"{device}: parent {parent} -> {new}")
        elif decision == "drop":
            entry = vmx_edit.VmxFileEntry(device=device, value=path, cdrom=False)
            out.text = vmx_edit.drop_device(out.text, entry)
            out.changes.append(f"{device}: disk {path} removed (its parent is elsewhere)")
        else:
            out.problems.append(f"{device} ({path}) has its parent disk at {parent}")
    if out.problems:
        raise vs.VSphereError(
            f"VM {vm_name} was not registered: its .vmx in the snapshot names files the plan "
            "did not account for (its configuration then differed from today's, or it is no "
            "longer in the inventory): " + "; ".join(out.problems) + ". Restore it with "
            "other_disks=detach to do without them"
        )
    if out.text != text:
        io.write(vmx, out.text)
    for line in out.changes:
        print(f"{vm_name}: {line}")
    return out.changes


class _FileIo:
    """Reads and writes files of one datastore through vCenter's file service."""

    def __init__(self, vcenter: VCenterCredentials, si: vim.ServiceInstance, ds: vim.Datastore):
        self.vc, self.si, self.ds = vcenter, si, ds

    def _args(self) -> dict:
        return {
            "host": self.vc.host,
            "port": self.vc.port,
            "context": self.vc.ssl_context(),
            "timeout_s": min(self.vc.timeout_s, 120),
        }

    def read(self, path: str) -> str:
        raw = browse.read_datastore_file(self.si, self.ds, path, **self._args())
        return raw.decode("utf-8", errors="replace")

    def write(self, path: str, text: str) -> None:
        browse.write_datastore_file(self.si, self.ds, path, text.encode(), **self._args())


@step("mark {vm.name} as kept")
def mark_kept(vcenter: VCenterCredentials, vm: VmRef, tag: CopyTag) -> None:
    """Record in the VM's tag that the user keeps it: the janitor never touches it."""
    si = vcenter.connect()
    _tag(si, _vm(vcenter, vm), tag.model_copy(update={"kept": True}))


@step("power on {vm.name}")
def power_on_vm(vcenter: VCenterCredentials, vm: VmRef, answer: Literal["copied", "moved"]) -> bool:
    """Power the VM on, answering "moved or copied" with ``answer``; True if it was asked."""
    asked = vs.power_on(_vm(vcenter, vm), answer, settings().task_timeout_s)
    if asked:
        print(f"{vm.name}: answered the moved-or-copied question: {answer}")
    return asked


@step("wait for VMware Tools in {vm.name}", retries=0)
def wait_for_tools(vcenter: VCenterCredentials, vm: VmRef, want_ip: bool) -> dict:
    """Wait for the guest's tools heartbeat (and IP); return what was seen."""
    seen = vs.wait_for_tools(_vm(vcenter, vm), settings().tools_timeout_s, want_ip)
    print(f"{vm.name}: tools {seen['tools']}, heartbeat {seen['heartbeat']}, ip {seen['ip']}")
    return seen


@step("move {vm.name} to {datastore}")
def relocate_vm(
    vcenter: VCenterCredentials, vm: VmRef, datastore: str, disks: dict[str, str] | None = None
) -> str:
    """Move the VM's files to ``datastore`` (Storage vMotion when it runs); its disks on the
    datastores ``disks`` names go to the datastore each maps to. Safe to retry: a relocation
    already running is waited for, one already done is not repeated."""
    si = vcenter.connect()
    targets = {src: vs.get_datastore(si, dst) for src, dst in (disks or {}).items()}
    how = vs.relocate(
        _vm(vcenter, vm), vs.get_datastore(si, datastore), settings().task_timeout_s, targets
    )
    print(f"{vm.name}: {how}")
    return how


@step("copy {patterns} of [{source}] {folder} to [{target}] {target_folder}")
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


@step("rename {vm.name} to {new_name}")
def rename_vm(vcenter: VCenterCredentials, vm: VmRef, new_name: str) -> VmRef:
    """Rename the VM in the inventory."""
    obj = _vm(vcenter, vm)
    if obj.name != new_name:
        vs.wait(obj.Rename_Task(newName=new_name), settings().task_timeout_s)
    return VmRef(name=new_name, moref=vm.moref)


@step("read the power state of {vm.name}")
def power_state(vcenter: VCenterCredentials, vm: VmRef) -> str:
    """Return the VM's power state: poweredOn, poweredOff or suspended."""
    return str(_vm(vcenter, vm).runtime.powerState)


@step("power off {vm.name}")
def power_off_vm(vcenter: VCenterCredentials, vm: VmRef) -> bool:
    """Power the VM off; False if it was already off."""
    return vs.power_off(_vm(vcenter, vm), settings().task_timeout_s)


@step("unregister {vm.name}")
def unregister_vm(vcenter: VCenterCredentials, vm: VmRef) -> bool:
    """Unregister the VM (its files stay); False if it was already gone."""
    return vs.unregister(_vm(vcenter, vm))


@step("unmount {datastore.name} from {host}")
def unmount_vmfs(vcenter: VCenterCredentials, host: str, datastore: DatastoreRef) -> bool:
    """Unmount the VMFS datastore from the host (never RemoveDatastore: it destroys VMFS)."""
    return vs.unmount_vmfs(vs.get_host(vcenter.connect(), host), datastore.vmfs_uuid or "")


@step("detach {naa} from {host}")
def detach_lun(vcenter: VCenterCredentials, host: str, naa: str) -> bool:
    """Detach the copy's device from the host before the array withdraws it."""
    return vs.detach_lun(vs.get_host(vcenter.connect(), host), naa)


@step("remove NFS datastore {datastore.name} from {host}")
def remove_nas_datastore(vcenter: VCenterCredentials, host: str, datastore: DatastoreRef) -> bool:
    """Unmount the NFS datastore from the host."""
    return vs.remove_nas(vs.get_host(vcenter.connect(), host), _ds(vcenter, datastore))
