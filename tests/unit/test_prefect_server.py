"""The SQLite write-lock change of deployments/prefect_server.py: pinned, and what it fixes.

The race test runs Prefect's own SQLite configuration (its engine, its connection pragmas,
its BEGIN listener) on a real database file: a write transaction that read before another
connection committed a write fails without the change and waits its turn with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from pathlib import Path

import pytest

from deployments import prefect_server

REPO = Path(__file__).resolve().parents[2]


def test_pinned_to_the_locked_prefect_version_and_its_code():
    locked = re.search(r"^prefect==(\S+)", (REPO / "requirements.lock").read_text(), re.M)
    assert locked is not None
    assert locked.group(1) == prefect_server.PINNED_PREFECT, (
        "requirements.lock moved Prefect: re-check deployments/prefect_server.py"
    )
    prefect_server.check()  # the patched method is the one the change was written for


def test_a_changed_method_is_refused(monkeypatch):
    from prefect.server.database.configurations import AioSqliteConfiguration

    monkeypatch.setattr(AioSqliteConfiguration, "begin_sqlite_stmt", lambda self, conn: None)
    with pytest.raises(prefect_server.PrefectChanged, match="begin_sqlite_stmt changed"):
        prefect_server.check()


def test_another_prefect_version_is_refused(monkeypatch):
    import prefect

    monkeypatch.setattr(prefect, "__version__", "3.99.0")
    with pytest.raises(prefect_server.PrefectChanged, match=r"Prefect 3\.99\.0 is installed"):
        prefect_server.check()


async def _race(url: str) -> list[str]:
    """Two write transactions through Prefect's SQLite configuration: the first reads, the
    second writes and commits meanwhile, then the first writes. Return each one's outcome."""
    from prefect.server.database.configurations import AioSqliteConfiguration

    config = AioSqliteConfiguration(connection_url=url)
    engine = await config.engine()
    setup = await config.session(engine)
    async with config.begin_transaction(setup):
        await setup.execute(_sql("CREATE TABLE IF NOT EXISTS slots (n INTEGER)"))
        await setup.execute(_sql("DELETE FROM slots"))
        await setup.execute(_sql("INSERT INTO slots VALUES (0)"))
    await setup.close()
    read, written = asyncio.Event(), asyncio.Event()

    async def first() -> str:
        session = await config.session(engine)
        try:
            async with config.begin_transaction(session):  # as the slot increment does
                await session.execute(_sql("SELECT n FROM slots"))
                read.set()
                # the other writer commits meanwhile, unless it has to wait for this one
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(written.wait(), timeout=1)
                await session.execute(_sql("UPDATE slots SET n = n + 1"))
            return "ok"
        except Exception as exc:
            return f"failed: {exc}"
        finally:
            await session.close()

    async def second() -> str:
        await read.wait()
        session = await config.session(engine)
        try:
            async with config.begin_transaction(session):
                await session.execute(_sql("UPDATE slots SET n = n + 10"))
            written.set()
            return "ok"
        except Exception as exc:
            return f"failed: {exc}"
        finally:
            await session.close()

    outcomes = await asyncio.gather(first(), second())
    await engine.dispose()
    return list(outcomes)


def _sql(text: str):
    import sqlalchemy as sa

    return sa.text(text)


def test_write_transactions_wait_for_the_lock_instead_of_failing(tmp_path, monkeypatch):
    from prefect.server.database import configurations as cfg

    # restore Prefect's own method afterwards, whatever apply() replaced
    monkeypatch.setattr(
        cfg.AioSqliteConfiguration,
        "begin_transaction",
        cfg.AioSqliteConfiguration.begin_transaction,
    )
    before = asyncio.run(_race(f"sqlite+aiosqlite:///{tmp_path / 'before.db'}"))
    assert before[1] == "ok"
    assert before[0].startswith("failed") and "locked" in before[0], before

    prefect_server.apply()
    prefect_server.apply()  # idempotent
    after = asyncio.run(_race(f"sqlite+aiosqlite:///{tmp_path / 'after.db'}"))
    assert after == ["ok", "ok"]
