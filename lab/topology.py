"""The lab's layout: hosts, arrays, datastores and VMs.

Every address here, including those that only appear as data (VMkernel IPs, iSCSI
portals, NFS servers, guest IPs), is in 127.0.0.0/8.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

DATACENTER = "lab-dc"
CLUSTER = "lab-cluster"
NETWORK = "VM Network"
ISOLATED_NETWORK = "isolated-pg"  # a port group on every host that reaches nothing
VCENTER_USER = "administrator@vsphere.local"

#: Child folders of the datacenter's VM folder, and child pools of the cluster's root pool.
VM_FOLDERS: tuple[str, ...] = ("apps", "infra", "team-a", "team-b")
RESOURCE_POOLS: tuple[str, ...] = ("rp-prod", "rp-infra")

#: primera1's single iSCSI host object holding every host's IQN (DS_ISCSI_01 is exported to it)
SHARED_HOST_OBJECT = "lab-cluster-iscsi"
#: ontap1's single igroup holding every host's IQN (ds_iscsi_02's LUN is mapped to it)
SHARED_IGROUP = "lab-cluster"


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
    vms: tuple[str, ...]  # its three ordinary VMs (case VMs are in CASE_VMS)
    folder: str  # the VM folder and resource pool of its ordinary VMs
    pool: str
    host_group: str | None = None  # one shared host object / igroup instead of one per host


@dataclass(frozen=True)
class RdmLun:
    """A production LUN that is no datastore: VMs map it raw (RDM)."""

    array: str
    volume: str
    protocol: str  # iscsi | fc
    size_mb: int


@dataclass(frozen=True)
class CaseVm:
    """A production VM that is a hard case for a restore (lab/README.md, "Case VMs")."""

    case: str  # its key in lab.json ``cases``
    name: str
    datastore: str  # where its .vmx is
    directory: str  # its folder on that datastore
    folder: str
    pool: str


@dataclass(frozen=True)
class Vm:
    """A production VM as the lab registers it: where it lives and what its guest reports."""

    name: str
    datastore: str
    directory: str
    folder: str
    pool: str
    host: str
    ip: str
    case: str | None = None
    power_on: bool = True  # powered on at boot (the scale datastore's VMs are not)

    @property
    def vmx(self) -> str:
        """The .vmx path inside the datastore, e.g. ``app-01/app-01.vmx``."""
        return f"{self.directory}/{self.name}.vmx"

    @property
    def inventory_path(self) -> str:
        """The VM's inventory path, e.g. ``lab-dc/vm/apps/app-01``."""
        return f"{DATACENTER}/vm/{self.folder}/{self.name}"


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
    Datastore(
        "ds-iscsi-01",
        "primera1",
        "DS_ISCSI_01",
        "iscsi",
        ("app-01", "app-02", "db-01"),
        "apps",
        "rp-prod",
        host_group=SHARED_HOST_OBJECT,
    ),
    Datastore(
        "ds-fc-01", "primera1", "DS_FC_01", "fc", ("web-01", "web-02", "web-03"), "apps", "rp-prod"
    ),
    Datastore(
        "ds-nfs-01",
        "ontap1",
        "ds_nfs_01",
        "nfs",
        ("file-01", "mail-01", "print-01"),
        "infra",
        "rp-infra",
    ),
    Datastore(
        "ds-iscsi-02",
        "ontap1",
        "ds_iscsi_02",
        "iscsi",
        ("jump-01", "log-01", "mon-01"),
        "infra",
        "rp-infra",
        host_group=SHARED_IGROUP,
    ),
)

RDM_LUNS: tuple[RdmLun, ...] = (RdmLun("primera1", "RDM_SQL_01", "fc", 10240),)

CASE_VMS: tuple[CaseVm, ...] = (
    CaseVm("multi_datastore_vm", "multi-01", "ds-iscsi-01", "multi-01", "apps", "rp-prod"),
    CaseVm("absolute_path_vm", "abs-01", "ds-iscsi-02", "abs-01", "infra", "rp-infra"),
    CaseVm("rdm_vm", "rdm-01", "ds-iscsi-02", "rdm-01", "infra", "rp-infra"),
    CaseVm("duplicate_name_vm", "dup-01", "ds-iscsi-02", "dup-01", "team-a", "rp-infra"),
    CaseVm("duplicate_name_vm", "dup-01", "ds-iscsi-02", "dup-01_1", "team-b", "rp-infra"),
    CaseVm("dhcp_vm", "dhcp-01", "ds-iscsi-02", "dhcp-01", "infra", "rp-infra"),
)

#: lab.json ``cases``: what each case is called in the lab
CASES: dict[str, str] = {
    **{c.case: c.name for c in CASE_VMS},
    "shared_host_object": SHARED_HOST_OBJECT,
    "shared_igroup": SHARED_IGROUP,
}

#: Snapshots per volume, as (hours before ``lab up``): the older one first.
SNAPSHOT_AGES_H: tuple[int, ...] = (26, 2)


#: ``lab up --scale-vms N``: a datastore of N powered-off VMs for the speed benchmark and
#: the load tests. It is presented like ds-iscsi-01, through the cluster-wide host object:
#: 3PAR refuses an initiator in two host objects, so per-host iSCSI host objects cannot exist
#: beside it on primera1.
SCALE_DATASTORE = Datastore(
    "ds-scale-01",
    "primera1",
    "DS_SCALE_01",
    "iscsi",
    (),
    "apps",
    "rp-prod",
    host_group=SHARED_HOST_OBJECT,
)
#: The most VMs ``--scale-vms`` accepts (their names have three digits)
MAX_SCALE_VMS = 999
#: Guest IPs of the scale VMs: 200 per /24 from 127.0.60.10 on (never contacted)
_SCALE_IP_BLOCK = 200


def check_scale_vms(scale_vms: int) -> int:
    """Return ``scale_vms`` if it is a valid ``--scale-vms`` count (0..MAX_SCALE_VMS)."""
    if isinstance(scale_vms, bool) or not isinstance(scale_vms, int):
        raise ValueError(f"scale_vms must be an integer, not {scale_vms!r}")
    if not 0 <= scale_vms <= MAX_SCALE_VMS:
        raise ValueError(f"scale_vms must be between 0 and {MAX_SCALE_VMS}, not {scale_vms}")
    return scale_vms


def scale_vm_names(scale_vms: int) -> tuple[str, ...]:
    """Return the names of the scale datastore's VMs: ``scale-001`` … ``scale-NNN``."""
    return tuple(f"scale-{i:03d}" for i in range(1, check_scale_vms(scale_vms) + 1))


def scale_guest_ip(index: int) -> str:
    """Return the IP the guest of the ``index``-th scale VM (from 1) reports once powered on."""
    block, offset = divmod(index - 1, _SCALE_IP_BLOCK)
    return f"127.0.{60 + block}.{10 + offset}"


def datastores(scale_vms: int = 0) -> tuple[Datastore, ...]:
    """Return the production datastores: ``DATASTORES``, plus the scale datastore holding
    ``scale_vms`` VMs when that is not 0."""
    if not check_scale_vms(scale_vms):
        return DATASTORES
    return (*DATASTORES, replace(SCALE_DATASTORE, vms=scale_vm_names(scale_vms)))


def array(name: str) -> Array:
    """Return the array called ``name``."""
    return next(a for a in ARRAYS if a.name == name)


def datastore(name: str, scale_vms: int = 0) -> Datastore:
    """Return the production datastore called ``name``."""
    return next(d for d in datastores(scale_vms) if d.name == name)


def guest_ip(vm_index: int) -> str:
    """Return the IP the guest of the n-th VM reports (data only, never contacted)."""
    return f"127.0.50.{10 + vm_index}"


def production_vms(scale_vms: int = 0) -> tuple[Vm, ...]:
    """Return every production VM, ordinary ones first, then the case VMs, then the
    ``scale_vms`` VMs of the scale datastore.

    The n-th ordinary or case VM runs on host ``n % 3`` and its guest reports
    ``guest_ip(n)``; the i-th scale VM (from 1) runs on host ``(i - 1) % 3``, is powered off
    at boot and its guest reports ``scale_guest_ip(i)`` once powered on.
    """
    return _base_vms() + tuple(
        Vm(
            name=name,
            datastore=SCALE_DATASTORE.name,
            directory=name,
            folder=SCALE_DATASTORE.folder,
            pool=SCALE_DATASTORE.pool,
            host=HOSTS[(i - 1) % len(HOSTS)].name,
            ip=scale_guest_ip(i),
            power_on=False,
        )
        for i, name in enumerate(scale_vm_names(scale_vms), start=1)
    )


def _base_vms() -> tuple[Vm, ...]:
    placed: list[tuple[str, str, str, str, str, str | None]] = [
        (vm, ds.name, vm, ds.folder, ds.pool, None) for ds in DATASTORES for vm in ds.vms
    ]
    placed += [(c.name, c.datastore, c.directory, c.folder, c.pool, c.case) for c in CASE_VMS]
    return tuple(
        Vm(
            name=name,
            datastore=ds,
            directory=directory,
            folder=folder,
            pool=pool,
            host=HOSTS[n % len(HOSTS)].name,
            ip=guest_ip(n),
            case=case,
        )
        for n, (name, ds, directory, folder, pool, case) in enumerate(placed)
    )
