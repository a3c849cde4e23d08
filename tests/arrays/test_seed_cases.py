"""What the emulators seed for the lab's hard cases, and what their fabric says about it.

A cluster-wide host object (HPE) or igroup (ONTAP) instead of one per host, a raw LUN that
is no datastore, the fabric's production marker, the LUN number an ONTAP map chooses when
an initiator is in several igroups, and the fabric push when an emulator starts.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.pki import LabPki
from lab.vmfs import HEADER_NAME
from tests.arrays.conftest import RunningArray, seed_spec
from tests.arrays.test_hpe_api import Capture, Wsapi, wsapi_error
from tests.arrays.test_ontap_api import ESX_IQNS, Ontap

SHARED = "lab-cluster-iscsi"


def _case_spec(tmp: Path, iscsi_group: str | None) -> dict[str, Any]:
    """One iSCSI volume (optionally through one cluster-wide host object), one FC volume and
    one raw FC LUN without VMFS and without snapshots."""
    spec = seed_spec(tmp, "iscsi", "ds_iscsi", vmfs=True)
    spec["volumes"][0]["host_group"] = iscsi_group
    fc = seed_spec(tmp, "fc", "ds_fc", vmfs=True)["volumes"][0]
    fc["vmfs"]["uuid"] = "6543210a-11223344-5566-000000000fc0"
    raw_dir = tmp / "raw"
    raw_dir.mkdir()
    (raw_dir / "README.lab").write_text("raw LUN\n")
    raw = {
        "name": "RDM_SQL_01",
        "protocol": "fc",
        "size_mb": 10240,
        "content": str(raw_dir),
        "present_to": ["esx-01", "esx-02", "esx-03"],
    }
    spec["volumes"] += [fc, raw]
    return spec


@pytest.fixture(scope="module")
def capture(lab_pki: LabPki) -> Iterator[Capture]:
    """A fabric-push receiver for the module's arrays."""
    cap = Capture(lab_pki)
    yield cap
    cap.server.shutdown()


@pytest.fixture(scope="module")
def primera(start_array_module, capture: Capture, tmp_path_factory) -> RunningArray:
    """A Primera seeded like the lab's primera1: a shared iSCSI host object, FC per host."""
    arr = start_array_module("hpe_primera", name="primera-cases", notify_urls=[capture.url])
    r = arr.lab("POST", "/lab/seed", json=_case_spec(tmp_path_factory.mktemp("seed"), SHARED))
    assert r.status_code == 201, r.text
    return arr


@pytest.fixture
def wsapi(primera: RunningArray) -> Iterator[Wsapi]:
    """A logged-in WSAPI session on the module's Primera."""
    w = Wsapi(primera)
    assert w.login().status_code == 201
    yield w
    w.call("DELETE", f"/credentials/{w.key}")


def _fabric(arr: RunningArray) -> dict[str, Any]:
    r = arr.lab("GET", "/lab/fabric")
    assert r.status_code == 200
    return r.json()


def test_primera_seeds_one_iscsi_host_object_for_the_cluster(wsapi: Wsapi) -> None:
    hosts = {h["name"]: h for h in wsapi.members("/hosts")}
    assert set(hosts) == {SHARED, "esx-01", "esx-02", "esx-03"}  # no esx-0N-iscsi
    shared = hosts[SHARED]
    assert shared["persona"] == 8 and shared["FCPaths"] == []
    assert sorted(p["name"] for p in shared["iSCSIPaths"]) == ESX_IQNS
    assert [p["IPAddr"] for p in shared["iSCSIPaths"]] == [f"127.0.10.1{i}" for i in (1, 2, 3)]
    vluns = wsapi.members("/vluns", query='"volumeName EQ ds_iscsi"')
    assert [v["hostname"] for v in vluns] == [SHARED]  # one VLUN
    for vol in ("ds_fc", "RDM_SQL_01"):  # FC stays one host object per ESXi host
        fc = wsapi.members("/vluns", query=f'"volumeName EQ {vol}"')
        assert sorted(v["hostname"] for v in fc) == ["esx-01", "esx-02", "esx-03"]


def test_an_initiator_stays_in_one_primera_host_object(wsapi: Wsapi) -> None:
    r = wsapi.call(
        "POST", "/hosts", json={"name": "sr-esx-01", "iSCSINames": [ESX_IQNS[0]], "persona": 8}
    )
    wsapi_error(r, 409, 73)  # EXISTENT_PATH: the IQN belongs to the cluster's host object
    assert "sr-esx-01" not in {h["name"] for h in wsapi.members("/hosts")}


def test_primera_fabric_marks_production_and_the_raw_lun_carries_no_vmfs(
    wsapi: Wsapi, primera: RunningArray
) -> None:
    luns = {lun["name"]: lun for lun in _fabric(primera)["luns"]}
    assert {n: lun["production"] for n, lun in luns.items()} == {
        "ds_iscsi": True,
        "ds_fc": True,
        "RDM_SQL_01": True,
    }
    assert {e["initiator"] for e in luns["ds_iscsi"]["exports"]} == set(ESX_IQNS)
    assert len({e["lun"] for e in luns["ds_iscsi"]["exports"]}) == 1
    raw = Path(luns["RDM_SQL_01"]["content_dir"])
    assert not (raw / HEADER_NAME).exists() and (raw / "README.lab").exists()
    assert luns["RDM_SQL_01"]["size_mb"] == 10240
    assert wsapi.members("/volumes", query='"copyOf EQ RDM_SQL_01"') == []  # no snapshots

    # a read-write copy of a snapshot, and the snapshot itself, are not production
    r = wsapi.snapshot("ds_fc.daily-1", "sr-cases-copy", readOnly=False)
    assert r.status_code == 200, r.text
    for name in ("sr-cases-copy", "ds_fc.daily-2"):
        body = {"volumeName": name, "hostname": "esx-02", "lun": 0, "autoLun": True}
        assert wsapi.call("POST", "/vluns", json=body).status_code == 201
    luns = {lun["name"]: lun for lun in _fabric(primera)["luns"]}
    assert luns["sr-cases-copy"]["production"] is False
    assert luns["ds_fc.daily-2"]["production"] is False
    for name in ("sr-cases-copy", "ds_fc.daily-2"):
        vl = wsapi.members("/vluns", query=f'"volumeName EQ {name}"')[0]
        wsapi.ok("DELETE", f"/vluns/{name},{vl['lun']},esx-02")
    wsapi.ok("DELETE", "/volumes/sr-cases-copy")


def test_primera_refuses_a_seed_that_puts_an_initiator_in_two_host_objects(
    start_array, tmp_path
) -> None:
    arr = start_array("hpe_primera")
    spec = _case_spec(tmp_path, SHARED)
    other = seed_spec(tmp_path / "other", "iscsi", "ds_iscsi_b", vmfs=True)["volumes"][0]
    other["vmfs"]["uuid"] = "6543210a-11223344-5566-0000000000b0"
    spec["volumes"].append(other)  # per-host iSCSI hosts: the IQNs are in SHARED already
    r = arr.lab("POST", "/lab/seed", json=spec)
    assert r.status_code == 400 and "would be a path of hosts" in r.json()["error"]
    state = arr.lab("GET", "/lab/state").json()
    assert state["volumes"] == [] and state["hosts"] == []


# ---- ONTAP ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ontap(start_array_module, capture: Capture, tmp_path_factory) -> RunningArray:
    """An ONTAP seeded like the lab's ontap1: ``ds_iscsi_02`` mapped to the igroup
    ``lab-cluster``, ``ds_nfs_01`` exported over NFS."""
    arr = start_array_module("netapp_ontap", name="ontap-cases", notify_urls=[capture.url])
    tmp = tmp_path_factory.mktemp("seed")
    spec = seed_spec(tmp, "iscsi", "ds_iscsi_02", vmfs=True)
    spec["volumes"][0]["host_group"] = "lab-cluster"
    spec["volumes"].append(seed_spec(tmp / "nfs", "nfs", "ds_nfs_01", vmfs=False)["volumes"][0])
    r = arr.lab("POST", "/lab/seed", json=spec)
    assert r.status_code == 201, r.text
    return arr


def _clone(api: Ontap, name: str) -> dict[str, Any]:
    """A FlexClone of ds_iscsi_02's older snapshot; return its LUN."""
    api.job_ok(
        "POST",
        "/api/storage/volumes",
        json={
            "name": name,
            "svm.name": "svm1",
            "clone": {
                "is_flexclone": True,
                "parent_volume": {"name": "ds_iscsi_02"},
                "parent_snapshot": {"name": "daily-1"},
            },
        },
    )
    return api.one("/api/storage/luns", **{"location.volume.name": name, "fields": "uuid,name"})


def test_ontap_maps_the_datastore_lun_to_one_igroup_of_every_host(ontap: RunningArray) -> None:
    api = Ontap(ontap)
    group = api.one("/api/protocols/san/igroups", name="lab-cluster", fields="*")
    assert (group["os_type"], group["protocol"]) == ("vmware", "iscsi")
    assert sorted(i["name"] for i in group["initiators"]) == ESX_IQNS
    maps = api.records("/api/protocols/san/lun-maps", **{"lun.name": "/vol/ds_iscsi_02/lun0"})
    assert [m["igroup"]["name"] for m in maps] == ["lab-cluster"]
    fab = _fabric(ontap)
    assert [lun["production"] for lun in fab["luns"]] == [True]
    assert [e["production"] for e in fab["nfs_exports"]] == [True]


def test_an_ontap_lun_map_takes_a_number_no_initiator_of_the_igroup_sees(
    ontap: RunningArray,
) -> None:
    """ONTAP lets an initiator be in several igroups; a LUN mapped to one of them gets a
    LUN number that none of its initiators already sees through another igroup."""
    api = Ontap(ontap)
    seen = {
        m["logical_unit_number"]
        for m in api.records(
            "/api/protocols/san/lun-maps",
            **{"igroup.name": "lab-cluster", "fields": "logical_unit_number"},
        )
    }
    assert seen == {0}
    api.ok(
        "POST",
        "/api/protocols/san/igroups",
        201,
        json={
            "svm.name": "svm1",
            "name": "sr_esx-01",
            "os_type": "vmware",
            "protocol": "iscsi",
            "initiators": [{"name": ESX_IQNS[0]}],
        },
    )
    lun = _clone(api, "sr_cases_a")
    taken = api.call(
        "POST",
        "/api/protocols/san/lun-maps",
        json={
            "svm.name": "svm1",
            "lun.uuid": lun["uuid"],
            "igroup.name": "sr_esx-01",
            "logical_unit_number": min(seen),
        },
    )
    assert taken.status_code == 409, taken.text  # esx-01 sees that number already
    r = api.ok(
        "POST",
        "/api/protocols/san/lun-maps",
        201,
        params={"return_records": "true"},
        json={"svm.name": "svm1", "lun.uuid": lun["uuid"], "igroup.name": "sr_esx-01"},
    )
    number = r.json()["records"][0]["logical_unit_number"]
    assert number not in seen
    exports = next(u for u in _fabric(ontap)["luns"] if u["name"] == "/vol/sr_cases_a/lun0")
    assert exports["production"] is False  # a clone's LUN is no production LUN
    assert {(e["initiator"], e["lun"]) for e in exports["exports"]} == {(ESX_IQNS[0], number)}
    for m in api.records("/api/protocols/san/lun-maps", **{"lun.name": lun["name"]}):
        api.ok("DELETE", f"/api/protocols/san/lun-maps/{m['lun']['uuid']}/{m['igroup']['uuid']}")
    vol = api.one("/api/storage/volumes", name="sr_cases_a")
    api.job_ok("DELETE", f"/api/storage/volumes/{vol['uuid']}")


# ---- push on start -------------------------------------------------------------------------------


@pytest.mark.parametrize("vendor", ["hpe_primera", "netapp_ontap"])
def test_an_array_pushes_its_fabric_when_it_starts(start_array, lab_pki, vendor) -> None:
    """A restarted array's exports come back on the hosts without waiting for a call."""
    cap = Capture(lab_pki)
    try:
        arr = start_array(vendor, notify_urls=[cap.url])
        first = _wait_for_push(cap, arr.config.name, 0)
        arr.restart()  # no call made in between
        second = _wait_for_push(cap, arr.config.name, first["generation"])
        assert second["generation"] > first["generation"]
        assert second["luns"] == first["luns"] and second["array"] == arr.config.name
    finally:
        cap.server.shutdown()


def _wait_for_push(cap: Capture, array: str, after: int, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        docs = [d for d in cap.docs if d["array"] == array and d["generation"] > after]
        if docs:
            return docs[-1]
        time.sleep(0.05)
    raise AssertionError(f"{array} pushed no fabric newer than generation {after}")
