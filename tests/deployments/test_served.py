"""The deployments served by ``python -m deployments serve`` on a real Prefect server
(PostgreSQL): REST- and CLI-triggered restores, cancelling a waiting instant recovery, and
the janitor after a flow process is killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid

from pyVmomi import vim

from lab.process import wait_until
from tasks import vsphere as vs
from tests.deployments.conftest import REPO, flow_run_pid
from tests.support.storage_ops import ops_for
from tests.support.vcenter import find

BAD = ("apd", "device_lost_while_attached", "vmfs_destroyed")


def _ds(lab, name):
    return next(d for d in lab["datastores"] if d["name"] == name)


def _assert_clean(world, before):
    after = world.snapshot()
    for key in ("arrays", "datastores", "vms", "devices"):
        assert after[key] == before[key], key
    assert world.bad_events_since(before["events"]) == []


def test_a_restore_triggered_with_plain_http_runs_and_cleans_up(lab, served, world):
    api, _ = served
    ds = _ds(lab, "ds-iscsi-02")
    before = world.snapshot()
    key = f"ticket-{uuid.uuid4().hex[:8]}"
    r = api.create_run(
        "restore-from-snapshot/default",
        {"vms": ds["vms"][:2], "snapshot": "latest"},
        tags=["api-triggered"],
        idempotency_key=key,
    )
    assert r.status_code == 201, r.text
    run = r.json()
    # the same request again is the same run (API-triggered retries are safe)
    again = api.create_run(
        "restore-from-snapshot/default",
        {"vms": ds["vms"][:2], "snapshot": "latest"},
        idempotency_key=key,
    )
    assert again.json()["id"] == run["id"]
    done = api.wait(run["id"])
    assert done["state"]["type"] == "COMPLETED", done["state"]
    arts = api.artifacts(run["id"])
    assert (
        "verified" in arts["restore-vms"] and "Nothing was left behind." in arts["restore-report"]
    )
    _assert_clean(world, before)


def test_the_server_refuses_parameters_the_form_would_not_allow(served):
    api, _ = served
    r = api.create_run(
        "restore-from-snapshot/default", {"vms": ["app-01"], "operation": "teleport"}
    )
    assert r.status_code == 409 and "operation" in r.text
    r = api.create_run("restore-from-snapshot/default", {"snapshot": "latest"})
    assert r.status_code == 409 and "vms" in r.text


def test_prefect_deployment_run_from_the_command_line(lab, served, world):
    api, env = served
    before = world.snapshot()
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "prefect",
            "deployment",
            "run",
            "restore-from-snapshot/default",
            "-p",
            'vms=["web-03"]',
            "--tag",
            "cli",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr + r.stdout
    run_id = next(
        line.split("UUID:")[1].strip() for line in r.stdout.splitlines() if "UUID:" in line
    )
    done = api.wait(run_id)
    assert done["state"]["type"] == "COMPLETED", done["state"]
    _assert_clean(world, before)


def test_concurrency_limits_exist_for_every_array_and_host(served):
    api, _ = served
    r = api.post("/concurrency_limits/filter", {})
    tags = {c["tag"]: c["concurrency_limit"] for c in r.json()}
    for tag in ("array-primera1", "array-ontap1", "esxi-esx-01", "esxi-esx-02", "esxi-esx-03"):
        assert tags.get(tag, 0) >= 1, tags


def test_cancelling_a_waiting_instant_recovery_cleans_up(lab, served, world):
    api, _ = served
    ds = _ds(lab, "ds-nfs-01")
    before = world.snapshot()
    run = api.create_run(
        "restore-from-snapshot/default",
        {"vms": ds["vms"][:2], "snapshot": "latest", "finish": {"action": "wait_for_user"}},
    ).json()
    paused = api.wait(run["id"], {"PAUSED", *("COMPLETED", "FAILED", "CRASHED")}, timeout=120)
    assert paused["state"]["type"] == "PAUSED", paused["state"]
    during = world.snapshot()
    assert len(during["vms"]) == len(before["vms"]) + 2  # running from the copy
    r = api.post(
        f"/flow_runs/{run['id']}/set_state", {"state": {"type": "CANCELLING"}, "force": True}
    )
    assert r.status_code in (200, 201), r.text
    done = api.wait(run["id"], timeout=120)
    assert done["state"]["type"] == "CANCELLED", done["state"]
    _assert_clean(world, before)


def test_a_killed_restore_leaves_tagged_objects_that_the_janitor_removes(
    lab, served, world, vclab, si, http
):
    api, _env = served
    ds = _ds(lab, "ds-iscsi-01")
    # decoys with our look but not our tag: an untagged sr- clone on the array and an NFS
    # datastore named like ours
    hpe = ops_for(lab, "primera1")
    decoy = hpe.make_copy(ds["volume"], ds["snapshots"][0], f"sr-decoy-{uuid.uuid4().hex[:6]}")
    ontap = ops_for(lab, "ontap1")
    nfs = next(d for d in lab["datastores"] if d["protocol"] == "nfs")
    decoy_nfs = ontap.make_copy(
        nfs["volume"], nfs["snapshots"][0], f"sr_decoy_{uuid.uuid4().hex[:6]}"
    )
    server, path = ontap.present_nfs(decoy_nfs, lab["hosts"][0])
    decoy_ds = vs.mount_nfs(
        vs.get_host(si, lab["hosts"][0]["name"]), server, path, "sr-looks-like-ours"
    )
    try:
        before = world.snapshot()
        # the guests never report tools: the run waits there, VMs running from the copy
        vclab.post("/guest", {"match": "*-sr-*", "tools": "never"}).raise_for_status()
        run = api.create_run(
            "restore-from-snapshot/default", {"vms": ds["vms"], "snapshot": "latest"}
        ).json()
        deadline_vms = len(before["vms"]) + 3

        def vms_running() -> bool:
            return len(world.snapshot()["vms"]) >= deadline_vms

        wait_until(vms_running, 120, "the restore to register its VMs")
        os.kill(flow_run_pid(run["id"]), signal.SIGKILL)
        crashed = api.wait(run["id"], timeout=120)
        assert crashed["state"]["type"] == "CRASHED", crashed["state"]
        vclab.delete("/guest")
        left = world.snapshot()
        assert (
            len(left["arrays"]["primera1"]["copies"])
            == len(before["arrays"]["primera1"]["copies"]) + 1
        )
        assert len(left["datastores"]) == len(before["datastores"]) + 1

        janitor = api.create_run("janitor/hourly", {"ttl_minutes": 0, "runs": [run["id"]]}).json()
        done = api.wait(janitor["id"], timeout=180)
        assert done["state"]["type"] == "COMPLETED", done["state"]
        _assert_clean(world, before)  # all of the killed run's objects, and nothing else
        assert decoy.name in world.snapshot()["arrays"]["primera1"]["copies"]
        assert find(si, vim.Datastore, "sr-looks-like-ours") is not None
    finally:
        vclab.delete("/guest")
        host = vs.get_host(si, lab["hosts"][0]["name"])
        vs.remove_nas(host, decoy_ds)
        ontap.unpresent(decoy_nfs)
        ontap.delete(decoy_nfs)
        hpe.delete(decoy)
