"""NetApp ONTAP REST emulator (NFS and iSCSI): ``lab.arrays.ontap:OntapEmulator``."""

from __future__ import annotations

from lab.arrays.ontap.emulator import OntapEmulator

__all__ = ["OntapEmulator"]
