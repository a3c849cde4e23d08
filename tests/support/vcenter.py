"""Helpers for the lab vCenter: its lab-only endpoints and inventory lookups."""

from __future__ import annotations

from typing import Any

import requests
from pyVmomi import vim


class VcLab:
    """The lab vCenter's lab-only endpoints."""

    def __init__(self, lab: dict[str, Any], http: requests.Session):
        self.url = lab["vcenter"]["lab_url"]
        self.http = http

    def get(self, path: str) -> Any:
        r = self.http.get(self.url + path, timeout=30)
        r.raise_for_status()
        return r.json()

    def post(self, path: str, body: dict[str, Any]) -> requests.Response:
        return self.http.post(self.url + path, json=body, timeout=30)

    def delete(self, path: str) -> None:
        self.http.delete(self.url + path, timeout=30).raise_for_status()

    def calls(self) -> dict[str, int]:
        return self.get("/calls")

    def events(self, kinds: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        events = self.get("/events")["events"]
        return [e for e in events if not kinds or e["kind"] in kinds]

    def state(self) -> dict[str, Any]:
        return self.get("/state")


def find(si, vimtype, name: str):
    """Return the managed object of ``vimtype`` called ``name`` (or None)."""
    content = si.RetrieveContent()
    view = content.viewManager.CreateContainerView(content.rootFolder, [vimtype], True)
    try:
        return next((o for o in view.view if o.name == name), None)
    finally:
        view.Destroy()


def host(si, name: str) -> vim.HostSystem:
    """Return the ESXi host ``name``."""
    h = find(si, vim.HostSystem, name)
    assert h is not None, f"host {name} not in inventory"
    return h
