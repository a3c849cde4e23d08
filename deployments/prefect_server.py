"""Prefect's server with SQLite write transactions that take the write lock up front.

Prefect 3.9.1 opens a write transaction on SQLite as ``BEGIN DEFERRED`` unless the caller
asks for ``with_for_update``. Such a transaction reads, then writes; when another connection
has written meanwhile, SQLite refuses the upgrade to a write at once (its busy timeout only
covers a transaction's start), the server answers 503 and Prefect's client waits 2, 4, 8 s
before trying again. The tag concurrency-slot endpoints every restore step calls are such
transactions, so on the embedded SQLite server each step could stall for seconds
(in Prefect 3.9.1: ``server/api/concurrency_limits_v2.py`` opens the increment's
transaction without ``with_for_update``, which ``server/database/configurations.py``
turns into ``BEGIN DEFERRED``; ``server/api/server.py`` answers SQLite's "database is
locked" with 503; ``client/base.py`` backs off ``2**n`` seconds).

:func:`apply` makes every SQLite write transaction ``BEGIN IMMEDIATE``: it waits for the
write lock (up to SQLite's 60 s busy timeout) instead of failing after its read. It replaces
one private method in memory, so it is pinned to the Prefect version of the lock file and
refuses to run against any other version or a changed method (:class:`PrefectChanged`).
PostgreSQL servers are unaffected: the method is SQLite's.

``python -m deployments.prefect_server server start …`` runs Prefect's own command line
with the change applied (the demo and the tests start their servers that way);
:func:`create_app` is the same for ``uvicorn --factory``.
"""

from __future__ import annotations

import hashlib
import inspect
import sys
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from typing import Any

PINNED_PREFECT = "3.9.1"

# sha256 of the source of the two functions the change relies on, in Prefect 3.9.1: the
# method replaced, and the listener that turns the mode it sets into the BEGIN statement
FINGERPRINTS = {
    "begin_transaction": "c9ea33bf1b494ec8d39c907dfbb2927ba29668ad639677bf441fff25fe2649bc",
    "begin_sqlite_stmt": "b692396a0155f9c1197cd187cd5eefa171ff0619248563c7b8da1872064d8300",
}


class PrefectChanged(RuntimeError):
    """The installed Prefect is not the one this change was written for."""


def fingerprint(func: Any) -> str:
    """Return the sha256 of ``func``'s source, as :data:`FINGERPRINTS` records it."""
    return hashlib.sha256(inspect.getsource(func).encode()).hexdigest()


def check() -> None:
    """Raise PrefectChanged unless Prefect is the pinned version with the expected code."""
    import prefect
    from prefect.server.database.configurations import AioSqliteConfiguration

    if prefect.__version__ != PINNED_PREFECT:
        raise PrefectChanged(
            f"Prefect {prefect.__version__} is installed; deployments/prefect_server.py was "
            f"written for {PINNED_PREFECT}. Check whether Prefect now takes SQLite's write "
            "lock up front in the concurrency-slot endpoints (then drop this module), or "
            "re-check the patched method and update PINNED_PREFECT and FINGERPRINTS"
        )
    for name, expected in FINGERPRINTS.items():
        found = fingerprint(getattr(AioSqliteConfiguration, name))
        if found != expected:
            raise PrefectChanged(
                f"AioSqliteConfiguration.{name} changed in Prefect {prefect.__version__} "
                f"(source sha256 {found}, expected {expected}): re-read it before updating "
                "FINGERPRINTS in deployments/prefect_server.py"
            )


def apply() -> None:
    """Make every SQLite write transaction of this process's Prefect server take the write
    lock when it begins (``BEGIN IMMEDIATE``). Idempotent; raises PrefectChanged (and changes
    nothing) when Prefect is not the pinned version."""
    from prefect.server.database import configurations as cfg

    if getattr(cfg.AioSqliteConfiguration.begin_transaction, "_snaprestore_immediate", False):
        return
    check()

    @asynccontextmanager
    async def begin_transaction(
        self: Any, session: Any, with_for_update: bool = False
    ) -> AsyncGenerator[Any, None]:
        # IMMEDIATE whatever with_for_update says: a deferred write transaction that reads
        # first cannot wait for the lock later
        token = cfg.SQLITE_BEGIN_MODE.set("IMMEDIATE")
        try:
            async with session.begin() as transaction:
                yield transaction
        finally:
            cfg.SQLITE_BEGIN_MODE.reset(token)

    begin_transaction._snaprestore_immediate = True  # type: ignore[attr-defined]
    cfg.AioSqliteConfiguration.begin_transaction = begin_transaction  # type: ignore[method-assign]


def create_app(*args: Any, **kwargs: Any) -> Any:
    """Return Prefect's server app with the change applied (a ``uvicorn --factory`` target)."""
    apply()
    from prefect.server.api.server import create_app as prefect_create_app

    return prefect_create_app(*args, **kwargs)


def main(argv: list[str] | None = None) -> int:
    """Run Prefect's command line (``server start …``) with the change applied."""
    apply()
    from prefect.cli import app

    sys.argv = ["prefect", *(sys.argv[1:] if argv is None else argv)]
    result = app()
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
