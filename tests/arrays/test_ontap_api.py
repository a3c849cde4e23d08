"""The NetApp ONTAP emulator at the REST level: real HTTPS, checked with requests."""

from __future__ import annotations

import http.server
import json
import re
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from lab.pki import LabPki
from lab.process import stop
from lab.vmfs import read_header
from tests.arrays.conftest import RunningArray, seed_spec

TARGET_IQN = re.compile(r"^iqn\.1992-08\.com\.netapp:sn\.[0-9a-f]{32}:vs\.\d+$")
ESX_IQNS = [f"iqn.1998-01.com.vmware:esx-0{i}-0000000{i}" for i in (1, 2, 3)]


class Ontap:
    """A tiny ONTAP REST caller: Basic auth, TLS verified against the lab CA."""

    def __init__(self, array: RunningArray, auth: tuple[str, str] | None = ("admin", "lab-secret")):
        self.array = array
        self.auth = auth

    def call(self, method: str, path: str, **kw: Any) -> requests.Response:
        """Send ``method`` to ``path`` (which starts with /api)."""
        return requests.request(
            method,
            self.array.url + path,
            auth=self.auth,
            verify=self.array.ca_bundle,
            timeout=30,
            **kw,
        )

    def ok(self, method: str, path: str, status: int = 200, **kw: Any) -> requests.Response:
        """Call and assert the status."""
        r = self.call(method, path, **kw)
        assert r.status_code == status, (method, path, r.status_code, r.text)
        return r

    def records(self, path: str, **params: Any) -> list[dict[str, Any]]:
        """GET a collection; check the HAL envelope; return its records."""
        body = self.ok("GET", path, params=params).json()
        assert body["num_records"] == len(body["records"])
        assert "self" in body["_links"]
        return body["records"]

    def one(self, path: str, **params: Any) -> dict[str, Any]:
        """GET a collection that must hold exactly one matching record."""
        found = self.records(path, **params)
        assert len(found) == 1, found
        return found[0]

    def wait(self, r: requests.Response, timeout: float = 15) -> dict[str, Any]:
        """Poll the job of a 202 answer until it ends; return the job."""
        assert r.status_code == 202, r.text
        href = r.json()["job"]["_links"]["self"]["href"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.ok("GET", href, params={"fields": "state,message,code"}).json()
            if job["state"] in ("success", "failure"):
                return job
            time.sleep(0.03)
        raise AssertionError(f"job {href} did not end")

    def job_ok(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        """Run an asynchronous call and assert its job succeeded."""
        job = self.wait(self.call(method, path, **kw))
        assert job["state"] == "success", job
        return job

    def lab(self) -> dict[str, Any]:
        """Return ``/lab/state``."""
        return self.array.lab("GET", "/lab/state").json()

    def fabric(self) -> dict[str, Any]:
        """Return ``/lab/fabric``."""
        return self.array.lab("GET", "/lab/fabric").json()


def ontap_error(r: requests.Response, status: int, code: str) -> dict[str, Any]:
    """Assert ``r`` is an ONTAP error with that status and (string) code; return its error."""
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code, err
    assert isinstance(err["message"], str) and err["message"]
    return err


def two_volume_spec(tmp: Path) -> dict[str, Any]:
    """Seed spec: an NFS volume and an iSCSI volume with VMFS, each with two snapshots."""
    nfs = seed_spec(tmp, "nfs", "ds_nfs_01", vmfs=False)
    iscsi = seed_spec(tmp, "iscsi", "ds_iscsi_01", vmfs=True)
    return {"hosts": nfs["hosts"], "volumes": nfs["volumes"] + iscsi["volumes"]}


def vmx_gen(content_dir: str) -> str:
    """Return the ``sr.gen`` written in a seeded ``vm-a.vmx`` (which content generation)."""
    text = (Path(content_dir) / "vm-a" / "vm-a.vmx").read_text()
    return re.search(r'sr\.gen = "(\d)"', text).group(1)


@pytest.fixture(scope="module")
def array(start_array_module, tmp_path_factory) -> RunningArray:
    """One seeded ONTAP emulator for the module (jobs take 0.2 s so that callers must poll)."""
    arr = start_array_module("netapp_ontap", name="ontap_api", extra={"job_delay_s": 0.2})
    spec = two_volume_spec(tmp_path_factory.mktemp("seed"))
    assert arr.lab("POST", "/lab/seed", json=spec).status_code == 201
    return arr


@pytest.fixture
def api(array: RunningArray) -> Ontap:
    """An authenticated caller of the module's emulator."""
    return Ontap(array)


def create_volume(api: Ontap, name: str, **extra: Any) -> dict[str, Any]:
    """Create a FlexVol through the job API; return its record."""
    api.job_ok(
        "POST", "/api/storage/volumes", json={"name": name, "svm": {"name": "svm1"}, **extra}
    )
    return api.one("/api/storage/volumes", name=name, fields="*")


def clone_volume(api: Ontap, name: str, parent: str, snapshot: str, **extra: Any) -> dict:
    """Create a FlexClone of ``parent@snapshot`` (nested body); return its record."""
    body = {
        "name": name,
        "svm": {"name": "svm1"},
        "clone": {
            "is_flexclone": True,
            "parent_volume": {"name": parent},
            "parent_snapshot": {"name": snapshot},
        },
        **extra,
    }
    api.job_ok("POST", "/api/storage/volumes", json=body)
    return api.one("/api/storage/volumes", name=name, fields="*")


# ---- authentication, errors, cluster -------------------------------------------------------------


def test_every_api_call_needs_basic_auth(array: RunningArray) -> None:
    for auth in (None, ("admin", "wrong"), ("root", "lab-secret")):
        r = Ontap(array, auth=auth).call("GET", "/api/storage/volumes")
        ontap_error(r, 401, "6")
    assert Ontap(array).call("GET", "/api/storage/volumes").status_code == 200


def test_cluster_nodes_and_svm(api: Ontap, array: RunningArray) -> None:
    cluster = api.ok("GET", "/api/cluster", params={"fields": "version"}).json()
    assert cluster["version"]["generation"] == 9
    assert cluster["version"]["major"] >= 13
    assert cluster["version"]["full"].startswith("NetApp Release 9.")
    assert set(cluster) <= {"version", "name", "uuid", "_links"}  # fields= honoured
    full = api.ok("GET", "/api/cluster").json()
    assert full["name"] == "ontap_api" and full["uuid"]
    node = api.one("/api/cluster/nodes", fields="serial_number,model")
    assert node["serial_number"] == array.config.serial
    assert node["model"] == array.config.model
    svm = api.one("/api/svm/svms")
    assert svm["name"] == "svm1"
    assert api.ok("GET", f"/api/svm/svms/{svm['uuid']}").json()["state"] == "running"


def test_unknown_objects_fields_and_filters_are_errors(api: Ontap) -> None:
    ontap_error(api.call("GET", "/api/storage/volumes/0000-none"), 404, "4")
    ontap_error(api.call("GET", "/api/cluster/jobs/0000-none"), 404, "4")
    err = ontap_error(api.call("GET", "/api/storage/volumes", params={"nam": "x"}), 400, "262179")
    assert err["target"] == "nam"
    ontap_error(api.call("GET", "/api/storage/volumes", params={"fields": "bogus"}), 400, "262197")
    r = api.call(
        "POST", "/api/storage/volumes", json={"name": "v_x", "svm": {"name": "svm1"}, "x": 1}
    )
    ontap_error(r, 400, "262179")
    r = api.call("POST", "/api/storage/volumes", json={"name": "v_x", "svm": {"name": "nope"}})
    ontap_error(r, 404, "4")


# ---- seeded objects ------------------------------------------------------------------------------


def test_seed_creates_exported_volumes_luns_and_snapshots(api: Ontap) -> None:
    nfs = api.one("/api/storage/volumes", name="ds_nfs_01", fields="*")
    assert nfs["nas"]["path"] == "/ds_nfs_01"
    assert nfs["nas"]["export_policy"]["name"] == "esx_hosts"
    assert nfs["size"] == 10240 * 2**20 and nfs["state"] == "online"
    assert nfs["clone"]["is_flexclone"] is False
    snaps = api.records(f"/api/storage/volumes/{nfs['uuid']}/snapshots", fields="name,create_time")
    assert [(s["name"], s["create_time"][:19]) for s in snaps] == [
        ("daily-1", "2026-11-23T01:00:00"),
        ("daily-2", "2026-11-24T01:00:00"),
    ]

    lun = api.one("/api/storage/luns", **{"location.volume.name": "ds_iscsi_01", "fields": "*"})
    assert lun["name"] == "/vol/ds_iscsi_01/lun0"
    assert lun["os_type"] == "vmware" and lun["status"]["state"] == "online"
    assert lun["status"]["mapped"] is True
    group = api.one("/api/protocols/san/igroups", name="esx_cluster", fields="*")
    assert group["protocol"] == "iscsi" and group["os_type"] == "vmware"
    assert sorted(i["name"] for i in group["initiators"]) == ESX_IQNS
    m = api.one("/api/protocols/san/lun-maps", **{"lun.name": lun["name"], "fields": "*"})
    assert m["igroup"]["name"] == "esx_cluster" and m["logical_unit_number"] == 0

    policy = api.one("/api/protocols/nfs/export-policies", name="esx_hosts", fields="*")
    assert isinstance(policy["id"], int)
    assert sorted(c["match"] for r in policy["rules"] for c in r["clients"]) == [
        "127.0.10.11",
        "127.0.10.12",
        "127.0.10.13",
    ]
    assert all(r["superuser"] == ["sys"] and r["rw_rule"] == ["sys"] for r in policy["rules"])

    state = api.lab()
    assert state["vendor"] == "netapp_ontap"
    vols = {v["name"]: v for v in state["volumes"]}
    assert vols["ds_iscsi_01"]["naa"] == "naa.600a0980" + lun["serial_number"].encode().hex()
    assert vols["ds_nfs_01"]["naa"] is None and vols["ds_nfs_01"]["is_copy"] is False
    assert {(s["volume"], s["name"]) for s in state["snapshots"]} >= {
        ("ds_nfs_01", "daily-1"),
        ("ds_iscsi_01", "daily-2"),
    }
    assert all(s["read_only"] for s in state["snapshots"])
    assert {"name": "esx_cluster", "initiators": ESX_IQNS, "protocol": "iscsi"} in state["hosts"]
    assert {"volume": "ds_iscsi_01", "host": "esx_cluster", "lun": 0, "protocol": "iscsi"} in state[
        "exports"
    ]
    nfs_export = next(e for e in state["nfs_exports"] if e["volume"] == "ds_nfs_01")
    assert nfs_export["path"] == "/ds_nfs_01" and nfs_export["policy"] == "esx_hosts"
    assert {"match": "127.0.10.12", "rw": True, "root": True} in nfs_export["rules"]


def test_seeded_fabric_and_vmfs_headers(api: Ontap, array: RunningArray) -> None:
    fab = api.fabric()
    assert fab["vendor"] == "netapp_ontap" and fab["array"] == "ontap_api"
    lun = next(u for u in fab["luns"] if u["name"] == "/vol/ds_iscsi_01/lun0")
    assert (lun["vendor"], lun["model"], lun["size_mb"]) == ("NETAPP", "LUN C-Mode", 10240)
    assert {(e["initiator"], e["protocol"], e["lun"]) for e in lun["exports"]} == {
        (iqn, "iscsi", 0) for iqn in ESX_IQNS
    }
    target = api.one("/api/protocols/san/iscsi/services", fields="target.name")["target"]["name"]
    assert lun["iscsi_targets"] == [{"address": "127.0.40.12", "port": 3260, "iqn": target}]
    header = read_header(lun["content_dir"])
    assert header is not None and header.naa == lun["naa"]
    assert header.label == "ds_iscsi_01"
    assert vmx_gen(lun["content_dir"]) == "3"

    export = next(e for e in fab["nfs_exports"] if e["name"] == "ds_nfs_01")
    assert export["servers"] == array.config.nfs_addresses
    assert export["path"] == "/ds_nfs_01" and export["size_mb"] == 10240
    assert vmx_gen(export["content_dir"]) == "3"
    assert {"match": "127.0.10.11", "rw": True, "root": True} in export["rules"]


def test_lun_lookup_by_serial_and_naa_rule(api: Ontap) -> None:
    lun = api.one("/api/storage/luns", name="/vol/ds_iscsi_01/lun0", fields="serial_number")
    serial = lun["serial_number"]
    assert len(serial) == 12 and serial.isprintable()
    assert {"$", "?", "+"} <= set(serial)  # forces callers to URL-encode
    naa = "naa.600a0980" + serial.encode("ascii").hex()
    assert re.fullmatch(r"naa\.600a0980[0-9a-f]{24}", naa)
    back = bytes.fromhex(naa[len("naa.600a0980") :]).decode("ascii")
    found = api.one("/api/storage/luns", serial_number=back, fields="uuid,name,serial_number")
    assert found["name"] == "/vol/ds_iscsi_01/lun0" and found["serial_number"] == serial
    assert set(found) == {"uuid", "name", "serial_number", "_links"}
    # Unencoded in a hand-built query, "+" decodes to a space: nothing matches.
    raw = api.ok("GET", f"/api/storage/luns?serial_number={serial.replace('?', '%3F')}").json()
    assert raw["num_records"] == 0
    assert naa in {u["naa"] for u in api.fabric()["luns"]}


# ---- volumes and jobs ----------------------------------------------------------------------------


def test_volume_create_mount_unmount_delete_through_jobs(api: Ontap) -> None:
    r = api.call("POST", "/api/storage/volumes", json={"name": "t_vol1", "svm.name": "svm1"})
    assert r.status_code == 202
    assert r.headers["Location"] == "/api/storage/volumes/?name=t_vol1"
    job_href = r.json()["job"]["_links"]["self"]["href"]
    pending = api.ok("GET", job_href).json()
    assert pending["state"] in ("queued", "running")  # the caller must poll
    assert api.records("/api/storage/volumes", name="t_vol1") == []
    job = api.wait(r)
    assert job["state"] == "success"
    full_job = api.ok("GET", job_href).json()
    assert full_job["description"] == "POST /api/storage/volumes"
    assert full_job["start_time"] and full_job["end_time"]
    vol = api.one("/api/storage/volumes", name="t_vol1", fields="*")
    assert vol["nas"]["export_policy"]["name"] == "default" and "path" not in vol["nas"]
    assert vol["type"] == "rw" and vol["style"] == "flexvol"

    api.job_ok("PATCH", f"/api/storage/volumes/{vol['uuid']}", json={"nas": {"path": "/t_vol1"}})
    assert api.ok("GET", f"/api/storage/volumes/{vol['uuid']}").json()["nas"]["path"] == "/t_vol1"
    assert "/t_vol1" in {e["path"] for e in api.fabric()["nfs_exports"]}
    delete = api.wait(api.call("DELETE", f"/api/storage/volumes/{vol['uuid']}"))
    assert delete["state"] == "failure" and "mounted" in delete["message"]

    api.job_ok("PATCH", f"/api/storage/volumes/{vol['uuid']}", json={"nas.path": ""})
    assert "/t_vol1" not in {e["path"] for e in api.fabric()["nfs_exports"]}
    api.job_ok("DELETE", f"/api/storage/volumes/{vol['uuid']}")
    ontap_error(api.call("GET", f"/api/storage/volumes/{vol['uuid']}"), 404, "4")
    assert "t_vol1" not in {v["name"] for v in api.lab()["volumes"]}


def test_return_timeout_answers_once_the_job_is_done(api: Ontap) -> None:
    r = api.ok(
        "POST",
        "/api/storage/volumes",
        201,
        params={"return_timeout": "30", "return_records": "true"},
        json={"name": "t_vol_rt", "svm": {"name": "svm1"}, "size": "1GB", "comment": "c1"},
    )
    body = r.json()
    assert body["num_records"] == 1
    record = body["records"][0]
    assert record["name"] == "t_vol_rt" and record["size"] == 2**30 and record["comment"] == "c1"
    assert api.ok("GET", body["job"]["_links"]["self"]["href"]).json()["state"] == "success"
    path = f"/api/storage/volumes/{record['uuid']}"
    api.ok("PATCH", path, params={"return_timeout": "10"}, json={"comment": "c2"})
    assert api.ok("GET", path, params={"fields": "comment"}).json()["comment"] == "c2"
    api.ok("DELETE", path, params={"return_timeout": "10"})
    ontap_error(api.call("GET", path), 404, "4")
    bad = api.call(
        "POST",
        "/api/storage/volumes",
        params={"return_timeout": "121"},
        json={"name": "t_vol_rt", "svm": {"name": "svm1"}},
    )
    assert ontap_error(bad, 400, "2")["target"] == "return_timeout"


def test_volume_names_and_duplicates(api: Ontap) -> None:
    for bad in ("bad-name", "1starts_with_digit", "x" * 204, ""):
        r = api.call("POST", "/api/storage/volumes", json={"name": bad, "svm": {"name": "svm1"}})
        err = ontap_error(r, 400, "2")
        assert err["target"] == "name"
    create_volume(api, "_t_dup" + "x" * 150)  # underscore start, long names are fine
    create_volume(api, "t_dup")
    job = api.wait(
        api.call("POST", "/api/storage/volumes", json={"name": "t_dup", "svm.name": "svm1"})
    )
    assert job["state"] == "failure" and job["code"] == 1
    assert "Duplicate volume name" in job["message"]
    r = api.call(
        "POST",
        "/api/storage/volumes",
        params={"return_timeout": "5"},
        json={"name": "t_dup", "svm": {"name": "svm1"}},
    )
    assert "Duplicate" in ontap_error(r, 409, "1")["message"]


# ---- snapshots and FlexClones --------------------------------------------------------------------


def test_snapshot_create_get_delete(api: Ontap) -> None:
    vol = create_volume(api, "t_snapvol")
    snaps = f"/api/storage/volumes/{vol['uuid']}/snapshots"
    r = api.call("POST", snaps, json={"name": "s1", "comment": "before change"})
    assert r.headers["Location"] == f"{snaps}/?name=s1"
    assert api.wait(r)["state"] == "success"
    snap = api.one(snaps, name="s1", fields="name,comment,create_time")
    assert snap["comment"] == "before change" and snap["create_time"]
    assert api.ok("GET", f"{snaps}/{snap['uuid']}").json()["volume"]["name"] == "t_snapvol"
    dup = api.wait(api.call("POST", snaps, json={"name": "s1"}))
    assert dup["state"] == "failure" and dup["code"] == 1
    api.job_ok("DELETE", f"{snaps}/{snap['uuid']}")
    assert api.records(snaps) == []
    ontap_error(api.call("DELETE", f"{snaps}/{snap['uuid']}"), 404, "4")


def test_nfs_flexclone_from_snapshot_with_own_export_policy(api: Ontap) -> None:
    parent = api.one("/api/storage/volumes", name="ds_nfs_01")
    body = {
        "name": "t_nfs_clone",
        "svm": {"name": "svm1"},
        "comment": "snaprestore job=1",
        "clone": {
            "is_flexclone": True,
            "parent_volume": {"name": "ds_nfs_01"},
            "parent_snapshot": {"name": "daily-1"},
        },
    }
    r = api.call("POST", "/api/storage/volumes", json=body)
    assert api.records("/api/storage/volumes", name="t_nfs_clone") == []  # still a job
    assert api.wait(r)["state"] == "success"
    clone = api.one("/api/storage/volumes", name="t_nfs_clone", fields="*")
    assert clone["clone"]["is_flexclone"] is True
    assert clone["clone"]["parent_volume"] == {
        "name": "ds_nfs_01",
        "uuid": parent["uuid"],
        "_links": {"self": {"href": f"/api/storage/volumes/{parent['uuid']}"}},
    }
    assert clone["clone"]["parent_snapshot"]["name"] == "daily-1"
    assert clone["nas"]["export_policy"]["name"] == "esx_hosts"  # inherited
    assert "path" not in clone["nas"]  # not mounted without nas.path
    assert "/t_nfs_clone" not in {e["path"] for e in api.fabric()["nfs_exports"]}
    state = api.lab()
    assert {"name": "t_nfs_clone", "source": "ds_nfs_01@daily-1"}.items() <= next(
        v for v in state["copies"] if v["name"] == "t_nfs_clone"
    ).items()

    # A policy of its own with one rule for one host, then mount.
    r = api.ok(
        "POST",
        "/api/protocols/nfs/export-policies",
        201,
        params={"return_records": "true"},
        json={"name": "t_nfs_clone", "svm": {"name": "svm1"}},
    )
    policy_id = r.json()["records"][0]["id"]
    assert r.headers["Location"] == f"/api/protocols/nfs/export-policies/{policy_id}"
    rules = f"/api/protocols/nfs/export-policies/{policy_id}/rules"
    rule = {
        "clients": [{"match": "127.0.10.21"}],
        "protocols": ["nfs3"],
        "ro_rule": ["sys"],
        "rw_rule": ["sys"],
        "superuser": ["sys"],
    }
    r = api.ok("POST", rules, 201, params={"return_records": "true"}, json=rule)
    index = r.json()["records"][0]["index"]
    assert index == 1
    path = f"/api/storage/volumes/{clone['uuid']}"
    nas = {"path": "/t_nfs_clone", "export_policy": {"name": "t_nfs_clone"}}
    api.job_ok("PATCH", path, json={"nas": nas})
    export = next(e for e in api.fabric()["nfs_exports"] if e["path"] == "/t_nfs_clone")
    assert export["rules"] == [{"match": "127.0.10.21", "rw": True, "root": True}]
    assert vmx_gen(export["content_dir"]) == "1"  # from daily-1, not the current gen 3

    # Squash root for that client, then remove the rule: the fabric follows.
    api.ok("PATCH", f"{rules}/{index}", json={"superuser": ["none"]})
    export = next(e for e in api.fabric()["nfs_exports"] if e["path"] == "/t_nfs_clone")
    assert export["rules"] == [{"match": "127.0.10.21", "rw": True, "root": False}]
    ontap_error(
        api.call("DELETE", f"/api/protocols/nfs/export-policies/{policy_id}"), 409, "1703954"
    )
    api.ok("DELETE", f"{rules}/{index}")
    export = next(e for e in api.fabric()["nfs_exports"] if e["path"] == "/t_nfs_clone")
    assert export["rules"] == []

    # The parent snapshot and the parent volume are pinned by the clone.
    snap_uuid = clone["clone"]["parent_snapshot"]["uuid"]
    busy = api.wait(
        api.call("DELETE", f"/api/storage/volumes/{parent['uuid']}/snapshots/{snap_uuid}")
    )
    assert busy["state"] == "failure" and "t_nfs_clone" in busy["message"]
    busy = api.wait(api.call("DELETE", f"/api/storage/volumes/{parent['uuid']}"))
    assert busy["state"] == "failure" and "FlexClone" in busy["message"]

    api.job_ok("PATCH", path, json={"nas": {"path": ""}})
    api.job_ok("DELETE", path)
    api.ok("DELETE", f"/api/protocols/nfs/export-policies/{policy_id}")
    assert "t_nfs_clone" not in {v["name"] for v in api.lab()["volumes"]}


def test_san_flexclone_gets_new_serial_and_keeps_vmfs_signature(api: Ontap) -> None:
    parent_lun = api.one("/api/storage/luns", name="/vol/ds_iscsi_01/lun0", fields="serial_number")
    body = {  # dotted keys, as Ansible sends them
        "name": "t_san_clone",
        "svm.name": "svm1",
        "clone.is_flexclone": "true",
        "clone.parent_volume.name": "ds_iscsi_01",
        "clone.parent_snapshot.name": "daily-1",
    }
    api.job_ok("POST", "/api/storage/volumes", json=body)
    lun = api.one("/api/storage/luns", **{"location.volume.name": "t_san_clone", "fields": "*"})
    assert lun["name"] == "/vol/t_san_clone/lun0"
    assert lun["serial_number"] != parent_lun["serial_number"]
    assert lun["status"]["state"] == "online" and lun["status"]["mapped"] is False
    naa = "naa.600a0980" + lun["serial_number"].encode().hex()
    assert naa not in {u["naa"] for u in api.fabric()["luns"]}  # unmapped: invisible

    # Present it to one host through a new igroup.
    iqn = "iqn.1998-01.com.vmware:esx-09-00000009"
    r = api.ok(
        "POST",
        "/api/protocols/san/igroups",
        201,
        params={"return_records": "true"},
        json={
            "name": "t_esx09",
            "svm": {"name": "svm1"},
            "protocol": "iscsi",
            "os_type": "vmware",
            "initiators": [{"name": iqn}],
        },
    )
    group = r.json()["records"][0]
    r = api.ok(
        "POST",
        "/api/protocols/san/lun-maps",
        201,
        params={"return_records": "true"},
        json={"svm": {"name": "svm1"}, "lun": {"name": lun["name"]}, "igroup": {"name": "t_esx09"}},
    )
    m = r.json()["records"][0]
    assert m["logical_unit_number"] == 0
    assert r.headers["Location"] == f"/api/protocols/san/lun-maps/{lun['uuid']}/{group['uuid']}"
    fab_lun = next(u for u in api.fabric()["luns"] if u["naa"] == naa)
    assert fab_lun["exports"] == [{"initiator": iqn, "protocol": "iscsi", "lun": 0}]
    assert fab_lun["iscsi_targets"][0]["address"] == "127.0.40.12"
    assert TARGET_IQN.match(fab_lun["iscsi_targets"][0]["iqn"])
    header = read_header(fab_lun["content_dir"])
    parent_naa = "naa.600a0980" + parent_lun["serial_number"].encode().hex()
    assert header is not None and header.naa == parent_naa  # an unresolved VMFS copy
    assert vmx_gen(fab_lun["content_dir"]) == "1"

    again = api.call(
        "POST",
        "/api/protocols/san/lun-maps",
        json={
            "svm": {"name": "svm1"},
            "lun": {"uuid": lun["uuid"]},
            "igroup": {"uuid": group["uuid"]},
        },
    )
    ontap_error(again, 409, "5374914")
    busy = api.wait(api.call("DELETE", f"/api/storage/volumes/{lun['location']['volume']['uuid']}"))
    assert busy["state"] == "failure" and "mapped" in busy["message"]

    unmap = f"/api/protocols/san/lun-maps/{lun['uuid']}/{group['uuid']}"
    api.ok("DELETE", unmap)
    ontap_error(api.call("DELETE", unmap), 404, "5374922")
    assert naa not in {u["naa"] for u in api.fabric()["luns"]}
    api.job_ok("DELETE", f"/api/storage/volumes/{lun['location']['volume']['uuid']}")
    api.ok("DELETE", f"/api/protocols/san/igroups/{group['uuid']}")
    ontap_error(api.call("GET", f"/api/storage/luns/{lun['uuid']}"), 404, "5374875")


def test_flexclone_without_snapshot_name_takes_a_new_snapshot(api: Ontap) -> None:
    clone = clone_volume(api, "t_clone_now", "ds_nfs_01", "daily-2")
    assert clone["clone"]["parent_snapshot"]["name"] == "daily-2"
    body = {
        "name": "t_clone_now2",
        "svm.name": "svm1",
        "clone": {"is_flexclone": True, "parent_volume": {"name": "ds_nfs_01"}},
        "nas": {"path": "/t_clone_now2"},
    }
    api.job_ok("POST", "/api/storage/volumes", json=body)
    vol = api.one("/api/storage/volumes", name="t_clone_now2", fields="clone")
    assert vol["clone"]["parent_snapshot"]["name"].startswith("clone_t_clone_now2.")
    export = next(e for e in api.fabric()["nfs_exports"] if e["path"] == "/t_clone_now2")
    assert vmx_gen(export["content_dir"]) == "3"  # the parent's current content
    missing = api.wait(
        api.call(
            "POST",
            "/api/storage/volumes",
            json={
                "name": "t_clone_bad",
                "svm.name": "svm1",
                "clone.is_flexclone": True,
                "clone.parent_volume.name": "ds_nfs_01",
                "clone.parent_snapshot.name": "nope",
            },
        )
    )
    assert missing["state"] == "failure" and "nope" in missing["message"]
    for v in (clone, vol):
        path = f"/api/storage/volumes/{v['uuid']}"
        api.job_ok("PATCH", path, json={"nas": {"path": ""}})
        api.job_ok("DELETE", path)


# ---- SAN objects ---------------------------------------------------------------------------------


def test_igroups_and_initiators(api: Ontap) -> None:
    iqn_a, iqn_b, iqn_c = (f"iqn.1998-01.com.vmware:t-ig-{c}" for c in "abc")
    r = api.ok(
        "POST",
        "/api/protocols/san/igroups",
        201,
        json={
            "name": "t_ig",
            "svm": {"name": "svm1"},
            "os_type": "vmware",
            "protocol": "iscsi",
            "initiators": [{"name": iqn_a}],
            "comment": "made by test",
        },
    )
    uuid = r.headers["Location"].rsplit("/", 1)[1]
    base = f"/api/protocols/san/igroups/{uuid}"
    r = api.ok("POST", base + "/initiators", 201, json={"name": iqn_b})
    assert r.headers["Location"] == base + "/initiators/" + iqn_b.replace(":", "%3A")
    api.ok("POST", base + "/initiators", 201, json={"records": [{"name": iqn_c}]})
    ontap_error(api.call("POST", base + "/initiators", json={"name": iqn_b}), 409, "1")
    ontap_error(api.call("POST", base + "/initiators", json={"name": "not-an-iqn"}), 400, "2")
    ontap_error(
        api.call("POST", base + "/initiators", json={"name": "20:00:00:25:b5:00:00:01"}), 400, "2"
    )
    found = api.one(
        "/api/protocols/san/igroups", **{"initiators.name": iqn_c, "fields": "name,comment"}
    )
    assert found == {  # the requested fields, the key, and the field filtered on
        "uuid": uuid,
        "name": "t_ig",
        "comment": "made by test",
        "initiators": [{"name": iqn_a}, {"name": iqn_b}, {"name": iqn_c}],
        "_links": found["_links"],
    }
    assert api.records("/api/protocols/san/igroups", **{"initiators.name": "iqn.none"}) == []
    api.ok("DELETE", f"{base}/initiators/{iqn_b}")
    names = [i["name"] for i in api.ok("GET", base).json()["initiators"]]
    assert names == [iqn_a, iqn_c]
    dup = api.call(
        "POST",
        "/api/protocols/san/igroups",
        json={"name": "t_ig", "svm.name": "svm1", "os_type": "vmware"},
    )
    ontap_error(dup, 409, "1")
    fc = api.ok(
        "POST",
        "/api/protocols/san/igroups",
        201,
        params={"return_records": "true"},
        json={
            "name": "t_ig_fc",
            "svm.name": "svm1",
            "os_type": "vmware",
            "protocol": "fcp",
            "initiators": [{"name": "21:00:00:24:ff:10:00:11"}],
        },
    )
    assert fc.json()["records"][0]["protocol"] == "fcp"
    api.ok("DELETE", base)
    api.ok("DELETE", f"/api/protocols/san/igroups/{fc.json()['records'][0]['uuid']}")
    ontap_error(api.call("GET", base), 404, "5374878")


def test_lun_maps_numbers_and_refusals(api: Ontap) -> None:
    vol = create_volume(api, "t_maps", size="2GB")
    luns = []
    for name in ("l1", "l2", "l3"):
        r = api.ok(
            "POST",
            "/api/storage/luns",
            201,
            params={"return_records": "true"},
            json={
                "name": f"/vol/t_maps/{name}",
                "svm": {"name": "svm1"},
                "os_type": "vmware",
                "space": {"size": 100 * 2**20},
            },
        )
        luns.append(r.json()["records"][0])
    assert len({u["serial_number"] for u in luns}) == 3
    ontap_error(
        api.call(
            "POST",
            "/api/storage/luns",
            json={
                "name": "/vol/t_maps/l1",
                "svm.name": "svm1",
                "os_type": "vmware",
                "space.size": 1024,
            },
        ),
        409,
        "1",
    )
    iqn = "iqn.1998-01.com.vmware:t-maps"
    for g in ("t_maps_a", "t_maps_b"):
        api.ok(
            "POST",
            "/api/protocols/san/igroups",
            201,
            json={
                "name": g,
                "svm.name": "svm1",
                "os_type": "vmware",
                "protocol": "iscsi",
                "initiators": [{"name": iqn}] if g == "t_maps_a" else [],
                "delete_on_unmap": g == "t_maps_b",
            },
        )

    def lun_map(lun: dict, group: str, **extra: Any) -> requests.Response:
        body = {"svm.name": "svm1", "lun.uuid": lun["uuid"], "igroup.name": group, **extra}
        return api.call(
            "POST", "/api/protocols/san/lun-maps", params={"return_records": "true"}, json=body
        )

    assert lun_map(luns[0], "t_maps_a").json()["records"][0]["logical_unit_number"] == 0
    assert lun_map(luns[1], "t_maps_a", logical_unit_number=5).status_code == 201
    ontap_error(lun_map(luns[2], "t_maps_a", logical_unit_number=5), 409, "5374915")
    assert lun_map(luns[2], "t_maps_a").json()["records"][0]["logical_unit_number"] == 1
    ontap_error(lun_map(luns[2], "t_maps_b", logical_unit_number=7000), 400, "2")
    # An initiator sees a LUN once, and LUN numbers are unique per initiator.
    api.ok(
        "POST",
        "/api/protocols/san/igroups/"
        + api.one("/api/protocols/san/igroups", name="t_maps_b")["uuid"]
        + "/initiators",
        201,
        json={"name": iqn},
    )
    ontap_error(lun_map(luns[0], "t_maps_b"), 409, "5374916")
    ontap_error(
        api.call(
            "POST",
            "/api/protocols/san/lun-maps",
            json={"svm.name": "svm1", "lun.name": "/vol/t_maps/none", "igroup.name": "t_maps_a"},
        ),
        404,
        "5374875",
    )
    ontap_error(
        api.call(
            "POST",
            "/api/protocols/san/lun-maps",
            json={"svm.name": "svm1", "lun.uuid": luns[0]["uuid"], "igroup.name": "none"},
        ),
        404,
        "5374878",
    )

    maps = api.records(
        "/api/protocols/san/lun-maps",
        **{"lun.name": "/vol/t_maps/*", "fields": "logical_unit_number"},
    )
    assert sorted(m["logical_unit_number"] for m in maps) == [0, 1, 5]
    assert all(set(m) == {"lun", "igroup", "logical_unit_number", "_links"} for m in maps)

    group_a = api.one("/api/protocols/san/igroups", name="t_maps_a")
    ontap_error(api.call("DELETE", f"/api/protocols/san/igroups/{group_a['uuid']}"), 409, "5374918")
    ontap_error(api.call("DELETE", f"/api/storage/luns/{luns[0]['uuid']}"), 409, "5374917")
    # Taking a LUN offline hides it from the fabric.
    naa = "naa.600a0980" + luns[0]["serial_number"].encode().hex()
    assert naa in {u["naa"] for u in api.fabric()["luns"]}
    api.ok("PATCH", f"/api/storage/luns/{luns[0]['uuid']}", json={"enabled": False})
    assert naa not in {u["naa"] for u in api.fabric()["luns"]}
    lun0 = api.ok("GET", f"/api/storage/luns/{luns[0]['uuid']}").json()
    assert lun0["status"]["state"] == "offline"

    api.ok(
        "DELETE",
        f"/api/protocols/san/igroups/{group_a['uuid']}",
        params={"allow_delete_while_mapped": "true"},
    )
    assert api.records("/api/protocols/san/lun-maps", **{"lun.name": "/vol/t_maps/*"}) == []
    for lun in luns:
        api.ok("DELETE", f"/api/storage/luns/{lun['uuid']}")
    # t_maps_b had delete_on_unmap but was never mapped: it stays until deleted.
    group_b = api.one("/api/protocols/san/igroups", name="t_maps_b")
    api.ok("DELETE", f"/api/protocols/san/igroups/{group_b['uuid']}")
    api.job_ok("DELETE", f"/api/storage/volumes/{vol['uuid']}")


def test_fcp_igroup_exports_canonical_wwpns(api: Ontap) -> None:
    vol = create_volume(api, "t_fc", size="1GB")
    r = api.ok(
        "POST",
        "/api/storage/luns",
        201,
        params={"return_records": "true"},
        json={
            "location": {"volume": {"name": "t_fc"}, "logical_unit": "lun0"},
            "svm.name": "svm1",
            "os_type": "vmware",
            "space.size": "100MB",
        },
    )
    lun = r.json()["records"][0]
    assert lun["name"] == "/vol/t_fc/lun0" and lun["space"]["size"] == 100 * 2**20
    group = {
        "name": "t_fc_host",
        "svm.name": "svm1",
        "os_type": "vmware",
        "protocol": "fcp",
        "initiators": [{"name": "21:00:00:24:FF:10:00:11"}, {"name": "21:00:00:24:ff:10:00:12"}],
    }
    api.ok("POST", "/api/protocols/san/igroups", 201, json=group)
    api.ok(
        "POST",
        "/api/protocols/san/lun-maps",
        201,
        json={"svm.name": "svm1", "lun.name": "/vol/t_fc/lun0", "igroup.name": "t_fc_host"},
    )
    fab_lun = next(u for u in api.fabric()["luns"] if u["name"] == "/vol/t_fc/lun0")
    assert fab_lun["exports"] == [
        {"initiator": "21000024ff100011", "protocol": "fc", "lun": 0},
        {"initiator": "21000024ff100012", "protocol": "fc", "lun": 0},
    ]
    assert fab_lun["iscsi_targets"] == [] and fab_lun["fc_targets"] == []  # no FC LIFs here
    state = api.lab()
    assert {
        "name": "t_fc_host",
        "initiators": ["21000024ff100011", "21000024ff100012"],
        "protocol": "fc",
    } in state["hosts"]
    assert {"volume": "t_fc", "host": "t_fc_host", "lun": 0, "protocol": "fc"} in state["exports"]
    group_uuid = api.one("/api/protocols/san/igroups", name="t_fc_host")["uuid"]
    api.ok("DELETE", f"/api/protocols/san/lun-maps/{lun['uuid']}/{group_uuid}")
    api.ok("DELETE", f"/api/protocols/san/igroups/{group_uuid}")
    ontap_error(
        api.call(
            "POST",
            "/api/storage/volumes",
            json={"name": "t_x", "svm.name": "svm1", "clone": "ds_nfs_01"},
        ),
        400,
        "2",
    )
    api.job_ok("DELETE", f"/api/storage/volumes/{vol['uuid']}")  # its LUN goes with it
    ontap_error(api.call("GET", f"/api/storage/luns/{lun['uuid']}"), 404, "5374875")


def test_delete_on_unmap_removes_the_igroup(api: Ontap) -> None:
    lun = api.one("/api/storage/luns", name="/vol/ds_iscsi_01/lun0")
    r = api.ok(
        "POST",
        "/api/protocols/san/igroups",
        201,
        params={"return_records": "true"},
        json={
            "name": "t_dou",
            "svm.name": "svm1",
            "os_type": "vmware",
            "protocol": "iscsi",
            "initiators": [{"name": "iqn.1998-01.com.vmware:t-dou"}],
            "delete_on_unmap": True,
        },
    )
    group = r.json()["records"][0]
    api.ok(
        "POST",
        "/api/protocols/san/lun-maps",
        201,
        json={"svm.name": "svm1", "lun.uuid": lun["uuid"], "igroup.uuid": group["uuid"]},
    )
    api.ok("DELETE", f"/api/protocols/san/lun-maps/{lun['uuid']}/{group['uuid']}")
    assert api.records("/api/protocols/san/igroups", name="t_dou") == []


def test_iscsi_service_and_lifs(api: Ontap) -> None:
    service = api.one(
        "/api/protocols/san/iscsi/services",
        **{"svm.name": "svm1", "fields": "target.name,target.alias"},
    )
    assert TARGET_IQN.match(service["target"]["name"]) and service["target"]["alias"] == "svm1"
    single = api.ok("GET", f"/api/protocols/san/iscsi/services/{service['svm']['uuid']}").json()
    assert single["target"]["name"] == service["target"]["name"]
    iscsi = api.records(
        "/api/network/ip/interfaces", services="data_iscsi", fields="ip.address,state"
    )
    assert [(i["ip"]["address"], i["state"]) for i in iscsi] == [("127.0.40.12", "up")]
    nfs = api.one(
        "/api/network/ip/interfaces", **{"ip.address": "127.0.40.11", "fields": "svm,services"}
    )
    assert nfs["svm"]["name"] == "svm1" and "data_nfs" in nfs["services"]
    assert "data_iscsi" not in nfs["services"]
    assert len(api.records("/api/network/ip/interfaces", **{"svm.name": "svm1"})) == 2
    assert api.records("/api/network/ip/interfaces", **{"svm.name": "other"}) == []
    assert api.records("/api/network/fc/interfaces") == []  # no FC ports configured


# ---- collections ---------------------------------------------------------------------------------


def test_fields_filters_wildcards_and_paging(api: Ontap) -> None:
    names = [v["name"] for v in api.records("/api/storage/volumes", name="ds_*")]
    assert names == ["ds_iscsi_01", "ds_nfs_01"]
    assert [
        v["name"]
        for v in api.records(
            "/api/storage/volumes", name="ds_*|nothing", **{"nas.path": "/ds_nfs_01"}
        )
    ] == ["ds_nfs_01"]
    assert "ds_nfs_01" not in [
        v["name"] for v in api.records("/api/storage/volumes", name="!ds_nfs_01")
    ]
    assert [
        v["name"]
        for v in api.records(
            "/api/storage/volumes", **{"clone.is_flexclone": "false", "name": "ds_*"}
        )
    ] == ["ds_iscsi_01", "ds_nfs_01"]
    vol = api.one("/api/storage/volumes", name="ds_nfs_01", fields="nas.path,size")
    assert set(vol) == {"uuid", "name", "nas", "size", "_links"}
    assert vol["nas"] == {"path": "/ds_nfs_01"}
    default = api.one("/api/storage/volumes", name="ds_nfs_01")
    assert set(default) == {"uuid", "name", "_links"}
    big = api.records("/api/storage/volumes", size=">1000000", name="ds_*")
    assert len(big) == 2

    body = api.ok(
        "GET", "/api/storage/volumes", params={"max_records": "1", "fields": "name"}
    ).json()
    assert body["num_records"] == 1
    seen = [body["records"][0]["name"]]
    while "next" in body["_links"]:
        body = api.ok("GET", body["_links"]["next"]["href"]).json()
        seen += [r["name"] for r in body["records"]]
    assert seen == sorted(v["name"] for v in api.records("/api/storage/volumes"))
    counted = api.ok("GET", "/api/storage/volumes", params={"return_records": "false"}).json()
    assert "records" not in counted and counted["num_records"] == len(seen)
    ordered = api.records("/api/storage/volumes", order_by="name desc", name="ds_*")
    assert [v["name"] for v in ordered] == ["ds_nfs_01", "ds_iscsi_01"]


# ---- lab endpoints -------------------------------------------------------------------------------


def test_calls_are_counted_per_operation(api: Ontap, array: RunningArray) -> None:
    array.lab("DELETE", "/lab/calls")
    vol = create_volume(api, "t_calls")
    api.job_ok("DELETE", f"/api/storage/volumes/{vol['uuid']}")
    calls = array.lab("GET", "/lab/calls").json()
    assert calls["POST /api/storage/volumes"] == 1
    assert calls["DELETE /api/storage/volumes/{}"] == 1
    assert calls["GET /api/cluster/jobs/{}"] >= 2
    assert calls["GET /api/storage/volumes"] == 1


def test_injected_faults_use_the_ontap_error_body(api: Ontap, array: RunningArray) -> None:
    r = array.lab(
        "POST", "/lab/faults", json={"operation": "GET /api/cluster", "error": 503, "times": 2}
    )
    assert r.status_code == 201
    for _ in range(2):
        err = ontap_error(api.call("GET", "/api/cluster"), 503, "503")
        assert "injected" in err["message"]
    assert api.call("GET", "/api/cluster").status_code == 200
    array.lab(
        "POST", "/lab/faults", json={"operation": "GET /api/svm/svms", "delay_s": 0.4, "times": 1}
    )
    start = time.monotonic()
    api.ok("GET", "/api/svm/svms")
    assert time.monotonic() - start >= 0.4
    assert (
        array.lab(
            "POST", "/lab/faults", json={"operation": "GET /api/nothing", "error": 500}
        ).status_code
        == 400
    )
    assert array.lab("GET", "/lab/faults").json() == {"faults": []}


# ---- persistence and fabric pushes ---------------------------------------------------------------


def test_state_survives_a_restart_and_pending_jobs_finish(
    start_array_module: Callable[..., RunningArray], tmp_path: Path
) -> None:
    first = start_array_module("netapp_ontap", name="ontap_persist", extra={"job_delay_s": 0.01})
    seed = seed_spec(tmp_path, "iscsi", "ds_persist", vmfs=True)
    assert first.lab("POST", "/lab/seed", json=seed).status_code == 201
    api = Ontap(first)
    clone_volume(api, "p_clone", "ds_persist", "daily-2")
    api.ok(
        "POST",
        "/api/protocols/nfs/export-policies",
        201,
        json={
            "name": "p_pol",
            "svm.name": "svm1",
            "rules": [
                {"clients": [{"match": "127.0.10.50"}], "ro_rule": ["sys"], "rw_rule": ["none"]}
            ],
        },
    )
    before = api.lab()
    fabric_before = api.fabric()
    stop(first.pid)

    slow = start_array_module("netapp_ontap", name="ontap_persist", extra={"job_delay_s": 30})
    api = Ontap(slow)
    assert api.lab() == before
    assert api.fabric()["luns"] == fabric_before["luns"]
    assert api.fabric()["generation"] >= fabric_before["generation"]
    r = api.call("POST", "/api/storage/volumes", json={"name": "p_pending", "svm.name": "svm1"})
    assert r.status_code == 202
    stop(slow.pid)  # the job is still pending

    again = start_array_module("netapp_ontap", name="ontap_persist", extra={"job_delay_s": 0.01})
    api = Ontap(again)
    assert api.wait(r)["state"] == "success"  # same job, finished by the new process
    assert api.one("/api/storage/volumes", name="p_pending")["name"] == "p_pending"
    policy = api.one("/api/protocols/nfs/export-policies", name="p_pol", fields="rules")
    assert policy["rules"][0]["clients"] == [{"match": "127.0.10.50"}]


def test_seed_refuses_fc_volumes_without_creating_anything(
    start_array_module: Callable[..., RunningArray], tmp_path: Path
) -> None:
    arr = start_array_module("netapp_ontap", name="ontap_fc_seed")
    spec = two_volume_spec(tmp_path)
    fc = seed_spec(tmp_path / "fc", "fc", "ds_fc_01", vmfs=True)["volumes"][0]
    r = arr.lab("POST", "/lab/seed", json={**spec, "volumes": [*spec["volumes"], fc]})
    assert r.status_code == 400 and "FC" in r.json()["error"]
    assert arr.lab("GET", "/lab/state").json()["volumes"] == []
    assert arr.lab("POST", "/lab/seed", json=spec).status_code == 201
    assert len(arr.lab("GET", "/lab/state").json()["volumes"]) == 2


class _Capture(http.server.BaseHTTPRequestHandler):
    """Records every fabric document POSTed to it."""

    def do_POST(self) -> None:
        doc = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.docs.append(doc)  # type: ignore[attr-defined]
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def capture(lab_pki: LabPki) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A tiny HTTPS server (lab certificate) that records pushed fabric documents."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Capture)
    server.docs = []  # type: ignore[attr-defined]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(lab_pki.server_cert), str(lab_pki.server_key))
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}/lab/fabric-changed", server.docs  # type: ignore[attr-defined]
    server.shutdown()


def test_fabric_is_pushed_before_the_call_returns(
    start_array_module: Callable[..., RunningArray],
    capture: tuple[str, list[dict[str, Any]]],
    tmp_path: Path,
) -> None:
    url, docs = capture
    arr = start_array_module("netapp_ontap", name="ontap_push", notify_urls=[url])
    assert (
        arr.lab(
            "POST", "/lab/seed", json=seed_spec(tmp_path, "iscsi", "ds_push", vmfs=True)
        ).status_code
        == 201
    )
    assert docs and docs[-1]["luns"][0]["name"] == "/vol/ds_push/lun0"
    api = Ontap(arr)
    api.job_ok(
        "POST",
        "/api/storage/volumes",
        json={
            "name": "push_clone",
            "svm.name": "svm1",
            "clone": {
                "is_flexclone": True,
                "parent_volume": {"name": "ds_push"},
                "parent_snapshot": {"name": "daily-1"},
            },
        },
    )
    lun = api.one("/api/storage/luns", **{"location.volume.name": "push_clone"})
    generation = docs[-1]["generation"]
    api.ok(
        "POST",
        "/api/protocols/san/lun-maps",
        201,
        json={"svm.name": "svm1", "lun.uuid": lun["uuid"], "igroup.name": "esx_cluster"},
    )
    latest = docs[-1]  # already there: pushed before the POST answered
    assert latest["generation"] > generation
    pushed = next(u for u in latest["luns"] if u["name"] == "/vol/push_clone/lun0")
    assert {e["lun"] for e in pushed["exports"]} == {1}
    assert latest == arr.lab("GET", "/lab/fabric").json()
