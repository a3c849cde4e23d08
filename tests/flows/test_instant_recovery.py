"""Instant recovery through the restore flow, over iSCSI, FC and NFS, on both arrays."""

from __future__ import annotations

import threading
import time

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
from prefect.client.schemas.objects import StateType
from prefect.flow_runs import resume_flow_run
from pyVmomi import vim

from flows.janitor import janitor
from flows.restore import restore_from_snapshot
from lab.seed import disk_marker
from tests.support.vcenter import find
from tests.support.vsphere_steps import attach_disk, detach_disk, read_datastore_file
from tests.support.world import discard_vm

COPY_CALL = {"primera1": "POST /api/v1/volumes/{}", "ontap1": "POST /api/storage/volumes"}

CASES = [
    pytest.param("ds-iscsi-01", "iscsi", id="hpe-iscsi"),
    pytest.param("ds-fc-01", "fc", id="hpe-fc"),
    pytest.param("ds-nfs-01", "nfs", id="ontap-nfs"),
    pytest.param("ds-iscsi-02", "iscsi", id="ontap-iscsi"),
]


@pytest.mark.parametrize(("ds_name", "protocol"), CASES)
def test_instant_recovery_of_three_vms_shares_one_copy(
    lab, lab_blocks, si, http, vclab, world, ds_name, protocol
):
    ds = next(d for d in lab["datastores"] if d["name"] == ds_name)
    before = world.snapshot()
    copies_before = world.array_calls(ds["array"]).get(COPY_CALL[ds["array"]], 0)
    since = vclab.get("/calls/log?since=0")["last_seq"]

    result = restore_from_snapshot(
        vms=ds["vms"],
        snapshot=ds["snapshots"][0],
        finish={"action": "migrate"},
        placement={"name_suffix": f"-ir-{protocol}"},
    )

    try:
        outcomes = result["vms"]
        assert [o["state"] for o in outcomes] == ["migrated"] * 3
        assert {o["host"] for o in outcomes} == {outcomes[0]["host"]}
        host = outcomes[0]["host"]
        # exactly one copy for the three VMs
        assert world.array_calls(ds["array"])[COPY_CALL[ds["array"]]] == copies_before + 1
        # the VMs ran from the copy with the snapshot's content (now moved to production)
        for o in outcomes:
            assert o["datastore"] == ds_name and o["tools"] == "guestToolsRunning"
            text = read_datastore_file(
                lab, http, ds_name, f"{o['restored_as']}/{o['vm']}-flat.vmdk"
            )
            assert text == disk_marker(o["vm"], 1)
        # rescans: only the adapters of this protocol, on the chosen host once to find the
        # copy, and on every host that saw it once after it was withdrawn (ds-iscsi-01 goes
        # through primera1's cluster-wide host object: every host sees that copy)
        log = vclab.get(f"/calls/log?since={since}")["calls"]
        rescans = [c for c in log if c["method"].startswith("Rescan")]
        assert not [c for c in rescans if c["method"] == "RescanAllHba"]
        shared = ds_name == "ds-iscsi-01"
        saw = {h["name"] for h in lab["hosts"]} if shared else {host}
        per_adapter: dict[tuple[str, str], int] = {}
        for c in rescans:
            key = (c["host"], c["arg"])
            per_adapter[key] = per_adapter.get(key, 0) + 1
        adapters = {"iscsi": ["vmhba64"], "fc": ["vmhba2", "vmhba3"], "nfs": []}[protocol]
        expected = {(h, a): 2 if h == host else 1 for h in saw for a in adapters}
        assert per_adapter == expected
        # nothing of the copy is left; no APD on the way
        after = world.snapshot()
        assert after["arrays"] == before["arrays"]
        assert after["datastores"] == before["datastores"]
        assert after["devices"] == before["devices"]
        assert world.bad_events_since(before["events"]) == []
        assert result["left_behind"] == []
        assert all(e["undone"] in ("yes", "kept") for e in result["side_effects"])
    finally:
        for o in result["vms"]:
            discard_vm(si, o["restored_as"])


def test_two_restores_of_the_same_vm_at_once_get_two_copies(lab, lab_blocks, world):
    ds = next(d for d in lab["datastores"] if d["name"] == "ds-fc-01")
    copies_before = world.array_calls("primera1").get(COPY_CALL["primera1"], 0)
    before = world.snapshot()
    results: dict[int, dict] = {}
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            results[i] = restore_from_snapshot(vms=["web-02"], snapshot="latest")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert errors == []
    assert {results[1]["vms"][0]["state"], results[2]["vms"][0]["state"]} == {"verified"}
    copies = {r["side_effects"][0]["object"] for r in results.values()}
    assert len(copies) == 2
    assert world.array_calls("primera1")[COPY_CALL["primera1"]] == copies_before + 2
    assert results[1]["restore_id"] != results[2]["restore_id"]
    after = world.snapshot()
    assert after["arrays"] == before["arrays"] and after["vms"] == before["vms"]
    assert world.bad_events_since(before["events"]) == []
    assert ds["name"] in after["datastores"]


def _paused_runs() -> set[str]:
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
            )
        )
    return {str(r.id) for r in runs}


def _paused_run_id(timeout: float = 60, before: set[str] | None = None) -> str:
    """Wait until a restore pauses; return its run id (not one of ``before``, the runs that
    were paused already)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        new = _paused_runs() - (before or set())
        if new:
            return sorted(new)[0]
        time.sleep(0.2)
    raise TimeoutError("the restore never paused")


def test_wait_for_user_pauses_with_the_vms_running_from_the_copy(lab, lab_blocks, si, http, world):
    ds = next(d for d in lab["datastores"] if d["name"] == "ds-nfs-01")
    before = world.snapshot()
    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["result"] = restore_from_snapshot(
                vms=ds["vms"][:2],
                snapshot=ds["snapshots"][1],
                finish={"action": "wait_for_user"},
            )
        except BaseException as exc:
            box["error"] = exc

    t = threading.Thread(target=run)
    t.start()
    try:
        run_id = _paused_run_id()
        state = world.vclab.state()
        running = [v for v in state["vms"] if v["name"].endswith(f"-sr-{run_id[:6]}")]
        assert len(running) == 2 and all(v["power_state"] == "poweredOn" for v in running)
        copy_ds = running[0]["path"].split("]")[0][1:]
        assert copy_ds.startswith(f"sr-{run_id[:8]}-")
        vm = ds["vms"][0]
        assert read_datastore_file(lab, http, copy_ds, f"{vm}/{vm}-flat.vmdk") == disk_marker(vm, 2)
        resume_flow_run(run_id, run_input={"action": "stop"})
    finally:
        t.join(timeout=120)
    assert "error" not in box, box.get("error")
    result = box["result"]
    assert result["left_behind"] == []
    after = world.snapshot()
    assert after["arrays"] == before["arrays"]
    assert after["datastores"] == before["datastores"] and after["vms"] == before["vms"]


def _pause_key(run_id: str, timeout: float = 60) -> str:
    """Wait until the run is paused; return the key of that pause."""
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            state = client.read_flow_run(run_id).state
            if state is not None and state.is_paused():
                return state.state_details.pause_key or ""
            time.sleep(0.2)
    raise TimeoutError("the restore did not pause")


class PausedRestore:
    """A one-VM instant recovery with finish=wait_for_user, run in a thread."""

    def __init__(self, ds: dict, suffix: str, vms: list[str] | None = None, **params):
        self.box: dict[str, object] = {}
        placement = {"name_suffix": suffix, **params.pop("placement", {})}
        paused_already = _paused_runs()
        self.thread = threading.Thread(
            target=lambda: self.box.update(
                state=restore_from_snapshot(
                    vms=vms or ds["vms"][:1],
                    snapshot=ds["snapshots"][0],
                    finish={"action": "wait_for_user"},
                    placement=placement,
                    return_state=True,
                    **params,
                )
            )
        )
        self.thread.start()
        self.run_id = _paused_run_id(before=paused_already)
        self.pause = _pause_key(self.run_id)

    def answer(self, **run_input: str) -> None:
        """Resume with ``run_input``."""
        resume_flow_run(self.run_id, run_input=run_input)

    def answer_and_wait_for_the_next_pause(self, **run_input: str) -> str:
        """Resume with ``run_input``; return the key of the pause that follows."""
        self.answer(**run_input)
        deadline = time.monotonic() + 60
        while (key := _pause_key(self.run_id)) == self.pause and time.monotonic() < deadline:
            time.sleep(0.2)
        self.pause = key
        return key

    def end(self):
        """Wait for the run to end; return its final state."""
        self.thread.join(timeout=120)
        return self.box.get("state")


def test_a_migration_target_chosen_in_the_form_is_checked_before_anything_moves(
    lab, lab_blocks, world
):
    """Migrating onto the snapshot copy (deleted at the end) or a datastore that does not
    exist is refused, and the run pauses again for another decision."""
    ds = next(d for d in lab["datastores"] if d["name"] == "ds-iscsi-02")
    before = world.snapshot()
    paused = PausedRestore(ds, "-ask")
    try:
        keys = [paused.pause]
        restored = next(v for v in world.vclab.state()["vms"] if v["name"].endswith("-ask"))
        copy_ds = restored["path"].split("]")[0][1:]
        for target in (copy_ds, "no-such-ds"):
            keys.append(
                paused.answer_and_wait_for_the_next_pause(action="migrate", migrate_to=target)
            )
            vm = next(v for v in world.vclab.state()["vms"] if v["name"].endswith("-ask"))
            assert vm["path"].startswith(f"[{copy_ds}]")  # not moved
        assert len(set(keys)) == 3, keys
        paused.answer(action="stop")
    finally:
        state = paused.end()
    assert state.is_completed(), state
    after = world.snapshot()
    for key in ("arrays", "datastores", "vms", "devices"):
        assert after[key] == before[key], key


def test_a_failed_migration_asks_again_instead_of_tearing_the_vm_down(
    lab, lab_blocks, world, vclab
):
    """The user chose migrate and Storage vMotion failed: the VM still runs from the copy,
    so the run pauses again (here the user then stops) rather than deleting it."""
    ds = next(d for d in lab["datastores"] if d["name"] == "ds-nfs-01")
    before = world.snapshot()
    paused = PausedRestore(ds, "-mig")
    try:
        first = paused.pause
        vclab.post(
            "/faults", {"operation": "RelocateVM_Task", "error": "InvalidState", "times": 1}
        ).raise_for_status()
        assert paused.answer_and_wait_for_the_next_pause(action="migrate") != first
        vm = next(v for v in world.vclab.state()["vms"] if v["name"].endswith("-mig"))
        assert vm["path"].startswith(f"[sr-{paused.run_id[:8]}-")
        assert vm["power_state"] == "poweredOn"
        paused.answer(action="stop")
    finally:
        state = paused.end()
    assert state.is_completed(), state
    finished = state.result()["finished_with"]
    assert finished.startswith("stop, after a failed migration") and "InvalidState" in finished
    after = world.snapshot()
    for key in ("arrays", "datastores", "vms", "devices"):
        assert after[key] == before[key], key


def test_a_host_limit_below_the_vm_count_throttles_steps_and_never_deadlocks(
    lab, lab_blocks, world
):
    """The per-host limit counts vSphere steps, not whole VMs: with one slot for the host,
    a three-VM restore still finishes (a wrapper holding the slot would wait forever)."""
    ds = next(d for d in lab["datastores"] if d["name"] == "ds-iscsi-01")
    host, tag = "esx-02", "esxi-esx-02"
    before = world.snapshot()
    with get_client(sync_client=True) as client:
        client.create_concurrency_limit(tag=tag, concurrency_limit=1)
    try:
        state = restore_from_snapshot(
            vms=ds["vms"],
            snapshot=ds["snapshots"][0],
            placement={"target_host": host, "name_suffix": "-limited"},
            return_state=True,
        )
        assert state.is_completed(), state
        result = state.result()
        assert [o["state"] for o in result["vms"]] == ["verified"] * 3
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id={"any_": [state.state_details.flow_run_id]})
            )
            limit = client.read_concurrency_limit_by_tag(tag)
        limited = [r.name for r in runs if tag in r.tags]
        # the planner's array reads are task runs of their own, named in the UI
        names = [r.name for r in runs]
        assert any(n.startswith("find the volume behind ") for n in names), names
        assert any(n.startswith("list snapshots of DS_ISCSI_01 on primera1") for n in names)
        # the policy of flows/slots.py: booting takes a slot, registering does not
        assert len([n for n in limited if n.startswith("power on ")]) == 3, limited
        assert any(n.startswith("rescan ") for n in limited), limited
        assert not [n for n in limited if n.startswith(("register ", "prepare "))], limited
        assert not [r.name for r in runs if r.name.startswith("restore ") and tag in r.tags]
        # waiting for a guest is no work for the host: it must not hold one of its slots
        waits = [r for r in runs if r.name.startswith("wait for VMware Tools")]
        assert len(waits) == 3 and not [r.name for r in waits if tag in r.tags]
        assert limit.active_slots == []
    finally:
        with get_client(sync_client=True) as client:
            client.delete_concurrency_limit_by_tag(tag)
    assert world.snapshot()["arrays"] == before["arrays"]
    assert world.snapshot()["datastores"] == before["datastores"]


def test_cleanup_never_touches_a_vm_that_borrowed_a_disk_from_the_copy(lab, lab_blocks, si, world):
    """While the restore waits, an admin gives a production VM a disk from the copy (to pull
    files out of it). Cleanup must stop and say so, not power that VM off."""
    ds = next(d for d in lab["datastores"] if d["name"] == "ds-iscsi-01")
    before = world.snapshot()
    box: dict[str, object] = {}

    def run() -> None:
        box["state"] = restore_from_snapshot(
            vms=ds["vms"][:1],
            snapshot=ds["snapshots"][0],
            placement={"target_host": "esx-01"},
            finish={"action": "wait_for_user"},
            return_state=True,
        )

    t = threading.Thread(target=run)
    t.start()
    prod = disk = None
    try:
        run_id = _paused_run_id()
        restored = next(
            v for v in world.vclab.state()["vms"] if v["name"].endswith(f"-sr-{run_id[:6]}")
        )
        copy_ds = restored["path"].split("]")[0][1:]
        fc = next(d for d in lab["datastores"] if d["name"] == "ds-fc-01")
        prod = next(
            vm
            for vm in (find(si, vim.VirtualMachine, n) for n in fc["vms"])
            if vm.runtime.host.name == "esx-01"
        )
        vm_dir = ds["vms"][0]
        disk = attach_disk(prod, f"[{copy_ds}] {vm_dir}/{vm_dir}.vmdk")
        resume_flow_run(run_id, run_input={"action": "stop"})
        t.join(timeout=120)
        state = box["state"]
        assert state.is_failed()
        text = str(state.result(raise_on_failure=False))
        assert f"VM(s) {prod.name} use a disk on datastore {copy_ds}" in text, text
        assert "cleanup could not finish; still there:" in text, text
        assert find(si, vim.VirtualMachine, prod.name).runtime.powerState == "poweredOn"
        assert copy_ds in world.snapshot()["datastores"]  # left for the janitor, on purpose
    finally:
        t.join(timeout=120)
        if disk is not None:
            detach_disk(prod, disk)
    state = janitor(runs=[run_id], ttl_minutes=0, return_state=True)
    assert state.is_completed(), state
    after = world.snapshot()
    for key in ("arrays", "datastores", "vms", "devices"):
        assert after[key] == before[key], key
    assert find(si, vim.VirtualMachine, prod.name).runtime.powerState == "poweredOn"
