"""pyVmomi reads for the janitor: what snaprestore left in vCenter (no Prefect here).

:func:`survey` reads the whole inventory in three PropertyCollector calls (datastores,
VMs, hosts) and answers, for each of snaprestore's array copies, where it is in use —
the datastores mounted from it on any host, the VMs registered on those datastores, the
hosts that have its device — and which tagged datastores and VMs belong to no copy at
all (their copy was deleted, or is on an array the janitor was not given).

Ownership comes only from tags: a copy is ours because the array says it carries
snaprestore's tag; a datastore is part of a copy because its backing *is* that copy
(device or export), and a tagged datastore or VM is ours because its ``snaprestore``
custom attribute decodes to a :class:`~blocks.models.CopyTag`. Names never count.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field
from pyVmomi import vim, vmodl

from blocks.models import CopyTag, SnapshotCopy
from tasks.content import service_content
from tasks.vsphere import adapter_protocols, collect, split_ds_path

TAG_FIELD = "snaprestore"  # the custom attribute tasks.vsphere_tasks._tag writes


class Mount(BaseModel):
    """A datastore mounted on one host."""

    host: str
    accessible: bool = True


class SeenVm(BaseModel):
    """A virtual machine as the janitor saw it."""

    name: str
    moref: str
    tag: CopyTag | None = None
    vmx: str | None = None  # its .vmx, "[datastore] path"
    vmx_datastore: str | None = None  # the datastore holding its .vmx (by name)
    datastores: list[str] = Field(default_factory=list)  # morefs of every datastore it uses
    host: str | None = None
    power: str = ""
    connection: str = ""
    stranded: bool = False  # restored, not kept, and the copy datastore it lives on is gone


class SeenDatastore(BaseModel):
    """A datastore as the janitor saw it, with the VMs that use it."""

    name: str
    moref: str
    kind: Literal["vmfs", "nfs", "other"]
    vmfs_uuid: str | None = None
    naa: str | None = None  # head extent
    nfs_server: str | None = None
    nfs_path: str | None = None
    tag: CopyTag | None = None
    mounts: list[Mount] = Field(default_factory=list)
    vms: list[SeenVm] = Field(default_factory=list)  # VMs whose .vmx is on it
    foreign_vms: list[SeenVm] = Field(default_factory=list)  # other VMs with a file on it

    @property
    def accessible(self) -> bool:
        """True when at least one host reaches it."""
        return any(m.accessible for m in self.mounts)


class HostDevice(BaseModel):
    """A SCSI device on one host: attached or not, and the protocols of its paths."""

    host: str
    naa: str
    attached: bool
    protocols: list[str] = Field(default_factory=list)  # iscsi / fc


class Footprint(BaseModel):
    """Where one array copy is in use in vCenter."""

    datastores: list[SeenDatastore] = Field(default_factory=list)
    devices: list[HostDevice] = Field(default_factory=list)


class Survey(BaseModel):
    """What snaprestore has in vCenter, by copy, plus the tagged objects of no copy."""

    footprints: dict[str, Footprint] = Field(default_factory=dict)  # by footprint_key()
    datastores: list[SeenDatastore] = Field(default_factory=list)  # tagged, of no copy
    devices: dict[str, list[HostDevice]] = Field(default_factory=dict)  # their devices, by naa
    vms: list[SeenVm] = Field(default_factory=list)  # tagged, on no datastore above


def footprint_key(copy: SnapshotCopy) -> str:
    """Return the key of ``copy`` in :attr:`Survey.footprints`: ``<array>/<name>``."""
    return f"{copy.array}/{copy.name}"


# ---- reading the inventory ---------------------------------------------------------------------


def tag_field_key(si: vim.ServiceInstance) -> int | None:
    """Return the key of the ``snaprestore`` custom attribute, or None if it was never made."""
    fields = service_content(si).customFieldsManager.field or []
    return next((f.key for f in fields if f.name == TAG_FIELD), None)


def tag_of(custom_values: Any, key: int | None) -> CopyTag | None:
    """Return the snaprestore tag among an entity's custom values, or None.

    vCenter keeps one value per attribute; should a server list several (the govmomi
    simulator appends on every ``SetField``), the last one set counts.
    """
    if key is None:
        return None
    values = [getattr(v, "value", None) for v in custom_values or [] if v.key == key]
    return CopyTag.decode(values[-1]) if values else None


def _datastore(item: dict[str, Any], key: int | None, host_names: dict[str, str]) -> SeenDatastore:
    ds = item["obj"]
    info = item.get("info")
    mounts = [
        Mount(
            host=host_names.get(m.key._moId, m.key._moId),
            accessible=bool(m.mountInfo is None or m.mountInfo.accessible),
        )
        for m in item.get("host") or []
        if m.mountInfo is None or m.mountInfo.mounted is not False
    ]
    seen = SeenDatastore(
        name=item.get("name", ds._moId),
        moref=ds._moId,
        kind="other",
        tag=tag_of(item.get("customValue"), key),
        mounts=mounts,
    )
    if isinstance(info, vim.host.VmfsDatastoreInfo) and info.vmfs is not None:
        seen.kind = "vmfs"
        seen.vmfs_uuid = info.vmfs.uuid
        seen.naa = info.vmfs.extent[0].diskName if info.vmfs.extent else None
    elif isinstance(info, vim.host.NasDatastoreInfo) and info.nas is not None:
        seen.kind = "nfs"
        seen.nfs_server = info.nas.remoteHost
        seen.nfs_path = info.nas.remotePath
    return seen


def _vm(item: dict[str, Any], key: int | None, host_names: dict[str, str]) -> SeenVm:
    vm = item["obj"]
    vmx = item.get("config.files.vmPathName")
    vmx_ds = None
    if vmx:
        try:
            vmx_ds = split_ds_path(vmx)[0]
        except Exception:
            vmx_ds = None
    host = item.get("runtime.host")
    return SeenVm(
        name=item.get("name", vm._moId),
        moref=vm._moId,
        tag=tag_of(item.get("customValue"), key),
        vmx=vmx,
        vmx_datastore=vmx_ds,
        datastores=[d._moId for d in item.get("datastore") or []],
        host=host_names.get(host._moId) if host is not None else None,
        power=str(item.get("runtime.powerState", "")),
        connection=str(item.get("runtime.connectionState", "")),
    )


def _host_devices(item: dict[str, Any]) -> list[HostDevice]:
    """Return every naa device of one host, with attach state and path protocols."""
    host = item.get("name", "")
    kinds = adapter_protocols(item.get("config.storageDevice.hostBusAdapter"))
    multipath = item.get("config.storageDevice.multipathInfo")
    paths: dict[str, set[str]] = {}
    for mp in (multipath.lun if multipath is not None else None) or []:
        paths.setdefault(mp.lun, set()).update(
            kinds[p.adapter] for p in mp.path or [] if p.adapter in kinds
        )
    out = []
    for lun in item.get("config.storageDevice.scsiLun") or []:
        if not (lun.canonicalName or "").startswith("naa."):
            continue
        out.append(
            HostDevice(
                host=host,
                naa=lun.canonicalName,
                attached="off" not in (lun.operationalState or []),
                # no path left to tell: the protocols the host has
                protocols=sorted(paths.get(lun.key) or set(kinds.values())),
            )
        )
    return out


def uses_files_on(vm: vim.VirtualMachine, datastore: str) -> bool:
    """Return True when a device of ``vm`` (disk, CD image…) is a file on ``datastore``.

    A VM whose configuration cannot be read counts as using it (the safe answer).
    """
    try:
        devices = vm.config.hardware.device if vm.config else None
    except vmodl.fault.ManagedObjectNotFound:
        return False  # unregistered meanwhile
    if devices is None:
        return True
    prefix = f"[{datastore}]"
    return any((getattr(d.backing, "fileName", None) or "").startswith(prefix) for d in devices)


def _same_path(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and a.rstrip("/") == b.rstrip("/")  # type: ignore[union-attr]


def backs(ds: SeenDatastore, copy: SnapshotCopy, nfs_servers: list[str]) -> bool:
    """Return True when ``ds`` is mounted from ``copy`` (its device, or its export)."""
    if ds.kind == "vmfs":
        return (ds.naa or "").lower() in copy.devices()
    if ds.kind == "nfs" and copy.nfs_path:
        servers = {s.lower() for s in nfs_servers}
        return (ds.nfs_server or "").lower() in servers and _same_path(ds.nfs_path, copy.nfs_path)
    return False


def survey(
    si: vim.ServiceInstance, copies: list[SnapshotCopy], nfs_servers: dict[str, list[str]]
) -> Survey:
    """Return where each copy is in use, and the tagged datastores and VMs of no copy.

    ``nfs_servers`` maps an array's name to the addresses its NFS exports are mounted
    from (``ArrayInfo.nfs_servers``). Read-only.
    """
    key = tag_field_key(si)
    hosts = collect(
        si,
        vim.HostSystem,
        [
            "name",
            "config.storageDevice.scsiLun",
            "config.storageDevice.multipathInfo",
            "config.storageDevice.hostBusAdapter",
        ],
    )
    host_names = {h["obj"]._moId: h.get("name", h["obj"]._moId) for h in hosts}
    devices: dict[str, list[HostDevice]] = {}
    for h in hosts:
        for d in _host_devices(h):
            devices.setdefault(d.naa.lower(), []).append(d)
    vm_items = collect(
        si,
        vim.VirtualMachine,
        [
            "name",
            "customValue",
            "config.files.vmPathName",
            "datastore",
            "runtime.host",
            "runtime.powerState",
            "runtime.connectionState",
        ],
    )
    vms = [_vm(v, key, host_names) for v in vm_items]
    objs = {v["obj"]._moId: v["obj"] for v in vm_items}
    ds_items = collect(si, vim.Datastore, ["name", "customValue", "info", "host"])
    datastores = [_datastore(d, key, host_names) for d in ds_items]
    names = {d.name for d in datastores}
    for ds in datastores:
        for vm in vms:
            if vm.vmx_datastore == ds.name:
                ds.vms.append(vm)
            elif ds.moref in vm.datastores and uses_files_on(objs[vm.moref], ds.name):
                ds.foreign_vms.append(vm)

    out = Survey()
    claimed: set[str] = set()
    for copy in copies:
        fp = Footprint(
            datastores=[
                ds for ds in datastores if backs(ds, copy, nfs_servers.get(copy.array, []))
            ],
            devices=[d for naa in sorted(copy.devices()) for d in devices.get(naa, [])],
        )
        claimed |= {ds.moref for ds in fp.datastores}
        out.footprints[footprint_key(copy)] = fp
    for ds in datastores:
        if ds.tag is not None and ds.moref not in claimed:
            out.datastores.append(ds)
            claimed.add(ds.moref)
            if ds.naa:
                out.devices[ds.naa] = devices.get(ds.naa.lower(), [])
    on_claimed = {
        vm.moref for ds in datastores if ds.moref in claimed for vm in ds.vms + ds.foreign_vms
    }
    for vm in vms:
        if vm.tag is not None and vm.moref not in on_claimed:
            vm.stranded = stranded(vm, names)
            out.vms.append(vm)
    return out


def stranded(vm: SeenVm, datastores: set[str]) -> bool:
    """True when ``vm`` is a restored VM nobody keeps whose snapshot-copy datastore is gone.

    Only the tag decides: the VM is not marked kept, it still lives on the copy datastore
    its tag says it was registered from, and no datastore of that name is left. A VM whose
    .vmx is anywhere else — production storage, in All-Paths-Down or not — is never
    stranded, whatever its connection state.
    """
    tag = vm.tag
    if tag is None or tag.kept or not tag.datastore:
        return False
    return vm.vmx_datastore == tag.datastore and tag.datastore not in datastores
