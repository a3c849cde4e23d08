"""HPE Primera / 3PAR / Alletra 9000 driver: the array contract over WSAPI v1.

Objects on the array and how snaprestore uses them:

- a datastore's volume is a *base* virtual volume (``copyType`` 1) whose ``wwn`` is the
  ESXi device name without ``naa.`` (upper-case on the array, lower-case in ESXi);
- its snapshots are read-only virtual copies (``copyType`` 3, ``readOnly``, ``copyOf``);
- a restore copy is a read-write virtual copy of one snapshot (``createSnapshot`` with
  ``readOnly: false``), whose ``comment`` carries snaprestore's tag (``CopyTag.encode()``);
- a host is given access through a *host object* (persona 8 = VMware) holding its IQN or
  WWPNs, and a VLUN (volume, LUN, host object). A host object snaprestore had to create is
  named ``sr-<host>`` and tagged in ``descriptors.comment``; it is removed once empty.

Every list is fetched whole and filtered here (``GET /volumes``, ``/hosts``, ``/vluns``):
WSAPI's ``query=`` syntax differs between firmware releases, a full listing does not.
"""

from __future__ import annotations

import hashlib
import re
import threading
from contextlib import suppress
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import quote, unquote

import requests
from pydantic import Field

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

SESSION_HEADER = "X-HP3PAR-WSAPI-SessionKey"
NAME_MAX = 31  # WSAPI "name31": volume, host and key names
COMMENT_MAX = 511
ISCSI_PORT = 3260

# WSAPI enums (python-3parclient constants; WSAPI developer's guide tables 29 and 56)
COPY_BASE, COPY_VIRTUAL = 1, 3
PERSONA_VMWARE = 8
PORT_FC, PORT_ISCSI = 1, 2
PORT_MODE_TARGET, PORT_LINK_READY = 2, 4
PATH_ADD = 1

# WSAPI error codes (developer's guide table 5/6, python-3parclient, cinder's 3PAR driver)
INV_USER_PASS = 5
INV_SESS_KEY = 6
PERM_DENIED = 13
EXISTENT_HOST = 16
NON_EXISTENT_HOST = 17
EXISTENT_LUN = 18
EXISTENT_VOL = 22
EXPORTED_VLUN = 26
EXISTENT_PATH = 73
VV_IN_USE_BUSY = 151  # volume busy with a background task: try again later

BUSY_CODES = frozenset({VV_IN_USE_BUSY})

_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]")


# ---- errors -------------------------------------------------------------------------------


def _error_body(response: requests.Response) -> tuple[int | None, str]:
    """Return WSAPI's ``(code, desc)`` of an error response (desc falls back to the text)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "code" in body:
        code = body.get("code")
        return (code if isinstance(code, int) else None), str(body.get("desc", ""))
    return None, response.text.strip()[:200] or response.reason or ""


def wsapi_error(array: str, response: requests.Response) -> ArrayError:
    """Map a WSAPI error response to snaprestore's typed error, with what to do about it."""
    code, desc = _error_body(response)
    status = response.status_code
    request = response.request
    what = f"{request.method} {request.path_url}" if request is not None else "WSAPI call"
    detail = f"{what}: HTTP {status}" + (f", WSAPI code {code}" if code is not None else "")
    detail += f": {desc}" if desc else ""
    kwargs: dict[str, Any] = {"array": array, "status": status, "code": _code(code)}
    if status in TRANSIENT_STATUS or code in BUSY_CODES:
        return ArrayTransientError(f"{detail} (the array is busy or unavailable; retry)", **kwargs)
    if status == 401 or (status == 403 and code in (INV_USER_PASS, INV_SESS_KEY)):
        return ArrayAuthError(
            f"{detail} (check the block's user and password, and that the account may log in "
            "to the WSAPI)",
            **kwargs,
        )
    if status == 403 and code == PERM_DENIED:
        return ArrayAuthError(f"{detail} (give the block's user the edit role)", **kwargs)
    if status == 404:
        return ArrayNotFound(f"{detail} (it does not exist on the array)", **kwargs)
    if status == 409:
        return ArrayConflict(f"{detail} (the array's state forbids this now)", **kwargs)
    return ArrayError(detail, **kwargs)


def _code(code: int | None) -> str | None:
    return None if code is None else str(code)


def _is_code(exc: ArrayError, code: int) -> bool:
    return exc.code == str(code)


def _session_rejected(exc: ArrayAuthError) -> bool:
    """True when the array refused the session key (not the user): log in again."""
    return exc.status == 401 or _is_code(exc, INV_SESS_KEY)


# ---- session --------------------------------------------------------------------------------


class WsapiSession:
    """A logged-in WSAPI session shared by every thread of the process.

    Requests run concurrently (the array serialises a session's requests itself); only the
    login is serialised. A request the array refuses for an expired or invalid key is sent
    again once after a new login; ``close()`` logs out.
    """

    def __init__(
        self,
        array: str,
        base_url: str,
        user: str,
        password: str,
        verify: bool | str,
        timeout_s: float,
    ):
        self.rest = RestClient(array, base_url, verify, timeout_s, lambda r: wsapi_error(array, r))
        self.rest.session.headers["Accept"] = "application/json"
        self.array = array
        self._user = user
        self._password = password
        self._key: str | None = None
        self._login_lock = threading.Lock()

    @property
    def key(self) -> str | None:
        """The current session key (None before the first call or after ``close()``)."""
        return self._key

    def _login(self, stale: str | None) -> str:
        """Return a valid key: log in unless another thread already replaced ``stale``."""
        with self._login_lock:
            if self._key is not None and self._key != stale:
                return self._key
            r = self.rest.request(
                "POST", "/credentials", json={"user": self._user, "password": self._password}
            )
            self._key = str(r.json()["key"])
            return self._key

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """Send an authenticated request; log in again once if the key was refused."""
        key = self._key or self._login(None)
        try:
            return self.rest.request(method, path, headers={SESSION_HEADER: key}, **kwargs)
        except ArrayAuthError as exc:
            if not _session_rejected(exc):
                raise
        key = self._login(key)
        try:
            return self.rest.request(method, path, headers={SESSION_HEADER: key}, **kwargs)
        except ArrayAuthError as exc:
            if _session_rejected(exc):
                raise ArrayAuthError(
                    f"the array refused a fresh session key too ({exc}); check the user's "
                    "rights and the array's WSAPI session limit",
                    array=self.array,
                    status=exc.status,
                    code=exc.code,
                ) from exc
            raise

    def get(self, path: str) -> Any:
        """GET ``path`` and return its JSON."""
        return self.request("GET", path).json()

    def members(self, path: str) -> list[dict[str, Any]]:
        """GET a WSAPI collection and return its ``members``."""
        return list(self.get(path).get("members") or [])

    def close(self) -> None:
        """Log out (``DELETE /credentials/<key>``) and close the connections."""
        key, self._key = self._key, None
        try:
            if key is not None:
                with suppress(ArrayError):
                    self.rest.request(
                        "DELETE", f"/credentials/{_enc(key)}", headers={SESSION_HEADER: key}
                    )
        finally:
            self.rest.close()


# ---- helpers ---------------------------------------------------------------------------------


def _enc(name: str) -> str:
    return quote(name, safe="")


def _naa(wwn: str) -> str:
    return "naa." + wwn.lower()


def _wwpn(value: str) -> str | None:
    """Return an FC WWN as 16 lower-case hex digits (separators dropped), or None."""
    digits = re.sub(r"[^0-9A-Fa-f]", "", value).lower()
    return digits if len(digits) == 16 else None


def _created(vol: dict[str, Any]) -> datetime:
    text = vol.get("creationTime8601")
    if text:
        with suppress(ValueError):
            moment = datetime.fromisoformat(text)
            return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return datetime.fromtimestamp(int(vol.get("creationTimeSec") or 0), UTC)


def _host_paths(host: dict[str, Any], protocol: Protocol) -> set[str]:
    """Return a WSAPI host's initiators of ``protocol``: lower-case IQNs or 16-hex WWNs."""
    if protocol == "iscsi":
        return {str(p.get("name", "")).lower() for p in host.get("iSCSIPaths") or []}
    return {w for p in host.get("FCPaths") or [] if (w := _wwpn(str(p.get("wwn", ""))))}


def _initiators(host: HostIdentity, protocol: Protocol) -> set[str]:
    if protocol == "iscsi":
        return {i.lower() for i in host.iqns if i}
    return {w for value in host.wwpns if (w := _wwpn(value))}


def _is_ours(host: dict[str, Any]) -> bool:
    return CopyTag.decode((host.get("descriptors") or {}).get("comment")) is not None


def _host_key(host: dict[str, Any]) -> str:
    """The per-process lock key of a host object: the ESXi host its tag names, else its name
    (``present`` locks on the ESXi host's name)."""
    tag = CopyTag.decode((host.get("descriptors") or {}).get("comment"))
    if tag is not None and tag.source.startswith("host:"):
        return tag.source.removeprefix("host:")
    return str(host.get("name", ""))


def _vlun_id(vlun: dict[str, Any]) -> str:
    parts = (str(vlun["volumeName"]), str(vlun["lun"]), str(vlun["hostname"]))
    return ",".join(_enc(p) for p in parts)


class HpePrimeraArray(StorageArray):
    """An HPE Primera, 3PAR StoreServ or Alletra 9000 array, driven through its WSAPI.

    snaprestore restores from the array's read-only snapshots (virtual copies) by making a
    read-write virtual copy, presenting it over iSCSI or FC to one ESXi host, and removing
    both afterwards. Everything it creates is named ``sr-…`` and carries a tag in its
    comment; it never deletes anything without that tag. The user needs the ``edit`` role.
    """

    _block_type_name = "HPE Primera Array"
    _block_type_slug = "hpe-primera-array"
    _description = (
        "An HPE Primera / 3PAR / Alletra 9000 array (WSAPI v1) that snaprestore restores "
        "VMware VMs from."
    )
    vendor: ClassVar[str] = "hpe_primera"

    url: str = Field(
        description="The array's WSAPI address, e.g. https://primera.example:8080 "
        "(snaprestore adds /api/v1)"
    )
    user: str = Field(description="WSAPI user (role edit or higher), e.g. 3paradm")

    # ---- session ----------------------------------------------------------------------------

    def _open_session(self) -> WsapiSession:
        base = self.url.rstrip("/")
        base = base.removesuffix("/api/v1").removesuffix("/api")
        return WsapiSession(
            self.name,
            base + "/api/v1",
            self.user,
            self.password.get_secret_value(),
            self._verify(),
            self.timeout_s,
        )

    def _api(self) -> WsapiSession:
        session: WsapiSession = self.session()
        return session

    def _volumes(self) -> list[dict[str, Any]]:
        return self._api().members("/volumes")

    def _volume(self, name: str) -> dict[str, Any] | None:
        try:
            return self._api().get(f"/volumes/{_enc(name)}")
        except ArrayNotFound:
            return None

    def _ports(self) -> tuple[list[IscsiPortal], list[str]]:
        """Return the ready target ports: iSCSI portals and FC WWPNs (16 lower-case hex)."""
        portals: list[IscsiPortal] = []
        wwpns: list[str] = []
        for p in self._api().members("/ports"):
            if p.get("mode") != PORT_MODE_TARGET or p.get("linkState") != PORT_LINK_READY:
                continue
            if p.get("protocol") == PORT_ISCSI and p.get("IPAddr") and p.get("iSCSIName"):
                tcp = (p.get("iSCSIPortInfo") or {}).get("tcpPort") or ISCSI_PORT
                portals.append(IscsiPortal(address=p["IPAddr"], port=tcp, iqn=p["iSCSIName"]))
            elif p.get("protocol") == PORT_FC and (wwn := _wwpn(str(p.get("portWWN", "")))):
                wwpns.append(wwn)
        return portals, wwpns

    @staticmethod
    def _protocols(portals: list[IscsiPortal], wwpns: list[str]) -> list[Protocol]:
        protocols: list[Protocol] = []
        if portals:
            protocols.append("iscsi")
        if wwpns:
            protocols.append("fc")
        return protocols

    # ---- describe, volumes, snapshots -------------------------------------------------------

    def describe(self) -> ArrayInfo:
        """Return the system's identity and its ready iSCSI portals and FC target WWPNs.

        Calls ``GET /system`` and ``GET /ports``. Protocols are those with a ready target
        port (never NFS: the array is block-only).
        """
        system = self._api().get("/system")
        portals, wwpns = self._ports()
        return ArrayInfo(
            name=str(system.get("name", "")),
            vendor=self.vendor,
            model=str(system.get("model", "")),
            serial=str(system.get("serialNumber", "")),
            version=str(system.get("systemVersion", "")),
            protocols=self._protocols(portals, wwpns),
            iscsi_portals=portals,
            fc_wwpns=wwpns,
        )

    def find_volume(self, backing: Backing) -> ArrayVolume | None:
        """Return the base volume whose WWN is the VMFS device's NAA id, or None.

        NFS backings are never on this array. Snapshots and copies never match: only a base
        volume backs a production datastore. Calls ``GET /volumes`` (and ``GET /ports``).
        """
        if not isinstance(backing, VmfsBacking) or not backing.naa.lower().startswith("naa."):
            return None
        wwn = backing.naa[4:].lower()
        vol = next(
            (
                v
                for v in self._volumes()
                if str(v.get("wwn", "")).lower() == wwn and v.get("copyType") == COPY_BASE
            ),
            None,
        )
        if vol is None:
            return None
        return ArrayVolume(
            array=self.name,
            id=str(vol["id"]),
            name=vol["name"],
            kind="block",
            naa=_naa(vol["wwn"]),
            protocols=self._protocols(*self._ports()),
        )

    def list_snapshots(self, volume: ArrayVolume) -> list[ArraySnapshot]:
        """Return the volume's read-only snapshots, oldest first.

        A snapshot is a read-only virtual copy whose ``copyOf`` is the volume; read-write
        copies (restore copies among them) are not snapshots. Calls ``GET /volumes``.
        """
        snaps = [
            v
            for v in self._volumes()
            if v.get("copyType") == COPY_VIRTUAL
            and v.get("readOnly") is True
            and v.get("copyOf") == volume.name
        ]
        snaps.sort(key=lambda v: (_created(v), v.get("id", 0)))
        return [
            ArraySnapshot(
                array=self.name,
                id=str(v["id"]),
                name=v["name"],
                volume=volume.name,
                created=_created(v),
            )
            for v in snaps
        ]

    # ---- copies -----------------------------------------------------------------------------

    def copy_name(self, run: str, key: str) -> str:
        """Return ``sr-<run>-<hash of key>``: 28 characters at most, valid as a VV name.

        ``<run>`` is the first 12 letters or digits of the run id (a Prefect flow-run id's
        first groups, as the UI shows them); ``<hash of key>`` is 12 hex digits of SHA-256.
        """
        run_part = re.sub(r"[^A-Za-z0-9]", "", run)[:12]
        if not run_part:
            raise ValueError(f"run id {run!r} has no letter or digit to name a copy after")
        key_part = hashlib.sha256(key.encode()).hexdigest()[:12]
        return f"sr-{run_part}-{key_part}"

    def _to_copy(self, vol: dict[str, Any], base: str | None = None) -> SnapshotCopy:
        tag = CopyTag.decode(vol.get("comment"))
        source_volume = base
        if source_volume is None and tag is not None and "@" in tag.source:
            source_volume = tag.source.rsplit("@", 1)[0]
        return SnapshotCopy(
            array=self.name,
            id=str(vol["id"]),
            name=vol["name"],
            naa=_naa(vol["wwn"]) if vol.get("wwn") else None,
            source_volume=source_volume or "",
            source_snapshot=str(vol.get("copyOf", "")),
            tag=tag,
        )

    def create_copy(
        self, volume: ArrayVolume, snapshot: ArraySnapshot, name: str, tag: CopyTag
    ) -> SnapshotCopy:
        """Create a read-write virtual copy of ``snapshot`` named ``name``, tagged with ``tag``.

        ``POST /volumes/<snapshot>`` ``{"action": "createSnapshot", "parameters": {name,
        readOnly: false, comment: tag}}`` (the tag is written in the same call, so the copy
        never exists untagged), then ``GET /volumes/<name>``. If ``name`` exists already it is
        returned when it carries a tag of the same run and is a copy of ``snapshot``;
        otherwise ArrayConflict.
        """
        comment = tag.encode()
        if len(comment) > COMMENT_MAX:
            raise ValueError(f"the tag is {len(comment)} characters; WSAPI comments hold 511")
        if len(name) > NAME_MAX or _NAME_CHARS.search(name) or name.startswith("-"):
            raise ValueError(f"{name!r} is not a valid volume name (≤31 of A-Z a-z 0-9 . _ -)")
        body = {
            "action": "createSnapshot",
            "parameters": {"name": name, "readOnly": False, "comment": comment},
        }
        try:
            self._api().request("POST", f"/volumes/{_enc(snapshot.name)}", json=body)
        except ArrayConflict as exc:
            if not _is_code(exc, EXISTENT_VOL):
                raise
        vol = self._volume(name)
        if vol is None:
            raise ArrayNotFound(
                f"copy {name!r} of {snapshot.name!r} is missing right after its creation",
                array=self.name,
            )
        copy = self._to_copy(vol, volume.name)
        if copy.tag is None or copy.tag.run != tag.run or copy.source_snapshot != snapshot.name:
            raise ArrayConflict(
                f"a volume named {name!r} exists and is not this run's copy of "
                f"{snapshot.name!r} (comment {vol.get('comment')!r}); delete or rename it",
                array=self.name,
            )
        return copy

    def find_copy(self, name: str) -> SnapshotCopy | None:
        """Return the volume named ``name`` as a copy (tag None if untagged), or None.

        Calls ``GET /volumes/<name>``.
        """
        vol = self._volume(name)
        return None if vol is None else self._to_copy(vol)

    def list_copies(self) -> list[SnapshotCopy]:
        """Return every virtual copy whose comment is snaprestore's tag (names alone never count).

        Calls ``GET /volumes``.
        """
        vols = self._volumes()
        names = {v.get("id"): v.get("name") for v in vols}
        return [
            self._to_copy(v, names.get(v.get("baseId")))
            for v in vols
            if v.get("copyType") == COPY_VIRTUAL and CopyTag.decode(v.get("comment"))
        ]

    # ---- hosts and VLUNs --------------------------------------------------------------------

    def _host_name(self, host: HostIdentity) -> str:
        """Return ``sr-<host>`` within 31 valid characters (long names end with a hash)."""
        name = "sr-" + _NAME_CHARS.sub("-", host.name)
        if len(name) > NAME_MAX:
            digest = hashlib.sha256(host.name.encode()).hexdigest()[:8]
            name = name[: NAME_MAX - 9] + "-" + digest
        return name

    def _find_host(self, initiators: set[str], protocol: Protocol) -> dict[str, Any] | None:
        """Return the host object holding most of ``initiators`` (``GET /hosts``), or None."""
        best, best_count = None, 0
        for h in self._api().members("/hosts"):
            count = len(_host_paths(h, protocol) & initiators)
            if count > best_count:
                best, best_count = h, count
        return best

    def _create_host(
        self,
        host: HostIdentity,
        protocol: Protocol,
        initiators: set[str],
        run: str,
        server: str = "",
    ) -> dict[str, Any]:
        """Create (or complete) the tagged host object ``sr-<host>`` with ``initiators``
        (its tag names the run and the Prefect server that owns it)."""
        name = self._host_name(host)
        paths = self._path_body(protocol, initiators)
        tag = CopyTag(run=run, source=f"host:{host.name}", server=server)
        body = {
            "name": name,
            "persona": PERSONA_VMWARE,
            "descriptors": {"comment": tag.encode(), "os": "VMware ESXi"},
            **paths,
        }
        try:
            self._api().request("POST", "/hosts", json=body)
        except ArrayConflict as exc:
            if _is_code(exc, EXISTENT_PATH):  # another process registered these initiators
                found = self._find_host(initiators, protocol)
                if found is not None:
                    return found
            if not _is_code(exc, EXISTENT_HOST):
                raise
            return self._complete_host(name, host, protocol, initiators)
        return self._api().get(f"/hosts/{_enc(name)}")

    @staticmethod
    def _path_body(protocol: Protocol, initiators: set[str]) -> dict[str, list[str]]:
        if protocol == "iscsi":
            return {"iSCSINames": sorted(initiators)}
        return {"FCWWNs": sorted(w.upper() for w in initiators)}

    def _complete_host(
        self, name: str, host: HostIdentity, protocol: Protocol, initiators: set[str]
    ) -> dict[str, Any]:
        """Return the existing host object ``name`` once it holds ``initiators``.

        It was created meanwhile by another worker, or for the same host over the other
        protocol: missing paths are added (``PUT /hosts/<name>``), but only to a host object
        snaprestore made for this very host.
        """
        existing = self._api().get(f"/hosts/{_enc(name)}")
        missing = initiators - _host_paths(existing, protocol)
        if not missing:
            return existing
        tag = CopyTag.decode((existing.get("descriptors") or {}).get("comment"))
        if tag is None or tag.source != f"host:{host.name}":
            raise ArrayConflict(
                f"host object {name!r} exists and was not made by snaprestore for {host.name!r}; "
                "rename it, or add the host's initiators to it",
                array=self.name,
            )
        paths = self._path_body(protocol, missing)
        self._api().request(
            "PUT", f"/hosts/{_enc(name)}", json={"pathOperation": PATH_ADD, **paths}
        )
        return self._api().get(f"/hosts/{_enc(name)}")

    def _vluns(self, volume: str, hostname: str | None = None) -> list[dict[str, Any]]:
        """Return the host VLUNs of ``volume`` (to ``hostname`` only, if given), one per LUN."""
        seen: dict[tuple[str, int], dict[str, Any]] = {}
        for vl in self._api().members("/vluns"):
            if vl.get("volumeName") != volume or not vl.get("hostname"):
                continue
            if hostname is not None and vl["hostname"] != hostname:
                continue
            seen.setdefault((vl["hostname"], int(vl["lun"])), vl)
        return list(seen.values())

    def _host_has_vluns(self, hostname: str) -> bool:
        return any(vl.get("hostname") == hostname for vl in self._api().members("/vluns"))

    def _export(self, volume: str, hostname: str) -> int:
        """Return the LUN of ``volume`` on ``hostname``, creating the VLUN (autoLun) if needed."""
        existing = self._vluns(volume, hostname)
        if existing:
            return int(existing[0]["lun"])
        body = {
            "volumeName": volume,
            "hostname": hostname,
            "lun": 0,
            "autoLun": True,
            "maxAutoLun": 0,
        }
        try:
            r = self._api().request("POST", "/vluns", json=body)
        except ArrayConflict as exc:  # exported meanwhile by another process
            if _is_code(exc, EXISTENT_LUN) and (existing := self._vluns(volume, hostname)):
                return int(existing[0]["lun"])
            raise
        location = unquote(r.headers.get("Location", "").rsplit("/", 1)[-1]).split(",")
        if len(location) >= 3 and location[1].isdigit():
            return int(location[1])
        existing = self._vluns(volume, hostname)
        if not existing:
            raise ArrayError(
                f"VLUN of {volume!r} to {hostname!r} not found after creating it",
                array=self.name,
            )
        return int(existing[0]["lun"])

    def _presentation(
        self, protocol: Protocol, lun: int, access: str, shared_with: list[str]
    ) -> Presentation:
        portals, wwpns = self._ports()
        common = {"protocol": protocol, "lun": lun, "access": access, "shared_with": shared_with}
        if protocol == "iscsi":
            return Presentation(**common, iscsi_targets=portals)
        return Presentation(**common, fc_targets=wwpns)

    def _check_protocol(self, protocol: Protocol, host: HostIdentity) -> set[str]:
        if protocol not in ("iscsi", "fc"):
            raise ArrayUnsupported(
                f"{protocol!r}: HPE Primera/3PAR arrays serve block storage only; present "
                "copies over 'iscsi' or 'fc'",
                array=self.name,
            )
        initiators = _initiators(host, protocol)
        if not initiators:
            kind = "IQN" if protocol == "iscsi" else "valid 16-hex-digit WWPN"
            raise ArrayUnsupported(
                f"host {host.name!r} has no {kind} to present over {protocol}", array=self.name
            )
        return initiators

    def present(self, copy: SnapshotCopy, host: HostIdentity, protocol: Protocol) -> Presentation:
        """Export ``copy`` to the host object holding ``host``'s initiators; return LUN + targets.

        ``GET /hosts`` finds the host object holding the host's IQN (iscsi) or WWPNs (fc);
        without one, ``POST /hosts`` creates ``sr-<host>`` (persona 8, tagged). ``GET /vluns``
        then ``POST /vluns`` (autoLun) unless the copy is already exported to that host
        object: presenting twice returns the same LUN. ``GET /ports`` gives the targets.
        A host object that also holds other hosts' initiators (shared by a cluster) exports
        the copy to them too: ``shared_with`` lists their initiators.
        """
        initiators = self._check_protocol(protocol, host)
        run = copy.tag.run if copy.tag is not None else copy.name
        server = copy.tag.server if copy.tag is not None else ""
        lun = -1
        target: dict[str, Any] = {}
        with resource_lock(self.url, "host", host.name):
            for attempt in (1, 2):
                target = self._find_host(initiators, protocol) or self._create_host(
                    host, protocol, initiators, run, server
                )
                try:
                    lun = self._export(copy.name, target["name"])
                    break
                except ArrayNotFound as exc:  # the host object was removed meanwhile
                    if attempt == 2 or not _is_code(exc, NON_EXISTENT_HOST):
                        raise
        # an initiator belongs to one host object only: when the host's is shared by other
        # hosts (a cluster-wide host object), they see the copy too
        shared = sorted(_host_paths(target, protocol) - initiators)
        return self._presentation(protocol, lun, target["name"], shared)

    def unpresent(self, copy: SnapshotCopy, host: HostIdentity, protocol: Protocol) -> None:
        """Remove the VLUNs of ``copy`` to ``host``'s host object; remove it if ours and empty.

        ``GET /hosts``, ``GET /vluns``, ``DELETE /vluns/<vol>,<lun>,<host>`` (gone already is
        fine), then ``DELETE /hosts/<name>`` when snaprestore created that host object and
        nothing is exported to it any more. A protocol the array does not serve had nothing
        presented: nothing to do.
        """
        if protocol not in ("iscsi", "fc"):
            return
        initiators = _initiators(host, protocol)
        with resource_lock(self.url, "host", host.name):
            target = self._find_host(initiators, protocol) if initiators else None
            if target is None:
                return
            self._unexport(self._vluns(copy.name, target["name"]))
            self._remove_host_if_unused(target)

    def _unexport(self, vluns: list[dict[str, Any]]) -> None:
        for vl in vluns:
            with suppress(ArrayNotFound):
                self._api().request("DELETE", f"/vluns/{_vlun_id(vl)}")

    def _remove_host_if_unused(self, host: dict[str, Any]) -> None:
        """Delete a host object snaprestore created, once nothing is exported to it."""
        if not _is_ours(host) or self._host_has_vluns(host["name"]):
            return
        try:
            self._api().request("DELETE", f"/hosts/{_enc(host['name'])}")
        except ArrayNotFound:
            pass
        except ArrayConflict as exc:  # exported again meanwhile: still in use
            if not _is_code(exc, EXPORTED_VLUN):
                raise

    def unpresent_all(self, copy: SnapshotCopy) -> None:
        """Remove every VLUN of ``copy`` (to any host object or host set), then the host
        objects snaprestore made (for these VLUNs, or tagged with the copy's run) that are
        left without VLUNs; a copy that is gone is fine.

        ``GET /vluns``, ``DELETE /vluns/…``, ``GET /hosts`` and ``DELETE /hosts/<name>``.
        Withdrawing a VLUN a host still uses causes All-Paths-Down there: call this after
        every host unmounted and detached the copy.
        """
        vluns = self._vluns(copy.name)
        self._unexport(vluns)
        hostnames = {vl["hostname"] for vl in vluns}
        run = copy.tag.run if copy.tag is not None else None
        for h in self._api().members("/hosts"):
            tag = CopyTag.decode((h.get("descriptors") or {}).get("comment"))
            # also those of this run a call that failed half-way left empty (a retry)
            if h.get("name") in hostnames or (tag is not None and run and tag.run == run):
                with resource_lock(self.url, "host", _host_key(h)):
                    self._remove_host_if_unused(h)

    def list_access(self) -> list[AccessObject]:
        """Return the host objects whose ``descriptors.comment`` is snaprestore's tag, each
        with whether a VLUN still exports something to it (``GET /hosts``, ``GET /vluns``)."""
        exported = {vl.get("hostname") for vl in self._api().members("/vluns")}
        out = []
        for h in self._api().members("/hosts"):
            tag = CopyTag.decode((h.get("descriptors") or {}).get("comment"))
            if tag is None:
                continue
            out.append(
                AccessObject(
                    array=self.name,
                    kind="host",
                    id=str(h.get("id", h["name"])),
                    name=h["name"],
                    tag=tag,
                    in_use=h["name"] in exported,
                )
            )
        return out

    def remove_access(self, access: AccessObject) -> None:
        """Delete host object ``access.name`` if it is ours and nothing is exported to it.

        ``GET /hosts/<name>``: gone is fine; untagged → NotOurs; a VLUN to it →
        ArrayConflict. Then ``DELETE /hosts/<name>``.
        """
        try:
            host = self._api().get(f"/hosts/{_enc(access.name)}")
        except ArrayNotFound:
            return
        if not _is_ours(host):
            raise NotOurs(
                f"host object {access.name!r} does not carry snaprestore's tag; left untouched",
                array=self.name,
            )
        with resource_lock(self.url, "host", _host_key(host)):
            if self._host_has_vluns(access.name):
                raise ArrayConflict(
                    f"host object {access.name!r} still has VLUNs; not removing it",
                    array=self.name,
                )
            self._remove_host_if_unused(host)

    def delete_copy(self, copy: SnapshotCopy) -> None:
        """Delete the copy, after its VLUNs and our host objects left empty; gone is fine.

        ``GET /volumes/<name>``: refuse (NotOurs) unless it is a virtual copy whose comment is
        snaprestore's tag. Then ``GET /vluns``, ``DELETE /vluns/…``, ``GET /hosts`` +
        ``DELETE /hosts/<name>`` for tagged host objects left without VLUNs, and
        ``DELETE /volumes/<name>``. Withdrawing a VLUN a host still uses causes All-Paths-Down
        there: call this after the hosts unmounted and detached the copy.
        """
        vol = self._volume(copy.name)
        if vol is None:
            return
        if vol.get("copyType") != COPY_VIRTUAL or CopyTag.decode(vol.get("comment")) is None:
            raise NotOurs(
                f"volume {copy.name!r} does not carry snaprestore's tag (comment "
                f"{vol.get('comment')!r}); it was left untouched",
                array=self.name,
            )
        vluns = self._vluns(copy.name)
        if vluns:
            self._unexport(vluns)
            hostnames = {vl["hostname"] for vl in vluns}
            for h in self._api().members("/hosts"):
                if h.get("name") in hostnames:
                    self._remove_host_if_unused(h)
        with suppress(ArrayNotFound):
            self._api().request("DELETE", f"/volumes/{_enc(copy.name)}")
