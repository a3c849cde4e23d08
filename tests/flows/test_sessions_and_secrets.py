"""Sessions that end mid-run are recovered, and no password ever shows.

- The array (primera1: its WSAPI session keys dropped, answered 403 INV_SESS_KEY; ontap1:
  its next call answered 401) and vCenter (the run's own SOAP session terminated) end their
  sessions while a restore is powering its VM on; the run logs in again by itself and
  finishes, and the lab's call logs show the refused call and the call that followed.
- The lab's passwords are canaries: random strings nothing but a login should carry. After
  restores that succeed, fail, log in again and are swept, none of them appears in the runs'
  logs (as the Prefect API stores them, and every record of the process at DEBUG), their
  artifacts, their flow and task run states and parameters, the errors raised, or the
  blocks as the API shows them without secrets.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter
from prefect.logging.handlers import APILogWorker
from prefect.settings import PREFECT_LOGGING_TO_API_ENABLED, temporary_settings
from prefect.states import State

from blocks.vcenter import VCenterCredentials
from flows.janitor import janitor
from flows.restore import restore_from_snapshot
from tests.support.concurrency import call_log, last_seq
from tests.support.labs import end_session


def _ds(lab: dict[str, Any], name: str) -> dict[str, Any]:
    return next(d for d in lab["datastores"] if d["name"] == name)


def _array(lab: dict[str, Any], name: str) -> dict[str, Any]:
    return next(a for a in lab["arrays"] if a["name"] == name)


def _end_this_process_vcenter_session(lab: dict[str, Any]) -> str:
    """Terminate the vCenter session the flows of this process use (as vCenter's idle
    timeout would), from an administrator's session of its own; return its key."""
    key = VCenterCredentials.load("default").connect().content.sessionManager.currentSession.key
    end_session(lab, key)
    return key


EXPIRY = [
    # datastore, array, body of /lab/sessions/expire, how the array refuses an ended session
    pytest.param("ds-iscsi-01", "primera1", None, 403, id="primera1"),
    pytest.param("ds-iscsi-02", "ontap1", {"times": 1}, 401, id="ontap1"),
]


@pytest.mark.parametrize("datastore, array, body, refused", EXPIRY)
def test_sessions_that_end_mid_run_are_recovered(
    lab, lab_blocks, world, datastore, array, body, refused
):
    """While the restored VM powers on, the array and vCenter end their sessions: the
    run's later calls are refused once, the run logs in again, finishes and cleans up."""
    ds = _ds(lab, datastore)
    a = _array(lab, array)
    http = world.http
    before = world.snapshot()
    since = {"array": last_seq(http, a["lab_url"]), "vc": last_seq(http, lab["vcenter"]["lab_url"])}
    result: dict[str, State | BaseException] = {}

    def run() -> None:
        try:
            result["state"] = restore_from_snapshot(
                vms=ds["vms"][:1], snapshot=ds["snapshots"][-1], return_state=True
            )
        except BaseException as exc:  # reported below
            result["state"] = exc

    world.vclab.post(
        "/latency", {"rules": [{"operation": "PowerOnVM_Task", "delay_s": 1.5}]}
    ).raise_for_status()
    try:
        t = threading.Thread(target=run)
        t.start()
        deadline = time.monotonic() + 120
        while not call_log(http, lab["vcenter"]["lab_url"], since["vc"], method="PowerOnVM_Task"):
            assert t.is_alive() and time.monotonic() < deadline, result
            time.sleep(0.05)
        expired_at = last_seq(http, a["lab_url"])
        r = http.post(a["lab_url"] + "/sessions/expire", json=body, timeout=30)
        r.raise_for_status()
        ended = _end_this_process_vcenter_session(lab)
        vc_expired_at = last_seq(http, lab["vcenter"]["lab_url"])  # after the admin's login
        t.join(timeout=300)
    finally:
        world.vclab.delete("/latency")
    state = result["state"]
    assert isinstance(state, State) and state.is_completed(), state
    assert [o["state"] for o in state.result()["vms"]] == ["verified"]

    later = call_log(http, a["lab_url"], expired_at)
    first_refused = next((c for c in later if c["status"] == refused), None)
    assert first_refused is not None, [(c["operation"], c["status"]) for c in later]
    resent = [
        c
        for c in later
        if c["seq"] > first_refused["seq"]
        and c["operation"] == first_refused["operation"]
        and c["status"] < 300
    ]
    assert resent, f"{first_refused['operation']} was not sent again after the refusal"
    if array == "primera1":  # a new session key was asked for
        assert [c for c in later if c["operation"] == "POST /api/v1/credentials"]
    # vCenter: the run logged in again (a new session) and went on
    vc_later = call_log(http, lab["vcenter"]["lab_url"], vc_expired_at)
    assert [c for c in vc_later if c["method"] == "Login"], "no new vCenter login"
    si = VCenterCredentials.load("default").connect()
    assert si.content.sessionManager.currentSession.key != ended

    after = world.snapshot()
    for key in ("arrays", "datastores", "vms", "devices"):
        assert after[key] == before[key], key
    assert world.bad_events_since(before["events"]) == []


class _Everything(logging.Handler):
    """Keeps the text of every record, its traceback included."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.texts.append(self.format(record))


@pytest.fixture
def every_record() -> Iterator[_Everything]:
    """Every log record of the process at DEBUG (Prefect's loggers do not propagate)."""
    handler = _Everything()
    names = ["", "prefect", "prefect.flow_runs", "prefect.task_runs", "urllib3", "pyVmomi"]
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.removeHandler(handler)
            lg.setLevel(level)


def test_no_password_appears_in_logs_artifacts_states_or_errors(
    lab, lab_blocks, world, every_record
):
    """Restores that succeed, fail on an array and in vCenter, log in again after their
    sessions end, and a janitor sweep: no lab password appears anywhere a user can read."""
    canaries = {"vcenter": lab["vcenter"]["password"]}
    canaries |= {a["name"]: a["password"] for a in lab["arrays"]}
    assert all(len(c) >= 12 for c in canaries.values())  # too long to appear by chance
    before = world.snapshot()
    states: list[State] = []
    texts: list[str] = []
    with temporary_settings(updates={PREFECT_LOGGING_TO_API_ENABLED: True}):
        # a clean restore, then the arrays and vCenter end their sessions (ONTAP refuses
        # credentials it accepted before) and a second restore logs in again
        states.append(
            restore_from_snapshot(vms=_ds(lab, "ds-nfs-01")["vms"][:1], return_state=True)
        )
        for name, body in (("primera1", None), ("ontap1", {"times": 1})):
            world.http.post(
                _array(lab, name)["lab_url"] + "/sessions/expire", json=body, timeout=30
            ).raise_for_status()
        _end_this_process_vcenter_session(lab)
        states.append(
            restore_from_snapshot(vms=_ds(lab, "ds-iscsi-01")["vms"][:1], return_state=True)
        )
        # a copy the array refuses, and a VM vCenter will not register
        world.inject("primera1", {"operation": "POST /api/v1/volumes/{}", "error": 400})
        states.append(restore_from_snapshot(vms=_ds(lab, "ds-fc-01")["vms"][:1], return_state=True))
        world.http.delete(_array(lab, "primera1")["lab_url"] + "/faults", timeout=30)
        world.vclab.post(
            "/faults", {"operation": "RegisterVM_Task", "error": "InvalidArgument"}
        ).raise_for_status()
        states.append(
            restore_from_snapshot(vms=_ds(lab, "ds-iscsi-02")["vms"][:1], return_state=True)
        )
        world.vclab.delete("/faults")
        states.append(janitor(ttl_minutes=0, dry_run=True, return_state=True))
        APILogWorker.instance().drain()  # every log of these runs is in the API
    assert [s.type.value for s in states] == [
        "COMPLETED",
        "COMPLETED",
        "FAILED",
        "FAILED",
        "COMPLETED",
    ], [s.message for s in states]
    for s in states:
        texts.append(str(s.message))
        texts.append(repr(s.result(raise_on_failure=False)))
    ids = [s.state_details.flow_run_id for s in states]
    runs = FlowRunFilter(id=FlowRunFilterId(any_=ids))
    with get_client(sync_client=True) as client:
        logs: list = []
        while page := client.read_logs(
            log_filter=LogFilter(flow_run_id={"any_": ids}), limit=200, offset=len(logs)
        ):
            logs += page
        artifacts = client.read_artifacts(flow_run_filter=runs)
        flow_runs = client.read_flow_runs(flow_run_filter=runs)
        task_runs = client.read_task_runs(flow_run_filter=runs)
        blocks = client.read_block_documents(include_secrets=False)
    assert logs and artifacts and len(task_runs) > 10  # the places looked at are not empty
    assert any("gone" in lg.message or "janitor" in lg.message for lg in logs)
    texts += [lg.message for lg in logs]
    texts += [json.dumps(a.model_dump(mode="json")) for a in artifacts]
    texts += [json.dumps(r.model_dump(mode="json")) for r in [*flow_runs, *task_runs]]
    texts += [json.dumps(b.model_dump(mode="json")) for b in blocks]
    texts += every_record.texts
    assert len(every_record.texts) > 100
    everything = "\n".join(texts)
    leaks = {name for name, secret in canaries.items() if secret in everything}
    assert leaks == set(), f"passwords of {sorted(leaks)} appear in what users can read"
    after = world.snapshot()
    for key in ("arrays", "datastores", "vms", "devices"):
        assert after[key] == before[key], key
