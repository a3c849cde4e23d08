"""The HPE Primera emulator driven by HPE's own python-3parclient, TLS verified."""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

from tests.arrays.conftest import RunningArray, seed_spec

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # eventlet (imported by the client) warns it is deprecated
    from hpe3parclient import exceptions
    from hpe3parclient.client import HPE3ParClient

ESX1_IQN = "iqn.1998-01.com.vmware:esx-01-00000001"
ESX1_WWNS = ["21000024FF100011", "21000024FF100012"]
NEW_IQN = "iqn.1998-01.com.vmware:restore-host-1"
NEW_IQN_2 = "iqn.1998-01.com.vmware:restore-host-2"


@pytest.fixture(scope="module")
def array(start_array_module, tmp_path_factory) -> RunningArray:
    """One seeded Primera: ``ds_iscsi`` (iSCSI hosts) and ``ds_fc`` (FC hosts)."""
    arr = start_array_module("hpe_primera", name="primera-client")
    content = tmp_path_factory.mktemp("seed")
    spec = seed_spec(content, "iscsi", "ds_iscsi", vmfs=True)
    spec["volumes"] += seed_spec(content, "fc", "ds_fc", vmfs=True)["volumes"]
    assert arr.lab("POST", "/lab/seed", json=spec).status_code == 201
    return arr


def new_client(array: RunningArray) -> HPE3ParClient:
    """A logged-in client that verifies the emulator's certificate with the lab CA."""
    client = HPE3ParClient(array.url + "/api/v1", secure=array.ca_bundle)
    client.getWsApiVersion()
    client.login("3paradm", "lab-secret")
    return client


@pytest.fixture
def client(array: RunningArray) -> Iterator[HPE3ParClient]:
    c = new_client(array)
    yield c
    if c.get_session_key():
        c.logout()


def fabric_exports(array: RunningArray, naa: str) -> list[dict[str, Any]]:
    doc = array.lab("GET", "/lab/fabric").json()
    return next((lun["exports"] for lun in doc["luns"] if lun["naa"] == naa), [])


def test_login_flow_reads_the_version_probe(array: RunningArray) -> None:
    client = HPE3ParClient(array.url + "/api/v1", secure=array.ca_bundle)
    version = client.getWsApiVersion()
    assert version["build"] >= client.HPE3PAR_WS_PRIMERA_MIN_BUILD_VERSION
    assert client.is_primera_array()
    with pytest.raises(exceptions.HTTPForbidden) as err:
        client.login("3paradm", "wrong")
    assert err.value.get_code() == 5
    client.login("3paradm", "lab-secret")
    assert client.get_session_key()
    system = client.getStorageSystemInfo()
    assert (system["serialNumber"], system["model"]) == ("4UW0012345", "HPE Primera A630")
    assert client.getWSAPIConfigurationInfo()["sessionsInUse"] >= 1
    client.logout()
    assert client.get_session_key() is None


def test_ports(client: HPE3ParClient) -> None:
    iscsi = client.getiSCSIPorts(state=client.PORT_STATE_READY)
    assert sorted(p["IPAddr"] for p in iscsi) == ["127.0.30.11", "127.0.30.12"]
    assert all(p["mode"] == client.PORT_MODE_TARGET and p["iSCSIName"] for p in iscsi)
    fc = client.getFCPorts(state=client.PORT_STATE_READY)
    assert len(fc) == 2 and all(len(p["portWWN"]) == 16 for p in fc)
    assert len(client.getPorts()["members"]) == 4


def test_volumes_and_snapshots(client: HPE3ParClient) -> None:
    names = {v["name"] for v in client.getVolumes()["members"]}
    assert {"ds_iscsi", "ds_fc", "ds_iscsi.daily-1", "ds_fc.daily-2"} <= names
    base = client.getVolume("ds_iscsi")
    assert base["copyType"] == 1 and base["wwn"].startswith("60002AC")
    assert client.getVolumeSnapshots("ds_iscsi") == ["ds_iscsi.daily-1", "ds_iscsi.daily-2"]
    assert client.getVolumeSnapshots("ds_iscsi.daily-1") == []
    with pytest.raises(exceptions.HTTPNotFound) as err:
        client.getVolume("no-such-volume")
    assert err.value.get_code() == 23


def test_clone_with_comment_and_metadata(client: HPE3ParClient) -> None:
    comment = '{"by": "snaprestore", "src": "ds_iscsi.daily-1"}'
    optional = {"readOnly": False, "comment": comment, "expirationHours": 72}
    assert client.createSnapshot("vmr-meta", "ds_iscsi.daily-1", optional) is None  # 200, no body
    clone = client.getVolume("vmr-meta")
    assert clone["copyOf"] == "ds_iscsi.daily-1" and clone["readOnly"] is False
    assert clone["comment"] == comment and clone["copyType"] == client.VIRTUAL_COPY
    assert "vmr-meta" in client.getVolumeSnapshots("ds_iscsi.daily-1")

    client.setVolumeMetaData("vmr-meta", "snaprestore.job", "job-1")
    client.setVolumeMetaData("vmr-meta", "snaprestore.job", "job-2")  # 409 → PUT inside
    assert client.getVolumeMetaData("vmr-meta", "snaprestore.job")["value"] == "job-2"
    everything = client.getAllVolumeMetaData("vmr-meta")
    assert everything["total"] == 1 and everything["members"][0]["key"] == "snaprestore.job"
    assert client.findVolumeMetaData("vmr-meta", "snaprestore.job", "job-2")
    client.removeVolumeMetaData("vmr-meta", "snaprestore.job")
    with pytest.raises(exceptions.HTTPNotFound) as err:
        client.getVolumeMetaData("vmr-meta", "snaprestore.job")
    assert err.value.get_code() == 180

    client.modifyVolume("vmr-meta", {"comment": "updated"})
    assert client.getVolume("vmr-meta")["comment"] == "updated"
    with pytest.raises(exceptions.HTTPConflict) as err:
        client.createSnapshot("vmr-meta", "ds_iscsi.daily-1", {"readOnly": False})
    assert err.value.get_code() == 22
    with pytest.raises(exceptions.HTTPForbidden) as err:
        client.createSnapshot("vmr-ro-ro", "ds_iscsi.daily-1", {"readOnly": True})
    assert err.value.http_status == 403
    with pytest.raises(exceptions.HTTPConflict) as err:
        client.deleteVolume("ds_iscsi.daily-1")  # it has our clone as a child
    assert err.value.get_code() == 32
    client.deleteVolume("vmr-meta")
    with pytest.raises(exceptions.HTTPNotFound):
        client.getVolume("vmr-meta")


def test_hosts(client: HPE3ParClient) -> None:
    found = client.queryHost(iqns=[ESX1_IQN])
    assert [h["name"] for h in found["members"]] == ["esx-01-iscsi"]
    found = client.queryHost(wwns=ESX1_WWNS)
    assert [h["name"] for h in found["members"]] == ["esx-01"]
    found = client.queryHost(iqns=[ESX1_IQN], wwns=ESX1_WWNS[:1])
    assert sorted(h["name"] for h in found["members"]) == ["esx-01", "esx-01-iscsi"]
    assert client.queryHost(iqns=[NEW_IQN])["members"] == []

    host = client.createHost("rst-cli-iscsi", iscsiNames=[NEW_IQN], optional={"persona": 8})
    assert host["name"] == "rst-cli-iscsi" and host["persona"] == client.HOST_PERSONA_VMWARE
    fc = client.createHost(
        "rst-cli-fc", FCWwns=["50:01:43:80:12:34:56:78"], optional={"persona": 8}
    )
    assert [p["wwn"] for p in fc["FCPaths"]] == ["5001438012345678"]
    with pytest.raises(exceptions.HTTPConflict) as err:
        client.createHost("rst-cli-iscsi", iscsiNames=[NEW_IQN_2])
    assert err.value.get_code() == 16
    with pytest.raises(exceptions.HTTPConflict) as err:
        client.createHost("rst-cli-other", iscsiNames=[ESX1_IQN])
    assert err.value.get_code() == 73
    with pytest.raises(exceptions.HTTPBadRequest) as err:
        client.createHost("rst-cli-both", iscsiNames=[NEW_IQN_2], FCWwns=["5001438012345679"])
    assert err.value.get_code() == 44

    client.modifyHost(
        "rst-cli-iscsi", {"pathOperation": client.HOST_EDIT_ADD, "iSCSINames": [NEW_IQN_2]}
    )
    paths = [p["name"] for p in client.getHost("rst-cli-iscsi")["iSCSIPaths"]]
    assert paths == [NEW_IQN, NEW_IQN_2]
    assert {"rst-cli-iscsi", "rst-cli-fc"} <= {h["name"] for h in client.getHosts()["members"]}
    client.deleteHost("rst-cli-fc")
    client.deleteHost("rst-cli-iscsi")
    with pytest.raises(exceptions.HTTPNotFound) as err:
        client.getHost("rst-cli-iscsi")
    assert err.value.get_code() == 17


def test_vlun_lifecycle(client: HPE3ParClient, array: RunningArray) -> None:
    client.createHost("rst-vlun", iscsiNames=[NEW_IQN], optional={"persona": 8})
    client.createSnapshot("vmr-vlun", "ds_iscsi.daily-2", {"readOnly": False})
    naa = "naa." + client.getVolume("vmr-vlun")["wwn"].lower()

    location = client.createVLUN("vmr-vlun", hostname="rst-vlun", auto=True)
    volume, lun, host = location.split(",")
    assert (volume, host) == ("vmr-vlun", "rst-vlun")
    vlun = client.getVLUN("vmr-vlun")
    assert vlun["lun"] == int(lun) and vlun["hostname"] == "rst-vlun"
    assert [v["volumeName"] for v in client.getHostVLUNs("rst-vlun")] == ["vmr-vlun"]
    assert fabric_exports(array, naa) == [
        {"initiator": NEW_IQN, "protocol": "iscsi", "lun": int(lun)}
    ]

    second = client.createVLUN("ds_iscsi.daily-2", hostname="rst-vlun", auto=True)
    assert second == f"ds_iscsi.daily-2,{int(lun) + 1},rst-vlun"
    with pytest.raises(exceptions.HTTPConflict) as err:
        client.createVLUN("ds_fc", lun=int(lun), hostname="rst-vlun")
    assert err.value.get_code() == 18
    with pytest.raises(exceptions.HTTPConflict) as err:
        client.deleteVolume("vmr-vlun")
    assert err.value.get_code() == 34
    with pytest.raises(exceptions.HTTPConflict) as err:
        client.deleteHost("rst-vlun")
    assert err.value.get_code() == 26

    client.deleteVLUN("vmr-vlun", int(lun), "rst-vlun")
    client.deleteVLUN("ds_iscsi.daily-2", int(lun) + 1, "rst-vlun")
    assert fabric_exports(array, naa) == []
    with pytest.raises(exceptions.HTTPNotFound):
        client.getVLUN("vmr-vlun")
    with pytest.raises(exceptions.HTTPNotFound):
        client.getHostVLUNs("rst-vlun")
    with pytest.raises(exceptions.HTTPNotFound) as err:
        client.deleteVLUN("vmr-vlun", int(lun), "rst-vlun")
    assert err.value.get_code() == 19
    client.deleteVolume("vmr-vlun")
    client.deleteHost("rst-vlun")


def test_client_logs_in_again_when_its_key_is_rejected(client: HPE3ParClient) -> None:
    client.http.session_key = "0-forged-key"
    assert client.getVolume("ds_fc")["name"] == "ds_fc"  # 403 code 6 → re-login → replay
    assert client.get_session_key() != "0-forged-key"


def test_client_retries_an_injected_503(array: RunningArray) -> None:
    client = new_client(array)  # its own client: the library keeps its back-off delay
    fault = {"operation": "GET /api/v1/system", "error": 503, "times": 1}
    assert array.lab("POST", "/lab/faults", json=fault).status_code == 201
    start = time.monotonic()
    assert client.getStorageSystemInfo()["serialNumber"] == "4UW0012345"
    assert time.monotonic() - start >= 1.0  # one back-off before the retry
    assert array.lab("GET", "/lab/faults").json()["faults"] == []
    client.logout()
