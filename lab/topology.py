"""The lab's layout: hosts, arrays, datastores and VMs.

Every address here, including those that only appear as data (VMkernel IPs, iSCSI
portals, NFS servers, guest IPs), is in 127.0.0.0/8.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DATACENTER = "lab-dc"
CLUSTER = "lab-cluster"
NETWORK = "VM Network"
VCENTER_USER = "administrator@vsphere.local"


@dataclass(frozen=True)
class Host:
    """An ESXi host of the lab cluster."""

    name: str
    vmk_ip: str
    iqn: str
    wwpns: tuple[str, ...]


@dataclass(frozen=True)
class Array:
    """A storage array emulator."""

    name: str
    vendor: str  # hpe_primera | netapp_ontap
    user: str
    serial: str
    model: str
    iscsi_portals: tuple[str, ...] = ()
    nfs_addresses: tuple[str, ...] = ()
    fc_ports: int = 0
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Datastore:
    """A production datastore: an array volume presented to every host, holding VMs."""

    name: str
    array: str
    volume: str  # the array's name for the volume
    protocol: str  # iscsi | fc | nfs
    vms: tuple[str, ...]


HOSTS: tuple[Host, ...] = tuple(
    Host(
        name=f"esx-0{i}",
        vmk_ip=f"127.0.10.1{i}",
        iqn=f"iqn.1998-01.com.vmware:esx-0{i}-5c3a9e{i}1",
        wwpns=(f"21:00:00:24:ff:4c:a{i}:10", f"21:00:00:24:ff:4c:a{i}:11"),
    )
    for i in (1, 2, 3)
)

ARRAYS: tuple[Array, ...] = (
    Array(
        name="primera1",
        vendor="hpe_primera",
        user="3paradm",
        serial="4UW0012345",
        model="HPE Primera A630",
        iscsi_portals=("127.0.30.11", "127.0.30.12"),
        fc_ports=2,
    ),
    Array(
        name="ontap1",
        vendor="netapp_ontap",
        user="admin",
        serial="4A1B2C3D5E6F",
        model="AFF-A250",
        iscsi_portals=("127.0.40.12",),
        nfs_addresses=("127.0.40.11",),
        extra={"svm": "svm1"},
    ),
)

DATASTORES: tuple[Datastore, ...] = (
    Datastore("ds-iscsi-01", "primera1", "DS_ISCSI_01", "iscsi", ("app-01", "app-02", "db-01")),
    Datastore("ds-fc-01", "primera1", "DS_FC_01", "fc", ("web-01", "web-02", "web-03")),
    Datastore("ds-nfs-01", "ontap1", "ds_nfs_01", "nfs", ("file-01", "mail-01", "print-01")),
    Datastore("ds-iscsi-02", "ontap1", "ds_iscsi_02", "iscsi", ("jump-01", "log-01", "mon-01")),
)

#: Snapshots per volume, as (hours before ``lab up``): the older one first.
SNAPSHOT_AGES_H: tuple[int, ...] = (26, 2)


def array(name: str) -> Array:
    """Return the array called ``name``."""
    return next(a for a in ARRAYS if a.name == name)


def guest_ip(vm_index: int) -> str:
    """Return the IP the guest of the n-th VM reports (data only, never contacted)."""
    return f"127.0.50.{10 + vm_index}"
