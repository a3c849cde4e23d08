"""ONTAP NFS export policies and their rules.

Decisions where the reference is silent:

- every SVM has the policy ``default`` (no rules, cannot be deleted); a volume created without
  an export policy gets it;
- rule POST requires ``clients``, ``ro_rule`` and ``rw_rule``; ``protocols`` defaults to
  ``["any"]`` and ``superuser`` to ``["none"]`` (root squashed: a client that needs root, as
  ESXi does, must ask for ``superuser: ["sys"]`` explicitly), ``anonymous_user`` to "65534";
- a rule POSTed with an ``index`` that already exists is inserted there and later rules move
  down one; deleting a rule does not renumber the others;
- deleting a policy still assigned to a volume → 409 (lab code 1703954).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from starlette.responses import Response

from lab.arrays.base import Call
from lab.arrays.ontap import hal
from lab.arrays.ontap.common import check_object_name
from lab.arrays.ontap.hal import OntapError, expand, invalid

_RULE = (
    "index clients.match protocols ro_rule rw_rule superuser anonymous_user allow_suid "
    "allow_device_creation allow_nfs_tls_only chown_mode ntfs_unix_security"
)
RULE_FIELDS = hal.fieldset(_RULE)
RULE_POST = hal.fieldset(_RULE)
RULE_PATCH = hal.fieldset(_RULE.replace("index ", ""))
POLICY_FIELDS = hal.fieldset(
    "id name svm.name svm.uuid " + " ".join(f"rules.{f}" for f in _RULE.split())
)
POLICY_POST = hal.fieldset(
    "name svm.name svm.uuid " + " ".join(f"rules.{f}" for f in _RULE.split())
)
POLICY_PATCH = hal.fieldset("name " + " ".join(f"rules.{f}" for f in _RULE.split()))
FLAVORS = frozenset({"any", "none", "never", "krb5", "krb5i", "krb5p", "ntlm", "sys"})
PROTOCOLS = frozenset({"any", "nfs", "nfs3", "nfs4", "cifs", "flexcache", "nfs41", "nfs42"})
RULE_DEFAULTS: dict[str, Any] = {
    "protocols": ["any"],
    "superuser": ["none"],
    "anonymous_user": "65534",
    "allow_suid": True,
    "allow_device_creation": True,
    "allow_nfs_tls_only": False,
    "chown_mode": "restricted",
    "ntfs_unix_security": "fail",
}
_CHOWN = frozenset({"restricted", "unrestricted"})
_NTFS = frozenset({"fail", "ignore"})


class NasMixin:
    """Export policies for :class:`lab.arrays.ontap.OntapEmulator`."""

    state: dict[str, Any]
    mark_fabric_changed: Callable[[], None]
    svm_ref: Callable[[], dict[str, Any]]
    check_svm: Callable[..., None]

    def nas_routes(self) -> list[tuple[str, str, Callable[[Call], Response]]]:
        """Return the export-policy endpoints."""
        ep = "/api/protocols/nfs/export-policies"
        return [
            ("GET", ep, self.get_policies),
            ("POST", ep, self.post_policy),
            ("GET", ep + "/{id}", self.get_policy),
            ("PATCH", ep + "/{id}", self.patch_policy),
            ("DELETE", ep + "/{id}", self.delete_policy),
            ("GET", ep + "/{id}/rules", self.get_rules),
            ("POST", ep + "/{id}/rules", self.post_rule),
            ("GET", ep + "/{id}/rules/{index}", self.get_rule),
            ("PATCH", ep + "/{id}/rules/{index}", self.patch_rule),
            ("DELETE", ep + "/{id}/rules/{index}", self.delete_rule),
        ]

    # ---- lookups -------------------------------------------------------------------------------

    def resolve_policy(self, ref: dict[str, Any]) -> dict[str, Any] | None:
        """Return the policy named by ``ref`` (``{"name"}`` and/or ``{"id"}``), if any."""
        policies = self.state["export_policies"].values()
        if "id" in ref:
            found = next((p for p in policies if str(p["id"]) == str(ref["id"])), None)
            if found is not None and "name" in ref and found["name"] != ref["name"]:
                return None
            return found
        return next((p for p in policies if p["name"] == ref.get("name")), None)

    def new_policy(self, name: str) -> dict[str, Any]:
        """Create and return an empty export policy called ``name``."""
        policy_id = self.state["next_policy_id"]
        self.state["next_policy_id"] += 1
        policy = {"id": policy_id, "name": name, "rules": []}
        self.state["export_policies"][str(policy_id)] = policy
        return policy

    def _policy(self, raw_id: str) -> dict[str, Any]:
        policy = self.state["export_policies"].get(raw_id)
        if policy is None:
            raise hal.not_found(f"export policy {raw_id}", "id")
        return policy

    @staticmethod
    def _rule(policy: dict[str, Any], raw_index: str) -> dict[str, Any]:
        rule = next((r for r in policy["rules"] if str(r["index"]) == raw_index), None)
        if rule is None:
            raise hal.not_found(f'rule {raw_index} of export policy "{policy["name"]}"', "index")
        return rule

    # ---- records ------------------------------------------------------------------------------

    @staticmethod
    def rule_record(policy: dict[str, Any], rule: dict[str, Any]) -> dict[str, Any]:
        """Return ``rule`` as ONTAP's export-rule object."""
        record = {k: v for k, v in rule.items()}
        record["clients"] = [{"match": c} for c in rule["clients"]]
        href = f"/api/protocols/nfs/export-policies/{policy['id']}/rules/{rule['index']}"
        record["_links"] = {"self": {"href": href}}
        return record

    def policy_record(self, policy: dict[str, Any]) -> dict[str, Any]:
        """Return ``policy`` as ONTAP's export-policy object."""
        return {
            "id": policy["id"],
            "name": policy["name"],
            "svm": self.svm_ref(),
            "rules": [self.rule_record(policy, r) for r in policy["rules"]],
            "_links": {"self": {"href": f"/api/protocols/nfs/export-policies/{policy['id']}"}},
        }

    # ---- policies -----------------------------------------------------------------------------

    def get_policies(self, call: Call) -> Response:
        """``GET /api/protocols/nfs/export-policies``."""
        records = [self.policy_record(p) for p in self.state["export_policies"].values()]
        records.sort(key=lambda r: r["id"])
        path = "/api/protocols/nfs/export-policies"
        return hal.collection(call.query, path, records, POLICY_FIELDS, ["id"])

    def get_policy(self, call: Call) -> Response:
        """``GET /api/protocols/nfs/export-policies/{id}``."""
        policy = self._policy(call.params["id"])
        return hal.single(call.query, self.policy_record(policy), POLICY_FIELDS)

    def post_policy(self, call: Call) -> Response:
        """``POST /api/protocols/nfs/export-policies`` (synchronous, 201; ``id`` is an integer)."""
        body = expand(call.body)
        hal.check_body(body, POLICY_POST)
        self.check_svm(call, body)
        name = check_object_name(body.get("name"), "export policy")
        if self.resolve_policy({"name": name}) is not None:
            raise OntapError(409, f'Export policy "{name}" already exists.', hal.DUPLICATE, "name")
        rules = [self._parse_rule(r, i) for i, r in enumerate(body.get("rules") or [], start=1)]
        policy = self.new_policy(name)
        policy["rules"] = rules
        content: dict[str, Any] = {}
        if hal.query_bool(call.query, "return_records"):
            content = {"num_records": 1, "records": [self.policy_record(policy)]}
        location = f"/api/protocols/nfs/export-policies/{policy['id']}"
        return hal.hal(content, 201, {"Location": location})

    def patch_policy(self, call: Call) -> Response:
        """``PATCH /api/protocols/nfs/export-policies/{id}``: rename, or replace all rules."""
        policy = self._policy(call.params["id"])
        body = expand(call.body)
        hal.check_body(body, POLICY_PATCH)
        if "name" in body:
            name = check_object_name(body["name"], "export policy")
            other = self.resolve_policy({"name": name})
            if other is not None and other is not policy:
                raise OntapError(409, f'Export policy "{name}" already exists.', hal.DUPLICATE)
            if policy["id"] == self.state["default_policy_id"] and name != policy["name"]:
                raise OntapError(400, 'The "default" export policy cannot be renamed.', "3")
            policy["name"] = name
        if "rules" in body:
            policy["rules"] = [
                self._parse_rule(r, i) for i, r in enumerate(body["rules"] or [], start=1)
            ]
            self.mark_fabric_changed()
        return hal.hal({})

    def delete_policy(self, call: Call) -> Response:
        """``DELETE /api/protocols/nfs/export-policies/{id}``; refused while assigned."""
        policy = self._policy(call.params["id"])
        if policy["id"] == self.state["default_policy_id"]:
            raise OntapError(400, 'The "default" export policy cannot be deleted.', "3", "id")
        users = sorted(
            v["name"] for v in self.state["volumes"].values() if v["policy_id"] == policy["id"]
        )
        if users:
            raise OntapError(
                409,
                f'Export policy "{policy["name"]}" is in use by volumes: {", ".join(users)}.',
                hal.POLICY_IN_USE,
                "id",
            )
        del self.state["export_policies"][str(policy["id"])]
        return hal.hal({})

    # ---- rules --------------------------------------------------------------------------------

    def _parse_rule(self, body: Any, index: int, partial: bool = False) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise invalid("An export rule must be a JSON object.", "rules")
        rule: dict[str, Any] = {} if partial else {"index": index, **copy.deepcopy(RULE_DEFAULTS)}
        if "clients" in body or not partial:
            clients = body.get("clients")
            if not isinstance(clients, list) or not clients:
                raise invalid('Missing value for required field "clients".', "clients")
            matches = []
            for c in clients:
                match = c.get("match") if isinstance(c, dict) else None
                if not isinstance(match, str) or not match.strip():
                    raise invalid('Every client needs a non-empty "match".', "clients.match")
                matches.append(match.strip())
            rule["clients"] = matches
        for field in ("ro_rule", "rw_rule", "superuser"):
            if field in body or (not partial and field != "superuser"):
                rule[field] = self._flavors(body.get(field), field)
        if "protocols" in body:
            protocols = body["protocols"]
            if not isinstance(protocols, list) or not protocols or not set(protocols) <= PROTOCOLS:
                raise invalid(f'The value "{protocols}" is invalid for field "protocols".')
            rule["protocols"] = list(protocols)
        if "anonymous_user" in body:
            rule["anonymous_user"] = str(body["anonymous_user"])
        for field in ("allow_suid", "allow_device_creation", "allow_nfs_tls_only"):
            if field in body:
                rule[field] = hal.as_bool(body[field], field)
        if body.get("chown_mode", "restricted") not in _CHOWN:
            raise invalid(f'The value "{body["chown_mode"]}" is invalid for field "chown_mode".')
        if body.get("ntfs_unix_security", "fail") not in _NTFS:
            raise invalid('The value is invalid for field "ntfs_unix_security".')
        for field in ("chown_mode", "ntfs_unix_security"):
            if field in body:
                rule[field] = body[field]
        return rule

    @staticmethod
    def _flavors(value: Any, field: str) -> list[str]:
        if not isinstance(value, list) or not value or not set(value) <= FLAVORS:
            raise invalid(
                f'The value "{value}" is invalid for field "{field}" (a list of: '
                f"{', '.join(sorted(FLAVORS))}).",
                field,
            )
        return list(value)

    def get_rules(self, call: Call) -> Response:
        """``GET /api/protocols/nfs/export-policies/{id}/rules``."""
        policy = self._policy(call.params["id"])
        records = [self.rule_record(policy, r) for r in policy["rules"]]
        path = f"/api/protocols/nfs/export-policies/{policy['id']}/rules"
        return hal.collection(call.query, path, records, RULE_FIELDS, ["index"])

    def get_rule(self, call: Call) -> Response:
        """``GET /api/protocols/nfs/export-policies/{id}/rules/{index}``."""
        policy = self._policy(call.params["id"])
        rule = self._rule(policy, call.params["index"])
        return hal.single(call.query, self.rule_record(policy, rule), RULE_FIELDS)

    def post_rule(self, call: Call) -> Response:
        """``POST .../export-policies/{id}/rules`` (synchronous, 201; ``index`` is returned)."""
        policy = self._policy(call.params["id"])
        body = expand(call.body)
        hal.check_body(body, RULE_POST)
        rule = self._parse_rule(body, 0)  # validate before renumbering anything
        rules = policy["rules"]
        index = max((r["index"] for r in rules), default=0) + 1
        if "index" in body:
            wanted = body["index"]
            if isinstance(wanted, bool) or not isinstance(wanted, int) or wanted < 1:
                raise invalid(f'The value "{wanted}" is invalid for field "index".', "index")
            if any(r["index"] >= wanted for r in rules):
                for r in rules:
                    if r["index"] >= wanted:
                        r["index"] += 1
                index = wanted
            else:
                index = max(index, wanted)
        rule["index"] = index
        rules.append(rule)
        rules.sort(key=lambda r: r["index"])
        self.mark_fabric_changed()
        content: dict[str, Any] = {}
        if hal.query_bool(call.query, "return_records"):
            content = {"num_records": 1, "records": [self.rule_record(policy, rule)]}
        location = f"/api/protocols/nfs/export-policies/{policy['id']}/rules/{index}"
        return hal.hal(content, 201, {"Location": location})

    def patch_rule(self, call: Call) -> Response:
        """``PATCH .../export-policies/{id}/rules/{index}`` (e.g. the full ``clients`` list)."""
        policy = self._policy(call.params["id"])
        rule = self._rule(policy, call.params["index"])
        body = expand(call.body)
        hal.check_body(body, RULE_PATCH)
        rule.update(self._parse_rule(body, rule["index"], partial=True))
        self.mark_fabric_changed()
        return hal.hal({})

    def delete_rule(self, call: Call) -> Response:
        """``DELETE .../export-policies/{id}/rules/{index}``."""
        policy = self._policy(call.params["id"])
        rule = self._rule(policy, call.params["index"])
        policy["rules"].remove(rule)
        self.mark_fabric_changed()
        return hal.hal({})
