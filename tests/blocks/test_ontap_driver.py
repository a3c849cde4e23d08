"""The NetApp ONTAP driver block against the lab's ONTAP emulator and vCenter, over TLS."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
from pyVmomi import vim

from blocks.arrays import close_all
from blocks.errors import (
    ArrayAuthError,
    ArrayConflict,
    ArrayError,
    ArrayNotFound,
    ArrayTransientError,
    ArrayUnsupported,
    NotOurs,
)
from blocks.models import (
    ArraySnapshot,
    ArrayVolume,
    CopyTag,
    HostIdentity,
    NfsBacking,
    SnapshotCopy,
    VmfsBacking,
)
from blocks.ontap import (
    NetAppOntapArray,
    error_class,
    igroup_name,
    job_error,
    naa_of,
    serial_of,
    wwpn,
)
from tests.support.vcenter import find, host
from tests.support.vsphere_steps import rescan, scsi_lun, unresolved

BAD_EVENTS = ("apd", "device_lost_while_attached", "vmfs_destroyed")


# ---- fixtures and helpers -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def cfg(lab) -> dict[str, Any]:
    """The lab's ONTAP array entry of lab.json."""
    return next(a for a in lab["arrays"] if a["vendor"] == "netapp_ontap")


def make_block(lab: dict[str, Any], cfg: dict[str, Any], **overrides: Any) -> NetAppOntapArray:
    """Build the block from lab.json, as a user would fill it in."""
    fields: dict[str, Any] = {
        "url": cfg["url"],
        "user": cfg["user"],
        "password": cfg["password"],
        "svm": "svm1",
        "ca_certificate": Path(lab["ca_bundle"]).read_text(),
    }
    return NetAppOntapArray(**{**fields, **overrides})


@pytest.fixture(scope="module")
def array(lab, cfg) -> Iterator[NetAppOntapArray]:
    """The driver; its sessions are closed when the module ends."""
    yield make_block(lab, cfg)
    close_all()


class Raw:
    """Plain ONTAP REST calls, for setting the scene and checking the array behind the driver."""

    def __init__(self, lab: dict[str, Any], cfg: dict[str, Any]):
        self.base = cfg["url"]
        self.lab_url = cfg["lab_url"]
        self.http = requests.Session()
        self.http.trust_env = False
        self.http.verify = lab["ca_bundle"]
        self.http.auth = (cfg["user"], cfg["password"])

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self.http.request(method, self.base + path, timeout=30, **kwargs)

    def ok(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        r = self.call(method, path, **kwargs)
        assert r.status_code < 400, f"{method} {path}: {r.status_code} {r.text}"
        return r.json() if r.content else {}

    def job(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """Run a call that answers with a job; return the finished job."""
        body = self.ok(method, path, **kwargs)
        href = body["job"]["_links"]["self"]["href"]
        for _ in range(600):
            job = self.ok("GET", href)
            if job["state"] in ("success", "failure"):
                return job
            time.sleep(0.02)
        raise AssertionError(f"job {href} did not end")

    def volume(self, name: str) -> dict[str, Any] | None:
        found = self.ok("GET", "/api/storage/volumes", params={"name": name, "fields": "*"})
        return found["records"][0] if found["records"] else None

    def lab(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self.http.request(method, self.lab_url + path, timeout=30, **kwargs)

    def state(self) -> dict[str, Any]:
        return self.lab("GET", "/state").json()

    def fault(self, operation: str, error: int | None, times: int | None = 1) -> None:
        rule = {"operation": operation, "error": error, "times": times}
        r = self.lab("POST", "/faults", json=rule)
        assert r.status_code == 201, r.text


@pytest.fixture(scope="module")
def raw(lab, cfg) -> Raw:
    return Raw(lab, cfg)


def ds_cfg(lab: dict[str, Any], name: str) -> dict[str, Any]:
    return next(d for d in lab["datastores"] if d["name"] == name)


def identity(host_cfg: dict[str, Any]) -> HostIdentity:
    """The HostIdentity of a lab ESXi host."""
    return HostIdentity(
        name=host_cfg["name"],
        iqns=[host_cfg["iqn"]],
        wwpns=host_cfg["wwpns"],
        vmk_ips=[host_cfg["vmk_ip"]],
    )


def backing(si, name: str) -> VmfsBacking | NfsBacking:
    """The backing of a lab datastore, as vCenter reports it."""
    info = find(si, vim.Datastore, name).info
    if isinstance(info, vim.host.NasDatastoreInfo):
        return NfsBacking(server=info.nas.remoteHost, path=info.nas.remotePath)
    return VmfsBacking(naa=info.vmfs.extent[0].diskName)


def new_tag(volume: ArrayVolume, snapshot: ArraySnapshot) -> CopyTag:
    return CopyTag(run=str(uuid.uuid4()), source=f"{volume.name}@{snapshot.name}")


@contextmanager
def copy_of(
    array: NetAppOntapArray, si, ds_name: str, snapshot: int = -1
) -> Iterator[tuple[ArrayVolume, SnapshotCopy]]:
    """A tagged copy of the datastore's snapshot made by the driver; deleted on exit."""
    volume = array.find_volume(backing(si, ds_name))
    assert volume is not None
    snap = array.list_snapshots(volume)[snapshot]
    tag = new_tag(volume, snap)
    copy = array.create_copy(volume, snap, array.copy_name(tag.run, snap.id), tag)
    try:
        yield volume, copy
    finally:
        array.delete_copy(copy)


def exports_of(raw: Raw, copy: SnapshotCopy) -> list[dict[str, Any]]:
    return [e for e in raw.state()["exports"] if e["volume"] == copy.name]


def nfs_exports_of(raw: Raw, copy: SnapshotCopy) -> list[dict[str, Any]]:
    return [e for e in raw.state()["nfs_exports"] if e["volume"] == copy.name]


# ---- pure helpers -----------------------------------------------------------------------------


def test_naa_and_serial_round_trip_and_reject_other_vendors():
    serial = "819TI$X101LA"
    assert naa_of(serial) == "naa.600a0980383139544924583130314c41"
    assert serial_of(naa_of(serial)) == serial
    assert serial_of(naa_of(serial).upper()) == serial
    assert serial_of("naa.60002ac0000000000000182d00021f6b") is None  # HPE
    assert serial_of("naa.600a0980zz") is None


def test_copy_name_is_deterministic_and_a_valid_volume_name():
    a = NetAppOntapArray(url="https://x", user="u", password="p")
    run = "0b7d3c2e-5f41-4a8e-9c1d-2f3e4a5b6c7d"
    name = a.copy_name(run, "k1")
    assert name == a.copy_name(run, "k1")
    assert name.startswith("sr_0b7d3c2e_") and len(name) <= 40
    assert name.replace("_", "").isalnum()
    assert len({name, a.copy_name(run, "k2"), a.copy_name(run[::-1], "k1")}) == 3


def test_names_of_igroups_and_wwpns():
    assert igroup_name("esx-01") == "sr_esx-01"
    assert igroup_name("esx 01/a") == "sr_esx_01_a"
    assert wwpn("21000024FF4CA110") == "21:00:00:24:ff:4c:a1:10"
    with pytest.raises(ArrayError):
        wwpn("21:00")


@pytest.mark.parametrize(
    ("status", "code", "message", "expected"),
    [
        (401, "6", "not authorized", ArrayAuthError),
        (403, "6", "not authorized for that command", ArrayAuthError),
        (404, "4", "entry doesn't exist", ArrayNotFound),
        (400, "5374922", "The specified LUN map does not exist.", ArrayNotFound),
        (409, "1", "duplicate entry", ArrayConflict),
        (503, "503", "service unavailable", ArrayTransientError),
        (429, None, "too many requests", ArrayTransientError),
        (409, "13", "Volume ds1 is temporarily locked. Wait a few minutes", ArrayTransientError),
        (400, "2", "invalid value", ArrayError),
        (500, "13001", "internal error", ArrayError),
    ],
)
def test_error_classes(status, code, message, expected):
    assert error_class(status, code, message) is expected


def test_failed_jobs_are_typed_from_their_message_and_code():
    failure = {"uuid": "j1", "state": "failure", "description": "POST /api/storage/volumes"}
    dup = job_error("a", {**failure, "message": 'Duplicate volume name "x".', "code": 1})
    assert type(dup) is ArrayConflict and 'Duplicate volume name "x"' in str(dup)
    gone = job_error("a", {**failure, "message": "gone", "error": {"message": "m", "code": "4"}})
    assert type(gone) is ArrayNotFound
    busy = job_error("a", {**failure, "message": "Volume is temporarily locked", "code": 2})
    assert type(busy) is ArrayTransientError


# ---- describe, volumes, snapshots -------------------------------------------------------------


def test_describe_reports_cluster_protocols_portals_and_nfs_servers(array, raw, cfg):
    info = array.describe()
    assert (info.name, info.vendor, info.model, info.serial) == (
        cfg["name"],
        "netapp_ontap",
        "AFF-A250",
        "4A1B2C3D5E6F",
    )
    cluster = raw.ok("GET", "/api/cluster")["version"]
    assert info.version == f"{cluster['generation']}.{cluster['major']}.{cluster['minor']}"
    assert info.protocols == ["iscsi", "nfs"]
    target = raw.state()["raw"]["iscsi_target"]
    assert [(p.address, p.port, p.iqn) for p in info.iscsi_portals] == [
        ("127.0.40.12", 3260, target)
    ]
    assert info.nfs_servers == ["127.0.40.11"]
    assert info.fc_wwpns == []


def test_find_volume_of_the_iscsi_datastore_by_its_naa(array, si):
    b = backing(si, "ds-iscsi-02")
    assert isinstance(b, VmfsBacking)
    vol = array.find_volume(b)
    assert vol is not None
    assert (vol.name, vol.kind, vol.naa, vol.protocols) == (
        "ds_iscsi_02",
        "block",
        b.naa,
        ["iscsi"],
    )
    # the serial holds '$', '?' and '+': found only because the query is URL-encoded
    assert set(serial_of(b.naa) or "") & set("$?+")


def test_find_volume_of_the_nfs_datastore_by_server_and_path(array, si):
    b = backing(si, "ds-nfs-01")
    assert isinstance(b, NfsBacking)
    vol = array.find_volume(b)
    assert vol is not None
    assert (vol.name, vol.kind, vol.nfs_path, vol.protocols) == (
        "ds_nfs_01",
        "nfs",
        "/ds_nfs_01",
        ["nfs"],
    )
    sub = array.find_volume(NfsBacking(server=b.server, path="/ds_nfs_01/vms/"))
    assert sub is not None and sub.id == vol.id  # the longest junction containing the path


def test_find_volume_is_none_for_what_this_svm_does_not_serve(array, si):
    assert array.find_volume(backing(si, "ds-iscsi-01")) is None  # an HPE naa
    assert array.find_volume(VmfsBacking(naa=naa_of("NoSuchSerial"))) is None
    nfs = backing(si, "ds-nfs-01")
    assert array.find_volume(NfsBacking(server="127.0.40.99", path=nfs.path)) is None
    assert array.find_volume(NfsBacking(server=nfs.server, path="/elsewhere")) is None
    assert array.find_volume(NfsBacking(server="127.0.40.12", path="/nope")) is None


def test_list_snapshots_oldest_first_as_in_lab_json(array, lab, si):
    for name in ("ds-iscsi-02", "ds-nfs-01"):
        vol = array.find_volume(backing(si, name))
        assert vol is not None
        snaps = array.list_snapshots(vol)
        assert [s.name for s in snaps] == ds_cfg(lab, name)["snapshots"]
        assert snaps[0].created < snaps[1].created
        assert all(s.volume == vol.name and s.array == array.name for s in snaps)


def test_list_snapshots_of_a_missing_volume_is_not_found(array):
    ghost = ArrayVolume(array=array.name, id=str(uuid.uuid4()), name="ghost", kind="nfs")
    with pytest.raises(ArrayNotFound, match="entry doesn't exist"):
        array.list_snapshots(ghost)


def test_collections_follow_links_next(array, raw):
    api = array.session()
    whole = api.records("/api/storage/volumes", {"svm.name": "svm1"})
    raw.lab("DELETE", "/calls")
    paged = api.records("/api/storage/volumes", {"svm.name": "svm1"}, page_size=1)
    assert len(whole) >= 2
    assert [v["uuid"] for v in paged] == [v["uuid"] for v in whole]
    assert raw.lab("GET", "/calls").json()["GET /api/storage/volumes"] == len(whole)


# ---- copies -------------------------------------------------------------------------------------


def test_block_copy_is_a_tagged_flexclone_with_a_new_naa_and_is_idempotent(array, raw, si):
    with copy_of(array, si, "ds-iscsi-02") as (volume, copy):
        assert copy.naa and copy.naa.startswith("naa.600a0980") and copy.naa != volume.naa
        assert copy.name.startswith("sr_") and copy.nfs_path is None
        assert copy.tag is not None and copy.tag.source.startswith("ds_iscsi_02@")
        vol = raw.volume(copy.name)
        assert vol is not None
        assert vol["clone"]["is_flexclone"] is True
        assert vol["clone"]["parent_snapshot"]["name"] == copy.source_snapshot
        assert CopyTag.decode(vol["comment"]) == copy.tag
        assert "path" not in vol["nas"]  # not mounted, so exported to no one
        lun = raw.ok(
            "GET", "/api/storage/luns", params={"name": f"/vol/{copy.name}/lun0", "fields": "*"}
        )["records"][0]
        assert naa_of(lun["serial_number"]) == copy.naa
        assert lun["status"]["mapped"] is False

        snap = next(s for s in array.list_snapshots(volume) if s.name == copy.source_snapshot)
        assert copy.tag is not None
        again = array.create_copy(volume, snap, copy.name, copy.tag)
        assert again == copy
        other_run = CopyTag(run=str(uuid.uuid4()))
        with pytest.raises(ArrayConflict, match="restore run"):
            array.create_copy(volume, snap, copy.name, other_run)
        assert array.find_copy(copy.name) == copy
        assert copy in array.list_copies()
        assert exports_of(raw, copy) == [] and nfs_exports_of(raw, copy) == []
    assert array.find_copy(copy.name) is None
    assert copy not in array.list_copies()


def test_nfs_copy_is_not_mounted_nor_exported_until_presented(array, raw, si):
    with copy_of(array, si, "ds-nfs-01", snapshot=0) as (volume, copy):
        assert copy.naa is None and copy.nfs_path is None
        vol = raw.volume(copy.name)
        assert vol is not None and "path" not in vol["nas"]
        assert nfs_exports_of(raw, copy) == []
        assert copy.source_volume == volume.name == "ds_nfs_01"


def test_create_copy_refuses_names_and_sources_that_cannot_work(array, raw, si):
    volume = array.find_volume(backing(si, "ds-nfs-01"))
    assert volume is not None
    snap = array.list_snapshots(volume)[0]
    tag = new_tag(volume, snap)
    with pytest.raises(ArrayError, match="not a valid ONTAP volume name"):
        array.create_copy(volume, snap, "sr-with-dashes", tag)
    # a production volume's name: not ours, left untouched
    with pytest.raises(ArrayConflict, match="untagged"):
        array.create_copy(volume, snap, "ds_iscsi_02", tag)
    # the clone job fails on the array (no such snapshot): a typed error, nothing created
    ghost = snap.model_copy(update={"id": str(uuid.uuid4()), "name": "no_such_snapshot"})
    name = array.copy_name(tag.run, "ghost")
    with pytest.raises(ArrayNotFound, match="no_such_snapshot"):
        array.create_copy(volume, ghost, name, tag)
    assert raw.volume(name) is None


def test_delete_copy_refuses_an_untagged_flexclone_and_list_copies_shows_ours_only(
    array, lab, raw, si
):
    name = f"sr_untagged_{uuid.uuid4().hex[:8]}"
    job = raw.job(
        "POST",
        "/api/storage/volumes",
        json={
            "name": name,
            "svm": {"name": "svm1"},
            "comment": "made by hand, not by snaprestore",
            "clone": {
                "is_flexclone": True,
                "parent_volume": {"name": "ds_nfs_01"},
                "parent_snapshot": {"name": ds_cfg(lab, "ds-nfs-01")["snapshots"][0]},
            },
        },
    )
    assert job["state"] == "success", job
    try:
        with copy_of(array, si, "ds-nfs-01") as (_, ours):
            stranger = array.find_copy(name)
            assert stranger is not None and stranger.tag is None
            with pytest.raises(NotOurs):
                array.delete_copy(stranger)
            forged = stranger.model_copy(update={"tag": ours.tag})  # a tag on our side only
            with pytest.raises(NotOurs):
                array.delete_copy(forged)
            assert raw.volume(name) is not None
            listed = [c.name for c in array.list_copies()]
            assert ours.name in listed and name not in listed
            # our copy, but claimed for another run: refused too
            with pytest.raises(ArrayConflict, match="belongs to restore run"):
                array.delete_copy(ours.model_copy(update={"tag": CopyTag(run="another-run")}))
    finally:
        vol = raw.volume(name)
        if vol is not None:
            assert raw.job("DELETE", f"/api/storage/volumes/{vol['uuid']}")["state"] == "success"


def test_delete_copy_twice_is_fine(array, raw, si):
    with copy_of(array, si, "ds-iscsi-02") as (_, copy):
        array.delete_copy(copy)
        assert raw.volume(copy.name) is None
    array.delete_copy(copy)  # a third time, after the context's own delete
    assert copy.name not in [c["name"] for c in raw.state()["copies"]]


# ---- presentation: iSCSI ------------------------------------------------------------------------


def test_iscsi_present_to_one_host_then_withdraw_in_order(array, lab, raw, si, vclab):
    target, others = lab["hosts"][0], lab["hosts"][1:]
    esx = host(si, target["name"])
    events_before = len(vclab.events())
    with copy_of(array, si, "ds-iscsi-02") as (_, copy):
        assert copy.naa is not None
        detached = False
        try:
            p = array.present(copy, identity(target), "iscsi")
            assert p.protocol == "iscsi" and p.lun is not None and p.lun >= 0
            assert p.iscsi_targets == array.describe().iscsi_portals
            again = array.present(copy, identity(target), "iscsi")
            assert again == p  # idempotent: the same map, the same LUN number

            # mapped to one igroup holding only this host's IQN, tagged, deleted on unmap
            [export] = exports_of(raw, copy)
            assert export["host"] == igroup_name(target["name"]) and export["lun"] == p.lun
            group = next(g for g in raw.state()["raw"]["igroups"] if g["name"] == export["host"])
            assert [i["name"] for i in group["initiators"]] == [target["iqn"]]
            assert group["os_type"] == "vmware" and group["protocol"] == "iscsi"
            assert group["delete_on_unmap"] is True
            assert CopyTag.decode(group["comment"]).run == copy.tag.run

            rescan(esx, "iscsi")
            assert scsi_lun(esx, copy.naa) is not None
            assert unresolved(esx, copy.naa) is not None
            for other in others:
                other_esx = host(si, other["name"])
                rescan(other_esx, "iscsi")
                assert scsi_lun(other_esx, copy.naa) is None

            esx.configManager.storageSystem.DetachScsiLun(lunUuid=scsi_lun(esx, copy.naa).uuid)
            detached = True
            array.unpresent(copy, identity(target), "iscsi")
            array.unpresent(copy, identity(target), "iscsi")  # nothing left: fine
            assert exports_of(raw, copy) == []
            assert export["host"] not in [g["name"] for g in raw.state()["hosts"]]
        finally:
            lun = scsi_lun(esx, copy.naa)
            if lun is not None and not detached:
                esx.configManager.storageSystem.DetachScsiLun(lunUuid=lun.uuid)
            array.unpresent(copy, identity(target), "iscsi")
            rescan(esx, "iscsi")
        assert scsi_lun(esx, copy.naa) is None
    new_events = vclab.events()[events_before:]
    assert [e for e in new_events if e["kind"] in BAD_EVENTS] == []


def test_concurrent_presents_to_one_host_share_one_igroup(array, lab, raw, si):
    target = identity(lab["hosts"][2])
    with ExitStack() as stack:
        _, a = stack.enter_context(copy_of(array, si, "ds-iscsi-02", 0))
        _, b = stack.enter_context(copy_of(array, si, "ds-iscsi-02", 1))
        results: dict[str, Any] = {}

        def present(copy: SnapshotCopy) -> None:
            try:
                results[copy.name] = array.present(copy, target, "iscsi")
            except Exception as exc:  # reported below
                results[copy.name] = exc

        threads = [threading.Thread(target=present, args=(c,)) for c in (a, a, b, b)]
        try:
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert all(not isinstance(r, Exception) for r in results.values()), results
            assert results[a.name].lun != results[b.name].lun
            groups = [g["name"] for g in raw.state()["hosts"] if g["name"].startswith("sr_")]
            assert groups == [igroup_name(target.name)]
            assert [e["host"] for e in exports_of(raw, a) + exports_of(raw, b)] == groups * 2
        finally:
            array.unpresent(a, target, "iscsi")
            array.unpresent(b, target, "iscsi")
        assert not [g for g in raw.state()["hosts"] if g["name"].startswith("sr_")]


def test_delete_copy_unmaps_what_is_left_and_removes_our_empty_igroups(array, lab, raw, si):
    target = identity(lab["hosts"][1])
    with copy_of(array, si, "ds-iscsi-02") as (_, copy):
        array.present(copy, target, "iscsi")  # never rescanned: no host sees it
        assert len(exports_of(raw, copy)) == 1
        # an igroup of this run left empty (as after a crash between create and map)
        assert copy.tag is not None
        raw.ok(
            "POST",
            "/api/protocols/san/igroups",
            json={
                "svm": {"name": "svm1"},
                "name": "sr_leftover",
                "os_type": "vmware",
                "protocol": "iscsi",
                "comment": CopyTag(run=copy.tag.run).encode(),
                "initiators": [{"name": "iqn.1998-01.com.vmware:leftover-1"}],
            },
        )
        array.delete_copy(copy)
        assert raw.volume(copy.name) is None
    hosts = [g["name"] for g in raw.state()["hosts"]]
    assert "sr_leftover" not in hosts and igroup_name(target.name) not in hosts
    assert "lab-cluster" in hosts  # the production igroup is never touched


def test_present_refuses_protocols_the_svm_or_copy_cannot_serve(array, lab, si):
    target = identity(lab["hosts"][0])
    with copy_of(array, si, "ds-iscsi-02") as (_, copy):
        with pytest.raises(ArrayUnsupported, match="fc"):
            array.present(copy, target, "fc")  # the lab SVM has no FC LIF
        with pytest.raises(ArrayUnsupported, match="block copy"):
            array.present(copy, target, "nfs")
        with pytest.raises(ArrayUnsupported, match="nvme"):
            array.present(copy, target, "nvme")  # type: ignore[arg-type]
        with pytest.raises(ArrayError, match="no IQN"):
            array.present(copy, target.model_copy(update={"iqns": []}), "iscsi")


# ---- presentation: NFS --------------------------------------------------------------------------


def test_nfs_present_to_one_host_then_withdraw_in_order(array, lab, raw, si, vclab):
    target, other = lab["hosts"][0], lab["hosts"][1]
    esx, other_esx = host(si, target["name"]), host(si, other["name"])
    events_before = len(vclab.events())
    with copy_of(array, si, "ds-nfs-01") as (_, copy):
        local = f"sr-test-{copy.name}"
        try:
            p = array.present(copy, identity(target), "nfs")
            assert (p.protocol, p.nfs_server, p.nfs_path) == ("nfs", "127.0.40.11", f"/{copy.name}")
            assert array.present(copy, identity(target), "nfs") == p
            [export] = nfs_exports_of(raw, copy)
            assert export["policy"] == copy.name  # its own policy, not the parent's
            assert export["rules"] == [{"match": target["vmk_ip"], "rw": True, "root": True}]

            spec = vim.host.NasVolume.Specification(
                remoteHost=p.nfs_server,
                remotePath=p.nfs_path,
                localPath=local,
                accessMode="readWrite",
                type="NFS",
            )
            with pytest.raises(vim.fault.PlatformConfigFault):
                other_esx.configManager.datastoreSystem.CreateNasDatastore(spec)
            ds = esx.configManager.datastoreSystem.CreateNasDatastore(spec)
            assert ds.summary.accessible
            esx.configManager.datastoreSystem.RemoveDatastore(datastore=ds)

            array.unpresent(copy, identity(target), "nfs")
            array.unpresent(copy, identity(target), "nfs")  # nothing left: fine
            assert nfs_exports_of(raw, copy) == []
            vol = raw.volume(copy.name)
            assert vol is not None and "path" not in vol["nas"]
        finally:
            ds = find(si, vim.Datastore, local)
            if ds is not None:
                esx.configManager.datastoreSystem.RemoveDatastore(datastore=ds)
            array.unpresent(copy, identity(target), "nfs")
    policies = [p["name"] for p in raw.state()["raw"]["export_policies"]]
    assert copy.name not in policies  # deleted with the copy
    new_events = vclab.events()[events_before:]
    assert [e for e in new_events if e["kind"] in BAD_EVENTS] == []


def test_nfs_unpresent_keeps_other_hosts_access(array, lab, raw, si):
    first, second = identity(lab["hosts"][0]), identity(lab["hosts"][2])
    with copy_of(array, si, "ds-nfs-01") as (_, copy):
        array.present(copy, first, "nfs")
        array.present(copy, second, "nfs")
        [export] = nfs_exports_of(raw, copy)
        assert sorted(r["match"] for r in export["rules"]) == sorted(first.vmk_ips + second.vmk_ips)
        array.unpresent(copy, first, "nfs")
        [export] = nfs_exports_of(raw, copy)
        assert [r["match"] for r in export["rules"]] == second.vmk_ips
        array.unpresent(copy, second, "nfs")
        assert nfs_exports_of(raw, copy) == []


# ---- errors -------------------------------------------------------------------------------------


def test_injected_503_is_transient_and_the_next_call_works(array, raw):
    raw.fault("GET /api/storage/volumes", 503)
    with pytest.raises(ArrayTransientError, match="injected failure") as err:
        array.list_copies()
    assert err.value.status == 503
    assert isinstance(array.list_copies(), list)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (401, ArrayAuthError),
        (403, ArrayAuthError),
        (404, ArrayNotFound),
        (409, ArrayConflict),
        (429, ArrayTransientError),
        (502, ArrayTransientError),
        (504, ArrayTransientError),
        (500, ArrayError),
    ],
)
def test_http_errors_are_typed(array, raw, status, expected):
    # twice: a 401 for credentials that worked before is sent once more (see below)
    raw.fault("GET /api/cluster", status, times=2)
    with pytest.raises(ArrayError) as err:
        array.describe()
    assert type(err.value) is expected
    assert err.value.status == status and "GET /api/cluster" in str(err.value)


def test_job_polling_rides_out_transient_errors(array, raw, si):
    raw.fault("GET /api/cluster/jobs/{}", 503, times=2)
    with copy_of(array, si, "ds-nfs-01") as (_, copy):
        assert raw.volume(copy.name) is not None


def test_a_job_that_outlives_its_timeout_is_transient_and_the_retry_adopts_it(lab, cfg, raw, si):
    impatient = make_block(lab, cfg, job_timeout_s=0.5)
    volume = impatient.find_volume(backing(si, "ds-nfs-01"))
    assert volume is not None
    snap = impatient.list_snapshots(volume)[0]
    tag = new_tag(volume, snap)
    name = impatient.copy_name(tag.run, "slow")
    raw.fault("GET /api/cluster/jobs/{}", 503, times=None)  # the job's outcome stays unknown
    try:
        with pytest.raises(ArrayTransientError, match="can be retried"):
            impatient.create_copy(volume, snap, name, tag)
    finally:
        raw.lab("DELETE", "/faults")
    copy = impatient.create_copy(volume, snap, name, tag)  # the task's retry
    try:
        assert copy.tag == tag and copy.name == name
    finally:
        impatient.delete_copy(copy)


def test_wrong_password_is_an_auth_error(lab, cfg, raw):
    """Credentials the cluster never accepted fail at the first 401: no second try."""
    block = make_block(lab, cfg, password="not-the-password")
    since = raw.lab("GET", "/calls/log", params={"since": 2**62}).json()["last_seq"]
    with pytest.raises(ArrayAuthError, match="user and password") as err:
        block.describe()
    assert err.value.status == 401
    calls = raw.lab("GET", "/calls/log", params={"since": since}).json()["calls"]
    assert [(c["operation"], c["status"]) for c in calls] == [("GET /api/cluster", 401)]


def test_a_401_after_the_credentials_worked_is_sent_once_more(lab, cfg, raw):
    """ONTAP checks the credentials on every call: one refused although they worked before
    (``/lab/sessions/expire``) is sent again and succeeds; refused twice, it fails saying
    the credentials worked before."""
    block = make_block(lab, cfg, timeout_s=31)  # a session of its own
    block.describe()
    since = raw.lab("GET", "/calls/log", params={"since": 2**62}).json()["last_seq"]
    assert raw.lab("POST", "/sessions/expire", json={"times": 1}).status_code == 200
    assert isinstance(block.list_copies(), list)
    calls = raw.lab("GET", "/calls/log", params={"since": since}).json()["calls"]
    assert [(c["operation"], c["status"]) for c in calls][:2] == [
        ("GET /api/storage/volumes", 401),
        ("GET /api/storage/volumes", 200),
    ]
    assert raw.lab("POST", "/sessions/expire", json={"times": 2}).status_code == 200
    with pytest.raises(ArrayAuthError, match="refused twice, although the cluster accepted"):
        block.list_copies()
    assert isinstance(block.list_copies(), list)  # nothing is left pending


def test_unknown_svm_is_reported(lab, cfg):
    with pytest.raises(ArrayNotFound, match="svm1"):
        make_block(lab, cfg, svm="svm9").describe()
    assert make_block(lab, cfg, svm=None).describe().nfs_servers == ["127.0.40.11"]


def test_tls_needs_the_arrays_ca_even_with_requests_ca_bundle_set(lab, cfg, monkeypatch):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", lab["ca_bundle"])  # must not be used
    block = make_block(lab, cfg, ca_certificate=None)
    with pytest.raises(ArrayError, match="certificate") as err:
        block.describe()
    assert not isinstance(err.value, ArrayTransientError)  # retrying cannot cure it
