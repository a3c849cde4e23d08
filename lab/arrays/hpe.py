"""HPE Primera / 3PAR / Alletra 9000 emulator speaking WSAPI v1 over HTTPS.

What it serves (paths relative to the array's HTTPS root):

- ``GET /api`` (no session): WSAPI version with a Primera build number;
- ``POST /api/v1/credentials``, ``DELETE /api/v1/credentials/<key>``: sessions;
- ``GET /api/v1/system``, ``/wsapiconfiguration``, ``/ports``;
- ``GET|POST /api/v1/volumes``, ``GET|POST|PUT|DELETE /api/v1/volumes/<name>``
  (``POST`` with ``action: createSnapshot``), ``/api/v1/volumes/<name>/objectKeyValues[/<key>]``;
- ``GET|POST /api/v1/hosts``, ``GET|PUT|DELETE /api/v1/hosts/<name>``;
- ``GET|POST /api/v1/vluns``, ``GET|DELETE /api/v1/vluns/<vol>,<lun>,<host>[,<n:s:p>]``.

Every call below ``/api/v1`` except login needs the ``X-HP3PAR-WSAPI-SessionKey`` header.
Errors are ``{"code": <int>, "desc": <str>[, "ref": <str>]}`` with the documented HTTP status.

Config knobs beyond :class:`~lab.arrays.base.ArrayConfig`: ``extra["session_idle_timeout_s"]``
(default 900, the documented 15 minutes) so tests can watch keys expire;
``POST /lab/sessions/expire`` drops every key at once.

Choices where the WSAPI reference is silent or ambiguous (lab choices, not verified on an array):

- createSnapshot answers ``200`` with no body and ``Location: /api/v1/volumes/<name>``
  (documented for WSAPI 1.2); base-volume, host and VLUN creation answer ``201`` + Location.
- Deleting a volume checks, in the documented order: retention (409 RETAINED), read-only
  children (409 HAS_RO_CHILD 25), other children (409 HAS_CHILD 32), VLUNs (409 IN_USE 34).
- Exporting a volume to a host that already sees it answers 409 EXISTENT_LUN (18).
- Port-presented and matched-set VLUNs (``portPos``) are not emulated: 400 INV_INPUT.
- A host may hold iSCSI and FC paths (added by separate calls); create rejects both at once.
- ``expirationHours`` is recorded and reported but volumes are never reaped; ``retentionHours``
  is enforced on delete.
- Session keys are bound to the client address, persist across an emulator restart (like the
  rest of the state) and are not limited in number per node.
- ``GET /vluns`` lists one active host VLUN per export (no templates, no per-path rows).
- Object keys follow the name31 rule and values are at most 255 characters (⚠ verify).
- Error numbers the sources do not give (RETAINED, INV_OPERATION_VV_READONLY_TO_READONLY_SNAP,
  AUTO_LUN_ID_UNAVAILABLE) are lab-chosen 100x values; INV_QUERY_STRING answers INV_INPUT.

Seeding (``POST /lab/seed``): one 3PAR host per ESXi host and protocol its volumes need,
persona 8 (VMware): ``esx-01`` with the FC WWPNs, ``esx-01-iscsi`` with the IQN; a volume
with a ``host_group`` is exported instead to ONE host of that name holding the paths of all
its hosts (a cluster-wide host; an initiator still belongs to one host only). Each volume
is a thin base VV holding a copy of its content and the VMFS header (naa = its own NAA); each
snapshot is a read-only virtual copy named ``<volume>.<snapshot>`` (the bare snapshot name if
that exceeds 31 characters; 3PAR names are array-wide), dated ``created``, holding its own
content and the volume's header. A volume gets the same LUN number on every host it is
presented to. A volume without a VMFS signature is a raw LUN (for RDMs). Seeded base
volumes are ``production`` in the fabric; snapshots and copies are not. NFS volumes are
refused: the array is block-only.
"""

from __future__ import annotations

import re
import secrets
import time
import uuid
import zlib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from starlette.responses import JSONResponse, Response

from lab.arrays.base import ArrayEmulator, Call, HttpError
from lab.fabric import (
    Fabric,
    FabricLun,
    IscsiTarget,
    LunExport,
    SeedSpec,
    SeedVolume,
    normalize_initiator,
)
from lab.vmfs import VmfsHeader, write_header

SESSION_HEADER = "X-HP3PAR-WSAPI-SessionKey"
SESSION_IDLE_S = 15 * 60
OS_VERSION = "4.5.0.47"
WSAPI_VERSION = {"major": 1, "minor": 10, "revision": 0, "build": 40500047}  # ≥ 40000128: Primera
DEFAULT_CPG = "SSD_r6"
IQN_PREFIX = "iqn.2000-05.com.3pardata:"

# WSAPI error codes. Names, numbers and HTTP statuses come from the WSAPI 1.2/1.3.1 developer's
# guides (tables 5 and 6), python-3parclient's mock server and cinder's 3PAR driver.
INT_SERV_ERR = 1
INV_USER_PASS = 5
INV_SESS_KEY = 6
TIMEOUT = 7
UNSUP_OP = 9
URI_RES_NOT_FOUND = 11
INV_INPUT = 12
PERM_DENIED = 13
EXISTENT_HOST = 16
NON_EXISTENT_HOST = 17
EXISTENT_LUN = 18
NON_EXISTENT_VLUN = 19
NON_EXISTENT_PORT = 20
EXISTENT_VOL = 22
NON_EXISTENT_VOL = 23
HAS_RO_CHILD = 25
EXPORTED_VLUN = 26
TOO_LARGE = 28
HAS_CHILD = 32  # cinder: "Error 32 means that the volume has children"
IN_USE = 34  # cinder: "volume is part of a volume set"; name mapping inferred
INV_INPUT_WRONG_TYPE = 39
INV_INPUT_MISSING_REQUIRED = 40
INV_INPUT_EXCEEDS_RANGE = 43
INV_INPUT_PARAM_CONFLICT = 44
INV_INPUT_EMPTY_STR = 45
INV_INPUT_BAD_ENUM_VALUE = 46
INV_INPUT_PORT_SPECIFICATION = 55
INV_INPUT_EXCEEDS_LENGTH = 57
EXISTENT_ID = 59
INV_JSON = 60  # guide p.37 sample: {"code":60,"desc":"JSON syntax error"}
INV_INPUT_ILLEGAL_CHAR = 69
EXISTENT_PATH = 73
INV_INPUT_ONE_REQUIRED = 78
NON_EXISTENT_PATH = 80
INV_INPUT_DUP_PATH = 98
VV_IN_USE_BUSY = 151  # cinder: volume busy with a background task
NON_EXISTENT_OBJECT_KEY = 180
EXISTENT_OBJECT_KEY = 181
# ⚠ The guides name these errors but our sources do not give their numbers. The values are
# the lab's own (deliberately outside the documented range) so nobody mistakes them for real
# ones: clients must key on the HTTP status for them.
RETAINED = 1001
INV_OPERATION_VV_READONLY_TO_READONLY_SNAP = 1002
AUTO_LUN_ID_UNAVAILABLE = 1003
# INV_QUERY_STRING (400) has no number in our sources either; bad queries answer INV_INPUT.

COPY_BASE, COPY_VIRTUAL = 1, 3
PROV_TPVV, PROV_SNP = 2, 3
PERSONA_GENERIC_ALUA, PERSONA_MAX = 2, 11  # WSAPI numbering: 8 = VMware
VLUN_TYPE_HOST = 3
MAX_LUN = 16383
MAX_HOURS = 43800

# Members each create/modify call accepts; anything else is refused (400 INV_INPUT).
_CREATE_VOLUME_KEYS = {
    *("name", "cpg", "sizeMiB", "id", "comment", "tpvv", "tdvv", "reduce", "snapCPG"),
    *("policies", "expirationHours", "retentionHours", "ssSpcAllocWarningPct"),
    *("ssSpcAllocLimitPct", "usrSpcAllocWarningPct", "usrSpcAllocLimitPct"),
}
_CREATE_HOST_KEYS = {
    *("name", "iSCSINames", "FCWWNs", "persona", "domain", "forceTearDown", "descriptors"),
}
_MODIFY_HOST_KEYS = {
    *("newName", "pathOperation", "iSCSINames", "FCWWNs", "forcePathRemoval", "persona"),
    "descriptors",
}
_CREATE_VLUN_KEYS = {
    *("volumeName", "lun", "hostname", "portPos", "noVcn", "overrideLowerPriority"),
    *("autoLun", "maxAutoLun"),
}
_SNAPSHOT_KEYS = {"name", "id", "comment", "readOnly", "expirationHours", "retentionHours"}
_NAME31 = re.compile(r"[A-Za-z0-9_.-]+")
_TERM = re.compile(r"^\s*(\w+)\s*(?:==|\s+EQ\s+)\s*(\S+?)\s*$")
_PATH_FILTER = re.compile(r"(FCPaths|iSCSIPaths)\[([^\]]*)\]")
_NSP = re.compile(r"^(\d+):(\d+):(\d+)$")


def _error(status: int, code: int, desc: str, ref: str | None = None) -> HttpError:
    """Return the HttpError carrying a WSAPI error body."""
    body: dict[str, Any] = {"code": code, "desc": desc}
    if ref:
        body["ref"] = ref
    return HttpError(JSONResponse(body, status_code=status))


def _iso(sec: float) -> str:
    return datetime.fromtimestamp(int(sec), UTC).isoformat()


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _body(call: Call) -> dict[str, Any]:
    if not call.raw_body.strip():
        raise _error(400, INV_INPUT_MISSING_REQUIRED, "request body required")
    if not isinstance(call.body, dict):
        raise _error(400, INV_JSON, "JSON syntax error")
    return call.body


def _only(body: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise _error(400, INV_INPUT, f"invalid input: unrecognized member {unknown[0]}", unknown[0])


def _check_name(value: Any, what: str = "name") -> str:
    """Validate a WSAPI name31 (letters, digits, '.', '-', '_'; no leading '-')."""
    if value is None:
        raise _error(400, INV_INPUT_MISSING_REQUIRED, f"{what} not specified", what)
    if not isinstance(value, str):
        raise _error(400, INV_INPUT_WRONG_TYPE, f"invalid input: wrong type for {what}", what)
    if value == "":
        raise _error(400, INV_INPUT_EMPTY_STR, f"invalid input: empty {what}", what)
    if len(value) > 31:
        raise _error(
            400, INV_INPUT_EXCEEDS_LENGTH, "invalid input: string length exceeds limit", what
        )
    if not _NAME31.fullmatch(value) or value.startswith("-"):
        raise _error(400, INV_INPUT_ILLEGAL_CHAR, "invalid input: illegal character in input", what)
    return value


def _check_int(value: Any, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _error(400, INV_INPUT_WRONG_TYPE, f"invalid input: wrong type for {what}", what)
    if value > high:
        code = TOO_LARGE if what == "lun" else INV_INPUT_EXCEEDS_RANGE
        raise _error(400, code, f"invalid input: {what} exceeds expected range", what)
    if value < low:
        raise _error(400, INV_INPUT_EXCEEDS_RANGE, f"invalid input: {what} below range", what)
    return value


def _check_bool(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise _error(400, INV_INPUT_WRONG_TYPE, f"invalid input: wrong type for {what}", what)
    return value


def _check_comment(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _error(400, INV_INPUT_WRONG_TYPE, "invalid input: wrong type for comment", "comment")
    if len(value) > 511:
        raise _error(400, INV_INPUT_EXCEEDS_LENGTH, "comment exceeds 511 characters", "comment")
    return value


def _norm_wwn(value: Any) -> str:
    """Return an FC WWN as 16 upper-case hex digits (colons accepted) or raise 400."""
    hexdigits = value.replace(":", "").upper() if isinstance(value, str) else ""
    if len(hexdigits) != 16 or any(c not in "0123456789ABCDEF" for c in hexdigits):
        raise _error(400, INV_INPUT_WRONG_TYPE, f"invalid WWN {value!r}", "FCWWNs")
    return hexdigits


def _check_iqn(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise _error(400, INV_INPUT_EMPTY_STR, "empty iSCSI name", "iSCSINames")
    if len(value) > 223:
        raise _error(400, INV_INPUT_EXCEEDS_LENGTH, "iSCSI name is too long", "iSCSINames")
    if any(c.isspace() for c in value):
        raise _error(400, INV_INPUT_ILLEGAL_CHAR, "illegal character in iSCSI name", "iSCSINames")
    return value


def _parse_terms(query: str, allowed: set[str]) -> list[tuple[str, str]]:
    """Parse ``"a EQ x OR a==y"`` (quotes optional) into (attribute, value) pairs or raise 400."""
    q = query.strip().strip('"').strip()
    terms: list[tuple[str, str]] = []
    for part in re.split(r"\s+OR\s+", q) if q else []:
        m = _TERM.match(part)
        if not m or m.group(1) not in allowed:
            raise _error(400, INV_INPUT, f"invalid query string {query!r}", "query")
        terms.append((m.group(1), m.group(2).strip("'")))
    if not terms:
        raise _error(400, INV_INPUT, f"invalid query string {query!r}", "query")
    return terms


def _parse_host_query(query: str) -> tuple[set[str], set[str]]:
    """Parse ``FCPaths[wwn==A OR wwn==B] OR iSCSIPaths[name==iqn]`` into (wwns, iqns)."""
    q = query.strip().strip('"')
    wwns: set[str] = set()
    iqns: set[str] = set()
    for kind, inner in _PATH_FILTER.findall(q):
        attr = "wwn" if kind == "FCPaths" else "name"
        for _, value in _parse_terms(inner, {attr}):
            if kind == "FCPaths":
                wwns.add(value.replace(":", "").upper())
            else:
                iqns.add(value.lower())
    rest = _PATH_FILTER.sub(" ", q)
    if (not wwns and not iqns) or re.sub(r"\bOR\b", " ", rest).strip():
        raise _error(400, INV_INPUT, f"invalid query string {query!r}", "query")
    return wwns, iqns


class HpeEmulator(ArrayEmulator):
    """A Primera array: volumes, virtual copies, hosts, VLUNs and ports behind WSAPI v1."""

    vendor = "hpe_primera"

    # ---- vendor hooks ------------------------------------------------------------------------

    def api_routes(self) -> list[tuple[str, str, Callable[[Call], Response]]]:
        """Return the WSAPI routes; everything but the version probe and login needs a key."""
        a = self._authed
        vol = "/api/v1/volumes/{name}"
        kv = vol + "/objectKeyValues"
        return [
            ("GET", "/api", self.get_version),
            ("POST", "/api/v1/credentials", self.login),
            ("DELETE", "/api/v1/credentials/{key}", self.logout),
            ("GET", "/api/v1/system", a(self.get_system)),
            ("GET", "/api/v1/wsapiconfiguration", a(self.get_wsapi_configuration)),
            ("GET", "/api/v1/ports", a(self.get_ports)),
            ("GET", "/api/v1/volumes", a(self.list_volumes)),
            ("POST", "/api/v1/volumes", a(self.create_volume)),
            ("GET", vol, a(self.get_volume)),
            ("POST", vol, a(self.volume_action)),
            ("PUT", vol, a(self.modify_volume)),
            ("DELETE", vol, a(self.delete_volume)),
            ("GET", kv, a(self.list_key_values)),
            ("POST", kv, a(self.create_key_value)),
            ("GET", kv + "/{key}", a(self.get_key_value)),
            ("PUT", kv + "/{key}", a(self.update_key_value)),
            ("DELETE", kv + "/{key}", a(self.delete_key_value)),
            ("GET", "/api/v1/hosts", a(self.list_hosts)),
            ("POST", "/api/v1/hosts", a(self.create_host)),
            ("GET", "/api/v1/hosts/{name}", a(self.get_host)),
            ("PUT", "/api/v1/hosts/{name}", a(self.modify_host)),
            ("DELETE", "/api/v1/hosts/{name}", a(self.delete_host)),
            ("GET", "/api/v1/vluns", a(self.list_vluns)),
            ("POST", "/api/v1/vluns", a(self.create_vlun)),
            ("GET", "/api/v1/vluns/{vlun}", a(self.get_vlun)),
            ("DELETE", "/api/v1/vluns/{vlun}", a(self.delete_vlun)),
        ]

    def error_response(self, status: int, message: str) -> Response:
        """Return a WSAPI error body with a code that fits ``status``."""
        code = {
            400: INV_INPUT,
            403: PERM_DENIED,
            404: URI_RES_NOT_FOUND,
            408: TIMEOUT,
            409: VV_IN_USE_BUSY,
            501: UNSUP_OP,
        }.get(status, INT_SERV_ERR if status >= 500 else INV_INPUT)
        return JSONResponse({"code": code, "desc": message}, status_code=status)

    def initial_state(self) -> dict[str, Any]:
        """Return an empty array: no volumes, hosts, VLUNs or sessions."""
        return {
            "next_vv_id": 1,
            "next_host_id": 1,
            "volumes": {},
            "hosts": {},
            "vluns": [],
            "sessions": {},
        }

    # ---- identity ----------------------------------------------------------------------------

    @property
    def system_id(self) -> int:
        """The numeric system id (last 8 hex digits of every WWN), derived from the serial."""
        digits = re.search(r"(\d+)$", self.config.serial)  # "4UW0012345" -> 12345
        if digits:
            return int(digits.group(1)) & 0xFFFFFFFF
        return zlib.crc32(self.config.serial.encode()) & 0xFFFFF

    def wwn(self, vv_id: int) -> str:
        """Return the WWN of VV ``vv_id``: ``60002AC`` + zero-padded id + system id (32 hex)."""
        return f"60002AC{vv_id:017X}{self.system_id:08X}"

    def naa(self, vv_id: int) -> str:
        """Return the ESXi device name of VV ``vv_id``: ``naa.`` + lower-case WWN."""
        return "naa." + self.wwn(vv_id).lower()

    def ports(self) -> list[dict[str, Any]]:
        """Return the target ports: ``fc_ports`` FC ports, then one iSCSI port per portal IP."""
        sys6 = f"{self.system_id:06X}"[-6:]
        ports: list[dict[str, Any]] = []
        for i in range(self.config.fc_ports):
            node, slot, card = i % 2, 0, 1 + i // 2
            ports.append(
                {
                    "portPos": {"node": node, "slot": slot, "cardPort": card},
                    "mode": 2,
                    "linkState": 4,
                    "type": 1,
                    "protocol": 1,
                    "label": f"FC{node}{slot}{card}",
                    "portWWN": f"2{card:X}{node}{slot}0002AC{sys6}",
                    "nodeWWN": f"2FF70002AC{sys6}",
                    "failoverState": 1,
                    "device": [],
                }
            )
        for i, ip in enumerate(self.config.iscsi_portals):
            node, slot, card = i % 2, 2, 1 + i // 2
            octets = [int(o) for o in ip.split(".")]
            ports.append(
                {
                    "portPos": {"node": node, "slot": slot, "cardPort": card},
                    "mode": 2,
                    "linkState": 4,
                    "type": 8,
                    "protocol": 2,
                    "label": f"IP{node}{slot}{card}",
                    "IPAddr": ip,
                    "iSCSIName": f"{IQN_PREFIX}2{card:x}{node}{slot}0002ac{sys6.lower()}",
                    "HWAddr": "2C27D7" + "".join(f"{o:02X}" for o in octets[1:]),
                    "iSCSIPortInfo": {
                        "ipAddr": ip,
                        "netmask": "255.0.0.0",
                        "gateway": "0.0.0.0",
                        "tcpPort": 3260,
                        "mtu": 1500,
                        "vlan": 0,  # not VLAN tagged (the client fetches VLANs only for 1)
                        "iSNSAddr": "0.0.0.0",
                    },
                    "failoverState": 1,
                    "device": [],
                }
            )
        return ports

    # ---- state helpers -----------------------------------------------------------------------

    @property
    def _vols(self) -> dict[str, dict[str, Any]]:
        return self.state["volumes"]

    @property
    def _hosts(self) -> dict[str, dict[str, Any]]:
        return self.state["hosts"]

    def _find_vol(self, name: str) -> dict[str, Any] | None:
        return next((v for v in self._vols.values() if v["name"] == name), None)

    def _vol(self, name: str) -> dict[str, Any]:
        v = self._find_vol(name)
        if v is None:
            raise _error(404, NON_EXISTENT_VOL, f"volume {name!r} does not exist")
        return v

    def _find_host(self, name: str) -> dict[str, Any] | None:
        return next((h for h in self._hosts.values() if h["name"] == name), None)

    def _host(self, name: str) -> dict[str, Any]:
        h = self._find_host(name)
        if h is None:
            raise _error(404, NON_EXISTENT_HOST, f"host {name!r} does not exist")
        return h

    def _children(self, v: dict[str, Any]) -> list[dict[str, Any]]:
        return [c for c in self._vols.values() if c["parentId"] == v["id"]]

    def _vluns_of(self, vv_id: int | None = None, host_id: int | None = None) -> list[dict]:
        return [
            vl
            for vl in self.state["vluns"]
            if (vv_id is None or vl["vv"] == vv_id) and (host_id is None or vl["host"] == host_id)
        ]

    def _take_vv_id(self, requested: Any) -> int:
        if requested is not None:
            vv_id = _check_int(requested, "id", 1, 65535)
            if str(vv_id) in self._vols:
                raise _error(409, EXISTENT_ID, f"volume id {vv_id} already exists", "id")
        else:
            vv_id = self.state["next_vv_id"]
            while str(vv_id) in self._vols:
                vv_id += 1
        self.state["next_vv_id"] = max(self.state["next_vv_id"], vv_id + 1)
        return vv_id

    def _new_volume(
        self,
        vv_id: int,
        name: str,
        size_mib: int,
        parent: dict[str, Any] | None,
        read_only: bool,
        created: float,
        comment: str | None = None,
        cpg: str | None = DEFAULT_CPG,
    ) -> dict[str, Any]:
        v = {
            "id": vv_id,
            "uuid": str(uuid.uuid4()),
            "name": name,
            "sizeMiB": size_mib,
            "copyType": COPY_BASE if parent is None else COPY_VIRTUAL,
            "parentId": 0 if parent is None else parent["id"],
            "baseId": vv_id if parent is None else parent["baseId"],
            "readOnly": read_only,
            "provisioningType": PROV_TPVV if parent is None else PROV_SNP,
            "userCPG": cpg if parent is None else None,
            "snapCPG": DEFAULT_CPG if parent is None else parent["snapCPG"],
            "comment": comment,
            "created": created,
            "expirationSec": None,
            "retentionSec": None,
            "keyValues": {},
            "content": f"vv-{vv_id}",
        }
        self._vols[str(vv_id)] = v
        return v

    # ---- rendering ---------------------------------------------------------------------------

    def render_volume(self, v: dict[str, Any]) -> dict[str, Any]:
        """Return the WSAPI volume object of ``v``."""
        children = self._children(v)
        ro = [c["id"] for c in children if c["readOnly"]]
        rw = [c["id"] for c in children if not c["readOnly"]]
        out: dict[str, Any] = {
            "id": v["id"],
            "uuid": v["uuid"],
            "name": v["name"],
            "provisioningType": v["provisioningType"],
            "copyType": v["copyType"],
            "baseId": v["baseId"],
            "parentId": v["parentId"],
            "roChildId": max(ro, default=0),
            "rwChildId": max(rw, default=0),
            "readOnly": v["readOnly"],
            "state": 1,
            "failedStates": [],
            "degradedStates": [],
            "additionalStates": [],
            "sizeMiB": v["sizeMiB"],
            "wwn": self.wwn(v["id"]),
            "creationTimeSec": int(v["created"]),
            "creationTime8601": _iso(v["created"]),
            "snapCPG": v["snapCPG"],
            "policies": {
                "staleSS": True,
                "oneHost": False,
                "zeroDetect": v["copyType"] == COPY_BASE,
                "system": False,
                "caching": True,
            },
            "links": [{"href": f"/api/v1/volumes/{v['name']}", "rel": "self"}],
        }
        if v["copyType"] != COPY_BASE:
            out["copyOf"] = self._vols[str(v["parentId"])]["name"]
        if v["userCPG"]:
            out["userCPG"] = v["userCPG"]
        if v["comment"] is not None:
            out["comment"] = v["comment"]
        if v["expirationSec"]:
            out["expirationTimeSec"] = int(v["expirationSec"])
            out["expirationTime8601"] = _iso(v["expirationSec"])
        if v["retentionSec"]:
            out["retentionTimeSec"] = int(v["retentionSec"])
            out["retentionTime8601"] = _iso(v["retentionSec"])
        return out

    def render_host(self, h: dict[str, Any]) -> dict[str, Any]:
        """Return the WSAPI host object of ``h``."""
        return {
            "id": h["id"],
            "name": h["name"],
            "persona": h["persona"],
            "FCPaths": [{"wwn": w, "hostSpeed": 0} for w in h["fc"]],
            "iSCSIPaths": [
                {"name": iqn, "IPAddr": h["ips"].get(iqn, "0.0.0.0"), "hostSpeed": 0}
                for iqn in h["iscsi"]
            ],
            "descriptors": dict(h["descriptors"]),
            "initiatorChapEnabled": False,
            "targetChapEnabled": False,
        }

    def render_vlun(self, vl: dict[str, Any]) -> dict[str, Any]:
        """Return the WSAPI VLUN object of ``vl`` (an active host VLUN)."""
        v = self._vols[str(vl["vv"])]
        return {
            "lun": vl["lun"],
            "volumeName": v["name"],
            "hostname": self._hosts[str(vl["host"])]["name"],
            "volumeWWN": self.wwn(v["id"]),
            "type": VLUN_TYPE_HOST,
            "multipathing": 1,
            "failedPathPol": 1,
            "failedPathInterval": 0,
            "active": True,
        }

    @staticmethod
    def _collection(members: list[dict[str, Any]]) -> JSONResponse:
        return JSONResponse({"total": len(members), "members": members})

    # ---- sessions ----------------------------------------------------------------------------

    def _authed(self, handler: Callable[[Call], Response]) -> Callable[[Call], Response]:
        def wrapped(call: Call) -> Response:
            self._check_session(call)
            return handler(call)

        wrapped.__name__ = handler.__name__
        return wrapped

    def _idle_timeout(self) -> float:
        return float(self.config.extra.get("session_idle_timeout_s", SESSION_IDLE_S))

    def _check_session(self, call: Call) -> None:
        key = call.headers.get(SESSION_HEADER, "")
        sessions = self.state["sessions"]
        session = sessions.get(key)
        now = time.time()
        if session is not None and now - session["last_used"] > self._idle_timeout():
            del sessions[key]
            session = None
        if session is None or session["client"] != call.client:
            raise _error(403, INV_SESS_KEY, "invalid session key")
        session["last_used"] = now

    def get_version(self, call: Call) -> Response:
        """``GET /api``: the WSAPI version; no session needed."""
        return JSONResponse(WSAPI_VERSION)

    def login(self, call: Call) -> Response:
        """``POST /credentials``: 201 ``{"key"}`` or 403 INV_USER_PASS."""
        body = _body(call)
        if "user" not in body or "password" not in body:
            raise _error(400, INV_INPUT_MISSING_REQUIRED, "user and password are required")
        if body["user"] != self.config.user or body["password"] != self.config.password:
            raise _error(403, INV_USER_PASS, "invalid username or password")
        now = time.time()
        sessions = self.state["sessions"]
        for stale in [
            k for k, v in sessions.items() if now - v["last_used"] > self._idle_timeout()
        ]:
            del sessions[stale]
        key = f"0-{secrets.token_hex(16)}-{secrets.token_hex(4)}"
        sessions[key] = {
            "user": body["user"],
            "client": call.client,
            "created": now,
            "last_used": now,
        }
        return JSONResponse(
            {"key": key}, status_code=201, headers={"Location": f"/api/v1/credentials/{key}"}
        )

    def expire_sessions(self, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /lab/sessions/expire``: drop every session key, as when they time out (the
        next call with one is answered 403 INV_SESS_KEY); takes no parameters."""
        if body:
            raise ValueError("primera: /lab/sessions/expire takes no parameters")
        sessions = self.state["sessions"]
        expired = len(sessions)
        sessions.clear()
        return {"expired": expired}

    def logout(self, call: Call) -> Response:
        """``DELETE /credentials/<key>``: end that session (403 INV_SESS_KEY if unknown)."""
        if self.state["sessions"].pop(call.params["key"], None) is None:
            raise _error(403, INV_SESS_KEY, "invalid session key")
        return Response(status_code=200)

    # ---- system and ports --------------------------------------------------------------------

    def get_system(self, call: Call) -> Response:
        """``GET /system``: identity and capacity of the array."""
        allocated = sum(v["sizeMiB"] for v in self._vols.values() if v["copyType"] == COPY_BASE)
        total = 64 * 1024 * 1024
        return JSONResponse(
            {
                "id": self.system_id,
                "name": self.config.name,
                "systemVersion": OS_VERSION,
                "IPv4Addr": self.config.host,
                "model": self.config.model,
                "serialNumber": self.config.serial,
                "totalNodes": 2,
                "masterNode": 0,
                "onlineNodes": [0, 1],
                "clusterNodes": [0, 1],
                "chunkletSizeMiB": 1024,
                "totalCapacityMiB": total,
                "allocatedCapacityMiB": allocated,
                "freeCapacityMiB": total - allocated,
                "failedCapacityMiB": 0,
                "location": "snaprestore lab",
                "timeZone": "UTC",
            }
        )

    def get_wsapi_configuration(self, call: Call) -> Response:
        """``GET /wsapiconfiguration``: server settings and sessions in use."""
        return JSONResponse(
            {
                "httpState": "Disabled",
                "httpPort": 8008,
                "httpsState": "Enabled",
                "httpsPort": self.config.port,
                "version": f"{WSAPI_VERSION['major']}.{WSAPI_VERSION['minor']}",
                "sessionTimeout": int(SESSION_IDLE_S / 60),
                "sessionsInUse": len(self.state["sessions"]),
                "policy": {"requireStrongCipher": True},
            }
        )

    def get_ports(self, call: Call) -> Response:
        """``GET /ports``: FC and iSCSI target ports, all ready."""
        return self._collection(self.ports())

    # ---- volumes -----------------------------------------------------------------------------

    def list_volumes(self, call: Call) -> Response:
        """``GET /volumes[?query=...]``: all VVs, or those matching copyOf/wwn/name terms."""
        vols = sorted(self._vols.values(), key=lambda v: v["id"])
        query = call.query.get("query")
        if query is not None:
            terms = _parse_terms(query, {"copyOf", "wwn", "name"})
            vols = [v for v in vols if any(self._vol_matches(v, a, x) for a, x in terms)]
        return self._collection([self.render_volume(v) for v in vols])

    def _vol_matches(self, v: dict[str, Any], attr: str, value: str) -> bool:
        if attr == "wwn":
            return self.wwn(v["id"]).lower() == value.lower()
        if attr == "name":
            return v["name"] == value
        return v["copyType"] != COPY_BASE and self._vols[str(v["parentId"])]["name"] == value

    def get_volume(self, call: Call) -> Response:
        """``GET /volumes/<name>``: one VV or 404 NON_EXISTENT_VOL."""
        return JSONResponse(self.render_volume(self._vol(call.params["name"])))

    def create_volume(self, call: Call) -> Response:
        """``POST /volumes``: create an empty thin base volume; 201 + Location."""
        body = _body(call)
        _only(body, _CREATE_VOLUME_KEYS)
        name = _check_name(body.get("name"))
        cpg = _check_name(body.get("cpg"), "cpg")
        if "sizeMiB" not in body:
            raise _error(400, INV_INPUT_MISSING_REQUIRED, "sizeMiB not specified", "sizeMiB")
        size = _check_int(body["sizeMiB"], "sizeMiB", 256, 16 * 1024 * 1024)
        comment = _check_comment(body.get("comment"))
        expiration, retention = self._check_hours(body)
        if self._find_vol(name):
            raise _error(409, EXISTENT_VOL, f"volume {name!r} already exists")
        vv_id = self._take_vv_id(body.get("id"))
        v = self._new_volume(vv_id, name, size, None, False, time.time(), comment, cpg)
        v["expirationSec"], v["retentionSec"] = expiration, retention
        self.content.create(v["content"])
        return Response(status_code=201, headers={"Location": f"/api/v1/volumes/{name}"})

    def _check_hours(self, params: dict[str, Any]) -> tuple[float | None, float | None]:
        now = time.time()
        out: list[float | None] = []
        for key in ("expirationHours", "retentionHours"):
            hours = params.get(key)
            out.append(None if hours is None else now + 3600 * _check_int(hours, key, 1, MAX_HOURS))
        if out[0] is not None and out[1] is not None and out[1] > out[0]:
            raise _error(400, INV_INPUT, "retention time is greater than expiration time")
        return out[0], out[1]

    def volume_action(self, call: Call) -> Response:
        """``POST /volumes/<name>``: only ``action: createSnapshot`` is emulated."""
        src = self._vol(call.params["name"])
        body = _body(call)
        _only(body, {"action", "parameters"})
        if body.get("action") != "createSnapshot":
            raise _error(400, INV_INPUT, f"lab: action {body.get('action')!r} is not emulated")
        params = body.get("parameters")
        if not isinstance(params, dict):
            raise _error(400, INV_INPUT_MISSING_REQUIRED, "parameters not specified")
        return self._create_snapshot(src, params)

    def _create_snapshot(self, src: dict[str, Any], params: dict[str, Any]) -> Response:
        _only(params, _SNAPSHOT_KEYS)
        name = _check_name(params.get("name"))
        read_only = _check_bool(params.get("readOnly", False), "readOnly")
        comment = _check_comment(params.get("comment"))
        expiration, retention = self._check_hours(params)
        if self._find_vol(name):
            raise _error(409, EXISTENT_VOL, f"volume {name!r} already exists")
        if read_only and src["readOnly"]:
            raise _error(
                403,
                INV_OPERATION_VV_READONLY_TO_READONLY_SNAP,
                "creating a read-only copy from a read-only volume is not permitted",
            )
        vv_id = self._take_vv_id(params.get("id"))
        snap = self._new_volume(vv_id, name, src["sizeMiB"], src, read_only, time.time(), comment)
        snap["expirationSec"], snap["retentionSec"] = expiration, retention
        self.content.copy(src["content"], snap["content"])
        return Response(status_code=200, headers={"Location": f"/api/v1/volumes/{name}"})

    def modify_volume(self, call: Call) -> Response:
        """``PUT /volumes/<name>``: comment, newName, expiration/retention."""
        v = self._vol(call.params["name"])
        body = _body(call)
        _only(body, {"comment", "newName", "expirationHours", "retentionHours", "rmExpTime"})
        comment = _check_comment(body.get("comment"))
        expiration, retention = self._check_hours(body)
        new_name = None
        if "newName" in body:
            new_name = _check_name(body["newName"], "newName")
            if new_name != v["name"] and self._find_vol(new_name):
                raise _error(409, EXISTENT_VOL, f"volume {new_name!r} already exists")
        if comment is not None:
            v["comment"] = comment
        if expiration is not None:
            v["expirationSec"] = expiration
        if body.get("rmExpTime") is True:
            v["expirationSec"] = None
        if retention is not None:
            v["retentionSec"] = retention
        if new_name is not None:
            v["name"] = new_name
            if self._vluns_of(vv_id=v["id"]):
                self.mark_fabric_changed()
        return Response(status_code=200)

    def delete_volume(self, call: Call) -> Response:
        """``DELETE /volumes/<name>``: refused while retained, with children, or exported."""
        v = self._vol(call.params["name"])
        if v["retentionSec"] and v["retentionSec"] > time.time():
            raise _error(409, RETAINED, "volume retention time has not expired")
        children = self._children(v)
        if any(c["readOnly"] for c in children):
            raise _error(409, HAS_RO_CHILD, "volume has a read-only child")
        if children:
            raise _error(409, HAS_CHILD, "volume has a child volume")
        if self._vluns_of(vv_id=v["id"]):
            raise _error(409, IN_USE, "volume is in use by a VLUN")
        del self._vols[str(v["id"])]
        self.content.remove(v["content"])
        self.mark_fabric_changed()
        return Response(status_code=200)

    # ---- object key values -------------------------------------------------------------------

    @staticmethod
    def _render_kv(key: str, kv: dict[str, Any]) -> dict[str, Any]:
        return {
            "key": key,
            "value": kv["value"],
            "creationTimeSec": int(kv["created"]),
            "creationTime8601": _iso(kv["created"]),
            "date_added": datetime.fromtimestamp(int(kv["created"]), UTC).strftime(
                "%a %b %d %H:%M:%S UTC %Y"
            ),
        }

    def _kv(self, call: Call) -> tuple[dict[str, Any], str]:
        v = self._vol(call.params["name"])
        key = call.params["key"]
        if key not in v["keyValues"]:
            raise _error(404, NON_EXISTENT_OBJECT_KEY, f"key {key!r} does not exist")
        return v, key

    @staticmethod
    def _check_value(value: Any) -> str:
        # ⚠ verify: the value limit is not in our sources; 255 printable characters assumed.
        if value is None:
            raise _error(400, INV_INPUT_MISSING_REQUIRED, "value not specified", "value")
        if not isinstance(value, str):
            raise _error(400, INV_INPUT_WRONG_TYPE, "invalid input: wrong type for value", "value")
        if len(value) > 255:
            raise _error(400, INV_INPUT_EXCEEDS_LENGTH, "value exceeds 255 characters", "value")
        return value

    def list_key_values(self, call: Call) -> Response:
        """``GET /volumes/<name>/objectKeyValues``: every key of the volume."""
        v = self._vol(call.params["name"])
        return self._collection([self._render_kv(k, kv) for k, kv in v["keyValues"].items()])

    def create_key_value(self, call: Call) -> Response:
        """``POST /volumes/<name>/objectKeyValues``: 201, or 409 EXISTENT_OBJECT_KEY."""
        v = self._vol(call.params["name"])
        body = _body(call)
        _only(body, {"key", "value"})
        key = _check_name(body.get("key"), "key")
        value = self._check_value(body.get("value"))
        if key in v["keyValues"]:
            raise _error(409, EXISTENT_OBJECT_KEY, f"key {key!r} already exists")
        v["keyValues"][key] = {"value": value, "created": time.time()}
        return Response(status_code=201)

    def get_key_value(self, call: Call) -> Response:
        """``GET /volumes/<name>/objectKeyValues/<key>``: one key (404 NON_EXISTENT_OBJECT_KEY)."""
        v, key = self._kv(call)
        return JSONResponse(self._render_kv(key, v["keyValues"][key]))

    def update_key_value(self, call: Call) -> Response:
        """``PUT /volumes/<name>/objectKeyValues/<key>`` ``{"value"}``: replace the value."""
        v, key = self._kv(call)
        body = _body(call)
        _only(body, {"value"})
        v["keyValues"][key]["value"] = self._check_value(body.get("value"))
        return Response(status_code=200)

    def delete_key_value(self, call: Call) -> Response:
        """``DELETE /volumes/<name>/objectKeyValues/<key>``: remove the key."""
        v, key = self._kv(call)
        del v["keyValues"][key]
        return Response(status_code=200)

    # ---- hosts -------------------------------------------------------------------------------

    def _path_owner(self, iqn: str | None = None, wwn: str | None = None) -> dict | None:
        for h in self._hosts.values():
            if iqn is not None and iqn.lower() in (p.lower() for p in h["iscsi"]):
                return h
            if wwn is not None and wwn in h["fc"]:
                return h
        return None

    def _check_paths(self, body: dict[str, Any]) -> tuple[list[str], list[str]]:
        iqns_in, wwns_in = body.get("iSCSINames"), body.get("FCWWNs")
        if iqns_in is not None and wwns_in is not None:
            raise _error(400, INV_INPUT_PARAM_CONFLICT, "FCWWNs and iSCSINames are both specified")
        for what, values in (("iSCSINames", iqns_in), ("FCWWNs", wwns_in)):
            if values is not None and not isinstance(values, list):
                raise _error(400, INV_INPUT_WRONG_TYPE, f"invalid input: {what} must be a list")
        iqns = [_check_iqn(i) for i in iqns_in or []]
        wwns = [_norm_wwn(w) for w in wwns_in or []]
        paths = [i.lower() for i in iqns] + wwns
        if len(set(paths)) != len(paths):
            raise _error(400, INV_INPUT_DUP_PATH, "duplicate path specified")
        return iqns, wwns

    def _check_paths_free(self, iqns: list[str], wwns: list[str]) -> None:
        for iqn in iqns:
            if owner := self._path_owner(iqn=iqn):
                raise _error(409, EXISTENT_PATH, f"{iqn} is already used by host {owner['name']}")
        for wwn in wwns:
            if owner := self._path_owner(wwn=wwn):
                raise _error(409, EXISTENT_PATH, f"{wwn} is already used by host {owner['name']}")

    @staticmethod
    def _check_descriptors(value: Any) -> dict[str, str]:
        if not isinstance(value, dict):
            raise _error(400, INV_INPUT_WRONG_TYPE, "descriptors must be an object")
        _only(value, {"location", "IPAddr", "os", "model", "contact", "comment"})
        for k, val in value.items():
            if not isinstance(val, str):
                raise _error(400, INV_INPUT_WRONG_TYPE, f"invalid input: wrong type for {k}", k)
            if len(val) > 255:
                raise _error(400, INV_INPUT_EXCEEDS_LENGTH, f"{k} is too long", k)
        return dict(value)

    def _check_persona(self, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= PERSONA_MAX:
            raise _error(400, INV_INPUT_BAD_ENUM_VALUE, "invalid input: bad enum value", "persona")
        return value

    def _add_host(
        self,
        name: str,
        persona: int,
        iqns: list[str],
        wwns: list[str],
        descriptors: dict[str, str],
        ips: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        host_id = self.state["next_host_id"]
        self.state["next_host_id"] += 1
        h = {
            "id": host_id,
            "name": name,
            "persona": persona,
            "iscsi": iqns,
            "fc": wwns,
            "ips": ips or {},
            "descriptors": descriptors,
        }
        self._hosts[str(host_id)] = h
        return h

    def list_hosts(self, call: Call) -> Response:
        """``GET /hosts[?query="FCPaths[wwn==X] OR iSCSIPaths[name==Y]"]``."""
        hosts = sorted(self._hosts.values(), key=lambda h: h["id"])
        query = call.query.get("query")
        if query is not None:
            wwns, iqns = _parse_host_query(query)
            hosts = [
                h for h in hosts if wwns & set(h["fc"]) or iqns & {i.lower() for i in h["iscsi"]}
            ]
        return self._collection([self.render_host(h) for h in hosts])

    def get_host(self, call: Call) -> Response:
        """``GET /hosts/<name>``: one host or 404 NON_EXISTENT_HOST."""
        return JSONResponse(self.render_host(self._host(call.params["name"])))

    def create_host(self, call: Call) -> Response:
        """``POST /hosts``: iSCSI or FC host; 201 + Location, 409 EXISTENT_HOST/EXISTENT_PATH."""
        body = _body(call)
        _only(body, _CREATE_HOST_KEYS)
        name = _check_name(body.get("name"))
        iqns, wwns = self._check_paths(body)
        persona = self._check_persona(body.get("persona", PERSONA_GENERIC_ALUA))
        descriptors = self._check_descriptors(body.get("descriptors", {}))
        if self._find_host(name):
            raise _error(409, EXISTENT_HOST, f"host {name!r} already exists")
        self._check_paths_free(iqns, wwns)
        self._add_host(name, persona, iqns, wwns, descriptors)  # no VLUNs yet: fabric unchanged
        return Response(status_code=201, headers={"Location": f"/api/v1/hosts/{name}"})

    def modify_host(self, call: Call) -> Response:
        """``PUT /hosts/<name>``: rename, persona, descriptors, add (1) or remove (2) paths."""
        h = self._host(call.params["name"])
        body = _body(call)
        _only(body, _MODIFY_HOST_KEYS)
        if not set(body) & {"newName", "pathOperation", "persona", "descriptors"}:
            raise _error(400, INV_INPUT_ONE_REQUIRED, "no host modification specified")
        iqns, wwns = self._check_paths(body)
        op = body.get("pathOperation")
        if op is not None and op not in (1, 2):
            raise _error(400, INV_INPUT_BAD_ENUM_VALUE, "invalid enum value", "pathOperation")
        if (op is None) != (not iqns and not wwns):
            raise _error(400, INV_INPUT_ONE_REQUIRED, "pathOperation needs FCWWNs or iSCSINames")
        new_name = None
        if "newName" in body:
            new_name = _check_name(body["newName"], "newName")
            if new_name != h["name"] and self._find_host(new_name):
                raise _error(409, EXISTENT_HOST, f"host {new_name!r} already exists")
        persona = self._check_persona(body["persona"]) if "persona" in body else None
        descriptors = self._check_descriptors(body["descriptors"]) if "descriptors" in body else {}
        exported = bool(self._vluns_of(host_id=h["id"]))
        if persona is not None and persona != h["persona"] and exported:
            raise _error(409, EXPORTED_VLUN, "cannot change the persona of an exported host")
        if op == 1:
            self._check_paths_free(iqns, wwns)
            h["iscsi"] += iqns
            h["fc"] += wwns
        elif op == 2:
            have = {i.lower() for i in h["iscsi"]} | set(h["fc"])
            missing = [p for p in iqns + wwns if p.lower() not in have and p not in have]
            if missing:
                raise _error(400, NON_EXISTENT_PATH, f"{missing[0]} is not a path of {h['name']}")
            if exported and body.get("forcePathRemoval") is not True:
                raise _error(409, EXPORTED_VLUN, "host has exported VLUNs; use forcePathRemoval")
            drop = {i.lower() for i in iqns}
            h["iscsi"] = [i for i in h["iscsi"] if i.lower() not in drop]
            h["fc"] = [w for w in h["fc"] if w not in wwns]
        if op is not None:
            self.mark_fabric_changed()
        if new_name is not None:
            h["name"] = new_name
        if persona is not None:
            h["persona"] = persona
        h["descriptors"].update(descriptors)
        return Response(status_code=200)

    def delete_host(self, call: Call) -> Response:
        """``DELETE /hosts/<name>``: 409 EXPORTED_VLUN while it has VLUNs."""
        h = self._host(call.params["name"])
        if self._vluns_of(host_id=h["id"]):
            raise _error(409, EXPORTED_VLUN, f"host {h['name']!r} has exported VLUNs")
        del self._hosts[str(h["id"])]
        self.mark_fabric_changed()
        return Response(status_code=200)

    # ---- VLUNs -------------------------------------------------------------------------------

    def list_vluns(self, call: Call) -> Response:
        """``GET /vluns[?query="volumeName EQ x"|"hostname EQ y"]``."""
        vluns = [self.render_vlun(vl) for vl in self.state["vluns"]]
        query = call.query.get("query")
        if query is not None:
            terms = _parse_terms(query, {"volumeName", "hostname"})
            vluns = [vl for vl in vluns if any(vl[a] == x for a, x in terms)]
        return self._collection(vluns)

    def create_vlun(self, call: Call) -> Response:
        """``POST /vluns``: export a volume to a host; 201, no body, Location ``vol,lun,host``."""
        body = _body(call)
        _only(body, _CREATE_VLUN_KEYS)
        if "volumeName" not in body:
            raise _error(400, INV_INPUT_MISSING_REQUIRED, "volumeName not specified", "volumeName")
        if "portPos" in body:
            raise _error(
                400, INV_INPUT, "lab: port-presented and matched-set VLUNs are not emulated"
            )
        if "hostname" not in body:
            raise _error(400, INV_INPUT_MISSING_REQUIRED, "hostname not specified", "hostname")
        auto = _check_bool(body.get("autoLun", False), "autoLun")
        if "lun" not in body and not auto:
            raise _error(400, INV_INPUT, "lun not specified", "lun")
        lun = _check_int(body.get("lun", 0), "lun", 0, MAX_LUN)
        max_auto = _check_int(body.get("maxAutoLun", 0), "maxAutoLun", 0, MAX_LUN) or MAX_LUN
        v = self._vol(str(body["volumeName"]))
        h = self._host(str(body["hostname"]))
        host_vluns = self._vluns_of(host_id=h["id"])
        if existing := next((vl for vl in host_vluns if vl["vv"] == v["id"]), None):
            raise _error(
                409,
                EXISTENT_LUN,
                f"{v['name']!r} is already exported to {h['name']!r} as LUN {existing['lun']}",
            )
        used = {vl["lun"] for vl in host_vluns}
        if auto:
            lun = next((n for n in range(lun, max_auto + 1) if n not in used), -1)
            if lun < 0:
                raise _error(409, AUTO_LUN_ID_UNAVAILABLE, "no LUN id available in range")
        elif lun in used:
            raise _error(409, EXISTENT_LUN, f"LUN {lun} is already used on host {h['name']!r}")
        self.state["vluns"].append(
            {"vv": v["id"], "host": h["id"], "lun": lun, "created": time.time()}
        )
        self.mark_fabric_changed()
        location = f"/api/v1/vluns/{v['name']},{lun},{h['name']}"
        return Response(status_code=201, headers={"Location": location})

    def _vlun_by_id(self, vlun_id: str) -> dict[str, Any]:
        parts = vlun_id.split(",")
        if len(parts) not in (3, 4) or not parts[0] or not parts[1]:
            raise _error(400, INV_INPUT_MISSING_REQUIRED, f"incomplete VLUN id {vlun_id!r}")
        vol_name, lun_s, host_name = parts[0], parts[1], parts[2]
        try:
            lun = int(lun_s)
        except ValueError:
            raise _error(400, INV_INPUT_WRONG_TYPE, f"invalid LUN {lun_s!r}", "lun") from None
        if len(parts) == 4:
            m = _NSP.match(parts[3])
            if not m:
                raise _error(400, INV_INPUT_PORT_SPECIFICATION, f"invalid port {parts[3]!r}")
            pos = {"node": int(m[1]), "slot": int(m[2]), "cardPort": int(m[3])}
            if pos not in [p["portPos"] for p in self.ports()]:
                raise _error(404, NON_EXISTENT_PORT, f"port {parts[3]} does not exist")
        elif not host_name:
            raise _error(400, INV_INPUT_MISSING_REQUIRED, "host or port required")
        if host_name:
            self._host(host_name)
        for vl in self.state["vluns"]:
            if (
                vl["lun"] == lun
                and self._vols[str(vl["vv"])]["name"] == vol_name
                and self._hosts[str(vl["host"])]["name"] == host_name
            ):
                return vl
        raise _error(404, NON_EXISTENT_VLUN, f"VLUN {vlun_id!r} does not exist")

    def get_vlun(self, call: Call) -> Response:
        """``GET /vluns/<vol>,<lun>,<host>``: a one-member collection, or 404 NON_EXISTENT_VLUN."""
        return self._collection([self.render_vlun(self._vlun_by_id(call.params["vlun"]))])

    def delete_vlun(self, call: Call) -> Response:
        """``DELETE /vluns/<vol>,<lun>,<host>[,<n:s:p>]``: unexport (404 NON_EXISTENT_VLUN)."""
        self.state["vluns"].remove(self._vlun_by_id(call.params["vlun"]))
        self.mark_fabric_changed()
        return Response(status_code=200)

    # ---- fabric, seed, lab state -------------------------------------------------------------

    def content_dir(self, v: dict[str, Any]) -> str:
        """Return the absolute directory holding the content of volume ``v``."""
        return str(Path(self.content.path(v["content"])).resolve())

    def fabric(self) -> Fabric:
        """Return one LUN per exported VV, seen by every path of every host it is exported to."""
        targets = [
            IscsiTarget(address=p["IPAddr"], port=3260, iqn=p["iSCSIName"])
            for p in self.ports()
            if p["protocol"] == 2 and p["mode"] == 2 and p["linkState"] == 4
        ]
        fc_targets = [normalize_initiator(p["portWWN"]) for p in self.ports() if p["protocol"] == 1]
        luns = []
        for v in sorted(self._vols.values(), key=lambda v: v["id"]):
            vluns = self._vluns_of(vv_id=v["id"])
            if not vluns:
                continue
            exports: list[LunExport] = []
            for vl in vluns:
                h = self._hosts[str(vl["host"])]
                exports += [
                    LunExport(initiator=normalize_initiator(i), protocol="iscsi", lun=vl["lun"])
                    for i in h["iscsi"]
                ]
                exports += [
                    LunExport(initiator=normalize_initiator(w), protocol="fc", lun=vl["lun"])
                    for w in h["fc"]
                ]
            luns.append(
                FabricLun(
                    naa=self.naa(v["id"]),
                    name=v["name"],
                    content_dir=self.content_dir(v),
                    size_mb=v["sizeMiB"],
                    vendor="3PARdata",
                    model="VV",
                    exports=exports,
                    iscsi_targets=targets,
                    fc_targets=fc_targets,
                    read_only=v["readOnly"],
                    production=v.get("production", False),
                )
            )
        return Fabric(array=self.config.name, vendor=self.vendor, generation=0, luns=luns)

    @staticmethod
    def seed_host_name(host: str, protocol: str) -> str:
        """Name of the 3PAR host seeded for ESXi ``host``: ``esx-01`` (FC), ``esx-01-iscsi``."""
        suffix = "-iscsi" if protocol == "iscsi" else ""
        return host[: 31 - len(suffix)] + suffix

    @staticmethod
    def seed_snapshot_name(volume: str, snapshot: str) -> str:
        """Name of a seeded snapshot: ``<volume>.<snapshot>`` when that fits in 31 characters.

        3PAR snapshot names share the array-wide VV namespace, so the volume prefix keeps
        "daily-1" of two volumes apart; a name that cannot take the prefix stays as given.
        """
        prefixed = f"{volume}.{snapshot}"
        return prefixed if len(prefixed) <= 31 else snapshot

    @staticmethod
    def _seed_objects_of(vol: SeedVolume) -> list[tuple[str, tuple[str, ...], str]]:
        """The host objects ``vol`` is exported to: (name, ESXi hosts, protocol)."""
        if vol.host_group is not None:
            return [(vol.host_group, tuple(vol.present_to), vol.protocol)]
        return [
            (HpeEmulator.seed_host_name(h, vol.protocol), (h,), vol.protocol)
            for h in vol.present_to
        ]

    def _plan_seed(self, spec: SeedSpec) -> list[tuple[str, tuple[str, ...], str]]:
        """Validate ``spec`` before touching state; return the host objects to create as
        (name, ESXi hosts whose initiators it holds, protocol)."""
        hosts = {h.name: h for h in spec.hosts}
        names: set[str] = set()
        needed: list[tuple[str, tuple[str, ...], str]] = []

        def claim(name: str, what: str) -> None:
            if len(name) > 31 or not _NAME31.fullmatch(name) or name.startswith("-"):
                raise ValueError(f"{what} {name!r} is not a valid 3PAR name (≤31, [A-Za-z0-9._-])")
            if name in names or self._find_vol(name):
                raise ValueError(f"{what} {name!r} is not unique on the array")
            names.add(name)

        for vol in spec.volumes:
            if vol.protocol == "nfs":
                raise ValueError(
                    f"volume {vol.name!r}: HPE Primera/3PAR is block-only (iscsi or fc), not nfs"
                )
            claim(vol.name, "volume")
            for snap in vol.snapshots:
                claim(self.seed_snapshot_name(vol.name, snap.name), "snapshot")
            for path in [vol.content, *(s.content for s in vol.snapshots)]:
                if not Path(path).is_dir():
                    raise ValueError(f"volume {vol.name!r}: content {path!r} is not a directory")
            for host in vol.present_to:
                if host not in hosts:
                    raise ValueError(f"volume {vol.name!r} is presented to unknown host {host!r}")
            for obj in self._seed_objects_of(vol):
                same = next((o for o in needed if o[0] == obj[0]), None)
                if same is not None and same != obj:
                    raise ValueError(f"host {obj[0]!r} is seeded twice with different paths")
                if same is None:
                    needed.append(obj)
        owner: dict[str, str] = {}  # initiator -> host object (3PAR: one host per path)
        for name, members, protocol in needed:
            if len(name) > 31 or not _NAME31.fullmatch(name) or name.startswith("-"):
                raise ValueError(f"host {name!r} is not a valid 3PAR name (≤31, [A-Za-z0-9._-])")
            if self._find_host(name):
                raise ValueError(f"host {name!r} already exists on the array")
            for m in members:
                paths = [hosts[m].iqn.lower()] if protocol == "iscsi" else hosts[m].wwpns
                for path in paths:
                    path = normalize_initiator(path)
                    if owner.setdefault(path, name) != name:
                        raise ValueError(
                            f"{path} would be a path of hosts {owner[path]!r} and {name!r}"
                        )
        return needed

    def seed(self, spec: SeedSpec) -> None:
        """Create hosts (persona 8), volumes with VMFS headers, RO snapshots and VLUNs."""
        needed = self._plan_seed(spec)
        hosts = {h.name: h for h in spec.hosts}
        for name, members, protocol in needed:
            iqns = [hosts[m].iqn for m in members] if protocol == "iscsi" else []
            wwns = (
                [_norm_wwn(w) for m in members for w in hosts[m].wwpns] if protocol == "fc" else []
            )
            self._add_host(
                name,
                8,
                iqns,
                wwns,
                {"os": "VMware ESXi", "comment": "seeded by snaprestore lab"},
                ips={hosts[m].iqn: hosts[m].vmk_ip for m in members} if iqns else None,
            )
        for vol in spec.volumes:
            self._seed_volume(vol)

    def _seed_volume(self, spec: SeedVolume) -> None:
        stamps = [_utc(s.created).timestamp() for s in spec.snapshots]
        created = min([time.time(), *(t - 86400 for t in stamps)])  # the base predates its snaps
        v = self._new_volume(self._take_vv_id(None), spec.name, spec.size_mb, None, False, created)
        v["production"] = True
        self.content.create(v["content"], spec.content)
        header = None
        if spec.vmfs is not None:
            header = VmfsHeader(uuid=spec.vmfs.uuid, label=spec.vmfs.label, naa=self.naa(v["id"]))
            write_header(self.content_dir(v), header)
        for snap in spec.snapshots:
            name = self.seed_snapshot_name(spec.name, snap.name)
            s = self._new_volume(
                self._take_vv_id(None), name, spec.size_mb, v, True, _utc(snap.created).timestamp()
            )
            self.content.create(s["content"], snap.content)
            if header is not None:
                write_header(self.content_dir(s), header)
        host_ids = [self._find_host(name)["id"] for name, _, _ in self._seed_objects_of(spec)]
        used = {vl["lun"] for vl in self.state["vluns"] if vl["host"] in host_ids}
        lun = next(n for n in range(MAX_LUN + 1) if n not in used)
        for host_id in host_ids:
            self.state["vluns"].append(
                {"vv": v["id"], "host": host_id, "lun": lun, "created": time.time()}
            )

    def _host_protocol(self, h: dict[str, Any]) -> str:
        return "iscsi" if h["iscsi"] and not h["fc"] else "fc"

    def lab_state(self) -> dict[str, Any]:
        """Return the common lab view plus the WSAPI objects under ``raw``."""
        vols = sorted(self._vols.values(), key=lambda v: v["id"])

        def source(v: dict[str, Any]) -> str | None:
            return None if v["parentId"] == 0 else self._vols[str(v["parentId"])]["name"]

        volumes = [
            {
                "name": v["name"],
                "id": v["id"],
                "size_mb": v["sizeMiB"],
                "naa": self.naa(v["id"]),
                "is_copy": v["copyType"] == COPY_VIRTUAL,
                "source": source(v),
                "comment": v["comment"],
            }
            for v in vols
            if not v["readOnly"]
        ]
        snapshots = [
            {
                "volume": source(v),
                "name": v["name"],
                "id": v["id"],
                "created": _iso(v["created"]),
                "read_only": True,
            }
            for v in vols
            if v["readOnly"]
        ]
        hosts = [
            {
                "name": h["name"],
                "initiators": [normalize_initiator(p) for p in h["iscsi"] + h["fc"]],
                "protocol": self._host_protocol(h),
            }
            for h in sorted(self._hosts.values(), key=lambda h: h["id"])
        ]
        exports = [
            {
                "volume": self._vols[str(vl["vv"])]["name"],
                "host": self._hosts[str(vl["host"])]["name"],
                "lun": vl["lun"],
                "protocol": self._host_protocol(self._hosts[str(vl["host"])]),
            }
            for vl in self.state["vluns"]
        ]
        return {
            "array": self.config.name,
            "vendor": self.vendor,
            "volumes": volumes,
            "snapshots": snapshots,
            "copies": [v for v in volumes if v["is_copy"]],
            "hosts": hosts,
            "exports": exports,
            "nfs_exports": [],
            "raw": {
                "volumes": [self.render_volume(v) for v in vols],
                "hosts": [self.render_host(h) for h in self._hosts.values()],
                "vluns": [self.render_vlun(vl) for vl in self.state["vluns"]],
                "ports": self.ports(),
                "sessions": len(self.state["sessions"]),
            },
        }
