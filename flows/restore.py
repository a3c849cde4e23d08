"""The ``restore-from-snapshot`` flow: restore VMs from an array snapshot, then clean up."""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import Field
from pyVmomi import vmodl

from blocks.arrays import StorageArray
from blocks.errors import ArrayError, brief
from blocks.registry import load_arrays
from blocks.settings import settings
from blocks.vcenter import VCenterCredentials
from flows.identity import current_run_id
from flows.params import (
    Decision,
    FileOptions,
    Finish,
    FinishOptions,
    NetworkOptions,
    Operation,
    PlacementOptions,
    SourceOptions,
)
from flows.plan import (
    AS_TASKS,
    PlanError,
    RestorePlan,
    RestoreRequest,
    make_plan,
    migration_target_problem,
)
from flows.run import MIGRATION_FAILED, Restore, RestoreError
from tasks import vsphere as vs
from tasks.retry import StepError, is_transport, step


class InstantRecoveryDecision(RunInput):
    """What to do with VMs running from a snapshot copy."""

    action: Decision = Field(
        default=Decision.stop,
        description="migrate: move the VMs to production storage and keep them; "
        "stop: power them off and remove the copy",
    )
    migrate_to: str | None = Field(
        default=None, description="Datastore to migrate to (default: each VM's original)"
    )


@step("plan the restore of {request.vms}")
def plan_restore(
    vcenter: VCenterCredentials,
    arrays: list[StorageArray],
    request: RestoreRequest,
    restore_id: str,
    unusable: dict[str, str] | None = None,
) -> RestorePlan:
    """Resolve and validate the whole request; nothing is created anywhere. ``unusable``:
    saved arrays that cannot be used (a problem only if the restore needs one of them)."""
    return make_plan(vcenter.connect(), arrays, request, restore_id, AS_TASKS, unusable)


def warn_insecure(vcenter: VCenterCredentials, arrays: list[StorageArray]) -> None:
    """Say in the run's log which blocks have TLS verification turned off."""
    off = [f"vCenter block {vcenter._block_document_name or vcenter.host}"] * (
        not vcenter.verify_tls
    )
    off += [f"array block {a.name}" for a in arrays if not a.verify_tls]
    if off:
        get_run_logger().warning(
            "TLS certificate verification is OFF (verify_tls=false) for %s: credentials can "
            "be intercepted; set ca_certificate instead",
            ", ".join(off),
        )


def load_blocks(
    vcenter: str, arrays: list[str] | None
) -> tuple[VCenterCredentials, list[StorageArray], dict[str, str]]:
    """Load the vCenter and array blocks a run uses, saying which are not saved; return
    them and the saved array blocks that cannot be used (left out, with why)."""
    try:
        vc = VCenterCredentials.load(vcenter)
    except ValueError as exc:
        raise PlanError([f"vCenter block '{vcenter}' not found: {brief(exc)}"]) from exc
    unusable: dict[str, str] = {}
    array_blocks = load_arrays(arrays, unusable)
    warn_insecure(vc, array_blocks)
    return vc, array_blocks, unusable


def build_request(
    vms: list[str],
    snapshot: str,
    operation: Operation,
    source: SourceOptions,
    placement: PlacementOptions,
    network: NetworkOptions,
    finish: FinishOptions,
    files: FileOptions,
) -> RestoreRequest:
    """Return the flat request the planner checks, from the flow's sections."""
    return RestoreRequest(
        vms=vms,
        snapshot=snapshot,
        operation=operation,
        datastore=source.datastore,
        other_disks=source.other_disks,
        snapshot_tolerance_minutes=source.snapshot_tolerance_minutes,
        target_host=placement.target_host,
        protocol=placement.protocol,
        vm_folder=placement.vm_folder,
        resource_pool=placement.resource_pool,
        name_suffix=placement.name_suffix,
        network=network.mode,
        network_map=network.map,
        power_on=network.power_on,
        verify=network.verify,
        finish=finish.action,
        migrate_to=finish.migrate_to,
        replace_original=finish.replace_original,
        files=files.patterns,
        target_datastore=files.target_datastore,
        target_folder=files.target_folder,
    )


@flow(
    name="restore-from-snapshot",
    task_runner=ThreadPoolTaskRunner(max_workers=settings().max_parallel_vms),
    log_prints=True,
)
def restore_from_snapshot(
    vms: list[str],
    snapshot: str = "latest",
    operation: Operation = Operation.instant_recovery,
    source: SourceOptions = SourceOptions(),  # noqa: B008 (a frozen default, never mutated)
    placement: PlacementOptions = PlacementOptions(),  # noqa: B008
    network: NetworkOptions = NetworkOptions(),  # noqa: B008
    finish: FinishOptions = FinishOptions(),  # noqa: B008
    files: FileOptions = FileOptions(),  # noqa: B008
    vcenter: str = "default",
    arrays: list[str] | None = None,
) -> dict[str, Any]:
    """Restore VMs from a storage-array snapshot through a read-write copy of it.

    The copy is presented to one ESXi host, the VMs are restored from it, and everything
    created is undone and deleted on every exit path, on every host that sees the copy.
    Every disk is accounted for before anything is created: disks on other datastores and
    RDMs are refused unless `source.other_disks` says otherwise, and a restored VM never
    opens a production file. By default a VM whose original runs starts with its NICs
    disconnected.

    Args:
        vms: The VMs to restore: names, or inventory paths (`team-a/dup-01`) when a name
            is not unique.
        snapshot: A snapshot name, `latest`, or `latest-before:<ISO 8601 time>`.
        operation: instant_recovery (run the VMs from the copy), full_restore (copy them
            back to production storage) or vm_files (copy chosen files out).
        source: What to restore: the datastore of VMs no longer in the inventory, disks
            on other datastores and RDMs (other_disks), the snapshot tolerance.
        placement: Where: the ESXi host, the protocol, the VM folder and resource pool,
            the restored VMs' name suffix.
        network: Network and verification: NICs (mode auto, keep, disconnected, or map
            with its map), power on, and what a VM must show (tools or power_on).
        finish: How it ends: stop, migrate or wait_for_user (instant recovery), the
            migration target, replace_original (full restore).
        files: VM files restore: the file patterns, the target datastore and folder.
        vcenter: Name of the vCenter Credentials block.
        arrays: Names of the array blocks to use (default: every saved array block).
    """
    log = get_run_logger()
    started_at = time.time()
    restore_id = current_run_id()
    request = build_request(vms, snapshot, operation, source, placement, network, finish, files)
    vc, array_blocks, unusable = load_blocks(vcenter, arrays)
    plan = plan_restore(vc, array_blocks, request, restore_id, unusable)
    create_markdown_artifact(key="restore-plan", markdown=plan.summary())
    for name, why in plan.unreachable.items():
        log.warning("array %s cannot be reached (%s); this restore does not need it", name, why)

    run = Restore(plan, vc, {a.name: a for a in array_blocks}, started_at)
    decision: str | None = None
    failure: BaseException | None = None
    leftovers: list[str] = []
    try:
        run.attach()
        run.restore_vms()
        if operation == Operation.instant_recovery:
            decision = _finish(run, finish.action, restore_id)
    except Exception as exc:
        failure = exc
        raise RestoreError(_one_line(exc)) from exc
    except BaseException as exc:  # cancellation, interrupts: Prefect's own, re-raised as they are
        failure = exc
        raise
    finally:
        leftovers = run.teardown()
        result = run.publish(decision, leftovers)
        if leftovers:
            msg = "cleanup could not finish; still there: " + "; ".join(leftovers)
            if kept := run.effects.kept():
                msg += "; kept on purpose: " + "; ".join(kept)
            log.error(msg)
            if failure is None:
                failed = [o for o in run.outcomes() if o.error]
                if failed:  # what went wrong first, then what it left
                    msg = _vm_failures(failed) + "; " + msg
                raise RestoreError(msg)
            raise RestoreError(f"{_one_line(failure)}; and {msg}") from failure
    failed = [o for o in run.outcomes() if o.error]
    if failed:
        kept = run.effects.kept()
        raise RestoreError(
            _vm_failures(failed)
            + (f"; kept: {'; '.join(kept)}" if kept else "")
            + " (everything else was cleaned up)"
        )
    return result


def _vm_failures(failed: list) -> str:
    return "restore failed for " + "; ".join(f"{o.vm}: {o.error}" for o in failed)


def _one_line(exc: BaseException) -> str:
    """The failure as the run's state message shows it: one line, the step that failed."""
    if isinstance(exc, RestoreError | PlanError):
        return str(exc)
    if isinstance(exc, StepError | ArrayError | vs.VSphereError | vmodl.MethodFault):
        return brief(exc)
    if is_transport(exc):  # vCenter unreachable before any step (planning connects)
        return f"cannot reach vCenter: {brief(exc)} (check the vCenter block's host and port)"
    # not an error snaprestore raises or expects (a library failing to read a reply, say):
    # its text alone can be as bare as "''"
    return (
        f"unexpected {type(exc).__name__}: {brief(exc)} (a defect in snaprestore or a "
        "library it uses; the run's log has the traceback: please report it)"
    )


def _finish(run: Restore, finish: Finish, restore_id: str) -> str:
    """End an instant recovery as asked; return what was decided."""
    log = get_run_logger()
    if finish == Finish.stop:
        return "stop"
    if finish == Finish.migrate:
        run.migrate()
        failed = [o for o in run.outcomes() if o.state == MIGRATION_FAILED]
        if failed:
            # the user asked to keep them: leave them running from the copy, and say so
            run.keep_running("its automatic migration failed")
            for o in failed:
                o.error = (
                    f"{o.error}; it still runs from the snapshot copy and is kept: move it to "
                    f"production storage (Storage vMotion), then run the janitor for restore "
                    f"{restore_id} to remove the copy"
                )
        return "migrate"
    running = [o for o in run.outcomes() if o.moref and not o.error]
    if not running:
        return "stop (nothing is running)"
    names = ", ".join(o.restored_as or o.vm for o in running)
    hosts = sorted({o.host for o in running})
    problem, action, target = "", Decision.stop, None
    failed_migrations: list[str] = []  # kept for the report if the user then stops
    attempt = 0
    while True:
        attempt += 1
        try:
            decision = pause_flow_run(
                wait_for_input=InstantRecoveryDecision.with_initial_data(
                    description=(
                        (f"**Not done: {problem}.** Choose again.\n\n" if problem else "")
                        + f"**Instant recovery** — {names} run from a snapshot copy.\n\n"
                        "Choose **migrate** to move them to production storage and keep them, "
                        "or **stop** to power them off and remove the copy."
                    ),
                    action=action,
                    migrate_to=target,
                ),
                timeout=settings().pause_timeout_s,  # each question gets the full time
                poll_interval=2,
                key=f"ir-{restore_id[:8]}-{attempt}",  # a pause key fires only once
            )
        except FlowPauseTimeout:
            log.warning(
                "no decision within %ss: stopping the instant recovery",
                settings().pause_timeout_s,
            )
            return _after("stop (no decision in time)", failed_migrations)
        if decision.action != Decision.migrate:
            return _after("stop", failed_migrations)
        action, target = decision.action, decision.migrate_to
        problem = _migration_problem(run, target, hosts) if target else ""
        if problem:
            log.error("cannot migrate: %s; pausing again for a decision", problem)
            continue
        run.migrate(target)
        failed = [o for o in running if o.state == MIGRATION_FAILED]
        if not failed:
            return _after("migrate", failed_migrations)
        # they still run from the copy: ask again rather than tear them down
        problem = "; ".join(f"{o.restored_as}: {o.error}" for o in failed)
        failed_migrations.append(problem)
        log.error("%s; pausing again for a decision", problem)
        for o in failed:
            o.state, o.error = "running", None
        running = failed
        names = ", ".join(o.restored_as or o.vm for o in running)
        hosts = sorted({o.host for o in running})


def _after(decision: str, failed_migrations: list[str]) -> str:
    """Return ``decision``, saying which migrations failed before it."""
    if not failed_migrations:
        return decision
    return f"{decision}, after a failed migration ({'; '.join(failed_migrations)})"


def _migration_problem(run: Restore, target: str, hosts: list[str]) -> str:
    """Say why the running VMs cannot move to ``target``; never raises (the VMs the user
    chose to keep must not be torn down because a check failed)."""
    try:
        si = run.vc.connect()
        found = (
            migration_target_problem(lambda t, n: vs.find_by_name(si, t, n), target, h)
            for h in hosts
        )
        return next((p for p in found if p), "")
    except Exception as exc:
        return f"could not check datastore '{target}': {brief(exc)}"
