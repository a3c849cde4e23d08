"""Which steps take a concurrency slot, and which do not (decided here, once).

The tag concurrency limits ``array-<array>`` and ``esxi-<host>`` (created by
``python -m deployments serve|deploy|limits``) protect production arrays and hosts across
runs and workers: at most N steps of every restore, drill, catalog and janitor run at once
on one array or one host. A slot is not free: on the patched server each costs about
60 ms of Prefect's own time (acquire, lease renewal, release), and a process acquires the
slots of one limit one at a time. So only the steps that load an array or a host's storage
stack take one:

- **array**: creating a copy, presenting it, withdrawing it, deleting it (and the
  janitor's listings and its removal of an unused host object or igroup);
- **host**: iSCSI static targets, adapter rescans, resignature, NFS mounts, VMFS unmounts,
  device detaches, NAS removals, powering a VM on (a boot storm is the host's load),
  Storage vMotion, datastore file copies.

Reads (planning, surveys, device lookups), .vmx preparation, registration, NIC and tag
changes, power-off and unregistration, and waiting for a guest take no slot: they are
light for vCenter and the host, and their number grows with the VMs restored.

A wrapper task never holds a slot its own steps need (at the limit, it would wait for
itself): slots are taken around single steps.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

from prefect import tags


def on_array(array: str) -> AbstractContextManager[None]:
    """Make the steps started in this block take a slot of ``array``'s limit."""
    return tags(f"array-{array}")


def on_host(host: str) -> AbstractContextManager[None]:
    """Make the steps started in this block take a slot of ``host``'s limit."""
    return tags(f"esxi-{host}")


def array_tags(array: str) -> tuple[str, ...]:
    """The tags of a step that takes a slot of ``array``'s limit."""
    return (f"array-{array}",)


def host_tags(host: str | None) -> tuple[str, ...]:
    """The tags of a step that takes a slot of ``host``'s limit (none without a host)."""
    return (f"esxi-{host}",) if host else ()
