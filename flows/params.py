"""The restore's parameters, typed so that the Prefect UI renders a clear form."""

from __future__ import annotations

from enum import StrEnum


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
    """The restored VMs' network cards: as in the snapshot, or disconnected (isolated)."""

    keep = "keep"
    disconnected = "disconnected"


class Finish(StrEnum):
    """How an instant recovery ends."""

    wait_for_user = "wait_for_user"
    migrate = "migrate"
    stop = "stop"


class Decision(StrEnum):
    """A user's choice when an instant recovery waits for them."""

    migrate = "migrate"
    stop = "stop"
