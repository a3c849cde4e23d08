"""The snapshot-catalog flow: a datastore's (or VM's) snapshots, and the VMs inside one."""

from __future__ import annotations

import json
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
)
from prefect.utilities.callables import parameter_schema
from pyVmomi import vim

from blocks.registry import load_arrays
from flows.catalog import snapshot_catalog
from tasks import browse
from tasks import vsphere as vs
from tests.support.vcenter import find
from tests.support.vsphere_steps import write_datastore_file
from tests.support.world import put_back_original

COPY_CALL = {"primera1": "POST /api/v1/volumes/{}", "ontap1": "POST /api/storage/volumes"}
WORLD_KEYS = ("arrays", "datastores", "vms", "devices")


def _ds(lab: dict[str, Any], name: str) -> dict[str, Any]:
    return next(d for d in lab["datastores"] if d["name"] == name)


def _artifacts(run_id: str) -> dict[str, Any]:
    """Return this run's artifacts by key: tables as lists of rows, markdown as text."""
    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        )
    return {a.key: json.loads(a.data) if a.type == "table" else a.data for a in arts}


def _failure(state) -> str:
    assert state.is_failed(), state
    return str(state.result(raise_on_failure=False))


def _put_file(lab, http, ds: str, path: str, text: str) -> None:
    write_datastore_file(lab, http, ds, path, text)


def _delete_folder(si, ds: str, folder: str) -> None:
    dsobj = find(si, vim.Datastore, ds)
    vs.wait(
        si.content.fileManager.DeleteDatastoreFile_Task(
            f"[{ds}] {folder}", vs.datacenter_of(dsobj)
        ),
        60,
    )


# ---- snapshots -------------------------------------------------------------------------------


@pytest.mark.parametrize("by", ["datastore", "vm"])
@pytest.mark.parametrize("ds_name", ["ds-iscsi-01", "ds-nfs-01"])
def test_the_snapshots_of_a_datastore_or_of_a_vm(lab, lab_blocks, world, ds_name, by):
    ds = _ds(lab, ds_name)
    before = world.snapshot()
    params = {"datastore": ds_name} if by == "datastore" else {"vm": ds["vms"][1]}
    result = snapshot_catalog(**params)
    assert result["datastore"] == ds_name
    assert result["vm"] == (None if by == "datastore" else ds["vms"][1])
    assert result["array"] == ds["array"] and result["volume"]["name"] == ds["volume"]
    assert result["snapshot_order"] == "newest first"
    # lab.json lists them oldest first
    assert [s["name"] for s in result["snapshots"]] == ds["snapshots"][::-1]
    created = [s["created"] for s in result["snapshots"]]
    assert created == sorted(created, reverse=True) and len(set(created)) == len(created)
    assert result["snapshot"] is None and result["vms"] is None
    arts = _artifacts(result["catalog_id"])
    assert [r["snapshot"] for r in arts["catalog-snapshots"]] == ds["snapshots"][::-1]
    assert f"volume `{ds['volume']}`" in arts["catalog-summary"]
    assert "catalog-vms" not in arts
    assert world.snapshot() == before  # listing changes nothing, not even a call


# ---- the VMs inside a snapshot -------------------------------------------------------------


@pytest.mark.parametrize("ds_name", ["ds-iscsi-01", "ds-nfs-01"])
def test_the_vms_inside_a_snapshot_through_one_copy(lab, lab_blocks, world, http, si, ds_name):
    ds = _ds(lab, ds_name)
    # a VM made after the snapshots: in production, so not in the catalog of a snapshot
    _put_file(lab, http, ds_name, "catalog-newer/catalog-newer.vmx", 'displayName = "newer"\n')
    try:
        before = world.snapshot()
        copies = world.array_calls(ds["array"]).get(COPY_CALL[ds["array"]], 0)
        result = snapshot_catalog(datastore=ds_name, snapshot=ds["snapshots"][0])
        after = world.snapshot()
    finally:
        _delete_folder(si, ds_name, "catalog-newer")

    assert result["snapshot"]["name"] == ds["snapshots"][0]
    assert result["protocol"] == ds["protocol"]
    assert result["mounted_as"].startswith("sr-") and result["mounted_as"] != ds_name
    vms = {v["name"]: v for v in result["vms"]}
    inside = sorted(v["name"] for v in lab["vms"] if v["datastore"] == ds_name)  # cases too
    assert sorted(vms) == inside  # not "newer": the copy was browsed, not production
    for name, v in vms.items():
        assert v["folder"] == name and v["vmx"] == f"{name}/{name}.vmx"
        assert v["name_source"] == "displayName" and v["guest_os"] == "ubuntu-64"
        assert v["in_inventory"] is True
        assert v["inventory_vmx"] == f"[{ds_name}] {name}/{name}.vmx"
    assert result["left_behind"] == []
    assert result["side_effects"] and all(
        e["undone"] in ("yes", "kept") for e in result["side_effects"]
    )
    # one copy, made and deleted; everything else as it was; no all-paths-down on the way
    assert world.array_calls(ds["array"])[COPY_CALL[ds["array"]]] == copies + 1
    for key in WORLD_KEYS:
        assert after[key] == before[key], key
    assert world.bad_events_since(before["events"]) == []

    arts = _artifacts(result["catalog_id"])
    assert sorted(r["VM"] for r in arts["catalog-vms"]) == inside
    assert [r["looked inside"] for r in arts["catalog-snapshots"]] == ["", "yes"]
    assert "Nothing was left behind." in arts["catalog-summary"]
    assert ds["snapshots"][0] in arts["catalog-summary"]


def test_a_deleted_vm_is_found_in_an_older_snapshot(lab, lab_blocks, world, si):
    ds = _ds(lab, "ds-nfs-01")
    listing = snapshot_catalog(vm="file-01")
    newest = listing["snapshots"][0]
    vm = find(si, vim.VirtualMachine, "file-01")
    vs.power_off(vm, 60)
    vm.UnregisterVM()
    try:
        before = world.snapshot()
        assert "file-01" not in before["vms"]
        result = snapshot_catalog(
            datastore="ds-nfs-01", snapshot=f"latest-before:{newest['created']}"
        )
        after = world.snapshot()
    finally:
        put_back_original(si, lab, "file-01")

    assert result["snapshot"]["name"] == ds["snapshots"][0] != newest["name"]
    vms = {v["name"]: v for v in result["vms"]}
    assert sorted(vms) == sorted(ds["vms"])
    assert vms["file-01"]["in_inventory"] is False and vms["file-01"]["inventory_vmx"] is None
    assert vms["file-01"]["vmx"] == "file-01/file-01.vmx"
    assert all(vms[n]["in_inventory"] for n in ds["vms"] if n != "file-01")
    rows = {r["VM"]: r for r in _artifacts(result["catalog_id"])["catalog-vms"]}
    assert rows["file-01"]["in the inventory now"].startswith("NO")
    for key in WORLD_KEYS:
        assert after[key] == before[key], key
    assert world.bad_events_since(before["events"]) == []


# ---- bad input, failures -----------------------------------------------------------------------

BAD_INPUT = [
    pytest.param({}, "give exactly one of 'datastore' (a datastore name) or 'vm'", id="neither"),
    pytest.param(
        {"datastore": "ds-nfs-01", "vm": "file-01", "snapshot": "latest"},
        "got both: datastore='ds-nfs-01', vm='file-01'",
        id="both",
    ),
    pytest.param(
        {"datastore": "ds-nope", "snapshot": "latest"},
        "datastore 'ds-nope' not found; datastores: ds-fc-01, ds-iscsi-01, ds-iscsi-02, ds-nfs-01",
        id="unknown-datastore",
    ),
    pytest.param(
        {"vm": "no-such-vm", "snapshot": "latest"},
        "VM 'no-such-vm' is not in the inventory: give its datastore in 'datastore'",
        id="unknown-vm",
    ),
    pytest.param(
        {"datastore": "ds-iscsi-01", "snapshot": "nope"},
        "primera1 volume DS_ISCSI_01 (datastore ds-iscsi-01): no snapshot named 'nope'; "
        "snapshots: DS_ISCSI_01.daily-",
        id="unknown-snapshot",
    ),
    pytest.param(
        {"vm": "file-01", "snapshot": "latest-before:2001-01-01T00:00:00Z"},
        "no snapshot was taken before 2001-01-01",
        id="nothing-before",
    ),
    pytest.param(
        {"datastore": "ds-nfs-01", "snapshot": "latest", "protocol": "iscsi"},
        "datastore ds-nfs-01 is NFS: restore it with protocol 'nfs' or 'auto'",
        id="nfs-over-iscsi",
    ),
    pytest.param(
        {"datastore": "ds-iscsi-01", "snapshot": "latest", "target_host": "esx-99"},
        "target host 'esx-99' not found; hosts: esx-01, esx-02, esx-03",
        id="unknown-host",
    ),
    pytest.param(
        {"datastore": "ds-iscsi-01", "snapshot": "nope", "target_host": "esx-99"},
        "no snapshot named 'nope'; snapshots: DS_ISCSI_01.daily-",
        id="every-problem-at-once",
    ),
]


@pytest.mark.parametrize(("params", "message"), BAD_INPUT)
def test_bad_input_fails_before_any_side_effect(lab, lab_blocks, world, params, message):
    before = world.snapshot()
    state = snapshot_catalog(**params, return_state=True)
    text = _failure(state)
    assert "the catalog was not started; fix the request:" in text, text
    assert message in text, text
    if "esx-99" in str(params):
        assert "target host 'esx-99' not found" in text, text
    assert world.snapshot() == before  # nothing changed, nothing was even attempted


def test_a_failure_while_browsing_still_cleans_up(lab, lab_blocks, world, vclab):
    ds = _ds(lab, "ds-iscsi-02")
    before = world.snapshot()
    seq = vclab.get("/calls/log?method=SearchDatastoreSubFolders_Task")["last_seq"]
    vclab.post(
        "/faults", {"operation": "SearchDatastoreSubFolders_Task", "error": "InvalidDatastore"}
    ).raise_for_status()
    state = snapshot_catalog(datastore=ds["name"], snapshot="latest", return_state=True)
    vclab.delete("/faults")
    _failure(state)
    # the run failed at the browse (the lab gives an injected browser task the browser as
    # its entity, which pyVmomi refuses to read: the error text is that, not the fault's)
    searches = vclab.get(f"/calls/log?method=SearchDatastoreSubFolders_Task&since={seq}")["calls"]
    assert [c["fault"] for c in searches] == ["InvalidDatastore"]
    after = world.snapshot()
    for key in WORLD_KEYS:
        assert after[key] == before[key], key
    assert after["calls"]["ontap1"] > before["calls"]["ontap1"]  # a copy was made, and undone
    assert world.bad_events_since(before["events"]) == []


def test_a_cleanup_that_cannot_finish_fails_the_run_and_says_what_is_left(
    lab, lab_blocks, world, si
):
    ds = _ds(lab, "ds-iscsi-01")
    before = world.snapshot()
    world.inject("primera1", {"operation": "DELETE /api/v1/vluns/{}", "error": 400})
    state = snapshot_catalog(vm=ds["vms"][0], snapshot="latest", return_state=True)
    text = _failure(state)
    assert "cleanup could not finish; still there:" in text, text
    assert "presented to hosts by primera1" in text, text
    after = world.snapshot()
    assert after["datastores"] == before["datastores"]  # unmounted before the step that failed
    assert world.bad_events_since(before["events"]) == []
    left = after["arrays"]["primera1"]["copies"]
    assert len(left) == 1
    # an operator (or the janitor) finishes the job once the array behaves again
    world.http.delete(
        next(a for a in lab["arrays"] if a["name"] == "primera1")["lab_url"] + "/faults", timeout=30
    )
    array = load_arrays(["primera1"])[0]
    array.delete_copy(array.find_copy(left[0]))
    for h in lab["hosts"]:  # the copy went through the cluster-wide host object: all saw it
        host = vs.get_host(si, h["name"])
        vs.rescan(host, vs.adapters_for(host, "iscsi"))
    final = world.snapshot()
    assert final["arrays"] == before["arrays"] and final["devices"] == before["devices"]


# ---- browsing, parsing and the UI form -------------------------------------------------------


def test_browsing_finds_every_vmx_and_skips_hidden_folders(lab, http, si):
    """NFS arrays show their own snapshots in ``.snapshot``: those are not VMs of the copy."""
    _put_file(lab, http, "ds-nfs-01", ".snapshot/hourly/file-01/file-01.vmx", "x = 1\n")
    _put_file(lab, http, "ds-nfs-01", "nested/deeper/odd/odd.vmx", 'displayName = "odd"\n')
    _put_file(lab, http, "ds-nfs-01", "nested/deeper/odd/odd.vmx~", "a backup\n")
    try:
        ds = vs.get_datastore(si, "ds-nfs-01")
        files = browse.find_vmx_files(ds, 60)
    finally:
        _delete_folder(si, "ds-nfs-01", ".snapshot")
        _delete_folder(si, "ds-nfs-01", "nested")
    assert [(f.folder, f.path, f.stem) for f in files] == [
        ("file-01", "file-01/file-01.vmx", "file-01"),
        ("mail-01", "mail-01/mail-01.vmx", "mail-01"),
        ("nested/deeper/odd", "nested/deeper/odd/odd.vmx", "odd"),
        ("print-01", "print-01/print-01.vmx", "print-01"),
    ]
    assert all(f.size and f.modified for f in files)


@pytest.mark.parametrize(
    ("folder_path", "folder"),
    [
        ("[ds-a] app-01", "app-01"),  # ESXi
        ("[ds-a]/app-01", "app-01"),  # govmomi's simulator
        ("[ds-a] /app-01/", "app-01"),
        ("[ds a] vms/app 01", "vms/app 01"),
        ("[ds-a]", ""),
        ("[ds-a] ", ""),
    ],
)
def test_browser_folder_paths_parse_the_same_from_esxi_and_the_simulator(folder_path, folder):
    assert browse.folder_of(folder_path) == folder


def test_vmx_files_parse_as_esxi_writes_them():
    text = (
        '.encoding = "UTF-8"\n'
        "# a comment\n"
        'DisplayName = "db |22prod|22 |7C caf|C3|A9"\n'
        'guestOS = "windows2019srv-64"\n'
        "memsize=4096\n"
        "\n"
        "not a pair\n"
    )
    vmx = browse.parse_vmx(text)
    assert vmx["displayname"] == 'db "prod" | café'
    assert vmx["guestos"] == "windows2019srv-64" and vmx["memsize"] == "4096"
    assert "not a pair" not in str(vmx)


def test_the_ui_form_describes_every_parameter():
    schema = parameter_schema(snapshot_catalog.fn).model_dump()
    props = schema["properties"]
    assert list(props) == [
        "datastore",
        "vm",
        "snapshot",
        "target_host",
        "protocol",
        "vcenter",
        "arrays",
    ]
    assert all(p.get("description") for p in props.values()), props
    assert snapshot_catalog.name == "snapshot-catalog"
