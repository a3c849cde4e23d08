"""The per-array and per-host concurrency limits the restore's task tags refer to."""

from __future__ import annotations

import logging

from prefect.client.orchestration import get_client
from pyVmomi import vim

from blocks.errors import brief
from blocks.registry import saved_array_names
from blocks.settings import settings
from blocks.vcenter import VCenterCredentials
from tasks import vsphere as vs

log = logging.getLogger(__name__)


def limit_tags(vcenter: str = "default") -> dict[str, int]:
    """Return tag -> limit: ``array-<block>`` for each saved array, ``esxi-<host>`` per host."""
    s = settings()
    tags = {f"array-{name}": s.array_concurrency for name in sorted(saved_array_names())}
    try:
        vc = VCenterCredentials.load(vcenter)
    except ValueError:
        return tags  # no vCenter block yet: host limits come with the next serve
    try:
        hosts = vs.names(vc.connect(), vim.HostSystem)
    except Exception as exc:  # serving must not depend on vCenter being up right now
        log.warning(
            "vCenter block '%s' unreachable (%s): per-host limits not created; they will be "
            "at the next serve",
            vcenter,
            brief(exc),
        )
        return tags
    for host in hosts:
        tags[f"esxi-{host}"] = s.host_concurrency
    return tags


def ensure_concurrency_limits(vcenter: str = "default") -> dict[str, int]:
    """Create (or update) the tag concurrency limits in the Prefect API; return them."""
    tags = limit_tags(vcenter)
    with get_client(sync_client=True) as client:
        for tag, limit in tags.items():
            client.create_concurrency_limit(tag=tag, concurrency_limit=limit)
    return tags
