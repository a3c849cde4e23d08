"""The .vmx rewrite that keeps a restored VM on the snapshot copies (pure text rules)."""

from __future__ import annotations

from tasks import vmx_edit

PROD = "5f1b2c3d-aabbccdd-eeff-001122334455"  # the VM's production datastore
COPY = "6a7b8c9d-11223344-5566-778899aabbcc"  # its copy
FC = "0b0b0b0b-0c0c0c0c-0d0d-0e0e0e0e0e0e"  # another production datastore
FC_COPY = "0f0f0f0f-01010101-0202-030303030303"
SWAP = "77777777-88888888-9999-aaaaaaaaaaaa"  # a swap datastore nobody copied

VMX = f"""displayName = "multi-01"
scsi0:0.present = "TRUE"
scsi0:0.fileName = "multi-01.vmdk"
scsi0:1.present = "TRUE"
scsi0:1.fileName = "/vmfs/volumes/{FC}/multi-01/multi-01_1.vmdk"
scsi0:2.present = "TRUE"
scsi0:2.fileName = "/vmfs/volumes/{PROD}/multi-01/multi-01_2.vmdk"
scsi0:3.present = "FALSE"
scsi0:3.fileName = "/vmfs/volumes/{SWAP}/old/old.vmdk"
nvram = "/vmfs/volumes/{PROD}/multi-01/multi-01.nvram"
sched.swap.dir = "/vmfs/volumes/{SWAP}/swap"
serial0.present = "TRUE"
serial0.fileName = "/vmfs/volumes/{SWAP}/console.log"
ethernet0.present = "TRUE"
"""


def rules(**extra) -> vmx_edit.Rules:
    return vmx_edit.Rules(
        own={PROD, "ds-iscsi-01"},
        copy_path=f"/vmfs/volumes/{COPY}",
        copy_names={"sr-12345678-ds-iscsi-01"},
        redirects={FC: f"/vmfs/volumes/{FC_COPY}", "ds-fc-01": f"/vmfs/volumes/{FC_COPY}"},
        **extra,
    )


def test_every_file_outside_the_copies_is_pointed_at_a_copy_removed_or_disconnected():
    out = vmx_edit.rewrite(VMX, rules(), "multi-01")
    entries = vmx_edit.parse(out.text)
    assert out.problems == []
    assert entries["scsi0:0.filename"] == "multi-01.vmdk"  # relative: on the copy already
    assert entries["scsi0:1.filename"] == f"/vmfs/volumes/{FC_COPY}/multi-01/multi-01_1.vmdk"
    assert entries["scsi0:2.filename"] == f"/vmfs/volumes/{COPY}/multi-01/multi-01_2.vmdk"
    assert entries["scsi0:3.present"] == "FALSE"  # not present: never opened, left alone
    assert entries["nvram"] == f"/vmfs/volumes/{COPY}/multi-01/multi-01.nvram"
    assert "sched.swap.dir" not in entries  # elsewhere: the VM's folder on the copy is used
    assert entries["serial0.present"] == "FALSE"
    assert out.own_files == [
        ("scsi0:0", "multi-01/multi-01.vmdk"),
        ("scsi0:2", "multi-01/multi-01_2.vmdk"),
    ]
    assert len(out.changes) == 5


def test_a_rewritten_vmx_is_left_as_it_is_when_the_step_is_retried():
    first = vmx_edit.rewrite(VMX, rules(), "multi-01")
    again = vmx_edit.rewrite(first.text, rules(), "multi-01")
    assert again.problems == [] and again.changes == []
    assert again.text == first.text
    assert again.own_files == first.own_files  # the VM's disks are still checked, not dropped
    # also when disks elsewhere that the plan does not know about would be dropped
    lenient = vmx_edit.rewrite(first.text, rules(drop_unplanned=True), "multi-01")
    assert lenient.changes == [] and lenient.dropped == []


def test_a_disk_the_plan_did_not_account_for_is_refused_or_dropped():
    vmx = VMX.replace(f"/vmfs/volumes/{FC}/", f"/vmfs/volumes/{SWAP}/")
    strict = vmx_edit.rewrite(vmx, rules(), "multi-01")
    assert strict.problems and f"{SWAP}/multi-01/multi-01_1.vmdk" in strict.problems[0]
    lenient = vmx_edit.rewrite(vmx, rules(drop_unplanned=True), "multi-01")
    assert lenient.problems == [] and lenient.dropped == ["scsi0:1"]
    assert vmx_edit.parse(lenient.text)["scsi0:1.present"] == "FALSE"


def test_descriptors_tell_rdms_and_parents():
    rdm = 'createType="vmfsPassthroughRawDeviceMap"\nRW 20971520 VMFSRDM "x-rdmp.vmdk"\n'
    assert vmx_edit.is_rdm(vmx_edit.descriptor(rdm))
    child = f'createType="vmfsSparse"\nparentFileNameHint="/vmfs/volumes/{PROD}/a/a.vmdk"\n'
    desc = vmx_edit.descriptor(child)
    assert not vmx_edit.is_rdm(desc)
    assert vmx_edit.target(desc["parentfilenamehint"], rules(), "a") == (
        "redirect",
        f"/vmfs/volumes/{COPY}/a/a.vmdk",
    )
