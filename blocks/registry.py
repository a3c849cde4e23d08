"""The block types snaprestore defines, registering them, and loading saved array blocks."""

from __future__ import annotations

import logging

from prefect.client.orchestration import get_client
from prefect.exceptions import PrefectHTTPStatusError
from pydantic import ValidationError

from blocks.arrays import StorageArray
from blocks.hpe import HpePrimeraArray
from blocks.ontap import NetAppOntapArray
from blocks.vcenter import VCenterCredentials

log = logging.getLogger(__name__)

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


def load_arrays(
    names: list[str] | None = None, unusable: dict[str, str] | None = None
) -> list[StorageArray]:
    """Load the named array blocks (default: every saved one), whatever their vendor.

    A block named in ``names`` that cannot be loaded (its saved URL is not https://, say)
    raises ArrayBlockError saying why. When every saved block is asked for, such a block is
    left out instead (a restore needs only the arrays that hold its datastores) and, if
    ``unusable`` is given, recorded there with the reason.
    """
    saved = saved_array_names()
    wanted = list(saved) if names is None else names
    missing = [n for n in wanted if n not in saved]
    if missing:
        raise ArrayBlockError(
            f"array block(s) not found: {', '.join(missing)}; saved: {', '.join(saved) or 'none'}"
        )
    out = []
    for n in wanted:
        try:
            out.append(saved[n].load(n))
        except (ValidationError, RuntimeError) as exc:  # Prefect wraps a failed validation
            why = _invalid(saved[n], n) or str(exc)
            if names is not None:
                raise ArrayBlockError(
                    f"array block {n} cannot be used: {why}; fix it in the UI (Blocks)"
                ) from exc
            log.warning("array block %s cannot be used and is left out: %s", n, why)
            if unusable is not None:
                unusable[n] = f"its block cannot be used: {why}"
    return out


def _invalid(block_type: type[StorageArray], name: str) -> str:
    """Say, in one line, why the saved block ``name`` does not validate ("" if it does)."""
    try:
        with get_client(sync_client=True) as client:
            doc = client.read_block_document_by_name(name, block_type.get_block_type_slug())
        block_type.model_validate(doc.data)  # secrets come back masked: still strings
    except ValidationError as exc:
        return "; ".join(str(e.get("msg", "")) for e in exc.errors()) or "invalid"
    except Exception as exc:  # it cannot even be read: say so
        return " ".join(str(exc).split())
    return ""
