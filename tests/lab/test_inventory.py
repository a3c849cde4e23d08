"""The lab vCenter's inventory looks like a real one built from the lab topology."""

from __future__ import annotations

import ipaddress
import re
import ssl

import pytest
from pyVmomi import vim

from lab import topology as topo
from tests.support.vcenter import find, host


def _loopback(addr: str) -> bool:
    return ipaddress.ip_address(addr) in ipaddress.ip_network("127.0.0.0/8")


def test_lab_json_describes_every_part_on_loopback(lab):
    assert _loopback(lab["vcenter"]["host"])
    assert {a["vendor"] for a in lab["arrays"]} == {"hpe_primera", "netapp_ontap"}
    for a in lab["arrays"]:
        assert a["url"].startswith("https://127.")
    assert [h["name"] for h in lab["hosts"]] == [h.name for h in topo.HOSTS]
    assert all(_loopback(h["vmk_ip"]) for h in lab["hosts"])
    protocols = {ds["protocol"] for ds in lab["datastores"]}
    assert protocols == {"iscsi", "fc", "nfs"}
    for ds in lab["datastores"]:
        assert len(ds["vms"]) == 3
        assert len(ds["snapshots"]) >= 2


def test_every_address_in_the_lab_data_is_loopback(lab, http, vclab):
    """Portals, NFS servers, VMkernel and guest addresses: nothing points off the box."""
    for a in lab["arrays"]:
        fabric = http.get(a["lab_url"] + "/fabric", timeout=30).json()
        for lun in fabric["luns"]:
            assert all(_loopback(t["address"]) for t in lun["iscsi_targets"])
        for export in fabric["nfs_exports"]:
            assert all(_loopback(s) for s in export["servers"])
    for h in vclab.state()["hosts"]:
        assert _loopback(h["vmk_ip"])
        for adapter in h["adapters"]:
            assert all(_loopback(t["address"]) for t in adapter["static_targets"])


_IPV4 = re.compile(r"'((?:\d{1,3}\.){3}\d{1,3})'")


def _addresses(obj) -> set[str]:
    """Every quoted dotted-quad string in a vSphere data object's text form."""
    return {m for m in _IPV4.findall(str(obj)) if m not in ("0.0.0.0", "255.0.0.0")}


def test_every_address_vsphere_shows_is_loopback(si, lab):
    """What a client reads from vCenter (host networking, DNS, iSCSI targets, NFS servers,
    guest addresses) points nowhere off the box, even where it is only data."""
    seen: set[str] = set()
    for h in lab["hosts"]:
        esx = host(si, h["name"])
        for part in (
            esx.config.network,
            esx.config.virtualNicManagerInfo,
            esx.config.storageDevice,
            esx.configManager.storageSystem.storageDeviceInfo,
        ):
            seen |= _addresses(part)
    for ds_cfg in lab["datastores"]:
        seen |= _addresses(find(si, vim.Datastore, ds_cfg["name"]).info)
        for vm_name in ds_cfg["vms"]:
            seen |= _addresses(find(si, vim.VirtualMachine, vm_name).guest)
    assert {h["vmk_ip"] for h in lab["hosts"]} <= seen  # the scan does find addresses
    assert sorted(a for a in seen if not _loopback(a)) == []


def test_cluster_of_three_hosts_with_their_own_adapters(si, lab):
    cluster = find(si, vim.ClusterComputeResource, topo.CLUSTER)
    assert cluster is not None
    assert sorted(h.name for h in cluster.host) == ["esx-01", "esx-02", "esx-03"]
    iqns, wwpns = set(), set()
    for hc in lab["hosts"]:
        h = host(si, hc["name"])
        hbas = h.config.storageDevice.hostBusAdapter
        sw = [a for a in hbas if isinstance(a, vim.host.InternetScsiHba) and a.isSoftwareBased]
        fc = [a for a in hbas if isinstance(a, vim.host.FibreChannelHba)]
        assert len(sw) == 1 and len(fc) == 2
        assert sw[0].iScsiName == hc["iqn"].lower()
        iqns.add(sw[0].iScsiName)
        for a in fc:
            wwpns.add(f"{a.portWorldWideName:016x}")
        assert h.config.network.vnic[0].spec.ip.ipAddress == hc["vmk_ip"]
        # the storage system reports the same adapters as host.config
        storage = h.configManager.storageSystem.storageDeviceInfo
        assert [a.device for a in storage.hostBusAdapter] == [a.device for a in hbas]
    assert len(iqns) == 3 and len(wwpns) == 6


def test_vmfs_datastores_are_backed_by_the_arrays_volumes(si, lab, http):
    naas = {}
    for a in lab["arrays"]:
        for v in http.get(a["lab_url"] + "/state", timeout=30).json()["volumes"]:
            if v.get("naa"):
                naas[(a["name"], v["name"])] = v["naa"]
    for ds_cfg in lab["datastores"]:
        ds = find(si, vim.Datastore, ds_cfg["name"])
        assert ds is not None, ds_cfg["name"]
        assert ds.summary.accessible
        assert len(ds.host) == 3
        if ds_cfg["protocol"] == "nfs":
            assert ds.summary.type == "NFS"
            assert _loopback(ds.info.nas.remoteHost)
            assert ds.info.nas.remotePath == f"/{ds_cfg['volume']}"
            continue
        assert ds.summary.type == "VMFS"
        vmfs = ds.info.vmfs
        assert vmfs.name == ds_cfg["name"] and vmfs.uuid
        head = vmfs.extent[0].diskName
        assert head == naas[(ds_cfg["array"], ds_cfg["volume"])]
        for m in ds.host:
            luns = [lun.canonicalName for lun in m.key.config.storageDevice.scsiLun]
            assert head in luns


def test_production_vms_run_from_folders_named_after_them(si, lab):
    by_ds: dict[str, set[str]] = {}
    for vm_cfg in lab["vms"]:
        by_ds.setdefault(vm_cfg["datastore"], set()).add(vm_cfg["name"])
    by_ds["ds-fc-01"].add(lab["cases"]["multi_datastore_vm"])  # its disk 1 is there
    for ds_cfg in lab["datastores"]:
        ds = find(si, vim.Datastore, ds_cfg["name"])
        assert {vm.name for vm in ds.vm} == by_ds[ds_cfg["name"]]
        assert set(ds_cfg["vms"]) <= by_ds[ds_cfg["name"]]  # the ordinary three are listed
        for vm in ds.vm:
            if vm.name not in ds_cfg["vms"]:
                continue  # the case VMs have their own test (test_cases.py)
            assert vm.config.files.vmPathName == f"[{ds.name}] {vm.name}/{vm.name}.vmx"
            assert vm.runtime.powerState == "poweredOn"
            assert vm.runtime.question is None
            nics = [
                d
                for d in vm.config.hardware.device
                if isinstance(d, vim.vm.device.VirtualEthernetCard)
            ]
            disks = [
                d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk)
            ]
            assert len(nics) == 1 and nics[0].connectable.connected
            assert len(disks) == 1
            assert disks[0].backing.fileName == f"[{ds.name}] {vm.name}/{vm.name}.vmdk"


def test_vcenter_checks_credentials_and_its_certificate_is_the_lab_cas(lab):
    import ssl

    from pyVim.connect import SmartConnect

    vc = lab["vcenter"]
    with pytest.raises(vim.fault.InvalidLogin):
        SmartConnect(
            host=vc["host"],
            port=vc["port"],
            user=vc["user"],
            pwd="wrong",
            sslContext=ssl.create_default_context(cafile=lab["ca_bundle"]),
        )
    with pytest.raises(ssl.SSLCertVerificationError):
        SmartConnect(
            host=vc["host"],
            port=vc["port"],
            user=vc["user"],
            pwd=vc["password"],
            sslContext=ssl.create_default_context(cafile="/etc/ssl/certs/ca-certificates.crt"),
        )


def test_the_vcenter_block_keys_its_session_on_every_connection_setting(lab, caplog):
    from pathlib import Path

    from blocks.vcenter import VCenterCredentials

    vc = lab["vcenter"]
    base = {"host": vc["host"], "port": vc["port"], "user": vc["user"], "password": vc["password"]}
    ca = Path(lab["ca_bundle"]).read_text()
    verified = VCenterCredentials(**base, ca_certificate=ca)
    assert verified.connect() is VCenterCredentials(**base, ca_certificate=ca).connect()
    assert (
        verified.connect()
        is not VCenterCredentials(**base, ca_certificate=ca, timeout_s=30).connect()
    )
    with caplog.at_level("WARNING", logger="blocks.vcenter"):
        plain = VCenterCredentials(**base, verify_tls=False).connect()
    assert plain.content.about.apiType == "VirtualCenter"
    assert "TLS certificate verification is OFF" in caplog.text
    # without the lab's CA it is not handed the session the block with it opened
    with pytest.raises(ssl.SSLCertVerificationError):
        VCenterCredentials(**base).connect()


def test_finding_an_object_by_name_is_one_inventory_read_whatever_its_size(lab, si, vclab):
    """A lookup must not read every VM's name one call at a time (thousands in production)."""
    from tasks import vsphere as vs

    vms = [v for d in lab["datastores"] for v in d["vms"]]
    assert len(vms) >= 10
    before = vclab.calls()
    found = vs.find_by_name(si, vim.VirtualMachine, vms[-1])
    after = vclab.calls()
    assert found is not None and found.name == vms[-1]
    spent = {m: n - before.get(m, 0) for m, n in after.items() if n != before.get(m, 0)}
    assert spent.get("RetrievePropertiesEx") == 1, spent
    assert sum(spent.values()) <= 4, spent  # content, view, one read, destroy the view


def test_an_unset_property_reads_as_none_as_on_vcenter(lab, si):
    """pyVmomi fetches a single property with Fetch; an unset one must come back empty
    (the simulator alone panics and drops the connection)."""
    vm = find(si, vim.VirtualMachine, lab["datastores"][0]["vms"][0])
    assert vm.snapshot is None  # a VM without snapshots
    assert vm.parentVApp is None
    assert vm.name == lab["datastores"][0]["vms"][0]  # the connection is still good
