"""VMX files as the lab writes them, and the identity rules ESXi applies to them.

``uuid.location`` records where a VM's .vmx lived when it was last powered on. When a VM
is powered on from somewhere else (a datastore copy, a resignatured clone), ESXi asks
whether the VM was moved or copied. The lab vCenter (lab/vcenter/vmx.go) applies the same
rule with the same functions as here, so seeded production VMs power on without a question
and their copies do ask.
"""

from __future__ import annotations

import hashlib


def format_vmx_uuid(raw: bytes) -> str:
    """Render 16 bytes the way ESXi writes uuid.bios and uuid.location."""
    parts = [f"{b:02x}" for b in raw[:16]]
    return " ".join(parts[:8]) + "-" + " ".join(parts[8:])


def nas_volume_id(server: str, path: str) -> str:
    """Return the /vmfs/volumes id of an NFS datastore mounted from ``server:path``."""
    path = "/" + path.strip().strip("/") if path.strip() not in ("", "/") else "/"
    digest = hashlib.sha1(f"nfs:{server}:{path}".encode()).hexdigest()
    return f"{digest[0:8]}-{digest[8:16]}"


def uuid_location(volume_id: str, rel_path: str) -> str:
    """Return uuid.location for a .vmx at /vmfs/volumes/<volume_id>/<rel_path>."""
    digest = hashlib.sha1(f"/vmfs/volumes/{volume_id}/{rel_path.lstrip('/')}".encode()).digest()
    return format_vmx_uuid(digest[:16])


def render_vmx(entries: dict[str, str]) -> str:
    """Render key/value pairs as a .vmx file."""
    return "".join(f'{key} = "{value}"\n' for key, value in entries.items())


def parse_vmx(text: str) -> dict[str, str]:
    """Parse a .vmx file into a dict (keys as written)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        out[key.strip()] = value.strip().strip('"')
    return out
