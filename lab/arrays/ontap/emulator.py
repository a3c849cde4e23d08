"""The NetApp ONTAP REST emulator: one cluster, one node, one SVM, NFS and iSCSI.

The resource handlers live in :mod:`.storage` (volumes, snapshots, LUNs), :mod:`.san`
(igroups, LUN maps, iSCSI, LIFs), :mod:`.nas` (export policies) and :mod:`.jobs`; this module
adds authentication, the cluster and SVM objects, and the lab contracts: ``seed``, ``fabric``
and ``lab_state``.

Every ``/api`` call needs HTTP Basic credentials (``config.user``/``config.password``); a
missing or wrong ``Authorization`` header is answered ``401`` with an ONTAP error body.
ONTAP REST has no sessions to expire (Basic authentication is checked on every call):
``POST /lab/sessions/expire {"times": N}`` makes the next N calls answer that ``401``
whatever credentials they carry, as after the password was rotated under a client that
cached it, until the client's credentials are valid again.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hmac
import shutil
import uuid as uuidlib
from collections.abc import Callable
from typing import Any

from starlette.responses import Response

from lab.arrays.base import ArrayConfig, ArrayEmulator, Call
from lab.arrays.ontap import hal
from lab.arrays.ontap.common import (
    MB,
    check_object_name,
    check_volume_name,
    iso,
    naa_of,
    new_serial,
    now_iso,
)
from lab.arrays.ontap.hal import OntapError, get_in
from lab.arrays.ontap.jobs import JobsMixin
from lab.arrays.ontap.nas import RULE_DEFAULTS, NasMixin
from lab.arrays.ontap.san import SanMixin
from lab.arrays.ontap.storage import StorageMixin
from lab.fabric import (
    Fabric,
    FabricLun,
    IscsiTarget,
    LunExport,
    NfsExport,
    NfsRule,
    SeedSpec,
    normalize_initiator,
)
from lab.vmfs import VmfsHeader, write_header

CLUSTER_FIELDS = hal.fieldset(
    "name uuid version.full version.generation version.major version.minor "
    "management_interfaces.ip.address"
)
NODE_FIELDS = hal.fieldset("uuid name serial_number model state version.full")
SVM_FIELDS = hal.fieldset(
    "uuid name state subtype language ipspace.name nfs.enabled iscsi.enabled fcp.enabled"
)
SEED_POLICY = "esx_hosts"
SEED_IGROUP = "esx_cluster"
_FIRST_POLICY_ID = 12884901889  # ONTAP policy ids are large integers
_CODE_FOR_STATUS = {
    400: hal.INVALID,
    401: hal.NOT_AUTHORIZED,
    403: hal.NOT_AUTHORIZED,
    404: hal.NOT_FOUND,
    405: hal.NOT_SUPPORTED,
    409: hal.DUPLICATE,
}


class OntapEmulator(JobsMixin, StorageMixin, SanMixin, NasMixin, ArrayEmulator):
    """NetApp ONTAP 9 REST API (the subset a snapshot-restore tool uses), over HTTPS."""

    vendor = "netapp_ontap"

    def __init__(self, config: ArrayConfig):
        super().__init__(config)
        self._unauthorized_calls = 0  # POST /lab/sessions/expire: calls still to refuse
        self.start_jobs()

    # ---- base-class contract -------------------------------------------------------------------

    def api_routes(self) -> list[tuple[str, str, Callable[[Call], Response]]]:
        """Return every ONTAP endpoint served, each behind HTTP Basic authentication."""
        routes = [
            ("GET", "/api/cluster", self.get_cluster),
            ("GET", "/api/cluster/nodes", self.get_nodes),
            ("GET", "/api/cluster/nodes/{uuid}", self.get_node),
            ("GET", "/api/svm/svms", self.get_svms),
            ("GET", "/api/svm/svms/{uuid}", self.get_svm),
            *self.job_routes(),
            *self.storage_routes(),
            *self.san_routes(),
            *self.nas_routes(),
        ]
        return [(method, path, self._authenticated(h)) for method, path, h in routes]

    def error_response(self, status: int, message: str) -> Response:
        """Return an ONTAP error body with ``status`` (the code follows the common table)."""
        code = _CODE_FOR_STATUS.get(status, str(status))
        return hal.hal(hal.error_body(message, code), status)

    def initial_state(self) -> dict[str, Any]:
        """Return an empty cluster: one node, one SVM with its ``default`` export policy."""
        svm_name = str(self.config.extra.get("svm", "svm1"))
        state: dict[str, Any] = {
            "cluster": {"name": self.config.name, "uuid": str(uuidlib.uuid4())},
            "node": {"name": f"{self.config.name}-01", "uuid": str(uuidlib.uuid4())},
            "aggregate": {"name": "aggr1", "uuid": str(uuidlib.uuid4())},
            "svm": {"name": svm_name, "uuid": str(uuidlib.uuid4()), "vs_id": 3},
            "volumes": {},
            "snapshots": {},
            "luns": {},
            "igroups": {},
            "lun_maps": [],
            "export_policies": {},
            "next_policy_id": _FIRST_POLICY_ID,
            "default_policy_id": _FIRST_POLICY_ID,
            "jobs": {},
            "job_order": [],
        }
        self.state = state
        self.new_policy("default")
        return state

    # ---- authentication and SVM scoping --------------------------------------------------------

    def _authenticated(self, handler: Callable[[Call], Response]) -> Callable[[Call], Response]:
        def run(call: Call) -> Response:
            expired = self._unauthorized_calls > 0  # handlers run under the emulator's lock
            if expired:
                self._unauthorized_calls -= 1
            if expired or not self._credentials_ok(call.headers.get("authorization", "")):
                raise OntapError(401, "not authorized for that command", hal.NOT_AUTHORIZED)
            hal.return_timeout(call.query)  # a bad value is refused before anything else
            return handler(call)

        run.__doc__ = handler.__doc__
        return run

    def expire_sessions(self, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /lab/sessions/expire {"times": N}`` (N ≥ 1, default 1): the next N API calls
        are answered 401 whatever their credentials (ONTAP has no sessions; this is what a
        client holding rotated credentials sees). Replaces a count still pending."""
        unknown = sorted(set(body) - {"times"})
        if unknown:
            raise ValueError(f"ontap: unknown parameter {unknown[0]!r} (only 'times')")
        times = body.get("times", 1)
        if isinstance(times, bool) or not isinstance(times, int) or times < 1:
            raise ValueError("ontap: times must be an integer ≥ 1")
        self._unauthorized_calls = times
        return {"unauthorized_calls": times}

    def _credentials_ok(self, header: str) -> bool:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = (
                base64.b64decode(value.strip(), validate=True).decode().partition(":")
            )
        except (binascii.Error, UnicodeDecodeError):
            return False
        return hmac.compare_digest(user, self.config.user) & hmac.compare_digest(
            password, self.config.password
        )

    def svm_ref(self) -> dict[str, Any]:
        """Return the SVM as it appears inside other objects."""
        svm = self.state["svm"]
        return {
            "name": svm["name"],
            "uuid": svm["uuid"],
            "_links": {"self": {"href": f"/api/svm/svms/{svm['uuid']}"}},
        }

    def check_svm(self, call: Call, body: dict[str, Any], required: bool = True) -> None:
        """Check the SVM a request names (body ``svm.name``/``svm.uuid`` or ``X-Dot-SVM-Name``)."""
        svm = self.state["svm"]
        header = call.headers.get("x-dot-svm-name")
        name, uuid = get_in(body, "svm.name"), get_in(body, "svm.uuid")
        for value, actual, field in (
            (header, svm["name"], "X-Dot-SVM-Name"),
            (name, svm["name"], "svm.name"),
            (uuid, svm["uuid"], "svm.uuid"),
        ):
            if value is not None and value != actual:
                raise OntapError(404, f'SVM "{value}" does not exist.', hal.NOT_FOUND, field)
        if required and header is None and name is None and uuid is None:
            raise hal.invalid('Missing value for required field "svm.name" or "svm.uuid".', "svm")

    # ---- cluster, node, SVM --------------------------------------------------------------------

    def _cluster_record(self) -> dict[str, Any]:
        version = str(self.config.extra.get("version", "9.14.1"))
        generation, major, minor = (int(p) for p in version.split(".")[:3])
        return {
            "name": self.state["cluster"]["name"],
            "uuid": self.state["cluster"]["uuid"],
            "version": {
                "full": f"NetApp Release {version}: Mon Jan 08 12:00:00 UTC 2024",
                "generation": generation,
                "major": major,
                "minor": minor,
            },
            "management_interfaces": [{"ip": {"address": self.config.host}}],
            "_links": {"self": {"href": "/api/cluster"}},
        }

    def get_cluster(self, call: Call) -> Response:
        """``GET /api/cluster``: name, uuid, version."""
        return hal.single(call.query, self._cluster_record(), CLUSTER_FIELDS)

    def _node_records(self) -> list[dict[str, Any]]:
        node = self.state["node"]
        return [
            {
                "uuid": node["uuid"],
                "name": node["name"],
                "serial_number": self.config.serial,
                "model": self.config.model,
                "state": "up",
                "version": {"full": self._cluster_record()["version"]["full"]},
                "_links": {"self": {"href": f"/api/cluster/nodes/{node['uuid']}"}},
            }
        ]

    def get_nodes(self, call: Call) -> Response:
        """``GET /api/cluster/nodes`` (serial_number, model)."""
        path = "/api/cluster/nodes"
        return hal.collection(call.query, path, self._node_records(), NODE_FIELDS, ["uuid"])

    def get_node(self, call: Call) -> Response:
        """``GET /api/cluster/nodes/{uuid}``."""
        for record in self._node_records():
            if record["uuid"] == call.params["uuid"]:
                return hal.single(call.query, record, NODE_FIELDS)
        raise hal.not_found(f"node {call.params['uuid']}")

    def _svm_records(self) -> list[dict[str, Any]]:
        ref = self.svm_ref()
        return [
            {
                **ref,
                "state": "running",
                "subtype": "default",
                "language": "c.utf_8",
                "ipspace": {"name": "Default"},
                "nfs": {"enabled": bool(self.config.nfs_addresses)},
                "iscsi": {"enabled": bool(self.config.iscsi_portals)},
                "fcp": {"enabled": self.config.fc_ports > 0},
            }
        ]

    def get_svms(self, call: Call) -> Response:
        """``GET /api/svm/svms``."""
        return hal.collection(
            call.query, "/api/svm/svms", self._svm_records(), SVM_FIELDS, ["uuid"]
        )

    def get_svm(self, call: Call) -> Response:
        """``GET /api/svm/svms/{uuid}``."""
        for record in self._svm_records():
            if record["uuid"] == call.params["uuid"]:
                return hal.single(call.query, record, SVM_FIELDS)
        raise hal.not_found(f"svm {call.params['uuid']}")

    # ---- seed ----------------------------------------------------------------------------------

    def seed(self, spec: SeedSpec) -> None:
        """Create the spec's volumes: NFS → mounted FlexVol exported to the hosts' vmk IPs;
        iSCSI → FlexVol holding LUN ``lun0`` (VMFS header) mapped to an igroup of the hosts'
        IQNs (named ``host_group``, or ``esx_cluster``); each with its snapshots. Seeded
        volumes are production. FC volumes are refused (the lab uses ONTAP for NFS and iSCSI
        only)."""
        hosts = {h.name: h for h in spec.hosts}
        for sv in spec.volumes:  # validate everything before creating anything
            if sv.protocol == "fc":
                raise ValueError(
                    f"lab: the ONTAP emulator seeds NFS and iSCSI volumes only; {sv.name} is FC"
                )
            check_volume_name(sv.name)
            if self.volume_named(sv.name):
                raise ValueError(f"lab: volume {sv.name} already exists")
            missing = [h for h in sv.present_to if h not in hosts]
            if missing:
                raise ValueError(f"lab: volume {sv.name} is presented to unknown hosts {missing}")
            if sv.host_group is not None:
                check_object_name(sv.host_group, "initiator group")
        for sv in spec.volumes:
            vol_uuid = str(uuidlib.uuid4())
            vol: dict[str, Any] = {
                "uuid": vol_uuid,
                "name": sv.name,
                "comment": "",
                "size": sv.size_mb * MB,
                "state": "online",
                "create_time": now_iso(),
                "junction": "",
                "policy_id": self.state["default_policy_id"],
                "clone": None,
                "content": f"vol-{vol_uuid}",
                "production": True,
            }
            self.state["volumes"][vol_uuid] = vol
            if sv.protocol == "nfs":
                self._seed_nfs(vol, sv, [hosts[h].vmk_ip for h in sv.present_to])
            else:
                self._seed_iscsi(vol, sv, [hosts[h].iqn for h in sv.present_to], sv.host_group)

    def _seed_nfs(self, vol: dict[str, Any], sv: Any, clients: list[str]) -> None:
        vol["junction"] = sv.junction or f"/{sv.name}"
        self.content.create(vol["content"], sv.content)
        policy = self.resolve_policy({"name": SEED_POLICY}) or self.new_policy(SEED_POLICY)
        present = {c for r in policy["rules"] for c in r["clients"]}
        for ip in clients:
            if ip in present:
                continue
            policy["rules"].append(
                {
                    **copy.deepcopy(RULE_DEFAULTS),
                    "index": max((r["index"] for r in policy["rules"]), default=0) + 1,
                    "clients": [ip],
                    "protocols": ["nfs3"],
                    "ro_rule": ["sys"],
                    "rw_rule": ["sys"],
                    "superuser": ["sys"],
                }
            )
        vol["policy_id"] = policy["id"]
        for snap in sv.snapshots:
            self._take_snapshot(
                vol, snap.name, "", create_time=iso(snap.created), source=snap.content
            )

    def _seed_iscsi(
        self, vol: dict[str, Any], sv: Any, iqns: list[str], group_name: str | None
    ) -> None:
        lun_uuid = str(uuidlib.uuid4())
        lun = {
            "uuid": lun_uuid,
            "volume": vol["uuid"],
            "logical_unit": "lun0",
            "serial": new_serial(self.taken_serials()),
            "size": sv.size_mb * MB,
            "os_type": "vmware",
            "comment": "",
            "enabled": True,
            "create_time": now_iso(),
        }
        self.state["luns"][lun_uuid] = lun
        self.content.create(vol["content"])
        shutil.copytree(sv.content, self.lun_dir(lun), symlinks=True)
        header = None
        if sv.vmfs is not None:
            header = VmfsHeader(uuid=sv.vmfs.uuid, label=sv.vmfs.label, naa=naa_of(lun["serial"]))
            write_header(self.lun_dir(lun), header)
        for snap in sv.snapshots:
            frozen = self._take_snapshot(vol, snap.name, "", create_time=iso(snap.created))
            lun_copy = self.content.path(frozen["content"]) / "lun0"
            shutil.rmtree(lun_copy)
            shutil.copytree(snap.content, lun_copy, symlinks=True)
            if header is not None:
                write_header(lun_copy, header)
        if iqns:
            group = self._seed_igroup(iqns, group_name)
            used = {m["lun_id"] for m in self.maps_of_igroup(group["uuid"])}
            number = next(n for n in range(4096) if n not in used)
            self.state["lun_maps"].append(
                {"lun": lun_uuid, "igroup": group["uuid"], "lun_id": number}
            )

    def _seed_igroup(self, iqns: list[str], group_name: str | None) -> dict[str, Any]:
        wanted = {i.lower() for i in iqns}
        for group in self.state["igroups"].values():
            if {i["name"].lower() for i in group["initiators"]} == wanted and (
                group_name is None or group["name"] == group_name
            ):
                return group
        name, n = group_name or SEED_IGROUP, 1
        while self.igroup_named(name):
            if group_name is not None:
                raise ValueError(f"lab: igroup {group_name} already exists")
            n += 1
            name = f"{SEED_IGROUP}_{n}"
        group = {
            "uuid": str(uuidlib.uuid4()),
            "name": name,
            "os_type": "vmware",
            "protocol": "iscsi",
            "comment": "",
            "delete_on_unmap": False,
            "initiators": [{"name": i, "comment": ""} for i in iqns],
        }
        self.state["igroups"][group["uuid"]] = group
        return group

    # ---- fabric --------------------------------------------------------------------------------

    @staticmethod
    def _export_protocol(group: dict[str, Any], initiator: str) -> str:
        if group["protocol"] == "fcp":
            return "fc"
        if group["protocol"] == "iscsi":
            return "iscsi"
        return "iscsi" if initiator.lower().startswith(("iqn.", "eui.")) else "fc"

    def fabric(self) -> Fabric:
        """Return what hosts see: every mapped, online LUN (with its iSCSI targets) and every
        mounted, online volume with the NFS rules of its export policy."""
        fab = Fabric(array=self.config.name, vendor=self.vendor, generation=0)
        iscsi = [
            IscsiTarget(address=lif["address"], port=3260, iqn=self.target_name())
            for lif in self.data_lifs()
            if "data_iscsi" in lif["services"]
        ]
        fc_targets = [normalize_initiator(lif["wwpn"]) for lif in self.fc_lifs()]
        for lun in sorted(self.state["luns"].values(), key=self.lun_path):
            maps = self.maps_of_lun(lun["uuid"])
            vol = self.state["volumes"][lun["volume"]]
            if not maps or not lun["enabled"] or vol["state"] != "online":
                continue
            exports = [
                LunExport(
                    initiator=normalize_initiator(init["name"]),
                    protocol=self._export_protocol(group, init["name"]),
                    lun=m["lun_id"],
                )
                for m in maps
                for group in [self.state["igroups"][m["igroup"]]]
                for init in group["initiators"]
            ]
            fab.luns.append(
                FabricLun(
                    naa=naa_of(lun["serial"]),
                    name=self.lun_path(lun),
                    content_dir=str(self.lun_dir(lun)),
                    size_mb=lun["size"] // MB,
                    vendor="NETAPP",
                    model="LUN C-Mode",
                    exports=exports,
                    iscsi_targets=iscsi if any(e.protocol == "iscsi" for e in exports) else [],
                    fc_targets=fc_targets if any(e.protocol == "fc" for e in exports) else [],
                    production=vol.get("production", False),
                )
            )
        servers = list(self.config.nfs_addresses)
        for vol in sorted(self.state["volumes"].values(), key=lambda v: v["name"]):
            if vol["state"] != "online" or not vol["junction"] or not servers:
                continue
            fab.nfs_exports.append(
                NfsExport(
                    servers=servers,
                    path=vol["junction"],
                    name=vol["name"],
                    content_dir=str(self.volume_root(vol)),
                    size_mb=vol["size"] // MB,
                    rules=self.nfs_rules(vol),
                    production=vol.get("production", False),
                )
            )
        return fab

    def nfs_rules(self, vol: dict[str, Any]) -> list[NfsRule]:
        """Return the NFSv3 access ``vol``'s export policy grants, one entry per client match.

        Rules keep the policy's order: the first one matching a client decides, as on
        ONTAP. A rule applies to NFSv3 when its protocols include nfs, nfs3 or any. A rule
        whose ``ro_rule`` does not allow sys/any denies the client (it is emitted with
        neither rw nor root); otherwise ``rw`` needs ``rw_rule`` sys/any and ``root`` needs
        ``superuser`` sys/any.
        """
        policy = self.state["export_policies"][str(vol["policy_id"])]
        allows = {"sys", "any"}
        rules = []
        for rule in policy["rules"]:
            if not {"nfs", "nfs3", "any"} & set(rule["protocols"]):
                continue
            readable = bool(allows & set(rule["ro_rule"]))
            rw = readable and bool(allows & set(rule["rw_rule"]))
            root = readable and bool(allows & set(rule["superuser"]))
            rules.extend(NfsRule(match=c, rw=rw, root=root) for c in rule["clients"])
        return rules

    # ---- lab state -----------------------------------------------------------------------------

    def lab_state(self) -> dict[str, Any]:
        """Return the common lab view of the array, with ONTAP objects under ``raw``."""

        def by_name(table: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
            return sorted(table.values(), key=lambda o: o["name"])

        volumes = []
        for vol in sorted(self.state["volumes"].values(), key=lambda v: v["name"]):
            luns = sorted(self.luns_of(vol["uuid"]), key=lambda u: u["logical_unit"])
            source = None
            if vol["clone"]:
                record = self.volume_record(vol)["clone"]
                source = f"{record['parent_volume']['name']}@{record['parent_snapshot']['name']}"
            volumes.append(
                {
                    "name": vol["name"],
                    "id": vol["uuid"],
                    "size_mb": vol["size"] // MB,
                    "naa": naa_of(luns[0]["serial"]) if luns else None,
                    "is_copy": bool(vol["clone"]),
                    "source": source,
                    "comment": vol["comment"],
                }
            )
        snapshots = [
            {
                "volume": self.state["volumes"][s["volume"]]["name"],
                "name": s["name"],
                "id": s["uuid"],
                "created": s["create_time"],
                "read_only": True,
            }
            for vol in sorted(self.state["volumes"].values(), key=lambda v: v["name"])
            for s in self.snapshots_of(vol["uuid"])
        ]
        kind = {"iscsi": "iscsi", "fcp": "fc", "mixed": "mixed"}
        hosts = [
            {
                "name": g["name"],
                "initiators": [normalize_initiator(i["name"]) for i in g["initiators"]],
                "protocol": kind[g["protocol"]],
            }
            for g in sorted(self.state["igroups"].values(), key=lambda g: g["name"])
        ]
        exports = [
            {
                "volume": self.state["volumes"][self.state["luns"][m["lun"]]["volume"]]["name"],
                "host": self.state["igroups"][m["igroup"]]["name"],
                "lun": m["lun_id"],
                "protocol": kind[self.state["igroups"][m["igroup"]]["protocol"]],
            }
            for m in self.state["lun_maps"]
        ]
        nfs_exports = [
            {
                "volume": vol["name"],
                "path": vol["junction"],
                "policy": self.state["export_policies"][str(vol["policy_id"])]["name"],
                "rules": [r.model_dump() for r in self.nfs_rules(vol)],
            }
            for vol in sorted(self.state["volumes"].values(), key=lambda v: v["name"])
            if vol["junction"] and vol["state"] == "online"
        ]
        return {
            "array": self.config.name,
            "vendor": self.vendor,
            "volumes": volumes,
            "snapshots": snapshots,
            "copies": [v for v in volumes if v["is_copy"]],
            "hosts": hosts,
            "exports": exports,
            "nfs_exports": nfs_exports,
            "raw": {
                "cluster": self._cluster_record(),
                "svm": self.svm_ref(),
                "volumes": [self.volume_record(v) for v in by_name(self.state["volumes"])],
                "snapshots": [
                    self.snapshot_record(s)
                    for v in by_name(self.state["volumes"])
                    for s in self.snapshots_of(v["uuid"])
                ],
                "luns": sorted(
                    (
                        {
                            **self.lun_record(u),
                            "naa": naa_of(u["serial"]),
                            "content_dir": str(self.lun_dir(u)),
                        }
                        for u in self.state["luns"].values()
                    ),
                    key=lambda r: r["name"],
                ),
                "igroups": [self.igroup_record(g) for g in by_name(self.state["igroups"])],
                "lun_maps": sorted(
                    (self.lun_map_record(m) for m in self.state["lun_maps"]),
                    key=lambda r: (r["lun"]["name"], r["igroup"]["name"]),
                ),
                "export_policies": [
                    self.policy_record(p)
                    for p in sorted(self.state["export_policies"].values(), key=lambda p: p["id"])
                ],
                "iscsi_target": self.target_name(),
                "jobs_pending": [
                    j
                    for j in self.state["job_order"]
                    if self.state["jobs"][j]["state"] in ("queued", "running")
                ],
            },
        }
