"""Fixtures that run one array emulator as its own HTTPS process, outside the full lab."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from lab.arrays.base import ArrayConfig
from lab.pki import LabPki, ensure_pki
from lab.process import free_port, python_module, spawn, stop, wait_until


@dataclass
class RunningArray:
    """An emulator process under test and how to reach it."""

    config: ArrayConfig
    url: str
    ca_bundle: str
    pid: int
    config_path: Path
    log: Path

    def lab(self, method: str, path: str, **kwargs) -> requests.Response:
        """Call a lab-only endpoint (``path`` like "/lab/state")."""
        return requests.request(
            method, self.url + path, verify=self.ca_bundle, timeout=30, **kwargs
        )

    def restart(self) -> None:
        """Stop the emulator and start it again with the same config (and its saved state)."""
        stop(self.pid)
        self.pid = spawn(python_module("lab.arrays", str(self.config_path)), self.log)
        wait_until(
            lambda: self.lab("GET", "/lab/state").status_code == 200,
            timeout=30,
            what=f"{self.config.vendor} emulator",
            pid=self.pid,
            log=self.log,
        )


@pytest.fixture(scope="session")
def lab_pki(tmp_path_factory) -> LabPki:
    """A lab CA and server certificate for 127.0.0.1, shared by the session."""
    return ensure_pki(tmp_path_factory.mktemp("pki"), ["127.0.0.1", "localhost"])


@pytest.fixture
def start_array(tmp_path: Path, lab_pki: LabPki) -> Iterator[Callable[..., RunningArray]]:
    """Return a factory that starts an emulator: ``start_array("hpe_primera", **config)``."""
    with _array_starter(tmp_path, lab_pki) as start:
        yield start


@pytest.fixture(scope="module")
def start_array_module(tmp_path_factory, lab_pki: LabPki) -> Iterator[Callable[..., RunningArray]]:
    """Like ``start_array``, but the emulators it starts live until the test module ends."""
    with _array_starter(tmp_path_factory.mktemp("arrays"), lab_pki) as start:
        yield start


@contextlib.contextmanager
def _array_starter(tmp_path: Path, lab_pki: LabPki) -> Iterator[Callable[..., RunningArray]]:
    """Yield the emulator factory; stop every emulator it started on exit."""
    started: list[RunningArray] = []

    def start(vendor: str, **overrides) -> RunningArray:
        name = overrides.pop("name", f"{vendor}-{len(started)}")
        port = free_port()
        defaults = {
            "hpe_primera": {
                "serial": "4UW0012345",
                "model": "HPE Primera A630",
                "iscsi_portals": ["127.0.30.11", "127.0.30.12"],
                "fc_ports": 2,
                "user": "3paradm",
            },
            "netapp_ontap": {
                "serial": "4A1B2C3D5E6F",
                "model": "AFF-A250",
                "iscsi_portals": ["127.0.40.12"],
                "nfs_addresses": ["127.0.40.11"],
                "user": "admin",
            },
        }[vendor]
        config = ArrayConfig(
            **{
                "name": name,
                "vendor": vendor,
                "port": port,
                "cert": str(lab_pki.server_cert),
                "key": str(lab_pki.server_key),
                "ca_bundle": str(lab_pki.ca_bundle),
                "state_dir": str(tmp_path / name),
                "password": "lab-secret",
                **defaults,
                **overrides,
            }
        )
        cfg_path = tmp_path / f"{name}.json"
        cfg_path.write_text(config.model_dump_json())
        log = tmp_path / f"{name}.log"
        pid = spawn(python_module("lab.arrays", str(cfg_path)), log)
        url = f"https://127.0.0.1:{port}"
        running = RunningArray(config, url, str(lab_pki.ca_bundle), pid, cfg_path, log)
        started.append(running)
        wait_until(
            lambda: running.lab("GET", "/lab/state").status_code == 200,
            timeout=30,
            what=f"{vendor} emulator",
            pid=pid,
            log=log,
        )
        return running

    try:
        yield start
    finally:
        for running in started:
            stop(running.pid)


def seed_spec(tmp_path: Path, protocol: str, name: str, vmfs: bool) -> dict:
    """Build a small seed spec: one volume with two snapshots whose content differs."""
    gens = []
    for gen in (1, 2, 3):
        d = tmp_path / f"{name}-gen{gen}"
        (d / "vm-a").mkdir(parents=True)
        (d / "vm-a" / "vm-a.vmx").write_text(f'displayName = "vm-a"\nsr.gen = "{gen}"\n')
        gens.append(str(d))
    hosts = [
        {
            "name": f"esx-0{i}",
            "iqn": f"iqn.1998-01.com.vmware:esx-0{i}-0000000{i}",
            "wwpns": [f"21000024ff1000{i}1", f"21000024ff1000{i}2"],
            "vmk_ip": f"127.0.10.1{i}",
        }
        for i in (1, 2, 3)
    ]
    volume = {
        "name": name,
        "protocol": protocol,
        "size_mb": 10240,
        "content": gens[2],
        "snapshots": [
            {"name": "daily-1", "created": "2026-11-23T01:00:00Z", "content": gens[0]},
            {"name": "daily-2", "created": "2026-11-24T01:00:00Z", "content": gens[1]},
        ],
        "present_to": ["esx-01", "esx-02", "esx-03"],
    }
    if vmfs:
        volume["vmfs"] = {"label": name, "uuid": "6543210a-11223344-5566-778899aabbcc"}
    if protocol == "nfs":
        volume["junction"] = f"/{name}"
    return json.loads(json.dumps({"hosts": hosts, "volumes": [volume]}))
