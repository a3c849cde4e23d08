"""NetApp ONTAP driver: the array contract over the ONTAP REST API (ONTAP 9.8 or later).

Objects on the cluster and how snaprestore uses them (everything is scoped to one SVM):

- a VMFS datastore's device is a LUN; its ESXi name is ``naa.600a0980`` followed by the hex
  of the LUN's ASCII ``serial_number``. An NFS datastore is a volume mounted in the SVM's
  namespace at a junction path (``nas.path``) and reached through a ``data_nfs`` LIF;
- snapshots are the volume's Snapshot copies (``/storage/volumes/{uuid}/snapshots``);
- a restore copy is a FlexClone volume of one snapshot, named ``sr_…`` (volume names allow
  letters, digits and ``_`` only), whose ``comment`` is snaprestore's tag
  (``CopyTag.encode()``). It is created without a junction path, so it is exported to no
  one until :meth:`NetAppOntapArray.present` mounts it with its own export policy;
- the LUNs inside a FlexClone are new LUNs with their own serial numbers: the copy's NAA id
  is always read back from the clone, never derived from the parent's;
- SAN access is an igroup holding exactly one host's initiators (``sr_<host>``, tagged in
  ``comment``, ``delete_on_unmap`` so ONTAP removes it with its last LUN map) and a LUN map;
  NFS access is an export policy named after the copy with one rule per VMkernel IP.

Volume create/modify/delete calls answer ``202`` with a job, polled on
``/api/cluster/jobs/{uuid}``; collections are followed through ``_links.next``.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import re
import socket
import time
from datetime import datetime
from typing import Any, ClassVar
from urllib.parse import urlsplit

import requests
from pydantic import Field
from requests.auth import HTTPBasicAuth

from blocks.arrays import TRANSIENT_STATUS, RestClient, StorageArray, resource_lock
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
    AccessObject,
    ArrayInfo,
    ArraySnapshot,
    ArrayVolume,
    Backing,
    CopyTag,
    HostIdentity,
    IscsiPortal,
    Presentation,
    Protocol,
    SnapshotCopy,
    VmfsBacking,
)

NAA_PREFIX = "naa.600a0980"  # NetApp's NAA registered-extended prefix (IEEE OUI 00a098)
ISCSI_PORT = 3260  # ONTAP does not let the iSCSI port be changed
COPY_PREFIX = "sr_"
IGROUP_COMMENT_MAX = 254
VOLUME_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,202}$")

# ONTAP error codes: the common ones (1 duplicate, 4 not found) and the SAN "does not exist"
# codes of the LUN-map and igroup endpoints (5374922 = the LUN map is already gone).
CODE_DUPLICATE = "1"
NOT_FOUND_CODES = frozenset({"4", "5374852", "5374875", "5374878", "5374922"})
# Characters that ONTAP's query syntax reads as operators (wildcard, or, not, ranges).
QUERY_OPERATORS = re.compile(r"[*|!<>]|\.\.")

COPY_FIELDS = (
    "uuid,name,comment,nas.path,nas.export_policy.name,clone.is_flexclone,"
    "clone.parent_volume.name,clone.parent_snapshot.name"
)
LIF_FIELDS = "uuid,name,ip.address,services,enabled,state,svm.name"


# ---- errors ---------------------------------------------------------------------------------


def error_class(status: int | None, code: str | None, message: str) -> type[ArrayError]:
    """Return the typed error for an ONTAP failure (HTTP ``status`` None for a failed job)."""
    if status in (401, 403):
        return ArrayAuthError
    if "temporarily locked" in message.lower() or status in TRANSIENT_STATUS:
        return ArrayTransientError
    if status == 404 or code in NOT_FOUND_CODES:
        return ArrayNotFound
    if status == 409 or code == CODE_DUPLICATE:
        return ArrayConflict
    return ArrayError


def _hint(cls: type[ArrayError], status: int | None) -> str:
    if status == 401:
        return "ONTAP rejected the credentials: check the block's user and password"
    if status == 403:
        return (
            "the ONTAP user may not make this call: give its role access to this API "
            "(snaprestore needs volumes, snapshots, LUNs, igroups, LUN maps, export policies, "
            "network interfaces and jobs)"
        )
    return {
        ArrayTransientError: "the array is busy or unreachable; the call can be retried",
        ArrayNotFound: "the object does not exist (or no longer exists) on the array",
        ArrayConflict: "the object already exists or is in use",
    }.get(cls, "")


def _describe_error(status: int | None, code: str | None, message: str) -> str:
    cls = error_class(status, code, message)
    parts = [f"HTTP {status}" if status is not None else "", f"ONTAP code {code}" if code else ""]
    head = ", ".join(p for p in parts if p)
    hint = _hint(cls, status)
    return f"{head}: {message}" + (f" ({hint})" if hint else "")


def http_error(array: str, response: requests.Response) -> ArrayError:
    """Return the typed error for an ONTAP error response (body ``{"error": {...}}``)."""
    message, code = _error_body(response)
    status = response.status_code
    request = response.request
    where = f"{request.method} {urlsplit(request.url or '').path}"
    cls = error_class(status, code, message)
    text = f"{where}: {_describe_error(status, code, message)}"
    return cls(text, array=array, status=status, code=code)


def _error_body(response: requests.Response) -> tuple[str, str | None]:
    try:
        err = response.json().get("error") or {}
    except (ValueError, AttributeError):
        err = {}
    message = str(err.get("message") or response.reason or response.text[:200] or "error")
    code = err.get("code")
    return message, (str(code) if code not in (None, "") else None)


def job_error(array: str, job: dict[str, Any]) -> ArrayError:
    """Return the typed error for a job that ended in ``failure``."""
    err = job.get("error") or {}
    message = str(job.get("message") or err.get("message") or "the job failed")
    raw = err.get("code") if err.get("code") not in (None, "") else job.get("code")
    code = str(raw) if raw not in (None, "", 0) else None
    cls = error_class(None, code, message)
    what = job.get("description") or f"job {job.get('uuid', '')}"
    return cls(f"{what}: {_describe_error(None, code, message)}", array=array, code=code)


# ---- names and identifiers --------------------------------------------------------------------


def naa_of(serial: str) -> str:
    """Return the ESXi device name of a LUN with ``serial``."""
    return NAA_PREFIX + serial.encode("ascii").hex()


def serial_of(naa: str) -> str | None:
    """Return the LUN serial number behind an ONTAP NAA id, or None if it is not one."""
    naa = naa.strip().lower()
    if not naa.startswith(NAA_PREFIX):
        return None
    try:
        serial = bytes.fromhex(naa[len(NAA_PREFIX) :]).decode("ascii")
    except ValueError:
        return None
    return serial if serial and serial.isprintable() else None


def wwpn(value: str) -> str:
    """Return a WWPN the way ONTAP writes initiators: 8 lower-case hex pairs with colons."""
    digits = re.sub(r"[^0-9A-Fa-f]", "", value).lower()
    if len(digits) != 16:
        raise ArrayError(f"{value!r} is not a WWPN (16 hexadecimal digits)")
    return ":".join(digits[i : i + 2] for i in range(0, 16, 2))


def igroup_name(host: str) -> str:
    """Return the name of the igroup snaprestore creates for ``host``."""
    return (COPY_PREFIX + re.sub(r"[^A-Za-z0-9_.\-]", "_", host))[:96]


def _lun_in_volume(lun_name: str) -> str:
    """Return a LUN's path inside its volume: ``/vol/v/q/lun0`` → ``q/lun0``."""
    parts = lun_name.split("/", 3)
    return parts[3] if len(parts) == 4 else lun_name


def _junction_candidates(path: str) -> list[str]:
    """Return ``path`` and its parent directories, longest first (never ``/``)."""
    parts = [p for p in path.split("/") if p]
    return ["/" + "/".join(parts[:n]) for n in range(len(parts), 0, -1)]


def _get(record: dict[str, Any], dotted: str, default: Any = None) -> Any:
    node: Any = record
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def _usable(lif: dict[str, Any]) -> bool:
    return lif.get("enabled", True) is not False and lif.get("state", "up") == "up"


# ---- session ----------------------------------------------------------------------------------


class OntapSession:
    """A connection to one ONTAP cluster: Basic auth, HAL paging, job polling, typed errors.

    ONTAP checks the Basic credentials on every call: there is no session to expire, but a
    call can still be refused ``401`` with credentials the cluster accepted a moment ago (the
    account's password rotated under a running restore and back, an authentication service
    failing over). Such a call is sent once more; a 401 before the credentials were ever
    accepted (a wrong password) fails at once.
    """

    def __init__(
        self, array: str, url: str, user: str, password: str, verify: bool | str, timeout_s: float
    ):
        root = url.rstrip("/")
        root = root.removesuffix("/api")
        self.array = array
        self.rest = RestClient(array, root, verify, timeout_s, lambda r: http_error(array, r))
        self.rest.session.auth = HTTPBasicAuth(user, password)
        self.rest.session.headers.update(
            {"Accept": "application/hal+json, application/json", "User-Agent": "snaprestore"}
        )
        self.svms: dict[str | None, str] = {}  # the block's svm setting → checked SVM name
        self.accepted = False  # the cluster has accepted these credentials once

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """Send one call; a 401 after the credentials were accepted is sent once more."""
        try:
            r = self.rest.request(method, path, **kwargs)
        except ArrayAuthError as exc:
            if exc.status != 401 or not self.accepted:
                raise
            try:  # nothing was done: ONTAP refuses a call before it acts on it
                r = self.rest.request(method, path, **kwargs)
            except ArrayAuthError as again:
                if again.status != 401:
                    raise
                text = str(again).removeprefix(f"{self.array}: ")
                raise ArrayAuthError(
                    f"{text}; refused twice, although the cluster accepted these credentials "
                    "before (was the password changed on the cluster?)",
                    array=self.array,
                    status=again.status,
                    code=again.code,
                ) from again
        self.accepted = True
        return r

    def close(self) -> None:
        """Close the HTTP connections (ONTAP REST has no session to log out of)."""
        self.rest.close()

    def get(self, path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """GET one object (``path`` starts with ``/api``)."""
        return self._json(self.request("GET", path, params=params))

    def records(
        self, path: str, params: dict[str, Any] | None = None, page_size: int | None = None
    ) -> list[dict[str, Any]]:
        """GET a collection, following ``_links.next`` until every record is read."""
        query = dict(params or {})
        if page_size:
            query["max_records"] = page_size
        out: list[dict[str, Any]] = []
        body = self.get(path, query)
        while True:
            out.extend(body.get("records") or [])
            nxt = _get(body, "_links.next.href")
            if not nxt:
                return out
            body = self.get(nxt)

    def first(self, path: str, params: dict[str, Any]) -> dict[str, Any] | None:
        """Return the first record of a collection query, or None."""
        found = self.records(path, params)
        return found[0] if found else None

    def send(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        job_timeout_s: float = 300.0,
    ) -> dict[str, Any]:
        """POST/PATCH/DELETE; when ONTAP answers ``202`` with a job, wait for the job."""
        r = self.request(method, path, json=body, params=params)
        data = self._json(r)
        job = data.get("job")
        if r.status_code == 202 and isinstance(job, dict) and job.get("uuid"):
            self.wait_job(job["uuid"], job_timeout_s)
        return data

    def wait_job(self, uuid: str, timeout_s: float) -> dict[str, Any]:
        """Poll ``/api/cluster/jobs/{uuid}`` until it ends; return it or raise its error.

        Transient failures of the poll itself are tolerated until the deadline; a job still
        running at the deadline raises :class:`ArrayTransientError` (every caller's
        operation is idempotent, so retrying is safe).
        """
        deadline = time.monotonic() + timeout_s
        delay = 0.05
        job: dict[str, Any] = {"uuid": uuid, "state": "unknown"}
        while True:
            try:
                job = self.get(f"/api/cluster/jobs/{uuid}")
            except ArrayTransientError:
                pass  # the poll failed, not the job: ask again
            else:
                if job.get("state") == "success":
                    return job
                if job.get("state") == "failure":
                    raise job_error(self.array, job)
            if time.monotonic() + delay > deadline:
                raise ArrayTransientError(
                    f"job {uuid} ({job.get('description', '')}) is still {job.get('state')} "
                    f"after {timeout_s:g} s; the operation can be retried",
                    array=self.array,
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)

    @staticmethod
    def _json(r: requests.Response) -> dict[str, Any]:
        if not r.content:
            return {}
        try:
            data = r.json()
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}


# ---- the block --------------------------------------------------------------------------------


class NetAppOntapArray(StorageArray):
    """A NetApp ONTAP cluster (AFF, FAS, ASA, ONTAP Select), driven over its REST API.

    snaprestore restores VMs from the Snapshot copies of the volumes behind VMFS (iSCSI/FC
    LUNs) and NFS datastores of one SVM: it clones the snapshot as a FlexClone volume, gives
    one ESXi host access to it (an igroup of that host's initiators, or an export policy for
    its VMkernel IPs), and removes all of it afterwards. It needs ONTAP 9.8 or later, the
    FlexClone licence, and a cluster-scoped user (for example with the ``admin`` role, or a
    REST role that may read the cluster and nodes and manage volumes, LUN maps, igroups and
    export policies of the SVM).
    """

    _block_type_name = "NetApp ONTAP Array"
    _block_type_slug = "netapp-ontap-array"
    vendor: ClassVar[str] = "netapp_ontap"

    url: str = Field(
        description="Cluster management URL, e.g. https://cluster-mgmt.example.com "
        "(snaprestore adds /api)"
    )
    svm: str | None = Field(
        default=None,
        description="The storage VM (vserver) that serves the datastores. Leave empty when "
        "the cluster has a single data SVM.",
    )
    job_timeout_s: float = Field(
        default=300.0,
        gt=0,
        description="How long to wait for a volume job (clone, mount, delete) to finish (s)",
    )

    # ---- session and scope ------------------------------------------------------------------

    def _open_session(self) -> OntapSession:
        return OntapSession(
            array=self.name,
            url=self.url,
            user=self.user,
            password=self.password.get_secret_value(),
            verify=self._verify(),
            timeout_s=self.timeout_s,
        )

    def _api(self) -> OntapSession:
        return self.session()

    def _svm(self) -> str:
        """Return the SVM this block works in (checked once per session)."""
        api = self._api()
        known = api.svms.get(self.svm)
        if known:
            return known
        svms = [s["name"] for s in api.records("/api/svm/svms", {"fields": "name"})]
        if self.svm is None:
            if len(svms) != 1:
                raise ArrayError(
                    f"the cluster has {len(svms)} data SVMs ({', '.join(sorted(svms))}): "
                    "set the block's svm to the one that serves the datastores",
                    array=self.name,
                )
            name = svms[0]
        elif self.svm in svms:
            name = self.svm
        else:
            raise ArrayNotFound(
                f"SVM {self.svm!r} does not exist (SVMs: {', '.join(sorted(svms))}); "
                "correct the block's svm",
                array=self.name,
            )
        api.svms[self.svm] = name
        return name

    def _send(
        self, method: str, path: str, body: dict[str, Any] | None = None, **params: Any
    ) -> dict[str, Any]:
        return self._api().send(
            method, path, body, params or None, job_timeout_s=self.job_timeout_s
        )

    # ---- network: LIFs, iSCSI target, FC ports --------------------------------------------------

    def _lifs(self, service: str) -> list[dict[str, Any]]:
        """Return the SVM's usable IP LIFs that carry ``service`` (data_nfs, data_iscsi)."""
        params = {"svm.name": self._svm(), "services": service, "fields": LIF_FIELDS}
        lifs = self._api().records("/api/network/ip/interfaces", params)
        lifs = [lif for lif in lifs if _usable(lif) and service in (lif.get("services") or [])]
        return sorted(lifs, key=lambda lif: lif.get("name", ""))

    def _iscsi_portals(self) -> list[IscsiPortal]:
        """Return the SVM's iSCSI portals (each data_iscsi LIF, port 3260, the target IQN)."""
        params = {"svm.name": self._svm(), "fields": "target.name,enabled"}
        service = self._api().first("/api/protocols/san/iscsi/services", params)
        if service is None or service.get("enabled") is False:
            return []
        target = _get(service, "target.name")
        if not target:
            return []
        return [
            IscsiPortal(address=lif["ip"]["address"], port=ISCSI_PORT, iqn=target)
            for lif in self._lifs("data_iscsi")
        ]

    def _fc_wwpns(self) -> list[str]:
        """Return the WWPNs of the SVM's usable FC LIFs."""
        params = {"svm.name": self._svm(), "fields": "wwpn,enabled,state"}
        lifs = self._api().records("/api/network/fc/interfaces", params)
        return [lif["wwpn"] for lif in lifs if _usable(lif) and lif.get("wwpn")]

    def _nfs_servers(self) -> list[str]:
        return [lif["ip"]["address"] for lif in self._lifs("data_nfs")]

    def _san_protocols(self) -> list[Protocol]:
        protocols: list[Protocol] = []
        if self._iscsi_portals():
            protocols.append("iscsi")
        if self._fc_wwpns():
            protocols.append("fc")
        return protocols

    # ---- describe -----------------------------------------------------------------------------

    def describe(self) -> ArrayInfo:
        """Return the cluster's name, model, serial, ONTAP version, and how hosts reach the SVM.

        Protocols: ``iscsi`` when the SVM has data_iscsi LIFs and an iSCSI service, ``fc``
        when it has FC LIFs, ``nfs`` when it has data_nfs LIFs.
        """
        api = self._api()
        cluster = api.get("/api/cluster", {"fields": "name,version"})
        nodes = api.records("/api/cluster/nodes", {"fields": "name,serial_number,model"})
        nodes.sort(key=lambda n: n.get("name", ""))
        head = nodes[0] if nodes else {}
        version = cluster.get("version") or {}
        numbers = [version.get(k) for k in ("generation", "major", "minor")]
        portals = self._iscsi_portals()
        wwpns = self._fc_wwpns()
        nfs = self._nfs_servers()
        protocols: list[Protocol] = []
        protocols += ["iscsi"] if portals else []
        protocols += ["fc"] if wwpns else []
        protocols += ["nfs"] if nfs else []
        return ArrayInfo(
            name=cluster.get("name") or self.name,
            vendor=self.vendor,
            model=head.get("model", ""),
            serial=head.get("serial_number", ""),
            version=".".join(str(n) for n in numbers) if None not in numbers else "",
            protocols=protocols,
            iscsi_portals=portals,
            fc_wwpns=wwpns,
            nfs_servers=nfs,
        )

    # ---- volumes and snapshots ----------------------------------------------------------------

    def find_volume(self, backing: Backing) -> ArrayVolume | None:
        """Return the volume behind a VMFS device (by LUN serial) or an NFS export (by LIF
        address and junction path, the longest one that contains the path), or None when the
        backing is not served by this SVM."""
        if isinstance(backing, VmfsBacking):
            return self._find_block_volume(backing.naa)
        return self._find_nfs_volume(backing.server, backing.path)

    def _luns(self, **filters: str) -> list[dict[str, Any]]:
        params = {
            "svm.name": self._svm(),
            "fields": "uuid,name,serial_number,location.volume.name,location.volume.uuid,"
            "status.mapped",
            **filters,
        }
        return self._api().records("/api/storage/luns", params)

    def _luns_by_serial(self, serial: str, **filters: str) -> list[dict[str, Any]]:
        """Return the SVM's LUNs whose serial is exactly ``serial``.

        The serial is sent as a query filter (URL-encoded) unless it holds characters that
        ONTAP's query syntax reads as operators; the answer is re-checked either way.
        """
        if not QUERY_OPERATORS.search(serial):
            filters = {**filters, "serial_number": serial}
        return [lun for lun in self._luns(**filters) if lun.get("serial_number") == serial]

    def _find_block_volume(self, naa: str) -> ArrayVolume | None:
        serial = serial_of(naa)
        if serial is None:
            return None
        luns = self._luns_by_serial(serial)
        if len(luns) > 1:  # unmapped clone LUNs may repeat a serial; a datastore's is mapped
            luns = [lun for lun in luns if _get(lun, "status.mapped")] or luns
        if not luns:
            return None
        if len(luns) > 1:
            names = ", ".join(lun["name"] for lun in luns)
            raise ArrayConflict(f"several LUNs have serial {serial!r}: {names}", array=self.name)
        lun = luns[0]
        return ArrayVolume(
            array=self.name,
            id=lun["location"]["volume"]["uuid"],
            name=lun["location"]["volume"]["name"],
            kind="block",
            naa=naa_of(serial),
            protocols=self._san_protocols(),
        )

    def _find_nfs_volume(self, server: str, path: str) -> ArrayVolume | None:
        addresses = _addresses(server)
        if not addresses:
            return None
        lif = self._api().first(
            "/api/network/ip/interfaces",
            {"ip.address": "|".join(addresses), "fields": "ip.address,svm.name,services"},
        )
        if lif is None or _get(lif, "svm.name") != self._svm():
            return None
        for junction in _junction_candidates(path):
            vol = self._api().first(
                "/api/storage/volumes",
                {"svm.name": self._svm(), "nas.path": junction, "fields": "uuid,name,nas.path"},
            )
            if vol is not None and _get(vol, "nas.path") == junction:
                return ArrayVolume(
                    array=self.name,
                    id=vol["uuid"],
                    name=vol["name"],
                    kind="nfs",
                    nfs_path=junction,
                    protocols=["nfs"],
                )
        return None

    def list_snapshots(self, volume: ArrayVolume) -> list[ArraySnapshot]:
        """Return the volume's Snapshot copies, oldest first (by ``create_time``)."""
        records = self._api().records(
            f"/api/storage/volumes/{volume.id}/snapshots", {"fields": "uuid,name,create_time"}
        )
        snaps = [
            ArraySnapshot(
                array=self.name,
                id=r["uuid"],
                name=r["name"],
                volume=volume.name,
                created=datetime.fromisoformat(r["create_time"]),
            )
            for r in records
        ]
        return sorted(snaps, key=lambda s: (s.created, s.name))

    # ---- copies -------------------------------------------------------------------------------

    def copy_name(self, run: str, key: str) -> str:
        """Return ``sr_<run>_<hash>``: deterministic for (run, key), a valid volume name."""
        digest = hashlib.sha256(f"{run}\x00{key}".encode()).hexdigest()[:12]
        slug = re.sub(r"[^A-Za-z0-9]", "", run)[:8].lower() or "run"
        return f"{COPY_PREFIX}{slug}_{digest}"

    def _volume_named(self, name: str) -> dict[str, Any] | None:
        params = {"svm.name": self._svm(), "name": name, "fields": COPY_FIELDS}
        vol = self._api().first("/api/storage/volumes", params)
        return vol if vol is not None and vol.get("name") == name else None

    def _volume(self, uuid: str) -> dict[str, Any] | None:
        try:
            return self._api().get(f"/api/storage/volumes/{uuid}", {"fields": COPY_FIELDS})
        except ArrayNotFound:
            return None

    def _copy_volume(self, copy: SnapshotCopy) -> dict[str, Any] | None:
        """Return the copy's volume record (by uuid, or by name when the id is unknown)."""
        if copy.id:
            return self._volume(copy.id)
        return self._volume_named(copy.name) if VOLUME_NAME.match(copy.name) else None

    def _clone_lun(
        self, vol_uuid: str, vol_name: str, inner: str | None = None
    ) -> dict[str, Any] | None:
        """Return the LUN of clone ``vol_uuid`` that backs the datastore, or None.

        ``inner`` is the LUN's path inside the parent volume (``lun0``); without it the only
        LUN (or, for a volume holding several, the first by name) is taken.
        """
        luns = sorted(self._luns(**{"location.volume.uuid": vol_uuid}), key=lambda u: u["name"])
        return self._pick_lun(luns, vol_name, inner)

    @staticmethod
    def _pick_lun(
        luns: list[dict[str, Any]], vol_name: str, inner: str | None
    ) -> dict[str, Any] | None:
        if inner is not None:
            wanted = f"/vol/{vol_name}/{inner}"
            luns = [lun for lun in luns if lun["name"] == wanted] or luns
        return luns[0] if luns else None

    def _snapshot_copy(self, vol: dict[str, Any], inner: str | None = None) -> SnapshotCopy:
        luns = sorted(self._luns(**{"location.volume.uuid": vol["uuid"]}), key=lambda u: u["name"])
        lun = self._pick_lun(luns, vol["name"], inner)
        return SnapshotCopy(
            array=self.name,
            id=vol["uuid"],
            name=vol["name"],
            naa=naa_of(lun["serial_number"]) if lun else None,
            # a volume may hold several LUNs: the janitor finds every host that sees any
            naas=[naa_of(u["serial_number"]) for u in luns if u.get("serial_number")],
            nfs_path=_get(vol, "nas.path") or None,
            source_volume=_get(vol, "clone.parent_volume.name", ""),
            source_snapshot=_get(vol, "clone.parent_snapshot.name", ""),
            tag=CopyTag.decode(vol.get("comment")),
        )

    def _source_lun_path(self, volume: ArrayVolume) -> str | None:
        """Return the path inside ``volume`` of the LUN behind its datastore (``lun0``)."""
        serial = serial_of(volume.naa or "")
        if serial is None:
            return None
        luns = self._luns_by_serial(serial, **{"location.volume.uuid": volume.id})
        return _lun_in_volume(luns[0]["name"]) if luns else None

    def create_copy(
        self, volume: ArrayVolume, snapshot: ArraySnapshot, name: str, tag: CopyTag
    ) -> SnapshotCopy:
        """Create a FlexClone of ``volume`` from ``snapshot``, named ``name``, tagged in its
        comment, not mounted in the namespace (so not exported). For a block volume the
        copy's ``naa`` is read from the clone's own LUN.

        Idempotent on the name: a volume of that name carrying the same run's tag is
        returned; any other volume of that name raises ArrayConflict.
        """
        if not VOLUME_NAME.match(name):
            raise ArrayError(
                f"{name!r} is not a valid ONTAP volume name (letters, digits and _)",
                array=self.name,
            )
        inner = self._source_lun_path(volume) if volume.kind == "block" else None
        existing = self._volume_named(name)
        if existing is None:
            existing = self._create_clone(volume, snapshot, name, tag)
        copy = self._own_copy(existing, name, tag, inner)
        if volume.kind == "block":
            self._check_block_copy(copy, volume)
        return copy

    def _create_clone(
        self, volume: ArrayVolume, snapshot: ArraySnapshot, name: str, tag: CopyTag
    ) -> dict[str, Any]:
        """POST the FlexClone, wait for its job, and return the new volume's record."""
        try:
            self._send(
                "POST", "/api/storage/volumes", self._clone_body(volume, snapshot, name, tag)
            )
        except ArrayConflict:
            vol = self._volume_named(name)  # created meanwhile by a concurrent or retried call
            if vol is None:
                raise
            return vol
        vol = self._volume_named(name)
        if vol is None:
            raise ArrayError(
                f"the FlexClone {name} was created but cannot be found", array=self.name
            )
        return vol

    def _clone_body(
        self, volume: ArrayVolume, snapshot: ArraySnapshot, name: str, tag: CopyTag
    ) -> dict[str, Any]:
        # No nas.path: the clone stays out of the namespace, exported to no one, until
        # present() mounts it with its own export policy.
        return {
            "name": name,
            "svm": {"name": self._svm()},
            "comment": tag.encode(),
            "clone": {
                "is_flexclone": True,
                "parent_volume": {"name": volume.name, "uuid": volume.id},
                "parent_snapshot": {"name": snapshot.name, "uuid": snapshot.id},
            },
        }

    def _own_copy(
        self, vol: dict[str, Any], name: str, tag: CopyTag, inner: str | None
    ) -> SnapshotCopy:
        found = CopyTag.decode(vol.get("comment"))
        if found is None or found.run != tag.run:
            owner = f"restore run {found.run}" if found else "nobody in snaprestore (untagged)"
            raise ArrayConflict(
                f"volume {name} already exists and belongs to {owner}; "
                "it is not this run's copy and was left untouched",
                array=self.name,
            )
        return self._snapshot_copy(vol, inner)

    def _check_block_copy(self, copy: SnapshotCopy, volume: ArrayVolume) -> None:
        if copy.naa is None:
            raise ArrayError(
                f"the FlexClone {copy.name} of block volume {volume.name} holds no LUN",
                array=self.name,
            )
        if copy.naa == volume.naa:
            raise ArrayConflict(
                f"the LUN in FlexClone {copy.name} kept the serial of {volume.name}'s LUN; "
                "presenting it would show ESXi a second path to the production device. "
                "Delete the copy and check the cluster's LUN serial settings.",
                array=self.name,
            )

    def find_copy(self, name: str) -> SnapshotCopy | None:
        """Return the volume named ``name`` as a copy (tagged or not), or None."""
        if not VOLUME_NAME.match(name):
            return None
        vol = self._volume_named(name)
        return self._snapshot_copy(vol) if vol is not None else None

    def list_copies(self) -> list[SnapshotCopy]:
        """Return every FlexClone of the SVM whose comment is snaprestore's tag."""
        params = {"svm.name": self._svm(), "clone.is_flexclone": "true", "fields": COPY_FIELDS}
        vols = self._api().records("/api/storage/volumes", params)
        ours = [v for v in vols if CopyTag.decode(v.get("comment")) is not None]
        return [self._snapshot_copy(v) for v in sorted(ours, key=lambda v: v["name"])]

    # ---- presentation -------------------------------------------------------------------------

    def present(self, copy: SnapshotCopy, host: HostIdentity, protocol: Protocol) -> Presentation:
        """Give ``host`` alone access to ``copy``; idempotent.

        iSCSI/FC: map the copy's LUN to an igroup holding exactly this host's initiators (an
        existing one, or ``sr_<host>`` created with ``delete_on_unmap``) and return the LUN
        number with the target portals or WWPNs. NFS: export policy ``<copy name>`` with a
        rule per VMkernel IP (read-write, root), then mount the clone at ``/<copy name>``
        with that policy; return a data_nfs LIF address and the path.
        """
        if protocol not in ("iscsi", "fc", "nfs"):
            raise ArrayUnsupported(
                f"protocol {protocol!r} is not one ONTAP serves (iscsi, fc, nfs)", array=self.name
            )
        with resource_lock(self.url, self._svm(), "host", host.name):
            if protocol == "nfs":
                return self._present_nfs(copy, host)
            return self._present_san(copy, host, protocol)

    def unpresent(self, copy: SnapshotCopy, host: HostIdentity, protocol: Protocol) -> None:
        """Withdraw what :meth:`present` gave ``host``; nothing to withdraw is fine.

        iSCSI/FC: delete the LUN maps of the copy's LUN to igroups holding this host's
        initiators. NFS: delete this host's rules from the copy's export policy and unmount
        the clone (``nas.path`` "") once no rule is left; the policy itself goes with the copy.
        """
        if protocol not in ("iscsi", "fc", "nfs"):
            raise ArrayUnsupported(
                f"protocol {protocol!r} is not one ONTAP serves (iscsi, fc, nfs)", array=self.name
            )
        with resource_lock(self.url, self._svm(), "host", host.name):
            if protocol == "nfs":
                self._unpresent_nfs(copy, host)
            else:
                self._unpresent_san(copy, host, protocol)

    # ---- SAN ----------------------------------------------------------------------------------

    @staticmethod
    def _initiators(host: HostIdentity, protocol: Protocol) -> list[str]:
        if protocol == "iscsi":
            return [i.strip() for i in host.iqns if i.strip()]
        return [wwpn(w) for w in host.wwpns]

    def _copy_lun(self, copy: SnapshotCopy) -> dict[str, Any] | None:
        """Return the copy's LUN (the one whose NAA is ``copy.naa``), or None."""
        vol = self._copy_volume(copy)
        if vol is None:
            return None
        serial = serial_of(copy.naa or "")
        if serial is not None:
            luns = self._luns_by_serial(serial, **{"location.volume.uuid": vol["uuid"]})
            return luns[0] if luns else None
        return self._clone_lun(vol["uuid"], vol["name"])

    def _present_san(
        self, copy: SnapshotCopy, host: HostIdentity, protocol: Protocol
    ) -> Presentation:
        initiators = self._initiators(host, protocol)
        if not initiators:
            raise ArrayError(
                f"host {host.name} has no {'IQN' if protocol == 'iscsi' else 'WWPN'}",
                array=self.name,
            )
        portals = self._iscsi_portals() if protocol == "iscsi" else []
        wwpns = self._fc_wwpns() if protocol == "fc" else []
        if not portals and not wwpns:
            raise ArrayUnsupported(
                f"SVM {self._svm()} serves no {protocol} (no LIF or no target service)",
                array=self.name,
            )
        lun = self._copy_lun(copy)
        if lun is None:
            raise ArrayNotFound(
                f"copy {copy.name} has no LUN {copy.naa or ''} (is it an NFS copy, or deleted?)",
                array=self.name,
            )
        number, group = self._map_to_host(lun, host, protocol, initiators, copy.tag)
        return Presentation(
            protocol=protocol,
            lun=number,
            iscsi_targets=portals,
            fc_targets=wwpns,
            access=group["name"],
        )

    def _map_to_host(
        self,
        lun: dict[str, Any],
        host: HostIdentity,
        protocol: Protocol,
        initiators: list[str],
        tag: CopyTag | None,
    ) -> tuple[int, dict[str, Any]]:
        """Map ``lun`` to the host's igroup; return the LUN number and the igroup. One retry
        covers an igroup deleted between lookup and map (``delete_on_unmap``, or another
        run's cleanup)."""
        group = self._host_igroup(host, protocol, initiators, tag)
        try:
            return self._map_lun(lun, group), group
        except ArrayNotFound:
            group = self._host_igroup(host, protocol, initiators, tag)
            return self._map_lun(lun, group), group

    def _igroups_with(self, initiator: str) -> list[dict[str, Any]]:
        params = {
            "svm.name": self._svm(),
            "initiators.name": initiator,
            "fields": "uuid,name,protocol,os_type,comment,initiators.name",
        }
        return self._api().records("/api/protocols/san/igroups", params)

    def _find_host_igroup(self, protocol: Protocol, initiators: list[str]) -> dict[str, Any] | None:
        """Return an igroup whose initiators are exactly ``initiators`` (for VMware, this
        protocol), preferring one snaprestore created."""
        wanted = {i.lower() for i in initiators}
        kind = "iscsi" if protocol == "iscsi" else "fcp"
        found = [
            g
            for g in self._igroups_with(initiators[0])
            if {i["name"].lower() for i in g.get("initiators") or []} == wanted
            and g.get("protocol") in (kind, "mixed")
            and g.get("os_type") == "vmware"
        ]
        found.sort(key=lambda g: (not g["name"].startswith(COPY_PREFIX), g["name"]))
        return found[0] if found else None

    def _host_igroup(
        self, host: HostIdentity, protocol: Protocol, initiators: list[str], tag: CopyTag | None
    ) -> dict[str, Any]:
        group = self._find_host_igroup(protocol, initiators)
        if group is not None:
            return group
        name = igroup_name(host.name)
        # no source: igroup comments are short (254 characters); the server when it fits
        mark = CopyTag(run=tag.run if tag else "untagged", server=tag.server if tag else "")
        if len(mark.encode()) > IGROUP_COMMENT_MAX:
            mark = mark.model_copy(update={"server": ""})
        body = {
            "svm": {"name": self._svm()},
            "name": name,
            "os_type": "vmware",
            "protocol": "iscsi" if protocol == "iscsi" else "fcp",
            "comment": mark.encode(),
            "delete_on_unmap": True,
            "initiators": [{"name": i} for i in initiators],
        }
        try:
            self._send("POST", "/api/protocols/san/igroups", body)
        except ArrayConflict as exc:
            group = self._find_host_igroup(protocol, initiators)  # made meanwhile: reuse it
            if group is None:
                raise ArrayConflict(
                    f"cannot create igroup {name} for {host.name}: {exc}. An igroup of that name "
                    "with other initiators exists, or an initiator belongs to another igroup; "
                    "check the host's igroups",
                    array=self.name,
                ) from exc
            return group
        group = self._find_host_igroup(protocol, initiators)
        if group is None:
            raise ArrayError(f"igroup {name} was created but cannot be found", array=self.name)
        return group

    def _map_lun(self, lun: dict[str, Any], group: dict[str, Any]) -> int:
        """Map ``lun`` to igroup ``group`` (or find the existing map); return the LUN number."""
        existing = self._lun_map(lun["uuid"], group["uuid"])
        if existing is not None:
            return int(existing["logical_unit_number"])
        body = {
            "svm": {"name": self._svm()},
            "lun": {"uuid": lun["uuid"]},
            "igroup": {"uuid": group["uuid"]},
        }
        try:
            data = self._send("POST", "/api/protocols/san/lun-maps", body, return_records="true")
        except ArrayConflict:
            existing = self._lun_map(lun["uuid"], group["uuid"])
            if existing is None:
                raise
            return int(existing["logical_unit_number"])
        records = data.get("records") or []
        if records and "logical_unit_number" in records[0]:
            return int(records[0]["logical_unit_number"])
        existing = self._lun_map(lun["uuid"], group["uuid"])
        if existing is None:
            raise ArrayError(f"the map of {lun['name']} cannot be found", array=self.name)
        return int(existing["logical_unit_number"])

    def _lun_map(self, lun_uuid: str, igroup_uuid: str) -> dict[str, Any] | None:
        params = {
            "svm.name": self._svm(),
            "lun.uuid": lun_uuid,
            "igroup.uuid": igroup_uuid,
            "fields": "logical_unit_number",
        }
        return self._api().first("/api/protocols/san/lun-maps", params)

    def _lun_maps(self, lun_uuid: str) -> list[dict[str, Any]]:
        params = {
            "svm.name": self._svm(),
            "lun.uuid": lun_uuid,
            "fields": "logical_unit_number,igroup.name,igroup.uuid,igroup.initiators",
        }
        return self._api().records("/api/protocols/san/lun-maps", params)

    def _unmap(self, lun_uuid: str, igroup_uuid: str) -> None:
        with contextlib.suppress(ArrayNotFound):  # 5374922: the map is already gone
            self._send("DELETE", f"/api/protocols/san/lun-maps/{lun_uuid}/{igroup_uuid}")

    def _unpresent_san(self, copy: SnapshotCopy, host: HostIdentity, protocol: Protocol) -> None:
        lun = self._copy_lun(copy)
        if lun is None:
            return
        mine = {i.lower() for i in self._initiators(host, protocol)}
        for m in self._lun_maps(lun["uuid"]):
            names = {_initiator_name(i).lower() for i in _get(m, "igroup.initiators") or []}
            if names & mine:
                self._unmap(lun["uuid"], m["igroup"]["uuid"])

    # ---- NFS ----------------------------------------------------------------------------------

    def _present_nfs(self, copy: SnapshotCopy, host: HostIdentity) -> Presentation:
        if not host.vmk_ips:
            raise ArrayError(f"host {host.name} has no VMkernel IP for NFS", array=self.name)
        servers = self._nfs_servers()
        if not servers:
            raise ArrayUnsupported(f"SVM {self._svm()} has no data_nfs LIF", array=self.name)
        if copy.naa:
            raise ArrayUnsupported(
                f"copy {copy.name} is a block copy (LUN {copy.naa}); present it over iSCSI or FC",
                array=self.name,
            )
        vol = self._copy_volume(copy)
        if vol is None:
            raise ArrayNotFound(f"copy {copy.name} does not exist", array=self.name)
        policy = self._export_policy(vol["name"], create=True)
        if policy is None:
            raise ArrayError(f"export policy {vol['name']} cannot be created", array=self.name)
        self._allow_clients(policy, host.vmk_ips)
        path = "/" + vol["name"]
        if _get(vol, "nas.path") != path or _get(vol, "nas.export_policy.name") != vol["name"]:
            body = {"nas": {"path": path, "export_policy": {"name": vol["name"]}}}
            self._send("PATCH", f"/api/storage/volumes/{vol['uuid']}", body)
        return Presentation(
            protocol="nfs", nfs_server=servers[0], nfs_path=path, access=vol["name"]
        )

    def _export_policy(self, name: str, create: bool = False) -> dict[str, Any] | None:
        """Return export policy ``name`` with its rules (creating it if asked), or None."""
        params = {"svm.name": self._svm(), "name": name, "fields": "id,name"}
        policy = self._api().first("/api/protocols/nfs/export-policies", params)
        if policy is None and create:
            body = {"svm": {"name": self._svm()}, "name": name}
            with contextlib.suppress(ArrayConflict):  # created meanwhile
                self._send("POST", "/api/protocols/nfs/export-policies", body)
            policy = self._api().first("/api/protocols/nfs/export-policies", params)
        if policy is None or policy.get("name") != name:
            return None
        rules = self._api().records(
            f"/api/protocols/nfs/export-policies/{policy['id']}/rules",
            {"fields": "index,clients,protocols,ro_rule,rw_rule,superuser"},
        )
        return {**policy, "rules": rules}

    def _allow_clients(self, policy: dict[str, Any], ips: list[str]) -> None:
        """Make ``policy`` grant each of ``ips`` NFSv3 read-write root access (sys)."""
        rules_path = f"/api/protocols/nfs/export-policies/{policy['id']}/rules"
        for ip in ips:
            rule = next((r for r in policy["rules"] if ip in _clients(r)), None)
            if rule is None:
                self._send("POST", rules_path, {"clients": [{"match": ip}], **ROOT_RW_RULE})
            elif not _grants_root_rw(rule):
                self._send("PATCH", f"{rules_path}/{rule['index']}", ROOT_RW_RULE)

    def _unpresent_nfs(self, copy: SnapshotCopy, host: HostIdentity) -> None:
        vol = self._copy_volume(copy)
        if vol is None:
            return
        policy = self._export_policy(vol["name"])
        remaining = 0
        if policy is not None:
            rules_path = f"/api/protocols/nfs/export-policies/{policy['id']}/rules"
            mine = set(host.vmk_ips)
            for rule in policy["rules"]:
                clients = _clients(rule)
                if not clients & mine:
                    remaining += 1
                elif clients <= mine:
                    with contextlib.suppress(ArrayNotFound):
                        self._send("DELETE", f"{rules_path}/{rule['index']}")
                else:
                    rest = [{"match": c} for c in sorted(clients - mine)]
                    self._send("PATCH", f"{rules_path}/{rule['index']}", {"clients": rest})
                    remaining += 1
        if remaining == 0 and _get(vol, "nas.path"):
            self._unmount(vol["uuid"])

    def _unmount(self, vol_uuid: str) -> None:
        with contextlib.suppress(ArrayNotFound):
            self._send("PATCH", f"/api/storage/volumes/{vol_uuid}", {"nas": {"path": ""}})

    # ---- withdraw everywhere, access objects -----------------------------------------------

    def unpresent_all(self, copy: SnapshotCopy) -> None:
        """Withdraw ``copy`` from every host: delete every LUN map of its LUNs, then its
        export: the clone leaves the namespace (``nas.path`` "") with the ``default`` policy,
        and its own export policy is deleted; then the empty ``sr_`` igroups of its run.
        A copy that is gone is fine. Call it once every host unmounted and detached it."""
        vol = self._copy_volume(copy)
        run = copy.tag.run if copy.tag else None
        if vol is not None:
            for lun in self._luns(**{"location.volume.uuid": vol["uuid"]}):
                for m in self._lun_maps(lun["uuid"]):
                    self._unmap(lun["uuid"], m["igroup"]["uuid"])
            self._withdraw_export(vol)
            found = CopyTag.decode(vol.get("comment"))
            run = found.run if found else run
        self._delete_policy(copy.name)
        if run is not None:
            self._delete_empty_igroups(run)

    def _withdraw_export(self, vol: dict[str, Any]) -> None:
        """Take the volume out of the namespace and give it the ``default`` policy again,
        so that its own policy can be deleted (ONTAP refuses to delete a policy in use)."""
        own = _get(vol, "nas.export_policy.name") == vol["name"]
        if not _get(vol, "nas.path") and not own:
            return
        body: dict[str, Any] = {"nas": {"path": ""}}
        if own:
            body["nas"]["export_policy"] = {"name": "default"}
        with contextlib.suppress(ArrayNotFound):
            self._send("PATCH", f"/api/storage/volumes/{vol['uuid']}", body)

    def list_access(self) -> list[AccessObject]:
        """Return the ``sr_`` igroups whose comment is snaprestore's tag, each with whether a
        LUN is still mapped to it (export policies carry no tag: a copy's policy is always
        deleted before the copy, so none outlives it)."""
        params = {"svm.name": self._svm(), "fields": "uuid,name,comment"}
        out = []
        for group in self._api().records("/api/protocols/san/igroups", params):
            tag = CopyTag.decode(group.get("comment"))
            if not group["name"].startswith(COPY_PREFIX) or tag is None:
                continue
            maps = self._api().records(
                "/api/protocols/san/lun-maps",
                {"svm.name": self._svm(), "igroup.uuid": group["uuid"]},
            )
            out.append(
                AccessObject(
                    array=self.name,
                    kind="igroup",
                    id=group["uuid"],
                    name=group["name"],
                    tag=tag,
                    in_use=bool(maps),
                )
            )
        return out

    def remove_access(self, access: AccessObject) -> None:
        """Delete igroup ``access`` if it is ours and no LUN is mapped to it; gone is fine."""
        params = {"svm.name": self._svm(), "uuid": access.id, "fields": "uuid,name,comment"}
        group = self._api().first("/api/protocols/san/igroups", params)
        if group is None:
            return
        ours = CopyTag.decode(group.get("comment")) is not None
        if not group["name"].startswith(COPY_PREFIX) or not ours:
            raise NotOurs(
                f"igroup {group['name']} does not carry snaprestore's tag; left untouched",
                array=self.name,
            )
        maps = self._api().records(
            "/api/protocols/san/lun-maps", {"svm.name": self._svm(), "igroup.uuid": group["uuid"]}
        )
        if maps:
            raise ArrayConflict(
                f"igroup {group['name']} still has LUN maps; not removing it", array=self.name
            )
        with contextlib.suppress(ArrayNotFound):
            self._send("DELETE", f"/api/protocols/san/igroups/{group['uuid']}")

    # ---- delete -------------------------------------------------------------------------------

    def delete_copy(self, copy: SnapshotCopy) -> None:
        """Delete the copy's FlexClone and what was made for it; a copy already gone is fine.

        Refuses (NotOurs, nothing deleted) unless the volume's comment is snaprestore's tag;
        refuses (ArrayConflict) when the tag names another run than ``copy.tag``. Order: LUN
        maps, the export withdrawn and the copy's export policy deleted (never left behind
        without the tagged volume), the volume (job), then the empty ``sr_`` igroups tagged
        with the same run.
        """
        vol = self._copy_volume(copy)
        run = copy.tag.run if copy.tag else None
        if vol is not None:
            found = CopyTag.decode(vol.get("comment"))
            if found is None:
                raise NotOurs(
                    f"volume {vol['name']} does not carry snaprestore's tag; not deleting it",
                    array=self.name,
                )
            if run is not None and found.run != run:
                raise ArrayConflict(
                    f"volume {vol['name']} belongs to restore run {found.run}, not {run}; "
                    "not deleting it",
                    array=self.name,
                )
            run = found.run
            self._delete_volume(vol)
        else:
            self._delete_policy(copy.name)
        if run is not None:
            self._delete_empty_igroups(run)

    def _delete_volume(self, vol: dict[str, Any]) -> None:
        for lun in self._luns(**{"location.volume.uuid": vol["uuid"]}):
            for m in self._lun_maps(lun["uuid"]):
                self._unmap(lun["uuid"], m["igroup"]["uuid"])
        self._withdraw_export(vol)
        self._delete_policy(vol["name"])
        with contextlib.suppress(ArrayNotFound):
            self._send("DELETE", f"/api/storage/volumes/{vol['uuid']}")

    def _delete_policy(self, name: str) -> None:
        if not name.startswith(COPY_PREFIX):
            return
        policy = self._export_policy(name)
        if policy is not None:
            with contextlib.suppress(ArrayNotFound):
                self._send("DELETE", f"/api/protocols/nfs/export-policies/{policy['id']}")

    def _delete_empty_igroups(self, run: str) -> None:
        """Delete the ``sr_`` igroups tagged with ``run`` that no LUN is mapped to."""
        params = {"svm.name": self._svm(), "fields": "uuid,name,comment"}
        for group in self._api().records("/api/protocols/san/igroups", params):
            tag = CopyTag.decode(group.get("comment"))
            if not group["name"].startswith(COPY_PREFIX) or tag is None or tag.run != run:
                continue
            maps = self._api().records(
                "/api/protocols/san/lun-maps",
                {"svm.name": self._svm(), "igroup.uuid": group["uuid"]},
            )
            if maps:
                continue
            # in use again (mapped meanwhile) or already gone: leave it
            with contextlib.suppress(ArrayNotFound, ArrayConflict):
                self._send("DELETE", f"/api/protocols/san/igroups/{group['uuid']}")


# ---- NFS rules and addresses ----------------------------------------------------------------

ROOT_RW_RULE: dict[str, Any] = {
    "protocols": ["nfs3"],
    "ro_rule": ["sys"],
    "rw_rule": ["sys"],
    "superuser": ["sys"],
}


def _clients(rule: dict[str, Any]) -> set[str]:
    return {c.get("match", "") for c in rule.get("clients") or []}


def _grants_root_rw(rule: dict[str, Any]) -> bool:
    def has(field: str, allowed: set[str]) -> bool:
        return bool(allowed & set(rule.get(field) or []))

    return (
        has("protocols", {"nfs3", "nfs", "any"})
        and has("ro_rule", {"sys", "any"})
        and has("rw_rule", {"sys", "any"})
        and has("superuser", {"sys", "any"})
    )


def _initiator_name(item: Any) -> str:
    """Return an initiator's name (lun-map records list names, igroups list objects)."""
    return item.get("name", "") if isinstance(item, dict) else str(item)


def _addresses(server: str) -> list[str]:
    """Return the IP addresses of an NFS server string (an address or a host name)."""
    try:
        return [ipaddress.ip_address(server.strip("[]")).compressed]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(server, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return []
    return sorted({ipaddress.ip_address(info[4][0]).compressed for info in infos})
