"""The world a restore can change (arrays, vCenter, calls, events), for before/after checks."""

from __future__ import annotations

from typing import Any

from pyVmomi import vim

from tasks import vsphere as vs
from tests.support.vcenter import find

MUTATING = ("POST", "PUT", "PATCH", "DELETE")
STORAGE_CALLS = (
    "RescanHba",
    "RescanAllHba",
    "AddInternetScsiStaticTargets",
    "ResignatureUnresolvedVmfsVolume_Task",
    "CreateNasDatastore",
    "RegisterVM_Task",
    "PowerOnVM_Task",
)
BAD_EVENTS = ("apd", "device_lost_while_attached", "vmfs_destroyed")


class World:
    """What the arrays and the vCenter hold, and what they were asked to change."""

    def __init__(self, lab: dict[str, Any], http, vclab):
        self.lab, self.http, self.vclab = lab, http, vclab

    def snapshot(self) -> dict[str, Any]:
        """Return everything a restore could change."""
        out: dict[str, Any] = {"arrays": {}, "calls": {}}
        for a in self.lab["arrays"]:
            state = self.http.get(a["lab_url"] + "/state", timeout=30).json()
            out["arrays"][a["name"]] = {
                "copies": sorted(c["name"] for c in state["copies"]),
                "exports": sorted(f"{e['volume']}>{e['host']}" for e in state["exports"]),
                "nfs_exports": sorted(e["volume"] for e in state["nfs_exports"]),
            }
            calls = self.http.get(a["lab_url"] + "/calls", timeout=30).json()
            out["calls"][a["name"]] = sum(
                n
                for op, n in calls.items()
                if op.startswith(MUTATING) and "/credentials" not in op  # logins change nothing
            )
        vc = self.vclab.state()
        out["datastores"] = sorted(d["name"] for d in vc["datastores"])
        out["vms"] = sorted(v["name"] for v in vc["vms"])
        out["devices"] = {h["name"]: sorted(d["naa"] for d in h["devices"]) for h in vc["hosts"]}
        calls = self.vclab.calls()
        out["calls"]["vcenter"] = sum(calls.get(m, 0) for m in STORAGE_CALLS)
        out["events"] = len(self.vclab.events())
        return out

    def bad_events_since(self, count: int) -> list[dict]:
        """Return APD-like events recorded after the first ``count`` events."""
        return [e for e in self.vclab.events()[count:] if e["kind"] in BAD_EVENTS]

    def array_calls(self, array: str) -> dict[str, int]:
        """Return the array's call counts."""
        a = next(x for x in self.lab["arrays"] if x["name"] == array)
        return self.http.get(a["lab_url"] + "/calls", timeout=30).json()

    def inject(self, array: str, rule: dict) -> None:
        """Inject a fault rule on an array."""
        a = next(x for x in self.lab["arrays"] if x["name"] == array)
        self.http.post(a["lab_url"] + "/faults", json=rule, timeout=30).raise_for_status()


def discard_vm(si, name: str, delete_folder: bool = True) -> None:
    """Power off and unregister a VM a test kept, and delete its folder."""
    vm = find(si, vim.VirtualMachine, name)
    if vm is None:
        return
    ds_name, vmx = vs.split_ds_path(vm.config.files.vmPathName)
    vs.power_off(vm, 60)
    vm.UnregisterVM()
    if delete_folder:
        ds = find(si, vim.Datastore, ds_name)
        fm = si.content.fileManager
        vs.wait(
            fm.DeleteDatastoreFile_Task(
                f"[{ds_name}] {vmx.rsplit('/', 1)[0]}", vs.datacenter_of(ds)
            ),
            60,
        )


def put_back_original(si, lab: dict[str, Any], name: str) -> vim.VirtualMachine:
    """Register the lab's production VM ``name`` again where lab.json says it lives (its
    host, folder and pool) and power it on; it must not ask "moved or copied"."""
    cfg = next(v for v in lab["vms"] if v["name"] == name and v.get("case") is None)
    folder = find(si, vim.Folder, cfg["folder"])
    pool = find(si, vim.ResourcePool, cfg["pool"])
    vm = vs.register_vm(
        vs.get_host(si, cfg["host"]), cfg["datastore"], cfg["vmx"], name, 60, folder, pool
    )
    assert not vs.power_on(vm, "moved", 60)  # back where it was: no question
    return vm
