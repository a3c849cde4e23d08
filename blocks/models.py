"""The typed inputs and outputs of the array contract (see ``blocks.arrays``)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Protocol = Literal["iscsi", "fc", "nfs"]

TAG_BY = "snaprestore"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True)


class VmfsBacking(_Model):
    """A VMFS datastore's head extent: the device's canonical name (naa.…)."""

    kind: Literal["vmfs"] = "vmfs"
    naa: str


class NfsBacking(_Model):
    """An NFS datastore: the server and path it is mounted from."""

    kind: Literal["nfs"] = "nfs"
    server: str
    path: str


Backing = Annotated[VmfsBacking | NfsBacking, Field(discriminator="kind")]


class IscsiPortal(_Model):
    """An iSCSI target portal: what a host's static target must name."""

    address: str
    port: int = 3260
    iqn: str


class ArrayInfo(_Model):
    """What an array is and how hosts reach it."""

    name: str
    vendor: str
    model: str
    serial: str
    version: str = ""
    protocols: list[Protocol]
    iscsi_portals: list[IscsiPortal] = Field(default_factory=list)
    fc_wwpns: list[str] = Field(default_factory=list)
    nfs_servers: list[str] = Field(default_factory=list)


class ArrayVolume(_Model):
    """A volume behind a datastore."""

    array: str
    id: str
    name: str
    kind: Literal["block", "nfs"]
    naa: str | None = None
    nfs_path: str | None = None
    protocols: list[Protocol] = Field(default_factory=list)


class ArraySnapshot(_Model):
    """A point-in-time snapshot of a volume."""

    array: str
    id: str
    name: str
    volume: str
    created: datetime


class CopyTag(_Model):
    """The machine-readable mark on everything snaprestore creates.

    ``server`` names the Prefect server that owns the run (the janitor of another server
    reports such objects instead of sweeping them); on a restored VM, ``datastore`` is the
    snapshot-copy datastore it was registered from and ``kept`` says the user keeps it (it
    was migrated, restored to production, or replaced its original): the janitor never
    touches a kept VM.
    """

    by: Literal["snaprestore"] = TAG_BY
    run: str  # the restore run (Prefect flow run id)
    created: datetime = Field(default_factory=lambda: datetime.now(UTC))
    source: str = ""  # "<volume>@<snapshot>"
    server: str = ""  # the Prefect server that owns the run ("" in tags of older versions)
    datastore: str = ""  # VMs: the copy datastore the VM was registered from
    kept: bool = False  # VMs: the user keeps it

    def encode(self) -> str:
        """Return the tag as compact JSON, for a comment or description field."""
        data: dict[str, object] = {
            "by": self.by,
            "run": self.run,
            "created": self.created.isoformat(),
            "src": self.source,
        }
        if self.server:
            data["srv"] = self.server
        if self.datastore:
            data["ds"] = self.datastore
        if self.kept:
            data["kept"] = True
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def decode(cls, text: str | None) -> CopyTag | None:
        """Return the tag in ``text``, or None when ``text`` is not a snaprestore tag."""
        if not text:
            return None
        try:
            data = json.loads(text)
        except ValueError:
            return None
        if not isinstance(data, dict) or data.get("by") != TAG_BY or not data.get("run"):
            return None
        try:
            return cls(
                run=data["run"],
                created=data["created"],
                source=data.get("src", ""),
                server=data.get("srv", ""),
                datastore=data.get("ds", ""),
                kept=data.get("kept", False) is True,
            )
        except (KeyError, ValueError):
            return None


class SnapshotCopy(_Model):
    """A read-write copy (clone) of a snapshot."""

    array: str
    id: str
    name: str
    naa: str | None = None  # block copies: the device behind the datastore
    naas: list[str] = Field(default_factory=list)  # every device the copy holds, if several
    nfs_path: str | None = None  # NFS copies, once exported
    source_volume: str = ""
    source_snapshot: str = ""
    tag: CopyTag | None = None

    def devices(self) -> set[str]:
        """Every device name (lower-case naa) of the copy: a host that has any of them sees
        the copy."""
        return {n.lower() for n in [self.naa, *self.naas] if n}


class HostIdentity(_Model):
    """An ESXi host as an array sees it."""

    name: str
    iqns: list[str] = Field(default_factory=list)
    wwpns: list[str] = Field(default_factory=list)  # 16 hex digits, any separators
    vmk_ips: list[str] = Field(default_factory=list)


class Presentation(_Model):
    """What a host needs to reach a presented copy, and through what it was given.

    ``access`` names the array object the copy is exported through (host object, igroup,
    export policy); ``shared_with`` lists the initiators of other hosts that this object
    also holds (a host object shared by a cluster): those hosts see the copy too.
    """

    protocol: Protocol
    lun: int | None = None
    iscsi_targets: list[IscsiPortal] = Field(default_factory=list)
    fc_targets: list[str] = Field(default_factory=list)
    nfs_server: str | None = None
    nfs_path: str | None = None
    access: str | None = None
    shared_with: list[str] = Field(default_factory=list)


class AccessObject(_Model):
    """A host object, igroup or export policy snaprestore created on an array."""

    array: str
    kind: Literal["host", "igroup", "export-policy"]
    id: str
    name: str
    tag: CopyTag | None = None
    in_use: bool  # a volume is still exported through it
