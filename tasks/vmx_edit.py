"""Making a VM's ``.vmx`` on a snapshot copy open only the copies' files (no Prefect here).

A ``.vmx`` names its disks relative to its own folder, or absolutely as
``/vmfs/volumes/<datastore id or name>/<path>``: a disk on another datastore, or even on the
VM's own datastore written that way. Registered from a snapshot copy unchanged, such a VM
would open the *production* datastore's files read-write (and a later relocation would move
them). Before a restored VM is registered, its ``.vmx`` on the copy is read and rewritten:

- an absolute path into the VM's own production datastore is pointed at the copy;
- a path into another datastore whose snapshot the restore also copied is pointed at that
  copy; one whose disks the user chose to do without is removed (``present = "FALSE"``);
- a raw device mapping (its descriptor says ``*RawDeviceMap``) is removed, or refused;
- a disk's descriptor whose parent (a delta chain) is named absolutely gets the same rule;
- anything else outside the copy is a problem: the VM is not registered.

Only files of this run's snapshot copy are ever written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

FILE_KEY = re.compile(r"^(?P<dev>(?:scsi|sata|nvme|ide)\d+:\d+)\.filename$", re.IGNORECASE)
_VOLUME = re.compile(r"^/vmfs/volumes/(?P<volume>[^/]+)/(?P<rest>.+)$")
_LINE = re.compile(r'^(?P<key>[^=#]+?)\s*=\s*"?(?P<value>.*?)"?\s*$')


@dataclass(frozen=True)
class VmxFileEntry:
    """A device of the .vmx that opens a file: a disk or a CD/DVD image."""

    device: str  # e.g. "scsi0:1"
    value: str  # the file as written
    cdrom: bool


def parse(text: str) -> dict[str, str]:
    """Return the .vmx's entries, keys lower-cased (ESXi ignores their case)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        m = _LINE.match(stripped)
        if m:
            out[m["key"].strip().lower()] = m["value"]
    return out


def file_entries(text: str) -> list[VmxFileEntry]:
    """Return the present devices of the .vmx that open a file, in the file's order."""
    entries = parse(text)
    out = []
    for key, value in entries.items():
        m = FILE_KEY.match(key)
        if m is None or not value:
            continue
        dev = m["dev"].lower()
        if entries.get(f"{dev}.present", "true").lower() not in ("true", "1", "yes"):
            continue
        kind = entries.get(f"{dev}.devicetype", "").lower()
        if kind and "disk" not in kind and "cdrom-image" not in kind and "file" not in kind:
            continue  # a passthrough CD drive or a raw device: no file
        cdrom = "cdrom" in kind or value.lower().endswith(".iso")
        out.append(VmxFileEntry(device=dev, value=value, cdrom=cdrom))
    return out


def set_entry(text: str, key: str, value: str) -> str:
    """Return ``text`` with ``key = "value"`` (replacing the key, whatever its case)."""
    lines = text.splitlines()
    wanted = key.lower()
    for i, line in enumerate(lines):
        m = _LINE.match(line.strip())
        if m and m["key"].strip().lower() == wanted and not line.strip().startswith("#"):
            lines[i] = f'{m["key"].strip()} = "{value}"'
            return "\n".join(lines) + "\n"
    lines.append(f'{key} = "{value}"')
    return "\n".join(lines) + "\n"


def split_volume_path(value: str) -> tuple[str, str] | None:
    """``/vmfs/volumes/<volume>/<rest>`` -> (volume, rest); None for a relative path."""
    m = _VOLUME.match(value.strip())
    return (m["volume"], m["rest"]) if m else None


def volume_id(path: str | None) -> str | None:
    """The ``<id>`` of ``/vmfs/volumes/<id>``."""
    if not path:
        return None
    found = split_volume_path(path.rstrip("/") + "/x")
    return found[0] if found else None


@dataclass
class Rules:
    """Where the files a restored VM may open are, and what to do with the others.

    ``own``: the names (id, datastore name) of the VM's own production datastore, whose
    files are all in the copy at ``copy_path``; ``redirects``: another production
    datastore's names -> the ``/vmfs/volumes/<id>`` of its copy; ``drop``: names of
    datastores whose disks the restored VM does without; ``drop_unplanned``: a disk
    elsewhere that the plan did not know about (a VM no longer in the inventory) is dropped
    rather than refused; ``drop_rdms``: RDMs are removed rather than refused.
    """

    own: set[str]
    copy_path: str
    redirects: dict[str, str] = field(default_factory=dict)
    drop: set[str] = field(default_factory=set)
    drop_unplanned: bool = False
    drop_rdms: bool = False


@dataclass
class Outcome:
    """What a rewrite changed and what it could not accept."""

    text: str
    changes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # devices removed
    own_files: list[tuple[str, str]] = field(default_factory=list)  # (device, path in copy)


def target(value: str, rules: Rules, vm_folder: str) -> tuple[str, str | None]:
    """Decide about one file the .vmx names: ("copy", path in the copy datastore) for a file
    of the copy, ("redirect", new absolute value), ("drop", None), or ("outside", None)."""
    found = split_volume_path(value)
    if found is None:  # relative: the VM's own folder, on the copy
        return "copy", f"{vm_folder}/{value}" if vm_folder else value
    volume, rest = found
    if volume in rules.own:
        return "redirect", f"{rules.copy_path}/{rest}"
    if volume in rules.redirects:
        return "redirect", f"{rules.redirects[volume]}/{rest}"
    if volume in rules.drop or rules.drop_unplanned:
        return "drop", None
    return "outside", None


def rewrite(text: str, rules: Rules, vm_folder: str) -> Outcome:
    """Apply ``rules`` to every file the .vmx opens; return the new text and what changed."""
    out = Outcome(text=text)
    for entry in file_entries(text):
        decision, new = target(entry.value, rules, vm_folder)
        if decision == "copy":
            if not entry.cdrom:
                out.own_files.append((entry.device, new or entry.value))
            continue
        if decision == "redirect":
            out.text = set_entry(out.text, f"{entry.device}.fileName", new or "")
            out.changes.append(f"{entry.device}: {entry.value} -> {new}")
            if not entry.cdrom and split_volume_path(new or "") is not None:
                volume, rest = split_volume_path(new or "")  # type: ignore[misc]
                if f"/vmfs/volumes/{volume}" == rules.copy_path:
                    out.own_files.append((entry.device, rest))
            continue
        if decision == "drop" or entry.cdrom:
            out.text = drop_device(out.text, entry)
            out.dropped.append(entry.device)
            what = "CD/DVD image" if entry.cdrom else "disk"
            out.changes.append(f"{entry.device}: {what} {entry.value} removed")
            continue
        out.problems.append(
            f"{entry.device} opens {entry.value}, on a datastore that is neither the "
            "snapshotted one nor one whose snapshot this restore copied"
        )
    return out


def drop_device(text: str, entry: VmxFileEntry) -> str:
    """Return ``text`` with the device removed from the VM (``present = "FALSE"``); a CD
    image is disconnected instead, so the drive stays."""
    if entry.cdrom:
        text = set_entry(text, f"{entry.device}.startConnected", "FALSE")
        return set_entry(text, f"{entry.device}.fileName", "")
    return set_entry(text, f"{entry.device}.present", "FALSE")


def descriptor(text: str) -> dict[str, str]:
    """Return a disk descriptor's ``createType`` and ``parentFileNameHint`` (if any)."""
    out = {}
    for key, value in parse(text).items():
        if key in ("createtype", "parentfilenamehint"):
            out[key] = value
    return out


def is_rdm(desc: dict[str, str]) -> bool:
    """True when a disk descriptor describes a raw device mapping (physical or virtual)."""
    return "rawdevicemap" in desc.get("createtype", "").lower()
