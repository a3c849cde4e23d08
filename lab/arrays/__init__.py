"""Array emulators: one process per array, each speaking its vendor's REST API over HTTPS."""

from __future__ import annotations

import importlib

from lab.arrays.base import ArrayConfig, ArrayEmulator

VENDORS = {
    "hpe_primera": "lab.arrays.hpe:HpeEmulator",
    "netapp_ontap": "lab.arrays.ontap:OntapEmulator",
}


def emulator_for(config: ArrayConfig) -> ArrayEmulator:
    """Return the emulator of ``config.vendor``, loaded with its persisted state."""
    module, _, cls = VENDORS[config.vendor].partition(":")
    return getattr(importlib.import_module(module), cls)(config)
