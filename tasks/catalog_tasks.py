"""Prefect tasks for the snapshot catalog: what VMs a mounted snapshot copy holds."""

from __future__ import annotations

import http.client
from datetime import datetime

from prefect import get_run_logger
from pydantic import BaseModel
from pyVmomi import vim

from blocks.settings import settings
from blocks.vcenter import VCenterCredentials
from tasks import browse
from tasks import vsphere as vs
from tasks.retry import step


class FoundVm(BaseModel):
    """A VM found in a snapshot: where its files are and whether it still exists."""

    name: str
    name_source: str  # "displayName" (read from the .vmx) or "file name" (it could not be)
    folder: str  # folder inside the datastore
    vmx: str  # path of the .vmx inside the datastore
    guest_os: str | None = None
    modified: datetime | None = None  # the .vmx's modification time in the snapshot
    in_inventory: bool = False  # a VM of this name is in vCenter's inventory now
    inventory_vmx: str | None = None  # "[ds] path" of that VM's .vmx, if it is there


def identify(
    si: vim.ServiceInstance,
    vcenter: VCenterCredentials,
    datastore: vim.Datastore,
    files: list[browse.VmxFile],
) -> list[FoundVm]:
    """Name each .vmx's VM (its ``displayName``, else the file name) and look it up now.

    A .vmx that cannot be read is still reported, named after its file, with a warning.
    """
    log = get_run_logger()
    inventory: dict[str, list[vim.VirtualMachine]] = {}
    for item in vs.collect(si, vim.VirtualMachine, ["name"]):
        inventory.setdefault(item.get("name", ""), []).append(item["obj"])
    out = []
    for f in files:
        name, source, guest = f.stem, "file name", None
        try:
            raw = browse.read_datastore_file(
                si,
                datastore,
                f.path,
                host=vcenter.host,
                port=vcenter.port,
                context=vcenter.ssl_context(),
                timeout_s=min(vcenter.timeout_s, 120),
            )
            entries = browse.parse_vmx(raw.decode("utf-8", errors="replace"))
            guest = entries.get("guestos") or None
            if entries.get("displayname"):
                name, source = entries["displayname"], "displayName"
        except (OSError, http.client.HTTPException, vs.VSphereError) as exc:
            log.warning(
                "cannot read [%s] %s (%s): naming the VM %r", datastore.name, f.path, exc, name
            )
        same = inventory.get(name, [])
        paths = [vm.config.files.vmPathName for vm in same if vm.config is not None]
        out.append(
            FoundVm(
                name=name,
                name_source=source,
                folder=f.folder,
                vmx=f.path,
                guest_os=guest,
                modified=f.modified,
                in_inventory=bool(same),
                inventory_vmx=", ".join(paths) or None,
            )
        )
    return out


@step("find the VMs on {datastore}")
def find_vms(vcenter: VCenterCredentials, datastore: str) -> list[FoundVm]:
    """Return the VMs whose .vmx is on ``datastore`` (every folder), sorted by .vmx path.

    Only reads: the datastore browser lists the .vmx files and vCenter serves their text.
    """
    si = vcenter.connect()
    ds = vs.get_datastore(si, datastore)
    files = browse.find_vmx_files(ds, settings().task_timeout_s)
    found = identify(si, vcenter, ds, files)
    print(f"{datastore}: {len(found)} VM(s): {', '.join(v.name for v in found) or 'none'}")
    return found
