"""The janitor: it finds only tagged objects, asks Prefect whose they are, and removes those
of gone runs in the safe order — never an untagged object, whatever its name."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
)
from prefect.events import emit_event
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
from prefect.states import Completed, Paused, Running
from pyVmomi import vim

from blocks.models import CopyTag, HostIdentity, NfsBacking, SnapshotCopy, VmfsBacking
from blocks.registry import load_arrays
from blocks.vcenter import VCenterCredentials
from flows.janitor import PLANNED, janitor
from tasks import array_tasks as at
from tasks import janitor_tasks as jt
from tasks import vsphere as vs
from tasks import vsphere_tasks as vt
from tests.support.fixtures import mounted_copy, register
from tests.support.storage_ops import ops_for
from tests.support.vcenter import find
from tests.support.vsphere_steps import attach_disk, detach_disk, power_on

LONG_AGO = timedelta(hours=3)
SAFE_ORDER = ["PowerOffVM_Task", "UnregisterVM", "UnmountVmfsVolume", "DetachScsiLun", "RescanHba"]


@pytest.fixture(autouse=True, scope="module")
def _quick_flow_exit(prefect_api) -> Iterator[None]:
    """No flow-run heartbeat thread in this module's janitor runs: joining it costs about
    1 s per run (the rule tests emit their heartbeat events themselves)."""
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield


# ---- what a crashed restore leaves, made with the restore's own parts ----------------------


@dataclass
class Leftover:
    """A restore's tagged objects: copy presented to one host, datastore, maybe a VM."""

    run: str
    array: str
    copy: SnapshotCopy
    host: str
    protocol: str
    datastore: str
    vm: str | None = None


def leave_behind(
    si,
    lab,
    ds_name: str,
    run: str | None = None,
    age: timedelta = LONG_AGO,
    host="esx-01",
    vm=True,
    server: str = "",
) -> Leftover:
    """Do what a restore does up to a running VM, then stop as if its process was killed."""
    run = run or str(uuid.uuid4())  # not a flow run: its state is "unknown"
    vc = VCenterCredentials.load("default")
    cfg = next(d for d in lab["datastores"] if d["name"] == ds_name)
    array = load_arrays([cfg["array"]])[0]
    info = vs.get_datastore(si, ds_name).info
    backing = (
        NfsBacking(server=info.nas.remoteHost, path=info.nas.remotePath)
        if cfg["protocol"] == "nfs"
        else VmfsBacking(naa=info.vmfs.extent[0].diskName)
    )
    volume = array.find_volume(backing)
    snap = array.list_snapshots(volume)[0]
    tag = CopyTag(
        run=run,
        created=datetime.now(UTC) - age,
        source=f"{volume.name}@{snap.name}",
        server=server,
    )
    copy = array.create_copy(volume, snap, array.copy_name(run, at.copy_key(volume, snap)), tag)
    esx = vs.get_host(si, host)
    identity = HostIdentity(
        name=host,
        iqns=[vs.sw_iscsi_adapter(esx).iScsiName],
        wwpns=vs.host_wwpns(esx),
        vmk_ips=vs.host_vmk_ips(esx),
    )
    protocol = cfg["protocol"]
    p = at.present_copy.fn(array, copy, identity, protocol)
    name = f"sr-{run[:8]}-{ds_name}"
    if protocol == "nfs":
        ds = vt.mount_nfs.fn(vc, host, p.nfs_server or "", p.nfs_path or "", name, tag)
    else:
        if protocol == "iscsi":
            vt.ensure_static_targets.fn(vc, host, p.iscsi_targets)
        vt.rescan_adapters.fn(vc, host, protocol)
        ds = vt.resignature_copy.fn(vc, host, copy.naa or "", name, tag)
    left = Leftover(run, array.name, copy, host, protocol, ds.name)
    if vm:
        src = cfg["vms"][0]
        vm_tag = tag.model_copy(update={"datastore": ds.name})
        ref = vt.register_vm.fn(
            vc, host, ds.name, f"{src}/{src}.vmx", f"{src}-sr-{run[:8]}", vm_tag
        )
        vt.disconnect_nics.fn(vc, ref)  # as a restore does while the original runs
        vt.power_on_vm.fn(vc, ref, "copied")
        left.vm = ref.name
    return left


def sweep_by_hand(si, left: Leftover) -> None:
    """Remove a leftover in the safe order without the janitor (when a test left it), on
    every host that mounted or sees the copy (a shared host object exports it to all)."""
    hosts = [vs.get_host(si, h) for h in vs.names(si, vim.HostSystem)]
    ds = find(si, vim.Datastore, left.datastore)
    if ds is not None:
        for v in list(ds.vm):
            vs.power_off(v, 60)
            vs.unregister(v)
        for esx in hosts:
            if left.protocol == "nfs":
                vs.remove_nas(esx, ds)
            else:
                vs.unmount_vmfs(esx, ds.info.vmfs.uuid)
    if left.copy.naa:
        for esx in hosts:
            vs.detach_lun(esx, left.copy.naa)
    array = load_arrays([left.array])[0]
    found = array.find_copy(left.copy.name)
    if found is not None:
        array.delete_copy(found)
    if left.protocol != "nfs":
        for esx in hosts:
            vs.rescan(esx, vs.adapters_for(esx, left.protocol))


@pytest.fixture
def leftovers(lab, lab_blocks, si) -> Iterator[list[Leftover]]:
    """A list the test adds its leftovers to; whatever the janitor did not remove goes here."""
    made: list[Leftover] = []
    yield made
    for left in made:
        sweep_by_hand(si, left)


# ---- decoys: our look, not our tag ---------------------------------------------------------


@dataclass
class Decoys:
    """Untagged objects that look like ours: they must survive every janitor run."""

    copies: dict[str, str] = field(default_factory=dict)  # array -> copy name
    datastore: str = "sr-looks-like-ours"
    vm: str = "sr-decoy-01"


@pytest.fixture(scope="module")
def decoys(lab, lab_blocks, si) -> Iterator[Decoys]:
    """An untagged sr- clone on primera1 presented to esx-02, mounted as datastore
    ``sr-looks-like-ours`` with a running VM ``sr-decoy-01``, and an untagged sr_ clone on
    ontap1 — all made with the arrays' raw REST APIs (a comment, but not our tag)."""
    d = Decoys()
    nfs = next(x for x in lab["datastores"] if x["name"] == "ds-nfs-01")
    ontap = ops_for(lab, "ontap1")
    clone = ontap.make_copy(nfs["volume"], nfs["snapshots"][0], f"sr_decoy_{uuid.uuid4().hex[:6]}")
    try:
        with mounted_copy(si, lab, "ds-iscsi-01", host_index=1) as m:
            name = m.ds.name
            m.ds.RenameDatastore(newName=d.datastore)
            try:
                power_on(register(si, lab, d.datastore, "app-01", m.esx, d.vm))
                d.copies = {"primera1": m.copy.name, "ontap1": clone.name}
                yield d
            finally:
                m.ds.RenameDatastore(newName=name)  # mounted_copy finds it by that name
    finally:
        ontap.delete(clone)


def assert_intact(world, d: Decoys) -> None:
    """The decoys are all there, the VM still running."""
    snap = world.snapshot()
    for array, name in d.copies.items():
        assert name in snap["arrays"][array]["copies"], name
    assert d.datastore in snap["datastores"] and d.vm in snap["vms"]
    vm = next(v for v in world.vclab.state()["vms"] if v["name"] == d.vm)
    assert vm["power_state"] == "poweredOn", vm


def changes(before: dict, after: dict) -> dict:
    """Return what differs in what the arrays and vCenter hold (not call counters)."""
    return {
        k: (before[k], after[k])
        for k in ("arrays", "datastores", "vms", "devices")
        if before[k] != after[k]
    }


def rows_of(result: dict, run: str) -> list[tuple[str, str, str, str]]:
    """Return (object, kind, action, result) of the report rows about ``run``."""
    return [
        (r["object"], r["kind"], r["action"], r["result"])
        for r in result["rows"]
        if r["run id"] == run
    ]


def run_janitor(**params) -> tuple[dict, str]:
    """Run the janitor; return its result and its flow run id (it must succeed)."""
    state = janitor(**params, return_state=True)
    assert state.is_completed(), state
    return state.result(), str(state.state_details.flow_run_id)


def artifact(key: str, flow_run: str):
    """Return the data of the artifact ``key`` that flow run ``flow_run`` published."""
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[key]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[uuid.UUID(flow_run)]),
            ),
            limit=1,
        )
    assert found, key
    return found[0].data


# ---- the tests -----------------------------------------------------------------------------


def test_force_without_runs_is_refused_before_anything_happens(lab, lab_blocks, world):
    before = world.snapshot()
    state = janitor(force=True, return_state=True)
    assert state.is_failed()
    text = str(state.result(raise_on_failure=False))
    assert "force=True needs runs" in text, text
    assert world.snapshot() == before  # not even a read of an array


def test_a_dry_run_changes_nothing_and_lists_what_it_would_do(
    lab, lab_blocks, si, world, decoys, leftovers
):
    left = leave_behind(si, lab, "ds-iscsi-01")
    leftovers.append(left)
    before = world.snapshot()

    result, run_id = run_janitor(dry_run=True)

    assert world.snapshot() == before  # no change, no mutating call, no storage event
    planned = rows_of(result, left.run)
    every = len(lab["hosts"])  # the shared host object: every host has the copy mounted
    rescan = "rescan the iscsi adapters so the device goes away"
    assert planned == [
        (left.vm, "VM", "power off and unregister", PLANNED),
        *[(left.datastore, "datastore", "unmount VMFS volume", PLANNED)] * every,
        *[(left.copy.naa, "device", "detach", PLANNED)] * every,
        (left.copy.name, "copy", "withdraw from every host", PLANNED),
        *[(left.copy.naa, "device", rescan, PLANNED)] * every,
        (left.copy.name, "copy", "delete", PLANNED),
    ]
    assert result["runs"][left.run]["state"] == "unknown"
    assert result["planned"] >= 1 and result["cleaned"] == 0
    names = {r["object"] for r in result["rows"]}
    assert not names & {decoys.datastore, decoys.vm, *decoys.copies.values()}
    assert "Dry run: nothing was changed." in artifact("janitor-summary", run_id)


def test_a_crashed_runs_objects_are_removed_in_the_safe_order_and_decoys_stay(
    lab, lab_blocks, si, world, vclab, decoys, leftovers
):
    before = world.snapshot()
    iscsi = leave_behind(si, lab, "ds-iscsi-01")
    nfs = leave_behind(si, lab, "ds-nfs-01", host="esx-02")
    leftovers += [iscsi, nfs]
    vm_moref = find(si, vim.VirtualMachine, iscsi.vm)._moId
    # a VM a full restore of the same run registered, moved to production and kept
    kept = find(si, vim.VirtualMachine, "db-01")
    vt._tag(si, kept, CopyTag(run=iscsi.run, created=datetime.now(UTC) - LONG_AGO))
    assert changes(before, world.snapshot())  # the leftovers are there
    seq = vclab.get("/calls/log?since=0")["last_seq"]
    try:
        result, run_id = run_janitor()
    finally:
        si.content.customFieldsManager.SetField(entity=kept, key=field_key(si), value="")

    after = world.snapshot()
    assert changes(before, after) == {}  # every tagged object of both runs is gone…
    assert world.bad_events_since(before["events"]) == []  # …without APD on the way
    assert_intact(world, decoys)  # and nothing untagged was touched
    assert find(si, vim.VirtualMachine, "db-01").runtime.powerState == "poweredOn"

    # vCenter saw the safe order for the VMFS copy: VM, volume, device, then the rescan
    calls = vclab.get(f"/calls/log?since={seq}")["calls"]
    mine = [
        c["method"]
        for c in calls
        if c["this"].endswith(f":{vm_moref}") or c.get("host") == iscsi.host
    ]
    assert [m for m in mine if m in SAFE_ORDER] == SAFE_ORDER, mine
    assert not {"RemoveDatastore", "DestroyDatastore"} & set(mine)

    # ds-iscsi-01's copy went through primera1's cluster-wide host object, and vCenter
    # mounted the resignatured volume on every host: each is cleaned, in the same order
    every = len(lab["hosts"])
    rescan = "rescan the iscsi adapters so the device goes away"
    assert rows_of(result, iscsi.run) == [
        (iscsi.vm, "VM", "power off and unregister", "done"),
        *[(iscsi.datastore, "datastore", "unmount VMFS volume", "done")] * every,
        *[(iscsi.copy.naa, "device", "detach", "done")] * every,
        (iscsi.copy.name, "copy", "withdraw from every host", "done"),
        *[(iscsi.copy.naa, "device", rescan, "done")] * every,
        (iscsi.copy.name, "copy", "delete", "done"),
        (
            "db-01",
            "VM",
            "keep",
            "it lives on datastore ds-iscsi-01 and its tag (of an older version) does not "
            "say which copy it was registered from (restored and kept, or migrated): it is "
            "never touched",
        ),
    ]
    assert rows_of(result, nfs.run) == [
        (nfs.vm, "VM", "power off and unregister", "done"),
        (nfs.datastore, "datastore", "remove NFS datastore", "done"),
        (nfs.copy.name, "copy", "withdraw from every host", "done"),
        (nfs.copy.name, "copy", "delete", "done"),
    ]
    table = str(artifact("janitor-report", run_id))
    assert iscsi.copy.name in table and nfs.datastore in table and decoys.datastore not in table
    assert "Everything decided for cleanup was cleaned." in artifact("janitor-summary", run_id)


def field_key(si) -> int:
    return next(f.key for f in si.content.customFieldsManager.field if f.name == vt.TAG_FIELD)


@flow(name="restore-stand-in")
def stand_in() -> None:
    """A flow whose runs the tests put in states by hand (never run)."""


def new_run(state) -> str:
    with get_client(sync_client=True) as client:
        return str(client.create_flow_run(stand_in, state=state).id)


def test_a_live_runs_objects_stay_until_forced(lab, lab_blocks, si, world, vclab, leftovers):
    start = world.snapshot()
    run = new_run(Running())  # a restore that is running right now
    left = leave_behind(si, lab, "ds-fc-01", run=run)
    leftovers.append(left)
    before = world.snapshot()

    result, _ = run_janitor()  # the scheduled sweep: everything, default rules
    assert world.snapshot() == before
    assert result["runs"][run]["state"] == "RUNNING" and not result["runs"][run]["gone"]
    kept = rows_of(result, run)
    assert {(o, a) for o, _, a, _ in kept} == {
        (left.copy.name, "keep"),
        (left.datastore, "keep"),
        (left.vm, "keep"),
    }
    assert all(r.startswith("its run is alive: RUNNING, last sign of life") for *_, r in kept)

    result, _ = run_janitor(runs=[run], force=True)
    assert changes(start, world.snapshot()) == {}
    assert world.bad_events_since(before["events"]) == []
    assert [a for _, _, a, _ in rows_of(result, run)] == [
        "power off and unregister",
        "unmount VMFS volume",
        "detach",
        "withdraw from every host",
        "rescan the fc adapters so the device goes away",
        "delete",
    ]
    rescans = vclab.get(f"/calls/log?method=RescanHba&since={0}")["calls"][-2:]
    assert {(c["host"], c["arg"]) for c in rescans} == {("esx-01", "vmhba2"), ("esx-01", "vmhba3")}
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(uuid.UUID(run), Completed(), force=True)


def test_young_objects_wait_for_the_ttl(lab, lab_blocks, si, world, leftovers):
    start = world.snapshot()
    left = leave_behind(si, lab, "ds-iscsi-02", age=timedelta(minutes=5), vm=False)
    leftovers.append(left)
    before = world.snapshot()

    result, _ = run_janitor(runs=[left.run])
    assert world.snapshot() == before
    assert [(o, a, r) for o, _, a, r in rows_of(result, left.run)] == [
        (left.copy.name, "keep", "younger than the TTL (5 min < 1 h 00 min)"),
        (left.datastore, "keep", "younger than the TTL (5 min < 1 h 00 min)"),
    ]

    result, _ = run_janitor(runs=[left.run], ttl_minutes=4)
    assert changes(start, world.snapshot()) == {}
    assert world.bad_events_since(before["events"]) == []
    assert result["cleaned"] == 1 and result["failed"] == 0


def test_a_failed_step_stops_that_copys_cleanup_and_fails_the_run(
    lab, lab_blocks, si, world, vclab, leftovers
):
    start = world.snapshot()
    left = leave_behind(si, lab, "ds-fc-01")
    leftovers.append(left)
    vclab.post("/faults", {"operation": "UnmountVmfsVolume", "error": "HostConfigFault"})

    state = janitor(runs=[left.run], return_state=True)

    assert state.is_failed()
    assert "could not clean" in str(state.result(raise_on_failure=False))
    vclab.delete("/faults")
    now = world.snapshot()
    # the VM went first; the volume stayed mounted, so the device, the copy and its
    # presentation were left alone: withdrawing them now would cause All-Paths-Down
    assert left.vm not in now["vms"] and left.datastore in now["datastores"]
    assert left.copy.name in now["arrays"]["primera1"]["copies"]
    assert world.bad_events_since(start["events"]) == []
    flow_run = str(state.state_details.flow_run_id)
    table = json.loads(artifact("janitor-report", flow_run))
    rows = [(r["action"], r["result"]) for r in table if r["run id"] == left.run]
    later = f"not done: unmount VMFS volume datastore {left.datastore} on esx-01 failed first"
    assert rows == [
        ("power off and unregister", "done"),
        (
            "unmount VMFS volume",
            f"FAILED: unmount {left.datastore} from esx-01 failed: HostConfigFault: lab: "
            "injected HostConfigFault (the host refused the storage change: see its vmkernel "
            "log)",
        ),
        ("detach", later),
        ("withdraw from every host", later),
        ("rescan the fc adapters so the device goes away", later),
        ("delete", later),
    ]

    result, _ = run_janitor(runs=[left.run])  # once the host behaves, the next run finishes
    assert changes(start, world.snapshot()) == {}
    assert world.bad_events_since(start["events"]) == []
    assert [(a, r) for _, _, a, r in rows_of(result, left.run)] == [
        ("unmount VMFS volume", "done"),
        ("detach", "done"),
        ("withdraw from every host", "done"),
        ("rescan the fc adapters so the device goes away", "done"),
        ("delete", "done"),
    ]


def test_a_datastore_whose_copy_is_gone_is_removed_too(lab, lab_blocks, si, world, leftovers):
    """A teardown that deleted the copy first left the datastore in All-Paths-Down."""
    start = world.snapshot()
    left = leave_behind(si, lab, "ds-fc-01")
    leftovers.append(left)
    array = load_arrays(["primera1"])[0]
    array.delete_copy(array.find_copy(left.copy.name))  # the wrong order, on purpose
    broken = world.snapshot()
    assert {e["kind"] for e in world.bad_events_since(start["events"])} == {"apd"}

    result, _ = run_janitor(runs=[left.run])

    assert changes(start, world.snapshot()) == {}  # VM, datastore and dead device gone
    assert world.bad_events_since(broken["events"]) == []
    assert [(o, a, r) for o, _, a, r in rows_of(result, left.run)] == [
        (left.vm, "power off and unregister", "done"),
        (left.datastore, "unmount VMFS volume", "done"),
        (left.copy.naa, "detach", "done"),
        (left.copy.naa, "rescan the fc adapters so the device goes away", "done"),
    ]


def test_the_run_liveness_rule(prefect_api):
    """Terminal or unknown runs are gone; others only after a silence longer than the
    heartbeat timeout, counted from their last heartbeat (a Prefect event) or state."""
    done, running, silent = new_run(Completed()), new_run(Running()), new_run(Running())
    paused = new_run(Running())
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(uuid.UUID(paused), Paused(timeout_seconds=3600), force=True)
        started = client.read_flow_run(uuid.UUID(running)).state.timestamp
    time.sleep(2)
    beat = started + timedelta(seconds=2)  # a heartbeat 2 s after the state, not before it
    emit_event(
        "prefect.flow-run.heartbeat",
        resource={"prefect.resource.id": f"prefect.flow-run.{running}"},
        occurred=beat,
    )
    with get_client(sync_client=True) as client:
        deadline = time.monotonic() + 30
        while jt.last_event(client, uuid.UUID(running), None) != (
            beat,
            "prefect.flow-run.heartbeat",
        ):
            assert time.monotonic() < deadline, "the heartbeat event never reached the API"
            time.sleep(0.3)

    def status(run: str, at: timedelta, timeout_min: float = 1) -> jt.RunStatus:
        return jt.assess_runs.fn([run], timeout_min, now=beat + at)[run]

    assert status(str(uuid.uuid4()), timedelta(0)).reason == (
        "no such flow run on this Prefect server"
    )
    assert status("not-a-run", timedelta(0)).gone
    assert status(done, timedelta(0)).reason == "the run is COMPLETED"
    # 59 s after its heartbeat (61 s after its state): alive thanks to the heartbeat
    alive = status(running, timedelta(seconds=59))
    assert not alive.gone and "(prefect.flow-run.heartbeat)" in alive.reason, alive
    assert alive.last_seen == beat
    # the same moment for a run without heartbeat: silent for 61 s > 1 min, gone
    assert status(silent, timedelta(seconds=59)).gone
    assert status(running, timedelta(seconds=61)).gone
    # a pause that has not timed out keeps a run alive however silent; 0 disables silence
    assert not status(paused, timedelta(minutes=30)).gone
    assert not status(silent, timedelta(days=2), timeout_min=0).gone
    with get_client(sync_client=True) as client:  # leave no run "running" in the session
        for run in (running, silent, paused):
            client.set_flow_run_state(uuid.UUID(run), Completed(), force=True)


def test_a_copy_another_vm_uses_is_left_and_the_run_fails(lab, lab_blocks, si, world, leftovers):
    """A production VM was given a disk from the copy: removing the copy would break it."""
    start = world.snapshot()
    left = leave_behind(si, lab, "ds-iscsi-01", vm=False)
    leftovers.append(left)
    fc = next(d for d in lab["datastores"] if d["name"] == "ds-fc-01")
    prod = find(si, vim.VirtualMachine, fc["vms"][0])
    disk = attach_disk(prod, f"[{left.datastore}] app-01/app-01.vmdk")
    try:
        before = world.snapshot()
        state = janitor(runs=[left.run], return_state=True)
        assert state.is_failed()
        text = str(state.result(raise_on_failure=False))
        assert f"VM(s) {prod.name} use a disk on datastore {left.datastore}" in text, text
        assert world.snapshot() == before  # not a single change was attempted
    finally:
        detach_disk(prod, disk)
    run_janitor(runs=[left.run])
    assert changes(start, world.snapshot()) == {}
    assert find(si, vim.VirtualMachine, prod.name).runtime.powerState == "poweredOn"
