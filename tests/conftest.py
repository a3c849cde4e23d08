"""Session fixtures: the embedded lab (started once per test session) and clients for it."""

from __future__ import annotations

import os
import tempfile

# Before anything imports Prefect: a private home, no telemetry, a patient start-up, quick
# retries and waits sized for the lab (whose guests report tools after 0.2 s).
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="snaprestore-prefect-"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
os.environ.setdefault("PREFECT_LOGGING_TO_API_ENABLED", "false")
os.environ.setdefault("SNAPRESTORE_RETRY_DELAY_S", "0.05")
os.environ.setdefault("SNAPRESTORE_TOOLS_TIMEOUT_S", "20")
os.environ.setdefault("SNAPRESTORE_TASK_TIMEOUT_S", "60")

import ssl
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from pyVim.connect import Disconnect, SmartConnect

from lab import control
from tests.support.vcenter import VcLab


@pytest.fixture(scope="session")
def lab(tmp_path_factory) -> Iterator[dict[str, Any]]:
    """A running lab (its lab.json); stopped at the end of the session."""
    directory = tmp_path_factory.mktemp("lab")
    info = control.up(directory, tools_delay_s=0.2)
    try:
        yield info
        leftovers = _leftovers(info)
    finally:
        control.down(Path(info["dir"]))
    assert leftovers == [], f"the lab tests left objects behind: {leftovers}"


def _leftovers(info: dict[str, Any]) -> list[str]:
    """Everything the tests created and did not remove: copies, exports, datastores, VMs."""
    s = requests.Session()
    s.trust_env = False
    s.verify = info["ca_bundle"]
    found = []
    for a in info["arrays"]:
        state = s.get(a["lab_url"] + "/state", timeout=30).json()
        found += [f"{a['name']} copy {c['name']}" for c in state["copies"]]
        production = {d["volume"] for d in info["datastores"] if d["array"] == a["name"]}
        production |= {lun["volume"] for lun in info["rdm_luns"] if lun["array"] == a["name"]}
        found += [
            f"{a['name']} export of {e['volume']}"
            for e in state["exports"] + state["nfs_exports"]
            if e["volume"] not in production
        ]
    vc = s.get(info["vcenter"]["lab_url"] + "/state", timeout=30).json()
    production = {d["name"] for d in info["datastores"]}
    found += [f"datastore {d['name']}" for d in vc["datastores"] if d["name"] not in production]
    extra = Counter(v["name"] for v in vc["vms"]) - Counter(vm["name"] for vm in info["vms"])
    found += [f"VM {name}" for name in sorted(extra.elements())]
    for h in vc["hosts"]:
        naas = {dev["naa"] for dev in h["devices"]}
        found += [f"{h['name']} device {n}" for n in sorted(naas - _production_naas(s, info))]
    return found


def _production_naas(s: requests.Session, info: dict[str, Any]) -> set[str]:
    naas = set()
    for a in info["arrays"]:
        for v in s.get(a["lab_url"] + "/state", timeout=30).json()["volumes"]:
            if v.get("naa") and not v["is_copy"]:
                naas.add(v["naa"])
    return naas


@pytest.fixture(scope="session")
def http(lab) -> requests.Session:
    """An HTTPS session that trusts (only) the lab CA."""
    s = requests.Session()
    s.trust_env = False  # REQUESTS_CA_BUNDLE in the environment would replace the lab CA
    s.verify = lab["ca_bundle"]
    return s


@pytest.fixture(scope="session")
def si(lab):
    """A pyVmomi ServiceInstance connected to the lab vCenter with certificate checks on."""
    vc = lab["vcenter"]
    context = ssl.create_default_context(cafile=lab["ca_bundle"])
    conn = SmartConnect(
        host=vc["host"], port=vc["port"], user=vc["user"], pwd=vc["password"], sslContext=context
    )
    yield conn
    Disconnect(conn)


@pytest.fixture(scope="session")
def vclab(lab, http) -> VcLab:
    """Client of the vCenter's /lab endpoints."""
    return VcLab(lab, http)


@pytest.fixture(autouse=True)
def _no_leftover_faults(request):
    """Clear injected faults and guest rules after each lab test, so none leaks into the next."""
    if "lab" not in request.fixturenames:
        yield
        return
    info = request.getfixturevalue("lab")
    s = request.getfixturevalue("http")
    yield
    s.delete(info["vcenter"]["lab_url"] + "/faults", timeout=30)
    s.delete(info["vcenter"]["lab_url"] + "/guest", timeout=30)
    for a in info["arrays"]:
        s.delete(a["lab_url"] + "/faults", timeout=30)


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory) -> Iterator[str]:
    """A Prefect API (one SQLite server, started as the demo's is) shared by the whole
    session; yields its URL."""
    from tests.support.prefect_api import local_api

    with local_api(tmp_path_factory.mktemp("prefect-api")) as url:
        yield url


@pytest.fixture(scope="session")
def lab_blocks(lab, prefect_api) -> list[str]:
    """The lab's vCenter and arrays saved as blocks in the session's Prefect API."""
    from lab.blockstore import save_blocks

    return save_blocks(lab)


@pytest.fixture
def world(lab, http, vclab):
    """The lab's world, for before/after comparisons."""
    from tests.support.world import World

    return World(lab, http, vclab)
