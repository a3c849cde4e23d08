"""Saving the running lab's vCenter and arrays as Prefect blocks (``python -m lab blocks``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def save_blocks(info: dict[str, Any]) -> list[str]:
    """Save the lab vCenter as block ``default`` and each array under its lab name.

    Uses the Prefect API the process is configured for; returns the saved block names.
    """
    from blocks.registry import VENDOR_TYPES, register_block_types
    from blocks.vcenter import VCenterCredentials

    register_block_types()
    ca = Path(info["ca_bundle"]).read_text()
    vc = info["vcenter"]
    VCenterCredentials(
        host=vc["host"],
        port=vc["port"],
        user=vc["user"],
        password=vc["password"],
        ca_certificate=ca,
    ).save("default", overwrite=True)
    saved = ["vcenter-credentials/default"]
    for a in info["arrays"]:
        cls = VENDOR_TYPES[a["vendor"]]
        extra = {"svm": a["svm"]} if "svm" in a else {}
        cls(url=a["url"], user=a["user"], password=a["password"], ca_certificate=ca, **extra).save(
            a["name"], overwrite=True
        )
        saved.append(f"{cls.get_block_type_slug()}/{a['name']}")
    return saved
