"""The latencies the benchmark injects, in one place, and the critical paths they make.

Each figure is what one step of a restore takes on a real array or host (a round number
from field experience, not a vendor's promise). The lab applies it to the one operation
that does that step, so a restore that does a slow step twice, or one after the other
where they could run at once, pays for it in wall time:

================ ======= ==============================================================
step              seconds  operation delayed
================ ======= ==============================================================
copy              1.0      primera1 ``POST /api/v1/volumes/{}`` (createSnapshot),
                           ontap1 ``POST /api/storage/volumes`` (FlexClone)
present           0.5      primera1 ``POST /api/v1/vluns``, ontap1
                           ``POST /api/protocols/san/lun-maps`` (iSCSI/FC) and
                           ``POST /api/protocols/nfs/export-policies`` (NFS)
rescan            3.0      ``RescanHba`` (each adapter)
resignature       2.0      ``ResignatureUnresolvedVmfsVolume_Task``
nfs_mount         2.0      ``CreateNasDatastore``
register          0.5      ``RegisterVM_Task``
power_on          1.0      ``PowerOnVM_Task``
tools             2.0      the guest's VMware Tools start that long after power-on
================ ======= ==============================================================

The **critical path** of a one-VM instant recovery is the sum along its dependency chain:
copy → present → rescan → resignature (NFS: mount) → register → power on → tools; the
adapters of a host are independent, so rescanning two FC adapters counts once.
"""

from __future__ import annotations

import math
from typing import Any

import requests

LATENCY_S: dict[str, float] = {
    "copy": 1.0,
    "present": 0.5,
    "rescan": 3.0,
    "resignature": 2.0,
    "nfs_mount": 2.0,
    "register": 0.5,
    "power_on": 1.0,
    "tools": 2.0,
}

VCENTER_METHODS: dict[str, str] = {
    "rescan": "RescanHba",
    "resignature": "ResignatureUnresolvedVmfsVolume_Task",
    "nfs_mount": "CreateNasDatastore",
    "register": "RegisterVM_Task",
    "power_on": "PowerOnVM_Task",
}

ARRAY_OPERATIONS: dict[str, dict[str, list[str]]] = {
    "hpe_primera": {
        "copy": ["POST /api/v1/volumes/{}"],
        "present": ["POST /api/v1/vluns"],
    },
    "netapp_ontap": {
        "copy": ["POST /api/storage/volumes"],
        "present": ["POST /api/protocols/san/lun-maps", "POST /api/protocols/nfs/export-policies"],
    },
}

SHARED = {
    "iscsi": ("copy", "present", "rescan", "resignature"),
    "fc": ("copy", "present", "rescan", "resignature"),
    "nfs": ("copy", "present", "nfs_mount"),
}
PER_VM = ("register", "power_on", "tools")


def shared_path_s(protocol: str) -> float:
    """Seconds of injected latency before the first VM can be registered (the copy's own
    chain, shared by every VM restored from it)."""
    return sum(LATENCY_S[s] for s in SHARED[protocol])


def per_vm_chain_s() -> float:
    """Seconds of injected latency of one VM's own chain: register, power on, tools."""
    return sum(LATENCY_S[s] for s in PER_VM)


def critical_path_s(protocol: str) -> float:
    """Seconds of injected latency on the dependency chain of a one-VM instant recovery."""
    return shared_path_s(protocol) + per_vm_chain_s()


def lower_bound_s(protocol: str, n: int, parallel_vms: int, host_limit: int) -> float:
    """The least wall time ``n`` VMs from one copy can take under the configured
    concurrency: the shared chain once, then the VMs' chains at most ``parallel_vms`` at
    once, and their power-ons (the only per-VM step that takes a host slot) at most
    ``host_limit`` at once."""
    chain, on = per_vm_chain_s(), LATENCY_S["power_on"]
    by_vms = math.ceil(n / parallel_vms) * chain
    by_host = math.ceil(n / host_limit) * on + (chain - on)
    return shared_path_s(protocol) + max(by_vms, by_host)


def apply(info: dict[str, Any], http: requests.Session, scale: float = 1.0) -> None:
    """Make the lab of ``info`` answer with the latencies above (times ``scale``; 0 clears
    them)."""
    rules = [{"operation": m, "delay_s": LATENCY_S[s] * scale} for s, m in VCENTER_METHODS.items()]
    vc = info["vcenter"]["lab_url"]
    _send(http, f"{vc}/latency", rules)
    http.delete(f"{vc}/guest", timeout=30).raise_for_status()
    r = http.post(
        f"{vc}/guest", json={"match": "*", "delay_s": LATENCY_S["tools"] * scale}, timeout=30
    )
    r.raise_for_status()
    for a in info["arrays"]:
        ops = ARRAY_OPERATIONS[a["vendor"]]
        rules = [
            {"operation": op, "delay_s": LATENCY_S[s] * scale}
            for s, lst in ops.items()
            for op in lst
        ]
        _send(http, f"{a['lab_url']}/latency", rules)


def _send(http: requests.Session, url: str, rules: list[dict[str, Any]]) -> None:
    http.delete(url, timeout=30).raise_for_status()
    rules = [r for r in rules if r["delay_s"] > 0]
    if rules:
        r = http.post(url, json={"rules": rules}, timeout=30)
        if not r.ok:
            raise RuntimeError(f"{url}: {r.status_code} {r.text}")


def clear(info: dict[str, Any], http: requests.Session) -> None:
    """Remove every latency and guest rule: the lab answers as it does by default."""
    for url in [info["vcenter"]["lab_url"]] + [a["lab_url"] for a in info["arrays"]]:
        http.delete(f"{url}/latency", timeout=30).raise_for_status()
    http.delete(info["vcenter"]["lab_url"] + "/guest", timeout=30).raise_for_status()
