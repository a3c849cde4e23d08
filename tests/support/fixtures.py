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
            if protocol == "nfs":
                esx.configManager.datastoreSystem.RemoveDatastore(datastore=mounted)
            else:
                esx.configManager.storageSystem.UnmountVmfsVolume(vmfsUuid=mounted.info.vmfs.uuid)
        if protocol != "nfs" and copy.naa:
            lun = scsi_lun(esx, copy.naa)
            if lun is not None and lun.operationalState != ["off"]:
                esx.configManager.storageSystem.DetachScsiLun(lunUuid=lun.uuid)
        ops.unpresent(copy)
        if protocol != "nfs":
            rescan(esx, protocol)
        ops.delete(copy)
