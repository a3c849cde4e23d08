"""vSphere steps for lab tests, with pyVmomi over real SOAP."""

from __future__ import annotations

import ssl
import time
from typing import Any
from urllib.parse import quote

import requests
from pyVim.connect import SmartConnect
from pyVmomi import vim


def wait(task: vim.Task, timeout: float = 60) -> Any:
    """Wait for ``task``; return its result or raise its fault."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = task.info
        if info.state == vim.TaskInfo.State.success:
            return info.result
        if info.state == vim.TaskInfo.State.error:
            raise info.error
        time.sleep(0.05)
    raise TimeoutError(f"task {task} still {task.info.state}")


def wait_for_question(vm: vim.VirtualMachine, task: vim.Task, timeout: float = 30):
    """Wait until ``vm`` asks a question (returned) or ``task`` ends (None)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        q = vm.runtime.question
        if q is not None:
            return q
        if task.info.state in (vim.TaskInfo.State.success, vim.TaskInfo.State.error):
            return None
        time.sleep(0.05)
    raise TimeoutError("neither a question nor the end of the task")


def answer(vm: vim.VirtualMachine, question, label: str) -> None:
    """Answer ``question`` with the choice whose label is ``label`` (by its key)."""
    key = next(c.key for c in question.choice.choiceInfo if c.label == label)
    vm.AnswerVM(questionId=question.id, answerChoice=key)


def power_on(vm: vim.VirtualMachine, label: str = "button.uuid.copiedTheVM") -> bool:
    """Power ``vm`` on, answering the moved/copied question; return True if it was asked."""
    task = vm.PowerOnVM_Task()
    q = wait_for_question(vm, task)
    if q is not None:
        assert q.message[0].id == "msg.uuid.altered"
        answer(vm, q, label)
    wait(task)
    return q is not None


def wait_for_tools(vm: vim.VirtualMachine, timeout: float = 30) -> None:
    """Wait until VMware Tools run in ``vm`` with a green heartbeat."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (
            vm.guest.toolsRunningStatus == "guestToolsRunning"
            and vm.summary.quickStats.guestHeartbeatStatus == "green"
        ):
            return
        time.sleep(0.05)
    raise TimeoutError(f"tools not running in {vm.name}")


def sw_iscsi(host: vim.HostSystem) -> vim.host.InternetScsiHba:
    """Return the host's software iSCSI adapter."""
    return next(
        a
        for a in host.config.storageDevice.hostBusAdapter
        if isinstance(a, vim.host.InternetScsiHba) and a.isSoftwareBased
    )


def fc_adapters(host: vim.HostSystem) -> list[vim.host.FibreChannelHba]:
    """Return the host's FC adapters."""
    return [
        a
        for a in host.config.storageDevice.hostBusAdapter
        if isinstance(a, vim.host.FibreChannelHba)
    ]


def rescan(host: vim.HostSystem, protocol: str) -> None:
    """Rescan just the adapters of ``protocol`` on ``host``."""
    storage = host.configManager.storageSystem
    adapters = [sw_iscsi(host)] if protocol == "iscsi" else fc_adapters(host)
    for a in adapters:
        storage.RescanHba(hbaDevice=a.device)


def unresolved(host: vim.HostSystem, naa: str):
    """Return the unresolved VMFS volume whose head extent is ``naa`` (or None)."""
    for vol in host.configManager.storageSystem.QueryUnresolvedVmfsVolume() or []:
        if any(e.device.diskName == naa for e in vol.extent):
            return vol
    return None


def scsi_lun(host: vim.HostSystem, naa: str):
    """Return the host's ScsiLun for ``naa`` (or None)."""
    return next(
        (lun for lun in host.config.storageDevice.scsiLun if lun.canonicalName == naa), None
    )


_LOGINS: dict[tuple[str, int], Any] = {}


def session_cookie(si) -> str:
    """Return the ``vmware_soap_session`` cookie of a pyVmomi connection (``name=value``)."""
    stub = getattr(si._stub, "soapStub", si._stub)
    return (stub.cookie or "").split(";", 1)[0]


def _lab_login(lab: dict[str, Any]):
    """A pyVmomi connection to the lab vCenter kept for file access (one per vCenter)."""
    vc = lab["vcenter"]
    key = (vc["host"], vc["port"])
    if key not in _LOGINS:
        context = ssl.create_default_context(cafile=lab["ca_bundle"])
        _LOGINS[key] = SmartConnect(
            host=vc["host"],
            port=vc["port"],
            user=vc["user"],
            pwd=vc["password"],
            sslContext=context,
        )
    return _LOGINS[key]


def datastore_file_url(lab: dict[str, Any], ds: str, path: str) -> str:
    """Return the vCenter ``/folder`` URL of ``[ds] path``."""
    vc = lab["vcenter"]
    return (
        f"https://{vc['host']}:{vc['port']}/folder/{quote(path)}"
        f"?dcPath={quote(vc['datacenter'])}&dsName={quote(ds)}"
    )


def read_datastore_file(
    lab: dict[str, Any], http: requests.Session, ds: str, path: str, si=None
) -> str:
    """Read a file from a datastore through the vCenter's /folder interface.

    The request carries the session cookie of ``si`` (by default, of a login this helper
    keeps): vCenter serves datastore files to logged-in sessions only.
    """
    cookie = session_cookie(si or _lab_login(lab))
    r = http.get(datastore_file_url(lab, ds, path), headers={"Cookie": cookie}, timeout=30)
    r.raise_for_status()
    return r.text


def write_datastore_file(
    lab: dict[str, Any], http: requests.Session, ds: str, path: str, text: str, si=None
) -> None:
    """Write ``[ds] path`` through the vCenter's /folder interface (HTTP PUT)."""
    cookie = session_cookie(si or _lab_login(lab))
    url = datastore_file_url(lab, ds, path)
    r = http.put(url, data=text.encode(), headers={"Cookie": cookie}, timeout=30)
    r.raise_for_status()


def attach_disk(vm: vim.VirtualMachine, path: str) -> vim.vm.device.VirtualDisk:
    """Give ``vm`` an existing disk file (``[datastore] dir/x.vmdk``) as a new disk."""
    controller = next(
        d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualSCSIController)
    )
    used = {d.unitNumber for d in vm.config.hardware.device if d.controllerKey == controller.key}
    disk = vim.vm.device.VirtualDisk(
        key=-1,
        controllerKey=controller.key,
        unitNumber=next(n for n in range(16) if n != 7 and n not in used),
        capacityInKB=1024,
        backing=vim.vm.device.VirtualDisk.FlatVer2BackingInfo(fileName=path, diskMode="persistent"),
    )
    spec = vim.vm.device.VirtualDeviceSpec(operation="add", device=disk)
    wait(vm.ReconfigVM_Task(vim.vm.ConfigSpec(deviceChange=[spec])))
    return next(
        d
        for d in vm.config.hardware.device
        if isinstance(d, vim.vm.device.VirtualDisk) and d.backing.fileName == path
    )


def detach_disk(vm: vim.VirtualMachine, disk: vim.vm.device.VirtualDisk) -> None:
    """Remove ``disk`` from ``vm`` (its file stays)."""
    spec = vim.vm.device.VirtualDeviceSpec(operation="remove", device=disk)
    wait(vm.ReconfigVM_Task(vim.vm.ConfigSpec(deviceChange=[spec])))
