"""The arrays of the lab present production to the whole cluster at once, as many estates do.

primera1 exports DS_ISCSI_01 to ONE iSCSI host object holding every host's IQN; ontap1 maps
ds_iscsi_02's LUN to ONE igroup of every host's IQN. A copy presented through the shared
host object reaches every host, and vCenter mounts the resignatured copy on all of them.
"""

from __future__ import annotations

from pyVmomi import vim

from tests.support.fixtures import copy_name, detach_everywhere, unmount_everywhere
from tests.support.storage_ops import HpeOps, ops_for
from tests.support.vcenter import find, host
from tests.support.vsphere_steps import rescan, scsi_lun, unresolved, wait

BAD = ("apd", "device_lost_while_attached", "vmfs_destroyed")


def _array(lab, name: str) -> dict:
    return next(a for a in lab["arrays"] if a["name"] == name)


def test_primera_has_one_iscsi_host_object_for_the_cluster(lab, http):
    ops = ops_for(lab, "primera1")
    assert isinstance(ops, HpeOps)
    hosts = {h["name"]: h for h in ops._ok(ops.http.get(ops.base + "/hosts")).json()["members"]}
    shared = hosts[lab["cases"]["shared_host_object"]]
    assert shared["persona"] == 8
    assert sorted(p["name"] for p in shared["iSCSIPaths"]) == sorted(
        h["iqn"].lower() for h in lab["hosts"]
    )
    assert not [n for n in hosts if n.endswith("-iscsi") and n != "lab-cluster-iscsi"]
    vluns = ops._ok(
        ops.http.get(ops.base + "/vluns", params={"query": '"volumeName EQ DS_ISCSI_01"'})
    ).json()["members"]
    assert [v["hostname"] for v in vluns] == ["lab-cluster-iscsi"]
    fc = ops._ok(
        ops.http.get(ops.base + "/vluns", params={"query": '"volumeName EQ DS_FC_01"'})
    ).json()["members"]
    assert sorted(v["hostname"] for v in fc) == [h["name"] for h in lab["hosts"]]
    # an IQN cannot be in a second host object: EXISTENT_PATH
    r = ops.http.post(
        ops.base + "/hosts",
        json={"name": "sr-esx-01", "iSCSINames": [lab["hosts"][0]["iqn"]], "persona": 8},
    )
    assert r.status_code == 409 and r.json()["code"] == 73


def test_ontap_maps_the_datastore_lun_to_one_igroup_of_the_cluster(lab):
    ops = ops_for(lab, "ontap1")
    group = ops._records("/protocols/san/igroups", name=lab["cases"]["shared_igroup"], fields="*")[
        0
    ]
    assert (group["os_type"], group["protocol"]) == ("vmware", "iscsi")
    assert sorted(i["name"] for i in group["initiators"]) == sorted(h["iqn"] for h in lab["hosts"])
    maps = ops._records(
        "/protocols/san/lun-maps", **{"lun.name": "/vol/ds_iscsi_02/lun0", "fields": "igroup"}
    )
    assert [m["igroup"]["name"] for m in maps] == ["lab-cluster"]


def test_the_fabric_marks_what_the_seed_made_as_production(lab, http):
    production = {}
    for a in lab["arrays"]:
        fabric = http.get(a["lab_url"] + "/fabric", timeout=30).json()
        production |= {lun["name"]: lun["production"] for lun in fabric["luns"]}
        production |= {e["name"]: e["production"] for e in fabric["nfs_exports"]}
    assert production == {
        "DS_ISCSI_01": True,
        "DS_FC_01": True,
        "RDM_SQL_01": True,
        "/vol/ds_iscsi_02/lun0": True,
        "ds_nfs_01": True,
    }
    state = http.get(lab["vcenter"]["lab_url"] + "/state", timeout=30).json()
    vc = {d["name"]: d["production"] for d in state["datastores"]}
    assert vc == {name: True for name in ("ds-iscsi-01", "ds-fc-01", "ds-nfs-01", "ds-iscsi-02")}


def test_a_copy_on_the_shared_host_object_is_mounted_on_every_host(lab, si, http, vclab):
    """Resignature on one host: vCenter rescans the other hosts the LUN is exported to
    (they see it through the shared host object) and mounts the copy there too."""
    ds_cfg = next(d for d in lab["datastores"] if d["name"] == "ds-iscsi-01")
    ops = ops_for(lab, "primera1")
    chosen = lab["hosts"][2]
    esx = host(si, chosen["name"])
    since = vclab.get("/calls/log?since=0")["last_seq"]
    before = len(vclab.events())
    copy = ops.make_copy(ds_cfg["volume"], ds_cfg["snapshots"][1], copy_name("hpe_primera"))
    everyone = [host(si, h["name"]) for h in lab["hosts"]]
    try:
        ops.present(copy, chosen, "iscsi")
        assert copy.extra["vluns"][0].endswith(",lab-cluster-iscsi")
        fabric = http.get(_array(lab, "primera1")["lab_url"] + "/fabric", timeout=30).json()
        lun = next(u for u in fabric["luns"] if u["naa"] == copy.naa)
        assert lun["production"] is False
        assert {e["initiator"] for e in lun["exports"]} == {h["iqn"].lower() for h in lab["hosts"]}
        rescan(esx, "iscsi")
        assert [scsi_lun(h, copy.naa) is not None for h in everyone] == [False, False, True]
        vol = unresolved(esx, copy.naa)
        spec = vim.host.UnresolvedVmfsResignatureSpec(extentDevicePath=[vol.extent[0].devicePath])
        result = wait(esx.configManager.datastoreSystem.ResignatureUnresolvedVmfsVolume_Task(spec))
        ds = result.result
        others = sorted(h["name"] for h in lab["hosts"] if h["name"] != chosen["name"])
        assert sorted(r.host.name for r in result.rescan) == others
        assert sorted(m.key.name for m in ds.host) == sorted(h["name"] for h in lab["hosts"])
        assert all(m.mountInfo.accessible for m in ds.host)
        assert all(scsi_lun(h, copy.naa).operationalState == ["ok"] for h in everyone)
        # only the chosen host was asked to rescan: the others' rescans were vCenter's own
        calls = vclab.get(f"/calls/log?since={since}&method=RescanHba")["calls"]
        assert {c["host"] for c in calls} == {chosen["name"]}
        name = ds.name
        assert unmount_everywhere(ds, "iscsi") == [h["name"] for h in lab["hosts"]]
        assert find(si, vim.Datastore, name) is None
        detach_everywhere(everyone, copy.naa)
    finally:
        ops.unpresent(copy)
        for h in everyone:
            rescan(h, "iscsi")
        ops.delete(copy)
    assert all(scsi_lun(h, copy.naa) is None for h in everyone)
    assert [e for e in vclab.events()[before:] if e["kind"] in BAD] == []


def test_a_per_host_igroup_beside_the_shared_one_gets_a_lun_number_the_host_does_not_see(lab, si):
    """ontap1: the test helper maps a copy to an igroup of esx-01 alone (ONTAP allows an
    initiator in several igroups): the copy gets a LUN number esx-01 does not use yet."""
    ds_cfg = next(d for d in lab["datastores"] if d["name"] == "ds-iscsi-02")
    ops = ops_for(lab, "ontap1")
    chosen = lab["hosts"][0]
    esx = host(si, chosen["name"])
    production = find(si, vim.Datastore, "ds-iscsi-02").info.vmfs.extent[0].diskName
    target = ops._records("/protocols/san/iscsi/services", fields="target.name")[0]["target"]
    used = {  # the LUN numbers esx-01 sees through ontap1's iSCSI target
        lun.lun
        for adapter in esx.config.storageDevice.scsiTopology.adapter
        for t in adapter.target
        if isinstance(t.transport, vim.host.InternetScsiTargetTransport)
        and t.transport.iScsiName == target["name"]
        for lun in t.lun
    }
    assert used == {0}  # ds_iscsi_02's LUN, through the shared igroup
    copy = ops.make_copy(ds_cfg["volume"], ds_cfg["snapshots"][0], copy_name("netapp_ontap"))
    try:
        number = ops.present(copy, chosen, "iscsi")
        assert number not in used
        rescan(esx, "iscsi")
        assert scsi_lun(esx, copy.naa) is not None and scsi_lun(esx, production) is not None
        for other in lab["hosts"][1:]:  # the copy's igroup holds esx-01 only
            other_esx = host(si, other["name"])
            rescan(other_esx, "iscsi")
            assert scsi_lun(other_esx, copy.naa) is None
        detach_everywhere([esx], copy.naa)
    finally:
        ops.unpresent(copy)
        rescan(esx, "iscsi")
        ops.delete(copy)
    assert scsi_lun(esx, copy.naa) is None
