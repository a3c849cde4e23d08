"""Faults on every array and vSphere operation a restore uses, and ten restores at once.

The operations are written down here as data (:data:`CASES`), per protocol, from the lab's
call logs of real one-VM instant recoveries (iSCSI on primera1 and on ontap1, FC, NFS):
:func:`test_a_restore_uses_exactly_the_listed_operations` fails when a restore starts to
use an operation that is not listed, so every operation below stays covered:

- a transient fault on each (HTTP 503 on primera1, 429 on ontap1, ``HostCommunication`` in
  vSphere) is retried and the run succeeds, leaving the world as it was;
- a permanent fault on each fails the run with one line naming the step that failed and
  the operation, and everything is cleaned up; in a teardown step the run says what is
  left, and the janitor (or the rescan the message asks for) then removes it.

The load test runs ten restores at once against one array and one host, with tag limits
of 2 and slowed slot-taking operations, and measures in the call logs that no more than 2
of those operations ran at once on either.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest
from prefect.states import State

from flows.janitor import janitor
from flows.restore import restore_from_snapshot
from tasks import vsphere as vs
from tests.flows.test_failures import STEP_FAULTS
from tests.support.concurrency import call_log, last_seq
from tests.support.world import World

# ---- the operations, as data ------------------------------------------------------------------

# vSphere methods that change nothing (property reads, views, logins): covered lightly
VSPHERE_READS = frozenset(
    {
        "RetrieveServiceContent",
        "Login",
        "Fetch",
        "RetrievePropertiesEx",
        "ContinueRetrievePropertiesEx",
        "CreateContainerView",
        "DestroyView",
        "QueryUnresolvedVmfsVolume",
        # waiting for a task or a guest (tasks/watch.py): a collector of the run's own
        "CreatePropertyCollector",
        "CreateFilter",
        "WaitForUpdatesEx",
        "DestroyPropertyCollector",
    }
)
# used only when the condition it fixes holds: the custom attribute is defined once per
# vCenter; a host without the array's portals as static targets gets them (the lab's hosts
# have them all, so these restores never add any)
VSPHERE_SOMETIMES = frozenset({"AddCustomFieldDef", "AddInternetScsiStaticTargets"})
ARRAY_SESSION = frozenset({"POST /api/v1/credentials"})  # a WSAPI login, once per process
ARRAY_READS = {
    "hpe_primera": frozenset(
        {
            "GET /api/v1/system",
            "GET /api/v1/ports",
            "GET /api/v1/volumes",
            "GET /api/v1/volumes/{}",
            "GET /api/v1/hosts",
            "GET /api/v1/vluns",
        }
    ),
    "netapp_ontap": frozenset(
        {
            "GET /api/cluster",
            "GET /api/cluster/nodes",
            "GET /api/cluster/jobs/{}",
            "GET /api/svm/svms",
            "GET /api/network/ip/interfaces",
            "GET /api/network/fc/interfaces",
            "GET /api/protocols/san/iscsi/services",
            "GET /api/protocols/san/igroups",
            "GET /api/protocols/san/lun-maps",
            "GET /api/protocols/nfs/export-policies",
            "GET /api/protocols/nfs/export-policies/{}/rules",
            "GET /api/storage/volumes",
            "GET /api/storage/volumes/{}",
            "GET /api/storage/volumes/{}/snapshots",
            "GET /api/storage/luns",
        }
    ),
}

# what one VM's instant recovery (boot with NICs disconnected, tools, tear down) changes
VM_STEPS = {
    "SetField": 2,  # the copy's datastore, then the VM, tagged
    "RegisterVM_Task": 1,
    "ReconfigVM_Task": 1,  # NICs start disconnected: the original runs
    "PowerOnVM_Task": 1,
    "AnswerVM": 1,  # "moved or copied?": copied
    "PowerOffVM_Task": 1,
    "UnregisterVM": 1,
}
VMFS_STEPS = {"ResignatureUnresolvedVmfsVolume_Task": 1, "RenameDatastore": 1}


@dataclass(frozen=True)
class Case:
    """A one-VM instant recovery from one datastore and what it changes: the mutating
    operations (array ``METHOD /path`` keys, vSphere methods) and how often each is called."""

    datastore: str
    array: str
    vendor: str
    array_ops: dict[str, int]
    vsphere_ops: dict[str, int]
    array_fault: int  # the vendor's "busy" status
    reads: tuple[tuple[str, str], ...] = ()  # (where, operation) read faults of the sweep
    # calls an operation's transient fault adds (1: the refused one; the retry of a step
    # that sends it several times at once sends them all again)
    extra_on_retry: tuple[tuple[str, int], ...] = ()
    notes: str = ""

    @property
    def id(self) -> str:
        return self.datastore


CASES = [
    Case(
        datastore="ds-iscsi-01",
        array="primera1",
        vendor="hpe_primera",
        array_ops={
            "POST /api/v1/volumes/{}": 1,  # createSnapshot: the read-write copy
            "POST /api/v1/vluns": 1,  # exported through the cluster-wide host object
            "DELETE /api/v1/vluns/{}": 1,
            "DELETE /api/v1/volumes/{}": 1,
        },
        vsphere_ops={
            **VMFS_STEPS,
            **VM_STEPS,
            # one rescan to find the copy; the shared host object shows it to all three
            # hosts (vCenter mounts it there): each unmounts, detaches and rescans
            "RescanHba": 4,
            "UnmountVmfsVolume": 3,
            "DetachScsiLun": 3,
        },
        array_fault=503,
        reads=(("array", "GET /api/v1/volumes"), ("vcenter", "QueryUnresolvedVmfsVolume")),
    ),
    Case(
        datastore="ds-iscsi-02",
        array="ontap1",
        vendor="netapp_ontap",
        array_ops={
            "POST /api/storage/volumes": 1,  # the FlexClone
            "POST /api/protocols/san/igroups": 1,  # sr_<host>, deleted with its last map
            "POST /api/protocols/san/lun-maps": 1,
            "DELETE /api/protocols/san/lun-maps/{}/{}": 1,
            "DELETE /api/storage/volumes/{}": 1,
        },
        vsphere_ops={
            **VMFS_STEPS,
            **VM_STEPS,
            "RescanHba": 2,
            "UnmountVmfsVolume": 1,
            "DetachScsiLun": 1,
        },
        array_fault=429,
        reads=(("array", "GET /api/storage/volumes/{}/snapshots"),),
    ),
    Case(
        datastore="ds-fc-01",
        array="primera1",
        vendor="hpe_primera",
        array_ops={
            "POST /api/v1/volumes/{}": 1,
            "POST /api/v1/vluns": 1,  # to the host's own host object
            "DELETE /api/v1/vluns/{}": 1,
            "DELETE /api/v1/volumes/{}": 1,
        },
        vsphere_ops={
            **VMFS_STEPS,
            **VM_STEPS,
            "RescanHba": 4,  # two FC adapters, at attach and at teardown
            "UnmountVmfsVolume": 1,
            "DetachScsiLun": 1,
        },
        array_fault=503,
        reads=(("array", "GET /api/v1/hosts"),),
        # both adapters are rescanned at once: the one refused and the other are sent again
        extra_on_retry=(("RescanHba", 2),),
    ),
    Case(
        datastore="ds-nfs-01",
        array="ontap1",
        vendor="netapp_ontap",
        array_ops={
            "POST /api/storage/volumes": 1,
            "POST /api/protocols/nfs/export-policies": 1,  # the copy's own policy
            "POST /api/protocols/nfs/export-policies/{}/rules": 1,  # the host's VMkernel IP
            "PATCH /api/storage/volumes/{}": 2,  # junction + policy; out of the namespace
            "DELETE /api/protocols/nfs/export-policies/{}": 1,
            "DELETE /api/storage/volumes/{}": 1,
        },
        vsphere_ops={**VM_STEPS, "CreateNasDatastore": 1, "RemoveDatastore": 1},
        array_fault=429,
        reads=(("vcenter", "RetrievePropertiesEx"),),
    ),
]


def _case(datastore: str) -> Case:
    return next(c for c in CASES if c.datastore == datastore)


def _ds(lab: dict[str, Any], name: str) -> dict[str, Any]:
    return next(d for d in lab["datastores"] if d["name"] == name)


def _array(lab: dict[str, Any], name: str) -> dict[str, Any]:
    return next(a for a in lab["arrays"] if a["name"] == name)


# ---- reading what a run did ------------------------------------------------------------------


@dataclass
class Marks:
    """Where every call log stood before a run."""

    arrays: dict[str, int]
    vcenter: int
    world: dict[str, Any] = field(default_factory=dict)


def mark(lab: dict[str, Any], world: World) -> Marks:
    """Return the call logs' positions and the world, before a run."""
    http = world.http
    return Marks(
        arrays={a["name"]: last_seq(http, a["lab_url"]) for a in lab["arrays"]},
        vcenter=last_seq(http, lab["vcenter"]["lab_url"]),
        world=world.snapshot(),
    )


def array_calls(lab: dict[str, Any], world: World, marks: Marks, array: str) -> list[dict]:
    """The calls ``array`` served since ``marks``."""
    return call_log(world.http, _array(lab, array)["lab_url"], marks.arrays[array])


def vcenter_calls(lab: dict[str, Any], world: World, marks: Marks) -> list[dict]:
    """The calls the vCenter served since ``marks``."""
    return call_log(world.http, lab["vcenter"]["lab_url"], marks.vcenter)


def assert_world_as_before(world: World, marks: Marks) -> None:
    """Nothing the run made is left, and no APD-like event happened."""
    after = world.snapshot()
    for key in ("arrays", "datastores", "vms", "devices"):
        assert after[key] == marks.world[key], key
    assert world.bad_events_since(marks.world["events"]) == []


def clear_faults(lab: dict[str, Any], world: World) -> None:
    """Remove every fault rule from the vCenter and the arrays."""
    world.vclab.delete("/faults")
    for a in lab["arrays"]:
        world.http.delete(a["lab_url"] + "/faults", timeout=30).raise_for_status()


def inject(lab: dict[str, Any], world: World, where: str, rule: dict[str, Any]) -> None:
    """Add a fault rule on the vCenter (``where`` "vcenter") or on array ``where``."""
    if where == "vcenter":
        world.vclab.post("/faults", rule).raise_for_status()
    else:
        world.inject(where, rule)


def run_restore(ds: dict[str, Any], **params: Any) -> State:
    """Instant-recover the first VM of ``ds`` from its newer snapshot; return the state."""
    return restore_from_snapshot(
        vms=ds["vms"][:1], snapshot=ds["snapshots"][-1], return_state=True, **params
    )


def failure_text(state: State) -> str:
    """The failed run's error, as its state and the exception say it (one and the same)."""
    assert state.is_failed(), state
    text = str(state.result(raise_on_failure=False))
    assert state.message is not None and text in state.message, (text, state.message)
    return text


# ---- every operation is listed -----------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_a_restore_uses_exactly_the_listed_operations(lab, lab_blocks, world, case: Case):
    """A one-VM restore over each protocol calls exactly the listed mutating operations, as
    often as listed, and reads only listed operations: a new operation fails this test
    until it is listed (and so covered by the fault tests below)."""
    ds = _ds(lab, case.datastore)
    marks = mark(lab, world)
    state = run_restore(ds)
    assert state.is_completed(), state
    assert [o["state"] for o in state.result()["vms"]] == ["verified"]
    for a in lab["arrays"]:
        ops = Counter(c["operation"] for c in array_calls(lab, world, marks, a["name"]))
        known = ARRAY_READS[a["vendor"]] | ARRAY_SESSION
        if a["name"] == case.array:
            mutating = {op: n for op, n in ops.items() if op not in known}
            assert mutating == case.array_ops, a["name"]
        else:  # the planner reads every array; the restore changes nothing on the others
            assert set(ops) <= known, a["name"]
    methods = Counter(c["method"] for c in vcenter_calls(lab, world, marks))
    mutating = {
        m: n for m, n in methods.items() if m not in VSPHERE_READS and m not in VSPHERE_SOMETIMES
    }
    assert mutating == case.vsphere_ops
    assert_world_as_before(world, marks)


def test_every_listed_operation_has_a_permanent_fault_case():
    """Each mutating operation of :data:`CASES` fails permanently in one case here or in
    tests/flows/test_failures.py (``STEP_FAULTS``, and its unpresent case)."""
    covered = {(f.where, f.rule["operation"]) for f in PERMANENT}
    for p in STEP_FAULTS:
        fault = p.values[1]
        covered.add(
            ("vcenter", fault[1]["operation"])
            if fault[0] == "vcenter"
            else (fault[1], fault[2]["operation"])
        )
    covered.add(("primera1", "DELETE /api/v1/vluns/{}"))  # its cleanup-cannot-finish test
    wanted = {(c.array, op) for c in CASES for op in c.array_ops}
    wanted |= {("vcenter", m) for c in CASES for m in c.vsphere_ops}
    assert wanted - covered == set()


# ---- transient faults: retried, the run succeeds -------------------------------------------------


def _answered(call: dict[str, Any], fault: int | str) -> bool:
    """True when the lab answered ``call`` with the injected ``fault``."""
    return call.get("status") == fault if isinstance(fault, int) else call.get("fault") == fault


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_a_transient_fault_on_every_operation_is_retried(lab, lab_blocks, world, case: Case):
    """Every mutating operation of the restore (and a read or two) fails once with a
    transient fault, all in one run: each is retried (its call count is one more than a
    clean restore's, the extra call being the refused one), the run succeeds, and the
    world is as before."""
    ds = _ds(lab, case.datastore)
    faults: list[tuple[str, str, int | str]] = [
        (case.array, op, case.array_fault) for op in case.array_ops
    ]
    faults += [("vcenter", m, "HostCommunication") for m in case.vsphere_ops]
    for where, op in case.reads:
        faults.append(
            (case.array, op, case.array_fault)
            if where == "array"
            else (where, op, "HostCommunication")
        )
    marks = mark(lab, world)
    try:
        for where, op, error in faults:
            inject(lab, world, where, {"operation": op, "error": error, "times": 1})
        state = run_restore(ds)
    finally:
        clear_faults(lab, world)
    assert state.is_completed(), state
    assert [o["state"] for o in state.result()["vms"]] == ["verified"]
    arrays = array_calls(lab, world, marks, case.array)
    vcenter = vcenter_calls(lab, world, marks)
    expected = {**case.array_ops, **case.vsphere_ops}
    for where, op, error in faults:
        calls = [
            c
            for c in (vcenter if where == "vcenter" else arrays)
            if c.get("operation", c.get("method")) == op
        ]
        refused = [c for c in calls if _answered(c, error)]
        assert len(refused) == 1, (op, calls)
        later = [c for c in calls if c["seq"] > refused[0]["seq"] and not _answered(c, error)]
        assert later, f"{op} was not called again after its transient fault"
        if op in expected:  # the clean count plus the refused call (and its companions)
            extra = dict(case.extra_on_retry).get(op, 1)
            assert len(calls) == expected[op] + extra, (
                op,
                [c.get("status", c.get("fault")) for c in calls],
            )
    assert_world_as_before(world, marks)


# ---- permanent faults: the run fails, in one line, and cleans up ---------------------------------


@dataclass(frozen=True)
class Permanent:
    """A permanent fault on one operation, in the restore from ``datastore``: the run's
    one-line error must match ``says`` (the step that failed, then the operation's error)."""

    id: str
    datastore: str
    where: str  # "vcenter" or the array
    rule: dict[str, Any]
    says: str  # a regular expression
    teardown: bool = False  # the fault hits the cleanup: the run says what is left
    passes: int = 0  # calls of the operation let through first (the later call is faulted)

    def param(self) -> Any:
        return pytest.param(self, id=self.id)


NAME = r"[\w.#-]+"
PERMANENT = [
    # ---- making, presenting, mounting the copy; the VM's own steps
    Permanent(
        "primera-create-copy",
        "ds-fc-01",
        "primera1",
        {"operation": "POST /api/v1/volumes/{}", "error": 400},
        rf"create copy of DS_FC_01\.{NAME} for restore {NAME} failed: primera1: "
        r"POST /api/v1/volumes/DS_FC_01\.[\w.-]+: HTTP 400",
    ),
    Permanent(
        "ontap-create-copy",
        "ds-iscsi-02",
        "ontap1",
        {"operation": "POST /api/storage/volumes", "error": 400},
        rf"create copy of {NAME} for restore {NAME} failed: ontap1: "
        r"POST /api/storage/volumes: HTTP 400",
    ),
    Permanent(
        "ontap-igroup",
        "ds-iscsi-02",
        "ontap1",
        {"operation": "POST /api/protocols/san/igroups", "error": 400},
        r"present sr_\w+ to esx-0\d over iscsi failed: ontap1: "
        r"POST /api/protocols/san/igroups: HTTP 400",
    ),
    Permanent(
        "ontap-lun-map",
        "ds-iscsi-02",
        "ontap1",
        {"operation": "POST /api/protocols/san/lun-maps", "error": 400},
        r"present sr_\w+ to esx-0\d over iscsi failed: ontap1: "
        r"POST /api/protocols/san/lun-maps: HTTP 400",
    ),
    Permanent(
        "ontap-export-rule",
        "ds-nfs-01",
        "ontap1",
        {"operation": "POST /api/protocols/nfs/export-policies/{}/rules", "error": 400},
        r"present sr_\w+ to esx-0\d over nfs failed: ontap1: "
        r"POST /api/protocols/nfs/export-policies/\d+/rules: HTTP 400",
    ),
    Permanent(
        "ontap-junction",
        "ds-nfs-01",
        "ontap1",
        {"operation": "PATCH /api/storage/volumes/{}", "error": 400},
        r"present sr_\w+ to esx-0\d over nfs failed: ontap1: "
        r"PATCH /api/storage/volumes/[\w-]+: HTTP 400",
    ),
    Permanent(
        "rename-datastore",
        "ds-iscsi-02",
        "vcenter",
        {"operation": "RenameDatastore", "error": "DuplicateName"},
        r"resignature naa\.\w+ on esx-0\d as sr-\w+-ds-iscsi-02 failed: DuplicateName: "
        r"lab: injected DuplicateName \(an object of that name exists already",
    ),
    Permanent(
        "tag-datastore",
        "ds-iscsi-02",
        "vcenter",
        {"operation": "SetField", "error": "InvalidArgument"},
        r"resignature naa\.\w+ on esx-0\d as sr-\w+-ds-iscsi-02 failed: InvalidArgument",
    ),
    Permanent(
        "tag-vm",
        "ds-iscsi-02",
        "vcenter",
        {"operation": "SetField", "error": "InvalidArgument", "after": 1},
        r"restore failed for jump-01: register jump-01-sr-\w+ from \[sr-\w+-ds-iscsi-02\] "
        r"jump-01/jump-01\.vmx failed: InvalidArgument",
    ),
    Permanent(
        "disconnect-nics",
        "ds-iscsi-02",
        "vcenter",
        {"operation": "ReconfigVM_Task", "error": "InvalidState"},
        r"restore failed for jump-01: disconnect the NICs of jump-01-sr-\w+ failed: "
        r"InvalidState",
    ),
    Permanent(
        "answer-question",
        "ds-iscsi-02",
        "vcenter",
        {"operation": "AnswerVM", "error": "InvalidArgument"},
        r"restore failed for jump-01: power on jump-01-sr-\w+ failed: InvalidArgument",
    ),
    # ---- teardown: the run says what is left; the janitor finishes
    Permanent(
        "power-off",
        "ds-iscsi-02",
        "vcenter",
        {"operation": "PowerOffVM_Task", "error": "InvalidState"},
        r"cleanup could not finish; still there: VM jump-01-sr-\w+ on esx-0\d "
        r"\(power off jump-01-sr-\w+ failed: InvalidState",
        teardown=True,
    ),
    Permanent(
        "unregister",
        "ds-iscsi-02",
        "vcenter",
        {"operation": "UnregisterVM", "error": "InvalidState"},
        r"cleanup could not finish; still there: VM jump-01-sr-\w+ on esx-0\d "
        r"\(unregister jump-01-sr-\w+ failed: InvalidState",
        teardown=True,
    ),
    Permanent(
        "unmount-vmfs",
        "ds-iscsi-02",
        "vcenter",
        {"operation": "UnmountVmfsVolume", "error": "HostConfigFault"},
        r"cleanup could not finish; still there: datastore sr-\w+-ds-iscsi-02 mounted on "
        r"esx-0\d \(unmount sr-\w+-ds-iscsi-02 from esx-0\d failed: HostConfigFault",
        teardown=True,
    ),
    Permanent(
        "detach-device",
        "ds-iscsi-02",
        "vcenter",
        {"operation": "DetachScsiLun", "error": "HostConfigFault"},
        r"cleanup could not finish; still there: device naa\.\w+ attached on esx-0\d "
        r"\(detach naa\.\w+ from esx-0\d failed: HostConfigFault",
        teardown=True,
    ),
    Permanent(
        "rescan-after-withdraw",
        "ds-iscsi-02",
        "vcenter",
        {"operation": "RescanHba", "error": "HostConfigFault", "after": 1},
        r"cleanup could not finish; still there: a stale entry for naa\.\w+ on esx-0\d "
        r"\(rescan its adapters\)",
        teardown=True,
    ),
    Permanent(
        "remove-nfs-datastore",
        "ds-nfs-01",
        "vcenter",
        {"operation": "RemoveDatastore", "error": "HostConfigFault"},
        r"cleanup could not finish; still there: datastore sr-\w+-ds-nfs-01 mounted on "
        r"esx-0\d \(remove NFS datastore sr-\w+-ds-nfs-01 from esx-0\d failed: HostConfigFault",
        teardown=True,
    ),
    Permanent(
        "primera-delete-copy",
        "ds-fc-01",
        "primera1",
        {"operation": "DELETE /api/v1/volumes/{}", "error": 400},
        r"cleanup could not finish; still there: copy sr-[\w-]+ on primera1 \(delete copy "
        r"sr-[\w-]+ failed: primera1: DELETE /api/v1/volumes/sr-[\w-]+: HTTP 400",
        teardown=True,
    ),
    Permanent(
        "ontap-unmap",
        "ds-iscsi-02",
        "ontap1",
        {"operation": "DELETE /api/protocols/san/lun-maps/{}/{}", "error": 400},
        r"cleanup could not finish; still there: copy sr_\w+ presented to hosts by ontap1 "
        r"\(withdraw sr_\w+ from every host on ontap1 failed: ontap1: "
        r"DELETE /api/protocols/san/lun-maps/[\w-]+/[\w-]+: HTTP 400",
        teardown=True,
    ),
    Permanent(
        "ontap-unexport",
        "ds-nfs-01",
        "ontap1",
        {"operation": "PATCH /api/storage/volumes/{}", "error": 400},
        r"cleanup could not finish; still there: copy sr_\w+ presented to hosts by ontap1 "
        r"\(withdraw sr_\w+ from every host on ontap1 failed: ontap1: "
        r"PATCH /api/storage/volumes/[\w-]+: HTTP 400",
        teardown=True,
        passes=1,
    ),
    Permanent(
        "ontap-delete-policy",
        "ds-nfs-01",
        "ontap1",
        {"operation": "DELETE /api/protocols/nfs/export-policies/{}", "error": 400},
        r"cleanup could not finish; still there: copy sr_\w+ presented to hosts by ontap1 "
        r"\(withdraw sr_\w+ from every host on ontap1 failed: ontap1: "
        r"DELETE /api/protocols/nfs/export-policies/\d+: HTTP 400",
        teardown=True,
    ),
    Permanent(
        "ontap-delete-copy",
        "ds-iscsi-02",
        "ontap1",
        {"operation": "DELETE /api/storage/volumes/{}", "error": 400},
        r"cleanup could not finish; still there: copy sr_\w+ on ontap1 \(delete copy sr_\w+ "
        r"failed: ontap1: DELETE /api/storage/volumes/[\w-]+: HTTP 400",
        teardown=True,
    ),
]


@pytest.mark.parametrize("fault", [p.param() for p in PERMANENT])
def test_a_permanent_fault_fails_the_run_in_one_line_and_cleans_up(
    lab, lab_blocks, world, si, fault: Permanent
):
    """A permanent fault on the operation fails the run, once (no retry of a permanent
    fault), with one line naming the step and the operation's error. Before the teardown,
    everything is cleaned up by the run itself; in the teardown, the run says what is left
    and, once the fault is gone, the janitor (or, for a rescan, the rescan the message
    asks for) leaves the world as it was."""
    ds = _ds(lab, fault.datastore)
    marks = mark(lab, world)
    try:
        if fault.passes:  # an array rule that lets the first call through
            inject(
                lab,
                world,
                fault.where,
                {"operation": fault.rule["operation"], "times": fault.passes},
            )
        inject(lab, world, fault.where, fault.rule)
        state = run_restore(ds)
    finally:
        clear_faults(lab, world)
    text = failure_text(state)
    assert "\n" not in text and "(vim." not in text and "Traceback" not in text, text
    assert re.search(fault.says, text), text
    op = fault.rule["operation"]
    if fault.where == "vcenter":
        refused = [
            c
            for c in vcenter_calls(lab, world, marks)
            if c["method"] == op and c.get("fault") == fault.rule["error"]
        ]
    else:
        refused = [
            c
            for c in array_calls(lab, world, marks, fault.where)
            if c["operation"] == op and c["status"] == 400
        ]
    assert len(refused) == 1, refused  # a permanent fault is not retried
    if fault.teardown:
        assert "cleanup could not finish; still there:" in text, text
        left = world.snapshot()
        assert [k for k in ("arrays", "datastores", "vms", "devices") if left[k] != marks.world[k]]
        run_id = str(state.state_details.flow_run_id)
        if "still there: a stale entry" in text:  # all that is left: do as it asks
            esx = vs.get_host(si, re.search(r"stale entry for \S+ on (esx-0\d)", text)[1])
            vs.rescan(esx, vs.adapters_for(esx, "iscsi"))
        else:
            swept = janitor(runs=[run_id], ttl_minutes=0, return_state=True)
            assert swept.is_completed(), swept
    else:
        assert "still there" not in text, text
    assert_world_as_before(world, marks)
