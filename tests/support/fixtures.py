"""Copies presented and mounted for tests, with cleanup that checks it really happened."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pyVmomi import vim

from tests.support.storage_ops import Copy, HpeOps, OntapOps, ops_for
from tests.support.vcenter import find, host
from tests.support.vsphere_steps import rescan, scsi_lun, unresolved, wait


@dataclass
class MountedCopy:
    """A snapshot copy presented to ``esx`` and mounted as datastore ``ds``."""

    ops: HpeOps | OntapOps
    copy: Copy
    esx: vim.HostSystem
    ds: vim.Datastore
    protocol: str
    ds_cfg: dict[str, Any]


def copy_name(vendor: str) -> str:
    """Return a fresh copy name valid on ``vendor``."""
    sep = "_" if vendor == "netapp_ontap" else "-"
    return f"sr{sep}t{sep}{uuid.uuid4().hex[:8]}"


def register(si, lab, ds_name: str, vm_name: str, esx, name: str) -> vim.VirtualMachine:
    """Register ``vm_name``'s .vmx from datastore ``ds_name`` on ``esx`` as ``name``."""
    dc = find(si, vim.Datacenter, lab["vcenter"]["datacenter"])
    pool = find(si, vim.ClusterComputeResource, lab["vcenter"]["cluster"]).resourcePool
    return wait(
        dc.vmFolder.RegisterVM_Task(
            path=f"[{ds_name}] {vm_name}/{vm_name}.vmx",
            name=name,
            asTemplate=False,
            pool=pool,
            host=esx,
        )
    )


def discard_vms(ds: vim.Datastore) -> None:
    """Power off and unregister every VM registered on ``ds``."""
    for vm in list(ds.vm):
        if vm.runtime.powerState == "poweredOn":
            wait(vm.PowerOffVM_Task())
        vm.UnregisterVM()


@contextmanager
def mounted_copy(
    si, lab, ds_name: str, host_index: int = 0, snapshot: int = 0
) -> Iterator[MountedCopy]:
    """Present a copy of ``ds_name``'s snapshot to one host and mount it; undo on exit."""
    ds_cfg = next(d for d in lab["datastores"] if d["name"] == ds_name)
    array = next(a for a in lab["arrays"] if a["name"] == ds_cfg["array"])
    ops = ops_for(lab, array["name"])
    host_cfg = lab["hosts"][host_index]
    esx = host(si, host_cfg["name"])
    copy = ops.make_copy(
        ds_cfg["volume"], ds_cfg["snapshots"][snapshot], copy_name(array["vendor"])
    )
    protocol = ds_cfg["protocol"]
    try:
        if protocol == "nfs":
            server, path = ops.present_nfs(copy, host_cfg)
            spec = vim.host.NasVolume.Specification(
                remoteHost=server,
                remotePath=path,
                localPath=f"sr-{copy.name}",
                accessMode="readWrite",
                type="NFS",
            )
            ds = esx.configManager.datastoreSystem.CreateNasDatastore(spec)
        else:
            ops.present(copy, host_cfg, protocol)
            rescan(esx, protocol)
            vol = unresolved(esx, copy.naa)
            spec = vim.host.UnresolvedVmfsResignatureSpec(
                extentDevicePath=[vol.extent[0].devicePath]
            )
            ds = wait(
                esx.configManager.datastoreSystem.ResignatureUnresolvedVmfsVolume_Task(spec)
            ).result
        name = ds.name
        yield MountedCopy(ops, copy, esx, ds, protocol, ds_cfg)
    finally:
        mounted = find(si, vim.Datastore, name) if "name" in locals() else None
        if mounted is not None:
            discard_vms(mounted)
            unmount_everywhere(mounted, protocol)
        everywhere = [host(si, h["name"]) for h in lab["hosts"]]
        saw = [h for h in everywhere if copy.naa and scsi_lun(h, copy.naa) is not None]
        if protocol != "nfs" and copy.naa:
            detach_everywhere(saw, copy.naa)
        ops.unpresent(copy)
        if protocol != "nfs":
            for h in saw or [esx]:
                rescan(h, protocol)
        ops.delete(copy)


def unmount_everywhere(ds: vim.Datastore, protocol: str) -> list[str]:
    """Unmount ``ds`` from every host that mounts it (a shared host object or igroup, or
    vCenter's mount after resignature, can make it several); return those hosts' names."""
    hosts = [m.key for m in ds.host]
    uuid = ds.info.vmfs.uuid if protocol != "nfs" else None
    for h in hosts:
        if protocol == "nfs":
            h.configManager.datastoreSystem.RemoveDatastore(datastore=ds)
        else:
            h.configManager.storageSystem.UnmountVmfsVolume(vmfsUuid=uuid)
    return [h.name for h in hosts]


def detach_everywhere(hosts: list[vim.HostSystem], naa: str) -> None:
    """Detach device ``naa`` on each of ``hosts`` that has it attached."""
    for h in hosts:
        lun = scsi_lun(h, naa)
        if lun is not None and lun.operationalState != ["off"]:
            h.configManager.storageSystem.DetachScsiLun(lunUuid=lun.uuid)
