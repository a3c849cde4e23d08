"""The restore's parameters, typed so that the Prefect UI renders a clear form.

The flow takes the VMs, the snapshot and the operation directly, and everything else in
sections with defaults (what to restore, where, network and verification, how to finish,
which files), so that the form groups its fields and an API call names only what it
changes: ``{"vms": ["app-01"], "snapshot": "latest"}`` is a complete request.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class Operation(StrEnum):
    """What to do with the VMs once the snapshot copy is mounted."""

    instant_recovery = "instant_recovery"
    full_restore = "full_restore"
    vm_files = "vm_files"


class ProtocolChoice(StrEnum):
    """How the chosen ESXi host reaches the copy."""

    auto = "auto"
    iscsi = "iscsi"
    fc = "fc"
    nfs = "nfs"


class NetworkMode(StrEnum):
    """The restored VMs' network cards.

    auto: disconnected when the original VM is powered on (two machines with one IP and
    hostname on one network hurt), as in the snapshot otherwise; keep: as in the snapshot;
    disconnected: every NIC starts disconnected; map: each NIC is moved to the port group
    ``network_map`` names for its network (a NIC whose network is not in the map starts
    disconnected).
    """

    auto = "auto"
    keep = "keep"
    disconnected = "disconnected"
    map = "map"


class OtherDisks(StrEnum):
    """What to do with a VM's disks that are not on the snapshotted datastore (and RDMs)."""

    refuse = "refuse"
    detach = "detach"
    from_snapshots = "from_snapshots"


class Verify(StrEnum):
    """What a powered-on VM must show: a VMware Tools heartbeat, or only its power-on."""

    tools = "tools"
    power_on = "power_on"


class Finish(StrEnum):
    """How an instant recovery ends."""

    wait_for_user = "wait_for_user"
    migrate = "migrate"
    stop = "stop"


class Decision(StrEnum):
    """A user's choice when an instant recovery waits for them."""

    migrate = "migrate"
    stop = "stop"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SourceOptions(_Section):
    """What to restore: where the VMs' files are and what to do with disks elsewhere."""

    model_config = ConfigDict(title="What to restore")

    datastore: str | None = Field(
        default=None,
        description="Production datastore of VMs that are no longer in the inventory",
    )
    other_disks: OtherDisks = Field(
        default=OtherDisks.refuse,
        description="Disks on other datastores than the snapshotted one, and RDMs: refuse "
        "(nothing is created; each is named), detach (restore without them), or "
        "from_snapshots (also copy those datastores from their snapshot nearest in time). "
        "RDMs are never handed to a restored VM: refused, or removed and reported",
    )
    snapshot_tolerance_minutes: float = Field(
        default=60,
        ge=0,
        description="from_snapshots: how far in time another datastore's snapshot may be "
        "from the chosen one",
    )


class PlacementOptions(_Section):
    """Where the restored VMs go."""

    model_config = ConfigDict(title="Where")

    target_host: str | None = Field(
        default=None,
        description="ESXi host to present the copy to (default, per datastore: the host of "
        "its first listed VM, else the first connected host by name that can reach the array)",
    )
    protocol: ProtocolChoice = Field(
        default=ProtocolChoice.auto,
        description="How the host reaches the copy; auto follows the datastore and the host",
    )
    vm_folder: str | None = Field(
        default=None,
        description="VM folder for the restored VMs, as an inventory path (e.g. "
        "`team-a/restored`; default: the original's folder)",
    )
    resource_pool: str | None = Field(
        default=None,
        description="Resource pool of the host's cluster (name or path below the cluster; "
        "default: the original's pool)",
    )
    name_suffix: str | None = Field(
        default=None,
        description="Appended to each VM's name to name its restored copy (default `-sr-` and "
        "the first 6 characters of the run id)",
    )


class NetworkOptions(_Section):
    """Network and verification: how the restored VMs start and what they must show."""

    model_config = ConfigDict(title="Network and verification")

    mode: NetworkMode = Field(
        default=NetworkMode.auto,
        description="auto: NICs disconnected when the original VM runs, else as in the "
        "snapshot; keep; disconnected; map: NICs moved to the port groups of `map`",
    )
    map: dict[str, str] = Field(
        default_factory=dict,
        description='mode=map: source network -> port group, e.g. {"VM Network": "isolated-pg"}',
    )
    power_on: bool = Field(default=True, description="Power the restored VMs on")
    verify: Verify = Field(
        default=Verify.tools,
        description="tools: wait for a VMware Tools heartbeat; power_on: powered on is "
        "enough (appliances without Tools)",
    )


class FinishOptions(_Section):
    """How the restore ends."""

    model_config = ConfigDict(title="How to finish")

    action: Finish = Field(
        default=Finish.stop,
        description="Instant recovery: stop (verify, then tear down), migrate (Storage "
        "vMotion to production and keep), or wait_for_user (pause for a decision)",
    )
    migrate_to: str | None = Field(
        default=None,
        description="Datastore for migrate and full restore (default: the VM's original)",
    )
    replace_original: bool = Field(
        default=False,
        description="Full restore: power off, rename and unregister the original VM (never "
        "deleted) and give its name to the restored one",
    )


DEFAULT_FILES = ["*.vmx", "*.vmdk", "*.nvram"]


class FileOptions(_Section):
    """VM files restore: which files, and where to copy them."""

    model_config = ConfigDict(title="VM files")

    patterns: list[str] = Field(
        default_factory=lambda: list(DEFAULT_FILES), description="File patterns to copy"
    )
    target_datastore: str | None = Field(
        default=None, description="Where to copy (default: the VM's original datastore)"
    )
    target_folder: str | None = Field(
        default=None,
        description="Folder to create there, one VM only; it must not already hold the "
        "chosen files (default `<vm><suffix>-files`)",
    )
