"""Planning a restore: resolve and validate everything before any side effect.

VMs → their production datastore → its backing → the array volume → the snapshot; a target
host and a protocol per group of VMs that share one snapshot copy. Every problem found is
reported at once, each with what to change.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field
from pyVmomi import vim

from blocks.arrays import StorageArray
from blocks.errors import ArrayError, brief
from blocks.models import (
    ArrayInfo,
    ArraySnapshot,
    ArrayVolume,
    HostIdentity,
    IscsiPortal,
    NfsBacking,
    Protocol,
    VmfsBacking,
)
from flows.params import (
    DEFAULT_FILES,
    Finish,
    NetworkMode,
    Operation,
    OtherDisks,
    ProtocolChoice,
    Verify,
)
from tasks import array_tasks as at
from tasks import vsphere as vs
from tasks.array_tasks import copy_key

MAX_NAME = 80


class PlanError(Exception):
    """The request cannot be carried out as asked; nothing was changed anywhere."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        listed = "; ".join(
            f"({i}) {p}" if len(problems) > 1 else p for i, p in enumerate(problems, 1)
        )
        super().__init__(f"the restore was not started; fix the request: {listed}")


class RestoreRequest(BaseModel):
    """Everything the user asked for (the flow's parameters, validated), flat."""

    vms: list[str] = Field(min_length=1)
    datastore: str | None = None
    snapshot: str = "latest"
    operation: Operation = Operation.instant_recovery
    target_host: str | None = None
    protocol: ProtocolChoice = ProtocolChoice.auto
    vm_folder: str | None = None
    resource_pool: str | None = None
    power_on: bool = True
    network: NetworkMode = NetworkMode.auto
    network_map: dict[str, str] = Field(default_factory=dict)
    verify: Verify = Verify.tools
    other_disks: OtherDisks = OtherDisks.refuse
    snapshot_tolerance_minutes: float = 60
    name_suffix: str | None = None
    finish: Finish = Finish.stop
    migrate_to: str | None = None
    replace_original: bool = False
    files: list[str] = Field(default_factory=lambda: list(DEFAULT_FILES))
    target_datastore: str | None = None
    target_folder: str | None = None


class DiskPlan(BaseModel):
    """One disk of a VM and what the restore does with it."""

    label: str  # "Hard disk 2"
    file: str  # its datastore path, "[ds-fc-01] multi-01/multi-01_1.vmdk"
    datastore: str | None  # the datastore holding it (None: not in the inventory)
    volume_path: str | None = None  # that datastore's /vmfs/volumes/<id>
    rdm: str | None = None  # an RDM: its compatibility mode
    independent: bool = False
    action: Literal["keep", "detach", "from_snapshot"] = "keep"
    group: str | None = None  # from_snapshot: the key of the group whose copy holds it


class NicPlan(BaseModel):
    """One network card of a VM and how the restored VM gets it."""

    label: str
    network: str  # the network it is on in production
    action: Literal["keep", "disconnect", "map"]
    target: str | None = None  # map: the port group it moves to


class VmPlan(BaseModel):
    """One VM to restore."""

    key: str  # how the request named it: a name, or an inventory path
    name: str
    new_name: str
    datastore: str  # production datastore
    volume_path: str | None = None  # its /vmfs/volumes/<id>, for absolute paths in the .vmx
    vmx: str  # path of the .vmx inside the datastore
    folder: str  # the VM's folder inside the datastore
    inventory_path: str | None = None  # where the original is, e.g. lab-dc/vm/apps/app-01
    original: str | None = None  # moref of the VM in the inventory, if it is there
    original_running: bool = False
    vm_folder: str | None = None  # moref of the VM folder the restored VM goes to
    vm_folder_path: str = ""
    pool: str | None = None  # moref of its resource pool
    pool_path: str = ""
    disks: list[DiskPlan] = Field(default_factory=list)
    nics: list[NicPlan] = Field(default_factory=list)
    network: Literal["keep", "disconnect", "map"] = "keep"
    network_auto: bool = False  # network=auto decided it (the original runs)
    target_datastore: str | None = None  # full restore / migration / files target
    target_folder: str | None = None  # VM files restore

    def dropped(self) -> list[DiskPlan]:
        """The disks the restored VM does not get (detached, or RDMs)."""
        return [d for d in self.disks if d.action == "detach"]


class GroupPlan(BaseModel):
    """VMs restored from one snapshot copy, presented to one host."""

    key: str
    array: str
    volume: ArrayVolume
    snapshot: ArraySnapshot
    protocol: Protocol
    host: str
    host_identity: HostIdentity
    production_datastore: str
    volume_path: str | None = None  # the production datastore's /vmfs/volumes/<id>
    mount_name: str
    portals: list[IscsiPortal] = Field(default_factory=list)
    vms: list[VmPlan]
    disks_for: list[str] = Field(default_factory=list)  # keys of VMs with a disk in it


class RestorePlan(BaseModel):
    """A validated restore."""

    restore_id: str
    request: RestoreRequest
    groups: list[GroupPlan]
    unreachable: dict[str, str] = Field(default_factory=dict)  # arrays not needed, down

    def summary(self) -> str:
        """Return the plan as markdown."""
        lines = [f"## Restore plan `{self.restore_id}`", ""]
        lines.append(
            f"Operation **{self.request.operation.value}**, snapshot `{self.request.snapshot}`"
        )
        for g in self.groups:
            lines += [
                "",
                f"### {g.array} / {g.volume.name} @ `{g.snapshot.name}` "
                f"({g.snapshot.created:%Y-%m-%d %H:%M} UTC)",
                f"presented to **{g.host}** over **{g.protocol}**, mounted as `{g.mount_name}`",
            ]
            if g.disks_for:
                lines.append(f"holds disks of: {', '.join(g.disks_for)}")
            if g.vms:
                lines += [
                    "",
                    "| VM | restored as | from datastore | folder / pool | network | disks |",
                    "|---|---|---|---|---|---|",
                    *(
                        f"| {v.key} | {v.new_name} | {v.datastore} | {v.vm_folder_path} / "
                        f"{v.pool_path} | {_network_text(v)} | {_disks_text(v)} |"
                        for v in g.vms
                    ),
                ]
        if self.unreachable:
            lines += [
                "",
                "Arrays not reachable (not needed): "
                + "; ".join(f"{a}: {e}" for a, e in self.unreachable.items()),
            ]
        return "\n".join(lines)


def _network_text(v: VmPlan) -> str:
    if not v.nics:
        return "no NIC"
    parts = []
    for n in v.nics:
        if n.action == "map":
            parts.append(f"{n.network} → {n.target}")
        elif n.action == "disconnect":
            parts.append(f"{n.network}: disconnected")
        else:
            parts.append(f"{n.network}: connected")
    return ", ".join(parts)


def _disks_text(v: VmPlan) -> str:
    parts = []
    for d in v.disks:
        if d.action == "detach":
            parts.append(f"{d.label}: {'RDM removed' if d.rdm else 'detached'}")
        elif d.action == "from_snapshot":
            parts.append(f"{d.label}: from {d.datastore}'s snapshot")
    return ", ".join(parts) or "all on the snapshot"


def select_snapshot(snapshots: list[ArraySnapshot], selector: str) -> ArraySnapshot | str:
    """Return the snapshot ``selector`` names, or a message saying why none matches.

    ``selector``: a snapshot name (the array's full name, or the part after its volume
    prefix), ``latest``, or ``latest-before:<ISO 8601 time>``.
    """
    available = ", ".join(s.name for s in snapshots) or "none"
    if not snapshots:
        return "the volume has no snapshots"
    if selector == "latest":
        return max(snapshots, key=lambda s: s.created)
    if selector.startswith("latest-before:"):
        raw = selector.split(":", 1)[1].strip()
        try:
            when = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            return f"'{raw}' is not an ISO 8601 time (e.g. 2026-11-24T18:00:00Z)"
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        older = [s for s in snapshots if s.created < when]
        if not older:
            return f"no snapshot was taken before {when.isoformat()}; snapshots: {available}"
        return max(older, key=lambda s: s.created)
    exact = [s for s in snapshots if s.name == selector]
    if not exact:
        exact = [s for s in snapshots if s.name.endswith("." + selector)]
    if len(exact) == 1:
        return exact[0]
    return f"no snapshot named '{selector}'; snapshots: {available}"


class HostReads:
    """A host whose ``name``, ``runtime`` and ``config`` are read once and then reused (each
    read is a round trip, ``config`` a large one on a real ESXi host); anything else goes
    to the managed object."""

    CACHED = ("name", "runtime", "config")

    def __init__(self, host: vim.HostSystem):
        self.host = host
        self._cache: dict[str, Any] = {}

    def know(self, values: dict[str, Any]) -> None:
        """Take the cached properties found in ``values`` (read by someone else)."""
        self._cache.update({k: v for k, v in values.items() if k in HostReads.CACHED})

    def __getattr__(self, attr: str) -> Any:
        if attr not in HostReads.CACHED:
            return getattr(self.host, attr)
        if attr not in self._cache:
            self._cache[attr] = getattr(self.host, attr)
        return self._cache[attr]


def _host_protocols(host: vim.HostSystem) -> set[str]:
    out = set()
    if vs.sw_iscsi_adapter(host) is not None:
        out.add("iscsi")
    if vs.fc_adapters(host):
        out.add("fc")
    if vs.host_vmk_ips(host):
        out.add("nfs")
    return out


def _paths_to(host: vim.HostSystem, naa: str) -> set[str]:
    """Return the protocols (iscsi/fc) over which ``host`` reaches device ``naa`` today."""
    lun = vs.scsi_lun(host, naa)
    storage = host.config.storageDevice
    if lun is None or storage.multipathInfo is None:
        return set()
    kinds = vs.adapter_protocols(storage.hostBusAdapter)
    out = set()
    for mp in storage.multipathInfo.lun or []:
        if mp.lun == lun.key:
            out |= {kinds[p.adapter] for p in mp.path or [] if p.adapter in kinds}
    return out


def _usable(host: vim.HostSystem) -> bool:
    rt = host.runtime
    return rt.connectionState == "connected" and not rt.inMaintenanceMode


def host_identity(host: vim.HostSystem) -> HostIdentity:
    adapter = vs.sw_iscsi_adapter(host)
    return HostIdentity(
        name=host.name,
        iqns=[adapter.iScsiName] if adapter else [],
        wwpns=vs.host_wwpns(host),
        vmk_ips=vs.host_vmk_ips(host),
    )


def _accessible_from(ds: vim.Datastore, host: vim.HostSystem) -> bool:
    return any(m.key._moId == host._moId and m.mountInfo.accessible for m in ds.host or [])


# the name mount_name() gives a mounted snapshot copy: sr-<first 8 characters of a run id>-
COPY_DATASTORE = re.compile(r"sr-[0-9a-f]{8}-")


def migration_target_problem(find: Callable[[type, str], Any], name: str, host: str) -> str | None:
    """Say why VMs running on ``host`` cannot be moved to datastore ``name``, or None if
    they can: it must exist, be mounted there, and not be a snapshot copy (deleted at the
    end of the run). ``find(vimtype, name)`` looks inventory objects up."""
    if COPY_DATASTORE.match(name):
        return f"datastore '{name}' is a snapshot copy, deleted after the run: pick another"
    ds = find(vim.Datastore, name)
    if ds is None:
        return f"migrate_to datastore '{name}' not found"
    h = find(vim.HostSystem, host)
    if h is not None and not _accessible_from(ds, h):
        return f"datastore '{name}' is not mounted on {host}, where the VMs run"
    return None


@dataclass(frozen=True)
class ArrayReads:
    """How a planner reads the arrays: straight through the blocks, or as Prefect tasks
    (a retried task run each, named in the UI) when it plans inside a flow."""

    find_volume: Callable[[StorageArray, Any], ArrayVolume | None]
    list_snapshots: Callable[[StorageArray, ArrayVolume], list[ArraySnapshot]]


DIRECT = ArrayReads(
    find_volume=lambda array, backing: array.find_volume(backing),
    list_snapshots=lambda array, volume: array.list_snapshots(volume),
)
AS_TASKS = ArrayReads(find_volume=at.find_volume, list_snapshots=at.list_snapshots)


class Planner:
    """Builds a RestorePlan, collecting every problem instead of stopping at the first."""

    def __init__(
        self,
        si: vim.ServiceInstance,
        arrays: list[StorageArray],
        request: RestoreRequest,
        restore_id: str,
        reads: ArrayReads = DIRECT,
        unreachable: dict[str, str] | None = None,
    ):
        self.si = si
        self.reads = reads
        self.arrays = arrays
        self.req = request
        self.restore_id = restore_id
        self.problems: list[str] = []
        self.suffix = (
            request.name_suffix if request.name_suffix is not None else f"-sr-{restore_id[:6]}"
        )
        self._infos: dict[str, ArrayInfo] = {}
        # array -> why it cannot be used (down, or its block unusable)
        self.unreachable: dict[str, str] = dict(unreachable or {})
        self._names: dict[type, dict[str, list[Any]]] = {}
        self._hosts: dict[str, HostReads] = {}
        self._paths: dict[str, str] | None = None  # moref -> inventory path
        self._folders: dict[str, dict[str, Any]] | None = None
        self._vm_props: dict[str, dict[str, Any]] = {}
        self._snapshots: dict[str, list[ArraySnapshot]] = {}
        self._portgroups: dict[str, str] | None = None

    def host(self, host: vim.HostSystem) -> HostReads:
        """Return ``host`` with its name, runtime and config read once for the whole plan."""
        if host._moId not in self._hosts:
            self._hosts[host._moId] = HostReads(host)
        return self._hosts[host._moId]

    def index(self, vimtype: type) -> dict[str, list[Any]]:
        """Return name -> inventory objects of ``vimtype``, read once per plan however
        many VMs the request has."""
        found = self._names.get(vimtype)
        if found is None:
            found = self._names[vimtype] = {}
            props = ["name", "runtime"] if vimtype is vim.HostSystem else ["name"]
            if vimtype is vim.VirtualMachine:
                props = ["name", "parent"]
            for item in vs.collect(self.si, vimtype, props):
                found.setdefault(item.get("name", ""), []).append(item["obj"])
                if vimtype is vim.HostSystem:  # what choosing a host reads of every host
                    self.host(item["obj"]).know(item)
                if vimtype is vim.VirtualMachine and item.get("parent") is not None:
                    self._vm_props.setdefault(item["obj"]._moId, {})["parent"] = item["parent"]
        return found

    def named(self, vimtype: type, name: str) -> list[Any]:
        """Return the inventory objects of ``vimtype`` called ``name``."""
        return self.index(vimtype).get(name, [])

    def find(self, vimtype: type, name: str) -> Any | None:
        """Return the inventory object of ``vimtype`` called ``name``, or None."""
        return next(iter(self.named(vimtype, name)), None)

    def fail(self, problem: str) -> None:
        """Record a problem."""
        self.problems.append(problem)

    def info(self, array: StorageArray) -> ArrayInfo | None:
        """Return (once) what the array is; None (and the reason kept) if it cannot be
        reached: an array is a problem only when the restore needs it."""
        if array.name in self.unreachable:
            return None
        if array.name not in self._infos:
            try:
                self._infos[array.name] = array.describe()
            except ArrayError as exc:
                self.unreachable[array.name] = brief(exc)
                return None
        return self._infos[array.name]

    # ---- inventory paths ---------------------------------------------------------------------

    def _inventory(self) -> dict[str, dict[str, Any]]:
        """Folders and datacenters (name, parent), read once."""
        if self._folders is None:
            self._folders = {}
            for vimtype in (vim.Folder, vim.Datacenter):
                for item in vs.collect(self.si, vimtype, ["name", "parent"]):
                    self._folders[item["obj"]._moId] = item
        return self._folders

    def path_of(self, obj: Any) -> str:
        """Return the inventory path of a VM or folder: ``<datacenter>/vm/<folders>/<name>``."""
        folders = self._inventory()
        parts = []
        if isinstance(obj, vim.VirtualMachine):
            name = next(
                (n for n, objs in self.index(vim.VirtualMachine).items() if obj in objs), ""
            )
            parts.append(name)
            parent = self._vm_props.get(obj._moId, {}).get("parent")
        else:
            item = folders.get(obj._moId, {})
            parts.append(item.get("name", obj._moId))
            parent = item.get("parent")
        while parent is not None and parent._moId in folders:
            item = folders[parent._moId]
            parts.append(item.get("name", ""))
            if isinstance(parent, vim.Datacenter):
                break
            parent = item.get("parent")
        return "/".join(reversed(parts))

    @staticmethod
    def _relative(path: str) -> str:
        """``dc/vm/a/b`` -> ``a/b`` (the path below the datacenter's VM folder)."""
        parts = path.split("/")
        return "/".join(parts[2:]) if len(parts) > 2 and parts[1] == "vm" else path

    def _vm_by_path(self, wanted: str) -> list[vim.VirtualMachine]:
        name = wanted.rstrip("/").rsplit("/", 1)[-1]
        return [
            vm
            for vm in self.named(vim.VirtualMachine, name)
            if wanted.strip("/") in (self.path_of(vm), self._relative(self.path_of(vm)))
        ]

    # ---- VMs ---------------------------------------------------------------------------------

    def locate_vm(self, wanted: str) -> tuple[VmPlan, vim.VirtualMachine | None] | None:
        """Find where ``wanted`` (a name, or an inventory path) lives (inventory, or the
        ``datastore`` parameter)."""
        matches = (
            self._vm_by_path(wanted) if "/" in wanted else self.named(vim.VirtualMachine, wanted)
        )
        if len(matches) > 1:
            paths = ", ".join(sorted(self._relative(self.path_of(m)) for m in matches))
            self.fail(
                f"{len(matches)} VMs are named '{wanted}' ({paths}): name the one to restore "
                "by its inventory path, e.g. "
                f"'{sorted(self._relative(self.path_of(m)) for m in matches)[0]}'"
            )
            return None
        name = wanted.rstrip("/").rsplit("/", 1)[-1]
        if matches:
            vm = matches[0]
            ds, vmx = vs.split_ds_path(vs.vmx_path_of(vm))
            plan = VmPlan(
                key=wanted,
                name=name,
                new_name=name + self.suffix,
                datastore=ds,
                vmx=vmx,
                folder=vmx.rsplit("/", 1)[0] if "/" in vmx else "",
                inventory_path=self.path_of(vm),
                original=vm._moId,
            )
            return plan, vm
        if "/" in wanted:
            self.fail(f"no VM at inventory path '{wanted}'")
            return None
        if not self.req.datastore:
            self.fail(
                f"VM '{name}' is not in the inventory: give its production datastore in "
                "'datastore' to restore it from a snapshot"
            )
            return None
        return (
            VmPlan(
                key=wanted,
                name=name,
                new_name=name + self.suffix,
                datastore=self.req.datastore,
                vmx=f"{name}/{name}.vmx",
                folder=name,
            ),
            None,
        )

    def read_vms(self, vms: list[vim.VirtualMachine]) -> None:
        """Read, in one call, what planning needs of the VMs in the inventory."""
        props = ["config.hardware.device", "runtime.powerState", "resourcePool", "parent"]
        for moid, values in vs.read_objects(self.si, vms, props).items():
            self._vm_props.setdefault(moid, {}).update(values)

    def portgroups(self) -> dict[str, str]:
        """Distributed port group key -> name, read once (only when a NIC is on one)."""
        if self._portgroups is None:
            self._portgroups = vs.portgroup_names(self.si)
        return self._portgroups

    def vm_props(self, vm: vim.VirtualMachine) -> dict[str, Any]:
        """What :meth:`read_vms` read of ``vm``."""
        return self._vm_props.get(vm._moId, {})

    # ---- the whole plan ---------------------------------------------------------------------

    def build(self) -> RestorePlan:
        """Return the plan, or raise PlanError listing every problem."""
        req = self.req
        if not self.arrays:
            self.fail(
                "no array block is configured: save one (python -m blocks register, then "
                "create an HPE Primera or NetApp ONTAP array block)"
            )
        if len(set(req.vms)) != len(req.vms):
            self.fail("a VM is listed twice")
        located = [x for x in (self.locate_vm(n) for n in dict.fromkeys(req.vms)) if x]
        originals = [vm for _, vm in located if vm is not None]
        if len({vm._moId for vm in originals}) != len(originals):
            self.fail("one VM is listed twice (by its name and by its inventory path)")
        self.read_vms(originals)
        self._check_network_map()
        if req.operation == Operation.vm_files and req.target_folder and len(req.vms) > 1:
            self.fail(
                "target_folder names one folder for several VMs: leave it empty (each VM "
                "gets <vm><suffix>-files) or restore one VM at a time"
            )
        groups: dict[str, GroupPlan] = {}
        for vm_plan, vm in located:
            group = self._group_for(vm_plan, vm, groups)
            if group is None:
                continue
            self._check_new_name(vm_plan, group, groups)
            self._place_vm(vm_plan, vm, group)
            self._plan_nics(vm_plan, vm)
            self._plan_disks(vm_plan, vm, group, groups)
            self._check_operation(vm_plan, vm, group)
            group.vms.append(vm_plan)
        if self.problems:
            raise PlanError(self.problems)
        return RestorePlan(
            restore_id=self.restore_id,
            request=req,
            groups=list(groups.values()),
            unreachable=dict(self.unreachable),
        )

    def _check_new_name(self, v: VmPlan, g: GroupPlan, groups: dict[str, GroupPlan]) -> None:
        if len(v.new_name) > MAX_NAME:
            self.fail(f"'{v.new_name}' is longer than {MAX_NAME} characters: shorten name_suffix")
        elif self.find(vim.VirtualMachine, v.new_name) is not None:
            self.fail(f"a VM named '{v.new_name}' exists already: choose another name_suffix")

    def _group_for(
        self, v: VmPlan, vm: vim.VirtualMachine | None, groups: dict[str, GroupPlan]
    ) -> GroupPlan | None:
        ds = self.find(vim.Datastore, v.datastore)
        if ds is None:
            self.fail(f"datastore '{v.datastore}' (of VM {v.key}) is not in the inventory")
            return None
        v.volume_path = volume_path(ds)
        found = self._volume_and_snapshot(ds, self.req.snapshot)
        if found is None:
            return None
        array, volume, snap, backing = found
        key = group_key(array, volume, snap)
        if key in groups:
            return groups[key]
        placed = self.place(ds, backing, array, vm)
        if placed is None:
            return None
        group = groups[key] = self.group(ds, array, volume, snap, *placed)
        return group

    def _volume_and_snapshot(
        self, ds: vim.Datastore, selector: str | Callable[[list[ArraySnapshot]], Any]
    ) -> tuple[StorageArray, ArrayVolume, ArraySnapshot, VmfsBacking | NfsBacking] | None:
        """Return the array, volume and chosen snapshot behind datastore ``ds`` (a problem
        is recorded when there is none)."""
        backing = self.backing(ds)
        if backing is None:
            return None
        volume, array = self.find_volume(backing, ds.name)
        if volume is None or array is None:
            return None
        snapshots = self.snapshots(array, volume)
        if snapshots is None:
            return None
        snap = (
            select_snapshot(snapshots, selector)
            if isinstance(selector, str)
            else selector(snapshots)
        )
        if isinstance(snap, str):
            self.fail(f"{array.name} volume {volume.name} (datastore {ds.name}): {snap}")
            return None
        return array, volume, snap, backing

    def snapshots(self, array: StorageArray, volume: ArrayVolume) -> list[ArraySnapshot] | None:
        """Return (once) the volume's snapshots; None (a problem recorded) on failure."""
        key = f"{array.name}|{volume.id}"
        if key not in self._snapshots:
            try:
                self._snapshots[key] = self.reads.list_snapshots(array, volume)
            except ArrayError as exc:
                self.fail(f"array {array.name}: cannot list snapshots of {volume.name}: {exc}")
                return None
        return self._snapshots[key]

    def group(
        self,
        ds: vim.Datastore,
        array: StorageArray,
        volume: ArrayVolume,
        snapshot: ArraySnapshot,
        host: HostReads,
        protocol: str,
    ) -> GroupPlan:
        """Return the (empty) group of the copy of ``snapshot``, presented to ``host``."""
        info = self.info(array)
        return GroupPlan(
            key=group_key(array, volume, snapshot),
            array=array.name,
            volume=volume,
            snapshot=snapshot,
            protocol=protocol,  # type: ignore[arg-type]
            host=host.name,
            host_identity=host_identity(host),
            production_datastore=ds.name,
            volume_path=volume_path(ds),
            mount_name=mount_name(self.restore_id, ds.name),
            portals=list(info.iscsi_portals) if info and protocol == "iscsi" else [],
            vms=[],
        )

    def backing(self, ds: vim.Datastore) -> VmfsBacking | NfsBacking | None:
        """Return what a datastore is stored on (its head extent's device, or its export)."""
        info = ds.info
        if isinstance(info, vim.host.VmfsDatastoreInfo):
            if len(info.vmfs.extent) != 1:
                self.fail(
                    f"datastore {ds.name} spans {len(info.vmfs.extent)} extents: "
                    "multi-extent VMFS datastores cannot be restored from one LUN copy"
                )
                return None
            return VmfsBacking(naa=info.vmfs.extent[0].diskName)
        if isinstance(info, vim.host.NasDatastoreInfo):
            return NfsBacking(server=info.nas.remoteHost, path=info.nas.remotePath)
        self.fail(f"datastore {ds.name} is {ds.summary.type}: only VMFS and NFS are supported")
        return None

    def find_volume(
        self, backing: VmfsBacking | NfsBacking, ds_name: str
    ) -> tuple[ArrayVolume | None, StorageArray | None]:
        """Return the volume behind ``backing`` and its array. Arrays that cannot be reached
        are skipped: they are a problem only when no reachable array holds the volume."""
        for array in self.arrays:
            if self.info(array) is None:
                continue
            try:
                volume = self.reads.find_volume(array, backing)
            except ArrayError as exc:
                self.unreachable[array.name] = brief(exc)
                continue
            if volume is not None:
                return volume, array
        where = (
            backing.naa if isinstance(backing, VmfsBacking) else f"{backing.server}:{backing.path}"
        )
        reached = [a.name for a in self.arrays if a.name not in self.unreachable]
        down = "; ".join(f"{a} ({e})" for a, e in self.unreachable.items())
        if down:
            self.fail(
                f"datastore {ds_name} ({where}) is not on any reachable array "
                f"(searched: {', '.join(reached) or 'none'}); cannot be reached: {down}. "
                "Fix the array's connection, or its block's URL and credentials"
            )
        else:
            self.fail(
                f"datastore {ds_name} ({where}) is not on any configured array "
                f"(arrays: {', '.join(reached) or 'none'})"
            )
        return None, None

    def place(
        self,
        ds: vim.Datastore,
        backing: VmfsBacking | NfsBacking,
        array: StorageArray,
        vm: vim.VirtualMachine | None,
        on_host: str | None = None,
    ) -> tuple[HostReads, str] | None:
        """Choose the host and protocol the copy is presented to (``on_host``: that host)."""
        info = self.info(array)
        if info is None:
            self.fail(f"array {array.name} cannot be reached: {self.unreachable[array.name]}")
            return None
        served = set(info.protocols)
        wanted = self.req.protocol.value
        is_nfs = isinstance(backing, NfsBacking)
        if is_nfs and wanted not in ("auto", "nfs"):
            self.fail(
                f"datastore {ds.name} is NFS: restore it with protocol 'nfs' or 'auto', "
                f"not '{wanted}'"
            )
            return None
        if not is_nfs and wanted == "nfs":
            self.fail(
                f"datastore {ds.name} is VMFS on a LUN: use protocol 'iscsi', 'fc' or 'auto', "
                "not 'nfs'"
            )
            return None
        hosts = [self.host(h) for objs in self.index(vim.HostSystem).values() for h in objs]
        target = on_host or self.req.target_host
        if target:
            chosen = [h for h in hosts if h.name == target]
            if not chosen:
                self.fail(
                    f"target host '{target}' not found; hosts: "
                    + ", ".join(sorted(h.name for h in hosts))
                )
                return None
            if not _usable(chosen[0]):
                self.fail(
                    f"target host {chosen[0].name} is not connected or is in maintenance mode"
                )
                return None
            candidates = chosen
        else:
            own_host = vm.runtime.host if vm is not None else None
            own = [self.host(own_host)] if own_host is not None else []
            candidates = [h for h in own if _usable(h)] + sorted(
                (h for h in hosts if _usable(h) and h not in own), key=lambda h: h.name
            )
        reasons = []
        for host in candidates:
            can = _host_protocols(host)
            if is_nfs:
                options = ["nfs"]
            elif wanted != "auto":
                options = [wanted]
            else:
                current = _paths_to(host, backing.naa)
                options = [p for p in ("fc", "iscsi") if p in current] or ["fc", "iscsi"]
            for p in options:
                if p not in served:
                    reasons.append(f"{array.name} does not serve {p}")
                elif p not in can:
                    reasons.append(f"{host.name} has no {p} adapter or VMkernel address")
                else:
                    return host, p
        self.fail(
            f"no host can reach {array.name} for datastore {ds.name}: "
            + "; ".join(dict.fromkeys(reasons))
        )
        return None

    # ---- placement ---------------------------------------------------------------------------

    def _place_vm(self, v: VmPlan, vm: vim.VirtualMachine | None, g: GroupPlan) -> None:
        """Choose the restored VM's folder and resource pool: asked for, else the original's
        (its pool only if it belongs to the chosen host's cluster), else the datacenter's VM
        folder and the host's cluster's root pool."""
        host = self.find(vim.HostSystem, g.host)
        cluster = host.parent if host is not None else None
        props = self.vm_props(vm) if vm is not None else {}
        if self.req.vm_folder:
            folder = self._folder(self.req.vm_folder, host)
        else:
            folder = props.get("parent")
        if folder is None and host is not None:
            folder = vs.datacenter_of(host).vmFolder
        if folder is not None:
            v.vm_folder, v.vm_folder_path = folder._moId, self._relative(self.path_of(folder))
        pool = None
        if self.req.resource_pool:
            pool = self._pool(self.req.resource_pool, cluster)
        elif props.get("resourcePool") is not None and cluster is not None:
            candidate = props["resourcePool"]
            if candidate.owner == cluster:
                pool = candidate
        if pool is None and cluster is not None and not self.req.resource_pool:
            pool = cluster.resourcePool
        if pool is not None:
            v.pool, v.pool_path = pool._moId, pool_path(pool, cluster)

    def _folder(self, wanted: str, host: Any) -> vim.Folder | None:
        wanted = wanted.strip("/")
        for item in self._inventory().values():
            obj = item["obj"]
            if not isinstance(obj, vim.Folder):
                continue
            path = self.path_of(obj)
            if wanted in (path, self._relative(path)):
                if "VirtualMachine" not in (obj.childType or []):
                    self.fail(f"vm_folder '{wanted}' is not a VM folder")
                    return None
                return obj
        self.fail(
            f"vm_folder '{wanted}' not found: give an inventory path below the datacenter's VM "
            "folder, e.g. 'team-a' or 'lab-dc/vm/team-a'"
        )
        return None

    def _pool(self, wanted: str, cluster: Any) -> vim.ResourcePool | None:
        if cluster is None:
            return None
        wanted = wanted.strip("/")
        pools = _pools_of(cluster.resourcePool)
        found = [p for p in pools if wanted in (pool_path(p, cluster), p.name)]
        if len(found) == 1:
            return found[0]
        names = ", ".join(sorted(pool_path(p, cluster) for p in pools))
        if found:
            self.fail(f"resource_pool '{wanted}' is ambiguous: give its path ({names})")
        else:
            self.fail(f"resource_pool '{wanted}' not found in {cluster.name}; pools: {names}")
        return None

    # ---- network -----------------------------------------------------------------------------

    def _check_network_map(self) -> None:
        req = self.req
        if req.network == NetworkMode.map and not req.network_map:
            self.fail(
                'network=map needs network_map, e.g. {"VM Network": "isolated-pg"} (source '
                "network -> port group)"
            )
        if req.network_map and req.network != NetworkMode.map:
            self.fail("network_map is given but network is not 'map': set network to 'map'")
        for target in dict.fromkeys(req.network_map.values()):
            if self.find(vim.Network, target) is None:
                self.fail(f"network_map: port group '{target}' not found")

    def _plan_nics(self, v: VmPlan, vm: vim.VirtualMachine | None) -> None:
        """Decide each NIC's fate from ``network`` (auto: disconnected while the original
        runs). A VM not in the inventory: its NICs are read from its .vmx at registration."""
        req = self.req
        props = self.vm_props(vm) if vm is not None else {}
        v.original_running = str(props.get("runtime.powerState", "")) == "poweredOn"
        mode = req.network
        if mode == NetworkMode.auto:
            mode = NetworkMode.disconnected if v.original_running else NetworkMode.keep
            v.network_auto = True
        v.network = {
            NetworkMode.keep: "keep",
            NetworkMode.disconnected: "disconnect",
            NetworkMode.map: "map",
        }[mode]  # type: ignore[assignment]
        for dev in props.get("config.hardware.device") or []:
            if not isinstance(dev, vim.vm.device.VirtualEthernetCard):
                continue
            on_dvs = getattr(getattr(dev.backing, "port", None), "portgroupKey", None)
            network = vs.nic_network_name(dev, self.portgroups() if on_dvs else {})
            label = dev.deviceInfo.label if dev.deviceInfo else f"NIC {dev.key}"
            if v.network == "map":
                target = req.network_map.get(network)
                v.nics.append(
                    NicPlan(
                        label=label,
                        network=network,
                        action="map" if target else "disconnect",
                        target=target,
                    )
                )
            else:
                v.nics.append(NicPlan(label=label, network=network, action=v.network))

    # ---- disks -------------------------------------------------------------------------------

    def _plan_disks(
        self,
        v: VmPlan,
        vm: vim.VirtualMachine | None,
        g: GroupPlan,
        groups: dict[str, GroupPlan],
    ) -> None:
        """Account for every disk of the VM before anything is created: on the snapshotted
        datastore (kept), elsewhere or an RDM (refused, detached, or from that datastore's
        snapshot, as ``other_disks`` says). A VM not in the inventory is checked from its
        .vmx at registration."""
        if vm is None or self.req.operation == Operation.vm_files:
            return
        policy = self.req.other_disks
        refused = []
        for dev in self.vm_props(vm).get("config.hardware.device") or []:
            if not isinstance(dev, vim.vm.device.VirtualDisk):
                continue
            disk = disk_plan(dev)
            v.disks.append(disk)
            chain = disk_chain(dev.backing)
            elsewhere = sorted({d for d in chain if d and d != v.datastore})
            if disk.rdm:
                if policy == OtherDisks.refuse:
                    refused.append(
                        f"{disk.label} is an RDM ({disk.rdm}) to a LUN that is no snapshot "
                        "copy: a restored VM must not open it"
                    )
                else:
                    disk.action = "detach"
                continue
            if not elsewhere:
                continue
            disk.datastore = elsewhere[0]
            if len(elsewhere) > 1:
                refused.append(
                    f"{disk.label} ({disk.file}) spans datastores {', '.join(elsewhere)} "
                    "(a delta chain across datastores)"
                )
                continue
            other = self.find(vim.Datastore, elsewhere[0])
            disk.volume_path = volume_path(other) if other is not None else None
            if policy == OtherDisks.refuse:
                refused.append(f"{disk.label} ({disk.file}) is on datastore {elsewhere[0]}")
            elif policy == OtherDisks.detach:
                disk.action = "detach"
            else:
                key = self._disk_group(v, disk, other, g, groups)
                if key is not None:
                    disk.action, disk.group = "from_snapshot", key
        if refused:
            self.fail(
                f"VM {v.key}: " + "; ".join(refused) + f" — not on {v.datastore}, the "
                "datastore whose snapshot is restored. Restore it with other_disks=detach "
                "(without those disks; RDMs are removed) or other_disks=from_snapshots (those "
                "datastores from their snapshot nearest in time too)"
            )

    def _disk_group(
        self,
        v: VmPlan,
        disk: DiskPlan,
        ds: vim.Datastore | None,
        main: GroupPlan,
        groups: dict[str, GroupPlan],
    ) -> str | None:
        """Return the key of the group whose copy holds ``disk`` (from its datastore's
        snapshot nearest in time to the main one, within the tolerance), presented to the
        main group's host; None when there is none (a problem recorded)."""
        if ds is None:
            self.fail(f"VM {v.key}: {disk.label} is on datastore {disk.datastore}, not found")
            return None
        tolerance = self.req.snapshot_tolerance_minutes * 60
        when = main.snapshot.created

        def nearest(snapshots: list[ArraySnapshot]) -> ArraySnapshot | str:
            if not snapshots:
                return "the volume has no snapshots"
            best = min(snapshots, key=lambda s: abs((s.created - when).total_seconds()))
            gap = abs((best.created - when).total_seconds())
            if gap > tolerance:
                return (
                    f"no snapshot within {self.req.snapshot_tolerance_minutes:g} min of "
                    f"{when:%Y-%m-%d %H:%M} UTC (nearest: {best.name}, {gap / 60:.0f} min "
                    f"away) for {disk.label} of VM {v.key}: raise snapshot_tolerance_minutes "
                    "or use other_disks=detach"
                )
            return best

        found = self._volume_and_snapshot(ds, nearest)
        if found is None:
            return None
        array, volume, snap, backing = found
        key = group_key(array, volume, snap)
        group = groups.get(key)
        if group is None:
            placed = self.place(ds, backing, array, None, on_host=main.host)
            if placed is None:
                return None
            group = groups[key] = self.group(ds, array, volume, snap, *placed)
        elif group.host != main.host:
            self.fail(
                f"VM {v.key} needs the copy of {ds.name} on {main.host}, but other VMs of this "
                f"restore have it on {group.host}: give target_host, or restore them apart"
            )
            return None
        if v.key not in group.disks_for:
            group.disks_for.append(v.key)
        return key

    # ---- the operation -----------------------------------------------------------------------

    def _check_operation(self, v: VmPlan, vm: vim.VirtualMachine | None, g: GroupPlan) -> None:
        req = self.req
        op = req.operation
        if op == Operation.vm_files:
            if not req.files:
                self.fail("files: give at least one pattern (e.g. *.vmx)")
            target = req.target_datastore or v.datastore
            v.target_datastore = target
            v.target_folder = req.target_folder or f"{v.name}{self.suffix}-files"
            tds = self.find(vim.Datastore, target)
            if tds is None:
                self.fail(f"target datastore '{target}' not found")
            elif not tds.summary.accessible:
                self.fail(f"target datastore '{target}' is not accessible")
            elif there := vs.matching_files(tds, v.target_folder, req.files, 60):
                self.fail(
                    f"[{target}] {v.target_folder} already holds {', '.join(there)}: choose "
                    "another target_folder (snaprestore never overwrites files it did not copy)"
                )
            return
        needs_target = op == Operation.full_restore or (
            op == Operation.instant_recovery
            and req.finish in (Finish.migrate, Finish.wait_for_user)
        )
        if needs_target:
            target = req.migrate_to or v.datastore
            v.target_datastore = target
            problem = migration_target_problem(self.find, target, g.host)
            if problem:
                self.fail(problem)
        if op == Operation.full_restore and req.replace_original:
            if vm is None:
                self.fail(
                    f"replace_original: VM '{v.key}' is not in the inventory, "
                    "there is nothing to replace"
                )
            aside = aside_name(v)
            if len(aside) > MAX_NAME:
                self.fail(
                    f"replace_original: the original would be renamed '{aside}', longer than "
                    f"{MAX_NAME} characters: shorten name_suffix"
                )
            elif self.find(vim.VirtualMachine, aside) is not None:
                self.fail(
                    f"replace_original: a VM named '{aside}' exists already (the name the "
                    "original would be set aside under): choose another name_suffix"
                )


def volume_path(ds: Any) -> str | None:
    """Return the ``/vmfs/volumes/<id>`` a datastore is mounted at on its hosts, or None."""
    for m in ds.host or []:
        path = getattr(m.mountInfo, "path", None) if m.mountInfo else None
        if path:
            return str(path).rstrip("/")
    return None


def disk_plan(dev: Any) -> DiskPlan:
    """Return a VM disk as the planner first sees it (kept, on the datastore of its file)."""
    backing = dev.backing
    label = dev.deviceInfo.label if dev.deviceInfo else f"disk {dev.key}"
    file = getattr(backing, "fileName", "") or ""
    ds = _datastore_of_path(file)
    rdm = None
    if isinstance(backing, vim.vm.device.VirtualDisk.RawDiskMappingVer1BackingInfo):
        rdm = f"{backing.compatibilityMode or 'physicalMode'} to {backing.deviceName or '?'}"
    mode = str(getattr(backing, "diskMode", "") or "")
    return DiskPlan(
        label=label, file=file, datastore=ds, rdm=rdm, independent=mode.startswith("independent")
    )


def disk_chain(backing: Any) -> list[str | None]:
    """Return the datastore of each file of a disk's delta chain (the disk, its parents)."""
    out: list[str | None] = []
    seen = 0
    while backing is not None and seen < 64:
        ds = getattr(backing, "datastore", None)
        name = None
        if ds is not None:
            try:
                name = ds.name
            except Exception:  # a datastore that cannot be read: judge by the path
                name = None
        out.append(name or _datastore_of_path(getattr(backing, "fileName", "") or ""))
        backing = getattr(backing, "parent", None)
        seen += 1
    return out


def _datastore_of_path(path: str) -> str | None:
    try:
        return vs.split_ds_path(path)[0]
    except vs.VSphereError:
        return None


def _pools_of(root: Any) -> list[Any]:
    out = [root]
    for child in root.resourcePool or []:
        out += _pools_of(child)
    return out


def pool_path(pool: Any, cluster: Any) -> str:
    """Return a resource pool's path below its cluster (the root pool is ``Resources``)."""
    if cluster is not None and pool == cluster.resourcePool:
        return "Resources"
    parts = []
    while pool is not None and cluster is not None and pool != cluster.resourcePool:
        parts.append(pool.name)
        pool = pool.parent
    return "/".join(reversed(parts))


def group_key(array: StorageArray, volume: ArrayVolume, snapshot: ArraySnapshot) -> str:
    """Return the key of the group of VMs restored from one copy of ``snapshot``."""
    return f"{array.name}|{copy_key(volume, snapshot)}"


def aside_name(v: VmPlan) -> str:
    """Return the name a replaced original is renamed to before it is unregistered."""
    return f"{v.name}-replaced{v.new_name[len(v.name) :]}"


def mount_name(restore_id: str, production: str) -> str:
    base = f"sr-{restore_id[:8]}-{production}"
    return re.sub(r"[/\\%]", "_", base)[:MAX_NAME]


def make_plan(
    si: vim.ServiceInstance,
    arrays: list[StorageArray],
    request: RestoreRequest,
    restore_id: str,
    reads: ArrayReads = DIRECT,
    unreachable: dict[str, str] | None = None,
) -> RestorePlan:
    """Validate ``request`` against vCenter and the arrays; return the plan or raise PlanError.

    ``unreachable``: arrays known not to be usable (named in a problem only when needed)."""
    return Planner(si, arrays, request, restore_id, reads, unreachable).build()
