"""The ``restore-drill`` flow: prove that VMs restore from their latest snapshot.

Each VM is instant-recovered in isolation (NICs disconnected, or moved to isolated port
groups) from a copy of its datastore's snapshot, with the restore's own steps, powered on
and required to show a VMware Tools heartbeat (and an IP, where one can be expected) within
a deadline, or only to power on; then everything is torn down with the restore's teardown.
One copy serves every VM of a snapshot, as in a restore.
"""

from __future__ import annotations

import ipaddress
import time
from typing import Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.events import emit_event
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel
from pyVmomi import vim

from blocks.errors import brief
from blocks.models import CopyTag
from blocks.settings import settings
from blocks.vcenter import VCenterCredentials
from flows.effects import Kind
from flows.identity import current_run_id
from flows.params import Finish, NetworkMode, Operation, OtherDisks, Verify
from flows.plan import GroupPlan, PlanError, RestorePlan, RestoreRequest, VmPlan
from flows.restore import load_blocks, plan_restore
from flows.run import Restore, RestoreError, VmOutcome, restore_steps
from tasks import browse
from tasks import vsphere as vs
from tasks.retry import step
from tasks.vsphere_tasks import DatastoreRef


class DrillChecks(BaseModel):
    """What a VM must show to pass."""

    deadline_s: float
    require_ip: Literal["auto", "always", "never"]
    max_boot_s: float | None = None
    ip_network: str | None = None
    verify: Verify = Verify.tools


class DrillResult(BaseModel):
    """One VM's verification."""

    vm: str
    restored_as: str | None = None
    moref: str | None = None
    snapshot: str = ""
    host: str = ""
    boot_s: float | None = None
    heartbeat: str | None = None
    ip: str | None = None
    passed: bool = False
    reason: str = ""


@step("select the VMs to drill", retries=1)
def select_vms(
    vcenter: VCenterCredentials, vms: list[str], datastores: list[str]
) -> dict[str, bool]:
    """Return the VMs to drill (named, plus every VM whose .vmx is on the datastores) ->
    has an IP. A VM whose name is not unique is given by its inventory path."""
    si = vcenter.connect()
    # one read of every VM and datastore, whatever their number
    found = vs.collect(
        si,
        vim.VirtualMachine,
        ["name", "config.template", "guest.ipAddress", "config.files.vmPathName"],
    )
    by_ref = {item["obj"]._moId: item for item in found if "name" in item}
    by_name: dict[str, list[dict]] = {}
    for item in by_ref.values():
        by_name.setdefault(item["name"], []).append(item)

    def ident(item: dict) -> str:
        if len(by_name[item["name"]]) == 1:
            return item["name"]
        path = browse.inventory_path(si, item["obj"]).split("/")
        return "/".join(path[2:]) if len(path) > 2 and path[1] == "vm" else "/".join(path)

    stores: dict[str, dict] = {}
    for item in vs.collect(si, vim.Datastore, ["name", "vm"]):
        stores.setdefault(item.get("name", ""), item)
    chosen: dict[str, bool] = {}
    problems = []
    for name in datastores:
        if name not in stores:
            problems.append(f"datastore '{name}' not found")
            continue
        members = [by_ref[v._moId] for v in stores[name].get("vm") or [] if v._moId in by_ref]
        for item in sorted(members, key=lambda i: i["name"]):
            lives_here = (item.get("config.files.vmPathName") or "").startswith(f"[{name}]")
            if lives_here and not item.get("config.template"):
                chosen[ident(item)] = bool(item.get("guest.ipAddress"))
    for name in vms:
        matches = by_name.get(name.rsplit("/", 1)[-1], [])
        if "/" in name:
            matches = [m for m in matches if ident(m) == name.strip("/")]
        if not matches:
            problems.append(
                f"VM '{name}' is not in the inventory: a drill verifies VMs that exist "
                "(restore a deleted VM with restore-from-snapshot and its 'datastore')"
            )
            continue
        if len(matches) > 1:
            paths = ", ".join(sorted(ident(m) for m in matches))
            problems.append(f"{len(matches)} VMs are named '{name}': give its path ({paths})")
            continue
        chosen[ident(matches[0])] = bool(matches[0].get("guest.ipAddress"))
    if problems:
        raise PlanError(problems)
    if not chosen:
        raise PlanError(["no VM to drill: give vms and/or datastores that hold VMs"])
    return chosen


@step("verify {vm.key} from its snapshot as {vm.new_name}", retries=0)
def verify_vm(
    vcenter: VCenterCredentials,
    plan: RestorePlan,
    vm: VmPlan,
    group: GroupPlan,
    copies: dict[str, DatastoreRef],
    tag: CopyTag,
    checks: DrillChecks,
    expect_ip: bool,
) -> DrillResult:
    """Restore one VM from the copy as an instant recovery does (isolated or on the mapped
    port groups), boot it and check it."""
    result = DrillResult(vm=vm.key, snapshot=group.snapshot.name, host=group.host)
    out = VmOutcome(vm=vm.key, host=group.host)
    start = time.monotonic()
    try:
        # slots are taken by its steps, never by this wrapper (flows/slots.py)
        ref = restore_steps(vcenter, plan, vm, group, copies, tag, time.time(), out)
    except Exception as exc:
        result.restored_as, result.moref = out.restored_as, out.moref
        result.reason = f"error: {brief(exc)}"
        print(f"{vm.key}: FAILED: {result.reason}")
        return result
    result.restored_as, result.moref = out.restored_as, out.moref
    if ref is None:
        result.reason = "not powered on"
        return result
    if checks.verify == Verify.power_on:
        result.boot_s = round(time.monotonic() - start, 2)
        result.passed, result.reason = True, "powered on"
        print(f"{vm.key}: passed: powered on")
        return result
    connected = vm.network == "map" and any(n.action == "map" for n in vm.nics)
    want_ip = checks.require_ip == "always" or (
        checks.require_ip == "auto" and expect_ip and connected
    )
    obj = vs.moref(vcenter.connect(), vim.VirtualMachine, ref.moref)
    try:
        seen = vs.wait_for_tools(obj, checks.deadline_s, want_ip)
    except vs.VSphereError as exc:
        result.heartbeat = str(obj.summary.quickStats.guestHeartbeatStatus)
        result.reason = str(exc)
        print(f"{vm.key}: FAILED: {exc}")
        return result
    result.boot_s = round(time.monotonic() - start, 2)
    result.heartbeat, result.ip = seen["heartbeat"], seen["ip"]
    reasons = []
    if checks.max_boot_s is not None and result.boot_s > checks.max_boot_s:
        reasons.append(f"booted in {result.boot_s}s, more than {checks.max_boot_s}s")
    network = ipaddress.ip_network(checks.ip_network) if checks.ip_network else None
    if network is not None and result.ip and ipaddress.ip_address(result.ip) not in network:
        reasons.append(f"IP {result.ip} is not in {checks.ip_network}")
    result.passed = not reasons
    result.reason = "; ".join(reasons) or "heartbeat" + (" and IP" if want_ip else "")
    print(f"{vm.key}: {'passed' if result.passed else 'FAILED'}: {result.reason}")
    return result


class DrillFailed(Exception):
    """At least one VM failed its verification; the run's artifacts say which and why."""


@flow(
    name="restore-drill",
    task_runner=ThreadPoolTaskRunner(max_workers=settings().max_parallel_vms),
    log_prints=True,
)
def restore_drill(
    vms: list[str] | None = None,
    datastores: list[str] | None = None,
    snapshot: str = "latest",
    target_host: str | None = None,
    network: Literal["disconnected", "map"] = "disconnected",
    network_map: dict[str, str] | None = None,
    verify: Verify = Verify.tools,
    deadline_s: float = 600,
    require_ip: Literal["auto", "always", "never"] = "auto",
    max_boot_s: float | None = None,
    ip_network: str | None = None,
    other_disks: OtherDisks = OtherDisks.refuse,
    vcenter: str = "default",
    arrays: list[str] | None = None,
) -> list[dict]:
    """Verify that VMs restore: boot each from its latest snapshot in isolation, then clean up.

    Args:
        vms: VMs to verify (names, or inventory paths when a name is not unique).
        datastores: Verify every VM whose .vmx is on these datastores as well.
        snapshot: Which snapshot (default the latest; a name or `latest-before:<time>`).
        target_host: ESXi host to run the drill on (default, per datastore: the host of
            its first VM, else the first connected host by name that can reach the array).
        network: disconnected (every NIC, the default: a drill never joins production
            networks) or map (NICs moved to the isolated port groups of network_map).
        network_map: network=map: source network -> port group, e.g.
            {"VM Network": "isolated-pg"}.
        verify: tools (a VMware Tools heartbeat within deadline_s) or power_on (appliances
            without Tools pass once powered on).
        deadline_s: Seconds a VM has, from power-on, to show a tools heartbeat (and IP).
        require_ip: auto (an IP when the production VM reports one and its NIC is on a
            mapped port group: a disconnected NIC gets no DHCP address), always or never.
        max_boot_s: Optional check: fail a VM that takes longer than this to show its heartbeat.
        ip_network: Optional check: the reported IP must belong to this network (CIDR).
        other_disks: Disks on other datastores and RDMs: refuse, detach or from_snapshots
            (see restore-from-snapshot).
        vcenter: Name of the vCenter Credentials block.
        arrays: Names of the array blocks to use (default: every saved array block).
    """
    log = get_run_logger()
    restore_id = current_run_id()
    vc, array_blocks, unusable = load_blocks(vcenter, arrays)
    checks = DrillChecks(
        deadline_s=deadline_s,
        require_ip=require_ip,
        max_boot_s=max_boot_s,
        ip_network=ip_network,
        verify=verify,
    )
    expect = select_vms(vc, vms or [], datastores or [])
    request = RestoreRequest(
        vms=list(expect),
        snapshot=snapshot,
        operation=Operation.instant_recovery,
        target_host=target_host,
        network=NetworkMode.map if network == "map" else NetworkMode.disconnected,
        network_map=network_map or {},
        verify=verify,
        other_disks=other_disks,
        finish=Finish.stop,
        name_suffix=f"-drill-{restore_id[:6]}",
    )
    plan: RestorePlan = plan_restore(vc, array_blocks, request, restore_id, unusable)
    run = Restore(plan, vc, {a.name: a for a in array_blocks}, time.time())
    results: list[DrillResult] = []
    leftovers: list[str] = []
    try:
        run.attach()
        futures = []
        copies = run.copies
        for gr in run.groups:
            for vm in gr.plan.vms:
                f = verify_vm.submit(vc, plan, vm, gr.plan, copies, run.tag, checks, expect[vm.key])
                futures.append((vm, gr, f))
                run.vm_futures.append(f)
        for vm, gr, f in futures:
            try:
                r = f.result()
            except Exception as exc:
                r = DrillResult(
                    vm=vm.key,
                    snapshot=gr.plan.snapshot.name,
                    host=gr.plan.host,
                    reason=f"error: {brief(exc)}",
                )
            results.append(r)
            if r.restored_as and r.moref:
                run.effects.add(Kind.vm, (r.moref,), f"VM {r.restored_as}")
    finally:
        leftovers = run.teardown()
        _publish(restore_id, results, run, leftovers)
    failed = [r for r in results if not r.passed]
    if leftovers:
        raise RestoreError("cleanup could not finish; still there: " + "; ".join(leftovers))
    if failed:
        raise DrillFailed(
            f"{len(failed)} of {len(results)} VMs failed verification: "
            + "; ".join(f"{r.vm}: {r.reason}" for r in failed)
        )
    log.info("all %d VMs passed", len(results))
    return [r.model_dump() for r in results]


def _publish(
    restore_id: str, results: list[DrillResult], run: Restore, leftovers: list[str]
) -> None:
    create_table_artifact(
        key="drill-results",
        table=[
            {
                "VM": r.vm,
                "snapshot": r.snapshot,
                "host": r.host,
                "boot time (s)": "" if r.boot_s is None else r.boot_s,
                "heartbeat": r.heartbeat or "",
                "IP": r.ip or "",
                "result": ("passed" if r.passed else "FAILED") + f": {r.reason}",
            }
            for r in results
        ],
        description="Restore drill: each VM booted in isolation from its snapshot",
    )
    passed = sum(r.passed for r in results)
    lines = [
        f"## Restore drill `{restore_id}`: {passed} of {len(results)} VMs passed",
        "",
        *(
            f"- {'✅' if r.passed else '❌'} **{r.vm}** from `{r.snapshot}` on {r.host}: {r.reason}"
            for r in results
        ),
        "",
        f"**Left behind:** {', '.join(leftovers)}" if leftovers else "Nothing was left behind.",
    ]
    create_markdown_artifact(key="drill-summary", markdown="\n".join(lines))
    for r in results:
        emit_event(
            event=f"snaprestore.drill.vm.{'passed' if r.passed else 'failed'}",
            resource={
                "prefect.resource.id": f"snaprestore.vm.{r.vm}",
                "prefect.resource.name": r.vm,
            },
            related=[
                {
                    "prefect.resource.id": f"prefect.flow-run.{restore_id}",
                    "prefect.resource.role": "flow-run",
                }
            ],
            payload=r.model_dump(),
        )
