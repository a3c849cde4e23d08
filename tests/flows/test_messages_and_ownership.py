"""What users read and who owns what: one-line errors, secure transport, one copy attempt
per snapshot, and a janitor that sweeps only what is its own and nobody keeps."""

from __future__ import annotations

import contextlib
import logging
import uuid
from datetime import UTC, datetime

import pytest
from prefect.client.orchestration import get_client
from pydantic import ValidationError
from pyVmomi import vim

from blocks.errors import ArrayNotFound
from blocks.hpe import HpePrimeraArray
from blocks.models import AccessObject, CopyTag, HostIdentity, VmfsBacking
from blocks.ontap import NetAppOntapArray
from blocks.registry import load_arrays
from blocks.vcenter import VCenterCredentials
from flows.catalog import snapshot_catalog
from flows.identity import server_id
from flows.janitor import janitor
from flows.restore import restore_from_snapshot
from tasks import vsphere as vs
from tasks import vsphere_tasks as vt
from tests.flows.test_janitor import LONG_AGO, leave_behind, rows_of, sweep_by_hand
from tests.support.vcenter import find


def _ds(lab, name):
    return next(d for d in lab["datastores"] if d["name"] == name)


def test_a_failed_nfs_mount_ends_the_run_with_one_line_that_says_what_to_do(
    lab, lab_blocks, world, vclab
):
    ds = _ds(lab, "ds-nfs-01")
    before = world.snapshot()
    vclab.post(
        "/faults", {"operation": "CreateNasDatastore", "error": "PlatformConfigFault"}
    ).raise_for_status()
    try:
        state = restore_from_snapshot(vms=ds["vms"][:1], return_state=True)
    finally:
        vclab.delete("/faults")
    assert state.is_failed()
    message = state.message or ""
    for text in (message, str(state.result(raise_on_failure=False))):
        assert "\n" not in text, text
        assert "(vim.fault" not in text and "dynamicType" not in text, text
        assert "mount 127.0.40.11:/sr_" in text and " on esx-0" in text, text
        assert "PlatformConfigFault: lab: injected PlatformConfigFault" in text, text
        assert "check the array's NFS export for this host's VMkernel address" in text, text
    after = world.snapshot()
    for key in ("arrays", "datastores", "vms", "devices"):
        assert after[key] == before[key], key


def test_an_array_url_that_is_not_https_is_refused(lab):
    a = next(x for x in lab["arrays"] if x["name"] == "primera1")
    for cls, extra in ((HpePrimeraArray, {}), (NetAppOntapArray, {"svm": "svm1"})):
        for url in (a["url"].replace("https://", "http://"), "primera1.example:8080"):
            with pytest.raises(ValidationError, match="must be https://"):
                cls(url=url, user="u", password="p", **extra)
        assert cls(url=a["url"], user="u", password="p", **extra).url == a["url"]


def test_tls_verification_off_is_said_in_the_runs_own_log(lab, lab_blocks, caplog):
    vc = VCenterCredentials.load("default")
    VCenterCredentials(
        host=vc.host,
        port=vc.port,
        user=vc.user,
        password=vc.password,
        ca_certificate=vc.ca_certificate,
        verify_tls=False,
    ).save("insecure-vcenter", overwrite=True)
    try:
        with caplog.at_level(logging.WARNING, logger="prefect.flow_runs"):
            result = snapshot_catalog(datastore="ds-iscsi-01", vcenter="insecure-vcenter")
    finally:
        with get_client(sync_client=True) as client:
            doc = client.read_block_document_by_name("insecure-vcenter", "vcenter-credentials")
            client.delete_block_document(doc.id)
    assert result["snapshots"]
    warnings = [
        r
        for r in caplog.records
        if r.name == "prefect.flow_runs" and "verify_tls=false" in r.getMessage()
    ]
    assert warnings, [r.getMessage() for r in caplog.records]
    assert "vCenter block insecure-vcenter" in warnings[0].getMessage()
    assert getattr(warnings[0], "flow_run_id", None)  # the run's log, not the process's


def test_a_failing_copy_is_attempted_once_for_all_the_vms_of_its_snapshot(lab, lab_blocks, world):
    ds = _ds(lab, "ds-iscsi-01")
    before = world.snapshot()
    op = "POST /api/v1/volumes/{}"
    creates = world.array_calls("primera1").get(op, 0)
    world.inject("primera1", {"operation": op, "error": 400, "times": 5})
    try:
        state = restore_from_snapshot(vms=ds["vms"], return_state=True)
    finally:
        world.http.delete(
            next(a for a in lab["arrays"] if a["name"] == "primera1")["lab_url"] + "/faults",
            timeout=30,
        )
    assert state.is_failed()
    assert "\n" not in (state.message or "")
    assert world.array_calls("primera1")[op] == creates + 1  # one copy task, not one per VM
    after = world.snapshot()
    for key in ("arrays", "datastores", "vms", "devices"):
        assert after[key] == before[key], key


def test_objects_another_prefect_server_owns_are_reported_not_swept(
    lab, lab_blocks, si, world, leftovers
):
    start = world.snapshot()
    other = "http://prefect.elsewhere.example:4200"
    left = leave_behind(si, lab, "ds-fc-01", server=other)
    leftovers.append(left)
    before = world.snapshot()

    result, _ = _janitor(runs=[left.run], ttl_minutes=0)
    assert world.snapshot() == before
    rows = rows_of(result, left.run)
    assert rows and all(a == "keep" for _, _, a, _ in rows), rows
    assert all(f"belongs to Prefect server {other}" in r for *_, r in rows), rows
    assert server_id() in rows[0][3]

    _janitor(runs=[left.run], force=True)  # the owner is gone for good: forced here
    after = world.snapshot()
    for key in ("arrays", "datastores", "vms", "devices"):
        assert after[key] == start[key], key


def _janitor(**params):
    state = janitor(**params, return_state=True)
    assert state.is_completed(), state
    return state.result(), str(state.state_details.flow_run_id)


def test_a_kept_vm_and_a_moved_vm_are_never_touched(lab, lab_blocks, si, world):
    """Two VMs a restore registered, now on production storage: one marked kept, one that
    was moved (its .vmx is no longer on the copy its tag names). The janitor, with no TTL,
    leaves both alone."""
    fc = _ds(lab, "ds-fc-01")
    run = str(uuid.uuid4())
    old = datetime.now(UTC) - LONG_AGO
    kept = find(si, vim.VirtualMachine, fc["vms"][0])
    moved = find(si, vim.VirtualMachine, fc["vms"][1])
    vt._tag(si, kept, CopyTag(run=run, created=old, datastore="sr-gone-ds-fc-01", kept=True))
    vt._tag(si, moved, CopyTag(run=run, created=old, datastore="sr-gone-ds-fc-01"))
    before = world.snapshot()
    try:
        result, _ = _janitor(runs=[run], ttl_minutes=0)
    finally:
        key = next(f.key for f in si.content.customFieldsManager.field if f.name == vt.TAG_FIELD)
        for vm in (kept, moved):
            si.content.customFieldsManager.SetField(entity=vm, key=key, value="")
    assert world.snapshot() == before
    rows = {o: (a, r) for o, _, a, r in rows_of(result, run)}
    assert rows[kept.name][0] == "keep" and "it is marked kept" in rows[kept.name][1]
    assert rows[moved.name][0] == "keep" and "no snaprestore copy" in rows[moved.name][1]
    for vm in (kept, moved):
        assert vm.runtime.powerState == "poweredOn"


def test_tagged_host_objects_and_igroups_left_without_a_copy_are_swept(
    lab, lab_blocks, world, http
):
    """A crash between creating a host object (igroup) and exporting through it leaves it
    empty: the janitor removes ours and never an untagged look-alike."""
    run = str(uuid.uuid4())
    old = datetime.now(UTC) - LONG_AGO
    hpe, ontap = load_arrays(["primera1", "ontap1"])
    ghost = HostIdentity(name="ghost-01", iqns=["iqn.1998-01.com.vmware:ghost-01-5c3a9e"])
    hpe._create_host(ghost, "iscsi", {ghost.iqns[0]}, run)
    # its tag is made now: age it, as a crash an hour ago would have left it
    hpe._api().request(
        "PUT",
        "/hosts/sr-ghost-01",
        json={"descriptors": {"comment": CopyTag(run=run, created=old).encode()}},
    )
    untagged = HostIdentity(name="ghost-02", iqns=["iqn.1998-01.com.vmware:ghost-02-5c3a9e"])
    hpe._api().request(
        "POST",
        "/hosts",
        json={"name": "sr-ghost-02", "persona": 8, "iSCSINames": untagged.iqns},
    )
    mark = CopyTag(run=run, created=old).encode()
    ontap._send(
        "POST",
        "/api/protocols/san/igroups",
        {
            "svm": {"name": "svm1"},
            "name": "sr_ghost-03",
            "os_type": "vmware",
            "protocol": "iscsi",
            "comment": mark,
            "initiators": [{"name": "iqn.1998-01.com.vmware:ghost-03-5c3a9e"}],
        },
    )
    try:
        found = {(a.array, a.name) for a in hpe.list_access() + ontap.list_access()}
        assert {("primera1", "sr-ghost-01"), ("ontap1", "sr_ghost-03")} <= found
        assert ("primera1", "sr-ghost-02") not in found  # untagged: not ours

        result, _ = _janitor(runs=[run])

        rows = rows_of(result, run)
        assert sorted((o, k, a, r) for o, k, a, r in rows) == [
            ("sr-ghost-01", "host", "remove (nothing is exported through it)", "done"),
            ("sr_ghost-03", "igroup", "remove (nothing is exported through it)", "done"),
        ]
        left = {(a.array, a.name) for a in hpe.list_access() + ontap.list_access()}
        assert not left & {("primera1", "sr-ghost-01"), ("ontap1", "sr_ghost-03")}
        assert hpe._api().get("/hosts/sr-ghost-02")["name"] == "sr-ghost-02"  # untouched
        with pytest.raises(Exception, match="does not carry snaprestore's tag"):
            hpe.remove_access(
                AccessObject(
                    array="primera1", kind="host", id="x", name="sr-ghost-02", in_use=False
                )
            )
    finally:
        for name in ("sr-ghost-01", "sr-ghost-02"):
            with contextlib.suppress(ArrayNotFound):
                hpe._api().request("DELETE", f"/hosts/{name}")
        for a in ontap.list_access():
            if a.name == "sr_ghost-03":
                ontap.remove_access(a)


@pytest.fixture
def leftovers(lab, lab_blocks, si):
    made = []
    yield made
    for left in made:
        sweep_by_hand(si, left)


def test_host_objects_and_igroups_made_for_a_copy_name_its_prefect_server(lab, lab_blocks):
    """What a presentation creates on an array is tagged with the copy's run and server, so
    that another server's janitor leaves it alone."""
    server = "http://prefect.elsewhere.example:4200"
    for array_name, ds_name, protocol in (
        ("ontap1", "ds-iscsi-02", "iscsi"),
        ("primera1", "ds-fc-01", "fc"),
    ):
        array = load_arrays([array_name])[0]
        cfg = next(d for d in lab["datastores"] if d["name"] == ds_name)
        volume = array.find_volume(_backing(ds_name))
        snap = next(s for s in array.list_snapshots(volume) if s.name == cfg["snapshots"][0])
        run = str(uuid.uuid4())
        tag = CopyTag(run=run, source=f"{volume.name}@{snap.name}", server=server)
        copy = array.create_copy(volume, snap, array.copy_name(run, "srv-test"), tag)
        ghost = HostIdentity(
            name="ghost-04",
            iqns=["iqn.1998-01.com.vmware:ghost-04-5c3a9e"],
            wwpns=["21:00:00:24:ff:4c:e4:10"],
        )
        try:
            p = array.present(copy, ghost, protocol)
            made = [a for a in array.list_access() if a.tag and a.tag.run == run]
            assert [a.name for a in made] == [p.access], made
            assert made[0].tag.server == server and made[0].in_use
        finally:
            array.unpresent_all(copy)
            array.delete_copy(copy)
        assert not [a for a in array.list_access() if a.tag and a.tag.run == run]


def _backing(ds_name: str) -> VmfsBacking:
    """The VMFS backing of a production datastore, as the planner reads it."""
    info = vs.get_datastore(VCenterCredentials.load("default").connect(), ds_name).info
    return VmfsBacking(naa=info.vmfs.extent[0].diskName)
