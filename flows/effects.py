"""A run's side effects as typed records: what was done, on which objects, and its fate.

Each record has a :class:`Kind` and a key of object ids (an array and a copy name, a host
and a datastore's managed object id…); a step that undoes something names the same kind
and key. The label is for people only: nothing is ever matched by its text.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from enum import StrEnum


class Kind(StrEnum):
    """The kinds of side effect a restore, drill or catalog run has."""

    copy = "copy"  # key: (array, copy name)
    presentation = "presentation"  # key: (array, copy name): to every host it reaches
    static_targets = "static targets"  # key: (host,)
    device = "device"  # key: (host, naa)
    datastore = "datastore"  # key: (host, datastore moref)
    vm = "vm"  # key: (VM moref,)
    vm_moved = "vm moved"  # key: (VM moref,)
    files = "files"  # key: (datastore, folder)
    original = "original"  # key: (VM moref,)


Key = tuple[str, ...]


@dataclass
class Effect:
    """One side effect, and whether it was undone (or is meant to stay)."""

    kind: Kind
    key: Key
    label: str
    undone: bool = False
    kept: bool = False

    @property
    def state(self) -> str:
        """``kept``, ``yes`` (undone) or ``NO`` (still there)."""
        return "kept" if self.kept else ("yes" if self.undone else "NO")


class Effects:
    """The run's side effects, in the order they happened (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.items: list[Effect] = []

    def _find(self, kind: Kind, key: Key) -> list[Effect]:
        return [e for e in self.items if e.kind == kind and e.key == key]

    def add(self, kind: Kind, key: Key, label: str, kept: bool = False) -> Effect:
        """Record a side effect (once: recording the same kind and key again returns it)."""
        with self._lock:
            found = self._find(kind, key)
            if found:
                return found[0]
            e = Effect(kind, key, label, kept=kept)
            self.items.append(e)
            return e

    def undone(self, kind: Kind, key: Key, label: str = "") -> None:
        """Mark the side effect ``kind``/``key`` undone (recording it first if it was not:
        teardown finds, and undoes, what vCenter did on the run's behalf)."""
        with self._lock:
            found = self._find(kind, key)
            if not found:
                found = [Effect(kind, key, label or f"{kind.value} {'/'.join(key)}")]
                self.items.extend(found)
            for e in found:
                e.undone = True

    def keep(self, kind: Kind, key: Key) -> None:
        """Mark the side effect ``kind``/``key`` as meant to stay (a VM the user keeps)."""
        with self._lock:
            for e in self._find(kind, key):
                e.kept = True

    def is_kept(self, kind: Kind, key: Key) -> bool:
        """True when the side effect ``kind``/``key`` is meant to stay."""
        with self._lock:
            return any(e.kept for e in self._find(kind, key))

    def table(self) -> list[dict[str, str]]:
        """Return the side effects as artifact rows."""
        with self._lock:
            return [
                {"side effect": e.kind.value, "object": e.label, "undone": e.state}
                for e in self.items
            ]

    def kept(self) -> list[str]:
        """Return what was done and is meant to stay (restored VMs, copied files)."""
        with self._lock:
            return [e.label for e in self.items if e.kept]

    def left(self) -> list[str]:
        """Return what was done and neither undone nor meant to stay."""
        with self._lock:
            return [e.label for e in self.items if not e.undone and not e.kept]
