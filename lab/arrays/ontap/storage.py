"""ONTAP storage objects: FlexVol/FlexClone volumes, snapshots and LUNs.

Content layout: a volume's content is one directory (``vol-<uuid>``); each LUN is the
sub-directory ``<logical_unit>`` of its volume, so a snapshot (``snap-<uuid>``, a frozen copy
of the volume directory) and a FlexClone (a copy of one snapshot) carry their LUNs with them.

Decisions where the reference is silent or says "⚠ verify":

- a duplicate volume or snapshot name is a job failure (code 1), not a synchronous 409;
- deleting a volume fails (job failure) while a FlexClone depends on one of its snapshots,
  while one of its LUNs is mapped, or while it is mounted (``nas.path`` not empty: the ONTAP
  DELETE doc says to unmount first);
- a FlexClone's LUNs get new serial numbers (new NAA ids), are online and unmapped;
- a FlexClone inherits its parent's export policy unless the request names one, and is not
  mounted (not NFS-exported) unless the request gives ``nas.path``;
- without ``clone.parent_snapshot`` ONTAP takes a new snapshot of the parent, named
  ``clone_<clone>.<timestamp>.0``, and clones that;
- a volume's ``nas.path`` is absent from its record while it is not mounted.
"""

from __future__ import annotations

import shutil
import uuid as uuidlib
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from starlette.responses import Response

from lab.arrays.base import Call
from lab.arrays.ontap import hal
from lab.arrays.ontap.common import (
    MB,
    check_object_name,
    check_volume_name,
    new_serial,
    now_iso,
)
from lab.arrays.ontap.hal import OntapError, expand, get_in, invalid, not_found
from lab.arrays.ontap.jobs import JobFailure

VOLUME_FIELDS = hal.fieldset(
    "uuid name comment size state type style create_time language "
    "svm.name svm.uuid "
    "nas.path nas.security_style nas.export_policy.name nas.export_policy.id "
    "clone.is_flexclone clone.parent_volume.name clone.parent_volume.uuid "
    "clone.parent_snapshot.name clone.parent_snapshot.uuid "
    "clone.parent_svm.name clone.parent_svm.uuid "
    "space.size space.available space.used aggregates.name aggregates.uuid "
    "snapshot_policy.name guarantee.type"
)
VOLUME_POST = hal.fieldset(
    "name comment size state type style language svm.name svm.uuid "
    "aggregates.name aggregates.uuid snapshot_policy.name guarantee.type "
    "nas.path nas.security_style nas.export_policy.name nas.export_policy.id "
    "clone.is_flexclone clone.parent_volume.name clone.parent_volume.uuid "
    "clone.parent_snapshot.name clone.parent_snapshot.uuid "
    "clone.parent_svm.name clone.parent_svm.uuid"
)
VOLUME_PATCH = hal.fieldset(
    "name comment size state snapshot_policy.name guarantee.type "
    "nas.path nas.security_style nas.export_policy.name nas.export_policy.id"
)
SNAPSHOT_FIELDS = hal.fieldset(
    "uuid name comment create_time state size snapmirror_label expiry_time "
    "volume.name volume.uuid svm.name svm.uuid"
)
SNAPSHOT_POST = hal.fieldset("name comment snapmirror_label expiry_time")
LUN_FIELDS = hal.fieldset(
    "uuid name comment serial_number os_type enabled create_time class "
    "svm.name svm.uuid location.logical_unit location.volume.name location.volume.uuid "
    "space.size space.used status.state status.mapped status.read_only status.container_state "
    "lun_maps.igroup.name lun_maps.igroup.uuid lun_maps.logical_unit_number"
)
LUN_POST = hal.fieldset(
    "name comment os_type space.size svm.name svm.uuid "
    "location.logical_unit location.volume.name location.volume.uuid"
)
LUN_PATCH = hal.fieldset("comment enabled")
LUN_OS_TYPES = frozenset(
    [
        "aix",
        "hpux",
        "hyper_v",
        "linux",
        "netware",
        "openvms",
        "solaris",
        "solaris_efi",
        "vmware",
        "windows",
        "windows_2008",
        "windows_gpt",
        "xen",
    ]
)
DEFAULT_VOLUME_SIZE = 20 * MB


class StorageMixin:
    """Volumes, snapshots and LUNs for :class:`lab.arrays.ontap.OntapEmulator`."""

    state: dict[str, Any]
    content: Any
    mark_fabric_changed: Callable[[], None]
    submit_job: Callable[..., Response]
    svm_ref: Callable[[], dict[str, Any]]
    check_svm: Callable[..., None]
    resolve_policy: Callable[[dict[str, Any]], dict[str, Any] | None]
    maps_of_lun: Callable[[str], list[dict[str, Any]]]

    def storage_routes(self) -> list[tuple[str, str, Callable[[Call], Response]]]:
        """Return the volume, snapshot and LUN endpoints."""
        vol = "/api/storage/volumes/{uuid}"
        return [
            ("GET", "/api/storage/volumes", self.get_volumes),
            ("POST", "/api/storage/volumes", self.post_volume),
            ("GET", vol, self.get_volume),
            ("PATCH", vol, self.patch_volume),
            ("DELETE", vol, self.delete_volume),
            ("GET", vol + "/snapshots", self.get_snapshots),
            ("POST", vol + "/snapshots", self.post_snapshot),
            ("GET", vol + "/snapshots/{snap}", self.get_snapshot),
            ("DELETE", vol + "/snapshots/{snap}", self.delete_snapshot),
            ("GET", "/api/storage/luns", self.get_luns),
            ("POST", "/api/storage/luns", self.post_lun),
            ("GET", "/api/storage/luns/{uuid}", self.get_lun),
            ("PATCH", "/api/storage/luns/{uuid}", self.patch_lun),
            ("DELETE", "/api/storage/luns/{uuid}", self.delete_lun),
        ]

    def job_operations(self) -> dict[str, Callable[[dict[str, Any]], str | None]]:
        """Return the job operations by kind."""
        return {
            "volume_create": self._job_volume_create,
            "volume_patch": self._job_volume_patch,
            "volume_delete": self._job_volume_delete,
            "snapshot_create": self._job_snapshot_create,
            "snapshot_delete": self._job_snapshot_delete,
        }

    # ---- lookups -------------------------------------------------------------------------------

    def volume_root(self, vol: dict[str, Any]) -> Path:
        """Return the absolute directory holding ``vol``'s content."""
        return self.content.path(vol["content"]).resolve()

    def lun_dir(self, lun: dict[str, Any]) -> Path:
        """Return the absolute directory holding ``lun``'s content."""
        return self.volume_root(self.state["volumes"][lun["volume"]]) / lun["logical_unit"]

    def lun_path(self, lun: dict[str, Any]) -> str:
        """Return the LUN's name, ``/vol/<volume>/<lun>``."""
        return f"/vol/{self.state['volumes'][lun['volume']]['name']}/{lun['logical_unit']}"

    def volume_named(self, name: str) -> dict[str, Any] | None:
        """Return the volume called ``name``, if any."""
        return next((v for v in self.state["volumes"].values() if v["name"] == name), None)

    def lun_named(self, path: str) -> dict[str, Any] | None:
        """Return the LUN whose name is ``path`` (``/vol/<volume>/<lun>``), if any."""
        return next((u for u in self.state["luns"].values() if self.lun_path(u) == path), None)

    def luns_of(self, vol_uuid: str) -> list[dict[str, Any]]:
        """Return the LUNs stored in volume ``vol_uuid``."""
        return [u for u in self.state["luns"].values() if u["volume"] == vol_uuid]

    def snapshots_of(self, vol_uuid: str) -> list[dict[str, Any]]:
        """Return the snapshots of volume ``vol_uuid``, oldest first."""
        snaps = [s for s in self.state["snapshots"].values() if s["volume"] == vol_uuid]
        return sorted(snaps, key=lambda s: (s["create_time"], s["name"]))

    def clones_of_snapshot(self, snap_uuid: str) -> list[dict[str, Any]]:
        """Return the FlexClones whose parent snapshot is ``snap_uuid``."""
        return [
            v
            for v in self.state["volumes"].values()
            if v["clone"] and v["clone"]["parent_snapshot"] == snap_uuid
        ]

    def _volume(self, vol_uuid: str) -> dict[str, Any]:
        vol = self.state["volumes"].get(vol_uuid)
        if vol is None:
            raise not_found(f"volume {vol_uuid}")
        return vol

    def _snapshot(self, vol: dict[str, Any], snap_uuid: str) -> dict[str, Any]:
        snap = self.state["snapshots"].get(snap_uuid)
        if snap is None or snap["volume"] != vol["uuid"]:
            raise not_found(f"snapshot {snap_uuid}")
        return snap

    def taken_serials(self) -> set[str]:
        """Return the serial numbers in use."""
        return {u["serial"] for u in self.state["luns"].values()}

    # ---- records ------------------------------------------------------------------------------

    def volume_record(self, vol: dict[str, Any]) -> dict[str, Any]:
        """Return ``vol`` as ONTAP's volume object."""
        policy = self.state["export_policies"][str(vol["policy_id"])]
        nas: dict[str, Any] = {
            "security_style": "unix",
            "export_policy": {"name": policy["name"], "id": policy["id"]},
        }
        if vol["junction"]:
            nas["path"] = vol["junction"]
        clone: dict[str, Any] = {"is_flexclone": bool(vol["clone"])}
        if vol["clone"]:
            parent = self.state["volumes"].get(vol["clone"]["parent_volume"])
            snap = self.state["snapshots"].get(vol["clone"]["parent_snapshot"])
            clone["parent_volume"] = {
                "name": parent["name"] if parent else vol["clone"]["parent_volume_name"],
                "uuid": vol["clone"]["parent_volume"],
                "_links": {
                    "self": {"href": f"/api/storage/volumes/{vol['clone']['parent_volume']}"}
                },
            }
            clone["parent_snapshot"] = {
                "name": snap["name"] if snap else vol["clone"]["parent_snapshot_name"],
                "uuid": vol["clone"]["parent_snapshot"],
            }
            clone["parent_svm"] = self.svm_ref()
        used = sum(u["size"] for u in self.luns_of(vol["uuid"]))
        record: dict[str, Any] = {
            "uuid": vol["uuid"],
            "name": vol["name"],
            "svm": self.svm_ref(),
            "size": vol["size"],
            "state": vol["state"],
            "type": "rw",
            "style": "flexvol",
            "language": "c.utf_8",
            "create_time": vol["create_time"],
            "nas": nas,
            "clone": clone,
            "space": {"size": vol["size"], "used": used, "available": max(0, vol["size"] - used)},
            "aggregates": [dict(self.state["aggregate"])],
            "snapshot_policy": {"name": vol.get("snapshot_policy", "none")},
            "guarantee": {"type": vol.get("guarantee", "none")},
            "_links": {"self": {"href": f"/api/storage/volumes/{vol['uuid']}"}},
        }
        if vol["comment"]:
            record["comment"] = vol["comment"]
        return record

    def snapshot_record(self, snap: dict[str, Any]) -> dict[str, Any]:
        """Return ``snap`` as ONTAP's snapshot object."""
        vol = self.state["volumes"][snap["volume"]]
        record: dict[str, Any] = {
            "uuid": snap["uuid"],
            "name": snap["name"],
            "create_time": snap["create_time"],
            "state": "valid",
            "size": 0,
            "volume": {
                "name": vol["name"],
                "uuid": vol["uuid"],
                "_links": {"self": {"href": f"/api/storage/volumes/{vol['uuid']}"}},
            },
            "svm": self.svm_ref(),
            "_links": {
                "self": {"href": f"/api/storage/volumes/{vol['uuid']}/snapshots/{snap['uuid']}"}
            },
        }
        for key in ("comment", "snapmirror_label", "expiry_time"):
            if snap.get(key):
                record[key] = snap[key]
        return record

    def lun_record(self, lun: dict[str, Any]) -> dict[str, Any]:
        """Return ``lun`` as ONTAP's LUN object."""
        vol = self.state["volumes"][lun["volume"]]
        maps = self.maps_of_lun(lun["uuid"])
        online = lun["enabled"] and vol["state"] == "online"
        record: dict[str, Any] = {
            "uuid": lun["uuid"],
            "name": self.lun_path(lun),
            "class": "regular",
            "create_time": lun["create_time"],
            "enabled": lun["enabled"],
            "os_type": lun["os_type"],
            "serial_number": lun["serial"],
            "svm": self.svm_ref(),
            "location": {
                "logical_unit": lun["logical_unit"],
                "volume": {
                    "name": vol["name"],
                    "uuid": vol["uuid"],
                    "_links": {"self": {"href": f"/api/storage/volumes/{vol['uuid']}"}},
                },
            },
            "space": {"size": lun["size"], "used": 0},
            "status": {
                "state": "online" if online else "offline",
                "container_state": "online" if vol["state"] == "online" else "offline",
                "mapped": bool(maps),
                "read_only": False,
            },
            "lun_maps": [
                {
                    "igroup": {
                        "name": self.state["igroups"][m["igroup"]]["name"],
                        "uuid": m["igroup"],
                    },
                    "logical_unit_number": m["lun_id"],
                }
                for m in maps
            ],
            "_links": {"self": {"href": f"/api/storage/luns/{lun['uuid']}"}},
        }
        if lun["comment"]:
            record["comment"] = lun["comment"]
        return record

    # ---- volumes ------------------------------------------------------------------------------

    def get_volumes(self, call: Call) -> Response:
        """``GET /api/storage/volumes``."""
        records = [self.volume_record(v) for v in self.state["volumes"].values()]
        records.sort(key=lambda r: r["name"])
        return hal.collection(call.query, "/api/storage/volumes", records, VOLUME_FIELDS, ["uuid"])

    def get_volume(self, call: Call) -> Response:
        """``GET /api/storage/volumes/{uuid}``."""
        vol = self._volume(call.params["uuid"])
        return hal.single(call.query, self.volume_record(vol), VOLUME_FIELDS)

    def post_volume(self, call: Call) -> Response:
        """``POST /api/storage/volumes``: a FlexVol, or a FlexClone; answered with a job."""
        body = expand(call.body)
        hal.check_body(body, VOLUME_POST)
        if "name" not in body:
            raise invalid('Missing value for required field "name".', "name")
        name = check_volume_name(body["name"])
        self.check_svm(call, body)
        self._check_nas(body)
        if "size" in body:
            hal.as_size(body["size"], "size")
        if body.get("state", "online") not in ("online", "offline"):
            raise invalid(f'The value "{body["state"]}" is invalid for field "state".', "state")
        if not isinstance(body.get("comment", ""), str):
            raise invalid('The value of "comment" must be a string.', "comment")
        clone = body.get("clone")
        if clone is not None:
            flex = hal.as_bool(clone.get("is_flexclone", False), "clone.is_flexclone")
            has_parent = bool(
                get_in(clone, "parent_volume.name") or get_in(clone, "parent_volume.uuid")
            )
            if not flex:
                raise invalid('"clone.is_flexclone" must be true to create a FlexClone.', "clone")
            if not has_parent:
                raise invalid(
                    'Missing value for required field "clone.parent_volume.name".',
                    "clone.parent_volume.name",
                )
        vol_uuid = str(uuidlib.uuid4())
        op = {"kind": "volume_create", "uuid": vol_uuid, "body": body}
        return self.submit_job(
            call,
            op,
            location=f"/api/storage/volumes/?name={quote(name, safe='')}",
            provisional={
                "uuid": vol_uuid,
                "name": name,
                "_links": {"self": {"href": f"/api/storage/volumes/{vol_uuid}"}},
            },
            final=lambda: self._record_if(self.state["volumes"], vol_uuid, self.volume_record),
        )

    def patch_volume(self, call: Call) -> Response:
        """``PATCH /api/storage/volumes/{uuid}``: comment, name, size, state, nas; a job."""
        vol = self._volume(call.params["uuid"])
        body = expand(call.body)
        hal.check_body(body, VOLUME_PATCH)
        if "name" in body:
            check_volume_name(body["name"])
        if "size" in body:
            hal.as_size(body["size"], "size")
        if "state" in body and body["state"] not in ("online", "offline"):
            raise invalid(f'The value "{body["state"]}" is invalid for field "state".', "state")
        if "comment" in body and not isinstance(body["comment"], str):
            raise invalid('The value of "comment" must be a string.', "comment")
        self._check_nas(body)
        op = {"kind": "volume_patch", "uuid": vol["uuid"], "body": body}
        return self.submit_job(call, op)

    def delete_volume(self, call: Call) -> Response:
        """``DELETE /api/storage/volumes/{uuid}``: answered with a job."""
        vol = self._volume(call.params["uuid"])
        return self.submit_job(call, {"kind": "volume_delete", "uuid": vol["uuid"]})

    @staticmethod
    def _check_nas(body: dict[str, Any]) -> None:
        path = get_in(body, "nas.path")
        if path is not None and (not isinstance(path, str) or (path and not path.startswith("/"))):
            raise invalid(
                f'The value "{path}" is invalid for field "nas.path" (an absolute junction path '
                'or "" to unmount).',
                "nas.path",
            )
        policy = get_in(body, "nas.export_policy")
        if policy is not None and (not isinstance(policy, dict) or not policy):
            raise invalid('"nas.export_policy" needs a name or an id.', "nas.export_policy")

    @staticmethod
    def _record_if(
        table: dict[str, Any], key: str, render: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> dict[str, Any] | None:
        obj = table.get(key)
        return render(obj) if obj is not None else None

    def _policy_for(self, body: dict[str, Any], default_id: int) -> int:
        ref = get_in(body, "nas.export_policy")
        if ref is None:
            return default_id
        policy = self.resolve_policy(ref)
        if policy is None:
            shown = ref.get("name", ref.get("id"))
            raise JobFailure(f'Export policy "{shown}" does not exist.', hal.NOT_FOUND)
        return policy["id"]

    def _check_junction(self, path: str, vol_uuid: str) -> None:
        if not path:
            return
        if path == "/":
            raise JobFailure('Junction path "/" is the SVM root volume.', hal.INVALID)
        for other in self.state["volumes"].values():
            if other["uuid"] != vol_uuid and other["junction"] == path:
                raise JobFailure(
                    f'Junction path "{path}" is already used by volume "{other["name"]}".',
                    hal.DUPLICATE,
                )

    def _job_volume_create(self, op: dict[str, Any]) -> str:
        body = op["body"]
        name = body["name"]
        if self.volume_named(name):
            raise JobFailure(f'Duplicate volume name "{name}".', hal.DUPLICATE)
        junction = get_in(body, "nas.path", "") or ""
        self._check_junction(junction, op["uuid"])
        vol = {
            "uuid": op["uuid"],
            "name": name,
            "comment": body.get("comment", ""),
            "size": hal.as_size(body["size"], "size") if "size" in body else DEFAULT_VOLUME_SIZE,
            "state": body.get("state", "online"),
            "create_time": now_iso(),
            "junction": junction,
            "policy_id": self.state["default_policy_id"],
            "clone": None,
            "content": f"vol-{op['uuid']}",
            "snapshot_policy": get_in(body, "snapshot_policy.name", "none"),
            "guarantee": get_in(body, "guarantee.type", "none"),
        }
        clone = body.get("clone")
        if clone is None:
            vol["policy_id"] = self._policy_for(body, vol["policy_id"])
            self.content.create(vol["content"])
            self.state["volumes"][vol["uuid"]] = vol
        else:
            self._create_flexclone(vol, body, clone)
        if vol["junction"]:
            self.mark_fabric_changed()
        return "success"

    def _create_flexclone(
        self, vol: dict[str, Any], body: dict[str, Any], clone: dict[str, Any]
    ) -> None:
        parent_ref = clone["parent_volume"]
        parent = (
            self.state["volumes"].get(parent_ref["uuid"])
            if "uuid" in parent_ref
            else self.volume_named(parent_ref.get("name", ""))
        )
        if parent is None:
            shown = parent_ref.get("name", parent_ref.get("uuid"))
            raise JobFailure(
                f'Volume "{shown}" does not exist in Vserver "{self.svm_ref()["name"]}".',
                hal.NOT_FOUND,
            )
        if parent["state"] != "online":
            raise JobFailure(f'Parent volume "{parent["name"]}" is not online.', hal.INVALID)
        snap_ref = clone.get("parent_snapshot")
        if snap_ref:
            snap = next(
                (
                    s
                    for s in self.snapshots_of(parent["uuid"])
                    if s["uuid"] == snap_ref.get("uuid", s["uuid"])
                    and s["name"] == snap_ref.get("name", s["name"])
                ),
                None,
            )
            if snap is None:
                shown = snap_ref.get("name", snap_ref.get("uuid"))
                raise JobFailure(
                    f'Snapshot copy "{shown}" does not exist on volume "{parent["name"]}".',
                    hal.NOT_FOUND,
                )
        else:
            stamp = now_iso()[:19].replace("T", "_").replace(":", "")
            snap = self._take_snapshot(parent, f"clone_{vol['name']}.{stamp}.0", "")
        vol["policy_id"] = self._policy_for(body, parent["policy_id"])
        if "size" not in body:
            vol["size"] = parent["size"]
        vol["clone"] = {
            "parent_volume": parent["uuid"],
            "parent_volume_name": parent["name"],
            "parent_snapshot": snap["uuid"],
            "parent_snapshot_name": snap["name"],
        }
        self.content.copy(snap["content"], vol["content"])
        self.state["volumes"][vol["uuid"]] = vol
        taken = self.taken_serials()
        for meta in snap["luns"]:
            serial = new_serial(taken)
            taken.add(serial)
            lun_uuid = str(uuidlib.uuid4())
            self.state["luns"][lun_uuid] = {
                "uuid": lun_uuid,
                "volume": vol["uuid"],
                "logical_unit": meta["logical_unit"],
                "serial": serial,
                "size": meta["size"],
                "os_type": meta["os_type"],
                "comment": meta.get("comment", ""),
                "enabled": True,
                "create_time": now_iso(),
            }

    def _job_volume_patch(self, op: dict[str, Any]) -> str:
        vol = self.state["volumes"].get(op["uuid"])
        if vol is None:
            raise JobFailure(f"Volume {op['uuid']} no longer exists.", hal.NOT_FOUND)
        body = op["body"]
        renamed = "name" in body and body["name"] != vol["name"]
        if renamed and self.volume_named(body["name"]):
            raise JobFailure(f'Duplicate volume name "{body["name"]}".', hal.DUPLICATE)
        junction = get_in(body, "nas.path")
        if junction is not None:
            self._check_junction(junction, vol["uuid"])
        policy_id = self._policy_for(body, vol["policy_id"])
        # Every check passed: apply.
        if "name" in body and body["name"] != vol["name"]:
            vol["name"] = body["name"]
            self.mark_fabric_changed()
        if "comment" in body:
            vol["comment"] = body["comment"]
        if "size" in body:
            vol["size"] = hal.as_size(body["size"], "size")
            self.mark_fabric_changed()
        if "state" in body and body["state"] != vol["state"]:
            vol["state"] = body["state"]
            self.mark_fabric_changed()
        if junction is not None and junction != vol["junction"]:
            vol["junction"] = junction
            self.mark_fabric_changed()
        if policy_id != vol["policy_id"]:
            vol["policy_id"] = policy_id
            self.mark_fabric_changed()
        if "snapshot_policy" in body:
            vol["snapshot_policy"] = get_in(body, "snapshot_policy.name", "none")
        if "guarantee" in body:
            vol["guarantee"] = get_in(body, "guarantee.type", "none")
        return "success"

    def _job_volume_delete(self, op: dict[str, Any]) -> str:
        vol = self.state["volumes"].get(op["uuid"])
        if vol is None:
            raise JobFailure(f"Volume {op['uuid']} no longer exists.", hal.NOT_FOUND)
        clones = [
            c["name"]
            for s in self.snapshots_of(vol["uuid"])
            for c in self.clones_of_snapshot(s["uuid"])
        ]
        if clones:
            raise JobFailure(
                f'Volume "{vol["name"]}" cannot be deleted because FlexClone volumes depend on '
                f"its Snapshot copies: {', '.join(sorted(clones))}.",
                hal.VOLUME_IN_USE,
            )
        mapped = [
            self.lun_path(u) for u in self.luns_of(vol["uuid"]) if self.maps_of_lun(u["uuid"])
        ]
        if mapped:
            raise JobFailure(
                f'Volume "{vol["name"]}" cannot be deleted because it contains mapped LUNs: '
                f"{', '.join(mapped)}. Unmap them first.",
                hal.LUN_MAPPED,
            )
        if vol["junction"]:
            raise JobFailure(
                f'Volume "{vol["name"]}" is mounted at "{vol["junction"]}". Unmount it '
                '(PATCH nas.path "") before deleting it.',
                hal.VOLUME_IN_USE,
            )
        for snap in self.snapshots_of(vol["uuid"]):
            self.content.remove(snap["content"])
            del self.state["snapshots"][snap["uuid"]]
        for lun in self.luns_of(vol["uuid"]):
            del self.state["luns"][lun["uuid"]]
        self.content.remove(vol["content"])
        del self.state["volumes"][vol["uuid"]]
        self.mark_fabric_changed()
        return "success"

    # ---- snapshots ----------------------------------------------------------------------------

    def get_snapshots(self, call: Call) -> Response:
        """``GET /api/storage/volumes/{uuid}/snapshots``."""
        vol = self._volume(call.params["uuid"])
        records = [self.snapshot_record(s) for s in self.snapshots_of(vol["uuid"])]
        path = f"/api/storage/volumes/{vol['uuid']}/snapshots"
        return hal.collection(call.query, path, records, SNAPSHOT_FIELDS, ["uuid"])

    def get_snapshot(self, call: Call) -> Response:
        """``GET /api/storage/volumes/{uuid}/snapshots/{snap}``."""
        snap = self._snapshot(self._volume(call.params["uuid"]), call.params["snap"])
        return hal.single(call.query, self.snapshot_record(snap), SNAPSHOT_FIELDS)

    def post_snapshot(self, call: Call) -> Response:
        """``POST /api/storage/volumes/{uuid}/snapshots``: answered with a job."""
        vol = self._volume(call.params["uuid"])
        body = expand(call.body)
        hal.check_body(body, SNAPSHOT_POST)
        name = body.get("name")
        if not isinstance(name, str) or not name or "/" in name or len(name) > 255:
            raise invalid(f'The value "{name}" is invalid for field "name".', "name")
        snap_uuid = str(uuidlib.uuid4())
        op = {
            "kind": "snapshot_create",
            "volume": vol["uuid"],
            "uuid": snap_uuid,
            "name": name,
            "extra": {
                k: body[k] for k in ("comment", "snapmirror_label", "expiry_time") if k in body
            },
        }
        base = f"/api/storage/volumes/{vol['uuid']}/snapshots"
        return self.submit_job(
            call,
            op,
            location=f"{base}/?name={quote(name, safe='')}",
            provisional={
                "uuid": snap_uuid,
                "name": name,
                "_links": {"self": {"href": f"{base}/{snap_uuid}"}},
            },
            final=lambda: self._record_if(self.state["snapshots"], snap_uuid, self.snapshot_record),
        )

    def delete_snapshot(self, call: Call) -> Response:
        """``DELETE /api/storage/volumes/{uuid}/snapshots/{snap}``: answered with a job."""
        snap = self._snapshot(self._volume(call.params["uuid"]), call.params["snap"])
        return self.submit_job(call, {"kind": "snapshot_delete", "uuid": snap["uuid"]})

    def _take_snapshot(
        self,
        vol: dict[str, Any],
        name: str,
        comment: str,
        snap_uuid: str | None = None,
        create_time: str | None = None,
        source: str | Path | None = None,
    ) -> dict[str, Any]:
        """Freeze ``vol``'s content (or ``source``) into a new snapshot and return it."""
        snap_uuid = snap_uuid or str(uuidlib.uuid4())
        snap = {
            "uuid": snap_uuid,
            "volume": vol["uuid"],
            "name": name,
            "comment": comment,
            "create_time": create_time or now_iso(),
            "content": f"snap-{snap_uuid}",
            "luns": [
                {k: u[k] for k in ("logical_unit", "size", "os_type", "comment")}
                for u in self.luns_of(vol["uuid"])
            ],
        }
        self.content.create(snap["content"], source or self.volume_root(vol))
        self.state["snapshots"][snap_uuid] = snap
        return snap

    def _job_snapshot_create(self, op: dict[str, Any]) -> str:
        vol = self.state["volumes"].get(op["volume"])
        if vol is None:
            raise JobFailure(f"Volume {op['volume']} no longer exists.", hal.NOT_FOUND)
        if any(s["name"] == op["name"] for s in self.snapshots_of(vol["uuid"])):
            raise JobFailure(
                f'Snapshot copy "{op["name"]}" already exists on volume "{vol["name"]}".',
                hal.DUPLICATE,
            )
        extra = op.get("extra", {})
        snap = self._take_snapshot(vol, op["name"], extra.get("comment", ""), op["uuid"])
        for key in ("snapmirror_label", "expiry_time"):
            if key in extra:
                snap[key] = extra[key]
        return "success"

    def _job_snapshot_delete(self, op: dict[str, Any]) -> str:
        snap = self.state["snapshots"].get(op["uuid"])
        if snap is None:
            raise JobFailure(f"Snapshot copy {op['uuid']} no longer exists.", hal.NOT_FOUND)
        clones = self.clones_of_snapshot(snap["uuid"])
        if clones:
            raise JobFailure(
                f'Snapshot copy "{snap["name"]}" is busy: FlexClone volumes '
                f"{', '.join(sorted(c['name'] for c in clones))} depend on it.",
                hal.SNAPSHOT_BUSY,
            )
        self.content.remove(snap["content"])
        del self.state["snapshots"][snap["uuid"]]
        return "success"

    # ---- LUNs ---------------------------------------------------------------------------------

    def _lun(self, lun_uuid: str) -> dict[str, Any]:
        lun = self.state["luns"].get(lun_uuid)
        if lun is None:
            raise OntapError(404, f"LUN {lun_uuid} does not exist.", hal.LUN_NOT_FOUND, "uuid")
        return lun

    def get_luns(self, call: Call) -> Response:
        """``GET /api/storage/luns`` (filters: ``serial_number``, ``location.volume.name``...)."""
        records = [self.lun_record(u) for u in self.state["luns"].values()]
        records.sort(key=lambda r: r["name"])
        return hal.collection(call.query, "/api/storage/luns", records, LUN_FIELDS, ["uuid"])

    def get_lun(self, call: Call) -> Response:
        """``GET /api/storage/luns/{uuid}``."""
        return hal.single(call.query, self.lun_record(self._lun(call.params["uuid"])), LUN_FIELDS)

    def post_lun(self, call: Call) -> Response:
        """``POST /api/storage/luns``: create an empty LUN in a volume (synchronous, 201)."""
        body = expand(call.body)
        hal.check_body(body, LUN_POST)
        self.check_svm(call, body)
        vol, base = self._lun_location(body)
        if body.get("os_type") not in LUN_OS_TYPES:
            raise invalid(
                f'The value "{body.get("os_type")}" is invalid for field "os_type".', "os_type"
            )
        if get_in(body, "space.size") is None:
            raise invalid('Missing value for required field "space.size".', "space.size")
        size = hal.as_size(get_in(body, "space.size"), "space.size")
        path = f"/vol/{vol['name']}/{base}"
        if self.lun_named(path) or (self.volume_root(vol) / base).exists():
            raise OntapError(409, f'LUN "{path}" already exists.', hal.DUPLICATE, "name")
        lun_uuid = str(uuidlib.uuid4())
        lun = {
            "uuid": lun_uuid,
            "volume": vol["uuid"],
            "logical_unit": base,
            "serial": new_serial(self.taken_serials()),
            "size": size,
            "os_type": body["os_type"],
            "comment": body.get("comment", ""),
            "enabled": True,
            "create_time": now_iso(),
        }
        self.state["luns"][lun_uuid] = lun
        self.lun_dir(lun).mkdir(parents=True, exist_ok=True)
        content: dict[str, Any] = {}
        if hal.query_bool(call.query, "return_records"):
            content = {"num_records": 1, "records": [self.lun_record(lun)]}
        return hal.hal(content, 201, {"Location": f"/api/storage/luns/{lun_uuid}"})

    def _lun_location(self, body: dict[str, Any]) -> tuple[dict[str, Any], str]:
        name = body.get("name")
        if name is not None:
            parts = str(name).split("/")
            if len(parts) != 4 or parts[0] or parts[1] != "vol":
                raise invalid(
                    f'The value "{name}" is invalid for field "name" (expected '
                    "/vol/<volume>/<lun>; qtrees are not emulated).",
                    "name",
                )
            vol_name, base = parts[2], parts[3]
            vol = self.volume_named(vol_name)
        else:
            base = get_in(body, "location.logical_unit")
            ref = get_in(body, "location.volume") or {}
            vol = (
                self.state["volumes"].get(ref["uuid"])
                if "uuid" in ref
                else self.volume_named(ref.get("name", ""))
            )
            vol_name = ref.get("name", ref.get("uuid"))
            if base is None or not ref:
                raise invalid('Missing value for required field "name".', "name")
        check_object_name(base, "LUN")
        if vol is None:
            raise OntapError(404, f'Volume "{vol_name}" does not exist.', hal.NOT_FOUND, "name")
        return vol, base

    def patch_lun(self, call: Call) -> Response:
        """``PATCH /api/storage/luns/{uuid}``: ``enabled`` (online/offline) and ``comment``."""
        lun = self._lun(call.params["uuid"])
        body = expand(call.body)
        hal.check_body(body, LUN_PATCH)
        if "enabled" in body:
            enabled = hal.as_bool(body["enabled"], "enabled")
            if enabled != lun["enabled"]:
                lun["enabled"] = enabled
                self.mark_fabric_changed()
        if "comment" in body:
            lun["comment"] = str(body["comment"])
        return hal.hal({})

    def delete_lun(self, call: Call) -> Response:
        """``DELETE /api/storage/luns/{uuid}``; refused while mapped unless
        ``allow_delete_while_mapped=true``."""
        lun = self._lun(call.params["uuid"])
        maps = self.maps_of_lun(lun["uuid"])
        if maps and not hal.query_bool(call.query, "allow_delete_while_mapped"):
            raise OntapError(
                409,
                f'LUN "{self.lun_path(lun)}" is mapped. Unmap it first, or set '
                '"allow_delete_while_mapped" to true.',
                hal.LUN_MAPPED,
                "uuid",
            )
        for m in maps:
            self.state["lun_maps"].remove(m)
        if maps:
            self.mark_fabric_changed()
        shutil.rmtree(self.lun_dir(lun), ignore_errors=True)
        del self.state["luns"][lun["uuid"]]
        return hal.hal({})
