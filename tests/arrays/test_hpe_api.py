"""The HPE Primera emulator at the REST level: WSAPI v1 over real HTTPS, checked with requests."""

from __future__ import annotations

import http.server
import json
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from lab.pki import LabPki
from lab.process import stop
from lab.vmfs import read_header
from tests.arrays.conftest import RunningArray, seed_spec

SYSTEM_ID = 12345  # from the fixture's serial "4UW0012345"
KEY_HEADER = "X-HP3PAR-WSAPI-SessionKey"


class Wsapi:
    """A tiny WSAPI caller: TLS verified against the lab CA, session key sent once logged in."""

    def __init__(self, array: RunningArray):
        self.array = array
        self.key: str | None = None

    def call(self, method: str, path: str, key: str | None = None, **kw: Any) -> requests.Response:
        """Send ``method`` to ``/api/v1`` + ``path`` with the session key (or ``key``)."""
        headers = {"Accept": "application/json"}
        if key or self.key:
            headers[KEY_HEADER] = key or self.key or ""
        return requests.request(
            method,
            self.array.url + "/api/v1" + path,
            headers=headers,
            verify=self.array.ca_bundle,
            timeout=30,
            **kw,
        )

    def login(self, password: str = "lab-secret") -> requests.Response:
        """Log in as the array's user and keep the key."""
        r = self.call("POST", "/credentials", json={"user": "3paradm", "password": password})
        if r.status_code == 201:
            self.key = r.json()["key"]
        return r

    def ok(self, method: str, path: str, status: int = 200, **kw: Any) -> requests.Response:
        """Call and assert the status."""
        r = self.call(method, path, **kw)
        assert r.status_code == status, (method, path, r.status_code, r.text)
        return r

    def members(self, path: str, **params: str) -> list[dict[str, Any]]:
        """GET a collection and return its members (checking ``total``)."""
        body = self.ok("GET", path, params=params).json()
        assert body["total"] == len(body["members"])
        return body["members"]

    def snapshot(self, source: str, name: str, **params: Any) -> requests.Response:
        """POST createSnapshot on ``source``."""
        body = {"action": "createSnapshot", "parameters": {"name": name, **params}}
        return self.call("POST", f"/volumes/{source}", json=body)


def wsapi_error(r: requests.Response, status: int, code: int) -> dict[str, Any]:
    """Assert ``r`` is a WSAPI error ``{code, desc}`` with that status and code."""
    assert r.status_code == status, r.text
    body = r.json()
    assert body["code"] == code, body
    assert isinstance(body["desc"], str) and body["desc"]
    return body


def vmx_gen(content_dir: str) -> str:
    """Return the ``sr.gen`` written by seed_spec into a content tree."""
    text = (Path(content_dir) / "vm-a" / "vm-a.vmx").read_text()
    return text.split('sr.gen = "')[1].split('"')[0]


class Capture:
    """An HTTPS server (lab certificate) that records every fabric document POSTed to it."""

    def __init__(self, pki: LabPki):
        docs: list[dict[str, Any]] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                docs.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.docs = docs
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(pki.server_cert, pki.server_key)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}/lab/fabric-changed"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def capture(lab_pki: LabPki) -> Iterator[Capture]:
    """A fabric-push receiver for the module's array."""
    cap = Capture(lab_pki)
    yield cap
    cap.server.shutdown()


@pytest.fixture(scope="module")
def array(start_array_module, capture: Capture, tmp_path_factory) -> RunningArray:
    """One seeded Primera for the module: ``ds_iscsi`` and ``ds_fc``, each with two snapshots."""
    arr = start_array_module("hpe_primera", name="primera-api", notify_urls=[capture.url])
    content = tmp_path_factory.mktemp("seed")
    spec = seed_spec(content, "iscsi", "ds_iscsi", vmfs=True)
    fc = seed_spec(content, "fc", "ds_fc", vmfs=True)["volumes"][0]
    fc["vmfs"]["uuid"] = "6543210a-11223344-5566-000000000fc0"
    spec["volumes"].append(fc)
    r = arr.lab("POST", "/lab/seed", json=spec)
    assert r.status_code == 201, r.text
    return arr


@pytest.fixture
def api(array: RunningArray) -> Iterator[Wsapi]:
    """A logged-in WSAPI session on the module's array (logged out afterwards)."""
    w = Wsapi(array)
    assert w.login().status_code == 201
    yield w
    w.call("DELETE", f"/credentials/{w.key}")


def lab_state(array: RunningArray) -> dict[str, Any]:
    r = array.lab("GET", "/lab/state")
    assert r.status_code == 200
    return r.json()


def fabric(array: RunningArray) -> dict[str, Any]:
    r = array.lab("GET", "/lab/fabric")
    assert r.status_code == 200
    return r.json()


def lun_of(doc: dict[str, Any], naa: str) -> dict[str, Any] | None:
    return next((lun for lun in doc["luns"] if lun["naa"] == naa), None)


# ---- sessions and system --------------------------------------------------------------------


def test_version_probe_needs_no_session_and_reports_primera(array: RunningArray) -> None:
    r = requests.get(array.url + "/api", verify=array.ca_bundle, timeout=30)
    assert r.status_code == 200
    version = r.json()
    assert version["major"] == 1
    assert version["build"] >= 40000128  # python-3parclient's Primera threshold


def test_login_logout_and_rejected_keys(array: RunningArray) -> None:
    w = Wsapi(array)
    wsapi_error(w.login(password="wrong"), 403, 5)
    wsapi_error(w.call("GET", "/system"), 403, 6)  # no key at all
    wsapi_error(w.call("GET", "/system", key="0-bogus-key"), 403, 6)
    r = w.login()
    assert r.status_code == 201
    assert r.headers["Location"] == f"/api/v1/credentials/{w.key}"
    assert w.ok("GET", "/system").json()["serialNumber"] == "4UW0012345"
    w.ok("DELETE", f"/credentials/{w.key}")
    wsapi_error(w.call("GET", "/system"), 403, 6)  # the key died with the session
    wsapi_error(w.call("DELETE", f"/credentials/{w.key}"), 403, 6)


def test_session_expires_after_idle_timeout(start_array) -> None:
    arr = start_array("hpe_primera", extra={"session_idle_timeout_s": 1})
    w = Wsapi(arr)
    w.login()
    w.ok("GET", "/system")
    time.sleep(0.5)
    w.ok("GET", "/system")  # use keeps the key alive
    time.sleep(0.5)
    w.ok("GET", "/system")
    time.sleep(1.5)
    wsapi_error(w.call("GET", "/system"), 403, 6)


def test_system_and_ports(api: Wsapi, array: RunningArray) -> None:
    system = api.ok("GET", "/system").json()
    assert system["id"] == SYSTEM_ID
    assert system["model"] == "HPE Primera A630"
    assert system["name"] == array.config.name
    ports = api.members("/ports")
    fc = [p for p in ports if p["protocol"] == 1]
    iscsi = [p for p in ports if p["protocol"] == 2]
    assert len(fc) == 2 and len(iscsi) == 2
    assert all(p["mode"] == 2 and p["linkState"] == 4 for p in ports)
    assert sorted(p["IPAddr"] for p in iscsi) == ["127.0.30.11", "127.0.30.12"]
    iqns = {p["iSCSIName"] for p in iscsi}
    assert len(iqns) == 2 and all(i.startswith("iqn.2000-05.com.3pardata:") for i in iqns)
    assert all(len(p["portWWN"]) == 16 and "0002AC" in p["portWWN"] for p in fc)
    positions = [tuple(p["portPos"].values()) for p in ports]
    assert len(set(positions)) == len(positions)
    assert api.ok("GET", "/wsapiconfiguration").json()["sessionsInUse"] >= 1


# ---- seed ----------------------------------------------------------------------------------


def test_seed_creates_hosts_volumes_snapshots_vluns_and_headers(api: Wsapi, array) -> None:
    hosts = {h["name"]: h for h in api.members("/hosts")}
    assert set(hosts) == {f"esx-0{i}{s}" for i in (1, 2, 3) for s in ("", "-iscsi")}
    assert hosts["esx-01-iscsi"]["persona"] == 8
    assert [p["name"] for p in hosts["esx-01-iscsi"]["iSCSIPaths"]] == [
        "iqn.1998-01.com.vmware:esx-01-00000001"
    ]
    assert hosts["esx-01-iscsi"]["FCPaths"] == []
    assert [p["wwn"] for p in hosts["esx-01"]["FCPaths"]] == [
        "21000024FF100011",
        "21000024FF100012",
    ]

    base = api.ok("GET", "/volumes/ds_iscsi").json()
    assert base["copyType"] == 1 and "copyOf" not in base and base["sizeMiB"] == 10240
    snaps = api.members("/volumes", query='"copyOf EQ ds_iscsi"')
    assert [s["name"] for s in snaps] == ["ds_iscsi.daily-1", "ds_iscsi.daily-2"]
    for snap, day in zip(snaps, ("23", "24"), strict=True):
        assert snap["copyType"] == 3 and snap["readOnly"] is True
        assert snap["copyOf"] == "ds_iscsi" and snap["baseId"] == base["id"]
        assert snap["creationTime8601"].startswith(f"2026-11-{day}T01:00:00")
    assert base["roChildId"] == snaps[-1]["id"]

    vluns = api.members("/vluns", query='"volumeName EQ ds_iscsi"')
    assert sorted(v["hostname"] for v in vluns) == ["esx-01-iscsi", "esx-02-iscsi", "esx-03-iscsi"]
    assert len({v["lun"] for v in vluns}) == 1
    assert all(v["volumeWWN"] == base["wwn"] and v["type"] == 3 and v["active"] for v in vluns)
    fc_vluns = api.members("/vluns", query='"volumeName EQ ds_fc"')
    assert sorted(v["hostname"] for v in fc_vluns) == ["esx-01", "esx-02", "esx-03"]

    state = lab_state(array)
    assert state["vendor"] == "hpe_primera" and state["nfs_exports"] == []
    assert {v["name"] for v in state["volumes"]} == {"ds_iscsi", "ds_fc"}
    assert not any(v["is_copy"] for v in state["volumes"]) and state["copies"] == []
    snap_names = {(s["volume"], s["name"]) for s in state["snapshots"]}
    assert ("ds_iscsi", "ds_iscsi.daily-1") in snap_names and len(snap_names) == 4
    esx1 = next(h for h in state["hosts"] if h["name"] == "esx-01")
    assert esx1 == {
        "name": "esx-01",
        "initiators": ["21000024ff100011", "21000024ff100012"],
        "protocol": "fc",
    }
    assert {
        "volume": "ds_iscsi",
        "host": "esx-02-iscsi",
        "lun": vluns[0]["lun"],
        "protocol": "iscsi",
    } in state["exports"]

    # Content and VMFS headers: the volume holds gen 3, snapshots gens 1 and 2, all carry the
    # header of the volume's own device.
    lun = lun_of(fabric(array), "naa." + base["wwn"].lower())
    assert lun is not None and vmx_gen(lun["content_dir"]) == "3"
    header = read_header(lun["content_dir"])
    assert header is not None and header.naa == "naa." + base["wwn"].lower()
    assert header.label == "ds_iscsi"
    for snap, gen in zip(snaps, ("1", "2"), strict=True):
        exported = export(api, array, snap["name"], "esx-01-iscsi")
        assert vmx_gen(exported["content_dir"]) == gen
        snap_header = read_header(exported["content_dir"])
        assert snap_header is not None and snap_header.naa == header.naa
        unexport(api, snap["name"])


def test_seed_rejects_nfs_volumes_without_touching_the_array(start_array, tmp_path) -> None:
    arr = start_array("hpe_primera")
    r = arr.lab("POST", "/lab/seed", json=seed_spec(tmp_path, "nfs", "ds_nfs", vmfs=False))
    assert r.status_code == 400
    assert "block-only" in r.json()["error"]
    state = lab_state(arr)
    assert state["volumes"] == [] and state["hosts"] == [] and state["exports"] == []


# ---- volumes -------------------------------------------------------------------------------


def test_wwn_follows_the_3par_naa_rule(api: Wsapi, array: RunningArray) -> None:
    for v in api.members("/volumes"):
        assert v["wwn"] == f"60002AC{v['id']:017X}{SYSTEM_ID:08X}"
        assert len(v["wwn"]) == 32
    for v in lab_state(array)["volumes"]:
        wwn = api.ok("GET", f"/volumes/{v['name']}").json()["wwn"]
        assert v["naa"] == "naa." + wwn.lower()


def test_volume_query_filters(api: Wsapi) -> None:
    base = api.ok("GET", "/volumes/ds_fc").json()
    wwn = base["wwn"]
    other = api.ok("GET", "/volumes/ds_iscsi").json()["wwn"]
    for q in (f'"wwn EQ {wwn}"', f'"wwn EQ {wwn.lower()}"', f"wwn=={wwn}", f"\"wwn EQ '{wwn}'\""):
        assert [v["name"] for v in api.members("/volumes", query=q)] == ["ds_fc"], q
    both = api.members("/volumes", query=f"wwn=={wwn} OR wwn=={other}")
    assert {v["name"] for v in both} == {"ds_fc", "ds_iscsi"}
    assert api.members("/volumes", query='"copyOf EQ nothing"') == []
    for bad in ('"sizeMiB EQ 10"', '"copyOf EQ ds_fc AND wwn EQ x"', "", "copyOf"):
        wsapi_error(api.call("GET", "/volumes", params={"query": bad}), 400, 12)


def test_create_base_volume(api: Wsapi) -> None:
    body = {"name": "api-base-1", "cpg": "SSD_r6", "sizeMiB": 2048, "comment": "made by test"}
    r = api.ok("POST", "/volumes", 201, json=body)
    assert r.headers["Location"] == "/api/v1/volumes/api-base-1"
    v = api.ok("GET", "/volumes/api-base-1").json()
    assert (v["copyType"], v["sizeMiB"], v["readOnly"], v["comment"]) == (
        1,
        2048,
        False,
        "made by test",
    )
    assert v["baseId"] == v["id"] and v["userCPG"] == "SSD_r6"
    wsapi_error(api.call("POST", "/volumes", json=body), 409, 22)
    wsapi_error(api.call("POST", "/volumes", json={**body, "name": "x", "sizeMiB": 10}), 400, 43)
    wsapi_error(api.call("POST", "/volumes", json={"name": "y", "sizeMiB": 1024}), 400, 40)
    wsapi_error(api.call("POST", "/volumes", json={**body, "name": "z", "bogus": 1}), 400, 12)
    wsapi_error(api.call("POST", "/volumes", data="{not json"), 400, 60)
    api.ok("DELETE", "/volumes/api-base-1")
    wsapi_error(api.call("GET", "/volumes/api-base-1"), 404, 23)
    wsapi_error(api.call("DELETE", "/volumes/api-base-1"), 404, 23)


def test_snapshot_validation(api: Wsapi) -> None:
    wsapi_error(api.snapshot("ds_iscsi.daily-1", "x", readOnly=True), 403, 1002)  # RO of RO
    wsapi_error(api.snapshot("ds_iscsi", "ds_iscsi.daily-1"), 409, 22)
    wsapi_error(api.snapshot("nope", "x"), 404, 23)
    wsapi_error(api.snapshot("ds_iscsi", "a" * 32), 400, 57)
    wsapi_error(api.snapshot("ds_iscsi", "-lead"), 400, 69)
    wsapi_error(api.snapshot("ds_iscsi", "sp ace"), 400, 69)
    wsapi_error(api.snapshot("ds_iscsi", "x", comment="c" * 512), 400, 57)
    wsapi_error(api.snapshot("ds_iscsi", "x", expirationHours=0), 400, 43)
    wsapi_error(api.snapshot("ds_iscsi", "x", readOnly="yes"), 400, 39)
    wsapi_error(api.snapshot("ds_iscsi", "x", destCPG="SSD_r6"), 400, 12)
    r = api.call("POST", "/volumes/ds_iscsi", json={"action": "createPhysicalCopy"})
    wsapi_error(r, 400, 12)
    assert api.call("GET", "/volumes/x").status_code == 404


def test_clone_lifecycle_copies_snapshot_content(api: Wsapi, array: RunningArray) -> None:
    base = api.ok("GET", "/volumes/ds_iscsi").json()
    snap = api.ok("GET", "/volumes/ds_iscsi.daily-1").json()
    name = "vmr-" + "a" * 27  # exactly 31 characters
    comment = json.dumps({"by": "test", "src": "ds_iscsi.daily-1"})
    r = api.snapshot(snap["name"], name, readOnly=False, comment=comment, expirationHours=72)
    assert r.status_code == 200 and r.text == ""
    assert r.headers["Location"] == f"/api/v1/volumes/{name}"
    clone = api.ok("GET", f"/volumes/{name}").json()
    assert clone["copyType"] == 3 and clone["readOnly"] is False
    assert clone["copyOf"] == snap["name"] and clone["baseId"] == base["id"]
    assert clone["comment"] == comment and clone["sizeMiB"] == base["sizeMiB"]
    assert clone["wwn"] not in (base["wwn"], snap["wwn"])
    assert clone["expirationTimeSec"] - time.time() == pytest.approx(72 * 3600, abs=120)
    assert api.ok("GET", f"/volumes/{snap['name']}").json()["rwChildId"] == clone["id"]
    state = lab_state(array)
    entry = next(v for v in state["volumes"] if v["name"] == name)
    assert entry["is_copy"] is True and entry["source"] == snap["name"]
    assert entry["comment"] == comment and entry in state["copies"]

    # The clone holds the snapshot's content (gen 1), not the volume's (gen 3), and the VMFS
    # header of the original device: ESXi will see an unresolved copy.
    lun = export(api, array, name, "esx-01-iscsi")
    assert vmx_gen(lun["content_dir"]) == "1"
    header = read_header(lun["content_dir"])
    assert header is not None and header.naa == "naa." + base["wwn"].lower() != lun["naa"]
    (Path(lun["content_dir"]) / "vm-a" / "written-by-esx").write_text("rw")
    snap_dir = export(api, array, snap["name"], "esx-02-iscsi")["content_dir"]
    assert not (Path(snap_dir) / "vm-a" / "written-by-esx").exists()
    unexport(api, snap["name"])

    # A read-only snapshot of the read-write clone is allowed.
    api.ok("POST", f"/volumes/{name}", json=snapshot_body("clone-ro", readOnly=True))

    # Delete refusals, in order: RO child, RW child, export.
    wsapi_error(api.call("DELETE", "/volumes/ds_iscsi"), 409, 25)
    wsapi_error(api.call("DELETE", f"/volumes/{snap['name']}"), 409, 32)
    wsapi_error(api.call("DELETE", f"/volumes/{name}"), 409, 25)
    api.ok("DELETE", "/volumes/clone-ro")
    wsapi_error(api.call("DELETE", f"/volumes/{name}"), 409, 34)
    unexport(api, name)
    api.ok("DELETE", f"/volumes/{name}")
    assert not Path(lun["content_dir"]).exists()
    wsapi_error(api.call("GET", f"/volumes/{name}"), 404, 23)
    assert api.ok("GET", f"/volumes/{snap['name']}").json()["rwChildId"] == 0


def test_retention_blocks_delete(api: Wsapi) -> None:
    api.ok("POST", "/volumes/ds_fc", json=snapshot_body("kept", retentionHours=1))
    assert "retentionTime8601" in api.ok("GET", "/volumes/kept").json()
    r = api.call("DELETE", "/volumes/kept")
    assert r.status_code == 409 and r.json()["code"] == 1001
    r = api.snapshot("ds_fc", "bad-ret", expirationHours=1, retentionHours=2)
    wsapi_error(r, 400, 12)


def test_modify_volume_comment_and_rename(api: Wsapi) -> None:
    api.ok("POST", "/volumes/ds_fc", json=snapshot_body("ren-src"))
    api.ok("POST", "/volumes/ren-src", json=snapshot_body("ren-child", readOnly=True))
    api.ok("PUT", "/volumes/ren-src", json={"comment": "hello", "newName": "ren-dst"})
    v = api.ok("GET", "/volumes/ren-dst").json()
    assert v["comment"] == "hello"
    assert api.ok("GET", "/volumes/ren-child").json()["copyOf"] == "ren-dst"
    wsapi_error(api.call("PUT", "/volumes/ren-dst", json={"newName": "ds_iscsi"}), 409, 22)
    wsapi_error(api.call("PUT", "/volumes/ren-dst", json={"sizeMiB": 1}), 400, 12)
    wsapi_error(api.call("PUT", "/volumes/ren-src", json={"comment": "x"}), 404, 23)
    api.ok("DELETE", "/volumes/ren-child")
    api.ok("DELETE", "/volumes/ren-dst")


def test_object_key_values(api: Wsapi) -> None:
    path = "/volumes/ds_fc/objectKeyValues"
    api.ok("POST", path, 201, json={"key": "vmrestore.job", "value": "job-1"})
    wsapi_error(api.call("POST", path, json={"key": "vmrestore.job", "value": "j2"}), 409, 181)
    api.ok("PUT", path + "/vmrestore.job", json={"value": "job-2"})
    one = api.ok("GET", path + "/vmrestore.job").json()
    assert one["key"] == "vmrestore.job" and one["value"] == "job-2"
    assert "creationTime8601" in one and "creationTimeSec" in one
    assert [m["key"] for m in api.members(path)] == ["vmrestore.job"]
    api.ok("DELETE", path + "/vmrestore.job")
    wsapi_error(api.call("GET", path + "/vmrestore.job"), 404, 180)
    wsapi_error(api.call("PUT", path + "/vmrestore.job", json={"value": "v"}), 404, 180)
    assert api.members(path) == []
    wsapi_error(api.call("GET", "/volumes/nope/objectKeyValues"), 404, 23)
    wsapi_error(api.call("POST", path, json={"key": "k"}), 400, 40)


# ---- hosts ---------------------------------------------------------------------------------

IQN_A = "iqn.1998-01.com.vmware:restore-a"
IQN_B = "iqn.1998-01.com.vmware:restore-b"


def test_host_create_query_modify_delete(api: Wsapi) -> None:
    body = {"name": "rst-a", "iSCSINames": [IQN_A], "persona": 8, "descriptors": {"comment": "t"}}
    r = api.ok("POST", "/hosts", 201, json=body)
    assert r.headers["Location"] == "/api/v1/hosts/rst-a" and r.text == ""
    host = api.ok("GET", "/hosts/rst-a").json()
    assert host["persona"] == 8 and host["descriptors"]["comment"] == "t"
    assert [p["name"] for p in host["iSCSIPaths"]] == [IQN_A] and host["FCPaths"] == []

    wsapi_error(api.call("POST", "/hosts", json={**body, "iSCSINames": [IQN_B]}), 409, 16)
    wsapi_error(api.call("POST", "/hosts", json={**body, "name": "rst-b"}), 409, 73)
    both = {"name": "rst-c", "iSCSINames": [IQN_B], "FCWWNs": ["1000000000000001"]}
    wsapi_error(api.call("POST", "/hosts", json=both), 400, 44)
    wsapi_error(api.call("POST", "/hosts", json={"name": "rst-d", "FCWWNs": ["12:34"]}), 400, 39)
    wsapi_error(api.call("POST", "/hosts", json={"name": "x" * 32}), 400, 57)
    wsapi_error(api.call("POST", "/hosts", json={"name": "rst-e", "persona": 99}), 400, 46)

    fc = {"name": "rst-fc", "FCWWNs": ["10:00:00:00:c9:aa:bb:01", "10000000C9AABB02"], "persona": 8}
    api.ok("POST", "/hosts", 201, json=fc)
    assert [p["wwn"] for p in api.ok("GET", "/hosts/rst-fc").json()["FCPaths"]] == [
        "10000000C9AABB01",
        "10000000C9AABB02",
    ]

    def query(q: str) -> list[str]:
        return sorted(h["name"] for h in api.members("/hosts", query=q))

    assert query(f'"iSCSIPaths[name=={IQN_A}]"') == ["rst-a"]
    assert query(f'"iSCSIPaths[name=={IQN_A.upper()}]"') == ["rst-a"]
    assert query('"FCPaths[wwn==10000000C9AABB02 OR wwn==21000024FF100011]"') == [
        "esx-01",
        "rst-fc",
    ]
    assert query('" FCPaths[wwn EQ 10000000c9aabb01] "') == ["rst-fc"]
    assert query(f'"FCPaths[wwn==10000000C9AABB01] OR iSCSIPaths[name=={IQN_A}]"') == [
        "rst-a",
        "rst-fc",
    ]
    assert query(f'"iSCSIPaths[name=={IQN_B}]"') == []
    for bad in ('"FCPaths[name==x]"', '"persona EQ 8"', '"iSCSIPaths[name==x] AND y"'):
        wsapi_error(api.call("GET", "/hosts", params={"query": bad}), 400, 12)

    api.ok("PUT", "/hosts/rst-a", json={"pathOperation": 1, "iSCSINames": [IQN_B]})
    assert query(f'"iSCSIPaths[name=={IQN_B}]"') == ["rst-a"]
    add_owned = {"pathOperation": 1, "FCWWNs": ["21000024FF100011"]}
    wsapi_error(api.call("PUT", "/hosts/rst-a", json=add_owned), 409, 73)
    wsapi_error(
        api.call("PUT", "/hosts/rst-a", json={"pathOperation": 3, "iSCSINames": [IQN_B]}), 400, 46
    )
    wsapi_error(api.call("PUT", "/hosts/rst-a", json={"iSCSINames": [IQN_B]}), 400, 78)
    remove_missing = {"pathOperation": 2, "iSCSINames": ["iqn.1998-01.com.vmware:none"]}
    wsapi_error(api.call("PUT", "/hosts/rst-a", json=remove_missing), 400, 80)
    api.ok("PUT", "/hosts/rst-a", json={"pathOperation": 2, "iSCSINames": [IQN_B]})
    api.ok("PUT", "/hosts/rst-a", json={"newName": "rst-a2", "persona": 2})
    renamed = api.ok("GET", "/hosts/rst-a2").json()
    assert renamed["persona"] == 2 and [p["name"] for p in renamed["iSCSIPaths"]] == [IQN_A]
    wsapi_error(api.call("GET", "/hosts/rst-a"), 404, 17)
    wsapi_error(api.call("PUT", "/hosts/rst-a", json={"persona": 8}), 404, 17)

    api.ok("DELETE", "/hosts/rst-a2")
    api.ok("DELETE", "/hosts/rst-fc")
    wsapi_error(api.call("DELETE", "/hosts/rst-fc"), 404, 17)


# ---- VLUNs and the fabric ------------------------------------------------------------------


def snapshot_body(name: str, **params: Any) -> dict[str, Any]:
    return {"action": "createSnapshot", "parameters": {"name": name, **params}}


def export(api: Wsapi, array: RunningArray, volume: str, host: str, lun: int | None = None):
    """Export ``volume`` to ``host`` (auto LUN unless given) and return its fabric LUN."""
    body: dict[str, Any] = {"volumeName": volume, "hostname": host}
    body.update({"lun": lun} if lun is not None else {"lun": 0, "autoLun": True, "maxAutoLun": 0})
    r = api.ok("POST", "/vluns", 201, json=body)
    assert r.text == ""
    vol, lun_s, hostname = r.headers["Location"].removeprefix("/api/v1/vluns/").split(",")
    assert (vol, hostname) == (volume, host)
    naa = "naa." + api.ok("GET", f"/volumes/{volume}").json()["wwn"].lower()
    found = lun_of(fabric(array), naa)
    assert found is not None
    assert any(e["lun"] == int(lun_s) for e in found["exports"])
    return found


def unexport(api: Wsapi, volume: str) -> None:
    for v in api.members("/vluns", query=f'"volumeName EQ {volume}"'):
        api.ok("DELETE", f"/vluns/{v['volumeName']},{v['lun']},{v['hostname']}")


def test_vlun_export_shows_in_fabric_and_unexport_removes_it(api: Wsapi, array) -> None:
    api.ok("POST", "/hosts", 201, json={"name": "rst-v", "iSCSINames": [IQN_A], "persona": 8})
    api.ok("POST", "/volumes/ds_iscsi.daily-2", json=snapshot_body("vmr-vlun"))
    clone = api.ok("GET", "/volumes/vmr-vlun").json()
    naa = "naa." + clone["wwn"].lower()
    r = api.ok(
        "POST",
        "/vluns",
        201,
        json={"volumeName": "vmr-vlun", "hostname": "rst-v", "lun": 0, "autoLun": True},
    )
    assert r.headers["Location"] == "/api/v1/vluns/vmr-vlun,0,rst-v"
    [vlun] = api.members("/vluns", query='"volumeName EQ vmr-vlun"')
    assert (vlun["lun"], vlun["hostname"], vlun["volumeWWN"]) == (0, "rst-v", clone["wwn"])
    assert api.members("/vluns", query="hostname==rst-v") == [vlun]
    assert api.members("/vluns/vmr-vlun,0,rst-v") == [vlun]

    lun = lun_of(fabric(array), naa)
    assert lun is not None
    assert lun["exports"] == [{"initiator": IQN_A, "protocol": "iscsi", "lun": 0}]
    assert (lun["vendor"], lun["model"], lun["name"]) == ("3PARdata", "VV", "vmr-vlun")
    assert lun["size_mb"] == 10240 and Path(lun["content_dir"]).is_absolute()
    ports = api.members("/ports")
    assert sorted((t["address"], t["iqn"]) for t in lun["iscsi_targets"]) == sorted(
        (p["IPAddr"], p["iSCSIName"]) for p in ports if p["protocol"] == 2
    )
    assert all(t["port"] == 3260 for t in lun["iscsi_targets"])
    assert sorted(lun["fc_targets"]) == sorted(
        p["portWWN"].lower() for p in ports if p["protocol"] == 1
    )

    # Adding a path to the host makes the LUN visible to it; the same volume twice is refused.
    api.ok("PUT", "/hosts/rst-v", json={"pathOperation": 1, "iSCSINames": [IQN_B]})
    initiators = {e["initiator"] for e in lun_of(fabric(array), naa)["exports"]}
    assert initiators == {IQN_A, IQN_B}
    again = {"volumeName": "vmr-vlun", "hostname": "rst-v", "lun": 5}
    wsapi_error(api.call("POST", "/vluns", json=again), 409, 18)
    taken = {"volumeName": "ds_iscsi.daily-2", "hostname": "rst-v", "lun": 0}
    wsapi_error(api.call("POST", "/vluns", json=taken), 409, 18)
    auto = {"volumeName": "ds_iscsi.daily-2", "hostname": "rst-v", "lun": 0, "autoLun": True}
    assert api.ok("POST", "/vluns", 201, json=auto).headers["Location"].endswith(",1,rst-v")
    wsapi_error(api.call("POST", "/vluns", json={**taken, "hostname": "nope"}), 404, 17)
    wsapi_error(api.call("POST", "/vluns", json={**taken, "volumeName": "nope"}), 404, 23)
    wsapi_error(api.call("POST", "/vluns", json={**taken, "lun": 16384}), 400, 28)
    wsapi_error(api.call("POST", "/vluns", json={"hostname": "rst-v", "lun": 3}), 400, 40)

    # Refusals while exported.
    wsapi_error(api.call("DELETE", "/hosts/rst-v"), 409, 26)
    wsapi_error(api.call("DELETE", "/volumes/vmr-vlun"), 409, 34)
    remove_path = {"pathOperation": 2, "iSCSINames": [IQN_B]}
    wsapi_error(api.call("PUT", "/hosts/rst-v", json=remove_path), 409, 26)
    api.ok("PUT", "/hosts/rst-v", json={**remove_path, "forcePathRemoval": True})
    assert {e["initiator"] for e in lun_of(fabric(array), naa)["exports"]} == {IQN_A}

    api.ok("DELETE", "/vluns/vmr-vlun,0,rst-v")
    wsapi_error(api.call("DELETE", "/vluns/vmr-vlun,0,rst-v"), 404, 19)
    wsapi_error(api.call("GET", "/vluns/vmr-vlun,0,rst-v"), 404, 19)
    wsapi_error(api.call("DELETE", "/vluns/vmr-vlun,x,rst-v"), 400, 39)
    assert lun_of(fabric(array), naa) is None
    api.ok("DELETE", "/vluns/ds_iscsi.daily-2,1,rst-v,0:2:1")  # with a port position
    api.ok("DELETE", "/volumes/vmr-vlun")
    api.ok("DELETE", "/hosts/rst-v")


def test_fabric_push_reaches_vcenter_before_the_call_returns(api: Wsapi, capture: Capture) -> None:
    api.ok(
        "POST", "/hosts", 201, json={"name": "rst-p", "FCWWNs": ["5000000000000001"], "persona": 8}
    )
    api.ok("POST", "/volumes/ds_fc.daily-1", json=snapshot_body("vmr-push"))
    naa = "naa." + api.ok("GET", "/volumes/vmr-push").json()["wwn"].lower()
    before = max((d["generation"] for d in capture.docs), default=0)
    api.ok("POST", "/vluns", 201, json={"volumeName": "vmr-push", "hostname": "rst-p", "lun": 7})
    latest = capture.docs[-1]  # no waiting: the push happened before the response
    assert latest["generation"] > before
    lun = lun_of(latest, naa)
    assert lun is not None
    assert lun["exports"] == [{"initiator": "5000000000000001", "protocol": "fc", "lun": 7}]
    api.ok("DELETE", "/vluns/vmr-push,7,rst-p")
    assert capture.docs[-1]["generation"] > latest["generation"]
    assert lun_of(capture.docs[-1], naa) is None
    api.ok("DELETE", "/volumes/vmr-push")
    api.ok("DELETE", "/hosts/rst-p")


# ---- lab endpoints -------------------------------------------------------------------------


def test_lab_calls_are_counted_by_operation(api: Wsapi, array: RunningArray) -> None:
    array.lab("DELETE", "/lab/calls")
    api.ok("POST", "/volumes/ds_fc.daily-2", json=snapshot_body("vmr-calls"))
    api.ok("GET", "/volumes/vmr-calls")
    api.ok("GET", "/volumes/ds_fc")
    api.ok("DELETE", "/volumes/vmr-calls")
    calls = array.lab("GET", "/lab/calls").json()
    assert calls["POST /api/v1/volumes/{}"] == 1
    assert calls["GET /api/v1/volumes/{}"] == 2
    assert calls["DELETE /api/v1/volumes/{}"] == 1
    assert "POST /api/v1/credentials" not in calls  # the fixture logged in before the reset


def test_lab_faults_answer_in_vendor_format(api: Wsapi, array: RunningArray) -> None:
    r = array.lab(
        "POST", "/lab/faults", json={"operation": "GET /api/v1/volumes", "error": 503, "times": 2}
    )
    assert r.status_code == 201
    for _ in range(2):
        body = wsapi_error(api.call("GET", "/volumes"), 503, 1)
        assert "injected" in body["desc"]
    api.ok("GET", "/volumes")

    array.lab(
        "POST", "/lab/faults", json={"operation": "GET /api/v1/system", "delay_s": 0.6, "times": 1}
    )
    start = time.monotonic()
    api.ok("GET", "/system")
    assert time.monotonic() - start >= 0.6
    start = time.monotonic()
    api.ok("GET", "/system")
    assert time.monotonic() - start < 0.6

    r = array.lab("POST", "/lab/faults", json={"operation": "GET /api/v1/nothing", "error": 500})
    assert r.status_code == 400
    assert array.lab("GET", "/lab/faults").json()["faults"] == []


# ---- persistence ---------------------------------------------------------------------------


def test_state_survives_a_restart(start_array, tmp_path: Path) -> None:
    first = start_array("hpe_primera", name="primera-persist")
    assert (
        first.lab(
            "POST", "/lab/seed", json=seed_spec(tmp_path, "iscsi", "ds_p", vmfs=True)
        ).status_code
        == 201
    )
    w = Wsapi(first)
    w.login()
    w.ok("POST", "/volumes/ds_p.daily-1", json=snapshot_body("vmr-p", comment="kept"))
    w.ok("POST", "/volumes/vmr-p/objectKeyValues", 201, json={"key": "k", "value": "v"})
    w.ok("POST", "/hosts", 201, json={"name": "rst-persist", "iSCSINames": [IQN_A], "persona": 8})
    w.ok("POST", "/vluns", 201, json={"volumeName": "vmr-p", "hostname": "rst-persist", "lun": 3})
    state, fab = lab_state(first), fabric(first)
    volumes = w.members("/volumes")
    stop(first.pid)

    second = start_array("hpe_primera", name="primera-persist")
    assert second.config.state_dir == first.config.state_dir
    assert lab_state(second) == state
    assert fabric(second)["luns"] == fab["luns"]
    w.array = second
    assert w.members("/volumes") == volumes  # same ids, uuids, WWNs and times
    assert w.ok("GET", "/volumes/vmr-p/objectKeyValues/k").json()["value"] == "v"
    clone = next(lun for lun in fab["luns"] if lun["name"] == "vmr-p")
    assert vmx_gen(clone["content_dir"]) == "1"
    assert second.lab("POST", "/lab/seed", json={"hosts": [], "volumes": []}).status_code == 409
