"""Planning a restore: resolve and validate everything before any side effect (DESIGN §1.1).

VMs → their production datastore → its backing → the array volume → the snapshot; a target
host and a protocol per group of VMs that share one snapshot copy. Every problem found is
reported at once, each with what to change.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field
from pyVmomi import vim

from blocks.arrays import StorageArray
from blocks.errors import ArrayError
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
from flows.params import Finish, NetworkMode, Operation, ProtocolChoice
from tasks import array_tasks as at
from tasks import vsphere as vs
from tasks.array_tasks import copy_key

MAX_NAME = 80


class PlanError(Exception):
    """The request cannot be carried out as asked; nothing was changed anywhere."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__(
            "the restore was not started; fix the request:\n"
            + "\n".join(f"- {p}" for p in problems)
        )


class RestoreRequest(BaseModel):
    """Everything the user asked for (the flow's parameters, validated)."""

    vms: list[str] = Field(min_length=1)
    datastore: str | None = None
    snapshot: str = "latest"
    operation: Operation = Operation.instant_recovery
    target_host: str | None = None
    protocol: ProtocolChoice = ProtocolChoice.auto
    power_on: bool = True
    network: NetworkMode = NetworkMode.keep
    name_suffix: str | None = None
    finish: Finish = Finish.stop
    migrate_to: str | None = None
    replace_original: bool = False
    files: list[str] = Field(default_factory=lambda: ["*.vmx", "*.vmdk", "*.nvram"])
    target_datastore: str | None = None
    target_folder: str | None = None


class VmPlan(BaseModel):
    """One VM to restore."""

    name: str
    new_name: str
    datastore: str  # production datastore
    vmx: str  # path of the .vmx inside the datastore
    folder: str
    original: str | None = None  # moref of the VM in the inventory, if it is there
    target_datastore: str | None = None  # full restore / migration / files target
    target_folder: str | None = None  # VM files restore


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
    mount_name: str
    portals: list[IscsiPortal] = Field(default_factory=list)
    vms: list[VmPlan]


class RestorePlan(BaseModel):
    """A validated restore."""

    restore_id: str
    request: RestoreRequest
    groups: list[GroupPlan]

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
                "",
                "| VM | restored as | from datastore |",
                "|---|---|---|",
                *(f"| {v.name} | {v.new_name} | {v.datastore} |" for v in g.vms),
            ]
        return "\n".join(lines)


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
        self._names: dict[type, dict[str, list[Any]]] = {}
        self._hosts: dict[str, HostReads] = {}

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
            for item in vs.collect(self.si, vimtype, props):
                found.setdefault(item.get("name", ""), []).append(item["obj"])
                if vimtype is vim.HostSystem:  # what choosing a host reads of every host
                    self.host(item["obj"]).know(item)
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
        """Return (once) what the array is; record a problem if it cannot be reached."""
        if array.name not in self._infos:
            try:
                self._infos[array.name] = array.describe()
            except ArrayError as exc:
                self.fail(f"array {array.name} cannot be reached: {exc}")
                return None
        return self._infos[array.name]

    # ---- VMs ---------------------------------------------------------------------------------

    def locate_vm(self, name: str) -> tuple[VmPlan, vim.VirtualMachine | None] | None:
        """Find where ``name`` lives (inventory, or the ``datastore`` parameter)."""
        matches = self.named(vim.VirtualMachine, name)
        if len(matches) > 1:
            self.fail(f"{len(matches)} VMs are named '{name}': rename the others first")
            return None
        if matches:
            vm = matches[0]
            ds, vmx = vs.split_ds_path(vs.vmx_path_of(vm))
            plan = VmPlan(
                name=name,
                new_name=name + self.suffix,
                datastore=ds,
                vmx=vmx,
                folder=vmx.rsplit("/", 1)[0] if "/" in vmx else "",
                original=vm._moId,
            )
            return plan, vm
        if not self.req.datastore:
            self.fail(
                f"VM '{name}' is not in the inventory: give its production datastore in "
                "'datastore' to restore it from a snapshot"
            )
            return None
        return (
            VmPlan(
                name=name,
                new_name=name + self.suffix,
                datastore=self.req.datastore,
                vmx=f"{name}/{name}.vmx",
                folder=name,
            ),
            None,
        )

    # ---- the whole plan ---------------------------------------------------------------------

    def build(self) -> RestorePlan:
        """Return the plan, or raise PlanError listing every problem."""
        req = self.req
        if not self.arrays:
            self.fail(
                "no array block is configured: save one (python -m blocks register, then "
                "create an HPE Primera or NetApp ONTAP array block)"
            )
        located = [x for x in (self.locate_vm(n) for n in dict.fromkeys(req.vms)) if x]
        if len(set(req.vms)) != len(req.vms):
            self.fail("a VM is listed twice")
        if req.operation == Operation.vm_files and req.target_folder and len(req.vms) > 1:
            self.fail(
                "target_folder names one folder for several VMs: leave it empty (each VM "
                "gets <vm><suffix>-files) or restore one VM at a time"
            )
        groups: dict[str, GroupPlan] = {}
        for vm_plan, vm in located:
            self._check_new_name(vm_plan)
            group = self._group_for(vm_plan, vm, groups)
            if group is not None:
                self._check_operation(vm_plan, vm, group)
                group.vms.append(vm_plan)
        if self.problems:
            raise PlanError(self.problems)
        return RestorePlan(restore_id=self.restore_id, request=req, groups=list(groups.values()))

    def _check_new_name(self, v: VmPlan) -> None:
        if len(v.new_name) > MAX_NAME:
            self.fail(f"'{v.new_name}' is longer than {MAX_NAME} characters: shorten name_suffix")
        elif self.find(vim.VirtualMachine, v.new_name) is not None:
            self.fail(f"a VM named '{v.new_name}' exists already: choose another name_suffix")

    def _group_for(
        self, v: VmPlan, vm: vim.VirtualMachine | None, groups: dict[str, GroupPlan]
    ) -> GroupPlan | None:
        ds = self.find(vim.Datastore, v.datastore)
        if ds is None:
            self.fail(f"datastore '{v.datastore}' (of VM {v.name}) is not in the inventory")
            return None
        backing = self.backing(ds)
        if backing is None:
            return None
        volume, array = self.find_volume(backing, ds.name)
        if volume is None or array is None:
            return None
        try:
            snapshots = self.reads.list_snapshots(array, volume)
        except ArrayError as exc:
            self.fail(f"array {array.name}: cannot list snapshots of {volume.name}: {exc}")
            return None
        snap = select_snapshot(snapshots, self.req.snapshot)
        if isinstance(snap, str):
            self.fail(f"{array.name} volume {volume.name} (datastore {ds.name}): {snap}")
            return None
        key = group_key(array, volume, snap)
        if key in groups:
            return groups[key]
        placed = self.place(ds, backing, array, vm)
        if placed is None:
            return None
        group = groups[key] = self.group(ds, array, volume, snap, *placed)
        return group

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
        for array in self.arrays:
            if self.info(array) is None:
                continue
            try:
                volume = self.reads.find_volume(array, backing)
            except ArrayError as exc:
                self.fail(f"array {array.name}: {exc}")
                continue
            if volume is not None:
                return volume, array
        where = (
            backing.naa if isinstance(backing, VmfsBacking) else f"{backing.server}:{backing.path}"
        )
        names = ", ".join(a.name for a in self.arrays) or "none"
        self.fail(f"datastore {ds_name} ({where}) is not on any configured array (arrays: {names})")
        return None, None

    def place(
        self,
        ds: vim.Datastore,
        backing: VmfsBacking | NfsBacking,
        array: StorageArray,
        vm: vim.VirtualMachine | None,
    ) -> tuple[HostReads, str] | None:
        """Choose the host and protocol the copy is presented to."""
        info = self.info(array)
        if info is None:
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
        if self.req.target_host:
            chosen = [h for h in hosts if h.name == self.req.target_host]
            if not chosen:
                self.fail(
                    f"target host '{self.req.target_host}' not found; hosts: "
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
                    f"replace_original: VM '{v.name}' is not in the inventory, "
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
) -> RestorePlan:
    """Validate ``request`` against vCenter and the arrays; return the plan or raise PlanError."""
    return Planner(si, arrays, request, restore_id, reads).build()
