"""Bad input fails before any side effect; failures after one are cleaned up in order;
transient faults are retried."""

from __future__ import annotations

import pytest

from flows.restore import restore_from_snapshot
from tasks import vsphere as vs


def _ds(lab, name):
    return next(d for d in lab["datastores"] if d["name"] == name)


def _failure(state) -> str:
    assert state.is_failed(), state
    exc = state.result(raise_on_failure=False)
    return str(exc)


BAD_INPUT = [
    pytest.param(
        {"vms": ["no-such-vm"]}, "VM 'no-such-vm' is not in the inventory", id="unknown-vm"
    ),
    pytest.param(
        {"vms": ["app-01"], "snapshot": "no-such-snapshot"},
        "no snapshot named 'no-such-snapshot'; snapshots: DS_ISCSI_01.daily-",
        id="unknown-snapshot",
    ),
    pytest.param(
        {"vms": ["app-01"], "snapshot": "latest-before:2001-01-01T00:00:00Z"},
        "no snapshot was taken before 2001-01-01",
        id="nothing-before",
    ),
    pytest.param(
        {"vms": ["jump-01"], "placement": {"protocol": "fc"}},
        "no host can reach ontap1 for datastore ds-iscsi-02: ontap1 does not serve fc",
        id="array-cannot-serve-the-protocol",
    ),
    pytest.param(
        {"vms": ["app-01"], "placement": {"target_host": "esx-99"}},
        "target host 'esx-99' not found; hosts: esx-01, esx-02, esx-03",
        id="unknown-host",
    ),
    pytest.param(
        {"vms": ["app-01"], "placement": {"protocol": "nfs"}},
        "datastore ds-iscsi-01 is VMFS on a LUN: use protocol 'iscsi', 'fc' or 'auto'",
        id="protocol-the-datastore-does-not-have",
    ),
    pytest.param(
        {"vms": ["file-01"], "placement": {"protocol": "iscsi"}},
        "datastore ds-nfs-01 is NFS: restore it with protocol 'nfs' or 'auto'",
        id="nfs-datastore-over-iscsi",
    ),
    pytest.param(
        {"vms": ["app-01"], "arrays": ["no-such-array"]},
        "array block(s) not found: no-such-array; saved: ",
        id="unknown-array-block",
    ),
    pytest.param(
        {"vms": ["app-01"], "operation": "vm_files", "files": {"target_folder": "app-01"}},
        "[ds-iscsi-01] app-01 already holds app-01-flat.vmdk, app-01.nvram, app-01.vmdk, "
        "app-01.vmx: choose another target_folder",
        id="files-restore-into-a-folder-that-holds-them",
    ),
    pytest.param(
        {"vms": ["app-01", "app-02"], "operation": "vm_files", "files": {"target_folder": "both"}},
        "target_folder names one folder for several VMs",
        id="files-restore-of-several-vms-into-one-folder",
    ),
    pytest.param(
        {
            "vms": ["app-01"],
            "operation": "full_restore",
            "finish": {"replace_original": True},
            "placement": {"name_suffix": "-" + "x" * 68},
        },
        "the original would be renamed 'app-01-replaced-xxx",
        id="replace-with-a-set-aside-name-too-long",
    ),
    pytest.param(
        {
            "vms": ["app-01"],
            "operation": "full_restore",
            "finish": {"replace_original": True, "migrate_to": "sr-0123abcd-ds-iscsi-01"},
        },
        "datastore 'sr-0123abcd-ds-iscsi-01' is a snapshot copy, deleted after the run",
        id="move-onto-a-snapshot-copy",
    ),
    pytest.param(
        {"vms": ["app-01"], "operation": "full_restore", "finish": {"migrate_to": "sr-prod"}},
        "migrate_to datastore 'sr-prod' not found",  # a name like ours is not a copy
        id="a-production-datastore-may-start-with-sr",
    ),
    pytest.param(
        {"vms": ["app-01", "no-such-vm"], "snapshot": "nope"},
        "VM 'no-such-vm' is not in the inventory",
        id="all-problems-at-once",
    ),
]


@pytest.mark.parametrize(("params", "message"), BAD_INPUT)
def test_bad_input_fails_before_any_side_effect(lab, lab_blocks, world, params, message):
    before = world.snapshot()
    state = restore_from_snapshot(**params, return_state=True)
    text = _failure(state)
    assert message in text, text
    assert "the restore was not started" in text or "not found" in text
    assert world.snapshot() == before  # nothing changed, nothing was even attempted


def test_every_problem_is_reported_at_once(lab, lab_blocks):
    state = restore_from_snapshot(vms=["app-01", "no-such-vm"], snapshot="nope", return_state=True)
    text = _failure(state)
    assert "VM 'no-such-vm' is not in the inventory" in text
    assert "no snapshot named 'nope'" in text


STEP_FAULTS = [
    pytest.param(
        "ds-iscsi-01",
        ("array", "primera1", {"operation": "POST /api/v1/vluns", "error": 400}),
        id="present",
    ),
    pytest.param(
        "ds-iscsi-01",
        ("vcenter", {"operation": "RescanHba", "error": "HostConfigFault"}),
        id="rescan",
    ),
    pytest.param(
        "ds-fc-01",
        (
            "vcenter",
            {"operation": "ResignatureUnresolvedVmfsVolume_Task", "error": "HostConfigFault"},
        ),
        id="resignature",
    ),
    pytest.param(
        "ds-iscsi-02",
        ("vcenter", {"operation": "RegisterVM_Task", "error": "HostConfigFault", "times": 1}),
        id="register-one-vm",
    ),
    pytest.param(
        "ds-iscsi-01",
        ("vcenter", {"operation": "PowerOnVM_Task", "error": "HostConfigFault", "times": 1}),
        id="power-on-one-vm",
    ),
    pytest.param(
        "ds-nfs-01",
        ("vcenter", {"operation": "CreateNasDatastore", "error": "PlatformConfigFault"}),
        id="nfs-mount",
    ),
    pytest.param(
        "ds-nfs-01",
        ("array", "ontap1", {"operation": "POST /api/protocols/nfs/export-policies", "error": 400}),
        id="nfs-export",
    ),
]


@pytest.mark.parametrize(("ds_name", "fault"), STEP_FAULTS)
def test_a_failure_after_the_copy_exists_leaves_nothing_behind(
    lab, lab_blocks, world, vclab, ds_name, fault
):
    ds = _ds(lab, ds_name)
    before = world.snapshot()
    if fault[0] == "array":
        world.inject(fault[1], fault[2])
    else:
        vclab.post("/faults", fault[1]).raise_for_status()
    state = restore_from_snapshot(vms=ds["vms"][:2], snapshot=ds["snapshots"][0], return_state=True)
    text = _failure(state)
    assert "injected" in text or "400" in text, text
    vclab.delete("/faults")
    for a in lab["arrays"]:
        world.http.delete(a["lab_url"] + "/faults", timeout=30)
    after = world.snapshot()
    for key in ("arrays", "datastores", "vms", "devices"):
        assert after[key] == before[key], key
    assert world.bad_events_since(before["events"]) == []


TRANSIENT = [
    pytest.param(
        "ds-iscsi-01",
        ("array", "primera1", {"operation": "POST /api/v1/volumes/{}", "error": 503, "times": 1}),
        id="array-503-on-copy",
    ),
    pytest.param(
        "ds-iscsi-02",
        (
            "array",
            "ontap1",
            {"operation": "POST /api/protocols/san/lun-maps", "error": 429, "times": 1},
        ),
        id="array-429-on-present",
    ),
    pytest.param(
        "ds-fc-01",
        (
            "vcenter",
            {
                "operation": "ResignatureUnresolvedVmfsVolume_Task",
                "error": "HostCommunication",
                "times": 1,
            },
        ),
        id="vcenter-task-transient",
    ),
]


@pytest.mark.parametrize(("ds_name", "fault"), TRANSIENT)
def test_a_transient_fault_is_retried_and_the_run_succeeds(
    lab, lab_blocks, world, vclab, ds_name, fault
):
    ds = _ds(lab, ds_name)
    before = world.snapshot()
    if fault[0] == "array":
        op = fault[2]["operation"]
        calls_before = world.array_calls(fault[1]).get(op, 0)
        world.inject(fault[1], fault[2])
    else:
        op = fault[1]["operation"]
        calls_before = vclab.calls().get(op, 0)
        vclab.post("/faults", fault[1]).raise_for_status()
    result = restore_from_snapshot(vms=ds["vms"][:1], snapshot=ds["snapshots"][1])
    assert result["vms"][0]["state"] == "verified"
    calls = world.array_calls(fault[1]) if fault[0] == "array" else vclab.calls()
    assert calls[op] == calls_before + 2  # the failed call and its retry
    after = world.snapshot()
    for key in ("arrays", "datastores", "vms", "devices"):
        assert after[key] == before[key], key
    assert world.bad_events_since(before["events"]) == []


def test_a_cleanup_that_cannot_finish_fails_the_run_and_says_what_is_left(
    lab, lab_blocks, world, vclab, si
):
    """The array refuses to unpresent: the copy must stay (deleting it now would be unsafe)."""
    from blocks.registry import load_arrays

    ds = _ds(lab, "ds-iscsi-01")
    before = world.snapshot()
    world.inject("primera1", {"operation": "DELETE /api/v1/vluns/{}", "error": 400})
    state = restore_from_snapshot(vms=ds["vms"][:1], snapshot=ds["snapshots"][0], return_state=True)
    text = _failure(state)
    assert "cleanup could not finish; still there:" in text
    assert "presented to hosts by primera1" in text, text
    # the VM and the datastore were removed before the step that failed, in order
    after = world.snapshot()
    assert after["datastores"] == before["datastores"] and after["vms"] == before["vms"]
    assert world.bad_events_since(before["events"]) == []
    left = after["arrays"]["primera1"]["copies"]
    assert len(left) == 1
    # an operator (or the janitor) finishes the job once the array behaves again
    world.http.delete(
        next(a for a in lab["arrays"] if a["name"] == "primera1")["lab_url"] + "/faults", timeout=30
    )
    array = next(a for a in load_arrays(["primera1"]))
    array.delete_copy(array.find_copy(left[0]))
    for h in lab["hosts"]:  # the copy went through the cluster-wide host object: all saw it
        host = vs.get_host(si, h["name"])
        vs.rescan(host, vs.adapters_for(host, "iscsi"))
    final = world.snapshot()
    assert final["arrays"] == before["arrays"] and final["devices"] == before["devices"]


def test_a_copy_the_array_made_although_the_copy_step_failed_is_deleted(lab, lab_blocks, world):
    """The create call succeeds, every read of the new copy fails: the run fails, and the
    copy it never got back is found by its name and deleted, not left for the janitor."""
    ds = _ds(lab, "ds-iscsi-01")
    before = world.snapshot()
    creates = world.array_calls("primera1").get("POST /api/v1/volumes/{}", 0)
    # one failed read per attempt of the copy step (the first try and its 3 retries)
    world.inject("primera1", {"operation": "GET /api/v1/volumes/{}", "error": 503, "times": 4})
    state = restore_from_snapshot(vms=ds["vms"][:1], snapshot=ds["snapshots"][0], return_state=True)
    text = _failure(state)
    assert "503" in text or "ArrayTransientError" in text, text
    assert "still there" not in text, text
    assert world.array_calls("primera1")["POST /api/v1/volumes/{}"] > creates  # it was made
    after = world.snapshot()
    for key in ("arrays", "datastores", "vms", "devices"):
        assert after[key] == before[key], key
