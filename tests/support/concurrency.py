"""How many calls overlapped: the load test's check that per-host and per-array limits hold.

The lab's call logs (vCenter ``GET /lab/calls/log``, every array's ``GET /lab/calls/log``)
give each call a ``start`` and an ``end`` in seconds since the epoch; ``end`` is None while a
call (or, on the vCenter, the task it started) is still running. See lab/README.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import requests


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """Return the largest number of ``(start, end)`` intervals in progress at one instant.

    Intervals are half-open, ``[start, end)``: a call that ends exactly when another starts
    does not overlap it. ``end`` may be ``math.inf`` (still running). An empty list gives 0.
    Raises ValueError for an interval that ends before it starts.
    """
    points: list[tuple[float, int]] = []
    for start, end in intervals:
        if end < start:
            raise ValueError(f"interval ({start}, {end}) ends before it starts")
        if end == start:
            continue  # an empty interval is never in progress
        points.append((start, 1))
        points.append((end, -1))
    points.sort(key=lambda p: (p[0], p[1]))  # at one instant, ends come before starts
    current = best = 0
    for _, step in points:
        current += step
        best = max(best, current)
    return best


def interval(call: Mapping[str, Any]) -> tuple[float, float]:
    """Return a call log entry's ``(start, end)``; a call still running ends at ``math.inf``."""
    end = call.get("end")
    return float(call["start"]), math.inf if end is None else float(end)


def esx_host(call: Mapping[str, Any]) -> str | None:
    """Return the ESXi host a vCenter call acted on: the host whose object it was called on
    (``host``: storage and datastore systems, the HostSystem), else the host of the VM it
    was called on or registered a VM on (``vm_host``); None for neither."""
    return call.get("host") or call.get("vm_host") or None


def max_overlap_by(
    calls: Iterable[Mapping[str, Any]],
    key: str | Callable[[Mapping[str, Any]], str | None] = "host",
) -> dict[str, int]:
    """Group call log entries by ``key`` and return each group's :func:`max_overlap`.

    ``key`` is an entry field (``"host"`` for the vCenter log: the host object a call acted
    on) or a function of the entry (:func:`esx_host` also counts VM calls on their host);
    entries whose key is missing, empty or None (vCenter calls that act on no host) are
    left out.
    """
    groups: dict[str, list[tuple[float, float]]] = {}
    for call in calls:
        name = key(call) if callable(key) else call.get(key)
        if name:
            groups.setdefault(str(name), []).append(interval(call))
    return {name: max_overlap(spans) for name, spans in sorted(groups.items())}


def max_overlap_per_array(logs: Mapping[str, Iterable[Mapping[str, Any]]]) -> dict[str, int]:
    """Return, for each array name of ``logs`` (array name → its call log entries), the
    largest number of its API calls in progress at once."""
    return {name: max_overlap([interval(c) for c in calls]) for name, calls in logs.items()}


def call_log(
    http: requests.Session, lab_url: str, since: int = 0, **filters: str
) -> list[dict[str, Any]]:
    """Return the entries after ``since`` of the call log at ``lab_url`` (a vCenter's or an
    array's ``lab_url`` from lab.json), filtered like the endpoint (``method=`` on the
    vCenter, ``operation=`` on arrays)."""
    r = http.get(f"{lab_url}/calls/log", params={"since": since, **filters}, timeout=30)
    r.raise_for_status()
    return r.json()["calls"]


def last_seq(http: requests.Session, lab_url: str) -> int:
    """Return the sequence number of the latest call logged at ``lab_url`` (for ``since``)."""
    r = http.get(f"{lab_url}/calls/log", params={"since": 2**62}, timeout=30)
    r.raise_for_status()
    return int(r.json()["last_seq"])
