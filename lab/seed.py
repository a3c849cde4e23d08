"""The lab's seed data: VM folders with real files, three generations of them per volume.

Generation 1 is the content of a volume's older snapshot, generation 2 of its newer
snapshot, generation 3 its current content. Every VM's flat disk says which generation it
is, so a test can tell which snapshot a restore really used.

Besides the three ordinary VMs of each datastore, the seed writes the case VMs of
``lab.topology.CASE_VMS`` (a VM with a disk on another datastore, one that names its disk by
absolute path, one with a raw device mapping, two VMs with one name, a DHCP guest) and the
raw LUNs of ``lab.topology.RDM_LUNS``; with ``scale_vms`` N > 0, also the scale datastore
(``lab.topology.SCALE_DATASTORE``) and its N VMs, written like the ordinary ones.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from lab import topology as topo
from lab.fabric import SeedHost, SeedSnapshot, SeedSpec, SeedVmfs, SeedVolume
from lab.vmx import format_vmx_uuid, nas_volume_id, render_vmx, uuid_location

GENERATIONS = (1, 2, 3)

#: What the ``seeded`` marker of an array's state directory says; a lab seeded by another
#: version of the seed must be started with ``--reset``.
SEED_VERSION = "2"

#: ``ddb.sr-lab.lun`` of an RDM descriptor before the array has told the LUN's NAA id
UNKNOWN_NAA = "naa.unknown"

DISK_SECTORS = 41943040  # 20 GiB
RDM_DESCRIPTOR_LUN_KEY = "ddb.sr-lab.lun"


def vmfs_uuid() -> str:
    """Return a new VMFS volume uuid in ESXi's format."""
    h = secrets.token_hex(16)
    return f"{h[0:8]}-{h[8:16]}-{h[16:20]}-{h[20:32]}"


def disk_marker(vm: str, generation: int, disk: int = 0) -> str:
    """Return the text a seeded VM's flat disk holds at ``generation``.

    Disk 0 says ``snaprestore lab disk of <vm>``; another disk N adds `` (disk N)``.
    """
    which = vm if disk == 0 else f"{vm} (disk {disk})"
    return f"snaprestore lab disk of {which}\ngeneration: {generation}\n"


def production_volume_id(ds: topo.Datastore, vmfs: SeedVmfs | None) -> str:
    """Return the /vmfs/volumes id the production datastore has on the hosts."""
    if vmfs is not None:
        return vmfs.uuid
    server = topo.array(ds.array).nfs_addresses[0]
    return nas_volume_id(server, f"/{ds.volume}")


def flat_descriptor(flat: str, sectors: int = DISK_SECTORS) -> str:
    """Return a VMFS thin disk's descriptor whose extent is the file ``flat``."""
    return (
        "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
        'createType="vmfs"\n\n# Extent description\n'
        f'RW {sectors} VMFS "{flat}"\n\nddb.adapterType = "pvscsi"\n'
        'ddb.thinProvisioned = "1"\n'
    )


def rdm_descriptor(rdmp: str, naa: str, sectors: int) -> str:
    """Return a physical-compatibility RDM's mapping descriptor for the LUN ``naa``.

    ESXi keeps the mapped device's identity in the mapping file; the lab writes it as the
    key ``ddb.sr-lab.lun``.
    """
    return (
        "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
        'createType="vmfsPassthroughRawDeviceMap"\n\n# Extent description\n'
        f'RW {sectors} VMFSRDM "{rdmp}"\n\nddb.adapterType = "pvscsi"\n'
        f'{RDM_DESCRIPTOR_LUN_KEY} = "{naa}"\n'
    )


def _identity(vm: topo.Vm) -> bytes:
    key = vm.name if vm.directory == vm.name else f"{vm.directory}/{vm.name}"
    return uuid.uuid5(uuid.NAMESPACE_DNS, f"{key}.lab.snaprestore").bytes


def vm_files(
    vm: topo.Vm, generation: int, volume_ids: dict[str, str], rdm_naas: dict[str, str]
) -> Iterator[tuple[str, str, bytes]]:
    """Yield (datastore, path in it, content) of every file of ``vm`` at ``generation``.

    ``volume_ids`` maps datastore names to their /vmfs/volumes ids (for absolute disk paths
    and uuid.location); ``rdm_naas`` maps RDM volumes to NAA ids (``UNKNOWN_NAA`` if absent).
    """
    rng = _identity(vm)
    d = vm.directory
    bios = format_vmx_uuid(b"\x56\x4d" + rng[2:])
    mac = f"00:50:56:{rng[3]:02x}:{rng[4]:02x}:{rng[5]:02x}"
    disk0 = f"{vm.name}.vmdk"
    if vm.case == "absolute_path_vm":  # its own datastore, by absolute path
        disk0 = f"/vmfs/volumes/{volume_ids[vm.datastore]}/{d}/{vm.name}.vmdk"
    vmx = {
        ".encoding": "UTF-8",
        "config.version": "8",
        "virtualHW.version": "19",
        "displayName": vm.name,
        "guestOS": "ubuntu-64",
        "numvcpus": "2",
        "memsize": "2048",
        "nvram": f"{vm.name}.nvram",
        "annotation": f"snaprestore lab VM {vm.name}",
        "scsi0.present": "TRUE",
        "scsi0.virtualDev": "pvscsi",
        "scsi0:0.present": "TRUE",
        "scsi0:0.fileName": disk0,
    }
    if vm.case == "multi_datastore_vm":  # disk 1 on ds-fc-01, by absolute path
        other = "ds-fc-01"
        vmx["scsi0:1.present"] = "TRUE"
        vmx["scsi0:1.fileName"] = f"/vmfs/volumes/{volume_ids[other]}/{d}/{vm.name}_1.vmdk"
        yield other, f"{d}/{vm.name}_1.vmdk", flat_descriptor(f"{vm.name}_1-flat.vmdk").encode()
        yield other, f"{d}/{vm.name}_1-flat.vmdk", disk_marker(vm.name, generation, 1).encode()
    if vm.case == "rdm_vm":  # disk 1 maps a production LUN raw
        lun = topo.RDM_LUNS[0]  # the lab's one raw LUN
        naa = rdm_naas.get(lun.volume, UNKNOWN_NAA)
        vmx["scsi0:1.present"] = "TRUE"
        vmx["scsi0:1.fileName"] = f"{vm.name}_1.vmdk"
        vmx["scsi0:1.mode"] = "independent-persistent"
        rdmp = f"{vm.name}_1-rdmp.vmdk"
        yield (
            vm.datastore,
            f"{d}/{vm.name}_1.vmdk",
            rdm_descriptor(rdmp, naa, lun.size_mb * 2048).encode(),
        )
        yield vm.datastore, f"{d}/{rdmp}", f"raw device mapping of {lun.volume}\n".encode()
    vmx.update(
        {
            "ethernet0.present": "TRUE",
            "ethernet0.virtualDev": "vmxnet3",
            "ethernet0.networkName": topo.NETWORK,
            "ethernet0.addressType": "generated",
            "ethernet0.generatedAddress": mac,
            "ethernet0.startConnected": "TRUE",
            "uuid.bios": bios,
            "uuid.location": uuid_location(volume_ids[vm.datastore], vm.vmx),
            "guestinfo.sr-lab.ip": vm.ip,
        }
    )
    if vm.case == "dhcp_vm":  # the guest gets its address from a DHCP server
        vmx["guestinfo.sr-lab.dhcp"] = "TRUE"
    vmx["sr-lab.generation"] = str(generation)
    yield vm.datastore, vm.vmx, render_vmx(vmx).encode()
    yield vm.datastore, f"{d}/{vm.name}.nvram", b"NVRAM" + rng
    yield vm.datastore, f"{d}/vmware.log", f"lab: {vm.name} generation {generation}\n".encode()
    descriptor = f"{d}/{vm.name}.vmdk"  # disk 0 lives in the VM's folder however it is named
    yield vm.datastore, descriptor, flat_descriptor(f"{vm.name}-flat.vmdk").encode()
    yield vm.datastore, f"{d}/{vm.name}-flat.vmdk", disk_marker(vm.name, generation).encode()


def snapshot_names(now: datetime) -> list[tuple[str, datetime]]:
    """Return (name, creation time) of the seeded snapshots, oldest first."""
    out = []
    for hours in topo.SNAPSHOT_AGES_H:
        created = (now - timedelta(hours=hours)).replace(second=0, microsecond=0)
        out.append((f"daily-{created:%Y%m%d-%H%M}", created))
    return out


def _write(root: Path, rel: str, content: bytes) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)


def write_generations(
    work: Path, volume_ids: dict[str, str], rdm_naas: dict[str, str], scale_vms: int = 0
) -> None:
    """Write every production VM's files (the scale datastore's ``scale_vms`` VMs too), per
    datastore and generation, under ``work``.

    ``work/<datastore>/gen<N>/`` is the datastore's content at generation N (every datastore
    directory exists, even one that holds no VM).
    """
    for ds in topo.datastores(scale_vms):
        for gen in GENERATIONS:
            (work / ds.name / f"gen{gen}").mkdir(parents=True, exist_ok=True)
    for vm in topo.production_vms(scale_vms):
        for gen in GENERATIONS:
            for ds_name, rel, content in vm_files(vm, gen, volume_ids, rdm_naas):
                _write(work / ds_name / f"gen{gen}", rel, content)


def set_rdm_naas(work: Path, volume_ids: dict[str, str], rdm_naas: dict[str, str]) -> None:
    """Rewrite the RDM mapping descriptors under ``work`` with the LUNs' NAA ids.

    An array chooses a LUN's NAA id when it creates it: the arrays that hold RDM LUNs are
    seeded first, then the descriptors that map them are written, then the other arrays.
    """
    for vm in topo.production_vms():
        if vm.case != "rdm_vm":
            continue
        for gen in GENERATIONS:
            for ds_name, rel, content in vm_files(vm, gen, volume_ids, rdm_naas):
                if rel.endswith("_1.vmdk"):
                    _write(work / ds_name / f"gen{gen}", rel, content)


def rdm_content(work: Path, lun: topo.RdmLun) -> Path:
    """Write and return the content directory of a raw LUN (a marker file, no VMFS)."""
    root = work / "rdm" / lun.volume
    root.mkdir(parents=True, exist_ok=True)
    (root / "README.lab").write_text(
        f"snaprestore lab raw LUN {lun.volume}: no VMFS, mapped raw by a VM\n"
    )
    return root


def build_seed(
    work: Path, now: datetime | None = None, scale_vms: int = 0
) -> tuple[dict[str, SeedSpec], dict[str, str]]:
    """Write the seed content under ``work``; return each array's seed spec and the
    datastores' /vmfs/volumes ids (for :func:`set_rdm_naas`).

    With ``scale_vms`` N > 0 the scale datastore and its N VMs are part of it. RDM
    descriptors name ``UNKNOWN_NAA`` until :func:`set_rdm_naas` rewrites them.
    """
    datastores = topo.datastores(scale_vms)
    now = now or datetime.now(UTC)
    hosts = [
        SeedHost(name=h.name, iqn=h.iqn, wwpns=list(h.wwpns), vmk_ip=h.vmk_ip) for h in topo.HOSTS
    ]
    specs: dict[str, SeedSpec] = {a.name: SeedSpec(hosts=hosts, volumes=[]) for a in topo.ARRAYS}
    vmfs = {
        ds.name: SeedVmfs(label=ds.name, uuid=vmfs_uuid())
        for ds in datastores
        if ds.protocol != "nfs"
    }
    volume_ids = {ds.name: production_volume_id(ds, vmfs.get(ds.name)) for ds in datastores}
    write_generations(work, volume_ids, {}, scale_vms)
    for ds in datastores:
        dirs = {gen: work / ds.name / f"gen{gen}" for gen in GENERATIONS}
        snapshots = [
            SeedSnapshot(name=name, created=created, content=str(dirs[gen]))
            for (name, created), gen in zip(snapshot_names(now), (1, 2), strict=True)
        ]
        specs[ds.array].volumes.append(
            SeedVolume(
                name=ds.volume,
                protocol=ds.protocol,  # type: ignore[arg-type]
                content=str(dirs[3]),
                vmfs=vmfs.get(ds.name),
                junction=f"/{ds.volume}" if ds.protocol == "nfs" else None,
                snapshots=snapshots,
                present_to=[h.name for h in topo.HOSTS],
                host_group=ds.host_group,
            )
        )
    for lun in topo.RDM_LUNS:
        specs[lun.array].volumes.append(
            SeedVolume(
                name=lun.volume,
                protocol=lun.protocol,  # type: ignore[arg-type]
                size_mb=lun.size_mb,
                content=str(rdm_content(work, lun)),
                present_to=[h.name for h in topo.HOSTS],
            )
        )
    return specs, volume_ids
