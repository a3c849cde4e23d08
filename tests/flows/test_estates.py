"""Restores in the configurations users really run (the lab's ``cases``), the world checked
before and after: VMs with disks elsewhere, absolute paths and RDMs, duplicate names,
folders and pools, NICs of running originals, shared host objects, a production APD, an
array that is down, and vSphere tasks that outlive their wait."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun
from prefect.flow_engine import run_flow
from prefect.states import AwaitingRetry
from pyVmomi import vim

from blocks.settings import settings
from flows.drill import restore_drill
from flows.janitor import janitor
from flows.restore import restore_from_snapshot
from lab import control
from lab.seed import disk_marker
from tasks import vsphere as vs
from tests.flows.test_instant_recovery import PausedRestore
from tests.support.storage_ops import HpeOps
from tests.support.vcenter import find
from tests.support.vsphere_steps import read_datastore_file, rescan
from tests.support.world import discard_vm

WORLD = ("arrays", "datastores", "vms", "devices")


def _ds(lab, name):
    return next(d for d in lab["datastores"] if d["name"] == name)


def _vm(lab, name):
    return next(v for v in lab["vms"] if v["name"] == name)


def _failure(state) -> str:
    assert state.is_failed(), state
    return str(state.result(raise_on_failure=False))


def _unchanged(world, before, *keys: str) -> None:
    after = world.snapshot()
    for key in keys or WORLD:
        assert after[key] == before[key], key


def _events_since(vclab, count: int, kind: str) -> list[dict]:
    return [e for e in vclab.events()[count:] if e["kind"] == kind]


# ---- disks outside the snapshotted datastore -------------------------------------------------


def test_a_vm_with_a_disk_on_another_datastore_is_refused_naming_the_disk(lab, lab_blocks, world):
    vm = lab["cases"]["multi_datastore_vm"]
    before = world.snapshot()
    text = _failure(restore_from_snapshot(vms=[vm], return_state=True))
    assert "the restore was not started" in text, text
    assert (
        f"VM {vm}: " in text and f"([ds-fc-01] {vm}/{vm}_1.vmdk) is on datastore ds-fc-01" in text
    )
    assert "other_disks=detach" in text and "other_disks=from_snapshots" in text
    assert world.snapshot() == before  # nothing was created, not even a copy


def test_a_multi_datastore_vm_restores_from_both_snapshots_and_never_opens_production(
    lab, lab_blocks, world, vclab, si, http
):
    vm = lab["cases"]["multi_datastore_vm"]
    iscsi, fc = _ds(lab, "ds-iscsi-01"), _ds(lab, "ds-fc-01")
    before = world.snapshot()
    events = len(vclab.events())
    creates = world.array_calls("primera1").get("POST /api/v1/volumes/{}", 0)
    result = restore_from_snapshot(
        vms=[vm],
        snapshot=iscsi["snapshots"][0],
        operation="full_restore",
        source={"other_disks": "from_snapshots"},
        placement={"name_suffix": "-fs"},
    )
    restored = f"{vm}-fs"
    try:
        o = result["vms"][0]
        assert o["state"] == "restored, running", o
        # one copy per (array, snapshot): the VM's own datastore and its second disk's
        assert world.array_calls("primera1")["POST /api/v1/volumes/{}"] == creates + 2
        assert any("multi-01_1.vmdk" in n and "->" in n for n in o["notes"]), o["notes"]
        obj = find(si, vim.VirtualMachine, restored)
        disks = sorted(
            d.backing.fileName
            for d in obj.config.hardware.device
            if isinstance(d, vim.vm.device.VirtualDisk)
        )
        assert disks == [
            f"[ds-fc-01] {restored}/{vm}_1.vmdk",
            f"[ds-iscsi-01] {restored}/{vm}.vmdk",
        ]
        # both disks hold the snapshot's content (its older one: generation 1)
        flat = read_datastore_file(lab, http, "ds-iscsi-01", f"{restored}/{vm}-flat.vmdk")
        assert flat == disk_marker(vm, 1)
        second = read_datastore_file(lab, http, "ds-fc-01", f"{restored}/{vm}_1-flat.vmdk")
        assert "generation: 1" in second and fc["snapshots"]
        assert _events_since(vclab, events, "production_file_opened") == []
        assert world.bad_events_since(before["events"]) == []
        _unchanged(world, before, "arrays", "datastores", "devices")
    finally:
        discard_vm(si, restored)
        ds_fc = find(si, vim.Datastore, "ds-fc-01")
        vs.wait(
            si.content.fileManager.DeleteDatastoreFile_Task(
                f"[ds-fc-01] {restored}", vs.datacenter_of(ds_fc)
            ),
            60,
        )


def test_other_disks_detach_restores_without_them_and_says_so(lab, lab_blocks, world, vclab):
    vm = lab["cases"]["multi_datastore_vm"]
    before = world.snapshot()
    events = len(vclab.events())
    result = restore_from_snapshot(vms=[vm], source={"other_disks": "detach"})
    o = result["vms"][0]
    assert o["state"] == "verified", o
    assert any("scsi0:1: disk /vmfs/volumes/" in n and "removed" in n for n in o["notes"]), o
    assert _events_since(vclab, events, "production_file_opened") == []
    _unchanged(world, before)


def test_a_disk_named_by_an_absolute_path_into_its_own_datastore_opens_the_copy(
    lab, lab_blocks, world, vclab
):
    vm = lab["cases"]["absolute_path_vm"]
    before = world.snapshot()
    events = len(vclab.events())
    result = restore_from_snapshot(vms=[vm])
    o = result["vms"][0]
    assert o["state"] == "verified", o
    assert any(n.startswith("scsi0:0: /vmfs/volumes/") and "->" in n for n in o["notes"]), o
    assert _events_since(vclab, events, "production_file_opened") == []
    _unchanged(world, before)


def test_an_rdm_is_refused_by_default_and_removed_when_asked(lab, lab_blocks, world, vclab):
    vm = lab["cases"]["rdm_vm"]
    before = world.snapshot()
    text = _failure(restore_from_snapshot(vms=[vm], return_state=True))
    assert f"VM {vm}: " in text and " is an RDM (physicalMode to /vmfs/devices/disks/" in text
    assert world.snapshot() == before
    events = len(vclab.events())
    result = restore_from_snapshot(vms=[vm], source={"other_disks": "detach"})
    o = result["vms"][0]
    assert o["state"] == "verified", o
    assert any("raw device mapping" in n and "removed" in n for n in o["notes"]), o["notes"]
    assert _events_since(vclab, events, "production_file_opened") == []
    _unchanged(world, before)


# ---- names, folders, pools -------------------------------------------------------------------


def test_a_duplicate_name_is_refused_with_the_paths_and_a_path_restores_into_its_folder(
    lab, lab_blocks, world, si
):
    name = lab["cases"]["duplicate_name_vm"]
    before = world.snapshot()
    text = _failure(restore_from_snapshot(vms=[name], return_state=True))
    assert f"2 VMs are named '{name}' (team-a/{name}, team-b/{name})" in text, text
    assert "by its inventory path" in text
    assert world.snapshot() == before
    _check_placement(lab, si, f"team-b/{name}", "-dup", "team-b", "rp-infra")
    _unchanged(world, before)


def _check_placement(lab, si, vm: str, suffix: str, folder: str, pool: str, **params) -> None:
    """Restore ``vm`` and pause: the restored VM is in ``folder`` and ``pool``; then stop."""
    paused = PausedRestore(_ds(lab, "ds-iscsi-02"), suffix, vms=[vm], **params)
    try:
        restored = find(si, vim.VirtualMachine, vm.rsplit("/", 1)[-1] + suffix)
        assert restored.parent.name == folder and restored.resourcePool.name == pool
        paused.answer(action="stop")
    finally:
        state = paused.end()
    assert state.is_completed(), state


def test_restored_vms_go_to_the_originals_folder_and_pool_or_where_asked(
    lab, lab_blocks, world, si
):
    before = world.snapshot()
    _check_placement(lab, si, _ds(lab, "ds-iscsi-02")["vms"][0], "-place", "infra", "rp-infra")
    name = lab["cases"]["duplicate_name_vm"]
    _check_placement(
        lab,
        si,
        f"team-b/{name}",
        "-moved",
        "team-a",
        "rp-prod",
        placement={"vm_folder": "team-a", "resource_pool": "rp-prod"},
    )
    text = _failure(
        restore_from_snapshot(vms=["app-01"], placement={"vm_folder": "nope"}, return_state=True)
    )
    assert "vm_folder 'nope' not found" in text
    _unchanged(world, before)


# ---- networks and verification ---------------------------------------------------------------


def test_by_default_a_running_originals_twin_never_joins_its_network(
    lab, lab_blocks, world, vclab, si
):
    name = _ds(lab, "ds-fc-01")["vms"][0]
    assert find(si, vim.VirtualMachine, name).runtime.powerState == "poweredOn"
    before = world.snapshot()
    events = len(vclab.events())
    paused = PausedRestore(_ds(lab, "ds-fc-01"), "-twin")
    try:
        twin = find(si, vim.VirtualMachine, f"{name}-twin")
        nics = [
            d
            for d in twin.config.hardware.device
            if isinstance(d, vim.vm.device.VirtualEthernetCard)
        ]
        assert nics and not any(
            n.connectable.connected or n.connectable.startConnected for n in nics
        )
        paused.answer(action="stop")
    finally:
        state = paused.end()
    assert state.is_completed(), state
    assert any(
        "NICs start disconnected (the original runs)" in n
        for n in state.result()["vms"][0]["notes"]
    )
    assert _events_since(vclab, events, "guest_ip_conflict") == []
    _unchanged(world, before)


def test_a_network_map_moves_the_nics_to_isolated_port_groups(lab, lab_blocks, world, vclab):
    before = world.snapshot()
    events = len(vclab.events())
    result = restore_from_snapshot(
        vms=[_ds(lab, "ds-nfs-01")["vms"][0]],
        network={"mode": "map", "map": {"VM Network": "isolated-pg"}},
    )
    o = result["vms"][0]
    assert o["state"] == "verified"
    assert any("VM Network -> isolated-pg" in n for n in o["notes"]), o["notes"]
    assert _events_since(vclab, events, "guest_ip_conflict") == []
    text = _failure(
        restore_from_snapshot(
            vms=["app-01"],
            network={"mode": "map", "map": {"VM Network": "nope"}},
            return_state=True,
        )
    )
    assert "network_map: port group 'nope' not found" in text
    _unchanged(world, before)


def test_an_appliance_without_tools_passes_on_power_on(lab, lab_blocks, world, vclab):
    vm = _ds(lab, "ds-iscsi-02")["vms"][1]
    vclab.post("/guest", {"match": f"{vm}*", "tools": "never"}).raise_for_status()
    before = world.snapshot()
    try:
        result = restore_from_snapshot(vms=[vm], network={"verify": "power_on"})
    finally:
        vclab.delete("/guest")
    assert result["vms"][0]["state"] == "powered on"
    assert result["vms"][0]["tools"] is None
    _unchanged(world, before)


def test_a_drill_of_a_dhcp_guest_passes_isolated(lab, lab_blocks, world):
    vm = lab["cases"]["dhcp_vm"]
    before = world.snapshot()
    results = restore_drill(vms=[vm], deadline_s=20)
    assert [r["passed"] for r in results] == [True], results
    assert results[0]["ip"] is None  # isolated: no DHCP answer, and not required
    state = restore_drill(vms=[vm], deadline_s=3, require_ip="always", return_state=True)
    assert state.is_failed()
    _unchanged(world, before)


# ---- copies visible to more than one host ----------------------------------------------------


def test_a_copy_through_a_shared_host_object_is_cleaned_from_every_host_without_apd(
    lab, lab_blocks, world, vclab
):
    ds = _ds(lab, "ds-iscsi-01")  # exported to the cluster-wide host object on primera1
    assert lab["cases"]["shared_host_object"]
    before = world.snapshot()
    seq = vclab.get("/calls/log?since=0")["last_seq"]
    paused = PausedRestore(ds, "-shared")
    try:
        copy_ds = next(
            d
            for d in vclab.state()["datastores"]
            if d["name"].startswith(f"sr-{paused.run_id[:8]}-")
        )
        assert sorted(copy_ds["mounts"]) == ["esx-01", "esx-02", "esx-03"], copy_ds
        paused.answer(action="stop")
    finally:
        state = paused.end()
    assert state.is_completed(), state
    assert state.result()["left_behind"] == []
    assert world.bad_events_since(before["events"]) == []  # no APD on any host
    calls = vclab.get(f"/calls/log?since={seq}")["calls"]
    unmounts = {c["host"] for c in calls if c["method"] == "UnmountVmfsVolume"}
    detaches = {c["host"] for c in calls if c["method"] == "DetachScsiLun"}
    assert unmounts == detaches == {"esx-01", "esx-02", "esx-03"}
    _unchanged(world, before)


def test_a_shared_igroup_is_never_used_for_a_copy(lab, lab_blocks, world):
    ds = _ds(lab, "ds-iscsi-02")
    before = world.snapshot()
    result = restore_from_snapshot(vms=ds["vms"][:1])
    presented = next(e for e in result["side_effects"] if e["side effect"] == "presentation")
    assert "shared with other hosts" not in presented["object"], presented
    assert lab["cases"]["shared_igroup"] not in presented["object"]
    _unchanged(world, before)


# ---- kept means kept ---------------------------------------------------------------------------


def test_a_kept_vm_survives_a_production_apd_and_a_janitor_with_no_ttl(
    lab, lab_blocks, world, vclab, si
):
    fc = _ds(lab, "ds-fc-01")
    vm = fc["vms"][2]
    result = restore_from_snapshot(
        vms=[vm], operation="full_restore", placement={"name_suffix": "-kept"}
    )
    kept = f"{vm}-kept"
    assert result["vms"][0]["kept"]
    obj = find(si, vim.VirtualMachine, kept)
    host = obj.runtime.host.name
    array = next(a for a in lab["arrays"] if a["name"] == "primera1")
    hpe = HpeOps(array, lab["ca_bundle"])
    vluns = hpe.http.get(hpe.base + "/vluns").json()["members"]
    lost = next(
        v
        for v in vluns
        if v["volumeName"] == fc["volume"] and v["hostname"] == _fc_host_object(hpe, lab, host)
    )
    events = len(vclab.events())
    hpe._ok(
        hpe.http.delete(
            f"{hpe.base}/vluns/{quote(fc['volume'])},{lost['lun']},{quote(lost['hostname'])}"
        )
    )
    try:
        deadline = time.monotonic() + 20
        while str(obj.runtime.connectionState) != "inaccessible":
            assert time.monotonic() < deadline, obj.runtime.connectionState
            time.sleep(0.2)
        assert _events_since(vclab, events, "apd")  # production is down on that host
        state = janitor(ttl_minutes=0, return_state=True)
        assert state.is_completed(), state
        assert find(si, vim.VirtualMachine, kept) is not None  # still registered
        rows = [r for r in state.result()["rows"] if r["object"] == kept]
        assert rows and rows[0]["action"] == "keep", rows
    finally:
        hpe._ok(
            hpe.http.post(
                hpe.base + "/vluns",
                json={"volumeName": fc["volume"], "hostname": lost["hostname"], "lun": lost["lun"]},
            )
        )
        rescan(vs.get_host(si, host), "fc")
    assert _events_since(vclab, events, "apd_exit")
    assert str(obj.runtime.connectionState) == "connected"
    discard_vm(si, kept)


def _fc_host_object(hpe: HpeOps, lab, host: str) -> str:
    cfg = next(h for h in lab["hosts"] if h["name"] == host)
    return hpe._host_for(cfg, "fc")


# ---- only the arrays a restore needs -----------------------------------------------------------


def test_a_restore_from_primera1_completes_while_ontap1_is_down(lab, lab_blocks, world, vclab, si):
    before = world.snapshot()
    control.stop_part(Path(lab["dir"]), "ontap1")
    try:
        # ontap1 first: the planner asks it, finds it down, and goes on with primera1
        state = restore_from_snapshot(
            vms=["app-01"], arrays=["ontap1", "primera1"], return_state=True
        )
    finally:
        control.start_part(Path(lab["dir"]), "ontap1")
    assert state.is_completed(), state
    assert state.result()["vms"][0]["state"] == "verified"
    plan = _artifact("restore-plan", str(state.state_details.flow_run_id))
    assert "Arrays not reachable (not needed): ontap1:" in plan, plan
    # ontap1's datastores come back with it
    deadline = time.monotonic() + 30
    while any(
        not m["accessible"]
        for d in vclab.state()["datastores"]
        if d["name"] in ("ds-nfs-01", "ds-iscsi-02")
        for m in d["mounts"].values()
    ):
        assert time.monotonic() < deadline, vclab.state()["datastores"]
        time.sleep(0.5)
    _unchanged(world, before, "arrays", "datastores", "vms")


def test_an_array_that_is_down_and_needed_is_named(lab, lab_blocks, world):
    before = world.snapshot()
    control.stop_part(Path(lab["dir"]), "ontap1")
    try:
        state = restore_from_snapshot(vms=["jump-01"], return_state=True)
    finally:
        control.start_part(Path(lab["dir"]), "ontap1")
    text = _failure(state)
    assert "datastore ds-iscsi-02 (" in text and "is not on any reachable array" in text, text
    assert "cannot be reached: ontap1 (" in text, text
    _unchanged(world, before, "arrays", "vms")


def _artifact(key: str, flow_run: str) -> str:
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
    )

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[key]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[uuid.UUID(flow_run)]),
            ),
            limit=1,
        )
    assert found, key
    return str(found[0].data)


# ---- long vSphere tasks ------------------------------------------------------------------------


def test_a_migration_that_outlives_its_wait_keeps_the_vm_and_says_what_to_do(
    lab, lab_blocks, world, vclab, si, monkeypatch
):
    vm = _ds(lab, "ds-nfs-01")["vms"][1]
    before = world.snapshot()
    monkeypatch.setattr(settings(), "task_timeout_s", 2)
    vclab.post("/faults", {"operation": "RelocateVM_Task", "duration_s": 8, "times": 1})
    state = restore_from_snapshot(
        vms=[vm],
        finish={"action": "migrate"},
        placement={"name_suffix": "-slow"},
        return_state=True,
    )
    text = _failure(state)
    assert "outlived the wait and goes on in vCenter; the VM runs and is kept" in text, text
    assert "run the janitor for restore" in text
    moved = find(si, vim.VirtualMachine, f"{vm}-slow")
    assert moved is not None and moved.runtime.powerState == "poweredOn"
    time.sleep(8)  # vCenter finishes the move
    run = str(state.state_details.flow_run_id)
    swept = janitor(runs=[run], ttl_minutes=0, return_state=True)
    assert swept.is_completed(), swept
    assert find(si, vim.VirtualMachine, f"{vm}-slow").config.files.vmPathName.startswith(
        "[ds-nfs-01]"
    )
    _unchanged(world, before, "arrays", "devices")
    discard_vm(si, f"{vm}-slow")


def test_a_retry_of_a_finished_run_makes_a_new_copy(lab, lab_blocks, world):
    """The UI's Retry of a finished restore runs the same flow run again: it must not reuse
    the copy of the first attempt, which its teardown deleted."""
    ds = _ds(lab, "ds-fc-01")
    before = world.snapshot()
    state = restore_from_snapshot(vms=ds["vms"][:1], return_state=True)
    assert state.is_completed(), state
    first = state.result()["side_effects"][0]["object"]
    run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(run_id, AwaitingRetry(), force=True)
        flow_run: FlowRun = client.read_flow_run(run_id)
    again = run_flow(
        restore_from_snapshot,
        flow_run=flow_run,
        parameters={"vms": ds["vms"][:1]},
        return_type="state",
    )
    assert again.is_completed(), again
    second = again.result()["side_effects"][0]["object"]
    assert second != first
    _unchanged(world, before)


def test_a_relocation_retried_while_the_first_still_runs_waits_for_it(lab, lab_blocks, si, vclab):
    """The first attempt's reply was lost but vCenter goes on moving the VM: the retry waits
    for that task instead of starting a second relocation, and sees the VM in place."""
    from tests.support.fixtures import mounted_copy, register

    with (
        mounted_copy(si, lab, "ds-nfs-01", host_index=0) as src,
        mounted_copy(si, lab, "ds-iscsi-02", host_index=0) as dst,
    ):
        vm = register(si, lab, src.ds.name, "file-01", src.esx, "retried-move")
        try:
            vclab.post("/faults", {"operation": "RelocateVM_Task", "duration_s": 1.5, "times": 1})
            calls = vclab.calls().get("RelocateVM_Task", 0)
            first = vm.RelocateVM_Task(vim.vm.RelocateSpec(datastore=dst.ds))  # "lost"
            assert first.info.state == vim.TaskInfo.State.running
            how = vs.relocate(vm, dst.ds, 60)
            assert how == "finished a relocation already running"
            assert vclab.calls()["RelocateVM_Task"] == calls + 1  # no second relocation
            assert vm.config.files.vmPathName == f"[{dst.ds.name}] retried-move/file-01.vmx"
            assert vs.relocate(vm, dst.ds, 60) == "already there"
            assert vclab.calls()["RelocateVM_Task"] == calls + 1
        finally:
            vm.UnregisterVM()


def test_a_file_copy_retried_while_the_first_still_runs_waits_and_skips_it(
    lab, lab_blocks, si, vclab, http
):
    ds = _ds(lab, "ds-iscsi-02")
    vm = ds["vms"][0]
    src = vs.get_datastore(si, ds["name"])
    folder = f"{vm}-copy-retry"
    dc = vs.datacenter_of(src)
    fm = si.content.fileManager
    fm.MakeDirectory(name=f"[{ds['name']}] {folder}", datacenter=dc, createParentDirectories=True)
    try:
        vclab.post("/faults", {"operation": "CopyDatastoreFile_Task", "duration_s": 2, "times": 1})
        calls = vclab.calls().get("CopyDatastoreFile_Task", 0)
        patterns = [f"{vm}.vmx", "*.nvram"]
        # the first attempt gives up on its first file (its wait is shorter than the copy)
        with pytest.raises(vs.TaskStillRunning):
            vs.copy_files(si, src, vm, patterns, src, folder, 0.5)
        # the retry waits for that copy instead of starting a second one on the same file,
        # then skips it (copied whole) and copies the other
        copied = vs.copy_files(si, src, vm, patterns, src, folder, 60)
        assert copied == [f"{vm}.nvram", f"{vm}.vmx"]
        assert vclab.calls()["CopyDatastoreFile_Task"] == calls + 2
        for name in copied:
            assert read_datastore_file(lab, http, ds["name"], f"{folder}/{name}") == (
                read_datastore_file(lab, http, ds["name"], f"{vm}/{name}")
            )
    finally:
        vs.wait(fm.DeleteDatastoreFile_Task(f"[{ds['name']}] {folder}", dc), 60)


def test_a_full_restore_whose_move_outlives_its_wait_keeps_the_vm(
    lab, lab_blocks, world, vclab, si, monkeypatch
):
    vm = _ds(lab, "ds-nfs-01")["vms"][2]
    before = world.snapshot()
    monkeypatch.setattr(settings(), "task_timeout_s", 2)
    vclab.post("/faults", {"operation": "RelocateVM_Task", "duration_s": 8, "times": 1})
    state = restore_from_snapshot(
        vms=[vm],
        operation="full_restore",
        placement={"name_suffix": "-slowfull"},
        return_state=True,
    )
    text = _failure(state)
    assert "outlived the wait and goes on in vCenter; the VM is kept" in text, text
    restored = find(si, vim.VirtualMachine, f"{vm}-slowfull")
    assert restored is not None  # not torn down while vCenter moves it
    time.sleep(8)
    swept = janitor(runs=[str(state.state_details.flow_run_id)], ttl_minutes=0, return_state=True)
    assert swept.is_completed(), swept
    assert restored.config.files.vmPathName.startswith("[ds-nfs-01]")
    _unchanged(world, before, "arrays", "devices")
    discard_vm(si, f"{vm}-slowfull")


def test_an_automatic_migration_keeps_only_the_vms_whose_migration_failed(
    lab, lab_blocks, world, vclab, si
):
    """One VM's tools never start (it fails before any migration), the other's Storage
    vMotion fails: only the second is kept running from its copy."""
    ds = _ds(lab, "ds-iscsi-02")
    a, b = ds["vms"][1], ds["vms"][2]
    before = world.snapshot()
    vclab.post("/guest", {"match": f"{a}-auto*", "tools": "never"}).raise_for_status()
    vclab.post("/faults", {"operation": "RelocateVM_Task", "error": "InvalidState", "times": 1})
    try:
        state = restore_from_snapshot(
            vms=[a, b],
            finish={"action": "migrate"},
            placement={"name_suffix": "-auto"},
            return_state=True,
        )
    finally:
        vclab.delete("/guest")
    text = _failure(state)
    assert f"{b}: migration to ds-iscsi-02 failed" in text and "it still runs from" in text
    assert find(si, vim.VirtualMachine, f"{a}-auto") is None  # torn down, never kept
    kept = find(si, vim.VirtualMachine, f"{b}-auto")
    assert kept is not None and kept.runtime.powerState == "poweredOn"
    # the user moves it off the copy, then the janitor removes the copy
    vs.relocate(kept, vs.get_datastore(si, "ds-iscsi-02"), 60)
    swept = janitor(runs=[str(state.state_details.flow_run_id)], ttl_minutes=0, return_state=True)
    assert swept.is_completed(), swept
    _unchanged(world, before, "arrays", "devices")
    discard_vm(si, f"{b}-auto")


def test_an_array_block_that_cannot_be_used_is_left_out_unless_needed(lab, lab_blocks, world):
    from blocks.hpe import HpePrimeraArray

    a = next(x for x in lab["arrays"] if x["name"] == "primera1")
    # a block saved before URLs had to be https (validation skipped to save it as it was)
    HpePrimeraArray.model_construct(
        url=a["url"].replace("https://", "http://"),
        user="u",
        password="p",
        verify_tls=True,
        ca_certificate=None,
        timeout_s=60.0,
    ).save("old-http-array", overwrite=True)
    before = world.snapshot()
    try:
        state = restore_from_snapshot(vms=[_ds(lab, "ds-fc-01")["vms"][0]], return_state=True)
        assert state.is_completed(), state
        text = _failure(
            restore_from_snapshot(vms=["app-01"], arrays=["old-http-array"], return_state=True)
        )
        assert "array block old-http-array cannot be used:" in text and "https://" in text
        assert "\n" not in text
    finally:
        with get_client(sync_client=True) as client:
            doc = client.read_block_document_by_name("old-http-array", "hpe-primera-array")
            client.delete_block_document(doc.id)
    _unchanged(world, before)
