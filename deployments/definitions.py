"""Every deployment of snaprestore, defined once (served or deployed to a work pool)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect.schedules import Cron

from blocks.settings import settings
from flows.catalog import snapshot_catalog
from flows.drill import restore_drill
from flows.janitor import janitor
from flows.restore import restore_from_snapshot

REPO = Path(__file__).resolve().parent.parent
TAGS = ["snaprestore"]


def specs() -> list[dict[str, Any]]:
    """Return (flow, deployment options) of every deployment, from the process settings."""
    s = settings()
    drill: dict[str, Any] = {}
    if s.drill_datastores:
        drill["datastores"] = s.drill_datastores
    if s.drill_vms:
        drill["vms"] = s.drill_vms
    return [
        {
            "flow": restore_from_snapshot,
            "entrypoint": "flows/restore.py:restore_from_snapshot",
            "name": "default",
            "description": "Restore VMs from a storage-array snapshot (UI- or API-triggered).",
        },
        {
            "flow": restore_drill,
            "entrypoint": "flows/drill.py:restore_drill",
            "name": "nightly",
            "description": "Boot VMs from their latest snapshot in isolation and verify them.",
            "schedules": [
                Cron(
                    s.drill_cron,
                    timezone=s.timezone,
                    parameters=drill,
                    slug="nightly-drill",
                    # without a VM selection (SNAPRESTORE_DRILL_DATASTORES / _VMS) it stays off
                    active=bool(drill),
                )
            ],
        },
        {
            "flow": janitor,
            "entrypoint": "flows/janitor.py:janitor",
            "name": "hourly",
            "description": "Remove what crashed or finished restores left behind (tagged only).",
            "schedules": [Cron(s.janitor_cron, timezone=s.timezone, slug="hourly-janitor")],
        },
        {
            "flow": snapshot_catalog,
            "entrypoint": "flows/catalog.py:snapshot_catalog",
            "name": "default",
            "description": "List a datastore's snapshots and the VMs inside one of them.",
        },
    ]


def runner_deployments() -> list[Any]:
    """Return the deployments as RunnerDeployments for ``serve``."""
    out = []
    for spec in specs():
        options = {k: v for k, v in spec.items() if k not in ("flow", "entrypoint")}
        out.append(spec["flow"].to_deployment(tags=TAGS, **options))
    return out


def deploy_to_pool(work_pool: str) -> list[str]:
    """Create or update every deployment on ``work_pool``, running this checkout's code."""
    from prefect import flow

    ids = []
    for spec in specs():
        options = {k: v for k, v in spec.items() if k not in ("flow", "entrypoint")}
        remote = flow.from_source(source=str(REPO), entrypoint=spec["entrypoint"])
        ids.append(
            str(
                remote.deploy(
                    work_pool_name=work_pool, tags=TAGS, build=False, push=False, **options
                )
            )
        )
    return ids
