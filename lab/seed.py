"""The lab's seed data: VM folders with real files, three generations of them per volume.

Generation 1 is the content of a volume's older snapshot, generation 2 of its newer
snapshot, generation 3 its current content. Every VM's flat disk says which generation it
is, so a test can tell which snapshot a restore really used.
"""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from lab import topology as topo
from lab.fabric import SeedHost, SeedSnapshot, SeedSpec, SeedVmfs, SeedVolume
from lab.vmx import format_vmx_uuid, nas_volume_id, render_vmx, uuid_location

GENERATIONS = (1, 2, 3)


def vmfs_uuid() -> str:
    """Return a new VMFS volume uuid in ESXi's format."""
    h = secrets.token_hex(16)
    return f"{h[0:8]}-{h[8:16]}-{h[16:20]}-{h[20:32]}"


def disk_marker(vm: str, generation: int) -> str:
    """Return the text a seeded VM's flat disk holds at ``generation``."""
    return f"snaprestore lab disk of {vm}\ngeneration: {generation}\n"


def production_volume_id(ds: topo.Datastore, vmfs: SeedVmfs | None) -> str:
    """Return the /vmfs/volumes id the production datastore has on the hosts."""
    if vmfs is not None:
        return vmfs.uuid
    server = topo.array(ds.array).nfs_addresses[0]
    return nas_volume_id(server, f"/{ds.volume}")


def write_vm(root: Path, vm: str, index: int, generation: int, volume_id: str) -> None:
    """Write the folder of ``vm`` at ``generation`` under ``root``."""
    folder = root / vm
    folder.mkdir(parents=True, exist_ok=True)
    rng = uuid.uuid5(uuid.NAMESPACE_DNS, f"{vm}.lab.snaprestore").bytes
    bios = format_vmx_uuid(b"\x56\x4d" + rng[2:])
    mac = f"00:50:56:{rng[3]:02x}:{rng[4]:02x}:{rng[5]:02x}"
    vmx = {
        ".encoding": "UTF-8",
        "config.version": "8",
        "virtualHW.version": "19",
        "displayName": vm,
        "guestOS": "ubuntu-64",
        "numvcpus": "2",
        "memsize": "2048",
        "nvram": f"{vm}.nvram",
        "annotation": f"snaprestore lab VM {vm}",
        "scsi0.present": "TRUE",
        "scsi0.virtualDev": "pvscsi",
        "scsi0:0.present": "TRUE",
        "scsi0:0.fileName": f"{vm}.vmdk",
        "ethernet0.present": "TRUE",
        "ethernet0.virtualDev": "vmxnet3",
        "ethernet0.networkName": topo.NETWORK,
        "ethernet0.addressType": "generated",
        "ethernet0.generatedAddress": mac,
        "ethernet0.startConnected": "TRUE",
        "uuid.bios": bios,
        "uuid.location": uuid_location(volume_id, f"{vm}/{vm}.vmx"),
        "guestinfo.sr-lab.ip": topo.guest_ip(index),
        "sr-lab.generation": str(generation),
    }
    (folder / f"{vm}.vmx").write_text(render_vmx(vmx))
    (folder / f"{vm}.nvram").write_bytes(b"NVRAM" + rng)
    (folder / "vmware.log").write_text(f"lab: {vm} generation {generation}\n")
    (folder / f"{vm}.vmdk").write_text(
        "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
        'createType="vmfs"\n\n# Extent description\n'
        f'RW 41943040 VMFS "{vm}-flat.vmdk"\n\nddb.adapterType = "pvscsi"\n'
        'ddb.thinProvisioned = "1"\n'
    )
    (folder / f"{vm}-flat.vmdk").write_text(disk_marker(vm, generation))


def snapshot_names(now: datetime) -> list[tuple[str, datetime]]:
    """Return (name, creation time) of the seeded snapshots, oldest first."""
    out = []
    for hours in topo.SNAPSHOT_AGES_H:
        created = (now - timedelta(hours=hours)).replace(second=0, microsecond=0)
        out.append((f"daily-{created:%Y%m%d-%H%M}", created))
    return out


def build_seed(work: Path, now: datetime | None = None) -> dict[str, SeedSpec]:
    """Write the seed content under ``work`` and return each array's seed spec."""
    now = now or datetime.now(UTC)
    hosts = [
        SeedHost(name=h.name, iqn=h.iqn, wwpns=list(h.wwpns), vmk_ip=h.vmk_ip) for h in topo.HOSTS
    ]
    specs: dict[str, SeedSpec] = {a.name: SeedSpec(hosts=hosts, volumes=[]) for a in topo.ARRAYS}
    index = 0
    for ds in topo.DATASTORES:
        vmfs = SeedVmfs(label=ds.name, uuid=vmfs_uuid()) if ds.protocol != "nfs" else None
        volume_id = production_volume_id(ds, vmfs)
        dirs = {}
        for gen in GENERATIONS:
            root = work / ds.name / f"gen{gen}"
            for offset, vm in enumerate(ds.vms):
                write_vm(root, vm, index + offset, gen, volume_id)
            dirs[gen] = root
        index += len(ds.vms)
        snapshots = [
            SeedSnapshot(name=name, created=created, content=str(dirs[gen]))
            for (name, created), gen in zip(snapshot_names(now), (1, 2), strict=True)
        ]
        specs[ds.array].volumes.append(
            SeedVolume(
                name=ds.volume,
                protocol=ds.protocol,  # type: ignore[arg-type]
                content=str(dirs[3]),
                vmfs=vmfs,
                junction=f"/{ds.volume}" if ds.protocol == "nfs" else None,
                snapshots=snapshots,
                present_to=[h.name for h in topo.HOSTS],
            )
        )
    return specs
