"""The contracts between the lab's parts: the fabric document and the seed spec.

An array emulator publishes a :class:`Fabric` at ``GET /lab/fabric`` (and pushes it to the
lab vCenter at ``POST /lab/fabric-changed`` whenever it changes). The vCenter uses it to
decide which LUNs and NFS exports each ESXi host can see; it never sees a vendor's objects.

``lab up`` sends each array a :class:`SeedSpec` at ``POST /lab/seed`` to create the production
volumes, their snapshots and their exports.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

Protocol = Literal["iscsi", "fc", "nfs"]


def normalize_initiator(value: str) -> str:
    """Return an initiator in the fabric's canonical form.

    IQNs are lower-cased; FC WWPNs become 16 lower-case hex digits without separators.
    """
    v = value.strip()
    if v.lower().startswith(("iqn.", "eui.", "naa.")):
        return v.lower()
    hexdigits = v.replace(":", "").replace("-", "").lower()
    if len(hexdigits) == 16 and all(c in "0123456789abcdef" for c in hexdigits):
        return hexdigits
    return v.lower()


class IscsiTarget(BaseModel):
    """One iSCSI target portal of an array: where a host's static target must point."""

    address: str
    port: int = 3260
    iqn: str


class LunExport(BaseModel):
    """A LUN made visible to one initiator under one LUN number."""

    initiator: str  # canonical form, see normalize_initiator
    protocol: Literal["iscsi", "fc"]
    lun: int


class FabricLun(BaseModel):
    """A block device an array serves, with the directory that holds its VMFS content."""

    naa: str  # "naa." + 32 lower-case hex digits
    name: str  # the array's name for it (VV name, ONTAP LUN path)
    content_dir: str
    size_mb: int
    vendor: str  # SCSI INQUIRY vendor, e.g. "3PARdata", "NETAPP"
    model: str  # SCSI INQUIRY product, e.g. "VV", "LUN C-Mode"
    exports: list[LunExport] = Field(default_factory=list)
    iscsi_targets: list[IscsiTarget] = Field(default_factory=list)
    fc_targets: list[str] = Field(default_factory=list)  # target WWPNs, canonical form
    read_only: bool = False  # a snapshot exported as is: a host cannot resignature it
    production: bool = False  # a volume the seed created as production (not a snapshot or copy)


class NfsRule(BaseModel):
    """One client rule of an NFS export; the first rule matching a client decides."""

    match: str  # an IPv4 address, a CIDR, or "0.0.0.0/0"
    rw: bool
    root: bool  # root is not squashed (superuser "sys")


class NfsExport(BaseModel):
    """An exported path and the addresses it is served on."""

    servers: list[str]  # data addresses (LIF IPs) serving the export
    path: str  # the junction path, e.g. "/ds_nfs_01"
    name: str  # the array's name for the volume
    content_dir: str
    size_mb: int
    rules: list[NfsRule] = Field(default_factory=list)  # in evaluation order
    production: bool = False  # a volume the seed created as production (not a copy)


class Fabric(BaseModel):
    """Everything one array makes visible to hosts right now."""

    array: str
    vendor: str
    generation: int
    luns: list[FabricLun] = Field(default_factory=list)
    nfs_exports: list[NfsExport] = Field(default_factory=list)


class SeedHost(BaseModel):
    """An ESXi host as the arrays should know it (host objects / igroups / export clients)."""

    name: str
    iqn: str
    wwpns: list[str]
    vmk_ip: str


class SeedSnapshot(BaseModel):
    """A snapshot to create, frozen from ``content`` and dated ``created``."""

    name: str
    created: datetime
    content: str  # a directory whose tree becomes the snapshot's content


class SeedVmfs(BaseModel):
    """The VMFS signature a block volume carries (see lab/vmfs.py)."""

    label: str
    uuid: str


class SeedVolume(BaseModel):
    """A production volume with its snapshots, presented to some hosts.

    Every seeded volume is production: the fabric marks its LUN or export ``production``.
    A block volume without ``vmfs`` is a raw LUN (for raw device mappings), not a datastore.
    """

    name: str
    protocol: Protocol
    size_mb: int = 102400
    content: str  # the volume's current content
    vmfs: SeedVmfs | None = None  # block volumes only
    junction: str | None = None  # NFS volumes only
    snapshots: list[SeedSnapshot] = Field(default_factory=list)
    present_to: list[str] = Field(default_factory=list)  # SeedHost names
    # block volumes: present through ONE host object / igroup of this name holding the
    # initiators of every present_to host (a cluster-wide host object), instead of the
    # vendor's per-host objects
    host_group: str | None = None


class SeedSpec(BaseModel):
    """What ``lab up`` asks a fresh array to hold."""

    hosts: list[SeedHost]
    volumes: list[SeedVolume]
