"""A lab of a test module's own (tests that expire sessions or need scale VMs must not
share the session lab), and pyVmomi connections to any lab."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests
from pyVim.connect import Disconnect, SmartConnect

from lab import control


@contextmanager
def private_lab(directory: Path, **options: Any) -> Iterator[dict[str, Any]]:
    """Start a lab in ``directory`` (``options`` as for ``lab.control.up``), yield its
    lab.json, and stop it on exit whatever happened."""
    info = control.up(directory, **options)
    try:
        yield info
    finally:
        control.down(directory)


def lab_http(info: dict[str, Any]) -> requests.Session:
    """An HTTPS session that trusts (only) the lab CA of ``info``."""
    s = requests.Session()
    s.trust_env = False  # REQUESTS_CA_BUNDLE in the environment would replace the lab CA
    s.verify = info["ca_bundle"]
    return s


def connect(info: dict[str, Any]):
    """Return a new pyVmomi ServiceInstance logged in to the lab vCenter (certificate
    verified); ``Disconnect`` it when done."""
    vc = info["vcenter"]
    return SmartConnect(
        host=vc["host"],
        port=vc["port"],
        user=vc["user"],
        pwd=vc["password"],
        sslContext=ssl.create_default_context(cafile=info["ca_bundle"]),
    )


@contextmanager
def connected(info: dict[str, Any]) -> Iterator[Any]:
    """Yield a new logged-in ServiceInstance (see :func:`connect`); log out on exit."""
    si = connect(info)
    try:
        yield si
    finally:
        Disconnect(si)


def end_session(info: dict[str, Any], key: str) -> None:
    """End the vCenter session ``key`` (as vCenter's idle timeout would), from an
    administrator's session of its own."""
    with connected(info) as admin:
        admin.content.sessionManager.TerminateSession(sessionId=[key])
