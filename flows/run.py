"""Carrying out a restore plan: attach the copies, restore the VMs, finish, tear down.

:class:`Restore` holds what one run created (typed records, :mod:`flows.effects`), so that
:meth:`Restore.teardown` can undo it with the one teardown (:mod:`flows.teardown`) in the
safe order, on every host that sees a copy, on every exit path.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.futures import PrefectFuture
from prefect.utilities.annotations import quote
from pydantic import BaseModel

from blocks.arrays import StorageArray
from blocks.errors import brief
from blocks.models import CopyTag, Presentation, SnapshotCopy
from blocks.vcenter import VCenterCredentials
from flows import slots, teardown
from flows.effects import Effects, Kind
from flows.identity import current_attempt, server_id
from flows.params import Operation, OtherDisks, Verify
from flows.plan import GroupPlan, RestorePlan, RestoreRequest, VmPlan, aside_name
from tasks import array_tasks as at
from tasks import janitor_tasks as jt
from tasks import sweep
from tasks import vsphere_tasks as vt
from tasks.retry import step
from tasks.vmx_edit import volume_id
from tasks.vsphere import TaskStillRunning, VSphereError
from tasks.vsphere_tasks import DatastoreRef, VmRef, VmxRules

__all__ = ["MIGRATION_FAILED", "Restore", "RestoreError", "VmOutcome", "restore_vm"]

MIGRATION_FAILED = "migration failed (running from the copy)"


class VmOutcome(BaseModel):
    """What happened to one VM."""

    vm: str  # the VM as the request named it
    restored_as: str | None = None
    host: str = ""
    datastore: str = ""
    state: str = "planned"
    seconds_to_power_on: float | None = None  # from the run's start
    seconds_to_verified: float | None = None  # to the tools heartbeat
    tools: str | None = None
    ip: str | None = None
    files: list[str] = []
    moref: str | None = None
    kept: bool = False
    original: str | None = None  # what became of the original VM this run replaced
    notes: list[str] = []  # what was changed on the way (disks, NICs)
    error: str | None = None


class VmRestoreFailed(Exception):
    """One VM's restore failed; ``outcome`` says how far it got and what it left."""

    def __init__(self, message: str, outcome: VmOutcome | None = None):
        super().__init__(message)
        self.outcome = outcome


class RestoreError(Exception):
    """The restore did not fully succeed; the message says what failed and what is left."""


class KeepsRunning(Exception):
    """A vSphere task on a restored VM outlived its wait (it goes on in vCenter): the VM is
    kept, and the copy it still uses must stay; the message says what to do."""


def still_running(exc: BaseException) -> bool:
    """True when ``exc`` (or what it wraps) is a vSphere task that outlived its wait."""
    return isinstance(exc, TaskStillRunning) or isinstance(exc.__cause__, TaskStillRunning)


@dataclass
class GroupRun:
    """One group's live state: the copy, its presentation and the datastore."""

    plan: GroupPlan
    array: StorageArray
    copy: SnapshotCopy | None = None
    copy_requested: bool = False  # the copy may exist even if its creation failed
    presentation: Presentation | None = None
    presented: bool = False
    rescanned: bool = False
    datastore: DatastoreRef | None = None
    busy: str | None = None  # a vSphere task still reads the copy: it must stay
    outcomes: dict[str, VmOutcome] = field(default_factory=dict)

    @property
    def block(self) -> bool:
        return self.plan.protocol != "nfs"


def vmx_rules(
    request: RestoreRequest, vm: VmPlan, group: GroupPlan, copies: dict[str, DatastoreRef]
) -> VmxRules:
    """What the VM's .vmx on the copy may name: its own datastore (rewritten to the copy),
    the other datastores whose snapshots were copied, the datastores it does without."""
    own = {vm.datastore, *(x for x in [volume_id(vm.volume_path)] if x)}
    redirects: dict[str, str] = {}
    drop: set[str] = set()
    for d in vm.disks:
        names = {n for n in (d.datastore, volume_id(d.volume_path)) if n}
        if d.action == "from_snapshot" and d.group in copies:
            target = copies[d.group].volume_path or ""
            redirects |= dict.fromkeys(names, target)
        elif d.action == "detach" and not d.rdm:
            drop |= names
    lenient = request.other_disks != OtherDisks.refuse
    return VmxRules(
        own=sorted(own),
        redirects=redirects,
        drop=sorted(drop),
        # a disk the plan could not know (the snapshot's config differs from today's, or the
        # VM is gone from the inventory): dropped when the user does without other disks
        drop_unplanned=request.other_disks == OtherDisks.detach
        or (lenient and vm.original is None),
        drop_rdms=lenient,
    )


def disk_moves(vm: VmPlan, copies: dict[str, DatastoreRef], plan: RestorePlan) -> dict[str, str]:
    """For a relocation: the other copies the VM has disks on -> the production datastore
    each disk goes back to."""
    groups = {g.key: g for g in plan.groups}
    out = {}
    for d in vm.disks:
        if d.action == "from_snapshot" and d.group in copies and d.group in groups:
            out[copies[d.group].name] = d.datastore or groups[d.group].production_datastore
    return out


@step("restore {vm.key} as {vm.new_name}", retries=0)
def restore_vm(
    vcenter: VCenterCredentials,
    plan: RestorePlan,
    vm: VmPlan,
    group: GroupPlan,
    copies: dict[str, DatastoreRef],
    tag: CopyTag,
    started_at: float,
) -> VmOutcome:
    """Carry out the operation for one VM from the mounted copies."""
    # Slots are taken by the heavy steps inside (flows/slots.py), never by this wrapper: a
    # wrapper holding a slot while its own steps wait for one deadlocks at the limit.
    datastore = copies[group.key]
    out = VmOutcome(vm=vm.key, host=group.host, datastore=datastore.name)
    request = plan.request
    try:
        running = restore_steps(vcenter, plan, vm, group, copies, tag, started_at, out)
        if running is not None and request.verify == Verify.tools:
            # waiting for the guest is no work for the host: no slot
            seen = vt.wait_for_tools(vcenter, running, want_ip=False)
            out.tools, out.ip = seen["tools"], seen["ip"]
            out.seconds_to_verified = round(time.time() - started_at, 2)
        if running is not None and request.operation == Operation.instant_recovery:
            out.state = "verified" if request.verify == Verify.tools else "powered on"
    except KeepsRunning as exc:  # kept: its state says what vCenter still does
        out.error = str(exc)
        raise VmRestoreFailed(out.error, out) from exc
    except Exception as exc:
        out.state, out.error = "failed", brief(exc)
        raise VmRestoreFailed(out.error, out) from exc
    return out


def restore_steps(
    vcenter: VCenterCredentials,
    plan: RestorePlan,
    vm: VmPlan,
    group: GroupPlan,
    copies: dict[str, DatastoreRef],
    tag: CopyTag,
    started_at: float,
    out: VmOutcome,
) -> VmRef | None:
    """Restore one VM, recording each step's result in ``out`` as it happens; return it
    if it was powered on."""
    request = plan.request
    datastore = copies[group.key]
    if request.operation == Operation.vm_files:
        with slots.on_host(group.host):
            out.files = vt.copy_vm_files(
                vcenter,
                datastore.name,
                vm.folder,
                request.files,
                vm.target_datastore or vm.datastore,
                vm.target_folder or f"{vm.new_name}-files",
            )
        out.state, out.datastore, out.kept = "files copied", vm.target_datastore or "", True
        return None
    out.notes += vt.prepare_vmx(
        vcenter, datastore, vm.new_name, vm.vmx, vmx_rules(request, vm, group, copies)
    )
    vm_tag = tag.model_copy(update={"datastore": datastore.name})
    ref = vt.register_vm(
        vcenter, group.host, datastore.name, vm.vmx, vm.new_name, vm_tag, vm.vm_folder, vm.pool
    )
    out.restored_as, out.moref, out.state = ref.name, ref.moref, "registered"
    _set_network(vcenter, request, vm, ref, out)
    answer = "copied"
    if request.operation == Operation.full_restore:
        target = vm.target_datastore or vm.datastore
        try:
            with slots.on_host(group.host):
                vt.relocate_vm(vcenter, ref, target, disk_moves(vm, copies, plan))
        except Exception as exc:
            if not still_running(exc):
                raise
            out.kept, out.state = True, "moving to production (still running in vCenter)"
            vt.mark_kept(vcenter, ref, vm_tag)
            raise KeepsRunning(
                f"the move of {ref.name} to {target} outlived the wait and goes on in "
                f"vCenter; the VM is kept. Once it is on {target}, run the janitor for "
                f"restore {tag.run} to remove the copy"
            ) from exc
        vt.mark_kept(vcenter, ref, vm_tag)
        out.datastore, out.kept, out.state = target, True, "restored"
        if request.replace_original and vm.original:
            ref = _replace_original(vcenter, vm, group.host, ref, out)
            answer = "moved"
            if vm.network == "disconnect" and vm.network_auto:
                # it takes the original's place, which no longer runs: connected as it was
                vt.connect_nics(vcenter, ref)
                out.notes.append("NICs connected again: the original it replaces is off")
    if request.power_on:
        with slots.on_host(group.host):
            vt.power_on_vm(vcenter, ref, answer)
        out.seconds_to_power_on = round(time.time() - started_at, 2)
        out.state = (
            "running" if request.operation == Operation.instant_recovery else "restored, running"
        )
        return ref
    return None


def _set_network(
    vcenter: VCenterCredentials, request: RestoreRequest, vm: VmPlan, ref: VmRef, out: VmOutcome
) -> None:
    """Give the restored VM's NICs what the plan decided (a VM the inventory no longer has:
    what the request says, read from the registered VM)."""
    if vm.network == "disconnect":
        if vt.disconnect_nics(vcenter, ref):
            why = "the original runs" if vm.original_running else "asked"
            out.notes.append(f"NICs start disconnected ({why})")
    elif vm.network == "map":
        out.notes += vt.map_nics(vcenter, ref, request.network_map)


def _replace_original(
    vcenter: VCenterCredentials, vm: VmPlan, host: str, restored: VmRef, out: VmOutcome
) -> VmRef:
    """Give the original VM's name to the restored one and unregister the original (its
    files stay). Until that last step, a failed step puts the original back as it was."""
    original = VmRef(name=vm.name, moref=vm.original or "")
    files = f"[{vm.datastore}] {vm.folder}"
    # a suspended original stays suspended: powering it off would discard its memory state
    was_on = vt.power_state(vcenter, original) == "poweredOn"
    try:
        if was_on:
            vt.power_off_vm(vcenter, original)
            out.original = f"powered off ({files})"
        aside = vt.rename_vm(vcenter, original, aside_name(vm))
        out.original = f"renamed {aside.name}, not running ({files})"
        ref = vt.rename_vm(vcenter, restored, vm.name)
    except Exception as exc:
        try:
            # renaming is idempotent: also right when the rename took effect but its step
            # failed (a timeout)
            vt.rename_vm(vcenter, VmRef(name=aside_name(vm), moref=original.moref), vm.name)
            out.original = f"not running ({files})"
            if was_on:
                with slots.on_host(host):
                    vt.power_on_vm(vcenter, original, "copied")
            out.original = None  # back as it was
        except Exception as undo:
            raise VSphereError(
                f"{brief(exc)}; and putting the original {vm.name} back failed: {brief(undo)}"
            ) from exc
        raise
    out.restored_as = vm.name
    vt.unregister_vm(vcenter, aside)
    out.original = f"unregistered, never deleted: its files are at {files}"
    return ref


class Restore:
    """One restore run: what it created and how to undo it."""

    def __init__(
        self,
        plan: RestorePlan,
        vcenter: VCenterCredentials,
        arrays: dict[str, StorageArray],
        started_at: float,
    ):
        self.plan = plan
        self.req = plan.request
        self.vc = vcenter
        self.started_at = started_at
        self.effects = Effects()
        self.groups = [GroupRun(g, arrays[g.array]) for g in plan.groups]
        self.attempt = current_attempt()
        self.tag = CopyTag(run=plan.restore_id, server=server_id())
        self.vm_futures: list[PrefectFuture] = []
        self.copy_futures: list[PrefectFuture] = []
        self.log = get_run_logger()

    @property
    def copies(self) -> dict[str, DatastoreRef]:
        """The mounted copies, by group key."""
        return {gr.plan.key: gr.datastore for gr in self.groups if gr.datastore is not None}

    # ---- attach ---------------------------------------------------------------------------

    def attach(self) -> None:
        """Create the copies (one task per group, its VMs share it), present and mount them."""
        futures: dict[str, PrefectFuture] = {}
        for gr in self.groups:
            g = gr.plan
            gr.copy_requested = True
            with slots.on_array(g.array):
                futures[g.key] = at.create_snapshot_copy.submit(
                    gr.array,
                    g.volume,
                    g.snapshot,
                    self.plan.restore_id,
                    self.attempt,
                    self.tag.server,
                )
            self.copy_futures.append(futures[g.key])
        errors = []
        for gr in self.groups:
            try:
                gr.copy = futures[gr.plan.key].result()
            except Exception as exc:
                errors.append(exc)
                continue
            self.effects.add(
                Kind.copy,
                (gr.plan.array, gr.copy.name),
                f"copy {gr.copy.name} on {gr.plan.array}",
            )
        if errors:
            raise errors[0]
        for gr in self.groups:
            self._attach(gr)

    def _attach(self, gr: GroupRun) -> None:
        g, copy = gr.plan, gr.copy
        assert copy is not None
        tag = self.tag.model_copy(update={"source": f"{g.volume.name}@{g.snapshot.name}"})
        gr.presented = True
        with slots.on_array(g.array):
            p = gr.presentation = at.present_copy(gr.array, copy, g.host_identity, g.protocol)
        shared = f" (through {p.access}, shared with other hosts)" if p.shared_with else ""
        self.effects.add(
            Kind.presentation,
            (g.array, copy.name),
            f"{copy.name} presented over {g.protocol} to {g.host}{shared}",
        )
        if p.shared_with:
            self.log.warning(
                "%s exports %s through %s, which also holds %s: those hosts see the copy "
                "too; it is cleaned up on every host that sees it",
                g.array,
                copy.name,
                p.access,
                ", ".join(p.shared_with),
            )
        if g.protocol == "nfs":
            gr.copy = copy = copy.model_copy(update={"nfs_path": p.nfs_path})
            with slots.on_host(g.host):
                gr.datastore = vt.mount_nfs(
                    self.vc, g.host, p.nfs_server or "", p.nfs_path or "", g.mount_name, tag
                )
        else:
            if g.protocol == "iscsi":
                with slots.on_host(g.host):
                    added = vt.ensure_static_targets(self.vc, g.host, p.iscsi_targets or g.portals)
                if added:
                    self.effects.add(
                        Kind.static_targets,
                        (g.host,),
                        f"iSCSI static targets added on {g.host} (kept: they may serve other LUNs)",
                        kept=True,
                    )
            gr.rescanned = True
            with slots.on_host(g.host):
                vt.rescan_adapters(self.vc, g.host, g.protocol)
            vt.find_copy_device(self.vc, g.host, copy.naa or "")
            self.effects.add(
                Kind.device,
                (g.host, (copy.naa or "").lower()),
                f"device {copy.naa} on {g.host}",
            )
            with slots.on_host(g.host):
                gr.datastore = vt.resignature_copy(
                    self.vc, g.host, copy.naa or "", g.mount_name, tag
                )
        self.effects.add(
            Kind.datastore,
            (g.host, gr.datastore.moref),
            f"datastore {gr.datastore.name} mounted on {g.host}",
        )

    # ---- the VMs ---------------------------------------------------------------------------

    def restore_vms(self) -> None:
        """Run the operation for every VM, several at a time; a VM's failure is recorded."""
        pending: list[tuple[GroupRun, VmPlan, PrefectFuture]] = []
        copies = self.copies
        for gr in self.groups:
            for vm in gr.plan.vms:
                # the plan and the group hold every VM: quoted, Prefect does not walk them
                # for each VM's task (that made submitting N VMs cost N² of Prefect's time)
                f = restore_vm.submit(
                    self.vc,
                    quote(self.plan),
                    vm,
                    quote(gr.plan),
                    quote(copies),
                    self.tag,
                    self.started_at,
                )
                self.vm_futures.append(f)
                pending.append((gr, vm, f))
        for gr, vm, f in pending:
            try:
                out = f.result()
            except Exception as exc:
                out = getattr(exc, "outcome", None) or VmOutcome(
                    vm=vm.key, host=gr.plan.host, state="failed", error=brief(exc)
                )
            gr.outcomes[vm.key] = out
            if out.kept and out.state.endswith("(still running in vCenter)"):
                gr.busy = f"VM {out.restored_as} is still being moved off it"
            if out.restored_as and out.moref:
                self.effects.add(Kind.vm, (out.moref,), f"VM {out.restored_as}", kept=out.kept)
            if out.original and vm.original:
                self.effects.add(
                    Kind.original, (vm.original,), f"original VM {vm.key}: {out.original}", True
                )
            if out.files:
                self.effects.add(
                    Kind.files,
                    (out.datastore, vm.target_folder or ""),
                    f"files copied to [{out.datastore}] {vm.target_folder}: "
                    + ", ".join(out.files),
                    kept=True,
                )

    def outcomes(self) -> list[VmOutcome]:
        """Return every VM's outcome, in plan order."""
        return [
            gr.outcomes.get(v.key, VmOutcome(vm=v.key)) for gr in self.groups for v in gr.plan.vms
        ]

    def migrate(self, target: str | None = None) -> None:
        """Move the running VMs off the copies (Storage vMotion); they are kept afterwards.

        A VM whose migration fails still runs from the copy (its state says so); one whose
        migration outlives the wait is kept (vCenter goes on moving it) and its copy stays.
        """
        moves = []
        copies = self.copies
        for gr in self.groups:
            for vm in gr.plan.vms:
                out = gr.outcomes.get(vm.key)
                if out is None or out.moref is None or out.state in ("failed", "migrated"):
                    continue  # (a failed migration is asked again with its own state)
                ds = target or vm.target_datastore or vm.datastore
                ref = VmRef(name=out.restored_as or vm.new_name, moref=out.moref)
                with slots.on_host(gr.plan.host):  # Storage vMotion loads the host
                    f = vt.relocate_vm.submit(self.vc, ref, ds, disk_moves(vm, copies, self.plan))
                moves.append((gr, out, ref, ds, f))
        for gr, out, ref, ds, f in moves:
            vm_tag = self.tag.model_copy(update={"datastore": out.datastore})
            try:
                f.result()
            except Exception as exc:
                cause = exc.__cause__ or exc
                if isinstance(exc, TaskStillRunning) or isinstance(cause, TaskStillRunning):
                    self._keep(ref, vm_tag, out)
                    gr.busy = f"VM {ref.name} is still being migrated off it"
                    out.state = "migrating (still running in vCenter)"
                    out.error = (
                        f"the migration of {ref.name} to {ds} outlived the wait and goes on in "
                        f"vCenter; the VM runs and is kept. Once it is on {ds}, run the janitor "
                        f"for restore {self.plan.restore_id} to remove the copy"
                    )
                else:  # it still runs from the copy
                    out.state = MIGRATION_FAILED
                    out.error = f"migration to {ds} failed: {brief(exc)}"
                continue
            self._keep(ref, vm_tag, out)
            out.state, out.datastore = "migrated", ds
            self.effects.add(Kind.vm_moved, (ref.moref,), f"VM {ref.name} moved to {ds}", True)

    def _keep(self, ref: VmRef, vm_tag: CopyTag, out: VmOutcome) -> None:
        """Mark a VM the user keeps, in its tag (for the janitor) and in the report."""
        try:
            vt.mark_kept(self.vc, ref, vm_tag)
        except Exception as exc:  # the VM is kept all the same; the janitor spares moved VMs
            self.log.error("could not mark %s kept in its tag: %s", ref.name, brief(exc))
        out.kept = True
        self.effects.keep(Kind.vm, (ref.moref,))

    def keep_running(self, reason: str) -> None:
        """Keep the VMs whose migration failed (they still run from a copy): they are marked
        kept and their copies stay, for the user to migrate and then sweep."""
        for gr in self.groups:
            for out in gr.outcomes.values():
                if out.moref and out.state == MIGRATION_FAILED and out.restored_as:
                    ref = VmRef(name=out.restored_as, moref=out.moref)
                    self._keep(ref, self.tag.model_copy(update={"datastore": out.datastore}), out)
                    gr.busy = f"VM {out.restored_as} runs from it ({reason})"

    # ---- teardown ---------------------------------------------------------------------------

    def teardown(self) -> list[str]:
        """Undo everything on the copies in the safe order, on every host that sees them;
        return what could not be undone (or stays on purpose, with what to do)."""
        deadline = time.monotonic() + 20
        for f in self.copy_futures + self.vm_futures:  # on cancellation, let steps end first
            f.wait(timeout=max(0.0, deadline - time.monotonic()))
        left: list[str] = []
        found: list[GroupRun] = []
        for gr in self.groups:
            if gr.copy is None and gr.copy_requested:
                try:
                    gr.copy = self._created_anyway(gr)
                except Exception as exc:
                    name = self._copy_name(gr)
                    left.append(
                        f"perhaps copy {name} on {gr.plan.array} (could not check: {brief(exc)})"
                    )
                    continue
            if gr.copy is not None:
                found.append(gr)
        # groups with VMs first: a VM with disks on several copies goes with its own copy
        for gr in sorted(found, key=lambda gr: not gr.plan.vms):
            left += self._teardown(gr)
        return left

    def _survey(self, gr: GroupRun) -> sweep.Footprint | None:
        """Where the copy is in use in vCenter now, or None if vCenter cannot be read."""
        assert gr.copy is not None
        nfs = {}
        if gr.presentation is not None and gr.presentation.nfs_server:
            nfs[gr.plan.array] = [gr.presentation.nfs_server]
        try:
            survey = jt.survey_vcenter(self.vc, [gr.copy], nfs)
        except Exception as exc:
            self.log.error("cannot read where %s is in use: %s", gr.copy.name, brief(exc))
            return None
        return survey.footprints[sweep.footprint_key(gr.copy)]

    def _teardown(self, gr: GroupRun) -> list[str]:
        g, copy = gr.plan, gr.copy
        assert copy is not None
        if gr.busy:  # the copy stays for a kept VM; the run's other VMs on it go
            stays = (
                f"copy {copy.name} on {g.array}, mounted on {g.host} ({gr.busy}; once that "
                f"is done, run the janitor for restore {self.plan.restore_id})"
            )
            return [*self._discard_unkept(gr), stays]
        footprint = self._survey(gr) if gr.presented else sweep.Footprint()
        if footprint is None:
            return [
                f"copy {copy.name} on {g.array} and what was made from it (vCenter could not "
                "be read to find every host that sees it: run the janitor for restore "
                f"{self.plan.restore_id} once vCenter answers)"
            ]
        kept = {e.key[0] for e in self.effects.items if e.kind == Kind.vm and e.kept}
        own_vmx = {f"[{gr.datastore.name}] {v.vmx}" for v in g.vms if gr.datastore is not None}
        unit = teardown.copy_unit(
            self.vc,
            gr.array,
            copy,
            footprint,
            own_run=self.plan.restore_id,
            also_rescan=[(g.host, g.protocol)] if gr.rescanned else [],
            kept=kept,
            own_vmx=own_vmx,
        )
        if unit.blocked:
            self.log.error("cannot clean up %s: %s", copy.name, unit.blocked)
            return [f"copy {copy.name} on {g.array} and its datastore ({unit.blocked})"]
        results = teardown.carry_out(unit, log=self.log.error)
        left: list[str] = []
        for r in results:
            s = r.step
            if r.outcome in ("done", "already done"):
                if s.undoes is not None:
                    kind, key = s.undoes
                    self.effects.undone(kind, key, _label(s))
            elif not s.needed:  # housekeeping (a rescan): nothing breaks if it stays undone
                left.append(_leftover(s))
            elif r.outcome == "FAILED":
                left.append(f"{_label(s)} ({r.detail})")
            elif r.outcome == "not done":
                left.append(_label(s))
        return left

    def _discard_unkept(self, gr: GroupRun) -> list[str]:
        """Power off and unregister this run's VMs on a copy that must stay (a kept VM
        still runs from it), except the kept ones; return what could not be done."""
        footprint = self._survey(gr)
        if footprint is None:
            return ["this run's other VMs on it (vCenter could not be read)"]
        kept = {e.key[0] for e in self.effects.items if e.kind == Kind.vm and e.kept}
        left = []
        for ds in footprint.datastores:
            for vm in ds.vms:
                ours = vm.tag is not None and vm.tag.run == self.plan.restore_id
                if not ours or vm.tag.kept or vm.moref in kept:  # type: ignore[union-attr]
                    continue
                try:
                    teardown.discard_vm(self.vc, vm)
                    self.effects.undone(Kind.vm, (vm.moref,), f"VM {vm.name}")
                except Exception as exc:
                    left.append(f"VM {vm.name} on {vm.host} ({brief(exc)})")
        return left

    def _copy_name(self, gr: GroupRun) -> str:
        g = gr.plan
        return at.copy_name_for(gr.array, g.volume, g.snapshot, self.plan.restore_id, self.attempt)

    def _created_anyway(self, gr: GroupRun) -> SnapshotCopy | None:
        """Return this run's copy for the group if the array made it although the copy
        step failed (a timeout, or cancellation, after the create call), else None."""
        g = gr.plan
        found = at.find_copy(gr.array, self._copy_name(gr))  # a read: no slot
        if found is None or found.tag is None or found.tag.run != self.plan.restore_id:
            return None
        self.effects.add(Kind.copy, (g.array, found.name), f"copy {found.name} on {g.array}")
        return found

    # ---- report -----------------------------------------------------------------------------

    def publish(self, decision: str | None, leftovers: list[str]) -> dict[str, Any]:
        """Publish the run's artifacts and return its summary."""
        rows = [
            {
                "VM": o.vm,
                "restored as": o.restored_as or "",
                "host": o.host,
                "datastore": o.datastore,
                "state": o.state if not o.error else f"{o.state}: {o.error}",
                "power-on after (s)": ""
                if o.seconds_to_power_on is None
                else o.seconds_to_power_on,
                "notes": "; ".join(o.notes),
            }
            for o in self.outcomes()
        ]
        create_table_artifact(key="restore-vms", table=rows, description="The restored VMs")
        create_table_artifact(
            key="restore-side-effects",
            table=self.effects.table(),
            description="Everything this restore created, and whether it was undone",
        )
        lines = [
            f"## Restore `{self.plan.restore_id}`: {self.req.operation.value}",
            "",
            *(
                f"- **{g.plan.array}** `{g.plan.volume.name}@{g.plan.snapshot.name}` → copy "
                f"`{g.copy.name if g.copy else '-'}` on **{g.plan.host}** over {g.plan.protocol}"
                for g in self.groups
            ),
            f"- finished with: {decision}" if decision else "",
            "",
            f"**Left behind:** {', '.join(leftovers)}" if leftovers else "Nothing was left behind.",
            *(
                ["", "**Kept on purpose:** " + "; ".join(kept)]
                if (kept := self.effects.kept())
                else []
            ),
        ]
        create_markdown_artifact(key="restore-report", markdown="\n".join(lines))
        return {
            "restore_id": self.plan.restore_id,
            "started_at": self.started_at,  # seconds since the epoch; VM times count from it
            "finished_with": decision,
            "vms": [o.model_dump() for o in self.outcomes()],
            "side_effects": self.effects.table(),
            "left_behind": leftovers,
        }


def _label(s: teardown.Step) -> str:
    """A teardown step's object, as a leftover or a side effect names it."""
    if s.kind == "VM":
        return f"VM {s.object} on {s.where}"
    if s.kind == "datastore":
        return f"datastore {s.object} mounted on {s.where}"
    if s.kind == "device":
        return f"device {s.object} attached on {s.where}"
    if s.action.startswith("withdraw"):
        return f"copy {s.object} presented to hosts by {s.where}"
    return f"copy {s.object} on {s.where}"


def _leftover(s: teardown.Step) -> str:
    """What a failed housekeeping step leaves (nothing that breaks a host)."""
    return f"a stale entry for {s.object} on {s.where} (rescan its adapters)"
