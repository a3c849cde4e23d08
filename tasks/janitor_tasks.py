"""Prefect tasks of the janitor: find what snaprestore left behind, and ask Prefect whose it is.

The cleanup steps themselves are the restore's own tasks (``tasks.vsphere_tasks`` and
``tasks.array_tasks``): the janitor undoes things exactly as a restore's teardown does.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.objects import StateType
from prefect.events.filters import (
    EventAnyResourceFilter,
    EventFilter,
    EventOccurredFilter,
    EventOrder,
)
from prefect.exceptions import ObjectNotFound
from pydantic import BaseModel

from blocks.arrays import StorageArray
from blocks.models import SnapshotCopy
from blocks.vcenter import VCenterCredentials
from tasks import sweep
from tasks.retry import step

TERMINAL = frozenset(
    {StateType.COMPLETED, StateType.FAILED, StateType.CANCELLED, StateType.CRASHED}
)


class RunStatus(BaseModel):
    """Whether the restore run that owns some objects is gone, and why."""

    run: str
    state: str  # the flow run's state type (RUNNING, COMPLETED…) or "unknown"
    gone: bool
    reason: str
    last_seen: datetime | None = None  # the latest sign of life, for runs not terminal


def _ago(delta: timedelta) -> str:
    s = int(max(delta.total_seconds(), 0))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def last_event(
    client: SyncPrefectClient, run_id: uuid.UUID, since: datetime | None
) -> tuple[datetime, str] | None:
    """Return (time, name) of the latest event about flow run ``run_id``, or None.

    Reads ``POST /api/events/filter`` (``client.read_events``): events whose resource or a
    related resource is ``prefect.flow-run.<id>`` — the engine's
    ``prefect.flow-run.heartbeat`` (every ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY``, 180 s by
    default), its state changes, and the events of its task runs — newest first.
    """
    occurred = EventOccurredFilter(since=since) if since else EventOccurredFilter()
    page = client.read_events(
        EventFilter(
            occurred=occurred,
            any_resource=EventAnyResourceFilter(id=[f"prefect.flow-run.{run_id}"]),
            order=EventOrder.DESC,
        ),
        limit=1,
    )
    if not page.events:
        return None
    event = page.events[0]
    return event.occurred, event.event


def run_status(
    client: SyncPrefectClient,
    run: str,
    heartbeat_timeout: timedelta,
    now: datetime,
    log: Callable[[str], Any] = print,
) -> RunStatus:
    """Decide whether restore run ``run`` is gone. See :func:`assess_runs` for the rule."""
    try:
        run_id = uuid.UUID(run)
    except ValueError:
        return RunStatus(run=run, state="unknown", gone=True, reason="not a flow run id")
    try:
        fr = client.read_flow_run(run_id)
    except ObjectNotFound:
        return RunStatus(
            run=run, state="unknown", gone=True, reason="no such flow run on this Prefect server"
        )
    state = fr.state_type or (fr.state.type if fr.state else None)
    name = state.value if state else "unknown"
    if state in TERMINAL:
        return RunStatus(run=run, state=name, gone=True, reason=f"the run is {name}")

    # the latest sign of life: an event about the run, its state's time, its start
    signs: list[tuple[datetime, str]] = []
    if fr.state is not None and fr.state.timestamp is not None:
        signs.append((fr.state.timestamp, f"state {fr.state.name}"))
    if fr.start_time is not None:
        signs.append((fr.start_time, "start"))
    details = fr.state.state_details if fr.state is not None else None
    # a pause that has not timed out, or a run scheduled for later, is alive until then
    for until, what in (
        (details.pause_timeout if details else None, "paused until"),
        (details.scheduled_time if details else None, "scheduled for"),
    ):
        if until is not None and until > now:
            return RunStatus(
                run=run,
                state=name,
                gone=False,
                reason=f"{name}, {what} {until:%Y-%m-%d %H:%M} UTC",
                last_seen=now,
            )
    try:
        since = fr.created - timedelta(minutes=1) if fr.created else None
        seen = last_event(client, run_id, since)
    except Exception as exc:  # events API unavailable: judge by the state's time alone
        log(f"run {run}: cannot read its events ({exc}); using its state's time")
        seen = None
    if seen is not None:
        signs.append(seen)
    if not signs:
        return RunStatus(run=run, state=name, gone=False, reason=f"{name}, never seen alive yet")
    last, what = max(signs, key=lambda s: s[0])
    silent = now - last
    if heartbeat_timeout > timedelta(0) and silent > heartbeat_timeout:
        return RunStatus(
            run=run,
            state=name,
            gone=True,
            reason=f"{name} but silent for {_ago(silent)} (last: {what}) "
            f"> heartbeat timeout {_ago(heartbeat_timeout)}",
            last_seen=last,
        )
    return RunStatus(
        run=run,
        state=name,
        gone=False,
        reason=f"{name}, last sign of life {_ago(silent)} ago ({what})",
        last_seen=last,
    )


@step("ask Prefect whether runs {run_ids} are gone")
def assess_runs(
    run_ids: list[str], heartbeat_timeout_minutes: float, now: datetime | None = None
) -> dict[str, RunStatus]:
    """Return, for each restore run id, whether its run is gone.

    The rule: a run is gone when its flow run is in a terminal state (COMPLETED, FAILED,
    CANCELLED, CRASHED) or does not exist on this Prefect server (or the id is not a flow
    run id). Otherwise (RUNNING, PENDING, PAUSED, CANCELLING, SCHEDULED…) it is alive,
    unless it has shown no sign of life for longer than ``heartbeat_timeout_minutes``.
    Its last sign of life is the latest of: the newest event whose resource or related
    resource is ``prefect.flow-run.<id>`` (the engine's ``prefect.flow-run.heartbeat``,
    state-change and task-run events), its state's timestamp, its start time. A pause
    that has not timed out yet, or a scheduled start still to come, keeps the run alive
    until then. ``heartbeat_timeout_minutes`` <= 0 turns the silence rule off: only a
    terminal or unknown run is gone. ``now`` is for tests.
    """
    now = now or datetime.now(UTC)
    timeout = timedelta(minutes=heartbeat_timeout_minutes)
    out: dict[str, RunStatus] = {}
    with get_client(sync_client=True) as client:
        for run in run_ids:
            out[run] = status = run_status(client, run, timeout, now)
            print(f"run {run}: {'gone' if status.gone else 'alive'} — {status.reason}")
    return out


@step("list snaprestore's copies on {array.name}")
def list_tagged_copies(array: StorageArray) -> list[SnapshotCopy]:
    """Return the array's copies that carry snaprestore's tag (never an untagged volume)."""
    copies = [c for c in array.list_copies() if c.tag is not None]
    print(f"{array.name}: {len(copies)} tagged cop{'y' if len(copies) == 1 else 'ies'}")
    return copies


@step("find snaprestore's objects in vCenter")
def survey_vcenter(
    vcenter: VCenterCredentials, copies: list[SnapshotCopy], nfs_servers: dict[str, list[str]]
) -> sweep.Survey:
    """Return where each copy is in use in vCenter, and the tagged datastores/VMs of no copy."""
    found = sweep.survey(vcenter.connect(), copies, nfs_servers)
    print(
        f"vCenter: {sum(len(f.datastores) for f in found.footprints.values())} datastore(s) "
        f"on {len(copies)} cop{'y' if len(copies) == 1 else 'ies'}; tagged and on no copy: "
        f"{len(found.datastores)} datastore(s), {len(found.vms)} VM(s)"
    )
    return found
