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
- where the VM keeps its NVRAM, swap, suspend and working files, and floppy, serial and
  parallel port files, follow the same rule (outside the copies: removed, or disconnected);
- any other disk outside the copy is a problem: the VM is not registered.

A .vmx already rewritten (a step retried after its reply was lost) names only copies, so
rewriting it again changes nothing.

Only files of this run's snapshot copy are ever written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

FILE_KEY = re.compile(r"^(?P<dev>(?:scsi|sata|nvme|ide)\d+:\d+)\.filename$", re.IGNORECASE)
PORT_KEY = re.compile(r"^(?P<dev>(?:floppy|serial|parallel)\d+)\.filename$", re.IGNORECASE)
# entries that name where a VM keeps files besides its disks (its own folder by default)
PATH_KEYS = (
    "nvram",
    "workingdir",
    "sched.swap.dir",
    "sched.swap.derivedname",
    "suspend.directory",
    "checkpoint.vmstate",
)
_VOLUME = re.compile(r"^/vmfs/volumes/(?P<volume>[^/]+)/(?P<rest>.+)$")
TRUE = ("true", "1", "yes")
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
        if entries.get(f"{dev}.present", "true").lower() not in TRUE:
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
    files are all in the copy at ``copy_path``; ``copy_names``: the names of that copy
    (its id, its datastore name: a .vmx already rewritten names it); ``redirects``:
    another production datastore's names -> the ``/vmfs/volumes/<id>`` of its copy;
    ``drop``: names of datastores whose disks the restored VM does without;
    ``drop_unplanned``: a disk elsewhere that the plan did not know about is dropped
    rather than refused; ``drop_rdms``: RDMs are removed rather than refused.
    """

    own: set[str]
    copy_path: str
    copy_names: set[str] = field(default_factory=set)
    redirects: dict[str, str] = field(default_factory=dict)
    drop: set[str] = field(default_factory=set)
    drop_unplanned: bool = False
    drop_rdms: bool = False

    def __post_init__(self) -> None:
        own_copy = volume_id(self.copy_path)
        if own_copy:
            self.copy_names = {*self.copy_names, own_copy}

    @property
    def other_copies(self) -> set[str]:
        """The ids of the other datastores' copies (where redirected disks already point)."""
        return {v for v in (volume_id(p) for p in self.redirects.values()) if v}


@dataclass
class Outcome:
    """What a rewrite changed and what it could not accept."""

    text: str
    changes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # devices removed
    own_files: list[tuple[str, str]] = field(default_factory=list)  # (device, path in copy)


def target(value: str, rules: Rules, vm_folder: str) -> tuple[str, str | None]:
    """Decide about one file the .vmx names: ("copy", its path in the VM's copy datastore),
    ("keep", None) for a file of another of the restore's copies, ("redirect", the new
    absolute value), ("drop", None), or ("outside", None). A .vmx already rewritten (a
    retried step) names only copies: nothing changes."""
    found = split_volume_path(value)
    if found is None:  # relative: the VM's own folder, on the copy
        return "copy", f"{vm_folder}/{value}" if vm_folder else value
    volume, rest = found
    if volume in rules.copy_names:
        return "copy", rest
    if volume in rules.other_copies:
        return "keep", None
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
        if decision == "keep":
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
    out.text = rewrite_other_paths(out.text, rules, vm_folder, out)
    return out


def remove_entry(text: str, key: str) -> str:
    """Return ``text`` without the entry ``key`` (whatever its case)."""
    wanted = key.lower()
    kept = []
    for line in text.splitlines():
        m = _LINE.match(line.strip())
        if m and not line.strip().startswith("#") and m["key"].strip().lower() == wanted:
            continue
        kept.append(line)
    return "\n".join(kept) + "\n"


def rewrite_other_paths(text: str, rules: Rules, vm_folder: str, out: Outcome) -> str:
    """Apply the rules to the .vmx's other files: where it keeps NVRAM, swap, suspend and
    working files (an absolute path outside the copies is removed, so that the VM's own
    folder on the copy is used), and floppy, serial and parallel port files (one outside
    the copies is disconnected)."""
    entries = parse(text)
    for key in PATH_KEYS:
        value = entries.get(key, "")
        if not value or split_volume_path(value.rstrip("/") + "/x") is None:
            continue  # relative, or empty: in the VM's folder on the copy
        probe = value if split_volume_path(value) else value.rstrip("/") + "/x"
        decision, new = target(probe, rules, vm_folder)
        if decision in ("copy", "keep"):
            continue
        if decision == "redirect" and new:
            fixed = new if split_volume_path(value) else new[: -len("/x")]
            text = set_entry(text, key, fixed)
            out.changes.append(f"{key}: {value} -> {fixed}")
        else:
            text = remove_entry(text, key)
            out.changes.append(f"{key}: {value} removed (the VM's folder on the copy is used)")
    for key, value in entries.items():
        m = PORT_KEY.match(key)
        if m is None or split_volume_path(value) is None:
            continue  # a device, a pipe or a relative file: nothing of production
        if entries.get(f"{m['dev'].lower()}.present", "true").lower() not in TRUE:
            continue  # not present: never opened
        decision, new = target(value, rules, vm_folder)
        if decision in ("copy", "keep"):
            continue
        if decision == "redirect" and new:
            text = set_entry(text, f"{m['dev']}.fileName", new)
            out.changes.append(f"{m['dev']}: {value} -> {new}")
        else:
            text = set_entry(text, f"{m['dev']}.present", "FALSE")
            out.changes.append(f"{m['dev']}: {value} removed")
    return text


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
