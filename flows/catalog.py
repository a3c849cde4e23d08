"""The ``snapshot-catalog`` flow: what can be restored, and from which snapshot.

For a datastore (or the datastore of a VM): the array volume behind it and its
snapshots; and, for one chosen snapshot, the VMs inside it. Those are found the safe way
(as a restore does): a read-write copy of the snapshot is made, presented to one host and mounted,
its folders are browsed for ``.vmx`` files, and everything is torn down again in the safe
order on every exit path. The snapshot itself is never mounted.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from pydantic import BaseModel
from pyVmomi import vim

from blocks.arrays import StorageArray
from blocks.errors import ArrayError
from blocks.models import ArraySnapshot, ArrayVolume
from blocks.registry import load_arrays
from blocks.vcenter import VCenterCredentials
from flows.identity import current_run_id
from flows.params import ProtocolChoice
from flows.plan import (
    AS_TASKS,
    COPY_DATASTORE,
    DIRECT,
    ArrayReads,
    GroupPlan,
    PlanError,
    Planner,
    RestorePlan,
    RestoreRequest,
    select_snapshot,
)
from flows.restore import warn_insecure
from flows.run import Restore
from tasks import vsphere as vs
from tasks.catalog_tasks import FoundVm, find_vms
from tasks.retry import step

SNAPSHOT_ORDER = "newest first"


class CatalogRequestError(PlanError):
    """The catalog cannot be made as asked; nothing was changed anywhere."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        Exception.__init__(
            self,
            "the catalog was not started; fix the request:\n"
            + "\n".join(f"- {p}" for p in problems),
        )


class CatalogError(Exception):
    """The catalog did not finish; the message says what failed and what is left."""


class CatalogPlan(BaseModel):
    """A validated catalog request: the volume, its snapshots and (maybe) how to look inside."""

    catalog_id: str
    datastore: str
    vm: str | None = None
    array: str
    volume: ArrayVolume
    snapshots: list[ArraySnapshot]  # newest first
    snapshot: ArraySnapshot | None = None  # the one to look inside
    group: GroupPlan | None = None  # its copy: one host, one protocol, no VM to restore


def check_subject(datastore: str | None, vm: str | None) -> None:
    """Raise CatalogRequestError unless exactly one of ``datastore`` and ``vm`` is given."""
    if (datastore is None) == (vm is None):
        raise CatalogRequestError(
            [
                "give exactly one of 'datastore' (a datastore name) or 'vm' (a VM in the "
                "inventory, standing for its datastore)"
                + (f"; got both: datastore={datastore!r}, vm={vm!r}" if datastore else "")
            ]
        )


def plan_catalog(
    si: vim.ServiceInstance,
    arrays: list[StorageArray],
    catalog_id: str,
    *,
    datastore: str | None = None,
    vm: str | None = None,
    snapshot: str | None = None,
    target_host: str | None = None,
    protocol: ProtocolChoice = ProtocolChoice.auto,
    reads: ArrayReads = DIRECT,
) -> CatalogPlan:
    """Resolve the request against vCenter and the arrays, changing nothing.

    Exactly one of ``datastore`` and ``vm`` (a VM stands for the datastore of its .vmx).
    With ``snapshot`` (a name, ``latest`` or ``latest-before:<ISO time>``), also choose the
    host and protocol its copy will be presented over, as a restore would. Raises
    CatalogRequestError listing every problem found.
    """
    check_subject(datastore, vm)
    request = RestoreRequest.model_construct(  # a catalog restores no VM: vms stays empty
        vms=[],
        datastore=datastore,
        snapshot=snapshot or "latest",
        target_host=target_host,
        protocol=ProtocolChoice(protocol),
    )
    planner = Planner(si, arrays, request, catalog_id, reads)
    if not arrays:
        planner.fail(
            "no array block is configured: save one (python -m blocks register, then "
            "create an HPE Primera or NetApp ONTAP array block)"
        )
        raise CatalogRequestError(planner.problems)
    vm_obj: vim.VirtualMachine | None = None
    if vm is not None:
        matches = vs.all_named(si, vim.VirtualMachine, vm)
        if not matches:
            raise CatalogRequestError(
                [
                    f"VM '{vm}' is not in the inventory: give its datastore in 'datastore' "
                    "instead (a deleted VM is found by cataloguing its datastore)"
                ]
            )
        if len(matches) > 1:
            raise CatalogRequestError(
                [f"{len(matches)} VMs are named '{vm}': give the datastore in 'datastore'"]
            )
        vm_obj = matches[0]
        datastore = vs.split_ds_path(vs.vmx_path_of(vm_obj))[0]
    assert datastore is not None
    ds = vs.find_by_name(si, vim.Datastore, datastore)
    if ds is None:
        raise CatalogRequestError(
            [
                f"datastore '{datastore}' not found; datastores: "
                + ", ".join(n for n in vs.names(si, vim.Datastore) if not COPY_DATASTORE.match(n))
            ]
        )
    backing = planner.backing(ds)
    if backing is None:
        raise CatalogRequestError(planner.problems)
    volume, array = planner.find_volume(backing, ds.name)
    if volume is None or array is None:
        raise CatalogRequestError(planner.problems)
    try:
        snapshots = sorted(
            reads.list_snapshots(array, volume), key=lambda s: s.created, reverse=True
        )
    except ArrayError as exc:
        raise CatalogRequestError(
            [f"array {array.name}: cannot list the snapshots of {volume.name}: {exc}"]
        ) from exc
    plan = CatalogPlan(
        catalog_id=catalog_id,
        datastore=ds.name,
        vm=vm,
        array=array.name,
        volume=volume,
        snapshots=snapshots,
    )
    if snapshot is None:
        return plan
    chosen = select_snapshot(snapshots, snapshot)
    if isinstance(chosen, str):
        planner.fail(f"{array.name} volume {volume.name} (datastore {ds.name}): {chosen}")
    placed = planner.place(ds, backing, array, vm_obj)  # records its own problems
    if planner.problems or placed is None or isinstance(chosen, str):
        raise CatalogRequestError(planner.problems)
    plan.snapshot = chosen
    plan.group = planner.group(ds, array, volume, chosen, *placed)
    return plan


@step("plan the catalog of {subject}")
def plan_catalog_task(
    subject: str,
    vcenter: VCenterCredentials,
    arrays: list[StorageArray],
    catalog_id: str,
    datastore: str | None,
    vm: str | None,
    snapshot: str | None,
    target_host: str | None,
    protocol: ProtocolChoice,
) -> CatalogPlan:
    """Resolve and validate the catalog request; nothing is created anywhere.

    ``subject`` only names the task run ("datastore X" or "VM Y").
    """
    return plan_catalog(
        vcenter.connect(),
        arrays,
        catalog_id,
        datastore=datastore,
        vm=vm,
        snapshot=snapshot,
        target_host=target_host,
        protocol=protocol,
        reads=AS_TASKS,
    )


def _blank(value: str | None) -> str | None:
    return (value.strip() or None) if value is not None else None


def _snapshot_rows(plan: CatalogPlan) -> list[dict[str, str]]:
    return [
        {
            "snapshot": s.name,
            "created (UTC)": f"{s.created:%Y-%m-%d %H:%M:%S}",
            "id": s.id,
            "looked inside": "yes" if plan.snapshot and s.id == plan.snapshot.id else "",
        }
        for s in plan.snapshots
    ]


def _vm_rows(vms: list[FoundVm]) -> list[dict[str, str]]:
    return [
        {
            "VM": v.name,
            "folder": v.folder,
            ".vmx": v.vmx,
            "guest OS": v.guest_os or "",
            "in the inventory now": "yes" if v.in_inventory else "NO (deleted or renamed)",
        }
        for v in vms
    ]


def _summary(plan: CatalogPlan, result: dict[str, Any]) -> str:
    subject = f"datastore `{plan.datastore}`" + (f" (of VM `{plan.vm}`)" if plan.vm else "")
    vol = plan.volume
    where = vol.naa if vol.kind == "block" else vol.nfs_path
    lines = [
        f"## Snapshot catalog of {subject}",
        "",
        f"Array **{plan.array}**, volume `{vol.name}` ({vol.kind}, `{where}`): "
        f"{len(plan.snapshots)} snapshot(s), {SNAPSHOT_ORDER}.",
        "",
        "| snapshot | created (UTC) |",
        "|---|---|",
        *(f"| `{s.name}` | {s.created:%Y-%m-%d %H:%M} |" for s in plan.snapshots),
    ]
    g = plan.group
    if g is None:
        lines += ["", "Give `snapshot` to list the VMs inside one of them."]
        return "\n".join(lines)
    lines += [
        "",
        f"### VMs in `{g.snapshot.name}`",
        "",
        f"A copy of the snapshot was presented to **{g.host}** over **{g.protocol}** and "
        f"mounted as `{g.mount_name}`.",
        "",
    ]
    vms = result.get("vms")
    if vms is None:
        lines.append("The VMs could not be listed (see the run's logs).")
    elif not vms:
        lines.append("No `.vmx` file was found in the snapshot.")
    else:
        lines += [
            "| VM | .vmx | in the inventory now |",
            "|---|---|---|",
            *(
                f"| {v['name']} | `{v['vmx']}` | {'yes' if v['in_inventory'] else '**no**'} |"
                for v in vms
            ),
            "",
            "Restore with the `restore-from-snapshot` flow: `vms` = the VM names, "
            f'`snapshot` = "{g.snapshot.name}", and `datastore` = "{plan.datastore}" for '
            "VMs no longer in the inventory.",
        ]
    left = result.get("left_behind") or []
    lines += [
        "",
        f"**Left behind:** {', '.join(left)}" if left else "Nothing was left behind.",
    ]
    return "\n".join(lines)


@flow(name="snapshot-catalog", log_prints=True)
def snapshot_catalog(
    datastore: str | None = None,
    vm: str | None = None,
    snapshot: str | None = None,
    target_host: str | None = None,
    protocol: ProtocolChoice = ProtocolChoice.auto,
    vcenter: str = "default",
    arrays: list[str] | None = None,
) -> dict[str, Any]:
    """List a datastore's array snapshots and, for one snapshot, the VMs inside it.

    Always: the array volume behind the datastore and its snapshots, newest first. With
    ``snapshot``: a read-write copy of that snapshot is presented to one ESXi host and
    mounted (the snapshot itself is never mounted), browsed for .vmx files, and torn down
    again in the safe order whatever happens; each VM found is reported with its folder,
    its .vmx and whether a VM of its name is in the inventory now (deleted VMs are not).

    Args:
        datastore: Production datastore to catalog. Give this or `vm`, not both.
        vm: A VM in the inventory: its datastore (where its .vmx is) is catalogued.
        snapshot: Look inside this snapshot: a snapshot name, `latest`, or
            `latest-before:<ISO 8601 time>`. Leave empty to list the snapshots only.
        target_host: ESXi host to present the snapshot's copy to (default: the VM's own
            host, or another connected host that can reach the array).
        protocol: How the host reaches the copy; auto follows the datastore and the host.
        vcenter: Name of the vCenter Credentials block.
        arrays: Names of the array blocks to use (default: every saved array block).

    Returns:
        The array, volume and snapshots (newest first), and with `snapshot` the host,
        protocol and datastore the copy was mounted as, the VMs found, the side effects
        and what was left behind (nothing, or the run fails).
    """
    log = get_run_logger()
    started_at = time.time()
    datastore, vm, snapshot = _blank(datastore), _blank(vm), _blank(snapshot)
    check_subject(datastore, vm)  # before loading anything
    catalog_id = current_run_id()
    try:
        vc = VCenterCredentials.load(vcenter)
    except ValueError as exc:
        raise CatalogRequestError([f"vCenter block '{vcenter}' not found: {exc}"]) from exc
    array_blocks = load_arrays(arrays)
    warn_insecure(vc, array_blocks)
    subject = f"datastore {datastore}" if datastore else f"VM {vm}"
    plan = plan_catalog_task(
        subject, vc, array_blocks, catalog_id, datastore, vm, snapshot, target_host, protocol
    )
    create_table_artifact(
        key="catalog-snapshots",
        table=_snapshot_rows(plan),
        description=f"Snapshots of {plan.array} volume {plan.volume.name} "
        f"(datastore {plan.datastore}), {SNAPSHOT_ORDER}",
    )
    result: dict[str, Any] = {
        "catalog_id": catalog_id,
        "datastore": plan.datastore,
        "vm": plan.vm,
        "array": plan.array,
        "volume": plan.volume.model_dump(mode="json"),
        "snapshot_order": SNAPSHOT_ORDER,
        "snapshots": [
            {"name": s.name, "id": s.id, "created": s.created.isoformat()} for s in plan.snapshots
        ],
        "snapshot": None,
        "vms": None,
    }
    if plan.group is None:
        create_markdown_artifact(key="catalog-summary", markdown=_summary(plan, result))
        return result

    g = plan.group
    result["snapshot"] = {"name": g.snapshot.name, "created": g.snapshot.created.isoformat()}
    result |= {"host": g.host, "protocol": g.protocol, "mounted_as": g.mount_name}
    restore_plan = RestorePlan(
        restore_id=catalog_id,
        request=RestoreRequest.model_construct(vms=[], snapshot=g.snapshot.name),
        groups=[g],
    )
    run = Restore(restore_plan, vc, {a.name: a for a in array_blocks}, started_at)
    failure: BaseException | None = None
    try:
        run.attach()
        mounted = run.groups[0].datastore
        assert mounted is not None
        result["mounted_as"] = mounted.name
        found = find_vms(vc, mounted.name)
        result["vms"] = [v.model_dump(mode="json") for v in found]
        if plan.vm is not None:
            result["vm_in_snapshot"] = any(v.name == plan.vm for v in found)
        create_table_artifact(
            key="catalog-vms",
            table=_vm_rows(found),
            description=f"VMs in {plan.array} snapshot {g.snapshot.name} "
            f"of datastore {plan.datastore}",
        )
    except BaseException as exc:
        failure = exc
        raise
    finally:
        leftovers = run.teardown()
        result["side_effects"] = run.effects.table()
        result["left_behind"] = leftovers
        create_markdown_artifact(key="catalog-summary", markdown=_summary(plan, result))
        if leftovers:
            msg = "cleanup could not finish; still there: " + "; ".join(leftovers)
            log.error(msg)
            if failure is None:
                raise CatalogError(msg)
            raise CatalogError(f"{failure}; and {msg}") from failure
    return result
