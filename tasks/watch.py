"""Waiting for vSphere property changes as vCenter announces them, not by polling.

A :class:`Watch` holds a PropertyCollector of its own (one per wait: collectors are not
shared between threads) with a filter on the properties asked for, and returns from
:meth:`Watch.changed` as soon as vCenter reports a change (``WaitForUpdatesEx``). So a
step knows a task ended, a question was asked or a guest's Tools started within
milliseconds, at the cost of one call per change instead of one per poll.

When the collector is lost (vCenter ended the session it belonged to, and the session
stub logged in again) the watch goes on by reading the properties every
``POLL_S`` seconds: slower, never wrong.
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any

from pyVmomi import vim, vmodl

from tasks.content import service_content

POLL_S = 0.25
MAX_WAIT_S = 30  # each WaitForUpdatesEx returns at least this often (the HTTP timeout is longer)


class Watch:
    """The current values of some properties of some objects; see the module docstring."""

    def __init__(self, objects: dict[vmodl.ManagedObject, list[str]]) -> None:
        self.objects = objects
        self.values: dict[tuple[str, str], Any] = {}
        self._collector: Any = None
        self._version = ""

    def __enter__(self) -> Watch:
        try:
            root = service_content(next(iter(self.objects))).propertyCollector
            self._collector = root.CreatePropertyCollector()
            spec = vmodl.query.PropertyCollector.FilterSpec(
                objectSet=[
                    vmodl.query.PropertyCollector.ObjectSpec(obj=o, skip=False)
                    for o in self.objects
                ],
                propSet=[
                    vmodl.query.PropertyCollector.PropertySpec(type=type(o), pathSet=paths)
                    for o, paths in self.objects.items()
                ],
            )
            self._collector.CreateFilter(spec, partialUpdates=True)
        except (vmodl.MethodFault, vim.fault.NotAuthenticated):
            self._collector = None
        self.changed(0)  # the current values
        return self

    def __exit__(self, *exc: object) -> None:
        if self._collector is not None:
            with contextlib.suppress(Exception):  # best effort: vCenter drops it with the session
                self._collector.DestroyPropertyCollector()

    def get(self, obj: vmodl.ManagedObject, path: str) -> Any:
        """The latest value of ``path`` of ``obj`` (None when unset)."""
        return self.values.get((obj._moId, path))

    def changed(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for a change of the watched properties; return whether
        there was one (the values are up to date either way)."""
        if self._collector is not None:
            try:
                return self._wait(timeout_s)
            except (vmodl.fault.ManagedObjectNotFound, vim.fault.NotAuthenticated):
                self._collector = None  # its session ended: read instead
        return self._poll(timeout_s)

    def _wait(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            wait = min(MAX_WAIT_S, max(0, math.ceil(left)))
            options = vmodl.query.PropertyCollector.WaitOptions(maxWaitSeconds=wait)
            update = self._collector.WaitForUpdatesEx(self._version, options)
            if update is not None:
                self._version = update.version
                for fs in update.filterSet or []:
                    for obj in fs.objectSet or []:
                        for change in obj.changeSet or []:
                            value = None if change.op == "remove" else change.val
                            self.values[(obj.obj._moId, change.name)] = value
                return True
            if time.monotonic() >= deadline:
                return False

    def _poll(self, timeout_s: float) -> bool:
        if timeout_s > 0:
            time.sleep(min(POLL_S, timeout_s))
        before = dict(self.values)
        for obj, paths in self.objects.items():
            for path in paths:
                value: Any = obj
                for part in path.split("."):
                    value = getattr(value, part, None) if value is not None else None
                self.values[(obj._moId, path)] = value
        return self.values != before
