"""The isolated port group, what guests report on which network, and IP conflicts.

A restored twin whose NIC is connected to the production network reports its original's
IP there: the lab records ``guest_ip_conflict``, as an admin would see on the network.
"""

from __future__ import annotations

from pyVmomi import vim

from tests.support.fixtures import mounted_copy, register
from tests.support.vcenter import find, host
from tests.support.vsphere_steps import power_on, wait, wait_for_tools

CONFLICT = "guest_ip_conflict"


def _nic(vm: vim.VirtualMachine) -> vim.vm.device.VirtualEthernetCard:
    return next(
        d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualEthernetCard)
    )


def _edit_nic(vm, *, network=None, connected=None, start_connected=None) -> None:
    nic = _nic(vm)
    if network is not None:
        nic.backing = vim.vm.device.VirtualEthernetCard.NetworkBackingInfo(
            deviceName=network.name, network=network
        )
    if connected is not None:
        nic.connectable.connected = connected
    if start_connected is not None:
        nic.connectable.startConnected = start_connected
    change = vim.vm.device.VirtualDeviceSpec(operation="edit", device=nic)
    wait(vm.ReconfigVM_Task(vim.vm.ConfigSpec(deviceChange=[change])))


def _isolated(si, lab) -> vim.Network:
    net = find(si, vim.Network, lab["networks"]["isolated"][0])
    assert net is not None
    return net


def _discard(vm: vim.VirtualMachine) -> None:
    if vm.runtime.powerState == "poweredOn":
        wait(vm.PowerOffVM_Task())
    vm.UnregisterVM()


def test_the_isolated_port_group_is_on_every_host(si, lab):
    net = _isolated(si, lab)
    assert net.name == "isolated-pg"
    dc = find(si, vim.Datacenter, lab["vcenter"]["datacenter"])
    assert sorted(n.name for n in dc.network) == ["VM Network", "isolated-pg"]
    for h in lab["hosts"]:
        esx = host(si, h["name"])
        assert net in esx.network
        assert "isolated-pg" in [p.spec.name for p in esx.config.network.portgroup]
        assert "isolated-pg" in [
            p.spec.name for p in esx.configManager.networkSystem.networkInfo.portgroup
        ]
    assert sorted(h.name for h in net.host) == sorted(h["name"] for h in lab["hosts"])


def test_a_nic_moved_to_the_isolated_port_group_reports_it(si, lab, vclab):
    before = len(vclab.events())
    with mounted_copy(si, lab, "ds-nfs-01", host_index=0) as mc:
        vm = register(si, lab, mc.ds.name, "file-01", mc.esx, "net-isolated")
        try:
            _edit_nic(vm, network=_isolated(si, lab))
            assert _nic(vm).backing.deviceName == "isolated-pg"
            assert _nic(vm).backing.network == _isolated(si, lab)
            power_on(vm)
            wait_for_tools(vm)
            (net,) = vm.guest.net
            assert net.network == "isolated-pg" and net.connected
            assert net.ipAddress == [find(si, vim.VirtualMachine, "file-01").guest.ipAddress]
        finally:
            _discard(vm)
    # the same IP as production file-01, but on a network that reaches nothing: no conflict
    assert [e for e in vclab.events()[before:] if e["kind"] == CONFLICT] == []


def test_a_restored_twin_on_the_production_network_conflicts_with_its_original(si, lab, vclab):
    before = len(vclab.events())
    with mounted_copy(si, lab, "ds-nfs-01", host_index=1) as mc:
        vm = register(si, lab, mc.ds.name, "mail-01", mc.esx, "net-twin")
        try:
            power_on(vm)
            wait_for_tools(vm)
            ip = find(si, vim.VirtualMachine, "mail-01").guest.ipAddress
            conflicts = [e for e in vclab.events()[before:] if e["kind"] == CONFLICT]
            assert [(e["vm"], e["host"]) for e in conflicts] == [("net-twin", mc.esx.name)]
            assert all(word in conflicts[0]["detail"] for word in (ip, "VM Network", "mail-01"))
        finally:
            _discard(vm)


def test_connecting_a_disconnected_twin_is_a_conflict_then(si, lab, vclab):
    with mounted_copy(si, lab, "ds-nfs-01", host_index=2) as mc:
        vm = register(si, lab, mc.ds.name, "print-01", mc.esx, "net-late")
        try:
            _edit_nic(vm, start_connected=False)
            power_on(vm)
            wait_for_tools(vm)
            marker = len(vclab.events())
            assert vm.guest.net[0].connected is False
            assert vm.guest.ipAddress  # a static address is reported with the link down
            assert vclab.events()[marker:] == []
            _edit_nic(vm, connected=True)
            assert vm.guest.net[0].connected is True
            kinds = [(e["kind"], e["vm"]) for e in vclab.events()[marker:]]
            assert kinds == [(CONFLICT, "net-late")]
        finally:
            _discard(vm)


def test_a_dhcp_guest_reports_its_address_only_while_a_nic_is_connected(si, lab, vclab):
    before = len(vclab.events())
    with mounted_copy(si, lab, "ds-iscsi-02", host_index=0) as mc:
        vm = register(si, lab, mc.ds.name, "dhcp-01", mc.esx, "dhcp-copy")
        try:
            _edit_nic(vm, network=_isolated(si, lab))  # not beside its production original
            power_on(vm)
            wait_for_tools(vm)
            ip = next(v["ip"] for v in lab["vms"] if v["case"] == "dhcp_vm")
            assert vm.guest.ipAddress == ip and vm.guest.net[0].ipAddress == [ip]
            _edit_nic(vm, connected=False)
            assert vm.guest.net[0].connected is False
            assert not vm.guest.ipAddress and not vm.guest.net[0].ipAddress
            assert vm.guest.toolsRunningStatus == "guestToolsRunning"
            _edit_nic(vm, connected=True)
            assert vm.guest.ipAddress == ip
        finally:
            _discard(vm)
    assert [e for e in vclab.events()[before:] if e["kind"] == CONFLICT] == []
