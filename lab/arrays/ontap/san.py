"""ONTAP SAN presentation: igroups and their initiators, LUN maps, iSCSI service, data LIFs.

Decisions where the reference is silent or says "⚠ verify":

- mapping a LUN to an igroup it is already mapped to → 409 (lab code 5374914); a LUN number
  already used by the igroup, or by another igroup holding one of the same initiators → 409
  (5374915); mapping a LUN to a second igroup that shares an initiator → 409 (5374916),
  following "each LUN can be mapped to an initiator only once";
- deleting a mapped igroup, or removing an initiator from a mapped igroup, needs
  ``allow_delete_while_mapped=true`` (otherwise 409, lab code 5374918);
- adding an initiator already in the igroup → 409 code 1 (Forklift treats 409 as "already
  there"); FC initiators must be WWPNs written as 8 colon-separated hex pairs;
- an igroup with ``delete_on_unmap`` is deleted when its last LUN map is deleted.
"""

from __future__ import annotations

import re
import uuid as uuidlib
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from starlette.responses import Response

from lab.arrays.base import Call
from lab.arrays.ontap import hal
from lab.arrays.ontap.common import check_object_name
from lab.arrays.ontap.hal import OntapError, expand, invalid

IGROUP_FIELDS = hal.fieldset(
    "uuid name comment os_type protocol delete_on_unmap svm.name svm.uuid "
    "initiators.name initiators.comment "
    "lun_maps.logical_unit_number lun_maps.lun.name lun_maps.lun.uuid"
)
IGROUP_POST = hal.fieldset(
    "name comment os_type protocol delete_on_unmap svm.name svm.uuid "
    "initiators.name initiators.comment"
)
IGROUP_PATCH = hal.fieldset("name comment os_type delete_on_unmap")
INITIATOR_FIELDS = hal.fieldset("name comment igroup.name igroup.uuid")
INITIATOR_POST = hal.fieldset("name comment records.name records.comment")
LUN_MAP_FIELDS = hal.fieldset(
    "logical_unit_number svm.name svm.uuid lun.name lun.uuid "
    "igroup.name igroup.uuid igroup.protocol igroup.os_type igroup.initiators"
)
LUN_MAP_POST = hal.fieldset(
    "logical_unit_number svm.name svm.uuid lun.name lun.uuid igroup.name igroup.uuid"
)
ISCSI_FIELDS = hal.fieldset("svm.name svm.uuid enabled target.name target.alias")
IP_FIELDS = hal.fieldset(
    "uuid name enabled state scope services ip.address ip.netmask ip.family "
    "svm.name svm.uuid ipspace.name service_policy.name "
    "location.home_node.name location.home_port.name location.node.name location.port.name "
    "location.is_home"
)
FC_FIELDS = hal.fieldset(
    "uuid name wwpn wwnn enabled state data_protocol port_address svm.name svm.uuid "
    "location.node.name location.port.name"
)
OS_TYPES = frozenset(
    ["aix", "hpux", "hyper_v", "linux", "netware", "openvms", "solaris", "vmware", "windows", "xen"]
)
PROTOCOLS = frozenset({"iscsi", "fcp", "mixed"})

_IQN = re.compile(r"^iqn\.\d{4}-\d{2}\.[A-Za-z0-9][A-Za-z0-9.\-]*(:\S+)?$")
_EUI = re.compile(r"^eui\.[0-9A-Fa-f]{16}$")
_WWPN = re.compile(r"^([0-9A-Fa-f]{2}:){7}[0-9A-Fa-f]{2}$")


def initiator_kind(name: str) -> str | None:
    """Return "iscsi" for an IQN/EUI, "fcp" for a WWPN, None for anything else."""
    if _IQN.match(name) or _EUI.match(name):
        return "iscsi"
    if _WWPN.match(name):
        return "fcp"
    return None


class SanMixin:
    """SAN objects for :class:`lab.arrays.ontap.OntapEmulator`."""

    state: dict[str, Any]
    config: Any
    mark_fabric_changed: Callable[[], None]
    svm_ref: Callable[[], dict[str, Any]]
    check_svm: Callable[..., None]
    lun_path: Callable[[dict[str, Any]], str]
    lun_named: Callable[[str], dict[str, Any] | None]

    def san_routes(self) -> list[tuple[str, str, Callable[[Call], Response]]]:
        """Return the SAN and network endpoints."""
        ig = "/api/protocols/san/igroups"
        return [
            ("GET", ig, self.get_igroups),
            ("POST", ig, self.post_igroup),
            ("GET", ig + "/{uuid}", self.get_igroup),
            ("PATCH", ig + "/{uuid}", self.patch_igroup),
            ("DELETE", ig + "/{uuid}", self.delete_igroup),
            ("GET", ig + "/{uuid}/initiators", self.get_initiators),
            ("POST", ig + "/{uuid}/initiators", self.post_initiators),
            ("GET", ig + "/{uuid}/initiators/{name}", self.get_initiator),
            ("DELETE", ig + "/{uuid}/initiators/{name}", self.delete_initiator),
            ("GET", "/api/protocols/san/lun-maps", self.get_lun_maps),
            ("POST", "/api/protocols/san/lun-maps", self.post_lun_map),
            ("GET", "/api/protocols/san/lun-maps/{lun}/{igroup}", self.get_lun_map),
            ("DELETE", "/api/protocols/san/lun-maps/{lun}/{igroup}", self.delete_lun_map),
            ("GET", "/api/protocols/san/iscsi/services", self.get_iscsi_services),
            ("GET", "/api/protocols/san/iscsi/services/{svm}", self.get_iscsi_service),
            ("GET", "/api/network/ip/interfaces", self.get_ip_interfaces),
            ("GET", "/api/network/ip/interfaces/{uuid}", self.get_ip_interface),
            ("GET", "/api/network/fc/interfaces", self.get_fc_interfaces),
            ("GET", "/api/network/fc/interfaces/{uuid}", self.get_fc_interface),
        ]

    # ---- lookups -------------------------------------------------------------------------------

    def maps_of_lun(self, lun_uuid: str) -> list[dict[str, Any]]:
        """Return the LUN maps of LUN ``lun_uuid``."""
        return [m for m in self.state["lun_maps"] if m["lun"] == lun_uuid]

    def maps_of_igroup(self, igroup_uuid: str) -> list[dict[str, Any]]:
        """Return the LUN maps of igroup ``igroup_uuid``."""
        return [m for m in self.state["lun_maps"] if m["igroup"] == igroup_uuid]

    def igroup_named(self, name: str) -> dict[str, Any] | None:
        """Return the igroup called ``name``, if any."""
        return next((g for g in self.state["igroups"].values() if g["name"] == name), None)

    def _igroup(self, igroup_uuid: str) -> dict[str, Any]:
        group = self.state["igroups"].get(igroup_uuid)
        if group is None:
            raise OntapError(
                404,
                f"The initiator group {igroup_uuid} does not exist.",
                hal.IGROUP_NOT_FOUND,
                "uuid",
            )
        return group

    def target_name(self) -> str:
        """Return the SVM's iSCSI target IQN."""
        svm = self.state["svm"]
        return f"iqn.1992-08.com.netapp:sn.{svm['uuid'].replace('-', '')}:vs.{svm['vs_id']}"

    def data_lifs(self) -> list[dict[str, Any]]:
        """Return the SVM's data LIFs (one per data address) with their services."""
        services: dict[str, list[str]] = {}
        for address in self.config.nfs_addresses:
            services.setdefault(address, ["data_core"]).append("data_nfs")
        for address in self.config.iscsi_portals:
            services.setdefault(address, ["data_core"]).append("data_iscsi")
        lifs = []
        for i, (address, svc) in enumerate(services.items(), start=1):
            kind = "nfs" if "data_nfs" in svc else "iscsi"
            lifs.append(
                {
                    "uuid": str(
                        uuidlib.uuid5(uuidlib.UUID(self.state["cluster"]["uuid"]), address)
                    ),
                    "name": f"{self.state['svm']['name']}_{kind}_lif{i}",
                    "address": address,
                    "services": svc,
                    "port": f"e0{chr(ord('c') + i - 1)}",
                }
            )
        return lifs

    def fc_lifs(self) -> list[dict[str, Any]]:
        """Return the SVM's FC LIFs (``config.fc_ports`` of them) with their WWPNs."""
        seed = uuidlib.UUID(self.state["svm"]["uuid"]).bytes
        lifs = []
        for i in range(self.config.fc_ports):
            tail = ":".join(f"{b:02x}" for b in seed[:3])
            lifs.append(
                {
                    "uuid": str(
                        uuidlib.uuid5(uuidlib.UUID(self.state["cluster"]["uuid"]), f"fc{i}")
                    ),
                    "name": f"{self.state['svm']['name']}_fc_lif{i + 1}",
                    "wwpn": f"20:{i + 1:02x}:00:a0:98:{tail}",
                    "wwnn": f"20:00:00:a0:98:{tail}",
                    "port": f"{i}a",
                }
            )
        return lifs

    # ---- records ------------------------------------------------------------------------------

    def igroup_record(self, group: dict[str, Any]) -> dict[str, Any]:
        """Return ``group`` as ONTAP's igroup object."""
        record: dict[str, Any] = {
            "uuid": group["uuid"],
            "name": group["name"],
            "os_type": group["os_type"],
            "protocol": group["protocol"],
            "delete_on_unmap": group["delete_on_unmap"],
            "svm": self.svm_ref(),
            "initiators": [self._initiator_record(group, i) for i in group["initiators"]],
            "lun_maps": [
                {
                    "logical_unit_number": m["lun_id"],
                    "lun": {
                        "name": self.lun_path(self.state["luns"][m["lun"]]),
                        "uuid": m["lun"],
                    },
                }
                for m in self.maps_of_igroup(group["uuid"])
            ],
            "_links": {"self": {"href": f"/api/protocols/san/igroups/{group['uuid']}"}},
        }
        if group["comment"]:
            record["comment"] = group["comment"]
        return record

    @staticmethod
    def _initiator_record(group: dict[str, Any], init: dict[str, Any]) -> dict[str, Any]:
        record: dict[str, Any] = {
            "name": init["name"],
            "igroup": {"name": group["name"], "uuid": group["uuid"]},
            "_links": {
                "self": {
                    "href": f"/api/protocols/san/igroups/{group['uuid']}/initiators/"
                    + quote(init["name"], safe="")
                }
            },
        }
        if init.get("comment"):
            record["comment"] = init["comment"]
        return record

    def lun_map_record(self, m: dict[str, Any]) -> dict[str, Any]:
        """Return LUN map ``m`` as ONTAP's lun-map object."""
        lun = self.state["luns"][m["lun"]]
        group = self.state["igroups"][m["igroup"]]
        return {
            "svm": self.svm_ref(),
            "lun": {
                "name": self.lun_path(lun),
                "uuid": lun["uuid"],
                "_links": {"self": {"href": f"/api/storage/luns/{lun['uuid']}"}},
            },
            "igroup": {
                "name": group["name"],
                "uuid": group["uuid"],
                "protocol": group["protocol"],
                "os_type": group["os_type"],
                "initiators": [i["name"] for i in group["initiators"]],
                "_links": {"self": {"href": f"/api/protocols/san/igroups/{group['uuid']}"}},
            },
            "logical_unit_number": m["lun_id"],
            "_links": {
                "self": {"href": f"/api/protocols/san/lun-maps/{lun['uuid']}/{group['uuid']}"}
            },
        }

    # ---- igroups ------------------------------------------------------------------------------

    def get_igroups(self, call: Call) -> Response:
        """``GET /api/protocols/san/igroups`` (e.g. ``initiators.name=<iqn>``)."""
        records = [self.igroup_record(g) for g in self.state["igroups"].values()]
        records.sort(key=lambda r: r["name"])
        path = "/api/protocols/san/igroups"
        return hal.collection(call.query, path, records, IGROUP_FIELDS, ["uuid"])

    def get_igroup(self, call: Call) -> Response:
        """``GET /api/protocols/san/igroups/{uuid}``."""
        group = self._igroup(call.params["uuid"])
        return hal.single(call.query, self.igroup_record(group), IGROUP_FIELDS)

    def post_igroup(self, call: Call) -> Response:
        """``POST /api/protocols/san/igroups`` (synchronous, 201)."""
        body = expand(call.body)
        hal.check_body(body, IGROUP_POST)
        self.check_svm(call, body)
        name = check_object_name(body.get("name"), "initiator group")
        os_type = body.get("os_type")
        if os_type not in OS_TYPES:
            raise invalid(f'The value "{os_type}" is invalid for field "os_type".', "os_type")
        protocol = body.get("protocol", "mixed")
        if protocol not in PROTOCOLS:
            raise invalid(f'The value "{protocol}" is invalid for field "protocol".', "protocol")
        if self.igroup_named(name):
            raise OntapError(
                409, f'An initiator group named "{name}" already exists.', hal.DUPLICATE, "name"
            )
        group = {
            "uuid": str(uuidlib.uuid4()),
            "name": name,
            "os_type": os_type,
            "protocol": protocol,
            "comment": str(body.get("comment", "")),
            "delete_on_unmap": hal.as_bool(body.get("delete_on_unmap", False), "delete_on_unmap"),
            "initiators": [],
        }
        for item in body.get("initiators") or []:
            self._add_initiator(group, item if isinstance(item, dict) else {"name": item})
        self.state["igroups"][group["uuid"]] = group
        content: dict[str, Any] = {}
        if hal.query_bool(call.query, "return_records"):
            content = {"num_records": 1, "records": [self.igroup_record(group)]}
        location = f"/api/protocols/san/igroups/{group['uuid']}"
        return hal.hal(content, 201, {"Location": location})

    def _add_initiator(self, group: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise invalid('Missing value for required field "initiators.name".', "initiators.name")
        kind = initiator_kind(name)
        if kind is None or (group["protocol"] != "mixed" and kind != group["protocol"]):
            raise invalid(
                f'The initiator "{name}" is not a valid {group["protocol"]} initiator name '
                "(iSCSI: iqn.yyyy-mm.domain:name or eui.<16 hex>; FC: WWPN as 8 "
                "colon-separated hex pairs).",
                "initiators.name",
            )
        if any(i["name"].lower() == name.lower() for i in group["initiators"]):
            raise OntapError(
                409,
                f'The initiator "{name}" is already in initiator group "{group["name"]}".',
                hal.DUPLICATE,
                "initiators.name",
            )
        init = {"name": name, "comment": str(item.get("comment", ""))}
        group["initiators"].append(init)
        return init

    def patch_igroup(self, call: Call) -> Response:
        """``PATCH /api/protocols/san/igroups/{uuid}``: name, comment, os_type, delete_on_unmap."""
        group = self._igroup(call.params["uuid"])
        body = expand(call.body)
        hal.check_body(body, IGROUP_PATCH)
        if "name" in body:
            name = check_object_name(body["name"], "initiator group")
            other = self.igroup_named(name)
            if other is not None and other is not group:
                raise OntapError(
                    409, f'An initiator group named "{name}" already exists.', hal.DUPLICATE, "name"
                )
            group["name"] = name
        if "os_type" in body:
            if body["os_type"] not in OS_TYPES:
                raise invalid(f'The value "{body["os_type"]}" is invalid for field "os_type".')
            group["os_type"] = body["os_type"]
        if "comment" in body:
            group["comment"] = str(body["comment"])
        if "delete_on_unmap" in body:
            group["delete_on_unmap"] = hal.as_bool(body["delete_on_unmap"], "delete_on_unmap")
        return hal.hal({})

    def delete_igroup(self, call: Call) -> Response:
        """``DELETE /api/protocols/san/igroups/{uuid}``."""
        group = self._igroup(call.params["uuid"])
        maps = self.maps_of_igroup(group["uuid"])
        if maps and not hal.query_bool(call.query, "allow_delete_while_mapped"):
            raise OntapError(
                409,
                f'Initiator group "{group["name"]}" is mapped to LUNs. Unmap it first, or set '
                '"allow_delete_while_mapped" to true.',
                hal.IGROUP_MAPPED,
                "uuid",
            )
        for m in maps:
            self.state["lun_maps"].remove(m)
        if maps:
            self.mark_fabric_changed()
        del self.state["igroups"][group["uuid"]]
        return hal.hal({})

    def get_initiators(self, call: Call) -> Response:
        """``GET /api/protocols/san/igroups/{uuid}/initiators``."""
        group = self._igroup(call.params["uuid"])
        records = [self._initiator_record(group, i) for i in group["initiators"]]
        path = f"/api/protocols/san/igroups/{group['uuid']}/initiators"
        return hal.collection(call.query, path, records, INITIATOR_FIELDS, ["name"])

    def _initiator(self, group: dict[str, Any], name: str) -> dict[str, Any]:
        init = next((i for i in group["initiators"] if i["name"].lower() == name.lower()), None)
        if init is None:
            raise hal.not_found(f'initiator "{name}" in initiator group "{group["name"]}"', "name")
        return init

    def get_initiator(self, call: Call) -> Response:
        """``GET /api/protocols/san/igroups/{uuid}/initiators/{name}``."""
        group = self._igroup(call.params["uuid"])
        init = self._initiator(group, call.params["name"])
        return hal.single(call.query, self._initiator_record(group, init), INITIATOR_FIELDS)

    def post_initiators(self, call: Call) -> Response:
        """``POST .../igroups/{uuid}/initiators`` with ``{"name"}`` or ``{"records": [...]}``."""
        group = self._igroup(call.params["uuid"])
        body = expand(call.body)
        hal.check_body(body, INITIATOR_POST)
        items = body.get("records", [body])
        if not isinstance(items, list) or not items:
            raise invalid('"records" must be a non-empty list of initiators.', "records")
        # Validate everything before changing anything.
        trial = {**group, "initiators": list(group["initiators"])}
        added = [self._add_initiator(trial, item) for item in items]
        group["initiators"] = trial["initiators"]
        if self.maps_of_igroup(group["uuid"]):
            self.mark_fabric_changed()
        content: dict[str, Any] = {}
        if hal.query_bool(call.query, "return_records"):
            records = [self._initiator_record(group, i) for i in added]
            content = {"num_records": len(records), "records": records}
        headers = None
        if len(added) == 1:
            location = f"/api/protocols/san/igroups/{group['uuid']}/initiators/" + quote(
                added[0]["name"], safe=""
            )
            headers = {"Location": location}
        return hal.hal(content, 201, headers)

    def delete_initiator(self, call: Call) -> Response:
        """``DELETE .../igroups/{uuid}/initiators/{name}``."""
        group = self._igroup(call.params["uuid"])
        init = self._initiator(group, call.params["name"])
        mapped = bool(self.maps_of_igroup(group["uuid"]))
        if mapped and not hal.query_bool(call.query, "allow_delete_while_mapped"):
            raise OntapError(
                409,
                f'Initiator group "{group["name"]}" is mapped to LUNs; set '
                '"allow_delete_while_mapped" to true to remove an initiator from it.',
                hal.IGROUP_MAPPED,
                "name",
            )
        group["initiators"].remove(init)
        if mapped:
            self.mark_fabric_changed()
        return hal.hal({})

    # ---- LUN maps -----------------------------------------------------------------------------

    def get_lun_maps(self, call: Call) -> Response:
        """``GET /api/protocols/san/lun-maps`` (e.g. ``lun.name=...&igroup.name=...``)."""
        records = [self.lun_map_record(m) for m in self.state["lun_maps"]]
        records.sort(key=lambda r: (r["lun"]["name"], r["igroup"]["name"]))
        keys = ["lun.uuid", "lun.name", "igroup.uuid", "igroup.name"]
        path = "/api/protocols/san/lun-maps"
        return hal.collection(call.query, path, records, LUN_MAP_FIELDS, keys)

    def _map(self, lun_uuid: str, igroup_uuid: str) -> dict[str, Any]:
        if lun_uuid not in self.state["luns"]:
            raise OntapError(
                404,
                "The specified LUN does not exist or is not accessible to the caller.",
                hal.LUN_NOT_FOUND,
                "lun.uuid",
            )
        if igroup_uuid not in self.state["igroups"]:
            raise OntapError(
                404,
                "The specified initiator group does not exist, is not accessible to the caller, "
                "or is not in the same SVM as the specified LUN.",
                hal.IGROUP_NOT_FOUND,
                "igroup.uuid",
            )
        for m in self.state["lun_maps"]:
            if m["lun"] == lun_uuid and m["igroup"] == igroup_uuid:
                return m
        raise OntapError(
            404, "The specified LUN map does not exist.", hal.LUN_MAP_NOT_FOUND, "igroup.uuid"
        )

    def get_lun_map(self, call: Call) -> Response:
        """``GET /api/protocols/san/lun-maps/{lun.uuid}/{igroup.uuid}``."""
        m = self._map(call.params["lun"], call.params["igroup"])
        return hal.single(call.query, self.lun_map_record(m), LUN_MAP_FIELDS)

    def post_lun_map(self, call: Call) -> Response:
        """``POST /api/protocols/san/lun-maps``: map a LUN to an igroup (synchronous, 201)."""
        body = expand(call.body)
        hal.check_body(body, LUN_MAP_POST)
        self.check_svm(call, body)
        lun = self._resolve(body, "lun", self.state["luns"], self.lun_named)
        if lun is None:
            raise OntapError(
                404,
                "The specified LUN does not exist or is not accessible to the caller.",
                hal.LUN_NOT_FOUND,
                "lun",
            )
        group = self._resolve(body, "igroup", self.state["igroups"], self.igroup_named)
        if group is None:
            raise OntapError(
                404,
                "The specified initiator group does not exist, is not accessible to the caller, "
                "or is not in the same SVM as the specified LUN.",
                hal.IGROUP_NOT_FOUND,
                "igroup",
            )
        if any(
            m["lun"] == lun["uuid"] and m["igroup"] == group["uuid"] for m in self.state["lun_maps"]
        ):
            raise OntapError(
                409,
                f'LUN "{self.lun_path(lun)}" is already mapped to initiator group '
                f'"{group["name"]}".',
                hal.LUN_ALREADY_MAPPED,
                "igroup",
            )
        names = {i["name"].lower() for i in group["initiators"]}
        used: set[int] = {m["lun_id"] for m in self.maps_of_igroup(group["uuid"])}
        for m in self.state["lun_maps"]:
            other = self.state["igroups"][m["igroup"]]
            shared = names & {i["name"].lower() for i in other["initiators"]}
            if not shared:
                continue
            if m["lun"] == lun["uuid"]:
                raise OntapError(
                    409,
                    f'Initiator "{sorted(shared)[0]}" is already mapped to LUN '
                    f'"{self.lun_path(lun)}" through initiator group "{other["name"]}".',
                    hal.INITIATOR_ALREADY_MAPPED,
                    "igroup",
                )
            used.add(m["lun_id"])
        if "logical_unit_number" in body:
            number = body["logical_unit_number"]
            if isinstance(number, bool) or not isinstance(number, int) or not 0 <= number <= 4095:
                raise invalid(
                    f'The value "{number}" is invalid for field "logical_unit_number" (0-4095).',
                    "logical_unit_number",
                )
            if number in used:
                raise OntapError(
                    409,
                    f"LUN number {number} is already in use for initiator group "
                    f'"{group["name"]}" or one of its initiators.',
                    hal.LUN_NUMBER_IN_USE,
                    "logical_unit_number",
                )
        else:
            number = next(n for n in range(4096) if n not in used)
        m = {"lun": lun["uuid"], "igroup": group["uuid"], "lun_id": number}
        self.state["lun_maps"].append(m)
        self.mark_fabric_changed()
        content: dict[str, Any] = {}
        if hal.query_bool(call.query, "return_records"):
            content = {"num_records": 1, "records": [self.lun_map_record(m)]}
        location = f"/api/protocols/san/lun-maps/{lun['uuid']}/{group['uuid']}"
        return hal.hal(content, 201, {"Location": location})

    @staticmethod
    def _resolve(
        body: dict[str, Any],
        key: str,
        table: dict[str, dict[str, Any]],
        by_name: Callable[[str], dict[str, Any] | None],
    ) -> dict[str, Any] | None:
        ref = body.get(key)
        if not isinstance(ref, dict) or not ({"uuid", "name"} & ref.keys()):
            raise invalid(f'Missing value for required field "{key}.name" or "{key}.uuid".', key)
        found = table.get(ref["uuid"]) if "uuid" in ref else by_name(str(ref["name"]))
        both = "name" in ref and "uuid" in ref
        if found is not None and both and by_name(str(ref["name"])) is not found:
            return None
        return found

    def delete_lun_map(self, call: Call) -> Response:
        """``DELETE /api/protocols/san/lun-maps/{lun.uuid}/{igroup.uuid}`` (5374922: no map)."""
        m = self._map(call.params["lun"], call.params["igroup"])
        self.state["lun_maps"].remove(m)
        group = self.state["igroups"][m["igroup"]]
        if group["delete_on_unmap"] and not self.maps_of_igroup(group["uuid"]):
            del self.state["igroups"][group["uuid"]]
        self.mark_fabric_changed()
        return hal.hal({})

    # ---- iSCSI service and LIFs --------------------------------------------------------------

    def _iscsi_records(self) -> list[dict[str, Any]]:
        if not self.config.iscsi_portals:
            return []
        svm = self.svm_ref()
        return [
            {
                "svm": svm,
                "enabled": True,
                "target": {"name": self.target_name(), "alias": svm["name"]},
                "_links": {"self": {"href": f"/api/protocols/san/iscsi/services/{svm['uuid']}"}},
            }
        ]

    def get_iscsi_services(self, call: Call) -> Response:
        """``GET /api/protocols/san/iscsi/services`` (``target.name``)."""
        path = "/api/protocols/san/iscsi/services"
        keys = ["svm.uuid", "svm.name"]
        return hal.collection(call.query, path, self._iscsi_records(), ISCSI_FIELDS, keys)

    def get_iscsi_service(self, call: Call) -> Response:
        """``GET /api/protocols/san/iscsi/services/{svm.uuid}``."""
        for record in self._iscsi_records():
            if record["svm"]["uuid"] == call.params["svm"]:
                return hal.single(call.query, record, ISCSI_FIELDS)
        raise hal.not_found(f"iSCSI service of svm {call.params['svm']}", "svm.uuid")

    def _ip_records(self) -> list[dict[str, Any]]:
        node = self.state["node"]["name"]
        records = []
        for lif in self.data_lifs():
            blocks = "data_iscsi" in lif["services"]
            policy = "default-data-blocks" if blocks else "default-data-files"
            records.append(
                {
                    "uuid": lif["uuid"],
                    "name": lif["name"],
                    "ip": {"address": lif["address"], "netmask": "24", "family": "ipv4"},
                    "enabled": True,
                    "state": "up",
                    "scope": "svm",
                    "services": lif["services"],
                    "svm": self.svm_ref(),
                    "ipspace": {"name": "Default"},
                    "service_policy": {"name": policy},
                    "location": {
                        "home_node": {"name": node},
                        "home_port": {"name": lif["port"]},
                        "node": {"name": node},
                        "port": {"name": lif["port"]},
                        "is_home": True,
                    },
                    "_links": {"self": {"href": f"/api/network/ip/interfaces/{lif['uuid']}"}},
                }
            )
        return records

    def get_ip_interfaces(self, call: Call) -> Response:
        """``GET /api/network/ip/interfaces`` (filters ``services``, ``ip.address``...)."""
        path = "/api/network/ip/interfaces"
        return hal.collection(call.query, path, self._ip_records(), IP_FIELDS, ["uuid"])

    def get_ip_interface(self, call: Call) -> Response:
        """``GET /api/network/ip/interfaces/{uuid}``."""
        for record in self._ip_records():
            if record["uuid"] == call.params["uuid"]:
                return hal.single(call.query, record, IP_FIELDS)
        raise hal.not_found(f"ip interface {call.params['uuid']}")

    def _fc_records(self) -> list[dict[str, Any]]:
        node = self.state["node"]["name"]
        return [
            {
                "uuid": lif["uuid"],
                "name": lif["name"],
                "wwpn": lif["wwpn"],
                "wwnn": lif["wwnn"],
                "enabled": True,
                "state": "up",
                "data_protocol": "fcp",
                "svm": self.svm_ref(),
                "location": {"node": {"name": node}, "port": {"name": lif["port"]}},
                "_links": {"self": {"href": f"/api/network/fc/interfaces/{lif['uuid']}"}},
            }
            for lif in self.fc_lifs()
        ]

    def get_fc_interfaces(self, call: Call) -> Response:
        """``GET /api/network/fc/interfaces`` (``wwpn``)."""
        path = "/api/network/fc/interfaces"
        return hal.collection(call.query, path, self._fc_records(), FC_FIELDS, ["uuid"])

    def get_fc_interface(self, call: Call) -> Response:
        """``GET /api/network/fc/interfaces/{uuid}``."""
        for record in self._fc_records():
            if record["uuid"] == call.params["uuid"]:
                return hal.single(call.query, record, FC_FIELDS)
        raise hal.not_found(f"fc interface {call.params['uuid']}")
