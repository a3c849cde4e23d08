"""The block types snaprestore defines, registering them, and loading saved array blocks."""

from __future__ import annotations

from prefect.client.orchestration import get_client
from prefect.exceptions import PrefectHTTPStatusError

from blocks.arrays import StorageArray
from blocks.hpe import HpePrimeraArray
from blocks.ontap import NetAppOntapArray
from blocks.vcenter import VCenterCredentials

ARRAY_TYPES: tuple[type[StorageArray], ...] = (HpePrimeraArray, NetAppOntapArray)
BLOCK_TYPES = (VCenterCredentials, *ARRAY_TYPES)
VENDOR_TYPES: dict[str, type[StorageArray]] = {t.vendor: t for t in ARRAY_TYPES}


class ArrayBlockError(ValueError):
    """An array block asked for is not saved; the message lists the saved ones."""


def register_block_types() -> list[str]:
    """Register every snaprestore block type with the Prefect API in use."""
    for t in BLOCK_TYPES:
        t.register_type_and_schema()
    return [t.get_block_type_slug() for t in BLOCK_TYPES]


def saved_array_names() -> dict[str, type[StorageArray]]:
    """Return the saved array blocks: name -> block type."""
    out: dict[str, type[StorageArray]] = {}
    with get_client(sync_client=True) as client:
        for t in ARRAY_TYPES:
            try:
                docs = client.read_block_documents_by_type(t.get_block_type_slug())
            except PrefectHTTPStatusError as exc:
                if exc.response.status_code != 404:
                    raise
                continue  # the type was never registered: no block of it exists
            for doc in docs:
                if doc.name and not doc.is_anonymous:
                    out[doc.name] = t
    return out


def load_arrays(names: list[str] | None = None) -> list[StorageArray]:
    """Load the named array blocks (default: every saved one), whatever their vendor."""
    saved = saved_array_names()
    wanted = list(saved) if names is None else names
    missing = [n for n in wanted if n not in saved]
    if missing:
        raise ArrayBlockError(
            f"array block(s) not found: {', '.join(missing)}; saved: {', '.join(saved) or 'none'}"
        )
    return [saved[n].load(n) for n in wanted]
