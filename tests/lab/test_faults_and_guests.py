"""Injected faults and delays, call counting, the moved/copied question and guest tools."""

from __future__ import annotations

import ssl
import time

import pytest
from pyVmomi import SoapStubAdapter, vim, vmodl

from tests.support.fixtures import mounted_copy, register
from tests.support.storage_ops import ops_for
from tests.support.vcenter import find, host
from tests.support.vsphere_steps import (
    answer,
    power_on,
    sw_iscsi,
    wait,
    wait_for_question,
    wait_for_tools,
)


def test_vcenter_fault_is_raised_then_the_call_succeeds(lab, si, vclab):
    esx = host(si, "esx-01")
    device = sw_iscsi(esx).device
    before = vclab.calls().get("RescanHba", 0)
    r = vclab.post("/faults", {"operation": "RescanHba", "error": "HostConfigFault", "times": 1})
    assert r.status_code == 200
    with pytest.raises(vim.fault.HostConfigFault) as err:
        esx.configManager.storageSystem.RescanHba(hbaDevice=device)
    assert "injected" in err.value.msg
    esx.configManager.storageSystem.RescanHba(hbaDevice=device)
    assert vclab.calls()["RescanHba"] == before + 2
    log = vclab.get("/calls/log?method=RescanHba")["calls"][-2:]
    assert [c.get("fault", "") for c in log] == ["HostConfigFault", ""]
    assert all(c["host"] == "esx-01" and c["arg"] == device for c in log)


def test_injected_fault_fires_on_the_next_call_logged_in_or_not(lab, si, vclab):
    """A rule is consumed by the next call of its method; it never waits for a logged-in one."""
    esx = host(si, "esx-03")
    device = sw_iscsi(esx).device
    stub = SoapStubAdapter(
        host=lab["vcenter"]["host"],
        port=lab["vcenter"]["port"],
        sslContext=ssl.create_default_context(cafile=lab["ca_bundle"]),
    )
    anonymous = vim.host.StorageSystem(esx.configManager.storageSystem._moId, stub)
    with pytest.raises(vim.fault.NotAuthenticated):
        anonymous.RescanHba(hbaDevice=device)
    vclab.post(
        "/faults", {"operation": "RescanHba", "error": "HostConfigFault", "times": 1}
    ).raise_for_status()
    with pytest.raises(vim.fault.HostConfigFault):
        anonymous.RescanHba(hbaDevice=device)
    assert [r for r in vclab.get("/faults")["faults"] if r["operation"] == "RescanHba"] == []
    esx.configManager.storageSystem.RescanHba(hbaDevice=device)  # the logged-in call is clean


def test_task_fault_ends_the_task_in_error_on_the_host(lab, si, vclab):
    esx = host(si, "esx-02")
    vclab.post(
        "/faults",
        {
            "operation": "ResignatureUnresolvedVmfsVolume_Task",
            "error": "HostConfigFault",
            "times": 1,
        },
    ).raise_for_status()
    spec = vim.host.UnresolvedVmfsResignatureSpec(extentDevicePath=["/vmfs/devices/disks/naa.x:1"])
    task = esx.configManager.datastoreSystem.ResignatureUnresolvedVmfsVolume_Task(spec)
    with pytest.raises(vim.fault.HostConfigFault):
        wait(task)
    assert task.info.entity == esx
    assert "injected" in task.info.error.msg


def test_delay_is_served_and_bad_rules_are_refused(lab, si, vclab):
    esx = host(si, "esx-03")
    vclab.post(
        "/faults", {"operation": "RescanVmfs", "delay_s": 0.4, "times": 1}
    ).raise_for_status()
    start = time.monotonic()
    esx.configManager.storageSystem.RescanVmfs()
    assert time.monotonic() - start >= 0.4  # the injected delay was served (a lower bound)
    assert (
        vclab.post("/faults", {"operation": "NoSuchMethod", "error": "HostConfigFault"}).status_code
        == 400
    )
    # a vSphere type that is not a method is refused too
    not_a_method = vclab.post("/faults", {"operation": "HostDnsConfig", "error": "HostConfigFault"})
    assert not_a_method.status_code == 400 and "method name" in not_a_method.json()["error"]
    assert (
        vclab.post("/faults", {"operation": "RescanHba", "error": "NotAFault"}).status_code == 400
    )
    assert vclab.post("/faults", {"operation": "RescanHba"}).status_code == 400


def test_array_fault_is_answered_in_the_vendor_format_and_counted(lab, http):
    array = next(a for a in lab["arrays"] if a["vendor"] == "hpe_primera")
    op = "GET /api/v1/volumes"
    before = http.get(array["lab_url"] + "/calls", timeout=30).json().get(op, 0)
    r = http.post(
        array["lab_url"] + "/faults", json={"operation": op, "error": 503, "times": 1}, timeout=30
    )
    assert r.status_code == 201
    ops = ops_for(lab, array["name"])
    r = ops.http.get(ops.base + "/volumes", timeout=30)
    assert r.status_code == 503 and set(r.json()) >= {"code", "desc"}
    assert ops.http.get(ops.base + "/volumes", timeout=30).status_code == 200
    assert http.get(array["lab_url"] + "/calls", timeout=30).json()[op] == before + 2


def _question_vm(si, lab, mc, index, name):
    vm = register(si, lab, mc.ds.name, mc.ds_cfg["vms"][index], mc.esx, name)
    task = vm.PowerOnVM_Task()
    q = wait_for_question(vm, task)
    assert q is not None and q.message[0].id == "msg.uuid.altered"
    assert task.info.state == vim.TaskInfo.State.running
    labels = {c.label for c in q.choice.choiceInfo}
    assert labels == {"button.uuid.cancel", "button.uuid.movedTheVM", "button.uuid.copiedTheVM"}
    return vm, task, q


def test_moved_or_copied_answers(lab, si, vclab):
    with mounted_copy(si, lab, "ds-nfs-01", host_index=0) as mc:
        vm, task, q = _question_vm(si, lab, mc, 0, "q-moved")
        uuid = vm.config.uuid
        with pytest.raises(vmodl.fault.InvalidArgument):
            vm.AnswerVM(
                questionId=q.id, answerChoice="button.uuid.movedTheVM"
            )  # a label, not a key
        answer(vm, q, "button.uuid.movedTheVM")
        wait(task)
        assert vm.runtime.powerState == "poweredOn" and vm.runtime.question is None
        assert vm.config.uuid == uuid  # moved keeps the identity
        wait(vm.PowerOffVM_Task())
        vm.UnregisterVM()

        vm, task, q = _question_vm(si, lab, mc, 1, "q-copied")
        uuid = vm.config.uuid
        answer(vm, q, "button.uuid.copiedTheVM")
        wait(task)
        assert vm.config.uuid != uuid  # copied gets a new identity
        with pytest.raises(vim.fault.ConcurrentAccess):
            vm.AnswerVM(questionId=q.id, answerChoice="2")  # nothing pending any more
        wait(vm.PowerOffVM_Task())
        assert not power_on(vm)  # the answer was remembered in the .vmx
        wait(vm.PowerOffVM_Task())
        vm.UnregisterVM()

        vm, task, q = _question_vm(si, lab, mc, 2, "q-cancel")
        answer(vm, q, "button.uuid.cancel")
        with pytest.raises(vmodl.fault.RequestCanceled):
            wait(task)
        assert vm.runtime.powerState == "poweredOff"
        vm.UnregisterVM()


def test_tools_heartbeat_ip_and_a_guest_whose_tools_never_start(lab, si, vclab):
    with mounted_copy(si, lab, "ds-nfs-01", host_index=1) as mc:
        vm = register(si, lab, mc.ds.name, mc.ds_cfg["vms"][0], mc.esx, "guest-ok")
        power_on(vm)
        wait_for_tools(vm)
        assert vm.guest.ipAddress and vm.guest.ipAddress.startswith("127.0.50.")
        wait(vm.PowerOffVM_Task())
        assert vm.guest.toolsRunningStatus == "guestToolsNotRunning"
        # isolated: NIC not connected at power-on -> tools run, the static IP is still
        # reported, on a NIC that is not connected
        nic = next(
            d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualEthernetCard)
        )
        nic.connectable.startConnected = False
        nic.connectable.connected = False
        change = vim.vm.device.VirtualDeviceSpec(operation="edit", device=nic)
        wait(vm.ReconfigVM_Task(vim.vm.ConfigSpec(deviceChange=[change])))
        power_on(vm)
        wait_for_tools(vm)
        assert vm.guest.ipAddress and not vm.guest.net[0].connected
        wait(vm.PowerOffVM_Task())
        vm.UnregisterVM()

        vclab.post("/guest", {"match": "guest-broken*", "tools": "never"}).raise_for_status()
        vm = register(si, lab, mc.ds.name, mc.ds_cfg["vms"][1], mc.esx, "guest-broken-1")
        power_on(vm)
        with pytest.raises(TimeoutError):
            wait_for_tools(vm, timeout=1.5)  # the lab's tools delay is 0.2 s
        assert vm.summary.quickStats.guestHeartbeatStatus == "gray"
        with pytest.raises(vim.fault.ToolsUnavailable):
            vm.ShutdownGuest()
        wait(vm.PowerOffVM_Task())
        vm.UnregisterVM()


def test_task_fault_on_a_non_entity_reports_an_entity_clients_can_read(lab, si, vclab):
    ds = find(si, vim.Datastore, "ds-nfs-01")
    vclab.post(
        "/faults",
        {"operation": "SearchDatastoreSubFolders_Task", "error": "FileNotFound", "times": 1},
    ).raise_for_status()
    spec = vim.host.DatastoreBrowser.SearchSpec(matchPattern=["*.vmx"])
    task = ds.browser.SearchDatastoreSubFolders_Task("[ds-nfs-01]", spec)
    with pytest.raises(vim.fault.FileNotFound):
        wait(task)
    assert task.info.entity == ds  # the browser's datastore, not the browser
