"""The ``restore-from-snapshot`` flow: restore VMs from an array snapshot, then clean up."""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import Field

from blocks.arrays import StorageArray
from blocks.errors import brief
from blocks.registry import load_arrays
from blocks.settings import settings
from blocks.vcenter import VCenterCredentials
from flows.params import Decision, Finish, NetworkMode, Operation, ProtocolChoice
from flows.plan import (
    AS_TASKS,
    PlanError,
    RestorePlan,
    RestoreRequest,
    make_plan,
    migration_target_problem,
)
from flows.run import Restore, RestoreError, current_run_id
from tasks import vsphere as vs
from tasks.retry import step_options


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


@task(**step_options("plan the restore of {request.vms}"))
def plan_restore(
    vcenter: VCenterCredentials,
    arrays: list[StorageArray],
    request: RestoreRequest,
    restore_id: str,
) -> RestorePlan:
    """Resolve and validate the whole request; nothing is created anywhere."""
    return make_plan(vcenter.connect(), arrays, request, restore_id, AS_TASKS)


@flow(
    name="restore-from-snapshot",
    task_runner=ThreadPoolTaskRunner(max_workers=settings().max_parallel_vms),
    log_prints=True,
)
def restore_from_snapshot(
    vms: list[str],
    snapshot: str = "latest",
    operation: Operation = Operation.instant_recovery,
    datastore: str | None = None,
    target_host: str | None = None,
    protocol: ProtocolChoice = ProtocolChoice.auto,
    power_on: bool = True,
    network: NetworkMode = NetworkMode.keep,
    name_suffix: str | None = None,
    finish: Finish = Finish.stop,
    migrate_to: str | None = None,
    replace_original: bool = False,
    files: list[str] | None = None,
    target_datastore: str | None = None,
    target_folder: str | None = None,
    vcenter: str = "default",
    arrays: list[str] | None = None,
) -> dict[str, Any]:
    """Restore VMs from a storage-array snapshot through a read-write copy of it.

    The copy is presented to one ESXi host, the VMs are restored from it, and everything
    created is undone and deleted on every exit path.

    Args:
        vms: Names of the VMs to restore.
        snapshot: A snapshot name, `latest`, or `latest-before:<ISO 8601 time>`.
        operation: instant_recovery (run the VMs from the copy), full_restore (copy them
            back to production storage) or vm_files (copy chosen files out).
        datastore: Production datastore of VMs that are no longer in the inventory.
        target_host: ESXi host to present the copy to (default, per datastore: the host
            of its first listed VM, else the first connected host by name that can reach
            the array).
        protocol: How the host reaches the copy; auto follows the datastore and the host.
        power_on: Power the restored VMs on.
        network: keep the NICs as they were, or start them disconnected (isolated).
        name_suffix: Appended to each VM's name to name its restored copy
            (default `-sr-` and the first 6 characters of the run id).
        finish: Instant recovery only: stop (verify, then tear down), migrate (Storage
            vMotion to production and keep), or wait_for_user (pause for a decision).
        migrate_to: Datastore for migrate and full restore (default: the VM's original).
        replace_original: Full restore only: power off, rename and unregister the
            original VM (never deleted) and give its name to the restored one.
        files: VM files restore: file patterns to copy (default *.vmx, *.vmdk, *.nvram).
        target_datastore: VM files restore: where to copy (default: the VM's original).
        target_folder: VM files restore: folder to create there, one VM only; it must not
            already hold the chosen files (default `<vm><suffix>-files`).
        vcenter: Name of the vCenter Credentials block.
        arrays: Names of the array blocks to use (default: every saved array block).
    """
    log = get_run_logger()
    started_at = time.time()
    restore_id = current_run_id()
    request = RestoreRequest(
        vms=vms,
        datastore=datastore,
        snapshot=snapshot,
        operation=operation,
        target_host=target_host,
        protocol=protocol,
        power_on=power_on,
        network=network,
        name_suffix=name_suffix,
        finish=finish,
        migrate_to=migrate_to,
        replace_original=replace_original,
        target_datastore=target_datastore,
        target_folder=target_folder,
        **({"files": files} if files else {}),
    )
    try:
        vc = VCenterCredentials.load(vcenter)
    except ValueError as exc:
        raise PlanError([f"vCenter block '{vcenter}' not found: {exc}"]) from exc
    array_blocks = load_arrays(arrays)
    plan = plan_restore(vc, array_blocks, request, restore_id)
    create_markdown_artifact(key="restore-plan", markdown=plan.summary())

    run = Restore(plan, vc, {a.name: a for a in array_blocks}, started_at)
    decision: str | None = None
    failure: BaseException | None = None
    leftovers: list[str] = []
    try:
        run.attach()
        run.restore_vms()
        if operation == Operation.instant_recovery:
            decision = _finish(run, finish, restore_id)
    except BaseException as exc:
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
                raise RestoreError(msg)
            raise RestoreError(f"{failure}; and {msg}") from failure
    failed = [o for o in run.outcomes() if o.error]
    if failed:
        kept = run.effects.kept()
        raise RestoreError(
            "restore failed for "
            + "; ".join(f"{o.vm}: {o.error}" for o in failed)
            + (f"; kept: {'; '.join(kept)}" if kept else "")
            + " (everything else was cleaned up)"
        )
    return result


def _finish(run: Restore, finish: Finish, restore_id: str) -> str:
    """End an instant recovery as asked; return what was decided."""
    log = get_run_logger()
    if finish == Finish.stop:
        return "stop"
    if finish == Finish.migrate:
        run.migrate()
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
        failed = [o for o in running if o.state == "failed"]
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
