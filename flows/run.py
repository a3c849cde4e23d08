"""Carrying out a restore plan: attach the copies, restore the VMs, finish, tear down.

:class:`Restore` holds what one run created, so that :meth:`Restore.teardown` can undo
it in the safe order on every exit path (DESIGN §1.6, §5).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prefect import get_run_logger, tags, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.futures import PrefectFuture
from prefect.runtime import flow_run
from pydantic import BaseModel

from blocks.arrays import StorageArray
from blocks.errors import brief
from blocks.models import CopyTag, Presentation, SnapshotCopy
from blocks.vcenter import VCenterCredentials
from flows.params import NetworkMode, Operation
from flows.plan import GroupPlan, RestorePlan, RestoreRequest, VmPlan, aside_name
from tasks import array_tasks as at
from tasks import vsphere_tasks as vt
from tasks.retry import step_options
from tasks.vsphere import VSphereError
from tasks.vsphere_tasks import DatastoreRef, VmRef


@dataclass
class Effect:
    """A side effect of the run, and whether it was undone (or is meant to stay)."""

    what: str
    object: str
    undone: bool = False
    kept: bool = False


class Effects:
    """The run's side effects, in the order they happened (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.items: list[Effect] = []

    def add(self, what: str, obj: str, kept: bool = False) -> Effect:
        """Record a side effect."""
        with self._lock:
            e = Effect(what, obj, kept=kept)
            self.items.append(e)
            return e

    def undone(self, what: str, obj: str) -> None:
        """Mark the matching side effects undone (adding one if it was not recorded)."""
        with self._lock:
            matched = [e for e in self.items if e.what == what and e.object == obj]
            if not matched:
                matched = [Effect(what, obj)]
                self.items.extend(matched)
            for e in matched:
                e.undone = True

    def keep(self, what: str, obj: str) -> None:
        """Mark the matching side effects as meant to stay (a VM migrated to production)."""
        with self._lock:
            for e in self.items:
                if e.what == what and e.object == obj:
                    e.kept = True

    def table(self) -> list[dict[str, str]]:
        """Return the side effects as artifact rows."""
        with self._lock:
            return [
                {
                    "side effect": e.what,
                    "object": e.object,
                    "undone": "kept" if e.kept else ("yes" if e.undone else "NO"),
                }
                for e in self.items
            ]

    def kept(self) -> list[str]:
        """Return what was done and is meant to stay (restored VMs, copied files)."""
        with self._lock:
            return [f"{e.what} {e.object}" for e in self.items if e.kept]

    def left(self) -> list[str]:
        """Return what was done and neither undone nor meant to stay."""
        with self._lock:
            return [f"{e.what} {e.object}" for e in self.items if not e.undone and not e.kept]


class VmOutcome(BaseModel):
    """What happened to one VM."""

    vm: str
    restored_as: str | None = None
    host: str = ""
    datastore: str = ""
    state: str = "planned"
    seconds_to_power_on: float | None = None
    tools: str | None = None
    ip: str | None = None
    files: list[str] = []
    moref: str | None = None
    kept: bool = False
    original: str | None = None  # what became of the original VM this run replaced
    error: str | None = None


class VmRestoreFailed(Exception):
    """One VM's restore failed; ``outcome`` says how far it got and what it left."""

    def __init__(self, message: str, outcome: VmOutcome | None = None):
        super().__init__(message)
        self.outcome = outcome


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
    outcomes: dict[str, VmOutcome] = field(default_factory=dict)

    @property
    def block(self) -> bool:
        return self.plan.protocol != "nfs"


def current_run_id() -> str:
    """Return the id of the flow run in progress (a fresh uuid outside of one); it names
    and tags everything the run creates."""
    return str(flow_run.get_id() or uuid.uuid4())


class RestoreError(Exception):
    """The restore did not fully succeed; the message says what failed and what is left."""


@task(**step_options("restore {vm.name} as {vm.new_name}", retries=0))
def restore_vm(
    vcenter: VCenterCredentials,
    request: RestoreRequest,
    vm: VmPlan,
    group: GroupPlan,
    datastore: DatastoreRef,
    tag: CopyTag,
    started_at: float,
) -> VmOutcome:
    """Carry out the operation for one VM from the mounted copy."""
    # The host's concurrency limit applies to each vSphere step, not to this wrapper: a
    # wrapper holding a slot while its own steps wait for one deadlocks at the limit.
    out = VmOutcome(vm=vm.name, host=group.host, datastore=datastore.name)
    try:
        with tags(f"esxi-{group.host}"):
            running = _restore_vm(vcenter, request, vm, group, datastore, tag, started_at, out)
        if running is not None:  # waiting for the guest is no work for the host: no slot
            seen = vt.wait_for_tools(vcenter, running, want_ip=False)
            out.tools, out.ip = seen["tools"], seen["ip"]
            if request.operation == Operation.instant_recovery:
                out.state = "verified"
    except Exception as exc:
        out.state, out.error = "failed", brief(exc)
        raise VmRestoreFailed(out.error, out) from exc
    return out


def _restore_vm(
    vcenter: VCenterCredentials,
    request: RestoreRequest,
    vm: VmPlan,
    group: GroupPlan,
    datastore: DatastoreRef,
    tag: CopyTag,
    started_at: float,
    out: VmOutcome,
) -> VmRef | None:
    """Restore one VM, recording each step's result in ``out`` as it happens; return it
    if it was powered on."""
    if request.operation == Operation.vm_files:
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
    ref = vt.register_vm(vcenter, group.host, datastore.name, vm.vmx, vm.new_name, tag)
    out.restored_as, out.moref, out.state = ref.name, ref.moref, "registered"
    if request.network == NetworkMode.disconnected:
        vt.disconnect_nics(vcenter, ref)
    answer = "copied"
    if request.operation == Operation.full_restore:
        vt.relocate_vm(vcenter, ref, vm.target_datastore or vm.datastore)
        out.datastore, out.kept, out.state = vm.target_datastore or vm.datastore, True, "restored"
        if request.replace_original and vm.original:
            ref = _replace_original(vcenter, vm, ref, out)
            answer = "moved"
    if request.power_on:
        vt.power_on_vm(vcenter, ref, answer)
        out.seconds_to_power_on = round(time.time() - started_at, 2)
        out.state = (
            "running" if request.operation == Operation.instant_recovery else "restored, running"
        )
        return ref
    return None


def _replace_original(
    vcenter: VCenterCredentials, vm: VmPlan, restored: VmRef, out: VmOutcome
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
        self.tag = CopyTag(run=plan.restore_id)
        self.vm_futures: list[PrefectFuture] = []
        self.copy_futures: list[PrefectFuture] = []
        self.log = get_run_logger()

    # ---- attach ---------------------------------------------------------------------------

    def attach(self) -> None:
        """Create the copies (one per group, shared by its VMs), present and mount them."""
        futures: dict[str, list[PrefectFuture]] = {}
        for gr in self.groups:
            g = gr.plan
            gr.copy_requested = True
            with tags(f"array-{g.array}"):
                futures[g.key] = [
                    at.create_snapshot_copy.submit(
                        gr.array, g.volume, g.snapshot, self.plan.restore_id
                    )
                    for _ in g.vms or [None]  # a group with no VM (a catalog) still needs one
                ]
            self.copy_futures += futures[g.key]
        errors = []
        for gr in self.groups:
            for f in futures[gr.plan.key]:
                f.wait()
            for f in futures[gr.plan.key]:
                try:
                    copy = f.result()
                except Exception as exc:
                    errors.append(exc)
                    continue
                if gr.copy is None:
                    gr.copy = copy
                    self.effects.add(f"copy on {gr.plan.array}", copy.name)
                elif copy.name != gr.copy.name:
                    raise RestoreError(f"two copies for one snapshot: {gr.copy.name}, {copy.name}")
        if errors:
            raise errors[0]
        for gr in self.groups:
            self._attach(gr)

    def _attach(self, gr: GroupRun) -> None:
        g, copy = gr.plan, gr.copy
        assert copy is not None
        tag = self.tag.model_copy(update={"source": f"{g.volume.name}@{g.snapshot.name}"})
        with tags(f"array-{g.array}", f"esxi-{g.host}"):
            gr.presented = True
            gr.presentation = at.present_copy(gr.array, copy, g.host_identity, g.protocol)
            self.effects.add(f"presented over {g.protocol} to {g.host}", copy.name)
            p = gr.presentation
            if g.protocol == "nfs":
                gr.datastore = vt.mount_nfs(
                    self.vc, g.host, p.nfs_server or "", p.nfs_path or "", g.mount_name, tag
                )
            else:
                if g.protocol == "iscsi":
                    added = vt.ensure_static_targets(self.vc, g.host, p.iscsi_targets or g.portals)
                    if added:
                        self.effects.add(
                            "iSCSI static targets added (kept: they may serve other LUNs)",
                            g.host,
                            kept=True,
                        )
                gr.rescanned = True
                vt.rescan_adapters(self.vc, g.host, g.protocol)
                vt.find_copy_device(self.vc, g.host, copy.naa or "")
                gr.datastore = vt.resignature_copy(
                    self.vc, g.host, copy.naa or "", g.mount_name, tag
                )
            self.effects.add(f"datastore mounted on {g.host}", gr.datastore.name)

    # ---- the VMs ---------------------------------------------------------------------------

    def restore_vms(self) -> None:
        """Run the operation for every VM, several at a time; a VM's failure is recorded."""
        pending: list[tuple[GroupRun, VmPlan, PrefectFuture]] = []
        for gr in self.groups:
            assert gr.datastore is not None
            for vm in gr.plan.vms:
                f = restore_vm.submit(
                    self.vc, self.req, vm, gr.plan, gr.datastore, self.tag, self.started_at
                )
                self.vm_futures.append(f)
                pending.append((gr, vm, f))
        for gr, vm, f in pending:
            try:
                out = f.result()
            except Exception as exc:
                out = getattr(exc, "outcome", None) or VmOutcome(
                    vm=vm.name, host=gr.plan.host, state="failed", error=brief(exc)
                )
            gr.outcomes[vm.name] = out
            if out.restored_as:
                self.effects.add("VM registered", out.restored_as, kept=out.kept)
            if out.original:
                self.effects.add(f"original VM {out.original}", vm.name, kept=True)
            if out.files:
                self.effects.add(
                    f"files copied to [{out.datastore}] {vm.target_folder}",
                    ", ".join(out.files),
                    kept=True,
                )

    def outcomes(self) -> list[VmOutcome]:
        """Return every VM's outcome, in plan order."""
        return [
            gr.outcomes.get(v.name, VmOutcome(vm=v.name)) for gr in self.groups for v in gr.plan.vms
        ]

    def migrate(self, target: str | None = None) -> None:
        """Move the running VMs off the copy (Storage vMotion); they are kept afterwards."""
        moves = []
        for gr in self.groups:
            for vm in gr.plan.vms:
                out = gr.outcomes.get(vm.name)
                if out is None or out.moref is None or out.state in ("failed", "migrated"):
                    continue
                ds = target or vm.target_datastore or vm.datastore
                ref = VmRef(name=out.restored_as or vm.new_name, moref=out.moref)
                moves.append((out, ds, vt.relocate_vm.submit(self.vc, ref, ds)))
        for out, ds, f in moves:
            try:
                f.result()
                out.state, out.datastore, out.kept = "migrated", ds, True
                self.effects.keep("VM registered", out.restored_as or out.vm)
                self.effects.add(f"VM moved to {ds}", out.restored_as or out.vm, kept=True)
            except Exception as exc:
                out.state, out.error = "failed", f"migration to {ds} failed: {brief(exc)}"

    # ---- teardown ---------------------------------------------------------------------------

    def teardown(self) -> list[str]:
        """Undo everything on the copies in the safe order; return what could not be undone."""
        deadline = time.monotonic() + 20
        for f in self.copy_futures + self.vm_futures:  # on cancellation, let steps end first
            f.wait(timeout=max(0.0, deadline - time.monotonic()))
        left: list[str] = []
        for gr in reversed(self.groups):
            left += self._teardown(gr)
        return left

    def _teardown(self, gr: GroupRun) -> list[str]:
        if gr.copy is None and gr.copy_requested:
            try:
                gr.copy = self._created_anyway(gr)
            except Exception as exc:
                name = gr.array.copy_name(
                    self.plan.restore_id, at.copy_key(gr.plan.volume, gr.plan.snapshot)
                )
                return [f"perhaps copy {name} on {gr.plan.array} (could not check: {brief(exc)})"]
        g, copy, vc = gr.plan, gr.copy, self.vc
        if copy is None:
            return []
        # (what is left if the step fails, the step, whether later steps depend on it)
        steps: list[tuple[str, Callable[[], Any], bool]] = []
        if gr.presented:
            nfs = None
            if gr.presentation and gr.presentation.nfs_server:
                nfs = (gr.presentation.nfs_server, gr.presentation.nfs_path or "")
            steps.append(
                (
                    f"VMs and datastores from {copy.name} on {g.host}",
                    lambda: self._unmount(gr, nfs),
                    True,
                )
            )
            if gr.block:
                steps.append(
                    (
                        f"device {copy.naa} attached on {g.host}",
                        lambda: vt.detach_lun(vc, g.host, copy.naa or ""),
                        True,
                    )
                )
            steps.append(
                (
                    f"copy {copy.name} presented to {g.host}",
                    self._undoing(
                        f"presented over {g.protocol} to {g.host}",
                        copy.name,
                        lambda: at.unpresent_copy(gr.array, copy, g.host_identity, g.protocol),
                    ),
                    True,
                )
            )
            if gr.block and gr.rescanned:
                # housekeeping: the withdrawn device leaves the host's list; deleting the
                # copy does not depend on it
                steps.append(
                    (
                        f"a stale entry for {copy.naa} on {g.host} (rescan its adapters)",
                        lambda: vt.rescan_adapters(vc, g.host, g.protocol),
                        False,
                    )
                )
        steps.append(
            (
                f"copy {copy.name} on {g.array}",
                self._undoing(
                    f"copy on {g.array}", copy.name, lambda: at.delete_copy(gr.array, copy)
                ),
                True,
            )
        )
        left: list[str] = []
        for i, (what, step, needed) in enumerate(steps):
            try:
                with tags(f"array-{g.array}", f"esxi-{g.host}"):
                    step()
            except Exception as exc:
                self.log.error("cleanup step for %r failed: %s", what, exc)
                if needed:
                    return left + [f"{what} ({brief(exc)})"] + [s[0] for s in steps[i + 1 :]]
                left.append(what)
        return left

    def _created_anyway(self, gr: GroupRun) -> SnapshotCopy | None:
        """Return this run's copy for the group if the array made it although the copy
        step failed (a timeout, or cancellation, after the create call), else None."""
        g = gr.plan
        name = gr.array.copy_name(self.plan.restore_id, at.copy_key(g.volume, g.snapshot))
        with tags(f"array-{g.array}"):
            found = at.find_copy(gr.array, name)
        if found is None or found.tag is None or found.tag.run != self.plan.restore_id:
            return None
        self.effects.add(f"copy on {g.array}", found.name)
        return found

    def _undoing(self, what: str, obj: str, step: Callable[[], Any]) -> Callable[[], None]:
        """Return ``step`` followed by marking the side effect ``what obj`` undone."""

        def run() -> None:
            step()
            self.effects.undone(what, obj)

        return run

    def _unmount(self, gr: GroupRun, nfs: tuple[str, str] | None) -> None:
        g, copy = gr.plan, gr.copy
        assert copy is not None
        found = vt.find_copy_datastores(self.vc, g.host, copy.naa if gr.block else None, nfs)
        for ds in found:
            users = vt.vms_using_datastore(self.vc, ds)
            others = [u.name for u in users if not (u.lives_on and u.run == self.tag.run)]
            if others:  # never power off or unregister a VM this run did not restore
                raise RestoreError(
                    f"VM(s) {', '.join(others)} use datastore {ds.name} (the copy) but were not "
                    f"restored by this run: remove their disks on it or move them off it, "
                    f"then run the janitor for restore {self.tag.run}"
                )
            for vm in users:
                vt.power_off_vm(self.vc, vm)
                vt.unregister_vm(self.vc, vm)
                self.effects.undone("VM registered", vm.name)
            if ds.kind == "vmfs":
                vt.unmount_vmfs(self.vc, g.host, ds)
            else:
                vt.remove_nas_datastore(self.vc, g.host, ds)
            self.effects.undone(f"datastore mounted on {g.host}", ds.name)

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
            "finished_with": decision,
            "vms": [o.model_dump() for o in self.outcomes()],
            "side_effects": self.effects.table(),
            "left_behind": leftovers,
        }
