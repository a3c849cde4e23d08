"""The ONTAP emulator driven by NetApp's own client library, ``netapp_ontap``.

Every call a snapshot-restore tool makes goes through the library exactly as it would against
a real cluster: URLs, query strings, bodies, job polling (``post()``/``patch()``/``delete()``
follow the ``202`` job link) and error parsing into ``NetAppRestError``.

TLS stays verified: ``HostConnection(verify=<lab CA bundle>)`` sets the requests session's
``verify``. requests lets the ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` environment variables
override a session's ``verify`` path, so the fixture unsets them for this module.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from netapp_ontap import HostConnection, config
from netapp_ontap.error import NetAppRestError
from netapp_ontap.resources import (
    Cluster,
    ExportPolicy,
    ExportRule,
    Igroup,
    IgroupInitiator,
    IpInterface,
    IscsiService,
    Lun,
    LunMap,
    Snapshot,
    Svm,
    Volume,
)

from tests.arrays.conftest import RunningArray
from tests.arrays.test_ontap_api import two_volume_spec, vmx_gen

HOST_IQN = "iqn.1998-01.com.vmware:esx-21-00000021"


def connection(array: RunningArray, password: str = "lab-secret", **kw: Any) -> HostConnection:
    """Return a HostConnection to ``array`` that polls jobs every 50 ms."""
    options: dict[str, Any] = {"verify": array.ca_bundle, "poll_interval": 0.05, "poll_timeout": 30}
    options.update(kw)
    return HostConnection(
        "127.0.0.1", port=array.config.port, username="admin", password=password, **options
    )


@pytest.fixture(scope="module")
def array(start_array_module, tmp_path_factory) -> Iterator[RunningArray]:
    """A seeded emulator, set as the library's global connection for the module."""
    arr = start_array_module("netapp_ontap", name="ontap_client")
    assert arr.lab("POST", "/lab/seed", json=two_volume_spec(tmp_path_factory.mktemp("seed")))
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("REQUESTS_CA_BUNDLE", raising=False)
        mp.delenv("CURL_CA_BUNDLE", raising=False)
        previous = config.CONNECTION
        config.CONNECTION = connection(arr)
        try:
            yield arr
        finally:
            config.CONNECTION = previous


def fabric(array: RunningArray) -> dict[str, Any]:
    """Return the emulator's current fabric."""
    return array.lab("GET", "/lab/fabric").json()


def naa(serial: str) -> str:
    """Return the ESXi device name of an ONTAP LUN serial."""
    return "naa.600a0980" + serial.encode("ascii").hex()


def test_cluster_version_and_svm(array: RunningArray) -> None:
    cluster = Cluster()
    cluster.get(fields="version")
    assert cluster.version.generation == 9 and cluster.version.major >= 13
    assert [s.name for s in Svm.get_collection(fields="name")] == ["svm1"]


def test_tls_is_verified(array: RunningArray) -> None:
    cluster = Cluster()
    cluster.set_connection(connection(array, verify=True))  # system CAs: the lab CA is unknown
    with pytest.raises(NetAppRestError, match="CERTIFICATE_VERIFY_FAILED"):
        cluster.get()


def test_find_datastore_volumes_and_snapshots(array: RunningArray) -> None:
    vols = list(Volume.get_collection(name="ds_*", fields="uuid,name,nas.path,svm.name"))
    assert [v.name for v in vols] == ["ds_iscsi_01", "ds_nfs_01"]
    nfs = Volume.find(**{"svm.name": "svm1", "nas.path": "/ds_nfs_01"})
    assert nfs is not None and nfs.name == "ds_nfs_01"
    assert nfs.nas.export_policy.name == "esx_hosts"  # find() asks for fields=*
    snaps = list(Snapshot.get_collection(nfs.uuid, fields="name,create_time"))
    assert [s.name for s in snaps] == ["daily-1", "daily-2"]
    assert snaps[0].create_time.isoformat().startswith("2026-11-23T01:00:00")
    lif = list(IpInterface.get_collection(**{"ip.address": "127.0.40.11", "fields": "svm.name"}))
    assert [i.svm.name for i in lif] == ["svm1"]
    paged = list(Volume.get_collection(max_records=1, fields="name"))  # follows _links.next
    assert [v.name for v in paged] == [v.name for v in Volume.get_collection()]
    assert len(paged) >= 2


def test_snapshot_create_and_delete(array: RunningArray) -> None:
    vol = Volume.find(name="ds_nfs_01")
    snap = Snapshot(vol.uuid, name="pre_restore", comment="taken by snaprestore")
    snap.post()  # a job; the uuid comes from the Location query once it is done
    assert snap.uuid
    snap.get()
    assert snap.comment == "taken by snaprestore" and snap.volume.name == "ds_nfs_01"
    snap.delete()
    names = [s.name for s in Snapshot.get_collection(vol.uuid)]
    assert names == ["daily-1", "daily-2"]


def test_san_restore_cycle(array: RunningArray) -> None:
    # Datastore LUN from its NAA.
    parent_lun = next(Lun.get_collection(name="/vol/ds_iscsi_01/lun0", fields="serial_number"))
    serial = bytes.fromhex(naa(parent_lun.serial_number)[len("naa.600a0980") :]).decode()
    found = list(Lun.get_collection(serial_number=serial, fields="name,location.volume.name"))
    assert [u.location.volume.name for u in found] == ["ds_iscsi_01"]

    # FlexClone of daily-1 (the library polls the job, then finds the uuid from Location).
    clone = Volume(
        name="c_san",
        svm={"name": "svm1"},
        comment="snaprestore job=c_san",
        clone={
            "parent_volume": {"name": "ds_iscsi_01"},
            "parent_snapshot": {"name": "daily-1"},
            "is_flexclone": True,
        },
    )
    array.lab("DELETE", "/lab/calls")
    clone.post()
    assert clone.uuid
    calls = array.lab("GET", "/lab/calls").json()
    assert calls["POST /api/storage/volumes"] == 1
    assert calls["GET /api/cluster/jobs/{}"] >= 1  # the library polled the job
    clone.get(fields="clone,comment")
    assert clone.clone.is_flexclone and clone.clone.parent_snapshot.name == "daily-1"
    assert clone.comment == "snaprestore job=c_san"
    lun = next(
        Lun.get_collection(
            **{"location.volume.name": "c_san", "fields": "serial_number,status,name"}
        )
    )
    assert lun.serial_number != parent_lun.serial_number
    assert lun.status.state == "online" and lun.status.mapped is False

    # igroup for the host, created then completed with a second initiator.
    assert list(Igroup.get_collection(**{"initiators.name": HOST_IQN})) == []
    group = Igroup(
        name="c_esx21",
        svm={"name": "svm1"},
        os_type="vmware",
        protocol="iscsi",
        initiators=[{"name": HOST_IQN}],
        comment="created-by=snaprestore",
    )
    group.post()
    IgroupInitiator(group.uuid, name="iqn.1998-01.com.vmware:esx-21-nic2").post()
    found_group = next(Igroup.get_collection(**{"initiators.name": HOST_IQN, "fields": "*"}))
    assert found_group.uuid == group.uuid
    assert len(found_group.initiators) == 2

    # Map, find the map, learn the target.
    lun_map = LunMap(svm={"name": "svm1"}, lun={"name": lun.name}, igroup={"name": "c_esx21"})
    lun_map.post(hydrate=True)
    assert lun_map.logical_unit_number == 0
    maps = list(LunMap.get_collection(**{"lun.name": lun.name, "fields": "logical_unit_number"}))
    assert [(m.igroup.uuid, m.logical_unit_number) for m in maps] == [(group.uuid, 0)]
    service = next(IscsiService.get_collection(fields="target.name"))
    same = IscsiService(svm={"uuid": service.svm.uuid})
    same.get()
    assert same.target.name == service.target.name
    portals = [i.ip.address for i in IpInterface.get_collection(services="data_iscsi", fields="ip")]
    assert portals == ["127.0.40.12"]
    fab_lun = next(u for u in fabric(array)["luns"] if u["naa"] == naa(lun.serial_number))
    assert {e["initiator"] for e in fab_lun["exports"]} == {
        HOST_IQN,
        "iqn.1998-01.com.vmware:esx-21-nic2",
    }
    assert fab_lun["iscsi_targets"] == [
        {"address": "127.0.40.12", "port": 3260, "iqn": service.target.name}
    ]
    assert vmx_gen(fab_lun["content_dir"]) == "1"

    # Tear down: unmap (twice: the second is the documented 5374922), igroup, clone.
    LunMap(lun={"uuid": lun.uuid}, igroup={"uuid": group.uuid}).delete()
    with pytest.raises(NetAppRestError) as err:
        LunMap(lun={"uuid": lun.uuid}, igroup={"uuid": group.uuid}).delete()
    assert err.value.status_code == 404
    assert err.value.response_body["error"]["code"] == "5374922"
    group.delete()
    Volume(uuid=clone.uuid).delete()
    assert list(Volume.get_collection(name="c_san")) == []
    assert naa(lun.serial_number) not in {u["naa"] for u in fabric(array)["luns"]}


def test_nfs_restore_cycle(array: RunningArray) -> None:
    clone = Volume(
        name="c_nfs",
        svm={"name": "svm1"},
        clone={
            "parent_volume": {"name": "ds_nfs_01"},
            "parent_snapshot": {"name": "daily-2"},
            "is_flexclone": True,
        },
    )
    clone.post()
    policy = ExportPolicy(name="c_nfs", svm={"name": "svm1"})
    policy.post()
    assert isinstance(policy.id, int)
    rule = ExportRule(
        policy.id,
        clients=[{"match": "127.0.10.31"}],
        protocols=["nfs3"],
        ro_rule=["sys"],
        rw_rule=["sys"],
        superuser=["sys"],
    )
    rule.post()
    assert rule.index == 1

    vol = Volume(uuid=clone.uuid)
    vol.nas = {"path": "/c_nfs", "export_policy": {"name": "c_nfs"}}
    vol.comment = "mounted by snaprestore"
    vol.patch()
    vol.get(fields="nas,comment")
    assert vol.nas.path == "/c_nfs" and vol.nas.export_policy.name == "c_nfs"
    assert vol.comment == "mounted by snaprestore"
    servers = [i.ip.address for i in IpInterface.get_collection(services="data_nfs", fields="ip")]
    export = next(e for e in fabric(array)["nfs_exports"] if e["path"] == "/c_nfs")
    assert export["servers"] == servers == ["127.0.40.11"]
    assert export["rules"] == [{"match": "127.0.10.31", "rw": True, "root": True}]
    assert vmx_gen(export["content_dir"]) == "2"

    rule.delete()
    export = next(e for e in fabric(array)["nfs_exports"] if e["path"] == "/c_nfs")
    assert export["rules"] == []
    with pytest.raises(NetAppRestError) as err:
        policy.delete()  # still assigned to the clone
    assert err.value.status_code == 409
    vol = Volume(uuid=clone.uuid)
    vol.nas = {"path": ""}
    vol.patch()
    assert "/c_nfs" not in {e["path"] for e in fabric(array)["nfs_exports"]}
    Volume(uuid=clone.uuid).delete()
    policy.delete()
    assert ExportPolicy.find(name="c_nfs") is None


def test_errors_reach_the_caller(array: RunningArray) -> None:
    with pytest.raises(NetAppRestError) as err:
        Volume(name="bad-name", svm={"name": "svm1"}).post()
    assert err.value.status_code == 400
    assert err.value.response_body["error"]["code"] == "2"
    assert "Invalid volume name" in str(err.value)

    with pytest.raises(NetAppRestError, match="Duplicate volume name"):
        Volume(
            name="ds_nfs_01",
            svm={"name": "svm1"},
            clone={"parent_volume": {"name": "ds_nfs_01"}, "is_flexclone": True},
        ).post()

    with pytest.raises(NetAppRestError) as err:
        Volume(uuid="00000000-0000-0000-0000-000000000000").get()
    assert err.value.status_code == 404 and err.value.response_body["error"]["code"] == "4"

    seeded = next(Lun.get_collection(name="/vol/ds_iscsi_01/lun0"))
    with pytest.raises(NetAppRestError) as err:
        LunMap(
            svm={"name": "svm1"}, lun={"uuid": seeded.uuid}, igroup={"name": "esx_cluster"}
        ).post()
    assert err.value.status_code == 409

    cluster = Cluster()
    cluster.set_connection(connection(array, password="wrong"))
    with pytest.raises(NetAppRestError) as err:
        cluster.get()
    assert err.value.status_code == 401
