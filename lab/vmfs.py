"""The lab's stand-in for a VMFS volume header.

A real VMFS volume records its UUID, its label and the identity of the device it was
formatted on. When ESXi finds a VMFS volume on a device whose identity differs from the
recorded one (a snapshot or clone of the LUN), it reports the volume as *unresolved* and
will mount it only after a resignature, which writes a new UUID, a ``snap-XXXXXXXX-`` label
and the new device identity.

The lab keeps that header as a small JSON file, ``.vh.sf``, at the root of the directory
that holds a LUN's content. Array emulators write it when they seed a block volume; the lab
vCenter reads it to decide whether a device holds a resolved or an unresolved volume, and
rewrites it on resignature. Clones and snapshots copy it with the rest of the content.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

HEADER_NAME = ".vh.sf"
FORMAT = "sr-lab-vmfs/1"


@dataclass(frozen=True)
class VmfsHeader:
    """The signature of one VMFS volume."""

    uuid: str
    label: str
    naa: str


def write_header(content_dir: str | Path, header: VmfsHeader) -> None:
    """Write (or replace) the VMFS header at the root of ``content_dir``."""
    path = Path(content_dir) / HEADER_NAME
    tmp = path.with_suffix(".tmp")
    tmp.write_text(
        json.dumps(
            {"format": FORMAT, "uuid": header.uuid, "label": header.label, "naa": header.naa}
        )
    )
    os.replace(tmp, path)


def read_header(content_dir: str | Path) -> VmfsHeader | None:
    """Return the VMFS header in ``content_dir``, or None when the device holds no VMFS."""
    path = Path(content_dir) / HEADER_NAME
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    if data.get("format") != FORMAT:
        return None
    return VmfsHeader(uuid=data["uuid"], label=data["label"], naa=data["naa"])
