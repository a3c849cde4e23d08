"""The one teardown of a snapshot copy, used by the restore, the drill, the catalog and the
janitor.

A copy can be seen by more hosts than the one it was presented to (a host object or igroup
shared by a cluster, and vCenter mounting a resignatured volume on every host that sees
the device), so the steps are built from what vCenter shows now — a
:class:`~tasks.sweep.Footprint`: every datastore mounted from the copy on any host, the VMs
on them, every host that has its device — never from what the run remembers. The order:
VMs that run from the copy are powered off and unregistered → the datastores unmounted on
every host (VMFS ``UnmountVmfsVolume``, never ``RemoveDatastore``; NFS removed) → the
device detached on every host → the copy withdrawn from every host on the array → the
adapters of the hosts that had it rescanned → the copy deleted. Withdrawing a copy a host
still has mounted or attached is All-Paths-Down there: a failed step stops every later step
that depends on it.

Nothing that is not the run's is touched: a VM that lives on the copy but is kept (a
migration still moving it off), or that another run restored, or a VM that only borrowed a
disk from the copy, blocks the unit with a message saying what to do.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from blocks.arrays import StorageArray
from blocks.errors import brief
from blocks.models import CopyTag, SnapshotCopy
from blocks.vcenter import VCenterCredentials
from flows import slots
from flows.effects import Kind
from tasks import array_tasks as at
from tasks import sweep
from tasks import vsphere_tasks as vt
from tasks.vsphere_tasks import DatastoreRef, VmRef

Outcome = Literal["done", "already done", "FAILED", "not done", "planned"]


@dataclass
class Step:
    """One cleanup action on one object, done by Prefect tasks."""

    object: str
    kind: str
    where: str
    action: str
    run: Callable[[], Any]
    tags: tuple[str, ...] = ()
    needed: bool = True  # later steps of the unit are unsafe if this one fails
    undoes: tuple[Kind, tuple[str, ...]] | None = None  # the side effect it removes


@dataclass
class Unit:
    """Objects cleaned together, in order: a copy and what uses it, or a tagged leftover."""

    what: str
    tag: CopyTag
    objects: list[tuple[str, str, str]]  # (object, kind, where) for "keep" rows
    steps: list[Step] = field(default_factory=list)
    blocked: str | None = None  # a reason it must not be cleaned
    stuck: bool = False  # the block is a problem to fix (fails the run), not a choice


@dataclass
class StepResult:
    """What became of one step."""

    step: Step
    outcome: Outcome
    detail: str = ""  # the failure, or the step that failed first

    @property
    def text(self) -> str:
        """The result as one line for a report."""
        if self.outcome == "FAILED":
            return f"FAILED: {self.detail}"
        if self.outcome == "not done":
            return f"not done: {self.detail} failed first"
        if self.outcome == "planned":
            return "planned (dry run)"
        return self.outcome


def copy_unit(
    vc: VCenterCredentials,
    array: StorageArray,
    copy: SnapshotCopy,
    footprint: sweep.Footprint,
    *,
    own_run: str | None = None,
    also_rescan: Iterable[tuple[str, str]] = (),
    kept: set[str] | frozenset[str] = frozenset(),
    own_vmx: set[str] | frozenset[str] = frozenset(),
) -> Unit:
    """Return the steps that remove ``copy`` and everything made from it, in the safe order.

    ``own_run``: a restore tearing down its own copy; a VM living on the copy that carries
    another run's tag (or none) blocks the unit. The janitor passes None: every VM living on
    a gone run's copy goes, except kept ones. ``also_rescan``: (host, protocol) pairs to
    rescan even if the device is not listed there any more (hosts the run rescanned).
    ``kept``: managed object ids of VMs the run keeps (even if its tag could not say so);
    ``own_vmx``: ``[datastore] path`` of the .vmx files the run registered (a VM of its own
    that could not be tagged).
    """
    tag = copy.tag or CopyTag(run=own_run or "untagged")
    naa = copy.naa or ""
    unit = Unit(
        what=f"copy {copy.name} on {array.name}",
        tag=tag,
        objects=[(copy.name, "copy", array.name)],
    )
    datastore_steps(vc, unit, footprint.datastores, own_run, kept, own_vmx)
    devices = footprint.devices
    for d in devices:
        if d.attached:
            unit.steps.append(
                Step(
                    d.naa,
                    "device",
                    d.host,
                    "detach",
                    lambda h=d.host, n=d.naa: vt.detach_lun(vc, h, n),
                    slots.host_tags(d.host),
                    undoes=(Kind.device, (d.host, d.naa.lower())),
                )
            )
    unit.steps.append(
        Step(
            copy.name,
            "copy",
            array.name,
            "withdraw from every host",
            lambda: at.unpresent_everywhere(array, copy),
            slots.array_tags(array.name),
            undoes=(Kind.presentation, (array.name, copy.name)),
        )
    )
    rescans = {(d.host, p) for d in devices for p in d.protocols}
    rescans |= {(h, p) for h, p in also_rescan if p in ("iscsi", "fc")}
    for host, protocol in sorted(rescans):
        unit.steps.append(
            Step(
                naa,
                "device",
                host,
                f"rescan the {protocol} adapters so the device goes away",
                lambda h=host, p=protocol: vt.rescan_adapters(vc, h, p),
                slots.host_tags(host),
                needed=False,  # housekeeping: deleting the copy does not depend on it
            )
        )
    unit.steps.append(
        Step(
            copy.name,
            "copy",
            array.name,
            "delete",
            lambda: at.delete_copy(array, copy),
            slots.array_tags(array.name),
            undoes=(Kind.copy, (array.name, copy.name)),
        )
    )
    return unit


def datastore_steps(
    vc: VCenterCredentials,
    unit: Unit,
    datastores: list[sweep.SeenDatastore],
    own_run: str | None,
    kept: set[str] | frozenset[str] = frozenset(),
    own_vmx: set[str] | frozenset[str] = frozenset(),
) -> None:
    """Add to ``unit`` the steps that stop the VMs living on ``datastores`` and unmount them
    from every host; block the unit when a VM there is not ours to stop."""
    for ds in datastores:
        hosts = ", ".join(m.host for m in ds.mounts)
        unit.objects.append((ds.name, "datastore", hosts))
        unit.objects += [(vm.name, "VM", vm.host or "") for vm in ds.vms]
        run = own_run or unit.tag.run
        problem = _not_ours(ds, own_run, run, kept, own_vmx)
        if problem:
            unit.blocked, unit.stuck = problem, True
        # a VM of this run living on another of its copies, with a disk on this one, goes too
        borrowers = [vm for vm in ds.foreign_vms if _of_run(vm, run) and vm.moref not in kept]
        for vm in [*borrowers, *ds.vms]:
            unit.steps.append(
                Step(
                    vm.name,
                    "VM",
                    vm.host or "",
                    "power off and unregister",
                    lambda v=vm: discard_vm(vc, v),
                    (),  # no slot: power-off and unregistration are light
                    undoes=(Kind.vm, (vm.moref,)),
                )
            )
    for ds in datastores:
        ref = DatastoreRef(
            name=ds.name,
            moref=ds.moref,
            kind="vmfs" if ds.kind == "vmfs" else "nfs",
            vmfs_uuid=ds.vmfs_uuid,
            naa=ds.naa,
        )
        vmfs = ds.kind == "vmfs"
        for m in ds.mounts:
            unit.steps.append(
                Step(
                    ds.name,
                    "datastore",
                    m.host,
                    "unmount VMFS volume" if vmfs else "remove NFS datastore",
                    lambda h=m.host, r=ref, vmfs=vmfs: (
                        vt.unmount_vmfs(vc, h, r) if vmfs else vt.remove_nas_datastore(vc, h, r)
                    ),
                    slots.host_tags(m.host),
                    undoes=(Kind.datastore, (m.host, ds.moref)),
                )
            )


def _of_run(vm: sweep.SeenVm, run: str) -> bool:
    """True for a VM restored by ``run``, not kept, still living on the snapshot copy it was
    registered from."""
    t = vm.tag
    return (
        t is not None
        and t.run == run
        and not t.kept
        and bool(t.datastore)
        and vm.vmx_datastore == t.datastore
    )


def _not_ours(
    ds: sweep.SeenDatastore,
    own_run: str | None,
    run: str,
    kept: set[str] | frozenset[str] = frozenset(),
    own_vmx: set[str] | frozenset[str] = frozenset(),
) -> str | None:
    """Say why the VMs on ``ds`` must not be stopped, or None when they may."""
    foreign = [vm for vm in ds.foreign_vms if not _of_run(vm, run) or vm.moref in kept]
    if foreign:
        names = ", ".join(vm.name for vm in foreign)
        return (
            f"VM(s) {names} use a disk on datastore {ds.name} (a snapshot copy) but do not "
            "live on it: remove those disks from them, then run the janitor"
        )
    keeps = [vm.name for vm in ds.vms if (vm.tag is not None and vm.tag.kept) or vm.moref in kept]
    if keeps:
        return (
            f"VM(s) {', '.join(keeps)} run from datastore {ds.name} (a snapshot copy) and are "
            "kept (a migration may still be moving them): once they are on production "
            "storage, run the janitor"
        )
    if own_run is not None:
        others = [
            vm.name
            for vm in ds.vms
            if (vm.tag is None and vm.vmx not in own_vmx)
            or (vm.tag is not None and vm.tag.run != own_run)
        ]
        if others:
            return (
                f"VM(s) {', '.join(others)} run from datastore {ds.name} (this run's snapshot "
                "copy) but were not restored by this run: move them off it or unregister "
                f"them, then run the janitor for restore {own_run}"
            )
    return None


def discard_vm(vc: VCenterCredentials, vm: sweep.SeenVm) -> bool:
    """Power ``vm`` off if it runs, then unregister it; False if it was already gone."""
    ref = VmRef(name=vm.name, moref=vm.moref)
    if vm.power == "poweredOn":
        vt.power_off_vm(vc, ref)
    return vt.unregister_vm(vc, ref)


def carry_out(
    unit: Unit, *, dry_run: bool = False, log: Callable[[str], Any] = print
) -> list[StepResult]:
    """Run the unit's steps in order; a failed needed step leaves every later step undone
    (each reported as such). A dry run only reports."""
    from prefect import tags

    results: list[StepResult] = []
    failed: str | None = None
    for step in unit.steps:
        if dry_run:
            results.append(StepResult(step, "planned"))
            continue
        if failed is not None:
            results.append(StepResult(step, "not done", failed))
            continue
        try:
            with tags(*step.tags):
                out = step.run()
            results.append(StepResult(step, "already done" if out is False else "done"))
        except Exception as exc:
            results.append(StepResult(step, "FAILED", brief(exc)))
            log(f"{step.action} {step.kind} {step.object} on {step.where} failed: {brief(exc)}")
            if step.needed:
                failed = f"{step.action} {step.kind} {step.object} on {step.where}"
    return results
