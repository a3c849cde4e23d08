"""Who a run is and which Prefect server owns it: what every tag records."""

from __future__ import annotations

import socket
import uuid

from prefect.runtime import flow_run

from blocks.settings import settings


def current_run_id() -> str:
    """Return the id of the flow run in progress (a fresh uuid outside of one); it names
    and tags everything the run creates."""
    return str(flow_run.get_id() or uuid.uuid4())


def current_attempt() -> int:
    """Return which attempt of the flow run this is (1, then 2… after a Retry from the UI)."""
    try:
        return max(1, int(flow_run.run_count or 1))
    except (TypeError, ValueError):
        return 1


def server_id() -> str:
    """Return the identity of the Prefect server this process reports to.

    ``SNAPRESTORE_SERVER_ID`` when set (give every worker and the janitor the same one when
    they reach one server under different URLs); otherwise the API URL in use, without a
    trailing ``/api``; for Prefect's ephemeral server, this machine and its Prefect home.
    """
    configured = settings().server_id.strip()
    if configured:
        return configured
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME

    url = PREFECT_API_URL.value()
    if url:
        return str(url).rstrip("/").removesuffix("/api").lower()
    return f"ephemeral:{socket.gethostname()}:{PREFECT_HOME.value()}"
