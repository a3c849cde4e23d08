"""The restore drill: healthy VMs pass; a VM whose tools never start fails clearly; no leftovers."""

from __future__ import annotations

import time

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from flows.drill import restore_drill


def _artifact(key: str, run_id) -> object:
    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])), limit=20
        )
    return next(a for a in arts if str(a.flow_run_id) == str(run_id)).data


def _events(http, api_url: str, run_id) -> list[dict]:
    r = http.post(
        f"{api_url}/events/filter",
        json={"filter": {"related": {"id": [f"prefect.flow-run.{run_id}"]}}, "limit": 50},
        timeout=30,
    )
    r.raise_for_status()
    return [e for e in r.json()["events"] if e["event"].startswith("snaprestore.drill.vm.")]


def test_a_drill_of_healthy_vms_passes_and_leaves_nothing(lab, lab_blocks, world):
    before = world.snapshot()
    state = restore_drill(datastores=["ds-fc-01"], deadline_s=30, return_state=True)
    assert state.is_completed(), state.message
    results = state.result()
    assert [r["vm"] for r in results] == ["web-01", "web-02", "web-03"]
    for r in results:
        assert r["passed"] and r["heartbeat"] == "green"
        assert r["ip"] and r["ip"].startswith("127.0.50.")  # the VM has one: it is required
        assert r["snapshot"] == lab["datastores"][1]["snapshots"][-1]  # the latest
    table = _artifact("drill-results", state.state_details.flow_run_id)
    assert table.count("passed") == 3
    after = world.snapshot()
    for key in ("arrays", "datastores", "vms", "devices"):
        assert after[key] == before[key], key
    assert world.bad_events_since(before["events"]) == []


def test_a_vm_whose_tools_never_start_fails_the_drill_with_a_clear_artifact(
    lab, lab_blocks, world, vclab, http
):
    from prefect.settings import PREFECT_API_URL

    before = world.snapshot()
    vclab.post("/guest", {"match": "mon-01-drill-*", "tools": "never"}).raise_for_status()
    state = restore_drill(
        vms=["log-01", "mon-01"], deadline_s=2, require_ip="never", return_state=True
    )
    assert state.is_failed()
    message = str(state.result(raise_on_failure=False))
    assert "1 of 2 VMs failed verification: mon-01: mon-01-drill-" in message
    assert "no VMware Tools heartbeat within 2s" in message
    run_id = state.state_details.flow_run_id
    table = _artifact("drill-results", run_id)
    assert "FAILED" in table and "passed" in table
    summary = _artifact("drill-summary", run_id)
    assert "1 of 2 VMs passed" in summary and "Nothing was left behind." in summary
    expected = {"log-01": "snaprestore.drill.vm.passed", "mon-01": "snaprestore.drill.vm.failed"}
    deadline = time.monotonic() + 15  # events reach the API asynchronously
    while True:
        found = _events(http, PREFECT_API_URL.value(), run_id)
        events = {e["resource"]["prefect.resource.name"]: e["event"] for e in found}
        if events == expected or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert events == expected
    after = world.snapshot()
    for key in ("arrays", "datastores", "vms", "devices"):
        assert after[key] == before[key], key
    assert world.bad_events_since(before["events"]) == []


def test_a_drill_with_an_unknown_datastore_or_vm_fails_before_anything(lab, lab_blocks, world):
    before = world.snapshot()
    state = restore_drill(datastores=["no-such-ds"], vms=["no-such-vm"], return_state=True)
    assert state.is_failed()
    text = str(state.result(raise_on_failure=False))
    assert "datastore 'no-such-ds' not found" in text, text
    assert "VM 'no-such-vm' is not in the inventory: a drill verifies VMs that exist" in text
    assert world.snapshot() == before
