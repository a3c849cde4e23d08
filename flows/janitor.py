"""The ``janitor`` flow: sweep up what crashed restores left on the arrays and in vCenter.

The third layer of the cleanup guarantees (after the run's own teardown and the tags
on everything it makes: see README, "The janitor"). It lists every object that carries
snaprestore's tag — array copies (``StorageArray.list_copies``), and vCenter datastores
and VMs whose ``snaprestore`` custom attribute is a :class:`~blocks.models.CopyTag` —
asks Prefect whether the restore run named in each tag is gone, and undoes what belongs
to gone runs in the restore's own safe order, with the restore's own tasks.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from blocks.arrays import StorageArray
from blocks.errors import brief
from blocks.models import AccessObject, CopyTag, SnapshotCopy
from blocks.registry import load_arrays, saved_array_names
from blocks.vcenter import VCenterCredentials
from flows import slots, teardown
from flows.identity import server_id
from flows.restore import warn_insecure
from flows.teardown import Step, Unit
from tasks import array_tasks as at
from tasks import janitor_tasks as jt
from tasks import sweep
from tasks import vsphere_tasks as vt
from tasks.janitor_tasks import RunStatus

PLANNED = "planned (dry run)"


class JanitorError(Exception):
    """Something the janitor should have cleaned could not be; the message says what."""


@dataclass
class Decision:
    """Whether a tagged object is cleaned, and why (for the report)."""

    clean: bool
    reason: str


def decide(
    tag: CopyTag,
    status: RunStatus | None,
    runs: set[str] | None,
    force: bool,
    ttl: timedelta,
    now: datetime,
    server: str = "",
) -> Decision:
    """Decide about one tagged object from its tag and its run's status.

    Not among ``runs`` (when given): kept. ``force``: cleaned. Owned by another Prefect
    server than ``server`` (the tag says so): kept, and reported. A live run: kept. Younger
    than ``ttl`` (the tag's creation time): kept. Otherwise (a gone run): cleaned.
    """
    if runs is not None and tag.run not in runs:
        return Decision(False, "not among the runs asked for")
    if force:
        return Decision(True, "forced")
    if tag.server and server and tag.server != server:
        return Decision(
            False,
            f"its run belongs to Prefect server {tag.server}, not this one ({server}): run "
            "that server's janitor, or force it here with runs=[...]",
        )
    if status is None or not status.gone:
        return Decision(False, f"its run is alive: {status.reason if status else 'unknown'}")
    age = now - tag.created
    if age < ttl:
        return Decision(False, f"younger than the TTL ({_age(age)} < {_age(ttl)})")
    return Decision(True, status.reason)


def _run_id(text: str) -> str:
    """Return a run id as tags write it (a flow run id's canonical lower-case form)."""
    try:
        return str(uuid.UUID(text.strip()))
    except ValueError:
        return text.strip()


def _age(delta: timedelta) -> str:
    m = int(max(delta.total_seconds(), 0) // 60)
    return f"{m} min" if m < 60 else f"{m // 60} h {m % 60:02d} min"


class Janitor:
    """One janitor run: what was found, what was decided, what was done."""

    def __init__(
        self,
        vc: VCenterCredentials,
        arrays: list[StorageArray],
        *,
        dry_run: bool,
        ttl: timedelta,
        runs: set[str] | None,
        force: bool,
        now: datetime,
        server: str,
        not_asked: list[str] | None = None,
    ):
        self.vc = vc
        self.arrays = {a.name: a for a in arrays}
        self.dry_run = dry_run
        self.ttl = ttl
        self.runs = runs
        self.force = force
        self.now = now
        self.server = server
        self.rows: list[dict[str, str]] = []
        self.failures: list[str] = []
        self.statuses: dict[str, RunStatus] = {}
        self.unlisted: list[str] = []  # arrays whose copies could not be listed
        self.not_asked = not_asked or []  # saved arrays left out by the arrays parameter
        self.log = get_run_logger()

    # ---- rows -------------------------------------------------------------------------------

    def _row(
        self, obj: str, kind: str, where: str, tag: CopyTag | None, action: str, result: str
    ) -> None:
        status = self.statuses.get(tag.run) if tag else None
        self.rows.append(
            {
                "object": obj,
                "kind": kind,
                "array/host": where,
                "run id": tag.run if tag else "",
                "run state": f"{status.state} ({'gone' if status.gone else 'alive'})"
                if status
                else "",
                "age": _age(self.now - tag.created) if tag else "",
                "action": action,
                "result": result,
            }
        )

    def fail(self, obj: str, kind: str, where: str, action: str, exc: BaseException) -> None:
        """Record a step that could not be done."""
        self._row(obj, kind, where, None, action, f"FAILED: {brief(exc)}")
        self.failures.append(f"{action} {kind} {obj} ({where}): {brief(exc)}")
        self.log.error("%s %s %s on %s failed: %s", action, kind, obj, where, brief(exc))

    # ---- find -------------------------------------------------------------------------------

    def list_copies(self) -> tuple[list[tuple[StorageArray, SnapshotCopy]], dict[str, list[str]]]:
        """List every array's tagged copies and its NFS servers; a failing array is reported."""
        found: list[tuple[StorageArray, SnapshotCopy]] = []
        nfs: dict[str, list[str]] = {}
        for name, array in self.arrays.items():
            try:
                with slots.on_array(name):
                    copies = jt.list_tagged_copies(array)
                    if any(c.nfs_path for c in copies):
                        nfs[name] = at.describe_array(array).nfs_servers
            except Exception as exc:
                self.unlisted.append(name)
                self.fail(name, "array", name, "list tagged copies", exc)
                continue
            found += [(array, c) for c in copies]
        return found, nfs

    def list_access(self) -> list[tuple[StorageArray, AccessObject]]:
        """List every listed array's tagged host objects / igroups; a failing array is
        reported (its copies were listed, so it answers: this is rare)."""
        found: list[tuple[StorageArray, AccessObject]] = []
        for name, array in self.arrays.items():
            if name in self.unlisted:
                continue
            try:
                with slots.on_array(name):
                    found += [(array, a) for a in at.list_access(array)]
            except Exception as exc:
                self.fail(name, "array", name, "list tagged host objects and igroups", exc)
        return found

    # ---- plan -------------------------------------------------------------------------------

    def copy_unit(self, array: StorageArray, copy: SnapshotCopy, fp: sweep.Footprint) -> Unit:
        """The steps that remove ``copy`` safely (the restore's own teardown, every host)."""
        return teardown.copy_unit(self.vc, array, copy, fp)

    def datastore_unit(self, ds: sweep.SeenDatastore, devices: list[sweep.HostDevice]) -> Unit:
        """The steps that remove a tagged datastore whose copy is not on any listed array."""
        assert ds.tag is not None
        unit = Unit(what=f"datastore {ds.name}", tag=ds.tag, objects=[])
        if ds.kind == "other":
            unit.objects.append((ds.name, "datastore", ""))
            unit.blocked = "neither VMFS nor NFS: snaprestore never mounts such a datastore"
            return unit
        teardown.datastore_steps(self.vc, unit, [ds], None)
        if ds.accessible and self.unlisted_arrays() and not unit.blocked:
            unit.blocked = (
                "its copy may be on an array this run did not list "
                f"({', '.join(self.unlisted_arrays())}): clean it with that array"
            )
        if ds.naa:
            for d in devices:
                if d.attached:
                    unit.steps.append(
                        Step(
                            ds.naa,
                            "device",
                            d.host,
                            "detach",
                            lambda h=d.host, n=ds.naa: vt.detach_lun(self.vc, h, n),
                            slots.host_tags(d.host),
                        )
                    )
            for d in devices:
                for protocol in d.protocols:
                    unit.steps.append(
                        Step(
                            ds.naa,
                            "device",
                            d.host,
                            f"rescan the {protocol} adapters so the device goes away",
                            lambda h=d.host, p=protocol: vt.rescan_adapters(self.vc, h, p),
                            slots.host_tags(d.host),
                            needed=False,
                        )
                    )
        return unit

    def unlisted_arrays(self) -> list[str]:
        """Arrays whose copies this run does not know: not asked for, or failing to list."""
        return self.unlisted + self.not_asked

    def vm_unit(self, vm: sweep.SeenVm) -> Unit:
        """The steps that remove a tagged VM of no copy: only a restored VM nobody keeps
        whose snapshot-copy datastore is gone (:func:`tasks.sweep.stranded`)."""
        assert vm.tag is not None
        unit = Unit(what=f"VM {vm.name}", tag=vm.tag, objects=[(vm.name, "VM", vm.host or "")])
        if not vm.stranded:
            if vm.tag.kept:
                why = "it is marked kept"
            elif vm.vmx_datastore is None:
                why = "its configuration cannot be read, so where it lives is unknown"
            elif not vm.tag.datastore:
                why = (
                    f"it lives on datastore {vm.vmx_datastore} and its tag (of an older "
                    "version) does not say which copy it was registered from"
                )
            else:
                why = f"it lives on datastore {vm.vmx_datastore}, which is no snaprestore copy"
            unit.blocked = f"{why} (restored and kept, or migrated): it is never touched"
            return unit
        unit.steps.append(
            Step(
                vm.name,
                "VM",
                vm.host or "",
                "power off and unregister (its snapshot copy is gone)",
                lambda: teardown.discard_vm(self.vc, vm),
                (),  # no slot: power-off and unregistration are light
            )
        )
        return unit

    def access_unit(self, array: StorageArray, access: AccessObject) -> Unit | None:
        """The step that removes a tagged host object / igroup nothing is exported through
        (a crash between creating it and exporting a copy); None while it is in use."""
        if access.in_use or access.tag is None:
            return None
        unit = Unit(
            what=f"{access.kind} {access.name} on {array.name}",
            tag=access.tag,
            objects=[(access.name, access.kind, array.name)],
        )
        unit.steps.append(
            Step(
                access.name,
                access.kind,
                array.name,
                "remove (nothing is exported through it)",
                lambda: at.remove_access(array, access),
                slots.array_tags(array.name),
            )
        )
        return unit

    # ---- do ---------------------------------------------------------------------------------

    def carry_out(self, unit: Unit) -> str:
        """Clean (or, in a dry run, report) one unit whose run is gone; return its outcome."""
        decision = decide(
            unit.tag,
            self.statuses.get(unit.tag.run),
            self.runs,
            self.force,
            self.ttl,
            self.now,
            self.server,
        )
        if decision.clean and unit.blocked and unit.stuck:
            result = f"{'would be left' if self.dry_run else 'LEFT'}: {unit.blocked}"
            for obj, kind, where in unit.objects:
                self._row(obj, kind, where, unit.tag, "none: cannot be cleaned", result)
            self.log.error("cannot clean %s: %s", unit.what, unit.blocked)
            if self.dry_run:
                return "planned"
            self.failures.append(f"{unit.what}: {unit.blocked}")
            return "failed"
        if decision.clean and unit.blocked:
            decision = Decision(False, unit.blocked)
        if not decision.clean:
            for obj, kind, where in unit.objects:
                self._row(obj, kind, where, unit.tag, "keep", decision.reason)
            self.log.info("keeping %s: %s", unit.what, decision.reason)
            return "kept"
        self.log.info(
            "%s %s: %s", "would clean" if self.dry_run else "cleaning", unit.what, decision.reason
        )
        results = teardown.carry_out(unit, dry_run=self.dry_run, log=self.log.error)
        for r in results:
            s = r.step
            self._row(s.object, s.kind, s.where, unit.tag, s.action, r.text)
            if r.outcome == "FAILED":
                self.failures.append(f"{s.action} {s.kind} {s.object} ({s.where})")
        if any(r.outcome == "not done" for r in results):
            self.failures.append(f"{unit.what}: the steps after the failure were left undone")
        if any(r.outcome == "FAILED" for r in results):
            return "failed"
        return "planned" if self.dry_run else "cleaned"

    # ---- report -----------------------------------------------------------------------------

    def publish(self, outcomes: list[tuple[str, str]]) -> dict[str, Any]:
        """Publish the report table and summary; return the same data."""
        counts = {
            k: sum(1 for _, o in outcomes if o == k)
            for k in ("cleaned", "planned", "kept", "failed")
        }
        create_table_artifact(
            key="janitor-report",
            table=self.rows
            or [{"object": "", "action": "nothing tagged by snaprestore was found", "result": ""}],
            description="What the janitor found and did"
            + (" (dry run: nothing was changed)" if self.dry_run else ""),
        )
        lines = [
            f"## Janitor{' (dry run)' if self.dry_run else ''}",
            "",
            f"- {len(outcomes)} group(s) of tagged objects: "
            + ", ".join(f"{n} {k}" for k, n in counts.items()),
            *(
                f"- run `{r}`: **{'gone' if s.gone else 'alive'}** — {s.reason}"
                for r, s in sorted(self.statuses.items())
            ),
            "",
        ]
        if self.failures:
            lines += ["**Could not be cleaned:**", "", *(f"- {f}" for f in self.failures)]
        elif self.dry_run:
            lines.append("Dry run: nothing was changed.")
        else:
            lines.append("Everything decided for cleanup was cleaned.")
        create_markdown_artifact(key="janitor-summary", markdown="\n".join(lines))
        return {
            "dry_run": self.dry_run,
            "runs": {r: s.model_dump(mode="json") for r, s in self.statuses.items()},
            "units": [{"what": w, "outcome": o} for w, o in outcomes],
            "rows": self.rows,
            "failures": self.failures,
            **counts,
        }


@flow(name="janitor", log_prints=True)
def janitor(
    dry_run: bool = False,
    ttl_minutes: float = 60,
    heartbeat_timeout_minutes: float = 15,
    runs: list[str] | None = None,
    force: bool = False,
    vcenter: str = "default",
    arrays: list[str] | None = None,
) -> dict[str, Any]:
    """Clean up what crashed or killed restore runs left behind, in the safe order.

    Finds every object that carries snaprestore's tag — array copies, and vCenter
    datastores and VMs whose `snaprestore` custom attribute names a restore run — and
    never touches anything untagged, whatever its name. Per run id it asks Prefect
    whether the run is gone: its flow run is COMPLETED, FAILED, CANCELLED or CRASHED, or
    does not exist; or it is in any other state (RUNNING, PENDING, PAUSED, CANCELLING…)
    but has shown no sign of life for longer than `heartbeat_timeout_minutes`. Its last
    sign of life is the newest Prefect event about the flow run (its
    `prefect.flow-run.heartbeat`, sent every 180 s by default, state changes, task runs)
    or its state's time; a pause that has not timed out keeps it alive. For each copy of
    a gone run: the VMs registered on datastores mounted from it are powered off and
    unregistered, the datastores unmounted on every host (VMFS unmount, never
    RemoveDatastore; NFS remove), the device detached on every host, the copy withdrawn
    from every host, the hosts' adapters rescanned, and the copy deleted. Then tagged
    datastores and VMs whose copy is gone (left in All-Paths-Down) are removed the same
    way, and tagged host objects
    and igroups nothing is exported through. A VM marked kept, or whose .vmx is on storage
    that is no snaprestore copy (restored and kept, or migrated), is never touched, whatever
    its connection state: an All-Paths-Down on production never makes the janitor act.
    Objects whose tag names another Prefect server are reported, not swept (unless forced).
    A failing step stops the cleanup of that copy; the run then ends Failed. The report is
    the `janitor-report` table and `janitor-summary` artifacts, and the return value.

    Args:
        dry_run: Only report what would be done; change nothing.
        ttl_minutes: Leave objects younger than this (from their tag's creation time),
            even if their run is gone, unless forced.
        heartbeat_timeout_minutes: A run that is not in a terminal state counts as gone
            after this long without a sign of life (heartbeat or other event). Keep it
            well above the flow-run heartbeat interval (Prefect's default: 180 s); 0 or
            less: never judge a run by its silence.
        runs: Only consider objects of these restore run ids (flow run ids).
        force: Clean the objects of `runs` whatever their runs' state and age. Needs
            `runs`.
        vcenter: Name of the vCenter Credentials block.
        arrays: Names of the array blocks to sweep (default: every saved array block).
    """
    if force and not runs:
        raise ValueError(
            "force=True needs runs: name the restore run ids whose objects must go "
            "whatever their state; the janitor never forces a sweep of everything"
        )
    if ttl_minutes < 0:
        raise ValueError(f"ttl_minutes must be 0 or more, not {ttl_minutes}")
    log = get_run_logger()
    now = datetime.now(UTC)
    vc = VCenterCredentials.load(vcenter)
    unusable: dict[str, str] = {}
    array_blocks = load_arrays(arrays, unusable)
    warn_insecure(vc, array_blocks)
    j = Janitor(
        vc,
        array_blocks,
        dry_run=dry_run,
        ttl=timedelta(minutes=ttl_minutes),
        runs={_run_id(r) for r in runs} if runs else None,
        force=force,
        now=now,
        server=server_id(),
        not_asked=[] if arrays is None else sorted(set(saved_array_names()) - set(arrays)),
    )

    for name, why in unusable.items():  # its copies cannot be listed: like a failing array
        j.unlisted.append(name)
        j.fail(name, "array", name, "load the array block", ValueError(why))
    copies, nfs = j.list_copies()
    outcomes: list[tuple[str, str]] = []
    try:
        # without knowing where each copy is mounted, deleting any would be unsafe
        survey = jt.survey_vcenter(vc, [c for _, c in copies], nfs)
        tagged: list[CopyTag] = [c.tag for _, c in copies if c.tag is not None]
        tagged += [ds.tag for ds in survey.datastores if ds.tag is not None]
        tagged += [vm.tag for vm in survey.vms if vm.tag is not None]
        run_ids = sorted({t.run for t in tagged if j.runs is None or t.run in j.runs})
        if run_ids:
            j.statuses = jt.assess_runs(run_ids, heartbeat_timeout_minutes)
    except Exception as exc:
        j.fail(vcenter, "vCenter/Prefect", vc.host, "find tagged objects and their runs", exc)
    else:
        # tagged datastores of no listed copy first: one a copy unit failed to recognise
        # as its own is then unmounted before that copy is withdrawn, never after
        units = [
            j.datastore_unit(ds, survey.devices.get(ds.naa or "", [])) for ds in survey.datastores
        ]
        units += [
            j.copy_unit(array, copy, survey.footprints[sweep.footprint_key(copy)])
            for array, copy in copies
        ]
        units += [j.vm_unit(vm) for vm in survey.vms]
        outcomes = [(u.what, j.carry_out(u)) for u in units]
        # host objects and igroups last: removing copies may have emptied some
        access = j.list_access()
        more = sorted({a.tag.run for _, a in access if a.tag} - set(j.statuses))
        if j.runs is not None:
            more = [r for r in more if r in j.runs]
        if more:
            j.statuses |= jt.assess_runs(more, heartbeat_timeout_minutes)
        for array, obj in access:
            unit = j.access_unit(array, obj)
            if unit is not None:
                outcomes.append((unit.what, j.carry_out(unit)))
    result = j.publish(outcomes)
    log.info(
        "janitor: %s cleaned, %s planned, %s kept, %s failure(s)",
        result["cleaned"],
        result["planned"],
        result["kept"],
        result["failed"],
    )
    if j.failures:
        raise JanitorError("could not clean: " + "; ".join(j.failures))
    return result
