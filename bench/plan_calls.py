"""How many vSphere calls planning a restore costs: ``python -m bench.plan_calls``.

Writes bench/results/plan_calls.json: the SOAP calls (counted by the lab vCenter) that
validating a restore of 1 and of 3 VMs makes, by method, and what one name lookup costs.
Planning runs before anything is created, on every restore, drill and catalog run; on a
real vCenter each call is a network round trip, so the figure should not grow with the
size of the inventory.
"""

from __future__ import annotations

import collections
import json
import platform
import tempfile
from pathlib import Path
from typing import Any

import requests
from pyVmomi import vim

from blocks.registry import VENDOR_TYPES
from blocks.vcenter import VCenterCredentials
from flows.plan import RestoreRequest, make_plan
from lab import control
from tasks import vsphere as vs

RESULTS = Path(__file__).parent / "results"


def _calls_during(info: dict[str, Any], http: requests.Session, action) -> dict[str, int]:
    """Run ``action``; return the SOAP calls it made, by method."""
    url = info["vcenter"]["lab_url"] + "/calls/log"
    seq = http.get(url, params={"since": 0}, timeout=30).json()["last_seq"]
    action()
    calls = http.get(url, params={"since": seq}, timeout=30).json()["calls"]
    return dict(collections.Counter(c["method"] for c in calls).most_common())


def measure(info: dict[str, Any]) -> dict[str, Any]:
    """Plan restores against the lab and count the vSphere calls."""
    ca = Path(info["ca_bundle"]).read_text()
    vc = info["vcenter"]
    block = VCenterCredentials(
        host=vc["host"],
        port=vc["port"],
        user=vc["user"],
        password=vc["password"],
        ca_certificate=ca,
    )
    arrays = [
        VENDOR_TYPES[a["vendor"]](
            url=a["url"],
            user=a["user"],
            password=a["password"],
            ca_certificate=ca,
            **({"svm": a["svm"]} if "svm" in a else {}),
        )
        for a in info["arrays"]
    ]
    http = requests.Session()
    http.trust_env = False
    http.verify = info["ca_bundle"]
    si = block.connect()
    ds = next(d for d in info["datastores"] if d["name"] == "ds-iscsi-01")
    make_plan(si, arrays, RestoreRequest(vms=ds["vms"]), "warm-up")
    out: dict[str, Any] = {
        "machine": {"python": platform.python_version()},
        "vms_in_inventory": sum(len(d["vms"]) for d in info["datastores"]),
    }
    for n in (1, 3):
        by_method = _calls_during(
            info, http, lambda n=n: make_plan(si, arrays, RestoreRequest(vms=ds["vms"][:n]), "b")
        )
        out[f"plan_{n}_vm"] = {"soap_calls": sum(by_method.values()), "by_method": by_method}
    lookup = _calls_during(
        info, http, lambda: vs.find_by_name(si, vim.VirtualMachine, ds["vms"][-1])
    )
    out["find_by_name"] = {"soap_calls": sum(lookup.values()), "by_method": lookup}
    return out


def main() -> None:
    """Measure on a fresh lab and write the figures."""
    with tempfile.TemporaryDirectory() as tmp:
        info = control.up(Path(tmp) / "lab")
        try:
            figures = measure(info)
        finally:
            control.down(Path(tmp) / "lab")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "plan_calls.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
