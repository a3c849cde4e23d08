"""Prefect tasks for the array side of a restore: one task per contract operation."""

from __future__ import annotations

import hashlib
from typing import Any

from prefect.cache_policies import CacheKeyFnPolicy
from prefect.locking.memory import MemoryLockManager
from prefect.transactions import IsolationLevel

from blocks.arrays import StorageArray
from blocks.models import (
    AccessObject,
    ArrayInfo,
    ArraySnapshot,
    ArrayVolume,
    Backing,
    CopyTag,
    HostIdentity,
    Presentation,
    Protocol,
    SnapshotCopy,
)
from tasks.retry import step


def copy_key(volume: ArrayVolume, snapshot: ArraySnapshot) -> str:
    """Return the stable key of the copy of ``snapshot`` (used in the copy's name)."""
    return hashlib.sha256(f"{volume.array}|{volume.id}|{snapshot.id}".encode()).hexdigest()[:12]


def copy_name_for(
    array: StorageArray,
    volume: ArrayVolume,
    snapshot: ArraySnapshot,
    restore_id: str,
    attempt: int = 1,
) -> str:
    """Return the name of the copy of ``snapshot`` for this attempt of restore ``restore_id``
    (a Retry of a finished run is a new attempt: it never reuses a copy already deleted)."""
    key = copy_key(volume, snapshot)
    return array.copy_name(restore_id, key if attempt <= 1 else f"{key}#{attempt}")


def _copy_cache_key(context: Any, parameters: dict[str, Any]) -> str:
    """One copy per (array, volume, snapshot, restore run, attempt): all are in the key."""
    return (
        f"snaprestore-copy-{parameters['array'].name}-"
        f"{copy_key(parameters['volume'], parameters['snapshot'])}-{parameters['restore_id']}"
        f"-{parameters.get('attempt', 1)}"
    )


# SERIALIZABLE + an in-process lock: VMs that ask for the same copy at the same time wait
# for the first request and then share its result (Prefect's cache key plus lock).
COPY_POLICY = CacheKeyFnPolicy(cache_key_fn=_copy_cache_key).configure(
    isolation_level=IsolationLevel.SERIALIZABLE,
    lock_manager=MemoryLockManager(),
)


@step(
    "create copy of {snapshot.name} for restore {restore_id}",
    cache_policy=COPY_POLICY,
    persist_result=True,
)
def create_snapshot_copy(
    array: StorageArray,
    volume: ArrayVolume,
    snapshot: ArraySnapshot,
    restore_id: str,
    attempt: int = 1,
    server: str = "",
) -> SnapshotCopy:
    """Create (or find, after a crash or retry) the read-write copy of ``snapshot`` for this
    attempt of the run, tagged with the run and the Prefect server that owns it."""
    name = copy_name_for(array, volume, snapshot, restore_id, attempt)
    tag = CopyTag(run=restore_id, source=f"{volume.name}@{snapshot.name}", server=server)
    copy = array.create_copy(volume, snapshot, name, tag)
    print(f"copy {copy.name} of {volume.name}@{snapshot.name} on {array.name}")
    return copy


@step("look for copy {name} on {array.name}")
def find_copy(array: StorageArray, name: str) -> SnapshotCopy | None:
    """Return the copy named ``name`` on the array (tagged or not), or None."""
    return array.find_copy(name)


@step("describe array {array.name}")
def describe_array(array: StorageArray) -> ArrayInfo:
    """Return what the array is and how hosts reach it."""
    return array.describe()


@step("find the volume behind {backing}")
def find_volume(array: StorageArray, backing: Backing) -> ArrayVolume | None:
    """Return the array volume behind a datastore backing, or None."""
    return array.find_volume(backing)


@step("list snapshots of {volume.name} on {array.name}")
def list_snapshots(array: StorageArray, volume: ArrayVolume) -> list[ArraySnapshot]:
    """Return the volume's snapshots, oldest first."""
    return array.list_snapshots(volume)


@step("present {copy.name} to {host.name} over {protocol}")
def present_copy(
    array: StorageArray, copy: SnapshotCopy, host: HostIdentity, protocol: Protocol
) -> Presentation:
    """Give one host access to the copy; idempotent."""
    p = array.present(copy, host, protocol)
    print(
        f"presented {copy.name} to {host.name} over {protocol}: {p.model_dump(exclude_none=True)}"
    )
    return p


@step("withdraw {copy.name} from every host on {array.name}")
def unpresent_everywhere(array: StorageArray, copy: SnapshotCopy) -> None:
    """Withdraw the copy from every host it is presented to; idempotent."""
    array.unpresent_all(copy)


@step("list snaprestore's host objects and igroups on {array.name}")
def list_access(array: StorageArray) -> list[AccessObject]:
    """Return the array's tagged host objects / igroups and whether they are in use."""
    return array.list_access()


@step("remove {access.kind} {access.name} from {array.name}")
def remove_access(array: StorageArray, access: AccessObject) -> None:
    """Delete a tagged host object / igroup nothing is exported through; idempotent."""
    array.remove_access(access)


@step("delete copy {copy.name}")
def delete_copy(array: StorageArray, copy: SnapshotCopy) -> None:
    """Delete the copy and what was made for it; idempotent, refuses untagged objects."""
    array.delete_copy(copy)
