"""pyVmomi calls for the restore, one function per vSphere step (no Prefect here).

Every step that undoes something is idempotent: what is already gone is not an error.
Functions raise pyVmomi's faults as they come; :class:`VSphereError` is for conditions
the API does not report as a fault (an object that is not there, a timeout).
"""

from __future__ import annotations

import contextlib
import fnmatch
import re
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pyVmomi import vim, vmodl

from blocks.models import IscsiPortal
from tasks.content import service_content
from tasks.watch import Watch


class VSphereError(Exception):
    """A vSphere step could not be done; the message says what and what to check."""


class TaskStillRunning(VSphereError):
    """A vSphere task did not end within its wait; it goes on in vCenter (``task`` is its
    managed object id)."""

    def __init__(self, message: str, task: str = ""):
        super().__init__(message)
        self.task = task


# ---- lookups -----------------------------------------------------------------------------------


def collect(si: vim.ServiceInstance, vimtype: type, props: list[str]) -> list[dict[str, Any]]:
    """Return ``props`` of every ``vimtype`` object in the inventory, one PropertyCollector read.

    Each item maps the property paths to their values, plus ``"obj"`` to the object.
    Properties that could not be read (a VM whose config is unavailable) are absent.
    """
    content = service_content(si)
    view = content.viewManager.CreateContainerView(content.rootFolder, [vimtype], True)
    pc = vmodl.query.PropertyCollector
    try:
        spec = pc.FilterSpec(
            objectSet=[
                pc.ObjectSpec(
                    obj=view,
                    skip=True,
                    selectSet=[
                        pc.TraversalSpec(
                            name="view", path="view", skip=False, type=vim.view.ContainerView
                        )
                    ],
                )
            ],
            propSet=[pc.PropertySpec(type=vimtype, pathSet=props, all=False)],
        )
        collector = content.propertyCollector
        result = collector.RetrievePropertiesEx([spec], pc.RetrieveOptions())
        out: list[dict[str, Any]] = []
        while result is not None:
            for oc in result.objects or []:
                out.append({"obj": oc.obj, **{p.name: p.val for p in oc.propSet or []}})
            if not result.token:
                break
            result = collector.ContinueRetrievePropertiesEx(result.token)
        return out
    finally:
        view.Destroy()


def read_objects(
    si: vim.ServiceInstance, objs: Iterable[Any], props: list[str]
) -> dict[str, dict[str, Any]]:
    """Return ``props`` of each of ``objs`` (of one type), by managed object id, in one
    PropertyCollector read. Properties that could not be read are absent."""
    objs = list(objs)
    if not objs:
        return {}
    pc = vmodl.query.PropertyCollector
    spec = pc.FilterSpec(
        objectSet=[pc.ObjectSpec(obj=o, skip=False) for o in objs],
        propSet=[pc.PropertySpec(type=type(objs[0]), pathSet=props, all=False)],
    )
    collector = service_content(si).propertyCollector
    out: dict[str, dict[str, Any]] = {}
    result = collector.RetrievePropertiesEx([spec], pc.RetrieveOptions())
    while result is not None:
        for oc in result.objects or []:
            out[oc.obj._moId] = {"obj": oc.obj, **{p.name: p.val for p in oc.propSet or []}}
        if not result.token:
            break
        result = collector.ContinueRetrievePropertiesEx(result.token)
    return out


def all_named(si: vim.ServiceInstance, vimtype: type, name: str) -> list[Any]:
    """Return every inventory object of ``vimtype`` named ``name`` (one read, any size)."""
    return [item["obj"] for item in collect(si, vimtype, ["name"]) if item.get("name") == name]


def find_by_name(si: vim.ServiceInstance, vimtype: type, name: str) -> Any | None:
    """Return the inventory object of ``vimtype`` named ``name``, or None."""
    return next(iter(all_named(si, vimtype, name)), None)


def names(si: vim.ServiceInstance, vimtype: type) -> list[str]:
    """Return the names of every inventory object of ``vimtype``, sorted."""
    return sorted(item["name"] for item in collect(si, vimtype, ["name"]) if "name" in item)


def get_host(si: vim.ServiceInstance, name: str) -> vim.HostSystem:
    """Return the ESXi host ``name`` or raise VSphereError listing the hosts there are."""
    host = find_by_name(si, vim.HostSystem, name)
    if host is None:
        raise VSphereError(
            f"ESXi host {name!r} not found; hosts: {', '.join(names(si, vim.HostSystem))}"
        )
    return host


def get_datastore(si: vim.ServiceInstance, name: str) -> vim.Datastore:
    """Return the datastore ``name`` or raise VSphereError."""
    ds = find_by_name(si, vim.Datastore, name)
    if ds is None:
        raise VSphereError(f"datastore {name!r} not found")
    return ds


def moref(si: vim.ServiceInstance, vimtype: type, moid: str) -> Any:
    """Return the managed object ``vimtype`` with id ``moid`` (no server call)."""
    return vimtype(moid, si._stub)


def datacenter_of(obj: Any) -> vim.Datacenter:
    """Return the datacenter that contains ``obj``."""
    while obj is not None and not isinstance(obj, vim.Datacenter):
        obj = obj.parent
    if obj is None:
        raise VSphereError("object is not inside a datacenter")
    return obj


def wait(task: vim.Task, timeout_s: float) -> Any:
    """Wait for ``task``; return its result, raise its fault, or VSphereError on timeout.

    vCenter announces the task's end (:class:`tasks.watch.Watch`): no polling delay."""
    deadline = time.monotonic() + timeout_s
    with Watch({task: ["info.state"]}) as w:
        while w.get(task, "info.state") not in DONE:
            left = deadline - time.monotonic()
            if left <= 0:
                info = task.info
                raise TaskStillRunning(
                    f"vCenter task {task._moId} ({info.descriptionId}) is still {info.state} "
                    f"after {timeout_s:.0f} s; it goes on in vCenter",
                    task._moId,
                )
            w.changed(left)
    return outcome(task)


def outcome(task: vim.Task) -> Any:
    """Return the result of ``task``, which has ended, or raise its fault."""
    info = task.info
    if info.state == vim.TaskInfo.State.error:
        raise info.error
    return info.result


DONE = (vim.TaskInfo.State.success, vim.TaskInfo.State.error)
ACTIVE = (vim.TaskInfo.State.queued, vim.TaskInfo.State.running)


def running_tasks(tasks: Iterable[vim.Task], *description_ids: str) -> list[vim.Task]:
    """Return those of ``tasks`` that are queued or running, with one of ``description_ids``
    (vCenter's task kinds, e.g. ``VirtualMachine.relocate``; case-insensitive)."""
    wanted = {d.lower() for d in description_ids}
    out = []
    for t in tasks or []:
        try:
            info = t.info
        except vmodl.fault.ManagedObjectNotFound:  # finished and gone meanwhile
            continue
        if info.state in ACTIVE and (info.descriptionId or "").lower() in wanted:
            out.append(t)
    return out


# ---- adapters and devices ------------------------------------------------------------------


def sw_iscsi_adapter(host: vim.HostSystem) -> vim.host.InternetScsiHba | None:
    """Return the host's software iSCSI adapter, or None."""
    return next(
        (
            a
            for a in host.config.storageDevice.hostBusAdapter
            if isinstance(a, vim.host.InternetScsiHba) and a.isSoftwareBased
        ),
        None,
    )


def adapter_protocols(adapters: list[vim.host.HostBusAdapter] | None) -> dict[str, str]:
    """Return adapter key -> "iscsi" or "fc" for the block-storage adapters among ``adapters``."""
    return {
        a.key: ("iscsi" if isinstance(a, vim.host.InternetScsiHba) else "fc")
        for a in adapters or []
        if isinstance(a, vim.host.InternetScsiHba | vim.host.FibreChannelHba)
    }


def fc_adapters(host: vim.HostSystem) -> list[vim.host.FibreChannelHba]:
    """Return the host's online FC adapters."""
    return [
        a
        for a in host.config.storageDevice.hostBusAdapter
        if isinstance(a, vim.host.FibreChannelHba) and a.status == "online"
    ]


def host_wwpns(host: vim.HostSystem) -> list[str]:
    """Return the host's FC port WWNs as 16 lower-case hex digits."""
    return [f"{a.portWorldWideName & 0xFFFFFFFFFFFFFFFF:016x}" for a in fc_adapters(host)]


def host_vmk_ips(host: vim.HostSystem) -> list[str]:
    """Return the host's VMkernel IPv4 addresses."""
    return [
        n.spec.ip.ipAddress
        for n in (host.config.network.vnic or [])
        if n.spec.ip and n.spec.ip.ipAddress
    ]


def ensure_static_targets(
    host: vim.HostSystem, portals: Iterable[IscsiPortal]
) -> list[IscsiPortal]:
    """Make every portal a static target of the software adapter; return those added."""
    adapter = sw_iscsi_adapter(host)
    if adapter is None:
        raise VSphereError(f"host {host.name} has no software iSCSI adapter")
    have = {
        (t.address, t.port or 3260, t.iScsiName.lower())
        for t in adapter.configuredStaticTarget or []
    }
    missing = [p for p in portals if (p.address, p.port, p.iqn.lower()) not in have]
    if missing:
        host.configManager.storageSystem.AddInternetScsiStaticTargets(
            iScsiHbaDevice=adapter.device,
            targets=[
                vim.host.InternetScsiHba.StaticTarget(
                    address=p.address, port=p.port, iScsiName=p.iqn
                )
                for p in missing
            ],
        )
    return missing


def adapters_for(host: vim.HostSystem, protocol: str) -> list[str]:
    """Return the devices (vmhbaN) of ``host`` that carry ``protocol`` (iscsi or fc)."""
    if protocol == "iscsi":
        adapter = sw_iscsi_adapter(host)
        return [adapter.device] if adapter else []
    return [a.device for a in fc_adapters(host)]


def rescan(host: vim.HostSystem, devices: Iterable[str]) -> None:
    """Rescan exactly these adapters of ``host``, all at once (each takes seconds on a real
    host, and they are independent); the first failure is raised once all have ended."""
    storage = host.configManager.storageSystem
    devices = list(devices)
    if len(devices) <= 1:
        for device in devices:
            storage.RescanHba(hbaDevice=device)
        return
    with ThreadPoolExecutor(max_workers=len(devices)) as pool:
        futures = [pool.submit(storage.RescanHba, hbaDevice=d) for d in devices]
    for f in futures:
        f.result()


def scsi_lun(host: vim.HostSystem, naa: str) -> Any | None:
    """Return the host's ScsiLun whose canonical name is ``naa``, or None."""
    return next(
        (lun for lun in host.config.storageDevice.scsiLun or [] if lun.canonicalName == naa), None
    )


def unresolved_volume(host: vim.HostSystem, naa: str) -> Any | None:
    """Return the unresolved (snapshot) VMFS volume whose head extent is ``naa``, or None."""
    for vol in host.configManager.storageSystem.QueryUnresolvedVmfsVolume() or []:
        if any(e.device.diskName == naa for e in vol.extent):
            return vol
    return None


def vmfs_on(host: vim.HostSystem, naa: str) -> vim.Datastore | None:
    """Return the VMFS datastore mounted on ``host`` whose head extent is ``naa``."""
    for ds in host.datastore:
        info = ds.info
        if isinstance(info, vim.host.VmfsDatastoreInfo) and info.vmfs.extent[0].diskName == naa:
            return ds
    return None


def resignature(host: vim.HostSystem, naa: str, name: str, timeout_s: float) -> vim.Datastore:
    """Resignature the copy on ``naa`` and name the new datastore ``name``.

    Idempotent: a datastore already mounted from ``naa`` is renamed and returned.
    """
    ds = vmfs_on(host, naa)
    if ds is None:
        vol = unresolved_volume(host, naa)
        if vol is None:
            raise VSphereError(
                f"no unresolved VMFS copy on {naa} is visible to {host.name}: "
                "was the copy presented to this host and the adapter rescanned?"
            )
        if not vol.resolveStatus.resolvable:
            raise VSphereError(f"the VMFS copy on {naa} is not resolvable on {host.name}")
        head = next(e for e in vol.extent if e.isHeadExtent)
        spec = vim.host.UnresolvedVmfsResignatureSpec(extentDevicePath=[head.devicePath])
        task = host.configManager.datastoreSystem.ResignatureUnresolvedVmfsVolume_Task(spec)
        ds = wait(task, timeout_s).result
    if ds.name != name:
        ds.RenameDatastore(newName=name)
    return ds


def mount_nfs(host: vim.HostSystem, server: str, path: str, name: str) -> vim.Datastore:
    """Mount ``server:path`` on ``host`` as datastore ``name``; idempotent."""
    for ds in host.datastore:
        info = ds.info
        if (
            isinstance(info, vim.host.NasDatastoreInfo)
            and info.nas.remoteHost == server
            and info.nas.remotePath.rstrip("/") == path.rstrip("/")
        ):
            return ds
    spec = vim.host.NasVolume.Specification(
        remoteHost=server, remotePath=path, localPath=name, accessMode="readWrite", type="NFS"
    )
    return host.configManager.datastoreSystem.CreateNasDatastore(spec)


# ---- virtual machines ----------------------------------------------------------------------


def vmx_path_of(vm: vim.VirtualMachine) -> str:
    """Return ``[datastore] folder/name.vmx`` of ``vm``."""
    return vm.config.files.vmPathName


_DS_PATH = re.compile(r"^\[(?P<ds>[^\]]+)\]\s*/?(?P<path>.*)$")


def split_ds_path(path: str) -> tuple[str, str]:
    """Split ``[ds] dir/file`` (or the ``[ds]/dir`` form some servers use) into (ds, path)."""
    m = _DS_PATH.match(path)
    if m is None:
        raise VSphereError(f"not a datastore path: {path!r}")
    return m["ds"], m["path"].strip()


def register_vm(
    host: vim.HostSystem,
    datastore: str,
    vmx: str,
    name: str,
    timeout_s: float,
    folder: vim.Folder | None = None,
    pool: vim.ResourcePool | None = None,
) -> vim.VirtualMachine:
    """Register ``[datastore] vmx`` on ``host`` as ``name`` in ``folder`` and ``pool``
    (default: the datacenter's VM folder, the host's cluster's root pool); idempotent."""
    si = vim.ServiceInstance("ServiceInstance", host._stub)
    for existing in all_named(si, vim.VirtualMachine, name):  # an earlier attempt's
        if vmx_path_of(existing) == f"[{datastore}] {vmx}":
            return existing
    folder = folder or datacenter_of(host).vmFolder
    pool = pool or host.parent.resourcePool
    task = folder.RegisterVM_Task(
        path=f"[{datastore}] {vmx}", name=name, asTemplate=False, pool=pool, host=host
    )
    return wait(task, timeout_s)


def disconnect_nics(vm: vim.VirtualMachine, timeout_s: float) -> int:
    """Make every NIC of ``vm`` start (and stay) disconnected; return how many changed."""
    changes = []
    for dev in vm.config.hardware.device:
        if isinstance(dev, vim.vm.device.VirtualEthernetCard) and (
            dev.connectable.startConnected or dev.connectable.connected
        ):
            dev.connectable.startConnected = False
            dev.connectable.connected = False
            changes.append(vim.vm.device.VirtualDeviceSpec(operation="edit", device=dev))
    if changes:
        wait(vm.ReconfigVM_Task(vim.vm.ConfigSpec(deviceChange=changes)), timeout_s)
    return len(changes)


def connect_nics(vm: vim.VirtualMachine, timeout_s: float) -> int:
    """Make every NIC of ``vm`` start connected (and connect it if the VM runs); return how
    many changed."""
    on = vm.runtime.powerState == vim.VirtualMachinePowerState.poweredOn
    changes = []
    for dev in vm.config.hardware.device:
        if isinstance(dev, vim.vm.device.VirtualEthernetCard) and not (
            dev.connectable.startConnected and (dev.connectable.connected or not on)
        ):
            dev.connectable.startConnected = True
            dev.connectable.connected = on
            changes.append(vim.vm.device.VirtualDeviceSpec(operation="edit", device=dev))
    if changes:
        wait(vm.ReconfigVM_Task(vim.vm.ConfigSpec(deviceChange=changes)), timeout_s)
    return len(changes)


def portgroup_names(si: vim.ServiceInstance) -> dict[str, str]:
    """Return distributed port group key -> name (a DVS NIC names its port group by key)."""
    return {
        item["key"]: item["name"]
        for item in collect(si, vim.dvs.DistributedVirtualPortgroup, ["name", "key"])
        if "key" in item and "name" in item
    }


def nic_network_name(dev: Any, portgroups: dict[str, str]) -> str:
    """Return the name of the network a NIC is on: a standard port group, a distributed
    port group (by its key), or an NSX opaque network."""
    backing = dev.backing
    if isinstance(backing, vim.vm.device.VirtualEthernetCard.NetworkBackingInfo):
        return backing.deviceName or ""
    port = getattr(backing, "port", None)
    if port is not None and getattr(port, "portgroupKey", None):
        return portgroups.get(port.portgroupKey, port.portgroupKey)
    return getattr(backing, "opaqueNetworkName", None) or getattr(backing, "deviceName", "") or ""


def map_nics(
    vm: vim.VirtualMachine,
    mapping: dict[str, Any],
    timeout_s: float,
    portgroups: dict[str, str] | None = None,
) -> list[tuple[str, str, str]]:
    """Move each NIC of ``vm`` to the network ``mapping`` names for its current network
    (network name -> vim.Network or distributed port group); a NIC whose network is not in
    the map starts (and stays) disconnected. Return (NIC, from, to or "disconnected") per
    NIC changed."""
    changes, done = [], []
    for dev in vm.config.hardware.device:
        if not isinstance(dev, vim.vm.device.VirtualEthernetCard):
            continue
        current = nic_network_name(dev, portgroups or {})
        label = dev.deviceInfo.label if dev.deviceInfo else str(dev.key)
        target = mapping.get(current)
        if target is None:
            if dev.connectable.startConnected or dev.connectable.connected:
                dev.connectable.startConnected = dev.connectable.connected = False
                changes.append(vim.vm.device.VirtualDeviceSpec(operation="edit", device=dev))
                done.append((label, current, "disconnected"))
            continue
        if isinstance(target, vim.dvs.DistributedVirtualPortgroup):
            dev.backing = vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo(
                port=vim.dvs.PortConnection(
                    portgroupKey=target.key,
                    switchUuid=target.config.distributedVirtualSwitch.uuid,
                )
            )
        elif isinstance(target, vim.OpaqueNetwork):
            raise VSphereError(
                f"network_map target {target.name!r} is an NSX opaque network: map to a "
                "standard or distributed port group"
            )
        else:
            dev.backing = vim.vm.device.VirtualEthernetCard.NetworkBackingInfo(
                deviceName=target.name, network=target
            )
        changes.append(vim.vm.device.VirtualDeviceSpec(operation="edit", device=dev))
        done.append((label, current, target.name))
    if changes:
        wait(vm.ReconfigVM_Task(vim.vm.ConfigSpec(deviceChange=changes)), timeout_s)
    return done


UUID_QUESTION = "msg.uuid.altered"
ANSWERS = {"copied": "button.uuid.copiedTheVM", "moved": "button.uuid.movedTheVM"}


def answer_uuid_question(vm: vim.VirtualMachine, answer: str) -> bool:
    """Answer a pending moved-or-copied question by its choice key; True if there was one.

    Any other pending question is an error: the restore cannot know the right answer.
    """
    q = vm.runtime.question
    if q is None:
        return False
    ids = [m.id for m in q.message or []]
    if UUID_QUESTION not in ids and not (q.text or "").startswith(UUID_QUESTION):
        raise VSphereError(f"{vm.name} asks an unexpected question: {ids or q.text}")
    label = ANSWERS[answer]
    key = next((c.key for c in q.choice.choiceInfo if c.label == label), None)
    if key is None:
        raise VSphereError(f"{vm.name}: the question has no choice {label}")
    vm.AnswerVM(questionId=q.id, answerChoice=key)
    return True


POWER_ON = "VirtualMachine.powerOn"


def power_on(vm: vim.VirtualMachine, answer: str, timeout_s: float) -> bool:
    """Power ``vm`` on, answering the moved-or-copied question; return True if asked.

    Already on is fine. Safe to call again: a power-on an earlier attempt started and
    vCenter still runs (its question unanswered when that attempt failed, say) is finished,
    not started twice (vCenter would refuse a second one with ``TaskInProgress``).
    """
    if vm.runtime.powerState == vim.VirtualMachinePowerState.poweredOn:
        return False
    running = running_tasks(vm.recentTask, POWER_ON)
    task = running[0] if running else vm.PowerOnVM_Task()
    asked = False
    deadline = time.monotonic() + timeout_s
    with Watch({task: ["info.state"], vm: ["runtime.question"]}) as w:
        while w.get(task, "info.state") not in DONE:
            if w.get(vm, "runtime.question") is not None and answer_uuid_question(vm, answer):
                asked = True
            left = deadline - time.monotonic()
            if left <= 0:
                raise VSphereError(f"power-on of {vm.name} did not finish in {timeout_s:.0f}s")
            w.changed(left)
    outcome(task)
    return asked


def wait_for_tools(vm: vim.VirtualMachine, timeout_s: float, want_ip: bool) -> dict[str, Any]:
    """Wait for VMware Tools and a green heartbeat (and an IP if ``want_ip``).

    Returns what was seen: tools, heartbeat, ip, seconds. Raises VSphereError on timeout.
    """
    start = time.monotonic()
    paths = ["guest.toolsRunningStatus", "summary.quickStats.guestHeartbeatStatus"]
    with Watch({vm: [*paths, "guest.ipAddress"]}) as w:
        while True:
            seen = {
                "tools": w.get(vm, paths[0]),
                "heartbeat": str(w.get(vm, paths[1])),
                "ip": w.get(vm, "guest.ipAddress") or None,
            }
            ok = seen["tools"] == "guestToolsRunning" and seen["heartbeat"] == "green"
            if ok and (seen["ip"] or not want_ip):
                seen["seconds"] = round(time.monotonic() - start, 2)
                return seen
            left = timeout_s - (time.monotonic() - start)
            if left <= 0:
                raise VSphereError(
                    f"{vm.name}: no VMware Tools heartbeat{' and IP' if want_ip else ''} "
                    f"within {timeout_s:.0f}s (tools {seen['tools']}, heartbeat "
                    f"{seen['heartbeat']})"
                )
            w.changed(left)


def power_off(vm: vim.VirtualMachine, timeout_s: float) -> bool:
    """Power ``vm`` off; return False if it was already off."""
    if vm.runtime.powerState == vim.VirtualMachinePowerState.poweredOff:
        return False
    try:
        wait(vm.PowerOffVM_Task(), timeout_s)
    except vim.fault.InvalidPowerState:
        return False
    return True


def unregister(vm: vim.VirtualMachine) -> bool:
    """Unregister ``vm`` (files stay); return False if it was already gone."""
    try:
        vm.UnregisterVM()
    except vmodl.fault.ManagedObjectNotFound:
        return False
    return True


RELOCATE = "VirtualMachine.relocate"


def placed_on(vm: vim.VirtualMachine, datastore: vim.Datastore, disks: dict[str, Any]) -> bool:
    """True when ``vm`` is where a relocation to ``datastore`` would put it: its .vmx there
    and every disk there or on one of the datastores ``disks`` maps to."""
    config = vm.config
    if config is None or not config.files.vmPathName.startswith(f"[{datastore.name}]"):
        return False
    allowed = {datastore.name} | {d.name for d in disks.values()}
    return all(
        _datastore_name(dev) in allowed
        for dev in config.hardware.device
        if isinstance(dev, vim.vm.device.VirtualDisk)
    )


def _datastore_name(dev: Any) -> str:
    return (getattr(dev.backing, "fileName", "") or "").partition("]")[0].lstrip("[")


def relocate(
    vm: vim.VirtualMachine,
    datastore: vim.Datastore,
    timeout_s: float,
    disks: dict[str, Any] | None = None,
) -> str:
    """Move ``vm``'s files to ``datastore`` (Storage vMotion when it runs); the disks now on
    the datastores named in ``disks`` go to the datastore mapped to instead.

    Safe to call again: a relocation of ``vm`` still running (an earlier attempt whose
    reply was lost) is waited for, and a VM already in place is left alone. Returns
    "moved", "already there" or "finished a relocation already running". Raises
    TaskStillRunning when the relocation outlives ``timeout_s`` (it goes on in vCenter).
    """
    disks = disks or {}
    running = running_tasks(vm.recentTask, RELOCATE)
    if running:
        wait(running[0], timeout_s)
        if placed_on(vm, datastore, disks):
            return "finished a relocation already running"
    if placed_on(vm, datastore, disks):
        return "already there"
    locators = []
    for dev in vm.config.hardware.device:
        if not isinstance(dev, vim.vm.device.VirtualDisk):
            continue
        target = disks.get(_datastore_name(dev), datastore)
        locators.append(vim.vm.RelocateSpec.DiskLocator(diskId=dev.key, datastore=target))
    spec = vim.vm.RelocateSpec(datastore=datastore, disk=locators or None)
    wait(vm.RelocateVM_Task(spec), timeout_s)
    return "moved"


# the file copies this process started, by destination: a retried copy (its reply was
# lost) waits for its own earlier task, never for other VMs' or other users' copies
_copies_started: dict[str, vim.Task] = {}
_copies_lock = threading.Lock()


def copy_files(
    si: vim.ServiceInstance,
    source: vim.Datastore,
    folder: str,
    patterns: list[str],
    target: vim.Datastore,
    target_folder: str,
    timeout_s: float,
) -> list[str]:
    """Copy the files of ``[source] folder`` matching ``patterns`` to ``[target] target_folder``.

    Returns the copied file names; the target folder is created. Safe to call again: the
    copies of these files an earlier attempt of this process started and vCenter still
    runs are waited for first, a file
    already in the target with the source's size is not copied again, and one cut short is
    copied again over itself. The caller makes sure, before the first attempt, that the
    target holds none of them (:func:`matching_files`). Raises TaskStillRunning when a copy
    outlives ``timeout_s``.
    """
    files = file_sizes(source, folder, patterns, timeout_s)
    if not files:
        raise VSphereError(f"no file in [{source.name}] {folder} matches {patterns}")
    destinations = {name: f"[{target.name}] {target_folder}/{name}" for name in files}
    with _copies_lock:
        earlier = [_copies_started.get(d) for d in destinations.values()]
    for task in earlier:
        if task is not None and running_tasks([task], *_task_kinds(task)):
            wait(task, timeout_s)
    dc = datacenter_of(source)
    fm = service_content(si).fileManager
    with contextlib.suppress(vim.fault.FileAlreadyExists):
        fm.MakeDirectory(
            name=f"[{target.name}] {target_folder}", datacenter=dc, createParentDirectories=True
        )
    there = file_sizes(target, target_folder, patterns, timeout_s)
    for name, size in files.items():
        if name in there and size is not None and there[name] == size:
            continue  # copied by an earlier attempt
        task = fm.CopyDatastoreFile_Task(
            sourceName=f"[{source.name}] {folder}/{name}",
            sourceDatacenter=dc,
            destinationName=destinations[name],
            destinationDatacenter=dc,
            force=True,  # a file an earlier attempt left half-copied
        )
        with _copies_lock:
            _copies_started[destinations[name]] = task
        wait(task, timeout_s)
        with _copies_lock:
            _copies_started.pop(destinations[name], None)
    return sorted(files)


def _task_kinds(task: vim.Task) -> tuple[str, ...]:
    try:
        return (task.info.descriptionId or "",)
    except vmodl.fault.ManagedObjectNotFound:
        return ()


def file_sizes(
    ds: vim.Datastore, folder: str, patterns: list[str], timeout_s: float
) -> dict[str, int | None]:
    """Return name -> size of the files in ``[ds] folder`` matching ``patterns`` (none if
    the folder does not exist)."""
    spec = vim.host.DatastoreBrowser.SearchSpec(
        matchPattern=list(patterns),
        details=vim.host.DatastoreBrowser.FileInfo.Details(fileSize=True, fileType=True),
    )
    try:
        result = wait(ds.browser.SearchDatastore_Task(f"[{ds.name}] {folder}", spec), timeout_s)
    except vim.fault.FileNotFound:
        return {}
    return {
        f.path: f.fileSize
        for f in sorted(result.file or [], key=lambda f: f.path)
        if any(fnmatch.fnmatch(f.path, p) for p in patterns)
    }


def matching_files(
    ds: vim.Datastore, folder: str, patterns: list[str], timeout_s: float
) -> list[str]:
    """Return the names of the files in ``[ds] folder`` matching ``patterns``, sorted
    (none if the folder does not exist)."""
    return sorted(file_sizes(ds, folder, patterns, timeout_s))


# ---- teardown of storage -------------------------------------------------------------------


def unmount_vmfs(host: vim.HostSystem, vmfs_uuid: str) -> bool:
    """Unmount the VMFS volume ``vmfs_uuid`` from ``host``; False if it was not mounted."""
    try:
        host.configManager.storageSystem.UnmountVmfsVolume(vmfsUuid=vmfs_uuid)
    except (vim.fault.NotFound, vim.fault.InvalidState):
        return False
    return True


def detach_lun(host: vim.HostSystem, naa: str) -> bool:
    """Detach the device ``naa`` from ``host``; False if it is gone or already detached."""
    lun = scsi_lun(host, naa)
    if lun is None or "off" in (lun.operationalState or []):
        return False
    try:
        host.configManager.storageSystem.DetachScsiLun(lunUuid=lun.uuid)
    except (vim.fault.NotFound, vim.fault.InvalidState):
        return False
    return True


def remove_nas(host: vim.HostSystem, datastore: vim.Datastore) -> bool:
    """Unmount the NFS datastore from ``host``; False if it was not mounted there."""
    try:
        host.configManager.datastoreSystem.RemoveDatastore(datastore=datastore)
    except (vim.fault.NotFound, vmodl.fault.ManagedObjectNotFound):
        return False
    return True
