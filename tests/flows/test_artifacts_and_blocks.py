"""What users see: the run's artifacts, and the blocks the lab saves."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterId,
)
from prefect.settings import PREFECT_API_URL

from blocks.registry import saved_array_names
from blocks.vcenter import VCenterCredentials
from flows.restore import restore_from_snapshot


def test_the_run_publishes_its_vms_and_side_effects(lab, lab_blocks):
    ds = next(d for d in lab["datastores"] if d["name"] == "ds-nfs-01")
    result = restore_from_snapshot(vms=ds["vms"][2:], snapshot="latest")
    this_run = FlowRunFilter(id=FlowRunFilterId(any_=[result["restore_id"]]))
    with get_client(sync_client=True) as client:
        arts = {
            key: client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
                flow_run_filter=this_run,
            )
            for key in ("restore-vms", "restore-side-effects", "restore-report", "restore-plan")
        }
    assert all(arts.values()), arts
    vms = arts["restore-vms"][0].data
    assert "print-01" in str(vms) and "verified" in str(vms)
    effects = json.loads(arts["restore-side-effects"][0].data)
    kinds = [e["side effect"] for e in effects]
    assert kinds == ["copy", "presentation", "datastore", "vm"], effects
    assert effects[0]["object"].endswith(" on ontap1") and "over nfs" in effects[1]["object"]
    assert effects[3]["object"] == f"VM {result['vms'][0]['restored_as']}"
    assert {e["undone"] for e in effects} == {"yes"}
    assert result["restore_id"] in arts["restore-report"][0].data
    assert "Nothing was left behind." in arts["restore-report"][0].data


def test_lab_blocks_command_saves_every_block(lab, prefect_api, tmp_path):
    env = {**__import__("os").environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    r = subprocess.run(
        [sys.executable, "-m", "lab", "blocks", "--dir", lab["dir"]],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert "saved block vcenter-credentials/default" in r.stdout
    assert set(saved_array_names()) >= {"primera1", "ontap1"}
    vc = VCenterCredentials.load("default")
    assert vc.connect().content.about.apiType == "VirtualCenter"


def test_block_types_register_with_one_command(prefect_api):
    env = {**__import__("os").environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    r = subprocess.run(
        [sys.executable, "-m", "blocks", "register"],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    for slug in ("vcenter-credentials", "hpe-primera-array", "netapp-ontap-array"):
        assert f"registered block type {slug}" in r.stdout


def test_limits_without_a_reachable_vcenter_still_cover_every_array(lab_blocks, caplog):
    """Serving must not fail because vCenter is down: array limits are made, host limits
    are skipped with a warning that says when they will come."""
    from deployments.limits import limit_tags

    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    VCenterCredentials(host="127.0.0.1", port=port, user="u", password="p", timeout_s=5).save(
        "unreachable", overwrite=True
    )
    try:
        tags = limit_tags("unreachable")
    finally:
        with get_client(sync_client=True) as client:
            client.delete_block_document(VCenterCredentials.load("unreachable")._block_document_id)
    assert {"array-primera1", "array-ontap1"} <= set(tags)
    assert not [t for t in tags if t.startswith("esxi-")]
    assert "vCenter block 'unreachable' unreachable" in caplog.text
    full = limit_tags("default")
    assert {"esxi-esx-01", "esxi-esx-02", "esxi-esx-03"} <= set(full)


def test_an_ended_vcenter_session_logs_in_again_by_itself(lab, lab_blocks, vclab):
    """Steps reuse the process's session without checking it first; when vCenter has ended
    it, the next call logs in again by itself and the step goes on."""
    from blocks.registry import load_arrays
    from flows.plan import RestoreRequest
    from flows.restore import plan_restore
    from tests.support.labs import end_session

    vc = VCenterCredentials.load("default")
    si = vc.connect()
    key = si.content.sessionManager.currentSession.key
    calls = sum(vclab.calls().values())
    assert vc.connect() is si
    assert sum(vclab.calls().values()) == calls  # no round trip to hand out the session
    end_session(lab, key)
    logins = vclab.calls().get("Login", 0)
    ds = next(d for d in lab["datastores"] if d["name"] == "ds-nfs-01")
    plan = plan_restore(vc, load_arrays(), RestoreRequest(vms=ds["vms"][:1]), "session-test")
    assert [v.name for g in plan.groups for v in g.vms] == ds["vms"][:1]
    assert vclab.calls().get("Login", 0) == logins + 1
    assert vc.connect() is si
    assert si.content.sessionManager.currentSession.key != key
