"""The HPE Primera driver block against the lab's WSAPI emulator and vCenter, over TLS."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

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
from blocks.hpe import HpePrimeraArray
from blocks.models import ArrayVolume, CopyTag, HostIdentity, NfsBacking, SnapshotCopy, VmfsBacking
from tests.support.vcenter import find, host
from tests.support.vsphere_steps import rescan, scsi_lun, unresolved

BAD_EVENTS = ("apd", "device_lost_while_attached", "vmfs_destroyed")


# ---- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cfg(lab) -> dict[str, Any]:
    """The lab's HPE array entry of lab.json."""
    return next(a for a in lab["arrays"] if a["vendor"] == "hpe_primera")


def make_block(lab: dict[str, Any], cfg: dict[str, Any], **overrides: Any) -> HpePrimeraArray:
    """Build the block from lab.json, as a user would fill it in."""
    fields: dict[str, Any] = {
        "url": cfg["url"],
        "user": cfg["user"],
        "password": cfg["password"],
        "ca_certificate": Path(lab["ca_bundle"]).read_text(),
    }
    return HpePrimeraArray(**{**fields, **overrides})


@pytest.fixture(scope="module")
def array(lab, cfg) -> Iterator[HpePrimeraArray]:
    """The driver; its sessions are logged out when the module ends."""
    yield make_block(lab, cfg)
    close_all()


class Raw:
    """Plain WSAPI calls, for setting the scene and checking the array behind the driver."""

    def __init__(self, lab: dict[str, Any], cfg: dict[str, Any]):
        self.base = cfg["url"] + "/api/v1"
        self.lab_url = cfg["lab_url"]
        self.http = requests.Session()
        self.http.trust_env = False
        self.http.verify = lab["ca_bundle"]
        r = self.http.post(
            self.base + "/credentials",
            json={"user": cfg["user"], "password": cfg["password"]},
            timeout=30,
        )
        r.raise_for_status()
        self.key = r.json()["key"]
        self.http.headers["X-HP3PAR-WSAPI-SessionKey"] = self.key

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self.http.request(method, self.base + path, timeout=30, **kwargs)

    def ok(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        r = self.call(method, path, **kwargs)
        assert r.status_code < 400, f"{method} {path}: {r.status_code} {r.text}"
        return r

    def volume(self, name: str) -> dict[str, Any] | None:
        r = self.call("GET", f"/volumes/{quote(name)}")
        return None if r.status_code == 404 else r.json()

    def hosts(self) -> dict[str, dict[str, Any]]:
        return {h["name"]: h for h in self.ok("GET", "/hosts").json()["members"]}

    def vluns(self, volume: str) -> list[dict[str, Any]]:
        return [v for v in self.ok("GET", "/vluns").json()["members"] if v["volumeName"] == volume]

    def lab(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self.http.request(method, self.lab_url + path, timeout=30, **kwargs)

    def calls(self) -> dict[str, int]:
        return self.lab("GET", "/calls").json()

    def fault(
        self, operation: str, error: int | None, times: int | None = 1, delay_s: float = 0
    ) -> None:
        rule = {"operation": operation, "error": error, "times": times, "delay_s": delay_s}
        r = self.lab("POST", "/faults", json=rule)
        assert r.status_code == 201, r.text

    def close(self) -> None:
        self.call("DELETE", f"/credentials/{self.key}")


@pytest.fixture(scope="module")
def raw(lab, cfg) -> Iterator[Raw]:
    r = Raw(lab, cfg)
    yield r
    r.close()


def ds_cfg(lab: dict[str, Any], name: str) -> dict[str, Any]:
    return next(d for d in lab["datastores"] if d["name"] == name)


def hpe_datastores(lab: dict[str, Any], cfg: dict[str, Any]) -> list[dict[str, Any]]:
    return [d for d in lab["datastores"] if d["array"] == cfg["name"]]


def identity(host_cfg: dict[str, Any]) -> HostIdentity:
    """The HostIdentity of a lab ESXi host."""
    return HostIdentity(
        name=host_cfg["name"],
        iqns=[host_cfg["iqn"]],
        wwpns=host_cfg["wwpns"],
        vmk_ips=[host_cfg["vmk_ip"]],
    )


def fake_identity() -> HostIdentity:
    """A host no array knows yet: its initiators are on no host object."""
    n = uuid.uuid4().hex
    return HostIdentity(
        name=f"esx-{n[:6]}.lab.example",
        iqns=[f"iqn.1998-01.com.vmware:esx-{n[:8]}"],
        wwpns=[f"10:00:00:00:{n[8:10]}:{n[10:12]}:{n[12:14]}:01"],
    )


def new_tag(volume: str, snapshot: str, run: str | None = None) -> CopyTag:
    return CopyTag(run=run or str(uuid.uuid4()), source=f"{volume}@{snapshot}")


def make_copy(
    array: HpePrimeraArray, lab: dict[str, Any], ds_name: str, snapshot: int = 0
) -> tuple[ArrayVolume, SnapshotCopy]:
    """Create a tagged copy of the datastore's snapshot through the driver."""
    volume = array.find_volume(_backing_of(lab, ds_cfg(lab, ds_name)))
    assert volume is not None
    snap = array.list_snapshots(volume)[snapshot]
    tag = new_tag(volume.name, snap.name)
    name = array.copy_name(tag.run, f"{volume.name}@{snap.name}")
    return volume, array.create_copy(volume, snap, name, tag)


def _backing_of(lab: dict[str, Any], d: dict[str, Any]) -> VmfsBacking:
    """The VMFS backing of lab datastore ``d``, as the array's lab view names its volume."""
    a = next(a for a in lab["arrays"] if a["name"] == d["array"])
    state = requests.get(a["lab_url"] + "/state", verify=lab["ca_bundle"], timeout=30).json()
    naa = next(v["naa"] for v in state["volumes"] if v["name"] == d["volume"])
    return VmfsBacking(naa=naa)


# ---- describe, volumes, snapshots -------------------------------------------------------------


def test_describe_reports_system_and_ready_target_ports(array, raw, cfg):
    info = array.describe()
    system = raw.ok("GET", "/system").json()
    assert (info.name, info.vendor) == (cfg["name"], "hpe_primera")
    assert (info.model, info.serial, info.version) == (
        system["model"],
        system["serialNumber"],
        system["systemVersion"],
    )
    assert info.protocols == ["iscsi", "fc"]
    assert info.nfs_servers == []
    fabric = raw.lab("GET", "/fabric").json()
    lab_targets = {(t["address"], t["port"], t["iqn"]) for t in fabric["luns"][0]["iscsi_targets"]}
    assert {(p.address, p.port, p.iqn) for p in info.iscsi_portals} == lab_targets
    assert len(info.iscsi_portals) == 2
    assert len(info.fc_wwpns) == 2
    assert all(re.fullmatch(r"[0-9a-f]{16}", w) for w in info.fc_wwpns)
    assert set(info.fc_wwpns) == {w.replace(":", "") for w in fabric["luns"][0]["fc_targets"]}


def test_find_volume_by_each_hpe_datastores_naa(array, lab, cfg, si):
    datastores = hpe_datastores(lab, cfg)
    assert {d["protocol"] for d in datastores} == {"iscsi", "fc"}
    for d in datastores:
        naa = find(si, vim.Datastore, d["name"]).info.vmfs.extent[0].diskName
        vol = array.find_volume(VmfsBacking(naa=naa))
        assert vol is not None, d["name"]
        assert (vol.name, vol.naa, vol.kind) == (d["volume"], naa, "block")
        # ESXi names are lower-case, the array's WWNs upper-case: either matches
        assert array.find_volume(VmfsBacking(naa="naa." + naa[4:].upper())) == vol


def test_find_volume_is_none_for_other_arrays_nfs_and_snapshots(array, lab, cfg, raw, si):
    others = [d for d in lab["datastores"] if d["array"] != cfg["name"]]
    assert {d["protocol"] for d in others} == {"nfs", "iscsi"}
    for d in others:
        ds = find(si, vim.Datastore, d["name"])
        if d["protocol"] == "nfs":
            backing = NfsBacking(server=ds.info.nas.remoteHost, path=ds.info.nas.remotePath)
        else:
            backing = VmfsBacking(naa=ds.info.vmfs.extent[0].diskName)
            assert backing.naa.startswith("naa.600a0980")  # an ONTAP LUN
        assert array.find_volume(backing) is None
    # a snapshot's WWN is not a datastore's volume either
    snap = raw.volume(ds_cfg(lab, "ds-fc-01")["snapshots"][0])
    assert snap is not None and snap["copyType"] == 3
    assert array.find_volume(VmfsBacking(naa="naa." + snap["wwn"].lower())) is None


def test_list_snapshots_oldest_first_as_in_lab_json(array, lab, cfg, raw):
    for d in hpe_datastores(lab, cfg):
        vol = array.find_volume(_backing_of(lab, d))
        snaps = array.list_snapshots(vol)
        assert [s.name for s in snaps] == d["snapshots"]
        assert all(s.volume == d["volume"] for s in snaps)
        assert snaps[0].created < snaps[1].created
        assert snaps[0].created.tzinfo is not None
        for s in snaps:
            assert int(raw.volume(s.name)["creationTimeSec"]) == int(s.created.timestamp())


# ---- copies -----------------------------------------------------------------------------------


def test_copy_name_is_deterministic_short_and_tagged():
    block = HpePrimeraArray(url="https://array.example:8080", user="u", password="p")
    run = "3f2a9c1e-8b7d-4c1e-9a1b-6d5e4f3a2b1c"
    name = block.copy_name(run, "primera1|DS_FC_01.daily-20261124-1909")
    assert name == block.copy_name(run, "primera1|DS_FC_01.daily-20261124-1909")
    assert re.fullmatch(r"sr-[A-Za-z0-9]+-[0-9a-f]+", name) and len(name) <= 31
    assert name.startswith("sr-3f2a9c1e8b7d-")
    assert name != block.copy_name(run, "primera1|DS_FC_01.daily-20261125-1909")
    assert name != block.copy_name("4f2a9c1e-8b7d-4c1e-9a1b-6d5e4f3a2b1c", "primera1|x")
    assert len(block.copy_name("x" * 200, "k" * 500)) <= 31
    with pytest.raises(ValueError):
        block.copy_name("---", "k")


def test_create_copy_is_idempotent_per_run_and_conflicts_otherwise(array, lab, raw):
    d = ds_cfg(lab, "ds-iscsi-01")
    volume = array.find_volume(_backing_of(lab, d))
    snap = array.list_snapshots(volume)[0]
    tag = new_tag(volume.name, snap.name)
    name = array.copy_name(tag.run, f"{volume.name}@{snap.name}")
    copy = array.create_copy(volume, snap, name, tag)
    try:
        assert copy.name == name and copy.tag == tag
        assert (copy.source_volume, copy.source_snapshot) == (volume.name, snap.name)
        assert copy.naa and copy.naa not in (volume.naa, "naa." + raw.volume(snap.name)["wwn"])
        on_array = raw.volume(name)
        assert on_array["readOnly"] is False and on_array["copyOf"] == snap.name
        assert CopyTag.decode(on_array["comment"]) == tag
        # the same run asking again gets the same copy, and no second volume
        assert array.create_copy(volume, snap, name, tag) == copy
        assert array.find_copy(name) == copy
        # another run, or another snapshot, under that name is a conflict
        with pytest.raises(ArrayConflict, match="not this run's copy"):
            array.create_copy(volume, snap, name, new_tag(volume.name, snap.name))
        with pytest.raises(ArrayConflict):
            array.create_copy(volume, array.list_snapshots(volume)[1], name, tag)
        # our read-write copy is not a snapshot of the volume
        assert [s.name for s in array.list_snapshots(volume)] == d["snapshots"]
        assert name in [c.name for c in array.list_copies()]
    finally:
        array.delete_copy(copy)
    assert raw.volume(name) is None
    assert array.find_copy(name) is None


def test_create_copy_refuses_to_adopt_an_untagged_volume(array, lab, raw):
    d = ds_cfg(lab, "ds-fc-01")
    volume = array.find_volume(_backing_of(lab, d))
    snap = array.list_snapshots(volume)[0]
    name = f"sr-untagged-{uuid.uuid4().hex[:8]}"
    body = {"action": "createSnapshot", "parameters": {"name": name, "readOnly": False}}
    raw.ok("POST", f"/volumes/{snap.name}", json=body)
    try:
        with pytest.raises(ArrayConflict):
            array.create_copy(volume, snap, name, new_tag(volume.name, snap.name))
        assert raw.volume(name).get("comment") is None
    finally:
        raw.ok("DELETE", f"/volumes/{name}")


def test_delete_copy_refuses_untagged_volumes_and_list_copies_shows_ours_only(array, lab, raw):
    volume, ours = make_copy(array, lab, "ds-fc-01")
    snap = ours.source_snapshot
    untagged = f"sr-{uuid.uuid4().hex[:10]}"  # our prefix, but no tag: not ours
    base = f"sr-base-{uuid.uuid4().hex[:8]}"  # our tag on a base volume: not a copy either
    raw.ok(
        "POST",
        f"/volumes/{snap}",
        json={
            "action": "createSnapshot",
            "parameters": {"name": untagged, "readOnly": False, "comment": "sr- lab volume"},
        },
    )
    raw.ok(
        "POST",
        "/volumes",
        json={
            "name": base,
            "cpg": "SSD_r6",
            "sizeMiB": 1024,
            "comment": new_tag("x", "y").encode(),
        },
    )
    try:
        names = [c.name for c in array.list_copies()]
        assert ours.name in names
        assert untagged not in names and base not in names
        assert all(c.tag is not None and c.tag.by == "snaprestore" for c in array.list_copies())
        for name in (untagged, base):
            victim = array.find_copy(name)
            assert victim is not None
            with pytest.raises(NotOurs):
                array.delete_copy(victim)
            assert raw.volume(name) is not None
        listed = next(c for c in array.list_copies() if c.name == ours.name)
        assert listed.source_volume == volume.name and listed.tag == ours.tag
        array.delete_copy(ours)
        assert raw.volume(ours.name) is None
        array.delete_copy(ours)  # gone already: fine
    finally:
        raw.call("DELETE", f"/volumes/{untagged}")
        raw.call("DELETE", f"/volumes/{base}")
        array.delete_copy(ours)
    assert raw.volume(untagged) is None and raw.volume(base) is None


# ---- present / unpresent ----------------------------------------------------------------------


def _initiators(h: HostIdentity, protocol: str) -> set[str]:
    if protocol == "iscsi":
        return {i.lower() for i in h.iqns}
    return {w.replace(":", "").lower() for w in h.wwpns}


def _fabric_initiators(raw: Raw, naa: str) -> set[tuple[str, str]]:
    """The (initiator, protocol) pairs the array's fabric exports LUN ``naa`` to."""
    luns = [lun for lun in raw.lab("GET", "/fabric").json()["luns"] if lun["naa"] == naa]
    found = set()
    for e in (e for lun in luns for e in lun["exports"]):
        initiator = e["initiator"].lower()
        if e["protocol"] == "fc":
            initiator = initiator.replace(":", "")
        found.add((initiator, e["protocol"]))
    return found


@pytest.mark.parametrize(
    ("ds_name", "protocol"),
    [pytest.param("ds-iscsi-01", "iscsi", id="iscsi"), pytest.param("ds-fc-01", "fc", id="fc")],
)
def test_present_to_one_host_then_withdraw_in_order(array, lab, raw, si, vclab, ds_name, protocol):
    """FC: one host object per ESXi host, so only the chosen host sees the copy. iSCSI: the
    cluster shares one host object, which the copy must go through (an initiator is in one
    host object only): every host sees it, present() says so, and all are cleaned."""
    host_cfg = lab["hosts"][1]
    who = identity(host_cfg)
    esx = host(si, host_cfg["name"])
    others = [host(si, h["name"]) for h in lab["hosts"] if h["name"] != host_cfg["name"]]
    events_before = len(vclab.events())
    _, copy = make_copy(array, lab, ds_name)
    presented = False
    try:
        info = array.describe()
        vluns_before = raw.calls().get("POST /api/v1/vluns", 0)
        p = array.present(copy, who, protocol)
        presented = True
        assert p.protocol == protocol and p.lun is not None and p.lun >= 0
        if protocol == "iscsi":
            assert p.iscsi_targets == info.iscsi_portals and p.fc_targets == []
        else:
            assert p.fc_targets == info.fc_wwpns and p.iscsi_targets == []
        # presenting again is idempotent: same LUN, no second VLUN
        assert array.present(copy, who, protocol) == p
        assert raw.calls().get("POST /api/v1/vluns", 0) == vluns_before + 1
        vluns = raw.vluns(copy.name)
        assert [(v["lun"], v["hostname"]) for v in vluns] == [(p.lun, vluns[0]["hostname"])]
        shared = protocol == "iscsi"  # ds-iscsi-01 is exported to one cluster-wide host object
        mine = {(i, protocol) for i in _initiators(who, protocol)}
        theirs = {(h["iqn"].lower(), protocol) for h in lab["hosts"] if h != host_cfg}
        if shared:
            # an initiator belongs to one host object: the copy goes through the shared one,
            # so every host holding it sees the copy, and present() says so
            assert p.access == lab["cases"]["shared_host_object"]
            assert {(i, protocol) for i in p.shared_with} == theirs
            assert _fabric_initiators(raw, copy.naa) == mine | theirs
        else:  # this host's initiators of this protocol only
            assert p.shared_with == []
            assert _fabric_initiators(raw, copy.naa) == mine
        assert scsi_lun(esx, copy.naa) is None  # not before a rescan
        for h in [esx, *others]:
            rescan(h, protocol)
        lun = scsi_lun(esx, copy.naa)
        assert lun is not None
        vol = unresolved(esx, copy.naa)
        assert vol is not None and vol.vmfsLabel == ds_name
        for other in others:
            assert (scsi_lun(other, copy.naa) is not None) is shared
        # withdraw in the safe order: detach on every host that sees it, unpresent, rescan
        seeing = [h for h in [esx, *others] if scsi_lun(h, copy.naa) is not None]
        for h in seeing:
            h.configManager.storageSystem.DetachScsiLun(lunUuid=scsi_lun(h, copy.naa).uuid)
        if shared:
            array.unpresent_all(copy)
        else:
            array.unpresent(copy, who, protocol)
        presented = False
        array.unpresent(copy, who, protocol)  # nothing left to withdraw: fine
        array.unpresent_all(copy)  # nor here
        assert raw.vluns(copy.name) == []
        assert _fabric_initiators(raw, copy.naa) == set()
        for h in seeing:
            rescan(h, protocol)
            assert scsi_lun(h, copy.naa) is None
        # the seeded host object was not ours: it stays
        assert vluns[0]["hostname"] in raw.hosts()
    finally:
        if presented:
            for h in [esx, *others]:
                lun = scsi_lun(h, copy.naa)
                if lun is not None and lun.operationalState != ["off"]:
                    h.configManager.storageSystem.DetachScsiLun(lunUuid=lun.uuid)
            array.unpresent_all(copy)
            for h in [esx, *others]:
                rescan(h, protocol)
        array.delete_copy(copy)
    array.delete_copy(copy)
    assert raw.volume(copy.name) is None
    new_events = vclab.events()[events_before:]
    assert [e for e in new_events if e["kind"] in BAD_EVENTS] == []


def test_host_object_is_created_tagged_shared_and_removed_when_empty(array, lab, raw):
    who = fake_identity()
    _, first = make_copy(array, lab, "ds-iscsi-01")
    _, second = make_copy(array, lab, "ds-fc-01")
    try:
        p1 = array.present(first, who, "iscsi")
        created = [h for h in raw.hosts().values() if h["name"].startswith("sr-")]
        assert len(created) == 1
        h = created[0]
        assert h["name"] == "sr-" + who.name and len(h["name"]) <= 31
        assert h["persona"] == 8
        assert [p["name"] for p in h["iSCSIPaths"]] == [who.iqns[0].lower()]
        tag = CopyTag.decode(h["descriptors"]["comment"])
        assert tag is not None and tag.run == first.tag.run
        # a second copy to the same host: the same host object, another LUN
        p2 = array.present(second, who, "iscsi")
        assert p2.lun != p1.lun
        # the same host over FC: its WWPNs join the host object snaprestore made for it
        assert array.present(second, who, "fc").lun == p2.lun
        h = raw.hosts()[h["name"]]
        assert [p["wwn"].lower() for p in h["FCPaths"]] == [who.wwpns[0].replace(":", "")]
        # withdrawing one copy keeps the host object, still in use by the other
        array.unpresent(first, who, "iscsi")
        assert raw.vluns(first.name) == [] and h["name"] in raw.hosts()
        # deleting a still-presented copy withdraws it first, then the empty host object
        array.delete_copy(second)
        assert raw.volume(second.name) is None
        assert h["name"] not in raw.hosts()
    finally:
        array.unpresent(first, who, "iscsi")
        array.unpresent(second, who, "iscsi")
        array.delete_copy(first)
        array.delete_copy(second)
    assert not [n for n in raw.hosts() if n.startswith("sr-")]


def _present_all(
    pairs: list[tuple[HpePrimeraArray, SnapshotCopy]], who: HostIdentity
) -> dict[str, int | None]:
    """Present each copy through its block from its own thread; return LUN by copy name."""
    results: dict[str, int | None] = {}
    errors: list[BaseException] = []

    def present(block: HpePrimeraArray, c: SnapshotCopy) -> None:
        try:
            results[c.name] = block.present(c, who, "iscsi").lun
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=present, args=pair) for pair in pairs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    return results


def test_concurrent_presents_to_one_new_host_create_one_host_object(array, lab, raw):
    who = fake_identity()
    copies = [make_copy(array, lab, "ds-iscsi-01")[1] for _ in range(4)]
    # widen the race window: the emulator serves a delay before it runs the call
    raw.fault("GET /api/v1/hosts", None, times=None, delay_s=0.2)
    raw.fault("POST /api/v1/hosts", None, times=None, delay_s=0.2)
    creates = raw.calls().get("POST /api/v1/hosts", 0)
    try:
        results = _present_all([(array, c) for c in copies], who)
        assert len(set(results.values())) == 4
        # the per-host lock: one creation, no lost race to recover from
        assert raw.calls().get("POST /api/v1/hosts", 0) == creates + 1
        assert [n for n in raw.hosts() if n.startswith("sr-")] == ["sr-" + who.name]
    finally:
        raw.lab("DELETE", "/faults")
        for c in copies:
            array.delete_copy(c)
    assert not [n for n in raw.hosts() if n.startswith("sr-")]


def test_two_workers_racing_to_create_the_host_object_both_succeed(array, lab, cfg, raw):
    """A block whose URL differs by a trailing slash has its own session and host lock,
    as a second worker process would: both create ``sr-<host>``, the loser adopts it."""
    other = make_block(lab, cfg, url=cfg["url"] + "/")
    who = fake_identity()
    copies = [make_copy(array, lab, "ds-iscsi-01")[1] for _ in range(2)]
    # both look before either creates (a delay is served before the call runs)
    raw.fault("GET /api/v1/hosts", None, times=2, delay_s=0.3)
    raw.fault("POST /api/v1/hosts", None, times=2, delay_s=0.6)
    creates = raw.calls().get("POST /api/v1/hosts", 0)
    try:
        results = _present_all([(array, copies[0]), (other, copies[1])], who)
        assert len(set(results.values())) == 2
        assert raw.calls().get("POST /api/v1/hosts", 0) == creates + 2  # one lost the race
        h = raw.hosts()["sr-" + who.name]
        assert [p["name"] for p in h["iSCSIPaths"]] == [who.iqns[0].lower()]
        assert sorted(v["hostname"] for c in copies for v in raw.vluns(c.name)) == [h["name"]] * 2
    finally:
        raw.lab("DELETE", "/faults")
        for c in copies:
            array.delete_copy(c)
    assert not [n for n in raw.hosts() if n.startswith("sr-")]


def test_present_recreates_a_host_object_removed_under_it(array, lab, cfg, raw):
    """Another worker removes our empty host object between our lookup and our VLUN create:
    present creates it again and exports to it."""
    other = make_block(lab, cfg, url=cfg["url"] + "/")
    who = fake_identity()
    first, second = (make_copy(array, lab, "ds-iscsi-01")[1] for _ in range(2))
    try:
        array.present(first, who, "iscsi")
        creates = raw.calls().get("POST /api/v1/hosts", 0)
        raw.fault("POST /api/v1/vluns", None, times=1, delay_s=0.6)
        results: dict[str, Any] = {}
        worker = threading.Thread(
            target=lambda: results.update(p=other.present(second, who, "iscsi"))
        )
        worker.start()
        time.sleep(0.25)  # the worker has found the host object and waits on its VLUN create
        array.unpresent(first, who, "iscsi")  # the host object is empty: removed
        worker.join(30)
        assert "p" in results, "present failed in the worker"
        assert raw.calls().get("POST /api/v1/hosts", 0) == creates + 1
        assert [v["hostname"] for v in raw.vluns(second.name)] == ["sr-" + who.name]
        assert results["p"].lun == raw.vluns(second.name)[0]["lun"]
    finally:
        array.delete_copy(first)
        array.delete_copy(second)
    assert not [n for n in raw.hosts() if n.startswith("sr-")]


def test_present_checks_protocol_and_initiators_before_any_call(array, raw, cfg):
    copy = SnapshotCopy(array=cfg["name"], id="0", name="sr-nothing", naa="naa.60002ac0")
    before = raw.calls()
    with pytest.raises(ArrayUnsupported, match="block storage only"):
        array.present(copy, fake_identity(), "nfs")
    with pytest.raises(ArrayUnsupported, match="IQN"):
        array.present(copy, HostIdentity(name="esx-x", wwpns=["10:00:00:00:00:00:00:01"]), "iscsi")
    with pytest.raises(ArrayUnsupported, match="WWPN"):
        array.present(copy, HostIdentity(name="esx-x", iqns=["iqn.x"]), "fc")
    array.unpresent(copy, fake_identity(), "nfs")  # nothing can have been presented
    assert raw.calls() == before


# ---- errors, sessions, TLS --------------------------------------------------------------------


def test_array_errors_are_typed_with_the_vendors_words(array, lab, raw):
    backing = _backing_of(lab, ds_cfg(lab, "ds-fc-01"))
    raw.fault("GET /api/v1/volumes", 503)
    with pytest.raises(ArrayTransientError) as err:
        array.find_volume(backing)
    assert err.value.status == 503 and "injected failure" in str(err.value)
    assert array.find_volume(backing) is not None  # the fault was used up
    raw.fault("GET /api/v1/volumes", 429)
    with pytest.raises(ArrayTransientError):
        array.find_volume(backing)
    raw.fault("GET /api/v1/volumes", 404)
    with pytest.raises(ArrayNotFound):
        array.find_volume(backing)
    raw.fault("GET /api/v1/volumes", 500)
    with pytest.raises(ArrayError) as err:
        array.find_volume(backing)
    assert type(err.value) is ArrayError and err.value.status == 500
    # a real refusal: a copy of a snapshot that does not exist
    volume = array.find_volume(backing)
    missing = array.list_snapshots(volume)[0].model_copy(update={"name": "NO_SUCH_SNAP"})
    with pytest.raises(ArrayNotFound) as err:
        array.create_copy(volume, missing, "sr-never", new_tag(volume.name, "NO_SUCH_SNAP"))
    assert err.value.code == "23" and "does not exist" in str(err.value)
    assert raw.volume("sr-never") is None


def test_expired_session_is_replaced_transparently(array, raw):
    array.describe()
    old = array.session().key
    assert old
    raw.ok("DELETE", f"/credentials/{old}")  # the array forgets the driver's key
    logins = raw.calls().get("POST /api/v1/credentials", 0)
    assert array.describe().vendor == "hpe_primera"
    assert array.session().key not in (None, old)
    assert raw.calls().get("POST /api/v1/credentials", 0) == logins + 1


def test_a_refusal_that_survives_the_new_login_is_an_auth_error(array, raw):
    array.describe()
    raw.fault("GET /api/v1/system", 401, times=1)
    logins = raw.calls().get("POST /api/v1/credentials", 0)
    array.describe()  # one refusal: logged in again, replayed
    assert raw.calls().get("POST /api/v1/credentials", 0) == logins + 1
    raw.fault("GET /api/v1/system", 401, times=3)
    with pytest.raises(ArrayAuthError, match="fresh session key too"):
        array.describe()
    assert raw.calls().get("POST /api/v1/credentials", 0) == logins + 2
    raw.lab("DELETE", "/faults")
    raw.fault("GET /api/v1/system", 403)  # permission denied (code 13): no re-login
    with pytest.raises(ArrayAuthError, match="edit role"):
        array.describe()
    assert raw.calls().get("POST /api/v1/credentials", 0) == logins + 2


def test_concurrent_first_calls_log_in_once(array, raw):
    close_all()
    logins = raw.calls().get("POST /api/v1/credentials", 0)
    errors: list[BaseException] = []

    def call() -> None:
        try:
            array.describe()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert raw.calls().get("POST /api/v1/credentials", 0) == logins + 1


def test_close_all_logs_the_session_out(array, raw):
    array.describe()
    key = array.session().key
    close_all()
    r = raw.http.get(raw.base + "/system", headers={"X-HP3PAR-WSAPI-SessionKey": key}, timeout=30)
    assert r.status_code == 403 and r.json()["code"] == 6
    assert array.describe().vendor == "hpe_primera"  # a new session on next use


def test_wrong_password_is_an_auth_error(lab, cfg):
    block = make_block(lab, cfg, password="not-the-password")
    with pytest.raises(ArrayAuthError) as err:
        block.describe()
    assert err.value.status == 403 and err.value.code == "5"
    assert "user and password" in str(err.value)


def test_tls_needs_the_arrays_ca_even_with_requests_ca_bundle_set(lab, cfg, monkeypatch):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", lab["ca_bundle"])  # must not be trusted silently
    block = make_block(lab, cfg, ca_certificate=None)
    with pytest.raises(ArrayError, match="ca_certificate") as err:
        block.describe()
    assert not isinstance(err.value, ArrayTransientError)  # retrying cannot cure it


def test_verification_off_works_but_warns_and_settings_do_not_share_a_session(lab, cfg, caplog):
    plain = make_block(lab, cfg, ca_certificate=None, verify_tls=False)
    with caplog.at_level("WARNING", logger="blocks.arrays"):
        assert plain.describe().vendor == "hpe_primera"
    assert "TLS certificate verification is OFF" in caplog.text
    a, b = make_block(lab, cfg), make_block(lab, cfg, timeout_s=5)
    assert a.session() is not b.session()  # the timeout is part of the session
    assert a.session() is make_block(lab, cfg).session()
    close_all()


def test_ca_files_written_for_requests_are_removed_when_the_process_ends(lab):
    code = (
        "from pathlib import Path; from blocks.arrays import ca_file; "
        f"p = ca_file(Path({lab['ca_bundle']!r}).read_text()); "
        "assert Path(p).exists(); print(p)"
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    path = Path(r.stdout.strip())
    assert path.name.startswith("snaprestore-ca-") and not path.exists()
