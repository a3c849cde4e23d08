"""Minimal array-side steps for lab tests, over each vendor's REST API with ``requests``.

These are test helpers, not the product's drivers: they do just enough to put a snapshot
copy in front of one host and take it away again, so that the lab vCenter's behaviour can
be tested end to end.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import requests


@dataclass
class Copy:
    """A read-write copy of a snapshot on an array."""

    name: str
    naa: str | None = None  # block copies
    extra: dict[str, Any] = field(default_factory=dict)


class HpeOps:
    """3PAR/Primera WSAPI steps."""

    def __init__(self, array: dict[str, Any], ca_bundle: str):
        self.base = array["url"] + "/api/v1"
        self.http = requests.Session()
        self.http.trust_env = False  # keep REQUESTS_CA_BUNDLE from replacing the lab CA
        self.http.verify = ca_bundle
        r = self.http.post(
            self.base + "/credentials",
            json={"user": array["user"], "password": array["password"]},
            timeout=30,
        )
        r.raise_for_status()
        self.http.headers["X-HP3PAR-WSAPI-SessionKey"] = r.json()["key"]

    def _ok(self, r: requests.Response) -> requests.Response:
        if r.status_code >= 400:
            raise AssertionError(f"{r.request.method} {r.url}: {r.status_code} {r.text}")
        return r

    def snapshot_full_name(self, volume: str, snapshot: str) -> str:
        members = self._ok(
            self.http.get(self.base + "/volumes", params={"query": f'"copyOf EQ {volume}"'})
        ).json()["members"]
        return next(m["name"] for m in members if m["name"] == snapshot)

    def make_copy(self, volume: str, snapshot: str, name: str) -> Copy:
        snap = self.snapshot_full_name(volume, snapshot)
        self._ok(
            self.http.post(
                f"{self.base}/volumes/{quote(snap)}",
                json={
                    "action": "createSnapshot",
                    "parameters": {"name": name, "readOnly": False, "comment": "sr-lab test"},
                },
            )
        )
        vol = self._ok(self.http.get(f"{self.base}/volumes/{quote(name)}")).json()
        return Copy(name=name, naa="naa." + vol["wwn"].lower())

    def _host_for(self, host: dict[str, Any], protocol: str) -> str:
        hosts = self._ok(self.http.get(self.base + "/hosts")).json()["members"]
        for h in hosts:
            if protocol == "iscsi" and any(
                p.get("name", "").lower() == host["iqn"].lower() for p in h.get("iSCSIPaths", [])
            ):
                return h["name"]
            wwns = {w.replace(":", "").lower() for w in host["wwpns"]}
            if protocol == "fc" and any(
                p.get("wwn", "").lower() in wwns for p in h.get("FCPaths", [])
            ):
                return h["name"]
        raise AssertionError(f"no {protocol} host object for {host['name']}")

    def present(self, copy: Copy, host: dict[str, Any], protocol: str) -> int:
        hostname = self._host_for(host, protocol)
        r = self._ok(
            self.http.post(
                self.base + "/vluns",
                json={
                    "volumeName": copy.name,
                    "hostname": hostname,
                    "lun": 0,
                    "autoLun": True,
                    "maxAutoLun": 0,
                },
            )
        )
        location = r.headers["Location"].rsplit("/", 1)[1]
        copy.extra.setdefault("vluns", []).append(location)
        return int(location.split(",")[1])

    def unpresent(self, copy: Copy) -> None:
        for location in copy.extra.pop("vluns", []):
            self._ok(self.http.delete(f"{self.base}/vluns/{quote(location)}"))

    def delete(self, copy: Copy) -> None:
        self._ok(self.http.delete(f"{self.base}/volumes/{quote(copy.name)}"))


class OntapOps:
    """ONTAP REST steps (FlexClone, per-host igroup or export policy)."""

    def __init__(self, array: dict[str, Any], ca_bundle: str, svm: str = "svm1"):
        self.base = array["url"] + "/api"
        self.svm = svm
        self.http = requests.Session()
        self.http.trust_env = False  # keep REQUESTS_CA_BUNDLE from replacing the lab CA
        self.http.verify = ca_bundle
        self.http.auth = (array["user"], array["password"])

    def _ok(self, r: requests.Response) -> requests.Response:
        if r.status_code >= 400:
            raise AssertionError(f"{r.request.method} {r.url}: {r.status_code} {r.text}")
        return r

    def _wait(self, r: requests.Response) -> None:
        self._ok(r)
        if r.status_code != 202:
            return
        uuid = r.json()["job"]["uuid"]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            job = self._ok(self.http.get(f"{self.base}/cluster/jobs/{uuid}")).json()
            if job["state"] == "success":
                return
            if job["state"] == "failure":
                raise AssertionError(f"job failed: {job}")
            time.sleep(0.05)
        raise AssertionError("job did not finish")

    def _records(self, path: str, **params: str) -> list[dict[str, Any]]:
        return self._ok(self.http.get(self.base + path, params=params)).json()["records"]

    def make_copy(self, volume: str, snapshot: str, name: str) -> Copy:
        self._wait(
            self.http.post(
                self.base + "/storage/volumes",
                json={
                    "name": name,
                    "svm": {"name": self.svm},
                    "clone": {
                        "is_flexclone": True,
                        "parent_volume": {"name": volume},
                        "parent_snapshot": {"name": snapshot},
                    },
                    "comment": "sr-lab test",
                },
            )
        )
        vol = self._records("/storage/volumes", name=name, fields="uuid")[0]
        copy = Copy(name=name, extra={"uuid": vol["uuid"]})
        luns = self._records(
            "/storage/luns", **{"location.volume.name": name, "fields": "uuid,name,serial_number"}
        )
        if luns:
            serial = luns[0]["serial_number"]
            copy.naa = "naa.600a0980" + serial.encode("ascii").hex()
            copy.extra["lun"] = luns[0]["name"]
        return copy

    def present(self, copy: Copy, host: dict[str, Any], protocol: str) -> int:
        assert protocol == "iscsi"
        igroup = f"sr_{host['name'].replace('-', '_')}"
        if not self._records("/protocols/san/igroups", name=igroup):
            self._ok(
                self.http.post(
                    self.base + "/protocols/san/igroups",
                    json={
                        "svm": {"name": self.svm},
                        "name": igroup,
                        "protocol": "iscsi",
                        "os_type": "vmware",
                        # gone with its last map, as snaprestore's own igroups: a left-over
                        # igroup of the host would be reused by later restores
                        "delete_on_unmap": True,
                        "initiators": [{"name": host["iqn"]}],
                    },
                )
            )
        r = self._ok(
            self.http.post(
                self.base + "/protocols/san/lun-maps",
                params={"return_records": "true"},
                json={
                    "svm": {"name": self.svm},
                    "lun": {"name": copy.extra["lun"]},
                    "igroup": {"name": igroup},
                },
            )
        )
        copy.extra["igroup"] = igroup
        return int(r.json()["records"][0]["logical_unit_number"])

    def unpresent(self, copy: Copy) -> None:
        igroup = copy.extra.pop("igroup", None)
        if igroup:
            maps = self._records(
                "/protocols/san/lun-maps",
                **{"lun.name": copy.extra["lun"], "igroup.name": igroup, "fields": "lun,igroup"},
            )
            for m in maps:
                self._ok(
                    self.http.delete(
                        f"{self.base}/protocols/san/lun-maps/{m['lun']['uuid']}/{m['igroup']['uuid']}"
                    )
                )
        if copy.extra.get("policy"):
            # withdraw the export: take the clone out of the namespace
            self._wait(
                self.http.patch(
                    f"{self.base}/storage/volumes/{copy.extra['uuid']}",
                    json={"nas": {"path": ""}},
                )
            )

    def present_nfs(self, copy: Copy, host: dict[str, Any], root: bool = True) -> tuple[str, str]:
        policy = copy.name
        r = self._ok(
            self.http.post(
                self.base + "/protocols/nfs/export-policies",
                params={"return_records": "true"},
                json={"name": policy, "svm": {"name": self.svm}},
            )
        )
        policy_id = r.json()["records"][0]["id"]
        self._ok(
            self.http.post(
                f"{self.base}/protocols/nfs/export-policies/{policy_id}/rules",
                json={
                    "clients": [{"match": host["vmk_ip"]}],
                    "protocols": ["nfs3"],
                    "ro_rule": ["sys"],
                    "rw_rule": ["sys"],
                    "superuser": ["sys"] if root else ["none"],
                },
            )
        )
        path = f"/{copy.name}"
        self._wait(
            self.http.patch(
                f"{self.base}/storage/volumes/{copy.extra['uuid']}",
                json={"nas": {"path": path, "export_policy": {"name": policy}}},
            )
        )
        copy.extra["policy"] = policy
        lif = self._records("/network/ip/interfaces", services="data_nfs", fields="ip.address")[0]
        return lif["ip"]["address"], path

    def delete(self, copy: Copy) -> None:
        self._wait(self.http.delete(f"{self.base}/storage/volumes/{copy.extra['uuid']}"))
        policy = copy.extra.pop("policy", None)
        if policy:
            for p in self._records("/protocols/nfs/export-policies", name=policy, fields="id"):
                self._ok(self.http.delete(f"{self.base}/protocols/nfs/export-policies/{p['id']}"))


def ops_for(lab: dict[str, Any], array_name: str) -> HpeOps | OntapOps:
    """Return the test helper for the lab array ``array_name``."""
    array = next(a for a in lab["arrays"] if a["name"] == array_name)
    if array["vendor"] == "hpe_primera":
        return HpeOps(array, lab["ca_bundle"])
    return OntapOps(array, lab["ca_bundle"])
