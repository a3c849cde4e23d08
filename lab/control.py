"""Starting and stopping the lab: ``python -m lab up|down|status|build --dir DIR``."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import requests

from lab import topology as topo
from lab.arrays.base import ArrayConfig
from lab.pki import LabPki, ensure_pki
from lab.process import alive, free_port, python_module, runs_from, spawn, stop, wait_until
from lab.seed import SEED_VERSION, build_seed, set_rdm_naas

REPO = Path(__file__).resolve().parent.parent
GO_SOURCES = REPO / "lab" / "vcenter"
VCSIM_BINARY = REPO / "build" / "vcsim-lab"
GOPATH = "/usr/share/gocode"
LISTEN_HOST = "127.0.0.1"


class LabError(RuntimeError):
    """The lab could not be started or stopped; the message says what to do."""


# ---- the Go vCenter binary ----------------------------------------------------------------


def vcsim_stale() -> bool:
    """Return True when the vCenter binary is missing or older than its sources."""
    if not VCSIM_BINARY.exists():
        return True
    built = VCSIM_BINARY.stat().st_mtime
    return any(p.stat().st_mtime > built for p in GO_SOURCES.glob("*.go"))


def build_vcsim(force: bool = False) -> Path:
    """Build lab/vcenter (GOPATH mode, against Debian's govmomi) unless it is up to date."""
    if not force and not vcsim_stale():
        return VCSIM_BINARY
    if shutil.which("go") is None or not Path(GOPATH, "src/github.com/vmware/govmomi").is_dir():
        raise LabError(
            "building the lab vCenter needs Go and govmomi: "
            "apt-get install golang-go golang-github-vmware-govmomi-dev"
        )
    VCSIM_BINARY.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": GOPATH, "GOFLAGS": ""}
    result = subprocess.run(
        ["go", "build", "-o", str(VCSIM_BINARY), "."],
        cwd=GO_SOURCES,
        env=env,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise LabError(f"go build of lab/vcenter failed:\n{result.stderr}")
    return VCSIM_BINARY


# ---- state files ------------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def _write_private(path: Path, text: str) -> None:
    """Replace ``path`` atomically with ``text``, readable by its owner only (lab files
    carry the lab's passwords)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _write_json(path: Path, data: Any) -> None:
    _write_private(path, json.dumps(data, indent=2, default=str))


def _secrets(directory: Path) -> dict[str, str]:
    path = directory / "secrets.json"
    data = _read_json(path)
    wanted = ["vcenter"] + [a.name for a in topo.ARRAYS]
    if not all(k in data for k in wanted):
        data = {k: data.get(k) or secrets.token_urlsafe(12) for k in wanted}
        _write_json(path, data)
    return data


def running_pids(directory: Path) -> dict[str, int]:
    """Return the lab processes of ``directory`` that are still alive."""
    directory = directory.resolve()
    pids = _read_json(directory / "pids.json")
    return {name: pid for name, pid in pids.items() if runs_from(pid, str(directory))}


# ---- up / down ---------------------------------------------------------------------------------


def up(
    directory: Path, reset: bool = False, tools_delay_s: float = 1.0, scale_vms: int = 0
) -> dict[str, Any]:
    """Start the lab in ``directory`` and return its description (also in lab.json).

    Array state persists in the directory across restarts; ``reset`` starts from scratch.
    ``scale_vms`` N > 0 adds the datastore ``ds-scale-01`` holding N powered-off VMs
    (lab/README.md); a lab directory keeps the N it was seeded with (another N needs
    ``reset``).
    """
    try:
        topo.check_scale_vms(scale_vms)
    except ValueError as exc:
        raise LabError(str(exc)) from None
    directory = directory.resolve()
    if reset and directory.exists():
        down(directory)
        shutil.rmtree(directory)
    if running_pids(directory):
        raise LabError(f"a lab is already running in {directory}: run `python -m lab down` first")
    binary = build_vcsim()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "lab.json").unlink(missing_ok=True)
    pki = ensure_pki(directory / "pki", [LISTEN_HOST, "localhost"])
    passwords = _secrets(directory)
    pids: dict[str, int] = {}
    try:
        return _start(directory, binary, pki, passwords, pids, tools_delay_s, scale_vms)
    except BaseException:
        for pid in pids.values():
            stop(pid)
        (directory / "pids.json").unlink(missing_ok=True)
        raise


def _start(
    directory: Path,
    binary: Path,
    pki: LabPki,
    passwords: dict[str, str],
    pids: dict[str, int],
    tools_delay_s: float,
    scale_vms: int,
) -> dict[str, Any]:
    vc_port = free_port(LISTEN_HOST)
    vc_lab = f"https://{LISTEN_HOST}:{vc_port}/lab"
    logs = directory / "logs"
    arrays: list[dict[str, Any]] = []
    for a in topo.ARRAYS:
        port = free_port(LISTEN_HOST)
        state_dir = directory / "arrays" / a.name
        config = ArrayConfig(
            name=a.name,
            vendor=a.vendor,  # type: ignore[arg-type]
            host=LISTEN_HOST,
            port=port,
            cert=str(pki.server_cert),
            key=str(pki.server_key),
            ca_bundle=str(pki.ca_bundle),
            state_dir=str(state_dir),
            user=a.user,
            password=passwords[a.name],
            notify_urls=[f"{vc_lab}/fabric-changed"],
            serial=a.serial,
            model=a.model,
            iscsi_portals=list(a.iscsi_portals),
            nfs_addresses=list(a.nfs_addresses),
            fc_ports=a.fc_ports,
            extra=dict(a.extra),
        )
        cfg_path = state_dir / "config.json"
        state_dir.mkdir(parents=True, exist_ok=True)
        _write_private(cfg_path, config.model_dump_json(indent=2))
        pids[a.name] = spawn(python_module("lab.arrays", str(cfg_path)), logs / f"{a.name}.log")
        _write_json(directory / "pids.json", pids)
        url = f"https://{LISTEN_HOST}:{port}"
        arrays.append(
            {
                "name": a.name,
                "vendor": a.vendor,
                "url": url,
                "host": LISTEN_HOST,
                "port": port,
                "user": a.user,
                "password": passwords[a.name],
                "lab_url": f"{url}/lab",
                "state_dir": str(state_dir),
                **a.extra,
            }
        )

    session = requests.Session()
    session.trust_env = False  # REQUESTS_CA_BUNDLE would silently replace the lab CA
    session.verify = str(pki.ca_bundle)
    for a in arrays:
        wait_until(
            lambda a=a: session.get(f"{a['lab_url']}/state", timeout=5).ok,
            timeout=60,
            what=f"array {a['name']}",
            pid=pids[a["name"]],
            log=logs / f"{a['name']}.log",
        )

    _seed_arrays(directory, session, arrays, scale_vms)

    fabrics = {a["name"]: session.get(f"{a['lab_url']}/fabric", timeout=30).json() for a in arrays}
    states = {a["name"]: session.get(f"{a['lab_url']}/state", timeout=30).json() for a in arrays}
    vc_config = vcenter_config(
        pki, passwords["vcenter"], vc_port, arrays, fabrics, tools_delay_s, scale_vms
    )
    vc_config["events_log"] = str(directory / "vcenter" / "events.log")
    (directory / "vcenter").mkdir(parents=True, exist_ok=True)
    vc_cfg_path = directory / "vcenter" / "config.json"
    _write_json(vc_cfg_path, vc_config)
    vc_log = logs / "vcenter.log"
    pids["vcenter"] = spawn(
        [str(binary), "-config", str(vc_cfg_path)], vc_log, cwd=directory / "vcenter"
    )
    _write_json(directory / "pids.json", pids)
    wait_until(
        lambda: session.get(f"{vc_lab}/health", timeout=5).ok,
        timeout=60,
        what="lab vCenter",
        pid=pids["vcenter"],
        log=vc_log,
    )

    info = {
        "dir": str(directory),
        "ca_bundle": str(pki.ca_bundle),
        "vcenter": {
            "host": LISTEN_HOST,
            "port": vc_port,
            "user": topo.VCENTER_USER,
            "password": passwords["vcenter"],
            "lab_url": vc_lab,
            "datacenter": topo.DATACENTER,
            "cluster": topo.CLUSTER,
        },
        "arrays": [{k: v for k, v in a.items() if k != "state_dir"} for a in arrays],
        "hosts": [
            {"name": h.name, "iqn": h.iqn, "wwpns": list(h.wwpns), "vmk_ip": h.vmk_ip}
            for h in topo.HOSTS
        ],
        "datastores": [
            {
                "name": ds.name,
                "array": ds.array,
                "volume": ds.volume,
                "protocol": ds.protocol,
                "vms": list(ds.vms),
                "snapshots": [
                    s["name"]
                    for s in sorted(states[ds.array]["snapshots"], key=lambda s: s["created"])
                    if s["volume"] == ds.volume
                ],
            }
            for ds in topo.datastores(scale_vms)
        ],
        "scale_vms": scale_vms,
        "cases": dict(topo.CASES),
        "vms": [
            {
                "name": vm.name,
                "datastore": vm.datastore,
                "vmx": vm.vmx,
                "folder": vm.folder,
                "path": vm.inventory_path,
                "pool": vm.pool,
                "host": vm.host,
                "ip": vm.ip,
                "case": vm.case,
                "power_on": vm.power_on,
            }
            for vm in topo.production_vms(scale_vms)
        ],
        "rdm_luns": [
            {"array": lun.array, "volume": lun.volume, "naa": _volume_naa(states, lun)}
            for lun in topo.RDM_LUNS
        ],
        "networks": {"production": [topo.NETWORK], "isolated": [topo.ISOLATED_NETWORK]},
        "pids": pids,
        "logs": str(logs),
    }
    _write_json(directory / "lab.json", info)
    return info


def _seed_marker(array: dict[str, Any]) -> Path:
    return Path(array["state_dir"]) / "seeded"


def _scale_marker(array: dict[str, Any]) -> Path:
    """The file saying how many scale VMs an array was seeded with (absent: none)."""
    return Path(array["state_dir"]) / "seeded-scale-vms"


def _seeded_scale_vms(array: dict[str, Any]) -> int:
    marker = _scale_marker(array)
    return int(marker.read_text().strip()) if marker.exists() else 0


def _seed_arrays(
    directory: Path, session: requests.Session, arrays: list[dict[str, Any]], scale_vms: int = 0
) -> None:
    """Seed the arrays that hold nothing yet; refuse a lab seeded by another seed version,
    or with another number of scale VMs than ``scale_vms``.

    Arrays holding RDM LUNs are seeded first: the descriptors that map those LUNs need
    their NAA ids, which an array chooses when it creates a LUN.
    """
    for a in arrays:
        marker = _seed_marker(a)
        if marker.exists() and marker.read_text().strip() != SEED_VERSION:
            raise LabError(
                f"array {a['name']} in {directory} was seeded by another version of the lab "
                f"(seed {marker.read_text().strip()!r}, this lab seeds {SEED_VERSION!r}): "
                f"run `python -m lab up --dir {directory} --reset`"
            )
        if a["name"] == topo.SCALE_DATASTORE.array and marker.exists():
            seeded = _seeded_scale_vms(a)
            if seeded != scale_vms:
                raise LabError(
                    f"array {a['name']} in {directory} was seeded with --scale-vms {seeded}, "
                    f"not {scale_vms}: run `python -m lab up --dir {directory} "
                    f"--scale-vms {seeded}`, or add --reset to start from scratch"
                )
    unseeded = [a for a in arrays if not _seed_marker(a).exists()]
    if not unseeded:
        return
    work = directory / "seed-work"
    shutil.rmtree(work, ignore_errors=True)
    specs, volume_ids = build_seed(work, scale_vms=scale_vms)
    rdm_arrays = {lun.array for lun in topo.RDM_LUNS}
    ordered = sorted(arrays, key=lambda a: a["name"] not in rdm_arrays)
    naas_known = False
    for a in ordered:
        if a["name"] not in rdm_arrays and not naas_known:
            states = {
                name: session.get(f"{_by_name(arrays, name)['lab_url']}/state", timeout=30).json()
                for name in rdm_arrays
            }
            naas = {lun.volume: _volume_naa(states, lun) for lun in topo.RDM_LUNS}
            set_rdm_naas(work, volume_ids, naas)
            naas_known = True
        if a not in unseeded:
            continue
        r = session.post(
            f"{a['lab_url']}/seed", data=specs[a["name"]].model_dump_json(), timeout=300
        )
        if r.status_code not in (201, 409):
            raise LabError(f"seeding {a['name']} failed: HTTP {r.status_code} {r.text}")
        if a["name"] == topo.SCALE_DATASTORE.array and scale_vms:
            _scale_marker(a).write_text(f"{scale_vms}\n")
        _seed_marker(a).write_text(f"{SEED_VERSION}\n")
    shutil.rmtree(work, ignore_errors=True)


def _by_name(arrays: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(a for a in arrays if a["name"] == name)


def _volume_naa(states: dict[str, dict[str, Any]], lun: topo.RdmLun) -> str:
    """Return the NAA id array ``lun.array`` gave the volume ``lun.volume``."""
    for v in states[lun.array]["volumes"]:
        if v["name"] == lun.volume and v.get("naa"):
            return v["naa"]
    raise LabError(f"array {lun.array} holds no LUN {lun.volume}")


def vcenter_config(
    pki: LabPki,
    password: str,
    port: int,
    arrays: list[dict[str, Any]],
    fabrics: dict[str, dict[str, Any]],
    tools_delay_s: float,
    scale_vms: int = 0,
) -> dict[str, Any]:
    """Return the lab vCenter's config: topology, targets, production NFS mounts and VMs
    (with ``scale_vms`` > 0, the scale datastore's VMs too, not powered on)."""
    hosts = []
    for h in topo.HOSTS:
        targets: list[dict[str, Any]] = []
        for fabric in fabrics.values():
            for lun in fabric["luns"]:
                if not any(e["initiator"] == h.iqn.lower() for e in lun["exports"]):
                    continue
                for t in lun["iscsi_targets"]:
                    entry = {"address": t["address"], "port": t["port"], "iqn": t["iqn"]}
                    if entry not in targets:
                        targets.append(entry)
        hosts.append(
            {
                "name": h.name,
                "vmk_ip": h.vmk_ip,
                "iqn": h.iqn,
                "wwpns": list(h.wwpns),
                "static_targets": targets,
            }
        )
    nfs_mounts = []
    for ds in topo.datastores(scale_vms):
        if ds.protocol != "nfs":
            continue
        export = next(
            (
                e
                for e in fabrics[ds.array]["nfs_exports"]
                if e["path"].rstrip("/") == f"/{ds.volume}"
            ),
            None,
        )
        if export is None:
            raise LabError(f"array {ds.array} does not export /{ds.volume}")
        nfs_mounts.append(
            {
                "datastore": ds.name,
                "server": export["servers"][0],
                "path": export["path"],
                "hosts": [h.name for h in topo.HOSTS],
            }
        )
    vms = [
        {
            "datastore": vm.datastore,
            "vmx": vm.vmx,
            "host": vm.host,
            "folder": vm.folder,
            "pool": vm.pool,
            "power_on": vm.power_on,
        }
        for vm in topo.production_vms(scale_vms)
    ]
    return {
        "listen": f"{LISTEN_HOST}:{port}",
        "user": topo.VCENTER_USER,
        "password": password,
        "cert": str(pki.server_cert),
        "key": str(pki.server_key),
        "ca_bundle": str(pki.ca_bundle),
        "datacenter": topo.DATACENTER,
        "cluster": topo.CLUSTER,
        "network": topo.NETWORK,
        "isolated_networks": [topo.ISOLATED_NETWORK],
        "vm_folders": list(topo.VM_FOLDERS),
        "resource_pools": list(topo.RESOURCE_POOLS),
        "hosts": hosts,
        "arrays": [{"name": a["name"], "lab_url": a["lab_url"]} for a in arrays],
        "nfs_mounts": nfs_mounts,
        "vms": vms,
        "guest": {"tools_delay_s": tools_delay_s},
    }


def down(directory: Path) -> list[str]:
    """Stop every process of the lab in ``directory``; return the names stopped."""
    directory = directory.resolve()
    pids = running_pids(directory)  # never a recycled pid that is no longer the lab's
    # the vCenter first: it must not see arrays vanish under mounted datastores
    order = sorted(pids, key=lambda name: name != "vcenter")
    for name in order:
        stop(pids[name])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(alive(p) for p in pids.values()):
        time.sleep(0.05)
    left = [name for name, pid in pids.items() if alive(pid)]
    if left:
        raise LabError(f"lab processes still running after stop: {left}")
    (directory / "pids.json").unlink(missing_ok=True)
    (directory / "lab.json").unlink(missing_ok=True)
    return order


def load(directory: Path) -> dict[str, Any]:
    """Return the running lab's description (lab.json), or raise if it is not running."""
    path = directory.resolve() / "lab.json"
    if not path.exists():
        raise LabError(f"no running lab in {directory}: run `python -m lab up --dir {directory}`")
    return json.loads(path.read_text())


# ---- one part at a time --------------------------------------------------------------------


def _array_names() -> list[str]:
    return [a.name for a in topo.ARRAYS]


def _lab_session(info: dict[str, Any]) -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # REQUESTS_CA_BUNDLE would silently replace the lab CA
    session.verify = info["ca_bundle"]
    return session


def _vcenter_generation(session: requests.Session, info: dict[str, Any], name: str) -> int | None:
    """Return the fabric generation the vCenter holds for array ``name`` (None: no answer)."""
    try:
        r = session.get(info["vcenter"]["lab_url"] + "/state", timeout=30)
        r.raise_for_status()
        return int(r.json()["fabric_generations"].get(name, -1))
    except (requests.RequestException, ValueError, KeyError):
        return None


def stop_part(directory: Path, name: str) -> None:
    """Stop the array emulator ``name`` of the running lab in ``directory``.

    Its state stays in the lab directory; ``pids.json`` no longer lists it (``status``
    reports it as not running). The vCenter is told at once, as ESXi's path probing would
    notice a dead array: the hosts' paths to it go dead (APD on mounted datastores).
    """
    directory = directory.resolve()
    if name not in _array_names():
        raise LabError(f"{name!r} is not an array of the lab (arrays: {', '.join(_array_names())})")
    info = load(directory)
    pids = running_pids(directory)
    if name not in pids:
        raise LabError(f"array {name} is not running in {directory}")
    stop(pids[name])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and alive(pids[name]):
        time.sleep(0.05)
    if alive(pids[name]):
        raise LabError(f"array {name} (pid {pids[name]}) is still running after stop")
    recorded = _read_json(directory / "pids.json")
    recorded.pop(name, None)
    _write_json(directory / "pids.json", recorded)
    with contextlib.suppress(requests.RequestException):  # no vCenter: nobody to tell
        _lab_session(info).post(
            info["vcenter"]["lab_url"] + "/array-down", json={"array": name}, timeout=30
        )


def start_part(directory: Path, name: str, timeout: float = 60) -> int:
    """Start again the array emulator ``name`` of the running lab in ``directory``.

    It starts with the same config (port, credentials) and the state it had; ``pids.json``
    and ``lab.json`` get its new pid, which is returned. Returns once the array answers and
    the vCenter holds the fabric the array pushed on start (the hosts' paths are back).
    """
    directory = directory.resolve()
    if name not in _array_names():
        raise LabError(f"{name!r} is not an array of the lab (arrays: {', '.join(_array_names())})")
    info = load(directory)
    if name in running_pids(directory):
        raise LabError(f"array {name} is already running in {directory}")
    cfg_path = directory / "arrays" / name / "config.json"
    if not cfg_path.exists():
        raise LabError(f"{cfg_path} is missing: start the lab with `python -m lab up` first")
    session = _lab_session(info)
    before = _vcenter_generation(session, info, name)
    array = next(a for a in info["arrays"] if a["name"] == name)
    log = Path(info["logs"]) / f"{name}.log"
    pid = spawn(python_module("lab.arrays", str(cfg_path)), log)
    recorded = _read_json(directory / "pids.json")
    recorded[name] = pid
    _write_json(directory / "pids.json", recorded)
    info["pids"][name] = pid
    _write_json(directory / "lab.json", info)
    wait_until(
        lambda: session.get(f"{array['lab_url']}/state", timeout=5).ok,
        timeout=timeout,
        what=f"array {name}",
        pid=pid,
        log=log,
    )
    if before is not None:
        wait_until(
            lambda: (_vcenter_generation(session, info, name) or -1) > before,
            timeout=timeout,
            what=f"the fabric push of {name} to the vCenter",
            pid=pid,
            log=log,
        )
    return pid
